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

#[derive(Subcommand)]
pub(crate) enum WorkerCommand {
    /// Make a worker's configuration in DIR/workers/NAME, with a simulated platform endorsed by
    /// the cluster's simulation root.
    #[command(after_help = "Example:\n  \
        obscura worker init --cluster /tmp/demo --name w1 --listen 127.0.0.1:7601\n  \
        obscura worker run /tmp/demo/workers/w1/worker.json")]
    Init {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The worker's name.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7601")]
        listen: String,
    },
    /// Run a worker until stopped.
    Run {
        /// Its configuration file (worker.json).
        config: PathBuf,
    },
}

impl WorkerCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            WorkerCommand::Init {
                cluster,
                name,
                listen,
            } => init(&cluster, &name, &listen),
            WorkerCommand::Run { config } => run(&config).await,
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

/// Secrets held at most at once, and the largest request taken.
const MAX_HELD: usize = 64;
const MAX_REQUEST: usize = 1 << 20;

struct Worker {
    key: PartyKey,
    producer: Box<dyn Producer>,
    held: Mutex<HashMap<[u8; 16], Zeroizing<Vec<u8>>>>,
}

async fn run(config_path: &Path) -> Result<ExitCode, Failure> {
    let text = std::fs::read(config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config: WorkerConfig =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
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
    let worker = Arc::new(Worker {
        key: PartyKey::generate(&mut rand_core::OsRng),
        producer,
        held: Mutex::default(),
    });
    let app = Router::new()
        .route("/v1/evidence", post(evidence))
        .route("/v1/deliver", post(deliver))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST))
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

fn refuse(status: StatusCode, why: impl Into<String>) -> (StatusCode, String) {
    (status, why.into())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /v1/evidence`: evidence binding this worker's key, the caller's context and nonce.
async fn evidence(
    State(w): State<Arc<Worker>>,
    body: Bytes,
) -> Result<(StatusCode, String), (StatusCode, String)> {
    let request: EvidenceRequest = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let nonce: [u8; 32] = obscura_tokens::keyfile::from_hex(&request.nonce)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "nonce: 64 hex digits"))?;
    let context: [u8; 32] = obscura_tokens::keyfile::from_hex(&request.context)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "context: 64 hex digits"))?;
    let data = binding::report_data(&Role::Worker, &w.key.public(), &context, &nonce);
    let w2 = w.clone();
    let evidence = tokio::task::spawn_blocking(move || w2.producer.evidence(&data, now()))
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let answer = EvidenceAnswer {
        party_key: obscura_tokens::keyfile::to_hex(&w.key.public()),
        evidence,
    };
    Ok((
        StatusCode::OK,
        serde_json::to_string(&answer).expect("an answer serialises"),
    ))
}

/// `POST /v1/deliver`: open every share sealed to this worker and rebuild the secret.
async fn deliver(
    State(w): State<Arc<Worker>>,
    body: Bytes,
) -> Result<(StatusCode, String), (StatusCode, String)> {
    use sha2::Digest;
    let delivery: Delivery = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let id: [u8; 16] = obscura_tokens::keyfile::from_hex(&delivery.secret)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "secret: 32 hex digits"))?;
    if delivery.threshold < 2 || delivery.shares.len() < delivery.threshold {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "fewer shares than the threshold",
        ));
    }
    let mut shares = Vec::new();
    for s in &delivery.shares {
        let share = w
            .key
            .open(&binding::release_purpose(s.keeper, &id), &s.sealed)
            .map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("keeper {}'s share: {e}", s.keeper),
                )
            })?;
        shares.push((s.keeper, share));
    }
    let rebuilt =
        obscura_client::secrets::rebuild(&id, &shares, delivery.threshold).map_err(|_| {
            refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the shares do not rebuild a secret that passes its check",
            )
        })?;
    let received = Received {
        secret: delivery.secret.clone(),
        bytes: rebuilt.secret.len(),
        sha256: obscura_tokens::keyfile::to_hex(&sha2::Sha256::digest(&rebuilt.secret[..])),
        liars: rebuilt.liars.clone(),
    };
    let mut held = w.held.lock().unwrap_or_else(|e| e.into_inner());
    if held.len() >= MAX_HELD && !held.contains_key(&id) {
        return Err(refuse(
            StatusCode::INSUFFICIENT_STORAGE,
            "this worker holds as many secrets as it keeps",
        ));
    }
    held.insert(id, rebuilt.secret);
    Ok((
        StatusCode::OK,
        serde_json::to_string(&received).expect("a receipt serialises"),
    ))
}
