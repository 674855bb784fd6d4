//! Pseudo-random zero sharing of degree 2t (Cramer–Damgård–Ishai, "share conversion"), and
//! from the same keys a pseudo-random sharing of degree t of a value nobody knows
//! ([`ZeroSharingKeys::random_share`]).
//!
//! At cluster creation a dealer draws one 256-bit key `r_A` for every set `A` of `n − t` nodes and
//! gives it to the members of `A`. For `A`, let `f_A` be the degree-t polynomial with `f_A(0) = 1`
//! and `f_A(j) = 0` for the `t` nodes `j ∉ A`. For a query context and the `m`-th candidate, every
//! member of `A` derives the same `t` field elements `ρ_{A,1..t}` from `r_A`, and node `i` outputs
//!
//! ```text
//! Z_i = Σ_{A ∋ i} Σ_{l=1..t} ρ_{A,l} · i^l · f_A(i)
//! ```
//!
//! Every term is a polynomial of degree ≤ 2t with no constant term, and nodes outside `A` have
//! `f_A(i) = 0`, so the `Z_i` lie on one degree-2t polynomial through `(0, 0)`. Any `t` colluding
//! nodes miss the key of the set made of everyone else, whose term is uniformly random on the
//! others: they, and a querier who sees all `Z_i` added to answers, learn nothing but `Z(0) = 0`.
//!
//! The context must never repeat: a node that answered two different requests under one context
//! would hand out the difference of two unmasked answers. Nodes key the context by the query's
//! request id and refuse replays.
//!
//! Each set's values for a context come from AES-128 in counter mode under a key derived from
//! `r_A`, the domain and the context (keyed BLAKE3): Stage-2 draws about thirty 64-bit values per
//! opened value, so the generator is most of a node's work, and AES-CTR on the AES units makes
//! keystream several times faster than ChaCha20 in software. The streams' `fill` draws many
//! values at once, which is how the Stage-2 rounds use them.

use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::field::{reduce64, Fp, P};
use crate::rng::AesCtrRng;
use crate::Error;

/// Most nodes a zero-sharing cluster may have (sets are bit masks of nodes 1..=64).
pub const MAX_NODES: usize = 64;
/// Most key sets one node may hold; `C(n − 1, t)` must stay below this.
pub const MAX_SUBSETS: usize = 4096;

const DOMAIN: &[u8] = b"obscura/zero-sharing/v2";
const RANDOM_DOMAIN: &[u8] = b"obscura/random-sharing/v2";
const RANDOM_STREAM_DOMAIN: &[u8] = b"obscura/random-sharing-stream/v2";

/// Values a bulk `fill` draws per set key at a time: bounds its scratch memory.
const CHUNK: usize = 1024;

/// One set key: the members (bit `x − 1` set for node x) and the secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SubsetKey {
    #[zeroize(skip)]
    members: u64,
    key: [u8; 32],
}

impl SubsetKey {
    /// The generator of this set's values for `context` under `domain`.
    fn generator(&self, domain: &[u8], context: &[u8]) -> AesCtrRng {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(domain);
        h.update(&(context.len() as u64).to_le_bytes());
        h.update(context);
        let mut key = [0u8; 16];
        h.finalize_xof().fill(&mut key);
        let rng = AesCtrRng::from_seed(key);
        key.zeroize();
        rng
    }

    /// The members as a bit mask (bit `x − 1` for node x).
    pub fn members(&self) -> u64 {
        self.members
    }

    /// The key bytes, for sealing into a node's key file.
    pub fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

impl std::fmt::Debug for SubsetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SubsetKey {{ members: {:#x}, key: <redacted> }}",
            self.members
        )
    }
}

/// A node's keys for zero sharing, and the public weights `i^l · f_A(i)` that go with them.
pub struct ZeroSharingKeys {
    node: u8,
    n: u8,
    t: u8,
    keys: Vec<SubsetKey>,
    /// `weights[s][l − 1] = i^l · f_A(i)` for the `s`-th set key.
    weights: Vec<Vec<Fp>>,
}

impl std::fmt::Debug for ZeroSharingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroSharingKeys")
            .field("node", &self.node)
            .field("n", &self.n)
            .field("t", &self.t)
            .field("sets", &self.keys.len())
            .finish()
    }
}

