//! `obscura ledger show|verify`: the cluster ledger, rebuilt from a node's entries and checked
//! against every node's signed heads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use obscura_client::ledger::{self, Verified};
use obscura_ledger::entry::{Entry, Transition};
use obscura_ledger::head::CosignedHead;
use obscura_tokens::keyfile::to_hex as hex;
use serde_json::{json, Value};

use crate::error::Failure;
use crate::{client, exit};

#[derive(Subcommand)]
pub(crate) enum LedgerCommand {
    /// Print the ledger's entries and the state they build, after verifying them.
    ///
    /// Example: `obscura ledger show --cluster DIR --from 10`
    Show {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The first entry to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print `{"size","head","state","entries":[{"seq","author","transition"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Bring every node that fell behind (it was down during an append) up to date, anchor
    /// every node's audit log in the ledger (each signs a checkpoint of its log as its own
    /// entry: a log cut or rewritten before it is then caught by every client's `obscura audit
    /// verify`), and have the nodes cosign the ledger's head. Data owner only.
    ///
    /// Example: `obscura ledger sync --cluster DIR`
    Sync {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// Print `{"size","anchored","cosigners","caught_up":[{"node","from"}],"failures":[{"node","error"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the ledger from a node's entries (every signature and rule checked) and check
    /// every node's signed heads against it and against the head accepted last
    /// (`DIR/client/ledger-head.json`): a node that rolled back or holds another history, and
    /// nodes that cosigned two heads of one size, are named. Exits 1 on any fault.
    ///
    /// Example: `obscura ledger verify --cluster DIR --head other-client-head.json`
    Verify {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// A cosigned head seen elsewhere (another client's `ledger-head.json`) to check
        /// against this history too; may be given more than once.
        #[arg(long)]
        head: Vec<PathBuf>,
        /// Print `{"ok","size","source","head","nodes":[{"node","ok","size","cosigned","error"}],"faults"}`.
        #[arg(long)]
        json: bool,
    },
}

impl LedgerCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            LedgerCommand::Show {
                cluster,
                from,
                json,
            } => show(&cluster, from, json).await,
            LedgerCommand::Sync { cluster, json } => sync(&cluster, json).await,
            LedgerCommand::Verify {
                cluster,
                head,
                json,
            } => verify(&cluster, &head, json).await,
        }
    }
}

async fn verified(cluster: &Path, shown: &[CosignedHead]) -> Result<Verified, Failure> {
    ledger::verify(cluster, &client(cluster)?, shown)
        .await
        .map_err(|e| Failure::Said(e.to_string()))
}

fn head_json(head: Option<&CosignedHead>) -> Value {
    head.map_or(Value::Null, |h| {
        json!({"size": h.head.size, "root": hex(&h.head.root),
               "cosigners": h.cosignatures.iter().map(|c| c.node).collect::<Vec<_>>()})
    })
}

/// An entry in words: `(what, fields)`.
pub(crate) fn describe(t: &Transition) -> (&'static str, Value) {
    match t {
        Transition::ImageRegistered { image, manifest } => (
            "image registered",
            json!({"image": hex(image), "manifest": hex(manifest)}),
        ),
        Transition::ImageDeleted { image } => ("image deleted", json!({"image": hex(image)})),
        Transition::KeyVersion { version } => ("key version", json!({"version": version})),
        Transition::Granted { user, role } => ("granted", json!({"user": user, "role": role})),
        Transition::Revoked { user, role } => ("revoked", json!({"user": user, "role": role})),
        Transition::WorkApproved {
            work,
            expires_at,
            max_runs,
        } => (
            "work approved",
            json!({"work": hex(work), "expires_at": expires_at, "max_runs": max_runs}),
        ),
        Transition::WorkRun { work, node, run } => (
            "work run",
            json!({"work": hex(work), "node": node, "run": run}),
        ),
        Transition::Synced { at } => ("synced", json!({"at": at})),
        Transition::Checkpoint { node, seq, head } => (
            "audit checkpoint",
            json!({"node": node, "seq": seq, "head": hex(head)}),
        ),
        _ => ("unknown", Value::Null),
    }
}

fn author(e: &Entry) -> String {
    if e.author == 0 {
        "owner".into()
    } else {
        format!("node {}", e.author)
    }
}

