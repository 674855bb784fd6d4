//! Making a cluster: everything its nodes, keepers, data owner and clients need, written into one
//! directory by one dealer (`obscura cluster init`, and the tests' and laboratory's clusters).
//!
//! ```text
//! DIR/                     0700
//!   ca.pem                 the cluster CA (its key is not kept)
//!   client.json            what a client needs (no secret)
//!   bootstrap.code   0600  the one-time code the first account presents (it becomes the admin)
//!   client/          0700  the client's TLS identity and wrapping key (its secrets sealed)
//!   owner/           0700  the data owner's signing key, sealed under its own wrapping key,
//!                          and the keepers' token-key shares until each keeper, appraised,
//!                          takes its own (provision.sealed)
//!   nodeI/           0700  node.json, certificate, sealed secrets, wrapping key, audit key
//!   keeperJ/         0700  keeper.json, certificate, sealed secrets, wrapping key, audit key
//! ```
//!
//! Every party has its own wrapping key, and its sealed secrets name it, so no file opens as
//! another party's. Every secret file is 0600 in a 0700 folder; servers refuse to start when
//! theirs are wider. The dealer sees what it deals (zero-sharing keys, token keys, the handle
//! key, the capability key) at that moment only, and forgets it; a distributed set-up would
//! remove that moment. The directory is built under a temporary name and renamed into place at
//! the end, so a failure part-way leaves nothing behind.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use obscura_attest::sim::SimulationRoot;
use obscura_keeper::oprf;
use obscura_keeper::signing;
use obscura_keeper::threshold::deal;
use obscura_sharing::zero::deal as deal_zero;
use obscura_tokens::keyfile::{to_hex as hex, WrappingKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::{Zeroize, Zeroizing};

use crate::attestation::{self, AttestationSource};
use crate::client::{ClientConfig, ClientSecrets, StorageKind, TokenKind, OWNER_PURPOSE};
use crate::files::{create_private_dir, seal_secrets, write_private_atomic};
use crate::keeper::{
    bootstrap_digest, CapabilityPolicy, KeeperConfig, KeeperSecrets, LoginPolicy, Quotas,
    SealedShare,
};
use crate::node::{NodeConfig, NodeSecrets, SearchPolicy};
use crate::server::{ServerFiles, ServerLimits};
use crate::tls::{make_cluster_tls, ClusterTls};

/// Stage-1 multi-probe radius of new clusters. With 8 bands of 8 bits and a distance
/// threshold of at most 15, radius 1 finds every image within the threshold: an image missing
/// every band at distance ≤ 1 differs in at least 2 bits in each of the 8 bands, 16 in all.
pub const DEFAULT_PROBE_RADIUS: u32 = 1;

/// Stage-1 lookups per band of new clusters: the 9 probes of radius 1 and 3 dummies.
pub const DEFAULT_LOOKUPS_PER_BAND: usize = 12;

/// Evaluations a client may ask of each keeper per hour in new clusters: about 13,800 searches
/// or 125,000 images indexed (72 and 8 evaluations, whatever the number of nodes).
pub const DEFAULT_KEEPER_BUDGET: u64 = 1_000_000;

/// Parameters of a new cluster.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Nodes (n).
    pub nodes: usize,
    /// Shares needed to rebuild an image (k); the hash sharing has degree k − 1.
    pub threshold: usize,
    /// Host the servers listen on and are reached at.
    pub host: String,
    /// Node i listens on `node_ports[i − 1]`.
    pub node_ports: Vec<u16>,
    /// Where band tokens come from.
    pub tokens: TokenKind,
    /// How images are shared among the nodes.
    pub storage: StorageKind,
    /// Keepers (m).
    pub keepers: usize,
    /// Keepers needed to log in, sign capabilities and evaluate (T, at least 2).
    pub keeper_threshold: usize,
    /// Keeper j listens on `keeper_ports[j − 1]`.
    pub keeper_ports: Vec<u16>,
    /// Evaluations per user per keeper per hour.
    pub keeper_budget: u64,
    /// The search policy every node enforces.
    pub policy: SearchPolicy,
    /// What capabilities the keepers sign.
    pub capabilities: CapabilityPolicy,
}

