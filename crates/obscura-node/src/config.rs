//! A node's configuration file and its sealed secrets.
//!
//! The configuration is JSON and holds no secret. The node's secrets (TLS private key, audit
//! signing key, zero-sharing set keys) live in one file sealed with AES-256-GCM under the
//! wrapping key ([`obscura_tokens::keyfile`]), which comes from `OBSCURA_WRAPPING_KEY` or the
//! file the configuration names. Relative paths are relative to the configuration file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use obscura_sharing::zero::ZeroSharingKeys;
use obscura_store::Store;
use obscura_tokens::keyfile::{self, WrappingKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::tls::{self, Identity};

/// Purpose label of a node's sealed secrets.
pub const SECRETS_PURPOSE: &str = "node-secrets";
/// Environment variable that overrides the wrapping-key file.
pub const WRAPPING_KEY_ENV: &str = "OBSCURA_WRAPPING_KEY";

/// Errors loading a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The configuration is malformed.
    #[error("invalid node configuration {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The sealed secrets do not open or are malformed.
    #[error("sealed secrets: {0}")]
    Secrets(String),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The store does not open.
    #[error(transparent)]
    Store(#[from] obscura_store::Error),
}

/// What `obscura cluster init` writes for one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// This node's number, 1..=n.
    pub node: u8,
    /// Nodes in the cluster.
    pub n: u8,
    /// Shares needed to rebuild an image.
    pub k: u8,
    /// Degree of the hash sharing.
    pub t: u8,
    /// Address to listen on, e.g. `127.0.0.1:7401`.
    pub listen: String,
    /// The redb file.
    pub store: PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// The sealed secrets.
    pub secrets: PathBuf,
    /// File holding the wrapping key (64 hex digits), unless `OBSCURA_WRAPPING_KEY` is set.
    pub wrapping_key: PathBuf,
    /// The data owner's Ed25519 public key, hex.
    pub owner_public_key: String,
    /// Allowed clock skew and replay window, seconds.
    pub replay_window_s: u64,
    /// How often the audit log is signed (and stale pending images purged), seconds.
    pub checkpoint_interval_s: u64,
    /// A prepared image not committed within this many seconds was abandoned by its client
    /// (it crashed, or another node failed) and is purged.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout_s: u64,
}

fn default_pending_timeout() -> u64 {
    600
}

/// The secrets sealed for one node.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct NodeSecrets {
    /// TLS private key, PEM.
    pub tls_key_pem: String,
    /// Ed25519 key that signs audit checkpoints.
    pub audit_key: [u8; 32],
    /// Zero-sharing set keys: (members bit mask, key).
    pub zero_keys: Vec<(u64, [u8; 32])>,
}

impl NodeSecrets {
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

/// Seal secrets (postcard) under the wrapping key, labelled with their purpose: a server's,
/// a client's, a rotation plan.
///
/// # Errors
/// [`Error::Secrets`] if encoding or sealing fails.
pub fn seal_secrets<T: Serialize, R: rand_core::RngCore + rand_core::CryptoRng>(
    secrets: &T,
    purpose: &str,
    key: &WrappingKey,
    rng: &mut R,
) -> Result<Vec<u8>, Error> {
    let plain =
        Zeroizing::new(postcard::to_allocvec(secrets).map_err(|e| Error::Secrets(e.to_string()))?);
    keyfile::seal(&plain, purpose, 1, key, rng).map_err(|e| Error::Secrets(e.to_string()))
}

/// Open what [`seal_secrets`] sealed with the same purpose.
///
/// # Errors
/// [`Error::Secrets`] for a wrong key, another purpose, an altered file or a bad encoding.
pub fn open_secrets<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    purpose: &str,
    key: &WrappingKey,
) -> Result<T, Error> {
    let opened = keyfile::open(bytes, purpose, key).map_err(|e| Error::Secrets(e.to_string()))?;
    postcard::from_bytes(&opened.secret).map_err(|e| Error::Secrets(e.to_string()))
}

/// A server's TLS configuration from the CA and certificate files named in its configuration
/// (relative to the configuration file) and its private key from the sealed secrets; `server`
/// ("node", "keeper") names its certificate in errors.
pub(crate) fn server_tls(
    server: &str,
    config_path: &Path,
    ca_cert: &Path,
    cert: &Path,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let base = config_path.parent().unwrap_or(Path::new("."));
    let text = |p: &Path, what: &str| {
        String::from_utf8(read(&base.join(p))?).map_err(|_| Error::Config {
            path: config_path.display().to_string(),
            reason: format!("{what} is not text"),
        })
    };
    Ok(tls::server_config(
        &text(ca_cert, "CA certificate")?,
        &Identity {
            cert_pem: text(cert, &format!("{server} certificate"))?,
            key_pem: Zeroizing::new(key_pem.to_string()),
        },
    )?)
}

