//! Pillow-compatible Lanczos3 resampling of 8-bit greyscale images.
//!
//! Pillow (`libImaging/Resample.c`) resizes in two separable passes, horizontal then vertical. Each
//! pass turns its floating-point filter weights into fixed-point integers with
//! [`PRECISION_BITS`] fractional bits, accumulates in 32-bit integers starting from one half, and
//! clips back to 8 bits after the pass. The intermediate rounding is why a float resize gives
//! slightly different pixels, and slightly different pHashes near the median. Everything here
//! follows that file step by step.

use crate::LumaImage;

/// Fixed-point precision of Pillow's 8-bit resampler: `32 - 8 - 2`.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Lanczos filter support (a = 3).
const LANCZOS_SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    // Truncated sinc, as Pillow's `lanczos_filter`.
    if (-LANCZOS_SUPPORT..LANCZOS_SUPPORT).contains(&x) {
        sinc(x) * sinc(x / LANCZOS_SUPPORT)
    } else {
        0.0
    }
}

/// Fixed-point filter weights for one axis: for output sample `o`, the input window is
/// `start[o] .. start[o] + len[o]` and its weights are `weights[o * ksize ..][..len[o]]`.
struct Coefficients {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
fn precompute(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = LANCZOS_SUPPORT * filterscale;
    let ksize = (support.ceil() as usize) * 2 + 1;

    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C truncates toward zero when casting; the value is rounded by the +0.5 first.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = lanczos((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for (x, out) in row.iter_mut().enumerate().take(n) {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let scaled = w * f64::from(1u32 << PRECISION_BITS);
            *out = if w < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        start.push(xmin);
        len.push(n);
    }
    Coefficients {
        ksize,
        start,
        len,
        weights,
    }
}

fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Resample `src` to `out_w × out_h` exactly as Pillow's `Image.resize(.., Image.LANCZOS)` does for
/// mode "L".
pub(crate) fn resize_lanczos3(src: &LumaImage, out_w: usize, out_h: usize) -> Vec<u8> {
    let (in_w, in_h) = (src.width as usize, src.height as usize);

    // Horizontal pass (skipped when the width is unchanged, as Pillow does).
    let horizontal: std::borrow::Cow<'_, [u8]> = if in_w != out_w {
        let c = precompute(in_w, out_w);
        let mut tmp = vec![0u8; out_w * in_h];
        for y in 0..in_h {
            let row = &src.pixels[y * in_w..(y + 1) * in_w];
            for xx in 0..out_w {
                let w = &c.weights[xx * c.ksize..][..c.len[xx]];
                let px = &row[c.start[xx]..][..c.len[xx]];
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (&p, &k) in px.iter().zip(w) {
                    acc = acc.wrapping_add(i32::from(p).wrapping_mul(k));
                }
                tmp[y * out_w + xx] = clip8(acc);
            }
        }
        tmp.into()
    } else {
        src.pixels.as_slice().into()
    };

    if in_h == out_h {
        return horizontal.into_owned();
    }
    // Vertical pass.
    let c = precompute(in_h, out_h);
    let mut out = vec![0u8; out_w * out_h];
    for yy in 0..out_h {
        let w = &c.weights[yy * c.ksize..][..c.len[yy]];
        for xx in 0..out_w {
            let mut acc: i32 = 1 << (PRECISION_BITS - 1);
            for (y, &k) in w.iter().enumerate() {
                let p = horizontal[(c.start[yy] + y) * out_w + xx];
                acc = acc.wrapping_add(i32::from(p).wrapping_mul(k));
            }
            out[yy * out_w + xx] = clip8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_each_output_sum_to_one_in_fixed_point() {
        for (i, o) in [(512, 32), (33, 32), (10, 32), (1411, 32), (32, 32)] {
            let c = precompute(i, o);
            for xx in 0..o {
                let s: i64 = c.weights[xx * c.ksize..][..c.len[xx]]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                // Rounding each weight separately may leave the sum a few units off 2^22.
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= c.len[xx] as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }

    #[test]
    fn flat_image_stays_flat() {
        let img = LumaImage {
            width: 300,
            height: 70,
            pixels: vec![137; 300 * 70],
        };
        assert!(resize_lanczos3(&img, 32, 32).iter().all(|&p| p == 137));
    }
}
