//! Wire messages between Obscura clients and nodes.
//!
//! The message enums are deliberately exhaustive: a new operation or error is a new protocol
//! version, and the node matches every variant.
//!
//! A message on the wire is `"OBSC" ‖ version (u16, big-endian) ‖ postcard(body)`. The version is
//! read before anything else, so a message of another version is refused with
//! [`Error::UnsupportedVersion`] rather than misparsed; trailing bytes, truncation and bodies
//! that break a size limit are refused too. Every request carries a random 128-bit request id and
//! the client's clock (Unix seconds) for the node's replay window.
//!
//! ```
//! use obscura_proto::{Request, RequestBody, Response, ResponseBody};
//!
//! let req = Request {
//!     request_id: [7; 16],
//!     timestamp: 1_790_000_000,
//!     body: RequestBody::Lookup { key_version: 1, tokens: vec![[1; 16], [2; 16]], min_bands: 1 },
//! };
//! let bytes = req.encode();
//! assert_eq!(&bytes[..6], b"OBSC\x00\x04");
//! assert_eq!(Request::decode(&bytes)?, req);
//! assert_eq!(req.body.path(), "/v1/lookup");
//!
//! let resp = Response(ResponseBody::Lookup { ids: vec![[9; 16]], matched: 3 });
//! assert_eq!(Response::decode(&resp.encode())?, resp);
//!
//! // Another version is refused before its body is read.
//! let mut future = bytes.clone();
//! future[5] = 5;
//! assert!(matches!(Request::decode(&future), Err(obscura_proto::Error::UnsupportedVersion(5))));
//! # Ok::<(), obscura_proto::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const VERSION: u16 = 4;
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
    pub const MAX_IMAGE_SHARE: usize = 256 << 20;
    /// Most images prepared or committed in one request.
    pub const MAX_BATCH: usize = 256;
    /// Largest manifest (bytes).
    pub const MAX_MANIFEST: usize = 64 << 10;
    /// Most tokens in one lookup.
    pub const MAX_LOOKUP_TOKENS: usize = 8 * 256;
    /// Most candidates in one Stage-2 request.
    pub const MAX_CANDIDATES: usize = 1 << 20;
    /// Length of a hash-bit share.
    pub const HASH_SHARE_LEN: usize = 256;
    /// Tokens per image.
    pub const TOKENS_PER_IMAGE: usize = 8;
    /// Most elements a keeper evaluates in one request, all node batches together.
    pub const MAX_KEEPER_ELEMENTS: usize = 1 << 14;
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
}

/// One image of a [`RequestBody::Prepare`] batch: what this node stores of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedImage {
    /// Its id.
    pub image: WireId,
    /// The owner-signed manifest.
    pub manifest: Vec<u8>,
    /// This node's share of the file.
    pub image_share: Vec<u8>,
    /// This node's 256-byte hash-bit share.
    pub hash_share: Vec<u8>,
    /// The 8 band tokens under this node's keys.
    pub tokens: Vec<WireToken>,
    /// With VOPRF tokens, the 8 band elements `k · HashToGroup(input)` the tokens were hashed
    /// from, kept by the node so that a key rotation can move them; empty with HMAC tokens.
    pub elements: Vec<WireElement>,
}

/// The blinded elements of one node's key in a [`RequestBody::KeeperEvaluate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperBatch {
    /// Whose key: node 1..=n.
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
    pub proof: Vec<u8>,
}

/// A step of a token-key rotation at a node (see [`RequestBody::Rotate`]).
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
    },
    /// Move up to `max_images` more images' postings to the next version, in one durable step.
    Move {
        /// At most this many images (0: only report progress).
        max_images: u32,
    },
    /// Every image has moved: forget the old version, its elements and `ρ`.
    Finish {
        /// The next version, as begun.
        to: u32,
    },
}

/// One node key's part of a [`RequestBody::KeeperRekey`], for one keeper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperRekeyPart {
    /// Whose key: node 1..=n.
    pub node: u8,
    /// `ρ` of that node's key, a canonical non-zero scalar.
    pub factor: [u8; 32],
    /// This keeper's share of a fresh sharing of zero.
    pub zero_share: [u8; 32],
}

/// Stage-1 and storage operations a client asks of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
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
    /// Remove an image.
    Delete {
        /// Its id.
        image: WireId,
    },
    /// Stage-1: the committed images posted under at least `min_bands` of the tokens. An image
    /// has one token per band, so this counts the bands it matches in.
    Lookup {
        /// The token key version the tokens were made under.
        key_version: u32,
        /// The padded batch.
        tokens: Vec<WireToken>,
        /// Fewest matching tokens (bands) an image needs, 1..=8.
        min_bands: u8,
    },
    /// Stage-2: evaluate candidates on shares.
    Evaluate {
        /// The query id, shared by all nodes (the zero-sharing context).
        query_id: [u8; 16],
        /// This node's 256-byte share of the query bits.
        query_share: Vec<u8>,
        /// The candidates, in the same order at every node.
        candidates: Vec<WireId>,
    },
    /// A committed image's manifest and share.
    Fetch {
        /// Its id.
        image: WireId,
    },
    /// Counts and identity.
    Status,
    /// The audit log.
    Audit,
    /// To a node: a step of a token-key rotation. Sent by the cluster's operator tool.
    Rotate {
        /// The step.
        op: RotateOp,
    },
    /// To a keeper: hold shares of key version `to` for every node key, `ρ · k_j + z_j` from
    /// the shares of version `from`. Repeating it once done changes nothing.
    KeeperRekey {
        /// The current version.
        from: u32,
        /// The next version.
        to: u32,
        /// One part per node key.
        parts: Vec<KeeperRekeyPart>,
    },
    /// To a keeper: erase its shares of a key version.
    KeeperRetire {
        /// The version to erase.
        version: u32,
    },
    /// To a keeper: evaluate blinded band elements under its shares of the node keys of a key
    /// version. Charged to the client's budget.
    KeeperEvaluate {
        /// Key version.
        version: u32,
        /// One batch per node key, at most [`limits::MAX_KEEPER_ELEMENTS`] elements in all.
        batches: Vec<KeeperBatch>,
    },
}

