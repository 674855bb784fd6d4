//! The worker's clean room. The worker is the resident attester: with the owner's approval of a
//! work, it starts a job (a fresh process of its own executable, `obscura worker job`) that
//! compiles the function and makes the job's keys, checks the job by local attestation (its
//! build, and the keys and Work-ID it reports for the attester's challenge), and only then gives
//! the loader a token for the job; it answers nodes' challenges with evidence vouching for the
//! job's keys, Work-ID and cluster, and hands the job the nodes' releases for its one run. The
//! job's secret keys, shares and output never leave the job's process, which ends with its run.
//! Anyone on the worker's port can ask, as the controller is untrusted: what it answers is
//! evidence, public keys, or a result sealed to the recipients, and what it tells of a failed
//! run is which limit stopped it, never values the function chose.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use obscura_attest::binding;
use obscura_client::release::EvidenceAnswer;
use obscura_client::room::{JobEvidence, Load, Loaded, JOB_HEADER, TOKEN_HEADER};
use obscura_room::job::{Cluster, Job};
use obscura_room::local::{self, FromJob, LocalReport, ToJob};
use obscura_room::result::Release;
use obscura_room::sandbox::Sandbox;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::{make_evidence, now, refuse, Answer, Worker};
use crate::error::Failure;

/// Jobs waiting at once, how long one waits for its run, the largest work and the largest
/// set of releases taken.
const MAX_JOBS: usize = 8;
const JOB_S: u64 = 120;
const MAX_WORK: usize = 10 << 20;
const MAX_RELEASES: usize = 320 << 20;
/// How long a run's releases may take to arrive.
const BODY_S: u64 = 60;
/// How long a job may take to start (compile its function) and report.
const START_S: u64 = 60;
/// How long a run may take beyond its function's deadline: opening, rebuilding, decoding,
/// sealing.
const RUN_SLACK_S: u64 = 300;
/// How long a run waits for the worker's one run slot.
const QUEUE_S: u64 = 120;

pub(super) struct RoomSide {
    cluster: Cluster,
    /// The executable jobs are started from, as it was when this worker started.
    exe: PathBuf,
    /// This worker's build, which every job must be.
    measurement: [u8; 48],
    /// The key jobs' local reports are made under (on the simulation backend, this worker
    /// makes it and gives it to each job it starts, as the processor would).
    report_key: [u8; 32],
    /// Jobs by their HPKE key, with their loader's token and when they lapse.
    jobs: Mutex<HashMap<[u8; 32], Waiting>>,
    /// One per job process alive, waiting or running: each job holds one until its process
    /// is gone.
    slots: Arc<tokio::sync::Semaphore>,
    /// One compilation at a time.
    compiling: tokio::sync::Semaphore,
    /// One run at a time: a run takes a core and the inputs' memory.
    running: Arc<tokio::sync::Semaphore>,
}

struct Waiting {
    job: JobProcess,
    token: [u8; 32],
    lapses: u64,
}

/// A job's process, checked by local attestation; killed when dropped.
struct JobProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// The Work-ID.
    work: [u8; 32],
    /// The job's keys, as its local report bound them.
    party_key: [u8; 32],
    signing_key: [u8; 32],
    /// The function's fuel, for the run's deadline.
    fuel: u64,
    /// Its place among the [`MAX_JOBS`].
    _slot: tokio::sync::OwnedSemaphorePermit,
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
        let exe = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
        let measurement = obscura_attest::producer::measure_file(&exe)
            .map_err(|e| format!("cannot measure this executable: {e}"))?;
        let mut report_key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut report_key);
        Ok(Some(RoomSide {
            cluster: Cluster { nodes, k, owner },
            exe,
            measurement,
            report_key,
            jobs: Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_JOBS)),
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

/// `POST /v1/room/load`: with the data owner's approval of the work, start a job process for it
/// (which compiles the function and makes the job's keys) and check it by local attestation.
/// Nothing starts without the approval, nor when the eight job slots are full.
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
    room.reap();
    let slot = room.slots.clone().try_acquire_owned().map_err(|_| full())?;
    let _one = room
        .compiling
        .acquire()
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let job = tokio::time::timeout(
        Duration::from_secs(START_S),
        room.start(&asked.work, &work, slot),
    )
    .await
    .map_err(|_| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the job did not start within {START_S} s"),
        )
    })??;
    let mut token = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
    let loaded = Loaded {
        work: hex(&job.work),
        party_key: hex(&job.party_key),
        signing_key: hex(&job.signing_key),
        token: hex(&token),
    };
    room.jobs.lock().unwrap_or_else(|e| e.into_inner()).insert(
        job.party_key,
        Waiting {
            job,
            token,
            lapses: now() + JOB_S,
        },
    );
    // A job not run in time is killed when it lapses, not at the next load.
    let reaper = w.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(JOB_S + 1)).await;
        if let Some(room) = &reaper.room {
            room.reap();
        }
    });
    Ok((
        StatusCode::OK,
        serde_json::to_string(&loaded).expect("an answer serialises"),
    ))
}

