//! The client SDK: index images, search privately and rebuild images across the nodes of a
//! cluster. Every node is asked concurrently and every call has a timeout, so a dead node costs
//! one timeout, never a hang.
//!
//! - [`Client::index`] hashes and shares an image, signs its manifest, prepares it at every node
//!   and commits only when all prepared; a failure part-way deletes what was written, and Stage-2
//!   never ranks an image that not every answering node holds committed.
//! - [`Client::search`] runs Stage-1 with a fixed-shape token batch at every node, then Stage-2 on
//!   shares; it needs `2t + 1` nodes and names the missing ones otherwise. Nodes answer Stage-1
//!   with handles of this query, not image ids, and sign their Stage-2 values; the client turns
//!   each match into a proof that opens that one candidate's distance, and learns the matches'
//!   ids by showing the proofs ([`obscura_auth::matching`]).
//! - [`Client::get`] fetches shares from every node it can reach, checks each against the
//!   owner-signed manifest, and rebuilds from `k` good ones, naming the culprits. A node hands a
//!   share to the owner, to a querier with a proof of its own match, or with the owner's grant.
//!
//! Every request to a node carries the user's capability, which `T` keepers sign together after
//! a login, and is signed with the key it names, for that node ([`obscura_auth::capability`]).
//!
//! A data owner indexes a photo, searches with a variant of it and rebuilds the best match, in a
//! cluster directory `obscura cluster init` made (compiled here; it needs the cluster running,
//! as `obscura cluster up` runs it):
//!
//! ```no_run
//! use obscura_client::{config, Client};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::path::Path::new("cluster");
//! let client = Client::new(config::load(dir)?)?;
//! // The session (keys shared with each keeper) outlives this process in a file only the
//! // user can read; the login brings a capability the nodes check on every request.
//! client.attach_session(&dir.join("session.json"))?;
//! client.login("ana", b"ana's password").await?;
//!
//! let id = client.index(&std::fs::read("photo.jpg")?).await?;
//! let found = client.search(&std::fs::read("photo-cropped.jpg")?, 5, 10).await?;
//! for m in &found.matches {
//!     println!("{} at distance {}", m.id, m.distance);
//! }
//! // Shares from any k nodes, each checked against the owner-signed manifest.
//! let rebuilt = client.get(id).await?;
//! assert_eq!(rebuilt.image, std::fs::read("photo.jpg")?);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attested;
pub mod audit;
pub mod config;
mod fault;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
mod journal;
pub mod ledger;
pub mod names;
pub mod ops;
pub mod pipeline;
pub mod provision;
pub mod recover;
pub mod release;
pub mod room;
pub mod rotation;
pub mod secrets;
pub mod session;
pub mod tokens;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;
use std::sync::Arc;

pub use attested::AttestationParts;
use ed25519_dalek::{SigningKey, VerifyingKey};
pub use fault::{Fault, KeeperFailure, NodeFailure};
pub use journal::EntryText;
pub use obscura_attest::{Appraisal, Refusal};
use obscura_auth::capability::{CapabilityKey, Holder};
use obscura_cluster::tls::Endpoint;
pub use obscura_cluster::tls::Party;
use obscura_mpc::{share_hash, Match};
use obscura_proto::{
    limits, roles, Body, ErrorCode, FetchBy, KeeperBody, MatchProof, NodeBody, Request, Response,
    ResponseBody, WireAuditEntry,
};
use obscura_sharing::bytes::Params;
pub use obscura_sharing::manifest::Storage;
use obscura_sharing::manifest::{ImageId, Manifest};
use obscura_sharing::order::Order;
use obscura_sharing::rng::AesCtrRng;
use obscura_tokens::BatchPlan;
use ops::{get, index, search};
use rand_core::{OsRng, RngCore};
pub use secrets::{Opened, PasswordChange, Signed};
pub use session::LoginReport;
pub use tokens::{IndexTokens, KeeperParts, TokenError, TokenParts};

/// Errors of client operations. Each names the nodes involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file is not an image we can hash.
    #[error(transparent)]
    Image(#[from] obscura_phash::Error),
    /// The session file or a session step failed.
    #[error("session: {0}")]
    Session(String),
    /// A user secret could not be stored, rebuilt or used.
    #[error("secret: {0}")]
    Secret(String),
    /// A clean-room run could not be made or its result does not check.
    #[error("clean room: {0}")]
    Room(String),
    /// Sharing or manifest failure.
    #[error(transparent)]
    Sharing(#[from] obscura_sharing::Error),
    /// Stage-2 failure (too few nodes answered, inconsistent answers).
    #[error(transparent)]
    Mpc(#[from] obscura_mpc::Error),
    /// The client has no owner key, so it cannot index, delete or rotate token keys.
    #[error(
        "this client holds no data-owner key, so it cannot index, delete or grant images, nor \
         rotate token keys"
    )]
    NotOwner,
    /// The user is not entitled to an image: no match of its own, no grant, not the owner.
    #[error(
        "image {0} is not yours to fetch: search for it first (a match within the cluster's \
         distance limit entitles you), or ask the owner for a grant"
    )]
    NotEntitled(ImageId),
    /// Some nodes failed where all were needed.
    #[error("{what} failed: {}", fault::list_nodes(failures))]
    Nodes {
        /// The operation.
        what: &'static str,
        /// Node and reason.
        failures: Vec<NodeFailure>,
    },
    /// Fewer than `k` verified shares could be gathered.
    #[error(
        "need {need} shares of image {image}, got {got}: {}",
        fault::list_nodes(failures)
    )]
    NotEnoughShares {
        /// The image.
        image: ImageId,
        /// Shares needed.
        need: usize,
        /// Verified shares gathered.
        got: usize,
        /// Every node that did not contribute a good share, and why.
        failures: Vec<NodeFailure>,
    },
    /// The indexing journal cannot be written or read. An image this concerns was not reported
    /// as indexed; whatever of it reached the nodes is removed by a later
    /// [`Client::finish_interrupted`].
    #[error("the indexing journal: {0}")]
    Journal(std::io::Error),
    /// No node holds the image.
    #[error("image {0} is not stored in this cluster")]
    UnknownImage(ImageId),
    /// Band tokens could not be had from enough keepers.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// Keepers failed where all were needed (a key rotation).
    #[error("{what} failed: {}", fault::list_keepers(failures))]
    Keepers {
        /// The operation.
        what: &'static str,
        /// Keeper and reason.
        failures: Vec<KeeperFailure>,
    },
    /// A key rotation cannot be done as asked.
    #[error("key rotation: {0}")]
    Rotation(String),
    /// A rotation plan does not fit, or does not open.
    #[error("key rotation: {0}")]
    Plan(#[from] rotation::PlanError),
    /// The cluster directory's client configuration cannot be read or written.
    #[error(transparent)]
    Config(#[from] config::LoadError),
    /// No `need` of the keepers' shares rebuild a user secret that passes its check.
    #[error(
        "secret {} could not be rebuilt: {answered} keepers answered, {failed_sets} sets of \
         {need} failed the check; {}",
        obscura_tokens::keyfile::to_hex(id),
        fault::list_keepers(failures)
    )]
    NotRebuilt {
        /// The secret.
        id: [u8; 16],
        /// Shares needed.
        need: usize,
        /// Keepers that answered with a share.
        answered: usize,
        /// Sets of `need` shares that failed the check.
        failed_sets: usize,
        /// Keepers that failed, or whose share was shown wrong.
        failures: Vec<KeeperFailure>,
    },
    /// A fault of this client itself: a task of its own that ended without a result.
    #[error("this client failed: {0}")]
    Internal(&'static str),
    /// The cluster has no attestation policy, so no keeper can be appraised to receive shares.
    #[error(
        "this cluster has no attestation policy: keepers that do not attest take their \
         token-key shares with their sealed secrets"
    )]
    NoAttestation,
}

