//! Stage-2 of Obscura's search: which candidates lie within distance τ of the query, and at
//! what distance, computed on secret shares so that no node sees either hash and the querier
//! learns nothing of the candidates beyond τ.
//!
//! Every stored hash bit `h_j` is shared over GF(2^31 − 1) with a degree-t polynomial; node `i`
//! stores `h_j(i)`. The querier shares its bits `q_j` the same way, with fresh polynomials per
//! query, and sends node `i` its shares and the candidate list. A node answers only a query that
//! is a degree-t sharing of bits: first every node opens masked check values ([`check`]) that
//! the querier carries to every other node.
//!
//! **Distances.** For each candidate, node `i` holds `D_i = Σ_j h_j(i) + q_j(i) − 2·q_j(i)·h_j(i)`,
//! a point on a degree-2t polynomial through the Hamming distance `d`.
//!
//! **Only the winners.** The querier must learn `d` when `d ≤ τ` and nothing else, so the nodes
//! open, per candidate, the pair
//!
//! ```text
//! h = d + r₁·Π_{j=0..τ} (d − j)        g = r₂·Π_{j=0..τ} (d − j)
//! ```
//!
//! with `r₁, r₂` random values nobody knows. For a winner the product is zero: `g = 0` and
//! `h = d`. Beyond τ the product is not zero (d ≤ 64 < p), so `h` and `g` are independent and
//! uniform: the querier learns that the candidate is not a winner and nothing else (`g = 0` by
//! chance has probability `1/p`, and then `h` still must land in `0..=τ`).
//!
//! The product takes multiplications, each doubling the degree, so the nodes reduce the degree
//! between levels (Damgård–Nielsen with the querier as the relay): node `i` opens `v_i − ρ_i + Z_i`
//! for each degree-2t product `v`, with `ρ` a pseudo-random sharing of degree t of an unknown
//! value and `Z` one of zero of degree 2t (both from [`obscura_sharing::zero`], no interaction);
//! every node interpolates the opened `v − ρ` from `2t + 1` nodes' openings and adds its `ρ_i`,
//! which gives it a degree-t share of `v`. Round 0 reduces `d`; the next rounds raise it to
//! `d², …, d^g`, on which every run of `g` factors `d − j` is a polynomial each node evaluates
//! without a round; those group factors and `(r₁, r₂)` are multiplied pairwise, level by level,
//! and the last level's product is opened directly as `(h, g)`. For τ = 10 that is 4 relays and
//! 9 values per candidate ([`node::rounds`], [`node::opened_per_candidate`]).
//!
//! **What is opened, to whom.** Every `v − ρ` is uniform (ρ holds the key of the set of nodes
//! outside any `t` colluding ones), and `Z` makes every opened polynomial uniform given its
//! constant: the querier, or `t` colluding nodes, see uniform values in every round and `(h, g)`
//! at the end. The openings go from node to node through the querier, so the node server signs
//! each and checks every other node's signature: a querier that could hand two nodes different
//! openings would make them multiply by shares it had shifted, and learn from the result.
//!
//! The protocol core does no I/O: [`Querier`] and [`node::NodeSession`] take and return
//! messages.
//!
//! A full exchange with five nodes:
//!
//! ```
//! use obscura_mpc::{node, share_hash, Querier, SearchParams};
//! use obscura_sharing::manifest::ImageId;
//! use obscura_sharing::zero::deal;
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let mut rng = ChaCha20Rng::from_entropy();
//! let (n, t) = (5, 2);
//! let zero_keys = deal(n, t, &mut rng)?;                  // at cluster creation
//!
//! // The data owner stores two images' hash shares at the nodes.
//! let (near, far) = (ImageId([1; 16]), ImageId([2; 16]));
//! let stored_near = share_hash(0xc2924c5532bddfc8, t, n, &mut rng)?;
//! let stored_far = share_hash(0x0123456789abcdef, t, n, &mut rng)?;
//!
//! // The querier shares its hash; Stage-1 produced the candidate list.
//! let params = SearchParams { n, t, max_distance: 10, top: 10 };
//! let (querier, requests) = Querier::start(0xc2924c5532bddfc9, vec![near, far], params, &mut rng)?;
//!
//! // Each node starts from its own shares and zero keys; the querier relays their openings
//! // (here all in one process, as `run_all` does) until every node answers.
//! let stored: Vec<Vec<_>> = (0..n).map(|i| vec![Some(&stored_near[i]), Some(&stored_far[i])]).collect();
//! let answers = node::run_all(&zero_keys, &requests, &stored)?.answers;
//!
//! let ranked = querier.finish(answers)?;
//! assert_eq!(ranked.matches.len(), 1);
//! assert_eq!((ranked.matches[0].id, ranked.matches[0].distance), (near, 1));
//! assert_eq!(ranked.beyond, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod node;

