//! The cluster ledger at a node: entries appended only when their authors signed them for
//! their places and they keep the rules, the node's cosignature of each head it reaches, and
//! the heads a quorum cosigned, kept only when this node's own entries give the same root.

use obscura_auth::capability::Authorized;
use obscura_ledger::entry::{Entry, Transition};
use obscura_ledger::head::CosignedHead;
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

impl NodeState {
    /// The node's ledger, unless a failed write left it unreadable until a restart.
    fn ledger(&self) -> Result<std::sync::MutexGuard<'_, crate::ledger::NodeLedger>, ResponseBody> {
        let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if ledger.broken {
            return Err(error(
                ErrorCode::Internal,
                "the ledger could not be read again after a failed write: restart the node",
            ));
        }
        Ok(ledger)
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
        // An owner's entry in place of one no majority head covers replaces it and all after
        // it: entries of an append that did not complete, or a node's own that no majority
        // took. What a majority cosigned is never replaced.
        let replaced = entries
            .iter()
            .find(|e| e.seq < ledger.replica.size() && !ledger.replica.holds(e));
        if let Some(e) = replaced {
            let kept = ledger.cosigned.as_ref().map_or(0, |c| c.head.size);
            let prev = ledger.replica.root_at(e.seq).unwrap_or_default();
            let owners =
                e.author == 0 && e.signed(&ledger.replica.log(), &prev, ledger.replica.authors());
            if e.seq < kept || !owners {
                return Err(error(
                    ErrorCode::Rejected,
                    format!(
                        "ledger entry {}: this node holds another entry there{}",
                        e.seq,
                        if e.seq < kept {
                            " under the head a majority cosigned"
                        } else {
                            ", and only the owner's entry replaces it"
                        }
                    ),
                ));
            }
            let detail = format!(
                "user={} role={} op=ledger-append replaced entries from {} of {}",
                who.user(),
                roles::names(acting.role()).join("+"),
                e.seq,
                ledger.replica.size()
            );
            self.store
                .ledger_truncate(e.seq, &req.request_id, detail.as_bytes(), now)
                .map_err(store_error)?;
            let authors = ledger.replica.authors().clone();
            match crate::ledger::NodeLedger::load(&self.store, authors.owner, &authors.nodes) {
                Ok(again) => *ledger = again,
                Err(why) => {
                    ledger.broken = true;
                    return Err(error(ErrorCode::Internal, why));
                }
            }
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
                match crate::ledger::NodeLedger::load(&self.store, authors.owner, &authors.nodes) {
                    Ok(again) => *ledger = again,
                    Err(_) => ledger.broken = true,
                }
                return Err(store_error(e));
            }
        }
        let head = ledger.replica.head();
        Ok(ResponseBody::LedgerAppended(Box::new(LedgerAppended {
            head,
            cosignature: head.cosign(self.node, &self.audit_key),
            proof: proof(&ledger.replica, since, head.size),
        })))
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
            cosignature: own.cosign(self.node, &self.audit_key),
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
        let entries = self
            .store
            .ledger_page(from, max)
            .map_err(store_error)?
            .iter()
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
        Ok(ResponseBody::Ok)
    }
}
