;; Mean colour and size of every input. Output (JSON), one object per input in order:
;; [{"width":W,"height":H,"mean":[R,G,B]},...], means rounded down.
(module
  (import "obscura" "inputs" (func $inputs (result i32)))
  (import "obscura" "width" (func $width (param i32) (result i32)))
  (import "obscura" "height" (func $height (param i32) (result i32)))
  (import "obscura" "pixels" (func $pixels (param i32 i32) (result i32)))
  (import "obscura" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  ;; output text from 1024 (at most 60 bytes per input, 64 inputs); pixels from 65536.
  (global $at (mut i32) (i32.const 1024))

  (func $byte (param $b i32)
    (i32.store8 (global.get $at) (local.get $b))
    (global.set $at (i32.add (global.get $at) (i32.const 1))))

  (func $text (param $ptr i32) (param $len i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (call $byte (i32.load8_u (local.get $ptr)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next))))

  (func $number (param $n i64)
    (if (i64.ge_u (local.get $n) (i64.const 10))
      (then (call $number (i64.div_u (local.get $n) (i64.const 10)))))
    (call $byte (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10))))))

  ;; Make memory hold `end` bytes; false if it may not grow.
  (func $room (param $end i64) (result i32)
    (local $pages i64)
    (local.set $pages (i64.div_u (i64.add (local.get $end) (i64.const 65535)) (i64.const 65536)))
    (if (i64.gt_u (local.get $pages) (i64.const 65536)) (then (return (i32.const 0))))
    (if (i64.le_u (local.get $pages) (i64.extend_i32_u (memory.size))) (then (return (i32.const 1))))
    (i32.ne (i32.const -1)
      (memory.grow (i32.sub (i32.wrap_i64 (local.get $pages)) (memory.size)))))

  (data (i32.const 0) "{\"width\":,\"height\":,\"mean\":[]}")

  (func (export "run") (result i32)
    (local $i i32) (local $n i32) (local $w i32) (local $h i32) (local $len i32)
    (local $p i32) (local $end i32) (local $r i64) (local $g i64) (local $b i64) (local $count i64)
    (local.set $n (call $inputs))
    (call $byte (i32.const 91))                                   ;; [
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $w (call $width (local.get $i)))
        (local.set $h (call $height (local.get $i)))
        (local.set $count (i64.mul (i64.extend_i32_u (local.get $w)) (i64.extend_i32_u (local.get $h))))
        (if (i32.eqz (call $room (i64.add (i64.const 65536) (i64.mul (local.get $count) (i64.const 3)))))
          (then (return (i32.const 2))))
        (local.set $len (call $pixels (local.get $i) (i32.const 65536)))
        (local.set $r (i64.const 0)) (local.set $g (i64.const 0)) (local.set $b (i64.const 0))
        (local.set $p (i32.const 65536))
        (local.set $end (i32.add (i32.const 65536) (local.get $len)))
        (block $summed
          (loop $pixel
            (br_if $summed (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $r (i64.add (local.get $r) (i64.load8_u (local.get $p))))
            (local.set $g (i64.add (local.get $g) (i64.load8_u offset=1 (local.get $p))))
            (local.set $b (i64.add (local.get $b) (i64.load8_u offset=2 (local.get $p))))
            (local.set $p (i32.add (local.get $p) (i32.const 3)))
            (br $pixel)))
        (if (i64.eqz (local.get $count)) (then (local.set $count (i64.const 1))))
        (if (i32.gt_s (local.get $i) (i32.const 0)) (then (call $byte (i32.const 44))))
        (call $text (i32.const 0) (i32.const 9))                  ;; {"width":
        (call $number (i64.extend_i32_u (local.get $w)))
        (call $text (i32.const 9) (i32.const 10))                 ;; ,"height":
        (call $number (i64.extend_i32_u (local.get $h)))
        (call $text (i32.const 19) (i32.const 9))                 ;; ,"mean":[
        (call $number (i64.div_u (local.get $r) (local.get $count)))
        (call $byte (i32.const 44))
        (call $number (i64.div_u (local.get $g) (local.get $count)))
        (call $byte (i32.const 44))
        (call $number (i64.div_u (local.get $b) (local.get $count)))
        (call $text (i32.const 28) (i32.const 2))                 ;; ]}
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $byte (i32.const 93))                                   ;; ]
    (call $output (i32.const 1024) (i32.sub (global.get $at) (i32.const 1024)))
    (i32.const 0))
)
