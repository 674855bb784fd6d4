//! The ledger's entries: typed state transitions, each signed by its author and bound to its
//! ledger and position, and the cluster state they build. Every party that replays the entries
//! checks each one's author and rule, so a node cannot slip in a transition that every other
//! party would not also accept, and any party that starts empty rebuilds the same state.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::merkle::{leaf_hash, Frontier, Hash};

/// The longest user or role name an entry may carry, in bytes.
pub const MAX_NAME: usize = 64;

/// The largest group message (an MLS Commit, Welcome or sealed message) an entry may carry.
pub const MAX_GROUP_MESSAGE: usize = 256 * 1024;

/// Who may write what.
#[derive(Clone, Debug)]
pub struct Authors {
    /// The data owner: images, key versions, grants, approvals, members, policy.
    pub owner: VerifyingKey,
    /// The nodes, node 1 first: runs, results and audit checkpoints, each its own.
    pub nodes: Vec<VerifyingKey>,
}

/// A state transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Transition {
    /// An image was stored, with the digest of its owner-signed manifest.
    ImageRegistered {
        /// The image.
        image: [u8; 16],
        /// SHA-256 of its signed manifest.
        manifest: Hash,
    },
    /// An image was deleted.
    ImageDeleted {
        /// The image.
        image: [u8; 16],
    },
    /// The token keys moved to a new version.
    KeyVersion {
        /// The version, above every earlier one.
        version: u32,
    },
    /// A user was given a role.
    Granted {
        /// The user.
        user: String,
        /// The role's name.
        role: String,
    },
    /// A user's role was taken back.
    Revoked {
        /// The user.
        user: String,
        /// The role's name.
        role: String,
    },
    /// A clean-room work was approved.
    WorkApproved {
        /// The Work-ID.
        work: Hash,
        /// Until when.
        expires_at: u64,
        /// Runs allowed at each node.
        max_runs: u32,
    },
    /// A node released a work's inputs for a run (written by that node).
    WorkRun {
        /// The Work-ID.
        work: Hash,
        /// The node.
        node: u8,
        /// The run it counted.
        run: u32,
    },
    /// The owner brought the nodes up to date and asked each to anchor its audit log (the
    /// anchors follow, each its node's own entry).
    Synced {
        /// When (the owner's clock, Unix seconds).
        at: u64,
    },
    /// A node's audit log reached a head (written by that node).
    Checkpoint {
        /// The node.
        node: u8,
        /// Entries in its audit log.
        seq: u64,
        /// The audit log's head hash.
        head: Hash,
    },
    /// The owner changed the group's membership: an MLS Commit, ciphertext to all but the
    /// members, with the Welcome (sealed to the members it adds) if it adds any.
    GroupCommit {
        /// The epoch the group enters: one above the last.
        epoch: u64,
        /// The Commit (`MLSMessage`, a `PrivateMessage`).
        commit: Vec<u8>,
        /// The Welcome.
        welcome: Option<Vec<u8>>,
    },
    /// A message sealed under the group's current epoch key (image labels and metadata), which
    /// only the members open.
    Sealed {
        /// The group's epoch it was sealed under: the current one.
        epoch: u64,
        /// The message (`MLSMessage`, a `PrivateMessage`).
        message: Vec<u8>,
    },
}

/// An entry: a transition, its position, and its author's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its position, from 0.
    pub seq: u64,
    /// The transition.
    pub transition: Transition,
    /// Who wrote it: 0 for the owner, a node's number otherwise.
    pub author: u8,
    /// The author's Ed25519 signature over [`Entry::statement`], 64 bytes.
    pub signature: Vec<u8>,
}

impl Entry {
    /// What the author signs: the ledger, the position, the tree head of the entries before
    /// it, and the transition. Bound to the history before it, an entry signed for a history
    /// that did not come to be (an append that failed, a node's made-up one) joins no other.
    pub fn statement(
        log: &[u8; 32],
        seq: u64,
        prev: &Hash,
        author: u8,
        transition: &Transition,
    ) -> Vec<u8> {
        let mut out = b"obscura 2026 ledger entry v1".to_vec();
        out.extend_from_slice(log);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(prev);
        out.push(author);
        out.extend_from_slice(&postcard::to_allocvec(transition).expect("a transition encodes"));
        out
    }