impl InitOptions {
    /// The defaults for `nodes` nodes with threshold `threshold`, servers on consecutive ports
    /// of `host` from `base_port` (keepers from `keeper_base_port`).
    pub fn new(
        nodes: usize,
        threshold: usize,
        host: &str,
        base_port: u16,
        keeper_base_port: u16,
    ) -> Self {
        let ports = |base: u16, n: usize| {
            (0..n)
                .map(|i| base.saturating_add(i as u16))
                .collect::<Vec<_>>()
        };
        InitOptions {
            nodes,
            threshold,
            host: host.to_string(),
            node_ports: ports(base_port, nodes),
            tokens: TokenKind::Voprf,
            storage: StorageKind::Shamir,
            keepers: 3,
            keeper_threshold: 2,
            keeper_ports: ports(keeper_base_port, 3),
            keeper_budget: DEFAULT_KEEPER_BUDGET,
            policy: SearchPolicy::default(),
            capabilities: CapabilityPolicy::default(),
        }
    }
}

/// Nodes of a new cluster: `2t + 2` for the default threshold 3 (t = 2), so that searches go on
/// with one node down. With `2t + 1` nodes every search needs every node.
pub const DEFAULT_NODES: usize = 6;

/// Shares needed to rebuild an image in a new cluster (k); any `k − 1` nodes together learn
/// nothing.
pub const DEFAULT_THRESHOLD: usize = 3;

/// What a cluster of `n` nodes with threshold `k` withstands.
///
/// A search needs Stage-2 answers from `2t + 1` nodes and, before any node answers, the query
/// checks of [`checks_needed`](obscura_mpc::check::checks_needed) nodes, so that two nodes that
/// answer saw the same query; rebuilding an image needs `k` shares; indexing writes to every
/// node. More nodes than `2t + 1` also let the client catch a node whose Stage-2 answer lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Availability {
    /// Nodes that may collude and learn nothing of images, hashes or queries (`t = k − 1`).
    pub collusion: usize,
    /// Nodes that may be down while searches go on.
    pub search_down: usize,
    /// Nodes that may be down while images are rebuilt.
    pub get_down: usize,
}

impl Availability {
    /// The figures for `n` nodes and threshold `k` (`None` when the pair is not a valid cluster:
    /// `2 ≤ k` and `2(k − 1) + 1 ≤ n`).
    pub fn of(n: usize, k: usize) -> Option<Availability> {
        let t = k.checked_sub(1).filter(|&t| t >= 1 && 2 * t < n)?;
        // At least 2t + 1, the answers Stage-2 needs.
        let search = obscura_mpc::check::checks_needed(n, t);
        Some(Availability {
            collusion: t,
            search_down: n - search,
            get_down: n - k,
        })
    }

    /// One line for people: "any 2 nodes together learn nothing; search goes on with 1 node
    /// down, rebuilding an image with 3; indexing needs every node".
    pub fn describe(&self) -> String {
        let nodes = |x: usize| {
            if x == 1 {
                "1 node".to_string()
            } else {
                format!("{x} nodes")
            }
        };
        let search = if self.search_down == 0 {
            "every search needs every node".to_string()
        } else {
            format!("searches go on with {} down", nodes(self.search_down))
        };
        format!(
            "any {} together learn nothing; {search}, rebuilding an image with {} down; \
             indexing needs every node",
            nodes(self.collusion),
            self.get_down
        )
    }
}

/// What [`init`] made that its caller may need at once.
#[derive(Debug)]
pub struct Made {
    /// The cluster directory.
    pub dir: PathBuf,
    /// The bootstrap code of the first account.
    pub bootstrap: Zeroizing<[u8; 32]>,
}

