;; Shows what the sandbox grants: the WASI environment as a list of "NAME=value" strings, and the
;; errno of fd_prestat_get(3) (8, EBADF, when no directory is preopened: no filesystem access).
;; Answers {"env": ["A=1", ...], "preopens": 8}. Values are written as they are (no JSON escaping).
;; Memory: 0..48 scratch, 100.. text, 4096.. the environ pointer array, 8192.. the environ strings.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"env\": [")
  (data (i32.const 120) "], \"preopens\": ")
  (data (i32.const 140) "},\"")

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 3)))))

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $end
      (loop $next
        (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  (func (export "_start")
    (local $count i32) (local $i i32) (local $s i32) (local $errno i32)
    (if (call $environ_sizes_get (i32.const 16) (i32.const 20)) (then (call $proc_exit (i32.const 3))))
    (local.set $count (i32.load (i32.const 16)))
    (if (call $environ_get (i32.const 4096) (i32.const 8192)) (then (call $proc_exit (i32.const 3))))
    (call $write (i32.const 100) (i32.const 9))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (if (local.get $i) (then (call $write (i32.const 141) (i32.const 1))))
        (local.set $s (i32.load (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 4)))))
        (call $write (i32.const 142) (i32.const 1))
        (call $write (local.get $s) (call $strlen (local.get $s)))
        (call $write (i32.const 142) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (call $write (i32.const 120) (i32.const 15))
    ;; errno as one or two decimal digits
    (local.set $errno (call $fd_prestat_get (i32.const 3) (i32.const 32)))
    (i32.store8 (i32.const 40) (i32.add (i32.const 48) (i32.div_u (local.get $errno) (i32.const 10))))
    (i32.store8 (i32.const 41) (i32.add (i32.const 48) (i32.rem_u (local.get $errno) (i32.const 10))))
    (if (i32.ge_u (local.get $errno) (i32.const 10))
      (then (call $write (i32.const 40) (i32.const 2)))
      (else (call $write (i32.const 41) (i32.const 1))))
    (call $write (i32.const 140) (i32.const 1))))
