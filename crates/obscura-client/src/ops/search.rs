//! A private search as a protocol apart from its transport.
//!
//! Each step is a value that says which node gets which request and how many good answers it
//! needs ([`Calls`]); the step is consumed by the nodes' answers and gives the next one, so a
//! step can be neither skipped nor taken twice:
//!
//! ```text
//! Lookup ──answers──▶ Checking ──answers──▶ Evaluating ──next──▶ Resolving ──answers──▶ Found
//!                                              ▲     │
//!                                              │     ▼ (two parts at a time)
//!                                         Waiting ◀── Part ──answers──▶ Part (next round)
//! ```
//!
//! - [`Lookup`]: Stage-1 at every node (band tokens, or every image with [`Scan::Exhaustive`](crate::Scan::Exhaustive));
//!   the candidates are the union of the handles that `2t + 1` nodes return.
//! - [`Checking`]: every node checks its share of the query hash against the querier's
//!   commitment to all the shares; nothing is evaluated for a query that is not a sharing of
//!   bits.
//! - [`Evaluating`] and [`Part`]: Stage-2 on shares, the candidate list in parts, each part in
//!   rounds of signed openings the client relays, until the nodes answer.
//! - [`Resolving`]: the matches' ids, which each node opens only for a proof of this user's own
//!   match.
//!
//! Nothing here does I/O, reads a clock or draws randomness of its own: the caller passes the
//! time and an rng. [`Client::search`](crate::Client::search) drives it over HTTPS; the tests
//! below drive it with answers of their own making.

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use obscura_auth::matching::{self, KeptAnswer};
use obscura_mpc::{share_hash, Match, NodeAnswer, Querier, SearchParams};
use obscura_proto::{limits, MatchProof, NodeBody, ResponseBody, ScanOf, WireCheck};
use obscura_sharing::field::Fp;
use obscura_sharing::manifest::{ImageId, SignedManifest};
use rand_core::{CryptoRng, RngCore};

use crate::fault::{Fault, NodeFailure};
use crate::Error;

pub use super::{Answer, Calls};

/// The cluster's shape and what the user asked.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// Nodes.
    pub n: usize,
    /// Degree of the hash sharing.
    pub t: usize,
    /// Largest distance reported.
    pub max_distance: u32,
    /// Most matches reported.
    pub top: usize,
}

impl Setting {
    fn need(&self) -> usize {
        2 * self.t + 1
    }

    fn checks_needed(&self) -> usize {
        obscura_mpc::check::checks_needed(self.n, self.t)
    }
}

/// Stage-1: asked of every node.
pub struct Lookup {
    setting: Setting,
    q: u64,
    query_id: [u8; 16],
    issued: u64,
}

