//! Token-key shares waiting for their keepers.
//!
//! An attesting keeper is made without its token-key shares: `cluster init` deals them and keeps
//! them at the data owner (`owner/provision.sealed`, under the owner's wrapping key) until the
//! keeper runs. Then the owner's client appraises the keeper's evidence, seals its shares to the
//! HPKE key that evidence binds, and signs the delivery; the keeper seals them under its
//! platform's key for its own measurement ([`crate::keeper::seal_bound_shares`]). A keeper's
//! entry leaves the file once the keeper confirms the public shares of what it holds, and the
//! file goes once every keeper has its shares: from then on only the keepers hold them.

use std::path::{Path, PathBuf};

use obscura_tokens::keyfile::WrappingKey;
use serde::{Deserialize, Serialize};

use crate::files::{lock_beside, open_secrets, seal_secrets, write_private_atomic, FileLock};
use crate::keeper::SealedShare;
use crate::Error;

/// Where a new cluster keeps the shares waiting for their keepers, relative to its directory.
pub const PROVISION_FILE: &str = "owner/provision.sealed";

/// The sealed file's purpose.
const FILE_PURPOSE: &str = "token-key-shares-awaiting-keepers";

/// The HPKE purpose of keeper `keeper`'s delivery.
pub fn delivery_purpose(keeper: u8) -> Vec<u8> {
    format!("obscura token-key shares for keeper {keeper}").into_bytes()
}

/// What the data owner seals to a keeper: its shares, and a fresh receipt key with which the
/// keeper proves it opened them ([`obscura_proto::provision_receipt`]): a relay that drops the
/// delivery and answers in the keeper's name cannot.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Delivery {
    /// The receipt key.
    pub receipt: [u8; 32],
    /// The keeper's shares of every node's token key.
    pub shares: Vec<SealedShare>,
}

/// One keeper's shares, not yet delivered.
#[derive(Serialize, Deserialize)]
pub struct Awaiting {
    /// The keeper.
    pub keeper: u8,
    /// Its shares of every node's token key.
    pub shares: Vec<SealedShare>,
}

/// Every keeper's shares not yet delivered.
#[derive(Serialize, Deserialize, Default)]
pub struct Pending {
    /// One entry per keeper still waiting.
    pub keepers: Vec<Awaiting>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(PROVISION_FILE)
}

/// Hold the waiting shares of `dir` for one round of deliveries (read, deliver, write), so that
/// two commands at once do not each write back what the other delivered.
///
/// # Errors
/// [`Error::Locked`] when another process holds it for over a minute; [`Error::File`].
pub fn lock(dir: &Path) -> Result<FileLock, Error> {
    lock_beside(&path(dir), std::time::Duration::from_secs(60))
}

/// The shares waiting in cluster directory `dir` (none when the file is absent).
///
/// # Errors
/// [`Error::Secrets`] when the file does not open under `owner_key`; [`Error::Files`] when it
/// cannot be read.
pub fn read(dir: &Path, owner_key: &WrappingKey) -> Result<Option<Pending>, Error> {
    let path = path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => open_secrets(&bytes, FILE_PURPOSE, owner_key).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Replace the waiting shares with `pending`, whole; remove the file when nothing waits.
///
/// # Errors
/// [`Error::Files`] or [`Error::Secrets`] when it cannot be written.
pub fn write(dir: &Path, owner_key: &WrappingKey, pending: &Pending) -> Result<(), Error> {
    let path = path(dir);
    if pending.keepers.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            _ => Ok(()),
        };
    }
    let sealed = seal_secrets(pending, FILE_PURPOSE, owner_key, &mut rand_core::OsRng)?;
    write_private_atomic(&path, &sealed)
}
