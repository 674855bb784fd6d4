//! A server's audit log, as the server writes it and anyone with its public key verifies it:
//! every state change, every query and every refusal, hash-chained, with signed checkpoints.
//! No I/O: a server's store appends entries, and clients verify the pages servers send them.
//!
//! Entry `seq` stores `prev ‖ hash ‖ time ‖ kind ‖ subject ‖ detail`, where
//! `hash = BLAKE3-derive-key("obscura 2026 audit entry v1", seq ‖ prev ‖ time ‖ kind ‖ subject ‖
//! detail)` and `prev` is the previous entry's hash (zeros for the first). Editing, removing or
//! reordering any entry breaks every later link. A checkpoint entry carries the node's Ed25519
//! signature over the hash of the entry before it, so truncating the log back past a checkpoint
//! that someone saw is detectable too; what was appended after the last checkpoint is only
//! chained, not signed, and [`verify`] says how much that is.

use ed25519_dalek::{Signature, VerifyingKey};

const ENTRY_CONTEXT: &str = "obscura 2026 audit entry v1";
const CHECKPOINT_DOMAIN: &[u8] = b"obscura/audit-checkpoint/v1";
/// Bytes of an entry before its detail.
pub const HEADER_LEN: usize = 32 + 32 + 8 + 1 + 16;

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditKind {
    /// An image was stored as pending.
    Prepare,
    /// An image became visible.
    Commit,
    /// An image was deleted.
    Delete,
    /// A pending image was purged.
    Purge,
    /// A query was answered.
    Query,
    /// A request was refused (replay, stale time).
    Refused,
    /// The node signed the log's head.
    Checkpoint,
    /// A token key version changed: a rotation began, moved images or finished (at a node), or
    /// a keeper took or erased key shares.
    KeyChange,
    /// At a keeper: an account or a user's secret changed, or a login was refused (the user is
    /// named by a keyed digest, never in clear).
    Account,
}

impl AuditKind {
    /// The tag stored and sent on the wire.
    pub fn tag(self) -> u8 {
        match self {
            AuditKind::Prepare => 1,
            AuditKind::Commit => 2,
            AuditKind::Delete => 3,
            AuditKind::Purge => 4,
            AuditKind::Query => 5,
            AuditKind::Refused => 6,
            AuditKind::Checkpoint => 7,
            AuditKind::KeyChange => 8,
            AuditKind::Account => 9,
        }
    }

    /// The kind of a tag, if known.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => AuditKind::Prepare,
            2 => AuditKind::Commit,
            3 => AuditKind::Delete,
            4 => AuditKind::Purge,
            5 => AuditKind::Query,
            6 => AuditKind::Refused,
            7 => AuditKind::Checkpoint,
            8 => AuditKind::KeyChange,
            9 => AuditKind::Account,
            _ => return None,
        })
    }
}

/// One audit entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Hash of the previous entry (zeros for the first).
    pub prev: [u8; 32],
    /// This entry's hash, as stored.
    pub hash: [u8; 32],
    /// Node time, Unix seconds.
    pub time: u64,
    /// What happened.
    pub kind: AuditKind,
    /// The image or request it concerns (zeros for a checkpoint).
    pub subject: [u8; 16],
    /// Kind-specific detail (a checkpoint's signature).
    pub detail: Vec<u8>,
}

impl AuditEntry {
    /// The entry at position `seq` from its stored bytes ([`encode`](Self::encode)).
    ///
    /// # Errors
    /// What is wrong: "audit entry length" or "audit entry kind".
    pub fn decode(seq: u64, bytes: &[u8]) -> Result<AuditEntry, &'static str> {
        if bytes.len() < HEADER_LEN {
            return Err("audit entry length");
        }
        let kind = AuditKind::from_tag(bytes[72]).ok_or("audit entry kind")?;
        Ok(AuditEntry {
            seq,
            prev: bytes[..32].try_into().expect("32 bytes"),
            hash: bytes[32..64].try_into().expect("32 bytes"),
            time: u64::from_be_bytes(bytes[64..72].try_into().expect("8 bytes")),
            kind,
            subject: bytes[73..89].try_into().expect("16 bytes"),
            detail: bytes[HEADER_LEN..].to_vec(),
        })
    }

    /// The entry as the log stores it (its position is the key, not part of the value).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.detail.len());
        bytes.extend_from_slice(&self.prev);
        bytes.extend_from_slice(&self.hash);
        bytes.extend_from_slice(&self.time.to_be_bytes());
        bytes.push(self.kind.tag());
        bytes.extend_from_slice(&self.subject);
        bytes.extend_from_slice(&self.detail);
        bytes
    }

    /// The hash this entry should have, recomputed from its contents.
    pub fn expected_hash(&self) -> [u8; 32] {
        entry_hash(
            self.seq,
            &self.prev,
            self.time,
            self.kind,
            &self.subject,
            &self.detail,
        )
    }
}

/// The hash of an entry with these contents at position `seq`.
pub fn entry_hash(
    seq: u64,
    prev: &[u8; 32],
    time: u64,
    kind: AuditKind,
    subject: &[u8; 16],
    detail: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(ENTRY_CONTEXT);
    h.update(&seq.to_be_bytes());
    h.update(prev);
    h.update(&time.to_be_bytes());
    h.update(&[kind.tag()]);
    h.update(subject);
    h.update(&(detail.len() as u64).to_be_bytes());
    h.update(detail);
    *h.finalize().as_bytes()
}

/// What a checkpoint at position `seq` signs: the hash of the entry before it.
pub fn checkpoint_message(seq: u64, head: &[u8; 32]) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m
}

