//! A keeper's account records: encrypted, bound to their place, fresh, and deletable for good.
//!
//! Every record a keeper keeps about a user (the OPAQUE password file, login attempts, secret
//! shares, the user's own audit trail, open sessions with their keys) is sealed with
//! AES-256-GCM before it reaches the store. The associated data binds the record's kind, the
//! user (a keyed digest of the name, so the store never holds a name in clear), the record id
//! and the record's version: a record copied to another user, another id or another kind fails
//! to open.
//!
//! Two things live outside the store, in the *keyring*, a small file sealed under the wrapping
//! key and written whole (temporary file, sync, rename) before every change of the store:
//!
//! - the storage key, which seals accounts, attempts and trails;
//! - one key per secret. A secret's record is sealed under its own key, and deleting the
//!   secret removes that key from the keyring before the record leaves the store. A copy of
//!   the store taken before the deletion then holds a record nothing can open;
//! - one key per open session, replaced at every write of the session's record and removed
//!   when the session ends: only the latest record of a live session opens, so neither an
//!   older copy (an older lane floor) nor an ended session can be put back, and a session key
//!   is gone from the store with its session.
//!
//! The keyring also holds the store's *state*: the number of writes the store has taken. A
//! keeper refuses to start, and a running keeper refuses to write, when the store's own count
//! is behind the keyring's: the store was restored from an older copy, which could bring back
//! spent login attempts or a replaced password file. Only an admin can accept a restored store
//! ([`Vault::accept_restore`]). The keyring is written first, so a crash between the two writes
//! leaves the store exactly one write behind; that one case is accepted, so a copy exactly one
//! write old cannot be told from it (it can undo one write, and never brings back a deleted
//! secret, whose key is already gone). The keyring and the store should live on different
//! media for the check to mean anything; a hardware monotonic counter would replace it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use obscura_store::keeper::{KeeperStore, VaultChange};
use obscura_tokens::keyfile::WrappingKey;
use rand_core::{CryptoRng, OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use obscura_cluster::files::{open_secrets, read, seal_secrets, write_private_atomic};
use obscura_server::Error;

/// A source of randomness a keeper's parts share: the operating system's in a server, a seeded
/// generator in a test that must be repeatable.
pub type Randomness = Box<dyn CryptoRngCore + Send>;

/// What [`Randomness`] must be.
pub trait CryptoRngCore: RngCore + CryptoRng {}
impl<T: RngCore + CryptoRng> CryptoRngCore for T {}

/// Purpose label of a keeper's sealed keyring; the keeper's number follows it.
pub const KEYRING_PURPOSE: &str = "keeper-keyring";

fn keyring_purpose(keeper: u8) -> String {
    format!("{KEYRING_PURPOSE}/keeper-{keeper}")
}

/// What a record is; part of its key and of its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A user's account: password file and role.
    Account = 1,
    /// Failed login attempts of an account name (known or not).
    Attempts = 2,
    /// One secret (its own key).
    Secret = 3,
    /// One event of a user's audit trail.
    Event = 4,
    /// An open session: its key, roles and expiry, and the highest lane it has taken.
    Session = 5,
}

/// A user's handle: a keyed digest of the name.
pub type Handle = [u8; 16];
/// A record opened: its version and contents.
pub type Opened = (u64, Zeroizing<Vec<u8>>);
/// A record listed: its id and contents.
pub type Listed = (Vec<u8>, Zeroizing<Vec<u8>>);
/// A record to write: kind, user, id, contents, version.
pub type Put<'a> = (Kind, Handle, Vec<u8>, &'a [u8], u64);

/// The sealed keyring.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Keyring {
    state: u64,
    storage_key: [u8; 32],
    /// (secret key id, key).
    keys: Vec<([u8; 16], [u8; 32])>,
}

struct Held {
    /// Writes the store holds, as this keeper last wrote or read it.
    store_state: u64,
    keys: HashMap<[u8; 16], Zeroizing<[u8; 32]>>,
}

/// A keeper's record vault over its store.
pub struct Vault {
    storage_key: Zeroizing<[u8; 32]>,
    held: Mutex<Held>,
    path: PathBuf,
    purpose: String,
    wrapping: WrappingKey,
    rng: Mutex<Randomness>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The key of a record: kind ‖ user ‖ id.
pub fn record_key(kind: Kind, user: &Handle, id: &[u8]) -> Vec<u8> {
    [&[kind as u8][..], user, id].concat()
}

/// The keyring entry of a record sealed under a key of its own: a secret, or a session.
fn own_key_id(kind: Kind, user: &Handle, id: &[u8]) -> Option<[u8; 16]> {
    let context = match kind {
        Kind::Secret => "obscura 2026 keeper secret key id",
        Kind::Session => "obscura 2026 keeper session key id",
        _ => return None,
    };
    let id: &[u8; 16] = id.try_into().ok()?;
    let h = blake3::derive_key(context, &[user.as_slice(), id].concat());
    Some(h[..16].try_into().expect("16 bytes"))
}

impl Vault {
    /// Open the keyring at `path` (creating it, with a fresh storage key, if neither it nor any
    /// account record exists) and check the store's state against it.
    ///
    /// # Errors
    /// [`Error::Store`] with [`obscura_store::Error::RolledBack`] when the store is behind the
    /// keyring by more than one write, or ahead of it; [`Error::Files`] for a keyring that does not
    /// open or cannot be read.
    pub fn open(
        store: &KeeperStore,
        path: &Path,
        keeper: u8,
        wrapping: WrappingKey,
    ) -> Result<Vault, Error> {
        Self::open_with_rng(store, path, keeper, wrapping, Box::new(OsRng))
    }

