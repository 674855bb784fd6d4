//! A node's storage, on redb: image shares, hash-bit shares, band-token postings, signed
//! manifests, the request-replay window and the hash-chained audit log. [`PgStore`] keeps the
//! same records in PostgreSQL, for several processes of one node; the node uses either through
//! [`NodeStore`].
//!
//! Every method that changes state runs in one redb write transaction that also appends its audit
//! entry, and returns only after the transaction committed with [`redb::Durability::Immediate`]:
//! a write the node acknowledges is on disk (DESIGN invariant 4), and a crash leaves either all of
//! it or none.
//!
//! Indexing is two-phase. [`Store::prepare`] stores an image's shares, manifest and tokens as
//! *pending*: nothing about it is visible to searches. [`Store::commit`] publishes its postings
//! and hash share in one transaction. A client commits only after every node prepared, and Stage-2
//! ranks only candidates that every answering node holds committed, so an image that failed
//! part-way is never found; [`Store::purge_pending`] removes what was never committed.
//!
//! ```
//! use obscura_sharing::manifest::ImageId;
//! use obscura_store::{NewImage, Store};
//! use obscura_tokens::Token;
//!
//! let dir = std::env::temp_dir().join(format!("obscura-store-doc-{}", std::process::id()));
//! let store = Store::open(&dir.join("node1.redb"), 1)?;
//! let id = ImageId([7; 16]);
//! let tokens = std::array::from_fn(|band| Token([band as u8; 16]));
//! store.prepare(&NewImage {
//!     id,
//!     manifest: b"signed manifest bytes",
//!     image_share: b"share of the encoded file",
//!     hash_share: &[1; 256],
//!     tokens,
//!     key_version: 1,
//!     elements: None,
//!     retired_tokens: None,
//! }, 1_790_000_000)?;
//! assert!(store.lookup(&[tokens[3]])?[0].is_empty()); // pending: invisible
//! store.commit(&id, 1_790_000_001)?;
//! assert_eq!(store.lookup(&[tokens[3]])?[0], vec![id]);
//! assert_eq!(store.image(&id)?.unwrap().image_share, b"share of the encoded file");
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), obscura_store::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
mod backend;
pub use backend::{LedgerLock, NodeStore, RotationFactor};
mod db;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod keeper;
mod ledger;
pub use ledger::StoredLedger;
pub mod pg;
pub use pg::PgStore;
mod postings;
mod rotation;

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use postings::{PostingMap, Postings};

use obscura_sharing::manifest::ImageId;
use obscura_tokens::{Token, BANDS, TOKEN_LEN};
use redb::{
    Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable,
    ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

pub use audit::{AuditEntry, AuditKind};
pub use db::StoreOptions;
pub use rotation::{KeyVersions, RotationStatus, TokenMove};

/// Length of a stored hash-bit share (64 field elements).
pub const HASH_SHARE_LEN: usize = 256;

/// id → state record ([`ImageRecord`] encoding).
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("image_state");
/// id → signed manifest.
const MANIFESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("manifests");
/// id → image share.
const IMAGE_SHARES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("image_shares");
/// id → hash share; rows exist only for committed images.
const HASH_SHARES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hash_shares");
/// id → hash share of a pending image.
const PENDING_HASH_SHARES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("pending_hash_shares");
/// token → ids; only committed images are posted.
const POSTINGS: MultimapTableDefinition<&[u8], &[u8]> = MultimapTableDefinition::new("postings");
/// VOPRF token → the band element it was hashed from (at most 8 × 256 per key version), kept
/// so that a key rotation can move every element to the next version.
const TOKEN_ELEMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("token_elements");
/// Token of the version being retired → its token under the next version; filled while a
/// rotation is under way (at most 8 × 256 rows).
const TOKEN_MAP: TableDefinition<&[u8], &[u8]> = TableDefinition::new("token_map");
/// request id → time first seen.
const REQUESTS: TableDefinition<&[u8], u64> = TableDefinition::new("requests");
/// time ‖ request id → (), to expire the replay window in time order.
const REQUESTS_BY_TIME: TableDefinition<&[u8], ()> = TableDefinition::new("requests_by_time");
/// seq → audit entry.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// name → value.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Clean-room runs released to, by Work-ID.
const ROOM_RUNS: TableDefinition<&[u8], u64> = TableDefinition::new("room_runs");

/// Errors of the node store. Exhaustive on purpose: the node maps each to a wire error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file could not be opened or created.
    #[error("cannot open node store {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// What redb reported.
        source: redb::DatabaseError,
    },
    /// The store belongs to another node.
    #[error("this store belongs to node {found}, not node {expected}")]
    WrongNode {
        /// The node that opened it.
        expected: u8,
        /// The node recorded in the file.
        found: u8,
    },
    /// A storage operation failed; nothing of it was written.
    #[error("storage failure, nothing was written: {0}")]
    Storage(String),
    /// No such image (or not committed yet, where that matters).
    #[error("unknown image {0}")]
    UnknownImage(ImageId),
    /// An image with this id is already committed with other contents.
    #[error("image {0} already exists")]
    AlreadyExists(ImageId),
    /// Input of the wrong shape.
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    /// A request id was seen before within the replay window.
    #[error("replayed request")]
    Replay,
    /// A request's timestamp is outside the allowed clock skew.
    #[error("request time {at} is more than {window} s away from the node's clock ({now})")]
    Stale {
        /// The request's time.
        at: u64,
        /// The node's time.
        now: u64,
        /// Allowed skew in seconds.
        window: u64,
    },
    /// Storing this would leave less free space than the store keeps for bookkeeping
    /// ([`StoreOptions::reserve_bytes`]); nothing was written.
    #[error(
        "the disk holding the store is full: {free} bytes free, and this write needs about \
         {needed} on top of the {reserve} kept for request records and audit entries; \
         nothing was written"
    )]
    DiskFull {
        /// Bytes free on the file system.
        free: u64,
        /// Bytes the write needs, counted generously.
        needed: u64,
        /// Bytes kept free.
        reserve: u64,
    },
    /// A stored record is corrupt.
    #[error("corrupt store: {0}")]
    Corrupt(&'static str),
    /// A keeper refused: the client's evaluation budget for this window would be exceeded.
    #[error(
        "evaluation budget spent: {used} of {budget} used in this window, {asked} more asked; \
         it resets at Unix time {resets_at}"
    )]
    OverBudget {
        /// Evaluations used in the window.
        used: u64,
        /// Evaluations asked for.
        asked: u64,
        /// The budget per window.
        budget: u64,
        /// When the next window starts.
        resets_at: u64,
    },
    /// The request was made under a token key version this node does not serve (now).
    #[error(
        "the tokens were made under key version {asked}, and this node serves version {current}{}: \
         reload the client configuration",
        match next { Some(v) => format!(" (and {v}, which it is moving to)"), None => String::new() }
    )]
    KeyVersion {
        /// The version of the request.
        asked: u32,
        /// The version served.
        current: u32,
        /// The version being moved to.
        next: Option<u32>,
    },
    /// The stored band elements changed while a rotation was being set up; setting it up again
    /// sees them all.
    #[error("the stored band elements changed while the rotation was set up; try again")]
    ElementsChanged,
    /// A keeper's account records are at another state than the state counter kept apart
    /// from the store says: the store was restored from an old copy (or altered).
    #[error(
        "the keeper's account records are at state {store}, but its state counter says {counter}: \
         the store was restored from an older copy"
    )]
    RolledBack {
        /// The state the store holds.
        store: u64,
        /// The state the counter holds.
        counter: u64,
    },
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                storage_error(e.to_string())
            }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A redb failure as [`Error::Storage`]; the one every operation meets after a write failed
