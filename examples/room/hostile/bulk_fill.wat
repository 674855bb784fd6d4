;; Hostile: fills its whole memory again and again, one instruction a time. Fuel is charged by
;; what a bulk instruction writes, so its fuel runs out at once; the run's deadline would stop
;; it besides.
(module
  (memory (export "memory") 256)
  (func (export "run") (result i32)
    (loop $again
      (memory.fill (i32.const 0) (i32.const 7) (i32.const 16777216))
      (br $again))
    (i32.const 0)))
