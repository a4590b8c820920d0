;; Counts its calls in a global: 1 on every call with a fresh instance, 1, 2, 3... when persistent.
(module (;prelude;)
  (global $calls (mut i32) (i32.const 0))
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (call $number_result (global.get $calls))))
