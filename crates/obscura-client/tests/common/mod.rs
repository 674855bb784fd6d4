//! A test cluster in one process: five real node servers (or as many as asked) and three keepers on loopback over
//! mutual TLS, made by `obscura_cluster::deal::init` (as `obscura cluster init` makes one), with the
//! admin account registered with the bootstrap code and logged in.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use obscura_client::{Client, TokenParts};
use obscura_cluster::keeper::KeeperConfig;
use obscura_cluster::keeper::LoginPolicy;
use obscura_cluster::node::NodeConfig;
use obscura_keeper_server::LoadedKeeper;
use obscura_node::config::LoadedNode;
use obscura_tokens::keyfile::WrappingKey;
use rand_core::RngCore;

pub const N: usize = 5;
pub const K: usize = 3;
pub const T: usize = 2;
/// Keepers, and how many evaluate.
pub const M: usize = 3;
pub const KT: usize = 2;
/// The cluster's first account (its admin, every role), which the tests' clients log in as.
pub const ADMIN: &str = "admin";
pub const PASSWORD: &[u8] = b"correct horse battery staple";

pub struct Running {
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), obscura_store::Error>>,
}

pub struct Cluster {
    /// The scratch folder holding the cluster directory.
    pub scratch: PathBuf,
    /// The cluster directory.
    pub dir: PathBuf,
    pub ports: Vec<u16>,
    pub running: Vec<Option<Running>>,
    pub keeper_ports: Vec<u16>,
    pub keepers: Vec<Option<Running>>,
    pub reserved: Vec<std::net::TcpListener>,
    pub client: Client,
    /// The first account's bootstrap code.
    pub bootstrap: [u8; 32],
}

/// How a test cluster is made.
#[derive(Clone, Copy)]
pub struct Setup {
    /// VOPRF tokens from keepers, else HMAC.
    pub voprf: bool,
    /// A keeper whose share is not of the dealt key: its proofs cannot verify.
    pub lying_keepers: &'static [u8],
    /// Evaluations per user per keeper per hour.
    pub budget: u64,
    /// Login limits at every keeper.
    pub login: LoginPolicy,
    /// Queries per user per node per hour.
    pub queries_per_hour: u32,
    /// Fetches per user per node per hour.
    pub fetches_per_hour: u32,
    /// What each user may keep at a keeper.
    pub quotas: obscura_cluster::keeper::Quotas,
    /// Register the admin and log the cluster's client in at the start.
    pub register: bool,
    /// Deliver every keeper its token-key shares at the start.
    pub provision: bool,
    /// Nodes (threshold `K` whatever their number).
    pub nodes: usize,
    /// How images are shared.
    pub storage: obscura_client::config::StorageKind,
}

