//! Arithmetic in GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), and the bulk
//! multiply-add kernel every split and reconstruction runs on.
//!
//! The kernel multiplies a whole buffer by one constant `c`. Multiplication by `c` is linear over
//! GF(2), so `c·b = c·(b & 0x0f) ⊕ c·(b & 0xf0)`: two 16-entry tables (the "split nibble" tables)
//! and two byte shuffles give 32 products per AVX2 instruction pair. Without AVX2 a 256-entry row
//! of the full multiplication table is used.

/// The reduction polynomial, x^8 + x^4 + x^3 + x^2 + 1.
pub const POLY: u16 = 0x11d;

const fn build_exp_log() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        exp[i + 255] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    // exp[510], exp[511] are never read with valid logs (max 254 + 254).
    (exp, log)
}

const EXP_LOG: ([u8; 512], [u8; 256]) = build_exp_log();
const EXP: [u8; 512] = EXP_LOG.0;
const LOG: [u8; 256] = EXP_LOG.1;

const fn build_mul_table() -> [[u8; 256]; 256] {
    let mut t = [[0u8; 256]; 256];
    let mut a = 1;
    while a < 256 {
        let mut b = 1;
        while b < 256 {
            t[a][b] = EXP[LOG[a] as usize + LOG[b] as usize];
            b += 1;
        }
        a += 1;
    }
    t
}

/// `MUL[a][b] = a·b`.
static MUL: [[u8; 256]; 256] = build_mul_table();

/// `a · b`.
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    MUL[a as usize][b as usize]
}

/// `a⁻¹`, or `None` for zero.
pub fn inv(a: u8) -> Option<u8> {
    (a != 0).then(|| EXP[255 - LOG[a as usize] as usize])
}

/// `a^e`.
pub fn pow(a: u8, e: u32) -> u8 {
    if e == 0 {
        return 1;
    }
    if a == 0 {
        return 0;
    }
    EXP[(LOG[a as usize] as u64 * e as u64 % 255) as usize]
}

/// Which implementation of the bulk kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kernel {
    /// 256-entry table row per constant; runs everywhere.
    Portable,
    /// Split-nibble tables with `VPSHUFB`, 32 bytes per step.
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU supports, detected at run time.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// Every kernel this CPU can run (for cross-checking them against each other).
    pub fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::Portable];
        if Kernel::detect() == Kernel::Avx2 {
            v.push(Kernel::Avx2);
        }
        v
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
        }
    }

    /// `dst[i] ^= c · src[i]`.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn mul_add(self, dst: &mut [u8], src: &[u8], c: u8) {
        assert_eq!(dst.len(), src.len(), "mul_add: length mismatch");
        match (self, c) {
            (_, 0) => {}
            (_, 1) => dst.iter_mut().zip(src).for_each(|(d, s)| *d ^= s),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, _) => simd::mul_xor_avx2::<true>(dst, src, c),
            _ => {
                let row = &MUL[c as usize];
                dst.iter_mut()
                    .zip(src)
                    .for_each(|(d, s)| *d ^= row[*s as usize]);
            }
        }
    }

    /// `dst[i] = c · src[i]`.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn mul(self, dst: &mut [u8], src: &[u8], c: u8) {
        assert_eq!(dst.len(), src.len(), "mul: length mismatch");
        match (self, c) {
            (_, 0) => dst.fill(0),
            (_, 1) => dst.copy_from_slice(src),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, _) => simd::mul_xor_avx2::<false>(dst, src, c),
            _ => {
                let row = &MUL[c as usize];
                dst.iter_mut()
                    .zip(src)
                    .for_each(|(d, s)| *d = row[*s as usize]);
            }
        }
    }
}

