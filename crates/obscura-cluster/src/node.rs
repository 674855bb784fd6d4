//! What a node is configured with: its configuration file (JSON, no secret) and the secrets
//! sealed for it (TLS key, audit key, zero-sharing set keys, the handle key). Relative paths are
//! relative to the configuration file.

use obscura_tokens::keyfile::WrappingKey;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::files::seal_secrets;
use crate::server::{ServerFiles, ServerLimits, ServerSecrets};
use crate::tls::Party;
use crate::Error;

/// Purpose label of a node's sealed secrets; the node's number follows it ([`node_purpose`]).
pub const SECRETS_PURPOSE: &str = "node-secrets";

/// The purpose node `node`'s secrets are sealed under: they open as that node's only.
pub fn node_purpose(node: u8) -> String {
    format!("{SECRETS_PURPOSE}/node-{node}")
}

/// What `obscura cluster init` writes for one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// This node's number, 1..=n.
    pub node: u8,
    /// Nodes in the cluster.
    pub n: u8,
    /// Shares needed to rebuild an image.
    pub k: u8,
    /// Degree of the hash sharing.
    pub t: u8,
    /// Address to listen on, e.g. `127.0.0.1:7401`.
    pub listen: String,
    /// Its store, certificates, sealed secrets and wrapping key.
    #[serde(flatten)]
    pub files: ServerFiles,
    /// The data owner's Ed25519 public key, hex.
    pub owner_public_key: String,
    /// Allowed clock skew and replay window, seconds.
    pub replay_window_s: u64,
    /// How often the audit log is signed (and stale pending images purged), seconds.
    pub checkpoint_interval_s: u64,
    /// A prepared image not committed within this many seconds was abandoned by its client
    /// (it crashed, or another node failed) and is purged.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout_s: u64,
    /// The keepers' capability key (Ed25519, hex): capabilities must carry its signature.
    pub capability_key: String,
    /// Every node's answer key (its audit key, Ed25519, hex), node 1 first: a match proof's
    /// openings must carry their signatures.
    pub node_keys: Vec<String>,
    /// What Stage-1 and Stage-2 requests must look like, and what a match entitles to.
    #[serde(default)]
    pub policy: SearchPolicy,
    /// Limits on what a connection can make this server spend.
    #[serde(default)]
    pub limits: ServerLimits,
    /// How the store uses memory and disk.
    #[serde(default)]
    pub storage: StorageSettings,
    /// A PostgreSQL database to keep the store in instead of the redb file `store`
    /// (`postgres://user:password@host:port/database`); several processes of this node may
    /// serve from it. Keep this file private when the URL holds a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// With `database`: a folder (`file:///a/folder`) to keep the image shares in as objects,
    /// the database keeping each one's digest; every process of the node names the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<String>,
    /// Where its attestation evidence comes from; without it the node does not attest, and a
    /// client under an attestation policy does not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::attestation::AttestationSource>,
    /// An address (`127.0.0.1:9464`) to serve Prometheus metrics on, plain HTTP, `GET
    /// /metrics`: answers by operation and outcome, times to answer, store sizes, audit height,
    /// key versions. No TLS and no login: a loopback or private address. None when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// How a node's store uses memory and disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSettings {
    /// MiB of store pages kept in memory: the node's memory stops growing with its store here.
    pub cache_mb: u64,
    /// MiB kept free on the store's disk: an upload that would eat into it is refused ("disk
    /// full", nothing written), so searches, fetches and their audit entries go on. With 0 the
    /// disk itself refuses, and every request that writes (searches and fetches record theirs)
    /// fails until space returns; the store reopens by itself then.
    pub reserve_mb: u64,
}

impl Default for StorageSettings {
    /// 64 MiB of cache and 128 MiB kept free: the store's own defaults.
    fn default() -> Self {
        StorageSettings {
            cache_mb: 64,
            reserve_mb: 128,
        }
    }
}

fn default_pending_timeout() -> u64 {
    600
}

