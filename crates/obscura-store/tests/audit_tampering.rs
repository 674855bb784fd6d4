//! The audit log records every state change, query and refusal; any edit, deletion or forged
//! checkpoint is found by verification, which names the entry.

mod common;

use common::{Parts, TempDir};
use ed25519_dalek::SigningKey;
use obscura_store::audit::{verify, AuditError};
use obscura_store::{AuditKind, Store};
use redb::{Database, ReadableTable, TableDefinition};

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

fn populated(dir: &TempDir, key: &SigningKey) {
    let store = Store::open(&dir.db(), 1).unwrap();
    for i in 0..3 {
        let p = Parts::new(i);
        store.prepare(&p.new_image(), 10 + u64::from(i)).unwrap();
        store.commit(&p.id, 20 + u64::from(i)).unwrap();
    }
    store.record_query(&[5; 16], b"candidates=3", 30).unwrap();
    let signed = store.audit_checkpoint(key, 31).unwrap();
    // Signing again with nothing new adds nothing.
    assert_eq!(store.audit_checkpoint(key, 32).unwrap(), signed);
    store.delete(&Parts::new(1).id, 40).unwrap();
}

fn edit(dir: &TempDir, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let db = Database::open(dir.db()).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(AUDIT).unwrap();
        f(&mut t);
    }
    txn.commit().unwrap();
}

#[test]
fn an_untouched_log_verifies() {
    let dir = TempDir::new("audit-ok");
    let key = SigningKey::from_bytes(&[3; 32]);
    populated(&dir, &key);
    let store = Store::open(&dir.db(), 1).unwrap();
    let entries = store.audit_entries().unwrap();
    let kinds: Vec<AuditKind> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::Prepare,
            AuditKind::Commit,
            AuditKind::Prepare,
            AuditKind::Commit,
            AuditKind::Prepare,
            AuditKind::Commit,
            AuditKind::Query,
            AuditKind::Checkpoint,
            AuditKind::Delete,
        ]
    );
    let report = verify(&entries, &key.verifying_key()).unwrap();
    assert_eq!(
        (report.entries, report.checkpoints, report.unsigned_tail),
        (9, 1, 1)
    );
}

#[test]
fn an_edited_entry_is_named() {
    let dir = TempDir::new("audit-edit");
    let key = SigningKey::from_bytes(&[3; 32]);
    populated(&dir, &key);
    edit(&dir, |t| {
        let mut v = t.get(3).unwrap().unwrap().value().to_vec();
        let last = v.len() - 1;
        v[last] ^= 1; // the subject's last byte
        t.insert(3, v.as_slice()).unwrap();
    });
    let entries = Store::open(&dir.db(), 1).unwrap().audit_entries().unwrap();
    assert_eq!(
        verify(&entries, &key.verifying_key()),
        Err(AuditError::Altered { seq: 3 })
    );
}

#[test]
fn a_removed_entry_is_found() {
    let dir = TempDir::new("audit-remove");
    let key = SigningKey::from_bytes(&[3; 32]);
    populated(&dir, &key);
    edit(&dir, |t| {
        t.remove(4).unwrap();
    });
    let entries = Store::open(&dir.db(), 1).unwrap().audit_entries().unwrap();
    assert_eq!(
        verify(&entries, &key.verifying_key()),
        Err(AuditError::Gap {
            seq: 5,
            expected: 4
        })
    );
}

#[test]
fn a_rewritten_chain_fails_the_checkpoint() {
    // An attacker who rewrites an early entry and re-hashes everything after it still cannot
    // produce the node's signature on the new head.
    let dir = TempDir::new("audit-rechain");
    let key = SigningKey::from_bytes(&[3; 32]);
    populated(&dir, &key);
    let mut entries = Store::open(&dir.db(), 1).unwrap().audit_entries().unwrap();
    entries[0].time += 1;
    let mut prev = [0u8; 32];
    for e in entries.iter_mut() {
        e.prev = prev;
        e.hash = e.expected_hash();
        prev = e.hash;
    }
    assert_eq!(
        verify(&entries, &key.verifying_key()),
        Err(AuditError::BadCheckpoint { seq: 7 })
    );
    // And a checkpoint checked against another node's key fails too.
    let fresh = Store::open(&dir.db(), 1).unwrap().audit_entries().unwrap();
    let other = SigningKey::from_bytes(&[4; 32]);
    assert_eq!(
        verify(&fresh, &other.verifying_key()),
        Err(AuditError::BadCheckpoint { seq: 7 })
    );
}
