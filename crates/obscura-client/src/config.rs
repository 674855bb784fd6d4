//! The client's side of a cluster directory: `client.json` and its sealed secrets.
//!
//! `client.json` holds no secret. The client's TLS key and (with HMAC tokens) the token root are
//! sealed with AES-256-GCM under the client's wrapping key, read from `OBSCURA_WRAPPING_KEY` or
//! the file the configuration names. The data owner's signing key is not among them: it lives
//! in its own sealed file under its own wrapping key (`owner/` in a new cluster), so a copy of
//! the cluster directory without that folder is a client that can search but never index,
//! delete, rotate or grant.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use obscura_cluster::files::WRAPPING_KEY_ENV;
use obscura_cluster::provision::Pending;
use obscura_cluster::tls::{client_config, Identity};
use obscura_tokens::keyfile::{self, WrappingKey};
use obscura_tokens::{BatchPlan, TokenRoot};
use zeroize::Zeroizing;

use crate::{ClientParts, KeeperParts, Storage, TokenParts};

fn token_parts(
    dir: &Path,
    config: &ClientConfig,
    secrets: &ClientSecrets,
) -> Result<TokenParts, LoadError> {
    let fail = |reason: String| LoadError {
        dir: dir.display().to_string(),
        reason,
    };
    match config.tokens {
        TokenKind::Hmac => secrets
            .token_root
            .map(|r| TokenParts::Hmac(TokenRoot::from_bytes(r)))
            .ok_or_else(|| fail("HMAC tokens, but the sealed secrets hold no token root".into())),
        TokenKind::Voprf => {
            let (m, t) = (config.keepers.len(), usize::from(config.keeper_threshold));
            if config.keeper_public_shares.len() > 1 {
                return Err(fail(format!(
                    "keeper_public_shares holds {} token keys: this version has one cluster key \
                     (a cluster made by an older version; make it again with cluster init)",
                    config.keeper_public_shares.len()
                )));
            }
            if config.keeper_public_shares.len() != 1
                || config.keeper_public_shares.iter().any(|p| p.len() != m)
            {
                return Err(fail(
                    "keeper_public_shares must hold one share per keeper of the cluster key".into(),
                ));
            }
            let public_shares = config
                .keeper_public_shares
                .iter()
                .map(|per_key| {
                    per_key
                        .iter()
                        .map(|h| {
                            keyfile::hex32(h)
                                .and_then(|b| obscura_keeper::oprf::deserialize(&b).ok())
                                .ok_or_else(|| fail(format!("{h:?} is not a public key share")))
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

pub use obscura_cluster::client::{
    ClientConfig, ClientSecrets, StorageKind, TokenKind, OWNER_PURPOSE, OWNER_WRAPPING_KEY_ENV,
    SECRETS_PURPOSE,
};

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
    obscura_cluster::files::write_atomic(&dir.join("client.json"), text.as_bytes())
        .map_err(|e| fail(e.to_string()))
}

/// The owner's wrapping key: `OBSCURA_OWNER_WRAPPING_KEY` if set, else the file the
/// configuration names (beside the owner's key by default).
fn owner_wrapping(
    dir: &Path,
    path: &Path,
    config: &ClientConfig,
) -> Result<WrappingKey, LoadError> {
    match std::env::var(OWNER_WRAPPING_KEY_ENV) {
        Ok(_) => WrappingKey::from_env(OWNER_WRAPPING_KEY_ENV),
        Err(_) => {
            let file = config
                .owner_wrapping_key
                .clone()
                .unwrap_or_else(|| path.with_file_name("wrapping.key"));
            WrappingKey::from_file(&dir.join(file))
        }
    }
    .map_err(|e| LoadError {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })
}

/// Open the owner's sealed key `path` (relative to `dir`).
fn owner_key(dir: &Path, path: &Path, config: &ClientConfig) -> Result<SigningKey, LoadError> {
    let fail = |reason: String| LoadError {
        dir: dir.display().to_string(),
        reason,
    };
    let wrapping = owner_wrapping(dir, path, config)?;
    let sealed =
        std::fs::read(dir.join(path)).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let key: Zeroizing<[u8; 32]> =
        obscura_cluster::files::open_secrets(&sealed, OWNER_PURPOSE, &wrapping)
            .map(Zeroizing::new)
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    Ok(SigningKey::from_bytes(&key))
}

/// The token-key shares in `dir` still waiting for their keepers (none once every keeper took
/// its own, or in a copy of the directory without the data owner's folder).
///
/// # Errors
/// [`LoadError`] when the file is there and does not open under the owner's wrapping key.
pub fn pending_provision(dir: &Path) -> Result<Option<Pending>, LoadError> {
    let config = read_config(dir)?;
    let Some(owner) = &config.owner_key else {
        return Ok(None);
    };
    if !dir
        .join(obscura_cluster::provision::PROVISION_FILE)
        .exists()
    {
        return Ok(None);
    }
    let wrapping = owner_wrapping(dir, owner, &config)?;
    obscura_cluster::provision::read(dir, &wrapping).map_err(|e| LoadError {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })
}

/// Keep only `pending` waiting in `dir` (the file goes when nothing waits).
///
/// # Errors
/// [`LoadError`] when it cannot be written.
pub fn settle_provision(dir: &Path, pending: &Pending) -> Result<(), LoadError> {
    let config = read_config(dir)?;
    let fail = |reason: String| LoadError {
        dir: dir.display().to_string(),
        reason,
    };
    let owner = config
        .owner_key
        .as_ref()
        .ok_or_else(|| fail("client.json names no owner key".into()))?;
    let wrapping = owner_wrapping(dir, owner, &config)?;
    obscura_cluster::provision::write(dir, &wrapping, pending).map_err(|e| fail(e.to_string()))
}

/// Deliver the token-key shares waiting in `dir` to their keepers through `client` (the data
/// owner's), and keep waiting only those not delivered. Returns each keeper tried and whether it
/// took its shares; an empty list when none wait.
///
/// # Errors
/// [`crate::Error::Config`] for the file; [`crate::Error::NotOwner`],
/// [`crate::Error::NoAttestation`].
pub async fn provision_waiting(
    dir: &Path,
    client: &crate::Client,
) -> Result<Vec<(u8, Result<(), crate::Fault>)>, crate::Error> {
    if pending_provision(dir)?.is_none() {
        return Ok(Vec::new());
    }
    // One round at a time: read, deliver, write back what is left.
    let at = dir.to_path_buf();
    let _lock = tokio::task::spawn_blocking(move || obscura_cluster::provision::lock(&at))
        .await
        .map_err(|_| crate::Error::Internal("the provisioning lock's task"))?
        .map_err(|e| LoadError {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    let Some(mut pending) = pending_provision(dir)? else {
        return Ok(Vec::new());
    };
    let outcome = client.provision(&mut pending).await?;
    settle_provision(dir, &pending)?;
    Ok(outcome)
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
        obscura_cluster::files::open_secrets(&read(&config.secrets)?, SECRETS_PURPOSE, &wrapping)
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
    let owner_public = obscura_cluster::ed25519_key(&config.owner_public_key)
        .ok_or_else(|| fail("owner_public_key is not an Ed25519 public key".into()))?;
    let capability_key = obscura_cluster::ed25519_key(&config.capability_key)
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
    let attestation = obscura_cluster::attestation::load_policy(dir)
        .map_err(|e| fail(e.to_string()))?
        .map(|policy| -> Result<_, LoadError> {
            Ok(crate::AttestationParts {
                policy,
                cluster: read(&config.ca_cert)?,
            })
        })
        .transpose()?;
    if attestation.is_none() && config.attestation_required {
        return Err(fail(format!(
            "client.json requires attestation, and {} is missing: copy it from the cluster's \
             operator (without it no server can be appraised, and none is used)",
            obscura_cluster::attestation::POLICY_FILE
        )));
    }
    Ok(ClientParts {
        k: config.k as usize,
        storage: match config.storage {
            StorageKind::Shamir => Storage::Shamir,
            StorageKind::Compact => Storage::Compact,
        },
        t: config.t as usize,
        nodes: config.nodes.clone(),
        tls,
        tokens: token_parts(dir, &config, &secrets)?,
        key_version: config.key_version,
        owner,
        owner_public,
        capability_key,
        keepers: config.keepers.clone(),
        keeper_threshold: t,
        plan,
        timeout: Duration::from_millis(config.timeout_ms),
        journal: Some(dir.join("client").join("journal")),
        attestation,
    })
}
