;; A handler error: writes the error object to stdout, a log line to stderr, and exits with status 1.
;; `permanent: true` tells the broker not to retry.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "fail.wat: the event has no name\n")
  (data (i32.const 200) "{\"error\": {\"type\": \"ValidationError\", \"message\": \"no name given\", \"permanent\": true}}")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func (export "_start")
    (call $write (i32.const 2) (i32.const 100) (i32.const 32))
    (call $write (i32.const 1) (i32.const 200) (i32.const 85))
    (call $proc_exit (i32.const 1))))
