//! The node's copy of the cluster ledger: its entries, in order, and the last head a quorum of
//! nodes cosigned. The store keeps bytes; the node decodes and checks them
//! (`obscura_ledger::replica`), before it writes them and again when it opens the store.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::audit::{self, AuditKind};
use crate::{begin_durable, Error, Store, META};

/// Ledger entries by position, each as its author signed it (postcard).
const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");

/// The key in `meta` of the last cosigned head (postcard).
const COSIGNED: &str = "ledger_cosigned";

/// The key in `meta` of the newest head the node committed to, with its cosignature (postcard).
const COMMITTED: &str = "ledger_committed";

/// The ledger as stored: its entries in order, and the last cosigned head kept, each encoded.
#[derive(Clone, Debug, Default)]
pub struct StoredLedger {
    /// The entries, from position 0.
    pub entries: Vec<Vec<u8>>,
    /// The last head a quorum cosigned, if any was kept.
    pub cosigned: Option<Vec<u8>>,
    /// The newest head the node committed to, if any.
    pub committed: Option<Vec<u8>>,
    /// The store's count of ledger changes, read in the same snapshot (0 for a store one
    /// process writes).
    pub generation: u64,
}

impl Store {
    /// Every ledger entry, in order, and the last cosigned head kept.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure, [`Error::Corrupt`] when positions are not `0..n`.
    pub fn ledger(&self) -> Result<StoredLedger, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let entries = match txn.open_table(LEDGER) {
            Ok(table) => {
                let mut out = Vec::new();
                for row in table.iter()? {
                    let (seq, bytes) = row?;
                    if seq.value() != out.len() as u64 {
                        return Err(Error::Corrupt("ledger positions"));
                    }
                    out.push(bytes.value().to_vec());
                }
                out
            }
            Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let (cosigned, committed) = match txn.open_table(META) {
            Ok(meta) => (
                meta.get(COSIGNED)?.map(|v| v.value().to_vec()),
                meta.get(COMMITTED)?.map(|v| v.value().to_vec()),
            ),
            Err(redb::TableError::TableDoesNotExist(_)) => (None, None),
            Err(e) => return Err(e.into()),
        };
        Ok(StoredLedger {
            entries,
            cosigned,
            committed,
            generation: 0,
        })
    }

    /// Up to `max` ledger entries from position `from`.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn ledger_page(&self, from: u64, max: u32) -> Result<Vec<Vec<u8>>, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(LEDGER) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.range(from..)?.take(max as usize) {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Append `entries` at positions `from..`, durably and with the request's audit entry in
    /// the same commit, if the ledger holds exactly `from` entries.
    ///
    /// # Errors
    /// [`Error::Invalid`] when it holds another number (a concurrent append won),
    /// [`Error::Storage`] on failure; nothing is written.
    pub fn ledger_append(
        &self,
        from: u64,
        entries: &[Vec<u8>],
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error> {
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        {
            let mut table = txn.open_table(LEDGER)?;
            if table.len()? != from {
                return Err(Error::Invalid("the ledger changed meanwhile"));
            }
            for (i, bytes) in entries.iter().enumerate() {
                table.insert(from + i as u64, bytes.as_slice())?;
            }
        }
        audit::append(&txn, now, AuditKind::Query, request_id, detail)?;
        txn.commit()?;
        Ok(())
    }

    /// Replace the ledger entries from position `from` on with `entries`, in one durable
    /// commit with the request's audit entry: entries the node never committed to, replaced by
    /// what a caller showed to follow on from the history before them.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure; nothing is changed.
    pub fn ledger_replace(
        &self,
        from: u64,
        entries: &[Vec<u8>],
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error> {
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        {
            let mut table = txn.open_table(LEDGER)?;
            table.retain_in(from.., |_, _| false)?;
            for (i, bytes) in entries.iter().enumerate() {
                table.insert(from + i as u64, bytes.as_slice())?;
            }
        }
        audit::append(&txn, now, AuditKind::Query, request_id, detail)?;
        txn.commit()?;
        Ok(())
    }

    /// Keep `head` (an encoded head with the node's cosignature) as the newest it committed to,
    /// durably, before the cosignature leaves the node.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn set_ledger_committed(&self, head: &[u8]) -> Result<(), Error> {
        self.set_meta(COMMITTED, head)
    }

    /// Keep `head` (an encoded cosigned head) as the last one a quorum cosigned, durably.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn set_ledger_cosigned(&self, head: &[u8]) -> Result<(), Error> {
        self.set_meta(COSIGNED, head)
    }

    /// Keep `value` under `key` in `meta`, durably.
    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }
}
