//! A keeper's store: its replay window, each client's evaluation budget, and its audit log.
//!
//! Keepers hold shares of the token keys, and a client that could have them evaluate without
//! limit could, together with a node that holds stored tokens, build the 256-entry dictionary of
//! every band. So each client (named by its TLS certificate) has a budget of evaluations per
//! fixed time window; a request that would go over it is refused whole, and the refusal is
//! appended to the keeper's hash-chained audit log, as is every evaluation granted (sizes and
//! client only, never an element).
//!
//! ```
//! use obscura_store::keeper::{Budget, KeeperStore};
//!
//! let dir = std::env::temp_dir().join(format!("obscura-keeper-doc-{}", std::process::id()));
//! let store = KeeperStore::open(&dir.join("keeper1.redb"), 1)?;
//! let budget = Budget { evaluations: 100, window_s: 3600 };
//! let client = [3; 16];
//! assert_eq!(store.charge(&client, &[1; 16], 60, budget, 7_200)?, 60);
//! let refused = store.charge(&client, &[2; 16], 60, budget, 7_300);
//! assert!(matches!(refused, Err(obscura_store::Error::OverBudget { used: 60, .. })));
//! store.charge(&client, &[3; 16], 60, budget, 10_800)?; // the next window
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), obscura_store::Error>(())
//! ```

use std::path::Path;

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::audit::{self, AuditEntry, AuditKind};
use crate::{Error, AUDIT, REQUESTS, REQUESTS_BY_TIME};

/// client id → window start (u64 BE) ‖ evaluations used in it (u64 BE).
const BUDGETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("budgets");
/// Account records, already encrypted by the keeper: key → sealed record.
const VAULT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vault");
/// "state" → the number of vault writes so far.
const VAULT_STATE: TableDefinition<&str, u64> = TableDefinition::new("vault_state");

/// One change of a [`KeeperStore::vault_write`]: a record put, or removed with `None`.
pub type VaultChange = (Vec<u8>, Option<Vec<u8>>);
/// A stored record: key and sealed value.
pub type VaultRecord = (Vec<u8>, Vec<u8>);

/// How many evaluations a client may ask of a keeper per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Evaluations per window.
    pub evaluations: u64,
    /// Window length in seconds; windows start at multiples of it (Unix time).
    pub window_s: u64,
}

/// A keeper's redb store.
pub struct KeeperStore {
    db: crate::db::Db,
    keeper: u8,
}

impl std::fmt::Debug for KeeperStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeeperStore")
            .field("keeper", &self.keeper)
            .finish()
    }
}

impl KeeperStore {
    /// Open (or create) keeper `keeper`'s store at `path`.
    ///
    /// # Errors
    /// [`Error::Open`] when the file cannot be opened, [`Error::WrongNode`] when it belongs to
    /// another keeper.
    pub fn open(path: &Path, keeper: u8) -> Result<KeeperStore, Error> {
        let db = crate::open_claimed(
            path,
            crate::StoreOptions::default(),
            "keeper",
            keeper,
            |txn| {
                crate::create_tables!(txn, BUDGETS, REQUESTS, REQUESTS_BY_TIME, AUDIT, VAULT);
                crate::create_tables!(txn, VAULT_STATE);
                Ok(())
            },
        )?;
        Ok(KeeperStore { db, keeper })
    }

