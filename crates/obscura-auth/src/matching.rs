//! Proofs that a querier's own Stage-2 query matched a candidate within the cluster's distance
//! limit, so that a node hands out an image's share only to a querier that found it.
//!
//! **Committing.** Node `i` answers a Stage-2 query with its shares of `(h, g)` per candidate
//! (`obscura_mpc`: `g = 0` and `h` = the distance exactly when the candidate is within τ). It also
//! draws a fresh answer key `a`, computes one leaf per candidate position `p`:
//! `L_p = BLAKE3-keyed(k_p, 0 ‖ handle_p ‖ value_p)` with the leaf key
//! `k_p = BLAKE3-keyed(a, "leaf" ‖ p)`, builds a Merkle tree over the leaves (an odd node is
//! carried up a level unchanged), and signs `(i, user, query id, issued, count, root)` with its
//! Ed25519 key ([`sign_answer`]). The querier gets the values, `a` and the signature.
//!
//! **Proving.** To fetch candidate `p`, the querier sends, for `2t + 1` nodes, the value, `k_p`,
//! the sibling hashes from `L_p` to the root, and the node's signature ([`prove`]). It never
//! sends `a`, so the fetching node learns no other leaf's key; sibling leaves are keyed hashes
//! under keys it does not know, so it cannot test guesses of other candidates' values.
//!
//! **Checking.** The fetching node rebuilds each root, checks each node's signature (with the
//! cluster's list of node keys), that every answer names the caller, the same query and the same
//! position, and that the `2t + 1` values interpolate to `g = 0` and a distance `h` within its
//! limit ([`verify`]). It learns that candidate's distance to the query, and nothing of the
//! others.
//!
//! What this proves rests on Stage-2 itself: the distance is the query's only because nodes
//! answer a query only after its check passed (a degree-t sharing of bits,
//! `obscura_mpc::check`); this module also signs and verifies those checks ([`sign_check`],
//! [`verify_checks`]) and the openings nodes relay to each other between rounds
//! ([`sign_opened`], [`verify_openings`]).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use obscura_mpc::check::{self, CheckShare, CHECKS};
use obscura_mpc::Opened;
use obscura_proto::{MatchProof, Opening, ScanOf, WireCheck, WireId, WireOpened};
use obscura_sharing::field::Fp;
use obscura_sharing::prime::interpolate_at_zero;
use rand_core::{CryptoRng, RngCore};

use crate::Error;

const ANSWER_DOMAIN: &[u8] = b"obscura/stage-2-answer/v3";

/// The key of the leaf at `position` of an answer keyed with `answer_key`.
pub fn leaf_key(answer_key: &[u8; 32], position: u32) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(answer_key);
    h.update(b"leaf");
    h.update(&position.to_be_bytes());
    *h.finalize().as_bytes()
}

fn leaf(key: &[u8; 32], handle: &WireId, value: Option<[u32; 2]>) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&[0]);
    h.update(handle);
    match value {
        Some([v, w]) => h
            .update(&[1])
            .update(&v.to_be_bytes())
            .update(&w.to_be_bytes()),
        None => h.update(&[0]),
    };
    *h.finalize().as_bytes()
}

