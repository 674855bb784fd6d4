;; Hostile: grows its memory a megabyte at a time until refused, then tries once more.
;; Stopped when it asks past its manifest's memory limit.
(module
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (i32.const 0)))
