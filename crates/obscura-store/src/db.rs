//! The redb database under a store, reopened after an I/O error, and the free-space reserve
//! that keeps a full disk from getting that far.
//!
//! redb latches the first failed write (a full disk, most often): every later write, and every
//! read of a page it has not cached, fails with "Previous I/O error" until the database is
//! closed and opened again. Opening it again recovers the last committed state. [`Db`] watches
//! the file's writes through its own storage backend and, once one has failed, reopens the
//! database before the next operation; until the disk has room again the write that needs it
//! fails on its own, and the rest goes on.
//!
//! Each operation holds a [`DbGuard`] for as long as its transaction lives, so a reopen waits
//! for every transaction on the failed database to end before it lets the file go.

use std::io;
use std::ops::{Bound, Deref};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

use crate::Error;

/// How a store uses memory and disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes of pages redb keeps in memory. Every page read stays cached up to this size, so it
    /// bounds how far a node's memory grows with its store.
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
    /// Set by the backend when a write to the file fails; cleared when the database is reopened.
    failed: Arc<AtomicBool>,
    /// `None` only while a reopen that failed waits for the next try.
    database: RwLock<Option<Database>>,
    /// Tests make every write to the file fail, as a full disk does.
    #[cfg(test)]
    pub(crate) refuse_writes: Arc<AtomicBool>,
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
            failed: Arc::new(AtomicBool::new(false)),
            database: RwLock::new(None),
            #[cfg(test)]
            refuse_writes: Arc::new(AtomicBool::new(false)),
        };
        *db.database.write().unwrap_or_else(|e| e.into_inner()) = Some(db.connect()?);
        Ok(db)
    }

    fn connect(&self) -> Result<Database, Error> {
        let open = |source| Error::Open {
            path: self.path.display().to_string(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| open(e.into()))?;
        let backend = Watched {
            file: FileBackend::new(file).map_err(open)?,
            failed: self.failed.clone(),
            #[cfg(test)]
            refuse_writes: self.refuse_writes.clone(),
        };
        Database::builder()
            .set_cache_size(self.options.cache_bytes)
            .create_with_backend(backend)
            .map_err(open)
    }

    /// The database, reopened first if a write to it failed since it was opened.
    pub(crate) fn get(&self) -> Result<DbGuard<'_>, Error> {
        if !self.failed.load(Ordering::Acquire) {
            let guard = self.database.read().unwrap_or_else(|e| e.into_inner());
            if guard.is_some() {
                return Ok(DbGuard(guard));
            }
        }
        self.reopen()?;
        let guard = self.database.read().unwrap_or_else(|e| e.into_inner());
        match guard.is_some() {
            true => Ok(DbGuard(guard)),
            false => Err(Error::Storage(
                "the store is closed after a failed write and did not reopen".into(),
            )),
        }
    }

    /// Close the database and open it again, which recovers its last committed state. Waits
    /// for every transaction on it to end.
    fn reopen(&self) -> Result<(), Error> {
        let mut slot = self.database.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() && !self.failed.load(Ordering::Acquire) {
            return Ok(()); // another caller reopened it meanwhile
        }
        // Closing writes to the file too, and may fail the same way: that is expected.
        drop(slot.take());
        self.failed.store(false, Ordering::Release);
        match self.connect() {
            Ok(database) => {
                *slot = Some(database);
                Ok(())
            }
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                Err(Error::Storage(format!(
                    "the store is closed after a failed write and did not reopen: {e}"
                )))
            }
        }
    }

    /// Refuse a write of about `bytes` that would leave less than the reserve free on the
    /// store's file system.
    pub(crate) fn check_room(&self, bytes: u64) -> Result<(), Error> {
        if self.options.reserve_bytes == 0 {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let Ok(stat) = rustix::fs::statvfs(dir) else {
            return Ok(()); // a file system that cannot say: its writes will say instead
        };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
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

/// The file backend, noting each failed write so the database is reopened.
#[derive(Debug)]
struct Watched {
    file: FileBackend,
    failed: Arc<AtomicBool>,
    #[cfg(test)]
    refuse_writes: Arc<AtomicBool>,
}

impl Watched {
    fn noted<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.failed.store(true, Ordering::Release);
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
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.noted(self.writable().and_then(|()| self.file.set_len(len)))
    }

    fn sync_data(&self) -> io::Result<()> {
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
        assert!(!store.db.failed.load(Ordering::Acquire));
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
}
