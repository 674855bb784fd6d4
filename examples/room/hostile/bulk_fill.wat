;; Hostile: fills its whole memory again and again with one instruction each time. Fuel counts
;; each fill once, however many bytes it writes; stopped by the run's deadline.
(module
  (memory (export "memory") 256)
  (func (export "run") (result i32)
    (loop $again
      (memory.fill (i32.const 0) (i32.const 7) (i32.const 16777216))
      (br $again))
    (i32.const 0)))
