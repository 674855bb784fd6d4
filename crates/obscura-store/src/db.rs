//! The redb database under a store, reopened after an I/O error, and the free-space reserve
//! that keeps a full disk from getting that far.
//!
//! redb latches the first failed write (a full disk, most often): every later write, and every
//! read of a page it has not cached, fails with "Previous I/O error" until the database is
//! closed and opened again. Opening it again recovers its last durable commit, as after a
//! crash: what was committed without a sync since (request ids of reads, their audit entries)
//! is lost. [`Db`] watches the file through its own storage backend; once an operation failed,
//! it asks redb whether the failure latched and, if so, the store reopens the database before
//! a later operation (at most every [`RETRY`], and only while the disk has room, since opening
//! repairs the file), reloading what it mirrors in memory under the same lock. Until then
//! operations fail at once.
//!
//! Each operation holds a [`DbGuard`] for as long as its transaction lives, so a reopen waits
//! for every transaction on the failed database to end before it lets the file go.

use std::io;
use std::ops::{Bound, Deref};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend, StorageError, TransactionError};

use crate::Error;

/// The shortest time between two tries to reopen a failed database: each try repairs the
/// whole file.
pub(crate) const RETRY: Duration = Duration::from_secs(5);

/// Free bytes the disk must have before a reopen is tried.
const ROOM_TO_REOPEN: u64 = 1 << 20;

/// How a store uses memory and disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes of pages redb keeps in memory. Every page read stays cached up to this size, so it
    /// bounds how far the page cache grows with the store.
    pub cache_bytes: usize,
    /// Free bytes kept on the store's file system for bookkeeping: an image is refused when
    /// storing it would leave less than this, so request records and audit entries (a few
    /// hundred bytes each) still fit, and reads go on, once uploads have filled the disk.
    /// 0 keeps nothing: the disk itself refuses the write, and until space returns so is
    /// everything that writes (a failed write's pages stay allocated).
    pub reserve_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            reserve_bytes: 128 << 20,
        }
    }
}

/// A store's database, reopened after a failed write.
pub(crate) struct Db {
    path: PathBuf,
    options: StoreOptions,
    /// Set by the backend when an access to the file fails, which redb may have latched;
    /// cleared when it did not, or when the database is reopened.
    suspect: Arc<AtomicBool>,
    /// `None` only while a reopen that failed waits for the next try.
    database: RwLock<Option<Database>>,
    /// When a reopen was last tried.
    pub(crate) tried: Mutex<Option<Instant>>,
    /// Tests make every write to the file fail, as a full disk does.
    #[cfg(test)]
    pub(crate) refuse_writes: Arc<AtomicBool>,
    /// Tests make every sync fail, after the writes went through.
    #[cfg(test)]
    pub(crate) refuse_syncs: Arc<AtomicBool>,
}

/// The open database, held for as long as a transaction on it lives.
pub(crate) struct DbGuard<'a>(RwLockReadGuard<'a, Option<Database>>);

impl Deref for DbGuard<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.0
            .as_ref()
            .expect("a guard is made only over an open database")
    }
}

