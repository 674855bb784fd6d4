//! A real node on loopback, over TLS, for the API tests: node 1 of a 5-node cluster made by
//! `obscura_cluster::deal::init`. The keepers' capability key is replaced by one Ed25519 key the test
//! holds (a FROST group signature is a plain Ed25519 signature, so the node checks it the same
//! way), so tests mint capabilities for any user and role without running keepers.
#![allow(dead_code)]

use std::path::PathBuf;

use ed25519_dalek::SigningKey as OwnerKey;
use ed25519_dalek::{Signer, SigningKey};
use obscura_auth::capability::{self, CapabilityKey, Holder};
use obscura_auth::handle::HandleKey;
use obscura_auth::matching;
use obscura_cluster::node::{node_purpose, NodeConfig, NodeSecrets};
use obscura_mpc::check::{self, CheckCoin};
use obscura_mpc::node::{NodeSession, Step};
use obscura_mpc::{share_hash, HashShare, NodeRequest};
use obscura_node::config::LoadedNode;
use obscura_proto::{
    roles, Body, Capability, Limits, NodeBody, Response, ResponseBody, SignedCapability,
    UploadTicket,
};

/// A request to a node.
type Request = obscura_proto::Request<NodeBody>;
use obscura_proto::{ErrorCode, PreparedImage};
use obscura_proto::{ScanOf, WireCheck};
use obscura_sharing::bytes::{split, ByteShare, Params};
use obscura_sharing::manifest::{ImageId, Manifest};
use obscura_sharing::zero::ZeroSharingKeys;
use obscura_tokens::keyfile::WrappingKey;
use obscura_tokens::{NodeTokenKeys, TokenRoot};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub const N: usize = 5;
pub const T: usize = 2;
/// The cluster's τ (its default policy).
pub const TAU: u32 = 10;

/// Every node's hash shares of every image [`upload`] made, for the nodes 2–5 this test plays.
static HASH_SHARES: std::sync::Mutex<Vec<(ImageId, Vec<HashShare>)>> =
    std::sync::Mutex::new(Vec::new());

/// The user the plain [`TestNode::send`] acts as: every role.
pub const TESTER: &str = "tester";

pub struct TestNode {
    pub scratch: PathBuf,
    pub dir: PathBuf,
    /// `https://node-1.obscura:PORT`.
    pub url: String,
    pub addr: std::net::SocketAddr,
    /// An HTTP client with the cluster's client certificate.
    pub client: reqwest::Client,
    /// The client's TLS configuration (the cluster's client certificate).
    pub tls: rustls::ClientConfig,
    pub owner: SigningKey,
    pub audit_key: SigningKey,
    /// Stands in for the keepers' group key.
    pub keepers: SigningKey,
    pub ca_pem: String,
    pub tester: Holder,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), obscura_store::Error>>>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A capability for `user` with `roles`, signed with `keepers`, for a fresh holder key.
pub fn mint(keepers: &SigningKey, user: &str, roles: u8, limits: Limits) -> Holder {
    let holder = SigningKey::generate(&mut rand_core::OsRng);
    let mut id = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut id);
    let cap = Capability {
        id,
        user: user.into(),
        roles,
        holder: holder.verifying_key().to_bytes(),
        issued_at: now(),
        expires_at: now() + 3600,
        limits,
    };
    minted(keepers, cap, holder)
}

/// A capability made as the keepers would, but with every field chosen.
pub fn minted(keepers: &SigningKey, cap: Capability, holder: SigningKey) -> Holder {
    let body = capability::encode(&cap);
    let signature = keepers
        .sign(&capability::signing_message(&body))
        .to_bytes()
        .to_vec();
    Holder::new(
        holder,
        SignedCapability { body, signature },
        &CapabilityKey::from(keepers.verifying_key()),
        cap.issued_at,
    )
    .unwrap()
}

/// Generous limits, for tests that are not about them.
pub const PLENTY: Limits = Limits {
    queries_per_hour: 100_000,
    fetches_per_hour: 100_000,
};

impl TestNode {
    /// Node 1 of a 5-node cluster, started in this process on 127.0.0.1.
    pub async fn start(name: &str) -> TestNode {
        Self::start_with(name, |_| {}).await
    }

