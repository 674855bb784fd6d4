//! Tree heads cosigned by the cluster's nodes, and a client's view of the ledger: the last head
//! it accepted, against which every later head must be a consistent extension, shown by a
//! consistency proof. A node that cosigns two heads of one size with different roots is named
//! with the proof, its own two signatures; a head whose proof fails is refused and blames
//! nobody, since the proof is not signed and anyone relaying it may have altered it.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::merkle::{verify_consistency, Hash};

/// A tree head: the ledger of `log` held `size` entries whose tree head is `root`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHead {
    /// Which ledger (the cluster's digest), so a head of one cluster counts for no other.
    pub log: [u8; 32],
    /// Entries.
    pub size: u64,
    /// The Merkle tree head of the entries ([`crate::merkle::root`]).
    pub root: Hash,
}

impl TreeHead {
    /// What a node signs.
    pub fn statement(&self) -> Vec<u8> {
        self.under(b"obscura 2026 ledger tree head v1")
    }

    /// Node `node`'s cosignature of this head: it commits to this head, and an honest node
    /// gives it for one root at each size only, never replacing what is under it.
    pub fn cosign(&self, node: u8, key: &SigningKey) -> Cosignature {
        Cosignature::of(node, key, &self.statement())
    }

    /// What a node signs to say it stores this head now, which is no commitment: entries past
    /// its committed head may be replaced. Never a cosignature.
    pub fn stored_statement(&self) -> Vec<u8> {
        self.under(b"obscura 2026 ledger stored head v1")
    }

    /// Node `node`'s signature that it stores this head ([`TreeHead::stored_statement`]).
    pub fn sign_stored(&self, node: u8, key: &SigningKey) -> Cosignature {
        Cosignature::of(node, key, &self.stored_statement())
    }

    /// The head under a statement's `domain`: the ledger, the size, the root.
    fn under(&self, domain: &[u8]) -> Vec<u8> {
        let mut out = domain.to_vec();
        out.extend_from_slice(&self.log);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.root);
        out
    }
}

impl Cosignature {
    fn of(node: u8, key: &SigningKey, statement: &[u8]) -> Cosignature {
        Cosignature {
            node,
            signature: key.sign(statement).to_bytes().to_vec(),
        }
    }
}

/// One node's signature over a [`TreeHead`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    /// The node, from 1.
    pub node: u8,
    /// Its Ed25519 signature over [`TreeHead::statement`], 64 bytes.
    pub signature: Vec<u8>,
}

/// A head with the nodes' cosignatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosignedHead {
    /// The head.
    pub head: TreeHead,
    /// The cosignatures, at most one counted per node.
    pub cosignatures: Vec<Cosignature>,
}

/// The nodes that cosign, and how many must.
#[derive(Clone, Debug)]
pub struct Cosigners {
    /// Each node's audit key, node 1 first.
    pub nodes: Vec<VerifyingKey>,
    /// Cosignatures a head needs.
    pub quorum: usize,
}

impl Cosigners {
    /// The nodes whose cosignatures of `head` verify, each once, in order.
    pub fn signers(&self, head: &CosignedHead) -> Vec<u8> {
        self.signed(&head.head.statement(), &head.cosignatures)
    }

    /// The nodes whose signatures that they store `head` verify, each once, in order.
    pub fn storers(&self, head: &TreeHead, signatures: &[Cosignature]) -> Vec<u8> {
        self.signed(&head.stored_statement(), signatures)
    }

    fn signed(&self, statement: &[u8], signatures: &[Cosignature]) -> Vec<u8> {
        let mut signers: Vec<u8> = signatures
            .iter()
            .filter(|c| {
                usize::from(c.node)
                    .checked_sub(1)
                    .and_then(|i| self.nodes.get(i))
                    .zip(Signature::from_slice(&c.signature).ok())
                    .is_some_and(|(key, s)| key.verify_strict(statement, &s).is_ok())
            })
            .map(|c| c.node)
            .collect();
        signers.sort_unstable();
        signers.dedup();
        signers
    }
}