impl Error {
    /// The servers this error proves misbehaved: a node whose share or manifest failed the
    /// owner's check, or whose Stage-2 answer is malformed; a keeper whose VOPRF proof, secret
    /// share or signature share does not verify, or that answered in another's name. Servers
    /// that were only down, slow or refusing are not named, nor is any server when a check
    /// fails without showing whose answer broke it (Stage-2 answers that lie on no polynomial,
    /// say).
    pub fn culprits(&self) -> Vec<Party> {
        match self {
            Error::Nodes { failures, .. } | Error::NotEnoughShares { failures, .. } => {
                fault::culprit_nodes(failures)
            }
            Error::Keepers { failures, .. } | Error::NotRebuilt { failures, .. } => {
                fault::culprit_keepers(failures)
            }
            Error::Tokens(e) => e.culprits(),
            Error::Mpc(obscura_mpc::Error::MalformedAnswer { node, .. }) => {
                vec![Party::Node(*node)]
            }
            _ => Vec::new(),
        }
    }
}

/// Why a batch failed, for each of its images.
enum BatchError {
    Nodes(&'static str, Vec<NodeFailure>),
    Journal(std::io::Error),
    Tokens(TokenError),
}

impl BatchError {
    fn for_one_image(&self) -> Error {
        match self {
            BatchError::Nodes(what, failures) => Error::Nodes {
                what,
                failures: failures.clone(),
            },
            BatchError::Journal(e) => Error::Journal(std::io::Error::new(e.kind(), e.to_string())),
            BatchError::Tokens(e) => Error::Tokens(e.clone()),
        }
    }
}

/// What a node reports of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Committed images.
    pub committed: u64,
    /// Prepared images not yet committed.
    pub pending: u64,
    /// The token-key version served, then the one being moved to during a rotation.
    pub key_versions: Vec<u32>,
}

/// What a keeper reports of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeeperStatus {
    /// Entries in its audit log.
    pub audit_entries: u64,
    /// The token-key versions it holds shares of, oldest first.
    pub key_versions: Vec<u32>,
}

/// One answer of a call to every node: the node, its answer or fault, bytes sent and received.
type Answered = (u8, Result<ResponseBody, Fault>, u64, u64);

/// What a client needs to reach and use a cluster.
pub struct ClientParts {
    /// Shares needed to rebuild.
    pub k: usize,
    /// How images this client indexes are shared (images it fetches say so in their manifests).
    pub storage: Storage,
    /// Degree of the hash sharing.
    pub t: usize,
    /// Base URL of node `i + 1`, e.g. `https://127.0.0.1:7401`.
    pub nodes: Vec<String>,
    /// TLS: the cluster CA as root, this client's certificate.
    pub tls: rustls::ClientConfig,
    /// Where band tokens come from.
    pub tokens: TokenParts,
    /// The token key version.
    pub key_version: u32,
    /// The data owner's signing key, if this client may index.
    pub owner: Option<SigningKey>,
    /// The owner's public key, to verify manifests.
    pub owner_public: VerifyingKey,
    /// Stage-1 batch shape.
    pub plan: BatchPlan,
    /// Limit for each call to a node.
    pub timeout: Duration,
    /// The keepers' capability key.
    pub capability_key: CapabilityKey,
    /// Keeper URLs, keeper 1 first.
    pub keepers: Vec<String>,
    /// Keepers needed to log in and sign.
    pub keeper_threshold: usize,
    /// Folder of the indexing journal (see [`Client::finish_interrupted`]); `None` keeps no
    /// journal, and an index interrupted by a crash may then leave an image at some nodes.
    pub journal: Option<std::path::PathBuf>,
    /// The attestation policy every server is appraised under before it is sent anything;
    /// `None` (a cluster made before attestation) appraises nothing.
    pub attestation: Option<AttestationParts>,
}

/// A connected client.
pub struct Client {
    k: usize,
    storage: Storage,
    t: usize,
    /// Base URL of node `i + 1`, by its TLS name.
    nodes: Vec<String>,
    http: Http,
    keepers: session::KeeperLink,
    keeper_threshold: usize,
    tokens: tokens::Source,
    key_version: u32,
    owner: Option<SigningKey>,
    owner_public: VerifyingKey,
    capability_key: CapabilityKey,
    plan: BatchPlan,
    journal: Option<journal::Journal>,
    /// Whether the caller reports indexed images itself and says so ([`Client::acknowledge`]).
    acknowledging: bool,
    /// Keepers that failed while indexing, where others answered instead (see
    /// [`Client::take_keeper_faults`]).
    noticed: std::sync::Mutex<Vec<KeeperFailure>>,
    /// Images committed, with their manifests' digests, for the ledger (see
    /// [`Client::take_registered`]).
    registered: std::sync::Mutex<Vec<(ImageId, [u8; 32])>>,
}

/// One image ready for the nodes (see [`Client::upload`]).
pub struct Upload {
    /// Its fresh id.
    pub id: ImageId,
    /// The owner-signed manifest, the same for every node.
    pub manifest: Vec<u8>,
    /// Node `i + 1`'s part.
    pub parts: Vec<UploadPart>,
    /// The pHash, from which the band tokens are made when the upload is sent.
    pub hash: u64,
}

impl Upload {
    /// The largest of its shares, in bytes: what it counts against [`limits::MAX_IMAGE_SHARE`]
    /// in a batch.
    pub fn share_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.image_share.len())
            .max()
            .unwrap_or(0)
    }
}

/// What one node stores of an image.
pub struct UploadPart {
    /// The node's share of the file.
    pub image_share: Vec<u8>,
    /// The node's shares of the 64 hash bits.
    pub hash_share: [u8; obscura_mpc::HASH_SHARE_LEN],
}

/// Where a search's Stage-2 candidates come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scan {
    /// Stage-1: images that match the query's band tokens in enough bands. Fast; each node
    /// sees which of its postings the query's tokens hit.
    #[default]
    Stage1,
    /// Every stored image: no tokens and no lookup, so no node sees which postings the
    /// query's bands hit; Stage-2 scans them all (up to each node's `max_exhaustive`). The
    /// matches are resolved as in any search, so each node sees those.
    Exhaustive,
}

/// Bytes a protocol step's calls moved.
#[derive(Clone, Copy, Debug, Default)]
struct Moved {
    sent: u64,
    received: u64,
}

/// The least time a stalled node is given once enough others have answered (see
/// [`Client`]'s calls that need only some nodes: get, and each step of a search).
pub const GRACE: Duration = Duration::from_millis(250);

/// What [`Client::finish_interrupted`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interrupted {
    /// Images of interrupted indexing now removed from every node.
    pub removed: Vec<ImageId>,
    /// Images an interrupted index committed at every node but never reported: they stay,
    /// and are for the caller to report now.
    pub recovered: Vec<ImageId>,
    /// Those that some node could not confirm removing yet; tried again next time.
    pub remaining: Vec<(ImageId, Vec<NodeFailure>)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.nodes)
            .field("k", &self.k)
            .field("t", &self.t)
            .finish()
    }
}

