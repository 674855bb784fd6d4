//! What every party of an Obscura cluster reads and writes, and the dealer that makes a cluster.
//!
//! The client and both servers stand on this crate, side by side; it holds no server. It has:
//! - [`tls`]: the cluster's TLS material and the rustls configurations built from it;
//! - [`files`]: sealed secrets, atomic and private writes, locks, the checks that keep secret
//!   files from other users of the machine;
//! - [`node`], [`keeper`], [`client`]: each party's configuration file and sealed secrets;
//! - [`attestation`]: how servers attest and what policy clients appraise them under;
//! - [`server`]: what both servers load the same way ([`server::open_server`]);
//! - `deal` (feature `deal`): making a cluster directory, for `obscura cluster init`, the
//!   laboratory and every test harness.
//!
//! ```
//! use obscura_cluster::files::{open_secrets, seal_secrets};
//! use obscura_tokens::keyfile::WrappingKey;
//!
//! let key = WrappingKey::random(&mut rand_core::OsRng);
//! let sealed = seal_secrets(&[7u8; 32], "example", &key, &mut rand_core::OsRng)?;
//! let opened: [u8; 32] = open_secrets(&sealed, "example", &key)?;
//! assert_eq!(opened, [7u8; 32]);
//! // Sealed for one purpose, it does not open as another's.
//! assert!(open_secrets::<[u8; 32]>(&sealed, "another", &key).is_err());
//! # Ok::<(), obscura_cluster::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attestation;
pub mod client;
#[cfg(feature = "deal")]
pub mod deal;
mod error;
pub mod files;
pub mod keeper;
pub mod node;
pub mod provision;
pub mod server;
pub mod tls;

pub use error::Error;

use ed25519_dalek::VerifyingKey;

/// An Ed25519 public key from 64 hex digits.
pub fn ed25519_key(hex: &str) -> Option<VerifyingKey> {
    obscura_tokens::keyfile::hex32(hex).and_then(|b| VerifyingKey::from_bytes(&b).ok())
}