/// (until the store reopens) says what happened in the store's terms.
fn storage_error(text: String) -> Error {
    if text == redb::StorageError::PreviousIo.to_string() {
        return Error::Storage(format!(
            "an earlier write to the store failed (its disk full?); the store reopens once the \
             disk has room, at most every {} s",
            db::RETRY.as_secs()
        ));
    }
    Error::Storage(text)
}

/// An image as a client hands it to a node.
#[derive(Clone, Copy, Debug)]
pub struct NewImage<'a> {
    /// Its id.
    pub id: ImageId,
    /// The owner-signed manifest bytes.
    pub manifest: &'a [u8],
    /// This node's share of the file.
    pub image_share: &'a [u8],
    /// This node's shares of the 64 hash bits.
    pub hash_share: &'a [u8; HASH_SHARE_LEN],
    /// The 8 band tokens under this node's keys.
    pub tokens: [Token; BANDS],
    /// The key version of the tokens: the version the node writes (the next one during a
    /// rotation; see [`Store::key_versions`]).
    pub key_version: u32,
    /// With VOPRF tokens, the 8 band elements the tokens were hashed from (the caller checked
    /// that they match); `None` with HMAC tokens.
    pub elements: Option<&'a [[u8; 32]; BANDS]>,
    /// During a rotation, the same elements' tokens under the version being retired, so that
    /// lookups under that version find the image too; `None` otherwise.
    pub retired_tokens: Option<[Token; BANDS]>,
}

/// Where an image stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageState {
    /// Stored, not visible to searches.
    Pending,
    /// Visible.
    Committed,
}

/// The per-image state record: state, time of the last change, tokens.
pub(crate) struct ImageRecord {
    state: ImageState,
    changed_at: u64,
    tokens: [Token; BANDS],
}

impl ImageRecord {
    const LEN: usize = 1 + 8 + BANDS * TOKEN_LEN;

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(match self.state {
            ImageState::Pending => 1,
            ImageState::Committed => 2,
        });
        out.extend_from_slice(&self.changed_at.to_be_bytes());
        out.extend_from_slice(&encode_tokens(&self.tokens));
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != Self::LEN {
            return Err(Error::Corrupt("image record length"));
        }
        let state = match bytes[0] {
            1 => ImageState::Pending,
            2 => ImageState::Committed,
            _ => return Err(Error::Corrupt("image state")),
        };
        let changed_at = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let tokens = decode_tokens(&bytes[9..])?;
        Ok(ImageRecord {
            state,
            changed_at,
            tokens,
        })
    }
}

