;; The smallest useful function: reads the request from stdin, logs one line to stderr, and answers
;; with a JSON value. It has no statusCode, so the answer is a 200 whose body is that JSON.
;; Memory: 0..24 iovecs and counts, 100.. the log line, 200.. the answer, 1024.. the input buffer.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello.wat: handling a request\n")
  (data (i32.const 200) "{\"hello\": \"world\", \"runtime\": \"wat\"}")

  ;; Writes len bytes at ptr to fd (an error exits with status 3).
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 3)))))

  ;; Reads stdin to its end (into the 4 KiB at 1024, overwriting: only reading it matters here).
  (func $drain
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.const 4096))
    (loop $more
      (if (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24))
        (then (call $proc_exit (i32.const 3))))
      (br_if $more (i32.load (i32.const 24)))))

  (func (export "_start")
    (call $drain)
    (call $write (i32.const 2) (i32.const 100) (i32.const 30))
    (call $write (i32.const 1) (i32.const 200) (i32.const 36))))