/// Why a cluster could not be made. Nothing is left behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The parameters do not make a working cluster; the message says which to change.
    #[error("{0}")]
    Invalid(String),
    /// The directory is there already.
    #[error("{0} already exists; choose a new directory (nothing was changed)")]
    Exists(String),
    /// Dealing a key failed.
    #[error("dealing {what}: {reason}")]
    Keys {
        /// Which key.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Writing a file failed, or a file does not hold what it should.
    #[error(transparent)]
    Files(#[from] crate::Error),
}

fn keys(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Keys {
        what,
        reason: e.to_string(),
    }
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Files(crate::Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|e| file_error(path, e))
}

fn json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    write(
        path,
        &serde_json::to_vec_pretty(value).map_err(|e| file_error(path, e))?,
    )
}

/// Write a secret file: mode 0600 from its creation.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    Ok(write_private_atomic(path, bytes)?)
}

fn private_dir(path: &Path) -> Result<(), Error> {
    Ok(create_private_dir(path)?)
}

/// Where a server's files are in its folder: the same for every node and keeper.
fn server_files() -> ServerFiles {
    ServerFiles {
        store: PathBuf::from("store.redb"),
        ca_cert: PathBuf::from("../ca.pem"),
        cert: PathBuf::from("cert.pem"),
        secrets: PathBuf::from("secrets.sealed"),
        wrapping_key: PathBuf::from("wrapping.key"),
    }
}

/// A fresh wrapping key for one party, written to `dir/wrapping.key`.
fn party_key(dir: &Path, rng: &mut ChaCha20Rng) -> Result<WrappingKey, Error> {
    let key = WrappingKey::random(rng);
    write_secret(&dir.join("wrapping.key"), key.to_hex().as_bytes())?;
    Ok(key)
}

/// Create the cluster directory `dir`.
///
/// # Errors
/// [`Error::Invalid`] for parameters that do not make a working cluster, [`Error::Exists`],
/// [`Error::Keys`], [`Error::Files`] for a write failure.
pub fn init(dir: &Path, opt: &InitOptions) -> Result<Made, Error> {
    let (n, k) = (opt.nodes, opt.threshold);
    if !(2 <= k && k <= n && n <= 64) {
        return Err(Error::Invalid(format!(
            "invalid threshold {k}-of-{n}: need 2 ≤ threshold ≤ nodes ≤ 64"
        )));
    }
    let t = k - 1;
    if 2 * t + 1 > n {
        return Err(Error::Invalid(format!(
            "private search needs 2t + 1 = {} nodes for threshold {k} (t = {t}), but the cluster has {n}; \
             use at least {} nodes or a lower threshold",
            2 * t + 1,
            2 * t + 1
        )));
    }
    let (m, kt) = (opt.keepers, opt.keeper_threshold);
    if !(2 <= kt && kt <= m && m <= 255) {
        return Err(Error::Invalid(format!(
            "invalid keeper threshold {kt}-of-{m}: need 2 ≤ keeper threshold ≤ keepers ≤ 255 \
             (one keeper alone must not sign a capability)"
        )));
    }
    if opt.node_ports.len() != n || opt.keeper_ports.len() != m {
        return Err(Error::Invalid("one port per node and per keeper".into()));
    }
    let mut all: Vec<u16> = opt
        .node_ports
        .iter()
        .chain(&opt.keeper_ports)
        .copied()
        .collect();
    all.sort_unstable();
    if all.windows(2).any(|w| w[0] == w[1]) || all.contains(&0) {
        return Err(Error::Invalid(
            "ports must be distinct and non-zero: the keepers' ports overlap the nodes'? choose \
             another --keeper-base-port"
                .into(),
        ));
    }
    if dir.exists() {
        return Err(Error::Exists(dir.display().to_string()));
    }
    let tmp = dir.with_extension(format!("init-{}", std::process::id()));
    private_dir(&tmp)?;
    let result = build(&tmp, n, k, t, opt).and_then(|bootstrap| {
        std::fs::rename(&tmp, dir)
            .map(|()| Made {
                dir: dir.to_path_buf(),
                bootstrap,
            })
            .map_err(|e| file_error(dir, e))
    });
    if result.is_err() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    result
}

