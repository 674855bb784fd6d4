//! `obscura audit verify`: fetch every node's hash-chained audit log and check it.
//!
//! Each log must be an unbroken chain whose checkpoints verify under the node's audit key (the
//! public half sits in `DIR/nodeN/audit-key.pub` from cluster creation). The last checkpoint
//! verified (each verification asks every node for one first) is kept in
//! `DIR/client/audit-heads.json`; a log that no longer contains it was truncated or rewritten
//! since, even if it is a valid chain again now.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use obscura_client::Client;
use obscura_proto::WireAuditEntry;
use obscura_store::audit::{verify, AuditEntry, AuditKind, AuditReport};
use obscura_tokens::keyfile::to_hex as hex;
use serde::{Deserialize, Serialize};

/// The last verified head of one node's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// One node's verdict.
pub struct NodeVerdict {
    pub node: u8,
    pub outcome: Result<AuditReport, String>,
}

fn heads_path(dir: &Path) -> PathBuf {
    dir.join("client").join("audit-heads.json")
}

fn audit_key(dir: &Path, node: u8) -> Result<VerifyingKey, String> {
    let path = dir.join(format!("node{node}")).join("audit-key.pub");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    obscura_tokens::keyfile::hex32(&text)
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| format!("{}: not an Ed25519 public key", path.display()))
}

fn from_wire(entries: Vec<WireAuditEntry>) -> Result<Vec<AuditEntry>, String> {
    entries
        .into_iter()
        .map(|e| {
            Ok(AuditEntry {
                seq: e.seq,
                prev: e.prev,
                hash: e.hash,
                time: e.time,
                kind: AuditKind::from_tag(e.kind)
                    .ok_or_else(|| format!("audit entry {}: unknown kind {}", e.seq, e.kind))?,
                subject: e.subject,
                detail: e.detail,
            })
        })
        .collect()
}

fn check_node(
    dir: &Path,
    node: u8,
    log: Result<Vec<WireAuditEntry>, String>,
    known: Option<&Head>,
) -> Result<(AuditReport, Option<Head>), String> {
    let key = audit_key(dir, node)?;
    let entries = from_wire(log?)?;
    let report = verify(&entries, &key).map_err(|e| e.to_string())?;
    if let Some(h) = known {
        match entries.get(h.seq as usize) {
            Some(e) if hex(&e.hash) == h.hash => {}
            Some(_) => {
                return Err(format!(
                    "entry {} differs from the one verified before: the log was rewritten",
                    h.seq
                ))
            }
            None => {
                return Err(format!(
                    "the log ends before entry {}, which was verified before: it was truncated",
                    h.seq
                ))
            }
        }
    }
    // The last signed checkpoint, not the last entry: a checkpoint is synced to disk, and so is
    // everything before it, while a node that crashes loses the entries after its last sync
    // (reads are recorded without one) and writes others in their places. Remembering those
    // would call every crash a rewrite.
    let head = entries
        .iter()
        .rev()
        .find(|e| e.kind == AuditKind::Checkpoint)
        .map(|e| Head {
            seq: e.seq,
            hash: hex(&e.hash),
        });
    Ok((report, head))
}

/// Verify every node's log and remember the verified heads.
///
/// # Errors
/// Only when the heads file cannot be read or written; each node's failure is in its verdict.
pub async fn verify_cluster(dir: &Path, client: &Client) -> Result<Vec<NodeVerdict>, String> {
    let path = heads_path(dir);
    let mut heads: BTreeMap<u8, Head> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: {e} (delete it to start afresh)", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut verdicts = Vec::new();
    for (node, log) in client.audit_logs().await {
        let log = log.map_err(|e| e.to_string());
        let outcome = match check_node(dir, node, log, heads.get(&node)) {
            Ok((report, head)) => {
                if let Some(h) = head {
                    heads.insert(node, h);
                }
                Ok(report)
            }
            Err(e) => Err(e),
        };
        verdicts.push(NodeVerdict { node, outcome });
    }
    let json = serde_json::to_vec_pretty(&heads).map_err(|e| e.to_string())?;
    obscura_node::config::write_atomic(&path, &json).map_err(|e| e.to_string())?;
    Ok(verdicts)
}
