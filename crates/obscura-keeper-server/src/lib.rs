//! The keeper server: it holds one share of every band-token key and evaluates blinded
//! elements with it, for clients of the cluster only, within each client's budget.
//!
//! A keeper answers `POST /v1/keeper-evaluate` (a [`KeeperBody::KeeperEvaluate`]) with, for
//! every token key asked for, its share applied to each blinded element and one batched DLEQ
//! proof against its public share of that key (RFC 9497, ristretto255-SHA512). It sees only
//! blinded elements, uniformly random group elements whatever the band values; it never sees a
//! token, an element a node stores, or which node the client will query with the results.
//!
//! Clients connect with the TLS client certificate the cluster CA made; everything but the
//! keeper's status, logins and the cluster's first registration runs in a user's OPAQUE session
//! ([`crate::accounts`]), which names the user in budgets and audit entries. The keeper also
//! holds a share of the cluster's capability key: `T` keepers together sign a short-lived
//! capability for a logged-in user, which nodes check on every request.
//!
//! Changes to the key shares (a rotation's rekey and retire) need an admin's session and the
//! data owner's signed order; a rekey's zero shares must be committed and share zero.
//!
//! An attesting keeper starts without token-key shares. The data owner appraises its evidence
//! and sends its shares sealed to the HPKE key that evidence binds, with a signed order
//! ([`KeeperBody::Provision`]); the keeper keeps them sealed under its platform's key for its own
//! measurement ([`obscura_cluster::keeper::seal_bound_shares`]), so the same files run by
//! another build do not open them, and a keeper that restarts opens them only as the same build.
//!
//! The configuration ([`KeeperConfig`], JSON, no secret) and the sealed secrets
//! ([`KeeperSecrets`]: TLS key, audit key, key shares, OPAQUE keys, peer key, capability key
//! share) are opened as the node's are ([`obscura_cluster::server::open_server`]).
//!
//! Running keeper 2 of a cluster directory, as `obscura keeper run` does (compiled here, not
//! run: it needs the cluster's files):
//!
//! ```no_run
//! use obscura_keeper_server::LoadedKeeper;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let keeper = LoadedKeeper::load(std::path::Path::new("cluster/keeper2/keeper.json"))?;
//! let listener = tokio::net::TcpListener::bind(&keeper.config.listen).await?;
//! let stop = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! // Sessions opened before a restart go on; the audit log's head is signed on the way out.
//! obscura_keeper_server::serve(keeper, listener, stop).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use ed25519_dalek::{SigningKey, VerifyingKey};
use obscura_keeper::oprf::{self, Elements};
use obscura_keeper::session::ServerKeys;
use obscura_keeper::signing::{self, PeerKeys};
use obscura_keeper::threshold::{KeyShare, Rekey};
use obscura_proto::{
    roles, Body, ErrorCode, KeeperBody, KeeperEvaluation, KeeperRekeyPart, ResponseBody,
};
use obscura_sharing::order::Order;
use obscura_store::keeper::{Budget, KeeperStore};
use obscura_tokens::keyfile::WrappingKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use obscura_cluster::ed25519_key;
use obscura_cluster::files::{read_config, wrapping_key, write_private_atomic};
use obscura_cluster::keeper::{
    bound_shares_purpose, keyring_path, open_bound_shares, seal_bound_shares, KeeperConfig,
    KeeperSecrets, SealedShare,
};
use obscura_cluster::server::{beside, open_server, Opened};
use obscura_server::{error, now, proto_error, scalar, store_error, wire_audit, Error, Guard};

use crate::accounts::{Accounts, Caller};
use crate::vault::Vault;

/// A request to a keeper: it parses only a keeper's operations.
type Request = obscura_proto::Request<KeeperBody>;

pub mod accounts;
mod recovery;
pub mod vault;

/// Everything a running keeper needs, loaded and checked.
pub struct LoadedKeeper {
    /// The configuration.
    pub config: KeeperConfig,
    /// The metrics listener its configuration names, bound.
    pub metrics: Option<std::net::TcpListener>,
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
    /// The data owner's key, for rekey and retire orders.
    pub owner: VerifyingKey,
    /// Its share of the capability key, and the key's public package.
    pub capability: (signing::KeyPackage, signing::PublicKeyPackage),
    /// The bootstrap code's digest.
    pub bootstrap: [u8; 32],
    /// What is sealed besides the shares, to seal it again with them.
    sealed_extra: SealedExtra,
    /// Its attestation (none when its configuration names no evidence source).
    pub attester: Option<obscura_server::attest::Attester>,
    /// The key its token-key shares are sealed under, bound to its platform and measurement, or
    /// why its platform gives none (none at all when it does not attest).
    bound_key: Option<Result<Zeroizing<[u8; 32]>, String>>,
    /// The cluster's CA certificate.
    cluster: Vec<u8>,
    /// Why the token-key shares sealed to its platform do not open under this build, when
    /// they do not: it then starts holding none, until they are recovered.
    pub stranded: Option<String>,
}

