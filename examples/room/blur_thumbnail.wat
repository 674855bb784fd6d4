;; A thumbnail of the first input with a region blurred (faces, plates, text).
;; Parameters: six u32, little-endian: the thumbnail's longer side S, then the region
;; x0 y0 x1 y1 (thumbnail pixels, x1 and y1 excluded), then the blur radius.
;; The thumbnail is sampled by nearest neighbour; each pixel inside the region becomes the mean
;; of the region's pixels within the radius. Output: an image (width, height, RGB8).
(module
  (import "obscura" "inputs" (func $inputs (result i32)))
  (import "obscura" "width" (func $width (param i32) (result i32)))
  (import "obscura" "height" (func $height (param i32) (result i32)))
  (import "obscura" "pixels" (func $pixels (param i32 i32) (result i32)))
  (import "obscura" "params_len" (func $params_len (result i32)))
  (import "obscura" "params" (func $params (param i32) (result i32)))
  (import "obscura" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)

  (func $room (param $end i64) (result i32)
    (local $pages i64)
    (local.set $pages (i64.div_u (i64.add (local.get $end) (i64.const 65535)) (i64.const 65536)))
    (if (i64.gt_u (local.get $pages) (i64.const 65536)) (then (return (i32.const 0))))
    (if (i64.le_u (local.get $pages) (i64.extend_i32_u (memory.size))) (then (return (i32.const 1))))
    (i32.ne (i32.const -1)
      (memory.grow (i32.sub (i32.wrap_i64 (local.get $pages)) (memory.size)))))

  (func $min (param $a i32) (param $b i32) (result i32)
    (select (local.get $a) (local.get $b) (i32.lt_u (local.get $a) (local.get $b))))
  (func $max (param $a i32) (param $b i32) (result i32)
    (select (local.get $a) (local.get $b) (i32.gt_u (local.get $a) (local.get $b))))

  (func (export "run") (result i32)
    (local $side i32) (local $x0 i32) (local $y0 i32) (local $x1 i32) (local $y1 i32) (local $rad i32)
    (local $w i32) (local $h i32) (local $tw i32) (local $th i32)
    (local $p i32) (local $t i32) (local $out i32) (local $tn i32)
    (local $x i32) (local $y i32) (local $xx i32) (local $yy i32) (local $src i32) (local $dst i32)
    (local $r i32) (local $g i32) (local $b i32) (local $count i32)
    (if (i32.ne (call $params_len) (i32.const 24)) (then (return (i32.const 3))))
    (drop (call $params (i32.const 0)))
    (local.set $side (i32.load (i32.const 0)))
    (local.set $x0 (i32.load (i32.const 4)))
    (local.set $y0 (i32.load (i32.const 8)))
    (local.set $x1 (i32.load (i32.const 12)))
    (local.set $y1 (i32.load (i32.const 16)))
    (local.set $rad (i32.load (i32.const 20)))
    (if (i32.lt_s (call $inputs) (i32.const 1)) (then (return (i32.const 4))))
    (if (i32.or (i32.eqz (local.get $side)) (i32.gt_u (local.get $side) (i32.const 1024)))
      (then (return (i32.const 5))))
    (if (i32.gt_u (local.get $rad) (i32.const 16)) (then (return (i32.const 6))))
    (local.set $w (call $width (i32.const 0)))
    (local.set $h (call $height (i32.const 0)))
    (if (i32.ge_u (local.get $w) (local.get $h))
      (then
        (local.set $tw (local.get $side))
        (local.set $th (call $max (i32.const 1)
          (i32.div_u (i32.mul (local.get $h) (local.get $side)) (local.get $w)))))
      (else
        (local.set $th (local.get $side))
        (local.set $tw (call $max (i32.const 1)
          (i32.div_u (i32.mul (local.get $w) (local.get $side)) (local.get $h))))))
    ;; pixels at 64 KiB, the plain thumbnail after them, the output after that.
    (local.set $p (i32.const 65536))
    (local.set $t (i32.add (local.get $p) (i32.mul (i32.mul (local.get $w) (local.get $h)) (i32.const 3))))
    (local.set $tn (i32.mul (i32.mul (local.get $tw) (local.get $th)) (i32.const 3)))
    (local.set $out (i32.add (local.get $t) (local.get $tn)))
    (if (i32.eqz (call $room (i64.extend_i32_u (i32.add (i32.add (local.get $out) (i32.const 8)) (local.get $tn)))))
      (then (return (i32.const 2))))
    (drop (call $pixels (i32.const 0) (local.get $p)))
    ;; Nearest neighbour.
    (local.set $y (i32.const 0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $y) (local.get $th)))
        (local.set $x (i32.const 0))
        (block $cols_done
          (loop $cols
            (br_if $cols_done (i32.ge_u (local.get $x) (local.get $tw)))
            (local.set $src (i32.add (local.get $p) (i32.mul (i32.const 3)
              (i32.add
                (i32.mul (i32.div_u (i32.mul (local.get $y) (local.get $h)) (local.get $th)) (local.get $w))
                (i32.div_u (i32.mul (local.get $x) (local.get $w)) (local.get $tw))))))
            (local.set $dst (i32.add (local.get $t) (i32.mul (i32.const 3)
              (i32.add (i32.mul (local.get $y) (local.get $tw)) (local.get $x)))))
            (i32.store16 (local.get $dst) (i32.load16_u (local.get $src)))
            (i32.store8 offset=2 (local.get $dst) (i32.load8_u offset=2 (local.get $src)))
            (local.set $x (i32.add (local.get $x) (i32.const 1)))
            (br $cols)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $rows)))
    (i32.store (local.get $out) (local.get $tw))
    (i32.store offset=4 (local.get $out) (local.get $th))
    (memory.copy (i32.add (local.get $out) (i32.const 8)) (local.get $t) (local.get $tn))
    ;; Blur the region, reading the plain thumbnail and writing the output.
    (local.set $x1 (call $min (local.get $x1) (local.get $tw)))
    (local.set $y1 (call $min (local.get $y1) (local.get $th)))
    (local.set $y (local.get $y0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $y) (local.get $y1)))
        (local.set $x (local.get $x0))
        (block $cols_done
          (loop $cols
            (br_if $cols_done (i32.ge_u (local.get $x) (local.get $x1)))
            (local.set $r (i32.const 0)) (local.set $g (i32.const 0)) (local.set $b (i32.const 0))
            (local.set $count (i32.const 0))
            (local.set $yy (call $max (local.get $y0)
              (select (i32.sub (local.get $y) (local.get $rad)) (i32.const 0)
                (i32.ge_u (local.get $y) (local.get $rad)))))
            (block $ky_done
              (loop $ky
                (br_if $ky_done (i32.ge_u (local.get $yy)
                  (call $min (local.get $y1) (i32.add (i32.add (local.get $y) (local.get $rad)) (i32.const 1)))))
                (local.set $xx (call $max (local.get $x0)
                  (select (i32.sub (local.get $x) (local.get $rad)) (i32.const 0)
                    (i32.ge_u (local.get $x) (local.get $rad)))))
                (block $kx_done
                  (loop $kx
                    (br_if $kx_done (i32.ge_u (local.get $xx)
                      (call $min (local.get $x1) (i32.add (i32.add (local.get $x) (local.get $rad)) (i32.const 1)))))
                    (local.set $src (i32.add (local.get $t) (i32.mul (i32.const 3)
                      (i32.add (i32.mul (local.get $yy) (local.get $tw)) (local.get $xx)))))
                    (local.set $r (i32.add (local.get $r) (i32.load8_u (local.get $src))))
                    (local.set $g (i32.add (local.get $g) (i32.load8_u offset=1 (local.get $src))))
                    (local.set $b (i32.add (local.get $b) (i32.load8_u offset=2 (local.get $src))))
                    (local.set $count (i32.add (local.get $count) (i32.const 1)))
                    (local.set $xx (i32.add (local.get $xx) (i32.const 1)))
                    (br $kx)))
                (local.set $yy (i32.add (local.get $yy) (i32.const 1)))
                (br $ky)))
            (local.set $dst (i32.add (i32.add (local.get $out) (i32.const 8)) (i32.mul (i32.const 3)
              (i32.add (i32.mul (local.get $y) (local.get $tw)) (local.get $x)))))
            (i32.store8 (local.get $dst) (i32.div_u (local.get $r) (local.get $count)))
            (i32.store8 offset=1 (local.get $dst) (i32.div_u (local.get $g) (local.get $count)))
            (i32.store8 offset=2 (local.get $dst) (i32.div_u (local.get $b) (local.get $count)))
            (local.set $x (i32.add (local.get $x) (i32.const 1)))
            (br $cols)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $rows)))
    (call $output (local.get $out) (i32.add (local.get $tn) (i32.const 8)))
    (i32.const 0))
)
