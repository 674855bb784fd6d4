//! Verifying a cluster's audit logs (`obscura audit verify`): fetch every node's hash-chained
//! audit log and check it, and catch a log rolled back or rewritten since the last verification.
//!
//! Each log must be an unbroken chain whose checkpoints verify under the node's audit key (the
//! public half sits in `DIR/nodeN/audit-key.pub` from cluster creation). The last checkpoint
//! verified (each verification asks every node for one first) is kept in
//! `DIR/client/audit-heads.json`; a log that no longer contains it was truncated or rewritten
//! since, even if it is a valid chain again now.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use obscura_proto::audit::{verify, AuditEntry, AuditError, AuditKind, AuditReport};
use obscura_tokens::keyfile::to_hex as hex;
use serde::{Deserialize, Serialize};

use crate::{AuditLog, Client, Fault};

/// The last verified head of one node's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// One node's verdict.
#[derive(Debug)]
pub struct NodeVerdict {
    /// The node.
    pub node: u8,
    /// What its log holds, or why it fails.
    pub outcome: Result<AuditReport, LogFault>,
}

/// Why a node's audit log fails verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogFault {
    /// Its public audit key (`DIR/nodeN/audit-key.pub`) is missing or malformed.
    #[error("{path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        reason: String,
    },
    /// It did not send its log.
    #[error(transparent)]
    Unanswered(#[from] Fault),
    /// An entry of a kind this build does not know.
    #[error(transparent)]
    Unreadable(#[from] obscura_proto::Error),
    /// The chain or a checkpoint signature is broken.
    #[error(transparent)]
    Chain(#[from] AuditError),
    /// It answered that it signed its log where its log shows no checkpoint.
    #[error(
        "it answered that it signed its log at entry {0}, and its log shows no checkpoint there"
    )]
    NoCheckpoint(u64),
    /// It named a checkpoint older than the one verified last time (to move the pin back).
    #[error(
        "it answered that it signed its log at entry {said}, before entry {kept}, the \
         checkpoint verified last time"
    )]
    OlderCheckpoint {
        /// The checkpoint it named.
        said: u64,
        /// The one verified last time.
        kept: u64,
    },
    /// The entry verified last time differs now.
    #[error("entry {0} differs from the one verified before: the log was rewritten")]
    Rewritten(u64),
    /// The cluster ledger, which holds the node's anchors, could not be read and checked.
    #[error("its anchors in the cluster ledger could not be checked: {0}")]
    Ledger(String),
    /// The checkpoint the node anchored in the cluster ledger is not in its log now.
    #[error(
        "its log no longer holds entry {0} as it anchored it in the cluster ledger: the log \
         was cut or rewritten"
    )]
    Unanchored(u64),
}

fn heads_path(dir: &Path) -> PathBuf {
    dir.join("client").join("audit-heads.json")
}

/// Node `node`'s public audit key, from `DIR/nodeN/audit-key.pub`.
pub(crate) fn audit_key(dir: &Path, node: u8) -> Result<VerifyingKey, LogFault> {
    let path = dir.join(format!("node{node}")).join("audit-key.pub");
    let fault = |reason: String| LogFault::Key {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fault(e.to_string()))?;
    obscura_tokens::keyfile::hex32(&text)
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| fault("not an Ed25519 public key".into()))
}