/// The sealed secrets other than the token-key shares, kept to seal them again whole.
struct SealedExtra {
    opaque: Zeroizing<Vec<u8>>,
    peer_key: Zeroizing<[u8; 32]>,
    capability_key: Zeroizing<Vec<u8>>,
    capability_public: Vec<u8>,
    simulated_platform: Option<Zeroizing<String>>,
}

/// What a stopped keeper's operator works on at its machine: its configuration, its wrapping
/// key and its store.
fn stopped(config_path: &Path) -> Result<(KeeperConfig, WrappingKey, KeeperStore), Error> {
    let config: KeeperConfig = read_config(config_path)?;
    let wrapping = wrapping_key(&beside(config_path, &config.files.wrapping_key))?;
    let store = KeeperStore::open(&beside(config_path, &config.files.store), config.keeper)?;
    Ok((config, wrapping, store))
}

/// An admin accepts that keeper's store was restored from an older copy: its state counter is
/// set to the store's. Returns the counter before and after. The keeper must be stopped.
///
/// # Errors
/// [`Error::Files`] (configuration, wrapping key, keyring), [`Error::Store`].
pub fn accept_restore(config_path: &Path) -> Result<(u64, u64), Error> {
    let (config, wrapping, store) = stopped(config_path)?;
    Vault::accept_restore(
        &store,
        &keyring_path(config_path, &config),
        config.keeper,
        &wrapping,
        now(),
    )
}

