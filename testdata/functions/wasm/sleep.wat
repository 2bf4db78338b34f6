;; Counts its invocations in its own memory, sleeps 300 ms (poll_oneoff on the monotonic clock), and
;; answers {"count": N}. Every invocation gets a fresh instance, so N is always 1: no state survives.
;; Several at once overlap their sleeps, one instance each.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"count\": ")
  (data (i32.const 120) "}")

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 3)))))

  (func (export "_start")
    ;; the counter at 64
    (i32.store (i32.const 64) (i32.add (i32.load (i32.const 64)) (i32.const 1)))
    ;; one clock subscription at 256: userdata 0, tag 0 (clock), clock id 1 (monotonic),
    ;; timeout 300 ms in ns, precision 0, flags 0 (relative)
    (i64.store (i32.const 256) (i64.const 0))
    (i32.store8 (i32.const 264) (i32.const 0))
    (i32.store (i32.const 272) (i32.const 1))
    (i64.store (i32.const 280) (i64.const 300000000))
    (i64.store (i32.const 288) (i64.const 0))
    (i32.store16 (i32.const 296) (i32.const 0))
    (if (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 48))
      (then (call $proc_exit (i32.const 4))))
    (call $write (i32.const 100) (i32.const 10))
    ;; the count as one digit
    (i32.store8 (i32.const 80) (i32.add (i32.const 48) (i32.load (i32.const 64))))
    (call $write (i32.const 80) (i32.const 1))
    (call $write (i32.const 120) (i32.const 1))))
