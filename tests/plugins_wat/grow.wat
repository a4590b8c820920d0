;; Tool "report": grows memory by 64 pages (4 MiB) once and answers {"n": <memory.grow
;; result>} (-1 when refused). Tool "abort": grows one page at a time until refused, then
;; traps, as a C program whose malloc failed would. The host encodes the input as
;; {"tool":"<name>",...}, so the tool name's first letter is at offset 9.
(module (;prelude;)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (if (i32.eq (i32.load8_u (i32.add (local.get $p) (i32.const 9))) (i32.const 97))  ;; 'a'
      (then
        (loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        unreachable))
    (call $number_result (memory.grow (i32.const 64)))))
