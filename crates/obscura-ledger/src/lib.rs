//! The cluster ledger's core, without I/O: an append-only log whose entries are the leaves of an
//! RFC 9162 Merkle tree ([`merkle`]), tree heads cosigned by a quorum of nodes, and a client's
//! view that accepts a head only as a consistent extension of the last one it accepted
//! ([`head`]). A node that shows two clients different histories must cosign two heads that no
//! single history explains; any client that sees both names it, with its two signatures.
//!
//! ```
//! use obscura_ledger::merkle::{consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion};
//!
//! let leaves: Vec<_> = [b"a".as_slice(), b"b", b"c"].iter().map(|e| leaf_hash(e)).collect();
//! let (old, new) = (root(&leaves[..2]), root(&leaves));
//! let proof = inclusion_proof(&leaves, 2).unwrap();
//! assert!(verify_inclusion(&leaves[2], 2, 3, &proof, &new));
//! let proof = consistency_proof(&leaves, 2).unwrap();
//! assert!(verify_consistency(2, 3, &old, &new, &proof));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod entry;
pub mod head;
pub mod merkle;
pub mod replica;
