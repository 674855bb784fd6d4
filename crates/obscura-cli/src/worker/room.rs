//! The worker's clean room: load a work with the owner's approval (compile its function, make
//! the job's keys and a token for its loader), answer evidence for a job binding the Work-ID,
//! its result key and the cluster it trusts, and run the job once on the nodes' releases.
//! Anyone on the worker's port can ask, as the controller is untrusted: what it answers is
//! evidence, public keys, or a result sealed to the recipients, and what it tells of a failed
//! run is which limit stopped it, never values the function chose.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use obscura_client::release::EvidenceAnswer;
use obscura_client::room::{JobEvidence, Load, Loaded, JOB_HEADER, TOKEN_HEADER};
use obscura_room::job::{Cluster, Job};
use obscura_room::result::Release;
use obscura_room::sandbox::Sandbox;
use subtle::ConstantTimeEq;

use super::{make_evidence, now, refuse, Answer, Worker};

/// Jobs waiting at once, how long one waits for its run, the largest work and the largest
/// set of releases taken.
const MAX_JOBS: usize = 8;
const JOB_S: u64 = 120;
const MAX_WORK: usize = 10 << 20;
const MAX_RELEASES: usize = 320 << 20;
/// How long a run's releases may take to arrive.
const BODY_S: u64 = 60;

pub(super) struct RoomSide {
    cluster: Cluster,
    sandbox: Arc<Sandbox>,
    /// Jobs by their HPKE key, with their loader's token and when they lapse.
    jobs: Mutex<HashMap<[u8; 32], Waiting>>,
    /// One compilation at a time.
    compiling: tokio::sync::Semaphore,
    /// One run at a time: a run takes a core and the inputs' memory.
    running: Arc<tokio::sync::Semaphore>,
}

struct Waiting {
    job: Job,
    token: [u8; 32],
    lapses: u64,
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
            compiling: tokio::sync::Semaphore::new(1),
            running: Arc::new(tokio::sync::Semaphore::new(1)),
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
        .route("/v1/room/run", post(run))
}

fn side(w: &Worker) -> Result<&RoomSide, (StatusCode, String)> {
    w.room.as_ref().ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "this worker's configuration names no nodes: make it again with `obscura worker init`",
        )
    })
}

/// `POST /v1/room/load`: with the data owner's approval of the work, compile its function and
/// make a job for it. Nothing is compiled without the approval, nor when the job slots are full.
async fn load(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let room = side(&w)?;
    let asked: Load = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    drop(body);
    let work = obscura_room::work::Work::from_json_binary(asked.work.as_bytes())
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    asked
        .approval
        .check(&work, &room.cluster.owner)
        .map_err(|e| refuse(StatusCode::FORBIDDEN, e.to_string()))?;
    if asked.approval.expires_at < now() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the owner's approval has expired",
        ));
    }
    if room.waiting() >= MAX_JOBS {
        return Err(full());
    }
    let _one = room
        .compiling
        .acquire()
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let sandbox = room.sandbox.clone();
    let job = tokio::task::spawn_blocking(move || Job::new(&sandbox, work, &mut rand_core::OsRng))
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| refuse(StatusCode::UNPROCESSABLE_ENTITY, e.public()))?;
    let mut token = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
    let loaded = Loaded {
        work: job.work().id().to_hex(),
        party_key: hex(&job.party_key()),
        signing_key: hex(&job.signing_key()),
        token: hex(&token),
    };
    let mut jobs = room.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let now = now();
    jobs.retain(|_, waiting| waiting.lapses > now);
    if jobs.len() >= MAX_JOBS {
        return Err(full());
    }
    jobs.insert(
        job.party_key(),
        Waiting {
            job,
            token,
            lapses: now + JOB_S,
        },
    );
    Ok((
        StatusCode::OK,
        serde_json::to_string(&loaded).expect("an answer serialises"),
    ))
}

fn full() -> (StatusCode, String) {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("this worker holds {MAX_JOBS} jobs waiting for their run; try again later"),
    )
}

impl RoomSide {
    /// Jobs waiting that have not lapsed.
    fn waiting(&self) -> usize {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let now = now();
        jobs.retain(|_, waiting| waiting.lapses > now);
        jobs.len()
    }

    /// Check a job's key and its loader's token (hex).
    fn authorise(&self, job: &str, token: &str) -> Result<[u8; 32], (StatusCode, String)> {
        let job: [u8; 32] = obscura_tokens::keyfile::from_hex(job)
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "job: 64 hex digits"))?;
        let token: [u8; 32] = obscura_tokens::keyfile::from_hex(token)
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "token: 64 hex digits"))?;
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match jobs.get(&job) {
            Some(w) if bool::from(w.token.ct_eq(&token)) && w.lapses > now() => Ok(job),
            _ => Err(refuse(
                StatusCode::NOT_FOUND,
                "no such job waiting here for this token",
            )),
        }
    }
}

/// `POST /v1/room/evidence`: evidence naming a job's work as its role and binding the job's
/// HPKE key, its Work-ID, result key and cluster, and a node's challenge; for the job's loader.
async fn evidence(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let room = side(&w)?;
    let asked: JobEvidence = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let job = room.authorise(&asked.job, &asked.token)?;
    let nonce: [u8; 32] = obscura_tokens::keyfile::from_hex(&asked.nonce)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "nonce: 64 hex digits"))?;
    let (role, context) = room
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&job)
        .map(|w| (w.job.role(), w.job.context(&room.cluster)))
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such job waiting here"))?;
    let data = obscura_attest::binding::report_data(&role, &job, &context, &nonce);
    let evidence = make_evidence(&w, data).await?;
    let answer = EvidenceAnswer {
        party_key: hex(&job),
        evidence,
    };
    Ok((
        StatusCode::OK,
        serde_json::to_string(&answer).expect("an answer serialises"),
    ))
}

/// `POST /v1/room/run`: run a job once on the nodes' releases (postcard), for its loader (the
/// job and token in headers, checked before the body is read: at most one body per job, and
/// eight jobs); the job is gone after, whatever the outcome.
async fn run(State(w): State<Arc<Worker>>, headers: HeaderMap, body: Body) -> Answer {
    let room = side(&w)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let job = room.authorise(&header(JOB_HEADER), &header(TOKEN_HEADER))?;
    // The job is taken first, so one token reads one body; the body is read within a time, and
    // only then does the run wait for the one slot, which a slow sender cannot hold.
    let waiting = room
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&job)
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such job waiting here"))?;
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(BODY_S),
        axum::body::to_bytes(body, MAX_RELEASES),
    )
    .await
    .map_err(|_| {
        refuse(
            StatusCode::REQUEST_TIMEOUT,
            "the releases took too long to send",
        )
    })?
    .map_err(|e| refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("the releases: {e}")))?;
    let permit = room
        .running
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let releases: Vec<Release> = postcard::from_bytes(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("the releases: {e}")))?;
    drop(body);
    let sandbox = room.sandbox.clone();
    let cluster = room.cluster.clone();
    // The permit goes with the run: a controller that hangs up does not free the slot while
    // the run goes on.
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        waiting
            .job
            .run(&sandbox, &cluster, &releases, &mut rand_core::OsRng)
    })
    .await
    .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| refuse(StatusCode::UNPROCESSABLE_ENTITY, e.public()))?;
    Ok((
        StatusCode::OK,
        serde_json::to_string(&result).expect("a result serialises"),
    ))
}

fn hex(bytes: &[u8]) -> String {
    obscura_tokens::keyfile::to_hex(bytes)
}