/// Result of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchOutcome {
    /// Ranked matches.
    pub matches: Vec<Match>,
    /// Matches whose ids fewer than `t + 1` nodes confirmed (left out of `matches`).
    pub unresolved: usize,
    /// Candidates Stage-1 passed to Stage-2.
    pub candidates: usize,
    /// Images matching the query in at least one band, before the band count (the largest
    /// figure any node reported).
    pub stage1_hits: usize,
    /// Stage-1 wall time.
    pub stage1: Duration,
    /// Stage-2 wall time.
    pub stage2: Duration,
    /// Wall time of resolving the matches' ids with their proofs.
    pub resolve: Duration,
    /// Wall time of the whole search, hashing the query included.
    pub total: Duration,
    /// Time spent obtaining the band tokens (part of Stage-1).
    pub tokens: Duration,
    /// Keepers that failed or answered wrongly on the way (others answered instead).
    pub keeper_faults: Vec<KeeperFailure>,
    /// Nodes that failed or answered wrongly on the way, while enough others answered (a node
    /// down, slow, or out of step with the others in Stage-2).
    pub node_faults: Vec<NodeFailure>,
    /// Request bytes sent to all nodes.
    pub bytes_sent: u64,
    /// Response bytes received.
    pub bytes_received: u64,
}

