//! Checking a query before it is answered: that the querier's shares are a degree-t sharing of
//! bits.
//!
//! Stage-2 opens `Σ_j h_j + q_j − 2·q_j·h_j`, which is the Hamming distance only when every
//! `q_j` is a bit. A querier that shares other values chooses the linear function of the stored
//! bits that the nodes open: `q_j = (1 − 2^j) / 2` on 30 bits opens 30 stored bits of every
//! candidate at once, and shares that lie on no polynomial of degree t isolate one node's
//! shares. So before answering, the nodes check, together, two things about the shares
//! `q_j(i)`, with coefficients the querier cannot know when it fixes them:
//!
//! * **Degree.** Node i opens `C_i = Σ_j r_j·q_j(i) + R_i`, where `R` is a pseudo-random sharing
//!   of degree t of an unknown value ([`ZeroSharingKeys::random_share`]). The `C_i` lie on one
//!   polynomial of degree t when every `q_j` does; otherwise, for random `r`, with probability
//!   at most `1/p`.
//! * **Bits.** Node i opens `B_i = Σ_j s_j·q_j(i)·(1 − q_j(i)) + Z_i`, with `Z` a pseudo-random
//!   sharing of zero of degree 2t ([`ZeroSharingKeys::stream`]). For a degree-t sharing the
//!   `B_i` interpolate at 0 to `Σ_j s_j·q_j·(1 − q_j)`: zero when every `q_j` is a bit;
//!   otherwise, for random `s`, zero with probability `1/p`.
//!
//! Each check runs [`CHECKS`] times with independent coefficients: a query that is not a
//! degree-t sharing of bits passes with probability below `2^-62`, and every try costs the
//! querier a query. The coefficients come from a key every node holds and no querier does
//! ([`CheckCoin`]), and from the check context the caller gives: the node server names in it the
//! query id, its issue time, its candidates and the querier's digests of every node's share, so
//! every share is fixed before anyone can know a coefficient.
//!
//! **What is opened.** The `C_i` are a uniformly random polynomial of degree t (the mask `R`
//! fills every degree of freedom a coalition of t nodes lacks), and the `B_i` a uniformly
//! random polynomial of degree 2t through `(0, Σ_j s_j·q_j·(1 − q_j))`, which is `(0, 0)` for an
//! honest query: nodes learn nothing of the query, t colluding nodes neither.
//!
//! **What it does not cover.** The check is sound against a querier alone. Nodes that collude
//! with the querier choose their own values after seeing the honest ones (or shift them, with
//! the coin key they hold), so as to make `B(0)` zero for a non-bit query. A node catches that
//! only when it checks at least `2t + 1` honest values of `B`, which fix the polynomial.

use obscura_sharing::field::{reduce64, Fp};
use obscura_sharing::prime::interpolate_coefficients;
use obscura_sharing::zero::ZeroSharingKeys;

use crate::{Error, HashShare, HASH_BITS};

/// Independent repetitions of each check.
pub const CHECKS: usize = 2;

const COIN_DOMAIN: &[u8] = b"obscura/query-check-coin/v1";

/// The random coefficients of one query's check: derived by every node alike from a key the
/// nodes share and no querier holds, and from the query's context.
pub struct CheckCoin {
    degree: [[Fp; HASH_BITS]; CHECKS],
    bits: [[Fp; HASH_BITS]; CHECKS],
}

impl std::fmt::Debug for CheckCoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckCoin(<redacted>)")
    }
}

impl CheckCoin {
    /// The coefficients for `context` under the nodes' coin `key`.
    pub fn derive(key: &[u8; 32], context: &[u8]) -> CheckCoin {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(COIN_DOMAIN);
        h.update(&(context.len() as u64).to_be_bytes());
        h.update(context);
        let mut xof = h.finalize_xof();
        let mut next = || {
            let mut wide = [0u8; 8];
            xof.fill(&mut wide);
            Fp::from(reduce64(u64::from_le_bytes(wide)))
        };
        let mut table = || std::array::from_fn(|_| std::array::from_fn(|_| next()));
        let degree = table();
        let bits = table();
        CheckCoin { degree, bits }
    }
}

/// What one node opens for the check of one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckShare {
    /// The node.
    pub node: u8,
    /// `C_i` for each repetition.
    pub degree: [Fp; CHECKS],
    /// `B_i` for each repetition.
    pub bits: [Fp; CHECKS],
}