fn build(
    dir: &Path,
    n: usize,
    k: usize,
    t: usize,
    opt: &InitOptions,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut rng = ChaCha20Rng::from_entropy();
    let m = opt.keepers;
    let tls = make_cluster_tls("obscura", n, m, &["client"]).map_err(crate::Error::from)?;
    let zero = deal_zero(n, t, &mut rng).map_err(|e| keys("zero-sharing keys", e))?;
    let owner = SigningKey::generate(&mut rng);
    let owner_hex = hex(&owner.verifying_key().to_bytes());
    let mut handle_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *handle_key);
    let mut bootstrap = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *bootstrap);
    let (capability_keys, capability_public) =
        signing::deal(m as u8, opt.keeper_threshold as u8, &mut rng)
            .map_err(|e| keys("the capability key", e))?;
    let capability_hex = hex(&signing::public_key(&capability_public));
    let capability_public = signing::public_package_bytes(&capability_public)
        .map_err(|e| keys("the capability key", e))?;

    write(&dir.join("ca.pem"), tls.ca_cert_pem.as_bytes())?;
    write_secret(&dir.join("bootstrap.code"), hex(&*bootstrap).as_bytes())?;

    // Attestation: no machine here has a TEE, so every server attests with the labelled
    // simulation backend, under a root made for this cluster, and the policy allows simulation
    // for servers running this executable. A production cluster replaces the policy.
    let simulation = SimulationRoot::generate(&mut rng);
    write_secret(
        &dir.join(attestation::SIMULATION_ROOT_FILE),
        hex(&*simulation.to_secret_bytes()).as_bytes(),
    )?;
    let measurement = obscura_attest::producer::own_measurement()
        .map_err(|e| file_error(Path::new("the running executable"), e))?;
    json(
        &dir.join(attestation::POLICY_FILE),
        &attestation::simulation_policy(&simulation.public(), &measurement),
    )?;
    let platform = |name: String, rng: &mut ChaCha20Rng| -> Option<String> {
        let file = simulation.issue(&name, rng).to_file();
        Some(String::from_utf8(file.to_vec()).expect("a platform file is JSON text"))
    };

    // Every node's audit key first: each node's configuration lists them all.
    let audit_keys: Vec<SigningKey> = (0..n).map(|_| SigningKey::generate(&mut rng)).collect();
    let node_keys: Vec<String> = audit_keys
        .iter()
        .map(|k| hex(&k.verifying_key().to_bytes()))
        .collect();
    let url = |port: u16| format!("https://{}:{port}", opt.host);
    for (i, z) in zero.iter().enumerate() {
        let node = i as u8 + 1;
        let nd = dir.join(format!("node{node}"));
        private_dir(&nd)?;
        let wrapping = party_key(&nd, &mut rng)?;
        let secrets = NodeSecrets {
            tls_key_pem: tls.nodes[i].key_pem.to_string(),
            audit_key: audit_keys[i].to_bytes(),
            zero_keys: z
                .subset_keys()
                .iter()
                .map(|s| (s.members(), *s.key_bytes()))
                .collect(),
            handle_key: *handle_key,
            simulated_platform: platform(format!("node {node}"), &mut rng),
        };
        write_secret(
            &nd.join("secrets.sealed"),
            &secrets.seal(node, &wrapping, &mut rng)?,
        )?;
        write(&nd.join("cert.pem"), tls.nodes[i].cert_pem.as_bytes())?;
        write(&nd.join("audit-key.pub"), node_keys[i].as_bytes())?;
        let config = NodeConfig {
            node,
            n: n as u8,
            k: k as u8,
            t: t as u8,
            listen: format!("{}:{}", opt.host, opt.node_ports[i]),
            files: server_files(),
            owner_public_key: owner_hex.clone(),
            replay_window_s: 120,
            checkpoint_interval_s: 60,
            pending_timeout_s: 600,
            capability_key: capability_hex.clone(),
            node_keys: node_keys.clone(),
            policy: fitted(opt.policy, n as u8),
            limits: ServerLimits::default(),
            storage: Default::default(),
            database: None,
            shares: None,
            attestation: Some(AttestationSource::Simulation),
            metrics: None,
        };
        json(&nd.join("node.json"), &config)?;
    }

    let (public_shares, awaiting) = write_keepers(
        dir,
        opt,
        &tls,
        &capability_keys,
        &capability_public,
        &owner_hex,
        &bootstrap,
        &simulation,
        &mut rng,
    )?;

    let od = dir.join("owner");
    private_dir(&od)?;
    let owner_wrapping = party_key(&od, &mut rng)?;
    write_secret(
        &od.join("owner.sealed"),
        &seal_secrets(&owner.to_bytes(), OWNER_PURPOSE, &owner_wrapping, &mut rng)?,
    )?;
    crate::provision::write(dir, &owner_wrapping, &awaiting)?;

    let cd = dir.join("client");
    private_dir(&cd)?;
    let client_wrapping = party_key(&cd, &mut rng)?;
    let token_root = (opt.tokens == TokenKind::Hmac).then(|| {
        let mut root = [0u8; 32];
        rng.fill_bytes(&mut root);
        root
    });
    let secrets = ClientSecrets {
        tls_key_pem: tls.clients[0].key_pem.to_string(),
        token_root,
    };
    write_secret(
        &cd.join("secrets.sealed"),
        &secrets.seal(&client_wrapping, &mut rng)?,
    )?;
    write(&cd.join("cert.pem"), tls.clients[0].cert_pem.as_bytes())?;
    let config = ClientConfig {
        k: k as u8,
        t: t as u8,
        storage: opt.storage,
        nodes: opt.node_ports.iter().map(|p| url(*p)).collect(),
        ca_cert: PathBuf::from("ca.pem"),
        cert: PathBuf::from("client/cert.pem"),
        secrets: PathBuf::from("client/secrets.sealed"),
        wrapping_key: PathBuf::from("client/wrapping.key"),
        owner_public_key: owner_hex,
        owner_key: Some(PathBuf::from("owner/owner.sealed")),
        owner_wrapping_key: Some(PathBuf::from("owner/wrapping.key")),
        capability_key: capability_hex,
        tokens: opt.tokens,
        key_version: 1,
        keepers: opt.keeper_ports.iter().map(|p| url(*p)).collect(),
        keeper_threshold: opt.keeper_threshold as u8,
        keeper_public_shares: public_shares,
        probe_radius: opt.policy.probe_radius,
        lookups_per_band: opt.policy.lookups_per_band,
        timeout_ms: 10_000,
        attestation_required: true,
    };
    json(&dir.join("client.json"), &config)?;
    Ok(bootstrap)
}

