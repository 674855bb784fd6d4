//! `obscura room`: the clean room. Make a work from a WebAssembly function and its manifest,
//! show its Work-ID, approve it as the data owner, run it in an attested worker (this command
//! is the controller: it relays, and sees only evidence and ciphertext), and open the result as
//! a recipient.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use obscura_attest::seal::PartyKey;
use obscura_room::result::{open_output, verify_result, RunResult, Witnesses};
use obscura_room::work::{Approval, Manifest, Work};
use serde_json::json;

use crate::error::Failure;

#[derive(Subcommand)]
pub(crate) enum RoomCommand {
    /// Make a work: a function (WebAssembly, text or binary) and its I/O manifest (JSON),
    /// written as one file. Prints its Work-ID, which the owner approves.
    #[command(after_help = "Example:\n  \
        obscura room work --module examples/room/colour_stats.wat --manifest m.json --out work.json\n  \
        obscura room work --module examples/room/colour_stats.wat --manifest m.json \\\n      \
            --matches query.jpg --within 10 --cluster /tmp/demo --out work.json\n\n\
        The manifest names the input image ids (or, with --matches, leaves them out), labels,\n\
        parameters (hex), the output kind (json, text or image) and its largest size, the run's\n\
        fuel and memory, and the recipients' keys (from `obscura room keygen`):\n  \
        {\"inputs\":[{\"image\":\"…32 hex…\"}],\"output\":{\"kind\":\"json\",\"max_bytes\":4096},\n   \
        \"limits\":{\"fuel\":100000000,\"memory_bytes\":67108864},\"recipients\":[\"…64 hex…\"]}")]
    Work {
        /// The function: a `.wat` or `.wasm` file.
        #[arg(long)]
        module: PathBuf,
        /// The manifest (JSON).
        #[arg(long)]
        manifest: PathBuf,
        /// Take the inputs from a private search instead of the manifest: the stored images
        /// the search finds within `--within` of this query image (at most `--top`), in id
        /// order. The search is yours (the querier role), run now; the work names the images
        /// it found, and that list, which the owner and every node see, is what the owner
        /// approves.
        #[arg(long, requires = "cluster")]
        matches: Option<PathBuf>,
        /// The cluster to search (with `--matches`).
        #[arg(long)]
        cluster: Option<PathBuf>,
        /// Largest Hamming distance of a match taken as an input (with `--matches`; nodes
        /// reveal nothing beyond the cluster's own limit).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=64))]
        within: u32,
        /// Most matches taken as inputs (with `--matches`).
        #[arg(long, default_value_t = 16)]
        top: usize,
        /// Where to write the work.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a work: its Work-ID and everything the Work-ID covers except the module's bytes.
    #[command(
        after_help = "Examples:\n  obscura room show work.json\n  obscura room show work.json --json"
    )]
    Show {
        /// The work file.
        work: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a recipient's key: the secret to FILE (0600), the public key printed, for a
    /// manifest's recipients.
    #[command(after_help = "Example:\n  obscura room keygen --out ~/.obscura-room.key")]
    Keygen {
        /// Where to write the secret key.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// As the data owner: approve a work for workers that pass the cluster's attestation
    /// policy (or another), for a time and a number of runs at each node.
    #[command(after_help = "Example:\n  \
        obscura room approve --cluster /tmp/demo --work work.json --max-runs 1 --out approval.json")]
    Approve {
        /// The cluster directory (with the owner's key).
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The work file.
        #[arg(long)]
        work: PathBuf,
        /// The attestation policy a worker must pass (default: the cluster's).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// How long the approval lasts, in seconds.
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
        /// Most runs each node releases its shares to.
        #[arg(long, default_value_t = 1)]
        max_runs: u32,
        /// Where to write the approval.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run an approved work in an attested worker: every node appraises the worker and
    /// releases its shares sealed to it; the result, sealed to the recipients and signed by
    /// the worker, is written to --out.
    #[command(after_help = "Example:\n  \
        obscura room run --cluster /tmp/demo --work work.json --approval approval.json \\\n    \
        --worker http://127.0.0.1:7601 --out result.json")]
    Run {
        /// The cluster directory (logged in).
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The work file.
        #[arg(long)]
        work: PathBuf,
        /// The owner's approval.
        #[arg(long)]
        approval: PathBuf,
        /// The worker's base URL.
        #[arg(long)]
        worker: String,
        /// Where to write the result.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// As a recipient: check a result (the worker's signature, and that k nodes signed
    /// releases to the key that made it) and open its output with your key. An image output
    /// is written as PNG.
    #[command(after_help = "Example:\n  \
        obscura room open --result result.json --cluster /tmp/demo --work WORK-ID --key ~/.obscura-room.key --out stats.json")]
    Open {
        /// The result file.
        #[arg(long)]
        result: PathBuf,
        /// The cluster directory: the nodes' audit keys, to check their signatures on their
        /// releases to the worker.
        #[arg(long, required_unless_present = "unverified")]
        cluster: Option<PathBuf>,
        /// Open without checking that the nodes appraised the worker: anyone can make a result
        /// sealed to your public key, so what this opens proves nothing.
        #[arg(long)]
        unverified: bool,
        /// The Work-ID the result must be for (hex): another approved work that names you as
        /// recipient gives results that check too.
        #[arg(long)]
        work: Option<String>,
        /// Your key (from `obscura room keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the output (`-` for standard output).
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl RoomCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            RoomCommand::Work {
                module,
                manifest,
                matches,
                cluster,
                within,
                top,
                out,
                json,
            } => {
                let query = match (matches, cluster) {
                    (Some(image), Some(cluster)) => Some(Query {
                        image,
                        cluster,
                        within,
                        top,
                    }),
                    _ => None,
                };
                make_work(&module, &manifest, query.as_ref(), &out, json).await
            }
            RoomCommand::Show { work, json } => show(&read_work(&work)?, json),
            RoomCommand::Keygen { out, json } => keygen(&out, json),
            RoomCommand::Approve {
                cluster,
                work,
                policy,
                expires_in,
                max_runs,
                out,
                json,
            } => {
                let work = read_work(&work)?;
                let policy_path = policy.unwrap_or_else(|| cluster.join("attestation-policy.json"));
                let policy = std::fs::read_to_string(&policy_path)
                    .map_err(|e| format!("{}: {e}", policy_path.display()))?;
                obscura_attest::Policy::from_json(&policy)
                    .map_err(|e| format!("{}: {e}", policy_path.display()))?;
                if max_runs == 0 {
                    return Err("--max-runs is at least 1".into());
                }
                let client = crate::cluster::owner_client(&cluster, "approving a work")?;
                let expires_at = unix_now() + expires_in;
                let approval = client.approve(&work, &policy, expires_at, max_runs)?;
                write_new(
                    &out,
                    serde_json::to_string_pretty(&approval)
                        .expect("an approval serialises")
                        .as_bytes(),
                )?;
                if !json {
                    println!(
                        "approved work {} for {max_runs} run(s) at each node until {expires_at}: {}",
                        approval.work,
                        out.display()
                    );
                }
                // The approval stands once written; the ledger records it for every party.
                let approved = obscura_ledger::entry::Transition::WorkApproved {
                    work: obscura_tokens::keyfile::hex32(&approval.work)
                        .ok_or("the approval's Work-ID is not 64 hex digits")?,
                    expires_at,
                    max_runs,
                };
                let (entered, ledger) =
                    crate::ledger::enter(&cluster, &client, vec![approved], json).await;
                if json {
                    println!(
                        "{}",
                        json!({"work": approval.work, "expires_at": expires_at,
                               "expires": crate::rfc3339(expires_at),
                               "max_runs": max_runs, "approval": out, "ledger": ledger})
                    );
                }
                Ok(crate::exit(entered))
            }
            RoomCommand::Run {
                cluster,
                work,
                approval,
                worker,
                out,
                json,
            } => run(&cluster, &work, &approval, &worker, &out, json).await,
            RoomCommand::Open {
                result,
                cluster,
                unverified: _,
                work,
                key,
                out,
                json,
            } => open(
                &result,
                cluster.as_deref(),
                work.as_deref(),
                &key,
                &out,
                json,
            ),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_work(path: &Path) -> Result<Work, Failure> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Work::from_json(&bytes).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Write a file that must not exist yet, whole or not at all.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    if path.exists() {
        return Err(format!("{} exists already", path.display()).into());
    }
    obscura_cluster::files::write_atomic(path, bytes)
        .map_err(|e| Failure::Said(format!("{}: {e}", path.display())))
}

/// A work's inputs as a search's matches.
struct Query {
    image: PathBuf,
    cluster: PathBuf,
    within: u32,
    top: usize,
}

async fn make_work(
    module: &Path,
    manifest_path: &Path,
    query: Option<&Query>,
    out: &Path,
    json: bool,
) -> Result<ExitCode, Failure> {
    let module_bytes = std::fs::read(module).map_err(|e| format!("{}: {e}", module.display()))?;
    let text =
        std::fs::read(manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let mut manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    if let Some(q) = query {
        if !manifest.inputs.is_empty() {
            return Err(format!(
                "{} names inputs and --matches asks for a search's: give one or the other",
                manifest_path.display()
            )
            .into());
        }
        let bytes = std::fs::read(&q.image).map_err(|e| format!("{}: {e}", q.image.display()))?;
        let top = q.top.clamp(1, obscura_room::work::MAX_INPUTS);
        let found = crate::client(&q.cluster)?
            .search(&bytes, top, q.within)
            .await?;
        if found.matches.is_empty() {
            return Err(format!(
                "no stored image within distance {} of {}: the work would have no input",
                q.within,
                q.image.display()
            )
            .into());
        }
        // In id order: the nodes and the owner see the list, not how close each match was.
        let mut ids: Vec<[u8; 16]> = found.matches.iter().map(|m| m.id.0).collect();
        ids.sort_unstable();
        manifest.inputs = ids
            .into_iter()
            .map(|image| obscura_room::work::InputSpec { image, label: None })
            .collect();
        if found.unresolved > 0 {
            eprintln!(
                "warning: {} match(es) were confirmed by too few nodes and are not inputs",
                found.unresolved
            );
        }
        if found.matches.len() >= top {
            eprintln!(
                "warning: {} matches taken, the --top limit: closer ones come first, others may \
                 be left out",
                found.matches.len()
            );
        }
        if !json {
            eprintln!(
                "{} match(es) of {} within distance {} taken as inputs",
                manifest.inputs.len(),
                q.image.display(),
                q.within
            );
        }
    }
    let work = Work::new(&module_bytes, manifest).map_err(|e| e.to_string())?;
    // Refuse a module that could never run before anyone approves it.
    let sandbox = obscura_room::sandbox::Sandbox::new().map_err(|e| e.to_string())?;
    sandbox
        .compile(&work)
        .map_err(|e| format!("{}: {e}", module.display()))?;
    write_new(out, work.to_json().as_bytes())?;
    if json {
        println!("{}", describe(&work));
    } else {
        println!("work {}: {}", work.id(), out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(work: &Work) -> serde_json::Value {
    let m = work.manifest();
    json!({
        "work": work.id().to_hex(),
        "module_bytes": work.module().len(),
        "inputs": m.inputs.iter().map(|i| hex(&i.image)).collect::<Vec<_>>(),
        "labels": m.labels,
        "parameters": hex(&m.parameters),
        "output": {"kind": m.output.kind, "max_bytes": m.output.max_bytes},
        "limits": {"fuel": m.limits.fuel, "memory_bytes": m.limits.memory_bytes},
        "recipients": m.recipients.iter().map(|r| hex(r)).collect::<Vec<_>>(),
    })
}

fn show(work: &Work, json: bool) -> Result<ExitCode, Failure> {
    if json {
        println!("{}", describe(work));
        return Ok(ExitCode::SUCCESS);
    }
    let m = work.manifest();
    println!("work {}", work.id());
    println!("  module      {}", crate::size(work.module().len() as u64));
    println!("  inputs      {}", m.inputs.len());
    for i in &m.inputs {
        let label = i
            .label
            .and_then(|l| m.labels.get(usize::from(l)))
            .map_or(String::new(), |l| format!("  label {l:?}"));
        println!("    {}{label}", hex(&i.image));
    }
    println!("  parameters  {}", crate::size(m.parameters.len() as u64));
    println!(
        "  output      {:?}, at most {}",
        m.output.kind,
        crate::size(u64::from(m.output.max_bytes))
    );
    println!(
        "  limits      {} fuel, {} of memory",
        m.limits.fuel,
        crate::size(m.limits.memory_bytes)
    );
    for r in &m.recipients {
        println!("  recipient   {}", hex(r));
    }
    Ok(ExitCode::SUCCESS)
}

fn keygen(out: &Path, json: bool) -> Result<ExitCode, Failure> {
    if out.exists() {
        return Err(format!("{} exists already", out.display()).into());
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut *seed);
    let key = PartyKey::from_seed(&seed);
    let text = zeroize::Zeroizing::new(hex(&*seed));
    obscura_cluster::files::write_private_atomic(out, text.as_bytes())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    if json {
        println!("{}", json!({"public_key": hex(&key.public()), "key": out}));
    } else {
        println!("{}", hex(&key.public()));
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(
    cluster: &Path,
    work: &Path,
    approval: &Path,
    worker: &str,
    out: &Path,
    json: bool,
) -> Result<ExitCode, Failure> {
    let work = read_work(work)?;
    let text = std::fs::read(approval).map_err(|e| format!("{}: {e}", approval.display()))?;
    let approval: Approval =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", approval.display()))?;
    if out.exists() {
        return Err(format!("{} exists already", out.display()).into());
    }
    let client = crate::client(cluster)?;
    if !json {
        eprintln!(
            "running work {} in {worker}: loading, then each node appraises the worker",
            work.id()
        );
    }
    let report = client.room_run(&work, &approval, worker).await?;
    write_new(
        out,
        serde_json::to_string_pretty(&report.result)
            .expect("a result serialises")
            .as_bytes(),
    )?;
    let r = &report.result;
    if json {
        println!(
            "{}",
            json!({
                "work": hex(&r.work),
                "result": out,
                "released_by": report.released_by.iter()
                    .map(|(node, run)| json!({"node": node, "run": run})).collect::<Vec<_>>(),
                "refused": report.failures.iter()
                    .map(|f| json!({"node": f.node, "why": crate::error::node_fault(f)}))
                    .collect::<Vec<_>>(),
                "blamed": r.blamed,
                "unsigned": r.unsigned,
                "entered_at": report.filed_at,
                "ms": {
                    "load": report.load_ms,
                    "attestation": report.attestation_ms,
                    "release": report.release_ms,
                    "run": report.run_ms,
                },
            })
        );
    } else {
        for f in &report.failures {
            eprintln!("  {}", crate::error::node_fault(f));
        }
        for b in &r.blamed {
            eprintln!("  node {} blamed: {}", b.node, b.why);
        }
        for n in &r.unsigned {
            eprintln!(
                "  node {n}: its release reached the worker without its signature (not used)"
            );
        }
        let list = |nodes: &mut dyn Iterator<Item = u8>| {
            nodes.map(|n| n.to_string()).collect::<Vec<_>>().join(",")
        };
        println!(
            "work {}: result {} (released by nodes {}; in the audit logs of nodes {}), load {:.0} \
             ms, attestation {:.0} ms, release {:.0} ms, run {:.0} ms",
            hex(&r.work),
            out.display(),
            list(&mut report.released_by.iter().map(|(n, _)| *n)),
            list(&mut report.filed_at.iter().copied()),
            report.load_ms,
            report.attestation_ms,
            report.release_ms,
            report.run_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every node's audit key from a cluster directory (`nodeN/audit-key.pub`), node 1 first.
pub(crate) fn node_audit_keys(cluster: &Path) -> Result<Vec<String>, Failure> {
    let client = obscura_client::config::read_config(cluster).map_err(|e| e.to_string())?;
    (1..=client.nodes.len())
        .map(|i| {
            let path = cluster.join(format!("node{i}")).join("audit-key.pub");
            std::fs::read_to_string(&path)
                .map(|k| k.trim().to_owned())
                .map_err(|e| Failure::Said(format!("{}: {e}", path.display())))
        })
        .collect()
}

fn open(
    result: &Path,
    cluster: Option<&Path>,
    work: Option<&str>,
    key: &Path,
    out: &Path,
    json: bool,
) -> Result<ExitCode, Failure> {
    let text = std::fs::read(result).map_err(|e| format!("{}: {e}", result.display()))?;
    let parsed: RunResult =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", result.display()))?;
    if let Some(work) = work {
        if !work.eq_ignore_ascii_case(&hex(&parsed.work)) {
            return Err(format!(
                "{}: a result of work {}, not {work}",
                result.display(),
                hex(&parsed.work)
            )
            .into());
        }
    }
    let witnesses = match cluster {
        None => None,
        Some(dir) => {
            let nodes = node_audit_keys(dir)?
                .iter()
                .map(|k| obscura_cluster::ed25519_key(k))
                .collect::<Option<Vec<_>>>()
                .ok_or("a node's audit key is not an Ed25519 key")?;
            let k = usize::from(
                obscura_client::config::read_config(dir)
                    .map_err(|e| e.to_string())?
                    .k,
            );
            Some((nodes, k))
        }
    };
    let witnesses = witnesses
        .as_ref()
        .map(|(nodes, k)| Witnesses { nodes, k: *k });
    let signed_by = verify_result(&parsed, witnesses.as_ref())
        .map_err(|e| format!("{}: {e}", result.display()))?;
    obscura_cluster::files::check_private(key).map_err(|e| e.to_string())?;
    let seed_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?,
    );
    let seed: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
        obscura_tokens::keyfile::from_hex(seed_text.trim())
            .ok_or_else(|| format!("{}: not a key from `obscura room keygen`", key.display()))?,
    );
    let payload = open_output(&parsed, &PartyKey::from_seed(&seed))
        .map_err(|e| format!("{}: {e}", result.display()))?;
    let png;
    let output = match payload.kind {
        obscura_room::work::OutputKind::Image => {
            png = obscura_room::sandbox::image_png(&payload.output)
                .map_err(|e| format!("{}: the image: {e}", result.display()))?;
            &png
        }
        obscura_room::work::OutputKind::Json | obscura_room::work::OutputKind::Text => {
            &payload.output
        }
    };
    if out.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout()
            .write_all(output)
            .map_err(|e| e.to_string())?;
    } else {
        write_new(out, output)?;
    }
    if json {
        println!(
            "{}",
            json!({"work": hex(&parsed.work), "bytes": output.len(), "out": out,
                   "verified": !signed_by.is_empty(),
                   "signing_key": hex(&parsed.signing_key), "released_by": signed_by,
                   "blamed": parsed.blamed, "fuel_used": payload.fuel_used,
                   "worker_ms": payload.phases_ms})
        );
    } else if out.as_os_str() != "-" {
        println!(
            "{} of work {}'s output, signed by worker key {}{}: {}",
            crate::size(output.len() as u64),
            &hex(&parsed.work)[..16],
            &hex(&parsed.signing_key)[..16],
            if signed_by.is_empty() {
                " (UNVERIFIED: not checked against the nodes)".to_string()
            } else {
                format!(", which nodes {signed_by:?} appraised and released to")
            },
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    obscura_tokens::keyfile::to_hex(bytes)
}
