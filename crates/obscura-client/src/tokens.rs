//! Where band tokens come from: HMAC keys the client holds, or the keepers' threshold VOPRF.
//!
//! With keepers, the client blinds each input (`"obscura/band/v1" ‖ node ‖ band ‖ value`)
//! additively ([`AdditiveBatch`]: keepers evaluate and prove exactly as RFC 9497 says), sends
//! the blinded elements of every node key in one request to `T` keepers, checks each keeper's
//! batched DLEQ proof against that keeper's public share of each key, combines `T` verified
//! answers with Lagrange coefficients in the exponent and unblinds. A keeper that does not
//! answer, or whose proof fails, is named and replaced by the next one, while keepers remain.

use obscura_keeper::oprf::{self, Evaluation, Proof};
use obscura_keeper::threshold::{AdditiveBatch, PublicKey, Verified};
use obscura_keeper::RistrettoPoint;
use obscura_proto::{KeeperBatch, KeeperBody, ResponseBody};
use obscura_tokens::{voprf_input, voprf_token, BatchPlan, NodeTokenKeys, Token, BANDS};
use rand_core::{OsRng, RngCore};

pub use crate::fault::KeeperFailure;
use crate::fault::{self, Fault, PerKeeper};
use crate::session::KeeperLink;

/// Why tokens could not be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Fewer than `need` keepers answered with evaluations that verify.
    #[error("band tokens: need {need} keepers, {got} answered correctly: {}", list(.failures))]
    Keepers {
        /// Keepers needed.
        need: usize,
        /// Keepers whose answers verified.
        got: usize,
        /// Every keeper that failed, and why.
        failures: Vec<KeeperFailure>,
    },
    /// The configuration's public key shares are for another number of nodes.
    #[error("band tokens: public key shares for {got} nodes, the cluster has {nodes}")]
    PublicShares {
        /// Nodes the shares are for.
        got: usize,
        /// Nodes in the cluster.
        nodes: usize,
    },
    /// Node `node`'s public key shares lie on no one polynomial: a bad configuration, or a
    /// dealer that published inconsistent shares.
    #[error("band tokens: node {node}'s key: {error}")]
    NodeKey {
        /// The node.
        node: u8,
        /// What the check found.
        error: obscura_keeper::Error,
    },
    /// Blinding the inputs, or combining verified evaluations, failed.
    #[error("band tokens: {0}")]
    Evaluation(obscura_keeper::Error),
    /// A task of this client ended without a result.
    #[error("band tokens: this client's task failed")]
    Panicked,
}

impl TokenError {
    /// The keepers whose answers proved them wrong (see [`Fault::is_misbehaviour`]).
    pub fn culprits(&self) -> Vec<obscura_cluster::tls::Party> {
        match self {
            TokenError::Keepers { failures, .. } => fault::culprit_keepers(failures),
            _ => Vec::new(),
        }
    }
}

fn list(failures: &[KeeperFailure]) -> String {
    if failures.is_empty() {
        return "no keeper failed".into();
    }
    fault::list_keepers(failures)
}

/// What a client needs to obtain tokens from keepers.
#[derive(Clone, Debug)]
pub struct KeeperParts {
    /// Base URL of keeper `j + 1`.
    pub urls: Vec<String>,
    /// Keepers needed to evaluate.
    pub threshold: usize,
    /// `public_shares[x - 1][j - 1]`: keeper `j`'s public share of node `x`'s key.
    pub public_shares: Vec<Vec<RistrettoPoint>>,
}

/// Where tokens come from.
pub enum TokenParts {
    /// HMAC keys derived from a root the client holds.
    Hmac(obscura_tokens::TokenRoot),
    /// The keepers' threshold VOPRF; the client holds no key.
    Voprf(KeeperParts),
}

/// The tokens (and, with VOPRF, elements) of one image at one node.
pub struct IndexTokens {
    /// Band order.
    pub tokens: [Token; BANDS],
    /// The elements the tokens hash, with VOPRF.
    pub elements: Option<[[u8; 32]; BANDS]>,
}

