//! The client's attestation gate: before it sends a node or keeper anything but a request for
//! evidence, the client appraises that server's evidence under the cluster's policy, with a
//! fresh nonce, and again once the last appraisal is [`REAPPRAISE_AFTER`] old. A server whose
//! appraisal fails is not sent anything else, and is named ([`Fault::NotAttested`] is a
//! misbehaviour); one that cannot be reached, or is busy, is asked again on the next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obscura_attest::{binding, Appraisal, Evidence, Policy, Refusal, Role, Verifier};
use obscura_proto::{limits, ErrorCode, KeeperBody, NodeBody, ResponseBody};
use rand_core::{OsRng, RngCore};

use crate::{fresh_request, send, unix_now, Fault};

/// What the client appraises servers under: the policy, and the cluster they must belong to.
#[derive(Clone, Debug)]
pub struct AttestationParts {
    /// The cluster's attestation policy.
    pub policy: Policy,
    /// The cluster CA certificate (PEM), whose digest each server's evidence binds.
    pub cluster: Vec<u8>,
}

type Outcome = Result<Appraisal, Refusal>;

/// How long an appraisal admits its server before the client asks for fresh evidence: a server
/// whose build is swapped while a long-running client uses it is caught within this time.
pub(crate) const REAPPRAISE_AFTER: Duration = Duration::from_secs(300);

/// A server's last definite outcome and when it was reached; the lock makes one appraisal at a
/// time per server.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Outcome)>>>;

/// One appraisal per server, shared by every task of a client.
pub(crate) struct Gate {
    policy: Policy,
    verifier: Verifier,
    cluster: Vec<u8>,
    /// Each server's base URL and its seat.
    seats: HashMap<String, (Role, u8)>,
    outcomes: Mutex<HashMap<String, Slot>>,
}

impl Gate {
    pub(crate) fn new(parts: AttestationParts, nodes: &[String], keepers: &[String]) -> Gate {
        let seats = nodes
            .iter()
            .enumerate()
            .map(|(i, base)| (base.clone(), (Role::Node, i as u8 + 1)))
            .chain(
                keepers
                    .iter()
                    .enumerate()
                    .map(|(j, base)| (base.clone(), (Role::Keeper, j as u8 + 1))),
            )
            .collect();
        Gate {
            policy: parts.policy,
            verifier: Verifier::new(),
            cluster: parts.cluster,
            seats,
            outcomes: Mutex::default(),
        }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether the server at `base` may be sent a request: its appraisal, made now if this is
    /// the first request to it or the last is stale. A server that cannot be reached is not
    /// appraised yet, and is asked again next time.
    pub(crate) async fn admit(&self, http: &reqwest::Client, base: &str) -> Result<(), Fault> {
        match self.appraisal(http, base).await? {
            Ok(_) => Ok(()),
            Err(refusal) => Err(Fault::NotAttested(refusal)),
        }
    }

    /// The appraisal of the server at `base`, or why it was refused.
    pub(crate) async fn appraisal(
        &self,
        http: &reqwest::Client,
        base: &str,
    ) -> Result<Outcome, Fault> {
        self.appraisal_within(http, base, REAPPRAISE_AFTER).await
    }

    /// The appraisal of the server at `base` made now, whatever the last: for sealing to the
    /// key it holds at this moment (a server that restarted has another).
    pub(crate) async fn fresh_appraisal(
        &self,
        http: &reqwest::Client,
        base: &str,
    ) -> Result<Outcome, Fault> {
        self.appraisal_within(http, base, Duration::ZERO).await
    }

    /// The last outcome for `base` if younger than `max_age`, else a new appraisal.
    async fn appraisal_within(
        &self,
        http: &reqwest::Client,
        base: &str,
        max_age: Duration,
    ) -> Result<Outcome, Fault> {
        let Some((role, seat)) = self.seats.get(base).cloned() else {
            return Err(Fault::NotSent(format!(
                "{base} is not a server of this cluster"
            )));
        };
        let slot = self
            .outcomes
            .lock()
            .expect("the gate's lock is never poisoned")
            .entry(base.to_owned())
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        if let Some((at, outcome)) = last.as_ref() {
            if at.elapsed() < max_age {
                return Ok(outcome.clone());
            }
        }
        let outcome = self.appraise(http, base, role, seat).await?;
        *last = Some((Instant::now(), outcome.clone()));
        Ok(outcome)
    }

    async fn appraise(
        &self,
        http: &reqwest::Client,
        base: &str,
        role: Role,
        seat: u8,
    ) -> Result<Outcome, Fault> {
        Ok(self
            .appraise_evidence(http, base, role, seat)
            .await?
            .map(|(appraisal, _)| appraisal))
    }

    /// A fresh appraisal of the server at `base` with the evidence it passed on, so that
    /// others can appraise the same evidence (keepers helping one recover its shares).
    pub(crate) async fn appraisal_with_evidence(
        &self,
        http: &reqwest::Client,
        base: &str,
    ) -> Result<Result<(Appraisal, Presented), Refusal>, Fault> {
        let Some((role, seat)) = self.seats.get(base).cloned() else {
            return Err(Fault::NotSent(format!(
                "{base} is not a server of this cluster"
            )));
        };
        self.appraise_evidence(http, base, role, seat).await
    }

    async fn appraise_evidence(
        &self,
        http: &reqwest::Client,
        base: &str,
        role: Role,
        seat: u8,
    ) -> Result<Result<(Appraisal, Presented), Refusal>, Fault> {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        // Evidence and its collateral, with room for the answer's framing.
        let limit = limits::MAX_EVIDENCE + 1024;
        let (answer, _, _) = match role {
            Role::Keeper => {
                let req = fresh_request(KeeperBody::Evidence { nonce });
                send(http, base, &req, limit, None).await
            }
            _ => {
                let req = fresh_request(NodeBody::Evidence { nonce });
                send(http, base, &req, limit, None).await
            }
        };
        let (party_key, evidence) = match answer {
            Ok(ResponseBody::Evidence {
                party_key,
                evidence,
            }) => (party_key, evidence),
            Ok(_) => {
                return Ok(Err(Refusal::NoEvidence(
                    "it answered something other than evidence".into(),
                )))
            }
            // A server that says it does not attest is refused; one that is busy or failed
            // to make evidence this time is asked again later, and not blamed.
            Err(Fault::Refused {
                code: ErrorCode::Rejected,
                message,
            }) => return Ok(Err(Refusal::NoEvidence(message))),
            Err(transient) => return Err(transient),
        };
        let outcome = Evidence::from_json(&evidence).and_then(|parsed| {
            self.verifier.appraise_party(
                &parsed,
                &self.policy,
                &role,
                &party_key,
                &binding::context(&self.cluster, &role, seat),
                &nonce,
                unix_now(),
            )
        });
        Ok(outcome.map(|appraisal| {
            (
                appraisal,
                Presented {
                    party_key,
                    nonce,
                    evidence,
                },
            )
        }))
    }
}

/// Evidence a server presented, as appraised.
#[derive(Clone, Debug)]
pub(crate) struct Presented {
    /// The HPKE key it binds.
    pub(crate) party_key: [u8; 32],
    /// The nonce it binds.
    pub(crate) nonce: [u8; 32],
    /// The evidence (JSON).
    pub(crate) evidence: Vec<u8>,
}

/// The X25519 key `appraisal` binds, to seal to or agree with.
pub(crate) fn party_key(appraisal: &Appraisal) -> Result<[u8; 32], Fault> {
    appraisal
        .party_key()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Fault::NotSent("the appraisal binds no X25519 key".into()))
}