/// Why a head was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The head is of another ledger.
    #[error("the head is of another ledger")]
    OtherLog,
    /// Too few nodes of the cluster cosigned it.
    #[error("{have} node(s) cosigned the head; {need} are needed")]
    NotCosigned {
        /// Valid cosignatures.
        have: usize,
        /// The quorum.
        need: usize,
    },
    /// A smaller tree than the one last seen, consistent with it: an old head, shown again.
    #[error("the head is of {shown} entries, older than the {last} already seen")]
    Stale {
        /// Its size.
        shown: u64,
        /// The last size seen.
        last: u64,
    },
    /// No proof that the head and the last one seen are of one history: the proof given does
    /// not show it (a relay may have altered it, or the histories differ). Nobody is blamed;
    /// ask a node for the proof.
    #[error(
        "no proof that the head of {shown} entries and the one of {last} already seen are of \
         one history"
    )]
    Unproven {
        /// Its size.
        shown: u64,
        /// The last size seen.
        last: u64,
    },
    /// Two heads of one size with different roots: no single history explains them. `nodes`
    /// cosigned both; their two signatures are the proof, whoever relayed them.
    #[error(
        "split view: two heads of {} entries with different roots, both cosigned by node(s) \
         {nodes:?}",
        first.head.size
    )]
    SplitView {
        /// The nodes that cosigned both heads.
        nodes: Vec<u8>,
        /// The head seen first.
        first: Box<CosignedHead>,
        /// The head that contradicts it.
        second: Box<CosignedHead>,
    },
}

/// A client's view of the ledger: the last cosigned head it accepted.
#[derive(Clone, Debug)]
pub struct View {
    log: [u8; 32],
    cosigners: Cosigners,
    last: Option<CosignedHead>,
}

impl View {
    /// A view of ledger `log` that has seen nothing yet, or `last`.
    pub fn new(log: [u8; 32], cosigners: Cosigners, last: Option<CosignedHead>) -> View {
        View {
            log,
            cosigners,
            last,
        }
    }

    /// The last head accepted.
    pub fn last(&self) -> Option<&CosignedHead> {
        self.last.as_ref()
    }

    /// Accept `head` if a quorum cosigned it and it extends the last head accepted, as `proof`
    /// (a consistency proof from the last head's size to its size; to an older head's size
    /// from it, for an older head) shows. The same head again is accepted and changes nothing.
    ///
    /// # Errors
    /// [`HeadError`]: another ledger's head, too few cosignatures, an old head, no proof of one
    /// history, or a split view naming the nodes that signed both sides.
    pub fn observe(&mut self, head: CosignedHead, proof: &[Hash]) -> Result<(), HeadError> {
        if head.head.log != self.log {
            return Err(HeadError::OtherLog);
        }
        let signers = self.cosigners.signers(&head);
        if signers.len() < self.cosigners.quorum {
            return Err(HeadError::NotCosigned {
                have: signers.len(),
                need: self.cosigners.quorum,
            });
        }
        let Some(last) = &self.last else {
            self.last = Some(head);
            return Ok(());
        };
        let (old, new) = (&last.head, &head.head);
        if new.size == old.size && new.root != old.root {
            let before = self.cosigners.signers(last);
            let nodes = signers.into_iter().filter(|n| before.contains(n)).collect();
            return Err(HeadError::SplitView {
                nodes,
                first: Box::new(last.clone()),
                second: Box::new(head),
            });
        }
        let consistent = if new.size >= old.size {
            verify_consistency(old.size, new.size, &old.root, &new.root, proof)
        } else {
            verify_consistency(new.size, old.size, &new.root, &old.root, proof)
        };
        if !consistent {
            return Err(HeadError::Unproven {
                shown: new.size,
                last: old.size,
            });
        }
        if new.size < old.size {
            return Err(HeadError::Stale {
                shown: new.size,
                last: old.size,
            });
        }
        self.last = Some(head);
        Ok(())
    }
}