impl Db {
    /// Create (or open) the database at `path`, making its folder first.
    pub(crate) fn open(path: &Path, options: StoreOptions) -> Result<Db, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Storage(e.to_string()))?;
        }
        let db = Db {
            path: path.to_path_buf(),
            options,
            suspect: Arc::new(AtomicBool::new(false)),
            database: RwLock::new(None),
            tried: Mutex::new(None),
            #[cfg(test)]
            refuse_writes: Arc::new(AtomicBool::new(false)),
            #[cfg(test)]
            refuse_syncs: Arc::new(AtomicBool::new(false)),
        };
        *db.database.write().unwrap_or_else(|e| e.into_inner()) = Some(db.connect(true)?);
        Ok(db)
    }

    /// Open the file; `create` only the first time, so a reopen never starts an empty store
    /// where the file went missing.
    fn connect(&self, create: bool) -> Result<Database, Error> {
        let open = |source| Error::Open {
            path: self.path.display().to_string(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| open(e.into()))?;
        let backend = Watched {
            file: FileBackend::new(file).map_err(open)?,
            suspect: self.suspect.clone(),
            #[cfg(test)]
            refuse_writes: self.refuse_writes.clone(),
            #[cfg(test)]
            refuse_syncs: self.refuse_syncs.clone(),
        };
        Database::builder()
            .set_cache_size(self.options.cache_bytes)
            .create_with_backend(backend)
            .map_err(open)
    }

    /// The database as it is: after a latched failure, its operations fail at once until
    /// [`reopen`](Self::reopen).
    pub(crate) fn get(&self) -> Result<DbGuard<'_>, Error> {
        let guard = self.database.read().unwrap_or_else(|e| e.into_inner());
        match guard.is_some() {
            true => Ok(DbGuard(guard)),
            false => Err(Error::Storage(
                "the store is closed after a failed write; it reopens once its disk has room"
                    .into(),
            )),
        }
    }

    /// Whether the database should be reopened now: a failure latched (redb says so), the
    /// last try is [`RETRY`] old, and the disk has room.
    pub(crate) fn wants_reopen(&self) -> bool {
        if !self.suspect.load(Ordering::Acquire) {
            return false;
        }
        let latched = match self
            .database
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            None => true,
            Some(database) => match database.try_begin_write() {
                Err(TransactionError::Storage(StorageError::PreviousIo)) => true,
                // Not latched (a write redb only tried its best at): nothing to do.
                Ok(txn) => {
                    drop(txn);
                    self.suspect.store(false, Ordering::Release);
                    false
                }
                // Another write under way: ask again later.
                Err(_) => false,
            },
        };
        if !latched {
            return false;
        }
        let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
        if tried.is_some_and(|at| at.elapsed() < RETRY)
            || self.free().is_some_and(|f| f < ROOM_TO_REOPEN)
        {
            return false;
        }
        *tried = Some(Instant::now());
        true
    }

    /// Close the database and open it again, which recovers its last durable commit, then
    /// `reload` what the caller mirrors from it, all under the lock: no operation runs on the
    /// database between the two. Waits for every transaction on it to end.
    pub(crate) fn reopen(
        &self,
        reload: impl FnOnce(&Database) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut slot = self.database.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() && !self.suspect.load(Ordering::Acquire) {
            return Ok(()); // another caller reopened it meanwhile
        }
        // Closing writes to the file too, and may fail the same way: that is expected.
        drop(slot.take());
        self.suspect.store(false, Ordering::Release);
        let reopened = self.connect(false).and_then(|database| {
            reload(&database)?;
            Ok(database)
        });
        match reopened {
            Ok(database) => {
                *slot = Some(database);
                Ok(())
            }
            Err(e) => {
                self.suspect.store(true, Ordering::Release);
                Err(Error::Storage(format!(
                    "the store is closed after a failed write and did not reopen: {e}"
                )))
            }
        }
    }

    /// The database file's size.
    pub(crate) fn file_bytes(&self) -> Result<u64, Error> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| Error::Storage(format!("{}: {e}", self.path.display())))
    }

    /// Free bytes on the store's file system, where it says.
    pub(crate) fn free(&self) -> Option<u64> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Refuse a write of about `bytes` that would leave less than the reserve free on the
    /// store's file system.
    pub(crate) fn check_room(&self, bytes: u64) -> Result<(), Error> {
        if self.options.reserve_bytes == 0 {
            return Ok(());
        }
        let Some(free) = self.free() else {
            return Ok(()); // a file system that cannot say: its writes will say instead
        };
        // redb writes changed pages to free space before the old ones are released: count twice.
        let needed = bytes.saturating_mul(2);
        if free < self.options.reserve_bytes.saturating_add(needed) {
            return Err(Error::DiskFull {
                free,
                needed,
                reserve: self.options.reserve_bytes,
            });
        }
        Ok(())
    }
}

/// The file backend, noting each failed access so the database is checked and, where redb
/// latched the failure, reopened.
#[derive(Debug)]
struct Watched {
    file: FileBackend,
    suspect: Arc<AtomicBool>,
    #[cfg(test)]
    refuse_writes: Arc<AtomicBool>,
    #[cfg(test)]
    refuse_syncs: Arc<AtomicBool>,
}

