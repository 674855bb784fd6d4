//! `obscura index|search|get|grant|delete|hash`: images in and out of a cluster.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use obscura_client::{pipeline, SearchOutcome};
use obscura_ledger::entry::Transition;
use obscura_sharing::manifest::ImageId;
use serde_json::json;

use crate::error::Failure;
use crate::{client, exit};

/// The image commands, flattened into the top level.
#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Share image files (and folders, recursively) among the nodes.
    #[command(
        after_help = "Examples:\n  obscura index --cluster /tmp/demo photos/\n  obscura index --cluster /tmp/demo a.jpg b.png --label \"case 42\" --json"
    )]
    Index {
        /// The cluster directory made by `cluster init`.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A label for every image indexed by this run (1 to 200 bytes), sealed in the ledger
        /// under the group's epoch key: nodes store it as ciphertext, and `obscura search`
        /// shows it to the group's members only. Data owner only.
        #[arg(long)]
        label: Option<String>,
        /// Print `{"indexed":[{"path","id"}],"skipped":[{"path","error"}],"recovered":[id]}`
        /// (recovered: images an interrupted run committed but never reported).
        #[arg(long)]
        json: bool,
    },
    /// Find the stored images closest to IMAGE, privately. The nodes open only the images
    /// within the cluster's distance limit, with their distances; of the rest, only how many.
    #[command(after_help = "Examples:\n  \
        obscura search --cluster /tmp/demo photo.jpg\n  \
        obscura search --cluster /tmp/demo photo.jpg --exhaustive --json")]
    Search {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The query image.
        image: PathBuf,
        /// Most results.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Largest Hamming distance reported (0..=64). The nodes reveal nothing beyond the
        /// cluster's own limit τ (`cluster init --max-distance`, 10 by default), so a larger
        /// value reports no more.
        #[arg(long, default_value_t = 10)]
        max_distance: u32,
        /// Scan every stored image instead of Stage-1's candidates: no band lookup, so no node
        /// sees which postings the query's bands hit (the matches it resolves it still sees);
        /// slower, and refused by nodes holding more than their `max_exhaustive` images.
        #[arg(long)]
        exhaustive: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild an image from any k nodes, checking every share. Nodes hand out a share to the
    /// data owner, to a querier whose own search matched the image (the proof is kept in the
    /// session by `obscura search`), or with the owner's grant.
    #[command(after_help = "Examples:\n  \
        obscura get --cluster /tmp/demo 7f3a...e1 --out /tmp/match.jpg\n  \
        obscura get --cluster /tmp/demo 7f3a...e1 --out /tmp/x.jpg --grant 1767225600:9c1d...")]
    Get {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The image id (32 hex digits).
        id: String,
        /// Where to write the image.
        #[arg(long)]
        out: PathBuf,
        /// The owner's grant (`EXPIRY:SIGNATURE`, from `obscura grant`).
        #[arg(long)]
        grant: Option<String>,
    },
    /// As the data owner: let one account fetch one image, until a time, without searching
    /// for it. Prints the grant, which that user passes to `obscura get --grant`.
    #[command(
        after_help = "Examples:\n  obscura grant --cluster /tmp/demo --user ana 7f3a...e1 --hours 2"
    )]
    Grant {
        /// The cluster directory (with the owner's key).
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The account it is for.
        #[arg(long)]
        user: String,
        /// The image id.
        id: String,
        /// How long it holds, in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Remove an image from every node. Nodes take it only as an order signed with the data
    /// owner's key, so this client must hold it.
    #[command(after_help = "Examples:\n  obscura delete --cluster /tmp/demo 7f3a...e1")]
    Delete {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The image id.
        id: String,
    },
    /// Print the pHash-64 of each file, as `0x%016x  FILE`.
    #[command(after_help = "Examples:\n  obscura hash photo.jpg photos/*.png")]
    Hash {
        /// Image files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

impl ImageCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            ImageCommand::Index {
                cluster,
                paths,
                label,
                json,
            } => index(&cluster, &paths, label.as_deref(), json).await,
            ImageCommand::Search {
                cluster,
                image,
                top,
                max_distance,
                exhaustive,
                json,
            } => {
                let bytes =
                    std::fs::read(&image).map_err(|e| format!("{}: {e}", image.display()))?;
                let client = client(&cluster)?;
                let out = if exhaustive {
                    client
                        .search_exhaustive(&bytes, top, max_distance.min(64))
                        .await
                } else {
                    client.search(&bytes, top, max_distance.min(64)).await
                }?;
                let labels = labels(&cluster, &client).await;
                let ids: Vec<ImageId> = out.matches.iter().map(|m| m.id).collect();
                let files = obscura_client::names::of(&cluster, &ids).unwrap_or_else(|e| {
                    eprintln!("warning: file names not read: {e}");
                    Default::default()
                });
                print_search(&out, &labels, &files, json);
                Ok(ExitCode::SUCCESS)
            }
            ImageCommand::Get {
                cluster,
                id,
                out,
                grant,
            } => {
                let id = image_id(&id)?;
                if out.is_dir() {
                    return Err(format!(
                        "--out {} is a folder: give the file to write, e.g. {}",
                        out.display(),
                        out.join(format!("{id}.png")).display()
                    )
                    .into());
                }
                let client = client(&cluster)?;
                let rebuilt = match grant {
                    Some(g) => {
                        let (expires_at, signature) = g
                            .split_once(':')
                            .and_then(|(e, s)| {
                                Some((e.parse().ok()?, obscura_tokens::keyfile::from_hex(s)?))
                            })
                            .ok_or("--grant is EXPIRY:SIGNATURE, as `obscura grant` prints it")?;
                        client.get_granted(id, expires_at, signature).await
                    }
                    None => client.get(id).await,
                }?;
                for f in &rebuilt.faults {
                    eprintln!("warning: {}", crate::error::node_fault(f));
                }
                // Written beside the target under a fresh name, readable by this user only, then
                // renamed: no half-written output, and no file or link planted by another user at a
                // predictable name receives the image.
                obscura_cluster::files::write_private_atomic(&out, &rebuilt.image)
                    .map_err(|e| e.to_string())?;
                println!(
                    "wrote {} ({})",
                    out.display(),
                    crate::size(rebuilt.image.len() as u64)
                );
                Ok(ExitCode::SUCCESS)
            }
            ImageCommand::Grant {
                cluster,
                user,
                id,
                hours,
            } => {
                let id = image_id(&id)?;
                let expires_at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    + hours.saturating_mul(3600);
                let signature = client(&cluster)?.grant(id, &user, expires_at)?;
                println!(
                    "{expires_at}:{}",
                    obscura_tokens::keyfile::to_hex(&signature)
                );
                eprintln!(
                    "{user} may fetch {id} until {} with: obscura get --cluster DIR {id} --out \
                     FILE --grant <the line above>",
                    crate::local_time(expires_at)
                );
                Ok(ExitCode::SUCCESS)
            }
            ImageCommand::Delete { cluster, id } => {
                let id = image_id(&id)?;
                let client = client(&cluster)?;
                client.delete(id).await?;
                println!("deleted {id}");
                let deleted = Transition::ImageDeleted { image: id.0 };
                let (entered, _) =
                    crate::ledger::enter(&cluster, &client, vec![deleted], false).await;
                Ok(exit(entered))
            }
            ImageCommand::Hash { files } => {
                let mut ok = true;
                for f in files {
                    match std::fs::read(&f)
                        .map_err(|e| e.to_string())
                        .and_then(|b| obscura_phash::phash64(&b).map_err(|e| e.to_string()))
                    {
                        Ok(h) => println!("{h}  {}", f.display()),
                        Err(e) => {
                            eprintln!("{}: {e}", f.display());
                            ok = false;
                        }
                    }
                }
                Ok(exit(ok))
            }
        }
    }
}

