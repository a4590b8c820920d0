;; Traps mid-call (unreachable) after doing some work.
(module (;prelude;)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (drop (call $itoa (i32.const 12345) (i32.const 4096)))
    unreachable))
