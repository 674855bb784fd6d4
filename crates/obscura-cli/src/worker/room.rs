//! The worker's clean room: load a work (compile its function, make the job's keys), answer
//! evidence for a job binding the Work-ID and its result key, and run the job once on the
//! nodes' releases. Anyone on the worker's port can ask, as the controller is untrusted: what
//! it answers is evidence, public keys, or a result sealed to the recipients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use obscura_client::release::EvidenceAnswer;
use obscura_client::room::{JobEvidence, Loaded, RunRequest};
use obscura_room::job::{Cluster, Job};
use obscura_room::sandbox::Sandbox;
use obscura_room::work::Work;

use super::{now, refuse, Answer, Worker};

/// Jobs waiting at once, how long one waits for its run, the largest work and the largest
/// set of releases taken.
const MAX_JOBS: usize = 8;
const JOB_S: u64 = 600;
const MAX_WORK: usize = 10 << 20;
const MAX_RELEASES: usize = 320 << 20;

pub(super) struct RoomSide {
    cluster: Cluster,
    sandbox: Arc<Sandbox>,
    /// Jobs by their HPKE key, with when they lapse.
    jobs: Mutex<HashMap<[u8; 32], (Job, u64)>>,
    /// One run at a time: a run takes a core and the inputs' memory.
    running: tokio::sync::Semaphore,
}

impl RoomSide {
    /// The clean room of a worker whose configuration names the nodes and the owner; `None`
    /// for a configuration made before the clean room.
    pub(super) fn load(
        nodes: &[String],
        owner: &str,
        k: usize,
    ) -> Result<Option<RoomSide>, String> {
        if nodes.is_empty() {
            return Ok(None);
        }
        let nodes = nodes
            .iter()
            .map(|n| obscura_cluster::ed25519_key(n))
            .collect::<Option<Vec<_>>>()
            .filter(|n| (2..=64).contains(&n.len()) && (2..=n.len()).contains(&k))
            .ok_or("nodes must be 2 to 64 Ed25519 keys, and k between 2 and their number")?;
        let owner = obscura_cluster::ed25519_key(owner).ok_or("owner is not an Ed25519 key")?;
        let sandbox = Sandbox::new().map_err(|e| e.to_string())?;
        Ok(Some(RoomSide {
            cluster: Cluster { nodes, k, owner },
            sandbox: Arc::new(sandbox),
            jobs: Mutex::default(),
            running: tokio::sync::Semaphore::new(1),
        }))
    }
}

pub(super) fn routes() -> Router<Arc<Worker>> {
    Router::new()
        .route(
            "/v1/room/load",
            post(load).layer(DefaultBodyLimit::max(MAX_WORK)),
        )
        .route("/v1/room/evidence", post(evidence))
        .route(
            "/v1/room/run",
            post(run).layer(DefaultBodyLimit::max(MAX_RELEASES)),
        )
}

fn side(w: &Worker) -> Result<&RoomSide, (StatusCode, String)> {
    w.room.as_ref().ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "this worker's configuration names no nodes: make it again with `obscura worker init`",
        )
    })
}

/// `POST /v1/room/load`: compile the work's function and make a job for it.
async fn load(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let room = side(&w)?;
    let work =
        Work::from_json(&body).map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let sandbox = room.sandbox.clone();
    let job = tokio::task::spawn_blocking(move || Job::new(&sandbox, work, &mut rand_core::OsRng))
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| refuse(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let loaded = Loaded {
        work: job.work().id().to_hex(),
        party_key: hex(&job.party_key()),
        signing_key: hex(&job.signing_key()),
    };
    let mut jobs = room.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let now = now();
    jobs.retain(|_, (_, lapses)| *lapses > now);
    if jobs.len() >= MAX_JOBS {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this worker holds {MAX_JOBS} jobs waiting for their run; try again later"),
        ));
    }
    jobs.insert(job.party_key(), (job, now + JOB_S));
    Ok((
        StatusCode::OK,
        serde_json::to_string(&loaded).expect("an answer serialises"),
    ))
}

/// `POST /v1/room/evidence`: evidence binding a job's HPKE key, its Work-ID and result key,
/// and a node's challenge.
async fn evidence(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let room = side(&w)?;
    let asked: JobEvidence = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let job: [u8; 32] = obscura_tokens::keyfile::from_hex(&asked.job)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "job: 64 hex digits"))?;
    let nonce: [u8; 32] = obscura_tokens::keyfile::from_hex(&asked.nonce)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "nonce: 64 hex digits"))?;
    let context = room
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&job)
        .map(|(j, _)| j.context())
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such job waiting here"))?;
    let _one = tokio::time::timeout(std::time::Duration::from_secs(2), w.making.acquire())
        .await
        .map_err(|_| refuse(StatusCode::SERVICE_UNAVAILABLE, "busy; ask again"))?
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let data =
        obscura_attest::binding::report_data(&obscura_attest::Role::Worker, &job, &context, &nonce);
    let w2 = w.clone();
    let evidence = tokio::task::spawn_blocking(move || w2.producer.evidence(&data, now()))
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let answer = EvidenceAnswer {
        party_key: hex(&job),
        evidence,
    };
    Ok((
        StatusCode::OK,
        serde_json::to_string(&answer).expect("an answer serialises"),
    ))
}

/// `POST /v1/room/run`: run a job once on the nodes' releases; the job is gone after, whatever
/// the outcome.
async fn run(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let room = side(&w)?;
    let request: RunRequest = postcard::from_bytes(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("the releases: {e}")))?;
    drop(body);
    let _one = room
        .running
        .acquire()
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (job, lapses) = room
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&request.job)
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such job waiting here"))?;
    if lapses <= now() {
        return Err(refuse(StatusCode::GONE, "the job lapsed before its run"));
    }
    let sandbox = room.sandbox.clone();
    let cluster = room.cluster.clone();
    let result = tokio::task::spawn_blocking(move || {
        job.run(&sandbox, &cluster, &request.releases, &mut rand_core::OsRng)
    })
    .await
    .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| refuse(StatusCode::UNPROCESSABLE_ENTITY, run_refusal(&e)))?;
    Ok((
        StatusCode::OK,
        serde_json::to_string(&result).expect("a result serialises"),
    ))
}

/// A failed run's reason, with the nodes blamed on the way.
fn run_refusal(e: &obscura_room::job::JobError) -> String {
    match e {
        obscura_room::job::JobError::Input { blamed, .. } if !blamed.is_empty() => {
            let named: Vec<String> = blamed
                .iter()
                .map(|b| format!("node {}: {}", b.node, b.why))
                .collect();
            format!("{e} ({})", named.join("; "))
        }
        _ => e.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    obscura_tokens::keyfile::to_hex(bytes)
}
