//! A test cluster in one process: five real node servers and three keepers on loopback over
//! mutual TLS, made as `obscura cluster init` would, with the admin account logged in.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use obscura_client::{Client, ClientParts, KeeperParts, TokenParts};
use obscura_keeper::{oprf, threshold};
use obscura_node::accounts::LoginPolicy;
use obscura_node::config::{LoadedNode, NodeConfig, NodeSecrets};
use obscura_node::keeper::{KeeperConfig, KeeperSecrets, LoadedKeeper, SealedShare};
use obscura_node::tls::{client_config, make_cluster_tls};
use obscura_sharing::zero::deal;
use obscura_tokens::keyfile::WrappingKey;
use obscura_tokens::{BatchPlan, TokenRoot};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub const N: usize = 5;
pub const K: usize = 3;
pub const T: usize = 2;
/// Keepers, and how many evaluate.
pub const M: usize = 3;
pub const KT: usize = 2;
/// The cluster's first account (its admin), which the tests' clients log in as.
pub const ADMIN: &str = "admin";
pub const PASSWORD: &[u8] = b"correct horse battery staple";

pub struct Running {
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), obscura_store::Error>>,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub ports: Vec<u16>,
    pub running: Vec<Option<Running>>,
    pub keeper_ports: Vec<u16>,
    pub keepers: Vec<Option<Running>>,
    pub reserved: Vec<std::net::TcpListener>,
    pub client: Client,
    /// What another client of this cluster is made from (see [`Cluster::client_at`]).
    pub template: ClientTemplate,
}

pub struct ClientTemplate {
    pub tls: rustls::ClientConfig,
    pub owner: SigningKey,
    /// The keepers' public shares of key version 1.
    pub public_shares: Vec<Vec<obscura_keeper::RistrettoPoint>>,
}

/// How a test cluster is made.
#[derive(Clone, Copy)]
pub struct Setup {
    /// VOPRF tokens from keepers, else HMAC.
    pub voprf: bool,
    /// A keeper whose share is not of the dealt key: its proofs cannot verify.
    pub lying_keeper: Option<u8>,
    /// Evaluations per client per keeper per hour.
    pub budget: u64,
    /// Login limits at every keeper.
    pub login: LoginPolicy,
}

pub const VOPRF: Setup = Setup {
    voprf: true,
    lying_keeper: None,
    budget: 1_000_000,
    login: LoginPolicy {
        free: 5,
        lock_after: 20,
        source_free: 20,
        max_delay_s: 3600,
        fresh_login_s: 300,
    },
};