/// A node's audit log as [`Client::audit_logs`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLog {
    /// The entry at which the node said it signed a checkpoint when asked.
    pub checkpoint: u64,
    /// Every entry, oldest first.
    pub entries: Vec<WireAuditEntry>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Client {
    /// Build a client.
    ///
    /// # Errors
    /// [`Error::Nodes`] if the HTTP client cannot be built, [`Error::Tokens`] if the keepers'
    /// public key shares do not fit the cluster or do not lie on one polynomial.
    pub fn new(parts: ClientParts) -> Result<Client, Error> {
        let setup = |reason: String| Error::Nodes {
            what: "client set-up",
            failures: vec![NodeFailure {
                node: 0,
                fault: Fault::NotSent(reason),
            }],
        };
        // Each server is reached at its configured address but under its party's TLS name, so
        // a certificate of another party cannot answer for it.
        let endpoints = |party: fn(u8) -> Party, urls: &[String]| {
            urls.iter()
                .enumerate()
                .map(|(i, u)| {
                    Endpoint::new(party(i as u8 + 1), u).map_err(|e| setup(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let nodes = endpoints(Party::Node, &parts.nodes)?;
        let keepers = endpoints(Party::Keeper, &parts.keepers)?;
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(parts.tls)
            .timeout(parts.timeout)
            .connect_timeout(parts.timeout.min(Duration::from_secs(3)))
            // Servers close connections idle for their header timeout: let go of them first.
            .pool_idle_timeout(Duration::from_secs(5));
        for e in nodes.iter().chain(&keepers) {
            builder = builder.resolve(&e.party.name(), e.addr);
        }
        let keeper_urls: Vec<String> = keepers.iter().map(|e| e.base.clone()).collect();
        let node_urls: Vec<String> = nodes.iter().map(|e| e.base.clone()).collect();
        let http = Http {
            client: builder.build().map_err(|e| setup(e.to_string()))?,
            gate: parts
                .attestation
                .map(|a| Arc::new(attested::Gate::new(a, &node_urls, &keeper_urls))),
        };
        let token_parts = match parts.tokens {
            TokenParts::Voprf(mut k) => {
                k.urls = keeper_urls.clone();
                TokenParts::Voprf(k)
            }
            hmac @ TokenParts::Hmac(_) => hmac,
        };
        let tokens = tokens::Source::new(token_parts, nodes.len(), parts.key_version)?;
        Ok(Client {
            k: parts.k,
            storage: parts.storage,
            t: parts.t,
            nodes: node_urls,
            keepers: session::KeeperLink {
                http: http.clone(),
                urls: keeper_urls,
                sessions: std::sync::Arc::default(),
            },
            keeper_threshold: parts.keeper_threshold,
            http,
            tokens,
            key_version: parts.key_version,
            owner: parts.owner,
            owner_public: parts.owner_public,
            capability_key: parts.capability_key,
            plan: parts.plan,
            journal: parts
                .journal
                .map(|dir| journal::Journal::new(dir, parts.timeout)),
            acknowledging: false,
            noticed: std::sync::Mutex::default(),
            registered: std::sync::Mutex::default(),
        })
    }

    /// From now on, an indexed image stays in the journal until [`acknowledge`](Self::acknowledge)
    /// says it reached its user: a client killed between the commit and its report leaves it
    /// for [`finish_interrupted`](Self::finish_interrupted) to report (as
    /// [`Interrupted::recovered`]) instead of an image every node holds and nobody was told of.
    /// For a caller that reports images itself, as `obscura index` prints them.
    pub fn acknowledge_reports(&mut self) {
        self.acknowledging = true;
    }

    /// Image `id`, indexed, reached its user (see
    /// [`acknowledge_reports`](Self::acknowledge_reports)).
    ///
    /// # Errors
    /// [`Error::Journal`] when the journal cannot be updated.
    pub fn acknowledge(&self, id: ImageId) -> Result<(), Error> {
        match &self.journal {
            Some(j) => j.acknowledge(&id).map_err(Error::Journal),
            None => Ok(()),
        }
    }

    /// Nodes in the cluster.
    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    /// Call every node concurrently with the body `make(x)`.
    async fn call_all(&self, make: impl Fn(u8) -> NodeBody) -> Vec<Answered> {
        self.call_some(self.to_every_node(make)).await
    }

    /// Node `x`'s call with the body `make(x)`, for every node.
    fn to_every_node(&self, make: impl Fn(u8) -> NodeBody) -> Vec<(u8, NodeBody)> {
        (1..=self.n() as u8).map(|x| (x, make(x))).collect()
    }

    /// Call every node concurrently, node `i + 1` with `bodies[i]`, each request signed with
    /// the user's capability for that node.
    async fn call_each(&self, bodies: Vec<NodeBody>) -> Vec<Answered> {
        self.call_some((1..=self.n() as u8).zip(bodies).collect())
            .await
    }

    /// Call the nodes of `calls` concurrently, each with its body, signed with the user's
    /// capability for that node; every call runs to its answer or its time limit, and answers
    /// come back by node.
    async fn call_some(&self, calls: Vec<(u8, NodeBody)>) -> Vec<Answered> {
        self.call_quorum(calls, usize::MAX).await
    }

    /// Call the nodes of `calls` concurrently, like [`call_some`](Self::call_some), but do not
    /// wait for a stalled node once `quorum` nodes have answered without a fault: the others get
    /// a grace as long again as the quorum took (at least [`GRACE`]), and a node still silent
    /// then is left behind as [`Fault::Slow`]. With fewer answers than `quorum`, every call
    /// runs to its own time limit.
    async fn call_quorum(&self, calls: Vec<(u8, NodeBody)>, quorum: usize) -> Vec<Answered> {
        let holder = match self.holder().await {
            Ok(h) => h,
            Err(e) => {
                return calls
                    .into_iter()
                    .map(|(x, _)| (x, Err(Fault::NotSent(e.to_string())), 0, 0))
                    .collect()
            }
        };
        let started = Instant::now();
        let mut pending: std::collections::BTreeSet<u8> = calls.iter().map(|c| c.0).collect();
        let mut set = tokio::task::JoinSet::new();
        let mut tasks = HashMap::new();
        for (x, body) in calls {
            let this = self.clone_for_task(holder.clone());
            let task = set.spawn(async move {
                let (r, s, rcv) = this.call(x, body).await;
                (x, r, s, rcv)
            });
            tasks.insert(task.id(), x);
        }
        let mut out = Vec::with_capacity(pending.len());
        let (mut answered, mut deadline) = (0, None);
        loop {
            let next = match deadline {
                None => set.join_next().await,
                Some(d) => match tokio::time::timeout_at(d, set.join_next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            let Some(joined) = next else { break };
            match joined {
                Ok(v) => {
                    pending.remove(&v.0);
                    answered += usize::from(v.1.is_ok());
                    out.push(v);
                }
                Err(e) => {
                    if let Some(&x) = tasks.get(&e.id()) {
                        pending.remove(&x);
                        out.push((x, Err(Fault::Panicked), 0, 0));
                    }
                }
            }
            if deadline.is_none() && answered >= quorum && !pending.is_empty() {
                deadline = Some(tokio::time::Instant::now() + started.elapsed().max(GRACE));
            }
        }
        set.abort_all();
        let waited = started.elapsed();
        out.extend(
            pending
                .into_iter()
                .map(|x| (x, Err(Fault::Slow(waited)), 0, 0)),
        );
        out.sort_by_key(|r| r.0);
        out
    }

    /// A cheap copy for spawned tasks (the HTTP client is reference-counted).
    fn clone_for_task(&self, holder: Arc<Holder>) -> TaskClient {
        TaskClient {
            http: self.http.clone(),
            nodes: self.nodes.clone(),
            holder,
        }
    }

    /// The user's capability, from the session file or, when it is missing or about to
    /// expire, freshly signed by the keepers.
    ///
    /// # Errors
    /// [`Error::Session`] when not logged in, [`Error::Keepers`] when fewer than `T` keepers
    /// sign.
    pub async fn holder(&self) -> Result<Arc<Holder>, Error> {
        if let Some(h) = self.keepers.sessions.capability() {
            if h.capability().expires_at > unix_now() + 60 {
                return Ok(h);
            }
        }
        self.refresh_capability().await
    }

    /// Index one image file: returns its id once every node committed it.
    ///
    /// # Errors
    /// [`Error::Image`] for a file that is not an image, [`Error::NotOwner`], [`Error::Nodes`]
    /// naming each node that failed (what was written is deleted again).
    pub async fn index(&self, file: &[u8]) -> Result<ImageId, Error> {
        self.index_many(&[file])
            .await
            .pop()
            .expect("one result per file")
    }

    /// Index several image files as batches: each node stores a batch in one transaction (one
    /// disk sync to prepare it, one to commit it), so indexing many small files is not bound by
    /// the disks. A batch is committed at every node or at none; batches are as large as the
    /// protocol's limits allow, so callers choose their size by how many files they pass.
    ///
    /// Returns one result per file, in order. A file that is not an image fails alone; a
    /// batch the nodes fail fails whole, and what was written of it is deleted again.
    ///
    /// # Errors
    /// Per file, as [`index`](Self::index).
    pub async fn index_many(&self, files: &[&[u8]]) -> Vec<Result<ImageId, Error>> {
        let mut failed: Vec<Option<Error>> = Vec::with_capacity(files.len());
        let mut uploads = Vec::new();
        for file in files {
            match self.upload_file(file) {
                Ok(u) => {
                    uploads.push(u);
                    failed.push(None);
                }
                Err(e) => failed.push(Some(e)),
            }
        }
        let mut indexed = self.index_uploads(uploads).await.into_iter();
        failed
            .into_iter()
            .map(|f| match f {
                Some(e) => Err(e),
                None => indexed.next().expect("one result per upload"),
            })
            .collect()
    }

    /// Send uploads (see [`upload`](Self::upload)) to the nodes in batches within the
    /// protocol's limits ([`limits::MAX_BATCH`] images, [`limits::MAX_IMAGE_SHARE`] bytes of
    /// shares, see [`Upload::share_bytes`]): each batch is prepared at every node, then
    /// committed, all or none. Returns one result per upload, in order.
    ///
    /// # Errors
    /// Per upload: [`Error::Nodes`] naming each node that failed its batch (what was written
    /// is deleted again), [`Error::Journal`].
    pub async fn index_uploads(&self, uploads: Vec<Upload>) -> Vec<Result<ImageId, Error>> {
        let mut out = Vec::with_capacity(uploads.len());
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        for upload in uploads {
            let bytes = upload.share_bytes();
            let full =
                batch.len() == limits::MAX_BATCH || batch_bytes + bytes > limits::MAX_IMAGE_SHARE;
            if full && !batch.is_empty() {
                self.index_batch(std::mem::take(&mut batch), &mut out).await;
                batch_bytes = 0;
            }
            batch_bytes += bytes;
            batch.push(upload);
        }
        if !batch.is_empty() {
            self.index_batch(batch, &mut out).await;
        }
        out
    }

    /// Prepare `batch` at every node, then commit it; appends each image's result to `out`.
    async fn index_batch(&self, batch: Vec<Upload>, out: &mut Vec<Result<ImageId, Error>>) {
        let ids: Vec<ImageId> = batch.iter().map(|u| u.id).collect();
        match self.send_batch(batch, &ids).await {
            Ok(()) => out.extend(ids.into_iter().map(Ok)),
            Err(e) => out.extend(ids.iter().map(|_| Err(e.for_one_image()))),
        }
    }

    async fn send_batch(&self, uploads: Vec<Upload>, ids: &[ImageId]) -> Result<(), BatchError> {
        let hashes: Vec<u64> = uploads.iter().map(|u| u.hash).collect();
        let manifests: Vec<[u8; 32]> = uploads
            .iter()
            .map(|u| <sha2::Sha256 as sha2::Digest>::digest(&u.manifest).into())
            .collect();
        let tokens = self
            .index_tokens(&hashes)
            .await
            .map_err(BatchError::Tokens)?;
        if let Some(j) = &self.journal {
            j.begin(ids).map_err(BatchError::Journal)?;
        }
        let mut moved = Moved::default();
        let (preparing, calls) =
            index::Preparing::start(uploads, tokens, self.key_version, self.n());
        let done = match preparing.answered(self.run(calls, &mut moved).await) {
            Ok((committing, calls)) => committing.answered(self.run(calls, &mut moved).await),
            Err(undo) => Err(undo),
        };
        if let Err(undo) = done {
            self.forget(&undo.ids).await.map_err(BatchError::Journal)?;
            return Err(BatchError::Nodes(undo.what, undo.failures));
        }
        if let Some(j) = &self.journal {
            if self.acknowledging {
                j.committed(&ids[0], ids).map_err(BatchError::Journal)?;
            } else {
                j.end(&ids[0]).map_err(BatchError::Journal)?;
            }
        }
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(ids.iter().copied().zip(manifests));
        Ok(())
    }

    /// The images committed since the last call, each with the SHA-256 of its signed
    /// manifest: what the owner enters in the cluster ledger.
    pub fn take_registered(&self) -> Vec<(ImageId, [u8; 32])> {
        std::mem::take(&mut self.registered.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The band tokens of images with these pHashes at every node: `out[i][x - 1]` for image
    /// `i` at node `x`. With keepers, one request to `T` of them covers every image and node.
    ///
    /// # Errors
    /// [`TokenError`] when fewer than `T` keepers answer correctly.
    pub async fn index_tokens(&self, hashes: &[u64]) -> Result<Vec<Vec<IndexTokens>>, TokenError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let got = self
            .tokens
            .index(&self.keepers, self.key_version, self.n(), hashes)
            .await?;
        if !got.faults.is_empty() {
            self.noticed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(got.faults);
        }
        Ok(got.value)
    }

    /// Keepers that failed or answered wrongly while this client indexed, where others answered
    /// instead (a search reports its own in [`SearchOutcome::keeper_faults`]); each is returned
    /// once.
    pub fn take_keeper_faults(&self) -> Vec<KeeperFailure> {
        std::mem::take(&mut *self.noticed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether band tokens come from keepers (VOPRF) rather than HMAC keys held here.
    pub fn uses_keepers(&self) -> bool {
        self.tokens.is_voprf()
    }

    /// [`upload`](Self::upload) of a file, hashed here.
    ///
    /// # Errors
    /// [`Error::Image`] for a file that is not an image, else as [`upload`](Self::upload).
    pub fn upload_file(&self, file: &[u8]) -> Result<Upload, Error> {
        let hash = obscura_phash::phash64(file)?;
        self.upload(file, hash.0)
    }

    /// Everything the nodes store of one image whose pHash is `hash`: a fresh id, the
    /// owner-signed manifest, and each node's file share, hash share and band tokens. No I/O:
    /// this is all the cryptography of indexing.
    ///
    /// # Errors
    /// [`Error::NotOwner`], or a sharing error for an empty file.
    pub fn upload(&self, file: &[u8], hash: u64) -> Result<Upload, Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        let mut rng = AesCtrRng::from_os();
        let n = self.n();
        let id = ImageId::random(&mut rng);
        let params = Params::new(self.k, n)?;
        let shares = match self.storage {
            // Compact storage's key is all that hides the file: 256 bits straight from the OS,
            // not from the 128-bit-keyed generator that draws Shamir's bulk coefficients.
            Storage::Compact => self.storage.split(file, params, &mut OsRng)?,
            _ => self.storage.split(file, params, &mut rng)?,
        };
        let hash_shares = share_hash(hash, self.t, n, &mut rng)?;
        let hash_bytes: Vec<_> = hash_shares.iter().map(|h| h.to_bytes()).collect();
        let manifest = Manifest::for_shares(
            id,
            self.storage,
            self.k as u8,
            self.t as u8,
            file,
            &shares,
            &hash_bytes,
            self.key_version,
            unix_now(),
        )?
        .sign(owner)?
        .to_bytes();
        let parts = shares
            .into_iter()
            .zip(hash_bytes)
            .map(|(share, hash_share)| UploadPart {
                image_share: share.bytes,
                hash_share,
            })
            .collect();
        Ok(Upload {
            id,
            manifest,
            parts,
            hash,
        })
    }

    /// Remove the images of a batch that could not be indexed from every node. The journal
    /// entry stays while any node has not confirmed, for
    /// [`finish_interrupted`](Self::finish_interrupted). Returns the images some node still
    /// holds, with why.
    async fn forget(
        &self,
        batch: &[ImageId],
    ) -> Result<Vec<(ImageId, Vec<NodeFailure>)>, std::io::Error> {
        let mut open = Vec::new();
        for id in batch {
            let results = match self.delete_request(*id) {
                Ok(request) => self.call_all(|_| request.clone()).await,
                Err(e) => {
                    let failures = (1..=self.n() as u8)
                        .map(|node| NodeFailure {
                            node,
                            fault: Fault::NotSent(e.to_string()),
                        })
                        .collect();
                    open.push((*id, failures));
                    continue;
                }
            };
            let failures = unsettled(&results);
            if !failures.is_empty() {
                open.push((*id, failures));
            }
        }
        if let Some(j) = &self.journal {
            if open.is_empty() {
                j.end(&batch[0])?;
            } else {
                j.release(&batch[0]);
            }
        }
        Ok(open)
    }

    /// Finish indexing that was interrupted (a killed client, or a node down during the
    /// clean-up of a failed index): every image in the journal whose writer is gone and that
    /// some node may not have committed is deleted from every node (none of them was ever
    /// reported as indexed); images every node committed but whose report was never
    /// acknowledged are kept and returned, for the caller to report now.
    ///
    /// # Errors
    /// [`Error::Journal`] when the journal cannot be read or updated.
    pub async fn finish_interrupted(&self) -> Result<Interrupted, Error> {
        let Some(j) = &self.journal else {
            return Ok(Interrupted::default());
        };
        let mut out = Interrupted::default();
        for abandoned in j.abandoned().map_err(Error::Journal)? {
            let batch = abandoned.ids;
            if abandoned.committed {
                out.recovered.extend(&batch);
                j.end(&abandoned.entry).map_err(Error::Journal)?;
                continue;
            }
            let open = self.forget(&batch).await.map_err(Error::Journal)?;
            out.removed
                .extend(batch.iter().filter(|id| open.iter().all(|(o, _)| o != *id)));
            out.remaining.extend(open);
        }
        Ok(out)
    }

    /// Delete an image from every node.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] if no node had it, [`Error::Nodes`] if some nodes could not be
    /// reached or failed.
    pub async fn delete(&self, id: ImageId) -> Result<(), Error> {
        let request = self.delete_request(id)?;
        let results = self.call_all(|_| request.clone()).await;
        let unknown = results
            .iter()
            .filter(|r| matches!(&r.1, Err(e) if e.is_unknown_image()))
            .count();
        if unknown == results.len() {
            return Err(Error::UnknownImage(id));
        }
        let failures = unsettled(&results);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Nodes {
                what: "delete",
                failures,
            })
        }
    }

    /// The owner's signed order to delete `id`, the same for every node.
    fn delete_request(&self, id: ImageId) -> Result<NodeBody, Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        let issued_at = unix_now();
        let order = Order::Delete {
            image: id,
            issued_at,
        };
        Ok(NodeBody::Delete {
            image: id.0,
            issued_at,
            signature: order.sign(owner).to_vec(),
        })
    }

    /// The token-key version this client makes its tokens under.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// Each node's status, or why it failed.
    pub async fn status(&self) -> Vec<(u8, Result<NodeStatus, Fault>)> {
        self.call_all(|_| NodeBody::Status)
            .await
            .into_iter()
            .map(|(x, r, _, _)| {
                let r = r.and_then(|b| match b {
                    ResponseBody::Status {
                        committed,
                        pending,
                        key_versions,
                        ..
                    } => Ok(NodeStatus {
                        committed,
                        pending,
                        key_versions,
                    }),
                    _ => Err(Fault::Unexpected("a status")),
                });
                (x, r)
            })
            .collect()
    }

    /// Whether each node answers at all, without a capability: it completes a TLS handshake
    /// under its own name and refuses the unauthenticated request as such. For waiting until a
    /// cluster is up, before anyone can log in.
    pub async fn reachable(&self) -> Vec<(u8, Result<(), Fault>)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, base) in self.nodes.iter().enumerate() {
            let (http, base) = (self.http.clone(), base.clone());
            set.spawn(async move {
                let (r, _, _) = post(&http, &base, NodeBody::Status, None).await;
                let r = match r {
                    Ok(_)
                    | Err(Fault::Refused {
                        code: ErrorCode::Unauthorized,
                        ..
                    }) => Ok(()),
                    Err(e) => Err(e),
                };
                (i as u8 + 1, r)
            });
        }
        let mut out = Vec::new();
        while let Some(Ok(r)) = set.join_next().await {
            out.push(r);
        }
        out.sort_by_key(|r| r.0);
        out
    }

    /// Whether this client holds the data owner's key.
    pub fn is_owner(&self) -> bool {
        self.owner.is_some()
    }

    /// The attestation policy servers are appraised under, if the cluster has one.
    pub fn attestation_policy(&self) -> Option<&obscura_attest::Policy> {
        self.http.gate.as_deref().map(attested::Gate::policy)
    }

    /// Every node's and keeper's appraisal under the cluster's attestation policy (made now
    /// for those not yet appraised), or why there is none: refused (the policy's reason),
    /// unreachable, or no policy (an empty list).
    pub async fn appraisals(&self) -> Vec<(Party, Result<Appraisal, Fault>)> {
        let Some(gate) = self.http.gate.clone() else {
            return Vec::new();
        };
        let servers = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, base)| (Party::Node(i as u8 + 1), base.clone()))
            .chain(
                self.keepers
                    .urls
                    .iter()
                    .enumerate()
                    .map(|(j, base)| (Party::Keeper(j as u8 + 1), base.clone())),
            );
        let mut set = tokio::task::JoinSet::new();
        for (party, base) in servers {
            let (gate, http) = (gate.clone(), self.http.client.clone());
            set.spawn(async move {
                let outcome = match gate.appraisal(&http, &base).await {
                    Ok(Ok(appraisal)) => Ok(appraisal),
                    Ok(Err(refusal)) => Err(Fault::NotAttested(refusal)),
                    Err(fault) => Err(fault),
                };
                (party, outcome)
            });
        }
        let mut out = Vec::new();
        while let Some(Ok(r)) = set.join_next().await {
            out.push(r);
        }
        out.sort_by_key(|(p, _)| match p {
            Party::Node(i) => (0, *i),
            Party::Keeper(j) => (1, *j),
        });
        out
    }

    /// Whether each keeper answers (an empty list with HMAC tokens): keeper number and its
    /// status, or why not.
    pub async fn keeper_status(&self) -> Vec<(u8, Result<KeeperStatus, Fault>)> {
        let urls = self.tokens.keeper_urls();
        let mut set = tokio::task::JoinSet::new();
        for (j, url) in urls.iter().enumerate() {
            let (http, url) = (self.http.clone(), url.clone());
            set.spawn(async move {
                let (r, _, _) = post_keeper(&http, &url, KeeperBody::Status).await;
                let r = r.and_then(|b| match b {
                    ResponseBody::Status {
                        audit_entries,
                        key_versions,
                        ..
                    } => Ok(KeeperStatus {
                        audit_entries,
                        key_versions,
                    }),
                    _ => Err(Fault::Unexpected("a status")),
                });
                (j as u8 + 1, r)
            });
        }
        let mut out = Vec::new();
        while let Some(Ok(r)) = set.join_next().await {
            out.push(r);
        }
        out.sort_by_key(|r| r.0);
        out
    }

    /// Each node's whole audit log and the entry at which it signed a checkpoint when asked
    /// first (the caller checks that the log shows one there), or why the node failed; read page
    /// by page. The caller verifies it against the node's audit key. Needs the auditor or admin
    /// role.
    pub async fn audit_logs(&self) -> Vec<(u8, Result<AuditLog, Fault>)> {
        let signed = self.call_all(|_| NodeBody::Checkpoint).await;
        let mut out: Vec<(u8, Result<AuditLog, Fault>)> = signed
            .into_iter()
            .map(|(x, r, _, _)| {
                let r = r.and_then(|body| match body {
                    ResponseBody::Checkpointed { seq } => Ok(AuditLog {
                        checkpoint: seq,
                        entries: Vec::new(),
                    }),
                    _ => Err(Fault::Unexpected("a checkpoint")),
                });
                (x, r)
            })
            .collect();
        loop {
            let wanted: Vec<bool> = out.iter().map(|(_, r)| r.is_ok()).collect();
            let pages = self
                .call_each(
                    out.iter()
                        .map(|(_, r)| NodeBody::Audit {
                            from: r.as_ref().map_or(0, |l| l.entries.len() as u64),
                            max: limits::MAX_AUDIT_PAGE,
                        })
                        .collect(),
                )
                .await;
            let mut more = false;
            for ((_, slot), (_, page, _, _)) in out.iter_mut().zip(pages) {
                let Ok(log) = slot else { continue };
                match page {
                    Ok(ResponseBody::Audit { entries: e, total }) => {
                        let full = e.is_empty();
                        log.entries.extend(e);
                        more |= !full && (log.entries.len() as u64) < total;
                    }
                    Ok(_) => *slot = Err(Fault::Unexpected("a page of the audit log")),
                    Err(e) => *slot = Err(e),
                }
            }
            if !more || !wanted.iter().any(|w| *w) {
                return out;
            }
        }
    }

    /// Search for images like `file`.
    ///
    /// # Errors
    /// [`Error::Image`], [`Error::Nodes`] when no node answers Stage-1, [`Error::Mpc`] when fewer
    /// than `2t + 1` nodes answer Stage-2 (naming them) or answers are inconsistent.
    pub async fn search(
        &self,
        file: &[u8],
        top: usize,
        max_distance: u32,
    ) -> Result<SearchOutcome, Error> {
        let start = Instant::now();
        let q = obscura_phash::phash64(file)?.0;
        self.search_hash(q, top, max_distance, start).await
    }

    /// Search with a pHash computed elsewhere; `start` is when the caller began (the outcome's
    /// total time counts from it).
    ///
    /// Stage-1 keeps an image only when it matches in at least
    /// [`min_bands`](obscura_tokens::min_bands) bands, which drops no image within
    /// `max_distance` and most chance matches. Nodes count the bands (they see every hit
    /// anyway), so only the candidates cross the network.
    ///
    /// # Errors
    /// As [`search`](Self::search), but for the image.
    pub async fn search_hash(
        &self,
        q: u64,
        top: usize,
        max_distance: u32,
        start: Instant,
    ) -> Result<SearchOutcome, Error> {
        self.search_hash_with(q, top, max_distance, start, Scan::Stage1)
            .await
    }

    /// Search for images like `file` among every stored image ([`Scan::Exhaustive`]).
    ///
    /// # Errors
    /// As [`search`](Self::search); a node holding more images than its policy's
    /// `max_exhaustive` refuses.
    pub async fn search_exhaustive(
        &self,
        file: &[u8],
        top: usize,
        max_distance: u32,
    ) -> Result<SearchOutcome, Error> {
        let start = Instant::now();
        let q = obscura_phash::phash64(file)?.0;
        self.search_hash_with(q, top, max_distance, start, Scan::Exhaustive)
            .await
    }

    /// [`search_hash`](Self::search_hash) with the candidates of `scan`.
    ///
    /// # Errors
    /// As [`search_hash`](Self::search_hash).
    pub async fn search_hash_with(
        &self,
        q: u64,
        top: usize,
        max_distance: u32,
        start: Instant,
        scan: Scan,
    ) -> Result<SearchOutcome, Error> {
        let mut rng = AesCtrRng::from_os();
        let mut moved = Moved::default();
        let setting = search::Setting {
            n: self.n(),
            t: self.t,
            max_distance,
            top,
        };

        let t0 = Instant::now();
        let (lookup, calls, keeper_faults, tokens) = match scan {
            Scan::Stage1 => {
                let obtained = self
                    .tokens
                    .query(&self.keepers, self.key_version, self.n(), &self.plan, q)
                    .await?;
                let tokens = t0.elapsed();
                moved.sent += obtained.sent;
                moved.received += obtained.received;
                let batches = obtained
                    .value
                    .into_iter()
                    .map(|b| b.into_iter().map(|t| t.0).collect())
                    .collect();
                let (lookup, calls) = search::Lookup::stage1(
                    setting,
                    q,
                    self.key_version,
                    batches,
                    unix_now(),
                    &mut rng,
                );
                (lookup, calls, obtained.faults, tokens)
            }
            // No tokens and no lookup: every node lists every image, and Stage-2 scans them.
            Scan::Exhaustive => {
                let (lookup, calls) = search::Lookup::exhaustive(setting, q, unix_now(), &mut rng);
                (lookup, calls, Vec::new(), Duration::ZERO)
            }
        };
        let answers = self.run(calls, &mut moved).await;
        let (checking, calls) = lookup.answered(answers, &mut rng)?;
        let stage1 = t0.elapsed();

        let t1 = Instant::now();
        let mut evaluating = checking.answered(self.run(calls, &mut moved).await)?;
        let resolving = loop {
            match evaluating.next() {
                search::Stage2::Resolve(resolving) => break resolving,
                search::Stage2::Parts(waiting, parts) => {
                    let mut parts = parts.into_iter();
                    let done = match (parts.next(), parts.next()) {
                        (Some(a), Some(b)) => {
                            let (a, b) = tokio::join!(self.drive_part(a), self.drive_part(b));
                            vec![a?, b?]
                        }
                        (Some(a), None) => vec![self.drive_part(a).await?],
                        _ => Vec::new(),
                    };
                    let mut outcomes = Vec::with_capacity(done.len());
                    for (outcome, bytes) in done {
                        moved.sent += bytes.sent;
                        moved.received += bytes.received;
                        outcomes.push(outcome);
                    }
                    evaluating = waiting.finish(outcomes)?;
                }
            }
        };
        let stage2 = t1.elapsed();

        let t2 = Instant::now();
        let asked = resolving.calls();
        let resolved = match asked {
            Some(calls) => Some(self.run(calls, &mut moved).await),
            None => None,
        };
        let found = resolving.answered(resolved.as_deref().unwrap_or_default(), &self.owner_public);
        if resolved.is_some() {
            self.keepers.sessions.remember(found.proofs)?;
        }
        Ok(SearchOutcome {
            matches: found.matches,
            unresolved: found.unresolved,
            candidates: found.candidates,
            stage1_hits: found.stage1_hits,
            stage1,
            stage2,
            resolve: t2.elapsed(),
            total: start.elapsed(),
            tokens,
            keeper_faults,
            node_faults: found.node_faults,
            bytes_sent: moved.sent,
            bytes_received: moved.received,
        })
    }

    /// Send a protocol step's calls, counting the bytes they moved, and give back the answers.
    async fn run(&self, calls: search::Calls, moved: &mut Moved) -> Vec<search::Answer> {
        self.call_quorum(calls.calls, calls.quorum)
            .await
            .into_iter()
            .map(|(x, r, sent, received)| {
                moved.sent += sent;
                moved.received += received;
                (x, r)
            })
            .collect()
    }

    /// One part of a search's Stage-2, driven round after round until the nodes answer.
    async fn drive_part(
        &self,
        (mut part, mut calls): (search::Part, search::Calls),
    ) -> Result<(search::PartDone, Moved), Error> {
        let mut moved = Moved::default();
        loop {
            let answers = self.run(calls, &mut moved).await;
            match part.answered(answers)? {
                search::PartStep::Round(next, more) => (part, calls) = (next, more),
                search::PartStep::Done(done) => return Ok((done, moved)),
            }
        }
    }

    /// The proof of this user's match of `id` (from a search, kept in the session), if any.
    pub fn match_proof(&self, id: &ImageId) -> Option<MatchProof> {
        self.keepers.sessions.proof(id)
    }

    /// Fetch image `id` with `proof` of a match (a proof kept elsewhere, or altered: the nodes
    /// judge it).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn get_matched(&self, id: ImageId, proof: MatchProof) -> Result<Rebuilt, Error> {
        self.get_by(id, FetchBy::Match(proof)).await
    }

    /// As the data owner: a grant of image `id` to account `user` until `expires_at` (Unix
    /// seconds), for the user to fetch it with [`get_granted`](Self::get_granted).
    ///
    /// # Errors
    /// [`Error::NotOwner`].
    pub fn grant(&self, id: ImageId, user: &str, expires_at: u64) -> Result<[u8; 64], Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        Ok(obscura_sharing::order::Order::Grant {
            image: id,
            user: obscura_sharing::order::user_digest(user),
            expires_at,
        }
        .sign(owner))
    }

    /// Rebuild an image the owner granted this user ([`grant`](Self::grant)).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn get_granted(
        &self,
        id: ImageId,
        expires_at: u64,
        signature: [u8; 64],
    ) -> Result<Rebuilt, Error> {
        self.get_by(
            id,
            FetchBy::Grant {
                image: id.0,
                expires_at,
                signature: signature.to_vec(),
            },
        )
        .await
    }

    /// Rebuild an image from any `k` nodes, checking every share against the owner-signed
    /// manifest. Nodes that were unreachable, returned a manifest that is not the owner's, or a
    /// share that fails its digest are named in [`Rebuilt::faults`] even when the image could be
    /// rebuilt without them.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] if no node has it; [`Error::NotEnoughShares`] naming the
    /// unreachable and lying nodes when fewer than `k` good shares arrive; [`Error::Nodes`] when
    /// no node returns a manifest signed by the owner.
    pub async fn get(&self, id: ImageId) -> Result<Rebuilt, Error> {
        let by = match self.keepers.sessions.proof(&id) {
            Some(p) => FetchBy::Match(p),
            None if self.holder().await?.capability().roles & roles::OWNER != 0 => {
                FetchBy::Owner { image: id.0 }
            }
            None => return Err(Error::NotEntitled(id)),
        };
        self.get_by(id, by).await
    }

    async fn get_by(&self, id: ImageId, by: FetchBy) -> Result<Rebuilt, Error> {
        let mut moved = Moved::default();
        let (fetch, calls) = get::Fetch::start(id, by, self.n(), self.k, self.owner_public);
        match fetch.answered(self.run(calls, &mut moved).await) {
            get::Fetched::Done(rebuilt) => rebuilt,
            get::Fetched::Again(again, calls) => again.answered(self.run(calls, &mut moved).await),
        }
    }
}