/// The local operator lifts `user`'s login lockout at the stopped keeper whose configuration is
/// `config_path` (for when the only admin is locked out). Recorded in the keeper's audit log.
///
/// # Errors
/// [`Error::Files`] (configuration, wrapping key, keyring), [`Error::Store`].
pub fn unlock_locally(config_path: &Path, user: &str) -> Result<(), Error> {
    let (config, wrapping, store) = stopped(config_path)?;
    let vault = Vault::open(
        &store,
        &keyring_path(config_path, &config),
        config.keeper,
        wrapping,
    )?;
    crate::accounts::unlock_locally(&store, &vault, user, now())
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
    /// [`Error::Files`] for a configuration out of range or its files (unreadable, open to other
    /// users, secrets that do not open as this keeper's or hold a share that is not a scalar,
    /// unusable TLS material); [`Error::Store`].
    pub fn load(config_path: &Path) -> Result<LoadedKeeper, Error> {
        let bad = |reason: String| Error::config(config_path, reason);
        let config: KeeperConfig = read_config(config_path)?;
        let metrics = obscura_server::metrics::bind(config.metrics.as_deref()).map_err(bad)?;
        let at = |p: &Path| beside(config_path, p);
        if config.keeper == 0 || config.keeper > config.m || config.threshold == 0 {
            return Err(bad(format!(
                "keeper {} of {} with threshold {} is out of range",
                config.keeper, config.m, config.threshold
            )));
        }
        if config.threshold < 2 {
            return Err(bad(
                "a keeper threshold below 2 would let one keeper sign capabilities alone".into(),
            ));
        }
        let owner = ed25519_key(&config.owner_public_key)
            .ok_or_else(|| bad("owner_public_key is not an Ed25519 public key".into()))?;
        let bootstrap = obscura_tokens::keyfile::hex32(&config.bootstrap_digest)
            .ok_or_else(|| bad("bootstrap_digest is not 64 hex digits".into()))?;
        let Opened {
            secrets,
            wrapping,
            tls,
        } = open_server::<KeeperSecrets>(config_path, config.keeper, &config.files)?;
        let capability = (
            signing::key_package_from(&secrets.capability_key)
                .map_err(|e| Error::secrets(format!("capability key: {e}")))?,
            signing::public_package_from(&secrets.capability_public)
                .map_err(|e| Error::secrets(format!("capability key: {e}")))?,
        );
        let cluster = obscura_cluster::files::read(&at(&config.files.ca_cert))?;
        let attester = obscura_server::attest::Attester::load(
            config_path,
            config.attestation,
            secrets.simulated_platform.as_deref(),
            obscura_attest::Role::Keeper,
            config.keeper,
            &cluster,
        )?;
        let bound_key = attester.as_ref().map(|a| {
            a.sealing_key(bound_shares_purpose(config.keeper).as_bytes())
                .map_err(|e| e.to_string())
        });
        if attester.is_some() && !secrets.shares.is_empty() {
            return Err(Error::secrets(format!(
                "keeper {} attests, and its sealed secrets hold token-key shares outside its \
                 platform's sealing (a cluster made by an older obscura: make it again): an \
                 attesting keeper takes its shares only from the data owner, after its appraisal",
                config.keeper
            )));
        }
        let mut stranded = None;
        let bound = match (&secrets.bound_shares, &bound_key) {
            (None, _) => Vec::new(),
            // Another build (an upgrade) or another machine: the shares stay sealed where they
            // are, and this build starts holding none, until the data owner has the other
            // keepers give them back to it, attested (`obscura cluster recover`).
            (Some(sealed), Some(Ok(key))) => open_bound_shares(sealed, config.keeper, key)
                .unwrap_or_else(|_| {
                    stranded = Some(format!(
                        "keeper {}'s token-key shares are sealed to another build or platform \
                         (this executable measures otherwise, or this is another machine): it \
                         holds none until they are recovered (obscura cluster recover --keeper \
                         {})",
                        config.keeper, config.keeper
                    ));
                    Vec::new()
                }),
            (Some(_), Some(Err(why))) => {
                return Err(Error::secrets(format!(
                    "keeper {}'s token-key shares are sealed to its platform, which gives no \
                     sealing key now: {why}",
                    config.keeper
                )))
            }
            (Some(_), None) => {
                return Err(bad(
                    "its token-key shares are sealed to an attested platform, and the \
                     configuration names no attestation source"
                        .into(),
                ))
            }
        };
        let shares = secrets
            .shares
            .iter()
            .chain(&bound)
            .map(|s| {
                KeyShare::from_bytes(config.keeper, &s.secret)
                    .map(|k| ((s.node, s.version), k))
                    .map_err(|e| Error::secrets(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let store = KeeperStore::open(&at(&config.files.store), config.keeper)?;
        let keyring = keyring_path(config_path, &config);
        if keyring.exists() {
            obscura_cluster::files::check_private(&keyring)?;
        }
        let vault = Vault::open(&store, &keyring, config.keeper, wrapping.clone())?;
        let opaque = ServerKeys::from_bytes(&secrets.opaque).map_err(|_| {
            Error::secrets(
                "the sealed secrets hold no OPAQUE keys (made by an older obscura): make the \
                 cluster again",
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
            metrics,
            vault,
            opaque,
            peers,
            owner,
            capability,
            bootstrap,
            sealed_extra: SealedExtra {
                opaque: Zeroizing::new(secrets.opaque.clone()),
                peer_key: Zeroizing::new(secrets.peer_key),
                capability_key: Zeroizing::new(secrets.capability_key.clone()),
                capability_public: secrets.capability_public.clone(),
                simulated_platform: secrets.simulated_platform.clone().map(Zeroizing::new),
            },
            attester,
            bound_key,
            cluster,
            stranded,
            audit_key: SigningKey::from_bytes(&secrets.audit_key),
            secrets_path: at(&config.files.secrets),
            wrapping,
            tls_key_pem: Zeroizing::new(secrets.tls_key_pem.clone()),
            config,
            tls,
            store,
            shares,
        })
    }
}

pub(crate) struct KeeperState {
    metrics: Arc<obscura_server::metrics::Metrics>,
    /// Band elements evaluated, for the metrics.
    evaluated: obscura_server::metrics::Counter,
    /// Each grant's share of its client's budget used.
    budget_used: obscura_server::metrics::Histogram,
    keeper: u8,
    threshold: u8,
    window: u64,
    budget: Budget,
    store: KeeperStore,
    accounts: Accounts,
    shares: RwLock<HashMap<(u8, u32), KeyShare>>,
    audit_key: SigningKey,
    owner: VerifyingKey,
    /// Held while the shares change and are sealed again, so changes apply one at a time.
    changing: Mutex<Sealing>,
    /// Requests refused before any session since the last summary entry.
    refused: std::sync::atomic::AtomicU64,
    /// Its attestation.
    attester: Option<obscura_server::attest::Attester>,
    /// The cluster's CA certificate, whose digest a keeper's evidence binds.
    cluster: Vec<u8>,
}

/// What sealing the secrets again takes.
struct Sealing {
    path: PathBuf,
    wrapping: WrappingKey,
    tls_key_pem: Zeroizing<String>,
    extra: SealedExtra,
    /// With attestation, the key the token-key shares are sealed under, or why there is none.
    bound_key: Option<Result<Zeroizing<[u8; 32]>, String>>,
}

#[derive(Clone)]
struct Connection {
    state: Arc<KeeperState>,
    guard: Arc<Guard>,
    /// The peer's address, for login limits per source.
    source: IpAddr,
}

impl KeeperState {
    /// Answer a request that arrived at `started`, counted in the metrics under its operation
    /// (`invalid` until it is read: no label comes from the client). A request inside a
    /// session counts as `keeper-sealed`, with the outer answer's outcome.
    fn process(
        &self,
        source: IpAddr,
        op: &str,
        bytes: &[u8],
        started: std::time::Instant,
    ) -> ResponseBody {
        let mut label = "invalid";
        let answer = self.answer(source, op, bytes, &mut label);
        self.metrics.answered(label, &answer, started.elapsed());
        answer
    }

    fn answer(
        &self,
        source: IpAddr,
        op: &str,
        bytes: &[u8],
        label: &mut &'static str,
    ) -> ResponseBody {
        let req = match Request::decode(bytes) {
            Ok(r) => r,
            Err(e) => return proto_error(e),
        };
        if req.body.path().strip_prefix("/v1/") != Some(op) {
            return error(ErrorCode::BadRequest, "operation does not match the path");
        }
        *label = req.body.path().strip_prefix("/v1/").unwrap_or("invalid");
        let now = now();
        // Evidence first, outside any session and without touching the store: a client asks
        // for it before it sends this keeper anything else.
        if let KeeperBody::Evidence { nonce } = &req.body {
            return obscura_server::attest::Attester::answer(self.attester.as_ref(), nonce, now);
        }
        if let Err(e) = self
            .store
            .admit_request(&req.request_id, req.timestamp, now, self.window)
        {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return store_error(e);
        }
        let a = &self.accounts;
        let outcome = match &req.body {
            KeeperBody::Status => Ok(self.status()),
            KeeperBody::Provision {
                party_key,
                enc,
                ciphertext,
                signature,
            } => self.provision(&req.request_id, party_key, enc, ciphertext, signature, now),
            KeeperBody::RecoverPart {
                plan,
                evidence,
                signature,
            } => self.recover_part(&req.request_id, plan, evidence, signature, now),
            KeeperBody::Recover {
                plan,
                signature,
                parts,
                receipt_enc,
                receipt_ciphertext,
            } => self.recover(
                &req.request_id,
                plan,
                signature,
                parts,
                &obscura_attest::seal::Sealed {
                    enc: receipt_enc.clone(),
                    ciphertext: receipt_ciphertext.clone(),
                },
                now,
            ),
            KeeperBody::KeeperRegister { .. } | KeeperBody::KeeperRegisterFinish { .. } => {
                self.registration(None, source, &req.body, now)
            }
            KeeperBody::KeeperLoginStart { user, ke1 } => {
                a.login_start(&self.store, source, user, ke1, now)
            }
            KeeperBody::KeeperLoginFinish { login, ke3 } => {
                a.login_finish(&self.store, login, ke3, now)
            }
            KeeperBody::KeeperSealed { session, message } => Ok(a.sealed(
                &self.store,
                session,
                message,
                now,
                |caller, inner| match self.in_session(caller, source, &inner, now) {
                    Ok(body) | Err(body) => body,
                },
            )),
            _ => Err(error(
                ErrorCode::NoSession,
                "a keeper operation needs a session: log in (obscura login)",
            )),
        };
        match outcome {
            Ok(body) | Err(body) => body,
        }
    }

    /// A registration step, by `caller` (an administrator's session) or by anyone (the first
    /// account, with the bootstrap code).
    fn registration(
        &self,
        caller: Option<&Caller>,
        source: IpAddr,
        body: &KeeperBody,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let a = &self.accounts;
        match body {
            KeeperBody::KeeperRegister {
                user,
                request,
                bootstrap,
            } => a.register(
                &self.store,
                caller,
                source,
                user,
                request,
                bootstrap.as_ref(),
                now,
            ),
            KeeperBody::KeeperRegisterFinish {
                user,
                upload,
                roles,
                bootstrap,
            } => a.register_finish(
                &self.store,
                caller,
                user,
                upload,
                *roles,
                bootstrap.as_ref(),
                now,
            ),
            _ => Err(error(ErrorCode::BadRequest, "not a registration")),
        }
    }

    /// What a keeper answers anyone: its number, audit length and key versions.
    fn status(&self) -> ResponseBody {
        let (_, total) = match self.store.audit_page(0, 0) {
            Ok(page) => page,
            Err(e) => return store_error(e),
        };
        let mut key_versions: Vec<u32> = self
            .shares
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|(_, v)| *v)
            .collect();
        key_versions.sort_unstable();
        key_versions.dedup();
        // A keeper stores no image: `node` is its number, the counts are zero.
        ResponseBody::Status {
            node: self.keeper,
            committed: 0,
            pending: 0,
            audit_entries: total,
            key_versions,
        }
    }

    /// A request opened from a session, run as its caller.
    fn in_session(
        &self,
        caller: &Caller,
        source: IpAddr,
        req: &Request,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        // The sealed request's own time: a request held back by whoever carried it is refused
        // once older than the replay window, though its number still opens.
        if req.timestamp.abs_diff(now) > self.window {
            return Err(error(
                ErrorCode::Stale,
                "the request is outside the replay window: check this machine's clock",
            ));
        }
        let a = &self.accounts;
        let needs = |any: &[u8], what: &str| {
            if any.iter().any(|r| caller.roles & r != 0) {
                Ok(())
            } else {
                Err(error(
                    ErrorCode::Forbidden,
                    format!("{what} needs the {} role", roles::names(any[0]).join("")),
                ))
            }
        };
        match &req.body {
            // In a session as outside one: evidence is given to whoever asks.
            KeeperBody::Evidence { nonce } => Ok(obscura_server::attest::Attester::answer(
                self.attester.as_ref(),
                nonce,
                now,
            )),
            KeeperBody::KeeperEvaluate { version, batches } => {
                needs(&[roles::QUERIER, roles::OWNER], "token evaluation")?;
                self.evaluate(caller.user, &req.request_id, *version, batches, now)
            }
            KeeperBody::KeeperRekey {
                from,
                to,
                parts,
                signature,
            } => {
                needs(&[roles::ADMIN], "changing key shares")?;
                Order::Rekey {
                    from: *from,
                    to: *to,
                    plan: obscura_proto::rekey_digest(*from, *to, parts),
                }
                .verify(&self.owner, signature)
                .map_err(|_| {
                    error(
                        ErrorCode::Rejected,
                        "the rekey is not the data owner's order for this plan",
                    )
                })?;
                self.rekey(&req.request_id, *from, *to, parts, now)
            }
            KeeperBody::KeeperRetire { version, signature } => {
                needs(&[roles::ADMIN], "erasing key shares")?;
                Order::Retire { version: *version }
                    .verify(&self.owner, signature)
                    .map_err(|_| {
                        error(
                            ErrorCode::Rejected,
                            "erasing a key version needs the data owner's order",
                        )
                    })?;
                self.retire(&req.request_id, *version, now)
            }
            KeeperBody::KeeperRegister { .. } | KeeperBody::KeeperRegisterFinish { .. } => {
                self.registration(Some(caller), source, &req.body, now)
            }
            KeeperBody::KeeperUnlock { user } => a.unlock(&self.store, caller, user, now),
            KeeperBody::KeeperLogout => {
                a.end(&self.store, &caller.session, now)?;
                Ok(ResponseBody::Ok)
            }
            KeeperBody::Status => Ok(self.status()),
            KeeperBody::Audit { from, max } => {
                needs(&[roles::AUDITOR, roles::ADMIN], "reading the audit log")?;
                let (entries, total) = self
                    .store
                    .audit_page(*from, (*max).min(obscura_proto::limits::MAX_AUDIT_PAGE))
                    .map_err(store_error)?;
                Ok(wire_audit(entries, total))
            }
            KeeperBody::Checkpoint => {
                needs(&[roles::AUDITOR, roles::ADMIN], "signing the audit log")?;
                let seq = self
                    .store
                    .audit_checkpoint(&self.audit_key, now)
                    .map_err(store_error)?;
                Ok(ResponseBody::Checkpointed { seq })
            }
            KeeperBody::ReleaseFinish {
                id,
                nonce,
                party_key,
                evidence,
            } => a.release(
                &self.store,
                caller,
                id,
                nonce,
                party_key,
                evidence,
                &self.audit_key,
                now,
            ),
            KeeperBody::SecretPut { .. }
            | KeeperBody::SecretPutReleased { .. }
            | KeeperBody::ReleaseStart { .. }
            | KeeperBody::SecretGet { .. }
            | KeeperBody::SecretDelete { .. }
            | KeeperBody::SecretList
            | KeeperBody::UserEvents
            | KeeperBody::DkgStart { .. }
            | KeeperBody::DkgRound2 { .. }
            | KeeperBody::DkgFinish { .. }
            | KeeperBody::SignCommit { .. }
            | KeeperBody::SignShare { .. }
            | KeeperBody::CapabilityCommit
            | KeeperBody::CapabilityShare { .. } => a.user_op(&self.store, caller, &req.body, now),
            KeeperBody::KeeperLoginStart { .. }
            | KeeperBody::KeeperLoginFinish { .. }
            | KeeperBody::KeeperSealed { .. }
            | KeeperBody::Provision { .. }
            | KeeperBody::RecoverPart { .. }
            | KeeperBody::Recover { .. } => Err(error(
                ErrorCode::BadRequest,
                "logins, sealed messages, provisioning and recovery are sent as they are, not \
                 inside a session",
            )),
        }
    }

    /// Take the token-key shares the data owner sealed to this keeper's attested HPKE key, once:
    /// the owner's order must name this keeper, its current key and this delivery; shares of a
    /// key it already holds must be the same. They are sealed at once under the platform's key
    /// for this build. Answers the public shares of what it holds from the delivery.
    fn provision(
        &self,
        request_id: &[u8; 16],
        party_key: &[u8; 32],
        enc: &[u8],
        ciphertext: &[u8],
        signature: &[u8],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let refuse = |m: String| error(ErrorCode::Rejected, m);
        let Some(attester) = &self.attester else {
            return Err(refuse(
                "this keeper does not attest, so it takes no token-key shares by provisioning"
                    .into(),
            ));
        };
        Order::Provision {
            keeper: self.keeper,
            party_key: *party_key,
            delivery: obscura_proto::provision_digest(enc, ciphertext),
        }
        .verify(&self.owner, signature)
        .map_err(|_| {
            refuse(
                "token-key shares are taken only on the data owner's order for this keeper".into(),
            )
        })?;
        if *party_key != attester.key().public() {
            return Err(refuse(
                "the shares are sealed to another key of this keeper (it restarted since it \
                 was appraised): appraise it again"
                    .into(),
            ));
        }
        let mut sealing = self.sealing_for_shares()?;
        let sealed = obscura_attest::seal::Sealed {
            enc: enc.to_vec(),
            ciphertext: ciphertext.to_vec(),
        };
        let opened = Zeroizing::new(
            attester
                .key()
                .open(
                    &obscura_cluster::provision::delivery_purpose(self.keeper),
                    &sealed,
                )
                .map_err(|e| refuse(e.to_string()))?,
        );
        let delivery: obscura_cluster::provision::Delivery = postcard::from_bytes(&opened)
            .map_err(|_| error(ErrorCode::BadRequest, "the delivery holds no shares"))?;
        let incoming = delivery
            .shares
            .iter()
            .map(|g| {
                KeyShare::from_bytes(self.keeper, &g.secret)
                    .map(|share| (g.node, g.version, share))
                    .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.take_shares(
            &mut sealing,
            request_id,
            &incoming,
            "a keeper takes its shares once",
            "provisioned by the data owner",
            &delivery.receipt,
            now,
        )
    }

    /// The lock under which token-key shares change, for taking shares from outside: refused
    /// where the platform gives no sealing key to keep them bound to this build.
    fn sealing_for_shares(&self) -> Result<std::sync::MutexGuard<'_, Sealing>, ResponseBody> {
        let sealing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Err(why)) = &sealing.bound_key {
            return Err(error(
                ErrorCode::Rejected,
                format!(
                    "this keeper's platform gives no sealing key, so it cannot hold token-key \
                     shares bound to its build: {why}"
                ),
            ));
        }
        Ok(sealing)
    }

    /// Take `incoming` shares as `(node, version, share)`, delivered (`from` says by whom, for
    /// the audit log), once: a keeper that holds shares takes none it does not hold already (a
    /// delivery repeated because its answer was lost is answered again; a recorded one replayed
    /// after a retire would otherwise bring a retired key version back; `once` ends the
    /// refusal). Answers the public shares of what it holds from them, with the receipt keyed
    /// by `receipt`.
    #[allow(clippy::too_many_arguments)]
    fn take_shares(
        &self,
        sealing: &mut Sealing,
        request_id: &[u8; 16],
        incoming: &[(u8, u32, KeyShare)],
        once: &str,
        from: &str,
        receipt: &[u8; 32],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let mut shares = self
            .shares
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let holding = !shares.is_empty();
        let mut public = Vec::with_capacity(incoming.len());
        let mut taken = Vec::new();
        for (node, version, share) in incoming {
            match shares.get(&(*node, *version)) {
                Some(held) if held.secret == share.secret => {}
                _ if holding => {
                    return Err(error(
                        ErrorCode::Rejected,
                        format!(
                            "keeper {} holds its token-key shares already, and not this share \
                             of node {node}'s key version {version}: {once}",
                            self.keeper
                        ),
                    ))
                }
                _ => {
                    taken.push((*node, *version));
                    shares.insert((*node, *version), share.clone());
                }
            }
            public.push((*node, *version, oprf::serialize(&share.public())));
        }
        if !taken.is_empty() {
            self.seal_and_swap(sealing, shares)?;
            let detail = format!(
                "token-key shares {from} to this attested build: (node, version) {taken:?}"
            );
            self.store
                .record_key_change(request_id, &detail, now)
                .map_err(store_error)?;
        }
        Ok(ResponseBody::Provisioned {
            keeper: self.keeper,
            receipt: obscura_proto::provision_receipt(receipt, self.keeper, &public),
            public_shares: public,
        })
    }

    /// Take shares of key version `to` for every token key: `ρ · k_j + z_j` from the shares of
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
                    "keeper {} holds key version {from} for token keys {nodes:?}; the rotation names \
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
            let commitments = p
                .zero_commitments
                .iter()
                .map(|c| {
                    oprf::deserialize(c).map_err(|_| bad("a zero commitment is not a point".into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            obscura_keeper::threshold::check_zero_commitments(
                &commitments,
                usize::from(self.threshold),
                self.keeper,
                &zero,
            )
            .map_err(|e| {
                error(
                    ErrorCode::Rejected,
                    format!("token key {}'s rotation: {e}", p.node),
                )
            })?;
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

    /// Erase every share of `version`, once each of those token keys has a newer version here.
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
                    "keeper {} holds no newer token key {n} than version {version}: it \
                     cannot be erased",
                    self.keeper
                ),
            ));
        }
        shares.retain(|(_, v), _| *v != version);
        self.seal_and_swap(&mut sealing, shares)?;
        let detail = format!("key version {version}: erased for token keys {retired:?}");
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
        let internal = |e: obscura_cluster::Error| error(ErrorCode::Internal, e.to_string());
        let mut plain: Vec<SealedShare> = shares
            .iter()
            .map(|(&(node, version), k)| SealedShare {
                node,
                version,
                secret: *k.secret_bytes(),
            })
            .collect();
        // An attesting keeper's shares are bound to its platform and build; a keeper that does
        // not attest holds them under its wrapping key alone.
        let bound_shares = match &sealing.bound_key {
            Some(Ok(key)) => Some(
                seal_bound_shares(
                    &std::mem::take(&mut plain),
                    self.keeper,
                    key,
                    &mut rand_core::OsRng,
                )
                .map_err(internal)?,
            ),
            // An attesting keeper never holds shares outside its platform's sealing (it would
            // refuse to start on them).
            Some(Err(why)) => {
                return Err(error(
                    ErrorCode::Internal,
                    format!("this keeper's platform gives no sealing key for its shares: {why}"),
                ))
            }
            None => None,
        };
        let secrets = KeeperSecrets {
            tls_key_pem: sealing.tls_key_pem.to_string(),
            audit_key: self.audit_key.to_bytes(),
            opaque: sealing.extra.opaque.to_vec(),
            peer_key: *sealing.extra.peer_key,
            capability_key: sealing.extra.capability_key.to_vec(),
            capability_public: sealing.extra.capability_public.clone(),
            simulated_platform: sealing
                .extra
                .simulated_platform
                .as_ref()
                .map(|p| p.to_string()),
            shares: plain,
            bound_shares,
        };
        let sealed = secrets
            .seal(self.keeper, &sealing.wrapping, &mut rand_core::OsRng)
            .map_err(internal)?;
        write_private_atomic(&sealing.path, &sealed).map_err(internal)?;
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
                        "keeper {} holds no share of token key {} version {version}",
                        self.keeper, b.node
                    ),
                )
            })?;
            let elements = Elements::from_bytes(b.elements.clone())
                .map_err(|e| error(ErrorCode::BadRequest, format!("node {} batch: {e}", b.node)))?;
            work.push((share, elements));
        }
        let total: usize = work.iter().map(|(_, e)| e.len()).sum();
        let used = self
            .store
            .charge(&client, request_id, total as u64, self.budget, now)
            .map_err(store_error)?;
        self.budget_used
            .observe(used as f64 / self.budget.evaluations.max(1) as f64);
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
        self.evaluated.inc_by(total as u64);
        Ok(ResponseBody::KeeperEvaluated {
            keeper: self.keeper,
            batches,
        })
    }
}

