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

/// A log's last entry: its sequence number, hash and kind tag.
pub(crate) type Head = (u64, [u8; 32], u8);

/// The head of a log whose last entry is `bytes`, at `seq`.
pub(crate) fn head_of(seq: u64, bytes: &[u8]) -> Result<Head, Error> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Corrupt("audit entry length"));
    }
    Ok((seq, bytes[32..64].try_into().expect("32 bytes"), bytes[72]))
}

/// The last entry's sequence number, hash and kind tag, or `None` for an empty log.
fn head(txn: &WriteTransaction) -> Result<Option<Head>, Error> {
    let table = txn.open_table(AUDIT)?;
    let last = table.last()?;
    last.map(|(k, v)| head_of(k.value(), v.value())).transpose()
}

/// The entry that follows `head`.
pub(crate) fn next_entry(
    head: Option<Head>,
    time: u64,
    kind: AuditKind,
    subject: &[u8; 16],
    detail: &[u8],
) -> AuditEntry {
    let (seq, prev) = match head {
        None => (0, [0u8; 32]),
        Some((s, h, _)) => (s + 1, h),
    };
    AuditEntry {
        seq,
        prev,
        hash: entry_hash(seq, &prev, time, kind, subject, detail),
        time,
        kind,
        subject: *subject,
        detail: detail.to_vec(),
    }
}

/// The checkpoint that signs `head`, or, when the log already ends in a checkpoint, that
/// checkpoint's sequence number: an idle node's log does not grow by a checkpoint every
/// interval.
pub(crate) fn next_checkpoint(
    head: Option<Head>,
    key: &SigningKey,
    time: u64,
) -> Result<AuditEntry, u64> {
    if let Some((seq, _, tag)) = head {
        if tag == AuditKind::Checkpoint.tag() {
            return Err(seq);
        }
    }
    let (seq, hash) = head.map_or((0, [0u8; 32]), |(s, h, _)| (s + 1, h));
    let sig = key.sign(&checkpoint_message(seq, &hash));
    Ok(next_entry(
        head,
        time,
        AuditKind::Checkpoint,
        &[0; 16],
        &sig.to_bytes(),
    ))
}

/// Append one entry inside `txn`; returns its sequence number.
pub(crate) fn append(
    txn: &WriteTransaction,
    time: u64,
    kind: AuditKind,
    subject: &[u8; 16],
    detail: &[u8],
) -> Result<u64, Error> {
    let entry = next_entry(head(txn)?, time, kind, subject, detail);
    txn.open_table(AUDIT)?
        .insert(entry.seq, entry.encode().as_slice())?;
    Ok(entry.seq)
}

/// Append a checkpoint signing the current head.
pub(crate) fn checkpoint(
    txn: &WriteTransaction,
    key: &SigningKey,
    time: u64,
) -> Result<u64, Error> {
    match next_checkpoint(head(txn)?, key, time) {
        Err(seq) => Ok(seq),
        Ok(entry) => {
            txn.open_table(AUDIT)?
                .insert(entry.seq, entry.encode().as_slice())?;
            Ok(entry.seq)
        }
    }
}