/// An image rebuilt by [`Client::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// The image file, byte-identical to the one indexed.
    pub image: Vec<u8>,
    /// Nodes that failed or misbehaved, and why: down, a share that failed its check, or a
    /// manifest not the owner's (such a node's share is still used when it verifies against
    /// the owner's manifest).
    pub faults: Vec<NodeFailure>,
}

/// What a spawned call needs.
struct TaskClient {
    http: Http,
    nodes: Vec<String>,
    holder: Arc<Holder>,
}

impl TaskClient {
    /// Send one request to node `x`, signed for it; returns the response and the bytes moved.
    async fn call(&self, x: u8, body: NodeBody) -> (Result<ResponseBody, Fault>, u64, u64) {
        post(
            &self.http,
            &self.nodes[x as usize - 1],
            body,
            Some((x, &self.holder)),
        )
        .await
    }
}

/// A fresh request for `body`: a random id, the time now, no capability yet.
pub(crate) fn fresh_request<B>(body: B) -> Request<B> {
    let mut request_id = [0u8; 16];
    OsRng.fill_bytes(&mut request_id);
    Request {
        request_id,
        timestamp: unix_now(),
        body,
        auth: None,
    }
}

/// Post one request to node `base`, signed with `sign`'s capability for that node if given;
/// returns the response and the bytes moved. An answer larger than the protocol allows for the
/// operation is refused unread.
pub(crate) async fn post(
    http: &Http,
    base: &str,
    body: NodeBody,
    sign: Option<(u8, &Holder)>,
) -> (Result<ResponseBody, Fault>, u64, u64) {
    let mut req = fresh_request(body);
    if let Some((node, holder)) = sign {
        holder.sign(node, &mut req);
    }
    let limit = match req.body {
        NodeBody::Fetch { .. } => limits::MAX_FETCH_ANSWER,
        NodeBody::List { .. } => limits::MAX_LIST_ANSWER,
        NodeBody::RoomRelease { .. } => limits::MAX_ROOM_ANSWER,
        _ => limits::MAX_ANSWER,
    };
    // A node checks an upload's ticket, signed for it and this request, before it reads the
    // body.
    let ticket = match (&req.body, sign) {
        (NodeBody::Prepare { .. }, Some((node, holder))) => Some(
            postcard::to_allocvec(&holder.upload_ticket(node, &req)).expect("a ticket encodes"),
        ),
        _ => None,
    };
    send_gated(http, base, &req, limit, ticket).await
}