/// An image's 8 band tokens as both stores keep them: one after the other.
pub(crate) fn encode_tokens(tokens: &[Token; BANDS]) -> Vec<u8> {
    tokens.iter().flat_map(|t| t.0).collect()
}

/// The band tokens [`encode_tokens`] wrote.
pub(crate) fn decode_tokens(bytes: &[u8]) -> Result<[Token; BANDS], Error> {
    if bytes.len() != BANDS * TOKEN_LEN {
        return Err(Error::Corrupt("image tokens"));
    }
    Ok(std::array::from_fn(|i| {
        Token(
            bytes[i * TOKEN_LEN..(i + 1) * TOKEN_LEN]
                .try_into()
                .expect("16 bytes"),
        )
    }))
}

/// An image id as a store keeps it.
pub(crate) fn id_of(bytes: &[u8]) -> Result<ImageId, Error> {
    Ok(ImageId(bytes.try_into().map_err(|_| Error::Corrupt("id"))?))
}

/// Request ids admitted before this time are forgotten: a replay of one fails the time check
/// of any window from `now` on.
pub(crate) fn replay_horizon(now: u64, window: u64) -> u64 {
    now.saturating_sub(2 * window)
}

/// A committed image's stored parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredImage {
    /// The owner-signed manifest.
    pub manifest: Vec<u8>,
    /// This node's share of the file.
    pub image_share: Vec<u8>,
}

/// Counts for status reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStats {
    /// Committed images.
    pub committed: u64,
    /// Pending images.
    pub pending: u64,
    /// Audit entries.
    pub audit_entries: u64,
}

/// How much room a store takes, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreSize {
    /// Bytes the store takes: the redb file, or the PostgreSQL database (share objects kept
    /// outside it not counted).
    pub bytes: u64,
    /// Bytes free on the store's file system, where the store can tell (redb).
    pub free_bytes: Option<u64>,
}

/// Where a user stands against one of its limits per window: what it used, since when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Counted in this window.
    pub used: u32,
    /// When the window began.
    pub since: u64,
}

impl Usage {
    /// Count `n` more against `limit` in a window of `window` seconds that a use at `now`
    /// falls in (a window that ended starts again); `Err` with where it stands, and nothing
    /// counted, when that would go over.
    pub(crate) fn charge(
        &mut self,
        n: u32,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<(), Usage> {
        if self.since.saturating_add(window) <= now {
            *self = Usage {
                used: 0,
                since: now,
            };
        }
        if self.used.saturating_add(n) > limit {
            return Err(*self);
        }
        self.used += n;
        Ok(())
    }
}

/// One node's store.
pub struct Store {
    db: db::Db,
    node: u8,
    /// Every committed posting and image, mirrored from the `postings` table so Stage-1 and an
    /// exhaustive list read no B-tree. Held across each commit that changes it and updated
    /// right after; loaded at open.
    postings: RwLock<Postings>,
    /// The token key versions served, and a rotation's token maps. Lock order: `keys`, then a
    /// write transaction, then `postings`.
    keys: RwLock<rotation::KeyState>,
    /// Each user's use of its limits, by kind: kept in memory (the redb store serves one
    /// process), so a restart starts every window again.
    usage: std::sync::Mutex<HashMap<(String, &'static str), Usage>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("node", &self.node).finish()
    }
}

impl Store {
    /// Open (or create) the store of node `node` at `path`.
    ///
    /// # Errors
    /// [`Error::Open`] when the file cannot be opened (also when another process holds it),
    /// [`Error::WrongNode`] when it belongs to another node.
    pub fn open(path: &Path, node: u8) -> Result<Store, Error> {
        Self::open_with(path, node, StoreOptions::default())
    }

    /// Open (or create) the store of node `node` at `path`, with the cache and free-space
    /// reserve of `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(path: &Path, node: u8, options: StoreOptions) -> Result<Store, Error> {
        let db = open_claimed(path, options, "node", node, |txn| {
            create_tables!(
                txn,
                STATE,
                MANIFESTS,
                IMAGE_SHARES,
                HASH_SHARES,
                PENDING_HASH_SHARES
            );
            create_tables!(
                txn,
                TOKEN_ELEMENTS,
                TOKEN_MAP,
                REQUESTS,
                REQUESTS_BY_TIME,
                AUDIT
            );
            txn.open_multimap_table(POSTINGS)?;
            Ok(())
        })?;
        let store = Store {
            db,
            node,
            postings: RwLock::default(),
            keys: RwLock::default(),
            usage: std::sync::Mutex::default(),
        };
        let guard = store.db.get()?;
        let postings = read_postings(&guard)?;
        let keys = rotation::read_keys(&guard)?;
        drop(guard);
        store.mirror(postings);
        *store.keys_mut() = keys;
        Ok(store)
    }