fn parent(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// Every level of the tree over `leaves`, leaves first.
fn levels(leaves: Vec<[u8; 32]>) -> Vec<Vec<[u8; 32]>> {
    let mut out = vec![leaves];
    while out.last().is_some_and(|l| l.len() > 1) {
        let below = out.last().expect("a level");
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => parent(l, r),
                [single] => *single,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        out.push(above);
    }
    out
}

/// The root of `levels`; the tree of no leaf has an all-zero root.
fn root_of(levels: &[Vec<[u8; 32]>]) -> [u8; 32] {
    levels
        .last()
        .and_then(|l| l.first())
        .copied()
        .unwrap_or([0; 32])
}

fn leaves(answer_key: &[u8; 32], handles: &[WireId], values: &[Option<[u32; 2]>]) -> Vec<[u8; 32]> {
    handles
        .iter()
        .zip(values)
        .enumerate()
        .map(|(p, (h, v))| leaf(&leaf_key(answer_key, p as u32), h, *v))
        .collect()
}

/// The message node `node` signs for its answer to `user`'s query.
fn answer_message(
    node: u8,
    user: &str,
    query_id: &[u8; 16],
    issued: u64,
    part: u32,
    count: u32,
    root: &[u8; 32],
) -> Vec<u8> {
    let mut m = ANSWER_DOMAIN.to_vec();
    m.push(node);
    m.extend_from_slice(&(user.len() as u64).to_be_bytes());
    m.extend_from_slice(user.as_bytes());
    m.extend_from_slice(query_id);
    m.extend_from_slice(&issued.to_be_bytes());
    m.extend_from_slice(&part.to_be_bytes());
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(root);
    m
}

/// A node's commitment to its Stage-2 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAnswer {
    /// The answer key (for the querier only).
    pub answer_key: [u8; 32],
    /// The node's signature over the commitment.
    pub signature: [u8; 64],
}

/// Whose answer to which query: what a node's signature binds besides the values.
#[derive(Clone, Copy, Debug)]
pub struct Answered<'a> {
    /// The answering node.
    pub node: u8,
    /// The user whose query it is.
    pub user: &'a str,
    /// The query.
    pub query_id: &'a [u8; 16],
    /// When the query was issued.
    pub issued: u64,
}

/// The digest of a query's whole candidate list, in order: what [`ScanOf`] names.
pub fn scan_digest(candidates: &[WireId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 stage-2 candidate list");
    h.update(&(candidates.len() as u64).to_be_bytes());
    for c in candidates {
        h.update(c);
    }
    *h.finalize().as_bytes()
}

/// The [`ScanOf`] of a query's whole candidate list.
///
/// # Panics
/// If the list holds more than `u32::MAX` candidates (the wire takes far fewer).
pub fn scan_of(candidates: &[WireId]) -> ScanOf {
    ScanOf {
        count: u32::try_from(candidates.len()).expect("fewer than 2^32 candidates"),
        digest: scan_digest(candidates),
    }
}

/// The context of a Stage-2 query at the nodes: its id, its issue time and its whole candidate
/// list. The check of the query is made under it, once; each part's masks under its
/// [`part_context`].
pub fn query_context(query_id: &[u8; 16], issued: u64, scan: &ScanOf) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 stage-2 zero-sharing context");
    h.update(query_id);
    h.update(&issued.to_be_bytes());
    h.update(&u64::from(scan.count).to_be_bytes());
    h.update(&scan.digest);
    *h.finalize().as_bytes()
}

