//! Why a laboratory run failed.

/// Why a laboratory run failed. The client library's error is kept whole, so that the servers
/// it proves misbehaved ([`obscura_client::Error::culprits`]) reach whoever reads the report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client library failed.
    #[error(transparent)]
    Client(#[from] obscura_client::Error),
    /// Anything else, said in words: a process that would not start or stop, a file, a check
    /// or a measurement that did not hold.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Failed(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error::Failed(s.to_string())
    }
}
