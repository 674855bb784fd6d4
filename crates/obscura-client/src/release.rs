//! Releasing a secret to an attested worker (the key-broker pattern): each keeper gives a
//! challenge, the worker answers it with evidence binding its HPKE key, the keeper appraises the
//! evidence under the secret's release policy and returns its share sealed to that key, and the
//! client hands the sealed shares to the worker, which alone can open them and rebuild the
//! secret. The client never sees the secret, nor does any single keeper hold it.
//!
//! The worker speaks JSON over HTTP ([`EvidenceRequest`], [`Delivery`]): what it answers is
//! either self-authenticating (evidence) or sealed to it (shares), so it needs no TLS of its own.

use obscura_proto::{KeeperBody, ResponseBody};
use serde::{Deserialize, Serialize};

use obscura_tokens::keyfile::to_hex;

use crate::fault::{keeper_failures, Fault, KeeperFailure};
use crate::{Client, Error};

/// What a worker is asked for: evidence binding its key, this context and this nonce.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvidenceRequest {
    /// The verifier's challenge (hex).
    pub nonce: String,
    /// The context the verifier binds (hex): a release's names keeper and secret.
    pub context: String,
}

/// A worker's evidence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvidenceAnswer {
    /// Its HPKE public key (hex).
    pub party_key: String,
    /// Its evidence.
    pub evidence: obscura_attest::Evidence,
}

/// One keeper's share, sealed to the worker, with the keeper's signature over the release.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealedShare {
    /// The keeper.
    pub keeper: u8,
    /// The challenge the keeper gave, which the worker answered (hex).
    pub nonce: String,
    /// The sealed share.
    pub sealed: obscura_attest::seal::Sealed,
    /// The keeper's audit-key signature over
    /// [`release_statement`](obscura_attest::binding::release_statement) (hex).
    pub signature: String,
}

/// The shares of a secret, handed to the worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// The secret's id (hex).
    pub secret: String,
    /// Shares needed to rebuild it.
    pub threshold: usize,
    /// The sealed shares, at least `threshold`.
    pub shares: Vec<SealedShare>,
}

/// What the worker says it received: never the secret, nor a digest of it (a low-entropy
/// secret could be guessed from one); only its size, its check having passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// The secret's id (hex).
    pub secret: String,
    /// Its size in bytes.
    pub bytes: usize,
    /// Keepers whose shares did not lie on the rebuilt secret.
    pub liars: Vec<u8>,
}

/// A finished release.
#[derive(Debug)]
pub struct ReleaseReport {
    /// What the worker received.
    pub received: Received,
    /// Keepers that released their share.
    pub released_by: Vec<u8>,
    /// Keepers that refused or failed, with why.
    pub failures: Vec<KeeperFailure>,
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    obscura_tokens::keyfile::from_hex(text)
}

/// Largest answer read from a worker.
const MAX_WORKER_ANSWER: usize = obscura_proto::limits::MAX_EVIDENCE + 4096;

/// POST `body` as JSON to `url` and read a JSON answer of bounded size.
pub(crate) async fn post_json<B: Serialize, A: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    url: &str,
    body: &B,
) -> Result<A, String> {
    let mut resp = http
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("a request serialises"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > MAX_WORKER_ANSWER {
            return Err("its answer is too large".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("its answer: {e}"))
}

impl Client {
    /// Release secret `id` (stored with a release policy) to the worker at `worker` (its base
    /// URL, `http://127.0.0.1:PORT`): every keeper appraises the worker under the secret's
    /// policy and seals its share to the worker's key; the worker rebuilds the secret.
    ///
    /// # Errors
    /// [`Error::Keepers`] when fewer than `T` keepers release their share (each refusal says
    /// why: the worker's appraisal, or a secret without a release policy);
    /// [`Error::Secret`] when the worker cannot be reached or does not rebuild the secret.
    pub async fn secret_release(
        &self,
        id: &[u8; 16],
        worker: &str,
    ) -> Result<ReleaseReport, Error> {
        let t = self.keeper_threshold;
        let worker = worker.trim_end_matches('/');
        // The worker's answers are evidence or receipts, sealed shares go to it: plain HTTP.
        let http = self.http.client.clone();
        let said = |e: String| Error::Secret(format!("worker {worker}: {e}"));
        let challenges = self
            .keepers
            .post_all(|_| KeeperBody::ReleaseStart { id: *id })
            .await;
        let mut failures = keeper_failures(&challenges);
        let mut shares = Vec::new();
        for (j, answer) in challenges {
            let Ok(ResponseBody::ReleaseChallenge { nonce }) = answer else {
                if answer.is_ok() {
                    failures.push(KeeperFailure {
                        keeper: j,
                        fault: Fault::Unexpected("a release challenge"),
                    });
                }
                continue;
            };
            let context = obscura_attest::binding::release_context(j, id);
            let request = EvidenceRequest {
                nonce: to_hex(&nonce),
                context: to_hex(&context),
            };
            let answer: EvidenceAnswer =
                post_json(&http, &format!("{worker}/v1/evidence"), &request)
                    .await
                    .map_err(said)?;
            let party_key = unhex::<32>(&answer.party_key)
                .ok_or_else(|| said("its party key is not 32 bytes of hex".into()))?;
            let finish = KeeperBody::ReleaseFinish {
                id: *id,
                nonce,
                party_key,
                evidence: answer.evidence.to_json(),
            };
            match self.keepers.post(j, finish).await.0 {
                Ok(ResponseBody::Released {
                    keeper,
                    enc,
                    ciphertext,
                    signature,
                }) if keeper == j => shares.push(SealedShare {
                    keeper,
                    nonce: to_hex(&nonce),
                    sealed: obscura_attest::seal::Sealed { enc, ciphertext },
                    signature: to_hex(&signature),
                }),
                Ok(ResponseBody::Released { keeper, .. }) => failures.push(KeeperFailure {
                    keeper: j,
                    fault: Fault::AnsweredAs(keeper),
                }),
                Ok(_) => failures.push(KeeperFailure {
                    keeper: j,
                    fault: Fault::Unexpected("a released share"),
                }),
                Err(fault) => failures.push(KeeperFailure { keeper: j, fault }),
            }
        }
        failures.sort_by_key(|f| f.keeper);
        if shares.len() < t {
            return Err(Error::Keepers {
                what: "releasing the secret to the worker",
                failures,
            });
        }
        let released_by = shares.iter().map(|s| s.keeper).collect();
        let delivery = Delivery {
            secret: to_hex(id),
            threshold: t,
            shares,
        };
        let received: Received = post_json(&http, &format!("{worker}/v1/deliver"), &delivery)
            .await
            .map_err(said)?;
        Ok(ReleaseReport {
            received,
            released_by,
            failures,
        })
    }
}
