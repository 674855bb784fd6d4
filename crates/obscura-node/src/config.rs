//! A node's configuration file and its sealed secrets.
//!
//! The configuration is JSON and holds no secret. The node's secrets (TLS private key, audit
//! signing key, zero-sharing set keys, the handle key) live in one file sealed with AES-256-GCM
//! under the node's own wrapping key ([`obscura_tokens::keyfile`]), which comes from
//! `OBSCURA_WRAPPING_KEY` or the file the configuration names. The sealing names the party (node
//! `i`), so one party's file does not open as another's even under the same key. Relative paths
//! are relative to the configuration file.
//!
//! Secret files must be readable by their owner only: a server refuses to start when its
//! folder, its wrapping key, its sealed secrets or its store can be read by other users of the
//! machine ([`check_private`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use obscura_sharing::zero::ZeroSharingKeys;
use obscura_store::Store;
use obscura_tokens::keyfile::{self, WrappingKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::tls::{self, Identity};

/// Purpose label of a node's sealed secrets; the node's number follows it ([`node_purpose`]).
pub const SECRETS_PURPOSE: &str = "node-secrets";

/// The purpose node `node`'s secrets are sealed under: they open as that node's only.
pub fn node_purpose(node: u8) -> String {
    format!("{SECRETS_PURPOSE}/node-{node}")
}
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
    /// A secret file or folder that other users of the machine may read.
    #[error("{path} is open to other users (mode {mode:03o}): run `chmod {fix:o} {path}`")]
    NotPrivate {
        /// The file or folder.
        path: String,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        fix: u32,
    },
    /// Another process holds a lock past the time allowed.
    #[error("{path} is held by another process for over {seconds} s")]
    Locked {
        /// The lock file.
        path: String,
        /// How long this one waited.
        seconds: u64,
    },
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
    /// The keepers' capability key (Ed25519, hex): capabilities must carry its signature.
    pub capability_key: String,
    /// Every node's answer key (its audit key, Ed25519, hex), node 1 first: a match proof's
    /// openings must carry their signatures.
    pub node_keys: Vec<String>,
    /// What Stage-1 and Stage-2 requests must look like, and what a match entitles to.
    #[serde(default)]
    pub policy: SearchPolicy,
    /// Limits on what a connection can make this server spend.
    #[serde(default)]
    pub limits: ServerLimits,
    /// How the store uses memory and disk.
    #[serde(default)]
    pub storage: StorageSettings,
}

/// How a node's store uses memory and disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSettings {
    /// MiB of store pages kept in memory: the node's memory stops growing with its store here.
    pub cache_mb: u64,
    /// MiB kept free on the store's disk: an upload that would eat into it is refused ("disk
    /// full", nothing written), so searches, fetches and their audit entries go on. With 0 the
    /// disk itself refuses, and every request that writes (searches and fetches record theirs)
    /// fails until space returns; the store reopens by itself then.
    pub reserve_mb: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        let d = obscura_store::StoreOptions::default();
        StorageSettings {
            cache_mb: (d.cache_bytes >> 20) as u64,
            reserve_mb: d.reserve_bytes >> 20,
        }
    }
}

impl StorageSettings {
    /// As the store takes them.
    pub fn options(&self) -> obscura_store::StoreOptions {
        obscura_store::StoreOptions {
            cache_bytes: usize::try_from(self.cache_mb.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            reserve_bytes: self.reserve_mb.saturating_mul(1 << 20),
        }
    }
}

fn default_pending_timeout() -> u64 {
    600
}

/// The cluster's search policy, enforced by every node: a client's wishes do not change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPolicy {
    /// Stage-1 multi-probe radius.
    pub probe_radius: u32,
    /// Tokens per band in every lookup: a lookup has exactly 8 times this many.
    pub lookups_per_band: usize,
    /// The largest Hamming distance a search reports and a match entitles to (τ). With the
    /// radius it fixes how many bands a Stage-1 candidate must match.
    pub max_distance: u32,
    /// Most candidates a lookup returns.
    pub max_candidates: u32,
    /// Most images an exhaustive search scans (every committed image is a candidate), and so
    /// most candidates a query scans, in parts of at most 16,384; at least `max_candidates`, at
    /// most 2^20. A configuration without it scans no more than `max_candidates`
    /// ([`SearchPolicy::exhaustive`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_exhaustive: Option<u32>,
    /// How long after its query a match proof opens an image, seconds.
    pub match_window_s: u64,
}

