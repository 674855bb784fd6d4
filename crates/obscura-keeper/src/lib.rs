//! Keepers: the services that hold the band-token key, so that no client and no node ever does.
//!
//! Band tokens are the VOPRF of RFC 9497 (ristretto255-SHA512, verifiable mode): a token of
//! band value `x` for node `i` is `k_i · HashToGroup(x)`, computed obliviously — the client
//! blinds `x`, keepers multiply by their shares of `k_i`, and only the client can unblind. Each
//! key is Shamir-shared among the keepers, so no single keeper, nor any `T − 1` of them, can
//! evaluate it, and so none can build the 256-entry dictionary of a band that would invert every
//! stored token.
//!
//! - [`oprf`]: the RFC 9497 functions, with batched proofs;
//! - [`threshold`]: dealing a key to keepers, and the client's check-combine-unblind.
//!
//! ```
//! use obscura_keeper::{oprf, threshold};
//! # fn main() -> Result<(), obscura_keeper::Error> {
//! let mut rng = rand_core::OsRng;
//! let key = oprf::random_scalar(&mut rng);
//! let shares = threshold::deal(&key, 3, 2, &mut rng)?; // 3 keepers, any 2 evaluate
//!
//! let batch = threshold::BlindedBatch::new(&[b"band 0 value 17"], &mut rng)?;
//! let sent = batch.to_send(); // all a keeper sees
//! let mut answers = Vec::new();
//! for share in &shares[1..] {
//!     let blinded = oprf::Elements::from_bytes(sent.to_vec())?;
//!     let answer = oprf::evaluate_batch(&share.secret, &blinded, &mut rng)?;
//!     answers.push(batch.verify(share.index, &share.public(), &answer)?);
//! }
//! let tokens = batch.finish(&answers, 2)?;
//! assert_eq!(tokens[0], oprf::hash_to_group(b"band 0 value 17") * key);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod oprf;
pub mod recovery;
pub mod session;
pub mod signing;
pub mod threshold;

pub use curve25519_dalek::ristretto::RistrettoPoint;
pub use curve25519_dalek::scalar::Scalar;

/// Errors of the VOPRF and of threshold evaluation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input of 2^16 bytes or more, or one that hashes to the identity.
    #[error("VOPRF input is too long or invalid")]
    Input,
    /// An element that is not a canonical encoding of a non-identity group element.
    #[error("not a valid ristretto255 element")]
    Element,
    /// A proof that does not verify, or does not parse.
    #[error("the DLEQ proof does not verify")]
    Proof,
    /// An empty batch, mismatched lengths, or 2^16 elements or more.
    #[error("batch is empty, too large, or its parts differ in length")]
    Batch,
    /// Key derivation found only zero scalars.
    #[error("key derivation failed")]
    DeriveKeyPair,
    /// Threshold parameters out of range.
    #[error("need 1 ≤ T ≤ M ≤ 255 keepers, got T = {t}, M = {m}")]
    Params {
        /// Keepers.
        m: usize,
        /// Threshold.
        t: usize,
    },
    /// A keeper's answer failed its check; the keeper is named.
    #[error("keeper {keeper}: {reason}")]
    Keeper {
        /// The keeper.
        keeper: u8,
        /// Why its answer was refused.
        reason: Box<Error>,
    },
    /// Keeper indices that cannot be combined.
    #[error("{0}")]
    Keepers(String),
    /// Fewer good answers than the threshold.
    #[error("need answers from {need} keepers, have {got}")]
    NotEnoughKeepers {
        /// The threshold.
        need: usize,
        /// Good answers.
        got: usize,
    },
}
