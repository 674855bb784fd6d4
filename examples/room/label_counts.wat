;; Match count per owner label: how many inputs carry each label of the manifest, and how many
;; carry none. Output (JSON): {"unlabelled":N,"counts":[c0,c1,...]} up to the highest label
;; used. Reads no pixels.
(module
  (import "obscura" "inputs" (func $inputs (result i32)))
  (import "obscura" "label" (func $label (param i32) (result i32)))
  (import "obscura" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  ;; counts: 256 × i32 at 0; output text from 4096.
  (global $at (mut i32) (i32.const 4096))

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

  ;; Decimal digits of a non-negative number.
  (func $number (param $n i64)
    (if (i64.ge_u (local.get $n) (i64.const 10))
      (then (call $number (i64.div_u (local.get $n) (i64.const 10)))))
    (call $byte (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10))))))

  (data (i32.const 2048) "{\"unlabelled\":,\"counts\":[]}")

  (func (export "run") (result i32)
    (local $i i32) (local $n i32) (local $l i32) (local $none i32) (local $top i32)
    (local.set $n (call $inputs))
    (local.set $top (i32.const -1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $l (call $label (local.get $i)))
        (if (i32.lt_s (local.get $l) (i32.const 0))
          (then (local.set $none (i32.add (local.get $none) (i32.const 1))))
          (else
            (if (i32.ge_s (local.get $l) (i32.const 256)) (then (return (i32.const 1))))
            (i32.store (i32.shl (local.get $l) (i32.const 2))
              (i32.add (i32.load (i32.shl (local.get $l) (i32.const 2))) (i32.const 1)))
            (if (i32.gt_s (local.get $l) (local.get $top)) (then (local.set $top (local.get $l))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $text (i32.const 2048) (i32.const 14))            ;; {"unlabelled":
    (call $number (i64.extend_i32_u (local.get $none)))
    (call $text (i32.const 2062) (i32.const 11))            ;; ,"counts":[
    (local.set $i (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.gt_s (local.get $i) (local.get $top)))
        (if (i32.gt_s (local.get $i) (i32.const 0)) (then (call $byte (i32.const 44))))
        (call $number (i64.extend_i32_u (i32.load (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $text (i32.const 2073) (i32.const 2))             ;; ]}
    (call $output (i32.const 4096) (i32.sub (global.get $at) (i32.const 4096)))
    (i32.const 0))
)
