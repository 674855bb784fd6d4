//! Who may ask a node what, proven to the node rather than assumed from the client.
//!
//! - [`capability`]: after an OPAQUE login, `T` keepers sign together (FROST, the cluster's
//!   capability key) a short-lived capability naming the user, its roles, its rate limits and a
//!   key of the user's own. No single keeper can make one, and a node needs no account database:
//!   it checks the group signature, then that the request is signed by the key the capability
//!   names. Checking mints [`capability::Authorized`], the only way to a
//!   [`capability::Acting`] role that the node's handlers require.
//! - [`handle`]: Stage-1 answers carry handles, not image ids: an image's handle is an
//!   encryption of its id under a key bound to the caller and the query, so only that caller's
//!   Stage-2 of that query can use it, and handles of two queries cannot be linked.
//! - [`matching`]: each node signs a commitment to its Stage-2 values. To fetch an image, a
//!   querier opens `2t + 1` nodes' values for that one candidate; the fetching node checks the
//!   signatures and that the values interpolate to a distance within the cluster's limit.
//!
//! A whole exchange, with one Ed25519 key standing in for the keepers' group key (a FROST
//! signature is a plain Ed25519 signature, so nodes verify it the same way):
//!
//! ```
//! use ed25519_dalek::{Signer, SigningKey};
//! use obscura_auth::capability::{self, authenticate, CapabilityKey, Holder};
//! use obscura_proto::{roles, Capability, Limits, NodeBody, Request, SignedCapability};
//!
//! let group = SigningKey::from_bytes(&[1; 32]); // the keepers, together
//! let key = CapabilityKey::from(group.verifying_key());
//! let holder_key = SigningKey::from_bytes(&[2; 32]); // the user's own
//! let now = 1_800_000_000;
//! let cap = Capability {
//!     id: [3; 16],
//!     user: "ana".into(),
//!     roles: roles::QUERIER,
//!     holder: holder_key.verifying_key().to_bytes(),
//!     issued_at: now,
//!     expires_at: now + 3600,
//!     limits: Limits { queries_per_hour: 100, fetches_per_hour: 10 },
//! };
//! let body = capability::encode(&cap);
//! let signature = group.sign(&capability::signing_message(&body)).to_bytes().to_vec();
//! let holder = Holder::new(holder_key, SignedCapability { body, signature }, &key, now)?;
//!
//! // The client signs each request for the node it goes to.
//! let mut req = Request { request_id: [4; 16], timestamp: now, body: NodeBody::Status, auth: None };
//! holder.sign(2, &mut req);
//!
//! // Node 2 checks it and learns who asks; node 3 would refuse it.
//! let who = authenticate(&req, 2, &key, now, 120)?;
//! assert_eq!(who.user(), "ana");
//! assert!(who.acting(roles::QUERIER).is_ok());
//! assert!(who.acting(roles::OWNER).is_err());
//! assert!(authenticate(&req, 3, &key, now, 120).is_err());
//! # Ok::<(), obscura_auth::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capability;
pub mod handle;
pub mod matching;

/// Why a credential or a proof was refused. Messages say what to do; none tells an attacker
/// more than that the check failed. Exhaustive on purpose: servers map every variant to a
/// status with no catch-all, so a new refusal needs a decision there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request carries no capability.
    #[error("no capability: log in (obscura login) so the keepers issue one")]
    NoCapability,
    /// The capability does not parse, or its signature is not the keepers'.
    #[error("the capability is not one the keepers signed: log in again")]
    BadCapability,
    /// The capability is past its expiry, or from the future.
    #[error("the capability expired at {expires_at} (now {now}): log in again")]
    Expired {
        /// Its expiry.
        expires_at: u64,
        /// The checker's clock.
        now: u64,
    },
    /// The request is not signed by the capability's holder for this node.
    #[error("the request is not signed by the capability's holder for this node")]
    BadRequestSignature,
    /// The caller lacks a role the operation needs.
    #[error("user {user:?} lacks the {needed} role")]
    MissingRole {
        /// The caller.
        user: String,
        /// The role's name.
        needed: &'static str,
    },
    /// A capability a keeper was asked to sign does not match the caller's account or policy.
    #[error("capability refused: {0}")]
    Refused(&'static str),
    /// A query whose check by the nodes does not pass, or whose checks are not the nodes'.
    #[error("query refused: {0}")]
    QueryCheck(String),
    /// A match proof that does not hold.
    #[error("match proof refused: {0}")]
    Proof(&'static str),
}