fn check_node(
    dir: &Path,
    node: u8,
    log: Result<AuditLog, Fault>,
    known: Option<&Head>,
    anchored: &[(u64, [u8; 32])],
) -> Result<(AuditReport, Head), LogFault> {
    let key = audit_key(dir, node)?;
    let log = log?;
    let entries = log
        .entries
        .into_iter()
        .map(AuditEntry::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    let report = verify(&entries, &key)?;
    // The checkpoint it signed when asked must be in the log it shows, and no older than the
    // one kept from last time (checkpoints are synced: an honest node's never go back).
    if entries
        .get(log.checkpoint as usize)
        .is_none_or(|e| e.kind != AuditKind::Checkpoint)
    {
        return Err(LogFault::NoCheckpoint(log.checkpoint));
    }
    if let Some(h) = known {
        if log.checkpoint < h.seq {
            return Err(LogFault::OlderCheckpoint {
                said: log.checkpoint,
                kept: h.seq,
            });
        }
        // The log reaches its checkpoint, at or after the kept one: the kept entry is in it (a
        // log cut behind it fails one of the two checks above).
        if hex(&entries[h.seq as usize].hash) != h.hash {
            return Err(LogFault::Rewritten(h.seq));
        }
    }
    // Every checkpoint the node anchored in the ledger, which every client sees alike: a log
    // cut and anchored again still misses the earlier anchors.
    for &(seq, hash) in anchored {
        if entries.get(seq as usize).is_none_or(|e| e.hash != hash) {
            return Err(LogFault::Unanchored(seq));
        }
    }
    // Kept: the log's last checkpoint (at or after the one it signed when asked), not its last
    // entry. A checkpoint is synced to disk, and so is everything before it, while a node that
    // crashes loses the entries after its last sync (reads are recorded without one) and writes
    // others in their places: remembering those would call every crash a rewrite.
    let last = entries
        .iter()
        .rev()
        .find(|e| e.kind == AuditKind::Checkpoint)
        .expect("the log holds the checkpoint it signed");
    let head = Head {
        seq: last.seq,
        hash: hex(&last.hash),
    };
    Ok((report, head))
}

/// Verify every node's log of the cluster directory `dir` and remember the verified heads in
/// `DIR/client/audit-heads.json`.
///
/// # Errors
/// Only when the heads file cannot be locked, read or written; each node's failure is in its
/// verdict.
pub async fn verify_cluster(
    dir: &Path,
    client: &Client,
) -> Result<Vec<NodeVerdict>, obscura_cluster::Error> {
    let path = heads_path(dir);
    // One verification at a time, from reading the kept heads to writing them: one that read
    // them first and finished last would move another's later pin back, or replace the pin of
    // a log rewritten in between with a head of the rewritten log.
    // The lock is released when its file closes, a killed process's too.
    let _held = obscura_cluster::files::lock_beside(&path, std::time::Duration::from_secs(60))?;
    let mut heads = read_heads(&path)?;
    // The checkpoints the nodes anchored in the ledger; a ledger that cannot be read (a user
    // without the role) anchors nothing, and the pins above still hold.
    // Every anchor in the ledger. A user whose role may not read the ledger checks without
    // them (the pins above still hold); any other failure to read it fails every node's log,
    // rather than pass a log the anchors would have caught.
    let mut anchors: BTreeMap<u8, Vec<(u64, [u8; 32])>> = BTreeMap::new();
    let unread = match crate::ledger::verify(dir, client, &[]).await {
        Ok(v) => {
            for e in &v.entries {
                if let obscura_ledger::entry::Transition::Checkpoint { node, seq, head } =
                    e.transition
                {
                    anchors.entry(node).or_default().push((seq, head));
                }
            }
            None
        }
        Err(e) if e.to_string().contains("forbidden") => None,
        Err(e) => Some(e.to_string()),
    };
    let mut verdicts = Vec::new();
    for (node, log) in client.audit_logs().await {
        if let Some(why) = &unread {
            verdicts.push(NodeVerdict {
                node,
                outcome: Err(LogFault::Ledger(why.clone())),
            });
            continue;
        }
        let anchored = anchors.get(&node).map_or(&[][..], Vec::as_slice);
        let outcome = match check_node(dir, node, log, heads.get(&node), anchored) {
            Ok((report, head)) => {
                heads.insert(node, head);
                Ok(report)
            }
            Err(e) => Err(e),
        };
        verdicts.push(NodeVerdict { node, outcome });
    }
    let json = serde_json::to_vec_pretty(&heads).expect("heads encode");
    obscura_cluster::files::write_atomic(&path, &json)?;
    Ok(verdicts)
}

fn read_heads(path: &Path) -> Result<BTreeMap<u8, Head>, obscura_cluster::Error> {
    let fault = |reason: String| obscura_cluster::Error::File {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| fault(format!("{e} (delete it to start afresh)"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(fault(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use obscura_store::Store;

    /// A node's store with `reads` recorded queries and a checkpoint after them; its log as the
    /// node sends it, and the checkpoint's place.
    fn log_of(store: &Store, key: &SigningKey, reads: u8) -> AuditLog {
        for i in 0..reads {
            store.record_query(&[i; 16], b"a read", 100).unwrap();
        }
        let checkpoint = store.audit_checkpoint(key, 101).unwrap();
        AuditLog {
            checkpoint,
            entries: wire(store.audit_entries().unwrap()),
        }
    }

    fn wire(entries: Vec<AuditEntry>) -> Vec<obscura_proto::WireAuditEntry> {
        entries.into_iter().map(Into::into).collect()
    }

    /// Two verifications at once: the second waits for the first to write its heads (it would
    /// otherwise have verified against older ones and written them over the newer), and says
    /// so when the first holds on too long.
    #[test]
    fn a_second_verification_waits_for_the_first_to_keep_its_heads() {
        let dir = std::env::temp_dir().join(format!("obscura-audit-lock-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit-heads.json");
        let lock = |wait| obscura_cluster::files::lock_beside(&path, wait);
        let first = lock(std::time::Duration::ZERO).unwrap();
        let e = lock(std::time::Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("held by another process"), "{e}");
        drop(first);
        lock(std::time::Duration::ZERO).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A lock file another user could open (placed there first, open to others) would let
    /// them hold every verification up: it is refused, with the fix.
    #[cfg(unix)]
    #[test]
    fn an_audit_heads_lock_file_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("obscura-audit-open-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit-heads.json");
        let lock_path = dir.join("audit-heads.json.lock");
        std::fs::write(&lock_path, b"").unwrap();
        std::fs::set_permissions(&lock_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = obscura_cluster::files::lock_beside(&path, std::time::Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("open to other users"), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&lock_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        obscura_cluster::files::lock_beside(&path, std::time::Duration::ZERO).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_checkpoint_a_node_signed_when_asked_is_kept_and_must_be_in_its_log() {
        let dir = std::env::temp_dir().join(format!("obscura-audit-heads-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(dir.join("node1")).unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        std::fs::write(
            dir.join("node1").join("audit-key.pub"),
            hex(&key.verifying_key().to_bytes()),
        )
        .unwrap();
        let store = Store::open(&dir.join("store.redb"), 1).unwrap();
        let first = log_of(&store, &key, 3);
        let (_, head) = check_node(&dir, 1, Ok(first.clone()), None, &[]).unwrap();
        assert_eq!(head.seq, first.checkpoint);

        // Entries after the kept checkpoint may change (a crash loses them): not a rewrite.
        let mut cut = first.clone();
        cut.entries.truncate(head.seq as usize + 1);
        let second = log_of(&store, &key, 2);
        assert!(check_node(&dir, 1, Ok(second.clone()), Some(&head), &[]).is_ok());
        let (_, head) = check_node(&dir, 1, Ok(second.clone()), Some(&head), &[]).unwrap();
        assert_eq!(head.seq, second.checkpoint);

        // A node that says it signed where its log shows no checkpoint fails, and so does one
        // that names an older checkpoint than the one kept (to move the pin back, then cut).
        let mut lying = second.clone();
        lying.checkpoint -= 1;
        let e = check_node(&dir, 1, Ok(lying), Some(&head), &[]).unwrap_err();
        assert!(matches!(e, LogFault::NoCheckpoint(_)), "{e}");
        let mut older = second.clone();
        older.checkpoint = first.checkpoint;
        let e = check_node(&dir, 1, Ok(older), Some(&head), &[]).unwrap_err();
        assert!(matches!(e, LogFault::OlderCheckpoint { .. }), "{e}");

        // A log cut back to its first checkpoint, valid and signed, fails: the second was kept.
        let e = check_node(&dir, 1, Ok(cut.clone()), Some(&head), &[]).unwrap_err();
        assert!(matches!(e, LogFault::OlderCheckpoint { .. }), "{e}");
        cut.checkpoint = head.seq;
        let e = check_node(&dir, 1, Ok(cut), Some(&head), &[]).unwrap_err();
        assert!(matches!(e, LogFault::NoCheckpoint(_)), "{e}");
        drop(store);
        std::fs::remove_dir_all(&dir).ok();
    }
}
