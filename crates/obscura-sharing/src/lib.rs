//! Secret sharing for Obscura: images, hash bits, zero masks and the manifests that bind them.
//!
//! - [`bytes`]: k-of-n Shamir over GF(2^8) for the encoded image file, on a GFNI affine kernel
//!   (AVX-512 or 256-bit), a split-nibble AVX2 kernel or a portable one, chosen at run time
//!   ([`gf256::Kernel`]); all are constant-time in the secret bytes.
//! - [`compact`]: the file encrypted once, its ciphertext cut into Reed–Solomon pieces of about
//!   `1/k` of it, and only the key Shamir-shared (`cluster init --storage compact`).
//! - [`field`] and [`prime`]: Shamir over GF(2^31 − 1) for the 64 hash bits of Stage-2.
//! - [`zero`]: pseudo-random sharings of zero of degree 2t, the mask that makes Stage-2 private.
//! - [`manifest`]: the owner-signed record of every share's digest; only a verified manifest can
//!   check shares and rebuild an image.
//!
//! The crate does no I/O; randomness is always a parameter.
//!
//! A data owner shares an image among five nodes, signs the manifest, and a client rebuilds it
//! from three of them while a fourth lies:
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use obscura_sharing::bytes::{split, Params};
//! use obscura_sharing::manifest::{content_digest, share_digest, ImageId, Manifest, NodeDigests, ShareRole, SignedManifest};
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let mut rng = ChaCha20Rng::from_entropy();
//! let image = b"\x89PNG... the encoded file, byte for byte".to_vec();
//! let params = Params::new(3, 5)?;
//! let shares = split(&image, params, &mut rng)?;
//!
//! // The owner records every share's digest and signs.
//! let owner = SigningKey::generate(&mut rng);
//! let id = ImageId::random(&mut rng);
//! let manifest = Manifest {
//!     image_id: id, k: 3, n: 5, t: 2, share_scheme: 1, hash_scheme: 1, digest_alg: 1,
//!     content_digest: content_digest(&image), content_len: image.len() as u64,
//!     token_key_version: 1, created_at: 1_790_000_000,
//!     nodes: shares.iter().map(|s| NodeDigests {
//!         node: s.x,
//!         image_share: share_digest(&id, s.x, ShareRole::Image, &s.bytes),
//!         hash_share: [0; 32],
//!     }).collect(),
//! }.sign(&owner)?;
//! let stored = manifest.to_bytes(); // what every node keeps
//!
//! // A client verifies the signature first: only then can it check shares.
//! let verified = SignedManifest::from_bytes(&stored)?.verify(&owner.verifying_key())?;
//! let mut received = vec![shares[1].clone(), shares[3].clone(), shares[4].clone(), shares[0].clone()];
//! received[0].bytes[7] ^= 1; // node 2 lies
//! let (good, culprits) = verified.partition_image_shares(received.clone());
//! assert_eq!(culprits[0].node, 2);
//! assert_eq!(good.len(), 3);
//! assert_eq!(verified.reconstruct(received)?, image);
//! # Ok::<(), obscura_sharing::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bytes;
pub mod compact;
pub mod field;
#[allow(unsafe_code)] // the SIMD kernel; each unsafe block carries its SAFETY argument
pub mod gf256;
pub mod manifest;
pub mod order;
pub mod prime;
pub mod rng;
pub mod zero;

use manifest::{Culprit, ImageId};