fn image_id(s: &str) -> Result<ImageId, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an image id (32 hex digits)"))
}

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            out.extend(collect_files(&entries)?);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    Ok(out)
}

/// The labels this client reads as a member of the cluster's group, after following the
/// ledger; none for a client that is no member (or cannot read the ledger, which it is told).
pub(crate) async fn labels(
    cluster: &Path,
    client: &obscura_client::Client,
) -> std::collections::BTreeMap<String, String> {
    use obscura_client::group;
    let mut g = match group::Group::load(cluster) {
        Ok(Some(g)) => g,
        Ok(None) => return Default::default(),
        Err(e) => {
            eprintln!("warning: labels: {e}");
            return Default::default();
        }
    };
    if let Err(e) = group::follow(cluster, client, &mut g).await {
        eprintln!("warning: labels: following the ledger: {e}");
    }
    g.labels
}

async fn index(
    cluster: &Path,
    paths: &[PathBuf],
    label: Option<&str>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let client = client(cluster)?;
    let files = collect_files(paths)?;
    let names: Vec<String> = files
        .iter()
        .map(|f| obscura_client::names::of_path(f))
        .collect();
    let bar = if !json && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let say = |line: String| {
        if json {
        } else if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    let path = |i: usize| files[i].display().to_string();
    let run = index_items(
        cluster,
        client,
        &names,
        |i| std::fs::read(&files[i]),
        label,
        json,
        |i, outcome, client| {
            match outcome {
                Ok(id) => {
                    say(format!("{id}  {}", path(i)));
                    // Printed, so reported: an interrupted run need not name it again.
                    if !json {
                        if let Err(e) = client.acknowledge(id) {
                            eprintln!("warning: {e}");
                        }
                    }
                }
                Err(why) => say(format!("skipped {}: {why}", path(i))),
            }
            bar.inc(1);
        },
        // Said at once: the journal no longer holds them.
        |recovered| {
            if !json {
                for id in recovered {
                    println!("{id}  (indexed by an interrupted run that did not report it)");
                }
            }
        },
    )
    .await?;
    bar.finish_and_clear();
    let recovered: Vec<String> = run.recovered.iter().map(|id| id.to_string()).collect();
    if json {
        let indexed: Vec<_> = run
            .indexed
            .iter()
            .map(|(i, id)| json!({"path": path(*i), "id": id.to_string()}))
            .collect();
        let skipped: Vec<_> = run
            .skipped
            .iter()
            .map(|(i, why)| json!({"path": path(*i), "error": why}))
            .collect();
        println!(
            "{}",
            json!({"indexed": indexed, "skipped": skipped, "recovered": recovered, "ledger": run.ledger})
        );
        run.acknowledge();
    } else {
        println!(
            "indexed {}, skipped {}",
            run.indexed.len(),
            run.skipped.len()
        );
    }
    // Nothing indexed of something asked is a failure, even when each file had its reason.
    let nothing = run.indexed.is_empty() && !run.skipped.is_empty();
    Ok(exit(!run.failed && !nothing))
}

/// What one indexing run did, item by item in the order given.
pub(crate) struct IndexRun {
    /// Each item indexed, with its image's id.
    pub(crate) indexed: Vec<(usize, ImageId)>,
    /// Each item skipped, with why (naming the servers that misbehaved, if any).
    pub(crate) skipped: Vec<(usize, String)>,
    /// Images an interrupted run committed but never reported.
    pub(crate) recovered: Vec<ImageId>,
    /// What the ledger said of the registrations (JSON).
    pub(crate) ledger: serde_json::Value,
    /// Whether the cluster failed on an item, or the ledger or the labels did not take.
    pub(crate) failed: bool,
    client: std::sync::Arc<obscura_client::Client>,
}

impl IndexRun {
    /// Count every image indexed as reported, once the caller has said so: one committed but
    /// never reported (the process killed in between) is named by the next run instead of left
    /// unnamed.
    pub(crate) fn acknowledge(&self) {
        for (_, id) in &self.indexed {
            if let Err(e) = self.client.acknowledge(*id) {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// Index items `0..names.len()`, `load(i)` reading item `i` when its turn comes and `names[i]`
/// recorded as its file: images an interrupted run left are finished first, the registrations
/// (and `label`, sealed) go into the ledger after. `each(i, outcome, client)` is called as each
/// item finishes, and `recovered` with the images an interrupted run committed and never
/// reported, as soon as they are known (the journal holds them no longer: the caller says them
/// at once). Warnings go to standard error; the ledger's progress to standard output unless
/// `quiet`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn index_items(
    cluster: &Path,
    mut client: obscura_client::Client,
    names: &[String],
    load: impl FnMut(usize) -> std::io::Result<Vec<u8>>,
    label: Option<&str>,
    quiet: bool,
    mut each: impl FnMut(usize, Result<ImageId, String>, &obscura_client::Client),
    recovered: impl FnOnce(&[ImageId]),
) -> Result<IndexRun, Failure> {
    if let Some(label) = label {
        obscura_client::group::check_label(label).map_err(|e| e.to_string())?;
        if !client.is_owner() {
            return Err(
                "--label: only the data owner seals labels (this client holds no owner key)".into(),
            );
        }
    }
    // An image counts as indexed once it is reported: one committed but never reported (this
    // process killed in between) is reported by the next run instead of left unnamed.
    client.acknowledge_reports();
    // Images of an earlier index that was interrupted are removed before new ones go in.
    let finished = client.finish_interrupted().await?;
    if !finished.removed.is_empty() {
        eprintln!(
            "removed {} image(s) left at some nodes by an interrupted index",
            finished.removed.len()
        );
    }
    recovered(&finished.recovered);
    for (id, failures) in &finished.remaining {
        let nodes: Vec<String> = failures.iter().map(|f| f.node.to_string()).collect();
        eprintln!(
            "warning: image {id} of an interrupted index is still at node(s) {}; it is removed when they are back",
            nodes.join(", ")
        );
    }
    let (mut indexed, mut skipped) = (Vec::new(), Vec::new());
    let mut failed = false;
    let client = std::sync::Arc::new(client);
    let mut named = Vec::new();
    pipeline::index_all(&client, names.len(), load, |i, outcome| {
        failed |= matches!(outcome, pipeline::Outcome::Failed(_));
        match outcome {
            pipeline::Outcome::Indexed(id) => {
                named.push((id, names[i].clone()));
                indexed.push((i, id));
                each(i, Ok(id), &client);
            }
            not => {
                let culprits = match &not {
                    pipeline::Outcome::Failed(e) => e.culprits(),
                    _ => Vec::new(),
                };
                let culprits = if culprits.is_empty() {
                    String::new()
                } else {
                    format!(" (misbehaved: {})", crate::error::names(&culprits))
                };
                let why = format!("{not}{culprits}");
                skipped.push((i, why.clone()));
                each(i, Err(why), &client);
            }
        }
    })
    .await;
    // So that searches here name the file each match came from.
    if let Err(e) = obscura_client::names::record(cluster, &named) {
        eprintln!("warning: file names not kept: {e}");
    }
    // Keepers that failed on the way, where others answered instead.
    for f in client.take_keeper_faults() {
        eprintln!("warning: {} (not used)", crate::error::keeper_fault(&f));
    }
    // Reported as they finish; listed in the order given.
    indexed.sort_by_key(|e| e.0);
    skipped.sort_by_key(|e| e.0);
    let registered = client.take_registered();
    let labels: std::collections::BTreeMap<String, String> = label
        .map(|l| {
            registered
                .iter()
                .map(|(id, _)| (id.to_string(), l.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut transitions: Vec<Transition> = registered
        .into_iter()
        .map(|(id, manifest)| Transition::ImageRegistered {
            image: id.0,
            manifest,
        })
        .collect();
    // The labels, sealed under the group's epoch key, go in with the registrations.
    let mut group = None;
    if !labels.is_empty() {
        let sealed = match obscura_client::group::owner_ready(cluster, &client).await {
            Ok(mut g) => {
                let sealed = obscura_client::group::seal_labels(&mut g, &labels);
                group = Some(g);
                sealed
            }
            Err(e) => Err(e),
        };
        match sealed {
            Ok(t) => transitions.extend(t),
            Err(e) => {
                eprintln!("error: labels not sealed: {e}");
                failed = true;
            }
        }
    }
    let (entered, ledger) = crate::ledger::enter(cluster, &client, transitions, quiet).await;
    if let (true, Some(g)) = (entered, group.as_mut()) {
        if let Err(e) = obscura_client::group::keep(g, labels) {
            eprintln!("warning: labels entered, not kept here: {e}");
        }
    }
    Ok(IndexRun {
        indexed,
        skipped,
        recovered: finished.recovered,
        ledger,
        failed: failed || !entered,
        client,
    })
}

fn print_search(
    out: &SearchOutcome,
    labels: &std::collections::BTreeMap<String, String>,
    files: &std::collections::BTreeMap<ImageId, String>,
    json: bool,
) {
    let label = |id: &ImageId| labels.get(&id.to_string());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // A keeper that failed was replaced by another: the answer stands, the operator should know.
    for f in &out.keeper_faults {
        eprintln!("warning: {} (not used)", crate::error::keeper_fault(f));
    }
    // A node that failed while enough others answered: the answer stands, the operator should
    // know.
    for f in &out.node_faults {
        eprintln!("warning: {} (not used)", crate::error::node_fault(f));
    }
    if json {
        println!(
            "{}",
            json!({
                "results": out.matches.iter().map(|m| {
                    let mut r = json!({"id": m.id.to_string(), "distance": m.distance});
                    if let Some(l) = label(&m.id) {
                        r["label"] = json!(l);
                    }
                    if let Some(f) = files.get(&m.id) {
                        r["file"] = json!(f);
                    }
                    r
                }).collect::<Vec<_>>(),
                "candidates": out.candidates,
                "timings_ms": {"tokens": ms(out.tokens), "stage1": ms(out.stage1), "stage2": ms(out.stage2), "total": ms(out.total)},
                "keeper_faults": out.keeper_faults.iter().map(|f| json!({"keeper": f.keeper, "reason": f.fault.to_string(), "misbehaved": f.fault.is_misbehaviour()})).collect::<Vec<_>>(),
                "node_faults": out.node_faults.iter().map(|f| json!({"node": f.node, "reason": f.fault.to_string(), "misbehaved": f.fault.is_misbehaviour()})).collect::<Vec<_>>(),
                "bytes": {"sent": out.bytes_sent, "received": out.bytes_received},
            })
        );
        return;
    }
    if out.matches.is_empty() {
        println!("no stored image within the distance limit");
    }
    for m in &out.matches {
        let mut line = format!("{}  distance {}", m.id, m.distance);
        if let Some(l) = label(&m.id) {
            line.push_str(&format!("  {l:?}"));
        }
        if let Some(f) = files.get(&m.id) {
            line.push_str(&format!("  {f}"));
        }
        println!("{line}");
    }
    println!(
        "{} candidates; stage 1 {:.1} ms (tokens {:.1}), stage 2 {:.1} ms, total {:.1} ms; {} sent, {} received",
        out.candidates,
        ms(out.stage1),
        ms(out.tokens),
        ms(out.stage2),
        ms(out.total),
        crate::size(out.bytes_sent),
        crate::size(out.bytes_received)
    );
}