    /// [`start`](Self::start) with the configuration changed by `adjust` first.
    pub async fn start_with(name: &str, adjust: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let scratch = std::env::temp_dir().join(format!(
            "obscura-node-{name}-{}-{}",
            std::process::id(),
            rand_core::OsRng.next_u64()
        ));
        std::fs::create_dir_all(&scratch).unwrap();
        let dir = scratch.join("cluster");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut opt = obscura_cluster::deal::InitOptions::new(N, 3, "127.0.0.1", 20_001, 20_101);
        opt.node_ports[0] = addr.port();
        obscura_cluster::deal::init(&dir, &opt).unwrap();
        let keepers = SigningKey::generate(&mut rand_core::OsRng);
        let config_path = dir.join("node1/node.json");
        let mut config: NodeConfig =
            serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        config.checkpoint_interval_s = 3600;
        config.capability_key =
            obscura_tokens::keyfile::to_hex(&keepers.verifying_key().to_bytes());
        adjust(&mut config);
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        let wrapping = WrappingKey::from_file(&dir.join("node1/wrapping.key")).unwrap();
        let secrets: NodeSecrets = obscura_cluster::files::open_secrets(
            &std::fs::read(dir.join("node1/secrets.sealed")).unwrap(),
            &node_purpose(1),
            &wrapping,
        )
        .unwrap();
        let audit_key = SigningKey::from_bytes(&secrets.audit_key);
        let parts = obscura_client::config::load(&dir).unwrap();
        let owner = parts.owner.clone().unwrap();
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();

        let loaded = LoadedNode::load(&config_path).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(obscura_node::server::serve(loaded, listener, async {
            rx.await.ok();
        }));
        let tls = parts.tls.clone();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(parts.tls)
            .resolve("node-1.obscura", addr)
            .build()
            .unwrap();
        TestNode {
            scratch,
            dir,
            url: format!("https://node-1.obscura:{}", addr.port()),
            addr,
            client,
            tls,
            owner,
            audit_key,
            tester: mint(&keepers, TESTER, roles::ALL, PLENTY),
            keepers,
            ca_pem,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A capability for `user` with `roles` at this node's cluster.
    pub fn holder(&self, user: &str, roles: u8) -> Holder {
        mint(&self.keepers, user, roles, PLENTY)
    }

    /// A request with a fresh id and the current time, not yet signed.
    pub fn request(body: NodeBody) -> Request {
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        Request {
            request_id: id,
            timestamp: now(),
            body,
            auth: None,
        }
    }

    /// Send raw bytes to a path; returns the HTTP status and the decoded response.
    pub async fn post_raw(&self, path: &str, bytes: Vec<u8>) -> (u16, ResponseBody) {
        self.post_with(path, bytes, None).await
    }

    /// [`post_raw`](Self::post_raw) with an upload's capability header.
    pub async fn post_with(
        &self,
        path: &str,
        bytes: Vec<u8>,
        ticket: Option<&UploadTicket>,
    ) -> (u16, ResponseBody) {
        let mut post = self.client.post(format!("{}{path}", self.url));
        if let Some(t) = ticket {
            let encoded = postcard::to_allocvec(t).unwrap();
            post = post.header(
                obscura_proto::UPLOAD_TICKET_HEADER,
                obscura_tokens::keyfile::to_hex(&encoded),
            );
        }
        let resp = post.body(bytes).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = Response::decode(&resp.bytes().await.unwrap()).unwrap().0;
        (status, body)
    }

    /// Send `req` signed as the tester, who holds every role.
    pub async fn send(&self, req: &Request) -> (u16, ResponseBody) {
        self.send_as(&self.tester, req).await
    }

    /// Send `req` signed with `holder`'s capability for node 1 (and, for an upload, with its
    /// ticket in the header, as clients send it).
    pub async fn send_as(&self, holder: &Holder, req: &Request) -> (u16, ResponseBody) {
        let mut req = req.clone();
        holder.sign(1, &mut req);
        let ticket =
            matches!(req.body, NodeBody::Prepare { .. }).then(|| holder.upload_ticket(1, &req));
        self.post_with(req.body.path(), req.encode(), ticket.as_ref())
            .await
    }

    /// Node `i`'s secrets, from the cluster directory.
    pub fn secrets_of(&self, i: u8) -> NodeSecrets {
        let dir = self.dir.join(format!("node{i}"));
        let wrapping = WrappingKey::from_file(&dir.join("wrapping.key")).unwrap();
        obscura_cluster::files::open_secrets(
            &std::fs::read(dir.join("secrets.sealed")).unwrap(),
            &node_purpose(i),
            &wrapping,
        )
        .unwrap()
    }

    /// Node `i`'s signed check of `share` under the querier's commitment `digests`, made here
    /// from its secrets as node `i` makes it: what a querier gets from the nodes this test does
    /// not run.
    #[allow(clippy::too_many_arguments)]
    pub fn check_of(
        &self,
        i: u8,
        user: &str,
        query_id: &[u8; 16],
        issued: u64,
        share: &HashShare,
        scan: &ScanOf,
        digests: &[[u8; 32]],
    ) -> WireCheck {
        let secrets = self.secrets_of(i);
        let zero = ZeroSharingKeys::from_parts(i, N, T, secrets.zero_keys.clone()).unwrap();
        let coin_key = HandleKey::from_bytes(secrets.handle_key).check_coin_key();
        let context =
            matching::check_context(&matching::query_context(query_id, issued, scan), digests);
        let coin = CheckCoin::derive(&coin_key, &context);
        let check = check::check_share(&zero, &coin, &context, share).unwrap();
        matching::sign_check(
            &SigningKey::from_bytes(&secrets.audit_key),
            &matching::Answered {
                node: i,
                user,
                query_id,
                issued,
            },
            &context,
            &check,
        )
    }

    /// The querier's commitment to `shares`.
    pub fn digests(shares: &[HashShare]) -> Vec<[u8; 32]> {
        shares
            .iter()
            .map(|s| matching::share_digest(&s.to_bytes()))
            .collect()
    }

    /// Stage-2's first round as `who` runs it: node 1 checks `shares[0]` over the wire, nodes
    /// 2–5's checks are made here. The checks in node order, or node 1's refusal.
    pub async fn checks_as(
        &self,
        who: &Holder,
        query_id: [u8; 16],
        issued: u64,
        shares: &[HashShare],
        candidates: &[[u8; 16]],
    ) -> Result<Vec<WireCheck>, (u16, ResponseBody)> {
        let scan = matching::scan_of(candidates);
        self.checks_of_scan(who, query_id, issued, shares, scan)
            .await
    }

    /// [`checks_as`](Self::checks_as) for a list known by its [`ScanOf`] only.
    pub async fn checks_of_scan(
        &self,
        who: &Holder,
        query_id: [u8; 16],
        issued: u64,
        shares: &[HashShare],
        scan: ScanOf,
    ) -> Result<Vec<WireCheck>, (u16, ResponseBody)> {
        let digests = Self::digests(shares);
        let req = TestNode::request(NodeBody::CheckQuery {
            query_id,
            issued,
            query_share: shares[0].to_bytes().to_vec(),
            scan,
            share_digests: digests.clone(),
        });
        let first = match self.send_as(who, &req).await {
            (200, ResponseBody::QueryChecked { check }) => check,
            other => return Err(other),
        };
        let user = who.capability().user.clone();
        Ok(std::iter::once(first)
            .chain((2..=N as u8).map(|i| {
                self.check_of(
                    i,
                    &user,
                    &query_id,
                    issued,
                    &shares[i as usize - 1],
                    &scan,
                    &digests,
                )
            }))
            .collect())
    }

    /// Every round of Stage-2 at node 1 as `who`, the other nodes played here: node 1's answer,
    /// or its first refusal.
    pub async fn evaluate_as(
        &self,
        who: &Holder,
        query_id: [u8; 16],
        issued: u64,
        shares: &[HashShare],
        candidates: &[[u8; 16]],
    ) -> (u16, ResponseBody) {
        match self
            .checks_as(who, query_id, issued, shares, candidates)
            .await
        {
            Ok(checks) => {
                let req = TestNode::request(NodeBody::Evaluate {
                    query_id,
                    issued,
                    query_share: shares[0].to_bytes().to_vec(),
                    scan: matching::scan_of(candidates),
                    part: 0,
                    candidates: candidates.to_vec(),
                    share_digests: Self::digests(shares),
                    checks,
                });
                match self.send_as(who, &req).await {
                    (200, ResponseBody::Opened { opened }) => {
                        self.rounds_as(who, query_id, issued, shares, candidates, opened)
                            .await
                    }
                    other => other,
                }
            }
            Err(refused) => refused,
        }
    }

    /// Node `i` as this test plays it for `who`'s query: its Stage-2 session, started from its
    /// secrets and its hash shares of the images the handles open to, and its first openings.
    pub fn played_node(
        &self,
        i: u8,
        user: &str,
        query_id: &[u8; 16],
        issued: u64,
        share: &HashShare,
        candidates: &[[u8; 16]],
    ) -> (
        ZeroSharingKeys,
        SigningKey,
        NodeSession,
        obscura_proto::WireOpened,
    ) {
        let scan = matching::scan_of(candidates);
        self.played_part(i, user, query_id, issued, share, (&scan, 0, candidates))
    }

    /// [`played_node`](Self::played_node) for part `part` of the list `scan`.
    pub fn played_part(
        &self,
        i: u8,
        user: &str,
        query_id: &[u8; 16],
        issued: u64,
        share: &HashShare,
        (scan, part, candidates): (&ScanOf, u32, &[[u8; 16]]),
    ) -> (
        ZeroSharingKeys,
        SigningKey,
        NodeSession,
        obscura_proto::WireOpened,
    ) {
        let secrets = self.secrets_of(i);
        let zero = ZeroSharingKeys::from_parts(i, N, T, secrets.zero_keys.clone()).unwrap();
        let handles = HandleKey::from_bytes(secrets.handle_key).for_query(user, query_id, issued);
        let ids: Vec<ImageId> = candidates
            .iter()
            .map(|h| ImageId(handles.open(h)))
            .collect();
        let known = HASH_SHARES.lock().unwrap().clone();
        let stored: Vec<Option<HashShare>> = ids
            .iter()
            .map(|id| {
                known
                    .iter()
                    .find(|(k, _)| k == id)
                    .map(|(_, s)| s[usize::from(i) - 1].clone())
            })
            .collect();
        let refs: Vec<Option<&HashShare>> = stored.iter().map(Option::as_ref).collect();
        let context = matching::part_context(
            &matching::query_context(query_id, issued, scan),
            part,
            candidates,
        );
        let request = NodeRequest {
            node: i,
            context,
            query: share.clone(),
            candidates: ids,
            max_distance: TAU,
        };
        let (session, opened) = NodeSession::start(&zero, &request, &refs).unwrap();
        let key = SigningKey::from_bytes(&secrets.audit_key);
        let answered = matching::Answered {
            node: i,
            user,
            query_id,
            issued,
        };
        let wire = matching::sign_opened(&key, &answered, &context, TAU, &opened);
        (zero, key, session, wire)
    }

    /// Every round of Stage-2 after the first as `who` runs them, node 1 over the wire and
    /// nodes 2–5 played here, from node 1's first openings `first`: node 1's answer, or its
    /// first refusal.
    pub async fn rounds_as(
        &self,
        who: &Holder,
        query_id: [u8; 16],
        issued: u64,
        shares: &[HashShare],
        candidates: &[[u8; 16]],
        first: obscura_proto::WireOpened,
    ) -> (u16, ResponseBody) {
        let user = who.capability().user.clone();
        let mut played: Vec<_> = (2..=N as u8)
            .map(|i| {
                self.played_node(
                    i,
                    &user,
                    &query_id,
                    issued,
                    &shares[usize::from(i) - 1],
                    candidates,
                )
            })
            .collect();
        let context = part_context(&query_id, issued, candidates);
        let mut openings: Vec<obscura_proto::WireOpened> = std::iter::once(first)
            .chain(played.iter().map(|p| p.3.clone()))
            .collect();
        for round in 0u8.. {
            let req = TestNode::request(NodeBody::Reduce {
                query_id,
                issued,
                part: 0,
                round,
                openings: openings.clone(),
            });
            let from_node_1 = self.send_as(who, &req).await;
            let next = match from_node_1 {
                (200, ResponseBody::Opened { opened }) => opened,
                other => return other,
            };
            let verified = matching::verify_openings(
                &openings,
                &matching::Answered {
                    node: 2,
                    user: &user,
                    query_id: &query_id,
                    issued,
                },
                &context,
                TAU,
                &self.node_verifying_keys(),
            )
            .unwrap();
            openings = vec![next];
            for (i, (zero, key, session, _)) in played.iter_mut().enumerate() {
                let node = i as u8 + 2;
                let Step::Open(o) = session.step(zero, &verified).unwrap() else {
                    panic!("node {node} answered before node 1")
                };
                let answered = matching::Answered {
                    node,
                    user: &user,
                    query_id: &query_id,
                    issued,
                };
                openings.push(matching::sign_opened(key, &answered, &context, TAU, &o));
            }
        }
        unreachable!("rounds end")
    }

    /// Every node's answer key, node 1 first.
    pub fn node_verifying_keys(&self) -> Vec<ed25519_dalek::VerifyingKey> {
        (1..=N as u8)
            .map(|i| SigningKey::from_bytes(&self.secrets_of(i).audit_key).verifying_key())
            .collect()
    }

    /// Drop the node's server mid-life, without its clean stop (no final checkpoint, nothing
    /// flushed on the way out), and start it again from its store on the same address.
    pub async fn restart_abruptly(&mut self) {
        self.shutdown.take();
        let task = self.task.take().unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        self.serve_again().await;
    }

    /// Stop the node's server cleanly, its files kept: start it again with
    /// [`serve_again`](Self::serve_again).
    pub async fn halt(&mut self) {
        self.shutdown.take().unwrap().send(()).ok();
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// Start the node's server again from its store, on the same address.
    pub async fn serve_again(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let loaded = LoadedNode::load(&self.dir.join("node1/node.json")).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.task = Some(tokio::spawn(obscura_node::server::serve(
            loaded,
            listener,
            async {
                rx.await.ok();
            },
        )));
        self.shutdown = Some(tx);
    }

    /// Stop the node's server, write `count` made-up committed images straight into its store
    /// (random hash shares, manifests, shares and tokens: what a node holding that many images
    /// lists and counts), and start it again on the same address.
    pub async fn fill_store(&mut self, count: usize) {
        self.shutdown.take().unwrap().send(()).ok();
        self.task.take().unwrap().await.unwrap().unwrap();
        let config = self.dir.join("node1/node.json");
        let c: NodeConfig = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        let store =
            obscura_store::Store::open(&self.dir.join("node1").join(&c.files.store), 1).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(count as u64);
        let images: Vec<(ImageId, [u8; 256], [[u8; 16]; 8])> = (0..count)
            .map(|_| {
                let mut id = [0u8; 16];
                rng.fill_bytes(&mut id);
                let mut share = [0u8; 256];
                for v in share.chunks_exact_mut(4) {
                    v.copy_from_slice(&(rng.next_u32() & 0x3fff_ffff).to_le_bytes());
                }
                let mut tokens = [[0u8; 16]; 8];
                tokens.iter_mut().for_each(|t| rng.fill_bytes(t));
                (ImageId(id), share, tokens)
            })
            .collect();
        for batch in images.chunks(4096) {
            let new: Vec<obscura_store::NewImage<'_>> = batch
                .iter()
                .map(|(id, share, tokens)| obscura_store::NewImage {
                    id: *id,
                    manifest: b"made up",
                    image_share: b"made up",
                    hash_share: share,
                    tokens: tokens.map(obscura_tokens::Token),
                    key_version: 1,
                    elements: None,
                    retired_tokens: None,
                })
                .collect();
            store.prepare_many(&new, now()).unwrap();
            let ids: Vec<ImageId> = batch.iter().map(|i| i.0).collect();
            store.commit_many(&ids, now()).unwrap();
        }
        drop(store);
        self.serve_again().await;
    }

    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).ok();
        self.task.take().unwrap().await.unwrap().unwrap();
        std::fs::remove_dir_all(&self.scratch).ok();
    }
}

/// When the test owner made its manifests.
pub const CREATED_AT: u64 = 1_790_000_000;

/// What a data owner sends node 1 for one photo.
pub struct Upload {
    pub id: ImageId,
    pub manifest: Vec<u8>,
    pub share: ByteShare,
    pub hash_share: Vec<u8>,
    pub tokens: Vec<[u8; 16]>,
    pub hash: u64,
}

pub fn upload(owner: &OwnerKey, photo: &str, seed: u64) -> Upload {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let bytes = std::fs::read(format!(
        "{}/../../testdata/photos/{photo}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let hash = obscura_phash::phash64(&bytes).unwrap().0;
    let id = ImageId::random(&mut rng);
    let shares = split(&bytes, Params::new(3, N).unwrap(), &mut rng).unwrap();
    let hashes = share_hash(hash, T, N, &mut rng).unwrap();
    HASH_SHARES.lock().unwrap().push((id, hashes.clone()));
    let hash_bytes: Vec<_> = hashes.iter().map(|h| h.to_bytes()).collect();
    let manifest = Manifest::for_shares(
        id,
        obscura_sharing::manifest::Storage::Shamir,
        3,
        T as u8,
        &bytes,
        &shares,
        &hash_bytes,
        1,
        CREATED_AT,
    )
    .unwrap()
    .sign(owner)
    .unwrap()
    .to_bytes();
    let keys = NodeTokenKeys::derive(&TokenRoot::from_bytes([5; 32]), 1, 1);
    Upload {
        id,
        manifest,
        share: shares[0].clone(),
        hash_share: hashes[0].to_bytes().to_vec(),
        tokens: keys.index_tokens(hash).iter().map(|t| t.0).collect(),
        hash,
    }
}

pub fn prepare(u: &Upload) -> NodeBody {
    prepare_batch(&[u])
}

pub fn prepare_batch(batch: &[&Upload]) -> NodeBody {
    NodeBody::Prepare {
        key_version: 1,
        images: batch
            .iter()
            .map(|u| PreparedImage {
                image: u.id.0,
                manifest: u.manifest.clone(),
                image_share: u.share.bytes.clone(),
                hash_share: u.hash_share.clone(),
                tokens: u.tokens.clone(),
                elements: Vec::new(),
            })
            .collect(),
    }
}

pub fn commit(ids: &[ImageId]) -> NodeBody {
    NodeBody::Commit {
        images: ids.iter().map(|id| id.0).collect(),
    }
}

/// A Stage-1 lookup of `tokens`, padded with random dummies to the policy's shape (8 bands of
/// 12), for query `query`.
pub fn lookup(tokens: &[[u8; 16]], query: [u8; 16]) -> NodeBody {
    let mut padded = tokens.to_vec();
    while padded.len() < 96 {
        let mut t = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut t);
        padded.push(t);
    }
    NodeBody::Lookup {
        key_version: 1,
        query,
        issued: now(),
        tokens: padded,
    }
}

/// The audit log from its start, as the node sends it.
pub async fn audit(node: &TestNode) -> Vec<obscura_proto::WireAuditEntry> {
    match node
        .send(&TestNode::request(NodeBody::Audit { from: 0, max: 4096 }))
        .await
    {
        (200, ResponseBody::Audit { entries, total }) => {
            assert_eq!(entries.len() as u64, total);
            entries
        }
        other => panic!("{other:?}"),
    }
}

pub fn code(body: &ResponseBody) -> Option<ErrorCode> {
    match body {
        ResponseBody::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// A fetch of `image` in the owner's role.
pub fn fetch(image: ImageId) -> NodeBody {
    NodeBody::Fetch {
        by: obscura_proto::FetchBy::Owner { image: image.0 },
    }
}

/// The masks' context of a query's only part: `candidates`, the whole list.
pub fn part_context(query_id: &[u8; 16], issued: u64, candidates: &[[u8; 16]]) -> [u8; 32] {
    let context = matching::query_context(query_id, issued, &matching::scan_of(candidates));
    matching::part_context(&context, 0, candidates)
}
