//! What both servers, node and keeper, load the same way: their files checked private, their
//! wrapping key, their sealed secrets opened as their own, and their TLS configuration; and the
//! limits on what a connection can make them spend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use obscura_tokens::keyfile::WrappingKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::files::{
    check_private, create_private_file, open_secrets, read, wrapping_key, WRAPPING_KEY_ENV,
};
use crate::tls::{self, Identity};
use crate::Error;

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

/// A server's TLS configuration from the CA and certificate files named in its configuration
/// and its private key from the sealed secrets; `server` names its certificate in errors.
fn server_tls(
    server: tls::Party,
    config_path: &Path,
    files: &ServerFiles,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let text = |p: &Path, what: &str| {
        String::from_utf8(read(&beside(config_path, p))?)
            .map_err(|_| config_error(config_path, format!("{what} is not text")))
    };
    Ok(tls::server_config(
        &text(&files.ca_cert, "CA certificate")?,
        &Identity {
            cert_pem: text(&files.cert, &format!("{server} certificate"))?,
            key_pem: Zeroizing::new(key_pem.to_string()),
        },
    )?)
}

/// The files a server keeps secret, checked before it reads them: its folder, its wrapping
/// key (unless it comes from the environment), its sealed secrets and its store (created
/// private when missing).
fn check_server_files(config_path: &Path, files: &ServerFiles) -> Result<(), Error> {
    let base = config_path.parent().unwrap_or(Path::new("."));
    let dir = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    check_private(dir)?;
    if std::env::var_os(WRAPPING_KEY_ENV).is_none() {
        check_private(&base.join(&files.wrapping_key))?;
    }
    check_private(&base.join(&files.secrets))?;
    create_private_file(&base.join(&files.store))?;
    check_private(&base.join(&files.store))
}

/// Where a server's files are, relative to its configuration file: the same block in a node's
/// configuration and a keeper's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFiles {
    /// Its store (a redb file).
    pub store: PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The server's own certificate (PEM).
    pub cert: PathBuf,
    /// Its sealed secrets.
    pub secrets: PathBuf,
    /// The file holding its wrapping key (64 hex digits), unless `OBSCURA_WRAPPING_KEY` is set.
    pub wrapping_key: PathBuf,
}

/// A server's sealed secrets, as [`open_server`] opens them: whose they are and what they hold.
pub trait ServerSecrets: serde::de::DeserializeOwned {
    /// The server numbered `id` whose secrets these are.
    fn party(id: u8) -> tls::Party;

    /// The purpose server `id`'s secrets are sealed under: they open as that server's only.
    fn purpose(id: u8) -> String {
        match Self::party(id) {
            tls::Party::Node(i) => crate::node::node_purpose(i),
            tls::Party::Keeper(j) => crate::keeper::keeper_purpose(j),
        }
    }

    /// Its TLS private key (PEM).
    fn tls_key_pem(&self) -> &str;
}

/// What [`open_server`] opened.
pub struct Opened<S> {
    /// The sealed secrets, opened.
    pub secrets: S,
    /// The key that sealed them, to seal them again.
    pub wrapping: WrappingKey,
    /// TLS server configuration (client certificates from the cluster CA required).
    pub tls: Arc<rustls::ServerConfig>,
}

impl<S> std::fmt::Debug for Opened<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opened { .. }")
    }
}

/// Where `path`, named in the configuration file `config_path`, is.
pub fn beside(config_path: &Path, path: &Path) -> PathBuf {
    config_path.parent().unwrap_or(Path::new(".")).join(path)
}

/// [`Error::Config`] for the configuration file `config_path`.
pub fn config_error(config_path: &Path, reason: impl Into<String>) -> Error {
    Error::Config {
        path: config_path.display().to_string(),
        reason: reason.into(),
    }
}

/// Open what the configuration file `config_path` of server `id` (read and checked by that
/// server; the secrets' type says which kind) names in `files`: its folder, wrapping key, sealed secrets and store must be private to its
/// owner (the store is created empty and private when missing), the secrets must open as this
/// party's, and its certificate with the sealed key must make a TLS configuration.
///
/// # Errors
/// [`Error::NotPrivate`], [`Error::File`], [`Error::Config`], [`Error::Secrets`] (wrong wrapping
/// key, another party's file, an altered file), [`Error::Tls`].
pub fn open_server<S: ServerSecrets>(
    config_path: &Path,
    id: u8,
    files: &ServerFiles,
) -> Result<Opened<S>, Error> {
    check_server_files(config_path, files)?;
    let wrapping = wrapping_key(&beside(config_path, &files.wrapping_key))?;
    let secrets: S = open_secrets(
        &read(&beside(config_path, &files.secrets))?,
        &S::purpose(id),
        &wrapping,
    )?;
    let tls = server_tls(S::party(id), config_path, files, secrets.tls_key_pem())?;
    Ok(Opened {
        secrets,
        wrapping,
        tls,
    })
}
