;; Hostile: writes its whole memory as output, over and over. Stopped at its manifest's
;; output maximum.
(module
  (import "obscura" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (loop $more
      (call $output (i32.const 0) (i32.const 65536))
      (br $more))
    (i32.const 0)))