use obscura_sharing::field::{Fp, P};
use obscura_sharing::manifest::ImageId;
use obscura_sharing::prime::{lagrange_at, lagrange_at_zero, share_values};
use rand_core::{CryptoRng, RngCore};

/// Bits per hash.
pub const HASH_BITS: usize = 64;
/// Length of an encoded [`HashShare`].
pub const HASH_SHARE_LEN: usize = HASH_BITS * 4;

/// Errors of the Stage-2 protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Sharing parameters are invalid.
    #[error(transparent)]
    Sharing(#[from] obscura_sharing::Error),
    /// Stage-2 needs `2t + 1` nodes.
    #[error("Stage-2 needs answers from {need} of the {n} nodes (2t + 1 with t = {t}), got {got}; missing: {}", fmt_nodes(missing))]
    NotEnoughAnswers {
        /// `2t + 1`.
        need: usize,
        /// Answers received.
        got: usize,
        /// Cluster size.
        n: usize,
        /// Degree.
        t: usize,
        /// Nodes that did not answer.
        missing: Vec<u8>,
    },
    /// An answer is malformed: wrong node, duplicate, or wrong length.
    #[error("node {node} sent a malformed answer: {reason}")]
    MalformedAnswer {
        /// The node.
        node: u8,
        /// What was wrong.
        reason: &'static str,
    },
    /// The answers do not lie on one polynomial of degree 2t, or interpolate to an impossible
    /// distance: at least one node computed wrongly.
    #[error("answers for {} candidate(s) are inconsistent: a node computed wrongly", candidates.len())]
    InconsistentAnswers {
        /// The candidates whose answers failed the check.
        candidates: Vec<ImageId>,
    },
    /// The openings of a round lie on no polynomial of degree 2t: a node computed wrongly.
    #[error("the openings of round {round} do not lie on one polynomial: a node computed wrongly")]
    InconsistentOpenings {
        /// The round.
        round: u8,
    },
    /// A request's query share or candidate list does not fit.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// A stored hash share has the wrong length or an out-of-range value.
    #[error("malformed hash share")]
    MalformedHashShare,
}

fn fmt_nodes(nodes: &[u8]) -> String {
    if nodes.is_empty() {
        return "none".into();
    }
    nodes
        .iter()
        .map(|n| format!("node {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One node's shares of the 64 bits of one hash (stored per image, or sent per query).
#[derive(Clone, PartialEq, Eq)]
pub struct HashShare {
    /// The node's x-coordinate.
    pub node: u8,
    /// `bits[j]` = the node's share of bit `j` (bit `63 − j` of the hash: DC first).
    pub bits: [Fp; HASH_BITS],
}

impl std::fmt::Debug for HashShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashShare {{ node: {}, .. }}", self.node)
    }
}

impl HashShare {
    /// 64 little-endian `u32`s.
    pub fn to_bytes(&self) -> [u8; HASH_SHARE_LEN] {
        let mut out = [0u8; HASH_SHARE_LEN];
        for (o, b) in out.chunks_exact_mut(4).zip(&self.bits) {
            o.copy_from_slice(&b.value().to_le_bytes());
        }
        out
    }

    /// Parse [`HashShare::to_bytes`] for `node`.
    ///
    /// # Errors
    /// [`Error::MalformedHashShare`] for a wrong length or a value ≥ p.
    pub fn from_bytes(node: u8, bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != HASH_SHARE_LEN {
            return Err(Error::MalformedHashShare);
        }
        let mut bits = [Fp::ZERO; HASH_BITS];
        for (b, c) in bits.iter_mut().zip(bytes.chunks_exact(4)) {
            let v = u32::from_le_bytes(c.try_into().expect("4 bytes"));
            if v >= P {
                return Err(Error::MalformedHashShare);
            }
            *b = Fp::from(v);
        }
        Ok(HashShare { node, bits })
    }
}

fn hash_bits(hash: u64) -> Vec<Fp> {
    (0..HASH_BITS)
        .map(|j| Fp::from(((hash >> (63 - j)) & 1) as u32))
        .collect()
}

/// Share a hash's 64 bits among nodes 1..=n with degree-t polynomials (data owner, at indexing).
///
/// # Errors
/// [`Error::Sharing`] unless `1 ≤ t < n ≤ 255`.
pub fn share_hash<R: RngCore + CryptoRng>(
    hash: u64,
    t: usize,
    n: usize,
    rng: &mut R,
) -> Result<Vec<HashShare>, Error> {
    Ok(share_values(&hash_bits(hash), t, n, rng)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| HashShare {
            node: i as u8 + 1,
            bits: v.try_into().expect("64 values"),
        })
        .collect())
}