/// The keepers: with VOPRF tokens, a fresh cluster token key Shamir-shared among them and
/// forgotten;
/// each keeper gets its share of the capability key, OPAQUE, audit and peer keys, sealed under
/// its own wrapping key. Its token-key shares are not among them: it attests, so they wait at
/// the data owner until it is appraised ([`crate::provision`]). Returns the token keys' public
/// shares for the client, `[0][j - 1]` in hex (empty with HMAC tokens), and the shares
/// waiting.
#[allow(clippy::too_many_arguments)]
fn write_keepers(
    dir: &Path,
    opt: &InitOptions,
    tls: &ClusterTls,
    capability_keys: &[Zeroizing<Vec<u8>>],
    capability_public: &[u8],
    owner_hex: &str,
    bootstrap: &[u8; 32],
    simulation: &SimulationRoot,
    rng: &mut ChaCha20Rng,
) -> Result<(Vec<Vec<String>>, crate::provision::Pending), Error> {
    let m = opt.keepers;
    let mut per_keeper: Vec<Vec<SealedShare>> = (0..m).map(|_| Vec::new()).collect();
    let mut public = Vec::new();
    if opt.tokens == TokenKind::Voprf {
        // One token key for the cluster, named key 1 in the keepers' messages: a search
        // evaluates each band value once, and each node's token is derived from that element.
        let mut key = oprf::random_scalar(rng);
        let shares =
            deal(&key, m, opt.keeper_threshold, rng).map_err(|e| keys("the token key", e))?;
        key.zeroize();
        public.push(
            shares
                .iter()
                .map(|s| hex(&oprf::serialize(&s.public())))
                .collect(),
        );
        for (j, s) in shares.iter().enumerate() {
            per_keeper[j].push(SealedShare {
                node: 1,
                version: 1,
                secret: *s.secret_bytes(),
            });
        }
    }
    // Every keeper's secrets first: each configuration lists all peer keys.
    let mut made = Vec::with_capacity(m);
    let mut peers = Vec::with_capacity(m);
    let mut awaiting = crate::provision::Pending::default();
    for (j, shares) in per_keeper.into_iter().enumerate() {
        if !shares.is_empty() {
            awaiting.keepers.push(crate::provision::Awaiting {
                keeper: j as u8 + 1,
                shares,
            });
        }
        let (mut secrets, peer) = KeeperSecrets::new(
            tls.keepers[j].key_pem.to_string(),
            Vec::new(),
            capability_keys[j].to_vec(),
            capability_public.to_vec(),
            rng,
        );
        let platform = simulation
            .issue(&format!("keeper {}", j + 1), rng)
            .to_file();
        secrets.simulated_platform =
            Some(String::from_utf8(platform.to_vec()).expect("a platform file is JSON text"));
        peers.push(hex(&peer));
        made.push(secrets);
    }
    for (j, secrets) in made.into_iter().enumerate() {
        let keeper = j as u8 + 1;
        let kd = dir.join(format!("keeper{keeper}"));
        private_dir(&kd)?;
        let wrapping = party_key(&kd, rng)?;
        let audit_key = SigningKey::from_bytes(&secrets.audit_key);
        write_secret(
            &kd.join("secrets.sealed"),
            &secrets.seal(keeper, &wrapping, rng)?,
        )?;
        write(&kd.join("cert.pem"), tls.keepers[j].cert_pem.as_bytes())?;
        write(
            &kd.join("audit-key.pub"),
            hex(&audit_key.verifying_key().to_bytes()).as_bytes(),
        )?;
        let config = KeeperConfig {
            keeper,
            m: m as u8,
            threshold: opt.keeper_threshold as u8,
            listen: format!("{}:{}", opt.host, opt.keeper_ports[j]),
            files: server_files(),
            budget_evaluations: opt.keeper_budget,
            budget_window_s: 3600,
            replay_window_s: 120,
            checkpoint_interval_s: 60,
            keyring: Some(PathBuf::from("keyring.sealed")),
            peers: peers.clone(),
            login: LoginPolicy::default(),
            session_ttl_s: 3600,
            owner_public_key: owner_hex.to_string(),
            bootstrap_digest: hex(&bootstrap_digest(bootstrap)),
            capabilities: opt.capabilities,
            quotas: Quotas::default(),
            limits: ServerLimits::default(),
            attestation: Some(AttestationSource::Simulation),
            metrics: None,
        };
        json(&kd.join("keeper.json"), &config)?;
    }
    Ok((public, awaiting))
}

/// The bootstrap code in `dir/bootstrap.code`.
///
/// # Errors
/// [`Error::Files`] when it is missing or malformed.
pub fn read_bootstrap(dir: &Path) -> Result<Zeroizing<[u8; 32]>, Error> {
    let path = dir.join("bootstrap.code");
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?);
    obscura_tokens::keyfile::hex32(&text)
        .map(Zeroizing::new)
        .ok_or_else(|| file_error(&path, "not 64 hex digits"))
}

/// `policy` with its candidate limits lowered, where needed, so that a search's relayed rounds
/// on `n` nodes fit in what a node takes (a cluster of many nodes, or a large τ).
fn fitted(mut policy: SearchPolicy, n: u8) -> SearchPolicy {
    let most = policy.fitting_exhaustive(n);
    policy.max_candidates = policy.max_candidates.min(most);
    policy.max_exhaustive = Some(policy.exhaustive().min(most));
    policy
}
