//! The server's audit log as the store keeps it: entries appended in the transaction of what
//! they record, and checkpoints signing the head. The chain's rules (entry hash, checkpoint
//! message, verification) are in [`obscura_proto::audit`], which clients verify with; they are
//! re-exported here.

use ed25519_dalek::{Signer, SigningKey};
use redb::{ReadableTable, WriteTransaction};

pub use obscura_proto::audit::{
    checkpoint_message, entry_hash, verify, AuditEntry, AuditError, AuditKind, AuditReport,
    Verifier, HEADER_LEN,
};

use crate::{Error, AUDIT};

/// The last entry's sequence number, hash and kind tag, or `None` for an empty log.
fn head(txn: &WriteTransaction) -> Result<Option<(u64, [u8; 32], u8)>, Error> {
    let table = txn.open_table(AUDIT)?;
    let last = table.last()?;
    last.map(|(k, v)| {
        let bytes = v.value();
        if bytes.len() < HEADER_LEN {
            return Err(Error::Corrupt("audit entry length"));
        }
        Ok((
            k.value(),
            bytes[32..64].try_into().expect("32 bytes"),
            bytes[72],
        ))
    })
    .transpose()
}

/// Append one entry inside `txn`; returns its sequence number.
pub(crate) fn append(
    txn: &WriteTransaction,
    time: u64,
    kind: AuditKind,
    subject: &[u8; 16],
    detail: &[u8],
) -> Result<u64, Error> {
    let (seq, prev) = match head(txn)? {
        None => (0, [0u8; 32]),
        Some((s, h, _)) => (s + 1, h),
    };
    let entry = AuditEntry {
        seq,
        prev,
        hash: entry_hash(seq, &prev, time, kind, subject, detail),
        time,
        kind,
        subject: *subject,
        detail: detail.to_vec(),
    };
    txn.open_table(AUDIT)?
        .insert(seq, entry.encode().as_slice())?;
    Ok(seq)
}

/// Append a checkpoint signing the current head.
pub(crate) fn checkpoint(
    txn: &WriteTransaction,
    key: &SigningKey,
    time: u64,
) -> Result<u64, Error> {
    let last = head(txn)?;
    // A log already ending in a checkpoint is signed as it stands: an idle node's log does not
    // grow by a checkpoint every interval.
    if let Some((seq, _, tag)) = last {
        if tag == AuditKind::Checkpoint.tag() {
            return Ok(seq);
        }
    }
    let (seq, head) = last.map_or((0, [0u8; 32]), |(s, h, _)| (s + 1, h));
    let sig = key.sign(&checkpoint_message(seq, &head));
    append(txn, time, AuditKind::Checkpoint, &[0; 16], &sig.to_bytes())
}
