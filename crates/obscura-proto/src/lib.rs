//! Wire messages between Obscura clients and servers (nodes and keepers), and the audit log's
//! chain rules ([`audit`]).
//!
//! The message enums are deliberately exhaustive: a new operation or error is a new protocol
//! version, and each server matches every variant of its own request type ([`NodeBody`],
//! [`KeeperBody`]).
//!
//! A response on the wire is `"OBSC" ‖ version (u16, big-endian) ‖ postcard(body)`; a request
//! has the kind of server it is for between the two ([`Body::SERVER`]), so one server's request
//! is refused whole by the other's decoder ([`Error::OtherServer`]). The version is
//! read before anything else, so a message of another version is refused with
//! [`Error::UnsupportedVersion`] rather than misparsed; trailing bytes, truncation and bodies
//! that break a size limit are refused too. Every request carries a random 128-bit request id and
//! the client's clock (Unix seconds) for the node's replay window, and a request to a node
//! carries the caller's [`Auth`]: a capability the keepers signed together, naming the user and
//! its roles, and the capability holder's signature over this very request.
//!
//! ```
//! use obscura_proto::{Body, KeeperBody, NodeBody, Request, Response, ResponseBody};
//!
//! let req = Request {
//!     request_id: [7; 16],
//!     timestamp: 1_790_000_000,
//!     body: NodeBody::Lookup {
//!         key_version: 1,
//!         query: [3; 16],
//!         issued: 1_790_000_000,
//!         tokens: vec![[1; 16], [2; 16]],
//!     },
//!     auth: None,
//! };
//! let bytes = req.encode();
//! // Magic, version 15, and the kind of server it is for (1: a node).
//! assert_eq!(&bytes[..7], b"OBSC\x00\x0f\x01");
//! assert_eq!(Request::<NodeBody>::decode(&bytes)?, req);
//! // A keeper does not take a node's request.
//! assert!(matches!(
//!     Request::<KeeperBody>::decode(&bytes),
//!     Err(obscura_proto::Error::OtherServer("node"))
//! ));
//! assert_eq!(req.body.path(), "/v1/lookup");
//!
//! let resp = Response(ResponseBody::Lookup { handles: vec![[9; 16]], matched: 3 });
//! assert_eq!(Response::decode(&resp.encode())?, resp);
//!
//! // Another version is refused before its body is read.
//! let mut future = bytes.clone();
//! future[5] = 16;
//! assert!(matches!(Request::<NodeBody>::decode(&future), Err(obscura_proto::Error::UnsupportedVersion(16))));
//! # Ok::<(), obscura_proto::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

pub mod audit;

/// The protocol version this crate speaks. 15: VOPRF band tokens under one cluster key (an
/// element per band value, each node's token hashed with its number), where 14 had a key per
/// node; the bytes are unchanged, their meaning is not, so a peer of 14 is refused.
pub const VERSION: u16 = 15;
const MAGIC: &[u8; 4] = b"OBSC";

/// A 128-bit image id on the wire.
pub type WireId = [u8; 16];
/// A 16-byte band token on the wire.
pub type WireToken = [u8; 16];
/// A ristretto255 element on the wire (its canonical 32-byte encoding).
pub type WireElement = [u8; 32];

/// Size limits a decoded message must respect.
pub mod limits {
    /// Largest image share accepted (bytes); the shares of one prepared batch together.
    pub const MAX_IMAGE_SHARE: usize = 64 << 20;
    /// Most images prepared or committed in one request.
    pub const MAX_BATCH: usize = 256;
    /// Largest manifest (bytes).
    pub const MAX_MANIFEST: usize = 64 << 10;
    /// Largest request body a node reads for a prepare: the shares, the manifests and room for
    /// the rest of the batch.
    pub const MAX_PREPARE_BODY: usize = MAX_IMAGE_SHARE + MAX_BATCH * (MAX_MANIFEST + 4096);
    /// Largest request body a node reads for anything else (the largest, a resolve of
    /// [`MAX_PROOFS`] proofs, is well under it).
    pub const MAX_BODY: usize = 1 << 20;
    /// Largest answer a client reads from a fetch: a share of one image, its manifest, framing.
    pub const MAX_FETCH_ANSWER: usize = MAX_IMAGE_SHARE + MAX_MANIFEST + 4096;
    /// Largest answer a client reads for anything else.
    pub const MAX_ANSWER: usize = 16 << 20;
    /// Most tokens in one lookup.
    pub const MAX_LOOKUP_TOKENS: usize = 8 * 256;
    /// Most candidates in one Stage-2 request: one part of a query's candidates (a node's
    /// policy may allow fewer).
    pub const MAX_CANDIDATES: usize = 16_384;
    /// Most candidates one query scans, in parts of at most [`MAX_CANDIDATES`]: what an
    /// exhaustive search may list (a node's policy may allow fewer).
    pub const MAX_SCAN: usize = 1 << 20;
    /// Largest answer a client reads for a list of [`MAX_SCAN`] handles.
    pub const MAX_LIST_ANSWER: usize = MAX_SCAN * 16 + (64 << 10);
    /// Most nodes' checks in one Stage-2 request (the most nodes a cluster may have).
    pub const MAX_NODES: usize = 64;
    /// Most values per check in one node's check of a query.
    pub const MAX_CHECK_VALUES: usize = 8;
    /// Length of a hash-bit share.
    pub const HASH_SHARE_LEN: usize = 256;
    /// Tokens per image.
    pub const TOKENS_PER_IMAGE: usize = 8;
    /// Most elements a keeper evaluates in one request, all node batches together.
    pub const MAX_KEEPER_ELEMENTS: usize = 1 << 14;
    /// Most match proofs resolved in one request.
    pub const MAX_PROOFS: usize = 64;
    /// Most nodes' openings in one match proof.
    pub const MAX_OPENINGS: usize = 255;
    /// Most values a Stage-2 opening gives per candidate (level 1 with τ = 64: 33 products,
    /// one of them a pair).
    pub const MAX_OPENED_WIDTH: usize = 34;
    /// Largest body of a [`NodeBody::Reduce`](crate::NodeBody::Reduce): every node's
    /// opening of every candidate in one round (a node's configuration is refused when its
    /// candidate limits, node count and τ could exceed it).
    pub const MAX_REDUCE_BODY: usize = 8 << 20;
    /// Longest Merkle path in a match proof (enough for [`MAX_CANDIDATES`]).
    pub const MAX_PATH: usize = 32;
    /// Most audit entries in one page.
    pub const MAX_AUDIT_PAGE: u32 = 4096;
    /// Most ledger entries appended in one request, or sent in one page.
    pub const MAX_LEDGER_BATCH: usize = 256;
    /// Most bytes of encoded entries a client puts in one append request (well within
    /// [`MAX_BODY`]), and a node in one page of the ledger (well within [`MAX_ANSWER`]); a
    /// single entry larger than that still goes alone (the ledger bounds each group message).
    pub const MAX_LEDGER_APPEND_BYTES: usize = 768 << 10;
    /// See [`MAX_LEDGER_APPEND_BYTES`].
    pub const MAX_LEDGER_PAGE_BYTES: usize = 8 << 20;
    /// Most cosignatures on a ledger head (one per node).
    pub const MAX_COSIGNATURES: usize = MAX_NODES;
    /// Largest attestation evidence (bytes): a DCAP quote with its collateral is about 20 KiB.
    pub const MAX_EVIDENCE: usize = 256 << 10;
    /// Largest capability (bytes, encoded).
    pub const MAX_CAPABILITY: usize = 1024;
    /// Most input images of one clean-room work.
    pub const MAX_ROOM_INPUTS: usize = 64;
    /// How long a node's clean-room challenge may be used (seconds).
    pub const ROOM_CHALLENGE_S: u64 = 120;
    /// Largest answer a client reads for a clean-room release: every input's share and
    /// manifest (a node refuses a release whose shares are larger than [`MAX_IMAGE_SHARE`]).
    pub const MAX_ROOM_ANSWER: usize = MAX_IMAGE_SHARE + MAX_ROOM_INPUTS * (MAX_MANIFEST + 4096);
    /// Largest encoding of the nodes a clean-room result blames, with the reasons.
    pub const MAX_ROOM_BLAME: usize = 16 << 10;
}

/// Errors decoding a message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not an Obscura message.
    #[error("not an Obscura message")]
    BadMagic,
    /// A version this build does not speak.
    #[error("protocol version {0} is not supported (this build speaks version {VERSION})")]
    UnsupportedVersion(u16),
    /// The body does not parse.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A field breaks a size limit.
    #[error("message field {0} has the wrong size")]
    BadSize(&'static str),
    /// A request for another kind of server (a keeper's sent to a node, or a node's to a keeper).
    #[error("a request for a {0}, not for this server")]
    OtherServer(&'static str),
}

/// One image of a [`NodeBody::Prepare`] batch: what this node stores of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedImage {
    /// Its id.
    pub image: WireId,
    /// The owner-signed manifest.
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    /// This node's share of the file.
    #[serde(with = "serde_bytes")]
    pub image_share: Vec<u8>,
    /// This node's 256-byte hash-bit share.
    #[serde(with = "serde_bytes")]
    pub hash_share: Vec<u8>,
    /// The 8 band tokens under this node's keys.
    pub tokens: Vec<WireToken>,
    /// With VOPRF tokens, the 8 band elements `k · HashToGroup(input)` the tokens were hashed
    /// from, kept by the node so that a key rotation can move them; empty with HMAC tokens.
    pub elements: Vec<WireElement>,
}

/// The blinded elements of one node's key in a [`KeeperBody::KeeperEvaluate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperBatch {
    /// Which token key: 1, the cluster's (clusters made when each node had its own key
    /// numbered them by node).
    pub node: u8,
    /// Blinded elements.
    pub elements: Vec<WireElement>,
}

/// A keeper's answer for one [`KeeperBatch`]: its share of the key applied to every element,
/// and one batched DLEQ proof (RFC 9497) against its public share of that key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperEvaluation {
    /// Evaluated elements, in the batch's order.
    pub elements: Vec<WireElement>,
    /// The proof `(c, s)`, 64 bytes.
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

