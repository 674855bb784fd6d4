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
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, _) => simd::mul_avx2(simd::Out::Accumulate(dst), src, c),
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
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, _) => simd::mul_avx2(simd::Out::Set(dst), src, c),
            _ => {
                let row = &MUL[c as usize];
                dst.iter_mut()
                    .zip(src)
                    .for_each(|(d, s)| *d = row[*s as usize]);
            }
        }
    }

    /// `dst[i] = base[i] ^ c · src[i]`: the first multiply-add of a share, without copying
    /// `base` first.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn mul_add_to(self, dst: &mut [u8], base: &[u8], src: &[u8], c: u8) {
        assert!(
            dst.len() == src.len() && dst.len() == base.len(),
            "mul_add_to: length mismatch"
        );
        match (self, c) {
            (_, 0) => dst.copy_from_slice(base),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, _) => simd::mul_avx2(simd::Out::AddTo(dst, base), src, c),
            _ => {
                let row = &MUL[c as usize];
                for ((d, b), s) in dst.iter_mut().zip(base).zip(src) {
                    *d = b ^ row[*s as usize];
                }
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

    /// Where products go.
    pub(super) enum Out<'a> {
        /// `dst = c·src`
        Set(&'a mut [u8]),
        /// `dst ^= c·src`
        Accumulate(&'a mut [u8]),
        /// `dst = base ^ c·src`
        AddTo(&'a mut [u8], &'a [u8]),
    }

    /// Entry point: checks lengths and the CPU feature, then runs the AVX2 loop.
    #[inline]
    pub(super) fn mul_avx2(out: Out<'_>, src: &[u8], c: u8) {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        let (lo, hi) = super::nibble_tables(c);
        match out {
            Out::Set(dst) => {
                assert_eq!(dst.len(), src.len());
                // SAFETY: AVX2 asserted; `base` is never read when XOR_BASE is false.
                unsafe { kernel::<false>(dst.as_mut_ptr(), std::ptr::null(), src, &lo, &hi) }
            }
            Out::Accumulate(dst) => {
                assert_eq!(dst.len(), src.len());
                // SAFETY: AVX2 asserted; `base` is `dst` itself, read through the same raw
                // pointer provenance before each store to the same bytes.
                let p = dst.as_mut_ptr();
                unsafe { kernel::<true>(p, p, src, &lo, &hi) }
            }
            Out::AddTo(dst, base) => {
                assert!(dst.len() == src.len() && base.len() == src.len());
                // SAFETY: AVX2 asserted; `dst` is a unique borrow, so it cannot overlap `base`.
                unsafe { kernel::<true>(dst.as_mut_ptr(), base.as_ptr(), src, &lo, &hi) }
            }
        }
    }

    /// `dst[i] = (XOR_BASE ? base[i] : 0) ^ c·src[i]` for `i < src.len()`.
    ///
    /// # Safety
    /// AVX2 must be available; `dst` must be writable and, when `XOR_BASE`, `base` readable for
    /// `src.len()` bytes; `base` may equal `dst` but must not partially overlap it.
    #[target_feature(enable = "avx2")]
    unsafe fn kernel<const XOR_BASE: bool>(
        dst: *mut u8,
        base: *const u8,
        src: &[u8],
        lo: &[u8; 16],
        hi: &[u8; 16],
    ) {
        let len = src.len();
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
            // SAFETY: `i + 64 <= len`; the caller guarantees `len` bytes at every pointer.
            unsafe {
                let sp = src.as_ptr().add(i).cast::<__m256i>();
                let dp = dst.add(i).cast::<__m256i>();
                let mut p0 = product(_mm256_loadu_si256(sp));
                let mut p1 = product(_mm256_loadu_si256(sp.add(1)));
                if XOR_BASE {
                    let bp = base.add(i).cast::<__m256i>();
                    p0 = _mm256_xor_si256(p0, _mm256_loadu_si256(bp));
                    p1 = _mm256_xor_si256(p1, _mm256_loadu_si256(bp.add(1)));
                }
                _mm256_storeu_si256(dp, p0);
                _mm256_storeu_si256(dp.add(1), p1);
            }
            i += 64;
        }
        while i + 32 <= len {
            // SAFETY: `i + 32 <= len`; the caller guarantees `len` bytes at every pointer.
            unsafe {
                let sp = src.as_ptr().add(i).cast::<__m256i>();
                let mut p = product(_mm256_loadu_si256(sp));
                if XOR_BASE {
                    p = _mm256_xor_si256(p, _mm256_loadu_si256(base.add(i).cast()));
                }
                _mm256_storeu_si256(dst.add(i).cast(), p);
            }
            i += 32;
        }
        while i < len {
            let s = src[i];
            let p = lo[(s & 0x0f) as usize] ^ hi[(s >> 4) as usize];
            // SAFETY: `i < len`; the caller guarantees `len` bytes at every pointer.
            unsafe {
                let b = if XOR_BASE { *base.add(i) } else { 0 };
                *dst.add(i) = b ^ p;
            }
            i += 1;
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
                    let base: Vec<u8> = (0..len as u32).map(|i| (i * 29 + 5) as u8).collect();
                    k.mul_add_to(&mut dst, &base, &src[..len], c);
                    let want: Vec<u8> = base
                        .iter()
                        .zip(&src)
                        .map(|(b, s)| b ^ mul_slow(c, *s))
                        .collect();
                    assert_eq!(dst, want, "{} mul_add_to c={c} len={len}", k.name());
                }
            }
        }
    }
}
