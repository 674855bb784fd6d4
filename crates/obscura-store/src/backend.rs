//! What a node asks of its storage, as one trait with two implementations:
//! [`Store`](crate::Store) on redb (embedded, the default) and [`PgStore`](crate::pg::PgStore)
//! on PostgreSQL, where several processes of one node serve from one database.
//!
//! Both keep the same promises, which the store suite checks against each: a state change and
//! its audit entry commit together and durably, indexing is two-phase, a request id is admitted
//! once within the replay window, and a rotation moves postings in durable steps.

use zeroize::Zeroizing;

use obscura_sharing::manifest::ImageId;
use obscura_tokens::Token;

use crate::{
    AuditEntry, Error, ImageState, KeyVersions, NewImage, RotationStatus, StoreSize, StoreStats,
    StoredImage, StoredLedger, TokenMove, Usage, HASH_SHARE_LEN,
};

/// Held while one request works on the node's ledger: on a store that several processes share,
/// no other process changes the ledger meanwhile (the in-process lock covers one process).
pub struct LedgerLock<'a> {
    _held: Option<Box<dyn Send + 'a>>,
}

impl<'a> LedgerLock<'a> {
    /// A lock that holds nothing: one process serves the store.
    pub fn within_process() -> Self {
        LedgerLock { _held: None }
    }

    /// A lock released when `held` is dropped.
    pub(crate) fn held(held: impl Send + 'a) -> Self {
        LedgerLock {
            _held: Some(Box::new(held)),
        }
    }
}

/// A rotation's target version and `ρ`.
pub type RotationFactor = (u32, Zeroizing<[u8; 32]>);

