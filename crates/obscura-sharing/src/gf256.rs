//! Arithmetic in GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), and the bulk
//! multiply-add kernels every split and reconstruction runs on.
//!
//! A kernel multiplies a whole buffer by one constant `c`. The constant is public (a power of a
//! share's x-coordinate when splitting, a Lagrange weight when reconstructing), but the buffer is
//! secret: image bytes, random coefficients, shares. So no kernel lets a data byte choose a memory
//! address or a branch. A table lookup indexed by a secret byte leaves a trace in the cache that
//! another process on the same core, or a host watching an enclave, can time and turn back into
//! the byte.
//!
//! Multiplication by `c` is linear over GF(2), which every kernel uses:
//! - GFNI (AVX-512 or 256-bit forms, where the CPU has them): `c·` is an 8 × 8 bit matrix, and
//!   `VGF2P8AFFINEQB` applies it to 64 or 32 bytes at once, with no table at all.
//! - AVX2: `c·b = c·(b & 0x0f) ⊕ c·(b & 0xf0)`. The two 16-entry "split nibble" tables live in
//!   registers and `VPSHUFB` looks them up in a time that does not depend on the indices, 32
//!   bytes per shuffle pair.
//! - Portable: `c·b = ⊕ b_k·(c·2^k)` over the bits `b_k` of `b`. The eight products `c·2^k` are
//!   computed once per call; each data bit becomes an all-ones or all-zeros mask that keeps or
//!   drops its product, eight bytes per `u64`.
//!
//! The scalar [`mul`], [`inv`] and [`pow`] index tables by their operands: they are for public
//! values only (x-coordinates and the weights built from them, the constant of a kernel call).

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

/// `a · b`, for public operands only: the product is a table lookup indexed by both. Multiply
/// secret bytes with a [`Kernel`].
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    MUL[a as usize][b as usize]
}

/// `a⁻¹`, or `None` for zero; for public operands only (a table lookup indexed by `a`).
pub fn inv(a: u8) -> Option<u8> {
    (a != 0).then(|| EXP[255 - LOG[a as usize] as usize])
}

/// `a^e`, for public operands only (a table lookup indexed by `a`).
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
    /// Bit by bit with masks, eight bytes per `u64`; runs everywhere. Constant-time in the data
    /// like [`Kernel::Avx2`]: no load address and no branch depends on a data byte, so a
    /// machine without AVX2 does not trade the secret for speed.
    Portable,
    /// Split-nibble tables with `VPSHUFB`, 32 bytes per step; the last `len % 32` bytes run on
    /// the portable kernel.
    Avx2,
    /// `VGF2P8AFFINEQB` on 256-bit vectors: multiplication by `c` is a linear map of GF(2)^8,
    /// applied to 32 bytes by one instruction as an 8 × 8 bit matrix (the field's polynomial,
    /// 0x11d, is not the one `VGF2P8MULB` multiplies by). No table, no data-dependent address.
    GfniAvx2,
    /// The same matrix on 512-bit vectors (AVX-512BW), 64 bytes per step.
    GfniAvx512,
}

impl Kernel {
    /// The fastest kernel this CPU supports, detected at run time.
    pub fn detect() -> Kernel {
        *Kernel::available()
            .last()
            .expect("the portable kernel runs everywhere")
    }

    /// Every kernel this CPU can run, slowest first (for cross-checking them against each
    /// other).
    pub fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut v = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") {
                v.push(Kernel::Avx2);
                if has!("gfni") {
                    v.push(Kernel::GfniAvx2);
                    if has!("avx512f") && has!("avx512bw") {
                        v.push(Kernel::GfniAvx512);
                    }
                }
            }
        }
        v
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::GfniAvx2 => "gfni-avx2",
            Kernel::GfniAvx512 => "gfni-avx512",
        }
    }

    /// `dst[i] ^= c · src[i]`.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn mul_add(self, dst: &mut [u8], src: &[u8], c: u8) {
        assert_eq!(dst.len(), src.len(), "mul_add: length mismatch");
        if c != 0 {
            self.run(Out::Accumulate(dst), src, c);
        }
    }

    /// `dst[i] = c · src[i]`.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn mul(self, dst: &mut [u8], src: &[u8], c: u8) {
        assert_eq!(dst.len(), src.len(), "mul: length mismatch");
        match c {
            0 => dst.fill(0),
            _ => self.run(Out::Set(dst), src, c),
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
        match c {
            0 => dst.copy_from_slice(base),
            _ => self.run(Out::AddTo(dst, base), src, c),
        }
    }

    /// Hands one call to this kernel's implementation; lengths are already checked.
    #[inline]
    fn run(self, out: Out<'_>, src: &[u8], c: u8) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => simd::mul_avx2(out, src, c),
            #[cfg(target_arch = "x86_64")]
            Kernel::GfniAvx2 => gfni::mul_256(out, src, c),
            #[cfg(target_arch = "x86_64")]
            Kernel::GfniAvx512 => gfni::mul_512(out, src, c),
            _ => portable(out, src, c),
        }
    }
}