/// A port held open until its server first starts, so that parallel tests cannot take it.
pub fn reserve(reserved: &mut Vec<std::net::TcpListener>) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    reserved.push(l);
    port
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    pub async fn start(name: &str) -> Cluster {
        Cluster::start_with(name, VOPRF).await
    }

    pub async fn start_with(name: &str, setup: Setup) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "obscura-client-{name}-{}-{}",
            std::process::id(),
            rand_core::OsRng.next_u64()
        ));
        let mut rng = ChaCha20Rng::from_entropy();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let m = if setup.voprf { M } else { 0 };
        let tls = make_cluster_tls("test", N, m, &hosts, &["admin"]).unwrap();
        let owner = SigningKey::generate(&mut rng);
        let zero = deal(N, T, &mut rng).unwrap();
        let wrapping = WrappingKey::random(&mut rng);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("wrapping.key"), &*wrapping.to_hex()).unwrap();
        std::fs::write(dir.join("ca.pem"), &tls.ca_cert_pem).unwrap();
        let mut ports = Vec::new();
        let mut reserved = Vec::new();
        for (i, z) in zero.iter().enumerate() {
            let node = i as u8 + 1;
            let secrets = NodeSecrets {
                tls_key_pem: tls.nodes[i].key_pem.to_string(),
                audit_key: SigningKey::generate(&mut rng).to_bytes(),
                zero_keys: z
                    .subset_keys()
                    .iter()
                    .map(|k| (k.members(), *k.key_bytes()))
                    .collect(),
            };
            std::fs::write(
                dir.join(format!("node{node}.sealed")),
                secrets.seal(&wrapping, &mut rng).unwrap(),
            )
            .unwrap();
            std::fs::write(dir.join(format!("node{node}.pem")), &tls.nodes[i].cert_pem).unwrap();
            let config = NodeConfig {
                node,
                n: N as u8,
                k: K as u8,
                t: T as u8,
                listen: "127.0.0.1:0".into(),
                store: format!("node{node}.redb").into(),
                ca_cert: "ca.pem".into(),
                cert: format!("node{node}.pem").into(),
                secrets: format!("node{node}.sealed").into(),
                wrapping_key: "wrapping.key".into(),
                owner_public_key: hex(&owner.verifying_key().to_bytes()),
                replay_window_s: 120,
                checkpoint_interval_s: 3600,
                pending_timeout_s: 600,
            };
            std::fs::write(
                dir.join(format!("node{node}.json")),
                serde_json::to_vec(&config).unwrap(),
            )
            .unwrap();
            ports.push(reserve(&mut reserved));
        }

        // The dealer: a key per node, shared among the keepers, then forgotten.
        let mut keeper_shares: Vec<Vec<SealedShare>> = (0..m).map(|_| Vec::new()).collect();
        let mut public_shares = Vec::new();
        for x in 1..=N as u8 {
            let key = oprf::random_scalar(&mut rng);
            let shares = threshold::deal(&key, M, KT, &mut rng).unwrap();
            public_shares.push(shares.iter().map(|s| s.public()).collect::<Vec<_>>());
            for (j, share) in shares.iter().enumerate().take(m) {
                let secret = if setup.lying_keeper == Some(j as u8 + 1) {
                    oprf::random_scalar(&mut rng).to_bytes()
                } else {
                    *share.secret_bytes()
                };
                keeper_shares[j].push(SealedShare {
                    node: x,
                    version: 1,
                    secret,
                });
            }
        }
        let mut keeper_ports = Vec::new();
        let mut made = Vec::new();
        let mut peers = Vec::new();
        for (j, shares) in keeper_shares.into_iter().enumerate() {
            let (secrets, peer) =
                KeeperSecrets::new(tls.keepers[j].key_pem.to_string(), shares, &mut rng);
            made.push(secrets);
            peers.push(hex(&peer));
        }
        for (j, secrets) in made.into_iter().enumerate() {
            let keeper = j as u8 + 1;
            std::fs::write(
                dir.join(format!("keeper{keeper}.sealed")),
                secrets.seal(&wrapping, &mut rng).unwrap(),
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("keeper{keeper}.pem")),
                &tls.keepers[j].cert_pem,
            )
            .unwrap();
            let config = KeeperConfig {
                keeper,
                m: M as u8,
                threshold: KT as u8,
                listen: "127.0.0.1:0".into(),
                store: format!("keeper{keeper}.redb").into(),
                ca_cert: "ca.pem".into(),
                cert: format!("keeper{keeper}.pem").into(),
                secrets: format!("keeper{keeper}.sealed").into(),
                wrapping_key: "wrapping.key".into(),
                budget_evaluations: setup.budget,
                budget_window_s: 3600,
                replay_window_s: 120,
                checkpoint_interval_s: 3600,
                keyring: None,
                peers: peers.clone(),
                login: setup.login,
                session_ttl_s: 3600,
            };
            std::fs::write(
                dir.join(format!("keeper{keeper}.json")),
                serde_json::to_vec(&config).unwrap(),
            )
            .unwrap();
            keeper_ports.push(reserve(&mut reserved));
        }
        let url = |p: &u16| format!("https://127.0.0.1:{p}");
        let tokens = if setup.voprf {
            TokenParts::Voprf(KeeperParts {
                urls: keeper_ports.iter().map(url).collect(),
                threshold: KT,
                public_shares: public_shares.clone(),
            })
        } else {
            TokenParts::Hmac(TokenRoot::random(&mut rng))
        };
        let client_tls = client_config(&tls.ca_cert_pem, &tls.clients[0]).unwrap();
        let client = Client::new(ClientParts {
            k: K,
            t: T,
            nodes: ports.iter().map(url).collect(),
            tls: client_tls.clone(),
            tokens,
            key_version: 1,
            owner: Some(owner.clone()),
            owner_public: owner.verifying_key(),
            plan: BatchPlan::new(1, 12).unwrap(),
            timeout: Duration::from_secs(5),
            journal: Some(dir.join("journal")),
        })
        .unwrap();
        let mut c = Cluster {
            dir,
            ports,
            running: (0..N).map(|_| None).collect(),
            keeper_ports,
            keepers: (0..m).map(|_| None).collect(),
            reserved,
            client,
            template: ClientTemplate {
                tls: client_tls,
                owner,
                public_shares,
            },
        };
        for node in 1..=N as u8 {
            c.up(node).await;
        }
        for keeper in 1..=m as u8 {
            c.keeper_up(keeper).await;
        }
        if setup.voprf {
            c.client.register(ADMIN, PASSWORD).await.unwrap();
            c.client.login(ADMIN, PASSWORD).await.unwrap();
        }
        c
    }

    /// The reserved listener of `port` the first time, a new one after a restart.
    pub async fn listen(&mut self, port: u16) -> tokio::net::TcpListener {
        let held = self
            .reserved
            .iter()
            .position(|l| l.local_addr().unwrap().port() == port);
        match held {
            Some(i) => {
                let l = self.reserved.swap_remove(i);
                l.set_nonblocking(true).unwrap();
                tokio::net::TcpListener::from_std(l).unwrap()
            }
            None => tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap(),
        }
    }

    pub async fn up(&mut self, node: u8) {
        let i = node as usize - 1;
        let loaded = LoadedNode::load(&self.dir.join(format!("node{node}.json"))).unwrap();
        let listener = self.listen(self.ports[i]).await;
        let (stop, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(obscura_node::server::serve(loaded, listener, async {
            rx.await.ok();
        }));
        self.running[i] = Some(Running { stop, task });
    }

    /// A client of key version `version`, with the keepers' public shares of it.
    pub async fn client_at(
        &self,
        version: u32,
        public_shares: Vec<Vec<obscura_keeper::RistrettoPoint>>,
    ) -> Client {
        let client = self.new_client(version, public_shares);
        client.login(ADMIN, PASSWORD).await.unwrap();
        client
    }

    /// Another client of the cluster at key version 1, logged in as nobody.
    pub fn fresh_client(&self) -> Client {
        self.new_client(1, self.template.public_shares.clone())
    }

    fn new_client(
        &self,
        version: u32,
        public_shares: Vec<Vec<obscura_keeper::RistrettoPoint>>,
    ) -> Client {
        let url = |p: &u16| format!("https://127.0.0.1:{p}");
        Client::new(ClientParts {
            k: K,
            t: T,
            nodes: self.ports.iter().map(url).collect(),
            tls: self.template.tls.clone(),
            tokens: TokenParts::Voprf(KeeperParts {
                urls: self.keeper_ports.iter().map(url).collect(),
                threshold: KT,
                public_shares,
            }),
            key_version: version,
            owner: Some(self.template.owner.clone()),
            owner_public: self.template.owner.verifying_key(),
            plan: BatchPlan::new(1, 12).unwrap(),
            timeout: Duration::from_secs(5),
            journal: None,
        })
        .unwrap()
    }

    pub async fn down(&mut self, node: u8) {
        let r = self.running[node as usize - 1].take().unwrap();
        r.stop.send(()).ok();
        r.task.await.unwrap().unwrap();
    }

    pub async fn keeper_up(&mut self, keeper: u8) {
        let j = keeper as usize - 1;
        let loaded = LoadedKeeper::load(&self.dir.join(format!("keeper{keeper}.json"))).unwrap();
        let listener = self.listen(self.keeper_ports[j]).await;
        let (stop, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(obscura_node::keeper::serve(loaded, listener, async {
            rx.await.ok();
        }));
        self.keepers[j] = Some(Running { stop, task });
        // A restarted keeper has forgotten its sessions: log in again.
        if self.client.user().is_some() {
            self.client.login(ADMIN, PASSWORD).await.unwrap();
        }
    }

    pub async fn keeper_down(&mut self, keeper: u8) {
        let r = self.keepers[keeper as usize - 1].take().unwrap();
        r.stop.send(()).ok();
        r.task.await.unwrap().unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

pub fn testdata(p: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../testdata/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}
