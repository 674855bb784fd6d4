//! The cluster ledger from a client (`obscura ledger`, and the entries `obscura index` and
//! `obscura delete` write).
//!
//! **Ordering.** The data owner writes the ledger's entries, so the owner's client orders them:
//! it reads every node's signed head and the right edge of its tree, takes the longest history
//! that extends the head it accepted last, and checks the entries a node that fell behind lacks
//! before relaying them: each must be signed by its author for its place after the history
//! before it, and together they must give the head their source signed. It then signs the new
//! entries, each bound to the tree head before it (so an entry signed for a history that did not
//! come to be joins no other), and sends them to every node. Each node checks them again,
//! stores them and cosigns its new head; the head a majority cosigned, with the root the client
//! computed itself, is accepted (as a consistent extension of the last one, by a consistency
//! proof) and handed back to every node to keep and show. Appends from one owner's machine are
//! serialised by a lock beside the kept head; two machines appending at once can split the
//! nodes between two entries at one place, and the ledger stops until an operator mends it.
//!
//! **Verifying.** Every client keeps the last cosigned head it accepted in
//! `DIR/client/ledger-head.json`. A verification takes the newest head a majority cosigned of
//! all it sees (its own, the nodes', and heads shown from elsewhere), rebuilds the ledger up to
//! it from a node's entries (every author's signature and every rule checked again), checks
//! each node's signed head against it, and names the nodes whose signatures prove a fault: a
//! node whose signed head no history of the owner's entries gives, a majority that cosigned two
//! heads of one size (the nodes that signed both), a node that holds fewer entries than a head
//! it cosigned, a head a majority cosigned that no node now gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use obscura_ledger::entry::{Authors, Entry, State, Transition};
use obscura_ledger::head::{Cosignature, CosignedHead, Cosigners, HeadError, TreeHead, View};
use obscura_ledger::merkle::{Frontier, Hash};
use obscura_ledger::replica::{log_id, majority, Replica};
use obscura_proto::{limits, NodeBody, ResponseBody};