    /// [`open`](Self::open) with the randomness every key and nonce comes from.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_rng(
        store: &KeeperStore,
        path: &Path,
        keeper: u8,
        wrapping: WrappingKey,
        mut rng: Randomness,
    ) -> Result<Vault, Error> {
        let at = store.vault_state()?;
        let purpose = keyring_purpose(keeper);
        let keyring: Keyring = if path.exists() {
            open_secrets(&read(path)?, &purpose, &wrapping)?
        } else if at == 0 {
            let mut storage_key = [0u8; 32];
            rng.fill_bytes(&mut storage_key);
            let k = Keyring {
                state: 0,
                storage_key,
                keys: Vec::new(),
            };
            write_private_atomic(path, &seal_secrets(&k, &purpose, &wrapping, &mut rng)?)?;
            k
        } else {
            return Err(Error::secrets(format!(
                "the keyring {} is missing, but the store holds {at} account writes: without \
                 it no account record can be read",
                path.display()
            )));
        };
        if at != keyring.state && at + 1 != keyring.state {
            return Err(Error::Store(obscura_store::Error::RolledBack {
                store: at,
                counter: keyring.state,
            }));
        }
        Ok(Vault {
            storage_key: Zeroizing::new(keyring.storage_key),
            held: Mutex::new(Held {
                store_state: at,
                keys: keyring
                    .keys
                    .iter()
                    .map(|(id, k)| (*id, Zeroizing::new(*k)))
                    .collect(),
            }),
            path: path.to_path_buf(),
            purpose,
            wrapping,
            rng: Mutex::new(rng),
        })
    }

    /// An admin accepts a store restored from an older copy: the acceptance is written as
    /// any change is, the keyring first (its state set to one past the store's), then an
    /// audited write of the store. Returns the keyring's state before and after. Secrets
    /// deleted since the copy stay unreadable (their keys are gone). Every session the copy
    /// holds ends with it: its record of the lanes taken may be older than the requests sealed
    /// since, so its users log in again.
    ///
    /// # Errors
    /// [`Error::Files`] for a keyring that does not open or cannot be written, [`Error::Store`].
    pub fn accept_restore(
        store: &KeeperStore,
        path: &Path,
        keeper: u8,
        wrapping: &WrappingKey,
        now: u64,
    ) -> Result<(u64, u64), Error> {
        let purpose = keyring_purpose(keeper);
        let mut keyring: Keyring = open_secrets(&read(path)?, &purpose, wrapping)?;
        let was = keyring.state;
        let at = store.vault_state()?;
        keyring.state = at + 1;
        write_private_atomic(
            path,
            &seal_secrets(&keyring, &purpose, wrapping, &mut OsRng)?,
        )?;
        let sessions: Vec<VaultChange> = store
            .vault_scan(&[Kind::Session as u8])?
            .into_iter()
            .map(|(key, _)| (key, None))
            .collect();
        store.vault_write(
            at,
            &sessions,
            &[0; 16],
            &format!(
                "restored store accepted: state counter {was} -> {}, sessions ended {}",
                at + 1,
                sessions.len()
            ),
            now,
        )?;
        Ok((was, at + 1))
    }

    /// The handle of a user name.
    pub fn handle(&self, user: &str) -> Handle {
        let h = blake3::keyed_hash(&self.storage_key, &[b"user ", user.as_bytes()].concat());
        h.as_bytes()[..16].try_into().expect("16 bytes")
    }

    fn aad(key: &[u8], version: u64) -> Vec<u8> {
        [
            b"obscura/keeper-record/v1".as_slice(),
            key,
            &version.to_be_bytes(),
        ]
        .concat()
    }

