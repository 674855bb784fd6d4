//! The clean room's controller: it loads a work into a worker, has every node appraise the
//! worker for that work and release its shares sealed to the worker's key, relays the
//! releases, and brings back the signed result with its output sealed to the recipients. It
//! is untrusted: everything it carries is evidence, ciphertext or signed.

use std::time::Instant;

use obscura_proto::{limits, NodeBody, ResponseBody, RoomResultFiled};
use obscura_room::result::{blamed_encoding, verify_result, Release, RunResult};
use obscura_room::work::{Approval, Work};
use serde::{Deserialize, Serialize};

use crate::fault::{Fault, NodeFailure};
use crate::release::EvidenceAnswer;
use crate::{Client, Error};
use obscura_tokens::keyfile::{from_hex, to_hex};

/// What a worker is asked to load: a work, with the data owner's approval of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Load {
    /// The work, as its JSON file.
    pub work: String,
    /// The owner's approval.
    pub approval: Approval,
}

/// What a worker answers when a work is loaded: the job's keys, which its evidence will bind,
/// and the token its loader shows for the job's evidence and run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Loaded {
    /// The Work-ID the worker computed (hex).
    pub work: String,
    /// The job's HPKE key (hex), which names the job.
    pub party_key: String,
    /// The job's result-signing key (hex).
    pub signing_key: String,
    /// The loader's token (hex).
    pub token: String,
}

/// What a worker is asked for evidence for a job: the node's challenge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobEvidence {
    /// The job (its HPKE key, hex).
    pub job: String,
    /// The loader's token (hex).
    pub token: String,
    /// The node's challenge (hex).
    pub nonce: String,
}

/// The header naming the job of a run (its HPKE key, hex); the body is the releases, postcard.
pub const JOB_HEADER: &str = "x-obscura-job";
/// The header holding the loader's token for a run.
pub const TOKEN_HEADER: &str = "x-obscura-token";

/// A finished run, as the controller saw it.
#[derive(Debug)]
pub struct RoomReport {
    /// The worker's signed result.
    pub result: RunResult,
    /// Nodes that released, with the run each counted.
    pub released_by: Vec<(u8, u32)>,
    /// Nodes that entered the result in their audit logs.
    pub filed_at: Vec<u8>,
    /// Nodes that refused or failed, and why.
    pub failures: Vec<NodeFailure>,
    /// Milliseconds loading the work at the worker (compiling the function).
    pub load_ms: f64,
    /// Milliseconds of attestation: the nodes' challenges and the worker's evidence for them.
    pub attestation_ms: f64,
    /// Milliseconds of release: each node's appraisal of the evidence, count of the run and
    /// sealing of its shares.
    pub release_ms: f64,
    /// Milliseconds of the worker's run, as the controller waited for it.
    pub run_ms: f64,
}

/// Releases asked for beyond `k`: one node may lie and the run still completes. Each node that
/// releases counts a run, so no more are asked than that.
const SPARE_RELEASES: usize = 1;

/// Largest answer read from a worker's run: the output sealed to each recipient, in JSON.
const MAX_RUN_ANSWER: usize = 96 << 20;
/// Largest answer read from a worker otherwise.
const MAX_WORKER_ANSWER: usize = limits::MAX_EVIDENCE + 4096;