/// The cluster's search policy, enforced by every node: a client's wishes do not change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPolicy {
    /// Stage-1 multi-probe radius.
    pub probe_radius: u32,
    /// Tokens per band in every lookup: a lookup has exactly 8 times this many.
    pub lookups_per_band: usize,
    /// The largest Hamming distance a search reports and a match entitles to (τ). With the
    /// radius it fixes how many bands a Stage-1 candidate must match.
    pub max_distance: u32,
    /// Most candidates a lookup returns.
    pub max_candidates: u32,
    /// Most images an exhaustive search scans (every committed image is a candidate), and so
    /// most candidates a query scans, in parts of at most 16,384; at least `max_candidates`, at
    /// most 2^20. A configuration without it scans no more than `max_candidates`
    /// ([`SearchPolicy::exhaustive`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_exhaustive: Option<u32>,
    /// How long after its query a match proof opens an image, seconds.
    pub match_window_s: u64,
}

impl Default for SearchPolicy {
    fn default() -> Self {
        SearchPolicy {
            probe_radius: 1,
            lookups_per_band: 12,
            max_distance: 10,
            max_candidates: 1024,
            max_exhaustive: Some(obscura_proto::limits::MAX_SCAN as u32),
            match_window_s: 3600,
        }
    }
}

impl SearchPolicy {
    /// Most images an exhaustive search scans: `max_exhaustive`, or `max_candidates` when the
    /// configuration predates it.
    pub fn exhaustive(&self) -> u32 {
        self.max_exhaustive.unwrap_or(self.max_candidates)
    }

    /// The bytes of the largest relayed Stage-2 round of an evaluation of `candidates` on `n`
    /// nodes: every node's opening of the widest round (about 6 bytes a value, and a little
    /// for the rest).
    pub fn relay_bytes(&self, candidates: u32, n: u8) -> u64 {
        let width = obscura_mpc::node::widest_opening(self.max_distance) as u64;
        u64::from(candidates) * u64::from(n) * width * 6 + 64 * 1024
    }

    /// The most candidates a search on `n` nodes may scan: the wire's
    /// [`MAX_SCAN`](obscura_proto::limits::MAX_SCAN) when the relayed rounds of a whole part
    /// ([`MAX_CANDIDATES`](obscura_proto::limits::MAX_CANDIDATES)) fit in what a node takes
    /// ([`MAX_REDUCE_BODY`](obscura_proto::limits::MAX_REDUCE_BODY)), and otherwise as many as
    /// fit in one part (a cluster of many nodes, or a large τ).
    pub fn fitting_exhaustive(&self, n: u8) -> u32 {
        use obscura_proto::limits::{MAX_CANDIDATES, MAX_REDUCE_BODY, MAX_SCAN};
        let per = self.relay_bytes(1, n) - 64 * 1024;
        let room = MAX_REDUCE_BODY as u64 - 64 * 1024;
        let fitting = room / per.max(1);
        if fitting >= MAX_CANDIDATES as u64 {
            MAX_SCAN as u32
        } else {
            fitting as u32
        }
    }

    /// The most candidates of one part of a search: a Stage-2 request's.
    pub fn part(&self) -> u32 {
        self.exhaustive()
            .min(obscura_proto::limits::MAX_CANDIDATES as u32)
    }
}

/// The secrets sealed for one node.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct NodeSecrets {
    /// TLS private key, PEM.
    pub tls_key_pem: String,
    /// Ed25519 key that signs audit checkpoints.
    pub audit_key: [u8; 32],
    /// Zero-sharing set keys: (members bit mask, key).
    pub zero_keys: Vec<(u64, [u8; 32])>,
    /// The key that makes Stage-1 handles, the same at every node.
    pub handle_key: [u8; 32],
    /// Its simulated platform (`obscura_attest::sim::SimulatedPlatform` file), with the
    /// simulation backend.
    #[serde(default)]
    pub simulated_platform: Option<String>,
}

impl NodeSecrets {
    /// Seal for writing to disk.
    ///
    /// # Errors
    /// [`Error::Secrets`] if sealing fails.
    pub fn seal<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        node: u8,
        key: &WrappingKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, Error> {
        seal_secrets(self, &node_purpose(node), key, rng)
    }
}

impl ServerSecrets for NodeSecrets {
    fn party(id: u8) -> Party {
        Party::Node(id)
    }

    fn tls_key_pem(&self) -> &str {
        &self.tls_key_pem
    }
}
