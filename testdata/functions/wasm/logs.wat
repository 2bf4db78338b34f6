;; Logs a lot: a first line, then 300 lines of 1 KiB (more than the 256 KiB kept per invocation),
;; then a last line, and answers {"logged": true}. The invocation succeeds; its logs are cut.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "logs.wat: starting\n")
  (data (i32.const 140) "logs.wat: done\n")
  (data (i32.const 160) "{\"logged\": true}")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func (export "_start")
    (local $i i32)
    ;; a line of 1023 'x' and a newline at 1024
    (memory.fill (i32.const 1024) (i32.const 120) (i32.const 1023))
    (i32.store8 (i32.const 2047) (i32.const 10))
    (call $write (i32.const 2) (i32.const 100) (i32.const 19))
    (loop $lines
      (call $write (i32.const 2) (i32.const 1024) (i32.const 1024))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $lines (i32.lt_u (local.get $i) (i32.const 300))))
    (call $write (i32.const 2) (i32.const 140) (i32.const 15))
    (call $write (i32.const 1) (i32.const 160) (i32.const 16))))
