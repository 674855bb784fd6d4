//! k-of-n Shamir sharing of byte strings over GF(2^8).
//!
//! Every byte of the secret is the constant term of its own random polynomial of degree `k − 1`;
//! share `x` (1 ≤ x ≤ n) holds that polynomial's value at `x`. Shares are as long as the secret.
//! The work is arranged by buffers rather than by bytes: with random coefficient buffers
//! `R_1 .. R_{k−1}`, share `x` is `S ⊕ Σ_j x^j·R_j`, i.e. `n·(k − 1)` bulk multiply-adds, done
//! chunk by chunk so the working set stays in cache.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::gf256::{self, Kernel};
use crate::Error;

/// Bytes processed per chunk when reconstructing.
const CHUNK: usize = 16 * 1024;

/// Bytes per chunk when splitting: the `k − 1` coefficient buffers and `n` output windows of one
/// chunk together fill about 96 KiB, so they stay in L2 whatever `k` and `n` are.
fn split_chunk(k: usize, n: usize) -> usize {
    ((96 * 1024 / (n + k - 1)) & !63).clamp(1024, CHUNK)
}

/// Threshold parameters: any `k` of `n` shares rebuild the secret, `k − 1` reveal nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    k: u8,
    n: u8,
}

impl Params {
    /// Validate `2 ≤ k ≤ n ≤ 255`.
    ///
    /// # Errors
    /// [`Error::InvalidParams`] otherwise.
    pub fn new(k: usize, n: usize) -> Result<Self, Error> {
        if !(2 <= k && k <= n && n <= 255) {
            return Err(Error::InvalidParams { k, n });
        }
        Ok(Params {
            k: k as u8,
            n: n as u8,
        })
    }

    /// Shares needed to rebuild.
    pub fn k(self) -> usize {
        self.k as usize
    }

    /// Shares made.
    pub fn n(self) -> usize {
        self.n as usize
    }
}

/// One share of a byte string: the polynomials' values at `x`.
#[derive(Clone, PartialEq, Eq)]
pub struct ByteShare {
    /// The x-coordinate, 1..=255 (node `x` of the cluster holds share `x`).
    pub x: u8,
    /// As many bytes as the secret.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for ByteShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ByteShare {{ x: {}, len: {} }}",
            self.x,
            self.bytes.len()
        )
    }
}

/// Split `secret` into `params.n()` shares with x = 1..=n, drawing coefficients from `rng`.
///
/// # Errors
/// [`Error::EmptySecret`] for an empty input.
pub fn split<R: RngCore + CryptoRng>(
    secret: &[u8],
    params: Params,
    rng: &mut R,
) -> Result<Vec<ByteShare>, Error> {
    split_with_kernel(secret, params, rng, Kernel::detect())
}

/// [`split`] on a chosen kernel (for benchmarks and cross-checks).
///
/// # Errors
/// As [`split`].
pub fn split_with_kernel<R: RngCore + CryptoRng>(
    secret: &[u8],
    params: Params,
    rng: &mut R,
    kernel: Kernel,
) -> Result<Vec<ByteShare>, Error> {
    let mut shares: Vec<ByteShare> = (1..=params.n() as u8)
        .map(|x| ByteShare {
            x,
            bytes: Vec::new(),
        })
        .collect();
    split_into(secret, params, rng, kernel, &mut shares)?;
    Ok(shares)
}

