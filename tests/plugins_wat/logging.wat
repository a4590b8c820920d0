;; Logs through sidecar.log, writes to stdout and stderr through WASI, answers {"n":1}.
(module
  (import "sidecar" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (;prelude;)
  (data (i32.const 1024) "hello from the guest")
  (data (i32.const 1100) "to stdout\n")
  (data (i32.const 1200) "to stderr\n")
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (call $log (i32.const 1) (i32.const 1024) (i32.const 20))
    ;; iovec at 1300: {1100, 10}
    (i32.store (i32.const 1300) (i32.const 1100)) (i32.store (i32.const 1304) (i32.const 10))
    (drop (call $fd_write (i32.const 1) (i32.const 1300) (i32.const 1) (i32.const 1320)))
    (i32.store (i32.const 1300) (i32.const 1200))
    (drop (call $fd_write (i32.const 2) (i32.const 1300) (i32.const 1) (i32.const 1320)))
    (call $number_result (i32.const 1))))