/// Node `keys.node()`'s check values for its share `query` of the query with `context`.
///
/// # Errors
/// [`Error::MalformedRequest`] when the share is for another node.
pub fn check_share(
    keys: &ZeroSharingKeys,
    coin: &CheckCoin,
    context: &[u8],
    query: &HashShare,
) -> Result<CheckShare, Error> {
    if query.node != keys.node() {
        return Err(Error::MalformedRequest("query share is for another node"));
    }
    let q = &query.bits;
    let mut zero = keys.stream(&labelled(context, b"bits", 0));
    let degree = std::array::from_fn(|k| {
        let r = &coin.degree[k];
        let sum: Fp = r.iter().zip(q).map(|(&r, &q)| r * q).sum();
        sum + keys.random_share(&labelled(context, b"degree", k as u8))
    });
    let bits = std::array::from_fn(|k| {
        let s = &coin.bits[k];
        let sum: Fp = s.iter().zip(q).map(|(&s, &q)| s * q * (Fp::ONE - q)).sum();
        sum + zero.next_share()
    });
    Ok(CheckShare {
        node: keys.node(),
        degree,
        bits,
    })
}

fn labelled(context: &[u8], label: &[u8], k: u8) -> Vec<u8> {
    let mut out = b"obscura/query-check/".to_vec();
    out.extend_from_slice(label);
    out.push(k);
    out.extend_from_slice(context);
    out
}

/// Why a query failed its check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckFailure {
    /// Not every node's check values are there, or one node's are there twice.
    #[error("the check needs every node's values once: {0}")]
    Incomplete(String),
    /// The shares of some query value lie on no polynomial of degree t.
    #[error("the query shares are not a sharing of degree t")]
    NotDegreeT,
    /// Some query value is not a bit.
    #[error("the query is not a sharing of bits")]
    NotBits,
}

/// How many nodes' checks a node needs before it answers: `2t + 1` (so the bit check has a
/// point per degree of freedom), and enough that any two such sets share `t + 1` nodes (so
/// two nodes that each saw a check pass saw the same polynomials). With `n = 2t + 1`, every node.
pub fn checks_needed(n: usize, t: usize) -> usize {
    (2 * t + 1).max((n + t + 2) / 2).min(n)
}

/// Check the values that distinct nodes of `1..=n` opened for one query (`shares` in any
/// order), at least [`checks_needed`] of them.
///
/// # Errors
/// The [`CheckFailure`] found.
pub fn verify(n: usize, t: usize, shares: &[CheckShare]) -> Result<(), CheckFailure> {
    let mut seen = vec![false; n];
    for s in shares {
        let slot = (s.node as usize)
            .checked_sub(1)
            .and_then(|i| seen.get_mut(i))
            .ok_or_else(|| CheckFailure::Incomplete(format!("node {} is not one", s.node)))?;
        if std::mem::replace(slot, true) {
            return Err(CheckFailure::Incomplete(format!("node {} twice", s.node)));
        }
    }
    let need = checks_needed(n, t);
    if shares.len() < need {
        let missing: Vec<String> = (1..=n)
            .filter(|&x| !seen[x - 1])
            .map(|x| format!("node {x}"))
            .collect();
        return Err(CheckFailure::Incomplete(format!(
            "{need} of {n} needed, {} missing",
            missing.join(", ")
        )));
    }
    for k in 0..CHECKS {
        let degree: Vec<(u8, Fp)> = shares.iter().map(|s| (s.node, s.degree[k])).collect();
        if !has_degree_at_most(&degree, t) {
            return Err(CheckFailure::NotDegreeT);
        }
        let bits: Vec<(u8, Fp)> = shares.iter().map(|s| (s.node, s.bits[k])).collect();
        let coeffs = interpolate_coefficients(&bits).map_err(|_| CheckFailure::NotBits)?;
        if coeffs[0] != Fp::ZERO || coeffs.iter().skip(2 * t + 1).any(|&c| c != Fp::ZERO) {
            return Err(CheckFailure::NotBits);
        }
    }
    Ok(())
}

fn has_degree_at_most(points: &[(u8, Fp)], degree: usize) -> bool {
    interpolate_coefficients(points)
        .map(|c| c.iter().skip(degree + 1).all(|&c| c == Fp::ZERO))
        .unwrap_or(false)
}