/// Errors from sharing, reconstruction and manifest checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `k` and `n` must satisfy 2 ≤ k ≤ n ≤ 255.
    #[error("invalid threshold {k}-of-{n}: need 2 ≤ k ≤ n ≤ 255")]
    InvalidParams {
        /// Requested threshold.
        k: usize,
        /// Requested share count.
        n: usize,
    },
    /// Nothing to share.
    #[error("cannot share an empty secret")]
    EmptySecret,
    /// More to share than the scheme takes.
    #[error("cannot share {len} bytes: at most {max}")]
    SecretTooLong {
        /// The secret's length.
        len: u64,
        /// The most the scheme takes.
        max: u64,
    },
    /// Fewer shares than the threshold.
    #[error("need {need} shares, got {got}")]
    NotEnoughShares {
        /// Threshold.
        need: usize,
        /// Shares supplied.
        got: usize,
    },
    /// Two shares claim the same x-coordinate.
    #[error("two shares have x = {x}")]
    DuplicateShare {
        /// The repeated coordinate.
        x: u8,
    },
    /// x = 0 would be the secret itself.
    #[error("share index {x} is invalid (must be 1..=255)")]
    InvalidShareIndex {
        /// The coordinate.
        x: u8,
    },
    /// Shares of one secret must have equal length.
    #[error("share {x} is {got} bytes, expected {expected}")]
    ShareLengthMismatch {
        /// The odd share.
        x: u8,
        /// Length of the first share.
        expected: usize,
        /// Its length.
        got: usize,
    },
    /// The polynomial degree does not fit the node count.
    #[error("invalid degree t = {t} for n = {n} nodes")]
    InvalidDegree {
        /// Degree.
        t: usize,
        /// Nodes.
        n: usize,
    },
    /// Zero sharing needs one key per set of n − t nodes; this would be too many.
    #[error("zero sharing for n = {n}, t = {t} needs {per_node} keys per node; too many")]
    TooManySubsets {
        /// Nodes.
        n: usize,
        /// Degree.
        t: usize,
        /// Keys each node would hold.
        per_node: usize,
    },
    /// Stored zero-sharing keys are inconsistent.
    #[error("invalid zero-sharing keys: {0}")]
    InvalidZeroKeys(&'static str),
    /// An order to a node is not signed by the data owner's key.
    #[error("the order is not signed by the data owner's key")]
    BadOrderSignature,
    /// A manifest encoding is malformed.
    #[error("malformed manifest: {0}")]
    MalformedManifest(&'static str),
    /// The manifest's owner signature does not verify.
    #[error("manifest of image {image} is not signed by the data owner's key")]
    BadManifestSignature {
        /// The image the manifest claims to describe.
        image: ImageId,
    },
    /// Shares failed their manifest digests.
    #[error("image {image}: {}", list(culprits))]
    BadShares {
        /// The image.
        image: ImageId,
        /// Every node whose share was refused.
        culprits: Vec<Culprit>,
    },
    /// Too few shares survived verification.
    #[error("need {need} shares of image {image}, got {got} good ones{}", if culprits.is_empty() { String::new() } else { format!(": {}", list(culprits)) })]
    NotEnoughVerifiedShares {
        /// The image.
        image: ImageId,
        /// Threshold.
        need: usize,
        /// Verified shares.
        got: usize,
        /// Nodes whose shares were refused.
        culprits: Vec<Culprit>,
    },
    /// Compact shares that passed every other check rebuilt a ciphertext that does not open
    /// under the rebuilt key ([`compact`]).
    #[error("compact shares rebuilt a ciphertext that does not open under their key")]
    CompactOpen,
    /// The rebuilt bytes do not match the manifest's content digest.
    #[error("rebuilt image {image} does not match its manifest digest")]
    ContentDigestMismatch {
        /// The image.
        image: ImageId,
    },
}

/// Share x-coordinates must be non-zero (x = 0 is the secret) and distinct, in either field.
fn check_share_indices(xs: &[u8]) -> Result<(), Error> {
    for (i, &x) in xs.iter().enumerate() {
        if x == 0 {
            return Err(Error::InvalidShareIndex { x: 0 });
        }
        if xs[..i].contains(&x) {
            return Err(Error::DuplicateShare { x });
        }
    }
    Ok(())
}

fn list(culprits: &[Culprit]) -> String {
    culprits
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
