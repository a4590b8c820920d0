;; Fetches {{REQUEST}} (a JSON request) through sidecar.http_fetch and answers the
;; response JSON the host produced.
(module
  (import "sidecar" "http_fetch" (func $fetch (param i32 i32) (result i32)))
  (import "sidecar" "result_read" (func $read (param i32 i32) (result i32)))
  (;prelude;)
  (data (i32.const 1024) "{{REQUEST}}")
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (local $len i32) (local $buf i32)
    (local.set $len (call $fetch (i32.const 1024) (i32.const {{REQLEN}})))
    (local.set $buf (call $alloc (local.get $len)))
    (call $pack (local.get $buf) (call $read (local.get $buf) (local.get $len)))))
