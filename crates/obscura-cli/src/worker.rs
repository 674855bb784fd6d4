//! `obscura worker init|run`: the attested execution environment the clean room will use. A
//! worker makes an HPKE key at start, answers `evidence(nonce)` binding it, and takes secrets
//! that keepers released to it, sealed to that key, rebuilding them in its memory only.
//!
//! It speaks JSON over plain HTTP, bound to loopback by default: what it answers is evidence
//! (which authenticates itself) or a receipt (size and digest, never the secret), and what it is
//! sent is sealed to its key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use clap::Subcommand;
use obscura_attest::producer::{Producer, Simulated};
use obscura_attest::seal::PartyKey;
use obscura_attest::sim::{SimulatedPlatform, SimulationRoot};
use obscura_attest::{binding, Role};
use obscura_client::release::{Delivery, EvidenceAnswer, EvidenceRequest, Received};
use obscura_cluster::attestation::{AttestationSource, SIMULATION_ROOT_FILE};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::Failure;

mod group;
mod room;

#[derive(Subcommand)]
pub(crate) enum WorkerCommand {
    /// Make a worker's configuration in DIR/workers/NAME, with a simulated platform endorsed by
    /// the cluster's simulation root.
    #[command(after_help = "Example:\n  \
        obscura worker init --cluster /tmp/demo --name w1 --listen 127.0.0.1:7601\n  \
        obscura worker run /tmp/demo/workers/w1/worker.json")]
    Init {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The worker's name.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7601")]
        listen: String,
    },
    /// Run a worker until stopped.
    #[command(after_help = "Examples:\n  obscura worker run /tmp/demo/workers/w1/worker.json")]
    Run {
        /// Its configuration file (worker.json).
        config: PathBuf,
    },
    /// One clean-room job, started by a running worker (its attester) and spoken to over
    /// standard input and output; not for people.
    #[command(hide = true)]
    Job,
}

impl WorkerCommand {
    /// Whether this is a clean-room job's process.
    pub(crate) fn is_job(&self) -> bool {
        matches!(self, WorkerCommand::Job)
    }

    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            WorkerCommand::Init {
                cluster,
                name,
                listen,
            } => init(&cluster, &name, &listen),
            WorkerCommand::Run { config } => run(&config).await,
            WorkerCommand::Job => room::job(),
        }
    }
}

/// A worker's configuration file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerConfig {
    name: String,
    listen: String,
    attestation: AttestationSource,
    /// Its simulated platform (secret, 0600), relative to this file.
    platform: PathBuf,
    /// Every keeper's audit key (Ed25519, hex), keeper 1 first: a released share must carry its
    /// keeper's signature.
    keepers: Vec<String>,
    /// Shares that rebuild a secret.
    threshold: usize,
    /// Every node's audit key (Ed25519, hex), node 1 first: a clean-room release must carry
    /// its node's signature. Empty in a configuration made before the clean room.
    #[serde(default)]
    nodes: Vec<String>,
    /// The data owner's key (Ed25519, hex), which signs every image's manifest.
    #[serde(default)]
    owner: String,
    /// Shares that rebuild an image.
    #[serde(default)]
    k: usize,
}