    /// Entry `seq` of ledger `log`, after the entries whose tree head is `prev`, written by
    /// `author` (0: the owner) with `key`.
    pub fn sign(
        log: &[u8; 32],
        seq: u64,
        prev: &Hash,
        author: u8,
        transition: Transition,
        key: &SigningKey,
    ) -> Entry {
        let signature = key
            .sign(&Entry::statement(log, seq, prev, author, &transition))
            .to_bytes()
            .to_vec();
        Entry {
            seq,
            transition,
            author,
            signature,
        }
    }

    /// Whether its author, one of `authors`, signed it for ledger `log` after the entries
    /// headed `prev`. (Its rule is checked by [`State::apply`], which needs the state.)
    pub fn signed(&self, log: &[u8; 32], prev: &Hash, authors: &Authors) -> bool {
        let key = match self.author {
            0 => Some(&authors.owner),
            n => authors.nodes.get(usize::from(n) - 1),
        };
        key.zip(Signature::from_slice(&self.signature).ok())
            .is_some_and(|(key, s)| {
                key.verify_strict(
                    &Entry::statement(log, self.seq, prev, self.author, &self.transition),
                    &s,
                )
                .is_ok()
            })
    }

    /// Its leaf in the ledger's Merkle tree.
    pub fn leaf(&self) -> Hash {
        leaf_hash(&postcard::to_allocvec(self).expect("an entry encodes"))
    }
}

/// Why an entry was refused, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ledger entry {seq}: {why}")]
pub struct Refused {
    /// The entry's position.
    pub seq: u64,
    /// Why.
    pub why: String,
}

/// What takes one applied entry back: the values it replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// An image's manifest before (none: it was not registered).
    Image([u8; 16], Option<Hash>),
    /// The key version before.
    KeyVersion(u32),
    /// A user's role, and whether it was held before.
    Grant(String, String, bool),
    /// A work's approval before.
    Approval(Hash, Option<(u64, u32)>),
    /// A work's runs at a node before.
    Run(Hash, u8, Option<u32>),
    /// A node's checkpoint before.
    Checkpoint(u8, Option<(u64, Hash)>),
    /// The group's epoch before.
    Epoch(u64),
    /// Nothing but the count of entries.
    Nothing,
}

/// The cluster state the entries build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Entries applied.
    pub size: u64,
    /// Images present, with their manifests' digests.
    pub images: BTreeMap<[u8; 16], Hash>,
    /// The token keys' version.
    pub key_version: u32,
    /// Roles granted, by user.
    pub grants: BTreeMap<String, BTreeSet<String>>,
    /// Approved works: until when, and runs allowed at each node.
    pub approvals: BTreeMap<Hash, (u64, u32)>,
    /// Runs counted, per work and node.
    pub runs: BTreeMap<(Hash, u8), u32>,
    /// Each node's last audit checkpoint: entries and head.
    pub checkpoints: BTreeMap<u8, (u64, Hash)>,
    /// The group's epoch: 0 when the owner created it, one more for each commit.
    pub group_epoch: u64,
}

impl State {
    /// Apply `entry`, the next of ledger `log` after the entries headed `prev`, if its author
    /// signed it for this position and history and may write it, and it keeps the rules.
    ///
    /// # Errors
    /// [`Refused`], and the state is unchanged.
    pub fn apply(
        &mut self,
        log: &[u8; 32],
        prev: &Hash,
        authors: &Authors,
        entry: &Entry,
    ) -> Result<(), Refused> {
        self.apply_undoable(log, prev, authors, entry).map(drop)
    }