    /// The database, reopened first where a failure latched in it.
    fn db(&self) -> Result<crate::db::DbGuard<'_>, Error> {
        if self.db.wants_reopen() {
            self.db.reopen(|_| Ok(()))?;
        }
        self.db.get()
    }

    /// The keeper this store belongs to.
    pub fn keeper(&self) -> u8 {
        self.keeper
    }

    /// Admit a request id into the replay window, as a node does. Not synced on its own: it
    /// becomes durable with the next charge or checkpoint.
    ///
    /// # Errors
    /// [`Error::Replay`], [`Error::Stale`] (both audited).
    pub fn admit_request(
        &self,
        request_id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
    ) -> Result<(), Error> {
        // Not audited here: anyone who reaches a keeper can send stale or replayed requests
        // before any session, so the keeper counts refusals and sums them up
        // ([`record_refusal`](Self::record_refusal)).
        crate::admit(
            &*self.db()?,
            request_id,
            at,
            now,
            window,
            Durability::None,
            false,
        )
    }

    /// Append a refusal, or a summary of refusals, to the audit log, not synced on its own.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn record_refusal(&self, subject: &[u8; 16], detail: &str, now: u64) -> Result<(), Error> {
        crate::audit_refusal(&*self.db()?, subject, now, detail.as_bytes())
    }

    /// Charge `evaluations` to `client`'s budget for the window holding `now`, and audit it;
    /// return the client's use in the window, this charge included. A charge that would exceed
    /// the budget is refused whole, audited, and charges nothing.
    ///
    /// Granted charges are not synced on their own (a keeper that crashes forgets the last
    /// few seconds of use); refusals are.
    ///
    /// # Errors
    /// [`Error::OverBudget`], or [`Error::Storage`].
    pub fn charge(
        &self,
        client: &[u8; 16],
        request_id: &[u8; 16],
        evaluations: u64,
        budget: Budget,
        now: u64,
    ) -> Result<u64, Error> {
        let window = budget.window_s.max(1);
        let start = now - now % window;
        let db = self.db()?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let used = {
            let table = txn.open_table(BUDGETS)?;
            let row = table.get(client.as_slice())?;
            match row.map(|v| v.value().to_vec()) {
                Some(bytes) if bytes.len() == 16 => {
                    let at = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
                    let used = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
                    if at == start {
                        used
                    } else {
                        0
                    }
                }
                Some(_) => return Err(Error::Corrupt("budget")),
                None => 0,
            }
        };
        if used.saturating_add(evaluations) > budget.evaluations {
            txn.abort()?;
            let detail = format!(
                "over budget: client {} asked {evaluations}, used {used} of {} in the window from {start}",
                hex(client),
                budget.evaluations
            );
            crate::audit_refusal(&db, request_id, now, detail.as_bytes())?;
            return Err(Error::OverBudget {
                used,
                asked: evaluations,
                budget: budget.evaluations,
                resets_at: start + window,
            });
        }
        {
            let mut table = txn.open_table(BUDGETS)?;
            let mut row = [0u8; 16];
            row[..8].copy_from_slice(&start.to_be_bytes());
            row[8..].copy_from_slice(&(used + evaluations).to_be_bytes());
            table.insert(client.as_slice(), row.as_slice())?;
        }
        let detail = format!("evaluate client={} elements={evaluations}", hex(client));
        audit::append(&txn, now, AuditKind::Query, request_id, detail.as_bytes())?;
        txn.commit()?;
        Ok(used + evaluations)
    }

    /// Evaluations `client` has used in the window holding `now`.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn used(&self, client: &[u8; 16], window_s: u64, now: u64) -> Result<u64, Error> {
        let start = now - now % window_s.max(1);
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(BUDGETS)?;
        let row = table.get(client.as_slice())?;
        Ok(match row.map(|v| v.value().to_vec()) {
            Some(b) if b.len() == 16 && b[..8] == start.to_be_bytes() => {
                u64::from_be_bytes(b[8..].try_into().expect("8 bytes"))
            }
            _ => 0,
        })
    }

    /// Record, durably, that the keeper's key shares changed (a rotation's new version taken,
    /// or a version erased): `detail` names versions and node keys, never a share.
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn record_key_change(
        &self,
        request_id: &[u8; 16],
        detail: &str,
        now: u64,
    ) -> Result<(), Error> {
        crate::audit_durably(
            &*self.db()?,
            AuditKind::KeyChange,
            request_id,
            detail.as_bytes(),
            now,
        )
    }

    /// Sign the audit log's head (see [`crate::Store::audit_checkpoint`]).
    ///
    /// # Errors
    /// [`Error::Storage`] on failure.
    pub fn audit_checkpoint(
        &self,
        key: &ed25519_dalek::SigningKey,
        now: u64,
    ) -> Result<u64, Error> {
        crate::audit_checkpoint(&*self.db()?, key, now)
    }

    /// Every audit entry, oldest first.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>, Error> {
        crate::read_audit(&*self.db()?)
    }

    /// Up to `max` audit entries from `from` on, and the log's length.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure, [`Error::Corrupt`] for a malformed entry.
    pub fn audit_page(&self, from: u64, max: u32) -> Result<(Vec<AuditEntry>, u64), Error> {
        crate::read_audit_page(&*self.db()?, from, max)
    }
}

impl KeeperStore {
    /// How many vault writes the store holds: compared with the counter the keeper keeps apart
    /// from the store, it shows a store restored from an older copy.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn vault_state(&self) -> Result<u64, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(VAULT_STATE)?;
        Ok(table.get("state")?.map_or(0, |v| v.value()))
    }

    /// A record, as stored (sealed by the keeper).
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn vault_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(VAULT)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every record whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn vault_scan(&self, prefix: &[u8]) -> Result<Vec<VaultRecord>, Error> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(VAULT)?;
        let mut out = Vec::new();
        for row in table.range(prefix..)? {
            let (k, v) = row?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Apply `changes` and audit `detail`, durably and all or none, if the store is at state
    /// `expected`; it is then at `expected + 1`, which is returned.
    ///
    /// # Errors
    /// [`Error::RolledBack`] when the store is at another state (nothing is written), or
    /// [`Error::Storage`].
    pub fn vault_write(
        &self,
        expected: u64,
        changes: &[VaultChange],
        subject: &[u8; 16],
        detail: &str,
        now: u64,
    ) -> Result<u64, Error> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        let state = {
            let mut table = txn.open_table(VAULT_STATE)?;
            let state = table.get("state")?.map_or(0, |v| v.value());
            if state != expected {
                drop(table);
                txn.abort()?;
                return Err(Error::RolledBack {
                    store: state,
                    counter: expected,
                });
            }
            table.insert("state", state + 1)?;
            state + 1
        };
        {
            let mut table = txn.open_table(VAULT)?;
            for (key, value) in changes {
                match value {
                    Some(v) => table.insert(key.as_slice(), v.as_slice())?,
                    None => table.remove(key.as_slice())?,
                };
            }
        }
        audit::append(&txn, now, AuditKind::Account, subject, detail.as_bytes())?;
        txn.commit()?;
        Ok(state)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
