//! `obscura ledger show|verify`: the cluster ledger, rebuilt from a node's entries and checked
//! against every node's signed heads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use obscura_client::group;
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
        #[arg(long, env = "OBSCURA_CLUSTER")]
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
        #[arg(long, env = "OBSCURA_CLUSTER")]
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
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// A cosigned head seen elsewhere (another client's `ledger-head.json`) to check
        /// against this history too; may be given more than once.
        #[arg(long)]
        head: Vec<PathBuf>,
        /// Print `{"ok","size","source","head","nodes":[{"node","ok","size","cosigned","error"}],"faults"}`.
        #[arg(long)]
        json: bool,
    },
    /// Start this client as a member of the cluster's group: make its keys (kept in
    /// OBSCURA_GROUP, else DIR/client/group.json, readable only by you) and write the
    /// KeyPackage the data owner adds it by.
    #[command(after_help = "Example:\n  \
        OBSCURA_GROUP=~/ana.group obscura ledger key-package --cluster /tmp/demo --name ana --out ana.kp\n  \
        obscura ledger add-member --cluster /tmp/demo --key-package ana.kp   # the data owner")]
    KeyPackage {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The member's name (its identity is `client:NAME`).
        #[arg(long)]
        name: String,
        /// Where to write the KeyPackage.
        #[arg(long)]
        out: PathBuf,
        /// Print `{"identity","key_package","state"}`.
        #[arg(long)]
        json: bool,
    },
    /// Add a member to the group: a new epoch, whose Commit and Welcome go into the ledger;
    /// from then on it opens what is sealed there. A client joins by its KeyPackage; a worker
    /// only on its attestation: challenged for a KeyPackage, whose evidence must bind its key
    /// and pass the cluster's attestation policy. Data owner only.
    #[command(after_help = "Examples:\n  \
        obscura ledger add-member --cluster /tmp/demo --key-package ana.kp\n  \
        obscura ledger add-member --cluster /tmp/demo --worker http://127.0.0.1:7601")]
    #[command(group(clap::ArgGroup::new("who").required(true).args(["key_package", "worker"])))]
    AddMember {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// A client's KeyPackage (from `obscura ledger key-package`).
        #[arg(long)]
        key_package: Option<PathBuf>,
        /// A running worker's base URL (`obscura worker run`).
        #[arg(long)]
        worker: Option<String>,
        /// Print `{"identity","epoch","ledger":{"size","cosigners"}}`, and for a worker
        /// `"appraisal"` and `"worker":{"epoch","joined"}` or `"worker_error"`.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member from the group: a new epoch whose keys it never holds, so it opens
    /// nothing sealed after. Data owner only.
    #[command(
        after_help = "Example:\n  obscura ledger remove-member --cluster /tmp/demo client:ana"
    )]
    RemoveMember {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The member (`client:NAME` or `worker:NAME`).
        identity: String,
        /// Print `{"identity","epoch","ledger":{"size","cosigners"}}`.
        #[arg(long)]
        json: bool,
    },
    /// Hand a worker the group's entries (each owner-signed, with its inclusion proof in the
    /// head a majority of nodes cosigned): to one added whose answer was lost, or to tell one
    /// that it was removed.
    #[command(
        after_help = "Example:\n  obscura ledger relay --cluster /tmp/demo --worker http://127.0.0.1:7601"
    )]
    Relay {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The worker's base URL.
        #[arg(long)]
        worker: String,
        /// Print `{"epoch","joined","removed","opened"}` as the worker answers.
        #[arg(long)]
        json: bool,
    },
    /// Follow the ledger as a member of the group and print its members, its epoch and how
    /// many labels this client opened.
    #[command(after_help = "Example:\n  obscura ledger members --cluster /tmp/demo --json")]
    Members {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// Print `{"identity","epoch","removed","members":[{"identity","signature_key"}],"labels","unreadable"}`.
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
            LedgerCommand::KeyPackage {
                cluster,
                name,
                out,
                json,
            } => key_package(&cluster, &name, &out, json),
            LedgerCommand::AddMember {
                cluster,
                key_package,
                worker,
                json,
            } => match (key_package, worker) {
                (Some(kp), _) => add_member(&cluster, &kp, json).await,
                (None, Some(url)) => add_worker(&cluster, &url, json).await,
                (None, None) => Err("--key-package or --worker".into()),
            },
            LedgerCommand::RemoveMember {
                cluster,
                identity,
                json,
            } => remove_member(&cluster, &identity, json).await,
            LedgerCommand::Members { cluster, json } => members(&cluster, json).await,
            LedgerCommand::Relay {
                cluster,
                worker,
                json,
            } => {
                let f = group::relay(&cluster, &client(&cluster)?, &worker, 0)
                    .await
                    .map_err(Failure::Said)?;
                if json {
                    println!(
                        "{}",
                        json!({"epoch": f.epoch, "joined": f.joined, "removed": f.removed, "opened": f.opened})
                    );
                } else {
                    println!(
                        "worker {worker}: {}{}",
                        f.epoch.map_or_else(
                            || "not in the group".to_string(),
                            |e| format!("in the group at epoch {e}")
                        ),
                        if f.removed { " (removed)" } else { "" }
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
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
            json!({"work": hex(work), "expires_at": expires_at,
                   "expires": crate::rfc3339(*expires_at), "max_runs": max_runs}),
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
        // Ciphertext: what a node sees of the group, an epoch and lengths.
        Transition::GroupCommit {
            epoch,
            commit,
            welcome,
        } => (
            "group commit",
            json!({"epoch": epoch, "commit_bytes": commit.len(),
                   "welcome_bytes": welcome.as_ref().map(Vec::len)}),
        ),
        Transition::Sealed { epoch, message } => {
            ("sealed", json!({"epoch": epoch, "bytes": message.len()}))
        }
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

fn key_package(cluster: &Path, name: &str, out: &Path, json: bool) -> Result<ExitCode, Failure> {
    let identity = format!("client:{name}");
    if out.exists() {
        return Err(format!("{} exists already", out.display()).into());
    }
    let kp = group::start(cluster, &identity).map_err(|e| e.to_string())?;
    obscura_cluster::files::write_atomic(out, &kp).map_err(|e| e.to_string())?;
    let state = group::state_path(cluster);
    if json {
        println!(
            "{}",
            json!({"identity": identity, "key_package": out, "state": state})
        );
    } else {
        println!(
            "{identity}: KeyPackage in {} (give it to the data owner); keys kept in {}",
            out.display(),
            state.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn changed(identity: &str, what: &str, c: &group::Changed, json: bool) {
    let ledger = c.appended.as_ref().map_or(
        Value::Null,
        |a| json!({"size": a.head.head.size, "cosigners": a.cosigners}),
    );
    if json {
        println!(
            "{}",
            json!({"identity": identity, "epoch": c.epoch, "ledger": ledger})
        );
        return;
    }
    match &c.appended {
        Some(a) => {
            for (x, why) in &a.failures {
                eprintln!("warning: ledger: node {x}: {why}");
            }
            println!(
                "{identity} {what}: the group is at epoch {}; ledger entry {} cosigned by nodes {:?}",
                c.epoch,
                a.head.head.size - 1,
                a.cosigners
            );
        }
        None => println!(
            "{identity} {what}: the group is at epoch {}; the ledger's answer was unclear, and a \
             history the nodes cosigned holds the change",
            c.epoch
        ),
    }
}

async fn add_member(cluster: &Path, key_package: &Path, json: bool) -> Result<ExitCode, Failure> {
    let bytes = obscura_cluster::files::read(key_package).map_err(|e| e.to_string())?;
    let candidate = obscura_group::Candidate::parse(&bytes)
        .map_err(|e| format!("{}: {e}", key_package.display()))?;
    let c = group::add(
        cluster,
        &client(cluster)?,
        &candidate,
        &obscura_group::Admitted::vouched(),
    )
    .await
    .map_err(|e| e.to_string())?;
    changed(candidate.identity(), "added", &c, json);
    Ok(ExitCode::SUCCESS)
}

async fn add_worker(cluster: &Path, url: &str, json: bool) -> Result<ExitCode, Failure> {
    let a = group::add_worker(cluster, &client(cluster)?, url)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            json!({"identity": a.identity, "epoch": a.changed.epoch, "appraisal": a.appraisal,
                   "ledger": a.changed.appended.as_ref().map(|x| json!({"size": x.head.head.size, "cosigners": x.cosigners})),
                   "worker": a.told.as_ref().ok().map(|f| json!({"epoch": f.epoch, "joined": f.joined})),
                   "worker_error": a.told.as_ref().err()})
        );
    } else {
        println!("{}: attested ({})", a.identity, a.appraisal);
        changed(&a.identity, "added", &a.changed, false);
        match &a.told {
            Ok(f) if f.joined => println!(
                "{} joined: epoch {}",
                a.identity,
                f.epoch.unwrap_or_default()
            ),
            Ok(_) => println!("{} did not join with the entry it was handed", a.identity),
            Err(e) => eprintln!("warning: {} was not told: {e}", a.identity),
        }
    }
    Ok(exit(a.told.as_ref().is_ok_and(|f| f.joined)))
}

async fn remove_member(cluster: &Path, identity: &str, json: bool) -> Result<ExitCode, Failure> {
    let c = group::remove(cluster, &client(cluster)?, identity)
        .await
        .map_err(|e| e.to_string())?;
    changed(identity, "removed", &c, json);
    Ok(ExitCode::SUCCESS)
}

async fn members(cluster: &Path, json: bool) -> Result<ExitCode, Failure> {
    let client = client(cluster)?;
    let loaded = group::Group::load(cluster).map_err(|e| e.to_string())?;
    let owners = loaded
        .as_ref()
        .map_or(client.is_owner(), |g| g.member.identity() == group::OWNER);
    let mut g = match loaded {
        // The owner's: made if need be, and a change of unclear outcome settled first.
        _ if owners => {
            drop(loaded);
            group::owner_ready(cluster, &client)
                .await
                .map_err(|e| e.to_string())?
        }
        Some(g) => g,
        None => {
            return Err(group::GroupFault::NoState(
                group::state_path(cluster).display().to_string(),
            )
            .to_string()
            .into())
        }
    };
    group::follow(cluster, &client, &mut g)
        .await
        .map_err(|e| e.to_string())?;
    let members = g.member.members();
    if json {
        println!(
            "{}",
            json!({"identity": g.member.identity(), "epoch": g.member.epoch(),
                   "removed": g.member.removed(),
                   "members": members.iter().map(|(i, k)| json!({"identity": i, "signature_key": k})).collect::<Vec<_>>(),
                   "labels": g.labels.len(), "unreadable": g.unreadable})
        );
    } else {
        match g.member.epoch() {
            Some(epoch) => {
                for (i, k) in &members {
                    println!("{i}  {k}");
                }
                println!(
                    "{} member(s), epoch {epoch}; this client is {} and holds {} label(s)",
                    members.len(),
                    g.member.identity(),
                    g.labels.len()
                );
            }
            None if g.member.removed() => println!(
                "{} was removed from the group: it opens nothing sealed after",
                g.member.identity()
            ),
            None => println!(
                "{} is not in the group yet (the data owner adds it with `obscura ledger add-member`)",
                g.member.identity()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
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