    /// [`apply`](Self::apply), answering what takes it back ([`State::undo`]).
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    pub fn apply_undoable(
        &mut self,
        log: &[u8; 32],
        prev: &Hash,
        authors: &Authors,
        entry: &Entry,
    ) -> Result<Undo, Refused> {
        let refuse = |why: String| Refused {
            seq: entry.seq,
            why,
        };
        if entry.seq != self.size {
            return Err(refuse(format!("it is not the next entry ({})", self.size)));
        }
        let known = match entry.author {
            0 => true,
            n => usize::from(n) <= authors.nodes.len(),
        };
        if !known {
            return Err(refuse(format!(
                "author {} is no party of the cluster",
                entry.author
            )));
        }
        let signed = entry.signed(log, prev, authors);
        if !signed {
            return Err(refuse(format!(
                "not signed by its author ({}) for this ledger, position and history",
                author_name(entry.author)
            )));
        }
        let owner_only = |what: &str| -> Result<(), Refused> {
            if entry.author == 0 {
                Ok(())
            } else {
                Err(refuse(format!(
                    "only the owner {what}; node {} wrote it",
                    entry.author
                )))
            }
        };
        let own_node = |node: u8| -> Result<(), Refused> {
            if entry.author == node {
                Ok(())
            } else {
                Err(refuse(format!(
                    "node {node}'s record written by {}",
                    author_name(entry.author)
                )))
            }
        };
        let undo = match &entry.transition {
            Transition::ImageRegistered { image, manifest } => {
                owner_only("registers images")?;
                if self.images.contains_key(image) {
                    return Err(refuse(format!(
                        "image {} is already registered",
                        hex(image)
                    )));
                }
                self.images.insert(*image, *manifest);
                Undo::Image(*image, None)
            }
            Transition::ImageDeleted { image } => {
                owner_only("deletes images")?;
                let Some(manifest) = self.images.remove(image) else {
                    return Err(refuse(format!("image {} is not registered", hex(image))));
                };
                Undo::Image(*image, Some(manifest))
            }
            Transition::KeyVersion { version } => {
                owner_only("changes key versions")?;
                if *version <= self.key_version {
                    return Err(refuse(format!(
                        "key version {version} is not above {}",
                        self.key_version
                    )));
                }
                let was = self.key_version;
                self.key_version = *version;
                Undo::KeyVersion(was)
            }
            Transition::Granted { user, role } => {
                owner_only("grants roles")?;
                long_names(user, role).map_err(refuse)?;
                let new = self
                    .grants
                    .entry(user.clone())
                    .or_default()
                    .insert(role.clone());
                Undo::Grant(user.clone(), role.clone(), !new)
            }
            Transition::Revoked { user, role } => {
                owner_only("revokes roles")?;
                long_names(user, role).map_err(refuse)?;
                let held = self.grants.get_mut(user).is_some_and(|r| r.remove(role));
                if !held {
                    return Err(refuse(format!("{user} does not hold {role}")));
                }
                if self.grants.get(user).is_some_and(BTreeSet::is_empty) {
                    self.grants.remove(user);
                }
                Undo::Grant(user.clone(), role.clone(), true)
            }
            Transition::WorkApproved {
                work,
                expires_at,
                max_runs,
            } => {
                owner_only("approves works")?;
                let was = self.approvals.insert(*work, (*expires_at, *max_runs));
                Undo::Approval(*work, was)
            }
            Transition::WorkRun { work, node, run } => {
                own_node(*node)?;
                let Some((_, max_runs)) = self.approvals.get(work) else {
                    return Err(refuse(format!("work {} was never approved", hex(work))));
                };
                let counted = self.runs.get(&(*work, *node)).copied().unwrap_or(0);
                if *run != counted + 1 || *run > *max_runs {
                    return Err(refuse(format!(
                        "run {run} of work {} at node {node}: {counted} counted of {max_runs}",
                        hex(work)
                    )));
                }
                let was = self.runs.insert((*work, *node), *run);
                Undo::Run(*work, *node, was)
            }
            Transition::Synced { .. } => {
                owner_only("records a sync")?;
                Undo::Nothing
            }
            Transition::Checkpoint { node, seq, head } => {
                own_node(*node)?;
                if let Some((last, _)) = self.checkpoints.get(node) {
                    if seq <= last {
                        return Err(refuse(format!(
                            "node {node}'s checkpoint at {seq} is not after its last, at {last}"
                        )));
                    }
                }
                let was = self.checkpoints.insert(*node, (*seq, *head));
                Undo::Checkpoint(*node, was)
            }
            Transition::GroupCommit {
                epoch,
                commit,
                welcome,
            } => {
                owner_only("changes the group")?;
                if *epoch != self.group_epoch + 1 {
                    return Err(refuse(format!(
                        "a commit into epoch {epoch}; the group is at {}",
                        self.group_epoch
                    )));
                }
                if commit.len() > MAX_GROUP_MESSAGE
                    || welcome
                        .as_ref()
                        .is_some_and(|w| w.len() > MAX_GROUP_MESSAGE)
                {
                    return Err(refuse(format!(
                        "a group message over {MAX_GROUP_MESSAGE} bytes"
                    )));
                }
                let was = self.group_epoch;
                self.group_epoch = *epoch;
                Undo::Epoch(was)
            }
            Transition::Sealed { epoch, message } => {
                owner_only("seals group messages")?;
                if *epoch != self.group_epoch {
                    return Err(refuse(format!(
                        "a message sealed in epoch {epoch}; the group is at {}",
                        self.group_epoch
                    )));
                }
                if message.len() > MAX_GROUP_MESSAGE {
                    return Err(refuse(format!(
                        "a group message over {MAX_GROUP_MESSAGE} bytes"
                    )));
                }
                Undo::Nothing
            }
        };
        self.size += 1;
        Ok(undo)
    }