fn full() -> (StatusCode, String) {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("this worker holds {MAX_JOBS} jobs, waiting for or in their run; try again later"),
    )
}

impl RoomSide {
    /// Start a job for `work` (`text`, its file) and check it by local attestation: it must be
    /// this worker's build, and report the keys it answers with, for this work, this cluster
    /// and a challenge made here.
    async fn start(
        &self,
        text: &str,
        work: &obscura_room::work::Work,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<JobProcess, (StatusCode, String)> {
        let internal = |e: std::io::Error| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("starting the job: {e}"),
            )
        };
        let mut child = tokio::process::Command::new(&self.exe)
            .args(["worker", "job"])
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(internal)?;
        let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "the job's pipes"));
        };
        let mut nonce = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let start = ToJob::Start {
            work: text.to_owned(),
            nodes: self.cluster.nodes.iter().map(|n| n.to_bytes()).collect(),
            owner: self.cluster.owner.to_bytes(),
            k: self.cluster.k as u32,
            nonce,
            report_key: self.report_key,
        };
        send(&mut stdin, &start).await.map_err(internal)?;
        let (party_key, signing_key, report) = match receive(&mut stdout).await.map_err(internal)? {
            FromJob::Ready {
                party_key,
                signing_key,
                report,
            } => (party_key, signing_key, report),
            FromJob::Failed(why) => return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, why)),
            FromJob::Done(_) => {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the job answered out of turn",
                ))
            }
        };
        let id = work.id().0;
        let (role, context) = self.cluster.job_binding(&id, &signing_key);
        let expected = binding::report_data(&role, &party_key, &context, &nonce);
        check_report(&report, &self.report_key, &self.measurement, &expected)?;
        Ok(JobProcess {
            child,
            stdin,
            stdout,
            work: id,
            party_key,
            signing_key,
            fuel: work.manifest().limits.fuel,
            _slot: slot,
        })
    }

    /// Drop the jobs that lapsed, killing their processes and freeing their slots.
    fn reap(&self) {
        let now = now();
        let lapsed: Vec<([u8; 32], Waiting)> = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extract_if(|_, w| w.lapses <= now)
            .collect();
        // Dropped outside the lock: each kills its process.
        drop(lapsed);
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
        .map(|w| room.cluster.job_binding(&w.job.work, &w.job.signing_key))
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such job waiting here"))?;
    let data = binding::report_data(&role, &job, &context, &nonce);
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
    let permit = tokio::time::timeout(
        Duration::from_secs(QUEUE_S),
        room.running.clone().acquire_owned(),
    )
    .await
    .map_err(|_| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the worker ran other jobs for {QUEUE_S} s; load the work again later"),
        )
    })?
    .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let Waiting { job, .. } = waiting;
    let deadline =
        obscura_room::sandbox::deadline_s(job.fuel, obscura_room::sandbox::FUEL_PER_SECOND)
            + RUN_SLACK_S;
    // The permit and the job's process go together: if the controller hangs up, the job is
    // killed and the slot freed.
    let outcome = tokio::time::timeout(Duration::from_secs(deadline), job.run(&body)).await;
    drop(permit);
    let result = match outcome {
        Err(_) => {
            return Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the run took more than {deadline} s and was stopped"),
            ))
        }
        Ok(Err(e)) => {
            return Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the job: {e}"),
            ))
        }
        Ok(Ok(FromJob::Done(result))) => result,
        Ok(Ok(FromJob::Failed(why))) => return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, why)),
        Ok(Ok(FromJob::Ready { .. })) => {
            return Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the job answered out of turn",
            ))
        }
    };
    Ok((
        StatusCode::OK,
        serde_json::to_string(&result).expect("a result serialises"),
    ))
}

impl JobProcess {
    /// Hand the job the releases (postcard, as the controller sent them) and wait for its
    /// answer; the process is gone after.
    async fn run(mut self, releases: &[u8]) -> std::io::Result<FromJob> {
        send(&mut self.stdin, &ToJob::Run).await?;
        let len = local::frame_len((releases.len() as u32).to_be_bytes())
            .and_then(|_| u32::try_from(releases.len()).map_err(std::io::Error::other))?;
        self.stdin.write_all(&len.to_be_bytes()).await?;
        self.stdin.write_all(releases).await?;
        self.stdin.flush().await?;
        let answer = receive(&mut self.stdout).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        if let FromJob::Done(result) = &answer {
            if result.worker_key != self.party_key || result.signing_key != self.signing_key {
                return Err(std::io::Error::other(
                    "its result is not under the keys its local report bound",
                ));
            }
        }
        Ok(answer)
    }
}

