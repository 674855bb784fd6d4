//! A node's configuration, loaded and checked: its configuration file ([`NodeConfig`]), its
//! sealed secrets and TLS identity (opened as the keeper's are, by
//! [`obscura_cluster::server::open_server`]), and its store.

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use obscura_cluster::ed25519_key;
use obscura_cluster::files::read_config;
use obscura_cluster::node::{NodeConfig, NodeSecrets, StorageSettings};
use obscura_cluster::server::{beside, open_server, Opened};
use obscura_sharing::zero::ZeroSharingKeys;
use obscura_store::{NodeStore, PgStore, Store, StoreOptions};

pub use obscura_server::Error;

/// The store's options from a node's storage settings.
pub fn store_options(settings: &StorageSettings) -> StoreOptions {
    StoreOptions {
        cache_bytes: usize::try_from(settings.cache_mb.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
        reserve_bytes: settings.reserve_mb.saturating_mul(1 << 20),
    }
}

/// Everything a running node needs, loaded and checked.
pub struct LoadedNode {
    /// The configuration.
    pub config: NodeConfig,
    /// TLS server configuration (client certificates required).
    pub tls: Arc<rustls::ServerConfig>,
    /// The store, opened: the redb file, or the PostgreSQL database the configuration names.
    pub store: Box<dyn NodeStore>,
    /// Zero-sharing keys.
    pub zero: ZeroSharingKeys,
    /// Audit signing key; it also signs Stage-2 answers.
    pub audit_key: SigningKey,
    /// The owner's key, to check manifests.
    pub owner: VerifyingKey,
    /// The keepers' capability key.
    pub capability_key: obscura_auth::capability::CapabilityKey,
    /// Every node's answer key, node 1 first.
    pub node_keys: Vec<VerifyingKey>,
    /// The Stage-1 handle key.
    pub handle_key: obscura_auth::handle::HandleKey,
    /// Its attestation (none when its configuration names no evidence source).
    pub attester: Option<obscura_server::attest::Attester>,
    /// Its copy of the cluster ledger, replayed from the store.
    pub ledger: crate::ledger::NodeLedger,
    /// The metrics listener its configuration names, bound.
    pub metrics: Option<std::net::TcpListener>,
}

impl std::fmt::Debug for LoadedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedNode")
            .field("node", &self.config.node)
            .finish()
    }
}

impl LoadedNode {
    /// Read a configuration file and everything it names. Blocks on the store (and, with a
    /// database, creates a runtime of its own for the connection): call it off the async
    /// workers.
    ///
    /// # Errors
    /// [`Error::Files`] for a configuration out of range or its files (unreadable, open to other
    /// users, secrets that do not open as this node's, unusable TLS material);
    /// [`Error::Store`].
    pub fn load(config_path: &Path) -> Result<LoadedNode, Error> {
        let bad = |reason: String| Error::config(config_path, reason);
        let config: NodeConfig = read_config(config_path)?;
        let metrics = obscura_server::metrics::bind(config.metrics.as_deref()).map_err(bad)?;
        if config.node == 0 || config.node > config.n {
            return Err(bad(format!(
                "node {} is not in 1..={}",
                config.node, config.n
            )));
        }
        let owner = ed25519_key(&config.owner_public_key)
            .ok_or_else(|| bad("owner_public_key is not an Ed25519 public key".into()))?;
        let capability_key = ed25519_key(&config.capability_key)
            .map(obscura_auth::capability::CapabilityKey::from)
            .ok_or_else(|| bad("capability_key is not an Ed25519 public key".into()))?;
        let node_keys = config
            .node_keys
            .iter()
            .map(|h| ed25519_key(h))
            .collect::<Option<Vec<_>>>()
            .filter(|k| k.len() == usize::from(config.n))
            .ok_or_else(|| bad("node_keys must hold one Ed25519 public key per node".into()))?;
        let p = config.policy;
        if p.lookups_per_band == 0
            || p.lookups_per_band
                .checked_mul(obscura_tokens::BANDS)
                .is_none_or(|n| n > obscura_proto::limits::MAX_LOOKUP_TOKENS)
            || p.max_candidates as usize > obscura_proto::limits::MAX_CANDIDATES
            || p.exhaustive() < p.max_candidates
            || p.exhaustive() as usize > obscura_proto::limits::MAX_SCAN
            || p.max_distance > 64
        {
            return Err(bad(format!("policy out of range: {p:?}")));
        }
        if p.relay_bytes(p.part(), config.n) > obscura_proto::limits::MAX_REDUCE_BODY as u64 {
            return Err(bad(format!(
                "policy: a search of {} candidates on {} nodes would relay rounds of {} bytes, \
                 above the {} a node takes; set max_candidates and max_exhaustive to at most {}",
                p.part(),
                config.n,
                p.relay_bytes(p.part(), config.n),
                obscura_proto::limits::MAX_REDUCE_BODY,
                p.fitting_exhaustive(config.n)
            )));
        }
        let Opened { secrets, tls, .. } =
            open_server::<NodeSecrets>(config_path, config.node, &config.files)?;
        let zero = ZeroSharingKeys::from_parts(
            config.node,
            config.n as usize,
            config.t as usize,
            secrets.zero_keys.clone(),
        )
        .map_err(|e| Error::secrets(e.to_string()))?;
        if config.shares.is_some() && config.database.is_none() {
            return Err(bad(
                "shares (a folder for image shares as objects) needs database: a redb store \
                 keeps its shares in its file"
                    .into(),
            ));
        }
        let store: Box<dyn NodeStore> = match &config.database {
            Some(url) => {
                let store = PgStore::open_with_shares(url, config.node, config.shares.as_deref())?;
                // Searches are served from memory: read the postings before the first one.
                store.warm()?;
                Box::new(store)
            }
            None => Box::new(Store::open_with(
                &beside(config_path, &config.files.store),
                config.node,
                store_options(&config.storage),
            )?),
        };
        let attester = obscura_server::attest::Attester::load(
            config_path,
            config.attestation,
            secrets.simulated_platform.as_deref(),
            obscura_attest::Role::Node,
            config.node,
            &obscura_cluster::files::read(&beside(config_path, &config.files.ca_cert))?,
        )?;
        let audit_key = SigningKey::from_bytes(&secrets.audit_key);
        if node_keys[usize::from(config.node) - 1] != audit_key.verifying_key() {
            return Err(bad(format!(
                "node_keys lists another key for node {} than its own",
                config.node
            )));
        }
        let ledger = crate::ledger::NodeLedger::load(&*store, owner, &node_keys)
            .map_err(|reason| bad(format!("{}: {reason}", config.files.store.display())))?;
        Ok(LoadedNode {
            metrics,
            ledger,
            audit_key,
            handle_key: obscura_auth::handle::HandleKey::from_bytes(secrets.handle_key),
            config,
            tls,
            store,
            zero,
            owner,
            capability_key,
            node_keys,
            attester,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node configured without storage settings runs with the store's own defaults.
    #[test]
    fn default_storage_settings_are_the_stores_defaults() {
        assert_eq!(
            store_options(&StorageSettings::default()),
            StoreOptions::default()
        );
    }
}
