//! The client's side of a cluster directory: `client.json` and its sealed secrets.
//!
//! `client.json` holds no secret. The client's TLS key and (with HMAC tokens) the token root are
//! sealed with AES-256-GCM under the client's wrapping key, read from `OBSCURA_WRAPPING_KEY` or
//! the file the configuration names. The data owner's signing key is not among them: it lives
//! in its own sealed file under its own wrapping key (`owner/` in a new cluster), so a copy of
//! the cluster directory without that folder is a client that can search but never index,
//! delete, rotate or grant.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use obscura_node::config::WRAPPING_KEY_ENV;
use obscura_node::tls::{client_config, Identity};
use obscura_tokens::keyfile::{self, WrappingKey};
use obscura_tokens::{BatchPlan, TokenRoot};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{ClientParts, KeeperParts, TokenParts};

fn token_parts(config: &ClientConfig, secrets: &ClientSecrets) -> Result<TokenParts, String> {
    match config.tokens {
        TokenKind::Hmac => secrets
            .token_root
            .map(|r| TokenParts::Hmac(TokenRoot::from_bytes(r)))
            .ok_or_else(|| "HMAC tokens, but the sealed secrets hold no token root".into()),
        TokenKind::Voprf => {
            let (m, t) = (config.keepers.len(), usize::from(config.keeper_threshold));
            if config.keeper_public_shares.len() != config.nodes.len()
                || config.keeper_public_shares.iter().any(|p| p.len() != m)
            {
                return Err(
                    "keeper_public_shares must hold one share per keeper for every node".into(),
                );
            }
            let public_shares = config
                .keeper_public_shares
                .iter()
                .map(|per_node| {
                    per_node
                        .iter()
                        .map(|h| {
                            keyfile::hex32(h)
                                .and_then(|b| obscura_keeper::oprf::deserialize(&b).ok())
                                .ok_or_else(|| format!("{h:?} is not a public key share"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(TokenParts::Voprf(KeeperParts {
                urls: config.keepers.clone(),
                threshold: t,
                public_shares,
            }))
        }
    }
}

/// Purpose label of the client's sealed secrets.
pub const SECRETS_PURPOSE: &str = "client-secrets";
/// Purpose label of the data owner's sealed signing key.
pub const OWNER_PURPOSE: &str = "owner-key";

/// `client.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Shares needed to rebuild.
    pub k: u8,
    /// Degree of the hash sharing.
    pub t: u8,
    /// Node URLs, node 1 first.
    pub nodes: Vec<String>,
    /// Cluster CA certificate.
    pub ca_cert: PathBuf,
    /// This client's certificate.
    pub cert: PathBuf,
    /// Sealed secrets.
    pub secrets: PathBuf,
    /// Wrapping-key file, unless `OBSCURA_WRAPPING_KEY` is set.
    pub wrapping_key: PathBuf,
    /// The data owner's public key, hex.
    pub owner_public_key: String,
    /// The data owner's sealed signing key, if this client may act as the owner; a client
    /// without the file (or the entry) is not one.
    #[serde(default)]
    pub owner_key: Option<PathBuf>,
    /// The wrapping key of the owner's sealed key, unless `OBSCURA_OWNER_WRAPPING_KEY` is set.
    #[serde(default)]
    pub owner_wrapping_key: Option<PathBuf>,
    /// The keepers' capability key (Ed25519, hex): capabilities are checked against it.
    pub capability_key: String,
    /// Where band tokens come from.
    pub tokens: TokenKind,
    /// Token key version.
    pub key_version: u32,
    /// Keeper URLs, keeper 1 first.
    pub keepers: Vec<String>,
    /// Keepers needed to log in, sign and (with VOPRF tokens) evaluate.
    pub keeper_threshold: u8,
    /// `keeper_public_shares[x - 1][j - 1]`: keeper `j`'s public share of node `x`'s key of
    /// the current version, hex (VOPRF tokens).
    #[serde(default)]
    pub keeper_public_shares: Vec<Vec<String>>,
    /// Stage-1 multi-probe radius.
    pub probe_radius: u32,
    /// Stage-1 lookups per band (dummies fill the rest).
    pub lookups_per_band: usize,
    /// Limit for each call to a node, milliseconds.
    pub timeout_ms: u64,
}

/// Where a cluster's band tokens come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// HMAC-SHA256 under keys derived from a root every client holds.
    Hmac,
    /// The RFC 9497 VOPRF, evaluated by threshold keepers; clients hold no key.
    Voprf,
}

/// The client's sealed secrets.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct ClientSecrets {
    /// TLS private key, PEM.
    pub tls_key_pem: String,
    /// The token root, with HMAC tokens only.
    pub token_root: Option<[u8; 32]>,
}

/// The environment variable that overrides the owner's wrapping-key file.
pub const OWNER_WRAPPING_KEY_ENV: &str = "OBSCURA_OWNER_WRAPPING_KEY";

impl ClientSecrets {
    /// Seal for writing to disk.
    ///
    /// # Errors
    /// A message if sealing fails.
    pub fn seal<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        key: &WrappingKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, String> {
        obscura_node::config::seal_secrets(self, SECRETS_PURPOSE, key, rng)
            .map_err(|e| e.to_string())
    }
}

/// Why a cluster directory could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cluster directory {dir}: {reason}")]
pub struct LoadError {
    /// The directory.
    pub dir: String,
    /// What is wrong, and usually what to do.
    pub reason: String,
}

/// Read `DIR/client.json` alone.
///
/// # Errors
/// [`LoadError`] when it is missing or malformed.
pub fn read_config(dir: &Path) -> Result<ClientConfig, LoadError> {
    let fail = |reason: String| LoadError {
        dir: dir.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(dir.join("client.json")).map_err(|e| {
        fail(format!(
            "client.json: {e} (is this a directory made by `obscura cluster init`?)"
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| fail(format!("client.json: {e}")))
}

/// The key that seals the client's secrets: `OBSCURA_WRAPPING_KEY` if set, else the file
/// `client.json` names.
///
/// # Errors
/// [`LoadError`] when it cannot be read.
pub fn wrapping_key(dir: &Path, config: &ClientConfig) -> Result<WrappingKey, LoadError> {
    match std::env::var(WRAPPING_KEY_ENV) {
        Ok(_) => WrappingKey::from_env(WRAPPING_KEY_ENV),
        Err(_) => WrappingKey::from_file(&dir.join(&config.wrapping_key)),
    }
    .map_err(|e| LoadError {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })
}

/// Switch `DIR/client.json` to token key version `version` with the keepers' public shares of
/// it, replacing the file whole (a crash leaves the old one or the new one).
///
/// # Errors
/// [`LoadError`] when it cannot be read or written.
pub fn switch_key_version(
    dir: &Path,
    version: u32,
    public_shares: &[Vec<obscura_keeper::RistrettoPoint>],
) -> Result<(), LoadError> {
    let mut config = read_config(dir)?;
    config.key_version = version;
    config.keeper_public_shares = public_shares
        .iter()
        .map(|node| {
            node.iter()
                .map(|p| {
                    obscura_keeper::oprf::serialize(p)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                })
                .collect()
        })
        .collect();
    let fail = |reason: String| LoadError {
        dir: dir.display().to_string(),
        reason,
    };
    let mut text = serde_json::to_string_pretty(&config).map_err(|e| fail(e.to_string()))?;
    text.push('\n');
    obscura_node::config::write_atomic(&dir.join("client.json"), text.as_bytes())
        .map_err(|e| fail(e.to_string()))
}

/// Open the owner's sealed key `path` (relative to `dir`).
fn owner_key(dir: &Path, path: &Path, config: &ClientConfig) -> Result<SigningKey, LoadError> {
    let fail = |reason: String| LoadError {
        dir: dir.display().to_string(),
        reason,
    };
    let wrapping = match std::env::var(OWNER_WRAPPING_KEY_ENV) {
        Ok(_) => WrappingKey::from_env(OWNER_WRAPPING_KEY_ENV),
        Err(_) => {
            let file = config
                .owner_wrapping_key
                .clone()
                .unwrap_or_else(|| path.with_file_name("wrapping.key"));
            WrappingKey::from_file(&dir.join(file))
        }
    }
    .map_err(|e| fail(e.to_string()))?;
    let sealed =
        std::fs::read(dir.join(path)).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let key: Zeroizing<[u8; 32]> =
        obscura_node::config::open_secrets(&sealed, OWNER_PURPOSE, &wrapping)
            .map(Zeroizing::new)
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    Ok(SigningKey::from_bytes(&key))
}

/// Read `DIR/client.json` and everything it names.
///
/// # Errors
/// [`LoadError`] saying which file is missing or wrong.
pub fn load(dir: &Path) -> Result<ClientParts, LoadError> {
    let fail = |reason: String| LoadError {
        dir: dir.display().to_string(),
        reason,
    };
    let read =
        |p: &Path| std::fs::read(dir.join(p)).map_err(|e| fail(format!("{}: {e}", p.display())));
    let config = read_config(dir)?;
    let wrapping = wrapping_key(dir, &config)?;
    let secrets: ClientSecrets =
        obscura_node::config::open_secrets(&read(&config.secrets)?, SECRETS_PURPOSE, &wrapping)
            .map_err(|e| fail(format!("{}: {e}", config.secrets.display())))?;
    let text = |p: &Path| {
        read(p).and_then(|b| {
            String::from_utf8(b).map_err(|_| fail(format!("{} is not text", p.display())))
        })
    };
    let tls = client_config(
        &text(&config.ca_cert)?,
        &Identity {
            cert_pem: text(&config.cert)?,
            key_pem: Zeroizing::new(secrets.tls_key_pem.clone()),
        },
    )
    .map_err(|e| fail(e.to_string()))?;
    let owner_public = obscura_node::config::ed25519_key(&config.owner_public_key)
        .ok_or_else(|| fail("owner_public_key is not an Ed25519 public key".into()))?;
    let capability_key = obscura_node::config::ed25519_key(&config.capability_key)
        .map(obscura_auth::capability::CapabilityKey::from)
        .ok_or_else(|| fail("capability_key is not an Ed25519 public key".into()))?;
    let (m, t) = (config.keepers.len(), usize::from(config.keeper_threshold));
    if t < 2 || t > m {
        return Err(fail(format!(
            "keepers: need 2 ≤ keeper_threshold ≤ keepers, got {t} of {m}"
        )));
    }
    let owner = match &config.owner_key {
        Some(p) if dir.join(p).exists() => Some(owner_key(dir, p, &config)?),
        _ => None,
    };
    if owner
        .as_ref()
        .is_some_and(|k| k.verifying_key() != owner_public)
    {
        return Err(fail(
            "the owner key does not match owner_public_key in client.json".into(),
        ));
    }
    let plan = BatchPlan::new(config.probe_radius, config.lookups_per_band)
        .map_err(|e| fail(e.to_string()))?;
    Ok(ClientParts {
        k: config.k as usize,
        t: config.t as usize,
        nodes: config.nodes.clone(),
        tls,
        tokens: token_parts(&config, &secrets).map_err(fail)?,
        key_version: config.key_version,
        owner,
        owner_public,
        capability_key,
        keepers: config.keepers.clone(),
        keeper_threshold: t,
        plan,
        timeout: Duration::from_millis(config.timeout_ms),
        journal: Some(dir.join("client").join("journal")),
    })
}
