//! A real node on loopback, over TLS, for the API tests.
#![allow(dead_code)]

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use obscura_node::config::{LoadedNode, NodeConfig, NodeSecrets};
use obscura_node::tls::{client_config, make_cluster_tls, ClusterTls};
use obscura_proto::{Request, RequestBody, Response, ResponseBody};
use obscura_sharing::zero::deal;
use obscura_tokens::keyfile::WrappingKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub const N: usize = 5;
pub const T: usize = 2;

pub struct TestNode {
    pub dir: PathBuf,
    pub url: String,
    pub client: reqwest::Client,
    pub owner: SigningKey,
    pub audit_key: SigningKey,
    pub tls: ClusterTls,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), obscura_store::Error>>>,
}

impl TestNode {
    /// Node 1 of a 5-node cluster, started in this process on 127.0.0.1.
    pub async fn start(name: &str) -> TestNode {
        Self::start_with(name, |_| {}).await
    }

    /// [`start`](Self::start) with the configuration changed by `adjust` first.
    pub async fn start_with(name: &str, adjust: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = std::env::temp_dir().join(format!(
            "obscura-node-{name}-{}-{}",
            std::process::id(),
            rand_core::OsRng.next_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = ChaCha20Rng::from_entropy();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let tls = make_cluster_tls("test", 1, 0, &hosts, &["admin"]).unwrap();
        let owner = SigningKey::generate(&mut rng);
        let audit_key = SigningKey::generate(&mut rng);
        let zero = deal(N, T, &mut rng).unwrap().remove(0);
        let secrets = NodeSecrets {
            tls_key_pem: tls.nodes[0].key_pem.to_string(),
            audit_key: audit_key.to_bytes(),
            zero_keys: zero
                .subset_keys()
                .iter()
                .map(|k| (k.members(), *k.key_bytes()))
                .collect(),
        };
        let wrapping = WrappingKey::random(&mut rng);
        std::fs::write(dir.join("wrapping.key"), &*wrapping.to_hex()).unwrap();
        std::fs::write(
            dir.join("secrets.sealed"),
            secrets.seal(&wrapping, &mut rng).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("ca.pem"), &tls.ca_cert_pem).unwrap();
        std::fs::write(dir.join("cert.pem"), &tls.nodes[0].cert_pem).unwrap();
        let mut config = NodeConfig {
            node: 1,
            n: N as u8,
            k: 3,
            t: T as u8,
            listen: "127.0.0.1:0".into(),
            store: "store.redb".into(),
            ca_cert: "ca.pem".into(),
            cert: "cert.pem".into(),
            secrets: "secrets.sealed".into(),
            wrapping_key: "wrapping.key".into(),
            owner_public_key: owner
                .verifying_key()
                .to_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            replay_window_s: 120,
            checkpoint_interval_s: 3600,
            pending_timeout_s: 600,
        };
        adjust(&mut config);
        std::fs::write(
            dir.join("node.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();

        let loaded = LoadedNode::load(&dir.join("node.json")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(obscura_node::server::serve(loaded, listener, async {
            rx.await.ok();
        }));
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(client_config(&tls.ca_cert_pem, &tls.clients[0]).unwrap())
            .build()
            .unwrap();
        TestNode {
            dir,
            url: format!("https://127.0.0.1:{port}"),
            client,
            owner,
            audit_key,
            tls,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn request(body: RequestBody) -> Request {
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        Request {
            request_id: id,
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            body,
        }
    }

    /// Send raw bytes to a path; returns the HTTP status and the decoded response.
    pub async fn post_raw(&self, path: &str, bytes: Vec<u8>) -> (u16, ResponseBody) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = Response::decode(&resp.bytes().await.unwrap()).unwrap().0;
        (status, body)
    }

    pub async fn send(&self, req: &Request) -> (u16, ResponseBody) {
        self.post_raw(req.body.path(), req.encode()).await
    }

    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).ok();
        self.task.take().unwrap().await.unwrap().unwrap();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