/// Post one request, as it is, to keeper `base`; returns the response and the bytes moved.
pub(crate) async fn post_keeper(
    http: &Http,
    base: &str,
    body: KeeperBody,
) -> (Result<ResponseBody, Fault>, u64, u64) {
    send_gated(http, base, &fresh_request(body), limits::MAX_ANSWER, None).await
}

/// The client's connections and, under an attestation policy, the gate every request passes.
#[derive(Clone)]
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    pub(crate) gate: Option<Arc<attested::Gate>>,
}

/// Send `req` to the server at `base` once the gate admits it (its evidence appraised under the
/// cluster's policy), with an upload `ticket` if given, and read an answer of at most `limit`
/// bytes.
async fn send_gated<B: Body>(
    http: &Http,
    base: &str,
    req: &Request<B>,
    limit: usize,
    ticket: Option<Vec<u8>>,
) -> (Result<ResponseBody, Fault>, u64, u64) {
    if let Some(gate) = &http.gate {
        if let Err(refused) = gate.admit(&http.client, base).await {
            return (Err(refused), 0, 0);
        }
    }
    send(&http.client, base, req, limit, ticket).await
}

/// Send `req` to the server at `base`, ungated: for [`send_gated`], and for the gate's own
/// requests for evidence.
pub(crate) async fn send<B: Body>(
    http: &reqwest::Client,
    base: &str,
    req: &Request<B>,
    limit: usize,
    ticket: Option<Vec<u8>>,
) -> (Result<ResponseBody, Fault>, u64, u64) {
    let started = Instant::now();
    let bytes = req.encode();
    let sent = bytes.len() as u64;
    let url = format!("{base}{}", req.body.path());
    let mut post = http.post(url);
    if let Some(ticket) = ticket {
        post = post.header(
            obscura_proto::UPLOAD_TICKET_HEADER,
            obscura_tokens::keyfile::to_hex(&ticket),
        );
    }
    let resp = match post.body(bytes).send().await {
        Ok(r) => r,
        Err(e) => return (Err(describe(&e, started.elapsed())), sent, 0),
    };
    let body = match read_bounded(resp, limit, started).await {
        Ok(b) => b,
        Err(e) => return (Err(e), sent, 0),
    };
    let received = body.len() as u64;
    let out = match Response::decode(&body) {
        Ok(Response(ResponseBody::Error { code, message })) => {
            Err(Fault::Refused { code, message })
        }
        Ok(Response(other)) => Ok(other),
        Err(e) => Err(Fault::Unreadable(format!("unreadable answer: {e}"))),
    };
    (out, sent, received)
}

