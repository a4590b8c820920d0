;; kv_set("greeting", <the whole input>), then kv_get("greeting") and answers the stored
;; value (the input JSON again): {"n": -2} when the quota refused the write.
(module
  (import "sidecar" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "sidecar" "kv_get" (func $get (param i32 i32) (result i32)))
  (import "sidecar" "result_read" (func $read (param i32 i32) (result i32)))
  (;prelude;)
  (data (i32.const 1024) "greeting")
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (local $r i32) (local $len i32) (local $buf i32)
    (local.set $r (call $set (i32.const 1024) (i32.const 8) (local.get $p) (local.get $n)))
    (if (i32.ne (local.get $r) (i32.const 0)) (then (return (call $number_result (local.get $r)))))
    (local.set $len (call $get (i32.const 1024) (i32.const 8)))
    (local.set $buf (call $alloc (local.get $len)))
    (call $pack (local.get $buf) (call $read (local.get $buf) (local.get $len)))))
