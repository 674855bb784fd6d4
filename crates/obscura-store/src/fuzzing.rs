//! Entry points for the `obscura-fuzz` targets, not an API: the decoders of the records a
//! store writes for itself. A damaged disk, or anyone who can write the store file, hands them
//! back changed; each must refuse what it did not write, never panic, and read what it did write
//! back to the same bytes.

use crate::audit::AuditEntry;
use crate::rotation::Record;
use crate::ImageRecord;
use zeroize::Zeroizing;

/// An image state record as the store reads it, encoded again; `None` where it is refused.
pub fn image_record(bytes: &[u8]) -> Option<Vec<u8>> {
    ImageRecord::decode(bytes).ok().map(|r| r.encode())
}

/// A key-rotation record as the store reads it, encoded again (it holds the rotation's
/// factor, so it is wiped when dropped); `None` where it is refused.
pub fn rotation_record(bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    Record::decode(bytes).ok().map(|r| r.encode())
}

/// The audit entry at position `seq` as the store reads it, with its encoding again; `None`
/// where it is refused.
pub fn audit_entry(seq: u64, bytes: &[u8]) -> Option<(AuditEntry, Vec<u8>)> {
    AuditEntry::decode(seq, bytes).ok().map(|e| {
        let again = e.encode();
        (e, again)
    })
}
