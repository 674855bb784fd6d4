//! What a keeper is configured with: its configuration file (JSON, no secret), the secrets
//! sealed for it (TLS key, audit key, token-key shares, OPAQUE keys, peer key, capability key
//! share), and the policies it enforces on logins, capabilities and what users keep there.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use obscura_keeper::session::ServerKeys;
use obscura_keeper::signing;
use obscura_tokens::keyfile::WrappingKey;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::files::seal_secrets;
use crate::server::{ServerFiles, ServerLimits, ServerSecrets};
use crate::tls::Party;
use crate::Error;

/// Purpose label of a keeper's sealed secrets; the keeper's number follows it
/// ([`keeper_purpose`]).
pub const SECRETS_PURPOSE: &str = "keeper-secrets";

/// The purpose keeper `keeper`'s secrets are sealed under: they open as that keeper's only.
pub fn keeper_purpose(keeper: u8) -> String {
    format!("{SECRETS_PURPOSE}/keeper-{keeper}")
}

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
    /// Its store, certificates, sealed secrets and wrapping key.
    #[serde(flatten)]
    pub files: ServerFiles,
    /// Evaluations each client may ask per window.
    pub budget_evaluations: u64,
    /// Budget window, seconds.
    pub budget_window_s: u64,
    /// Allowed clock skew and replay window, seconds.
    pub replay_window_s: u64,
    /// How often the audit log is signed, seconds.
    pub checkpoint_interval_s: u64,
    /// The keyring: the storage key, one key per user secret, and the store's state counter
    /// (see the keeper server's vault). Best on other media than the store. Default: beside the sealed
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
    /// The data owner's Ed25519 public key (hex): rekey and retire need its orders.
    pub owner_public_key: String,
    /// The BLAKE3 digest (hex) of the cluster's bootstrap code, which the first registration
    /// must present.
    pub bootstrap_digest: String,
    /// What capabilities this keeper signs.
    #[serde(default)]
    pub capabilities: CapabilityPolicy,
    /// How much each user may keep here.
    #[serde(default)]
    pub quotas: Quotas,
    /// Limits on what a connection can make this server spend.
    #[serde(default)]
    pub limits: ServerLimits,
    /// Where its attestation evidence comes from, as a node's
    /// ([`crate::node::NodeConfig::attestation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::attestation::AttestationSource>,
    /// An address (`127.0.0.1:9465`) to serve Prometheus metrics on, plain HTTP, `GET
    /// /metrics`: answers by operation and outcome, times to answer, tokens evaluated, key
    /// shares held. No TLS and no login: a loopback or private address. None when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

fn default_session_ttl() -> u64 {
    3600
}

/// One key share as sealed: which key (number, version) and the share's scalar.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct SealedShare {
    /// The key's number: 1, the cluster's token key (a cluster made when each node had its
    /// own key numbered them by node).
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
    /// Its shares of the token keys, sealed only under the wrapping key: a keeper that does not
    /// attest. An attesting keeper keeps its shares in `bound_shares` instead.
    pub shares: Vec<SealedShare>,
    /// Its OPAQUE keys ([`ServerKeys::to_bytes`]).
    pub opaque: Vec<u8>,
    /// Its peer key (a ristretto255 scalar) for key generation.
    pub peer_key: [u8; 32],
    /// Its share of the cluster's capability key (a serialized FROST key package).
    pub capability_key: Vec<u8>,
    /// The capability key's public package (every keeper's verifying share).
    pub capability_public: Vec<u8>,
    /// Its simulated platform, as a node's ([`crate::node::NodeSecrets::simulated_platform`]).
    #[serde(default)]
    pub simulated_platform: Option<String>,
    /// An attesting keeper's token-key shares, sealed under its platform's sealing key for its
    /// measurement ([`seal_bound_shares`]): the same files run by another build, or on another
    /// platform, do not open them. None until the keeper is provisioned.
    #[serde(default)]
    pub bound_shares: Option<Vec<u8>>,
}

/// What binds a keeper's token-key shares to its platform and measurement: the purpose of its
/// sealing key, and of the sealed file.
pub fn bound_shares_purpose(keeper: u8) -> String {
    format!("keeper-{keeper}-token-key-shares")
}

/// Seal keeper `keeper`'s token-key shares under its platform's `sealing_key`.
///
/// # Errors
/// [`Error::Secrets`] if sealing fails.
pub fn seal_bound_shares<R: rand_core::RngCore + rand_core::CryptoRng>(
    shares: &[SealedShare],
    keeper: u8,
    sealing_key: &[u8; 32],
    rng: &mut R,
) -> Result<Vec<u8>, Error> {
    seal_secrets(
        &shares,
        &bound_shares_purpose(keeper),
        &WrappingKey::from_bytes(*sealing_key),
        rng,
    )
}