async fn post_worker(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut post = http.post(url);
    for (name, value) in headers {
        post = post.header(*name, value);
    }
    let mut resp = post.body(body).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > limit {
            return Err("its answer is too large".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(bytes)
}

impl Client {
    /// As the data owner: approve `work` for workers that pass `policy` (attestation policy
    /// JSON), until `expires_at`, for at most `max_runs` runs at each node.
    ///
    /// # Errors
    /// [`Error::NotOwner`].
    pub fn approve(
        &self,
        work: &Work,
        policy: &str,
        expires_at: u64,
        max_runs: u32,
    ) -> Result<Approval, Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        Ok(Approval::sign(work, policy, expires_at, max_runs, owner))
    }

    /// Run `work` under `approval` in the worker at `worker` (its base URL): load it, have the
    /// nodes, in order, appraise the worker and release their shares to it until `k + 1` have
    /// (each release counts a run at its node), hand the releases over, and check the result's
    /// signature under the key the nodes appraised.
    ///
    /// # Errors
    /// [`Error::Room`] when the approval is not the owner's for this work, or the worker
    /// cannot be reached or does not run it (its reason); [`Error::Nodes`] naming each node's
    /// refusal when fewer than `k` release.
    pub async fn room_run(
        &self,
        work: &Work,
        approval: &Approval,
        worker: &str,
    ) -> Result<RoomReport, Error> {
        let approval_signature = approval
            .check(work, &self.owner_public)
            .map_err(|e| Error::Room(e.to_string()))?;
        let worker = worker.trim_end_matches('/');
        let http = self.http.client.clone();
        let said = |e: String| Error::Room(format!("worker {worker}: {e}"));
        let started = Instant::now();
        let load = Load {
            work: work.to_json(),
            approval: approval.clone(),
        };
        let loaded = post_worker(
            &http,
            &format!("{worker}/v1/room/load"),
            &[("content-type", "application/json".into())],
            serde_json::to_vec(&load).expect("a load serialises"),
            MAX_WORKER_ANSWER,
        )
        .await
        .map_err(said)?;
        let loaded: Loaded =
            serde_json::from_slice(&loaded).map_err(|e| said(format!("its answer: {e}")))?;
        if !loaded.work.eq_ignore_ascii_case(&work.id().to_hex()) {
            return Err(said(format!(
                "it loaded work {}, not {}",
                loaded.work,
                work.id()
            )));
        }
        let (Some(party_key), Some(signing_key), Some(_)) = (
            from_hex::<32>(&loaded.party_key),
            from_hex::<32>(&loaded.signing_key),
            from_hex::<32>(&loaded.token),
        ) else {
            return Err(said("its keys are not 32 bytes of hex".into()));
        };
        let job = Job {
            worker,
            party_key,
            signing_key,
            token: loaded.token.clone(),
        };
        let load_ms = ms(started);
        let started = Instant::now();
        let work_id = work.id().0;
        let images = work.images();
        let mut failures = Vec::new();
        let mut releases = Vec::new();
        let mut attestation_ms = 0.0;
        for x in 1..=self.n() as u8 {
            if releases.len() >= self.k + SPARE_RELEASES {
                break;
            }
            match self
                .release_from(x, work_id, &images, approval, &approval_signature, &job)
                .await
            {
                Ok((release, attested_ms)) => {
                    releases.push(release);
                    attestation_ms += attested_ms;
                }
                Err(fault) => failures.push(NodeFailure { node: x, fault }),
            }
        }
        let release_ms = ms(started) - attestation_ms;
        if releases.len() < self.k {
            return Err(Error::Nodes {
                what: "releasing the work's inputs to the worker",
                failures,
            });
        }
        let released_by = releases.iter().map(|r| (r.node, r.run)).collect();
        let started = Instant::now();
        let answer = post_worker(
            &http,
            &format!("{worker}/v1/room/run"),
            &[
                ("content-type", "application/octet-stream".into()),
                (JOB_HEADER, to_hex(&party_key)),
                (TOKEN_HEADER, job.token.clone()),
            ],
            postcard::to_allocvec(&releases).expect("releases encode"),
            MAX_RUN_ANSWER,
        )
        .await
        .map_err(said)?;
        let result: RunResult =
            serde_json::from_slice(&answer).map_err(|e| said(format!("its result: {e}")))?;
        let run_ms = ms(started);
        if result.work != work_id
            || result.signing_key != signing_key
            || result.worker_key != party_key
        {
            return Err(said(
                "its result is for another work, or signed by a key the nodes did not appraise"
                    .into(),
            ));
        }
        verify_result(&result, None).map_err(said)?;
        let filed_at = self.file_result(&result, &mut failures).await;
        Ok(RoomReport {
            result,
            released_by,
            filed_at,
            failures,
            load_ms,
            attestation_ms,
            release_ms,
            run_ms,
        })
    }

    /// File `result` at each node that released to its run, for the nodes' audit logs;
    /// returns the nodes that entered it, and adds the others to `failures`.
    async fn file_result(&self, result: &RunResult, failures: &mut Vec<NodeFailure>) -> Vec<u8> {
        let blamed = blamed_encoding(&result.blamed, &result.unsigned);
        let calls = result
            .releases
            .iter()
            .filter(|r| (1..=self.n()).contains(&usize::from(r.node)))
            .map(|r| {
                (
                    r.node,
                    NodeBody::RoomResult(RoomResultFiled {
                        work: result.work,
                        manifests: result.manifests.clone(),
                        commitment: result.commitment,
                        blamed: blamed.clone(),
                        worker_key: result.worker_key,
                        signing_key: result.signing_key,
                        signature: result.signature.clone(),
                        release: r.clone(),
                    }),
                )
            })
            .collect();
        let mut filed = Vec::new();
        for (x, answer, ..) in self.call_some(calls).await {
            match answer {
                Ok(ResponseBody::Ok) => filed.push(x),
                Ok(_) => failures.push(NodeFailure {
                    node: x,
                    fault: Fault::Unexpected("the result entered"),
                }),
                Err(fault) => failures.push(NodeFailure { node: x, fault }),
            }
        }
        filed.sort_unstable();
        filed
    }

    /// One node's challenge, the worker's evidence for it, and the node's release, with the
    /// milliseconds the first two took.
    async fn release_from(
        &self,
        x: u8,
        work: [u8; 32],
        images: &[[u8; 16]],
        approval: &Approval,
        approval_signature: &[u8; 64],
        job: &Job<'_>,
    ) -> Result<(Release, f64), Fault> {
        let (worker, party_key, signing_key) = (job.worker, job.party_key, job.signing_key);
        let started = Instant::now();
        let answer = self
            .call_some(vec![(x, NodeBody::RoomChallenge { work })])
            .await
            .pop()
            .map(|a| a.1)
            .unwrap_or(Err(Fault::Unexpected("an answer")))?;
        let ResponseBody::RoomChallenge { nonce } = answer else {
            return Err(Fault::Unexpected("a clean-room challenge"));
        };
        let request = JobEvidence {
            job: to_hex(&party_key),
            token: job.token.clone(),
            nonce: to_hex(&nonce),
        };
        let evidence = post_worker(
            &self.http.client,
            &format!("{worker}/v1/room/evidence"),
            &[("content-type", "application/json".into())],
            serde_json::to_vec(&request).expect("a request serialises"),
            MAX_WORKER_ANSWER,
        )
        .await
        .map_err(|e| Fault::NotSent(format!("the worker's evidence: {e}")))?;
        let evidence: EvidenceAnswer = serde_json::from_slice(&evidence)
            .map_err(|e| Fault::NotSent(format!("the worker's evidence: {e}")))?;
        if from_hex::<32>(&evidence.party_key) != Some(party_key) {
            return Err(Fault::NotSent(
                "the worker's evidence is for another job".into(),
            ));
        }
        let attested_ms = ms(started);
        let body = NodeBody::RoomRelease {
            work,
            images: images.to_vec(),
            policy: approval.policy.as_bytes().to_vec(),
            expires_at: approval.expires_at,
            max_runs: approval.max_runs,
            approval: approval_signature.to_vec(),
            nonce,
            worker_key: party_key,
            signing_key,
            evidence: evidence.evidence.to_json(),
        };
        let answer = self
            .call_some(vec![(x, body)])
            .await
            .pop()
            .map(|a| a.1)
            .unwrap_or(Err(Fault::Unexpected("an answer")))?;
        match answer {
            ResponseBody::RoomReleased {
                node,
                run,
                shares,
                signature,
            } if node == x => Ok((
                Release {
                    node,
                    nonce,
                    run,
                    shares,
                    signature,
                },
                attested_ms,
            )),
            ResponseBody::RoomReleased { node, .. } => Err(Fault::AnsweredAs(node)),
            _ => Err(Fault::Unexpected("a clean-room release")),
        }
    }
}

/// A job loaded at a worker, as the controller holds it.
struct Job<'a> {
    worker: &'a str,
    party_key: [u8; 32],
    signing_key: [u8; 32],
    token: String,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