fn check_params(n: usize, t: usize) -> Result<(), Error> {
    if !(1 <= t && 2 * t < n && n <= MAX_NODES) {
        return Err(Error::InvalidDegree { t, n });
    }
    Ok(())
}

/// All subsets of `{1..=n}` of size `size`, as bit masks, in increasing order.
fn subsets(n: usize, size: usize) -> Vec<u64> {
    (0u64..1 << n)
        .filter(|m| m.count_ones() as usize == size)
        .collect()
}

/// `C(n, k)` without overflow for the sizes we allow.
fn binomial(n: usize, k: usize) -> usize {
    (0..k).fold(1usize, |acc, i| acc.saturating_mul(n - i) / (i + 1))
}

/// Deal the set keys for an `n`-node cluster with collusion bound `t`: one entry per node,
/// x = 1..=n. Answers interpolate from `2t + 1` nodes, so `2t < n` is required.
///
/// # Errors
/// [`Error::InvalidDegree`] unless `1 ≤ t`, `2t < n ≤ 64`; [`Error::TooManySubsets`] when a node
/// would hold more than [`MAX_SUBSETS`] keys.
pub fn deal<R: RngCore + CryptoRng>(
    n: usize,
    t: usize,
    rng: &mut R,
) -> Result<Vec<ZeroSharingKeys>, Error> {
    check_params(n, t)?;
    let per_node = binomial(n - 1, t);
    if per_node > MAX_SUBSETS || n > 24 {
        return Err(Error::TooManySubsets { n, t, per_node });
    }
    let mut parts: Vec<Vec<(u64, [u8; 32])>> = vec![Vec::new(); n];
    for members in subsets(n, n - t) {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        for (x, part) in parts.iter_mut().enumerate() {
            if members >> x & 1 == 1 {
                part.push((members, key));
            }
        }
        key.zeroize();
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(x, p)| ZeroSharingKeys::from_parts(x as u8 + 1, n, t, p))
        .collect()
}

impl ZeroSharingKeys {
    /// Rebuild a node's keys from stored `(members, key)` pairs.
    ///
    /// # Errors
    /// [`Error::InvalidDegree`] for bad `n, t`; [`Error::InvalidZeroKeys`] when a set has the
    /// wrong size, does not contain `node`, repeats, or the sets are not exactly those of size
    /// `n − t` that contain `node`.
    pub fn from_parts(
        node: u8,
        n: usize,
        t: usize,
        parts: Vec<(u64, [u8; 32])>,
    ) -> Result<Self, Error> {
        check_params(n, t)?;
        let bit = 1u64
            .checked_shl(u32::from(node).wrapping_sub(1))
            .unwrap_or(0);
        if node == 0 || node as usize > n {
            return Err(Error::InvalidZeroKeys("node index outside 1..=n"));
        }
        let mut expected: Vec<u64> = subsets(n, n - t)
            .into_iter()
            .filter(|m| m & bit != 0)
            .collect();
        let mut got: Vec<u64> = parts.iter().map(|p| p.0).collect();
        got.sort_unstable();
        expected.sort_unstable();
        if got != expected {
            return Err(Error::InvalidZeroKeys(
                "key sets are not the sets of n − t nodes that contain this node",
            ));
        }
        let i = Fp::from(u32::from(node));
        let weights = parts
            .iter()
            .map(|&(members, _)| {
                // f_A(i) = Π_{j ∉ A} (1 − i/j)
                let f = (1..=n as u32)
                    .filter(|j| members >> (j - 1) & 1 == 0)
                    .map(Fp::from)
                    .fold(Fp::ONE, |acc, j| {
                        acc * (Fp::ONE - i * j.inv().expect("j ≥ 1"))
                    });
                (1..=t as u64).map(|l| i.pow(l) * f).collect()
            })
            .collect();
        let keys = parts
            .into_iter()
            .map(|(members, key)| SubsetKey { members, key })
            .collect();
        Ok(ZeroSharingKeys {
            node,
            n: n as u8,
            t: t as u8,
            keys,
            weights,
        })
    }