/// The context of one part of a query: the query's context, the part and its candidate
/// handles. It seeds the zero-sharing masks of the part's rounds and answers, so they never
/// serve twice by construction: a query id sent again once the nodes forgot it comes with
/// another issue time (the old one is stale), parts differ by number, and different candidate
/// lists at different nodes give masks that do not cancel.
pub fn part_context(context: &[u8; 32], part: u32, candidates: &[WireId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 stage-2 part context");
    h.update(context);
    h.update(&part.to_be_bytes());
    h.update(&scan_digest(candidates));
    *h.finalize().as_bytes()
}

/// The digest of one node's query share, as the querier commits to it.
pub fn share_digest(query_share: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("obscura 2026 checked query share")
        .update(query_share)
        .finalize()
        .as_bytes()
}

/// The context of a query's check: the query's context and the querier's commitment to every
/// node's share (their digests, node 1 first). The check's coefficients derive from it, so they
/// depend on all the shares at once: a querier cannot learn anything of them from some nodes
/// and then choose the shares of others.
pub fn check_context(context: &[u8; 32], share_digests: &[[u8; 32]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 query check context");
    h.update(context);
    h.update(&(share_digests.len() as u64).to_be_bytes());
    for d in share_digests {
        h.update(d);
    }
    *h.finalize().as_bytes()
}

const CHECK_DOMAIN: &[u8] = b"obscura/query-check/v2";

/// The message node `check.node` signs for its check of `answered`'s query.
fn check_message(answered: &Answered<'_>, check_context: &[u8; 32], check: &CheckShare) -> Vec<u8> {
    let mut m = CHECK_DOMAIN.to_vec();
    m.push(check.node);
    m.extend_from_slice(&(answered.user.len() as u64).to_be_bytes());
    m.extend_from_slice(answered.user.as_bytes());
    m.extend_from_slice(answered.query_id);
    m.extend_from_slice(&answered.issued.to_be_bytes());
    m.extend_from_slice(check_context);
    for v in check.degree.iter().chain(&check.bits) {
        m.extend_from_slice(&v.value().to_be_bytes());
    }
    m
}

/// Node `check.node` signs its check of the query, for the querier to pass to every node.
pub fn sign_check(
    key: &SigningKey,
    answered: &Answered<'_>,
    check_context: &[u8; 32],
    check: &CheckShare,
) -> WireCheck {
    let signature = key.sign(&check_message(answered, check_context, check));
    WireCheck {
        node: check.node,
        degree: check.degree.iter().map(|v| v.value()).collect(),
        bits: check.bits.iter().map(|v| v.value()).collect(),
        signature: signature.to_bytes().to_vec(),
    }
}

/// Which of nodes `1..=n` the relayed `what`s (checks, openings) come from, each at most once;
/// `a_what` is the noun with its article.
///
/// # Errors
/// [`Error::QueryCheck`] for a node outside the cluster or one named twice.
fn distinct_nodes(
    nodes: impl Iterator<Item = u8>,
    n: usize,
    (a_what, what): (&str, &str),
) -> Result<Vec<bool>, Error> {
    let mut seen = vec![false; n];
    for node in nodes {
        let slot = usize::from(node)
            .checked_sub(1)
            .and_then(|i| seen.get_mut(i))
            .ok_or_else(|| Error::QueryCheck(format!("{a_what} names node {node}, not one")))?;
        if std::mem::replace(slot, true) {
            return Err(Error::QueryCheck(format!(
                "node {node}'s {what} is there twice"
            )));
        }
    }
    Ok(seen)
}

/// The nodes' checks of `answered`'s query under `check_context`, each verified under its
/// node's key from `node_keys`, this node's (`answered.node`) among them; then checked together
/// ([`obscura_mpc::check::verify`]).
///
/// # Errors
/// [`Error::QueryCheck`] saying what does not hold.
pub fn verify_checks(
    checks: &[WireCheck],
    answered: &Answered<'_>,
    check_context: &[u8; 32],
    node_keys: &[VerifyingKey],
    t: usize,
) -> Result<(), Error> {
    let refuse = |m: String| Error::QueryCheck(m);
    // Cheap refusals first: no signature is checked for a set that cannot pass.
    let seen = distinct_nodes(
        checks.iter().map(|c| c.node),
        node_keys.len(),
        ("a check", "check"),
    )?;
    if !seen
        .get(usize::from(answered.node).wrapping_sub(1))
        .copied()
        .unwrap_or(false)
    {
        return Err(refuse(
            "this node's own check is not among the checks".into(),
        ));
    }
    let mut opened = Vec::with_capacity(checks.len());
    for c in checks {
        let key = &node_keys[usize::from(c.node) - 1];
        let values = |v: &[u32]| -> Option<[Fp; CHECKS]> {
            let fp: Vec<Fp> = v
                .iter()
                .map(|&x| (x < obscura_sharing::field::P).then(|| Fp::from(x)))
                .collect::<Option<_>>()?;
            fp.try_into().ok()
        };
        let check = CheckShare {
            node: c.node,
            degree: values(&c.degree).ok_or_else(|| refuse("malformed check values".into()))?,
            bits: values(&c.bits).ok_or_else(|| refuse("malformed check values".into()))?,
        };
        let signature: [u8; 64] = c
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| refuse("malformed check signature".into()))?;
        key.verify_strict(
            &check_message(answered, check_context, &check),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| {
            refuse(format!(
                "node {}'s check is not its own for this query",
                c.node
            ))
        })?;
        opened.push(check);
    }
    check::verify(node_keys.len(), t, &opened).map_err(|e| refuse(e.to_string()))
}

const OPENED_DOMAIN: &[u8] = b"obscura/stage-2-opened/v1";

/// The message node `node` signs for its openings of `round` of `answered`'s query: the query's
/// context (its candidates), the nodes' τ, the round and a digest of the values.
fn opened_message(
    answered: &Answered<'_>,
    node: u8,
    context: &[u8; 32],
    tau: u32,
    round: u8,
    values: &[Option<u32>],
) -> Vec<u8> {
    // Each value as 5 bytes (a presence byte, then the value), hashed in one pass.
    let mut encoded = Vec::with_capacity(8 + 5 * values.len());
    encoded.extend_from_slice(&(values.len() as u64).to_be_bytes());
    for v in values {
        match v {
            Some(v) => {
                encoded.push(1);
                encoded.extend_from_slice(&v.to_be_bytes());
            }
            None => encoded.extend_from_slice(&[0; 5]),
        }
    }
    let digest = blake3::hash(&encoded);
    let mut m = OPENED_DOMAIN.to_vec();
    m.push(node);
    m.extend_from_slice(&(answered.user.len() as u64).to_be_bytes());
    m.extend_from_slice(answered.user.as_bytes());
    m.extend_from_slice(answered.query_id);
    m.extend_from_slice(&answered.issued.to_be_bytes());
    m.extend_from_slice(context);
    m.extend_from_slice(&tau.to_be_bytes());
    m.push(round);
    m.extend_from_slice(digest.as_bytes());
    m
}

/// Node `answered.node` signs its openings of a Stage-2 round of the query with `context`
/// under the nodes' `tau`, for the querier to relay.
pub fn sign_opened(
    key: &SigningKey,
    answered: &Answered<'_>,
    context: &[u8; 32],
    tau: u32,
    opened: &Opened,
) -> WireOpened {
    let values: Vec<Option<u32>> = opened.values.iter().map(|v| v.map(Fp::value)).collect();
    let signature = key.sign(&opened_message(
        answered,
        opened.node,
        context,
        tau,
        opened.round,
        &values,
    ));
    WireOpened {
        node: opened.node,
        round: opened.round,
        values,
        signature: signature.to_bytes().to_vec(),
    }
}

/// The relayed openings of a round of `answered`'s query, each verified under its node's key
/// from `node_keys` for this query's `context` and the nodes' `tau`: a querier can choose which
/// nodes' openings to relay, never what they say.
///
/// # Errors
/// [`Error::QueryCheck`] naming the opening that does not hold.
pub fn verify_openings(
    openings: &[WireOpened],
    answered: &Answered<'_>,
    context: &[u8; 32],
    tau: u32,
    node_keys: &[VerifyingKey],
) -> Result<Vec<Opened>, Error> {
    let refuse = |m: String| Error::QueryCheck(m);
    // Cheap refusals first: at most one signature per node of the cluster is checked.
    distinct_nodes(
        openings.iter().map(|o| o.node),
        node_keys.len(),
        ("an opening", "opening"),
    )?;
    openings
        .iter()
        .map(|o| {
            let key = &node_keys[usize::from(o.node) - 1];
            let values = o
                .values
                .iter()
                .map(|v| match v {
                    Some(x) if *x >= obscura_sharing::field::P => None,
                    Some(x) => Some(Some(Fp::from(*x))),
                    None => Some(None),
                })
                .collect::<Option<Vec<Option<Fp>>>>()
                .ok_or_else(|| refuse("malformed opening values".into()))?;
            let signature: [u8; 64] = o
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| refuse("malformed opening signature".into()))?;
            key.verify_strict(
                &opened_message(answered, o.node, context, tau, o.round, &o.values),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| {
                refuse(format!(
                    "node {}'s opening is not its own for this round of this query",
                    o.node
                ))
            })?;
            Ok(Opened {
                node: o.node,
                round: o.round,
                values,
            })
        })
        .collect()
}

