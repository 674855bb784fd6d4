//! The keeper server: it holds one share of every band-token key and evaluates blinded
//! elements with it, for clients of the cluster only, within each client's budget.
//!
//! A keeper answers `POST /v1/keeper-evaluate` (a [`RequestBody::KeeperEvaluate`]) with, for
//! every node key asked for, its share applied to each blinded element and one batched DLEQ
//! proof against its public share of that key (RFC 9497, ristretto255-SHA512). It sees only
//! blinded elements, uniformly random group elements whatever the band values; it never sees a
//! token, an element a node stores, or which node the client will query with the results.
//!
//! Clients authenticate with the TLS client certificate the cluster CA made for them; the
//! certificate's digest names the client in the budget table and the audit log. `GET`-like
//! reads use `POST /v1/status` and `POST /v1/audit`, as at nodes.
//!
//! The configuration (JSON, no secret) and the sealed secrets (TLS key, audit key, key shares)
//! follow the node's layout ([`crate::config`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use ed25519_dalek::SigningKey;
use obscura_keeper::oprf::{self, Elements};
use obscura_keeper::session::ServerKeys;
use obscura_keeper::signing::{self, PeerKeys};
use obscura_keeper::threshold::{KeyShare, Rekey};
use obscura_proto::{
    ErrorCode, KeeperEvaluation, KeeperRekeyPart, Request, RequestBody, ResponseBody,
};
use obscura_store::keeper::{Budget, KeeperStore};
use obscura_tokens::keyfile::WrappingKey;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::accounts::{Accounts, Caller, LoginPolicy};
use crate::config::{
    open_secrets, read, read_config, seal_secrets, server_tls, wrapping_key, write_atomic, Error,
};
use crate::server::{
    accept_loop, error, now, proto_error, respond, scalar, store_error, wire_audit,
};
use crate::vault::Vault;

/// Purpose label of a keeper's sealed secrets.
pub const SECRETS_PURPOSE: &str = "keeper-secrets";

/// What `obscura cluster init` writes for one keeper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperConfig {
    /// This keeper's number, 1..=m: the x-coordinate of its shares.
    pub keeper: u8,
    /// Keepers in the cluster.
    pub m: u8,
    /// Keepers needed to evaluate.
    pub threshold: u8,
    /// Address to listen on.
    pub listen: String,
    /// The redb file (budgets, replay window, audit log).
    pub store: PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This keeper's certificate (PEM).
    pub cert: PathBuf,
    /// The sealed secrets.
    pub secrets: PathBuf,
    /// File holding the wrapping key, unless `OBSCURA_WRAPPING_KEY` is set.
    pub wrapping_key: PathBuf,
    /// Evaluations each client may ask per window.
    pub budget_evaluations: u64,
    /// Budget window, seconds.
    pub budget_window_s: u64,
    /// Allowed clock skew and replay window, seconds.
    pub replay_window_s: u64,
    /// How often the audit log is signed, seconds.
    pub checkpoint_interval_s: u64,
    /// The keyring: the storage key, one key per user secret, and the store's state counter
    /// (see [`crate::vault`]). Best on other media than the store. Default: beside the sealed
    /// secrets, with the extension `keyring`.
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    /// Every keeper's public peer key (hex), keeper 1 first: key generation seals its round-2
    /// packages to them.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Login limits.
    #[serde(default)]
    pub login: LoginPolicy,
    /// How long a session lasts, seconds.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_s: u64,
}

fn default_session_ttl() -> u64 {
    3600
}

/// One key share as sealed: whose key (node, version) and the share's scalar.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct SealedShare {
    /// The node whose tokens this key makes.
    pub node: u8,
    /// The key version.
    pub version: u32,
    /// The share, a canonical little-endian scalar.
    pub secret: [u8; 32],
}

/// The secrets sealed for one keeper.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct KeeperSecrets {
    /// TLS private key, PEM.
    pub tls_key_pem: String,
    /// Ed25519 key that signs audit checkpoints.
    pub audit_key: [u8; 32],
    /// Its shares of the token keys.
    pub shares: Vec<SealedShare>,
    /// Its OPAQUE keys ([`ServerKeys::to_bytes`]).
    pub opaque: Vec<u8>,
    /// Its peer key (a ristretto255 scalar) for key generation.
    pub peer_key: [u8; 32],
}