/// Parameters of one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchParams {
    /// Nodes in the cluster.
    pub n: usize,
    /// Degree of the hash sharing; answers need `2t + 1` nodes.
    pub t: usize,
    /// Largest distance reported (τ).
    pub max_distance: u32,
    /// Most results reported.
    pub top: usize,
}

/// The message to one node: its share of the query bits, the query id and the candidates.
#[derive(Clone, Debug)]
pub struct NodeRequest {
    /// The node it is for.
    pub node: u8,
    /// The context of the masks: a node must never start two queries under one context
    /// (two sets of openings hand out the difference of their unmasked values). The node server
    /// derives it from the query id, the query's issue time and the candidate list.
    pub context: [u8; 32],
    /// The node's share of the query bits.
    pub query: HashShare,
    /// The candidates, in the same order for every node.
    pub candidates: Vec<ImageId>,
    /// τ: the largest distance revealed. The node server puts its own here, never the
    /// querier's.
    pub max_distance: u32,
}

/// One node's openings of one round: for each candidate, the round's width of masked values,
/// `None` where the node (or a node whose openings it used) holds no such image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The opening node.
    pub node: u8,
    /// The round, from 0.
    pub round: u8,
    /// `candidates × width` values, candidate by candidate.
    pub values: Vec<Option<Fp>>,
}

/// A node's answer: per candidate its shares of `(h, g)`, `None` where it holds no such image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAnswer {
    /// The answering node.
    pub node: u8,
    /// Aligned with the request's candidates.
    pub values: Vec<Option<[Fp; 2]>>,
}

/// One ranked result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// The image.
    pub id: ImageId,
    /// Hamming distance to the query.
    pub distance: u32,
}

/// The outcome of Stage-2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranked {
    /// Matches within the threshold, by (distance, id), at most `top`.
    pub matches: Vec<Match>,
    /// Candidates evaluated.
    pub candidates: usize,
    /// Candidates beyond the threshold: all the querier learns of them is how many.
    pub beyond: usize,
    /// Candidates some answering node did not hold (deleted or not yet committed), skipped.
    pub incomplete: usize,
}

/// The querier after sending its requests, waiting for answers.
pub struct Querier {
    params: SearchParams,
    candidates: Vec<ImageId>,
}

impl std::fmt::Debug for Querier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Querier")
            .field("params", &self.params)
            .field("candidates", &self.candidates.len())
            .finish()
    }
}

impl Querier {
    /// Share the query hash and build one request per node.
    ///
    /// # Errors
    /// [`Error::Sharing`] unless `1 ≤ t` and `2t < n ≤ 255`.
    pub fn start<R: RngCore + CryptoRng>(
        hash: u64,
        candidates: Vec<ImageId>,
        params: SearchParams,
        rng: &mut R,
    ) -> Result<(Querier, Vec<NodeRequest>), Error> {
        let mut context = [0u8; 32];
        rng.fill_bytes(&mut context);
        Self::start_with_context(context, hash, candidates, params, rng)
    }