/// A step of a token-key rotation at a node (see [`NodeBody::Rotate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotateOp {
    /// Start moving from key version `from` to `to`: the node multiplies every stored element
    /// by `factor` (`ρ`, with `k_to = ρ · k_from`) and from now on answers lookups under both
    /// versions. Repeating it with the same values changes nothing.
    Begin {
        /// The version the node serves now.
        from: u32,
        /// The next version.
        to: u32,
        /// `ρ`, a canonical non-zero scalar.
        factor: [u8; 32],
        /// The data owner's signature over this order for this node
        /// (`obscura_sharing::order::Order::Rotate`), 64 bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Move up to `max_images` more images' postings to the next version, in one durable step.
    Move {
        /// The next version, as begun.
        to: u32,
        /// At most this many images (0: only report progress).
        max_images: u32,
        /// The data owner's signature over the move order for this node
        /// (`obscura_sharing::order::Order::RotateMove`), 64 bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Every image has moved: forget the old version, its elements and `ρ`.
    Finish {
        /// The next version, as begun.
        to: u32,
        /// The data owner's signature over the finish order for this node
        /// (`obscura_sharing::order::Order::RotateFinish`), 64 bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
}

/// One token key's part of a [`KeeperBody::KeeperRekey`], for one keeper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperRekeyPart {
    /// Which token key: 1, the cluster's (see [`KeeperBatch::node`]).
    pub node: u8,
    /// `ρ` of that key, a canonical non-zero scalar.
    pub factor: [u8; 32],
    /// This keeper's share of a fresh sharing of zero.
    pub zero_share: [u8; 32],
    /// `z_j · G` for every keeper `j = 1..=m` (the same list at every keeper): each keeper
    /// checks its own share against it and that the list lies on a polynomial of degree below
    /// `T` that is zero at 0, so a rotation cannot hand keepers shares that do not add up.
    pub zero_commitments: Vec<WireElement>,
}

/// What the data owner orders when keeper `keeper` gets its token-key shares back from
/// `helpers` ([`KeeperBody::RecoverPart`], [`KeeperBody::Recover`]); signed through
/// [`recovery_digest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPlan {
    /// Names the recovery: each helper takes part once.
    pub id: [u8; 16],
    /// The owner's clock when it was made (Unix seconds): helpers refuse a plan older than
    /// their replay window.
    pub issued_at: u64,
    /// The keeper that recovers.
    pub keeper: u8,
    /// The HPKE key its evidence binds, to which each part is sealed.
    pub party_key: [u8; 32],
    /// The nonce its evidence binds.
    pub nonce: [u8; 32],
    /// The key version recovered.
    pub version: u32,
    /// The `T` keepers that give their parts, in order.
    #[serde(with = "serde_bytes")]
    pub helpers: Vec<u8>,
    /// The HPKE key each helper's evidence binds (same order), as the owner appraised it:
    /// each pair of helpers derives its mask from their two keys, held inside their builds.
    pub helper_keys: Vec<[u8; 32]>,
    /// `k_j · G` of that version for every token key (outer, key 1..) and keeper (inner,
    /// keeper 1..=m), as the owner's `client.json` has them: the keeper checks each part and
    /// the result against them.
    pub public_shares: Vec<Vec<WireElement>>,
    /// The attestation policy (JSON) each helper appraises the keeper's evidence under.
    #[serde(with = "serde_bytes")]
    pub policy: Vec<u8>,
}

/// One helper's part of a recovery ([`RecoveryPlan`]), as the recovering keeper receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPart {
    /// The helper.
    pub helper: u8,
    /// HPKE encapsulated key.
    #[serde(with = "serde_bytes")]
    pub enc: Vec<u8>,
    /// The helper's contributions, one per token key, sealed to the recovering keeper's key
    /// ([`recovery_purpose`]).
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
    /// Per token key, its commitment to the mask it shares with each other helper, in the
    /// helpers' order.
    pub masks: Vec<Vec<WireElement>>,
    /// [`recovery_part_tag`] under the secret of the helper's attested key and the recovering
    /// keeper's: whoever carries the part can neither alter it nor make one in the helper's
    /// name, so a part that fails its check is the helper's own.
    pub tag: [u8; 32],
}

/// A user's roles, as a set of bits (see [`roles`]).
pub type WireRoles = u8;

/// The roles a capability or an account can hold.
pub mod roles {
    /// Keeper administration: registers accounts, lifts lockouts, changes key shares with the
    /// owner's order, and drives node key rotations with it.
    pub const ADMIN: u8 = 1;
    /// The data owner's role: index, delete and fetch any image.
    pub const OWNER: u8 = 2;
    /// Search, and fetch what one's own searches matched (or what an owner granted).
    pub const QUERIER: u8 = 4;
    /// Read the nodes' and keepers' audit logs.
    pub const AUDITOR: u8 = 8;
    /// Every role.
    pub const ALL: u8 = ADMIN | OWNER | QUERIER | AUDITOR;

    /// The names of the roles in `roles`, for people.
    pub fn names(roles: u8) -> Vec<&'static str> {
        [
            (ADMIN, "admin"),
            (OWNER, "owner"),
            (QUERIER, "querier"),
            (AUDITOR, "auditor"),
        ]
        .into_iter()
        .filter(|(bit, _)| roles & bit != 0)
        .map(|(_, name)| name)
        .collect()
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<u8> {
        match name {
            "admin" => Some(ADMIN),
            "owner" => Some(OWNER),
            "querier" => Some(QUERIER),
            "auditor" => Some(AUDITOR),
            _ => None,
        }
    }
}

/// How much a capability's holder may ask of each node per hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Stage-1 lookups and Stage-2 evaluations together.
    pub queries_per_hour: u32,
    /// Fetches and match resolutions together.
    pub fetches_per_hour: u32,
}

/// What the keepers sign together for a logged-in user: who it is, what it may do, until when,
/// and the key that must sign each of its requests (so a capability seen by a node cannot be
/// used by that node elsewhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// A random id, for audit entries.
    pub id: [u8; 16],
    /// The account's name.
    pub user: String,
    /// Its roles ([`roles`]).
    pub roles: WireRoles,
    /// The holder's Ed25519 public key.
    pub holder: [u8; 32],
    /// When it was made (keeper clock, Unix seconds).
    pub issued_at: u64,
    /// When it stops being accepted.
    pub expires_at: u64,
    /// Per-node rate limits.
    pub limits: Limits,
}

/// A [`Capability`] as encoded, with the keepers' threshold Ed25519 signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCapability {
    /// The encoded [`Capability`] (postcard), as signed.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The group signature, 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// What an upload carries in its header ([`UPLOAD_TICKET_HEADER`]) so that a node checks who
/// uploads before it reads the body: the capability and its holder's signature over
/// [`upload_ticket_digest`] for one node and one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadTicket {
    /// The uploader's capability.
    pub capability: SignedCapability,
    /// The id of the request the body carries.
    pub request_id: [u8; 16],
    /// When the ticket was made, seconds since the Unix epoch.
    pub timestamp: u64,
    /// The holder's Ed25519 signature, 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The HTTP header that carries an upload's [`UploadTicket`] (hex of its encoding).
pub const UPLOAD_TICKET_HEADER: &str = "obscura-upload-ticket";

/// The digest a capability holder signs for an upload ticket to node `node`.
pub fn upload_ticket_digest(node: u8, request_id: &[u8; 16], timestamp: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 upload ticket v1");
    h.update(&[node]);
    h.update(request_id);
    h.update(&timestamp.to_be_bytes());
    *h.finalize().as_bytes()
}

/// One node's values of the check of one query (`obscura_mpc::check`), signed with its answer
/// key over the user, the query and the check's context (which holds the querier's commitment
/// to every node's share).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCheck {
    /// The node.
    pub node: u8,
    /// The degree check's values, field elements below 2^31 − 1.
    pub degree: Vec<u32>,
    /// The bit check's values.
    pub bits: Vec<u32>,
    /// The node's Ed25519 signature, 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// One node's openings of one round of Stage-2 (`obscura_mpc::node`), signed with the node's
/// Ed25519 key (the one its checks and answers are signed with) over the user, the query, its
/// context, τ and the round, for the querier to relay to every other node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOpened {
    /// The node.
    pub node: u8,
    /// The round, from 0.
    pub round: u8,
    /// `candidates × width` field elements below 2^31 − 1, `None` for a candidate the node
    /// does not hold.
    pub values: Vec<Option<u32>>,
    /// The node's Ed25519 signature, 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The caller's credential on a request to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The keepers' capability.
    pub capability: SignedCapability,
    /// The holder's Ed25519 signature over the request (node, id, time and body), 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// One node's part of a [`MatchProof`]: its Stage-2 value for the candidate, opened from the
/// commitment it signed over all its values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    /// The node.
    pub node: u8,
    /// Its shares of `(h, g)` for the candidate (`None`: it holds no such image).
    pub value: Option<[u32; 2]>,
    /// The key of this candidate's leaf (derived from the answer's key; reveals no other leaf).
    pub leaf_key: [u8; 32],
    /// Sibling hashes from the leaf up.
    pub path: Vec<[u8; 32]>,
    /// The node's Ed25519 signature over its answer's commitment, 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Proof that a Stage-2 query of the caller's matched a candidate within the cluster's
/// distance limit: `2t + 1` nodes' signed values for it, which interpolate to its distance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchProof {
    /// The query (its Stage-1 handles and Stage-2 context).
    pub query_id: [u8; 16],
    /// When the query was issued (client clock, Unix seconds).
    pub issued: u64,
    /// The part of the query's candidates the answers are of.
    pub part: u32,
    /// The candidate's handle in that query.
    pub handle: WireId,
    /// Its position in that part.
    pub position: u32,
    /// The length of that part.
    pub count: u32,
    /// One opening per answering node.
    pub openings: Vec<Opening>,
}

/// What entitles a caller to an image's share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchBy {
    /// The owner role: any image, by id.
    Owner {
        /// The image.
        image: WireId,
    },
    /// The data owner's grant of this image to the caller's account.
    Grant {
        /// The image.
        image: WireId,
        /// Until when (Unix seconds).
        expires_at: u64,
        /// The owner's signature over the grant (`obscura_sharing::order::Order::Grant`).
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// A match of the caller's own query.
    Match(MatchProof),
}

/// Limits of the keeper's account and secret messages.
pub mod account_limits {
    /// Longest user name (bytes).
    pub const MAX_USER: usize = 128;
    /// Largest OPAQUE message or secret share (bytes).
    pub const MAX_BLOB: usize = 64 << 10;
    /// Longest secret name (bytes).
    pub const MAX_NAME: usize = 256;
    /// Largest sealed session message (bytes): a keeper evaluation fits.
    pub const MAX_SEALED: usize = 2 << 20;
}

/// What a user secret held at the keepers is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretKind {
    /// Arbitrary bytes, Shamir-shared by the client (any `T` keepers rebuild them).
    Data,
    /// A FROST (RFC 9591, Ed25519) signing key made by distributed key generation; it is
    /// never rebuilt, only used to sign.
    Signing,
}

/// One secret in a [`ResponseBody::Secrets`] listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// Its id.
    pub id: [u8; 16],
    /// The owner's name for it.
    pub name: String,
    /// What it is.
    pub kind: SecretKind,
    /// When it was stored (keeper time).
    pub created: u64,
}

/// One event of a user's own audit trail at a keeper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    /// Keeper time.
    pub time: u64,
    /// What happened ("login", "secret generate", "secret export", "sign", ...).
    pub action: String,
    /// The secret concerned, if any.
    pub secret: Option<[u8; 16]>,
    /// Whether it succeeded.
    pub ok: bool,
}

/// A message addressed to keeper `to` (or from keeper `from`) in a key generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperPackage {
    /// The keeper the package is from (round 1) or to (round 2), 1..=m.
    pub keeper: u8,
    /// The package bytes (round-2 packages are encrypted to their recipient).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// The candidate list a Stage-2 query scans, fixed before any node checks the query: how many