/// [`split`] into caller-owned shares, reusing their buffers: `shares` must hold `n` entries;
/// their `x` are set to 1..=n and their bytes resized to the secret's length.
///
/// # Errors
/// [`Error::EmptySecret`], or [`Error::NotEnoughShares`] when `shares` has fewer than `n` entries.
pub fn split_into<R: RngCore + CryptoRng>(
    secret: &[u8],
    params: Params,
    rng: &mut R,
    kernel: Kernel,
    shares: &mut [ByteShare],
) -> Result<(), Error> {
    if secret.is_empty() {
        return Err(Error::EmptySecret);
    }
    let (k, n) = (params.k(), params.n());
    if shares.len() < n {
        return Err(Error::NotEnoughShares {
            need: n,
            got: shares.len(),
        });
    }
    let shares = &mut shares[..n];
    for (x, s) in shares.iter_mut().enumerate() {
        s.x = x as u8 + 1;
        s.bytes.resize(secret.len(), 0);
    }
    let chunk = split_chunk(k, n);
    // powers[x-1][j-1] = x^j for j = 1..k-1
    let powers: Vec<Vec<u8>> = (1..=n as u8)
        .map(|x| (1..k as u32).map(|j| gf256::pow(x, j)).collect())
        .collect();
    let mut coeffs = vec![0u8; (k - 1) * chunk.min(secret.len())];
    let mut start = 0;
    while start < secret.len() {
        let len = chunk.min(secret.len() - start);
        let s = &secret[start..start + len];
        let coeffs = &mut coeffs[..(k - 1) * len];
        rng.fill_bytes(coeffs);
        for (share, pw) in shares.iter_mut().zip(&powers) {
            let out = &mut share.bytes[start..start + len];
            let mut terms = coeffs.chunks_exact(len).zip(pw);
            let (r1, &c1) = terms.next().expect("k ≥ 2: at least one coefficient");
            kernel.mul_add_to(out, s, r1, c1);
            for (r, &c) in terms {
                kernel.mul_add(out, r, c);
            }
        }
        start += len;
    }
    coeffs.zeroize();
    Ok(())
}

/// The first `k` of `shares`, which must hold at least `k ≥ 2`.
pub(crate) fn first_k(shares: &[ByteShare], k: usize) -> Result<&[ByteShare], Error> {
    if k < 2 || shares.len() < k {
        return Err(Error::NotEnoughShares {
            need: k.max(2),
            got: shares.len(),
        });
    }
    Ok(&shares[..k])
}

/// The Lagrange weights `λ_i = Π_{j≠i} x_j / (x_j − x_i)` that give f(0) from values at `xs`.
///
/// # Errors
/// [`Error::InvalidShareIndex`] for x = 0, [`Error::DuplicateShare`] for a repeated x.
pub fn lagrange_at_zero(xs: &[u8]) -> Result<Vec<u8>, Error> {
    crate::check_share_indices(xs)?;
    Ok(xs
        .iter()
        .map(|&xi| {
            let (num, den) = xs
                .iter()
                .filter(|&&xj| xj != xi)
                .fold((1u8, 1u8), |(num, den), &xj| {
                    (gf256::mul(num, xj), gf256::mul(den, xj ^ xi))
                });
            gf256::mul(num, gf256::inv(den).expect("distinct non-zero x"))
        })
        .collect())
}

/// Rebuild the secret from at least `k` shares; the first `k` are used.
///
/// Reconstruction cannot tell a wrong share from a right one: verify shares against the signed
/// manifest first ([`crate::manifest::VerifiedManifest::check_share`]).
///
/// # Errors
/// [`Error::NotEnoughShares`], [`Error::DuplicateShare`], [`Error::InvalidShareIndex`], or
/// [`Error::ShareLengthMismatch`] when shares differ in length.
pub fn reconstruct(shares: &[ByteShare], k: usize) -> Result<Vec<u8>, Error> {
    reconstruct_with_kernel(shares, k, Kernel::detect())
}

/// [`reconstruct`] on a chosen kernel.
///
/// # Errors
/// As [`reconstruct`].
pub fn reconstruct_with_kernel(
    shares: &[ByteShare],
    k: usize,
    kernel: Kernel,
) -> Result<Vec<u8>, Error> {
    let used = first_k(shares, k)?;
    let len = used[0].bytes.len();
    if let Some(bad) = used.iter().find(|s| s.bytes.len() != len) {
        return Err(Error::ShareLengthMismatch {
            x: bad.x,
            expected: len,
            got: bad.bytes.len(),
        });
    }
    if len == 0 {
        return Err(Error::EmptySecret);
    }
    let xs: Vec<u8> = used.iter().map(|s| s.x).collect();
    let lambda = lagrange_at_zero(&xs)?;
    let mut out = vec![0u8; len];
    let mut start = 0;
    while start < len {
        let end = (start + CHUNK).min(len);
        let o = &mut out[start..end];
        kernel.mul(o, &used[0].bytes[start..end], lambda[0]);
        for (s, &l) in used[1..].iter().zip(&lambda[1..]) {
            kernel.mul_add(o, &s.bytes[start..end], l);
        }
        start = end;
    }
    Ok(out)
}