fn check_report(
    report: &LocalReport,
    key: &[u8; 32],
    measurement: &[u8; 48],
    expected: &[u8; 64],
) -> Result<(), (StatusCode, String)> {
    report.check(key, measurement, expected).map_err(|why| {
        refuse(
            StatusCode::FORBIDDEN,
            format!("local attestation of the job: {why}"),
        )
    })
}

async fn send(to: &mut ChildStdin, message: &ToJob) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    local::write_frame(&mut bytes, message)?;
    to.write_all(&bytes).await?;
    to.flush().await
}

async fn receive(from: &mut ChildStdout) -> std::io::Result<FromJob> {
    let mut header = [0u8; 4];
    from.read_exact(&mut header).await?;
    let mut bytes = vec![0u8; local::frame_len(header)?];
    from.read_exact(&mut bytes).await?;
    postcard::from_bytes(&bytes).map_err(std::io::Error::other)
}

/// `obscura worker job`: one job, started by its worker (the attester), speaking frames on
/// standard input and output: compile the work, report its keys under the attester's report
/// key for its challenge, then run once on the releases it is handed and answer the result.
pub(super) fn job() -> Result<ExitCode, Failure> {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let said = |e: std::io::Error| Failure::Said(format!("the job's attester: {e}"));
    let ToJob::Start {
        work,
        nodes,
        owner,
        k,
        nonce,
        report_key,
    } = local::read_frame(&mut input).map_err(said)?
    else {
        return Err(Failure::Said("the job's attester: no start".into()));
    };
    let started = start_job(&work, &nodes, &owner, k, &nonce, &report_key);
    let (job, cluster, sandbox) = match started {
        Ok((job, cluster, sandbox, ready)) => {
            local::write_frame(&mut output, &ready).map_err(said)?;
            (job, cluster, sandbox)
        }
        Err(why) => {
            local::write_frame(&mut output, &FromJob::Failed(why)).map_err(said)?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let ToJob::Run = local::read_frame(&mut input).map_err(said)? else {
        return Err(Failure::Said("the job's attester: no run".into()));
    };
    let answer =
        match postcard::from_bytes::<Vec<Release>>(&local::read_raw(&mut input).map_err(said)?) {
            Err(e) => FromJob::Failed(format!("the releases: {e}")),
            Ok(releases) => match job.run(&sandbox, &cluster, &releases, &mut rand_core::OsRng) {
                Ok(result) => FromJob::Done(Box::new(result)),
                Err(e) => FromJob::Failed(e.public()),
            },
        };
    local::write_frame(&mut output, &answer).map_err(said)?;
    output.flush().map_err(said)?;
    Ok(ExitCode::SUCCESS)
}

/// Compile the work and make the job's keys and its local report.
fn start_job(
    work: &str,
    nodes: &[[u8; 32]],
    owner: &[u8; 32],
    k: u32,
    nonce: &[u8; 32],
    report_key: &[u8; 32],
) -> Result<(Job, Cluster, Sandbox, FromJob), String> {
    let key = |b: &[u8; 32]| {
        ed25519_dalek::VerifyingKey::from_bytes(b).map_err(|_| "a key of the cluster".to_string())
    };
    let cluster = Cluster {
        nodes: nodes.iter().map(key).collect::<Result<_, _>>()?,
        k: k as usize,
        owner: key(owner)?,
    };
    let work =
        obscura_room::work::Work::from_json_binary(work.as_bytes()).map_err(|e| e.to_string())?;
    let sandbox = Sandbox::new().map_err(|e| e.to_string())?;
    let job = Job::new(&sandbox, work, &mut rand_core::OsRng).map_err(|e| e.public())?;
    let measurement = obscura_attest::producer::own_measurement()
        .map_err(|e| format!("cannot measure this executable: {e}"))?;
    let (role, context) = job.binding(&cluster);
    let data = binding::report_data(&role, &job.party_key(), &context, nonce);
    let ready = FromJob::Ready {
        party_key: job.party_key(),
        signing_key: job.signing_key(),
        report: LocalReport::make(report_key, &measurement, &data),
    };
    Ok((job, cluster, sandbox, ready))
}

fn hex(bytes: &[u8]) -> String {
    obscura_tokens::keyfile::to_hex(bytes)
}
