//! The cluster ledger from a client (`obscura ledger`, and the entries `obscura index` and
//! `obscura delete` write).
//!
//! **Ordering.** The data owner writes the ledger's entries, so the owner's client orders them:
//! it reads every node's signed head, brings a node that fell behind up to the longest history
//! consistent with the head it accepted last (the node checks every entry it is sent, so a
//! relay cannot slip one in), signs the new entries for the places after it, and sends them to
//! every node. Each node checks and stores them and cosigns its new head; a head a majority of
//! nodes cosigned is accepted (as a consistent extension of the last one, by a consistency
//! proof) and handed back to every node to keep and show. Appends from one owner's machine are
//! serialised by a lock beside the kept head.
//!
//! **Verifying.** Every client keeps the last cosigned head it accepted in
//! `DIR/client/ledger-head.json`. A verification rebuilds the ledger from one node's entries
//! (every author's signature and every rule checked again), checks each node's signed head and
//! its cosigned head against it, and names the nodes whose signatures prove a fault: a node
//! whose signed head no history of the owner's entries gives, a majority that cosigned two
//! heads of one size (the nodes that signed both), a node that shows fewer entries than a head
//! already accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use obscura_ledger::entry::{Authors, Entry, State, Transition};
use obscura_ledger::head::{Cosignature, CosignedHead, Cosigners, HeadError, TreeHead, View};
use obscura_ledger::merkle::{verify_consistency, Hash};
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
fn authors(dir: &Path, client: &Client) -> Result<Authors, LedgerError> {
    let nodes = (1..=client.n() as u8)
        .map(|x| {
            let path = dir.join(format!("node{x}")).join("audit-key.pub");
            let fault = |reason: String| LedgerError::Key {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| fault(e.to_string()))?;
            obscura_tokens::keyfile::hex32(&text)
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .ok_or_else(|| fault("not an Ed25519 public key".into()))
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

fn read_head(path: &Path) -> Result<Option<CosignedHead>, obscura_cluster::Error> {
    let fault = |reason: String| obscura_cluster::Error::File {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| fault(format!("{e} (delete it to trust the next head afresh)"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fault(e.to_string())),
    }
}

fn write_head(path: &Path, head: &CosignedHead) -> Result<(), obscura_cluster::Error> {
    let json = serde_json::to_vec_pretty(head).expect("a head encodes");
    obscura_cluster::files::write_atomic(path, &json)
}

/// A node's heads as it answered them.
#[derive(Clone, Debug)]
struct Heads {
    own: TreeHead,
    cosignature: Cosignature,
    own_proof: Vec<Hash>,
    cosigned: Option<CosignedHead>,
}

impl Heads {
    /// Its own head as a head with its one signature.
    fn signed(&self) -> CosignedHead {
        CosignedHead {
            head: self.own,
            cosignatures: vec![self.cosignature.clone()],
        }
    }
}

/// Whether a head of `new` is a consistent extension of (or older than, and consistent with)
/// `last`, by `proof`.
fn consistent(last: Option<&TreeHead>, new: &TreeHead, proof: &[Hash]) -> bool {
    match last {
        None => true,
        Some(old) if new.size >= old.size => {
            verify_consistency(old.size, new.size, &old.root, &new.root, proof)
        }
        Some(old) => verify_consistency(new.size, old.size, &new.root, &old.root, proof),
    }
}

impl Client {
    /// Every node's ledger heads, with proofs from `since`.
    async fn ledger_heads(&self, since: u64) -> Vec<(u8, Result<Heads, Fault>)> {
        self.call_all(|_| NodeBody::LedgerHead { since })
            .await
            .into_iter()
            .map(|(x, r, _, _)| {
                let r = r.and_then(|body| match body {
                    ResponseBody::LedgerHead(h) => Ok(Heads {
                        own: h.own,
                        cosignature: h.cosignature,
                        own_proof: h.own_proof,
                        cosigned: h.cosigned,
                    }),
                    _ => Err(Fault::Unexpected("ledger heads")),
                });
                (x, r)
            })
            .collect()
    }

    /// Node `x`'s entries `from..to`, page by page.
    async fn ledger_entries(&self, x: u8, from: u64, to: u64) -> Result<Vec<Entry>, Fault> {
        let mut out = Vec::new();
        while from + (out.len() as u64) < to {
            let at = from + out.len() as u64;
            let max = (to - at).min(limits::MAX_LEDGER_BATCH as u64) as u32;
            let (_, answer, _, _) = self
                .call_some(vec![(x, NodeBody::LedgerRead { from: at, max })])
                .await
                .pop()
                .expect("one answer per call");
            match answer? {
                ResponseBody::LedgerEntries { entries, .. } => {
                    if entries.is_empty() || entries.len() > max as usize {
                        return Err(Fault::Unexpected("the ledger entries asked for"));
                    }
                    out.extend(entries);
                }
                _ => return Err(Fault::Unexpected("ledger entries")),
            }
        }
        Ok(out)
    }
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
}

/// Append `transitions` to the ledger of the cluster in `dir`, as its data owner, and accept
/// the head a majority of nodes cosigned.
///
/// # Errors
/// [`LedgerError`]; entries a minority stored are completed at the next append.
pub async fn append(
    dir: &Path,
    client: &Client,
    transitions: Vec<Transition>,
) -> Result<Appended, LedgerError> {
    let owner = client.owner.as_ref().ok_or(LedgerError::NotOwner)?;
    let authors = authors(dir, client)?;
    let log = log_id(&authors.owner, &authors.nodes);
    let cosigners = majority(&authors.nodes);
    let path = head_path(dir);
    let _held = obscura_cluster::files::lock_beside(&path, std::time::Duration::from_secs(60))?;
    let mut view = View::new(log, cosigners.clone(), read_head(&path)?);
    let last = view.last().map(|c| c.head);
    let since = last.map_or(0, |h| h.size);

    // Every node's signed head; the longest one that extends the last accepted is the history
    // to write after.
    let mut failures = Vec::new();
    let mut sizes = BTreeMap::new();
    let mut behind = BTreeMap::new();
    for (x, heads) in client.ledger_heads(since).await {
        let heads = match heads {
            Ok(h) => h,
            Err(e) => {
                failures.push((x, e.to_string()));
                continue;
            }
        };
        if cosigners.signers(&heads.signed()) != [x] || heads.own.log != log {
            failures.push((x, "its ledger head is not signed by it".into()));
        } else if heads.own.size < since {
            // Behind the last head accepted: it cannot prove its older head part of it; the
            // node the entries come from does, below.
            behind.insert(x, heads.own);
        } else if !consistent(last.as_ref(), &heads.own, &heads.own_proof) {
            failures.push((
                x,
                format!(
                    "its ledger of {} entries is not shown to extend the head accepted last",
                    heads.own.size
                ),
            ));
        } else {
            sizes.insert(x, heads.own);
        }
    }
    let Some((&source, &top)) = sizes
        .iter()
        .max_by_key(|(x, h)| (h.size, std::cmp::Reverse(**x)))
    else {
        return Err(LedgerError::NoHistory(describe(&failures)));
    };
    // A node behind the last head accepted (it was down) joins if the source proves its head
    // part of the history.
    for (x, head) in behind {
        let proven = match client
            .call_some(vec![(source, NodeBody::LedgerHead { since: head.size })])
            .await
            .pop()
            .map(|a| a.1)
        {
            Some(Ok(ResponseBody::LedgerHead(h))) => {
                h.own == top
                    && verify_consistency(head.size, top.size, &head.root, &top.root, &h.own_proof)
            }
            _ => false,
        };
        if proven {
            sizes.insert(x, head);
        } else {
            failures.push((
                x,
                format!(
                    "its ledger of {} entries is not shown to be part of the history",
                    head.size
                ),
            ));
        }
    }
    // Entries a node lacks, from the source. Each node checks each one, and only a head a
    // majority cosigned counts, so a source that sends others fails the append, not the ledger.
    let lowest = sizes.values().map(|h| h.size).min().unwrap_or(top.size);
    let missing = client
        .ledger_entries(source, lowest, top.size)
        .await
        .map_err(|e| LedgerError::NoHistory(format!("node {source}: {e}")))?;
    let first = top.size;
    let new: Vec<Entry> = transitions
        .into_iter()
        .enumerate()
        .map(|(i, t)| Entry::sign(&log, first + i as u64, 0, t, owner))
        .collect();
    let mut plan: BTreeMap<u8, Vec<Entry>> = sizes
        .iter()
        .map(|(&x, h)| {
            let skip = (h.size - lowest) as usize;
            let mut entries = missing[skip.min(missing.len())..].to_vec();
            entries.extend(new.iter().cloned());
            (x, entries)
        })
        .collect();
    let caught_up: Vec<(u8, u64)> = sizes
        .iter()
        .filter(|(_, h)| h.size < top.size)
        .map(|(&x, h)| (x, h.size))
        .collect();

    // Send each node its entries, a page at a time; its last answer cosigns its head.
    let mut answers: BTreeMap<u8, (TreeHead, Cosignature, Vec<Hash>)> = BTreeMap::new();
    while !plan.is_empty() {
        let calls: Vec<(u8, NodeBody)> = plan
            .iter_mut()
            .map(|(&x, entries)| {
                let page: Vec<Entry> = entries
                    .drain(..entries.len().min(limits::MAX_LEDGER_BATCH))
                    .collect();
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
                    answers.insert(x, (a.head, a.cosignature, a.proof));
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

    // The head the majority reached, with their cosignatures.
    let size = first + new.len() as u64;
    let mut by_root: BTreeMap<Hash, Vec<u8>> = BTreeMap::new();
    for (&x, (head, cosignature, _)) in &answers {
        let one = CosignedHead {
            head: *head,
            cosignatures: vec![cosignature.clone()],
        };
        if head.log != log || head.size != size || cosigners.signers(&one) != [x] {
            failures.push((
                x,
                format!(
                    "it cosigned a head of {} entries, not of the {size} written",
                    head.size
                ),
            ));
            continue;
        }
        by_root.entry(head.root).or_default().push(x);
    }
    let Some((root, signers)) = by_root.iter().max_by_key(|(_, s)| s.len()) else {
        return Err(LedgerError::NoQuorum {
            size,
            have: 0,
            need: cosigners.quorum,
            failures: describe(&failures),
        });
    };
    for (other, nodes) in &by_root {
        if other != root {
            for &x in nodes {
                failures.push((x, format!("its ledger of {size} entries has another root")));
            }
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
    let head = CosignedHead {
        head: TreeHead {
            log,
            size,
            root: *root,
        },
        cosignatures: signers.iter().map(|x| answers[x].1.clone()).collect(),
    };
    // Any cosigner's proof shows the new head extends the last; a relay may have altered one.
    let mut accepted = Err(HeadError::Unproven {
        shown: size,
        last: since,
    });
    for x in signers {
        accepted = view.observe(head.clone(), &answers[x].2);
        if accepted.is_ok() {
            break;
        }
    }
    accepted?;
    write_head(&path, &head)?;
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
        cosigners: signers.clone(),
        head,
        caught_up,
        failures,
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
    /// The ledger rebuilt from a node's entries, every signature and rule checked.
    pub replica: Replica,
    /// Its entries.
    pub entries: Vec<Entry>,
    /// The node they came from.
    pub source: u8,
    /// Each node's ledger, or the fault its answers prove.
    pub nodes: Vec<(u8, Result<NodeLedger, String>)>,
    /// Faults of several nodes together: heads cosigned for another history, named.
    pub faults: Vec<String>,
    /// The cosigned head accepted now.
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

/// Rebuild the ledger of the cluster in `dir` from a node's entries and check every node's
/// heads against it, and `shown`, heads from elsewhere (another client's kept head, say);
/// keep the newest cosigned head of that history.
///
/// # Errors
/// [`LedgerError`] when no node gives a history that replays and extends the head accepted
/// last; each node's fault is in [`Verified::nodes`].
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
    let kept = read_head(&path)?;
    let since = kept.as_ref().map_or(0, |c| c.head.size);
    let heads = client.ledger_heads(since).await;

    // The history: the longest signed one that replays and holds the head kept last.
    let mut order: Vec<(u8, TreeHead)> = heads
        .iter()
        .filter_map(|(x, h)| h.as_ref().ok().map(|h| (*x, h.own)))
        .collect();
    order.sort_by_key(|(x, h)| (std::cmp::Reverse(h.size), *x));
    let mut tried = Vec::new();
    let mut found = None;
    for (x, head) in order {
        match rebuild(client, &authors, x, head).await {
            Ok((replica, entries))
                if kept
                    .as_ref()
                    .is_none_or(|k| replica.root_at(k.head.size) == Some(k.head.root)) =>
            {
                found = Some((x, replica, entries));
                break;
            }
            Ok(_) => tried.push((x, "its ledger does not hold the head accepted last".into())),
            Err(e) => tried.push((x, e)),
        }
    }
    let Some((source, replica, entries)) = found else {
        return Err(LedgerError::NoHistory(describe(&tried)));
    };

    // Each node's signed head and kept cosigned head against that history.
    let mut nodes = Vec::new();
    let mut cosigned: Vec<CosignedHead> = kept.iter().cloned().collect();
    for (x, answer) in heads {
        let verdict = answer.map_err(|e| e.to_string()).and_then(|h| {
            if cosigners.signers(&h.signed()) != [x] || h.own.log != log {
                return Err("its ledger head is not signed by it".to_string());
            }
            if replica.root_at(h.own.size) != Some(h.own.root) {
                return Err(format!(
                    "it signed a ledger head of {} entries that the owner's entries do not \
                     give: it holds another history",
                    h.own.size
                ));
            }
            // Fewer entries than a head it cosigned itself: its own signature shows it held
            // them. Fewer than a head others cosigned: it was down, and the next append brings
            // it up to date.
            let signed_more = kept
                .as_ref()
                .is_some_and(|k| k.head.size > h.own.size && cosigners.signers(k).contains(&x));
            if signed_more {
                return Err(format!(
                    "it holds {} ledger entries, fewer than the {since} of the head it \
                     cosigned: rolled back",
                    h.own.size
                ));
            }
            cosigned.extend(h.cosigned.clone());
            Ok(NodeLedger {
                size: h.own.size,
                cosigned: h.cosigned.map(|c| c.head.size),
            })
        });
        nodes.push((x, verdict));
    }
    cosigned.extend(shown.iter().cloned());

    // Heads a majority cosigned: two of one size with different roots name the nodes that
    // signed both; one the history does not give names its signers.
    let mut faults = Vec::new();
    let valid: Vec<(CosignedHead, Vec<u8>)> = cosigned
        .into_iter()
        .filter(|c| c.head.log == log)
        .map(|c| {
            let s = cosigners.signers(&c);
            (c, s)
        })
        .filter(|(_, s)| s.len() >= cosigners.quorum)
        .collect();
    for (i, (a, sa)) in valid.iter().enumerate() {
        for (b, sb) in &valid[i + 1..] {
            if a.head.size == b.head.size && a.head.root != b.head.root {
                let both: Vec<u8> = sa.iter().filter(|x| sb.contains(x)).copied().collect();
                faults.push(
                    HeadError::SplitView {
                        nodes: both,
                        first: Box::new(a.clone()),
                        second: Box::new(b.clone()),
                    }
                    .to_string(),
                );
            }
        }
    }
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

    // The newest cosigned head of this history is kept.
    let head = valid
        .iter()
        .filter(|(c, _)| replica.root_at(c.head.size) == Some(c.head.root))
        .map(|(c, _)| c)
        .max_by_key(|c| c.head.size)
        .cloned();
    if let Some(h) = &head {
        if kept.as_ref().is_none_or(|k| h.head.size > k.head.size) {
            write_head(&path, h)?;
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

/// Node `x`'s whole ledger, replayed, if it gives the head the node signed.
async fn rebuild(
    client: &Client,
    authors: &Authors,
    x: u8,
    head: TreeHead,
) -> Result<(Replica, Vec<Entry>), String> {
    let entries = client
        .ledger_entries(x, 0, head.size)
        .await
        .map_err(|e| e.to_string())?;
    let mut replica = Replica::new(authors.clone());
    replica.append(&entries).map_err(|e| e.to_string())?;
    if replica.head() != head {
        return Err("its entries do not give the head it signed".into());
    }
    Ok((replica, entries))
}

/// The cosigners a cluster's heads need, from its directory.
///
/// # Errors
/// [`LedgerError::Key`] for a missing or malformed audit key.
pub fn cosigners(dir: &Path, client: &Client) -> Result<Cosigners, LedgerError> {
    Ok(majority(&authors(dir, client)?.nodes))
}