impl Watched {
    fn noted<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.suspect.store(true, Ordering::Release);
        }
        result
    }

    fn writable(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.refuse_writes.load(Ordering::Acquire) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl StorageBackend for Watched {
    fn len(&self) -> io::Result<u64> {
        self.noted(self.file.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.noted(self.file.read(offset, out))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.noted(self.writable().and_then(|()| self.file.set_len(len)))
    }

    fn sync_data(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.refuse_syncs.load(Ordering::Acquire) {
            return self.noted(Err(io::Error::from_raw_os_error(5))); // EIO
        }
        self.noted(self.writable().and_then(|()| self.file.sync_data()))
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.noted(self.writable().and_then(|()| self.file.write(offset, data)))
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ImageState, NewImage, Store};
    use obscura_sharing::manifest::ImageId;
    use obscura_tokens::Token;

    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir()
                .join(format!("obscura-store-db-{name}-{}", std::process::id()));
            std::fs::remove_dir_all(&p).ok();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    fn image(i: u8, share: &[u8]) -> NewImage<'_> {
        NewImage {
            id: ImageId([i; 16]),
            manifest: b"manifest",
            image_share: share,
            hash_share: &[3; crate::HASH_SHARE_LEN],
            tokens: std::array::from_fn(|b| Token([i ^ (b as u8) << 4; 16])),
            key_version: 1,
            elements: None,
            retired_tokens: None,
        }
    }

    #[test]
    fn a_store_whose_disk_filled_up_works_again_once_space_returns() {
        let dir = Dir::new("full");
        let store = Store::open(&dir.0.join("store.redb"), 1).unwrap();
        let share = vec![9u8; 200_000];
        store.prepare(&image(1, &share), 10).unwrap();
        store.commit(&ImageId([1; 16]), 11).unwrap();

        // The disk fills: the write fails and says so; nothing of it is stored.
        store.db.refuse_writes.store(true, Ordering::Release);
        let e = store.prepare(&image(2, &share), 12).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");

        // Space returns: without reopening the store by hand, what was committed reads back and
        // new images are stored, where redb alone would answer "Previous I/O error" for good.
        store.db.refuse_writes.store(false, Ordering::Release);
        assert_eq!(
            store.image(&ImageId([1; 16])).unwrap().unwrap().image_share,
            share
        );
        assert_eq!(store.state(&ImageId([2; 16])).unwrap(), None);
        store.prepare(&image(2, &share), 13).unwrap();
        store.commit(&ImageId([2; 16]), 14).unwrap();
        assert_eq!(store.stats().unwrap().committed, 2);
        assert!(!store.db.suspect.load(Ordering::Acquire));
    }

    #[test]
    fn an_image_that_would_eat_the_reserve_is_refused_and_bookkeeping_goes_on() {
        let dir = Dir::new("reserve");
        let path = dir.0.join("store.redb");
        let store = Store::open(&path, 1).unwrap();
        let share = vec![9u8; 50_000];
        store.prepare(&image(1, &share), 10).unwrap();
        store.commit(&ImageId([1; 16]), 11).unwrap();
        drop(store);

        // A reserve no disk can keep: every image is refused before anything is written...
        let options = StoreOptions {
            reserve_bytes: u64::MAX / 4,
            ..StoreOptions::default()
        };
        let store = Store::open_with(&path, 1, options).unwrap();
        let e = store.prepare(&image(2, &share), 12).unwrap_err();
        assert!(matches!(e, Error::DiskFull { .. }), "{e}");
        assert!(e.to_string().contains("nothing was written"), "{e}");
        assert_eq!(store.state(&ImageId([2; 16])).unwrap(), None);
        // ...while reads, request records and audit entries go on.
        assert_eq!(
            store.state(&ImageId([1; 16])).unwrap(),
            Some(ImageState::Committed)
        );
        store.admit_request(&[5; 16], 20, 20, 60).unwrap();
        store.record_query(&[6; 16], b"a search", 20).unwrap();
        assert_eq!(
            store.image(&ImageId([1; 16])).unwrap().unwrap().image_share,
            share
        );
    }

    #[test]
    fn a_commit_whose_sync_failed_is_searchable_after_the_reopen_if_the_file_kept_it() {
        let dir = Dir::new("sync");
        let store = Store::open(&dir.0.join("store.redb"), 1).unwrap();
        let share = vec![9u8; 10_000];
        let img = image(1, &share);
        store.prepare(&img, 10).unwrap();
        // The commit's pages reach the file, its sync fails: the node answers an error, yet
        // the reopened file may hold the commit. Whatever it holds, the posting mirror agrees.
        store.db.refuse_syncs.store(true, Ordering::Release);
        assert!(store.commit(&img.id, 11).is_err());
        store.db.refuse_syncs.store(false, Ordering::Release);
        let state = store.state(&img.id).unwrap();
        let found = store.lookup(&img.tokens[..1]).unwrap()[0].contains(&img.id);
        assert_eq!(found, state == Some(ImageState::Committed), "{state:?}");
        // And a commit again leaves it committed and found.
        store.commit(&img.id, 12).unwrap();
        assert!(store.lookup(&img.tokens[..1]).unwrap()[0].contains(&img.id));
    }

    #[test]
    fn a_disk_still_full_is_not_repaired_on_every_request() {
        let dir = Dir::new("retry");
        let store = Store::open(&dir.0.join("store.redb"), 1).unwrap();
        let share = vec![9u8; 10_000];
        store.prepare(&image(1, &share), 10).unwrap();
        store.commit(&ImageId([1; 16]), 11).unwrap();
        store.db.refuse_writes.store(true, Ordering::Release);
        assert!(store.prepare(&image(2, &share), 12).is_err());
        // The next operation tries a reopen, which cannot repair the file while writes fail...
        assert!(store.stats().is_err());
        let tried = *store.db.tried.lock().unwrap();
        assert!(tried.is_some());
        // ...and those that follow within the retry interval fail at once, without a try.
        for _ in 0..3 {
            let e = store.stats().unwrap_err();
            assert!(
                e.to_string().contains("reopens once its disk has room"),
                "{e}"
            );
        }
        assert_eq!(*store.db.tried.lock().unwrap(), tried);
        // Space returns and the interval passes: the next operation reopens it.
        store.db.refuse_writes.store(false, Ordering::Release);
        *store.db.tried.lock().unwrap() = Some(Instant::now() - RETRY);
        assert_eq!(store.stats().unwrap().committed, 1);
        assert_eq!(
            store.image(&ImageId([1; 16])).unwrap().unwrap().image_share,
            share
        );
    }
}
