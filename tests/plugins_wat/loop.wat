;; Never returns: stopped by fuel, by the deadline, or by cancellation.
(module (;prelude;)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
