//! What both servers, node and keeper, load the same way: their files checked private, their
//! wrapping key, their sealed secrets opened as their own, and their TLS configuration; and the
//! limits on what a connection can make them spend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use obscura_tokens::keyfile::WrappingKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::files::{
    check_private, create_private_file, open_secrets, read, read_config, wrapping_key,
    WRAPPING_KEY_ENV,
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
/// (relative to the configuration file) and its private key from the sealed secrets; `server`
/// ("node", "keeper") names its certificate in errors.
fn server_tls(
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

/// The files a server keeps secret, checked before it reads them: its folder, its wrapping
/// key (unless it comes from the environment), its sealed secrets and its store (created
/// private when missing).
fn check_server_files(
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

/// A server's configuration file, as [`open_server`] reads what it names.
pub trait ServerRole: serde::de::DeserializeOwned {
    /// What is sealed for it.
    type Secrets: serde::de::DeserializeOwned;
    /// Who it is, as its certificate names it.
    fn party(&self) -> tls::Party;
    /// The purpose its secrets are sealed under: they open as this party's only.
    fn purpose(&self) -> String;
    /// The files it names, relative to the configuration file.
    fn files(&self) -> ServerFiles<'_>;
    /// Its TLS private key (PEM), among its secrets.
    fn tls_key(secrets: &Self::Secrets) -> &str;
}

/// The files a server's configuration names.
#[derive(Clone, Copy, Debug)]
pub struct ServerFiles<'a> {
    /// The cluster CA certificate.
    pub ca_cert: &'a Path,
    /// The server's certificate.
    pub cert: &'a Path,
    /// Its sealed secrets.
    pub secrets: &'a Path,
    /// Its wrapping key, unless `OBSCURA_WRAPPING_KEY` is set.
    pub wrapping_key: &'a Path,
    /// Its store.
    pub store: &'a Path,
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

/// A server's configuration file, parsed.
///
/// # Errors
/// [`Error::File`], [`Error::Config`].
pub fn read_server_config<C: ServerRole>(config_path: &Path) -> Result<C, Error> {
    read_config(config_path)
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

/// Open what a server's configuration (read from `config_path`, already checked by its server)
/// names: its folder, wrapping key, sealed secrets and store must be private to its owner (the
/// store is created empty and private when missing), the secrets must open as this party's,
/// and its certificate with the sealed key must make a TLS configuration.
///
/// # Errors
/// [`Error::NotPrivate`], [`Error::File`], [`Error::Config`], [`Error::Secrets`] (wrong wrapping
/// key, another party's file, an altered file), [`Error::Tls`].
pub fn open_server<C: ServerRole>(
    config_path: &Path,
    config: &C,
) -> Result<Opened<C::Secrets>, Error> {
    let files = config.files();
    check_server_files(config_path, files.wrapping_key, files.secrets, files.store)?;
    let wrapping = wrapping_key(&beside(config_path, files.wrapping_key))?;
    let secrets: C::Secrets = open_secrets(
        &read(&beside(config_path, files.secrets))?,
        &config.purpose(),
        &wrapping,
    )?;
    let tls = server_tls(
        config.party(),
        config_path,
        files.ca_cert,
        files.cert,
        C::tls_key(&secrets),
    )?;
    Ok(Opened {
        secrets,
        wrapping,
        tls,
    })
}