/// A node commits to `values` for `handles`, part `part` of a query, and signs: the part is
/// in the signed message, so a proof cannot take one node's opening from one part and
/// another's from another.
pub fn sign_answer<R: RngCore + CryptoRng>(
    key: &SigningKey,
    answered: &Answered<'_>,
    part: u32,
    handles: &[WireId],
    values: &[Option<[u32; 2]>],
    rng: &mut R,
) -> SignedAnswer {
    let mut answer_key = [0u8; 32];
    rng.fill_bytes(&mut answer_key);
    let root = root_of(&levels(leaves(&answer_key, handles, values)));
    let message = answer_message(
        answered.node,
        answered.user,
        answered.query_id,
        answered.issued,
        part,
        handles.len() as u32,
        &root,
    );
    SignedAnswer {
        answer_key,
        signature: key.sign(&message).to_bytes(),
    }
}

/// One node's answer as the querier keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptAnswer {
    /// The node.
    pub node: u8,
    /// Its shares of `(h, g)`, aligned with the candidates.
    pub values: Vec<Option<[u32; 2]>>,
    /// Its answer key.
    pub answer_key: [u8; 32],
    /// Its signature.
    pub signature: [u8; 64],
}

/// The querier's proof for the candidate at `position` of `handles`, from the kept answers
/// (the first `2t + 1` are enough; all given are included).
///
/// # Panics
/// If `position` is out of range or an answer's values are not aligned with `handles`.
pub fn prove(
    query_id: [u8; 16],
    issued: u64,
    part: u32,
    handles: &[WireId],
    answers: &[KeptAnswer],
    position: usize,
) -> MatchProof {
    let openings = answers
        .iter()
        .map(|a| {
            assert_eq!(a.values.len(), handles.len(), "values aligned with handles");
            let tree = levels(leaves(&a.answer_key, handles, &a.values));
            let mut path = Vec::new();
            let mut p = position;
            for level in &tree[..tree.len() - 1] {
                if let Some(sibling) = level.get(p ^ 1) {
                    path.push(*sibling);
                }
                p /= 2;
            }
            Opening {
                node: a.node,
                value: a.values[position],
                leaf_key: leaf_key(&a.answer_key, position as u32),
                path,
                signature: a.signature.to_vec(),
            }
        })
        .collect();
    MatchProof {
        query_id,
        issued,
        part,
        handle: handles[position],
        position: position as u32,
        count: handles.len() as u32,
        openings,
    }
}

