;; Returns its input unchanged: {"tool": ..., "input": ...}
(module (;prelude;)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (call $pack (local.get $p) (local.get $n))))
