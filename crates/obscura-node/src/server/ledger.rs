//! The cluster ledger at a node: entries appended only when their authors signed them for
//! their places and they keep the rules, the node's cosignature of each head it reaches, and
//! the heads a quorum cosigned, kept only when this node's own entries give the same root.

use obscura_auth::capability::Authorized;
use obscura_ledger::entry::{Entry, Transition};
use obscura_ledger::head::{Cosignature, CosignedHead, TreeHead};
use obscura_ledger::merkle::Hash;
use obscura_ledger::replica::Replica;
use obscura_proto::{limits, roles, ErrorCode, LedgerAppended, LedgerHeads, ResponseBody};

use super::{auth_error, NodeState, Request};
use obscura_server::{error, store_error};

/// A consistency proof between a head of `since` entries and one of `size`, whichever is
/// larger; empty when the replica holds neither (the caller's check then fails).
fn proof(replica: &Replica, since: u64, size: u64) -> Vec<Hash> {
    let (old, new) = if since <= size {
        (since, size)
    } else {
        (size, since)
    };
    replica.proof_between(old, new).unwrap_or_default()
}

/// The node's ledger while a request works on it.
struct LedgerGuard<'a> {
    // Dropped first: the store's lock is released before the copy.
    _lock: obscura_store::LedgerLock<'a>,
    ledger: std::sync::MutexGuard<'a, crate::ledger::NodeLedger>,
    store: &'a dyn obscura_store::NodeStore,
}

impl Drop for LedgerGuard<'_> {
    /// After a write this request made and took into the copy, with no other process able to
    /// write meanwhile, the store's count is the copy's: this process's own writes do not make
    /// it read the ledger again. A write that failed (perhaps after it committed) leaves the
    /// count the copy had, so the next request reads the ledger again if the store changed.
    fn drop(&mut self) {
        if std::mem::take(&mut self.ledger.synced) {
            match self.store.ledger_generation() {
                Ok(g) => self.ledger.generation = g,
                // Unknown: the next request reads the ledger again.
                Err(_) => self.ledger.generation = u64::MAX,
            }
        }
    }
}

impl std::ops::Deref for LedgerGuard<'_> {
    type Target = crate::ledger::NodeLedger;
    fn deref(&self) -> &Self::Target {
        &self.ledger
    }
}

impl std::ops::DerefMut for LedgerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.ledger
    }
}