/// Where products go.
enum Out<'a> {
    /// `dst = c·src`
    Set(&'a mut [u8]),
    /// `dst ^= c·src`
    Accumulate(&'a mut [u8]),
    /// `dst = base ^ c·src`
    AddTo(&'a mut [u8], &'a [u8]),
}

impl<'a> Out<'a> {
    /// The outputs for `src[..mid]` and for `src[mid..]`.
    #[cfg(target_arch = "x86_64")]
    fn split_at(self, mid: usize) -> (Out<'a>, Out<'a>) {
        match self {
            Out::Set(dst) => {
                let (a, b) = dst.split_at_mut(mid);
                (Out::Set(a), Out::Set(b))
            }
            Out::Accumulate(dst) => {
                let (a, b) = dst.split_at_mut(mid);
                (Out::Accumulate(a), Out::Accumulate(b))
            }
            Out::AddTo(dst, base) => {
                let (a, b) = dst.split_at_mut(mid);
                let (x, y) = base.split_at(mid);
                (Out::AddTo(a, x), Out::AddTo(b, y))
            }
        }
    }
}

/// One in every byte lane of a `u64`.
const LANES: u64 = 0x0101_0101_0101_0101;

/// Multiplication of eight packed bytes by one public constant.
struct Packed {
    /// `c·2^k` in every byte lane, for k = 0..8.
    terms: [u64; 8],
}

impl Packed {
    fn new(c: u8) -> Packed {
        Packed {
            terms: std::array::from_fn(|k| LANES * mul(c, 1 << k) as u64),
        }
    }

    /// `c·b` in every byte lane `b` of `w`.
    #[inline(always)]
    fn times(&self, w: u64) -> u64 {
        let mut p = 0;
        for (k, &term) in self.terms.iter().enumerate() {
            // Bit k of every lane, widened to 0x00 or 0xff: 0x01·0xff stays inside its lane.
            let mask = ((w >> k) & LANES) * 0xff;
            p ^= mask & term;
        }
        p
    }
}

/// The portable kernel. Only `c` and the lengths, both public, choose a branch or an address.
fn portable(out: Out<'_>, src: &[u8], c: u8) {
    let m = Packed::new(c);
    match out {
        Out::Set(dst) => each_word(dst, src, |_, s| m.times(s)),
        Out::Accumulate(dst) => each_word(dst, src, |d, s| d ^ m.times(s)),
        Out::AddTo(dst, base) => {
            // A copy of a cache-resident chunk costs a small fraction of the multiply after it.
            dst.copy_from_slice(base);
            each_word(dst, src, |d, s| d ^ m.times(s));
        }
    }
}

/// `dst = f(dst, src)` over little-endian `u64` words. A last partial word is zero-padded so it
/// runs the same arithmetic; only its length, which is public, decides anything.
#[inline(always)]
fn each_word(dst: &mut [u8], src: &[u8], f: impl Fn(u64, u64) -> u64) {
    debug_assert_eq!(dst.len(), src.len());
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("chunks of 8"));
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(&f(word(d), word(s)).to_le_bytes());
    }
    let (d, s) = (d.into_remainder(), s.remainder());
    if !d.is_empty() {
        let padded = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let len = d.len();
        d.copy_from_slice(&f(padded(d), padded(s)).to_le_bytes()[..len]);
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

    use super::Out;

    /// Entry point: checks lengths and the CPU feature, then runs the AVX2 loop on whole vectors
    /// and the portable kernel on the rest.
    #[inline]
    pub(super) fn mul_avx2(out: Out<'_>, src: &[u8], c: u8) {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        // A scalar tail would look up the nibble tables in memory by secret bytes.
        let whole = src.len() - src.len() % 32;
        let (src, src_tail) = src.split_at(whole);
        let (out, out_tail) = out.split_at(whole);
        super::portable(out_tail, src_tail, c);
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

    /// `dst[i] = (XOR_BASE ? base[i] : 0) ^ c·src[i]` for `i < src.len()`, a multiple of 32.
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
        debug_assert_eq!(len % 32, 0, "the caller runs the tail elsewhere");
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
    }
}

