//! `obscura cluster init`: everything a cluster needs, written into one directory.
//!
//! The directory is built under a temporary name and renamed into place at the end, so a failure
//! part-way leaves nothing behind.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use obscura_client::config::{ClientConfig, ClientSecrets, TokenKind};
use obscura_keeper::oprf;
use obscura_keeper::threshold::deal;
use obscura_node::accounts::LoginPolicy;
use obscura_node::config::{NodeConfig, NodeSecrets};
use obscura_node::keeper::{KeeperConfig, KeeperSecrets, SealedShare};
use obscura_node::tls::{make_cluster_tls, ClusterTls};
use obscura_sharing::zero::deal as deal_zero;
use obscura_tokens::keyfile::{to_hex as hex, WrappingKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroize;

/// Stage-1 multi-probe radius of new clusters. With 8 bands of 8 bits and a distance
/// threshold of at most 15, radius 1 finds every image within the threshold: an image missing
/// every band at distance ≤ 1 differs in at least 2 bits in each of the 8 bands, 16 in all.
pub const DEFAULT_PROBE_RADIUS: u32 = 1;

/// Stage-1 lookups per band of new clusters: the 9 probes of radius 1 and 3 dummies.
pub const DEFAULT_LOOKUPS_PER_BAND: usize = 12;

/// Evaluations a client may ask of each keeper per hour in new clusters: about 2,700 searches
/// or 25,000 images indexed, 5 nodes.
pub const DEFAULT_KEEPER_BUDGET: u64 = 1_000_000;

/// Parameters of a new cluster.
pub struct InitOptions {
    pub nodes: usize,
    pub threshold: usize,
    pub host: String,
    pub base_port: u16,
    /// Where band tokens come from.
    pub tokens: TokenKind,
    /// Keepers (m), with VOPRF tokens.
    pub keepers: usize,
    /// Keepers needed to evaluate (T).
    pub keeper_threshold: usize,
    /// Keeper j listens on keeper_base_port + j − 1.
    pub keeper_base_port: u16,
    /// Evaluations per client per keeper per hour.
    pub keeper_budget: u64,
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(unix)]
fn private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(not(unix))]
fn private(_: &Path) -> Result<(), String> {
    Ok(())
}

