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

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::field::{reduce64, Fp};
use crate::Error;

/// Most nodes a zero-sharing cluster may have (sets are bit masks of nodes 1..=64).
pub const MAX_NODES: usize = 64;
/// Most key sets one node may hold; `C(n − 1, t)` must stay below this.
pub const MAX_SUBSETS: usize = 4096;

const DOMAIN: &[u8] = b"obscura/zero-sharing/v1";
const RANDOM_DOMAIN: &[u8] = b"obscura/random-sharing/v1";
const RANDOM_STREAM_DOMAIN: &[u8] = b"obscura/random-sharing-stream/v1";

/// One set key: the members (bit `x − 1` set for node x) and the secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SubsetKey {
    #[zeroize(skip)]
    members: u64,
    key: [u8; 32],
}

impl SubsetKey {
    /// The generator of this set's values for `context` under `domain`.
    fn generator(&self, domain: &[u8], context: &[u8]) -> ChaCha20Rng {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(domain);
        h.update(&(context.len() as u64).to_le_bytes());
        h.update(context);
        ChaCha20Rng::from_seed(*h.finalize().as_bytes())
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
        ZeroShareStream { rngs, keys: self }
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
        RandomShareStream { sets }
    }
}

/// Shares of successive pseudo-random values of degree t; see
/// [`ZeroSharingKeys::random_stream`].
pub struct RandomShareStream {
    /// Each set key's generator and `f_A(i)`.
    sets: Vec<(ChaCha20Rng, Fp)>,
}

impl std::fmt::Debug for RandomShareStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RandomShareStream(<redacted>)")
    }
}

impl RandomShareStream {
    /// This node's share of the next value: `Σ_{A ∋ i} ρ_A · f_A(i)`.
    #[inline]
    pub fn next_share(&mut self) -> Fp {
        let mut acc: u64 = 0;
        for (rng, f) in &mut self.sets {
            let rho = reduce64(rng.next_u64());
            acc += u64::from(reduce64(u64::from(rho) * u64::from(f.value())));
        }
        Fp::new(acc)
    }
}

/// Zero shares for the successive candidates of one query; see [`ZeroSharingKeys::stream`].
pub struct ZeroShareStream<'a> {
    rngs: Vec<ChaCha20Rng>,
    keys: &'a ZeroSharingKeys,
}

impl ZeroShareStream<'_> {
    /// The next zero share. Each `ρ` is a 64-bit PRF output reduced mod p (statistical distance
    /// from uniform below 2^-32).
    #[inline]
    pub fn next_share(&mut self) -> Fp {
        // Σ over ≤ 4096·t terms of (< 2^31)·(< 2^31) products reduced to < 2^32 fits in u64.
        let mut acc: u64 = 0;
        for (rng, w) in self.rngs.iter_mut().zip(&self.keys.weights) {
            for &wl in w {
                let rho = reduce64(rng.next_u64());
                acc += u64::from(reduce64(u64::from(rho) * u64::from(wl.value())));
            }
        }
        Fp::new(acc)
    }
}