impl KeeperSecrets {
    /// A keeper's secrets with fresh audit, OPAQUE and peer keys; also returns the public peer
    /// key, which goes into every keeper's configuration.
    pub fn new<R: rand_core::RngCore + rand_core::CryptoRng>(
        tls_key_pem: String,
        shares: Vec<SealedShare>,
        rng: &mut R,
    ) -> (KeeperSecrets, [u8; 32]) {
        let (peer_key, peer_public) = signing::peer_key(rng);
        let secrets = KeeperSecrets {
            tls_key_pem,
            audit_key: SigningKey::generate(rng).to_bytes(),
            shares,
            opaque: ServerKeys::random(rng).to_bytes().to_vec(),
            peer_key: *peer_key,
        };
        (secrets, peer_public)
    }

    /// Seal for writing to disk.
    ///
    /// # Errors
    /// [`Error::Secrets`] if sealing fails.
    pub fn seal<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        key: &WrappingKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, Error> {
        seal_secrets(self, SECRETS_PURPOSE, key, rng)
    }
}

/// Everything a running keeper needs, loaded and checked.
pub struct LoadedKeeper {
    /// The configuration.
    pub config: KeeperConfig,
    /// TLS server configuration (client certificates required).
    pub tls: Arc<rustls::ServerConfig>,
    /// The store, opened.
    pub store: KeeperStore,
    /// Its key shares by (node, version).
    pub shares: HashMap<(u8, u32), KeyShare>,
    /// Audit signing key.
    pub audit_key: SigningKey,
    /// Where the sealed secrets are, to seal them again when the shares change.
    pub secrets_path: PathBuf,
    /// The key that seals them.
    pub wrapping: WrappingKey,
    /// The TLS key, sealed again with them.
    pub tls_key_pem: Zeroizing<String>,
    /// The account records' vault, checked against the keyring.
    pub vault: Vault,
    /// OPAQUE keys.
    pub opaque: ServerKeys,
    /// Peer keys for key generation (none if the configuration lists no peers).
    pub peers: Option<PeerKeys>,
    /// The OPAQUE keys and peer key as sealed, to seal them again with the shares.
    sealed_extra: (Zeroizing<Vec<u8>>, Zeroizing<[u8; 32]>),
}

/// Where a keeper's keyring is: as configured, else beside its sealed secrets.
pub fn keyring_path(config_path: &Path, config: &KeeperConfig) -> PathBuf {
    let base = config_path.parent().unwrap_or(Path::new("."));
    match &config.keyring {
        Some(p) => base.join(p),
        None => base.join(&config.secrets).with_extension("keyring"),
    }
}

/// An admin accepts that keeper's store was restored from an older copy: its state counter is
/// set to the store's. Returns the counter before and after. The keeper must be stopped.
///
/// # Errors
/// [`Error::File`], [`Error::Config`], [`Error::Secrets`], [`Error::Store`].
pub fn accept_restore(config_path: &Path) -> Result<(u64, u64), Error> {
    let config: KeeperConfig = read_config(config_path)?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let wrapping = wrapping_key(&base.join(&config.wrapping_key))?;
    let store = KeeperStore::open(&base.join(&config.store), config.keeper)?;
    Vault::accept_restore(
        &store,
        &keyring_path(config_path, &config),
        &wrapping,
        crate::server::now(),
    )
}

impl std::fmt::Debug for LoadedKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKeeper")
            .field("keeper", &self.config.keeper)
            .finish()
    }
}