/// Multiplication by `c` as the 8 × 8 bit matrix `VGF2P8AFFINEQB` takes: byte `7 − i` of the
/// word is the row of output bit `i`, whose bit `j` is bit `i` of `c·2^j`.
fn affine_matrix(c: u8) -> u64 {
    (0..8).fold(0u64, |m, i| {
        let row = (0..8).fold(0u8, |row, j| row | ((mul(c, 1 << j) >> i) & 1) << j);
        m | u64::from(row) << (8 * (7 - i))
    })
}

#[cfg(target_arch = "x86_64")]
mod gfni {
    use std::arch::x86_64::*;

    use super::Out;

    /// Entry point of the 256-bit form: checks the CPU features, runs whole vectors here and the
    /// last `len % 32` bytes on the portable kernel.
    #[inline]
    pub(super) fn mul_256(out: Out<'_>, src: &[u8], c: u8) {
        assert!(
            std::arch::is_x86_feature_detected!("gfni")
                && std::arch::is_x86_feature_detected!("avx2")
        );
        let whole = src.len() - src.len() % 32;
        let (src, src_tail) = src.split_at(whole);
        let (out, out_tail) = out.split_at(whole);
        super::portable(out_tail, src_tail, c);
        let m = super::affine_matrix(c);
        let (dst, base) = pointers(out, src.len());
        // SAFETY: the features are asserted; `pointers` gives `src.len()` writable bytes at
        // `dst` and, when `base` is not null, readable ones at `base`, which equals `dst` or
        // does not overlap it.
        unsafe { kernel_256(dst, base, src, m) }
    }

    /// Entry point of the 512-bit form: whole 64-byte vectors here, the rest on the 256-bit
    /// form (and its own tail on the portable kernel).
    #[inline]
    pub(super) fn mul_512(out: Out<'_>, src: &[u8], c: u8) {
        assert!(
            std::arch::is_x86_feature_detected!("gfni")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
        );
        let whole = src.len() - src.len() % 64;
        let (src, src_tail) = src.split_at(whole);
        let (out, out_tail) = out.split_at(whole);
        mul_256(out_tail, src_tail, c);
        let m = super::affine_matrix(c);
        let (dst, base) = pointers(out, src.len());
        // SAFETY: as in `mul_256`, with AVX-512F and BW asserted.
        unsafe { kernel_512(dst, base, src, m) }
    }

    /// Where to write, and what to add (null for nothing), checking lengths.
    fn pointers(out: Out<'_>, len: usize) -> (*mut u8, *const u8) {
        match out {
            Out::Set(dst) => {
                assert_eq!(dst.len(), len);
                (dst.as_mut_ptr(), std::ptr::null())
            }
            Out::Accumulate(dst) => {
                assert_eq!(dst.len(), len);
                let p = dst.as_mut_ptr();
                (p, p.cast_const())
            }
            Out::AddTo(dst, base) => {
                assert!(dst.len() == len && base.len() == len);
                (dst.as_mut_ptr(), base.as_ptr())
            }
        }
    }

    /// `dst[i] = (base ? base[i] : 0) ^ c·src[i]`, 32 bytes at a time; `src.len()` is a
    /// multiple of 32.
    ///
    /// # Safety
    /// GFNI and AVX2 must be available; `dst` writable and a non-null `base` readable for
    /// `src.len()` bytes; `base` may equal `dst` but must not partially overlap it.
    #[target_feature(enable = "gfni,avx2")]
    unsafe fn kernel_256(dst: *mut u8, base: *const u8, src: &[u8], m: u64) {
        let matrix = _mm256_set1_epi64x(m as i64);
        let mut i = 0;
        while i + 32 <= src.len() {
            // SAFETY: `i + 32 <= len`, and the caller guarantees `len` bytes at every pointer.
            unsafe {
                let s = _mm256_loadu_si256(src.as_ptr().add(i).cast());
                let mut p = _mm256_gf2p8affine_epi64_epi8::<0>(s, matrix);
                if !base.is_null() {
                    p = _mm256_xor_si256(p, _mm256_loadu_si256(base.add(i).cast()));
                }
                _mm256_storeu_si256(dst.add(i).cast(), p);
            }
            i += 32;
        }
    }