/// The split-nibble tables of `c`: `lo[i] = c·i`, `hi[i] = c·(i << 4)`.
fn nibble_tables(c: u8) -> ([u8; 16], [u8; 16]) {
    (
        std::array::from_fn(|i| mul(c, i as u8)),
        std::array::from_fn(|i| mul(c, (i as u8) << 4)),
    )
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Entry point: checks the CPU feature, then runs the AVX2 loop.
    #[inline]
    pub(super) fn mul_xor_avx2<const ACCUMULATE: bool>(dst: &mut [u8], src: &[u8], c: u8) {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        debug_assert_eq!(dst.len(), src.len());
        let (lo, hi) = super::nibble_tables(c);
        // SAFETY: AVX2 support was asserted just above.
        unsafe { kernel::<ACCUMULATE>(dst, src, &lo, &hi) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn kernel<const ACCUMULATE: bool>(
        dst: &mut [u8],
        src: &[u8],
        lo: &[u8; 16],
        hi: &[u8; 16],
    ) {
        let len = dst.len().min(src.len());
        // SAFETY: `lo` and `hi` are 16 readable bytes; unaligned loads are allowed.
        let (lo_t, hi_t) = unsafe {
            (
                _mm256_broadcastsi128_si256(_mm_loadu_si128(lo.as_ptr().cast())),
                _mm256_broadcastsi128_si256(_mm_loadu_si128(hi.as_ptr().cast())),
            )
        };
        let mask = _mm256_set1_epi8(0x0f);
        let product = |s: __m256i| {
            let l = _mm256_and_si256(s, mask);
            let h = _mm256_and_si256(_mm256_srli_epi64(s, 4), mask);
            _mm256_xor_si256(_mm256_shuffle_epi8(lo_t, l), _mm256_shuffle_epi8(hi_t, h))
        };
        let mut i = 0;
        // Two vectors per iteration keep both shuffle ports busy.
        while i + 64 <= len {
            // SAFETY: `i + 64 <= len` and both slices hold at least `len` bytes.
            unsafe {
                let sp = src.as_ptr().add(i).cast::<__m256i>();
                let dp = dst.as_mut_ptr().add(i).cast::<__m256i>();
                let mut p0 = product(_mm256_loadu_si256(sp));
                let mut p1 = product(_mm256_loadu_si256(sp.add(1)));
                if ACCUMULATE {
                    p0 = _mm256_xor_si256(p0, _mm256_loadu_si256(dp));
                    p1 = _mm256_xor_si256(p1, _mm256_loadu_si256(dp.add(1)));
                }
                _mm256_storeu_si256(dp, p0);
                _mm256_storeu_si256(dp.add(1), p1);
            }
            i += 64;
        }
        while i + 32 <= len {
            // SAFETY: `i + 32 <= len` and both slices hold at least `len` bytes.
            unsafe {
                let sp = src.as_ptr().add(i).cast::<__m256i>();
                let dp = dst.as_mut_ptr().add(i).cast::<__m256i>();
                let mut p = product(_mm256_loadu_si256(sp));
                if ACCUMULATE {
                    p = _mm256_xor_si256(p, _mm256_loadu_si256(dp));
                }
                _mm256_storeu_si256(dp, p);
            }
            i += 32;
        }
        for j in i..len {
            let p = lo[(src[j] & 0x0f) as usize] ^ hi[(src[j] >> 4) as usize];
            dst[j] = if ACCUMULATE { dst[j] ^ p } else { p };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Carry-less multiply then reduce: the definition, independent of the tables.
    fn mul_slow(a: u8, b: u8) -> u8 {
        let mut r: u16 = 0;
        for i in 0..8 {
            if b >> i & 1 == 1 {
                r ^= (a as u16) << i;
            }
        }
        for i in (8..16).rev() {
            if r >> i & 1 == 1 {
                r ^= POLY << (i - 8);
            }
        }
        r as u8
    }

    #[test]
    fn tables_match_definition() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul_slow(a, b), "{a}·{b}");
            }
            if a != 0 {
                assert_eq!(mul(a, inv(a).unwrap()), 1);
            }
        }
        assert_eq!(inv(0), None);
        assert_eq!(pow(2, 8), 0x1d);
        assert_eq!(pow(3, 0), 1);
    }

    #[test]
    fn kernels_agree_on_every_constant_and_odd_lengths() {
        let src: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for k in Kernel::available() {
            for c in 0..=255u8 {
                for len in [0, 1, 31, 32, 63, 64, 65, 1000] {
                    let mut dst: Vec<u8> = (0..len as u32).map(|i| (i * 13) as u8).collect();
                    let want: Vec<u8> = dst
                        .iter()
                        .zip(&src)
                        .map(|(d, s)| d ^ mul_slow(c, *s))
                        .collect();
                    k.mul_add(&mut dst, &src[..len], c);
                    assert_eq!(dst, want, "{} mul_add c={c} len={len}", k.name());
                    k.mul(&mut dst, &src[..len], c);
                    let want: Vec<u8> = src[..len].iter().map(|s| mul_slow(c, *s)).collect();
                    assert_eq!(dst, want, "{} mul c={c} len={len}", k.name());
                }
            }
        }
    }
}
