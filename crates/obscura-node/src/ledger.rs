//! The node's copy of the cluster ledger, checked entry by entry when the store opens: a store
//! whose entries no longer replay (one edited, or moved) or whose entries no longer reach the
//! last head a quorum cosigned that it kept, or the head it committed to (some cut off), does
//! not serve, naming what is wrong. An operator who also removes the kept head, or puts an older one back, is not caught
//! here (the node keeps nothing the operator cannot edit): clients name the node by the
//! signature it gave on a larger head (`obscura ledger verify`).

use ed25519_dalek::VerifyingKey;
use obscura_ledger::entry::{Authors, Entry};
use obscura_ledger::head::{Cosignature, CosignedHead, Cosigners, TreeHead};
use obscura_ledger::replica::{majority, Replica};
use obscura_store::NodeStore;

/// The ledger as a node holds it: every entry checked, and the last cosigned head kept.
#[derive(Clone, Debug)]
pub struct NodeLedger {
    pub(crate) replica: Replica,
    pub(crate) cosigners: Cosigners,
    pub(crate) cosigned: Option<CosignedHead>,
    /// The newest head it committed to, with its cosignature: nothing under it is replaced.
    pub(crate) committed: Option<(TreeHead, Cosignature)>,
    /// A write failed and the store could not be read again: no ledger request is served.
    pub(crate) broken: bool,
    /// The store's count of ledger changes this copy was read at: another process of the node
    /// that changed the ledger since makes the copy read again.
    pub(crate) generation: u64,
    /// The request working on the copy wrote the store and brought the copy level with what
    /// it wrote: the store's count of changes may then be taken as this copy's.
    pub(crate) synced: bool,
}

impl NodeLedger {
    /// Replay the ledger in `store` of the cluster of `owner` and `nodes`.
    ///
    /// # Errors
    /// Why the stored ledger cannot be trusted, in words.
    pub fn load(
        store: &dyn NodeStore,
        owner: VerifyingKey,
        nodes: &[VerifyingKey],
    ) -> Result<Self, String> {
        // The count of changes comes from the same snapshot as the entries and heads.
        let obscura_store::StoredLedger {
            entries,
            cosigned,
            committed,
            generation,
        } = store.ledger().map_err(|e| e.to_string())?;
        let authors = Authors {
            owner,
            nodes: nodes.to_vec(),
        };
        let replica = replay(&authors, &entries)?;
        let cosigners = majority(nodes);
        let cosigned = cosigned
            .map(|bytes| {
                let head: CosignedHead = postcard::from_bytes(&bytes).map_err(|e| {
                    format!("the store's cosigned ledger head does not decode: {e}")
                })?;
                held(&replica, &head.head, "the nodes cosigned").map(|()| head)
            })
            .transpose()?;
        let committed = committed
            .map(|bytes| {
                let (head, cosignature): (TreeHead, Cosignature) = postcard::from_bytes(&bytes)
                    .map_err(|e| {
                        format!("the store's committed ledger head does not decode: {e}")
                    })?;
                held(&replica, &head, "this node committed to").map(|()| (head, cosignature))
            })
            .transpose()?;
        Ok(NodeLedger {
            replica,
            cosigners,
            cosigned,
            committed,
            broken: false,
            generation,
            synced: false,
        })
    }

    /// Entries under this size are never replaced: the node committed to them, or keeps a head a
    /// majority cosigned over them.
    pub(crate) fn fixed(&self) -> u64 {
        let committed = self.committed.as_ref().map_or(0, |(h, _)| h.size);
        let cosigned = self.cosigned.as_ref().map_or(0, |c| c.head.size);
        committed.max(cosigned)
    }
}

/// Whether `replica` holds `head`, which the store kept as the one `whose`.
fn held(replica: &Replica, head: &TreeHead, whose: &str) -> Result<(), String> {
    if replica.root_at(head.size) == Some(head.root) && head.log == replica.log() {
        return Ok(());
    }
    Err(format!(
        "the store's ledger ({} entries) does not hold the head of {} entries {whose}: it was \
         cut or rewritten",
        replica.size(),
        head.size
    ))
}

/// The ledger of `authors` rebuilt from encoded entries, each checked.
///
/// # Errors
/// The first entry that does not decode or is refused, in words.
pub(crate) fn replay(authors: &Authors, entries: &[Vec<u8>]) -> Result<Replica, String> {
    let mut replica = Replica::new(authors.clone());
    for (seq, bytes) in entries.iter().enumerate() {
        let entry: Entry = postcard::from_bytes(bytes)
            .map_err(|e| format!("ledger entry {seq} in the store does not decode: {e}"))?;
        replica
            .append(std::slice::from_ref(&entry))
            .map_err(|e| format!("the store's ledger is refused: {e}"))?;
    }
    Ok(replica)
}