    fn seal_with(
        rng: &mut Randomness,
        cipher_key: &[u8; 32],
        key: &[u8],
        version: u64,
        plain: &[u8],
    ) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(cipher_key).expect("32-byte key");
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &Self::aad(key, version),
                },
            )
            .expect("AES-GCM encryption of a short record cannot fail");
        [&version.to_be_bytes()[..], &nonce, &ct].concat()
    }

    fn open_with(
        cipher_key: &[u8; 32],
        key: &[u8],
        sealed: &[u8],
    ) -> Option<(u64, Zeroizing<Vec<u8>>)> {
        if sealed.len() < 20 {
            return None;
        }
        let version = u64::from_be_bytes(sealed[..8].try_into().expect("8 bytes"));
        let cipher = Aes256Gcm::new_from_slice(cipher_key).expect("32-byte key");
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[8..20]),
                Payload {
                    msg: &sealed[20..],
                    aad: &Self::aad(key, version),
                },
            )
            .ok()
            .map(|p| (version, Zeroizing::new(p)))
    }

    fn cipher_key(&self, held: &Held, kind: Kind, key: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        match kind {
            Kind::Secret | Kind::Session => {
                let user: Handle = key.get(1..17)?.try_into().ok()?;
                held.keys
                    .get(&own_key_id(kind, &user, key.get(17..)?)?)
                    .cloned()
            }
            _ => Some(self.storage_key.clone()),
        }
    }

    /// Read a record: its version and contents. `Ok(None)` if there is none.
    ///
    /// # Errors
    /// [`Error::Files`] for a record that does not open (moved, altered, or a secret whose
    /// key was destroyed); [`Error::Store`].
    pub fn get(
        &self,
        store: &KeeperStore,
        kind: Kind,
        user: &Handle,
        id: &[u8],
    ) -> Result<Option<Opened>, Error> {
        let key = record_key(kind, user, id);
        let Some(sealed) = store.vault_get(&key)? else {
            return Ok(None);
        };
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let cipher_key = self
            .cipher_key(&held, kind, &key)
            .ok_or_else(|| Error::secrets("the record's key was destroyed"))?;
        Self::open_with(&cipher_key, &key, &sealed)
            .map(Some)
            .ok_or_else(|| Error::secrets(format!("a {kind:?} record does not open")))
    }

    /// The ids of `user`'s records of `kind`, in id order, without opening them (for quotas).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn ids(
        &self,
        store: &KeeperStore,
        kind: Kind,
        user: &Handle,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let prefix = record_key(kind, user, &[]);
        Ok(store
            .vault_scan(&prefix)?
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_vec())
            .collect())
    }

    /// Fill `bytes` from the vault's randomness (for ids and nonces of the keeper's records).
    pub fn fill(&self, bytes: &mut [u8]) {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill_bytes(bytes);
    }

    /// Every record of `kind` of `user` that opens: (id, contents), in id order.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn list(
        &self,
        store: &KeeperStore,
        kind: Kind,
        user: &Handle,
    ) -> Result<Vec<Listed>, Error> {
        let prefix = record_key(kind, user, &[]);
        let rows = store.vault_scan(&prefix)?;
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| {
                let ck = self.cipher_key(&held, kind, &k)?;
                Self::open_with(&ck, &k, &v).map(|(_, p)| (k[prefix.len()..].to_vec(), p))
            })
            .collect())
    }

    /// Write records in one durable step: the keyring first (its state advanced, secret keys
    /// made or destroyed), then the store. `puts` are (kind, user, id, contents, version);
    /// `deletes` are (kind, user, id). A secret's key is made on its first put and destroyed
    /// with its delete.
    ///
    /// # Errors
    /// [`Error::Store`] with [`obscura_store::Error::RolledBack`] when the store is not at the
    /// state this keeper left it in (restored or altered while running); others.
    pub fn write(
        &self,
        store: &KeeperStore,
        puts: &[Put<'_>],
        deletes: &[(Kind, Handle, Vec<u8>)],
        subject: &[u8; 16],
        detail: &str,
        now: u64,
    ) -> Result<(), Error> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = held.keys.clone();
        let mut changes: Vec<VaultChange> = Vec::with_capacity(puts.len() + deletes.len());
        for (kind, user, id) in deletes {
            if matches!(kind, Kind::Secret | Kind::Session) {
                keys.remove(&own_key_id(*kind, user, id).ok_or_else(bad_id)?);
            }
            changes.push((record_key(*kind, user, id), None));
        }
        for (kind, user, id, plain, version) in puts {
            let key = record_key(*kind, user, id);
            let cipher_key = match kind {
                // A secret keeps its key until it is deleted.
                Kind::Secret => keys
                    .entry(own_key_id(*kind, user, id).ok_or_else(bad_id)?)
                    .or_insert_with(|| fresh_key(&mut *rng))
                    .clone(),
                // A session gets a new key at every write: an older copy of its record (an
                // older floor, or one already ended) no longer opens.
                Kind::Session => {
                    let k = fresh_key(&mut *rng);
                    keys.insert(own_key_id(*kind, user, id).ok_or_else(bad_id)?, k.clone());
                    k
                }
                _ => self.storage_key.clone(),
            };
            changes.push((
                key.clone(),
                Some(Self::seal_with(
                    &mut rng,
                    &cipher_key,
                    &key,
                    *version,
                    plain,
                )),
            ));
        }
        let next = held.store_state + 1;
        let keyring = Keyring {
            state: next,
            storage_key: *self.storage_key,
            keys: keys.iter().map(|(id, k)| (*id, **k)).collect(),
        };
        write_private_atomic(
            &self.path,
            &seal_secrets(&keyring, &self.purpose, &self.wrapping, &mut *rng)?,
        )?;
        held.keys = keys;
        store.vault_write(held.store_state, &changes, subject, detail, now)?;
        held.store_state = next;
        Ok(())
    }
}

fn bad_id() -> Error {
    Error::secrets("a secret or session id is 16 bytes")
}

fn fresh_key(rng: &mut dyn RngCore) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *k);
    k
}
