//! Where band tokens come from: HMAC keys the client holds, or the keepers' threshold VOPRF.
//!
//! With keepers, the client blinds each input (`"obscura/band/v2" ‖ band ‖ value`) once, not once
//! per node, and additively ([`AdditiveBatch`]: keepers evaluate and prove exactly as RFC 9497 says), sends
//! the blinded elements in one request to `T` keepers, checks each keeper's batched DLEQ proof
//! against that keeper's public share of the cluster's token key, combines `T` verified answers
//! with Lagrange coefficients in the exponent and unblinds. Each node's token is then derived
//! from the one element (`SHA-256(domain ‖ node ‖ E)`), so a search costs one evaluation per
//! probe whatever the number of nodes. A keeper that does not answer, or whose proof fails, is
//! named and replaced by the next one, while keepers remain.

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
    /// The configuration holds public key shares of `got` keys, where a cluster has one token
    /// key per version: a cluster made when each node had its own key, to be made again.
    #[error(
        "band tokens: client.json holds public shares of {got} token keys; this version uses \
         one cluster key (a cluster made by an older version: make it again with cluster init)"
    )]
    PublicShares {
        /// Keys the shares are for.
        got: usize,
    },
    /// The cluster key's public shares lie on no one polynomial: a bad configuration, or a
    /// dealer that published inconsistent shares.
    #[error("band tokens: the cluster key: {0}")]
    ClusterKey(obscura_keeper::Error),
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
    /// `public_shares[0][j - 1]`: keeper `j`'s public share of the cluster's token key (one
    /// key, so one row; the key-management messages name it as key 1).
    pub public_shares: Vec<Vec<RistrettoPoint>>,
}

/// How the keepers' messages name the cluster's token key (once one key per node).
pub const CLUSTER_KEY: u8 = 1;

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
    /// The elements the tokens hash, with VOPRF (the same at every node).
    pub elements: Option<[[u8; 32]; BANDS]>,
}