/// handles and the digest of all of them in order (`obscura_auth::matching::scan_digest`).
/// Its parts are sent one evaluation each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanOf {
    /// Candidates in the whole list.
    pub count: u32,
    /// Digest of every handle, in order.
    pub digest: [u8; 32],
}

/// What a client asks of a node: storage, Stage-1 and Stage-2, fetches, audit and rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeBody {
    /// Store images as pending, all or none (one disk sync at the node for the batch).
    Prepare {
        /// The token key version the tokens were made under.
        key_version: u32,
        /// At most [`limits::MAX_BATCH`] images, their shares together at most
        /// [`limits::MAX_IMAGE_SHARE`] bytes.
        images: Vec<PreparedImage>,
    },
    /// Make prepared images visible, all or none.
    Commit {
        /// Their ids, at most [`limits::MAX_BATCH`].
        images: Vec<WireId>,
    },
    /// Remove an image, on the data owner's signed order.
    Delete {
        /// Its id.
        image: WireId,
        /// The owner's clock when the order was made (Unix seconds); an image whose manifest
        /// is newer is not removed.
        issued_at: u64,
        /// The owner's signature over the order (`obscura_sharing::order::Order::Delete`),
        /// 64 bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Stage-1: the committed images posted under enough of the tokens, as handles that only
    /// this caller's Stage-2 of this query can use. An image has one token per band, so the node
    /// counts the bands it matches in; how many it needs follows from the cluster's policy and
    /// the batch shape, which the node checks.
    Lookup {
        /// The token key version the tokens were made under.
        key_version: u32,
        /// The query, the same at every node (handles are bound to it).
        query: [u8; 16],
        /// When the query was issued (client clock), the same at every node.
        issued: u64,
        /// The padded batch: exactly the policy's shape.
        tokens: Vec<WireToken>,
    },
    /// Stage-2: evaluate one part of the query's candidates on shares, once every node's check
    /// of the query passed. A query's candidates are evaluated in parts of at most
    /// [`limits::MAX_CANDIDATES`], each once, under one check.
    Evaluate {
        /// The query id of the Stage-1 lookups that gave the handles.
        query_id: [u8; 16],
        /// When that query was issued, as in its lookups.
        issued: u64,
        /// This node's 256-byte share of the query bits: the one it checked.
        #[serde(with = "serde_bytes")]
        query_share: Vec<u8>,
        /// As in [`NodeBody::CheckQuery`].
        scan: ScanOf,
        /// Which part this is, from 0: the candidates from position `part ×`
        /// [`limits::MAX_CANDIDATES`] of the query's list.
        part: u32,
        /// This part's candidates' handles, in the same order at every node.
        candidates: Vec<WireId>,
        /// As in [`NodeBody::CheckQuery`].
        share_digests: Vec<[u8; 32]>,
        /// Nodes' signed checks of this query ([`NodeBody::CheckQuery`]), one each.
        checks: Vec<WireCheck>,
    },
    /// A committed image's manifest and share, for a caller entitled to it.
    Fetch {
        /// The entitlement.
        by: FetchBy,
    },
    /// The manifests (image ids) of matches of the caller's own queries.
    Resolve {
        /// At most [`limits::MAX_PROOFS`] proofs.
        proofs: Vec<MatchProof>,
    },
    /// Counts and identity.
    Status,
    /// A page of the audit log.
    Audit {
        /// The first entry wanted.
        from: u64,
        /// At most this many (and at most [`limits::MAX_AUDIT_PAGE`]).
        max: u32,
    },
    /// Sign the audit log's head now (a log already ending in a signature is left as is).
    Checkpoint,
    /// To a node: a step of a token-key rotation. Sent by the cluster's operator tool.
    Rotate {
        /// The step.
        op: RotateOp,
    },
    /// Stage-2, first round: open this node's values of the check that the query shares are a
    /// degree-t sharing of bits (`obscura_mpc::check`), signed. Each node does it once per
    /// query id.
    CheckQuery {
        /// As in [`NodeBody::Evaluate`].
        query_id: [u8; 16],
        /// As in [`NodeBody::Evaluate`].
        issued: u64,
        /// As in [`NodeBody::Evaluate`].
        #[serde(with = "serde_bytes")]
        query_share: Vec<u8>,
        /// The whole candidate list the query scans, by count and digest.
        scan: ScanOf,
        /// The querier's commitment to every node's share: the digest of each, node 1 first
        /// (`obscura_auth::matching::share_digest`). The check's coefficients depend on all of
        /// them, and each node checks its own.
        share_digests: Vec<[u8; 32]>,
    },
    /// Stage-2, the rounds after [`NodeBody::Evaluate`]: every node's signed openings of the
    /// last round, relayed. The node answers with the next round's openings
    /// ([`ResponseBody::Opened`]) or, after the last, its answer ([`ResponseBody::Evaluate`]).
    Reduce {
        /// As in [`NodeBody::Evaluate`].
        query_id: [u8; 16],
        /// As in [`NodeBody::Evaluate`].
        issued: u64,
        /// As in [`NodeBody::Evaluate`].
        part: u32,
        /// The round the openings are of.
        round: u8,
        /// At least `2t + 1` nodes' openings of that round.
        openings: Vec<WireOpened>,
    },
    /// An exhaustive search's candidates: every committed image, as handles of this query
    /// (sorted by handle), instead of a Stage-1 lookup's. The node learns nothing of the query.
    List {
        /// The query, as in [`NodeBody::Lookup`]: its id is spent on this list.
        query: [u8; 16],
        /// When the query was issued, the same at every node.
        issued: u64,
    },
    /// Remote attestation: the node's evidence, whose report data binds its HPKE key, its
    /// seat in the cluster and this nonce. Answered without authentication, before a client
    /// sends the node anything else.
    Evidence {
        /// The verifier's fresh challenge.
        nonce: [u8; 32],
    },
    /// Clean room: a challenge for releasing the inputs of work `work` to one worker, good for
    /// [`limits::ROOM_CHALLENGE_S`] seconds and one release.
    RoomChallenge {
        /// The Work-ID.
        work: [u8; 32],
    },
    /// Clean room: this node's shares of the work's input images, sealed to the worker whose
    /// evidence binds `worker_key`, the work and this node's challenge, under the data owner's
    /// approval. The node appraises the worker itself and counts the run.
    RoomRelease {
        /// The Work-ID.
        work: [u8; 32],
        /// The work's input images, in order (their digest is in the approval), at most
        /// [`limits::MAX_ROOM_INPUTS`].
        images: Vec<WireId>,
        /// The attestation policy the worker must pass (`obscura_attest::Policy`, JSON), at
        /// most [`limits::MAX_EVIDENCE`] bytes; its digest is in the approval.
        #[serde(with = "serde_bytes")]
        policy: Vec<u8>,
        /// The end of the approval (Unix seconds).
        expires_at: u64,
        /// Most runs the approval allows at each node.
        max_runs: u32,
        /// The data owner's signature over the approval
        /// (`obscura_sharing::order::Order::Approve`), 64 bytes.
        #[serde(with = "serde_bytes")]
        approval: Vec<u8>,
        /// The challenge this node gave ([`NodeBody::RoomChallenge`]).
        nonce: [u8; 32],
        /// The worker's HPKE key for this work, bound in its evidence.
        worker_key: [u8; 32],
        /// The worker's Ed25519 key for this work's result, bound in its evidence
        /// ([`room_context`]).
        signing_key: [u8; 32],
        /// The worker's evidence, at most [`limits::MAX_EVIDENCE`] bytes.
        #[serde(with = "serde_bytes")]
        evidence: Vec<u8>,
    },
    /// Clean room: a run's signed result, filed by its controller at a node that released to
    /// the run, for the node's audit log ([`RoomResultFiled`]).
    RoomResult(RoomResultFiled),
    /// Ledger: add entries, each signed by its author, from the node's size on (entries it
    /// holds already are passed over). The node checks each one's signature and rule, stores
    /// them all or none, and answers its cosignature of its new head
    /// ([`ResponseBody::LedgerAppended`]). Owner or admin: entries are self-authenticating, so
    /// an admin may relay the owner's to a node that fell behind.
    LedgerAppend {
        /// At most [`limits::MAX_LEDGER_BATCH`] entries, in order.
        entries: Vec<obscura_ledger::entry::Entry>,
        /// The size of the last head the caller accepted: the answer proves the new head
        /// consistent with it.
        since: u64,
    },
    /// Ledger: the node's own head, signed, and the last head a quorum cosigned that it holds,
    /// each with a consistency proof from `since` ([`ResponseBody::LedgerHead`]). Any role:
    /// heads and proofs carry no entry.
    LedgerHead {
        /// The size of the last head the caller accepted.
        since: u64,
    },
    /// Ledger: commit to `head`, which this node stores, as a majority stores it: the node
    /// answers its cosignature ([`ResponseBody::LedgerCommitted`]) and from then on never lets
    /// an entry under it be replaced. Owner or admin.
    LedgerCommit {
        /// The head.
        head: obscura_ledger::head::TreeHead,
        /// A majority of nodes' signatures that they store it, at most
        /// [`limits::MAX_COSIGNATURES`].
        stored: Vec<obscura_ledger::head::Cosignature>,
    },
    /// Ledger: a page of entries ([`ResponseBody::LedgerEntries`]). Owner, auditor or admin.
    LedgerRead {
        /// The first entry wanted.
        from: u64,
        /// At most this many (and at most [`limits::MAX_LEDGER_BATCH`]).
        max: u32,
    },
    /// Ledger: sign the audit log's head now and answer this node's own entry anchoring it
    /// ([`obscura_ledger::entry::Transition::Checkpoint`]) for place `seq`, as the one entry
    /// of a [`ResponseBody::LedgerEntries`]. Owner, auditor or admin.
    LedgerCheckpoint {
        /// The place the entry is for: at least the node's ledger size.
        seq: u64,
        /// The tree head of the entries before that place, as the caller will append them.
        prev: [u8; 32],
    },
    /// Ledger: a head a quorum of nodes cosigned, for the node to keep and show. The node
    /// keeps it only if its own entries give the same root at that size.
    LedgerCosigned {
        /// The head.
        head: obscura_ledger::head::CosignedHead,
    },
}

/// A node's answer to [`NodeBody::LedgerAppend`]: its signature that it stores its head now
/// (not a cosignature: that comes with [`NodeBody::LedgerCommit`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAppended {
    /// Its head now.
    pub head: obscura_ledger::head::TreeHead,
    /// Its signature over the head's stored statement.
    pub stored: obscura_ledger::head::Cosignature,
    /// The consistency proof from the request's `since` to `head`.
    pub proof: Vec<[u8; 32]>,
}