    /// [`kernel_256`] on 64 bytes at a time; `src.len()` is a multiple of 64.
    ///
    /// # Safety
    /// As [`kernel_256`], with GFNI, AVX-512F and AVX-512BW.
    #[target_feature(enable = "gfni,avx512f,avx512bw")]
    unsafe fn kernel_512(dst: *mut u8, base: *const u8, src: &[u8], m: u64) {
        let matrix = _mm512_set1_epi64(m as i64);
        let mut i = 0;
        while i + 64 <= src.len() {
            // SAFETY: `i + 64 <= len`, and the caller guarantees `len` bytes at every pointer.
            unsafe {
                let s = _mm512_loadu_si512(src.as_ptr().add(i).cast());
                let mut p = _mm512_gf2p8affine_epi64_epi8::<0>(s, matrix);
                if !base.is_null() {
                    p = _mm512_xor_si512(p, _mm512_loadu_si512(base.add(i).cast()));
                }
                _mm512_storeu_si512(dst.add(i).cast(), p);
            }
            i += 64;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
        // A CPU without GFNI or AVX-512 checks fewer kernels: say which ran.
        let names: Vec<_> = Kernel::available().iter().map(|k| k.name()).collect();
        eprintln!("kernels checked on this CPU: {}", names.join(", "));
        for k in Kernel::available() {
            for c in 0..=255u8 {
                // Every length up to two AVX2 vectors and a few bytes: each tail length of both
                // the 8-byte words and the 32-byte vectors; then 64-byte vectors followed by a
                // 32-byte one and a portable tail, as the AVX-512 form runs them.
                for len in (0..=67).chain([129, 161, 1000]) {
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

    /// Every value in every byte lane of a word, then a partial word, for every constant.
    #[test]
    fn portable_kernel_is_the_definition_on_every_constant_value_and_lane() {
        let src: Vec<u8> = (0..256 * 8 + 5).map(|i| (i / 8) as u8).collect();
        let base: Vec<u8> = (0..src.len()).map(|i| (i * 29 + 5) as u8).collect();
        let mut dst = vec![0; src.len()];
        for c in 0..=255u8 {
            Kernel::Portable.mul(&mut dst, &src, c);
            assert!(
                dst.iter().zip(&src).all(|(d, s)| *d == mul_slow(c, *s)),
                "mul c={c}"
            );
            Kernel::Portable.mul_add_to(&mut dst, &base, &src, c);
            assert!(
                dst.iter()
                    .zip(&base)
                    .zip(&src)
                    .all(|((d, b), s)| *d == b ^ mul_slow(c, *s)),
                "mul_add_to c={c}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random buffers at random offsets (so words straddle the caller's slices), every
        /// constant, all three operations.
        #[test]
        fn portable_kernel_is_the_definition_on_random_buffers(
            src in prop::collection::vec(any::<u8>(), 0..300),
            acc in prop::collection::vec(any::<u8>(), 300),
            start in 0usize..8,
        ) {
            let src = &src[start.min(src.len())..];
            let acc = &acc[..src.len()];
            let mut dst = vec![0; src.len()];
            for c in 0..=255u8 {
                let product: Vec<u8> = src.iter().map(|s| mul_slow(c, *s)).collect();
                let sum: Vec<u8> = acc.iter().zip(&product).map(|(a, p)| a ^ p).collect();
                Kernel::Portable.mul(&mut dst, src, c);
                prop_assert_eq!(&dst, &product, "mul c={}", c);
                dst.copy_from_slice(acc);
                Kernel::Portable.mul_add(&mut dst, src, c);
                prop_assert_eq!(&dst, &sum, "mul_add c={}", c);
                dst.fill(0);
                Kernel::Portable.mul_add_to(&mut dst, acc, src, c);
                prop_assert_eq!(&dst, &sum, "mul_add_to c={}", c);
            }
        }
    }
}