    /// The database, reopened first where a failure latched in it; the posting mirror and the
    /// key state are reloaded with it. Skipped while another thread holds the key state (this
    /// one may): the next operation reopens it then.
    fn db(&self) -> Result<db::DbGuard<'_>, Error> {
        if self.db.wants_reopen() {
            let keys = match self.keys.try_write() {
                Ok(keys) => Some(keys),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut keys) = keys {
                self.db.reopen(|database| {
                    let postings = read_postings(database)?;
                    *keys = rotation::read_keys(database)?;
                    self.mirror(postings);
                    Ok(())
                })?;
            }
        }
        self.db.get()
    }

    fn postings_mut(&self) -> std::sync::RwLockWriteGuard<'_, Postings> {
        // A panic while holding the lock leaves whole lists (every update is one push or one
        // retain per token), so a poisoned lock is still consistent.
        self.postings.write().unwrap_or_else(|e| e.into_inner())
    }

    fn postings(&self) -> std::sync::RwLockReadGuard<'_, Postings> {
        self.postings.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Take `postings`, read from the table, as the mirror.
    fn mirror(&self, postings: PostingMap) {
        *self.postings_mut() = Postings::from_map(postings);
    }

    /// The node this store belongs to.
    pub fn node(&self) -> u8 {
        self.node
    }

    /// Store an image as pending. Idempotent: preparing the same image again succeeds, and
    /// replaces a pending image's parts.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when a committed image has this id, [`Error::Invalid`] for an
    /// empty manifest or share.
    pub fn prepare(&self, img: &NewImage<'_>, now: u64) -> Result<(), Error> {
        self.prepare_many(std::slice::from_ref(img), now)
    }

    /// Store many images as pending in one durable transaction (one disk sync): all or none.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare), for the first image that fails; nothing is stored then.
    pub fn prepare_many(&self, images: &[NewImage<'_>], now: u64) -> Result<(), Error> {
        if images
            .iter()
            .any(|img| img.manifest.is_empty() || img.image_share.is_empty())
        {
            return Err(Error::Invalid("empty manifest or image share"));
        }
        let bytes = images
            .iter()
            .map(|i| (i.manifest.len() + i.image_share.len() + HASH_SHARE_LEN) as u64 + 1024)
            .sum();
        self.db.check_room(bytes)?;
        if images.iter().any(|i| i.retired_tokens.is_some()) {
            let mut keys = self.keys_mut();
            let added = self.prepare_under(&keys, images, now)?;
            keys.add_counterparts(&added);
        } else {
            self.prepare_under(&self.keys(), images, now)?;
        }
        Ok(())
    }

    /// [`prepare_many`](Self::prepare_many) with the key state locked; returns the token pairs
    /// (retired, next) it recorded.
    fn prepare_under(
        &self,
        keys: &rotation::KeyState,
        images: &[NewImage<'_>],
        now: u64,
    ) -> Result<Vec<rotation::TokenPair>, Error> {
        if let Some(img) = images.iter().find(|i| i.key_version != keys.writing()) {
            return Err(keys.refuse(img.key_version));
        }
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        let mut added = Vec::new();
        {
            let mut state = txn.open_table(STATE)?;
            let mut manifests = txn.open_table(MANIFESTS)?;
            let mut shares = txn.open_table(IMAGE_SHARES)?;
            let mut pending = txn.open_table(PENDING_HASH_SHARES)?;
            let mut elements = txn.open_table(TOKEN_ELEMENTS)?;
            let mut map = txn.open_table(TOKEN_MAP)?;
            for img in images {
                let id = img.id.0.as_slice();
                if let Some(r) = state.get(id)? {
                    if ImageRecord::decode(r.value())?.state == ImageState::Committed {
                        return Err(Error::AlreadyExists(img.id));
                    }
                }
                let record = ImageRecord {
                    state: ImageState::Pending,
                    changed_at: now,
                    tokens: img.tokens,
                };
                state.insert(id, record.encode().as_slice())?;
                manifests.insert(id, img.manifest)?;
                shares.insert(id, img.image_share)?;
                pending.insert(id, img.hash_share.as_slice())?;
                for (t, e) in img.tokens.iter().zip(img.elements.into_iter().flatten()) {
                    elements.insert(t.0.as_slice(), e.as_slice())?;
                }
                if let Some(retired) = img.retired_tokens.filter(|_| keys.rotating()) {
                    for (old, new) in retired.iter().zip(&img.tokens) {
                        if !keys.has_counterpart(&old.0) {
                            map.insert(old.0.as_slice(), new.0.as_slice())?;
                            added.push((old.0, new.0));
                        }
                    }
                }
            }
        }
        for img in images {
            audit::append(&txn, now, AuditKind::Prepare, &img.id.0, &[])?;
        }
        txn.commit()?;
        Ok(added)
    }

    /// Make a prepared image visible: post its tokens and publish its hash share. Committing a
    /// committed image again succeeds and changes nothing.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] when it was never prepared (or was deleted).
    pub fn commit(&self, image: &ImageId, now: u64) -> Result<(), Error> {
        self.commit_many(std::slice::from_ref(image), now)
    }

    /// Commit many prepared images in one durable transaction: all or none.
    ///
    /// # Errors
    /// As [`commit`](Self::commit), for the first image that fails; nothing changes then.
    pub fn commit_many(&self, images: &[ImageId], now: u64) -> Result<(), Error> {
        let keys = self.keys();
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        let mut committed = Vec::with_capacity(images.len());
        {
            let mut state = txn.open_table(STATE)?;
            let mut pending = txn.open_table(PENDING_HASH_SHARES)?;
            let mut hashes = txn.open_table(HASH_SHARES)?;
            let mut postings = txn.open_multimap_table(POSTINGS)?;
            for image in images {
                let id = image.0.as_slice();
                let mut record = match state.get(id)? {
                    None => return Err(Error::UnknownImage(*image)),
                    Some(r) => ImageRecord::decode(r.value())?,
                };
                if record.state == ImageState::Committed {
                    continue;
                }
                // Prepared before a rotation began, committed during it: post the next
                // version's tokens.
                if let Some(moved) = keys.forward(&record.tokens)? {
                    record.tokens = moved;
                }
                let hash = pending
                    .remove(id)?
                    .ok_or(Error::Corrupt("pending image without hash share"))?
                    .value()
                    .to_vec();
                hashes.insert(id, hash.as_slice())?;
                for t in &record.tokens {
                    postings.insert(t.0.as_slice(), id)?;
                }
                record.state = ImageState::Committed;
                record.changed_at = now;
                state.insert(id, record.encode().as_slice())?;
                committed.push((*image, record.tokens));
            }
        }
        for (image, _) in &committed {
            audit::append(&txn, now, AuditKind::Commit, &image.0, &[])?;
        }
        // The mirror is held across the commit (as a rotation step holds it), so a delete that
        // commits after this one cannot update the mirror before this one does.
        let mut map = self.postings_mut();
        txn.commit()?;
        for (id, tokens) in &committed {
            map.change(*id, None, Some(tokens));
        }
        Ok(())
    }

    /// Remove an image, pending or committed, with its postings.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] when there is no such image.
    pub fn delete(&self, image: &ImageId, now: u64) -> Result<(), Error> {
        self.delete_if(image, now, |_| Ok(()))
    }

    /// Remove an image, pending or committed, with its postings, if `allow` accepts its stored
    /// manifest; it runs inside the deleting transaction, so the image it judged is the one
    /// removed.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] when there is no such image; whatever `allow` returns, with
    /// nothing removed.
    pub fn delete_if(
        &self,
        image: &ImageId,
        now: u64,
        allow: impl FnOnce(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        {
            let manifests = txn.open_table(MANIFESTS)?;
            let stored = manifests.get(image.0.as_slice())?;
            match stored {
                Some(m) => allow(m.value())?,
                None => return Err(Error::UnknownImage(*image)),
            }
        }
        let posted = remove_image(&txn, image)?;
        audit::append(&txn, now, AuditKind::Delete, &image.0, &[])?;
        let mut map = self.postings_mut();
        txn.commit()?;
        if let Some(tokens) = posted {
            map.change(*image, Some(&tokens), None);
        }
        Ok(())
    }

    /// Remove pending images last changed before `before`; returns how many.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure (nothing removed).
    pub fn purge_pending(&self, before: u64, now: u64) -> Result<usize, Error> {
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        let stale: Vec<ImageId> = {
            let state = txn.open_table(STATE)?;
            let mut v = Vec::new();
            for entry in state.iter()? {
                let (k, r) = entry?;
                let r = ImageRecord::decode(r.value())?;
                if r.state == ImageState::Pending && r.changed_at < before {
                    v.push(id_of(k.value())?);
                }
            }
            v
        };
        for id in &stale {
            remove_image(&txn, id)?;
            audit::append(&txn, now, AuditKind::Purge, &id.0, &[])?;
        }
        txn.commit()?;
        Ok(stale.len())
    }

    /// Stage-1: for each token, the committed images posted under it.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn lookup(&self, tokens: &[Token]) -> Result<Vec<Vec<ImageId>>, Error> {
        Ok(self.postings().lookup(tokens))
    }

    /// Stage-1 with the band count: committed images posted under at least `min_tokens` of
    /// `tokens` (each image posts one token per band, so this counts bands), sorted by id, and
    /// how many images matched at least one token.
    ///
    /// The tokens are of key version `key_version`. During a rotation both versions are served:
    /// each token is also looked up as its counterpart under the other version, so images count
    /// the same whether their postings moved yet or not (an image's postings move all at once).
    ///
    /// # Errors
    /// [`Error::KeyVersion`] for a version not served.
    pub fn lookup_at_least(
        &self,
        key_version: u32,
        tokens: &[Token],
        min_tokens: usize,
    ) -> Result<(Vec<ImageId>, usize), Error> {
        let keys = self.keys();
        // Refuses a version not served.
        keys.counterparts(key_version)?;
        Ok(self.postings().count(&keys, tokens, min_tokens))
    }

    /// Stage-2: the hash shares of committed images, `None` where this node holds none.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure, [`Error::Corrupt`] for a share of the wrong size.
    pub fn hash_shares(&self, ids: &[ImageId]) -> Result<Vec<Option<[u8; HASH_SHARE_LEN]>>, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(HASH_SHARES)?;
        ids.iter()
            .map(|id| {
                table
                    .get(id.0.as_slice())?
                    .map(|v| {
                        v.value()
                            .try_into()
                            .map_err(|_| Error::Corrupt("hash share length"))
                    })
                    .transpose()
            })
            .collect()
    }

    /// Every committed image's id, in no particular order; `None` when there are more than
    /// `max`. Read from memory.
    ///
    /// # Errors
    /// [`Error::Storage`] when the store had to be reopened and could not be.
    pub fn committed_ids(&self, max: u64) -> Result<Option<Vec<ImageId>>, Error> {
        drop(self.db()?);
        Ok(self.postings().committed(max))
    }

    /// A committed image's manifest and share (for reconstruction).
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn image(&self, image: &ImageId) -> Result<Option<StoredImage>, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let id = image.0.as_slice();
        match txn.open_table(STATE)?.get(id)? {
            Some(r) if ImageRecord::decode(r.value())?.state == ImageState::Committed => {}
            _ => return Ok(None),
        }
        let manifest = txn.open_table(MANIFESTS)?.get(id)?;
        let share = txn.open_table(IMAGE_SHARES)?.get(id)?;
        match (manifest, share) {
            (Some(m), Some(s)) => Ok(Some(StoredImage {
                manifest: m.value().to_vec(),
                image_share: s.value().to_vec(),
            })),
            _ => Err(Error::Corrupt("committed image without manifest or share")),
        }
    }

    /// The state of an image, if this node has it.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn state(&self, image: &ImageId) -> Result<Option<ImageState>, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let state = txn.open_table(STATE)?;
        let r = state.get(image.0.as_slice())?;
        r.map(|r| ImageRecord::decode(r.value()).map(|r| r.state))
            .transpose()
    }

    /// Record a request id, refusing a replay or a timestamp more than `window` seconds from
    /// `now`. Ids older than the window are forgotten (a replay of one fails the time check).
    /// Refusals are audited.
    ///
    /// # Errors
    /// [`Error::Replay`], [`Error::Stale`].
    pub fn admit_request(
        &self,
        request_id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
    ) -> Result<(), Error> {
        self.admit(request_id, at, now, window, Durability::Immediate)
    }

    /// As [`admit_request`](Self::admit_request), without a disk sync of its own: the record
    /// becomes durable with the next durable commit — the operation's own when it changes
    /// state, else the next state change or audit checkpoint. A node that crashes before then
    /// forgets the ids admitted since, so such a request could be replayed once after the
    /// restart: use it where a second answer reveals nothing the first did not. Stage-2 query
    /// ids are not such a case.
    ///
    /// # Errors
    /// As [`admit_request`](Self::admit_request).
    pub fn admit_request_deferred(
        &self,
        request_id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
    ) -> Result<(), Error> {
        self.admit(request_id, at, now, window, Durability::None)
    }

    /// As [`admit_request_deferred`](Self::admit_request_deferred), with refusals left for the
    /// caller to audit (or not).
    ///
    /// # Errors
    /// As [`admit_request`](Self::admit_request).
    pub fn admit_request_unaudited(
        &self,
        request_id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
    ) -> Result<(), Error> {
        admit(
            &*self.db()?,
            request_id,
            at,
            now,
            window,
            Durability::None,
            false,
        )
    }

    fn admit(
        &self,
        request_id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
        durability: Durability,
    ) -> Result<(), Error> {
        admit(&*self.db()?, request_id, at, now, window, durability, true)
    }

    /// Append a request to the audit log: its request id and a short description (who asked,
    /// what, sizes; never query content). This commit is not forced to disk on its own; it
    /// becomes durable with the next state change (a write request's own) or checkpoint.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn record_query(
        &self,
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error> {
        let db = self.db()?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None)?;
        audit::append(&txn, now, AuditKind::Query, request_id, detail)?;
        txn.commit()?;
        Ok(())
    }

    /// Count one clean-room run of `work`, durably and with its audit entry in the same
    /// commit, unless `max` runs of it were counted already: the run's number from 1, or `None`
    /// when they are spent. A run is counted before any share leaves, so a crash cannot give
    /// one more than the approval allows.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn count_room_run(
        &self,
        work: &[u8; 32],
        max: u32,
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<Option<u32>, Error> {
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        let run = {
            let mut runs = txn.open_table(ROOM_RUNS)?;
            let done = runs.get(work.as_slice())?.map_or(0, |v| v.value());
            if done >= u64::from(max) {
                return Ok(None);
            }
            runs.insert(work.as_slice(), done + 1)?;
            done + 1
        };
        audit::append(&txn, now, AuditKind::Query, request_id, detail)?;
        txn.commit()?;
        Ok(Some(u32::try_from(run).unwrap_or(u32::MAX)))
    }

    /// How many clean-room runs of `work` were released to.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn room_runs(&self, work: &[u8; 32]) -> Result<u32, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let runs = match txn.open_table(ROOM_RUNS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let n = runs.get(work.as_slice())?.map_or(0, |v| v.value());
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Sign the audit log's current head with the node's key and append the signature as a
    /// checkpoint entry; returns the checkpoint's sequence number.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn audit_checkpoint(
        &self,
        key: &ed25519_dalek::SigningKey,
        now: u64,
    ) -> Result<u64, Error> {
        audit_checkpoint(&*self.db()?, key, now)
    }

    /// Every audit entry, oldest first.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>, Error> {
        read_audit(&*self.db()?)
    }

    /// Up to `max` audit entries from `from` on, and the log's length.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure, [`Error::Corrupt`] for a malformed entry.
    pub fn audit_page(&self, from: u64, max: u32) -> Result<(Vec<AuditEntry>, u64), Error> {
        read_audit_page(&*self.db()?, from, max)
    }

    /// Append a refusal that the store itself did not see (a request that failed its
    /// authentication or its authorisation), not synced on its own.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn record_refusal(
        &self,
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error> {
        audit_refusal(&*self.db()?, request_id, now, detail)
    }

    /// The VOPRF band elements stored, by token.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure, [`Error::Corrupt`] for a malformed row.
    pub fn token_elements(&self) -> Result<Vec<(Token, [u8; 32])>, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(TOKEN_ELEMENTS)?;
        table
            .iter()?
            .map(|e| {
                let (k, v) = e?;
                let token = k.value().try_into().map_err(|_| Error::Corrupt("token"))?;
                let element = v
                    .value()
                    .try_into()
                    .map_err(|_| Error::Corrupt("element"))?;
                Ok((Token(token), element))
            })
            .collect()
    }

    /// Count `n` uses of `kind` by `user` against `limit` per `window` seconds; `Ok(Err(_))`
    /// with where the user stands, and nothing counted, when that would go over. Users whose
    /// window ended are forgotten, so the table holds only the current window's users.
    ///
    /// # Errors
    /// None here (the counts are in memory); the PostgreSQL store's can fail.
    pub fn charge(
        &self,
        user: &str,
        kind: &'static str,
        n: u32,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Result<(), Usage>, Error> {
        // Every update is whole: a poisoned lock is still consistent.
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.retain(|_, u| u.since.saturating_add(window) > now);
        let u = usage.entry((user.to_string(), kind)).or_insert(Usage {
            used: 0,
            since: now,
        });
        Ok(u.charge(n, limit, window, now))
    }

    /// The store file's size, and the room left on its file system.
    ///
    /// # Errors
    /// [`Error::Storage`] when the file cannot be read.
    pub fn size(&self) -> Result<StoreSize, Error> {
        Ok(StoreSize {
            bytes: self.db.file_bytes()?,
            free_bytes: self.db.free(),
        })
    }

    /// Counts of committed and pending images and audit entries.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn stats(&self) -> Result<StoreStats, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let committed = txn.open_table(HASH_SHARES)?.len()?;
        let pending = txn.open_table(PENDING_HASH_SHARES)?.len()?;
        let audit_entries = txn.open_table(AUDIT)?.len()?;
        Ok(StoreStats {
            committed,
            pending,
            audit_entries,
        })
    }
}

