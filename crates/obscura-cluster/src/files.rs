//! A party's files: sealed secrets, atomic and private writes, locks, and the permission checks
//! that keep secret files from other users of the machine.
//!
//! Secrets are sealed with AES-256-GCM under a party's own wrapping key
//! ([`obscura_tokens::keyfile`]), which comes from `OBSCURA_WRAPPING_KEY` or the file the
//! configuration names. The sealing names its purpose (node `i`, keeper `j`, the client), so one
//! party's file does not open as another's even under the same key.

use std::path::{Path, PathBuf};

use obscura_tokens::keyfile::{self, WrappingKey};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::Error;

/// Environment variable that overrides the wrapping-key file.
pub const WRAPPING_KEY_ENV: &str = "OBSCURA_WRAPPING_KEY";

/// Seal secrets (postcard) under the wrapping key, labelled with their purpose: a server's,
/// a client's, a rotation plan.
///
/// # Errors
/// [`Error::Secrets`] if encoding or sealing fails.
pub fn seal_secrets<T: Serialize, R: rand_core::RngCore + rand_core::CryptoRng>(
    secrets: &T,
    purpose: &str,
    key: &WrappingKey,
    rng: &mut R,
) -> Result<Vec<u8>, Error> {
    let plain =
        Zeroizing::new(postcard::to_allocvec(secrets).map_err(|e| Error::Secrets(e.to_string()))?);
    keyfile::seal(&plain, purpose, 1, key, rng).map_err(|e| Error::Secrets(e.to_string()))
}

/// Open what [`seal_secrets`] sealed with the same purpose.
///
/// # Errors
/// [`Error::Secrets`] for a wrong key, another purpose, an altered file or a bad encoding.
pub fn open_secrets<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    purpose: &str,
    key: &WrappingKey,
) -> Result<T, Error> {
    let opened = keyfile::open(bytes, purpose, key).map_err(|e| Error::Secrets(e.to_string()))?;
    postcard::from_bytes(&opened.secret).map_err(|e| Error::Secrets(e.to_string()))
}

/// A server's JSON configuration file.
pub fn read_config<T: serde::de::DeserializeOwned>(config_path: &Path) -> Result<T, Error> {
    serde_json::from_slice(&read(config_path)?).map_err(|e| Error::Config {
        path: config_path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The wrapping key: from `OBSCURA_WRAPPING_KEY` when set (a value that is not 64 hex digits,
/// or not even text, is refused rather than passed over for the file), else from `file`.
pub fn wrapping_key(file: &Path) -> Result<WrappingKey, Error> {
    match std::env::var_os(WRAPPING_KEY_ENV) {
        Some(_) => WrappingKey::from_env(WRAPPING_KEY_ENV),
        None => WrappingKey::from_file(file),
    }
    .map_err(|e| Error::Secrets(e.to_string()))
}

/// Replace `path` with `bytes` so that a crash leaves the old file or the new one, whole: write
/// a temporary file beside it, sync it, rename it over, sync the folder.
///
/// # Errors
/// [`Error::File`] when any step fails; the old file is then unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    replace_file(path, bytes, false)
}

/// [`write_atomic`] for a file only its owner may read or write (mode 0600 on Unix), such as a
/// user's session keys: the temporary file has that mode before any byte is written.
///
/// # Errors
/// [`Error::File`] when any step fails; the old file is then unchanged.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    replace_file(path, bytes, true)
}

fn replace_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), Error> {
    use std::io::Write;
    let fail = |e: std::io::Error| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // A fresh random name, created exclusively: nothing another user placed at a predictable
    // name (a symbolic link, say) is followed or truncated.
    let mut tag = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tag);
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        obscura_tokens::keyfile::to_hex(&tag)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(&tmp).map_err(fail)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    drop(f);
    if let Err(e) = written {
        std::fs::remove_file(&tmp).ok();
        return Err(fail(e));
    }
    // A folder cannot be opened for syncing everywhere; the rename stands regardless.
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().ok();
    }
    Ok(())
}

/// An exclusive lock on a lock file, released when dropped.
#[derive(Debug)]
pub struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    /// The lock file, open for reading and writing: it may keep a small state of its own, such
    /// as a counter that the lock's holders change one at a time.
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        self.file.unlock().ok();
    }
}