use crate::{Client, Fault};

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A node's audit key (`DIR/nodeN/audit-key.pub`) is missing or malformed.
    #[error("{path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The kept head could not be locked, read or written.
    #[error(transparent)]
    File(#[from] obscura_cluster::Error),
    /// Only the data owner writes the ledger.
    #[error("only the data owner writes the ledger; this client holds no owner key")]
    NotOwner,
    /// No node gave a history that extends the head accepted last.
    #[error("no node shows a ledger that extends the head accepted last: {0}")]
    NoHistory(String),
    /// Fewer than a majority of nodes cosigned the new head.
    #[error("{have} node(s) cosigned the ledger's new head of {size} entries, {need} are needed: {failures}")]
    NoQuorum {
        /// The head's size.
        size: u64,
        /// Nodes that cosigned it.
        have: usize,
        /// The majority.
        need: usize,
        /// What became of the others.
        failures: String,
    },
    /// The new head does not extend the one accepted last, or a split view.
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// The keys a ledger is checked under, from the cluster directory.
pub(crate) fn authors(dir: &Path, client: &Client) -> Result<Authors, LedgerError> {
    let nodes = (1..=client.n() as u8)
        .map(|x| {
            crate::audit::audit_key(dir, x).map_err(|e| match e {
                crate::audit::LogFault::Key { path, reason } => LedgerError::Key { path, reason },
                other => LedgerError::Key {
                    path: dir.display().to_string(),
                    reason: other.to_string(),
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Authors {
        owner: client.owner_public,
        nodes,
    })
}

/// Where a client keeps the last cosigned head it accepted.
pub fn head_path(dir: &Path) -> PathBuf {
    dir.join("client").join("ledger-head.json")
}

/// The kept head, if a majority of the cluster's nodes cosigned it for this ledger.
fn read_head(
    path: &Path,
    log: &[u8; 32],
    cosigners: &Cosigners,
) -> Result<Option<CosignedHead>, obscura_cluster::Error> {
    let fault = |reason: String| obscura_cluster::Error::File {
        path: path.display().to_string(),
        reason,
    };
    let head: CosignedHead = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| fault(format!("{e} (delete it to trust the next head afresh)")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fault(e.to_string())),
    };
    if head.head.log != *log || cosigners.signers(&head).len() < cosigners.quorum {
        return Err(fault(
            "not a head a majority of this cluster's nodes cosigned (delete it to trust the \
             next head afresh)"
                .into(),
        ));
    }
    Ok(Some(head))
}

fn write_head(path: &Path, head: &CosignedHead) -> Result<(), obscura_cluster::Error> {
    let json = serde_json::to_vec_pretty(head).expect("a head encodes");
    obscura_cluster::files::write_atomic(path, &json)
}

/// The right edge of the kept head's tree, which the next append starts from: beside the kept
/// head, as the appending client computed it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Edge {
    size: u64,
    peaks: Vec<Hash>,
}

fn edge_path(head: &Path) -> PathBuf {
    head.with_file_name("ledger-edge.json")
}

/// The kept head's edge, if it is there and gives that head; otherwise none, and the next
/// append checks the ledger from its start.
fn read_edge(head_path: &Path, head: Option<&TreeHead>) -> Frontier {
    let Some(head) = head else {
        return Frontier::default();
    };
    std::fs::read(edge_path(head_path))
        .ok()
        .and_then(|b| serde_json::from_slice::<Edge>(&b).ok())
        .and_then(|e| Frontier::from_peaks(e.size, e.peaks))
        .filter(|f| f.size() == head.size && f.root() == head.root)
        .unwrap_or_default()
}

fn write_edge(head_path: &Path, edge: &Frontier) -> Result<(), obscura_cluster::Error> {
    let edge = Edge {
        size: edge.size(),
        peaks: edge.peaks().to_vec(),
    };
    let json = serde_json::to_vec(&edge).expect("an edge encodes");
    obscura_cluster::files::write_atomic(&edge_path(head_path), &json)
}

/// A node's heads as it answered them: the head it stores (its signature checked), the newest
/// head it committed to (its cosignature checked), and the majority's head it keeps.
#[derive(Clone, Debug)]
struct Heads {
    own: TreeHead,
    committed: Option<(TreeHead, Cosignature)>,
    cosigned: Option<CosignedHead>,
}

impl Client {
    /// Every node's ledger heads, with proofs from `since`; a node whose head is not signed by
    /// it, is of another ledger, or whose tree's edge does not give it, fails.
    async fn ledger_heads(
        &self,
        since: u64,
        log: &[u8; 32],
        cosigners: &Cosigners,
    ) -> Vec<(u8, Result<Heads, String>)> {
        self.call_all(|_| NodeBody::LedgerHead { since })
            .await
            .into_iter()
            .map(|(x, r, _, _)| {
                let r = r.map_err(|e| e.to_string()).and_then(|body| match body {
                    ResponseBody::LedgerHead(h) => {
                        let stored = cosigners.storers(&h.own, std::slice::from_ref(&h.stored));
                        if h.own.log != *log || stored != [x] {
                            return Err("its ledger head is not signed by it".to_string());
                        }
                        if let Some((c, sig)) = &h.committed {
                            let one = CosignedHead {
                                head: *c,
                                cosignatures: vec![sig.clone()],
                            };
                            if c.log != *log || cosigners.signers(&one) != [x] {
                                return Err("its committed head is not cosigned by it".to_string());
                            }
                        }
                        Ok(Heads {
                            own: h.own,
                            committed: h.committed,
                            cosigned: h.cosigned,
                        })
                    }
                    _ => Err(Fault::Unexpected("ledger heads").to_string()),
                });
                (x, r)
            })
            .collect()
    }

    /// One page of node `x`'s entries from `from`, at most `max`.
    async fn ledger_page(&self, x: u8, from: u64, max: u64) -> Result<Vec<Entry>, Fault> {
        let max = max.min(limits::MAX_LEDGER_BATCH as u64) as u32;
        let (_, answer, _, _) = self
            .call_some(vec![(x, NodeBody::LedgerRead { from, max })])
            .await
            .pop()
            .expect("one answer per call");
        match answer? {
            ResponseBody::LedgerEntries { entries, .. }
                if !entries.is_empty() && entries.len() <= max as usize =>
            {
                Ok(entries)
            }
            _ => Err(Fault::Unexpected("the ledger entries asked for")),
        }
    }
}

/// Entries `from..to` of node `x`, each checked as it comes: at its place, signed by its
/// author after the history before it, the tree grown from `tree` (the edge at `from`).
/// `at(size, root)` is called at each size on the way. Returns the entries and the edge at `to`.
async fn fetch_checked(
    client: &Client,
    x: u8,
    authors: &Authors,
    log: &[u8; 32],
    mut tree: Frontier,
    to: u64,
    mut at: impl FnMut(u64, &Hash),
) -> Result<(Vec<Entry>, Frontier), String> {
    let mut out = Vec::new();
    while tree.size() < to {
        let page = client
            .ledger_page(x, tree.size(), to - tree.size())
            .await
            .map_err(|e| e.to_string())?;
        for entry in page {
            if entry.seq != tree.size() || !entry.signed(log, &tree.root(), authors) {
                return Err(format!(
                    "it sent entry {} not signed by its author for its place and history",
                    tree.size()
                ));
            }
            tree.push(&entry.leaf());
            at(tree.size(), &tree.root());
            out.push(entry);
        }
    }
    Ok((out, tree))
}

/// Every head cosigned by several nodes that a client sees: the one it kept, the ones the nodes
/// kept, and the heads the nodes committed to, those of one size and root together as one head
/// with all their cosignatures (what an append that stopped before handing out its head left).
fn heads_seen<'a>(
    kept: Option<&CosignedHead>,
    heads: impl Iterator<Item = &'a Heads>,
) -> Vec<CosignedHead> {
    let mut seen: Vec<CosignedHead> = kept.into_iter().cloned().collect();
    let mut committed: BTreeMap<(u64, Hash), CosignedHead> = BTreeMap::new();
    for h in heads {
        seen.extend(h.cosigned.clone());
        if let Some((c, sig)) = &h.committed {
            committed
                .entry((c.size, c.root))
                .or_insert_with(|| CosignedHead {
                    head: *c,
                    cosignatures: Vec::new(),
                })
                .cosignatures
                .push(sig.clone());
        }
    }
    seen.extend(committed.into_values());
    seen
}

/// The newest head a majority of `cosigners` cosigned, of those `kept` (this client's) and the
/// nodes' ([`heads_seen`]), and the split views among them: two of one size with different
/// roots, each naming the nodes that cosigned both. A contested size is built on only through
/// the kept head's root; otherwise the newest uncontested head is taken.
fn newest_majority_head<'a>(
    kept: Option<&CosignedHead>,
    heads: impl Iterator<Item = (u8, &'a Heads)>,
    log: &[u8; 32],
    cosigners: &Cosigners,
) -> (Option<CosignedHead>, Vec<(u8, String)>) {
    let mut valid: Vec<(CosignedHead, Vec<u8>)> = Vec::new();
    for c in heads_seen(kept, heads.map(|(_, h)| h)) {
        let signers = cosigners.signers(&c);
        let again = valid.iter().any(|(v, _)| v.head == c.head);
        if c.head.log == *log && signers.len() >= cosigners.quorum && !again {
            valid.push((c, signers));
        }
    }
    valid.sort_by_key(|(c, _)| std::cmp::Reverse(c.head.size));
    let mut splits = Vec::new();
    let mut contested = Vec::new();
    for (i, (a, sa)) in valid.iter().enumerate() {
        for (b, sb) in &valid[i + 1..] {
            if a.head.size == b.head.size && a.head.root != b.head.root {
                contested.push(a.head.size);
                for x in sa.iter().filter(|x| sb.contains(x)) {
                    splits.push((
                        *x,
                        format!(
                            "split view: it cosigned two heads of {} entries with different \
                             roots",
                            a.head.size
                        ),
                    ));
                }
            }
        }
    }
    let best = valid
        .into_iter()
        .find(|(c, _)| !contested.contains(&c.head.size) || kept.is_some_and(|k| k.head == c.head))
        .map(|(c, _)| c);
    (best, splits)
}

/// The entries from `start` up to the majority's head `target`, from a node that holds them,
/// each checked as it comes, with the tree head at every size on the way. `None` (the reasons in
/// `failures`) when no node gives them.
#[allow(clippy::too_many_arguments)]
async fn gather(
    client: &Client,
    heads: &BTreeMap<u8, Heads>,
    authors: &Authors,
    log: &[u8; 32],
    start: Frontier,
    target: Option<TreeHead>,
    last: Option<TreeHead>,
    failures: &mut Vec<(u8, String)>,
) -> Option<(Vec<Entry>, Frontier, BTreeMap<u64, Hash>)> {
    let size = target.map_or(0, |t| t.size);
    let mut order: Vec<u8> = heads
        .iter()
        .filter(|(_, h)| h.own.size >= size)
        .map(|(x, _)| *x)
        .collect();
    order.sort_by_key(|x| (heads[x].own.size != size, *x));
    if size <= start.size() {
        let mut roots = BTreeMap::new();
        roots.insert(start.size(), start.root());
        return Some((Vec::new(), start, roots));
    }
    for source in order {
        let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
        roots.insert(start.size(), start.root());
        let fetched = fetch_checked(
            client,
            source,
            authors,
            log,
            start.clone(),
            size,
            |at, root| {
                roots.insert(at, *root);
            },
        )
        .await;
        match fetched {
            Ok((entries, tree))
                if target.is_none_or(|t| tree.root() == t.root)
                    && last.is_none_or(|l| roots.get(&l.size).is_none_or(|r| *r == l.root)) =>
            {
                return Some((entries, tree, roots));
            }
            Ok(_) => failures.push((
                source,
                "its entries do not give the head a majority cosigned".to_string(),
            )),
            Err(e) => failures.push((source, e)),
        }
    }
    None
}

/// The last point node `h` shares with the history whose tree heads are `roots` (up to `size`):
/// its own head, else the head it committed to (the empty ledger if none); `None` if that is
/// not on it, or lies below the sizes `roots` covers.
fn shared_point(h: &Heads, roots: &BTreeMap<u64, Hash>, size: u64) -> Option<u64> {
    let on = |t: &TreeHead| t.size <= size && roots.get(&t.size) == Some(&t.root);
    if on(&h.own) {
        return Some(h.own.size);
    }
    match &h.committed {
        Some((c, _)) => on(c).then_some(c.size),
        None => roots.contains_key(&0).then_some(0),
    }
}

/// How many of `entries` go in one append request: at most [`limits::MAX_LEDGER_BATCH`], and
/// at most [`limits::MAX_LEDGER_APPEND_BYTES`] of them encoded, one at least.
fn page_len(entries: &[Entry]) -> usize {
    let mut bytes = 0;
    entries
        .iter()
        .take(limits::MAX_LEDGER_BATCH)
        .take_while(|e| {
            bytes += postcard::experimental::serialized_size(e).unwrap_or(usize::MAX / 2);
            bytes <= limits::MAX_LEDGER_APPEND_BYTES
        })
        .count()
        .max(1)
        .min(entries.len())
}

/// What an append did.
#[derive(Debug)]
pub struct Appended {
    /// The position of the first new entry.
    pub first: u64,
    /// The cosigned head now accepted.
    pub head: CosignedHead,
    /// The nodes that cosigned it.
    pub cosigners: Vec<u8>,
    /// Nodes brought up to date first, and from how many entries.
    pub caught_up: Vec<(u8, u64)>,
    /// Nodes that did not cosign it, and why.
    pub failures: Vec<(u8, String)>,
    /// Nodes whose audit logs were anchored ([`anchor_audit_logs`]).
    pub anchored: Vec<u8>,
}

/// Append `transitions` to the ledger of the cluster in `dir`, as its data owner, and accept
/// the head a majority of nodes cosigned.
///
/// # Errors
/// [`LedgerError`]; nothing is written in the owner's name unless a majority cosigns it, and
/// entries a minority stored join no other history.
pub async fn append(
    dir: &Path,
    client: &Client,
    transitions: Vec<Transition>,
) -> Result<Appended, LedgerError> {
    let owner = client.owner.as_ref().ok_or(LedgerError::NotOwner)?;
    append_entries(dir, client, async |log, tree| {
        Ok(transitions
            .into_iter()
            .map(|t| {
                let e = Entry::sign(&log, tree.size(), &tree.root(), 0, t, owner);
                tree.push(&e.leaf());
                e
            })
            .collect())
    })
    .await
}

/// Bring every node up to date and anchor its audit log in the ledger: the owner's entry
/// recording the sync (which also replaces what no majority took), then each node's own entry
/// with a checkpoint of its log now, one append each, so that a node that does not answer, or
/// answers an entry the others refuse, leaves only its own log unanchored. A log cut or
/// rewritten before an anchor is caught by every client that verifies it afterwards, not only
/// by one that saw the log before. Data owner only.
///
/// # Errors
/// As [`append`], for the owner's entry; each node's failure is in [`Appended::failures`].
pub async fn anchor_audit_logs(dir: &Path, client: &Client) -> Result<Appended, LedgerError> {
    let at = crate::unix_now();
    let mut done = append(dir, client, vec![Transition::Synced { at }]).await?;
    let authors = authors(dir, client)?;
    for x in 1..=client.n() as u8 {
        let anchored = append_entries(dir, client, async |log, tree| {
            let (seq, prev) = (tree.size(), tree.root());
            let answer = client
                .call_some(vec![(x, NodeBody::LedgerCheckpoint { seq, prev })])
                .await
                .pop()
                .map(|a| a.1);
            let signed = match answer {
                Some(Ok(ResponseBody::LedgerEntries { entries, .. })) => entries,
                Some(Err(e)) => return Err(LedgerError::NoHistory(e.to_string())),
                _ => Vec::new(),
            };
            match signed.as_slice() {
                [e] if e.seq == seq
                    && e.author == x
                    && matches!(e.transition, Transition::Checkpoint { node, .. } if node == x)
                    && e.signed(&log, &prev, &authors) =>
                {
                    tree.push(&e.leaf());
                    Ok(vec![e.clone()])
                }
                _ => Err(LedgerError::NoHistory(
                    "it did not answer its own signed checkpoint for the place asked".into(),
                )),
            }
        })
        .await;
        match anchored {
            Ok(a) => {
                done.anchored.push(x);
                done.head = a.head;
                done.cosigners = a.cosigners;
                done.failures.extend(a.failures);
            }
            Err(e) => done
                .failures
                .push((x, format!("its audit log was not anchored: {e}"))),
        }
    }
    done.failures.sort();
    done.failures.dedup();
    Ok(done)
}

/// The append itself: `make(log, tree)` gives the entries for the places after `tree` (the
/// right edge of the history appended to), pushing each onto it.
async fn append_entries(
    dir: &Path,
    client: &Client,
    make: impl AsyncFnOnce([u8; 32], &mut Frontier) -> Result<Vec<Entry>, LedgerError>,
) -> Result<Appended, LedgerError> {
    let authors = authors(dir, client)?;
    let log = log_id(&authors.owner, &authors.nodes);
    let cosigners = majority(&authors.nodes);
    let path = head_path(dir);
    let _held = obscura_cluster::files::lock_beside(&path, std::time::Duration::from_secs(60))?;
    let mut view = View::new(log, cosigners.clone(), read_head(&path, &log, &cosigners)?);
    let last = view.last().map(|c| c.head);
    let since = last.map_or(0, |h| h.size);

    // Every node's signed head, and the newest head a majority signed: the one kept, one a
    // node kept, or the nodes' own heads when a majority of them are the same. Entries past it
    // were taken by no majority (an append that did not complete, or a node's own making):
    // they are neither relayed nor built on, and the owner's new entries replace them.
    let mut failures = Vec::new();
    let heads: BTreeMap<u8, Heads> = client
        .ledger_heads(since, &log, &cosigners)
        .await
        .into_iter()
        .filter_map(|(x, h)| match h {
            Ok(h) => Some((x, h)),
            Err(e) => {
                failures.push((x, e));
                None
            }
        })
        .collect();
    let (committed, splits) = newest_majority_head(
        view.last(),
        heads.iter().map(|(x, h)| (*x, h)),
        &log,
        &cosigners,
    );
    failures.extend(splits);
    let target = committed.as_ref().map(|c| c.head);
    let size = target.map_or(0, |t| t.size);

    // Entries up to it, from a node that holds them, checked from an edge this client trusts
    // (its kept head's, or the empty ledger): each at its place, signed by its author after the
    // history before it, together giving the majority's root, and the kept head on the way.
    // Each node is sent what follows the last point it shares with that history (its own head,
    // else the head it committed to); a node with neither on it is sent nothing.
    let kept_edge = read_edge(&path, last.as_ref());
    let mut starts = vec![kept_edge.clone()];
    if kept_edge.size() > 0 {
        starts.push(Frontier::default());
    }
    let mut gathered = None;
    for start in starts {
        let Some((missing, tree, roots)) = gather(
            client,
            &heads,
            &authors,
            &log,
            start.clone(),
            target,
            last,
            &mut failures,
        )
        .await
        else {
            break;
        };
        let points: BTreeMap<u8, Option<u64>> = heads
            .iter()
            .map(|(x, h)| (*x, shared_point(h, &roots, size)))
            .collect();
        // A node whose point lies below the kept edge needs the entries from the start.
        if start.size() > 0 && points.values().any(Option::is_none) {
            continue;
        }
        gathered = Some((start.size(), missing, tree, points));
        break;
    }
    let Some((from, missing, mut tree, points)) = gathered else {
        return Err(LedgerError::NoHistory(describe(&failures)));
    };

    // Each node gets what it lacks up to the majority's head, then the new entries, which
    // replace what it holds there that it never committed to.
    let first = size;
    let new = make(log, &mut tree).await?;
    let expected = tree.root();
    let mut plan: BTreeMap<u8, Vec<Entry>> = BTreeMap::new();
    let mut caught_up = Vec::new();
    for (x, h) in &heads {
        let Some(point) = points[x] else {
            failures.push((
                *x,
                "neither its ledger nor the head it committed to is on the history a majority \
                 cosigned"
                    .into(),
            ));
            continue;
        };
        if point < h.own.size.min(size) || h.own.size < size {
            caught_up.push((*x, point));
        }
        let mut entries = missing[(point - from) as usize..].to_vec();
        entries.extend(new.iter().cloned());
        plan.insert(*x, entries);
    }

    // Send each node its entries, a page at a time; its last answer cosigns its head.
    let mut answers: BTreeMap<u8, (TreeHead, Cosignature, Vec<Hash>)> = BTreeMap::new();
    while !plan.is_empty() {
        let calls: Vec<(u8, NodeBody)> = plan
            .iter_mut()
            .map(|(&x, entries)| {
                let page: Vec<Entry> = entries.drain(..page_len(entries)).collect();
                (
                    x,
                    NodeBody::LedgerAppend {
                        entries: page,
                        since,
                    },
                )
            })
            .collect();
        for (x, answer, _, _) in client.call_some(calls).await {
            match answer {
                Ok(ResponseBody::LedgerAppended(a)) => {
                    answers.insert(x, (a.head, a.stored, a.proof));
                }
                Ok(_) => {
                    failures.push((x, "answered something other than its new head".into()));
                    plan.remove(&x);
                }
                Err(e) => {
                    failures.push((x, e.to_string()));
                    plan.remove(&x);
                }
            }
        }
        plan.retain(|x, entries| !entries.is_empty() && answers.contains_key(x));
    }

    // The head every party computes. The nodes that store it commit to it once a majority
    // does: only then do they cosign, and never replace what is under it.
    let size = tree.size();
    let head = TreeHead {
        log,
        size,
        root: expected,
    };
    let mut stored = Vec::new();
    for (&x, (reached, signature, _)) in &answers {
        if *reached == head && cosigners.storers(&head, std::slice::from_ref(signature)) == [x] {
            stored.push(signature.clone());
        } else {
            failures.push((
                x,
                format!(
                    "it stores a head of {} entries other than the one of {size} written",
                    reached.size
                ),
            ));
        }
    }
    if stored.len() < cosigners.quorum {
        return Err(LedgerError::NoQuorum {
            size,
            have: stored.len(),
            need: cosigners.quorum,
            failures: describe(&failures),
        });
    }
    let commit: Vec<(u8, NodeBody)> = stored
        .iter()
        .map(|c| {
            (
                c.node,
                NodeBody::LedgerCommit {
                    head,
                    stored: stored.clone(),
                },
            )
        })
        .collect();
    let mut signers = Vec::new();
    let mut cosignatures = Vec::new();
    for (x, answer, _, _) in client.call_some(commit).await {
        match answer {
            Ok(ResponseBody::LedgerCommitted { cosignature }) => {
                let one = CosignedHead {
                    head,
                    cosignatures: vec![cosignature.clone()],
                };
                if cosigners.signers(&one) == [x] {
                    signers.push(x);
                    cosignatures.push(cosignature);
                } else {
                    failures.push((x, "its commitment is not cosigned by it".into()));
                }
            }
            Ok(_) => failures.push((x, "answered something other than its commitment".into())),
            Err(e) => failures.push((x, format!("did not commit: {e}"))),
        }
    }
    if signers.len() < cosigners.quorum {
        return Err(LedgerError::NoQuorum {
            size,
            have: signers.len(),
            need: cosigners.quorum,
            failures: describe(&failures),
        });
    }
    let head = CosignedHead { head, cosignatures };
    // Any cosigner's proof shows the new head extends the last; a relay may have altered one.
    let mut accepted = Err(HeadError::Unproven {
        shown: size,
        last: since,
    });
    for x in &signers {
        accepted = view.observe(head.clone(), &answers[x].2);
        if accepted.is_ok() {
            break;
        }
    }
    accepted?;
    write_head(&path, &head)?;
    write_edge(&path, &tree)?;
    for (x, answer, _, _) in client
        .call_all(|_| NodeBody::LedgerCosigned { head: head.clone() })
        .await
    {
        if let Err(e) = answer {
            failures.push((x, format!("did not keep the cosigned head: {e}")));
        }
    }
    failures.sort_by_key(|f| f.0);
    Ok(Appended {
        first,
        cosigners: signers,
        head,
        caught_up,
        failures,
        anchored: Vec::new(),
    })
}

fn describe(failures: &[(u8, String)]) -> String {
    if failures.is_empty() {
        return "no node answered".into();
    }
    failures
        .iter()
        .map(|(x, e)| format!("node {x}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One node's ledger, as a verification found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLedger {
    /// Entries it holds.
    pub size: u64,
    /// The size of the last cosigned head it keeps.
    pub cosigned: Option<u64>,
}

/// What a verification found.
#[derive(Debug)]
pub struct Verified {
    /// The ledger rebuilt from a node's entries up to the newest cosigned head, every
    /// signature and rule checked.
    pub replica: Replica,
    /// Its entries.
    pub entries: Vec<Entry>,
    /// The node they came from.
    pub source: u8,
    /// Each node's ledger, or the fault its answers prove.
    pub nodes: Vec<(u8, Result<NodeLedger, String>)>,
    /// Faults of several nodes together, named.
    pub faults: Vec<String>,
    /// The cosigned head the rebuilt ledger reaches.
    pub head: Option<CosignedHead>,
}

impl Verified {
    /// Whether every node answered and no fault was found.
    pub fn ok(&self) -> bool {
        self.faults.is_empty() && self.nodes.iter().all(|(_, r)| r.is_ok())
    }

    /// The state the entries build.
    pub fn state(&self) -> &State {
        self.replica.state()
    }
}

/// Rebuild the ledger of the cluster in `dir` up to the newest head a majority cosigned (of
/// the one kept, the nodes', and `shown`, heads from elsewhere such as another client's kept
/// head) from a node's entries, and check every node's heads against it; keep that head.
///
/// # Errors
/// [`LedgerError`] when no node gives a cosigned history (or, before any head was cosigned,
/// any history that replays); each node's fault is in [`Verified::nodes`], and a head that
/// no node gives any longer is in [`Verified::faults`].
pub async fn verify(
    dir: &Path,
    client: &Client,
    shown: &[CosignedHead],
) -> Result<Verified, LedgerError> {
    let authors = authors(dir, client)?;
    let log = log_id(&authors.owner, &authors.nodes);
    let cosigners = majority(&authors.nodes);
    let path = head_path(dir);
    let _held = obscura_cluster::files::lock_beside(&path, std::time::Duration::from_secs(60))?;
    let kept = read_head(&path, &log, &cosigners)?;
    let since = kept.as_ref().map_or(0, |c| c.head.size);
    let heads = client.ledger_heads(since, &log, &cosigners).await;

    // Every head a majority cosigned, with its signers.
    let mut seen = heads_seen(
        kept.as_ref(),
        heads.iter().filter_map(|(_, h)| h.as_ref().ok()),
    );
    seen.extend(shown.iter().cloned());
    let mut valid: Vec<(CosignedHead, Vec<u8>)> = Vec::new();
    for c in seen {
        let signers = cosigners.signers(&c);
        let again = valid.iter().any(|(v, _)| v.head == c.head);
        if c.head.log == log && signers.len() >= cosigners.quorum && !again {
            valid.push((c, signers));
        }
    }
    valid.sort_by_key(|(c, _)| std::cmp::Reverse(c.head.size));

    let mut faults = Vec::new();
    for (i, (a, sa)) in valid.iter().enumerate() {
        for (b, sb) in &valid[i + 1..] {
            if a.head.size == b.head.size && a.head.root != b.head.root {
                let both: Vec<u8> = sa.iter().filter(|x| sb.contains(x)).copied().collect();
                faults.push(
                    HeadError::SplitView {
                        nodes: both,
                        first: Box::new(b.clone()),
                        second: Box::new(a.clone()),
                    }
                    .to_string(),
                );
            }
        }
    }

    // The newest cosigned head some node gives, rebuilt from its entries; before any head was
    // cosigned, the longest history that replays.
    let mut targets: Vec<Option<&CosignedHead>> = valid.iter().map(|(c, _)| Some(c)).collect();
    if targets.is_empty() {
        targets.push(None);
    }
    let mut tried = Vec::new();
    let mut found = None;
    'targets: for target in targets {
        let mut order: Vec<(u8, TreeHead)> = heads
            .iter()
            .filter_map(|(x, h)| h.as_ref().ok().map(|h| (*x, h.own)))
            .filter(|(_, own)| target.is_none_or(|t| own.size >= t.head.size))
            .collect();
        order.sort_by_key(|(x, h)| (std::cmp::Reverse(h.size), *x));
        for (x, own) in order {
            let want = target.map_or(own, |t| t.head);
            match rebuild(client, &authors, &log, x, want).await {
                Ok(r) => {
                    found = Some((x, r, target.cloned()));
                    break 'targets;
                }
                Err(e) => tried.push((x, e)),
            }
        }
        if let Some(t) = target {
            faults.push(format!(
                "node(s) {:?} cosigned a head of {} entries that no node now gives: the \
                 nodes that held it lost or cut their ledgers",
                cosigners.signers(t),
                t.head.size
            ));
        }
    }
    let Some((source, (replica, entries), head)) = found else {
        return Err(LedgerError::NoHistory(describe(&tried)));
    };
    for (c, signers) in &valid {
        if c.head.size <= replica.size() && replica.root_at(c.head.size) != Some(c.head.root) {
            faults.push(format!(
                "node(s) {signers:?} cosigned a head of {} entries that the owner's entries do \
                 not give",
                c.head.size
            ));
        }
    }
    faults.dedup();

    // Each node's signed head against the rebuilt history.
    let mut nodes = Vec::new();
    for (x, answer) in heads {
        let verdict = answer.and_then(|h| {
            let on =
                |t: &TreeHead| t.size <= replica.size() && replica.root_at(t.size) == Some(t.root);
            if let Some((c, _)) = &h.committed {
                if c.size <= replica.size() && !on(c) {
                    return Err(format!(
                        "it committed to a ledger head of {} entries that the owner's entries \
                         do not give: it holds another history",
                        c.size
                    ));
                }
                if c.size > h.own.size {
                    return Err(format!(
                        "it holds {} ledger entries, fewer than the {} it committed to: rolled \
                         back",
                        h.own.size, c.size
                    ));
                }
            }
            // Entries past what it committed to that the majority's history does not hold are
            // an append that did not complete: the owner's next entry replaces them.
            // Fewer entries than a head it cosigned: its own signature shows it held them.
            // Fewer than a head others cosigned: it was down, and the next append brings it
            // up to date.
            let signed_more = valid
                .iter()
                .filter(|(c, s)| c.head.size > h.own.size && s.contains(&x))
                .map(|(c, _)| c.head.size)
                .max();
            if let Some(more) = signed_more {
                return Err(format!(
                    "it holds {} ledger entries, fewer than the {more} of a head it cosigned: \
                     rolled back",
                    h.own.size
                ));
            }
            Ok(NodeLedger {
                size: h.own.size,
                cosigned: h.cosigned.map(|c| c.head.size),
            })
        });
        nodes.push((x, verdict));
    }

    if let Some(h) = &head {
        if kept.as_ref().is_none_or(|k| h.head.size > k.head.size) {
            write_head(&path, h)?;
            write_edge(&path, replica.frontier())?;
        }
    }
    Ok(Verified {
        replica,
        entries,
        source,
        nodes,
        faults,
        head,
    })
}

/// Node `x`'s entries up to `head`, replayed (every signature and rule), if they give it.
async fn rebuild(
    client: &Client,
    authors: &Authors,
    log: &[u8; 32],
    x: u8,
    head: TreeHead,
) -> Result<(Replica, Vec<Entry>), String> {
    let mut replica = Replica::new(authors.clone());
    let mut entries = Vec::new();
    while replica.size() < head.size {
        let page = client
            .ledger_page(x, replica.size(), head.size - replica.size())
            .await
            .map_err(|e| e.to_string())?;
        replica.append(&page).map_err(|e| e.to_string())?;
        entries.extend(page);
    }
    if replica.head() != head || replica.log() != *log {
        return Err("its entries do not give the head".into());
    }
    Ok((replica, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn an_append_request_carries_at_most_its_byte_bound_and_one_entry_at_least() {
        let sealed = |seq, len| Entry {
            seq,
            transition: Transition::Sealed {
                epoch: 0,
                message: vec![0; len],
            },
            author: 0,
            signature: vec![0; 64],
        };
        let big: Vec<Entry> = (0..10).map(|i| sealed(i, 200 << 10)).collect();
        assert_eq!(page_len(&big), 3);
        let huge = [sealed(0, 2 << 20), sealed(1, 10)];
        assert_eq!(page_len(&huge), 1);
        let small: Vec<Entry> = (0..1000).map(|i| sealed(i, 10)).collect();
        assert_eq!(page_len(&small), limits::MAX_LEDGER_BATCH);
        assert_eq!(page_len(&small[..5]), 5);
    }

    #[test]
    fn a_contested_size_is_built_on_only_through_the_kept_head_and_both_signers_are_named() {
        let keys: Vec<SigningKey> = (1..=3u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let cosigners = majority(
            &keys
                .iter()
                .map(SigningKey::verifying_key)
                .collect::<Vec<_>>(),
        );
        let log = [1; 32];
        let head = |size, root| TreeHead { log, size, root };
        let signed = |h: TreeHead, by: &[u8]| CosignedHead {
            head: h,
            cosignatures: by
                .iter()
                .map(|&x| h.cosign(x, &keys[usize::from(x) - 1]))
                .collect(),
        };
        let committed = |h: TreeHead, x: u8| Heads {
            own: h,
            committed: Some((h, h.cosign(x, &keys[usize::from(x) - 1]))),
            cosigned: None,
        };
        let (a, b, newer) = (head(5, [0xa; 32]), head(5, [0xb; 32]), head(7, [0xc; 32]));
        let kept = signed(a, &[1, 2]);

        // Nodes 2 and 3 committed to another root at the kept size: node 2 cosigned both.
        let nodes = [(2, committed(b, 2)), (3, committed(b, 3))];
        let (best, splits) = newest_majority_head(
            Some(&kept),
            nodes.iter().map(|(x, h)| (*x, h)),
            &log,
            &cosigners,
        );
        assert_eq!(best.map(|c| c.head), Some(a));
        assert_eq!(splits.iter().map(|s| s.0).collect::<Vec<_>>(), [2]);

        // Without the kept head the size stays contested; a newer uncontested one is taken.
        let nodes = [
            (1, committed(newer, 1)),
            (2, committed(newer, 2)),
            (3, committed(b, 3)),
        ];
        let (best, _) =
            newest_majority_head(None, nodes.iter().map(|(x, h)| (*x, h)), &log, &cosigners);
        assert_eq!(best.map(|c| c.head), Some(newer));
        let (best, splits) = newest_majority_head(
            None,
            [(2, committed(b, 2)), (3, committed(b, 3))]
                .iter()
                .map(|(x, h)| (*x, h)),
            &log,
            &cosigners,
        );
        assert_eq!((best.map(|c| c.head), splits.len()), (Some(b), 0));
    }
}
