//! The low-frequency corner of an orthonormal 2-D DCT-II.
//!
//! Only the 8×8 block that becomes the hash is computed: 8 row transforms of the 32 columns, then
//! 8 transforms of those rows, about 10 k multiply-adds instead of a full 32×32 transform.

use std::sync::OnceLock;

use crate::{LOW, REDUCED};

/// `basis[u][x] = s(u) · cos(π (2x + 1) u / 2N)` with `s(0) = √(1/N)`, `s(u) = √(2/N)`.
fn basis() -> &'static [[f64; REDUCED]; LOW] {
    static BASIS: OnceLock<[[f64; REDUCED]; LOW]> = OnceLock::new();
    BASIS.get_or_init(|| {
        let n = REDUCED as f64;
        std::array::from_fn(|u| {
            let s = if u == 0 {
                (1.0 / n).sqrt()
            } else {
                (2.0 / n).sqrt()
            };
            std::array::from_fn(|x| {
                s * (std::f64::consts::PI * (2.0 * x as f64 + 1.0) * u as f64 / (2.0 * n)).cos()
            })
        })
    })
}

/// DCT coefficients `D[u][v]` for `u, v < 8` of a 32×32 block (`u` vertical frequency), row-major.
pub(crate) fn low_block(pixels: &[u8]) -> [f64; LOW * LOW] {
    debug_assert_eq!(pixels.len(), REDUCED * REDUCED);
    let c = basis();
    // rows[u][x] = Σ_y c[u][y] · f[y][x]
    let mut rows = [[0f64; REDUCED]; LOW];
    for (y, line) in pixels.chunks_exact(REDUCED).enumerate() {
        for (u, row) in rows.iter_mut().enumerate() {
            let cu = c[u][y];
            for (acc, &p) in row.iter_mut().zip(line) {
                *acc += cu * f64::from(p);
            }
        }
    }
    let mut out = [0f64; LOW * LOW];
    for (u, row) in rows.iter().enumerate() {
        for v in 0..LOW {
            out[u * LOW + v] = row.iter().zip(&c[v]).map(|(a, b)| a * b).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_is_orthonormal() {
        let c = basis();
        for a in 0..LOW {
            for b in 0..LOW {
                let dot: f64 = c[a].iter().zip(&c[b]).map(|(x, y)| x * y).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn flat_block_has_only_dc() {
        let d = low_block(&[10u8; REDUCED * REDUCED]);
        assert!((d[0] - 10.0 * REDUCED as f64).abs() < 1e-9);
        assert!(d[1..].iter().all(|v| v.abs() < 1e-9));
    }
}
