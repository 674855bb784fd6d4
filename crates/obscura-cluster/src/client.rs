//! What a client of the cluster is configured with: `client.json` (no secret) and the secrets
//! sealed for it. The client's TLS key and (with HMAC tokens) the token root are sealed under the
//! client's wrapping key; the data owner's signing key is not among them but in its own sealed
//! file under its own wrapping key, so a client without that file can search but never index,
//! delete, rotate or grant.

use std::path::PathBuf;

use obscura_tokens::keyfile::WrappingKey;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::files::seal_secrets;
use crate::Error;

/// Purpose label of the client's sealed secrets.
pub const SECRETS_PURPOSE: &str = "client-secrets";
/// Purpose label of the data owner's sealed signing key.
pub const OWNER_PURPOSE: &str = "owner-key";

/// `client.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Shares needed to rebuild.
    pub k: u8,
    /// Degree of the hash sharing.
    pub t: u8,
    /// How the data owner shares the images it indexes (a cluster made before there was a
    /// choice shares them by Shamir).
    #[serde(default)]
    pub storage: StorageKind,
    /// Node URLs, node 1 first.
    pub nodes: Vec<String>,
    /// Cluster CA certificate.
    pub ca_cert: PathBuf,
    /// This client's certificate.
    pub cert: PathBuf,
    /// Sealed secrets.
    pub secrets: PathBuf,
    /// Wrapping-key file, unless `OBSCURA_WRAPPING_KEY` is set.
    pub wrapping_key: PathBuf,
    /// The data owner's public key, hex.
    pub owner_public_key: String,
    /// The data owner's sealed signing key, if this client may act as the owner; a client
    /// without the file (or the entry) is not one.
    #[serde(default)]
    pub owner_key: Option<PathBuf>,
    /// The wrapping key of the owner's sealed key, unless `OBSCURA_OWNER_WRAPPING_KEY` is set.
    #[serde(default)]
    pub owner_wrapping_key: Option<PathBuf>,
    /// The keepers' capability key (Ed25519, hex): capabilities are checked against it.
    pub capability_key: String,
    /// Where band tokens come from.
    pub tokens: TokenKind,
    /// Token key version.
    pub key_version: u32,
    /// Keeper URLs, keeper 1 first.
    pub keepers: Vec<String>,
    /// Keepers needed to log in, sign and (with VOPRF tokens) evaluate.
    pub keeper_threshold: u8,
    /// `keeper_public_shares[0][j - 1]`: keeper `j`'s public share of the cluster's token key
    /// of the current version, hex (VOPRF tokens; one key, so one row).
    #[serde(default)]
    pub keeper_public_shares: Vec<Vec<String>>,
    /// Stage-1 multi-probe radius.
    pub probe_radius: u32,
    /// Stage-1 lookups per band (dummies fill the rest).
    pub lookups_per_band: usize,
    /// Limit for each call to a node, milliseconds.
    pub timeout_ms: u64,
    /// Whether servers must be appraised under the cluster's attestation policy
    /// ([`crate::attestation::POLICY_FILE`]): with it, a copy of the directory without the
    /// policy does not load, rather than trusting every server unappraised.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attestation_required: bool,
}

/// Where a cluster's band tokens come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// HMAC-SHA256 under keys derived from a root every client holds.
    Hmac,
    /// The RFC 9497 VOPRF, evaluated by threshold keepers; clients hold no key.
    Voprf,
}

/// How a cluster's images are shared among its nodes (`cluster init --storage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Shamir over GF(2^8): each node stores a share as long as the image, and `k − 1` shares
    /// are independent of it (given random coefficients: AES-128-CTR keyed by the OS).
    #[default]
    Shamir,
    /// The image encrypted once (AES-256-GCM), the ciphertext cut into Reed–Solomon pieces and
    /// only the key Shamir-shared: each node stores about `1/k` of the image, hidden from
    /// `k − 1` nodes as well as AES-256-GCM hides it.
    Compact,
}

/// The client's sealed secrets.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct ClientSecrets {
    /// TLS private key, PEM.
    pub tls_key_pem: String,
    /// The token root, with HMAC tokens only.
    pub token_root: Option<[u8; 32]>,
}

/// The environment variable that overrides the owner's wrapping-key file.
pub const OWNER_WRAPPING_KEY_ENV: &str = "OBSCURA_OWNER_WRAPPING_KEY";

impl ClientSecrets {
    /// Seal for writing to disk.
    ///
    /// # Errors
    /// [`Error::Secrets`] if sealing fails.
    pub fn seal<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        key: &WrappingKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, Error> {
        seal_secrets(self, SECRETS_PURPOSE, key, rng)
    }
}