pub(crate) enum Source {
    Hmac(Vec<NodeTokenKeys>),
    Voprf(KeeperParts, std::sync::Arc<Vec<PublicKey>>),
}

/// Tokens plus any keeper that failed on the way.
pub(crate) struct Obtained<T> {
    pub value: T,
    pub faults: Vec<KeeperFailure>,
    /// Request bytes sent to keepers.
    pub sent: u64,
    /// Response bytes received from keepers.
    pub received: u64,
}

impl<T> Obtained<T> {
    fn local(value: T) -> Self {
        Obtained {
            value,
            faults: Vec::new(),
            sent: 0,
            received: 0,
        }
    }

    fn map<U>(self, value: U) -> Obtained<U> {
        Obtained {
            value,
            faults: self.faults,
            sent: self.sent,
            received: self.received,
        }
    }
}

impl Source {
    /// # Errors
    /// With keepers: fewer key entries than nodes, or public shares that do not lie on one
    /// polynomial (a bad configuration, or a dealer that published inconsistent shares).
    pub(crate) fn new(parts: TokenParts, nodes: usize, version: u32) -> Result<Source, TokenError> {
        match parts {
            TokenParts::Hmac(root) => Ok(Source::Hmac(
                (1..=nodes as u8)
                    .map(|x| NodeTokenKeys::derive(&root, x, version))
                    .collect(),
            )),
            TokenParts::Voprf(k) => {
                if k.public_shares.len() != nodes {
                    return Err(TokenError::PublicShares {
                        got: k.public_shares.len(),
                        nodes,
                    });
                }
                let keys = k
                    .public_shares
                    .iter()
                    .enumerate()
                    .map(|(x, shares)| {
                        PublicKey::from_shares(shares, k.threshold).map_err(|error| {
                            TokenError::NodeKey {
                                node: x as u8 + 1,
                                error,
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Source::Voprf(k, std::sync::Arc::new(keys)))
            }
        }
    }

    pub(crate) fn keeper_urls(&self) -> &[String] {
        match self {
            Source::Hmac(_) => &[],
            Source::Voprf(k, _) => &k.urls,
        }
    }

    /// With keepers: their parts (URLs, threshold, public shares of the current version).
    pub(crate) fn keepers(&self) -> Option<&KeeperParts> {
        match self {
            Source::Hmac(_) => None,
            Source::Voprf(k, _) => Some(k),
        }
    }

    pub(crate) fn is_voprf(&self) -> bool {
        matches!(self, Source::Voprf(..))
    }

    /// `index[i][x - 1]`: image `i`'s tokens at node `x`.
    pub(crate) async fn index(
        &self,
        link: &KeeperLink,
        version: u32,
        nodes: usize,
        hashes: &[u64],
    ) -> Result<Obtained<Vec<Vec<IndexTokens>>>, TokenError> {
        match self {
            Source::Hmac(keys) => Ok(Obtained::local(
                hashes
                    .iter()
                    .map(|&h| {
                        keys.iter()
                            .map(|k| IndexTokens {
                                tokens: k.index_tokens(h),
                                elements: None,
                            })
                            .collect()
                    })
                    .collect(),
            )),
            Source::Voprf(keepers, keys) => {
                let probes: Vec<(u8, u8)> = hashes
                    .iter()
                    .flat_map(|h| obscura_tokens::bands(*h).into_iter().enumerate())
                    .map(|(band, value)| (band as u8, value))
                    .collect();
                let got = keepers
                    .evaluate(link, keys, version, nodes, &probes)
                    .await?;
                let mut out: Vec<Vec<IndexTokens>> = (0..hashes.len())
                    .map(|_| Vec::with_capacity(nodes))
                    .collect();
                for per_node in &got.value {
                    for (image, chunk) in per_node.chunks(BANDS).enumerate() {
                        let elements: [[u8; 32]; BANDS] =
                            std::array::from_fn(|b| oprf::serialize(&chunk[b]));
                        out[image].push(IndexTokens {
                            tokens: elements.map(|e| voprf_token(&e)),
                            elements: Some(elements),
                        });
                    }
                }
                Ok(got.map(out))
            }
        }
    }

    /// `batches[x - 1]`: the padded, shuffled lookup batch for node `x`.
    pub(crate) async fn query(
        &self,
        link: &KeeperLink,
        version: u32,
        nodes: usize,
        plan: &BatchPlan,
        hash: u64,
    ) -> Result<Obtained<Vec<Vec<Token>>>, TokenError> {
        let mut rng = obscura_sharing::rng::AesCtrRng::from_os();
        match self {
            Source::Hmac(keys) => Ok(Obtained::local(
                keys.iter()
                    .map(|k| plan.query_tokens(k, hash, &mut rng))
                    .collect(),
            )),
            Source::Voprf(keepers, keys) => {
                let got = keepers
                    .evaluate(link, keys, version, nodes, &plan.probes(hash))
                    .await?;
                let value = got
                    .value
                    .iter()
                    .map(|elements| {
                        let real: Vec<Token> = elements
                            .iter()
                            .map(|e| voprf_token(&oprf::serialize(e)))
                            .collect();
                        plan.assemble(&real, &mut rng)
                    })
                    .collect();
                Ok(got.map(value))
            }
        }
    }
}

impl KeeperParts {
    /// `k_x · HashToGroup(input(x, band, value))` for every probe and every node `x`:
    /// `out[x - 1][i]` for `probes[i]`.
    async fn evaluate(
        &self,
        link: &KeeperLink,
        keys: &std::sync::Arc<Vec<PublicKey>>,
        version: u32,
        nodes: usize,
        probes: &[(u8, u8)],
    ) -> Result<Obtained<Vec<Vec<RistrettoPoint>>>, TokenError> {
        let m = self.urls.len();
        let need = self.threshold;
        // Blinding is a scalar multiplication per input: off the async workers, a task per node
        // so that every core takes part.
        let probes = std::sync::Arc::new(probes.to_vec());
        let mut blinding = Vec::with_capacity(nodes);
        for x in 1..=nodes as u8 {
            let probes = probes.clone();
            blinding.push(tokio::task::spawn_blocking(move || {
                let inputs: Vec<_> = probes
                    .iter()
                    .map(|&(band, value)| voprf_input(x, band, value))
                    .collect();
                let refs: Vec<&[u8]> = inputs.iter().map(|i| i.as_slice()).collect();
                AdditiveBatch::new(&refs, &mut OsRng)
            }));
        }
        let mut batches = Vec::with_capacity(nodes);
        for task in blinding {
            let batch = task.await.map_err(|_| TokenError::Panicked)?;
            batches.push(batch.map_err(TokenError::Evaluation)?);
        }
        let batches = std::sync::Arc::new(batches);
        let body = KeeperBody::KeeperEvaluate {
            version,
            batches: batches
                .iter()
                .enumerate()
                .map(|(i, b)| KeeperBatch {
                    node: i as u8 + 1,
                    elements: b.to_send().to_vec(),
                })
                .collect(),
        };

        // Start at a random keeper so that load spreads; ask `need` at a time, and one more for
        // each that fails.
        let start = (OsRng.next_u32() as usize) % m.max(1);
        let mut untried: Vec<u8> = (0..m).map(|i| ((start + i) % m) as u8 + 1).collect();
        untried.reverse();
        let mut verified: Vec<(u8, Vec<Verified>)> = Vec::new();
        let mut faults: Vec<KeeperFailure> = Vec::new();
        let (mut sent, mut received) = (0, 0);
        let mut witnessed = false;
        while verified.len() < need {
            let failed_proofs = faults.iter().filter(|f| f.fault.is_misbehaviour()).count();
            // Asking keepers that cannot make up the threshold would only spend their budget,
            // but for one thing: when two or more proofs failed and none verified, the rest are
            // asked as witnesses. One proof of theirs that verifies shows this client's public
            // shares are right, and the failed ones lies; none, and it is the shares that are
            // in doubt.
            let ask: Vec<u8> = if verified.len() + untried.len() >= need {
                (0..need - verified.len())
                    .filter_map(|_| untried.pop())
                    .collect()
            } else if verified.is_empty() && failed_proofs >= 2 && !witnessed {
                witnessed = true;
                std::mem::take(&mut untried)
            } else {
                Vec::new()
            };
            if ask.is_empty() {
                if verified.is_empty() {
                    fault::doubt(faults.iter_mut().map(|f| &mut f.fault));
                }
                return Err(TokenError::Keepers {
                    need,
                    got: verified.len(),
                    failures: faults,
                });
            }
            let mut set = PerKeeper::new();
            for j in ask {
                let (link, body) = (link.clone(), body.clone());
                let batches = batches.clone();
                let public: Vec<RistrettoPoint> = self
                    .public_shares
                    .iter()
                    .map(|p| p[j as usize - 1])
                    .collect();
                set.spawn(j, async move {
                    let (answer, sent, received) = link.post(j, body).await;
                    let checked = match answer {
                        Ok(ResponseBody::KeeperEvaluated {
                            keeper,
                            batches: got,
                        }) if keeper == j => {
                            // Proof checks are multiscalar multiplications: off the async workers.
                            tokio::task::spawn_blocking(move || check(j, &batches, &public, got))
                                .await
                                .unwrap_or(Err(Fault::Panicked))
                        }
                        Ok(ResponseBody::KeeperEvaluated { keeper, .. }) => {
                            Err(Fault::AnsweredAs(keeper))
                        }
                        Ok(_) => Err(Fault::Unexpected("an evaluation")),
                        Err(e) => Err(e),
                    };
                    Ok((checked, sent, received))
                });
            }
            while let Some((j, done)) = set.next().await {
                let checked = match done {
                    Ok((checked, s, r)) => {
                        sent += s;
                        received += r;
                        checked
                    }
                    Err(fault) => Err(fault),
                };
                match checked {
                    Ok(v) => verified.push((j, v)),
                    Err(fault) => faults.push(KeeperFailure { keeper: j, fault }),
                }
            }
        }
        verified.truncate(need);
        faults.sort_by_key(|f| f.keeper);
        // Regroup by node: by_node[x - 1] holds each keeper's verified batch for node x.
        let mut by_node: Vec<Vec<Verified>> = (0..nodes).map(|_| Vec::new()).collect();
        for (_, per_node) in verified {
            for (x, v) in per_node.into_iter().enumerate() {
                by_node[x].push(v);
            }
        }
        // Combining and unblinding: a task per node again.
        let mut finishing = Vec::with_capacity(nodes);
        for (x, answers) in by_node.into_iter().enumerate() {
            let (batches, keys) = (batches.clone(), keys.clone());
            finishing.push(tokio::task::spawn_blocking(move || {
                batches[x].finish(&answers, need, &keys[x])
            }));
        }
        let mut value = Vec::with_capacity(nodes);
        for task in finishing {
            let done = task.await.map_err(|_| TokenError::Panicked)?;
            value.push(done.map_err(TokenError::Evaluation)?);
        }
        Ok(Obtained {
            value,
            faults,
            sent,
            received,
        })
    }
}

/// Check keeper `j`'s answer for every node batch; any failure refuses the whole answer.
fn check(
    j: u8,
    batches: &[AdditiveBatch],
    public: &[RistrettoPoint],
    got: Vec<obscura_proto::KeeperEvaluation>,
) -> Result<Vec<Verified>, Fault> {
    if got.len() != batches.len() {
        return Err(Fault::Unexpected("one evaluation per node key"));
    }
    batches
        .iter()
        .zip(public)
        .zip(got)
        .enumerate()
        .map(|(i, ((batch, pk), ev))| {
            let bad = |error| Fault::BadEvaluation {
                node: i as u8 + 1,
                error,
            };
            let proof: [u8; 64] = ev
                .proof
                .as_slice()
                .try_into()
                .map_err(|_| bad(obscura_keeper::Error::Proof))?;
            let answer = Evaluation {
                elements: ev.elements,
                proof: Proof::from_bytes(&proof).map_err(bad)?,
            };
            batch.verify(j, pk, &answer).map_err(|e| match e {
                obscura_keeper::Error::Keeper { reason, .. } => bad(*reason),
                other => bad(other),
            })
        })
        .collect()
}