impl Default for SearchPolicy {
    fn default() -> Self {
        SearchPolicy {
            probe_radius: 1,
            lookups_per_band: 12,
            max_distance: 10,
            max_candidates: 1024,
            max_exhaustive: Some(obscura_proto::limits::MAX_SCAN as u32),
            match_window_s: 3600,
        }
    }
}

impl SearchPolicy {
    /// Most images an exhaustive search scans: `max_exhaustive`, or `max_candidates` when the
    /// configuration predates it.
    pub fn exhaustive(&self) -> u32 {
        self.max_exhaustive.unwrap_or(self.max_candidates)
    }

    /// The bytes of the largest relayed Stage-2 round of an evaluation of `candidates` on `n`
    /// nodes: every node's opening of the widest round (about 6 bytes a value, and a little
    /// for the rest).
    pub fn relay_bytes(&self, candidates: u32, n: u8) -> u64 {
        let width = obscura_mpc::node::widest_opening(self.max_distance) as u64;
        u64::from(candidates) * u64::from(n) * width * 6 + 64 * 1024
    }

    /// The most candidates a search on `n` nodes may scan: the wire's
    /// [`MAX_SCAN`](obscura_proto::limits::MAX_SCAN) when the relayed rounds of a whole part
    /// ([`MAX_CANDIDATES`](obscura_proto::limits::MAX_CANDIDATES)) fit in what a node takes
    /// ([`MAX_REDUCE_BODY`](obscura_proto::limits::MAX_REDUCE_BODY)), and otherwise as many as
    /// fit in one part (a cluster of many nodes, or a large τ).
    pub fn fitting_exhaustive(&self, n: u8) -> u32 {
        use obscura_proto::limits::{MAX_CANDIDATES, MAX_REDUCE_BODY, MAX_SCAN};
        let per = self.relay_bytes(1, n) - 64 * 1024;
        let room = MAX_REDUCE_BODY as u64 - 64 * 1024;
        let fitting = room / per.max(1);
        if fitting >= MAX_CANDIDATES as u64 {
            MAX_SCAN as u32
        } else {
            fitting as u32
        }
    }

    /// The most candidates of one part of a search: a Stage-2 request's.
    pub fn part(&self) -> u32 {
        self.exhaustive()
            .min(obscura_proto::limits::MAX_CANDIDATES as u32)
    }
}

/// What one connection, or all together, may make a server spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections at once from one address.
    pub max_connections_per_source: usize,
    /// Time to send a request's headers, and the longest a kept-alive connection waits idle,
    /// seconds.
    pub header_timeout_s: u64,
    /// Time to send a request's body, seconds.
    pub body_timeout_s: u64,
    /// Requests being worked on at once (the rest wait).
    pub max_in_flight: usize,
    /// Large uploads (prepares) being received at once.
    pub max_uploads: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            max_connections_per_source: 64,
            header_timeout_s: 10,
            body_timeout_s: 60,
            max_in_flight: 32,
            max_uploads: 2,
        }
    }
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
    /// The key that makes Stage-1 handles, the same at every node.
    pub handle_key: [u8; 32],
}

impl NodeSecrets {
    /// Seal for writing to disk.
    ///
    /// # Errors
    /// [`Error::Secrets`] if sealing fails.
    pub fn seal<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        node: u8,
        key: &WrappingKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, Error> {
        seal_secrets(self, &node_purpose(node), key, rng)
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
    server: tls::Party,
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
    // A fresh random name, created exclusively: nothing another user placed at a predictable
    // name (a symbolic link, say) is followed or truncated.
    let mut tag = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tag);
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        obscura_tokens::keyfile::to_hex(&tag)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(&tmp).map_err(fail)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    drop(f);
    if let Err(e) = written {
        std::fs::remove_file(&tmp).ok();
        return Err(fail(e));
    }
    // A folder cannot be opened for syncing everywhere; the rename stands regardless.
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().ok();
    }
    Ok(())
}