pub const VOPRF: Setup = Setup {
    voprf: true,
    lying_keepers: &[],
    budget: 1_000_000,
    login: LoginPolicy {
        free: 5,
        lock_after: 20,
        source_free: 20,
        max_delay_s: 3600,
        fresh_login_s: 300,
        lock_s: 900,
        max_lock_s: 86_400,
    },
    queries_per_hour: 100_000,
    fetches_per_hour: 100_000,
    quotas: obscura_cluster::keeper::Quotas {
        max_secrets: 256,
        max_events: 1000,
    },
    register: true,
    provision: true,
    nodes: N,
    storage: obscura_client::config::StorageKind::Shamir,
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

/// Rewrite a JSON configuration file through `edit`.
pub fn edit_json<T: serde::Serialize + serde::de::DeserializeOwned>(
    path: &std::path::Path,
    edit: impl FnOnce(&mut T),
) {
    let mut value: T = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

impl Cluster {
    pub async fn start(name: &str) -> Cluster {
        Cluster::start_with(name, VOPRF).await
    }

    pub async fn start_with(name: &str, setup: Setup) -> Cluster {
        let scratch = std::env::temp_dir().join(format!(
            "obscura-client-{name}-{}-{}",
            std::process::id(),
            rand_core::OsRng.next_u64()
        ));
        std::fs::create_dir_all(&scratch).unwrap();
        let dir = scratch.join("cluster");
        let mut reserved = Vec::new();
        let n = setup.nodes;
        let ports: Vec<u16> = (0..n).map(|_| reserve(&mut reserved)).collect();
        let keeper_ports: Vec<u16> = (0..M).map(|_| reserve(&mut reserved)).collect();
        let mut opt = obscura_cluster::deal::InitOptions::new(n, K, "127.0.0.1", 1, 1);
        opt.node_ports = ports.clone();
        opt.keeper_ports = keeper_ports.clone();
        opt.keepers = M;
        opt.keeper_threshold = KT;
        opt.keeper_budget = setup.budget;
        opt.storage = setup.storage;
        opt.capabilities.queries_per_hour = setup.queries_per_hour;
        opt.capabilities.fetches_per_hour = setup.fetches_per_hour;
        if !setup.voprf {
            opt.tokens = obscura_client::config::TokenKind::Hmac;
        }
        let made = obscura_cluster::deal::init(&dir, &opt).unwrap();
        for node in 1..=n {
            edit_json(
                &dir.join(format!("node{node}/node.json")),
                |c: &mut NodeConfig| {
                    c.listen = "127.0.0.1:0".into();
                    c.checkpoint_interval_s = 3600;
                },
            );
        }
        for keeper in 1..=M as u8 {
            edit_json(
                &dir.join(format!("keeper{keeper}/keeper.json")),
                |c: &mut KeeperConfig| {
                    c.listen = "127.0.0.1:0".into();
                    c.checkpoint_interval_s = 3600;
                    c.login = setup.login;
                    c.quotas = setup.quotas;
                },
            );
        }
        let client = Self::load_client(&dir, |_| {});
        let mut c = Cluster {
            scratch,
            dir,
            ports,
            running: (0..n).map(|_| None).collect(),
            keeper_ports,
            keepers: (0..M).map(|_| None).collect(),
            reserved,
            client,
            bootstrap: *made.bootstrap,
        };
        for node in 1..=n as u8 {
            c.up(node).await;
        }
        for keeper in 1..=M as u8 {
            c.keeper_up(keeper).await;
        }
        // A lying keeper's shares of the token keys are not the dealt ones, so its proofs fail:
        // it takes others first, on the owner's order (the test's stand-in for a keeper whose
        // share went bad), and then refuses the dealt ones.
        let owner = obscura_client::config::load(&c.dir).unwrap().owner.unwrap();
        let policy = obscura_cluster::attestation::load_policy(&c.dir)
            .unwrap()
            .unwrap();
        let ca = std::fs::read(c.dir.join("ca.pem")).unwrap();
        for &j in setup.lying_keepers {
            let others: Vec<obscura_cluster::keeper::SealedShare> = (1..=n as u8)
                .map(|node| obscura_cluster::keeper::SealedShare {
                    node,
                    version: 1,
                    secret: obscura_keeper::oprf::random_scalar(&mut rand_core::OsRng).to_bytes(),
                })
                .collect();
            let appraisal = appraise_keeper(&c, j, &policy, &ca).await;
            let answer = raw(&c, j, provision_body(&appraisal, j, &others, &owner)).await;
            assert!(
                matches!(answer, obscura_proto::ResponseBody::Provisioned { .. }),
                "{answer:?}"
            );
        }
        // Every keeper takes its token-key shares once appraised.
        let provisioned = if setup.provision {
            obscura_client::config::provision_waiting(&c.dir, &c.client)
                .await
                .unwrap()
        } else {
            Vec::new()
        };
        for (keeper, outcome) in provisioned {
            match outcome {
                Err(obscura_client::Fault::Refused { message, .. })
                    if setup.lying_keepers.contains(&keeper)
                        && message.contains("takes its shares once") => {}
                other => assert!(other.is_ok(), "keeper {keeper}: {other:?}"),
            }
        }
        if setup.register {
            c.client
                .register_first(ADMIN, PASSWORD, c.bootstrap)
                .await
                .unwrap();
            c.client.login(ADMIN, PASSWORD).await.unwrap();
        }
        c
    }

    /// A client of `dir` as `client.json` makes it, its parts changed by `adjust`.
    fn load_client(
        dir: &std::path::Path,
        adjust: impl FnOnce(&mut obscura_client::ClientParts),
    ) -> Client {
        let mut parts = obscura_client::config::load(dir).unwrap();
        parts.timeout = Duration::from_secs(5);
        adjust(&mut parts);
        Client::new(parts).unwrap()
    }

    /// An HTTP client with the cluster's client certificate that reaches every server by its
    /// party name, as any holder of the certificate could.
    pub fn http(&self) -> reqwest::Client {
        let parts = obscura_client::config::load(&self.dir).unwrap();
        let mut b = reqwest::Client::builder().use_preconfigured_tls(parts.tls);
        for (i, p) in self.ports.iter().enumerate() {
            b = b.resolve(
                &format!("node-{}.obscura", i + 1),
                ([127, 0, 0, 1], *p).into(),
            );
        }
        for (j, p) in self.keeper_ports.iter().enumerate() {
            b = b.resolve(
                &format!("keeper-{}.obscura", j + 1),
                ([127, 0, 0, 1], *p).into(),
            );
        }
        b.build().unwrap()
    }

    /// Keeper `j`'s base URL.
    pub fn keeper_url(&self, j: u8) -> String {
        format!(
            "https://keeper-{j}.obscura:{}",
            self.keeper_ports[j as usize - 1]
        )
    }

    /// Node `i`'s base URL.
    pub fn node_url(&self, i: u8) -> String {
        format!("https://node-{i}.obscura:{}", self.ports[i as usize - 1])
    }

    /// Node `node`'s store file.
    pub fn node_store(&self, node: u8) -> PathBuf {
        self.dir.join(format!("node{node}/store.redb"))
    }

    /// Keeper `j`'s store file.
    pub fn keeper_store(&self, j: u8) -> PathBuf {
        self.dir.join(format!("keeper{j}/store.redb"))
    }

    /// Keeper `j`'s configuration file.
    pub fn keeper_config(&self, j: u8) -> PathBuf {
        self.dir.join(format!("keeper{j}/keeper.json"))
    }

    /// Keeper `j`'s wrapping key.
    pub fn keeper_wrapping(&self, j: u8) -> WrappingKey {
        WrappingKey::from_file(&self.dir.join(format!("keeper{j}/wrapping.key"))).unwrap()
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
        let loaded = LoadedNode::load(&self.dir.join(format!("node{node}/node.json"))).unwrap();
        let listener = self.listen(self.ports[i]).await;
        let (stop, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(obscura_node::server::serve(loaded, listener, async {
            rx.await.ok();
        }));
        self.running[i] = Some(Running { stop, task });
    }

    /// A client of key version `version`, with the keepers' public shares of it, logged in as
    /// the admin.
    pub async fn client_at(
        &self,
        version: u32,
        public_shares: Vec<Vec<obscura_keeper::RistrettoPoint>>,
    ) -> Client {
        let client = Self::load_client(&self.dir, |p| {
            p.key_version = version;
            p.journal = None;
            if let TokenParts::Voprf(k) = &mut p.tokens {
                k.public_shares = public_shares;
            }
        });
        client.login(ADMIN, PASSWORD).await.unwrap();
        client
    }

    /// A client of the cluster with its parts changed by `adjust`, logged in as nobody.
    pub fn adjusted_client(&self, adjust: impl FnOnce(&mut obscura_client::ClientParts)) -> Client {
        Self::load_client(&self.dir, |p| {
            p.journal = None;
            adjust(p);
        })
    }

    /// Another client of the cluster at key version 1, logged in as nobody.
    pub fn fresh_client(&self) -> Client {
        Self::load_client(&self.dir, |p| p.journal = None)
    }

    /// A client without the data owner's key, logged in as nobody.
    pub fn querier_client(&self) -> Client {
        Self::load_client(&self.dir, |p| {
            p.journal = None;
            p.owner = None;
        })
    }

    /// Register `user` with `roles` (as the admin) and log a fresh client in as it.
    pub async fn user(&self, user: &str, roles: u8) -> Client {
        self.client.register(user, PASSWORD, roles).await.unwrap();
        let client = self.querier_client();
        client.login(user, PASSWORD).await.unwrap();
        client
    }

    pub async fn down(&mut self, node: u8) {
        let r = self.running[node as usize - 1].take().unwrap();
        r.stop.send(()).ok();
        r.task.await.unwrap().unwrap();
    }

    pub async fn keeper_up(&mut self, keeper: u8) {
        let j = keeper as usize - 1;
        let loaded = LoadedKeeper::load(&self.keeper_config(keeper)).unwrap();
        let listener = self.listen(self.keeper_ports[j]).await;
        let (stop, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(obscura_keeper_server::serve(loaded, listener, async {
            rx.await.ok();
        }));
        self.keepers[j] = Some(Running { stop, task });
    }

    pub async fn keeper_down(&mut self, keeper: u8) {
        let r = self.keepers[keeper as usize - 1].take().unwrap();
        r.stop.send(()).ok();
        r.task.await.unwrap().unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.scratch).ok();
    }
}

pub fn testdata(p: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../testdata/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Post `body` in clear to keeper `j`, as any client of the cluster could.
pub async fn raw(
    c: &Cluster,
    j: u8,
    body: obscura_proto::KeeperBody,
) -> obscura_proto::ResponseBody {
    let http = c.http();
    let mut request_id = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut request_id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let req = obscura_proto::Request {
        request_id,
        timestamp: now,
        body,
        auth: None,
    };
    let url = format!(
        "{}{}",
        c.keeper_url(j),
        obscura_proto::Body::path(&req.body)
    );
    let bytes = http
        .post(url)
        .body(req.encode())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    obscura_proto::Response::decode(&bytes).unwrap().0
}

/// Keeper `j`'s evidence, appraised as the owner's client appraises it.
pub async fn appraise_keeper(
    c: &Cluster,
    j: u8,
    policy: &obscura_attest::Policy,
    ca: &[u8],
) -> obscura_attest::Appraisal {
    use obscura_attest::{binding, Evidence, Verifier};
    let mut nonce = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let obscura_proto::ResponseBody::Evidence {
        party_key,
        evidence,
    } = raw(c, j, obscura_proto::KeeperBody::Evidence { nonce }).await
    else {
        panic!("keeper {j} gave no evidence");
    };
    let role = obscura_attest::Role::Keeper;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Verifier::new()
        .appraise_party(
            &Evidence::from_json(&evidence).unwrap(),
            policy,
            &role,
            &party_key,
            &binding::context(ca, &role, j),
            &nonce,
            now,
        )
        .unwrap()
}

/// A delivery of `shares` to keeper `keeper`, sealed to the key `appraisal` binds, ordered by
/// `signer`, as the owner's client makes one.
pub fn provision_body(
    appraisal: &obscura_attest::Appraisal,
    keeper: u8,
    shares: &[obscura_cluster::keeper::SealedShare],
    signer: &ed25519_dalek::SigningKey,
) -> obscura_proto::KeeperBody {
    let mut delivery = obscura_cluster::provision::Delivery {
        receipt: [0; 32],
        shares: shares
            .iter()
            .map(|s| obscura_cluster::keeper::SealedShare {
                node: s.node,
                version: s.version,
                secret: s.secret,
            })
            .collect(),
    };
    rand_core::OsRng.fill_bytes(&mut delivery.receipt);
    let plain = postcard::to_allocvec(&delivery).unwrap();
    let sealed = obscura_attest::seal::seal(
        appraisal,
        &obscura_cluster::provision::delivery_purpose(keeper),
        &plain,
        &mut rand_core::OsRng,
    )
    .unwrap();
    let party_key: [u8; 32] = appraisal.party_key().unwrap().try_into().unwrap();
    let signature = obscura_sharing::order::Order::Provision {
        keeper,
        party_key,
        delivery: obscura_proto::provision_digest(&sealed.enc, &sealed.ciphertext),
    }
    .sign(signer)
    .to_vec();
    obscura_proto::KeeperBody::Provision {
        party_key,
        enc: sealed.enc,
        ciphertext: sealed.ciphertext,
        signature,
    }
}