    /// [`start`](Self::start) under a context made earlier (a node server's, from the query
    /// id its Stage-1 lookups carried, the issue time and the candidates). It must never
    /// repeat: nodes answer a context once.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_context<R: RngCore + CryptoRng>(
        context: [u8; 32],
        hash: u64,
        candidates: Vec<ImageId>,
        params: SearchParams,
        rng: &mut R,
    ) -> Result<(Querier, Vec<NodeRequest>), Error> {
        if 2 * params.t >= params.n {
            return Err(obscura_sharing::Error::InvalidDegree {
                t: params.t,
                n: params.n,
            }
            .into());
        }
        let requests = share_hash(hash, params.t, params.n, rng)?
            .into_iter()
            .map(|query| NodeRequest {
                node: query.node,
                context,
                query,
                candidates: candidates.clone(),
                max_distance: params.max_distance,
            })
            .collect();
        Ok((Querier { params, candidates }, requests))
    }

    /// The querier of a query shared earlier (by [`share_hash`]), waiting for the answers
    /// about `candidates`: one part of the query's candidates, when it scans them in parts
    /// under one sharing.
    pub fn waiting(candidates: Vec<ImageId>, params: SearchParams) -> Querier {
        Querier { params, candidates }
    }

    /// Interpolate `(h, g)` for every candidate from the answers and rank the winners: `g = 0`,
    /// and then `h` is the distance.
    ///
    /// With more than `2t + 1` answers, every extra answer is checked to lie on the same
    /// degree-2t polynomials; with exactly `2t + 1` a wrong answer goes unseen.
    ///
    /// # Errors
    /// [`Error::NotEnoughAnswers`] naming the silent nodes, [`Error::MalformedAnswer`],
    /// [`Error::InconsistentAnswers`].
    pub fn finish(self, answers: Vec<NodeAnswer>) -> Result<Ranked, Error> {
        let SearchParams {
            n,
            t,
            max_distance,
            top,
        } = self.params;
        let need = 2 * t + 1;
        let mut seen = vec![false; n + 1];
        for a in &answers {
            let bad = |reason| Error::MalformedAnswer {
                node: a.node,
                reason,
            };
            if a.node == 0 || a.node as usize > n {
                return Err(bad("not a node of this cluster"));
            }
            if std::mem::replace(&mut seen[a.node as usize], true) {
                return Err(bad("answered twice"));
            }
            if a.values.len() != self.candidates.len() {
                return Err(bad("wrong number of values"));
            }
        }
        if answers.len() < need {
            return Err(Error::NotEnoughAnswers {
                need,
                got: answers.len(),
                n,
                t,
                missing: (1..=n as u8).filter(|&x| !seen[x as usize]).collect(),
            });
        }
        let (base, extra) = answers.split_at(need);
        let xs: Vec<u8> = base.iter().map(|a| a.node).collect();
        let lambda = lagrange_at_zero(&xs)?;
        // Answers beyond 2t + 1 must lie on the polynomials the first ones fix.
        let mus = extra
            .iter()
            .map(|a| lagrange_at(&xs, a.node))
            .collect::<Result<Vec<_>, _>>()?;
        let mut matches = Vec::new();
        let mut inconsistent = Vec::new();
        let (mut incomplete, mut beyond) = (0, 0);
        let mut points = Vec::with_capacity(need);
        for (c, &id) in self.candidates.iter().enumerate() {
            points.clear();
            points.extend(base.iter().map_while(|a| a.values[c]));
            if points.len() < need {
                incomplete += 1;
                continue;
            }
            let at = |weights: &[Fp]| {
                weights
                    .iter()
                    .zip(&points)
                    .fold([Fp::ZERO; 2], |[h, g], (&w, v)| {
                        [h + w * v[0], g + w * v[1]]
                    })
            };
            let [h, g] = at(&lambda);
            let consistent = extra
                .iter()
                .zip(&mus)
                .all(|(a, mu)| a.values[c].is_none_or(|v| at(mu) == v));
            // g = 0 with h beyond 64 is a candidate beyond τ whose r₂ was 0 (probability 1/p).
            if !consistent {
                inconsistent.push(id);
            } else if g != Fp::ZERO || h.value() > max_distance {
                beyond += 1;
            } else {
                matches.push(Match {
                    id,
                    distance: h.value(),
                });
            }
        }
        if !inconsistent.is_empty() {
            return Err(Error::InconsistentAnswers {
                candidates: inconsistent,
            });
        }
        matches.sort_by_key(|m| (m.distance, m.id));
        matches.truncate(top);
        Ok(Ranked {
            matches,
            candidates: self.candidates.len(),
            beyond,
            incomplete,
        })
    }
}