/// An exclusive lock on a lock file, released when dropped.
#[derive(Debug)]
pub struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    /// The lock file, open for reading and writing: it may keep a small state of its own, such
    /// as a counter that the lock's holders change one at a time.
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        self.file.unlock().ok();
    }
}

/// Take an exclusive lock on `PATH.lock` beside `path`, so that processes that read, change
/// and write `path` do it one at a time. The lock file is created owner-only (0600) and never
/// removed. What is found there must be a plain file of one name that only its owner may use:
/// a symbolic or hard link is refused (someone who can write the folder could point it at one of
/// the user's own files, which the lock's holder then rewrites), and so is a file others may
/// open (another user who placed it could hold the lock forever, or change what it keeps).
/// Waits up to `wait` for another holder.
///
/// # Errors
/// [`Error::NotPrivate`] for a lock file open to others, [`Error::Locked`] when another process
/// holds it past `wait`, [`Error::File`] when it cannot be opened or locked.
pub fn lock_beside(path: &Path, wait: std::time::Duration) -> Result<FileLock, Error> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let fail = |e: std::io::Error| Error::File {
        path: lock_path.display().to_string(),
        reason: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    let file = options.open(&lock_path).map_err(fail)?;
    // The file opened, not the name: nothing swapped in after the open is what gets checked.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().map_err(fail)?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(Error::File {
                path: lock_path.display().to_string(),
                reason: "not a plain file of one name (a link?): remove it".into(),
            });
        }
        refuse_open_to_others(&lock_path, &meta)?;
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(FileLock { file }),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: lock_path.display().to_string(),
                    seconds: wait.as_secs_f64().ceil() as u64,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
    }
}

/// Refuse `path` (a secret file, or the folder holding one) when users other than its owner
/// have any permission on it: on a shared machine they could copy a store, a wrapping key or
/// sealed secrets, and with enough of them rebuild images.
///
/// # Errors
/// [`Error::NotPrivate`] with the `chmod` that fixes it, [`Error::File`] if it cannot be read.
pub fn check_private(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(path).map_err(|e| Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        refuse_open_to_others(path, &meta)?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// [`Error::NotPrivate`], with the `chmod` that fixes it, when users other than the owner of
/// `path` (whose metadata is `meta`) have any permission on it.
#[cfg(unix)]
fn refuse_open_to_others(path: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::NotPrivate {
            path: path.display().to_string(),
            mode,
            fix: if meta.is_dir() { 0o700 } else { 0o600 },
        });
    }
    Ok(())
}