impl NodeState {
    /// The node's ledger, unless a failed write left it unreadable until a restart; read again
    /// from the store when another process of the node changed it. Held with the store's ledger
    /// lock, so no other process changes it until the request is done.
    fn ledger(&self) -> Result<LedgerGuard<'_>, ResponseBody> {
        // This process's copy first, then the store's lock: one request per process waits on
        // the store's, holding one connection, not every request in flight.
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let lock = self.store.ledger_lock().map_err(store_error)?;
        if ledger.broken {
            return Err(error(
                ErrorCode::Internal,
                "the ledger could not be read again after a failed write: restart the node",
            ));
        }
        if self.store.ledger_generation().map_err(store_error)? != ledger.generation {
            let authors = ledger.replica.authors().clone();
            *ledger = crate::ledger::NodeLedger::load(&*self.store, authors.owner, &authors.nodes)
                .map_err(|why| error(ErrorCode::Internal, why))?;
        }
        Ok(LedgerGuard {
            _lock: lock,
            ledger,
            store: &*self.store,
        })
    }

    pub(super) fn ledger_append(
        &self,
        req: &Request,
        who: &Authorized,
        entries: &[Entry],
        since: u64,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let acting = who
            .acting_as_any(&[roles::OWNER, roles::ADMIN])
            .map_err(auth_error)?;
        // One append at a time: each is checked against the entries before it.
        let mut ledger = self.ledger()?;
        let replaced = entries
            .iter()
            .find(|e| e.seq < ledger.replica.size() && !ledger.replica.holds(e));
        if let Some(e) = replaced {
            return self.ledger_replace(req, who, &mut ledger, entries, e.seq, since, now);
        }
        let before = ledger.replica.size();
        let added = ledger
            .replica
            .append(entries)
            .map_err(|e| error(ErrorCode::Rejected, e.to_string()))?;
        let detail = format!(
            "user={} role={} op=ledger-append from={before} added={added}",
            who.user(),
            roles::names(acting.role()).join("+"),
        );
        if added == 0 {
            self.store
                .record_query(&req.request_id, detail.as_bytes(), now)
                .map_err(store_error)?;
        } else {
            let new: Vec<Vec<u8>> = entries
                .iter()
                .filter(|e| e.seq >= before)
                .map(|e| postcard::to_allocvec(e).expect("an entry encodes"))
                .collect();
            let stored =
                self.store
                    .ledger_append(before, &new, &req.request_id, detail.as_bytes(), now);
            if let Err(e) = stored {
                // Taken in memory, not on disk: the copy is read again from the store, so
                // that it never holds what the store does not. Should that fail too, the
                // node refuses every ledger request until it restarts.
                let authors = ledger.replica.authors().clone();
                match crate::ledger::NodeLedger::load(&*self.store, authors.owner, &authors.nodes) {
                    Ok(again) => *ledger = again,
                    Err(_) => ledger.broken = true,
                }
                return Err(store_error(e));
            }
            ledger.synced = true;
        }
        Ok(self.appended(&ledger, since))
    }

    /// The node's answer after an append: its head, signed as stored (no commitment).
    fn appended(&self, ledger: &crate::ledger::NodeLedger, since: u64) -> ResponseBody {
        let head = ledger.replica.head();
        ResponseBody::LedgerAppended(Box::new(LedgerAppended {
            head,
            stored: head.sign_stored(self.node, &self.audit_key),
            proof: proof(&ledger.replica, since, head.size),
        }))
    }

    /// Entries the node holds from `from` on, which it never committed to, replaced by
    /// `entries` if they follow on from the history before `from` under every rule: checked on
    /// a copy rebuilt from the store, then written in one commit. What it committed to, or a
    /// majority cosigned, is never replaced; nor is anything, when the batch fails.
    #[allow(clippy::too_many_arguments)]
    fn ledger_replace(
        &self,
        req: &Request,
        who: &Authorized,
        ledger: &mut crate::ledger::NodeLedger,
        entries: &[Entry],
        from: u64,
        since: u64,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let fixed = ledger.fixed();
        if from < fixed {
            return Err(error(
                ErrorCode::Rejected,
                format!(
                    "ledger entry {from}: this node holds another entry there, under the head \
                     of {fixed} entries it committed to"
                ),
            ));
        }
        let stored = self.store.ledger().map_err(store_error)?;
        let keep = usize::try_from(from).unwrap_or(usize::MAX);
        let mut copy = crate::ledger::replay(ledger.replica.authors(), &stored.entries[..keep])
            .map_err(|why| error(ErrorCode::Internal, why))?;
        copy.append(entries)
            .map_err(|e| error(ErrorCode::Rejected, e.to_string()))?;
        let new: Vec<Vec<u8>> = entries
            .iter()
            .filter(|e| e.seq >= from)
            .map(|e| postcard::to_allocvec(e).expect("an entry encodes"))
            .collect();
        let old = ledger.replica.head();
        let detail = format!(
            "user={} op=ledger-append replaced entries {from}..{} (root {}) with {}",
            who.user(),
            old.size,
            old.root
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            new.len()
        );
        self.store
            .ledger_replace(from, &new, &req.request_id, detail.as_bytes(), now)
            .map_err(store_error)?;
        ledger.replica = copy;
        ledger.synced = true;
        Ok(self.appended(ledger, since))
    }

    pub(super) fn ledger_commit(
        &self,
        req: &Request,
        who: &Authorized,
        head: &TreeHead,
        stored: &[Cosignature],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let acting = who
            .acting_as_any(&[roles::OWNER, roles::ADMIN])
            .map_err(auth_error)?;
        self.record(req, &acting, format_args!("size={}", head.size), now)?;
        let mut ledger = self.ledger()?;
        if head.log != ledger.replica.log() || ledger.replica.root_at(head.size) != Some(head.root)
        {
            return Err(error(
                ErrorCode::Rejected,
                format!(
                    "this node's ledger does not give the head of {} entries to commit to",
                    head.size
                ),
            ));
        }
        let storers = ledger.cosigners.storers(head, stored);
        if storers.len() < ledger.cosigners.quorum {
            return Err(error(
                ErrorCode::Rejected,
                format!(
                    "{} node(s) store the head; {} must before this node commits to it",
                    storers.len(),
                    ledger.cosigners.quorum
                ),
            ));
        }
        let cosignature = head.cosign(self.node, &self.audit_key);
        if ledger
            .committed
            .as_ref()
            .is_none_or(|(c, _)| c.size < head.size)
        {
            // Kept before the cosignature leaves: after a crash the node still refuses to
            // replace what it committed to.
            let bytes = postcard::to_allocvec(&(head, &cosignature)).expect("a head encodes");
            self.store
                .set_ledger_committed(&bytes)
                .map_err(store_error)?;
            ledger.committed = Some((*head, cosignature.clone()));
            ledger.synced = true;
        }
        Ok(ResponseBody::LedgerCommitted { cosignature })
    }

    pub(super) fn ledger_head(
        &self,
        req: &Request,
        who: &Authorized,
        since: u64,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let any = who
            .acting_as_any(&[roles::QUERIER, roles::OWNER, roles::AUDITOR, roles::ADMIN])
            .map_err(auth_error)?;
        self.record(req, &any, format_args!("since={since}"), now)?;
        let ledger = self.ledger()?;
        let own = ledger.replica.head();
        let cosigned_proof = ledger
            .cosigned
            .as_ref()
            .map(|c| proof(&ledger.replica, since, c.head.size))
            .unwrap_or_default();
        Ok(ResponseBody::LedgerHead(Box::new(LedgerHeads {
            own,
            stored: own.sign_stored(self.node, &self.audit_key),
            committed: ledger.committed.clone(),
            own_proof: proof(&ledger.replica, since, own.size),
            frontier: ledger.replica.frontier().peaks().to_vec(),
            cosigned: ledger.cosigned.clone(),
            cosigned_proof,
        })))
    }

    pub(super) fn ledger_read(
        &self,
        req: &Request,
        who: &Authorized,
        from: u64,
        max: u32,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let reader = who
            .acting_as_any(&[roles::OWNER, roles::AUDITOR, roles::ADMIN])
            .map_err(auth_error)?;
        self.record(req, &reader, format_args!("from={from} max={max}"), now)?;
        let size = self.ledger()?.replica.size();
        let max = max.min(limits::MAX_LEDGER_BATCH as u32);
        // A page ends early rather than pass its byte bound (one entry always goes).
        let mut bytes_in = 0;
        let entries = self
            .store
            .ledger_page(from, max)
            .map_err(store_error)?
            .iter()
            .take_while(|bytes| {
                bytes_in += bytes.len();
                bytes_in == bytes.len() || bytes_in <= limits::MAX_LEDGER_PAGE_BYTES
            })
            .map(|bytes| postcard::from_bytes(bytes))
            .collect::<Result<Vec<Entry>, _>>()
            .map_err(|e| error(ErrorCode::Internal, format!("a stored ledger entry: {e}")))?;
        Ok(ResponseBody::LedgerEntries { entries, size })
    }

    pub(super) fn ledger_checkpoint(
        &self,
        req: &Request,
        who: &Authorized,
        seq: u64,
        prev: &[u8; 32],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let asker = who
            .acting_as_any(&[roles::OWNER, roles::AUDITOR, roles::ADMIN])
            .map_err(auth_error)?;
        self.record(req, &asker, format_args!("seq={seq}"), now)?;
        let (log, size) = {
            let ledger = self.ledger()?;
            (ledger.replica.log(), ledger.replica.size())
        };
        if seq < size {
            return Err(error(
                ErrorCode::Rejected,
                format!("place {seq} of the ledger is taken: it holds {size} entries"),
            ));
        }
        // The request's own entry comes first, so the checkpoint covers it.
        let audit = self
            .store
            .audit_checkpoint(&self.audit_key, now)
            .map_err(store_error)?;
        let (page, _) = self.store.audit_page(audit, 1).map_err(store_error)?;
        let head = page.first().map(|e| e.hash).ok_or_else(|| {
            error(
                ErrorCode::Internal,
                "the checkpoint just written is missing",
            )
        })?;
        // Signed for the place and history the caller names: for any other it joins nothing.
        let entry = Entry::sign(
            &log,
            seq,
            prev,
            self.node,
            Transition::Checkpoint {
                node: self.node,
                seq: audit,
                head,
            },
            &self.audit_key,
        );
        Ok(ResponseBody::LedgerEntries {
            entries: vec![entry],
            size,
        })
    }

    pub(super) fn ledger_cosigned(
        &self,
        req: &Request,
        who: &Authorized,
        head: &CosignedHead,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let any = who
            .acting_as_any(&[roles::QUERIER, roles::OWNER, roles::AUDITOR, roles::ADMIN])
            .map_err(auth_error)?;
        self.record(req, &any, format_args!("size={}", head.head.size), now)?;
        let mut ledger = self.ledger()?;
        if head.head.log != ledger.replica.log() {
            return Err(error(
                ErrorCode::Rejected,
                "a head of another cluster's ledger",
            ));
        }
        // A head older than the one kept changes nothing, and costs no signature check; one of
        // the same size must be the same head.
        if let Some(c) = &ledger.cosigned {
            if c.head.size > head.head.size || c.head == head.head {
                return Ok(ResponseBody::Ok);
            }
        }
        let signers = ledger.cosigners.signers(head);
        if signers.len() < ledger.cosigners.quorum {
            return Err(error(
                ErrorCode::Rejected,
                format!(
                    "{} node(s) cosigned the head; {} are needed",
                    signers.len(),
                    ledger.cosigners.quorum
                ),
            ));
        }
        let size = head.head.size;
        match ledger.replica.root_at(size) {
            None => {
                return Err(error(
                    ErrorCode::Rejected,
                    format!(
                        "this node holds {} ledger entries, fewer than the head's {size}: \
                         append the missing ones first",
                        ledger.replica.size()
                    ),
                ))
            }
            Some(root) if root != head.head.root => {
                return Err(error(
                    ErrorCode::Rejected,
                    format!(
                        "node(s) {signers:?} cosigned a head of {size} entries that this \
                         node's ledger does not give: a split view or a fork"
                    ),
                ))
            }
            Some(_) => {}
        }
        // Kept with the valid cosignatures only, each once.
        let mut kept = head.clone();
        kept.cosignatures.retain(|c| signers.contains(&c.node));
        kept.cosignatures.sort_by_key(|c| c.node);
        kept.cosignatures.dedup_by_key(|c| c.node);
        let bytes = postcard::to_allocvec(&kept).expect("a head encodes");
        self.store
            .set_ledger_cosigned(&bytes)
            .map_err(store_error)?;
        ledger.cosigned = Some(kept);
        ledger.synced = true;
        Ok(ResponseBody::Ok)
    }
}