/// The root an opening leads to, or `None` when its path has the wrong length for the tree.
fn opened_root(proof: &MatchProof, o: &Opening) -> Option<[u8; 32]> {
    if proof.position >= proof.count {
        return None;
    }
    let mut hash = leaf(&o.leaf_key, &proof.handle, o.value);
    let mut path = o.path.iter();
    let (mut p, mut len) = (proof.position as usize, proof.count as usize);
    while len > 1 {
        let sibling = p ^ 1;
        if sibling < len {
            let s = path.next()?;
            hash = if p % 2 == 0 {
                parent(&hash, s)
            } else {
                parent(s, &hash)
            };
        }
        p /= 2;
        len = len.div_ceil(2);
    }
    path.next().is_none().then_some(hash)
}

/// A match the caller proved: the handle of its query and its distance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProvenMatch {
    /// The candidate's handle in the query.
    pub handle: WireId,
    /// Its Hamming distance to the query.
    pub distance: u32,
}

/// What a node checks a proof against.
#[derive(Clone, Debug)]
pub struct MatchPolicy {
    /// Every node's answer key, node 1 first.
    pub node_keys: Vec<VerifyingKey>,
    /// Degree of the hash sharing: `2t + 1` openings are needed.
    pub t: usize,
    /// The largest distance that entitles the querier to the image.
    pub max_distance: u32,
    /// How long after the query a proof is accepted, seconds.
    pub window_s: u64,
}