/// Create the file `path` empty with mode 0600 unless it exists, so that a store made in it is
/// never readable by others, not even for a moment.
///
/// # Errors
/// [`Error::File`].
pub fn create_private_file(path: &Path) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Create the folder `path` (and its parents) so that only its owner may enter it (0700).
///
/// # Errors
/// [`Error::File`].
pub fn create_private_dir(path: &Path) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// The files a server keeps secret, checked before it reads them: its folder, its wrapping
/// key (unless it comes from the environment), its sealed secrets and its store (created
/// private when missing).
pub(crate) fn check_server_files(
    config_path: &Path,
    wrapping_key: &Path,
    secrets: &Path,
    store: &Path,
) -> Result<(), Error> {
    let base = config_path.parent().unwrap_or(Path::new("."));
    let dir = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    check_private(dir)?;
    if std::env::var_os(WRAPPING_KEY_ENV).is_none() {
        check_private(&base.join(wrapping_key))?;
    }
    check_private(&base.join(secrets))?;
    create_private_file(&base.join(store))?;
    check_private(&base.join(store))
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
    /// Audit signing key; it also signs Stage-2 answers.
    pub audit_key: SigningKey,
    /// The owner's key, to check manifests.
    pub owner: VerifyingKey,
    /// The keepers' capability key.
    pub capability_key: obscura_auth::capability::CapabilityKey,
    /// Every node's answer key, node 1 first.
    pub node_keys: Vec<VerifyingKey>,
    /// The Stage-1 handle key.
    pub handle_key: obscura_auth::handle::HandleKey,
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
        let owner = ed25519_key(&config.owner_public_key)
            .ok_or_else(|| bad("owner_public_key is not an Ed25519 public key".into()))?;
        let capability_key = ed25519_key(&config.capability_key)
            .map(obscura_auth::capability::CapabilityKey::from)
            .ok_or_else(|| bad("capability_key is not an Ed25519 public key".into()))?;
        let node_keys = config
            .node_keys
            .iter()
            .map(|h| ed25519_key(h))
            .collect::<Option<Vec<_>>>()
            .filter(|k| k.len() == usize::from(config.n))
            .ok_or_else(|| bad("node_keys must hold one Ed25519 public key per node".into()))?;
        let p = config.policy;
        if p.lookups_per_band == 0
            || p.lookups_per_band
                .checked_mul(obscura_tokens::BANDS)
                .is_none_or(|n| n > obscura_proto::limits::MAX_LOOKUP_TOKENS)
            || p.max_candidates as usize > obscura_proto::limits::MAX_CANDIDATES
            || p.exhaustive() < p.max_candidates
            || p.exhaustive() as usize > obscura_proto::limits::MAX_SCAN
            || p.max_distance > 64
        {
            return Err(bad(format!("policy out of range: {p:?}")));
        }
        if p.relay_bytes(p.part(), config.n) > obscura_proto::limits::MAX_REDUCE_BODY as u64 {
            return Err(bad(format!(
                "policy: a search of {} candidates on {} nodes would relay rounds of {} bytes, \
                 above the {} a node takes; set max_candidates and max_exhaustive to at most {}",
                p.part(),
                config.n,
                p.relay_bytes(p.part(), config.n),
                obscura_proto::limits::MAX_REDUCE_BODY,
                p.fitting_exhaustive(config.n)
            )));
        }
        check_server_files(
            config_path,
            &config.wrapping_key,
            &config.secrets,
            &config.store,
        )?;
        let wrapping = wrapping_key(&at(&config.wrapping_key))?;
        let secrets: NodeSecrets = open_secrets(
            &read(&at(&config.secrets))?,
            &node_purpose(config.node),
            &wrapping,
        )?;
        let tls = server_tls(
            tls::Party::Node(config.node),
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
        let store = Store::open_with(&at(&config.store), config.node, config.storage.options())?;
        let audit_key = SigningKey::from_bytes(&secrets.audit_key);
        if node_keys[usize::from(config.node) - 1] != audit_key.verifying_key() {
            return Err(bad(format!(
                "node_keys lists another key for node {} than its own",
                config.node
            )));
        }
        Ok(LoadedNode {
            audit_key,
            handle_key: obscura_auth::handle::HandleKey::from_bytes(secrets.handle_key),
            config,
            tls,
            store,
            zero,
            owner,
            capability_key,
            node_keys,
        })
    }
}

/// An Ed25519 public key from 64 hex digits.
pub fn ed25519_key(hex: &str) -> Option<VerifyingKey> {
    obscura_tokens::keyfile::hex32(hex).and_then(|b| VerifyingKey::from_bytes(&b).ok())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("obscura-lock-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Someone who can write the folder points `PATH.lock` at one of the user's own files: the
    /// lock is refused and the file is not touched, whether the link is symbolic or hard.
    #[test]
    fn a_lock_file_that_is_a_link_is_refused_and_what_it_names_is_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("link");
        let precious = dir.join("id_ed25519");
        std::fs::write(&precious, b"the user's own key").unwrap();
        std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.join("session.json");
        let lock = dir.join("session.json.lock");

        std::os::unix::fs::symlink(&precious, &lock).unwrap();
        assert!(lock_beside(&path, std::time::Duration::ZERO).is_err());
        std::fs::remove_file(&lock).unwrap();

        std::fs::hard_link(&precious, &lock).unwrap();
        let e = lock_beside(&path, std::time::Duration::ZERO).unwrap_err();
        assert!(
            e.to_string().contains("not a plain file of one name"),
            "{e}"
        );
        std::fs::remove_file(&lock).unwrap();

        assert_eq!(std::fs::read(&precious).unwrap(), b"the user's own key");
        // A lock file of its own is made owner-only and taken.
        let mut held = lock_beside(&path, std::time::Duration::ZERO).unwrap();
        let mode = held.file().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).ok();
    }
}