/// Create the cluster directory `dir`.
///
/// # Errors
/// A message saying what is wrong: invalid parameters, an existing directory, a write failure.
pub fn init(dir: &Path, opt: &InitOptions) -> Result<(), String> {
    let (n, k) = (opt.nodes, opt.threshold);
    if !(2 <= k && k <= n && n <= 64) {
        return Err(format!(
            "invalid threshold {k}-of-{n}: need 2 ≤ threshold ≤ nodes ≤ 64"
        ));
    }
    let t = k - 1;
    if 2 * t + 1 > n {
        return Err(format!(
            "private search needs 2t + 1 = {} nodes for threshold {k} (t = {t}), but the cluster has {n}; \
             use at least {} nodes or a lower threshold",
            2 * t + 1,
            2 * t + 1
        ));
    }
    if usize::from(opt.base_port) + n > 65536 {
        return Err("base port too high for that many nodes".into());
    }
    if opt.tokens == TokenKind::Voprf {
        let (m, t) = (opt.keepers, opt.keeper_threshold);
        if !(1 <= t && t <= m && m <= 255) {
            return Err(format!(
                "invalid keeper threshold {t}-of-{m}: need 1 ≤ keeper threshold ≤ keepers ≤ 255"
            ));
        }
        if usize::from(opt.keeper_base_port) + m > 65536 {
            return Err("keeper base port too high for that many keepers".into());
        }
        let nodes = usize::from(opt.base_port)..usize::from(opt.base_port) + n;
        let keepers = usize::from(opt.keeper_base_port)..usize::from(opt.keeper_base_port) + m;
        if nodes.start < keepers.end && keepers.start < nodes.end {
            return Err(
                "the keepers' ports overlap the nodes'; choose another --keeper-base-port".into(),
            );
        }
    }
    if dir.exists() {
        return Err(format!(
            "{} already exists; choose a new directory (nothing was changed)",
            dir.display()
        ));
    }
    let tmp = dir.with_extension(format!("init-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let result = build(&tmp, n, k, t, opt)
        .and_then(|()| std::fs::rename(&tmp, dir).map_err(|e| format!("{}: {e}", dir.display())));
    if result.is_err() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    result
}

fn build(dir: &Path, n: usize, k: usize, t: usize, opt: &InitOptions) -> Result<(), String> {
    let mut rng = ChaCha20Rng::from_entropy();
    let mut hosts = vec![opt.host.clone()];
    if opt.host != "localhost" {
        hosts.push("localhost".into());
    }
    let m = if opt.tokens == TokenKind::Voprf {
        opt.keepers
    } else {
        0
    };
    let tls = make_cluster_tls("obscura", n, m, &hosts, &["client"]).map_err(|e| e.to_string())?;
    let zero = deal_zero(n, t, &mut rng).map_err(|e| e.to_string())?;
    let wrapping = WrappingKey::random(&mut rng);
    let owner = SigningKey::generate(&mut rng);
    let owner_hex = hex(&owner.verifying_key().to_bytes());

    write(&dir.join("wrapping.key"), wrapping.to_hex().as_bytes())?;
    private(&dir.join("wrapping.key"))?;
    write(&dir.join("ca.pem"), tls.ca_cert_pem.as_bytes())?;

    let url = |i: usize| format!("https://{}:{}", opt.host, usize::from(opt.base_port) + i);
    for (i, z) in zero.iter().enumerate() {
        let node = i + 1;
        let nd = dir.join(format!("node{node}"));
        std::fs::create_dir_all(&nd).map_err(|e| format!("{}: {e}", nd.display()))?;
        let secrets = NodeSecrets {
            tls_key_pem: tls.nodes[i].key_pem.to_string(),
            audit_key: SigningKey::generate(&mut rng).to_bytes(),
            zero_keys: z
                .subset_keys()
                .iter()
                .map(|s| (s.members(), *s.key_bytes()))
                .collect(),
        };
        write(
            &nd.join("secrets.sealed"),
            &secrets
                .seal(&wrapping, &mut rng)
                .map_err(|e| e.to_string())?,
        )?;
        private(&nd.join("secrets.sealed"))?;
        write(&nd.join("cert.pem"), tls.nodes[i].cert_pem.as_bytes())?;
        write(
            &nd.join("audit-key.pub"),
            hex(&SigningKey::from_bytes(&secrets.audit_key)
                .verifying_key()
                .to_bytes())
            .as_bytes(),
        )?;
        let config = NodeConfig {
            node: node as u8,
            n: n as u8,
            k: k as u8,
            t: t as u8,
            listen: format!("{}:{}", opt.host, usize::from(opt.base_port) + i),
            store: PathBuf::from("store.redb"),
            ca_cert: PathBuf::from("../ca.pem"),
            cert: PathBuf::from("cert.pem"),
            secrets: PathBuf::from("secrets.sealed"),
            wrapping_key: PathBuf::from("../wrapping.key"),
            owner_public_key: owner_hex.clone(),
            replay_window_s: 120,
            checkpoint_interval_s: 60,
            pending_timeout_s: 600,
        };
        write(
            &nd.join("node.json"),
            &serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?,
        )?;
    }

    let keeper_url = |j: usize| {
        format!(
            "https://{}:{}",
            opt.host,
            usize::from(opt.keeper_base_port) + j
        )
    };
    let public_shares = if m > 0 {
        write_keepers(dir, n, opt, &tls, &wrapping, &mut rng)?
    } else {
        Vec::new()
    };

    let cd = dir.join("client");
    std::fs::create_dir_all(&cd).map_err(|e| format!("{}: {e}", cd.display()))?;
    let token_root = (opt.tokens == TokenKind::Hmac).then(|| {
        let mut root = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rng, &mut root);
        root
    });
    let secrets = ClientSecrets {
        tls_key_pem: tls.clients[0].key_pem.to_string(),
        token_root,
        owner_key: Some(owner.to_bytes()),
    };
    write(
        &cd.join("secrets.sealed"),
        &secrets.seal(&wrapping, &mut rng)?,
    )?;
    private(&cd.join("secrets.sealed"))?;
    write(&cd.join("cert.pem"), tls.clients[0].cert_pem.as_bytes())?;
    let config = ClientConfig {
        k: k as u8,
        t: t as u8,
        nodes: (0..n).map(url).collect(),
        ca_cert: PathBuf::from("ca.pem"),
        cert: PathBuf::from("client/cert.pem"),
        secrets: PathBuf::from("client/secrets.sealed"),
        wrapping_key: PathBuf::from("wrapping.key"),
        owner_public_key: owner_hex,
        tokens: opt.tokens,
        key_version: 1,
        keepers: (0..m).map(keeper_url).collect(),
        keeper_threshold: if m > 0 { opt.keeper_threshold as u8 } else { 0 },
        keeper_public_shares: public_shares,
        probe_radius: DEFAULT_PROBE_RADIUS,
        lookups_per_band: DEFAULT_LOOKUPS_PER_BAND,
        timeout_ms: 10_000,
    };
    write(
        &dir.join("client.json"),
        &serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?,
    )
}

/// The dealer: a fresh key per node, Shamir-shared among the keepers and forgotten; each
/// keeper's directory gets its shares sealed. Returns the public shares for the client,
/// `[x - 1][j - 1]` in hex.
fn write_keepers(
    dir: &Path,
    n: usize,
    opt: &InitOptions,
    tls: &ClusterTls,
    wrapping: &WrappingKey,
    rng: &mut ChaCha20Rng,
) -> Result<Vec<Vec<String>>, String> {
    let m = opt.keepers;
    let mut per_keeper: Vec<Vec<SealedShare>> = (0..m).map(|_| Vec::new()).collect();
    let mut public = Vec::with_capacity(n);
    for x in 1..=n as u8 {
        let mut key = oprf::random_scalar(rng);
        let shares = deal(&key, m, opt.keeper_threshold, rng).map_err(|e| e.to_string())?;
        key.zeroize();
        public.push(
            shares
                .iter()
                .map(|s| hex(&oprf::serialize(&s.public())))
                .collect(),
        );
        for (j, s) in shares.iter().enumerate() {
            per_keeper[j].push(SealedShare {
                node: x,
                version: 1,
                secret: *s.secret_bytes(),
            });
        }
    }
    // Every keeper's secrets first: each configuration lists all peer keys.
    let mut made = Vec::with_capacity(m);
    let mut peers = Vec::with_capacity(m);
    for (j, shares) in per_keeper.into_iter().enumerate() {
        let (secrets, peer) = KeeperSecrets::new(tls.keepers[j].key_pem.to_string(), shares, rng);
        peers.push(hex(&peer));
        made.push(secrets);
    }
    for (j, secrets) in made.into_iter().enumerate() {
        let keeper = j + 1;
        let kd = dir.join(format!("keeper{keeper}"));
        std::fs::create_dir_all(&kd).map_err(|e| format!("{}: {e}", kd.display()))?;
        let audit_key = SigningKey::from_bytes(&secrets.audit_key);
        write(
            &kd.join("secrets.sealed"),
            &secrets.seal(wrapping, rng).map_err(|e| e.to_string())?,
        )?;
        private(&kd.join("secrets.sealed"))?;
        write(&kd.join("cert.pem"), tls.keepers[j].cert_pem.as_bytes())?;
        write(
            &kd.join("audit-key.pub"),
            hex(&audit_key.verifying_key().to_bytes()).as_bytes(),
        )?;
        let config = KeeperConfig {
            keeper: keeper as u8,
            m: m as u8,
            threshold: opt.keeper_threshold as u8,
            listen: format!("{}:{}", opt.host, usize::from(opt.keeper_base_port) + j),
            store: PathBuf::from("store.redb"),
            ca_cert: PathBuf::from("../ca.pem"),
            cert: PathBuf::from("cert.pem"),
            secrets: PathBuf::from("secrets.sealed"),
            wrapping_key: PathBuf::from("../wrapping.key"),
            budget_evaluations: opt.keeper_budget,
            budget_window_s: 3600,
            replay_window_s: 120,
            checkpoint_interval_s: 60,
            keyring: Some(PathBuf::from("keyring.sealed")),
            peers: peers.clone(),
            login: LoginPolicy::default(),
            session_ttl_s: 3600,
        };
        write(
            &kd.join("keeper.json"),
            &serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?,
        )?;
    }
    Ok(public)
}