    /// This node's x-coordinate.
    pub fn node(&self) -> u8 {
        self.node
    }

    /// Cluster size.
    pub fn n(&self) -> usize {
        self.n as usize
    }

    /// Collusion bound; the zero sharing has degree `2t`.
    pub fn t(&self) -> usize {
        self.t as usize
    }

    /// The set keys, for sealing to disk.
    pub fn subset_keys(&self) -> &[SubsetKey] {
        &self.keys
    }

    /// The stream of this node's zero shares for one query `context` (a value all nodes see
    /// identically and that never repeats, such as a request id): the `m`-th call to
    /// [`ZeroShareStream::next_share`] gives the share for the `m`-th candidate.
    pub fn stream(&self, context: &[u8]) -> ZeroShareStream<'_> {
        let rngs = self
            .keys
            .iter()
            .map(|k| k.generator(DOMAIN, context))
            .collect();
        ZeroShareStream {
            rngs,
            keys: self,
            draws: Draws::default(),
        }
    }
}

impl ZeroSharingKeys {
    /// This node's share of a pseudo-random value shared with degree `t`, for `context`
    /// (pseudo-random secret sharing, the same construction with `l = 0`):
    ///
    /// ```text
    /// R_i = Σ_{A ∋ i} ρ_A · f_A(i)
    /// ```
    ///
    /// Every `f_A` has degree `t`, so the `R_i` lie on one degree-t polynomial whose constant,
    /// `Σ_A ρ_A`, holds the term of the set made of everyone outside any `t` colluding nodes:
    /// they, and anyone who sees every `R_i`, learn nothing of it. Contexts must differ from
    /// those given to [`stream`](Self::stream) (the keys are used under another domain here,
    /// but a caller that needs both should still keep them apart).
    pub fn random_share(&self, context: &[u8]) -> Fp {
        let i_inv = Fp::from(u32::from(self.node)).inv().expect("node ≥ 1");
        self.keys
            .iter()
            .zip(&self.weights)
            .map(|(k, w)| {
                let mut h = blake3::Hasher::new_keyed(&k.key);
                h.update(RANDOM_DOMAIN);
                h.update(&(context.len() as u64).to_le_bytes());
                h.update(context);
                let mut wide = [0u8; 8];
                h.finalize_xof().fill(&mut wide);
                // weights[0] = i · f_A(i)
                Fp::from(reduce64(u64::from_le_bytes(wide))) * w[0] * i_inv
            })
            .sum()
    }
}

impl ZeroSharingKeys {
    /// The stream of this node's shares of pseudo-random values shared with degree `t`, for
    /// one `context` (never repeated): the `m`-th call to [`RandomShareStream::next_share`]
    /// gives its share of the `m`-th value, as [`random_share`](Self::random_share) does for
    /// one, at a fraction of the cost per value. Contexts are kept apart from those of
    /// [`stream`](Self::stream) by domain.
    pub fn random_stream(&self, context: &[u8]) -> RandomShareStream {
        let i_inv = Fp::from(u32::from(self.node)).inv().expect("node ≥ 1");
        let sets = self
            .keys
            .iter()
            .zip(&self.weights)
            // weights[0] = i · f_A(i)
            .map(|(k, w)| (k.generator(RANDOM_STREAM_DOMAIN, context), w[0] * i_inv))
            .collect();
        RandomShareStream {
            sets,
            draws: Draws::default(),
        }
    }
}

/// Shares of successive pseudo-random values of degree t; see
/// [`ZeroSharingKeys::random_stream`].
pub struct RandomShareStream {
    /// Each set key's generator and `f_A(i)`.
    sets: Vec<(AesCtrRng, Fp)>,
    draws: Draws,
}

impl std::fmt::Debug for RandomShareStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RandomShareStream(<redacted>)")
    }
}

impl RandomShareStream {
    /// This node's share of the next value: `Σ_{A ∋ i} ρ_A · f_A(i)`.
    pub fn next_share(&mut self) -> Fp {
        let mut out = [Fp::ZERO];
        self.fill(&mut out);
        out[0]
    }