/// Take an exclusive lock on `PATH.lock` beside `path`, so that processes that read, change
/// and write `path` do it one at a time. The lock file is created owner-only (0600) and never
/// removed. What is found there must be a plain file of one name that only its owner may use:
/// a symbolic or hard link is refused (someone who can write the folder could point it at one of
/// the user's own files, which the lock's holder then rewrites), and so is a file others may
/// open (another user who placed it could hold the lock forever, or change what it keeps).
/// Waits up to `wait` for another holder.
///
/// # Errors
/// [`Error::NotPrivate`] for a lock file open to others, [`Error::Locked`] when another process
/// holds it past `wait`, [`Error::File`] when it cannot be opened or locked.
pub fn lock_beside(path: &Path, wait: std::time::Duration) -> Result<FileLock, Error> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let fail = |e: std::io::Error| Error::File {
        path: lock_path.display().to_string(),
        reason: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    let file = options.open(&lock_path).map_err(fail)?;
    // The file opened, not the name: nothing swapped in after the open is what gets checked.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().map_err(fail)?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(Error::File {
                path: lock_path.display().to_string(),
                reason: "not a plain file of one name (a link?): remove it".into(),
            });
        }
        refuse_open_to_others(&lock_path, &meta)?;
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(FileLock { file }),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: lock_path.display().to_string(),
                    seconds: wait.as_secs_f64().ceil() as u64,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
    }
}

/// Open `path` owner-only (0600, created if missing) to append to, or, with `append` false, to
/// read: a symbolic or hard link, or a file others may open, is refused, as for
/// [`lock_beside`].
///
/// # Errors
/// [`Error::NotPrivate`], or [`Error::File`] when it cannot be opened (for reading: also when it
/// is missing).
pub fn open_private(path: &Path, append: bool) -> Result<std::fs::File, Error> {
    let fail = |e: std::io::Error| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    if append {
        options.append(true).create(true);
    } else {
        options.read(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    let file = options.open(path).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().map_err(fail)?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(Error::File {
                path: path.display().to_string(),
                reason: "not a plain file of one name (a link?): remove it".into(),
            });
        }
        refuse_open_to_others(path, &meta)?;
    }
    Ok(file)
}

/// Refuse `path` (a secret file, or the folder holding one) when users other than its owner
/// have any permission on it: on a shared machine they could copy a store, a wrapping key or
/// sealed secrets, and with enough of them rebuild images.
///
/// # Errors
/// [`Error::NotPrivate`] with the `chmod` that fixes it, [`Error::File`] if it cannot be read.
pub fn check_private(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(path).map_err(|e| Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        refuse_open_to_others(path, &meta)?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// [`Error::NotPrivate`], with the `chmod` that fixes it, when users other than the owner of
/// `path` (whose metadata is `meta`) have any permission on it.
#[cfg(unix)]
fn refuse_open_to_others(path: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::NotPrivate {
            path: path.display().to_string(),
            mode,
            fix: if meta.is_dir() { 0o700 } else { 0o600 },
        });
    }
    Ok(())
}

/// Create the file `path` empty with mode 0600 unless it exists, so that a store made in it is
/// never readable by others, not even for a moment.
///
/// # Errors
/// [`Error::File`].
pub fn create_private_file(path: &Path) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Create the folder `path` (and its parents) so that only its owner may enter it (0700).
///
/// # Errors
/// [`Error::File`].
pub fn create_private_dir(path: &Path) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// The bytes of `path`.
///
/// # Errors
/// [`Error::File`].
pub fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("obscura-lock-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// An `OBSCURA_WRAPPING_KEY` that is not text is refused, not passed over for the key file
    /// (whose permissions a server does not check when the variable is set).
    #[test]
    fn a_wrapping_key_variable_that_is_not_text_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("env");
        let file = dir.join("wrapping.key");
        std::fs::write(&file, "11".repeat(32)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(wrapping_key(&file).is_ok());
        std::env::set_var(
            WRAPPING_KEY_ENV,
            std::ffi::OsStr::from_bytes(b"\xff not text"),
        );
        let refused = wrapping_key(&file);
        std::env::remove_var(WRAPPING_KEY_ENV);
        assert!(
            matches!(refused, Err(Error::Secrets(_))),
            "the key file was read instead"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Someone who can write the folder points `PATH.lock` at one of the user's own files: the
    /// lock is refused and the file is not touched, whether the link is symbolic or hard.
    #[test]
    fn a_lock_file_that_is_a_link_is_refused_and_what_it_names_is_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("link");
        let precious = dir.join("id_ed25519");
        std::fs::write(&precious, b"the user's own key").unwrap();
        std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.join("session.json");
        let lock = dir.join("session.json.lock");

        std::os::unix::fs::symlink(&precious, &lock).unwrap();
        assert!(lock_beside(&path, std::time::Duration::ZERO).is_err());
        std::fs::remove_file(&lock).unwrap();

        std::fs::hard_link(&precious, &lock).unwrap();
        let e = lock_beside(&path, std::time::Duration::ZERO).unwrap_err();
        assert!(
            e.to_string().contains("not a plain file of one name"),
            "{e}"
        );
        std::fs::remove_file(&lock).unwrap();

        assert_eq!(std::fs::read(&precious).unwrap(), b"the user's own key");
        // A lock file of its own is made owner-only and taken.
        let mut held = lock_beside(&path, std::time::Duration::ZERO).unwrap();
        let mode = held.file().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).ok();
    }
}
