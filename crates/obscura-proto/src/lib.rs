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
//! assert_eq!(&bytes[..6], b"OBSC\x00\x06");
//! assert_eq!(Request::decode(&bytes)?, req);
//! assert_eq!(req.body.path(), "/v1/lookup");
//!
//! let resp = Response(ResponseBody::Lookup { ids: vec![[9; 16]], matched: 3 });
//! assert_eq!(Response::decode(&resp.encode())?, resp);
//!
//! // Another version is refused before its body is read.
//! let mut future = bytes.clone();
//! future[5] = 7;
//! assert!(matches!(Request::decode(&future), Err(obscura_proto::Error::UnsupportedVersion(7))));
//! # Ok::<(), obscura_proto::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const VERSION: u16 = 6;
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
        /// The data owner's signature over this order for this node
        /// (`obscura_sharing::order::Order::Rotate`), 64 bytes.
        signature: Vec<u8>,
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
    pub bytes: Vec<u8>,
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
    /// Remove an image, on the data owner's signed order.
    Delete {
        /// Its id.
        image: WireId,
        /// The owner's clock when the order was made (Unix seconds); an image whose manifest
        /// is newer is not removed.
        issued_at: u64,
        /// The owner's signature over the order (`obscura_sharing::order::Order::Delete`),
        /// 64 bytes.
        signature: Vec<u8>,
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
    /// To a keeper, outside a session: registration, first step (OPAQUE). Allowed outside a
    /// session only while the keeper has no account (the first becomes its admin); later
    /// accounts are registered by an admin, inside the admin's session.
    KeeperRegister {
        /// The new account's name.
        user: String,
        /// The OPAQUE registration request.
        request: Vec<u8>,
    },
    /// Registration, last step: the envelope the keeper stores.
    KeeperRegisterFinish {
        /// The account's name.
        user: String,
        /// The OPAQUE registration upload.
        upload: Vec<u8>,
    },
    /// Login, first step (OPAQUE KE1). Counted against the account's and the source's
    /// login limits until the login succeeds.
    KeeperLoginStart {
        /// The account's name.
        user: String,
        /// KE1.
        ke1: Vec<u8>,
    },
    /// Login, last step (KE3): opens a session.
    KeeperLoginFinish {
        /// The id the keeper gave the login.
        login: [u8; 16],
        /// KE3.
        ke3: Vec<u8>,
    },
    /// A request sealed in a session: `message` opens to an encoded [`Request`], and the
    /// answer is a [`ResponseBody::KeeperSealed`] holding the encoded [`Response`].
    KeeperSealed {
        /// The session id.
        session: [u8; 16],
        /// The sealed request.
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
        package: Vec<u8>,
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
            RequestBody::KeeperRegister { .. } => "/v1/keeper-register",
            RequestBody::KeeperRegisterFinish { .. } => "/v1/keeper-register-finish",
            RequestBody::KeeperLoginStart { .. } => "/v1/keeper-login-start",
            RequestBody::KeeperLoginFinish { .. } => "/v1/keeper-login-finish",
            RequestBody::KeeperSealed { .. } => "/v1/keeper-sealed",
            RequestBody::KeeperLogout => "/v1/keeper-logout",
            RequestBody::KeeperUnlock { .. } => "/v1/keeper-unlock",
            RequestBody::SecretPut { .. } => "/v1/secret-put",
            RequestBody::SecretGet { .. } => "/v1/secret-get",
            RequestBody::SecretDelete { .. } => "/v1/secret-delete",
            RequestBody::SecretList => "/v1/secret-list",
            RequestBody::UserEvents => "/v1/user-events",
            RequestBody::DkgStart { .. } => "/v1/dkg-start",
            RequestBody::DkgRound2 { .. } => "/v1/dkg-round2",
            RequestBody::DkgFinish { .. } => "/v1/dkg-finish",
            RequestBody::SignCommit { .. } => "/v1/sign-commit",
            RequestBody::SignShare { .. } => "/v1/sign-share",
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
            RequestBody::KeeperRegister {
                user,
                request: blob,
            }
            | RequestBody::KeeperRegisterFinish { user, upload: blob }
            | RequestBody::KeeperLoginStart { user, ke1: blob } => {
                check(
                    !user.is_empty() && user.len() <= account_limits::MAX_USER,
                    "user",
                )?;
                check(blob.len() <= account_limits::MAX_BLOB, "message")
            }
            RequestBody::KeeperUnlock { user } => check(
                !user.is_empty() && user.len() <= account_limits::MAX_USER,
                "user",
            ),
            RequestBody::KeeperLoginFinish { ke3, .. } => {
                check(ke3.len() <= account_limits::MAX_BLOB, "ke3")
            }
            RequestBody::KeeperSealed { message, .. } => {
                check(message.len() <= account_limits::MAX_SEALED, "message")
            }
            RequestBody::SecretPut {
                name,
                share,
                origin,
                ..
            } => {
                check(name.len() <= account_limits::MAX_NAME, "name")?;
                check(origin.len() <= 16, "origin")?;
                check(share.len() <= account_limits::MAX_BLOB, "share")
            }
            RequestBody::DkgStart { name, .. } => {
                check(name.len() <= account_limits::MAX_NAME, "name")
            }
            RequestBody::DkgRound2 { round1, .. } => {
                check(round1.len() <= 255, "round1")?;
                check(
                    round1
                        .iter()
                        .all(|p| p.bytes.len() <= account_limits::MAX_BLOB),
                    "package",
                )
            }
            RequestBody::DkgFinish { round1, round2, .. } => {
                check(round1.len() <= 255 && round2.len() <= 255, "packages")?;
                check(
                    round1
                        .iter()
                        .chain(round2)
                        .all(|p| p.bytes.len() <= account_limits::MAX_BLOB),
                    "package",
                )
            }
            RequestBody::SignShare { package, .. } => {
                check(package.len() <= account_limits::MAX_BLOB, "package")
            }
            RequestBody::KeeperLogout
            | RequestBody::SecretGet { .. }
            | RequestBody::SecretDelete { .. }
            | RequestBody::SecretList
            | RequestBody::UserEvents
            | RequestBody::SignCommit { .. } => Ok(()),
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
        /// Token-key versions: a node's served version, then the one it is moving to; the
        /// versions a keeper holds shares of, oldest first.
        key_versions: Vec<u32>,
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
    /// Registration, second step: the OPAQUE registration response.
    KeeperRegistration {
        /// The response.
        response: Vec<u8>,
    },
    /// Login, second step: KE2 and the id of the pending login.
    KeeperLoginStarted {
        /// The login's id, to send back with KE3.
        login: [u8; 16],
        /// KE2.
        ke2: Vec<u8>,
    },
    /// A session is open.
    KeeperSession {
        /// Its id.
        session: [u8; 16],
        /// When it expires (keeper time, Unix seconds).
        expires_at: u64,
    },
    /// The sealed answer to a [`RequestBody::KeeperSealed`].
    KeeperSealed {
        /// Opens to an encoded [`Response`].
        message: Vec<u8>,
    },
    /// A secret's share at this keeper.
    Secret {
        /// The answering keeper.
        keeper: u8,
        /// The owner's name for it.
        name: String,
        /// The share.
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
        public_package: Vec<u8>,
    },
    /// A FROST round-1 commitment (serialized), with the key's public package.
    SignCommitment {
        /// The answering keeper.
        keeper: u8,
        /// The commitment.
        commitment: Vec<u8>,
        /// The serialized FROST public key package of the key, as this keeper holds it.
        public_package: Vec<u8>,
    },
    /// A FROST signature share (serialized).
    SignatureShare {
        /// The answering keeper.
        keeper: u8,
        /// The share.
        share: Vec<u8>,
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