/// A node's storage. The methods are those of [`Store`](crate::Store), whose documentation says
/// what each does and refuses; an implementation keeps the same contract.
///
/// Every method blocks (on a disk sync or a database round trip): call them off the async
/// workers, as the node does.
#[allow(missing_docs)] // each method is documented on `Store`
pub trait NodeStore: Send + Sync + std::fmt::Debug {
    fn node(&self) -> u8;
    fn prepare_many(&self, images: &[NewImage<'_>], now: u64) -> Result<(), Error>;
    fn commit_many(&self, images: &[ImageId], now: u64) -> Result<(), Error>;
    fn delete_if(
        &self,
        image: &ImageId,
        now: u64,
        allow: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error>;
    fn purge_pending(&self, before: u64, now: u64) -> Result<usize, Error>;
    fn lookup_at_least(
        &self,
        key_version: u32,
        tokens: &[Token],
        min_tokens: usize,
    ) -> Result<(Vec<ImageId>, usize), Error>;
    fn hash_shares(&self, ids: &[ImageId]) -> Result<Vec<Option<[u8; HASH_SHARE_LEN]>>, Error>;
    fn committed_ids(&self, max: u64) -> Result<Option<Vec<ImageId>>, Error>;
    fn image(&self, image: &ImageId) -> Result<Option<StoredImage>, Error>;
    fn state(&self, image: &ImageId) -> Result<Option<ImageState>, Error>;
    fn admit_request(&self, id: &[u8; 16], at: u64, now: u64, window: u64) -> Result<(), Error>;
    fn admit_request_deferred(
        &self,
        id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
    ) -> Result<(), Error>;
    fn admit_request_unaudited(
        &self,
        id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
    ) -> Result<(), Error>;
    fn record_query(&self, request_id: &[u8; 16], detail: &[u8], now: u64) -> Result<(), Error>;
    fn record_refusal(&self, request_id: &[u8; 16], detail: &[u8], now: u64) -> Result<(), Error>;
    fn count_room_run(
        &self,
        work: &[u8; 32],
        max: u32,
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<Option<u32>, Error>;
    fn room_runs(&self, work: &[u8; 32]) -> Result<u32, Error>;
    fn audit_checkpoint(&self, key: &ed25519_dalek::SigningKey, now: u64) -> Result<u64, Error>;
    fn audit_entries(&self) -> Result<Vec<AuditEntry>, Error>;
    fn audit_page(&self, from: u64, max: u32) -> Result<(Vec<AuditEntry>, u64), Error>;
    fn token_elements(&self) -> Result<Vec<(Token, [u8; 32])>, Error>;
    fn stats(&self) -> Result<StoreStats, Error>;
    fn size(&self) -> Result<StoreSize, Error>;
    /// Whether [`size`](Self::size) tells the free room (asked without touching the store, so
    /// an async caller may).
    fn tells_free_room(&self) -> bool;
    fn key_versions(&self) -> Result<KeyVersions, Error>;
    fn rotation_factor(&self) -> Result<Option<RotationFactor>, Error>;
    /// The versions served and a rotation's factor, read together.
    fn key_state(&self) -> Result<(KeyVersions, Option<RotationFactor>), Error>;
    fn begin_rotation(
        &self,
        from: u32,
        to: u32,
        factor: &[u8; 32],
        moves: &[TokenMove],
        now: u64,
    ) -> Result<RotationStatus, Error>;
    fn rotate_step(&self, max_images: usize, now: u64) -> Result<RotationStatus, Error>;
    fn finish_rotation(&self, to: u32, now: u64) -> Result<RotationStatus, Error>;
    fn rotation_status(&self) -> Result<RotationStatus, Error>;
    fn ledger(&self) -> Result<StoredLedger, Error>;
    fn ledger_page(&self, from: u64, max: u32) -> Result<Vec<Vec<u8>>, Error>;
    fn ledger_append(
        &self,
        from: u64,
        entries: &[Vec<u8>],
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error>;
    fn ledger_replace(
        &self,
        from: u64,
        entries: &[Vec<u8>],
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error>;
    fn set_ledger_committed(&self, head: &[u8]) -> Result<(), Error>;
    fn set_ledger_cosigned(&self, head: &[u8]) -> Result<(), Error>;
    fn ledger_generation(&self) -> Result<u64, Error>;
    fn ledger_lock(&self) -> Result<LedgerLock<'_>, Error>;
    fn charge(
        &self,
        user: &str,
        kind: &'static str,
        n: u32,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Result<(), Usage>, Error>;

    /// [`prepare_many`](Self::prepare_many) of one image.
    fn prepare(&self, img: &NewImage<'_>, now: u64) -> Result<(), Error> {
        self.prepare_many(std::slice::from_ref(img), now)
    }

    /// [`commit_many`](Self::commit_many) of one image.
    fn commit(&self, image: &ImageId, now: u64) -> Result<(), Error> {
        self.commit_many(std::slice::from_ref(image), now)
    }

    /// [`delete_if`](Self::delete_if) whatever the manifest.
    fn delete(&self, image: &ImageId, now: u64) -> Result<(), Error> {
        self.delete_if(image, now, &mut |_| Ok(()))
    }
}

/// Forward each named method to `Store`'s own.
macro_rules! inherent {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        fn $name(&self, $($arg: $ty),*) -> $ret {
            crate::Store::$name(self, $($arg),*)
        }
    )*};
}

impl NodeStore for crate::Store {
    fn tells_free_room(&self) -> bool {
        true
    }

    inherent! {
        node() -> u8;
        prepare_many(images: &[NewImage<'_>], now: u64) -> Result<(), Error>;
        commit_many(images: &[ImageId], now: u64) -> Result<(), Error>;
        purge_pending(before: u64, now: u64) -> Result<usize, Error>;
        lookup_at_least(key_version: u32, tokens: &[Token], min_tokens: usize)
            -> Result<(Vec<ImageId>, usize), Error>;
        hash_shares(ids: &[ImageId]) -> Result<Vec<Option<[u8; HASH_SHARE_LEN]>>, Error>;
        committed_ids(max: u64) -> Result<Option<Vec<ImageId>>, Error>;
        image(image: &ImageId) -> Result<Option<StoredImage>, Error>;
        state(image: &ImageId) -> Result<Option<ImageState>, Error>;
        admit_request(id: &[u8; 16], at: u64, now: u64, window: u64) -> Result<(), Error>;
        admit_request_deferred(id: &[u8; 16], at: u64, now: u64, window: u64)
            -> Result<(), Error>;
        admit_request_unaudited(id: &[u8; 16], at: u64, now: u64, window: u64)
            -> Result<(), Error>;
        record_query(request_id: &[u8; 16], detail: &[u8], now: u64) -> Result<(), Error>;
        record_refusal(request_id: &[u8; 16], detail: &[u8], now: u64) -> Result<(), Error>;
        count_room_run(work: &[u8; 32], max: u32, request_id: &[u8; 16], detail: &[u8], now: u64)
            -> Result<Option<u32>, Error>;
        room_runs(work: &[u8; 32]) -> Result<u32, Error>;
        audit_checkpoint(key: &ed25519_dalek::SigningKey, now: u64) -> Result<u64, Error>;
        audit_entries() -> Result<Vec<AuditEntry>, Error>;
        audit_page(from: u64, max: u32) -> Result<(Vec<AuditEntry>, u64), Error>;
        token_elements() -> Result<Vec<(Token, [u8; 32])>, Error>;
        stats() -> Result<StoreStats, Error>;
        size() -> Result<StoreSize, Error>;
        begin_rotation(from: u32, to: u32, factor: &[u8; 32], moves: &[TokenMove], now: u64)
            -> Result<RotationStatus, Error>;
        rotate_step(max_images: usize, now: u64) -> Result<RotationStatus, Error>;
        finish_rotation(to: u32, now: u64) -> Result<RotationStatus, Error>;
        rotation_status() -> Result<RotationStatus, Error>;
        ledger() -> Result<StoredLedger, Error>;
        ledger_page(from: u64, max: u32) -> Result<Vec<Vec<u8>>, Error>;
        ledger_append(from: u64, entries: &[Vec<u8>], request_id: &[u8; 16], detail: &[u8], now: u64)
            -> Result<(), Error>;
        ledger_replace(from: u64, entries: &[Vec<u8>], request_id: &[u8; 16], detail: &[u8], now: u64)
            -> Result<(), Error>;
        set_ledger_committed(head: &[u8]) -> Result<(), Error>;
        set_ledger_cosigned(head: &[u8]) -> Result<(), Error>;
        charge(user: &str, kind: &'static str, n: u32, limit: u32, window: u64, now: u64)
            -> Result<Result<(), Usage>, Error>;
    }

    /// One process writes a redb store: its ledger changes only through this process.
    fn ledger_generation(&self) -> Result<u64, Error> {
        Ok(0)
    }

    fn ledger_lock(&self) -> Result<LedgerLock<'_>, Error> {
        Ok(LedgerLock::within_process())
    }

    fn delete_if(
        &self,
        image: &ImageId,
        now: u64,
        allow: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        crate::Store::delete_if(self, image, now, allow)
    }

    fn key_versions(&self) -> Result<KeyVersions, Error> {
        Ok(crate::Store::key_versions(self))
    }

    fn rotation_factor(&self) -> Result<Option<RotationFactor>, Error> {
        Ok(crate::Store::rotation_factor(self))
    }

    fn key_state(&self) -> Result<(KeyVersions, Option<RotationFactor>), Error> {
        Ok(self.key_state())
    }
}