impl Lookup {
    /// Stage-1 with band tokens: `batches[x - 1]` is node `x`'s batch of tokens under
    /// `key_version`. `now` is the time (Unix seconds) the query is issued at.
    pub fn stage1(
        setting: Setting,
        q: u64,
        key_version: u32,
        batches: Vec<Vec<[u8; 16]>>,
        now: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> (Lookup, Calls) {
        let lookup = Lookup::new(setting, q, now, rng);
        let calls = batches
            .into_iter()
            .zip(1..=setting.n as u8)
            .map(|(tokens, x)| {
                let body = NodeBody::Lookup {
                    key_version,
                    query: lookup.query_id,
                    issued: now,
                    tokens,
                };
                (x, body)
            })
            .collect();
        let calls = lookup.calls(calls);
        (lookup, calls)
    }

    /// Every stored image instead of Stage-1's candidates: no tokens and no lookup, every node
    /// lists its images.
    pub fn exhaustive(
        setting: Setting,
        q: u64,
        now: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> (Lookup, Calls) {
        let lookup = Lookup::new(setting, q, now, rng);
        let calls = (1..=setting.n as u8)
            .map(|x| {
                let body = NodeBody::List {
                    query: lookup.query_id,
                    issued: now,
                };
                (x, body)
            })
            .collect();
        let calls = lookup.calls(calls);
        (lookup, calls)
    }

    fn new(setting: Setting, q: u64, now: u64, rng: &mut (impl RngCore + CryptoRng)) -> Lookup {
        let mut query_id = [0u8; 16];
        rng.fill_bytes(&mut query_id);
        Lookup {
            setting,
            q,
            query_id,
            issued: now,
        }
    }

    fn calls(&self, calls: Vec<(u8, NodeBody)>) -> Calls {
        Calls {
            calls,
            quorum: self.setting.need(),
        }
    }

    /// The nodes' Stage-1 answers. Each node holds the same postings under its own keys,
    /// counts the bands itself and gives an image the same handle in this query, so the union
    /// makes a node that leaves some out change nothing. Stage-2 goes on with the nodes that
    /// answered; a node that failed or stalled here is not asked again.
    ///
    /// # Errors
    /// [`Error::Nodes`] when fewer nodes answered than Stage-2 needs; [`Error::Mpc`] if the
    /// query cannot be shared.
    pub fn answered(
        self,
        answers: Vec<Answer>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Checking, Calls), Error> {
        let Lookup {
            setting,
            q,
            query_id,
            issued,
        } = self;
        let mut candidates: Vec<ImageId> = Vec::new();
        let mut stage1_hits = 0;
        let (mut up, mut failures) = (Vec::new(), Vec::new());
        for (x, r) in answers {
            match r {
                Ok(ResponseBody::Lookup { handles, matched }) => {
                    up.push(x);
                    stage1_hits = stage1_hits.max(matched as usize);
                    candidates.extend(handles.iter().map(|h| ImageId(*h)));
                }
                Ok(ResponseBody::Listed { handles }) => {
                    up.push(x);
                    stage1_hits = stage1_hits.max(handles.len());
                    candidates.extend(handles.iter().map(|h| ImageId(*h)));
                }
                Ok(_) => failures.push(NodeFailure {
                    node: x,
                    fault: Fault::Unexpected("a lookup's candidates"),
                }),
                Err(fault) => failures.push(NodeFailure { node: x, fault }),
            }
        }
        if up.len() < setting.checks_needed() {
            return Err(Error::Nodes {
                what: "search (stage 1)",
                failures,
            });
        }
        // Sorted and each once: a million-image list from each of six nodes takes a sort, not
        // six million tree inserts.
        candidates.sort_unstable();
        candidates.dedup();
        let scan = matching::scan_of(&wire_ids(&candidates));
        let shares: Vec<Vec<u8>> = share_hash(q, setting.t, setting.n, rng)?
            .iter()
            .map(|s| s.to_bytes().to_vec())
            .collect();
        // The commitment to every node's share, fixed before any node opens anything.
        let share_digests: Vec<[u8; 32]> =
            shares.iter().map(|s| matching::share_digest(s)).collect();
        let calls = up
            .iter()
            .map(|&x| {
                let body = NodeBody::CheckQuery {
                    query_id,
                    issued,
                    query_share: shares[x as usize - 1].clone(),
                    scan,
                    share_digests: share_digests.clone(),
                };
                (x, body)
            })
            .collect();
        let checking = Checking {
            setting,
            candidates,
            stage1_hits,
            faults: failures,
            query: QueryParts {
                query_id,
                issued,
                scan,
                shares,
                share_digests,
                checks: Vec::new(),
            },
        };
        let quorum = setting.checks_needed();
        Ok((checking, Calls { calls, quorum }))
    }
}

/// What every part of one search's Stage-2 carries: the query, the list it scans, every node's
/// share and the nodes' checks of it.
struct QueryParts {
    query_id: [u8; 16],
    issued: u64,
    scan: ScanOf,
    shares: Vec<Vec<u8>>,
    share_digests: Vec<[u8; 32]>,
    checks: Vec<WireCheck>,
}

/// The nodes check their shares of the query.
pub struct Checking {
    setting: Setting,
    candidates: Vec<ImageId>,
    stage1_hits: usize,
    query: QueryParts,
    /// Nodes that failed so far, while enough others answered.
    faults: Vec<NodeFailure>,
}

impl Checking {
    /// Candidates Stage-1 passed on.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// The nodes' checks. Each node answers Stage-2 only with enough nodes' checks (every
    /// node at n = 2t + 1; one may be missing from a cluster with a node to spare).
    ///
    /// # Errors
    /// [`Error::Nodes`] with too few checks.
    pub fn answered(self, answers: Vec<Answer>) -> Result<Evaluating, Error> {
        let Checking {
            setting,
            candidates,
            stage1_hits,
            mut query,
            faults,
        } = self;
        let mut failures = faults;
        for (x, r) in answers {
            match r {
                Ok(ResponseBody::QueryChecked { check }) if check.node == x => {
                    query.checks.push(check)
                }
                Ok(_) => failures.push(NodeFailure {
                    node: x,
                    fault: Fault::Unexpected("a check of the query"),
                }),
                Err(fault) => failures.push(NodeFailure { node: x, fault }),
            }
        }
        if query.checks.len() < setting.checks_needed() {
            return Err(Error::Nodes {
                what: "search (checking the query)",
                failures,
            });
        }
        let members = query.checks.iter().map(|c| c.node).collect();
        Ok(Evaluating {
            setting,
            candidates,
            stage1_hits,
            faults: failures,
            query: Arc::new(query),
            members,
            next: 0,
            kept_by_part: Vec::new(),
            found: Vec::new(),
        })
    }
}

/// Stage-2, between parts: the candidate list is evaluated in parts of at most
/// [`limits::MAX_CANDIDATES`], two at a time, among the nodes still in. A node that fails or
/// stalls in a part leaves the search; it goes on while `2t + 1` stay.
pub struct Evaluating {
    setting: Setting,
    candidates: Vec<ImageId>,
    stage1_hits: usize,
    /// Nodes that failed so far, while enough others answered.
    faults: Vec<NodeFailure>,
    query: Arc<QueryParts>,
    members: Vec<u8>,
    /// The next part to start.
    next: u32,
    /// Each finished part's kept answers, by part.
    kept_by_part: Vec<Vec<KeptAnswer>>,
    /// Each match, with its part and its position there.
    found: Vec<(Match, u32, usize)>,
}

/// What comes after [`Evaluating`].
pub enum Stage2 {
    /// Parts to evaluate (each driven to its end), then [`Waiting::finish`].
    Parts(Waiting, Vec<(Part, Calls)>),
    /// Every part is done: resolve the matches.
    Resolve(Resolving),
}

/// Parts in flight.
pub struct Waiting {
    evaluating: Evaluating,
    parts: Vec<u32>,
}

impl Evaluating {
    fn parts(&self) -> usize {
        self.candidates.len().div_ceil(limits::MAX_CANDIDATES)
    }

    fn handles_of(&self, part: u32) -> Vec<[u8; 16]> {
        wire_ids(part_of(&self.candidates, part))
    }

    /// The next two parts (or the last one), or, when all are done, the resolution.
    pub fn next(self) -> Stage2 {
        let left = self.parts() - self.next as usize;
        if left == 0 {
            return Stage2::Resolve(self.resolving());
        }
        let parts: Vec<u32> = (self.next..self.next + left.min(2) as u32).collect();
        let started = parts
            .iter()
            .map(|&part| {
                Part::start(
                    self.setting,
                    self.query.clone(),
                    part,
                    self.handles_of(part),
                    &self.members,
                )
            })
            .collect();
        Stage2::Parts(
            Waiting {
                evaluating: Evaluating {
                    next: self.next + parts.len() as u32,
                    ..self
                },
                parts,
            },
            started,
        )
    }

    /// The top matches and everything tied with the last of them, as many as one resolution
    /// takes, each with the proof that opens it.
    fn resolving(self) -> Resolving {
        let Evaluating {
            setting,
            candidates,
            stage1_hits,
            query,
            kept_by_part,
            mut found,
            mut faults,
            ..
        } = self;
        faults.sort_by_key(|f| f.node);
        found.sort_by_key(|(m, ..)| (m.distance, m.id));
        if let Some(cut) = found
            .get(setting.top.saturating_sub(1))
            .map(|(m, ..)| m.distance)
        {
            found.retain(|(m, ..)| m.distance <= cut);
        }
        found.truncate(limits::MAX_PROOFS);
        let need = setting.need();
        let ranked: Vec<Match> = found.iter().map(|(m, ..)| *m).collect();
        let proofs: Vec<MatchProof> = found
            .iter()
            .map(|&(_, part, position)| {
                let kept = &kept_by_part[part as usize][..need];
                let handles = wire_ids(part_of(&candidates, part));
                matching::prove(query.query_id, query.issued, part, &handles, kept, position)
            })
            .collect();
        Resolving {
            setting,
            candidates: candidates.len(),
            stage1_hits,
            ranked,
            proofs,
            faults,
        }
    }
}

impl Waiting {
    /// The parts' outcomes, in the order [`Evaluating::next`] gave the parts.
    ///
    /// # Errors
    /// A part's own error, or [`Error::Mpc`] when its answers do not open.
    pub fn finish(self, done: Vec<PartDone>) -> Result<Evaluating, Error> {
        let Waiting {
            mut evaluating,
            parts,
        } = self;
        if done.len() != parts.len() || done.iter().zip(&parts).any(|(d, p)| d.part != *p) {
            return Err(Error::Internal("a search part finished out of order"));
        }
        for outcome in done {
            let part = outcome.part;
            evaluating
                .members
                .retain(|x| outcome.kept.iter().any(|k| k.node == *x));
            let candidates = part_of(&evaluating.candidates, part).to_vec();
            let params = SearchParams {
                n: evaluating.setting.n,
                t: evaluating.setting.t,
                max_distance: evaluating.setting.max_distance,
                // Every match within the distance limit comes back here: candidates are
                // handles, whose order says nothing, so ties are broken by image id only once
                // the ids are known.
                top: usize::MAX,
            };
            let querier = Querier::waiting(candidates, params);
            for m in querier.finish(outcome.answers)?.matches {
                let position = part_of(&evaluating.candidates, part)
                    .iter()
                    .position(|c| *c == m.id)
                    .expect("a match is a candidate of its part");
                evaluating.found.push((m, part, position));
            }
            evaluating.kept_by_part.push(outcome.kept);
            evaluating.faults.extend(outcome.failures);
        }
        Ok(evaluating)
    }
}

/// Part `part` of the candidate list: at most [`limits::MAX_CANDIDATES`] from position
/// `part ×` that many.
fn part_of(candidates: &[ImageId], part: u32) -> &[ImageId] {
    let start = part as usize * limits::MAX_CANDIDATES;
    let end = (start + limits::MAX_CANDIDATES).min(candidates.len());
    &candidates[start..end]
}

/// The handles the nodes know `candidates` by, as the wire carries them.
fn wire_ids(candidates: &[ImageId]) -> Vec<[u8; 16]> {
    candidates.iter().map(|c| c.0).collect()
}

/// One part of Stage-2 at the nodes still in: its evaluation, then rounds in which each node's
/// signed openings are relayed to every node still in, until they answer.
pub struct Part {
    setting: Setting,
    query: Arc<QueryParts>,
    part: u32,
    candidates: usize,
    /// The round whose openings are expected next.
    round: u8,
    failures: Vec<NodeFailure>,
}

/// What a part's answers lead to.
pub enum PartStep {
    /// Another round.
    Round(Part, Calls),
    /// The nodes answered.
    Done(PartDone),
}

/// A part's answers.
pub struct PartDone {
    part: u32,
    answers: Vec<NodeAnswer>,
    kept: Vec<KeptAnswer>,
    /// Nodes that failed the part while enough others answered.
    failures: Vec<NodeFailure>,
}

impl Part {
    fn start(
        setting: Setting,
        query: Arc<QueryParts>,
        part: u32,
        handles: Vec<[u8; 16]>,
        members: &[u8],
    ) -> (Part, Calls) {
        let calls = members
            .iter()
            .map(|&x| {
                let body = NodeBody::Evaluate {
                    query_id: query.query_id,
                    issued: query.issued,
                    query_share: query.shares[x as usize - 1].clone(),
                    scan: query.scan,
                    part,
                    candidates: handles.clone(),
                    share_digests: query.share_digests.clone(),
                    checks: query.checks.clone(),
                };
                (x, body)
            })
            .collect();
        let quorum = setting.need();
        let part = Part {
            setting,
            query,
            part,
            candidates: handles.len(),
            round: 0,
            failures: Vec::new(),
        };
        (part, Calls { calls, quorum })
    }

    /// The nodes' answers to the last calls: openings of the next round (relayed in another
    /// round), or, once every node has what it needs, their signed answers.
    ///
    /// # Errors
    /// [`Error::Nodes`] with fewer than `2t + 1` nodes left, or when some nodes answer while
    /// others go on opening and neither side is larger than `t` (nothing shows which is off the
    /// protocol).
    pub fn answered(mut self, answers: Vec<Answer>) -> Result<PartStep, Error> {
        let need = self.setting.need();
        let (mut openings, mut done, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        for (x, r) in answers {
            match r {
                Ok(ResponseBody::Opened { opened })
                    if opened.node == x && opened.round == self.round =>
                {
                    openings.push(opened)
                }
                Ok(ResponseBody::Evaluate {
                    node,
                    values,
                    answer_key,
                    signature,
                }) if self.round > 0 && node == x && values.len() == self.candidates => {
                    let Ok(signature) = <[u8; 64]>::try_from(signature.as_slice()) else {
                        self.failures.push(NodeFailure {
                            node: x,
                            fault: Fault::Unexpected("a signed answer"),
                        });
                        continue;
                    };
                    done.push(NodeAnswer {
                        node,
                        values: values
                            .iter()
                            .map(|v| v.map(|[h, g]| [Fp::new(h.into()), Fp::new(g.into())]))
                            .collect(),
                    });
                    kept.push(KeptAnswer {
                        node,
                        values,
                        answer_key,
                        signature,
                    });
                }
                Ok(_) => self.failures.push(NodeFailure {
                    node: x,
                    fault: Fault::Unexpected(if self.round == 0 {
                        "the first round of the evaluation"
                    } else {
                        "a round of the evaluation"
                    }),
                }),
                Err(fault) => self.failures.push(NodeFailure { node: x, fault }),
            }
        }
        if !done.is_empty() && !openings.is_empty() {
            // Honest nodes are given the same openings and keep one schedule of rounds, so they
            // all land on one side. With at most t nodes off the protocol, a side of more than t
            // holds an honest node: the other side is off it, and is named. Otherwise (both
            // sides of t or fewer, or both of more, which honest nodes configured alike cannot
            // make) nothing shows which side is, and nobody is named.
            let t = self.setting.t;
            match (done.len() > t, openings.len() > t) {
                (true, false) => {
                    self.failures
                        .extend(openings.drain(..).map(|o| NodeFailure {
                            node: o.node,
                            fault: Fault::Unexpected("an answer, like the other nodes'"),
                        }));
                }
                (false, true) => {
                    self.failures.extend(done.drain(..).map(|a| NodeFailure {
                        node: a.node,
                        fault: Fault::Unexpected(
                            "openings of the next round, like the other nodes'",
                        ),
                    }));
                    kept.clear();
                }
                _ => {
                    let mut failures = self.failures;
                    failures.extend(
                        done.iter()
                            .map(|a| a.node)
                            .chain(openings.iter().map(|o| o.node))
                            .map(|node| NodeFailure {
                                node,
                                fault: Fault::OutOfStep,
                            }),
                    );
                    failures.sort_by_key(|f| f.node);
                    return Err(Error::Nodes {
                        what: "search (evaluating)",
                        failures,
                    });
                }
            }
        }
        if !done.is_empty() {
            if done.len() < need {
                return Err(Error::Nodes {
                    what: "search (evaluating)",
                    failures: self.failures,
                });
            }
            return Ok(PartStep::Done(PartDone {
                part: self.part,
                answers: done,
                kept,
                failures: self.failures,
            }));
        }
        if openings.len() < need {
            return Err(Error::Nodes {
                what: "search (evaluating)",
                failures: self.failures,
            });
        }
        // Every opening in, not just 2t + 1: the nodes check the extra ones against the rest,
        // so one node that shifts its own is caught while all are up.
        let calls = openings
            .iter()
            .map(|o| {
                let body = NodeBody::Reduce {
                    query_id: self.query.query_id,
                    issued: self.query.issued,
                    part: self.part,
                    round: self.round,
                    openings: openings.clone(),
                };
                (o.node, body)
            })
            .collect();
        self.round = self.round.saturating_add(1);
        Ok(PartStep::Round(
            self,
            Calls {
                calls,
                quorum: need,
            },
        ))
    }
}

/// The matches' ids: each node opens what a proof of this user's own match names.
pub struct Resolving {
    setting: Setting,
    candidates: usize,
    stage1_hits: usize,
    faults: Vec<NodeFailure>,
    ranked: Vec<Match>,
    proofs: Vec<MatchProof>,
}

/// What a search found.
pub struct Found {
    /// The matches whose ids `t + 1` nodes confirmed, best first, at most `top`.
    pub matches: Vec<Match>,
    /// Matches whose ids fewer nodes confirmed.
    pub unresolved: usize,
    /// Each confirmed match's id and the proof that entitles this user to fetch it.
    pub proofs: Vec<(ImageId, MatchProof)>,
    /// Candidates Stage-1 passed to Stage-2.
    pub candidates: usize,
    /// Images matching in at least one band (the largest figure any node reported).
    pub stage1_hits: usize,
    /// Nodes that failed or answered wrongly on the way, while enough others answered.
    pub node_faults: Vec<NodeFailure>,
}

impl Resolving {
    /// The resolution's requests, to every node; none when nothing matched.
    pub fn calls(&self) -> Option<Calls> {
        if self.proofs.is_empty() {
            return None;
        }
        let calls = (1..=self.setting.n as u8)
            .map(|x| {
                let body = NodeBody::Resolve {
                    proofs: self.proofs.clone(),
                };
                (x, body)
            })
            .collect();
        Some(Calls {
            calls,
            quorum: usize::MAX,
        })
    }

    /// The nodes' answers (none when [`calls`](Self::calls) gave none). A match's id is that
    /// of an owner-signed manifest that at least `t + 1` nodes returned, so that `t` lying
    /// nodes cannot name another image.
    pub fn answered(self, answers: &[Answer], owner: &VerifyingKey) -> Found {
        let (mut matches, mut proofs, mut unresolved) = (Vec::new(), Vec::new(), 0);
        for (i, (m, proof)) in self.ranked.iter().zip(self.proofs).enumerate() {
            match agreed_image(answers, i, owner, self.setting.t) {
                Some(id) => {
                    proofs.push((id, proof));
                    matches.push(Match {
                        id,
                        distance: m.distance,
                    });
                }
                None => unresolved += 1,
            }
        }
        matches.sort_by_key(|m| (m.distance, m.id));
        matches.truncate(self.setting.top);
        Found {
            matches,
            unresolved,
            proofs,
            candidates: self.candidates,
            stage1_hits: self.stage1_hits,
            node_faults: self.faults,
        }
    }
}

/// The image the nodes' answers to a resolve name at position `i`: the id of an owner-signed
/// manifest that more than `t` nodes returned.
fn agreed_image(answers: &[Answer], i: usize, owner: &VerifyingKey, t: usize) -> Option<ImageId> {
    let mut votes: HashMap<ImageId, usize> = HashMap::new();
    for (_, r) in answers {
        let Ok(ResponseBody::Resolved { manifests }) = r else {
            continue;
        };
        let Some(Some(bytes)) = manifests.get(i) else {
            continue;
        };
        if let Ok(m) = SignedManifest::from_bytes(bytes).and_then(|m| m.verify(owner)) {
            *votes.entry(m.manifest().image_id).or_default() += 1;
        }
    }
    votes.into_iter().find(|&(_, n)| n > t).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use obscura_proto::WireOpened;
    use rand_core::OsRng;

    use super::*;
    use crate::Party;

    /// Five nodes, `t = 1`: Stage-2 needs 3, the query's check 4.
    const SETTING: Setting = Setting {
        n: 5,
        t: 1,
        max_distance: 10,
        top: 10,
    };
    const NOW: u64 = 1_790_000_000;

    fn listed(x: u8, handles: &[[u8; 16]]) -> Answer {
        let handles = handles.to_vec();
        (x, Ok(ResponseBody::Listed { handles }))
    }

    /// A check as node `x` would send it: the client only relays checks, the nodes verify them.
    fn checked(x: u8) -> Answer {
        let check = WireCheck {
            node: x,
            degree: Vec::new(),
            bits: Vec::new(),
            signature: vec![0; 64],
        };
        (x, Ok(ResponseBody::QueryChecked { check }))
    }

    fn opened(x: u8, round: u8) -> Answer {
        let opened = WireOpened {
            node: x,
            round,
            values: vec![Some(0)],
            signature: vec![0; 64],
        };
        (x, Ok(ResponseBody::Opened { opened }))
    }

    fn nodes(calls: &Calls) -> Vec<u8> {
        calls.calls.iter().map(|(x, _)| *x).collect()
    }

    fn failed(e: &Error) -> Vec<u8> {
        match e {
            Error::Nodes { failures, .. } => failures.iter().map(|f| f.node).collect(),
            other => panic!("{other}"),
        }
    }

    /// Stage-2 of a search whose every node listed `handles` and checked the query.
    fn evaluating(handles: &[[u8; 16]]) -> Evaluating {
        let (lookup, _) = Lookup::exhaustive(SETTING, 0xfeed, NOW, &mut OsRng);
        let listed = (1..=5).map(|x| listed(x, handles)).collect();
        let (checking, _) = lookup.answered(listed, &mut OsRng).unwrap();
        checking.answered((1..=5).map(checked).collect()).unwrap()
    }

    #[test]
    fn stage_one_with_too_few_nodes_fails_and_names_only_the_liar_a_culprit() {
        let (lookup, calls) = Lookup::exhaustive(SETTING, 0xfeed, NOW, &mut OsRng);
        assert_eq!(nodes(&calls), [1, 2, 3, 4, 5]);
        let err = lookup
            .answered(
                vec![
                    listed(1, &[]),
                    listed(2, &[]),
                    listed(3, &[]),
                    (4, Err(Fault::Unreachable)),
                    (5, Ok(ResponseBody::Ok)),
                ],
                &mut OsRng,
            )
            .err()
            .expect("three nodes cannot check a query that needs four");
        assert_eq!(failed(&err), [4, 5]);
        assert_eq!(err.culprits(), [Party::Node(5)]);
    }

    #[test]
    fn the_candidates_are_the_union_and_only_nodes_that_answered_are_asked_on() {
        let (lookup, _) = Lookup::exhaustive(SETTING, 0xfeed, NOW, &mut OsRng);
        let (checking, calls) = lookup
            .answered(
                vec![
                    listed(1, &[[1; 16]]),
                    listed(2, &[[2; 16], [1; 16]]),
                    listed(3, &[]),
                    listed(4, &[[1; 16]]),
                    (5, Err(Fault::Unreachable)),
                ],
                &mut OsRng,
            )
            .unwrap();
        // A node that leaves a candidate out changes nothing.
        assert_eq!(checking.candidates(), 2);
        assert_eq!(nodes(&calls), [1, 2, 3, 4]);
        // Each node its own share, every node the same commitment to all of them.
        let (mut shares, mut digests) = (Vec::new(), Vec::new());
        for (_, body) in &calls.calls {
            let NodeBody::CheckQuery {
                query_share,
                share_digests,
                ..
            } = body
            else {
                panic!("a check of the query")
            };
            shares.push(query_share.clone());
            digests.push(share_digests.clone());
        }
        shares.dedup();
        digests.dedup();
        assert_eq!((shares.len(), digests.len()), (4, 1));
        assert_eq!(digests[0].len(), 5);
        // Too few checks: Stage-2 never starts.
        let err = checking
            .answered(vec![checked(1), checked(2), checked(3)])
            .err()
            .expect("three checks of four needed");
        assert!(matches!(err, Error::Nodes { .. }), "{err}");
    }

    #[test]
    fn a_part_takes_only_the_openings_of_the_round_it_waits_for() {
        let Stage2::Parts(_, mut parts) = evaluating(&[[1; 16]]).next() else {
            panic!("one part to evaluate")
        };
        let (part, calls) = parts.remove(0);
        assert_eq!((nodes(&calls), calls.quorum), (vec![1, 2, 3, 4, 5], 3));
        // Round 0 is awaited: openings of round 1 (replayed from another query's later round,
        // or a node running ahead) are refused, and two good ones are too few.
        let refused = part.answered(vec![opened(1, 0), opened(2, 0), opened(3, 1), opened(4, 1)]);
        let Err(err) = refused else {
            panic!("two openings of round 0 are too few")
        };
        assert_eq!(failed(&err), [3, 4]);
        assert_eq!(err.culprits(), [Party::Node(3), Party::Node(4)]);

        // With enough, every opening is relayed to every node that sent one, in round 0.
        let Stage2::Parts(_, mut parts) = evaluating(&[[1; 16]]).next() else {
            panic!("one part to evaluate")
        };
        let (part, _) = parts.remove(0);
        let step = part.answered(vec![
            opened(1, 0),
            opened(2, 0),
            opened(3, 0),
            (4, Err(Fault::Slow(std::time::Duration::from_secs(1)))),
        ]);
        let Ok(PartStep::Round(part, calls)) = step else {
            panic!("another round")
        };
        assert_eq!(nodes(&calls), [1, 2, 3]);
        for (_, body) in &calls.calls {
            let NodeBody::Reduce {
                round, openings, ..
            } = body
            else {
                panic!("a round")
            };
            assert_eq!((*round, openings.len()), (0, 3));
        }
        // The next answers must be of round 1, or the nodes' signed answers.
        let Err(err) = part.answered(vec![opened(1, 0), opened(2, 0), opened(3, 0)]) else {
            panic!("round 0 again is refused")
        };
        assert_eq!(failed(&err), [4, 1, 2, 3]);
    }

    /// A part at round 1 of a search whose five nodes all opened round 0.
    fn at_round_one() -> Part {
        let Stage2::Parts(_, mut parts) = evaluating(&[[1; 16]]).next() else {
            panic!("one part to evaluate")
        };
        let (part, _) = parts.remove(0);
        match part.answered((1..=5).map(|x| opened(x, 0)).collect()) {
            Ok(PartStep::Round(part, _)) => part,
            _ => panic!("another round"),
        }
    }

    fn early(x: u8) -> Answer {
        let answer = ResponseBody::Evaluate {
            node: x,
            values: vec![Some([0, 0])],
            answer_key: [0; 32],
            signature: vec![0; 64],
        };
        (x, Ok(answer))
    }

    #[test]
    fn a_node_out_of_step_with_more_than_t_others_is_named_and_the_rest_go_on() {
        // Node 1 sends a well-formed signed answer while four others go on opening: with at
        // most t = 1 node off the protocol, the four hold an honest one, so node 1 is the one.
        let mut answers = vec![early(1)];
        answers.extend((2..=5).map(|x| opened(x, 1)));
        let Ok(PartStep::Round(part, calls)) = at_round_one().answered(answers) else {
            panic!("the four go on")
        };
        assert_eq!(nodes(&calls), [2, 3, 4, 5]);
        // Its name stays with the part's failures: a later failure of the part reports it.
        let Err(err) = part.answered(vec![(2, Err(Fault::Unreachable))]) else {
            panic!("one node left")
        };
        assert_eq!(err.culprits(), [Party::Node(1)], "{err}");

        // And when the four answer, the part is done, with node 1 among its faults for the
        // search to report.
        let mut answers = vec![early(1)];
        answers.extend((2..=5).map(|x| opened(x, 1)));
        let Ok(PartStep::Round(part, _)) = at_round_one().answered(answers) else {
            panic!("the four go on")
        };
        let Ok(PartStep::Done(done)) = part.answered((2..=5).map(early).collect()) else {
            panic!("the four answer")
        };
        assert_eq!(done.answers.len(), 4);
        let named: Vec<(u8, bool)> = done
            .failures
            .iter()
            .map(|f| (f.node, f.fault.is_misbehaviour()))
            .collect();
        assert_eq!(named, [(1, true)]);
    }

    #[test]
    fn nodes_out_of_step_with_no_side_larger_than_t_get_nobody_named() {
        // One answers, one opens, three are down: either could be the honest one.
        let answers = vec![
            early(1),
            opened(2, 1),
            (3, Err(Fault::Unreachable)),
            (4, Err(Fault::Unreachable)),
            (5, Err(Fault::Unreachable)),
        ];
        let Err(err) = at_round_one().answered(answers) else {
            panic!("answers out of step end the search")
        };
        assert_eq!(failed(&err), [1, 2, 3, 4, 5]);
        assert_eq!(err.culprits(), []);
    }

    #[test]
    fn nothing_to_evaluate_needs_no_resolution() {
        let Stage2::Resolve(resolving) = evaluating(&[]).next() else {
            panic!("no part to evaluate")
        };
        assert!(resolving.calls().is_none());
        let owner = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let found = resolving.answered(&[], &owner);
        assert_eq!((found.matches.len(), found.unresolved), (0, 0));
    }
}