fn time_key(at: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&at.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

/// Remove every trace of an image inside `txn`; returns its tokens when it was committed (and
/// so posted).
fn remove_image(txn: &WriteTransaction, image: &ImageId) -> Result<Option<[Token; BANDS]>, Error> {
    let id = image.0.as_slice();
    let record = match txn.open_table(STATE)?.remove(id)? {
        None => return Err(Error::UnknownImage(*image)),
        Some(r) => ImageRecord::decode(r.value())?,
    };
    let mut postings = txn.open_multimap_table(POSTINGS)?;
    for t in &record.tokens {
        postings.remove(t.0.as_slice(), id)?;
    }
    txn.open_table(MANIFESTS)?.remove(id)?;
    txn.open_table(IMAGE_SHARES)?.remove(id)?;
    txn.open_table(HASH_SHARES)?.remove(id)?;
    txn.open_table(PENDING_HASH_SHARES)?.remove(id)?;
    Ok((record.state == ImageState::Committed).then_some(record.tokens))
}

/// Admit a request id into the replay window of `db` (see [`Store::admit_request`]), auditing
/// a refusal when `audited`.
fn admit(
    db: &Database,
    request_id: &[u8; 16],
    at: u64,
    now: u64,
    window: u64,
    durability: Durability,
    audited: bool,
) -> Result<(), Error> {
    if at.abs_diff(now) > window {
        if audited {
            audit_refusal(db, request_id, now, b"stale")?;
        }
        return Err(Error::Stale { at, now, window });
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    let seen = txn
        .open_table(REQUESTS)?
        .get(request_id.as_slice())?
        .is_some();
    if seen {
        txn.abort()?;
        if audited {
            audit_refusal(db, request_id, now, b"replay")?;
        }
        return Err(Error::Replay);
    }
    {
        let mut requests = txn.open_table(REQUESTS)?;
        requests.insert(request_id.as_slice(), at)?;
        let mut by_time = txn.open_table(REQUESTS_BY_TIME)?;
        by_time.insert(time_key(at, request_id).as_slice(), ())?;
        // Forget ids whose time is outside any future window.
        let horizon = replay_horizon(now, window);
        let expired: Vec<Vec<u8>> = by_time
            .range(..time_key(horizon, &[0; 16]).as_slice())?
            .map(|e| e.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        for k in expired {
            by_time.remove(k.as_slice())?;
            requests.remove(&k[8..])?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Append a refusal to the audit log of `db`. Not synced on its own: a flood of refused
/// requests must not cost a disk sync each; the entry becomes durable with the next durable
/// commit or checkpoint.
fn audit_refusal(db: &Database, request_id: &[u8; 16], now: u64, why: &[u8]) -> Result<(), Error> {
    audit_deferred(db, AuditKind::Refused, request_id, why, now)
}

/// Append one audit entry to `db` in a transaction of its own, not synced: durable with the
/// next durable commit.
pub(crate) fn audit_deferred(
    db: &Database,
    kind: AuditKind,
    subject: &[u8; 16],
    detail: &[u8],
    now: u64,
) -> Result<(), Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::None)?;
    audit::append(&txn, now, kind, subject, detail)?;
    txn.commit()?;
    Ok(())
}

/// Append one audit entry to `db` in a transaction of its own, synced to disk.
fn audit_durably(
    db: &Database,
    kind: AuditKind,
    subject: &[u8; 16],
    detail: &[u8],
    now: u64,
) -> Result<(), Error> {
    let txn = begin_durable(db)?;
    audit::append(&txn, now, kind, subject, detail)?;
    txn.commit()?;
    Ok(())
}

/// Up to `max` audit entries of `db` from `from` on, oldest first, and the log's length.
pub(crate) fn read_audit_page(
    db: &Database,
    from: u64,
    max: u32,
) -> Result<(Vec<AuditEntry>, u64), Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(AUDIT)?;
    let total = table.len()?;
    let entries = table
        .range(from..)?
        .take(max as usize)
        .map(|e| {
            let (k, v) = e?;
            AuditEntry::decode(k.value(), v.value()).map_err(Error::Corrupt)
        })
        .collect::<Result<_, _>>()?;
    Ok((entries, total))
}

/// Every committed posting of `db`, token → images.
fn read_postings(db: &Database) -> Result<PostingMap, Error> {
    let txn = db.begin_read()?;
    let table = txn.open_multimap_table(POSTINGS)?;
    let mut map = PostingMap::new();
    for entry in table.iter()? {
        let (token, ids) = entry?;
        let token: [u8; TOKEN_LEN] = token
            .value()
            .try_into()
            .map_err(|_| Error::Corrupt("posting token"))?;
        let list = map.entry(token).or_default();
        for id in ids {
            list.push(ImageId(
                id?.value()
                    .try_into()
                    .map_err(|_| Error::Corrupt("posting"))?,
            ));
        }
    }
    Ok(map)
}

/// Every audit entry of `db`, oldest first.
fn read_audit(db: &Database) -> Result<Vec<AuditEntry>, Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(AUDIT)?;
    table
        .iter()?
        .map(|e| {
            let (k, v) = e?;
            AuditEntry::decode(k.value(), v.value()).map_err(Error::Corrupt)
        })
        .collect()
}

/// Create each table named, so that readers never meet a missing one.
macro_rules! create_tables {
    ($txn:expr, $($table:expr),+) => {
        $( $txn.open_table($table)?; )+
    };
}
pub(crate) use create_tables;

/// Open (or create) the database at `path` as the store of `role` `id` (a store made for another
/// party is refused), and create its tables with `tables`, in one transaction.
fn open_claimed(
    path: &Path,
    options: StoreOptions,
    role: &'static str,
    id: u8,
    tables: impl FnOnce(&WriteTransaction) -> Result<(), Error>,
) -> Result<db::Db, Error> {
    let db = db::Db::open(path, options)?;
    {
        let guard = db.get()?;
        let txn = guard.begin_write()?;
        claim(&txn, role, id)?;
        tables(&txn)?;
        txn.commit()?;
    }
    Ok(db)
}

/// Record in a new store that it belongs to server `id` of kind `role` ("node", "keeper"), or
/// check that an existing one does.
fn claim(txn: &WriteTransaction, role: &'static str, id: u8) -> Result<(), Error> {
    let mut meta = txn.open_table(META)?;
    let found = meta.get(role)?.map(|v| v.value().to_vec());
    match found.as_deref() {
        None => {
            meta.insert(role, [id].as_slice())?;
            Ok(())
        }
        Some([n]) if *n == id => Ok(()),
        Some([n]) => Err(Error::WrongNode {
            expected: id,
            found: *n,
        }),
        Some(_) => Err(Error::Corrupt(if role == "node" {
            "node id"
        } else {
            "keeper id"
        })),
    }
}

/// A write transaction whose commit is synced to disk.
fn begin_durable(db: &Database) -> Result<WriteTransaction, Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

/// Sign the head of `db`'s audit log and append the checkpoint, durably.
fn audit_checkpoint(
    db: &Database,
    key: &ed25519_dalek::SigningKey,
    now: u64,
) -> Result<u64, Error> {
    let txn = begin_durable(db)?;
    let seq = audit::checkpoint(&txn, key, now)?;
    txn.commit()?;
    Ok(seq)
}