/// An answer's body, refused once it passes `limit` bytes (a server cannot make the client hold
/// more than the protocol allows).
async fn read_bounded(
    mut resp: reqwest::Response,
    limit: usize,
    started: Instant,
) -> Result<Vec<u8>, Fault> {
    let too_large =
        || Fault::Unreadable(format!("the answer is larger than {limit} bytes: refused"));
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(describe(&e, started.elapsed())),
        }
    }
}

fn failures_of(results: &[Answered]) -> Vec<NodeFailure> {
    results
        .iter()
        .filter_map(|(x, r, _, _)| {
            r.as_ref().err().map(|fault| NodeFailure {
                node: *x,
                fault: fault.clone(),
            })
        })
        .collect()
}

/// The failures of a delete other than "not held": a node that lacks the image is settled.
fn unsettled(results: &[Answered]) -> Vec<NodeFailure> {
    failures_of(results)
        .into_iter()
        .filter(|f| !f.fault.is_unknown_image())
        .collect()
}

fn describe(e: &reqwest::Error, waited: Duration) -> Fault {
    if e.is_timeout() {
        Fault::TimedOut(waited)
    } else if e.is_connect() {
        Fault::Unreachable
    } else {
        Fault::Unreadable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `head` and then `body_len` bytes (sent as they
    /// are read, so a client that keeps reading gets them all).
    async fn answering(head: &'static str, body_len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 1 << 16];
            let mut left = body_len;
            while left > 0 {
                let n = left.min(chunk.len());
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_server_cannot_make_the_client_read_more_than_the_protocol_allows() {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let http = Http {
            client: reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .build()
                .unwrap(),
            gate: None,
        };
        // Announced too large: refused before a byte of the body is read.
        let big = limits::MAX_ANSWER + 1;
        let head: &'static str =
            Box::leak(format!("HTTP/1.1 200 OK\r\ncontent-length: {big}\r\n\r\n").into_boxed_str());
        let base = answering(head, 0).await;
        let (r, _, received) = post(&http, &base, NodeBody::Status, None).await;
        assert!(
            r.unwrap_err().to_string().contains("larger than"),
            "refused unread"
        );
        assert_eq!(received, 0);
        // Not announced (chunked, endless in effect): cut off at the limit.
        let base = answering(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\nconnection: close\r\n\r\n",
            limits::MAX_ANSWER + (1 << 20),
        )
        .await;
        let (r, _, _) = post(&http, &base, NodeBody::Status, None).await;
        assert!(r.unwrap_err().to_string().contains("larger than"));
    }
}