/// Open what [`seal_bound_shares`] sealed.
///
/// # Errors
/// [`Error::Secrets`] under another sealing key (another build or platform), for another keeper,
/// or altered.
pub fn open_bound_shares(
    bytes: &[u8],
    keeper: u8,
    sealing_key: &[u8; 32],
) -> Result<Vec<SealedShare>, Error> {
    crate::files::open_secrets(
        bytes,
        &bound_shares_purpose(keeper),
        &WrappingKey::from_bytes(*sealing_key),
    )
}

impl KeeperSecrets {
    /// A keeper's secrets with fresh audit, OPAQUE and peer keys; also returns the public peer
    /// key, which goes into every keeper's configuration.
    pub fn new<R: rand_core::RngCore + rand_core::CryptoRng>(
        tls_key_pem: String,
        shares: Vec<SealedShare>,
        capability_key: Vec<u8>,
        capability_public: Vec<u8>,
        rng: &mut R,
    ) -> (KeeperSecrets, [u8; 32]) {
        let (peer_key, peer_public) = signing::peer_key(rng);
        let secrets = KeeperSecrets {
            tls_key_pem,
            audit_key: SigningKey::generate(rng).to_bytes(),
            shares,
            opaque: ServerKeys::random(rng).to_bytes().to_vec(),
            peer_key: *peer_key,
            capability_key,
            capability_public,
            simulated_platform: None,
            bound_shares: None,
        };
        (secrets, peer_public)
    }

    /// Seal for writing to disk, as keeper `keeper`'s.
    ///
    /// # Errors
    /// [`Error::Secrets`] if sealing fails.
    pub fn seal<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        keeper: u8,
        key: &WrappingKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, Error> {
        seal_secrets(self, &keeper_purpose(keeper), key, rng)
    }
}

/// Where a keeper's keyring is: as configured, else beside its sealed secrets.
pub fn keyring_path(config_path: &Path, config: &KeeperConfig) -> PathBuf {
    let base = config_path.parent().unwrap_or(Path::new("."));
    match &config.keyring {
        Some(p) => base.join(p),
        None => base.join(&config.files.secrets).with_extension("keyring"),
    }
}

/// How failed logins are limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginPolicy {
    /// Failures of an account allowed without delay.
    pub free: u32,
    /// Failures after which the account is locked for a while.
    pub lock_after: u32,
    /// Failures from one source address allowed without delay (sources are never locked).
    pub source_free: u32,
    /// Longest delay between attempts, seconds.
    pub max_delay_s: u64,
    /// How recent a session's login must be for its user to change the password, seconds: a
    /// session stolen later cannot change it and lock its user out.
    #[serde(default = "default_fresh_login")]
    pub fresh_login_s: u64,
    /// How long the first lockout lasts, seconds; each next one lasts twice as long.
    #[serde(default = "default_lock")]
    pub lock_s: u64,
    /// The longest lockout, seconds.
    #[serde(default = "default_max_lock")]
    pub max_lock_s: u64,
}

fn default_fresh_login() -> u64 {
    300
}

fn default_lock() -> u64 {
    900
}

fn default_max_lock() -> u64 {
    86_400
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            free: 5,
            lock_after: 20,
            source_free: 20,
            max_delay_s: 3600,
            fresh_login_s: default_fresh_login(),
            lock_s: default_lock(),
            max_lock_s: default_max_lock(),
        }
    }
}

/// What capabilities a keeper signs: how long they last and the limits they carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityPolicy {
    /// Longest lifetime of a capability, seconds (never past the session's end).
    pub ttl_s: u64,
    /// Stage-1 lookups and Stage-2 evaluations per node per hour.
    pub queries_per_hour: u32,
    /// Fetches and match resolutions per node per hour.
    pub fetches_per_hour: u32,
}

impl Default for CapabilityPolicy {
    fn default() -> Self {
        CapabilityPolicy {
            ttl_s: 3600,
            queries_per_hour: 3600,
            fetches_per_hour: 600,
        }
    }
}

/// How much each user may keep at a keeper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Secrets and signing keys.
    pub max_secrets: u32,
    /// Events of the user's own audit trail kept (the oldest go first).
    pub max_events: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_secrets: 256,
            max_events: 1000,
        }
    }
}

/// The OPAQUE context a client uses with keeper `keeper`: binds the keeper's identity into
/// the login.
pub fn login_context(keeper: u8) -> Vec<u8> {
    format!("obscura keeper {keeper}").into_bytes()
}

/// The digest of a bootstrap code, as keeper configurations hold it.
pub fn bootstrap_digest(code: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("obscura 2026 bootstrap code", code)
}

impl ServerSecrets for KeeperSecrets {
    fn party(id: u8) -> Party {
        Party::Keeper(id)
    }

    fn tls_key_pem(&self) -> &str {
        &self.tls_key_pem
    }
}