impl LoadedKeeper {
    /// Read a keeper configuration file and everything it names.
    ///
    /// # Errors
    /// [`Error::File`], [`Error::Config`], [`Error::Secrets`] (wrong wrapping key, altered file,
    /// or a share that is not a scalar), [`Error::Tls`], [`Error::Store`].
    pub fn load(config_path: &Path) -> Result<LoadedKeeper, Error> {
        let bad = |reason: String| Error::Config {
            path: config_path.display().to_string(),
            reason,
        };
        let config: KeeperConfig = read_config(config_path)?;
        let base = config_path.parent().unwrap_or(Path::new("."));
        let at = |p: &Path| base.join(p);
        if config.keeper == 0 || config.keeper > config.m || config.threshold == 0 {
            return Err(bad(format!(
                "keeper {} of {} with threshold {} is out of range",
                config.keeper, config.m, config.threshold
            )));
        }
        let wrapping = wrapping_key(&at(&config.wrapping_key))?;
        let secrets: KeeperSecrets =
            open_secrets(&read(&at(&config.secrets))?, SECRETS_PURPOSE, &wrapping)?;
        let tls = server_tls(
            "keeper",
            config_path,
            &config.ca_cert,
            &config.cert,
            &secrets.tls_key_pem,
        )?;
        let shares = secrets
            .shares
            .iter()
            .map(|s| {
                KeyShare::from_bytes(config.keeper, &s.secret)
                    .map(|k| ((s.node, s.version), k))
                    .map_err(|e| Error::Secrets(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let store = KeeperStore::open(&at(&config.store), config.keeper)?;
        let vault = Vault::open(
            &store,
            &keyring_path(config_path, &config),
            wrapping.clone(),
        )?;
        let opaque = ServerKeys::from_bytes(&secrets.opaque).map_err(|_| {
            Error::Secrets(
                "the sealed secrets hold no OPAQUE keys (made by an older obscura): make the \
                 cluster again"
                    .into(),
            )
        })?;
        let peers = if config.peers.is_empty() {
            None
        } else {
            let publics = config
                .peers
                .iter()
                .map(|h| {
                    obscura_tokens::keyfile::hex32(h)
                        .ok_or_else(|| bad(format!("{h:?} is not a peer key")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(
                PeerKeys::new(config.keeper, &secrets.peer_key, &publics)
                    .map_err(|e| bad(format!("peers: {e}")))?,
            )
        };
        Ok(LoadedKeeper {
            vault,
            opaque,
            peers,
            sealed_extra: (
                Zeroizing::new(secrets.opaque.clone()),
                Zeroizing::new(secrets.peer_key),
            ),
            audit_key: SigningKey::from_bytes(&secrets.audit_key),
            secrets_path: at(&config.secrets),
            wrapping,
            tls_key_pem: Zeroizing::new(secrets.tls_key_pem.clone()),
            config,
            tls,
            store,
            shares,
        })
    }
}

/// The id a client's certificate gives it in budgets and audit entries: the first 16 bytes of
/// a BLAKE3 digest of the certificate (DER).
pub fn client_id(cert_der: &[u8]) -> [u8; 16] {
    let h = blake3::derive_key("obscura 2026 keeper client id", cert_der);
    h[..16].try_into().expect("16 bytes")
}

pub(crate) struct KeeperState {
    keeper: u8,
    window: u64,
    budget: Budget,
    store: KeeperStore,
    accounts: Accounts,
    shares: RwLock<HashMap<(u8, u32), KeyShare>>,
    audit_key: SigningKey,
    /// Held while the shares change and are sealed again, so changes apply one at a time.
    changing: Mutex<Sealing>,
}

/// What sealing the secrets again takes.
struct Sealing {
    path: PathBuf,
    wrapping: WrappingKey,
    tls_key_pem: Zeroizing<String>,
    opaque: Zeroizing<Vec<u8>>,
    peer_key: Zeroizing<[u8; 32]>,
}

#[derive(Clone)]
struct Connection {
    state: Arc<KeeperState>,
    /// `None` cannot happen behind the verifier, which requires a certificate; it is refused.
    client: Option<[u8; 16]>,
    /// The peer's address, for login limits per source.
    source: IpAddr,
}

impl KeeperState {
    fn process(
        &self,
        client: Option<[u8; 16]>,
        source: IpAddr,
        op: &str,
        bytes: &[u8],
    ) -> ResponseBody {
        if client.is_none() {
            return error(ErrorCode::BadRequest, "no client certificate");
        }
        let req = match Request::decode(bytes) {
            Ok(r) => r,
            Err(e) => return proto_error(e),
        };
        if req.body.path().strip_prefix("/v1/") != Some(op) {
            return error(ErrorCode::BadRequest, "operation does not match the path");
        }
        let now = now();
        if let Err(e) = self
            .store
            .admit_request(&req.request_id, req.timestamp, now, self.window)
        {
            return store_error(e);
        }
        let a = &self.accounts;
        let outcome = match &req.body {
            RequestBody::Audit | RequestBody::Status => Ok(self.public(&req.body, now)),
            RequestBody::KeeperRegister { user, request } => {
                a.register(&self.store, None, user, request)
            }
            RequestBody::KeeperRegisterFinish { user, upload } => {
                a.register_finish(&self.store, None, user, upload, now)
            }
            RequestBody::KeeperLoginStart { user, ke1 } => {
                a.login_start(&self.store, source, user, ke1, now)
            }
            RequestBody::KeeperLoginFinish { login, ke3 } => {
                a.login_finish(&self.store, login, ke3, now)
            }
            RequestBody::KeeperSealed { session, message } => {
                Ok(a.sealed(session, message, now, |caller, inner| {
                    match self.in_session(caller, &inner, now) {
                        Ok(body) | Err(body) => body,
                    }
                }))
            }
            _ => Err(error(
                ErrorCode::NoSession,
                "a keeper operation needs a session: log in (obscura login)",
            )),
        };
        match outcome {
            Ok(body) | Err(body) => body,
        }
    }

    /// What a keeper answers without a session: its status and audit log.
    fn public(&self, body: &RequestBody, now: u64) -> ResponseBody {
        match body {
            RequestBody::Audit => {
                let entries = self
                    .store
                    .audit_checkpoint(&self.audit_key, now)
                    .and_then(|_| self.store.audit_entries());
                match entries {
                    Ok(e) => wire_audit(e),
                    Err(e) => store_error(e),
                }
            }
            _ => match self.store.audit_entries() {
                // A keeper stores no image: `node` is its number, the counts are zero.
                Ok(e) => {
                    let mut key_versions: Vec<u32> = self
                        .shares
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .keys()
                        .map(|(_, v)| *v)
                        .collect();
                    key_versions.sort_unstable();
                    key_versions.dedup();
                    ResponseBody::Status {
                        node: self.keeper,
                        committed: 0,
                        pending: 0,
                        audit_entries: e.len() as u64,
                        key_versions,
                    }
                }
                Err(e) => store_error(e),
            },
        }
    }

    /// A request opened from a session, run as its caller.
    fn in_session(
        &self,
        caller: &Caller,
        req: &Request,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let a = &self.accounts;
        let admin = || {
            if caller.admin {
                Ok(())
            } else {
                Err(error(ErrorCode::Forbidden, "an admin operation"))
            }
        };
        match &req.body {
            RequestBody::KeeperEvaluate { version, batches } => {
                self.evaluate(caller.user, &req.request_id, *version, batches, now)
            }
            RequestBody::KeeperRekey { from, to, parts } => {
                admin()?;
                self.rekey(&req.request_id, *from, *to, parts, now)
            }
            RequestBody::KeeperRetire { version } => {
                admin()?;
                self.retire(&req.request_id, *version, now)
            }
            RequestBody::KeeperRegister { user, request } => {
                a.register(&self.store, Some(caller), user, request)
            }
            RequestBody::KeeperRegisterFinish { user, upload } => {
                a.register_finish(&self.store, Some(caller), user, upload, now)
            }
            RequestBody::KeeperUnlock { user } => a.unlock(&self.store, caller, user, now),
            RequestBody::KeeperLogout => {
                a.end(&caller.session);
                Ok(ResponseBody::Ok)
            }
            RequestBody::Audit | RequestBody::Status => Ok(self.public(&req.body, now)),
            RequestBody::SecretPut { .. }
            | RequestBody::SecretGet { .. }
            | RequestBody::SecretDelete { .. }
            | RequestBody::SecretList
            | RequestBody::UserEvents
            | RequestBody::DkgStart { .. }
            | RequestBody::DkgRound2 { .. }
            | RequestBody::DkgFinish { .. }
            | RequestBody::SignCommit { .. }
            | RequestBody::SignShare { .. } => a.user_op(&self.store, caller, &req.body, now),
            _ => Err(error(
                ErrorCode::BadRequest,
                "a keeper evaluates tokens, keeps user secrets and signs, changes its key \
                 shares, and shows its status and audit log; nothing else",
            )),
        }
    }

    /// Take shares of key version `to` for every node key: `ρ · k_j + z_j` from the shares of
    /// `from`. Once taken, the same request answers the same public shares; a different one
    /// for a version already held is refused.
    fn rekey(
        &self,
        request_id: &[u8; 16],
        from: u32,
        to: u32,
        parts: &[KeeperRekeyPart],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let mut sealing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let bad = |m: String| error(ErrorCode::BadRequest, m);
        if to <= from {
            return Err(bad("the next key version must be newer".into()));
        }
        let mut shares = self
            .shares
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut nodes: Vec<u8> = shares
            .keys()
            .filter(|(_, v)| *v == from)
            .map(|(n, _)| *n)
            .collect();
        let mut asked: Vec<u8> = parts.iter().map(|p| p.node).collect();
        nodes.sort_unstable();
        asked.sort_unstable();
        if nodes.is_empty() && parts.iter().all(|p| shares.contains_key(&(p.node, to))) {
            // Taken, and `from` already erased: report what is held.
        } else if nodes != asked {
            return Err(error(
                ErrorCode::UnknownKey,
                format!(
                    "keeper {} holds key version {from} for nodes {nodes:?}; the rotation names \
                     nodes {asked:?}",
                    self.keeper
                ),
            ));
        }
        let mut public = Vec::with_capacity(parts.len());
        let mut changed = false;
        for p in parts {
            let factor = scalar(&p.factor)?;
            let zero = Option::<obscura_keeper::Scalar>::from(
                obscura_keeper::Scalar::from_canonical_bytes(p.zero_share),
            )
            .ok_or_else(|| bad("a zero share is not a scalar".into()))?;
            let mut zero_shares = vec![obscura_keeper::Scalar::ZERO; usize::from(self.keeper)];
            zero_shares[usize::from(self.keeper) - 1] = zero;
            let rekey = Rekey {
                factor,
                zero_shares,
            };
            let next = match shares.get(&(p.node, from)) {
                Some(current) => Some(
                    rekey
                        .share(current)
                        .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?,
                ),
                None => None,
            };
            match (shares.get(&(p.node, to)), next) {
                (Some(held), Some(next)) if held.secret != next.secret => {
                    return Err(bad(format!(
                        "keeper {} already holds another share of node {}'s key version {to}: \
                         finish or abandon the rotation that made it",
                        self.keeper, p.node
                    )));
                }
                (Some(held), _) => public.push(oprf::serialize(&held.public())),
                (None, Some(next)) => {
                    public.push(oprf::serialize(&next.public()));
                    shares.insert((p.node, to), next);
                    changed = true;
                }
                (None, None) => unreachable!("checked: every node has a share of `from`"),
            }
        }
        if changed {
            self.seal_and_swap(&mut sealing, shares)?;
            let detail = format!("key version {from} -> {to}: shares taken for nodes {asked:?}");
            self.store
                .record_key_change(request_id, &detail, now)
                .map_err(store_error)?;
        }
        Ok(ResponseBody::KeeperRekeyed {
            keeper: self.keeper,
            public_shares: public,
        })
    }

    /// Erase every share of `version`, once each of those node keys has a newer version here.
    fn retire(
        &self,
        request_id: &[u8; 16],
        version: u32,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let mut sealing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut shares = self
            .shares
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let retired: Vec<u8> = shares
            .keys()
            .filter(|(_, v)| *v == version)
            .map(|(n, _)| *n)
            .collect();
        if retired.is_empty() {
            return Ok(ResponseBody::Ok);
        }
        if let Some(n) = retired
            .iter()
            .find(|&&n| !shares.keys().any(|&(m, v)| m == n && v > version))
        {
            return Err(error(
                ErrorCode::BadRequest,
                format!(
                    "keeper {} holds no newer key for node {n} than version {version}: it \
                     cannot be erased",
                    self.keeper
                ),
            ));
        }
        shares.retain(|(_, v), _| *v != version);
        self.seal_and_swap(&mut sealing, shares)?;
        let detail = format!("key version {version}: erased for nodes {retired:?}");
        self.store
            .record_key_change(request_id, &detail, now)
            .map_err(store_error)?;
        Ok(ResponseBody::Ok)
    }

    /// Seal `shares` over the secrets file, then serve them.
    fn seal_and_swap(
        &self,
        sealing: &mut Sealing,
        shares: HashMap<(u8, u32), KeyShare>,
    ) -> Result<(), ResponseBody> {
        let secrets = KeeperSecrets {
            tls_key_pem: sealing.tls_key_pem.to_string(),
            audit_key: self.audit_key.to_bytes(),
            opaque: sealing.opaque.to_vec(),
            peer_key: *sealing.peer_key,
            shares: shares
                .iter()
                .map(|(&(node, version), k)| SealedShare {
                    node,
                    version,
                    secret: *k.secret_bytes(),
                })
                .collect(),
        };
        let internal = |e: Error| error(ErrorCode::Internal, e.to_string());
        let sealed = secrets
            .seal(&sealing.wrapping, &mut rand_core::OsRng)
            .map_err(internal)?;
        write_atomic(&sealing.path, &sealed).map_err(internal)?;
        *self.shares.write().unwrap_or_else(|e| e.into_inner()) = shares;
        Ok(())
    }

    fn evaluate(
        &self,
        client: [u8; 16],
        request_id: &[u8; 16],
        version: u32,
        batches: &[obscura_proto::KeeperBatch],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        // Everything is checked before the budget is charged: a malformed request costs nothing.
        let shares = self.shares.read().unwrap_or_else(|e| e.into_inner());
        let mut work = Vec::with_capacity(batches.len());
        for b in batches {
            let share = shares.get(&(b.node, version)).ok_or_else(|| {
                error(
                    ErrorCode::UnknownKey,
                    format!(
                        "keeper {} holds no share of node {}'s key version {version}",
                        self.keeper, b.node
                    ),
                )
            })?;
            let elements = Elements::from_bytes(b.elements.clone())
                .map_err(|e| error(ErrorCode::BadRequest, format!("node {} batch: {e}", b.node)))?;
            work.push((share, elements));
        }
        let total: usize = work.iter().map(|(_, e)| e.len()).sum();
        self.store
            .charge(&client, request_id, total as u64, self.budget, now)
            .map_err(store_error)?;
        let mut rng = rand_core::OsRng;
        let batches = work
            .iter()
            .map(|(share, elements)| {
                oprf::evaluate_batch(&share.secret, elements, &mut rng).map(|ev| KeeperEvaluation {
                    elements: ev.elements,
                    proof: ev.proof.to_bytes().to_vec(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        Ok(ResponseBody::KeeperEvaluated {
            keeper: self.keeper,
            batches,
        })
    }
}

async fn handle(
    State(conn): State<Connection>,
    UrlPath(op): UrlPath<String>,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    // Scalar multiplications and the store are synchronous: keep them off the async workers.
    respond(move || conn.state.process(conn.client, conn.source, &op, &body)).await
}

/// Serve `keeper` on `listener` until `shutdown` completes; then sign the audit log's head.
///
/// # Errors
/// Only if the final audit checkpoint cannot be written.
pub async fn serve(
    keeper: LoadedKeeper,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), obscura_store::Error> {
    let state = Arc::new(KeeperState {
        keeper: keeper.config.keeper,
        window: keeper.config.replay_window_s,
        budget: Budget {
            evaluations: keeper.config.budget_evaluations,
            window_s: keeper.config.budget_window_s,
        },
        store: keeper.store,
        accounts: Accounts::new(
            keeper.config.keeper,
            keeper.config.m,
            keeper.config.threshold,
            keeper.opaque,
            keeper.vault,
            keeper.peers,
            keeper.config.login,
            keeper.config.session_ttl_s,
        ),
        shares: RwLock::new(keeper.shares),
        audit_key: keeper.audit_key,
        changing: Mutex::new(Sealing {
            path: keeper.secrets_path,
            wrapping: keeper.wrapping,
            tls_key_pem: keeper.tls_key_pem,
            opaque: keeper.sealed_extra.0,
            peer_key: keeper.sealed_extra.1,
        }),
    });
    let s = state.clone();
    let app_for = move |tls: &rustls::ServerConnection, peer: std::net::SocketAddr| {
        let client = tls
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| client_id(c.as_ref()));
        Router::new()
            .route("/v1/{op}", post(handle))
            .layer(DefaultBodyLimit::max(
                obscura_proto::account_limits::MAX_SEALED + (1 << 16),
            ))
            .with_state(Connection {
                state: s.clone(),
                client,
                source: peer.ip(),
            })
    };
    let tick = move || {
        state
            .store
            .audit_checkpoint(&state.audit_key, now())
            .map(drop)
    };
    // The last act, as every tick: sign the audit log's head.
    accept_loop(
        listener,
        TlsAcceptor::from(keeper.tls),
        app_for,
        Duration::from_secs(keeper.config.checkpoint_interval_s.max(1)),
        tick.clone(),
        shutdown,
        tick,
    )
    .await
}