/// A node's answer to [`NodeBody::LedgerHead`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHeads {
    /// Its own head now.
    pub own: obscura_ledger::head::TreeHead,
    /// Its signature that it stores `own` (the stored statement, no commitment).
    pub stored: obscura_ledger::head::Cosignature,
    /// The newest head it committed to, with its cosignature.
    pub committed: Option<(
        obscura_ledger::head::TreeHead,
        obscura_ledger::head::Cosignature,
    )>,
    /// The consistency proof between the request's `since` and `own`.
    pub own_proof: Vec<[u8; 32]>,
    /// The peaks of `own`'s tree, largest first (`obscura_ledger::merkle::Frontier`): what an
    /// appender signs the next entries after. They are checked by folding to `own`'s root.
    pub frontier: Vec<[u8; 32]>,
    /// The last head a quorum cosigned that it holds.
    pub cosigned: Option<obscura_ledger::head::CosignedHead>,
    /// The consistency proof between the request's `since` and `cosigned`.
    pub cosigned_proof: Vec<[u8; 32]>,
}

/// A clean-room run's signed result as its controller files it at a node. The node checks that
/// it signed `release` to the result's keys, and the worker's signature over
/// [`room_result_statement`] under the key it released to. It sees no output: only the
/// commitment to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomResultFiled {
    /// The Work-ID.
    pub work: [u8; 32],
    /// SHA-256 of each input's owner-signed manifest, in order, at most
    /// [`limits::MAX_ROOM_INPUTS`].
    pub manifests: Vec<[u8; 32]>,
    /// The commitment to the output.
    pub commitment: [u8; 32],
    /// The nodes the worker blamed, as the result's signature covers them, at most
    /// [`limits::MAX_ROOM_BLAME`] bytes.
    #[serde(with = "serde_bytes")]
    pub blamed: Vec<u8>,
    /// The job's HPKE key.
    pub worker_key: [u8; 32],
    /// The job's result key.
    pub signing_key: [u8; 32],
    /// The worker's signature over the result, 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// This node's release to the job, as it signed it.
    pub release: RoomReleaseProof,
}

/// What a node signed when it released to a clean-room job ([`room_release_statement`]),
/// without the shares: a result carries one per release, so that anyone holding the nodes'
/// audit keys can check that they appraised the key that signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomReleaseProof {
    /// The node.
    pub node: u8,
    /// Its challenge.
    pub nonce: [u8; 32],
    /// The run it counted.
    pub run: u32,
    /// The digest of the shares it sealed ([`room_shares_digest`]).
    pub shares: [u8; 32],
    /// Its audit-key signature over [`room_release_statement`], 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl RoomReleaseProof {
    /// Whether `key`, its node's audit key, signed this release of `work` to a job holding
    /// `worker_key` and `signing_key`.
    pub fn signed_by(
        &self,
        key: &ed25519_dalek::VerifyingKey,
        work: &[u8; 32],
        worker_key: &[u8; 32],
        signing_key: &[u8; 32],
    ) -> bool {
        let statement = room_release_statement(
            self.node,
            work,
            &self.nonce,
            self.run,
            worker_key,
            signing_key,
            &self.shares,
        );
        ed25519_dalek::Signature::from_slice(&self.signature)
            .is_ok_and(|s| key.verify_strict(&statement, &s).is_ok())
    }
}

/// One input image's share as a node releases it to a clean-room worker: the signed manifest
/// and the image share, postcard-encoded together and sealed with HPKE to the worker's key
/// under [`room_purpose`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomShare {
    /// The image.
    pub image: WireId,
    /// HPKE encapsulated key.
    #[serde(with = "serde_bytes")]
    pub enc: Vec<u8>,
    /// The sealed manifest and share.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// What a client asks of a keeper: accounts and sessions, token evaluation, user secrets and