/// Check `proof` for the caller `user` at `now`.
///
/// # Errors
/// [`Error::Proof`] saying what does not hold.
pub fn verify(
    proof: &MatchProof,
    user: &str,
    policy: &MatchPolicy,
    now: u64,
) -> Result<ProvenMatch, Error> {
    let need = 2 * policy.t + 1;
    if proof.openings.len() != need {
        return Err(Error::Proof("it needs exactly 2t + 1 nodes' openings"));
    }
    if now > proof.issued.saturating_add(policy.window_s) || proof.issued > now + policy.window_s {
        return Err(Error::Proof("its query is too old or from the future"));
    }
    let mut points = Vec::with_capacity(need);
    for o in &proof.openings {
        let key = usize::from(o.node)
            .checked_sub(1)
            .and_then(|i| policy.node_keys.get(i))
            .ok_or(Error::Proof("an opening names no node of this cluster"))?;
        if points.iter().any(|&(x, _)| x == o.node) {
            return Err(Error::Proof("a node is opened twice"));
        }
        let value = o
            .value
            .filter(|v| v.iter().all(|&x| x < obscura_sharing::field::P))
            .ok_or(Error::Proof("a node holds no such image"))?;
        let root = opened_root(proof, o).ok_or(Error::Proof("an opening's path does not fit"))?;
        let signature: [u8; 64] = o
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Error::Proof("a signature is malformed"))?;
        let message = answer_message(
            o.node,
            user,
            &proof.query_id,
            proof.issued,
            proof.part,
            proof.count,
            &root,
        );
        key.verify_strict(&message, &Signature::from_bytes(&signature))
            .map_err(|_| {
                Error::Proof("an opening is not what that node signed for this user's query")
            })?;
        points.push((o.node, value.map(Fp::from)));
    }
    let at_zero = |k: usize| {
        let p: Vec<(u8, Fp)> = points.iter().map(|&(x, v)| (x, v[k])).collect();
        interpolate_at_zero(&p).map_err(|_| Error::Proof("the openings do not interpolate"))
    };
    let (h, g) = (at_zero(0)?, at_zero(1)?);
    // g is zero exactly for a candidate within the nodes' τ, and then h is its distance.
    if g != Fp::ZERO || h.value() > policy.max_distance {
        return Err(Error::Proof(
            "the candidate is farther than the cluster's limit",
        ));
    }
    let distance = h.value();
    Ok(ProvenMatch {
        handle: proof.handle,
        distance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// Five nodes' shares of `(h, g)` for `count` candidates whose distances are `d(c)`: `(d, 0)`
    /// within 10, random beyond; on degree-4 polynomials, each answer committed and signed.
    fn answers(
        keys: &[SigningKey],
        d: impl Fn(usize) -> u32,
        handles: &[WireId],
        rng: &mut ChaCha20Rng,
    ) -> Vec<KeptAnswer> {
        let poly = |c0: Fp, rng: &mut ChaCha20Rng| {
            let mut v = vec![c0];
            v.extend((0..4).map(|_| Fp::random(rng)));
            v
        };
        let coeffs: Vec<[Vec<Fp>; 2]> = (0..handles.len())
            .map(|c| {
                let (h, g) = if d(c) <= 10 {
                    (Fp::from(d(c)), Fp::ZERO)
                } else {
                    (Fp::random(rng), Fp::random(rng))
                };
                [poly(h, rng), poly(g, rng)]
            })
            .collect();
        keys.iter()
            .enumerate()
            .map(|(i, k)| {
                let node = i as u8 + 1;
                let x = Fp::from(u32::from(node));
                let at = |c: &[Fp]| c.iter().rev().fold(Fp::ZERO, |a, &k| a * x + k).value();
                let values: Vec<Option<[u32; 2]>> =
                    coeffs.iter().map(|[h, g]| Some([at(h), at(g)])).collect();
                let answered = Answered {
                    node,
                    user: "ana",
                    query_id: &[5; 16],
                    issued: 1000,
                };
                let s = sign_answer(k, &answered, 0, handles, &values, rng);
                KeptAnswer {
                    node,
                    values,
                    answer_key: s.answer_key,
                    signature: s.signature,
                }
            })
            .collect()
    }

    #[test]
    fn a_proof_opens_one_candidate_and_holds_only_for_its_user_and_distance() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let keys: Vec<SigningKey> = (0..5).map(|_| SigningKey::generate(&mut rng)).collect();
        let policy = MatchPolicy {
            node_keys: keys.iter().map(|k| k.verifying_key()).collect(),
            t: 2,
            max_distance: 10,
            window_s: 3600,
        };
        for count in [1usize, 2, 3, 5, 8, 13] {
            let handles: Vec<WireId> = (0..count).map(|c| [c as u8; 16]).collect();
            let kept = answers(&keys, |c| if c == 0 { 3 } else { 20 }, &handles, &mut rng);
            for p in 0..count {
                let proof = prove([5; 16], 1000, 0, &handles, &kept, p);
                let got = verify(&proof, "ana", &policy, 1000);
                if p == 0 {
                    assert_eq!(
                        got.unwrap(),
                        ProvenMatch {
                            handle: handles[0],
                            distance: 3
                        }
                    );
                } else {
                    assert!(got.is_err(), "distance 20 is beyond 10");
                    // Even a node's limit of 64 does not open it: g is not zero.
                    let all = MatchPolicy {
                        max_distance: 64,
                        ..policy.clone()
                    };
                    assert!(verify(&proof, "ana", &all, 1000).is_err());
                }
            }
            let proof = prove([5; 16], 1000, 0, &handles, &kept, 0);
            // Another user, a changed value, handle, position, count, a stale query.
            assert!(verify(&proof, "bob", &policy, 1000).is_err());
            let mut p = proof.clone();
            p.openings[1].value = p.openings[1].value.map(|[h, g]| [h ^ 1, g]);
            assert!(verify(&p, "ana", &policy, 1000).is_err());
            let mut p = proof.clone();
            p.handle[0] ^= 1;
            assert!(verify(&p, "ana", &policy, 1000).is_err());
            let mut p = proof.clone();
            p.count += 1;
            assert!(verify(&p, "ana", &policy, 1000).is_err());
            if count > 1 {
                let mut p = proof.clone();
                p.position = 1;
                assert!(verify(&p, "ana", &policy, 1000).is_err());
            }
            assert!(verify(&proof, "ana", &policy, 1000 + 3601).is_err());
            // Too few nodes, or one twice.
            let mut p = proof.clone();
            p.openings.truncate(4);
            assert!(verify(&p, "ana", &policy, 1000).is_err());
            let mut p = proof.clone();
            p.openings[4] = p.openings[0].clone();
            assert!(verify(&p, "ana", &policy, 1000).is_err());
        }
    }

    /// A query's parts are answered under one query id, each with the same count (16,384), so
    /// a proof could take some nodes' openings from one part and the rest from another. A
    /// querier that found such a mix interpolating to a winner (here: both parts' answers for
    /// the handle at position 0 are the same sharing of a winner, the best it could hope for)
    /// held a proof for a candidate no single part matched. The part is in every signed
    /// answer, so the proof names one part and the other part's openings do not verify.
    #[test]
    fn a_proof_cannot_mix_the_answers_of_two_parts() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let keys: Vec<SigningKey> = (0..5).map(|_| SigningKey::generate(&mut rng)).collect();
        let policy = MatchPolicy {
            node_keys: keys.iter().map(|k| k.verifying_key()).collect(),
            t: 2,
            max_distance: 10,
            window_s: 3600,
        };
        let handles: Vec<WireId> = (0..4).map(|c| [c as u8; 16]).collect();
        let part0 = answers(&keys, |c| if c == 0 { 3 } else { 20 }, &handles, &mut rng);
        // Part 1: the same values, signed by each node as its answer to part 1.
        let part1: Vec<KeptAnswer> = part0
            .iter()
            .zip(&keys)
            .map(|(a, k)| {
                let answered = Answered {
                    node: a.node,
                    user: "ana",
                    query_id: &[5; 16],
                    issued: 1000,
                };
                let s = sign_answer(k, &answered, 1, &handles, &a.values, &mut rng);
                KeptAnswer {
                    answer_key: s.answer_key,
                    signature: s.signature,
                    ..a.clone()
                }
            })
            .collect();
        for (part, kept) in [(0, &part0), (1, &part1)] {
            let proof = prove([5; 16], 1000, part, &handles, kept, 0);
            assert!(verify(&proof, "ana", &policy, 1000).is_ok(), "part {part}");
        }
        let mut mixed = prove([5; 16], 1000, 0, &handles, &part0, 0);
        let from_part1 = prove([5; 16], 1000, 1, &handles, &part1, 0);
        mixed.openings[3..].clone_from_slice(&from_part1.openings[3..]);
        assert!(verify(&mixed, "ana", &policy, 1000).is_err());
        mixed.part = 1;
        assert!(verify(&mixed, "ana", &policy, 1000).is_err());
        // Nor does a proof of one part hold as another's.
        let mut moved = prove([5; 16], 1000, 0, &handles, &part0, 0);
        moved.part = 1;
        assert!(verify(&moved, "ana", &policy, 1000).is_err());
    }

    /// What a querier relaying openings between nodes might try: change a value, pass one
    /// round's openings off as another's, or another query's, user's or τ's, or name a node twice.
    #[test]
    fn a_relayed_opening_holds_only_as_its_node_signed_it() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let keys: Vec<SigningKey> = (0..6).map(|_| SigningKey::generate(&mut rng)).collect();
        let node_keys: Vec<VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
        let answered = |node| Answered {
            node,
            user: "ana",
            query_id: &[5; 16],
            issued: 1000,
        };
        let context = [7u8; 32];
        let wire: Vec<WireOpened> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let node = i as u8 + 1;
                let opened = Opened {
                    node,
                    round: 2,
                    values: vec![Some(Fp::from(node as u32)), None, Some(Fp::from(3))],
                };
                sign_opened(k, &answered(node), &context, 10, &opened)
            })
            .collect();
        let got = verify_openings(&wire, &answered(1), &context, 10, &node_keys).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(
            got[3].values,
            vec![Some(Fp::from(4)), None, Some(Fp::from(3))]
        );
        let refused = |w: &[WireOpened], a: &Answered<'_>, c: &[u8; 32], tau| {
            verify_openings(w, a, c, tau, &node_keys).is_err()
        };
        let mut w = wire.clone();
        w[2].values[0] = w[2].values[0].map(|v| v + 1);
        assert!(refused(&w, &answered(1), &context, 10));
        let mut w = wire.clone();
        w[2].values[1] = Some(0);
        assert!(refused(&w, &answered(1), &context, 10));
        let mut w = wire.clone();
        w[4].round = 3;
        assert!(refused(&w, &answered(1), &context, 10));
        let mut w = wire.clone();
        w[5] = w[0].clone();
        assert!(refused(&w, &answered(1), &context, 10));
        let mut w = wire.clone();
        w[1].node = 7;
        assert!(refused(&w, &answered(1), &context, 10));
        let mut w = wire.clone();
        w[0].values[2] = Some(obscura_sharing::field::P);
        assert!(refused(&w, &answered(1), &context, 10));
        assert!(refused(&wire, &answered(1), &[8; 32], 10));
        assert!(refused(&wire, &answered(1), &context, 64));
        let bob = Answered {
            user: "bob",
            ..answered(1)
        };
        assert!(refused(&wire, &bob, &context, 10));
        let other = Answered {
            query_id: &[6; 16],
            ..answered(1)
        };
        assert!(refused(&wire, &other, &context, 10));
    }
}