/// What a successful audit verification found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: u64,
    /// Signed checkpoints found.
    pub checkpoints: u64,
    /// Entries after the last checkpoint: chained but not yet signed.
    pub unsigned_tail: u64,
}

/// Why an audit log failed verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Sequence numbers are not 0, 1, 2, …
    #[error("audit entry {seq}: sequence gap (expected {expected})")]
    Gap {
        /// The entry's number.
        seq: u64,
        /// The number expected there.
        expected: u64,
    },
    /// An entry does not link to its predecessor.
    #[error("audit entry {seq}: does not link to entry {}", seq.saturating_sub(1))]
    BrokenLink {
        /// The entry's number.
        seq: u64,
    },
    /// An entry's contents do not match its hash.
    #[error("audit entry {seq}: contents were altered")]
    Altered {
        /// The entry's number.
        seq: u64,
    },
    /// A checkpoint's signature does not verify under the node's key.
    #[error("audit entry {seq}: checkpoint signature is not the node's")]
    BadCheckpoint {
        /// The entry's number.
        seq: u64,
    },
}

/// Verify a whole log, oldest first, against the node's public key.
///
/// # Errors
/// The first [`AuditError`] found.
pub fn verify(entries: &[AuditEntry], node_key: &VerifyingKey) -> Result<AuditReport, AuditError> {
    let mut v = Verifier::new(*node_key);
    v.feed(entries)?;
    Ok(v.report())
}

/// Verifies a log page by page, so that a long log is never held whole: feed the pages in
/// order, from entry 0 or from a head verified before ([`Verifier::resume`]).
#[derive(Clone, Debug)]
pub struct Verifier {
    key: VerifyingKey,
    next: u64,
    prev: [u8; 32],
    entries: u64,
    checkpoints: u64,
    last_checkpoint: Option<u64>,
}

impl Verifier {
    /// Verify from the first entry.
    pub fn new(key: VerifyingKey) -> Verifier {
        Verifier {
            key,
            next: 0,
            prev: [0; 32],
            entries: 0,
            checkpoints: 0,
            last_checkpoint: None,
        }
    }

    /// Verify the entries after `seq`, whose hash was verified before as `hash`; the first
    /// page fed must start at `seq` itself (its hash must match, so a log cut back behind it,
    /// or rewritten at it, fails).
    pub fn resume(key: VerifyingKey, seq: u64, hash: [u8; 32]) -> Verifier {
        Verifier {
            key,
            next: seq,
            prev: hash,
            entries: 0,
            checkpoints: 0,
            last_checkpoint: None,
        }
    }

    /// The position of the next entry expected.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The hash of the last entry verified.
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }

    /// Verify the next entries, in order.
    ///
    /// # Errors
    /// The first [`AuditError`] found.
    pub fn feed(&mut self, entries: &[AuditEntry]) -> Result<(), AuditError> {
        for e in entries {
            if e.seq != self.next {
                return Err(AuditError::Gap {
                    seq: e.seq,
                    expected: self.next,
                });
            }
            // A resumed verifier first sees the head it already verified: its hash must match.
            let resumed_head = self.entries == 0 && self.next > 0 && e.hash == self.prev;
            if resumed_head {
                if e.expected_hash() != e.hash {
                    return Err(AuditError::Altered { seq: e.seq });
                }
                self.next += 1;
                self.entries += 1;
                continue;
            }
            if self.entries == 0 && self.next > 0 {
                return Err(AuditError::BrokenLink { seq: e.seq });
            }
            if e.prev != self.prev {
                return Err(AuditError::BrokenLink { seq: e.seq });
            }
            if e.expected_hash() != e.hash {
                return Err(AuditError::Altered { seq: e.seq });
            }
            if e.kind == AuditKind::Checkpoint {
                let sig = <[u8; 64]>::try_from(e.detail.as_slice())
                    .map(|b| Signature::from_bytes(&b))
                    .map_err(|_| AuditError::BadCheckpoint { seq: e.seq })?;
                self.key
                    .verify_strict(&checkpoint_message(e.seq, &e.prev), &sig)
                    .map_err(|_| AuditError::BadCheckpoint { seq: e.seq })?;
                self.checkpoints += 1;
                self.last_checkpoint = Some(e.seq);
            }
            self.prev = e.hash;
            self.next += 1;
            self.entries += 1;
        }
        Ok(())
    }

    /// What was verified: entries fed, checkpoints among them, and entries after the last
    /// checkpoint (all of them when none was fed).
    pub fn report(&self) -> AuditReport {
        AuditReport {
            entries: self.entries,
            checkpoints: self.checkpoints,
            unsigned_tail: self
                .last_checkpoint
                .map_or(self.entries, |c| self.next - c - 1),
        }
    }
}

impl From<AuditEntry> for crate::WireAuditEntry {
    fn from(e: AuditEntry) -> Self {
        crate::WireAuditEntry {
            seq: e.seq,
            prev: e.prev,
            hash: e.hash,
            time: e.time,
            kind: e.kind.tag(),
            subject: e.subject,
            detail: e.detail,
        }
    }
}

impl TryFrom<crate::WireAuditEntry> for AuditEntry {
    type Error = crate::Error;

    /// An entry as a server sent it; its kind must be one this build knows.
    fn try_from(w: crate::WireAuditEntry) -> Result<Self, crate::Error> {
        Ok(AuditEntry {
            kind: AuditKind::from_tag(w.kind).ok_or_else(|| {
                crate::Error::Malformed(format!("audit entry {}: kind {}", w.seq, w.kind))
            })?,
            seq: w.seq,
            prev: w.prev,
            hash: w.hash,
            time: w.time,
            subject: w.subject,
            detail: w.detail,
        })
    }
}