    /// This node's shares of the next `out.len()` values, as that many calls to
    /// [`next_share`](Self::next_share) would give, at a fraction of the cost per value.
    pub fn fill(&mut self, out: &mut [Fp]) {
        let mut acc = [0u64; CHUNK];
        for part in out.chunks_mut(CHUNK) {
            let acc = &mut acc[..part.len()];
            acc.fill(0);
            for (rng, f) in &mut self.sets {
                for (a, &rho) in acc.iter_mut().zip(self.draws.next(rng, part.len())) {
                    *a += times(rho, *f);
                }
            }
            for (o, &a) in part.iter_mut().zip(acc.iter()) {
                *o = Fp::new(a);
            }
        }
    }
}

/// Zero shares for the successive candidates of one query; see [`ZeroSharingKeys::stream`].
pub struct ZeroShareStream<'a> {
    rngs: Vec<AesCtrRng>,
    keys: &'a ZeroSharingKeys,
    draws: Draws,
}

impl ZeroShareStream<'_> {
    /// The next zero share.
    pub fn next_share(&mut self) -> Fp {
        let mut out = [Fp::ZERO];
        self.fill(&mut out);
        out[0]
    }

    /// The next `out.len()` zero shares, as that many calls to
    /// [`next_share`](Self::next_share) would give, at a fraction of the cost per value.
    pub fn fill(&mut self, out: &mut [Fp]) {
        let t = usize::from(self.keys.t);
        let mut acc = [0u64; CHUNK];
        for part in out.chunks_mut(CHUNK) {
            let acc = &mut acc[..part.len()];
            acc.fill(0);
            for (rng, w) in self.rngs.iter_mut().zip(&self.keys.weights) {
                // The m-th value takes the m-th run of t draws of every set.
                let draws = self.draws.next(rng, part.len() * t);
                match t {
                    1 => add_runs::<1>(acc, draws, w),
                    2 => add_runs::<2>(acc, draws, w),
                    3 => add_runs::<3>(acc, draws, w),
                    _ => {
                        for (a, rho) in acc.iter_mut().zip(draws.chunks_exact(t)) {
                            for (&r, &wl) in rho.iter().zip(w) {
                                *a += times(r, wl);
                            }
                        }
                    }
                }
            }
            for (o, &a) in part.iter_mut().zip(acc.iter()) {
                *o = Fp::new(a);
            }
        }
    }
}

/// `acc[m] += Σ_l draws[m·T + l] · w[l]`, with `T` known to the compiler (the common degrees),
/// so that the loop is unrolled and vectorised.
#[inline]
fn add_runs<const T: usize>(acc: &mut [u64], draws: &[u64], w: &[Fp]) {
    let w: [Fp; T] = w.try_into().expect("t weights per set");
    let (runs, _) = draws.as_chunks::<T>();
    for (a, rho) in acc.iter_mut().zip(runs) {
        for l in 0..T {
            *a += times(rho[l], w[l]);
        }
    }
}

/// `ρ · w` for a 64-bit generator output `ρ` (taken mod p: statistical distance from uniform
/// below 2^-32), folded below 2^32 but not fully reduced. Sums of up to `MAX_SUBSETS · t`
/// such terms fit in a `u64`.
#[inline]
fn times(rho: u64, w: Fp) -> u64 {
    let rho = (rho & u64::from(P)) + (rho >> 31); // < 2^34
    let rho = (rho & u64::from(P)) + (rho >> 31); // < 2^31 + 8
    let product = rho * u64::from(w.value()); // < 2^62 + 2^34
    (product & u64::from(P)) + (product >> 31) // < 2^32 + 2^4
}

/// Scratch for drawing many generator outputs at once.
#[derive(Default)]
struct Draws {
    bytes: Vec<u8>,
    words: Vec<u64>,
}

impl Draws {
    /// The generator's next `len` 64-bit outputs (little-endian), as `next_u64` would give.
    fn next(&mut self, rng: &mut AesCtrRng, len: usize) -> &[u64] {
        self.bytes.resize(len * 8, 0);
        rng.fill_bytes(&mut self.bytes);
        self.words.clear();
        self.words.extend(
            self.bytes
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
        );
        &self.words
    }
}

impl Drop for Draws {
    fn drop(&mut self) {
        self.bytes.zeroize();
        self.words.zeroize();
    }
}
