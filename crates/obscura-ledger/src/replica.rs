//! One party's copy of the ledger: the state its entries build and the leaves of their tree,
//! grown only by entries that pass [`State::apply`]. A node keeps one beside its store, a client
//! builds one from the entries a node sends, and both answer heads and proofs from it.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::entry::{Authors, Entry, Refused, State};
use crate::head::{Cosigners, TreeHead};
use crate::merkle::{consistency_proof, inclusion_proof, root, Frontier, Hash};

/// The identity of the ledger of a cluster: its owner's key and its nodes' audit keys, node 1
/// first. Every entry and head is bound to it, so nothing signed for one cluster counts in
/// another.
pub fn log_id(owner: &VerifyingKey, nodes: &[VerifyingKey]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"obscura 2026 ledger id v1");
    h.update(owner.as_bytes());
    h.update((nodes.len() as u64).to_be_bytes());
    for node in nodes {
        h.update(node.as_bytes());
    }
    h.finalize().into()
}

/// The cosigners of a cluster's heads: every node, a majority needed. Two heads that a majority
/// cosigned share at least one signer, so no two histories can both be cosigned without a node
/// that signed both.
pub fn majority(nodes: &[VerifyingKey]) -> Cosigners {
    Cosigners {
        nodes: nodes.to_vec(),
        quorum: nodes.len() / 2 + 1,
    }
}

/// Why an entry could not join a replica.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The replica holds another entry at that position: a second writer, or a fork.
    #[error("ledger entry {seq}: this copy holds another entry there")]
    Conflict {
        /// The position.
        seq: u64,
    },
    /// Entries are missing before it.
    #[error("ledger entry {seq}: this copy holds {size} entries; send from entry {size}")]
    Gap {
        /// The entry's position.
        seq: u64,
        /// Entries held.
        size: u64,
    },
    /// Its author may not write it, or it breaks a rule.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// A copy of one cluster's ledger.
#[derive(Clone, Debug)]
pub struct Replica {
    log: [u8; 32],
    authors: Authors,
    state: State,
    leaves: Vec<Hash>,
    tree: Frontier,
}

impl Replica {
    /// An empty copy of the ledger of the cluster of `authors`.
    pub fn new(authors: Authors) -> Replica {
        Replica {
            log: log_id(&authors.owner, &authors.nodes),
            authors,
            state: State::default(),
            leaves: Vec::new(),
            tree: Frontier::default(),
        }
    }

    /// The ledger's identity ([`log_id`]).
    pub fn log(&self) -> [u8; 32] {
        self.log
    }

    /// The keys its entries are checked under.
    pub fn authors(&self) -> &Authors {
        &self.authors
    }

    /// The state its entries build.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Entries held.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// Its tree head now.
    pub fn head(&self) -> TreeHead {
        TreeHead {
            log: self.log,
            size: self.size(),
            root: self.tree.root(),
        }
    }

    /// The right edge of its tree now, which a party appending after it needs.
    pub fn frontier(&self) -> &Frontier {
        &self.tree
    }

    /// The tree head of its first `size` entries; `None` past its size. O(size) below its size.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        if size == self.size() {
            return Some(self.tree.root());
        }
        let size = usize::try_from(size).ok()?;
        self.leaves.get(..size).map(root)
    }

    /// The consistency proof from its first `old` entries to all of them; `None` past its size.
    pub fn proof_from(&self, old: u64) -> Option<Vec<Hash>> {
        self.proof_between(old, self.size())
    }

    /// The consistency proof from its first `old` entries to its first `new`.
    pub fn proof_between(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        let (old, new) = (usize::try_from(old).ok()?, usize::try_from(new).ok()?);
        if old == new {
            return (new <= self.leaves.len()).then(Vec::new);
        }
        consistency_proof(self.leaves.get(..new)?, old)
    }

    /// The inclusion proof of entry `index` in its tree now; `None` past its size.
    pub fn inclusion(&self, index: u64) -> Option<Vec<Hash>> {
        inclusion_proof(&self.leaves, usize::try_from(index).ok()?)
    }

    /// Whether it holds exactly `entry` at the entry's position.
    pub fn holds(&self, entry: &Entry) -> bool {
        usize::try_from(entry.seq)
            .ok()
            .and_then(|i| self.leaves.get(i))
            .is_some_and(|leaf| *leaf == entry.leaf())
    }

    /// Add `entries`, all or none. Entries it already holds at their positions are passed
    /// over (a relay may resend them); the others must follow on, each signed for the history
    /// before it, and pass the rules. Returns how many were new. O(log n) hashing per entry.
    ///
    /// # Errors
    /// [`AppendError`] naming the first entry that cannot join; the replica is unchanged.
    pub fn append(&mut self, entries: &[Entry]) -> Result<usize, AppendError> {
        let held = self.size();
        let mut undo = Vec::new();
        let mut tree = self.tree.clone();
        let mut leaves = Vec::new();
        let mut failed = None;
        for entry in entries {
            let size = held + leaves.len() as u64;
            if entry.seq < held {
                if self.holds(entry) {
                    continue;
                }
                failed = Some(AppendError::Conflict { seq: entry.seq });
            } else if entry.seq > size {
                failed = Some(AppendError::Gap {
                    seq: entry.seq,
                    size,
                });
            } else if entry.seq < size {
                // Sent twice in one batch, differing or not.
                failed = Some(AppendError::Conflict { seq: entry.seq });
            } else {
                match self
                    .state
                    .apply_undoable(&self.log, &tree.root(), &self.authors, entry)
                {
                    Ok(u) => {
                        undo.push(u);
                        let leaf = entry.leaf();
                        tree.push(&leaf);
                        leaves.push(leaf);
                        continue;
                    }
                    Err(e) => failed = Some(e.into()),
                }
            }
            break;
        }
        if let Some(e) = failed {
            for u in undo.into_iter().rev() {
                self.state.undo(u);
            }
            return Err(e);
        }
        let added = leaves.len();
        self.leaves.extend(leaves);
        self.tree = tree;
        Ok(added)
    }
}