async fn show(cluster: &Path, from: u64, json: bool) -> Result<ExitCode, Failure> {
    let v = verified(cluster, &[]).await?;
    let state = v.state();
    let entries = v
        .entries
        .iter()
        .skip(usize::try_from(from).unwrap_or(usize::MAX));
    if json {
        let entries: Vec<Value> = entries
            .map(|e| {
                let (what, fields) = describe(&e.transition);
                json!({"seq": e.seq, "author": author(e), "transition": what, "fields": fields})
            })
            .collect();
        println!(
            "{}",
            json!({
                "size": v.replica.size(),
                "head": head_json(v.head.as_ref()),
                "state": {
                    "images": state.images.len(),
                    "key_version": state.key_version,
                    "grants": state.grants,
                    "approvals": state.approvals.len(),
                },
                "entries": entries,
            })
        );
    } else {
        for e in entries {
            let (what, fields) = describe(&e.transition);
            println!("{:>6}  {:<7}  {what}  {fields}", e.seq, author(e));
        }
        println!(
            "{} entries (from node {}); {} images, key version {}, {} users with roles, {} \
             approved works",
            v.replica.size(),
            v.source,
            state.images.len(),
            state.key_version,
            state.grants.len(),
            state.approvals.len()
        );
    }
    Ok(exit(v.ok()))
}

async fn sync(cluster: &Path, json: bool) -> Result<ExitCode, Failure> {
    let a = ledger::anchor_audit_logs(cluster, &client(cluster)?)
        .await
        .map_err(|e| Failure::Said(e.to_string()))?;
    if json {
        println!(
            "{}",
            json!({"size": a.head.head.size, "anchored": a.anchored, "cosigners": a.cosigners,
                   "caught_up": a.caught_up.iter().map(|(x, from)| json!({"node": x, "from": from})).collect::<Vec<_>>(),
                   "failures": a.failures.iter().map(|(x, e)| json!({"node": x, "error": e})).collect::<Vec<_>>()})
        );
    } else {
        for (x, from) in &a.caught_up {
            println!("node {x}: brought up from {from} entries");
        }
        for (x, e) in &a.failures {
            println!("node {x}: FAILED: {e}");
        }
        println!(
            "ledger: {} entries, audit logs of nodes {:?} anchored, cosigned by nodes {:?}",
            a.head.head.size, a.anchored, a.cosigners
        );
    }
    Ok(exit(a.failures.is_empty()))
}

async fn verify(cluster: &Path, heads: &[PathBuf], json: bool) -> Result<ExitCode, Failure> {
    let shown = heads
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|e| Failure::Said(format!("{}: {e}", p.display())))
        })
        .collect::<Result<Vec<CosignedHead>, _>>()?;
    let v = verified(cluster, &shown).await?;
    if json {
        let nodes: Vec<Value> = v
            .nodes
            .iter()
            .map(|(x, r)| match r {
                Ok(n) => json!({"node": x, "ok": true, "size": n.size, "cosigned": n.cosigned,
                                "error": null}),
                Err(e) => json!({"node": x, "ok": false, "size": null, "cosigned": null,
                                 "error": e}),
            })
            .collect();
        println!(
            "{}",
            json!({"ok": v.ok(), "size": v.replica.size(), "source": v.source,
                   "head": head_json(v.head.as_ref()), "nodes": nodes, "faults": v.faults})
        );
    } else {
        for (x, r) in &v.nodes {
            match r {
                Ok(n) => println!(
                    "node {x}: ok, {} entries{}, keeps the cosigned head of {}",
                    n.size,
                    if n.size < v.replica.size() {
                        " (behind: `obscura ledger sync` brings it up)"
                    } else {
                        ""
                    },
                    n.cosigned.map_or("none".into(), |s| format!("{s} entries"))
                ),
                Err(e) => println!("node {x}: FAILED: {e}"),
            }
        }
        for f in &v.faults {
            println!("FAULT: {f}");
        }
        match &v.head {
            Some(h) => println!(
                "ledger: {} entries, every signature and rule checked; head of {} entries \
                 cosigned by nodes {:?}",
                v.replica.size(),
                h.head.size,
                h.cosignatures.iter().map(|c| c.node).collect::<Vec<_>>()
            ),
            None => println!("ledger: {} entries, no cosigned head yet", v.replica.size()),
        }
    }
    Ok(exit(v.ok()))
}

/// Enter `transitions` in the ledger after an operation that succeeded: prints what it did, or
/// says plainly that the operation stands and its entries were not written. Returns whether
/// they were.
pub(crate) async fn enter(
    cluster: &Path,
    client: &obscura_client::Client,
    transitions: Vec<Transition>,
    json: bool,
) -> (bool, Value) {
    if transitions.is_empty() {
        return (true, Value::Null);
    }
    let count = transitions.len();
    match ledger::append(cluster, client, transitions).await {
        Ok(a) => {
            for (x, why) in &a.failures {
                eprintln!("warning: ledger: node {x}: {why}");
            }
            if !json {
                println!(
                    "ledger: entries {}..{} cosigned by nodes {:?}",
                    a.first, a.head.head.size, a.cosigners
                );
            }
            (
                true,
                json!({"first": a.first, "size": a.head.head.size, "cosigners": a.cosigners}),
            )
        }
        Err(e) => {
            eprintln!(
                "error: done, but the ledger did not take its {count} entr{}: {e}",
                if count == 1 { "y" } else { "ies" }
            );
            (false, json!({"error": e.to_string()}))
        }
    }
}