/// signing keys, capabilities, and the owner's rekey and retire orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeeperBody {
    /// Counts and identity.
    Status,
    /// A page of the audit log.
    Audit {
        /// The first entry wanted.
        from: u64,
        /// At most this many (and at most [`limits::MAX_AUDIT_PAGE`]).
        max: u32,
    },
    /// Sign the audit log's head now (a log already ending in a signature is left as is).
    Checkpoint,
    /// To a keeper: hold shares of key version `to` for every token key, `ρ · k_j + z_j` from
    /// the shares of version `from`. Repeating it once done changes nothing.
    KeeperRekey {
        /// The current version.
        from: u32,
        /// The next version.
        to: u32,
        /// One part per token key.
        parts: Vec<KeeperRekeyPart>,
        /// The data owner's signature over the rekey order
        /// (`obscura_sharing::order::Order::Rekey`), 64 bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// To a keeper: erase its shares of a key version.
    KeeperRetire {
        /// The version to erase.
        version: u32,
        /// The data owner's signature over the retire order
        /// (`obscura_sharing::order::Order::Retire`), 64 bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// To a keeper: registration, first step (OPAQUE). Outside a session only while the keeper
    /// has no account, with the cluster's bootstrap code (the first account becomes its
    /// admin); later accounts are registered by an admin, inside the admin's session, and a
    /// user re-registers its own name (a new password) in a fresh session of its own.
    KeeperRegister {
        /// The new account's name.
        user: String,
        /// The OPAQUE registration request.
        #[serde(with = "serde_bytes")]
        request: Vec<u8>,
        /// The cluster's bootstrap code, for the first account only.
        bootstrap: Option<[u8; 32]>,
    },
    /// Registration, last step: the envelope the keeper stores.
    KeeperRegisterFinish {
        /// The account's name.
        user: String,
        /// The OPAQUE registration upload.
        #[serde(with = "serde_bytes")]
        upload: Vec<u8>,
        /// The new account's roles ([`roles`]); ignored for the first account (every role)
        /// and for a password change (the account keeps its roles).
        roles: WireRoles,
        /// The cluster's bootstrap code, for the first account only.
        bootstrap: Option<[u8; 32]>,
    },
    /// Login, first step (OPAQUE KE1). Counted against the account's and the source's
    /// login limits until the login succeeds.
    KeeperLoginStart {
        /// The account's name.
        user: String,
        /// KE1.
        #[serde(with = "serde_bytes")]
        ke1: Vec<u8>,
    },
    /// Login, last step (KE3): opens a session.
    KeeperLoginFinish {
        /// The id the keeper gave the login.
        login: [u8; 16],
        /// KE3.
        #[serde(with = "serde_bytes")]
        ke3: Vec<u8>,
    },
    /// A request sealed in a session: `message` opens to an encoded [`Request`], and the
    /// answer is a [`ResponseBody::KeeperSealed`] holding the encoded [`Response`].
    KeeperSealed {
        /// The session id.
        session: [u8; 16],
        /// The sealed request.
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// In a session: end it.
    KeeperLogout,
    /// In an admin's session: lift a login lockout.
    KeeperUnlock {
        /// The account.
        user: String,
    },
    /// In a session: store this keeper's share of a new secret.
    SecretPut {
        /// Its id (chosen by the client, the same at every keeper).
        id: [u8; 16],
        /// The owner's name for it.
        name: String,
        /// "generate" or "import", for the audit trail.
        origin: String,
        /// This keeper's Shamir share.
        #[serde(with = "serde_bytes")]
        share: Vec<u8>,
    },
    /// In a session: this keeper's share of a secret.
    SecretGet {
        /// Its id.
        id: [u8; 16],
        /// Recorded as an export (the secret leaves the keepers' custody) rather than a use.
        export: bool,
    },
    /// In a session: delete a secret, destroying the key that encrypts it.
    SecretDelete {
        /// Its id.
        id: [u8; 16],
    },
    /// In a session: the user's secrets.
    SecretList,
    /// In a session: the user's own audit trail at this keeper.
    UserEvents,
    /// In a session: start a distributed key generation (FROST, round 1) for a signing key.
    DkgStart {
        /// The key's id, the same at every keeper.
        id: [u8; 16],
        /// The owner's name for it.
        name: String,
    },
    /// In a session: round 2, given every keeper's round-1 package.
    DkgRound2 {
        /// The key's id.
        id: [u8; 16],
        /// Round-1 packages of the other keepers.
        round1: Vec<KeeperPackage>,
    },
    /// In a session: finish, given the round-2 packages addressed to this keeper.
    DkgFinish {
        /// The key's id.
        id: [u8; 16],
        /// Round-1 packages of the other keepers (as in round 2).
        round1: Vec<KeeperPackage>,
        /// Round-2 packages for this keeper, by sender.
        round2: Vec<KeeperPackage>,
    },
    /// In a session: a FROST round-1 commitment for signing with a key.
    SignCommit {
        /// The key.
        id: [u8; 16],
    },
    /// In a session: this keeper's signature share over the signing package (FROST round 2),
    /// with the nonces of its last commitment for that key, which are then forgotten.
    SignShare {
        /// The key.
        id: [u8; 16],
        /// The serialized FROST signing package (message and commitments).
        #[serde(with = "serde_bytes")]
        package: Vec<u8>,
    },
    /// In a session: a FROST round-1 commitment for signing a capability with the cluster's
    /// capability key, and what this keeper will sign for the caller.
    CapabilityCommit,
    /// In a session: this keeper's signature share over a signing package whose message is a
    /// capability for the caller, which the keeper checks against the caller's account.
    CapabilityShare {
        /// The serialized FROST signing package.
        #[serde(with = "serde_bytes")]
        package: Vec<u8>,
    },
    /// To a keeper: evaluate blinded band elements under its shares of the token keys of a key
    /// version. Charged to the client's budget.
    KeeperEvaluate {
        /// Key version.
        version: u32,
        /// One batch per token key, at most [`limits::MAX_KEEPER_ELEMENTS`] elements in all.
        batches: Vec<KeeperBatch>,
    },
    /// Remote attestation, as [`NodeBody::Evidence`]; answered outside any session.
    Evidence {
        /// The verifier's fresh challenge.
        nonce: [u8; 32],
    },
    /// In a session: store a share of a secret that is given out only to attested workers
    /// whose appraisal satisfies `policy` ([`KeeperBody::ReleaseFinish`]), never to the user.
    SecretPutReleased {
        /// Its id.
        id: [u8; 16],
        /// The owner's name for it.
        name: String,
        /// "generate" or "import".
        origin: String,
        /// This keeper's Shamir share.
        #[serde(with = "serde_bytes")]
        share: Vec<u8>,
        /// The release policy (`obscura_attest::Policy`, JSON), at most
        /// [`limits::MAX_EVIDENCE`] bytes.
        #[serde(with = "serde_bytes")]
        policy: Vec<u8>,
    },
    /// In a session: a challenge for releasing secret `id` to a worker, valid for a minute.
    ReleaseStart {
        /// The secret.
        id: [u8; 16],
    },
    /// In a session: release this keeper's share of secret `id`, sealed to the worker whose
    /// evidence binds `party_key` and the challenge.
    ReleaseFinish {
        /// The secret.
        id: [u8; 16],
        /// The challenge [`KeeperBody::ReleaseStart`] gave.
        nonce: [u8; 32],
        /// The worker's HPKE public key.
        party_key: [u8; 32],
        /// The worker's evidence (JSON), at most [`limits::MAX_EVIDENCE`] bytes.
        #[serde(with = "serde_bytes")]
        evidence: Vec<u8>,
    },
    /// Outside any session: this keeper's token-key shares, sealed by the data owner to the HPKE
    /// key its appraised evidence binds, with the owner's signature over the delivery
    /// ([`provision_digest`]). Taken once: a keeper holding other shares of the same keys
    /// refuses.
    Provision {
        /// The keeper's HPKE public key the shares are sealed to.
        party_key: [u8; 32],
        /// HPKE encapsulated key.
        #[serde(with = "serde_bytes")]
        enc: Vec<u8>,
        /// The sealed shares.
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
        /// The data owner's signature (`Order::Provision`).
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Outside any session: this keeper's part of another keeper's token-key shares, for the
    /// data owner's recovery `plan`, sealed to the recovering keeper's key once its `evidence`
    /// passes the plan's policy here, while the plan is within the replay window.
    RecoverPart {
        /// The plan.
        plan: RecoveryPlan,
        /// The recovering keeper's evidence (JSON), binding the plan's key and nonce.
        #[serde(with = "serde_bytes")]
        evidence: Vec<u8>,
        /// The data owner's signature (`Order::Recover`).
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Outside any session: take this keeper's token-key shares back from the helpers' parts,
    /// checking each against the plan's public shares; answered, like a provisioning, with a
    /// receipt under the key sealed to this keeper in `receipt_enc` / `receipt_ciphertext`.
    Recover {
        /// The plan.
        plan: RecoveryPlan,
        /// The data owner's signature (`Order::Recover`).
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
        /// The parts, in the plan's helpers' order.
        parts: Vec<RecoveryPart>,
        /// HPKE encapsulated key of the receipt key.
        #[serde(with = "serde_bytes")]
        receipt_enc: Vec<u8>,
        /// The receipt key, sealed to this keeper ([`recovery_receipt_purpose`]).
        #[serde(with = "serde_bytes")]
        receipt_ciphertext: Vec<u8>,
    },
}

/// `Ok` when `ok`, else [`Error::BadSize`] naming `field`.
fn check(ok: bool, field: &'static str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::BadSize(field))
    }
}

/// A request body: what one kind of server is asked. Each server decodes only its own, so a
/// node cannot even parse a keeper's operations, nor a keeper a node's.
pub trait Body: Serialize + serde::de::DeserializeOwned {
    /// The kind of server that takes these requests, as the byte after the version says it
    /// (so that one server's request is refused whole by the other's decoder, never read as one
    /// of its own operations that happens to share a variant index) and its name in errors.
    const SERVER: (u8, &'static str);

    /// The HTTP path this request is posted to.
    fn path(&self) -> &'static str;

    /// Check the sizes the decoder does not: every list and blob within its limit.
    ///
    /// # Errors
    /// [`Error::BadSize`] naming the field.
    fn validate(&self) -> Result<(), Error>;
}

impl Body for NodeBody {
    const SERVER: (u8, &'static str) = (1, "node");

    fn path(&self) -> &'static str {
        match self {
            NodeBody::Prepare { .. } => "/v1/prepare",
            NodeBody::Commit { .. } => "/v1/commit",
            NodeBody::Delete { .. } => "/v1/delete",
            NodeBody::Lookup { .. } => "/v1/lookup",
            NodeBody::Evaluate { .. } => "/v1/evaluate",
            NodeBody::CheckQuery { .. } => "/v1/check-query",
            NodeBody::Reduce { .. } => "/v1/reduce",
            NodeBody::List { .. } => "/v1/list",
            NodeBody::Fetch { .. } => "/v1/fetch",
            NodeBody::Resolve { .. } => "/v1/resolve",
            NodeBody::Status => "/v1/status",
            NodeBody::Audit { .. } => "/v1/audit",
            NodeBody::Checkpoint => "/v1/checkpoint",
            NodeBody::Rotate { .. } => "/v1/rotate",
            NodeBody::Evidence { .. } => "/v1/evidence",
            NodeBody::RoomChallenge { .. } => "/v1/room-challenge",
            NodeBody::RoomRelease { .. } => "/v1/room-release",
            NodeBody::RoomResult(_) => "/v1/room-result",
            NodeBody::LedgerAppend { .. } => "/v1/ledger-append",
            NodeBody::LedgerHead { .. } => "/v1/ledger-head",
            NodeBody::LedgerRead { .. } => "/v1/ledger-read",
            NodeBody::LedgerCosigned { .. } => "/v1/ledger-cosigned",
            NodeBody::LedgerCheckpoint { .. } => "/v1/ledger-checkpoint",
            NodeBody::LedgerCommit { .. } => "/v1/ledger-commit",
        }
    }

    fn validate(&self) -> Result<(), Error> {
        use limits::*;
        match self {
            NodeBody::Prepare { images, .. } => {
                check((1..=MAX_BATCH).contains(&images.len()), "images")?;
                let mut total = 0usize;
                for img in images {
                    check(
                        !img.manifest.is_empty() && img.manifest.len() <= MAX_MANIFEST,
                        "manifest",
                    )?;
                    total = total.saturating_add(img.image_share.len());
                    check(
                        !img.image_share.is_empty() && total <= MAX_IMAGE_SHARE,
                        "image_share",
                    )?;
                    check(img.hash_share.len() == HASH_SHARE_LEN, "hash_share")?;
                    check(img.tokens.len() == TOKENS_PER_IMAGE, "tokens")?;
                    check(
                        img.elements.is_empty() || img.elements.len() == TOKENS_PER_IMAGE,
                        "elements",
                    )?;
                }
                Ok(())
            }
            NodeBody::Commit { images } => check((1..=MAX_BATCH).contains(&images.len()), "images"),
            NodeBody::Lookup { tokens, .. } => check(tokens.len() <= MAX_LOOKUP_TOKENS, "tokens"),
            NodeBody::Evaluate {
                query_share,
                scan,
                candidates,
                share_digests,
                checks,
                ..
            } => {
                check(query_share.len() == HASH_SHARE_LEN, "query_share")?;
                check(candidates.len() <= MAX_CANDIDATES, "candidates")?;
                check(scan.count as usize <= MAX_SCAN, "scan")?;
                check(share_digests.len() <= MAX_NODES, "share_digests")?;
                check(checks.len() <= MAX_NODES, "checks")?;
                for c in checks {
                    check(
                        c.degree.len() <= MAX_CHECK_VALUES && c.bits.len() <= MAX_CHECK_VALUES,
                        "check values",
                    )?;
                    check(c.signature.len() == 64, "check signature")?;
                }
                Ok(())
            }
            NodeBody::Reduce { openings, .. } => {
                check(openings.len() <= MAX_NODES, "openings")?;
                check(
                    openings.iter().all(|o| {
                        o.values.len() <= MAX_CANDIDATES * MAX_OPENED_WIDTH
                            && o.signature.len() == 64
                    }),
                    "opening",
                )
            }
            NodeBody::CheckQuery {
                query_share,
                scan,
                share_digests,
                ..
            } => {
                check(query_share.len() == HASH_SHARE_LEN, "query_share")?;
                check(scan.count as usize <= MAX_SCAN, "scan")?;
                check(share_digests.len() <= MAX_NODES, "share_digests")
            }
            NodeBody::Fetch { by } => match by {
                FetchBy::Match(proof) => proof.validate(),
                FetchBy::Owner { .. } | FetchBy::Grant { .. } => Ok(()),
            },
            NodeBody::Resolve { proofs } => {
                check((1..=MAX_PROOFS).contains(&proofs.len()), "proofs")?;
                proofs.iter().try_for_each(MatchProof::validate)
            }
            NodeBody::Audit { max, .. } => check(*max <= MAX_AUDIT_PAGE, "max"),
            NodeBody::RoomRelease {
                images,
                policy,
                approval,
                evidence,
                ..
            } => {
                check((1..=MAX_ROOM_INPUTS).contains(&images.len()), "images")?;
                check(policy.len() <= MAX_EVIDENCE, "policy")?;
                check(approval.len() == 64, "approval")?;
                check(evidence.len() <= MAX_EVIDENCE, "evidence")
            }
            NodeBody::RoomResult(RoomResultFiled {
                manifests,
                blamed,
                signature,
                release,
                ..
            }) => {
                check(
                    (1..=MAX_ROOM_INPUTS).contains(&manifests.len()),
                    "manifests",
                )?;
                check(blamed.len() <= MAX_ROOM_BLAME, "blamed")?;
                check(signature.len() == 64, "signature")?;
                check(release.signature.len() == 64, "release")
            }
            NodeBody::LedgerAppend { entries, .. } => {
                check(entries.len() <= MAX_LEDGER_BATCH, "entries")?;
                check(entries.iter().all(|e| e.signature.len() == 64), "signature")
            }
            NodeBody::LedgerRead { max, .. } => check(*max as usize <= MAX_LEDGER_BATCH, "max"),
            NodeBody::LedgerCommit { stored, .. } => check(
                stored.len() <= MAX_COSIGNATURES && stored.iter().all(|c| c.signature.len() == 64),
                "stored",
            ),
            NodeBody::LedgerCosigned { head } => check(
                head.cosignatures.len() <= MAX_COSIGNATURES
                    && head.cosignatures.iter().all(|c| c.signature.len() == 64),
                "cosignatures",
            ),
            NodeBody::LedgerHead { .. }
            | NodeBody::LedgerCheckpoint { .. }
            | NodeBody::RoomChallenge { .. }
            | NodeBody::Delete { .. }
            | NodeBody::List { .. }
            | NodeBody::Rotate { .. }
            | NodeBody::Status
            | NodeBody::Evidence { .. }
            | NodeBody::Checkpoint => Ok(()),
        }
    }
}

impl Body for KeeperBody {
    const SERVER: (u8, &'static str) = (2, "keeper");

    fn path(&self) -> &'static str {
        match self {
            KeeperBody::Status => "/v1/status",
            KeeperBody::Audit { .. } => "/v1/audit",
            KeeperBody::Checkpoint => "/v1/checkpoint",
            KeeperBody::KeeperEvaluate { .. } => "/v1/keeper-evaluate",
            KeeperBody::KeeperRekey { .. } => "/v1/keeper-rekey",
            KeeperBody::KeeperRetire { .. } => "/v1/keeper-retire",
            KeeperBody::KeeperRegister { .. } => "/v1/keeper-register",
            KeeperBody::KeeperRegisterFinish { .. } => "/v1/keeper-register-finish",
            KeeperBody::KeeperLoginStart { .. } => "/v1/keeper-login-start",
            KeeperBody::KeeperLoginFinish { .. } => "/v1/keeper-login-finish",
            KeeperBody::KeeperSealed { .. } => "/v1/keeper-sealed",
            KeeperBody::KeeperLogout => "/v1/keeper-logout",
            KeeperBody::KeeperUnlock { .. } => "/v1/keeper-unlock",
            KeeperBody::SecretPut { .. } => "/v1/secret-put",
            KeeperBody::SecretGet { .. } => "/v1/secret-get",
            KeeperBody::SecretDelete { .. } => "/v1/secret-delete",
            KeeperBody::SecretList => "/v1/secret-list",
            KeeperBody::UserEvents => "/v1/user-events",
            KeeperBody::DkgStart { .. } => "/v1/dkg-start",
            KeeperBody::DkgRound2 { .. } => "/v1/dkg-round2",
            KeeperBody::DkgFinish { .. } => "/v1/dkg-finish",
            KeeperBody::SignCommit { .. } => "/v1/sign-commit",
            KeeperBody::SignShare { .. } => "/v1/sign-share",
            KeeperBody::CapabilityCommit => "/v1/capability-commit",
            KeeperBody::CapabilityShare { .. } => "/v1/capability-share",
            KeeperBody::Evidence { .. } => "/v1/evidence",
            KeeperBody::SecretPutReleased { .. } => "/v1/secret-put-released",
            KeeperBody::ReleaseStart { .. } => "/v1/release-start",
            KeeperBody::ReleaseFinish { .. } => "/v1/release-finish",
            KeeperBody::Provision { .. } => "/v1/provision",
            KeeperBody::RecoverPart { .. } => "/v1/recover-part",
            KeeperBody::Recover { .. } => "/v1/recover",
        }
    }

    fn validate(&self) -> Result<(), Error> {
        use limits::*;
        match self {
            KeeperBody::KeeperEvaluate { batches, .. } => {
                let total = batches.iter().try_fold(0usize, |acc, b| {
                    (!b.elements.is_empty()).then_some(acc + b.elements.len())
                });
                check(!batches.is_empty(), "batches")?;
                check(total.is_some_and(|t| t <= MAX_KEEPER_ELEMENTS), "elements")
            }
            KeeperBody::KeeperRekey { parts, .. } => {
                check((1..=255).contains(&parts.len()), "parts")?;
                check(
                    parts
                        .iter()
                        .all(|p| (1..=255).contains(&p.zero_commitments.len())),
                    "zero_commitments",
                )
            }
            KeeperBody::Audit { max, .. } => check(*max <= MAX_AUDIT_PAGE, "max"),
            KeeperBody::KeeperRegister {
                user,
                request: blob,
                ..
            }
            | KeeperBody::KeeperRegisterFinish {
                user, upload: blob, ..
            }
            | KeeperBody::KeeperLoginStart { user, ke1: blob } => {
                check(
                    !user.is_empty() && user.len() <= account_limits::MAX_USER,
                    "user",
                )?;
                check(blob.len() <= account_limits::MAX_BLOB, "message")
            }
            KeeperBody::KeeperUnlock { user } => check(
                !user.is_empty() && user.len() <= account_limits::MAX_USER,
                "user",
            ),
            KeeperBody::KeeperLoginFinish { ke3, .. } => {
                check(ke3.len() <= account_limits::MAX_BLOB, "ke3")
            }
            KeeperBody::KeeperSealed { message, .. } => {
                check(message.len() <= account_limits::MAX_SEALED, "message")
            }
            KeeperBody::SecretPut {
                name,
                share,
                origin,
                ..
            } => {
                check(name.len() <= account_limits::MAX_NAME, "name")?;
                check(origin.len() <= 16, "origin")?;
                check(share.len() <= account_limits::MAX_BLOB, "share")
            }
            KeeperBody::DkgStart { name, .. } => {
                check(name.len() <= account_limits::MAX_NAME, "name")
            }
            KeeperBody::DkgRound2 { round1, .. } => {
                check(round1.len() <= 255, "round1")?;
                check(
                    round1
                        .iter()
                        .all(|p| p.bytes.len() <= account_limits::MAX_BLOB),
                    "package",
                )
            }
            KeeperBody::DkgFinish { round1, round2, .. } => {
                check(round1.len() <= 255 && round2.len() <= 255, "packages")?;
                check(
                    round1
                        .iter()
                        .chain(round2)
                        .all(|p| p.bytes.len() <= account_limits::MAX_BLOB),
                    "package",
                )
            }
            KeeperBody::SecretPutReleased {
                name,
                share,
                origin,
                policy,
                ..
            } => {
                check(name.len() <= account_limits::MAX_NAME, "name")?;
                check(origin.len() <= 16, "origin")?;
                check(share.len() <= account_limits::MAX_BLOB, "share")?;
                check(policy.len() <= MAX_EVIDENCE, "policy")
            }
            KeeperBody::ReleaseFinish { evidence, .. } => {
                check(evidence.len() <= MAX_EVIDENCE, "evidence")
            }
            KeeperBody::Provision {
                enc,
                ciphertext,
                signature,
                ..
            } => {
                check(enc.len() <= 64, "enc")?;
                check(ciphertext.len() <= account_limits::MAX_BLOB, "ciphertext")?;
                check(signature.len() <= 64, "signature")
            }
            KeeperBody::RecoverPart {
                plan,
                evidence,
                signature,
            } => {
                plan.validate()?;
                check(evidence.len() <= MAX_EVIDENCE, "evidence")?;
                check(signature.len() <= 64, "signature")
            }
            KeeperBody::Recover {
                plan,
                signature,
                parts,
                receipt_enc,
                receipt_ciphertext,
            } => {
                plan.validate()?;
                check(signature.len() <= 64, "signature")?;
                check(receipt_enc.len() <= 64, "receipt_enc")?;
                check(receipt_ciphertext.len() <= 256, "receipt_ciphertext")?;
                check(parts.len() == plan.helpers.len(), "parts")?;
                for p in parts {
                    check(p.enc.len() <= 64, "enc")?;
                    check(p.ciphertext.len() <= account_limits::MAX_BLOB, "ciphertext")?;
                    check(
                        p.masks.len() <= MAX_NODES
                            && p.masks.iter().all(|m| m.len() < plan.helpers.len()),
                        "masks",
                    )?;
                }
                Ok(())
            }
            KeeperBody::SignShare { package, .. } | KeeperBody::CapabilityShare { package } => {
                check(package.len() <= account_limits::MAX_BLOB, "package")
            }
            KeeperBody::KeeperLogout
            | KeeperBody::SecretGet { .. }
            | KeeperBody::ReleaseStart { .. }
            | KeeperBody::SecretDelete { .. }
            | KeeperBody::SecretList
            | KeeperBody::UserEvents
            | KeeperBody::SignCommit { .. }
            | KeeperBody::CapabilityCommit => Ok(()),
            KeeperBody::KeeperRetire { .. }
            | KeeperBody::Status
            | KeeperBody::Evidence { .. }
            | KeeperBody::Checkpoint => Ok(()),
        }
    }
}

impl MatchProof {
    fn validate(&self) -> Result<(), Error> {
        use limits::*;
        let ok = (1..=MAX_OPENINGS).contains(&self.openings.len())
            && self
                .openings
                .iter()
                .all(|o| o.path.len() <= MAX_PATH && o.signature.len() == 64);
        if ok {
            Ok(())
        } else {
            Err(Error::BadSize("match proof"))
        }
    }
}

/// A request: id and time for the replay window, the operation, and (to a node) the caller's
/// credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request<B> {
    /// A fresh random id per request.
    pub request_id: [u8; 16],
    /// The client's clock, Unix seconds.
    pub timestamp: u64,
    /// The operation: a [`NodeBody`] to a node, a [`KeeperBody`] to a keeper.
    pub body: B,
    /// To a node: the caller's capability and its signature over this request. Keepers take
    /// none: their requests run in OPAQUE sessions.
    pub auth: Option<Auth>,
}

/// The digest a capability holder signs for a request to node `node`: the node's number, the
/// request id and time, and the body as encoded, under their own domain.
pub fn request_digest(
    node: u8,
    request_id: &[u8; 16],
    timestamp: u64,
    body: &NodeBody,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 request signature v1");
    h.update(&[node]);
    h.update(request_id);
    h.update(&timestamp.to_be_bytes());
    let hasher = postcard::serialize_with_flavor(body, Hashing::new(h))
        .expect("hashing an encoding cannot fail");
    *hasher.finalize().as_bytes()
}

/// The digest of a rotation plan that the owner's rekey order signs: every token key's `ρ` and
/// zero-share commitments, which every keeper receives alike (each keeper's own zero share is
/// not part of it).
pub fn rekey_digest(from: u32, to: u32, parts: &[KeeperRekeyPart]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 rekey plan v1");
    h.update(&from.to_be_bytes());
    h.update(&to.to_be_bytes());
    h.update(&(parts.len() as u64).to_be_bytes());
    for p in parts {
        h.update(&[p.node]);
        h.update(&p.factor);
        h.update(&(p.zero_commitments.len() as u64).to_be_bytes());
        for c in &p.zero_commitments {
            h.update(c);
        }
    }
    *h.finalize().as_bytes()
}

/// What the data owner signs to deliver token-key shares to a keeper
/// ([`KeeperBody::Provision`]): the sealed delivery.
pub fn provision_digest(enc: &[u8], ciphertext: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 keeper provisioning v1");
    h.update(&(enc.len() as u64).to_be_bytes());
    h.update(enc);
    h.update(ciphertext);
    *h.finalize().as_bytes()
}

impl RecoveryPlan {
    fn validate(&self) -> Result<(), Error> {
        check((2..=255).contains(&self.helpers.len()), "helpers")?;
        check(self.helper_keys.len() == self.helpers.len(), "helper_keys")?;
        check(
            self.helpers
                .iter()
                .enumerate()
                .all(|(a, &h)| h != 0 && h != self.keeper && !self.helpers[..a].contains(&h)),
            "helpers",
        )?;
        check(
            self.public_shares.len() <= limits::MAX_NODES
                && self.public_shares.iter().all(|p| p.len() <= 255),
            "public_shares",
        )?;
        check(self.policy.len() <= limits::MAX_EVIDENCE, "policy")
    }
}

/// What the data owner signs to have keepers give a keeper its token-key shares back
/// ([`RecoveryPlan`]): the digest of the whole plan. The nonce the recovering keeper's evidence
/// binds is in it, so the evidence and the plan go together.
pub fn recovery_digest(plan: &RecoveryPlan) -> [u8; 32] {
    let bytes = postcard::to_allocvec(plan).expect("a plan encodes");
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 keeper recovery plan v1");
    h.update(&bytes);
    *h.finalize().as_bytes()
}

/// The HPKE purpose of helper `helper`'s part, sealed to keeper `keeper`, in the recovery with
/// plan digest `plan`: a part opens only for the recovery and the helper it was made in.
pub fn recovery_purpose(keeper: u8, helper: u8, plan: &[u8; 32]) -> Vec<u8> {
    [
        b"obscura keeper recovery part v1".as_slice(),
        &[keeper, helper],
        plan,
    ]
    .concat()
}

/// The HPKE purpose of the receipt key the data owner seals to keeper `keeper` in the recovery
/// with plan digest `plan`.
pub fn recovery_receipt_purpose(keeper: u8, plan: &[u8; 32]) -> Vec<u8> {
    [
        b"obscura keeper recovery receipt v1".as_slice(),
        &[keeper],
        plan,
    ]
    .concat()
}

/// The tag of helper `helper`'s part in the recovery with plan digest `plan`, keyed by the
/// X25519 secret of the helper's attested key and the recovering keeper's: over the sealed
/// contributions and the mask commitments.
pub fn recovery_part_tag(
    shared: &[u8; 32],
    plan: &[u8; 32],
    helper: u8,
    enc: &[u8],
    ciphertext: &[u8],
    masks: &[Vec<WireElement>],
) -> [u8; 32] {
    let key = blake3::derive_key("obscura 2026 recovery part tag key v1", shared);
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(plan);
    h.update(&[helper]);
    for field in [enc, ciphertext] {
        h.update(&(field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.update(&(masks.len() as u64).to_be_bytes());
    for per in masks {
        h.update(&(per.len() as u64).to_be_bytes());
        for m in per {
            h.update(m);
        }
    }
    *h.finalize().as_bytes()
}

/// A recovering keeper's proof of its verdict on the parts ([`ResponseBody::RecoveryRefused`]):
/// keyed by the receipt key the data owner sealed to it, so only the appraised keeper can
/// blame a helper.
pub fn recovery_verdict(key: &[u8; 32], keeper: u8, blamed: &[u8], reason: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"obscura 2026 recovery verdict v1");
    h.update(&[keeper]);
    h.update(&(blamed.len() as u64).to_be_bytes());
    h.update(blamed);
    h.update(reason.as_bytes());
    *h.finalize().as_bytes()
}

/// The digest of a clean-room work's input images, in order, as the data owner's approval
/// names them.
pub fn room_inputs_digest(images: &[WireId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 room inputs v1");
    h.update(&(images.len() as u64).to_be_bytes());
    for image in images {
        h.update(image);
    }
    *h.finalize().as_bytes()
}

/// The digest of the attestation policy (its bytes as sent) an approval names.
pub fn room_policy_digest(policy: &[u8]) -> [u8; 32] {
    blake3::derive_key("obscura 2026 room policy v1", policy)
}

/// The digest of the cluster a clean-room worker trusts: the data owner's key, which signs
/// every manifest, and every node's audit key, which signs every release, node 1 first. It is
/// in the worker's attestation context, so a worker whose host gave it other keys (and fed it
/// images of its own making) is refused by every node.
pub fn room_cluster_digest(owner: &[u8; 32], nodes: &[[u8; 32]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 room cluster v1");
    h.update(owner);
    h.update(&(nodes.len() as u64).to_be_bytes());
    for n in nodes {
        h.update(n);
    }
    *h.finalize().as_bytes()
}

/// The attestation context a clean-room worker's evidence binds (as role `work:<Work-ID>`):
/// the Work-ID, the key the worker signs the result with, and the cluster it trusts
/// ([`room_cluster_digest`]), so all three come from the appraised environment.
pub fn room_context(work: &[u8; 32], signing_key: &[u8; 32], cluster: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 room worker context v2");
    h.update(work);
    h.update(signing_key);
    h.update(cluster);
    *h.finalize().as_bytes()
}

/// The HPKE purpose of node `node`'s share of `image`, released for work `work` under the
/// node's challenge `nonce`: a sealed share opens only for that release.
pub fn room_purpose(node: u8, work: &[u8; 32], nonce: &[u8; 32], image: &WireId) -> Vec<u8> {
    [
        b"obscura room release v1".as_slice(),
        &[node],
        work,
        nonce,
        image,
    ]
    .concat()
}

/// The digest of a release's sealed shares, in order.
pub fn room_shares_digest(shares: &[RoomShare]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 room release shares v1");
    h.update(&(shares.len() as u64).to_be_bytes());
    for s in shares {
        h.update(&s.image);
        h.update(&(s.enc.len() as u64).to_be_bytes());
        h.update(&s.enc);
        h.update(&(s.ciphertext.len() as u64).to_be_bytes());
        h.update(&s.ciphertext);
    }
    *h.finalize().as_bytes()
}

/// What a node signs with its audit key when it releases shares to a clean-room worker: the
/// node, the work, its challenge, the run, the worker's two keys it appraised, and the digest
/// of the sealed shares ([`room_shares_digest`]). A result's recipient checks these signatures
/// to know its signing key is one the nodes appraised.
pub fn room_release_statement(
    node: u8,
    work: &[u8; 32],
    nonce: &[u8; 32],
    run: u32,
    worker_key: &[u8; 32],
    signing_key: &[u8; 32],
    shares: &[u8; 32],
) -> Vec<u8> {
    let mut out = b"obscura 2026 room release statement v2".to_vec();
    out.push(node);
    out.extend_from_slice(work);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&run.to_be_bytes());
    out.extend_from_slice(worker_key);
    out.extend_from_slice(signing_key);
    out.extend_from_slice(shares);
    out
}

/// What a clean-room worker signs over its result: the Work-ID, the digest of every input's
/// owner-signed manifest in order, the commitment to the output (SHA-256 of a random salt and
/// the output, the salt sealed with the output, so the output cannot be guessed from it), and
/// the nodes it blamed (`blamed`: their encoding, as the result carries them).
pub fn room_result_statement(
    work: &[u8; 32],
    manifests: &[[u8; 32]],
    commitment: &[u8; 32],
    blamed: &[u8],
) -> Vec<u8> {
    let mut out = b"obscura 2026 room result v2".to_vec();
    out.extend_from_slice(work);
    out.extend_from_slice(&(manifests.len() as u64).to_be_bytes());
    for m in manifests {
        out.extend_from_slice(m);
    }
    out.extend_from_slice(commitment);
    out.extend_from_slice(&(blamed.len() as u64).to_be_bytes());
    out.extend_from_slice(blamed);
    out
}

/// What a helper's masks are derived under for one token key of a recovery: the plan, the key
/// and the version, so that no two keys or recoveries share a mask.
pub fn recovery_label(plan: &[u8; 32], node: u8, version: u32) -> Vec<u8> {
    [
        b"obscura keeper recovery mask v1".as_slice(),
        plan,
        &[node],
        &version.to_be_bytes(),
    ]
    .concat()
}

/// A keeper's receipt for a delivery of token-key shares: keyed by the receipt key sealed in it,
/// over the keeper and the public shares of what it holds.
pub fn provision_receipt(
    key: &[u8; 32],
    keeper: u8,
    public_shares: &[(u8, u32, WireElement)],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"obscura 2026 provisioning receipt v1");
    h.update(&[keeper]);
    h.update(&(public_shares.len() as u64).to_be_bytes());
    for (node, version, point) in public_shares {
        h.update(&[*node]);
        h.update(&version.to_be_bytes());
        h.update(point);
    }
    *h.finalize().as_bytes()
}

/// A postcard output that hashes instead of storing, so a large body is digested without a copy.
struct Hashing {
    hasher: blake3::Hasher,
    /// Bytes not yet hashed: serde hands arrays (and a `Vec<u8>` without `serde_bytes`) over
    /// one byte at a time, and BLAKE3 is fast only on long inputs (one byte per update made a
    /// 2 MB upload cost 40 ms).
    pending: Vec<u8>,
}

impl Hashing {
    const CHUNK: usize = 16 << 10;

    fn new(hasher: blake3::Hasher) -> Hashing {
        Hashing {
            hasher,
            pending: Vec::with_capacity(Self::CHUNK),
        }
    }

    fn flush(&mut self) {
        self.hasher.update(&self.pending);
        self.pending.clear();
    }
}

impl postcard::ser_flavors::Flavor for Hashing {
    type Output = blake3::Hasher;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.pending.len() == Self::CHUNK {
            self.flush();
        }
        self.pending.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.pending.len() + data.len() > Self::CHUNK {
            self.flush();
        }
        if data.len() >= Self::CHUNK {
            self.hasher.update(data);
        } else {
            self.pending.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<blake3::Hasher> {
        self.flush();
        Ok(self.hasher)
    }
}

/// Why a node refused a request; the HTTP status is derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed.
    BadRequest,
    /// A protocol version the node does not speak.
    UnsupportedVersion,
    /// The request id was seen before.
    Replay,
    /// The request's time is outside the node's window.
    Stale,
    /// No such image.
    UnknownImage,
    /// The image id is taken.
    AlreadyExists,
    /// The shares do not match the owner-signed manifest, or the manifest is not the owner's.
    Rejected,
    /// The node failed; nothing was written.
    Internal,
    /// A keeper refused: the client's evaluation budget for the current window is spent.
    OverBudget,
    /// A keeper holds no share of a requested key (node or version).
    UnknownKey,
    /// A keeper operation needs a session: log in (or the session expired or was ended).
    NoSession,
    /// The login failed: wrong password or unknown account (the keeper does not say which).
    LoginFailed,
    /// Too many failed logins for the account or from the source: wait `message`'s delay, or
    /// the account is locked until an admin lifts it.
    TooManyAttempts,
    /// The account may not do this (an admin operation).
    Forbidden,
    /// The keeper refuses to serve: its store is older than its state counter (restored from
    /// an old copy) until an admin accepts it.
    RolledBack,
    /// A node request without a valid capability, or whose signature is not the capability
    /// holder's for this request: log in again.
    Unauthorized,
    /// The caller asked more of this node than its capability's limits allow this hour.
    RateLimited,
    /// The request body is larger than the server takes for this operation.
    TooLarge,
    /// The server's disk is full: it refused a write, and nothing of it was written. Reads go
    /// on while the server's reserve of free space lasts.
    StorageFull,
}

/// One audit entry on the wire (see [`audit::AuditEntry`], which converts to and from it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAuditEntry {
    /// Position from 0.
    pub seq: u64,
    /// Previous entry's hash.
    pub prev: [u8; 32],
    /// This entry's hash.
    pub hash: [u8; 32],
    /// Node time.
    pub time: u64,
    /// Kind tag.
    pub kind: u8,
    /// Image or request id.
    pub subject: [u8; 16],
    /// Kind-specific detail.
    #[serde(with = "serde_bytes")]
    pub detail: Vec<u8>,
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// Done (prepare, commit, delete).
    Ok,
    /// Stage-1 candidates.
    Lookup {
        /// Committed images matching in enough bands, as handles of this query.
        handles: Vec<WireId>,
        /// Images matching at least one token (before the band count).
        matched: u32,
    },
    /// A node's Stage-2 answer, after the last round ([`NodeBody::Reduce`]): values aligned
    /// with the request's candidates, `None` where the node holds no committed image of that
    /// handle.
    Evaluate {
        /// The answering node.
        node: u8,
        /// The node's shares of `(h, g)` per candidate (`obscura_mpc`), field elements below
        /// 2^31 − 1.
        values: Vec<Option<[u32; 2]>>,
        /// The key from which each value's commitment leaf is keyed; the caller reveals one
        /// leaf's key, never this, to prove one match.
        answer_key: [u8; 32],
        /// The node's Ed25519 signature over the commitment to these values, 64 bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Manifests of resolved matches, aligned with the request's proofs (`None`: the proof did
    /// not hold, or no such image).
    Resolved {
        /// Owner-signed manifests.
        manifests: Vec<Option<Vec<u8>>>,
    },
    /// The node's cosignature of its ledger head after an append.
    LedgerAppended(Box<LedgerAppended>),
    /// A node's ledger heads.
    LedgerHead(Box<LedgerHeads>),
    /// A node's cosignature of the head it committed to.
    LedgerCommitted {
        /// Its cosignature.
        cosignature: obscura_ledger::head::Cosignature,
    },
    /// A page of the ledger.
    LedgerEntries {
        /// From the request's `from`, at most [`limits::MAX_LEDGER_BATCH`].
        entries: Vec<obscura_ledger::entry::Entry>,
        /// Entries the node holds.
        size: u64,
    },
    /// The audit log's head was signed.
    Checkpointed {
        /// The checkpoint's position.
        seq: u64,
    },
    /// A committed image's parts.
    Fetch {
        /// The owner-signed manifest.
        #[serde(with = "serde_bytes")]
        manifest: Vec<u8>,
        /// The node's share.
        #[serde(with = "serde_bytes")]
        image_share: Vec<u8>,
    },
    /// Node status.
    Status {
        /// Node number.
        node: u8,
        /// Committed images.
        committed: u64,
        /// Pending images.
        pending: u64,
        /// Audit entries.
        audit_entries: u64,
        /// Token-key versions: a node's served version, then the one it is moving to; the
        /// versions a keeper holds shares of, oldest first.
        key_versions: Vec<u32>,
    },
    /// A page of the audit log.
    Audit {
        /// Oldest first, from the page's first entry.
        entries: Vec<WireAuditEntry>,
        /// Entries in the whole log.
        total: u64,
    },
    /// A keeper's evaluations, one per batch of the request, in its order.
    KeeperEvaluated {
        /// The answering keeper, 1..=m.
        keeper: u8,
        /// Per batch.
        batches: Vec<KeeperEvaluation>,
    },
    /// Where a node's token-key rotation stands.
    Rotation {
        /// The answering node.
        node: u8,
        /// The version it serves.
        current: u32,
        /// The version it is moving to, if it is.
        next: Option<u32>,
        /// Images whose postings moved in this rotation so far.
        moved: u64,
        /// Images stored when the rotation began (the work to do, roughly).
        total: u64,
        /// Postings (tokens of committed images) moved so far.
        postings: u64,
        /// Every image has moved.
        done: bool,
    },
    /// A keeper's public shares of the next version's token keys, aligned with the request's
    /// parts, so the operator can check them before anyone relies on them.
    KeeperRekeyed {
        /// The answering keeper.
        keeper: u8,
        /// `k'_j · G` per token key.
        public_shares: Vec<WireElement>,
    },
    /// Registration, second step: the OPAQUE registration response.
    KeeperRegistration {
        /// The response.
        #[serde(with = "serde_bytes")]
        response: Vec<u8>,
    },
    /// Login, second step: KE2 and the id of the pending login.
    KeeperLoginStarted {
        /// The login's id, to send back with KE3.
        login: [u8; 16],
        /// KE2.
        #[serde(with = "serde_bytes")]
        ke2: Vec<u8>,
    },
    /// A session is open.
    KeeperSession {
        /// Its id.
        session: [u8; 16],
        /// When it expires (keeper time, Unix seconds).
        expires_at: u64,
    },
    /// The sealed answer to a [`KeeperBody::KeeperSealed`].
    KeeperSealed {
        /// Opens to an encoded [`Response`].
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// A secret's share at this keeper.
    Secret {
        /// The answering keeper.
        keeper: u8,
        /// The owner's name for it.
        name: String,
        /// The share.
        #[serde(with = "serde_bytes")]
        share: Vec<u8>,
    },
    /// The user's secrets at this keeper.
    Secrets {
        /// Oldest first.
        items: Vec<SecretInfo>,
    },
    /// The user's audit trail at this keeper.
    Events {
        /// Oldest first.
        events: Vec<UserEvent>,
    },
    /// A key generation package from the answering keeper (round 1: its broadcast package;
    /// round 2: one encrypted package per other keeper).
    DkgPackages {
        /// The answering keeper.
        keeper: u8,
        /// Round 1: one package, `keeper` itself; round 2: one per recipient.
        packages: Vec<KeeperPackage>,
    },
    /// Key generation done at the answering keeper.
    DkgDone {
        /// The answering keeper.
        keeper: u8,
        /// The group's Ed25519 public key.
        public_key: [u8; 32],
        /// The serialized FROST public key package (every keeper's verifying share).
        #[serde(with = "serde_bytes")]
        public_package: Vec<u8>,
    },
    /// A FROST round-1 commitment (serialized), with the key's public package.
    SignCommitment {
        /// The answering keeper.
        keeper: u8,
        /// The commitment.
        #[serde(with = "serde_bytes")]
        commitment: Vec<u8>,
        /// The serialized FROST public key package of the key, as this keeper holds it.
        #[serde(with = "serde_bytes")]
        public_package: Vec<u8>,
    },
    /// A FROST round-1 commitment for a capability, and what the keeper will sign for the
    /// caller.
    CapabilityOffer {
        /// The answering keeper.
        keeper: u8,
        /// The commitment.
        #[serde(with = "serde_bytes")]
        commitment: Vec<u8>,
        /// The caller's roles at this keeper.
        roles: WireRoles,
        /// The limits the keeper signs for those roles.
        limits: Limits,
        /// The latest expiry the keeper signs (its clock, Unix seconds).
        expires_at: u64,
        /// The capability key's public package (every keeper's verifying share).
        #[serde(with = "serde_bytes")]
        public_package: Vec<u8>,
    },
    /// A FROST signature share (serialized).
    SignatureShare {
        /// The answering keeper.
        keeper: u8,
        /// The share.
        #[serde(with = "serde_bytes")]
        share: Vec<u8>,
    },
    /// Refused.
    Error {
        /// Why.
        code: ErrorCode,
        /// For people.
        message: String,
    },
    /// This node's signed check of a query.
    QueryChecked {
        /// The check.
        check: WireCheck,
    },
    /// This node's signed openings of a Stage-2 round.
    Opened {
        /// The openings.
        opened: WireOpened,
    },
    /// Every committed image as a handle of the query, sorted.
    Listed {
        /// The handles.
        handles: Vec<WireId>,
    },
    /// A release challenge ([`KeeperBody::ReleaseStart`]).
    ReleaseChallenge {
        /// The nonce the worker's evidence must bind.
        nonce: [u8; 32],
    },
    /// A node's clean-room challenge ([`NodeBody::RoomChallenge`]).
    RoomChallenge {
        /// The nonce the worker's evidence must bind.
        nonce: [u8; 32],
    },
    /// A node's shares of a work's inputs, sealed to the appraised worker
    /// ([`NodeBody::RoomRelease`]).
    RoomReleased {
        /// The node.
        node: u8,
        /// Which run of the work this is at this node, from 1.
        run: u32,
        /// One per input, in the work's order.
        shares: Vec<RoomShare>,
        /// The node's audit-key signature over [`room_release_statement`], 64 bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// A keeper's share of a secret, sealed to an appraised worker ([`KeeperBody::ReleaseFinish`]).
    Released {
        /// The keeper.
        keeper: u8,
        /// HPKE encapsulated key.
        #[serde(with = "serde_bytes")]
        enc: Vec<u8>,
        /// The sealed share.
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
        /// The keeper's audit-key signature over the release
        /// (`obscura_attest::binding::release_statement`).
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// The public shares of the token-key shares a keeper now holds from a
    /// [`KeeperBody::Provision`], as `(node, version, k_j · G)`, for the owner to check before
    /// forgetting them.
    Provisioned {
        /// The keeper.
        keeper: u8,
        /// What it holds.
        public_shares: Vec<(u8, u32, WireElement)>,
        /// [`provision_receipt`] under the receipt key sealed in the delivery: proof that the
        /// holder of the appraised key opened it.
        receipt: [u8; 32],
    },
    /// A server's attestation evidence ([`NodeBody::Evidence`], [`KeeperBody::Evidence`]).
    Evidence {
        /// The server's HPKE public key (X25519), made at its start.
        party_key: [u8; 32],
        /// The evidence, JSON (`obscura_attest::Evidence`), at most
        /// [`limits::MAX_EVIDENCE`] bytes.
        #[serde(with = "serde_bytes")]
        evidence: Vec<u8>,
    },
    /// A helper's part of a recovery ([`KeeperBody::RecoverPart`]).
    RecoveryPart(RecoveryPart),
    /// A recovering keeper refuses the parts ([`KeeperBody::Recover`]) because those of
    /// `blamed` do not check (one helper: its part is wrong; two: they disagree on the mask they
    /// share, and one of them lied), with [`recovery_verdict`] under the receipt key.
    RecoveryRefused {
        /// The keeper.
        keeper: u8,
        /// The helpers at fault.
        #[serde(with = "serde_bytes")]
        blamed: Vec<u8>,
        /// Why, for people.
        reason: String,
        /// [`recovery_verdict`].
        proof: [u8; 32],
    },
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub ResponseBody);

/// `MAGIC ‖ VERSION ‖ header ‖ postcard(value)`.
fn encode<T: Serialize>(value: &T, header: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(header);
    postcard::to_extend(value, out).expect("encoding into a Vec cannot fail")
}

/// What follows the magic and a version this build speaks.
fn payload(bytes: &[u8]) -> Result<&[u8], Error> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(Error::BadMagic)?;
    if rest.len() < 2 {
        return Err(Error::Malformed("truncated header".into()));
    }
    let version = u16::from_be_bytes([rest[0], rest[1]]);
    if version != VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    Ok(&rest[2..])
}

/// The whole of `bytes` as one postcard value.
fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let (value, tail) =
        postcard::take_from_bytes(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
    if !tail.is_empty() {
        return Err(Error::Malformed("trailing bytes".into()));
    }
    Ok(value)
}

impl<B: Body> Request<B> {
    /// The wire encoding: magic, version, the server kind of `B`, the request.
    pub fn encode(&self) -> Vec<u8> {
        encode(self, &[B::SERVER.0])
    }

    /// Parse and check sizes.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::OtherServer`] for another
    /// server's request, [`Error::Malformed`], [`Error::BadSize`].
    pub fn decode(bytes: &[u8]) -> Result<Request<B>, Error> {
        let rest = payload(bytes)?;
        match rest.first() {
            Some(&kind) if kind == B::SERVER.0 => {}
            Some(&kind) if kind == NodeBody::SERVER.0 => {
                return Err(Error::OtherServer(NodeBody::SERVER.1))
            }
            Some(&kind) if kind == KeeperBody::SERVER.0 => {
                return Err(Error::OtherServer(KeeperBody::SERVER.1))
            }
            _ => return Err(Error::Malformed("unknown server kind".into())),
        }
        let r: Request<B> = decode(&rest[1..])?;
        r.body.validate()?;
        if let Some(auth) = &r.auth {
            let ok = auth.capability.body.len() <= limits::MAX_CAPABILITY
                && auth.capability.signature.len() == 64
                && auth.signature.len() == 64;
            if !ok {
                return Err(Error::BadSize("auth"));
            }
        }
        Ok(r)
    }
}

impl Response {
    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        encode(self, &[])
    }

    /// Parse.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Response, Error> {
        decode(payload(bytes)?)
    }
}