fn init(cluster: &Path, name: &str, listen: &str) -> Result<ExitCode, Failure> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("a worker's name is letters, digits and '-'".into());
    }
    let said = |e: obscura_cluster::Error| Failure::Said(e.to_string());
    let root_hex = String::from_utf8(
        obscura_cluster::files::read(&cluster.join(SIMULATION_ROOT_FILE)).map_err(said)?,
    )
    .map_err(|_| "the simulation root is not text")?;
    let root: [u8; 32] = obscura_tokens::keyfile::from_hex(root_hex.trim())
        .ok_or("the simulation root is not 64 hex digits")?;
    let root = SimulationRoot::from_secret_bytes(&root);
    // The keepers' audit keys and threshold, from the cluster directory.
    let client = obscura_client::config::read_config(cluster).map_err(|e| e.to_string())?;
    let threshold = usize::from(client.keeper_threshold);
    let keepers = (1..=client.keepers.len())
        .map(|j| {
            let path = cluster.join(format!("keeper{j}")).join("audit-key.pub");
            std::fs::read_to_string(&path)
                .map(|k| k.trim().to_owned())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !(2..=keepers.len()).contains(&threshold) {
        return Err(format!(
            "{} has {} keepers and a keeper threshold of {threshold}: not a cluster with keepers",
            cluster.display(),
            keepers.len()
        )
        .into());
    }
    let nodes = crate::room::node_audit_keys(cluster)?;
    let dir = cluster.join("workers").join(name);
    if dir.exists() {
        return Err(format!("{} exists already", dir.display()).into());
    }
    obscura_cluster::files::create_private_dir(&cluster.join("workers")).map_err(said)?;
    obscura_cluster::files::create_private_dir(&dir).map_err(said)?;
    let platform = root.issue(&format!("worker {name}"), &mut rand_core::OsRng);
    obscura_cluster::files::write_private_atomic(&dir.join("platform.secret"), &platform.to_file())
        .map_err(said)?;
    let config = WorkerConfig {
        name: name.into(),
        listen: listen.into(),
        attestation: AttestationSource::Simulation,
        platform: PathBuf::from("platform.secret"),
        keepers,
        threshold,
        nodes,
        owner: client.owner_public_key.clone(),
        k: usize::from(client.k),
    };
    let path = dir.join("worker.json");
    obscura_cluster::files::write_atomic(
        &path,
        &serde_json::to_vec_pretty(&config).expect("a configuration serialises"),
    )
    .map_err(said)?;
    println!(
        "worker {name}: {} (run it with: obscura worker run {})",
        path.display(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Secrets held at most at once, the largest request taken, how long a challenge this worker
/// answered may be used for a delivery, and how many may wait.
const MAX_HELD: usize = 64;
const MAX_REQUEST: usize = 1 << 20;
const CHALLENGE_S: u64 = 120;
const MAX_CHALLENGES: usize = 1024;

struct Worker {
    key: PartyKey,
    producer: Box<dyn Producer>,
    keepers: Vec<ed25519_dalek::VerifyingKey>,
    threshold: usize,
    /// Challenges this worker made evidence for, until used or expired.
    answered: Mutex<HashMap<[u8; 32], u64>>,
    /// One report at a time (configfs-tsm and Gramine pass it through files).
    making: tokio::sync::Semaphore,
    held: Mutex<HashMap<[u8; 16], Zeroizing<Vec<u8>>>>,
    /// The clean room, when the configuration names the nodes and the owner.
    room: Option<room::RoomSide>,
    /// Its membership of the cluster's group, likewise.
    group: Option<group::GroupSide>,
}

async fn run(config_path: &Path) -> Result<ExitCode, Failure> {
    let text = std::fs::read(config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config: WorkerConfig =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let keepers = config
        .keepers
        .iter()
        .map(|k| obscura_cluster::ed25519_key(k))
        .collect::<Option<Vec<_>>>()
        .filter(|k| (2..=32).contains(&k.len()) && (2..=k.len()).contains(&config.threshold))
        .ok_or_else(|| {
            format!(
                "{}: keepers must be 2 to 32 Ed25519 keys, and the threshold between 2 and their number",
                config_path.display()
            )
        })?;
    let producer: Box<dyn Producer> = match config.attestation {
        AttestationSource::Simulation => {
            let path = obscura_cluster::server::beside(config_path, &config.platform);
            obscura_cluster::files::check_private(&path).map_err(|e| e.to_string())?;
            let bytes = obscura_cluster::files::read(&path).map_err(|e| e.to_string())?;
            let platform = SimulatedPlatform::from_file(&bytes).map_err(|e| e.to_string())?;
            let measurement = obscura_attest::producer::own_measurement()
                .map_err(|e| format!("cannot measure this executable: {e}"))?;
            Box::new(Simulated::new(platform, measurement))
        }
        AttestationSource::ConfigfsTsm => Box::new(obscura_attest::producer::ConfigfsTsm::new()),
        AttestationSource::SevGuest => Box::new(obscura_attest::producer::SevGuest),
        AttestationSource::Gramine => Box::new(obscura_attest::producer::Gramine::new()),
    };
    let platform = producer.platform();
    let room = room::RoomSide::load(&config.nodes, &config.owner, config.k)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let worker = Arc::new(Worker {
        key: PartyKey::generate(&mut rand_core::OsRng),
        producer,
        keepers,
        threshold: config.threshold,
        answered: Mutex::default(),
        making: tokio::sync::Semaphore::new(1),
        held: Mutex::default(),
        room,
        group: group::GroupSide::load(&config.name, &config.nodes, &config.owner),
    });
    let app = Router::new()
        .route("/v1/evidence", post(evidence))
        .route("/v1/deliver", post(deliver))
        .route("/v1/group/key-package", post(group::key_package))
        .route("/v1/group/identity", post(group::identity))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST))
        .merge(
            Router::new()
                .route("/v1/group/entries", post(group::entries))
                .layer(axum::extract::DefaultBodyLimit::max(
                    group::MAX_ENTRIES_BODY,
                )),
        )
        .merge(room::routes())
        .with_state(worker.clone());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("{}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "worker {} listening on http://{addr} ({platform}{}), key {}",
        config.name,
        if platform == obscura_attest::Platform::Simulation {
            ": SIMULATION, no TEE"
        } else {
            ""
        },
        obscura_tokens::keyfile::to_hex(&worker.key.public())
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

type Answer = Result<(StatusCode, String), (StatusCode, String)>;

fn refuse(status: StatusCode, why: impl Into<String>) -> (StatusCode, String) {
    (status, why.into())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /v1/evidence`: evidence binding this worker's key, the caller's context and nonce.
async fn evidence(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let request: EvidenceRequest = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let nonce: [u8; 32] = obscura_tokens::keyfile::from_hex(&request.nonce)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "nonce: 64 hex digits"))?;
    let context: [u8; 32] = obscura_tokens::keyfile::from_hex(&request.context)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "context: 64 hex digits"))?;
    {
        let mut answered = w.answered.lock().unwrap_or_else(|e| e.into_inner());
        let now = now();
        answered.retain(|_, expires| *expires > now);
        if answered.len() >= MAX_CHALLENGES {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many challenges waiting; ask again later",
            ));
        }
        answered.insert(nonce, now + CHALLENGE_S);
    }
    let data = binding::report_data(&Role::Worker, &w.key.public(), &context, &nonce);
    let evidence = make_evidence(&w, data).await?;
    let answer = EvidenceAnswer {
        party_key: obscura_tokens::keyfile::to_hex(&w.key.public()),
        evidence,
    };
    Ok((
        StatusCode::OK,
        serde_json::to_string(&answer).expect("an answer serialises"),
    ))
}

/// Evidence for `data`, one report at a time (waiting at most two seconds for the producer).
async fn make_evidence(
    w: &Arc<Worker>,
    data: [u8; 64],
) -> Result<obscura_attest::Evidence, (StatusCode, String)> {
    let _one = tokio::time::timeout(std::time::Duration::from_secs(2), w.making.acquire())
        .await
        .map_err(|_| refuse(StatusCode::SERVICE_UNAVAILABLE, "busy; ask again"))?
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let w2 = w.clone();
    tokio::task::spawn_blocking(move || w2.producer.evidence(&data, now()))
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// `POST /v1/deliver`: check every share's keeper signature and challenge, open it, and
/// rebuild the secret.
async fn deliver(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let delivery: Delivery = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let id: [u8; 16] = obscura_tokens::keyfile::from_hex(&delivery.secret)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "secret: 32 hex digits"))?;
    let (m, t) = (w.keepers.len(), w.threshold);
    if delivery.threshold != t || delivery.shares.len() < t || delivery.shares.len() > m {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("need {t} to {m} shares under threshold {t}"),
        ));
    }
    if w.held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&id)
    {
        return Err(refuse(
            StatusCode::CONFLICT,
            "this worker holds that secret already",
        ));
    }
    let mut shares: Vec<(u8, Vec<u8>)> = Vec::new();
    for s in &delivery.shares {
        shares.push(open_share(&w, &id, s, &shares)?);
    }
    let rebuilt = obscura_client::secrets::rebuild(&id, &shares, t).map_err(|_| {
        refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the shares do not rebuild a secret that passes its check",
        )
    })?;
    let received = Received {
        secret: delivery.secret.clone(),
        bytes: rebuilt.secret.len(),
        liars: rebuilt.liars.clone(),
    };
    let mut held = w.held.lock().unwrap_or_else(|e| e.into_inner());
    if held.len() >= MAX_HELD || held.contains_key(&id) {
        return Err(refuse(
            StatusCode::INSUFFICIENT_STORAGE,
            "this worker holds as many secrets as it keeps, or this one already",
        ));
    }
    held.insert(id, rebuilt.secret);
    Ok((
        StatusCode::OK,
        serde_json::to_string(&received).expect("a receipt serialises"),
    ))
}

/// One delivered share, taken only if its keeper signed its release to this worker's key for a
/// challenge this worker answered (each used once): nobody else can deliver it a secret of
/// their own making.
fn open_share(
    w: &Worker,
    id: &[u8; 16],
    s: &obscura_client::release::SealedShare,
    taken: &[(u8, Vec<u8>)],
) -> Result<(u8, Vec<u8>), (StatusCode, String)> {
    let keeper = s.keeper;
    let Some(key) = usize::from(keeper)
        .checked_sub(1)
        .and_then(|i| w.keepers.get(i))
    else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("no keeper {keeper}"),
        ));
    };
    if taken.iter().any(|(k, _)| *k == keeper) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("keeper {keeper} twice"),
        ));
    }
    let nonce: [u8; 32] = obscura_tokens::keyfile::from_hex(&s.nonce)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "nonce: 64 hex digits"))?;
    let signature: [u8; 64] = obscura_tokens::keyfile::from_hex(&s.signature)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "signature: 128 hex digits"))?;
    let statement = binding::release_statement(
        keeper,
        id,
        &nonce,
        &w.key.public(),
        &s.sealed.enc,
        &s.sealed.ciphertext,
    );
    key.verify_strict(
        &statement,
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| {
        refuse(
            StatusCode::FORBIDDEN,
            format!("keeper {keeper}'s signature over its release does not verify"),
        )
    })?;
    let fresh = w
        .answered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&nonce)
        .is_some_and(|expires| expires > now());
    if !fresh {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("keeper {keeper}'s share answers no challenge this worker has open"),
        ));
    }
    let share = w
        .key
        .open(&binding::release_purpose(keeper, id), &s.sealed)
        .map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("keeper {keeper}'s share: {e}"),
            )
        })?;
    Ok((keeper, share))
}
