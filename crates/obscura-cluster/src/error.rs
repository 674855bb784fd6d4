//! What can go wrong reading or writing a party's files.

/// Errors reading a configuration, opening sealed secrets, building TLS or writing files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The configuration is malformed.
    #[error("invalid configuration {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The sealed secrets do not open or are malformed.
    #[error("sealed secrets: {0}")]
    Secrets(String),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    /// A secret file or folder that other users of the machine may read.
    #[error("{path} is open to other users (mode {mode:03o}): run `chmod {fix:o} {path}`")]
    NotPrivate {
        /// The file or folder.
        path: String,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        fix: u32,
    },
    /// Another process holds a lock past the time allowed.
    #[error("{path} is held by another process for over {seconds} s")]
    Locked {
        /// The lock file.
        path: String,
        /// How long this one waited.
        seconds: u64,
    },
}
