;; Opens {{PATH}} relative to preopened fd {{FD}} with oflags {{OFLAGS}} and rights {{RIGHTS}};
;; answers {"n": errno} (0: opened, then reads up to 64 bytes, answered instead as the bytes
;; read when {{READ}} is 1). WASI errno 2 = EBADF, 44 = ENOENT, 63 = EPERM, 76 = ENOTCAPABLE.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (;prelude;)
  (data (i32.const 1024) "{{PATH}}")
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (local $errno i32)
    (local.set $errno (call $path_open (i32.const {{FD}}) (i32.const 1) (i32.const 1024) (i32.const {{PATHLEN}})
      (i32.const {{OFLAGS}}) (i64.const {{RIGHTS}}) (i64.const {{RIGHTS}}) (i32.const 0) (i32.const 2000)))
    (if (i32.eqz (local.get $errno))
      (then
        (if (i32.eq (i32.const {{READ}}) (i32.const 1))
          (then
            (i32.store (i32.const 2100) (i32.const 3000)) (i32.store (i32.const 2104) (i32.const 64))
            (local.set $errno (call $fd_read (i32.load (i32.const 2000)) (i32.const 2100) (i32.const 1) (i32.const 2200)))
            (return (call $number_result (i32.load (i32.const 2200))))))
        (if (i32.eq (i32.const {{READ}}) (i32.const 2))
          (then
            (i32.store (i32.const 2100) (i32.const 1024)) (i32.store (i32.const 2104) (i32.const 4))
            (local.set $errno (call $fd_write (i32.load (i32.const 2000)) (i32.const 2100) (i32.const 1) (i32.const 2200)))
            (if (local.get $errno) (then (return (call $number_result (local.get $errno)))))
            (return (call $number_result (i32.const 0)))))))
    (call $number_result (local.get $errno))))