/// A server's JSON configuration file.
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(config_path: &Path) -> Result<T, Error> {
    serde_json::from_slice(&read(config_path)?).map_err(|e| Error::Config {
        path: config_path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The wrapping key: from `OBSCURA_WRAPPING_KEY` when set, else from `file`.
pub(crate) fn wrapping_key(file: &Path) -> Result<WrappingKey, Error> {
    match std::env::var(WRAPPING_KEY_ENV) {
        Ok(_) => WrappingKey::from_env(WRAPPING_KEY_ENV),
        Err(_) => WrappingKey::from_file(file),
    }
    .map_err(|e| Error::Secrets(e.to_string()))
}

/// Replace `path` with `bytes` so that a crash leaves the old file or the new one, whole: write
/// a temporary file beside it, sync it, rename it over, sync the folder.
///
/// # Errors
/// [`Error::File`] when any step fails; the old file is then unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    replace_file(path, bytes, false)
}

/// [`write_atomic`] for a file only its owner may read or write (mode 0600 on Unix), such as a
/// user's session keys: the temporary file has that mode before any byte is written.
///
/// # Errors
/// [`Error::File`] when any step fails; the old file is then unchanged.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    replace_file(path, bytes, true)
}

fn replace_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), Error> {
    use std::io::Write;
    let fail = |e: std::io::Error| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(&tmp).map_err(fail)?;
    // A temporary file left by a crash keeps its old mode: set it again.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
    }
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail)?;
    // A folder cannot be opened for syncing everywhere; the rename stands regardless.
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().ok();
    }
    Ok(())
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Everything a running node needs, loaded and checked.
pub struct LoadedNode {
    /// The configuration.
    pub config: NodeConfig,
    /// TLS server configuration (client certificates required).
    pub tls: Arc<rustls::ServerConfig>,
    /// The store, opened.
    pub store: Store,
    /// Zero-sharing keys.
    pub zero: ZeroSharingKeys,
    /// Audit signing key.
    pub audit_key: SigningKey,
    /// The owner's key, to check manifests.
    pub owner: VerifyingKey,
}

impl std::fmt::Debug for LoadedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedNode")
            .field("node", &self.config.node)
            .finish()
    }
}

impl LoadedNode {
    /// Read a configuration file and everything it names.
    ///
    /// # Errors
    /// [`Error::File`], [`Error::Config`], [`Error::Secrets`] (wrong wrapping key or altered
    /// file), [`Error::Tls`], [`Error::Store`].
    pub fn load(config_path: &Path) -> Result<LoadedNode, Error> {
        let bad = |reason: String| Error::Config {
            path: config_path.display().to_string(),
            reason,
        };
        let config: NodeConfig = read_config(config_path)?;
        let base = config_path.parent().unwrap_or(Path::new("."));
        let at = |p: &Path| base.join(p);
        if config.node == 0 || config.node > config.n {
            return Err(bad(format!(
                "node {} is not in 1..={}",
                config.node, config.n
            )));
        }
        let owner = obscura_tokens::keyfile::hex32(&config.owner_public_key)
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .ok_or_else(|| bad("owner_public_key is not an Ed25519 public key".into()))?;
        let wrapping = wrapping_key(&at(&config.wrapping_key))?;
        let secrets: NodeSecrets =
            open_secrets(&read(&at(&config.secrets))?, SECRETS_PURPOSE, &wrapping)?;
        let tls = server_tls(
            "node",
            config_path,
            &config.ca_cert,
            &config.cert,
            &secrets.tls_key_pem,
        )?;
        let zero = ZeroSharingKeys::from_parts(
            config.node,
            config.n as usize,
            config.t as usize,
            secrets.zero_keys.clone(),
        )
        .map_err(|e| Error::Secrets(e.to_string()))?;
        let store = Store::open(&at(&config.store), config.node)?;
        Ok(LoadedNode {
            audit_key: SigningKey::from_bytes(&secrets.audit_key),
            config,
            tls,
            store,
            zero,
            owner,
        })
    }
}