impl RequestBody {
    /// The HTTP path this request is posted to.
    pub fn path(&self) -> &'static str {
        match self {
            RequestBody::Prepare { .. } => "/v1/prepare",
            RequestBody::Commit { .. } => "/v1/commit",
            RequestBody::Delete { .. } => "/v1/delete",
            RequestBody::Lookup { .. } => "/v1/lookup",
            RequestBody::Evaluate { .. } => "/v1/evaluate",
            RequestBody::Fetch { .. } => "/v1/fetch",
            RequestBody::Status => "/v1/status",
            RequestBody::Audit => "/v1/audit",
            RequestBody::KeeperEvaluate { .. } => "/v1/keeper-evaluate",
            RequestBody::Rotate { .. } => "/v1/rotate",
            RequestBody::KeeperRekey { .. } => "/v1/keeper-rekey",
            RequestBody::KeeperRetire { .. } => "/v1/keeper-retire",
        }
    }

    fn validate(&self) -> Result<(), Error> {
        use limits::*;
        let check = |ok: bool, field| {
            if ok {
                Ok(())
            } else {
                Err(Error::BadSize(field))
            }
        };
        match self {
            RequestBody::Prepare { images, .. } => {
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
            RequestBody::Commit { images } => {
                check((1..=MAX_BATCH).contains(&images.len()), "images")
            }
            RequestBody::Lookup {
                tokens, min_bands, ..
            } => {
                check(tokens.len() <= MAX_LOOKUP_TOKENS, "tokens")?;
                check((1..=8).contains(min_bands), "min_bands")
            }
            RequestBody::Evaluate {
                query_share,
                candidates,
                ..
            } => {
                check(query_share.len() == HASH_SHARE_LEN, "query_share")?;
                check(candidates.len() <= MAX_CANDIDATES, "candidates")
            }
            RequestBody::KeeperEvaluate { batches, .. } => {
                let total = batches.iter().try_fold(0usize, |acc, b| {
                    (!b.elements.is_empty()).then_some(acc + b.elements.len())
                });
                check(!batches.is_empty(), "batches")?;
                check(total.is_some_and(|t| t <= MAX_KEEPER_ELEMENTS), "elements")
            }
            RequestBody::KeeperRekey { parts, .. } => {
                check((1..=255).contains(&parts.len()), "parts")
            }
            RequestBody::Delete { .. }
            | RequestBody::Rotate { .. }
            | RequestBody::KeeperRetire { .. }
            | RequestBody::Fetch { .. }
            | RequestBody::Status
            | RequestBody::Audit => Ok(()),
        }
    }
}

/// A request: id and time for the replay window, then the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// A fresh random id per request.
    pub request_id: [u8; 16],
    /// The client's clock, Unix seconds.
    pub timestamp: u64,
    /// The operation.
    pub body: RequestBody,
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
}

/// One audit entry on the wire (see the node store's audit module).
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
    pub detail: Vec<u8>,
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// Done (prepare, commit, delete).
    Ok,
    /// Stage-1 candidates.
    Lookup {
        /// Committed images matching at least `min_bands` tokens, by id.
        ids: Vec<WireId>,
        /// Images matching at least one token (before the band count).
        matched: u32,
    },
    /// Stage-2 values, aligned with the request's candidates; `None` where the node holds no
    /// committed image of that id.
    Evaluate {
        /// The answering node.
        node: u8,
        /// Field elements below 2^31 − 1.
        values: Vec<Option<u32>>,
    },
    /// A committed image's parts.
    Fetch {
        /// The owner-signed manifest.
        manifest: Vec<u8>,
        /// The node's share.
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
    },
    /// The audit log.
    Audit {
        /// Oldest first.
        entries: Vec<WireAuditEntry>,
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
    /// A keeper's public shares of the next version's node keys, aligned with the request's
    /// parts, so the operator can check them before anyone relies on them.
    KeeperRekeyed {
        /// The answering keeper.
        keeper: u8,
        /// `k'_j · G` per node key.
        public_shares: Vec<WireElement>,
    },
    /// Refused.
    Error {
        /// Why.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub ResponseBody);

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_be_bytes());
    postcard::to_extend(value, out).expect("encoding into a Vec cannot fail")
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(Error::BadMagic)?;
    if rest.len() < 2 {
        return Err(Error::Malformed("truncated header".into()));
    }
    let version = u16::from_be_bytes([rest[0], rest[1]]);
    if version != VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let (value, tail) =
        postcard::take_from_bytes(&rest[2..]).map_err(|e| Error::Malformed(e.to_string()))?;
    if !tail.is_empty() {
        return Err(Error::Malformed("trailing bytes".into()));
    }
    Ok(value)
}

impl Request {
    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Parse and check sizes.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::Malformed`],
    /// [`Error::BadSize`].
    pub fn decode(bytes: &[u8]) -> Result<Request, Error> {
        let r: Request = decode(bytes)?;
        r.body.validate()?;
        Ok(r)
    }
}

impl Response {
    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Parse.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Response, Error> {
        decode(bytes)
    }
}