async fn handle(
    State(conn): State<Connection>,
    UrlPath(op): UrlPath<String>,
    body: obscura_server::HttpBody,
) -> (StatusCode, Vec<u8>) {
    // A keeper's largest request is a sealed evaluation of many elements.
    let limit = obscura_proto::account_limits::MAX_SEALED + (64 << 10);
    let started = std::time::Instant::now();
    let (bytes, _) = match conn.guard.body(body, limit, false).await {
        Ok(b) => b,
        Err(refused) => {
            conn.state
                .metrics
                .answered("invalid", &refused, started.elapsed());
            return obscura_server::encode(refused);
        }
    };
    let state = conn.state.clone();
    let source = conn.source;
    // Scalar multiplications and the store are synchronous: keep them off the async workers.
    conn.guard
        .respond(move || state.process(source, &op, &bytes, started))
        .await
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
    let c = &keeper.config;
    let mut metrics = obscura_server::metrics::Metrics::new();
    let evaluated = metrics.counter(
        "tokens_evaluated",
        "Band elements evaluated for clients (each charged to a client's budget)",
    );
    let shares_held = metrics.gauge("key_shares", "Token key shares this keeper holds");
    let budget_used = metrics.histogram(
        "budget_used_ratio",
        "After each evaluation granted, the share of its client's budget used in the window \
         (a client near 1 is about to be refused; refusals are answers with outcome over_budget)",
        [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0].into_iter(),
    );
    let guard = Guard::counted(keeper.config.limits, metrics.connection_refusals());
    let metrics = Arc::new(metrics);
    let state = Arc::new(KeeperState {
        metrics: metrics.clone(),
        evaluated,
        budget_used,
        keeper: c.keeper,
        threshold: c.threshold,
        window: c.replay_window_s,
        budget: Budget {
            evaluations: c.budget_evaluations,
            window_s: c.budget_window_s,
        },
        owner: keeper.owner,
        accounts: Accounts::new(
            crate::accounts::Setup {
                keeper: c.keeper,
                m: c.m,
                threshold: c.threshold,
                policy: c.login,
                session_ttl_s: c.session_ttl_s,
                capabilities: c.capabilities,
                quotas: c.quotas,
                bootstrap: keeper.bootstrap,
                window: c.replay_window_s,
                simulation_root: keeper
                    .attester
                    .as_ref()
                    .and_then(obscura_server::attest::Attester::simulation_root),
            },
            keeper.opaque,
            keeper.vault,
            keeper.peers,
            keeper.capability,
            Box::new(rand_core::OsRng),
        ),
        store: keeper.store,
        shares: RwLock::new(keeper.shares),
        audit_key: keeper.audit_key,
        changing: Mutex::new(Sealing {
            path: keeper.secrets_path,
            wrapping: keeper.wrapping,
            tls_key_pem: keeper.tls_key_pem,
            extra: keeper.sealed_extra,
            bound_key: keeper.bound_key,
        }),
        refused: std::sync::atomic::AtomicU64::new(0),
        attester: keeper.attester,
        cluster: keeper.cluster,
    });
    // Sessions opened before a restart go on: nobody is logged out by it.
    state.accounts.reopen_sessions(&state.store, now())?;
    let s = state.clone();
    let scraping = obscura_server::metrics::Running::start(keeper.metrics, metrics, move || {
        let held = s.shares.read().unwrap_or_else(|e| e.into_inner()).len();
        shares_held.set(i64::try_from(held).unwrap_or(i64::MAX));
    })
    .map_err(|e| obscura_store::Error::Storage(format!("metrics listener: {e}")))?;
    let s = state.clone();
    let g = guard.clone();
    let app_for = move |_: &rustls::ServerConnection, peer: std::net::SocketAddr| {
        Router::new()
            .route("/v1/{op}", post(handle))
            .with_state(Connection {
                state: s.clone(),
                guard: g.clone(),
                source: peer.ip(),
            })
    };
    let tick = move || {
        let now = now();
        let refused = state.refused.swap(0, std::sync::atomic::Ordering::Relaxed);
        if refused > 0 {
            state.store.record_refusal(
                &[0; 16],
                &format!("stale or replayed requests refused={refused}"),
                now,
            )?;
        }
        state
            .store
            .audit_checkpoint(&state.audit_key, now)
            .map(drop)
    };
    // The last act, as every tick: sign the audit log's head.
    let served = obscura_server::accept_loop(
        listener,
        TlsAcceptor::from(keeper.tls),
        guard,
        app_for,
        Duration::from_secs(keeper.config.checkpoint_interval_s.max(1)),
        tick.clone(),
        shutdown,
        tick,
    )
    .await;
    if let Some(scraping) = scraping {
        scraping.stop().await;
    }
    served
}