    /// Take back the last entry applied, by what [`State::apply_undoable`] answered for it.
    /// Undone in the reverse order of their applying, entries leave the state as it was.
    pub fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Image(image, None) => {
                self.images.remove(&image);
            }
            Undo::Image(image, Some(manifest)) => {
                self.images.insert(image, manifest);
            }
            Undo::KeyVersion(was) => self.key_version = was,
            Undo::Grant(user, role, held) => {
                let roles = self.grants.entry(user.clone()).or_default();
                if held {
                    roles.insert(role);
                } else {
                    roles.remove(&role);
                }
                if roles.is_empty() {
                    self.grants.remove(&user);
                }
            }
            Undo::Approval(work, was) => match was {
                Some(v) => {
                    self.approvals.insert(work, v);
                }
                None => {
                    self.approvals.remove(&work);
                }
            },
            Undo::Run(work, node, was) => match was {
                Some(v) => {
                    self.runs.insert((work, node), v);
                }
                None => {
                    self.runs.remove(&(work, node));
                }
            },
            Undo::Nothing => {}
            Undo::Epoch(was) => self.group_epoch = was,
            Undo::Checkpoint(node, was) => match was {
                Some(v) => {
                    self.checkpoints.insert(node, v);
                }
                None => {
                    self.checkpoints.remove(&node);
                }
            },
        }
        self.size -= 1;
    }

    /// The state built by replaying `entries` from the start.
    ///
    /// # Errors
    /// The first entry refused.
    pub fn replay<'a>(
        log: &[u8; 32],
        authors: &Authors,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<State, Refused> {
        let mut state = State::default();
        let mut tree = Frontier::default();
        for entry in entries {
            state.apply(log, &tree.root(), authors, entry)?;
            tree.push(&entry.leaf());
        }
        Ok(state)
    }
}

fn long_names(user: &str, role: &str) -> Result<(), String> {
    if user.len() > MAX_NAME || role.len() > MAX_NAME {
        return Err(format!("a user or role name is over {MAX_NAME} bytes"));
    }
    Ok(())
}

fn author_name(author: u8) -> String {
    if author == 0 {
        "the owner".into()
    } else {
        format!("node {author}")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
