;; Answers bytes that are not JSON.
(module (;prelude;)
  (data (i32.const 2048) "{not json")
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (call $pack (i32.const 2048) (i32.const 9))))
