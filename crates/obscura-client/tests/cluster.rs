//! The client against five real node servers on loopback over mutual TLS: index, search and get
//! end to end; a node down; a node whose stored share was corrupted.

use std::path::PathBuf;
use std::time::Duration;

use redb::ReadableTable;

use ed25519_dalek::SigningKey;
use obscura_client::{Client, ClientParts, Error};
use obscura_node::config::{LoadedNode, NodeConfig, NodeSecrets};
use obscura_node::tls::{client_config, make_cluster_tls};
use obscura_sharing::zero::deal;
use obscura_tokens::keyfile::WrappingKey;
use obscura_tokens::{BatchPlan, TokenRoot};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const N: usize = 5;
const K: usize = 3;
const T: usize = 2;

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), obscura_store::Error>>,
}

struct Cluster {
    dir: PathBuf,
    ports: Vec<u16>,
    running: Vec<Option<Running>>,
    client: Client,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "obscura-client-{name}-{}-{}",
            std::process::id(),
            rand_core::OsRng.next_u64()
        ));
        let mut rng = ChaCha20Rng::from_entropy();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let tls = make_cluster_tls("test", N, &hosts, &["admin"]).unwrap();
        let owner = SigningKey::generate(&mut rng);
        let zero = deal(N, T, &mut rng).unwrap();
        let wrapping = WrappingKey::random(&mut rng);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("wrapping.key"), &*wrapping.to_hex()).unwrap();
        std::fs::write(dir.join("ca.pem"), &tls.ca_cert_pem).unwrap();
        let mut ports = Vec::new();
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
            std::fs::write(
                dir.join(format!("node{node}.json")),
                serde_json::to_vec(&config).unwrap(),
            )
            .unwrap();
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            ports.push(l.local_addr().unwrap().port());
        }
        let client = Client::new(ClientParts {
            k: K,
            t: T,
            nodes: ports
                .iter()
                .map(|p| format!("https://127.0.0.1:{p}"))
                .collect(),
            tls: client_config(&tls.ca_cert_pem, &tls.clients[0]).unwrap(),
            token_root: TokenRoot::random(&mut rng),
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
            client,
        };
        for node in 1..=N as u8 {
            c.up(node).await;
        }
        c
    }

    async fn up(&mut self, node: u8) {
        let i = node as usize - 1;
        let loaded = LoadedNode::load(&self.dir.join(format!("node{node}.json"))).unwrap();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.ports[i]))
            .await
            .unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(obscura_node::server::serve(loaded, listener, async {
            rx.await.ok();
        }));
        self.running[i] = Some(Running { stop, task });
    }

    async fn down(&mut self, node: u8) {
        let r = self.running[node as usize - 1].take().unwrap();
        r.stop.send(()).ok();
        r.task.await.unwrap().unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn testdata(p: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../testdata/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_search_get_across_five_nodes() {
    let mut c = Cluster::start("e2e").await;
    let names = ["camera", "coffee", "astronaut", "rocket"];
    let files = [
        testdata("photos/camera.png"),
        testdata("photos/coffee.png"),
        testdata("photos/astronaut.png"),
        testdata("photos/rocket.jpg"),
    ];
    // One batch; a file that is not an image fails alone, nothing of it written.
    let mut batch: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    batch.insert(2, b"not an image");
    let mut results = c.client.index_many(&batch).await;
    assert!(matches!(results.remove(2), Err(Error::Image(_))));
    let ids: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    for (node, s) in c.client.status().await {
        assert_eq!(s.unwrap(), (4, 0), "node {node}");
    }
    for (name, id) in names.iter().zip(&ids) {
        let q = testdata(&format!("derived/{name}.q75.jpg"));
        let found = c.client.search(&q, 10, 10).await.unwrap();
        assert_eq!(found.matches[0].id, *id, "{name}");
        assert!(found.bytes_sent > 0 && found.bytes_received > 0);
    }
    let rebuilt = c.client.get(ids[1]).await.unwrap();
    assert_eq!(rebuilt.image, files[1]);
    assert!(rebuilt.faults.is_empty(), "{:?}", rebuilt.faults);

    // A file that is not an image: a typed error, nothing written.
    assert!(matches!(
        c.client.index(b"not an image").await,
        Err(Error::Image(_))
    ));

    // Node 5 down: get still works from k of the other 4; search needs all 2t + 1 = 5 and says
    // which node is missing; indexing fails naming node 5 and leaves nothing behind.
    c.down(5).await;
    let rebuilt = c.client.get(ids[2]).await.unwrap();
    assert_eq!(rebuilt.image, files[2]);
    assert_eq!(rebuilt.faults.len(), 1);
    assert_eq!(rebuilt.faults[0].node, 5);
    let err = c.client.search(&files[0], 10, 10).await.unwrap_err();
    assert!(err.to_string().contains("node 5"), "{err}");
    let (text, horse) = (testdata("photos/text.png"), testdata("photos/horse.png"));
    for result in c.client.index_many(&[&text, &horse]).await {
        let err = result.unwrap_err();
        assert!(err.to_string().contains("node 5"), "{err}");
    }
    for (node, s) in c.client.status().await {
        if node != 5 {
            assert_eq!(s.unwrap(), (4, 0), "node {node}");
        }
    }
    // The failed batch was cleaned up at nodes 1–4; its journal entry stays until node 5
    // confirms too, and is settled once node 5 is back.
    assert_eq!(std::fs::read_dir(c.dir.join("journal")).unwrap().count(), 1);
    c.up(5).await;
    let finished = c.client.finish_interrupted().await.unwrap();
    assert_eq!((finished.removed.len(), finished.remaining.len()), (2, 0));
    assert_eq!(std::fs::read_dir(c.dir.join("journal")).unwrap().count(), 0);
    assert_eq!(
        c.client.finish_interrupted().await.unwrap(),
        Default::default()
    );
    assert_eq!(
        c.client.search(&files[3], 10, 10).await.unwrap().matches[0].id,
        ids[3]
    );

    // Deleting removes it everywhere; deleting again says it is unknown.
    c.client.delete(ids[0]).await.unwrap();
    assert!(matches!(
        c.client.get(ids[0]).await,
        Err(Error::UnknownImage(_))
    ));
    assert!(matches!(
        c.client.delete(ids[0]).await,
        Err(Error::UnknownImage(_))
    ));
}

/// Flip one byte of `image`'s value in a node's redb table (the node must be stopped).
fn flip_byte(
    store: &std::path::Path,
    table: &str,
    image: &obscura_sharing::manifest::ImageId,
    at: usize,
) {
    let db = redb::Database::open(store).unwrap();
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(table).unwrap();
        let mut value = t.get(image.0.as_slice()).unwrap().unwrap().value().to_vec();
        value[at] ^= 0x55;
        t.insert(image.0.as_slice(), value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_shares_and_manifests_are_named_and_the_image_still_rebuilt() {
    let mut c = Cluster::start("corrupt").await;
    let file = testdata("photos/chelsea.png");
    let id = c.client.index(&file).await.unwrap();
    // Corrupt node 2's stored share and node 3's stored manifest on disk while they are down.
    c.down(2).await;
    c.down(3).await;
    flip_byte(&c.dir.join("node2.redb"), "image_shares", &id, 500);
    flip_byte(&c.dir.join("node3.redb"), "manifests", &id, 40);
    c.up(2).await;
    c.up(3).await;
    let rebuilt = c.client.get(id).await.unwrap();
    assert_eq!(rebuilt.image, file);
    let named: Vec<_> = rebuilt
        .faults
        .iter()
        .map(|f| (f.node, f.reason.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (2, "node 2 share failed its digest"),
            (3, "returned a manifest that is not the owner's")
        ]
    );
    // With two more nodes down only node 2's bad share and one good one remain: named.
    c.down(4).await;
    c.down(5).await;
    let err = c.client.get(id).await.unwrap_err().to_string();
    assert!(
        err.contains("need 3 shares")
            && err.contains("node 2 share failed its digest")
            && err.contains("node 4")
            && err.contains("node 5"),
        "{err}"
    );
}