pub(crate) enum Source {
    Hmac(Vec<NodeTokenKeys>),
    Voprf(KeeperParts, std::sync::Arc<PublicKey>),
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
    /// With keepers: public shares of other than one key, or shares that do not lie on one
    /// polynomial (a bad configuration, or a dealer that published inconsistent shares).
    pub(crate) fn new(parts: TokenParts, nodes: usize, version: u32) -> Result<Source, TokenError> {
        match parts {
            TokenParts::Hmac(root) => Ok(Source::Hmac(
                (1..=nodes as u8)
                    .map(|x| NodeTokenKeys::derive(&root, x, version))
                    .collect(),
            )),
            TokenParts::Voprf(k) => {
                let [shares] = k.public_shares.as_slice() else {
                    return Err(TokenError::PublicShares {
                        got: k.public_shares.len(),
                    });
                };
                if shares.len() != k.urls.len() {
                    return Err(TokenError::ClusterKey(obscura_keeper::Error::Keepers(
                        format!(
                            "{} public shares for {} keepers",
                            shares.len(),
                            k.urls.len()
                        ),
                    )));
                }
                let key =
                    PublicKey::from_shares(shares, k.threshold).map_err(TokenError::ClusterKey)?;
                Ok(Source::Voprf(k, std::sync::Arc::new(key)))
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
            Source::Voprf(keepers, key) => {
                let probes: Vec<(u8, u8)> = hashes
                    .iter()
                    .flat_map(|h| obscura_tokens::bands(*h).into_iter().enumerate())
                    .map(|(band, value)| (band as u8, value))
                    .collect();
                let got = keepers.evaluate(link, key, version, &probes).await?;
                let out = got
                    .value
                    .chunks(BANDS)
                    .map(|chunk| {
                        let elements: [[u8; 32]; BANDS] =
                            std::array::from_fn(|b| oprf::serialize(&chunk[b]));
                        (1..=nodes as u8)
                            .map(|x| IndexTokens {
                                tokens: elements.map(|e| voprf_token(x, &e)),
                                elements: Some(elements),
                            })
                            .collect()
                    })
                    .collect();
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
            Source::Voprf(keepers, key) => {
                let got = keepers
                    .evaluate(link, key, version, &plan.probes(hash))
                    .await?;
                let elements: Vec<[u8; 32]> = got.value.iter().map(oprf::serialize).collect();
                let value = (1..=nodes as u8)
                    .map(|x| {
                        let real: Vec<Token> = elements.iter().map(|e| voprf_token(x, e)).collect();
                        plan.assemble(&real, &mut rng)
                    })
                    .collect();
                Ok(got.map(value))
            }
        }
    }
}

impl KeeperParts {
    /// `k · HashToGroup(input(band, value))` under the cluster key, for every probe: `out[i]`
    /// for `probes[i]`.
    async fn evaluate(
        &self,
        link: &KeeperLink,
        key: &std::sync::Arc<PublicKey>,
        version: u32,
        probes: &[(u8, u8)],
    ) -> Result<Obtained<Vec<RistrettoPoint>>, TokenError> {
        let m = self.urls.len();
        let need = self.threshold;
        // Blinding is a hash to the group and a scalar multiplication per input: off the async
        // workers.
        let probes = probes.to_vec();
        let batch = tokio::task::spawn_blocking(move || {
            let inputs: Vec<_> = probes
                .iter()
                .map(|&(band, value)| voprf_input(band, value))
                .collect();
            let refs: Vec<&[u8]> = inputs.iter().map(|i| i.as_slice()).collect();
            AdditiveBatch::new(&refs, &mut OsRng)
        })
        .await
        .map_err(|_| TokenError::Panicked)?
        .map_err(TokenError::Evaluation)?;
        let batch = std::sync::Arc::new(batch);
        let body = KeeperBody::KeeperEvaluate {
            version,
            batches: vec![KeeperBatch {
                node: CLUSTER_KEY,
                elements: batch.to_send().to_vec(),
            }],
        };

        // Start at a random keeper so that load spreads; ask `need` at a time, and one more for
        // each that fails.
        let start = (OsRng.next_u32() as usize) % m.max(1);
        let mut untried: Vec<u8> = (0..m).map(|i| ((start + i) % m) as u8 + 1).collect();
        untried.reverse();
        let mut verified: Vec<(u8, Verified)> = Vec::new();
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
                let batch = batch.clone();
                let public = self.public_shares[0][j as usize - 1];
                set.spawn(j, async move {
                    let (answer, sent, received) = link.post(j, body).await;
                    let checked = match answer {
                        Ok(ResponseBody::KeeperEvaluated {
                            keeper,
                            batches: got,
                        }) if keeper == j => {
                            // Proof checks are multiscalar multiplications: off the async workers.
                            tokio::task::spawn_blocking(move || check(j, &batch, &public, got))
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
        // Combining and unblinding: a scalar multiplication per element, off the async workers.
        let answers: Vec<Verified> = verified.into_iter().map(|(_, v)| v).collect();
        let key = key.clone();
        let value = tokio::task::spawn_blocking(move || batch.finish(&answers, need, &key))
            .await
            .map_err(|_| TokenError::Panicked)?
            .map_err(TokenError::Evaluation)?;
        Ok(Obtained {
            value,
            faults,
            sent,
            received,
        })
    }
}

/// Check keeper `j`'s answer: one evaluation, of the cluster key, proven against its public
/// share.
fn check(
    j: u8,
    batch: &AdditiveBatch,
    public: &RistrettoPoint,
    got: Vec<obscura_proto::KeeperEvaluation>,
) -> Result<Verified, Fault> {
    let [ev] = <[_; 1]>::try_from(got)
        .map_err(|_| Fault::Unexpected("one evaluation, of the cluster key"))?;
    let bad = |error| Fault::BadEvaluation { error };
    let proof: [u8; 64] = ev
        .proof
        .as_slice()
        .try_into()
        .map_err(|_| bad(obscura_keeper::Error::Proof))?;
    let answer = Evaluation {
        elements: ev.elements,
        proof: Proof::from_bytes(&proof).map_err(bad)?,
    };
    batch.verify(j, public, &answer).map_err(|e| match e {
        obscura_keeper::Error::Keeper { reason, .. } => bad(*reason),
        other => bad(other),
    })
}
