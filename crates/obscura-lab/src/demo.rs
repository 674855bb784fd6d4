//! `obscura demo`: the whole system on one machine, checked.
//!
//! A temporary 6-node cluster runs as real `obscura node run` processes on loopback. The demo
//! indexes every photo, searches privately with four edited variants of each (JPEG re-encode,
//! half size, noise, brightness), reports recall and latencies, rebuilds the top match of one
//! query byte for byte, verifies every node's audit log, searches again with one node stopped,
//! and stops the nodes. Any failed check makes the exit status non-zero.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::Error;

use obscura_sharing::manifest::ImageId;
use serde_json::{json, Value};

use crate::harness::{load_photos, photos_dir, LocalCluster, Photo, Progress, Spread};
use crate::variants::Edit;
use obscura_client::pipeline;

/// Smallest recall@10 the demo accepts on the photos it is given.
const RECALL_AT_10_FLOOR: f64 = 0.9;

/// What `obscura demo` was asked.
pub struct DemoOptions {
    pub photos: Option<PathBuf>,
    pub json: bool,
    pub keep: bool,
    pub tokens: obscura_client::config::TokenKind,
}

struct QueryRow {
    query: String,
    truth: usize,
    best: Option<(ImageId, u32)>,
    in_top10: bool,
    error: Option<String>,
}

/// Run the demo; `Ok(true)` when every check passed.
pub async fn run(opt: DemoOptions) -> Result<bool, Error> {
    let progress = Progress::new(opt.json);
    let photos_dir = photos_dir(opt.photos.as_deref())?;
    let photos = load_photos(&photos_dir, &progress)?;

    // Variants first: a photo that cannot be edited fails before any node starts.
    let bar = progress.bar(photos.len(), "variants");
    let mut queries = Vec::new();
    for (i, p) in photos.iter().enumerate() {
        for (j, edit) in Edit::ALL.iter().enumerate() {
            let bytes = edit
                .apply(&p.decoded, 2025 + (i * Edit::ALL.len() + j) as u64)
                .map_err(|e| format!("{} ({}): {e}", p.name, edit.name()))?;
            queries.push((format!("{}.{}", p.name, edit.name()), i, bytes));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut cluster = LocalCluster::start("demo", opt.keep, opt.tokens)?;
    progress.say(&format!(
        "cluster: {} ({})",
        cluster.describe(),
        obscura_cluster::deal::Availability::of(
            cluster.nodes(),
            obscura_cluster::deal::DEFAULT_THRESHOLD
        )
        .map(|a| a.describe())
        .unwrap_or_default()
    ));
    let outcome = exercise(&mut cluster, &photos, queries, &progress).await;
    let (scratch, stopped) = cluster.stop().await;
    let (mut report, mut ok) = outcome?;
    let clean = stopped.is_ok();
    ok &= clean;
    report["checks"]["nodes_stopped_cleanly"] = json!(clean);
    report["ok"] = json!(ok);
    if opt.keep {
        report["kept"] = json!(scratch.dir.display().to_string());
    }
    if opt.json {
        println!("{report}");
    } else {
        for line in stopped.err().unwrap_or_default() {
            println!("{line}");
        }
        println!(
            "nodes stopped{}",
            if opt.keep {
                format!("; cluster and node logs kept in {}", scratch.dir.display())
            } else {
                String::new()
            }
        );
        println!("{}", if ok { "demo passed" } else { "demo FAILED" });
    }
    Ok(ok)
}

/// Everything done while the nodes run: index, search, rebuild, audit.
async fn exercise(
    cluster: &mut LocalCluster,
    photos: &[Photo],
    queries: Vec<(String, usize, Vec<u8>)>,
    progress: &Progress,
) -> Result<(Value, bool), Error> {
    let client = cluster.client(None).await?;

    // Attestation: each server appraised under the cluster's policy before it is sent anything.
    let attestation = attestation_check(cluster, &client, progress).await;

    // Index.
    let bar = progress.bar(photos.len(), "index");
    let files: Vec<&[u8]> = photos.iter().map(|p| p.bytes.as_slice()).collect();
    let pipeline::Indexed {
        ids,
        failures,
        seconds: index_s,
    } = pipeline::index_files(&client, &files, || bar.inc(1)).await;
    bar.finish_and_clear();
    let index_errors: Vec<String> = failures
        .iter()
        .map(|(i, e)| format!("{}: {e}", photos[*i].name))
        .collect();
    let indexed = ids.iter().filter(|i| i.is_some()).count();
    let bytes_in: usize = photos.iter().map(|p| p.bytes.len()).sum();
    progress.say(&format!(
        "indexed {indexed} of {} photos ({:.1} MB) in {:.2} s: {:.1} images/s",
        photos.len(),
        bytes_in as f64 / 1e6,
        index_s,
        indexed as f64 / index_s
    ));
    for e in &index_errors {
        progress.say(&format!("  index failed: {e}"));
    }
    let name_of: HashMap<ImageId, &str> = ids
        .iter()
        .zip(photos)
        .filter_map(|(id, p)| id.map(|id| (id, p.name.as_str())))
        .collect();

    // Search with every variant.
    let bar = progress.bar(queries.len(), "search");
    let (mut s1, mut s2, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sent, mut received, mut candidates) = (0u64, 0u64, 0usize);
    let mut rows = Vec::new();
    for (query, truth, bytes) in &queries {
        let row = match client.search(bytes, 10, 10).await {
            Ok(out) => {
                s1.push(out.stage1.as_secs_f64() * 1e3);
                s2.push(out.stage2.as_secs_f64() * 1e3);
                total.push(out.total.as_secs_f64() * 1e3);
                sent += out.bytes_sent;
                received += out.bytes_received;
                candidates += out.candidates;
                QueryRow {
                    query: query.clone(),
                    truth: *truth,
                    best: out.matches.first().map(|m| (m.id, m.distance)),
                    in_top10: ids[*truth].is_some_and(|id| out.matches.iter().any(|m| m.id == id)),
                    error: None,
                }
            }
            Err(e) => QueryRow {
                query: query.clone(),
                truth: *truth,
                best: None,
                in_top10: false,
                error: Some(e.to_string()),
            },
        };
        rows.push(row);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let correct = |r: &QueryRow| r.best.is_some_and(|(id, _)| Some(id) == ids[r.truth]);
    let n_queries = rows.len().max(1) as f64;
    let recall1 = rows.iter().filter(|r| correct(r)).count() as f64 / n_queries;
    let recall10 = rows.iter().filter(|r| r.in_top10).count() as f64 / n_queries;
    let search_errors = rows.iter().filter(|r| r.error.is_some()).count();

    if !progress.json {
        println!();
        println!(
            "{:<28} {:<22} {:>8}  result",
            "query", "best match", "distance"
        );
        for r in &rows {
            let (best, dist) = match (&r.error, r.best) {
                (Some(e), _) => (format!("error: {e}"), String::new()),
                (None, Some((id, d))) => {
                    (name_of.get(&id).unwrap_or(&"?").to_string(), d.to_string())
                }
                (None, None) => ("(none within 10)".into(), String::new()),
            };
            let verdict = if correct(r) { "right" } else { "WRONG" };
            println!("{:<28} {:<22} {:>8}  {verdict}", r.query, best, dist);
        }
        println!();
    }
    let (s1, s2, total) = (Spread::of(s1), Spread::of(s2), Spread::of(total));
    progress.say(&format!(
        "{} queries: recall@1 = {recall1:.3}, recall@10 = {recall10:.3}",
        rows.len()
    ));
    progress.say(&format!(
        "latency ms (p50 / p95): stage 1 {:.1} / {:.1}, stage 2 {:.1} / {:.1}, total {:.1} / {:.1}",
        s1.p50, s1.p95, s2.p50, s2.p95, total.p50, total.p95,
    ));
    progress.say(&format!(
        "per query: {:.0} candidates, {:.0} bytes sent, {:.0} received (all nodes together)",
        candidates as f64 / n_queries,
        sent as f64 / n_queries,
        received as f64 / n_queries
    ));

    // Rebuild the first query's top match and compare with the photo it came from.
    let rebuild = match rows.first().and_then(|r| r.best) {
        None => json!({"ok": false, "error": "the first query found nothing to rebuild"}),
        Some((id, _)) => {
            let source = ids.iter().position(|x| *x == Some(id));
            let t = Instant::now();
            match client.get(id).await {
                Ok(r) => {
                    let identical = source.is_some_and(|i| photos[i].bytes == r.image);
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    progress.say(&format!(
                        "rebuilt {} ({} bytes) from the nodes in {ms:.1} ms: {}",
                        source.map_or("?", |i| photos[i].name.as_str()),
                        r.image.len(),
                        if identical {
                            "byte-identical to the indexed file"
                        } else {
                            "DIFFERENT from the indexed file"
                        }
                    ));
                    json!({"ok": identical, "id": id.to_string(), "bytes": r.image.len(),
                        "identical": identical, "ms": ms})
                }
                Err(e) => {
                    progress.say(&format!("rebuild failed: {e}"));
                    json!({"ok": false, "id": id.to_string(), "error": e.to_string()})
                }
            }
        }
    };

    // Users with their own roles: a querier (without the owner's key) fetches what its own
    // search matched, and is refused what it did not find; another querier cannot use its
    // proof.
    let roles = roles_check(cluster, &client, &queries, &ids, progress).await;

    // Every node's audit log: chain and signed checkpoints.
    let verdicts = obscura_client::audit::verify_cluster(&cluster.dir, &client)
        .await
        .map_err(|e| e.to_string())?;
    let audit_ok = verdicts.iter().all(|v| v.outcome.is_ok());
    for v in &verdicts {
        match &v.outcome {
            Ok(r) => progress.say(&format!(
                "node {} audit log: {} entries, {} signed checkpoints, chain intact",
                v.node, r.entries, r.checkpoints
            )),
            Err(e) => progress.say(&format!("node {} audit log FAILED: {e}", v.node)),
        }
    }

    // The cluster ledger: every stored image an entry the owner signed and a majority of nodes
    // cosigned, rebuilt and checked against every node.
    let ledger = ledger_check(cluster, &client, progress).await;

    // The group key: labels sealed in the ledger, opened by members only, and a labelled
    // search; a member removed opens nothing sealed after.
    let group = group_check(cluster, &client, photos, &ids, &queries, progress).await;

    // The clean room: a function the owner approved runs on every photo in an attested worker.
    let room = room_check(cluster, &client, photos, &ids, progress).await;

    // The default cluster has a node to spare: with the last one stopped, searches go on.
    let node_down = node_down_check(cluster, &client, &queries, &ids, progress).await;

    let checks = json!({
        "all_indexed": indexed == photos.len(),
        "no_search_errors": search_errors == 0,
        "recall_at_10_at_least_0_9": recall10 >= RECALL_AT_10_FLOOR,
        "rebuild_byte_identical": rebuild["ok"] == json!(true),
        "querier_fetches_only_its_matches": roles["ok"] == json!(true),
        "audit_logs_verify": audit_ok,
        "search_with_a_node_down": node_down["ok"] == json!(true),
        "every_server_attested": attestation["ok"] == json!(true),
        "clean_room_run": room["ok"] == json!(true),
        "ledger_verifies": ledger["ok"] == json!(true),
        "labelled_search_members_only": group["ok"] == json!(true),
    });
    let ok = checks
        .as_object()
        .is_some_and(|m| m.values().all(|v| v == &json!(true)));
    let report = json!({
        "photos": photos.len(),
        "variants": Edit::ALL.iter().map(|e| e.name()).collect::<Vec<_>>(),
        "queries": rows.len(),
        "recall_at_1": recall1,
        "recall_at_10": recall10,
        "index": {"images": indexed, "bytes": bytes_in, "seconds": index_s,
            "images_per_s": indexed as f64 / index_s, "in_flight": pipeline::IN_FLIGHT, "batch_files": pipeline::BATCH_FILES,
            "errors": index_errors},
        "latency_ms": {"stage1": s1.json(), "stage2": s2.json(), "total": total.json()},
        "per_query": {"candidates": candidates as f64 / n_queries,
            "bytes_sent": sent as f64 / n_queries, "bytes_received": received as f64 / n_queries},
        "results": rows.iter().map(|r| json!({
            "query": r.query,
            "expected": photos[r.truth].name,
            "best": r.best.map(|(id, _)| name_of.get(&id).copied().unwrap_or("?")),
            "distance": r.best.map(|(_, d)| d),
            "right": correct(r),
            "in_top_10": r.in_top10,
            "error": r.error,
        })).collect::<Vec<_>>(),
        "rebuild": rebuild,
        "roles": roles,
        "node_down": node_down,
        "attestation": attestation,
        "clean_room": room,
        "ledger": ledger,
        "group": group,
        "checks": checks,
    });
    Ok((report, ok))
}

/// The images indexed, entered in the cluster ledger; then the ledger rebuilt from a node's
/// entries and every node's signed heads checked against it.
async fn ledger_check(
    cluster: &LocalCluster,
    client: &obscura_client::Client,
    progress: &Progress,
) -> Value {
    use obscura_client::ledger;
    let registered: Vec<obscura_ledger::entry::Transition> = client
        .take_registered()
        .into_iter()
        .map(
            |(id, manifest)| obscura_ledger::entry::Transition::ImageRegistered {
                image: id.0,
                manifest,
            },
        )
        .collect();
    let count = registered.len();
    let t = Instant::now();
    let appended = match ledger::append(&cluster.dir, client, registered).await {
        Ok(a) => a,
        Err(e) => {
            progress.say(&format!("ledger append FAILED: {e}"));
            return json!({"ok": false, "error": e.to_string()});
        }
    };
    let append_ms = t.elapsed().as_secs_f64() * 1e3;
    progress.say(&format!(
        "ledger: {count} registrations signed by the owner, head of {} entries cosigned by nodes \
         {:?} in {append_ms:.1} ms",
        appended.head.head.size, appended.cosigners
    ));
    let t = Instant::now();
    match ledger::verify(&cluster.dir, client, &[]).await {
        Ok(v) => {
            let verify_ms = t.elapsed().as_secs_f64() * 1e3;
            let agree = v
                .nodes
                .iter()
                .filter(|(_, r)| r.as_ref().is_ok_and(|n| n.size == v.replica.size()))
                .count();
            progress.say(&format!(
                "ledger verified in {verify_ms:.1} ms: rebuilt from node {}'s entries, every \
                 signature and rule checked, {} images registered; {agree} of {} nodes hold \
                 the same history{}",
                v.source,
                v.state().images.len(),
                v.nodes.len(),
                if v.faults.is_empty() {
                    String::new()
                } else {
                    format!("; FAULTS: {}", v.faults.join("; "))
                }
            ));
            json!({"ok": v.ok() && v.state().images.len() == count && agree == v.nodes.len(),
                   "entries": v.replica.size(), "cosigners": appended.cosigners,
                   "append_ms": append_ms, "verify_ms": verify_ms, "faults": v.faults})
        }
        Err(e) => {
            progress.say(&format!("ledger verification FAILED: {e}"));
            json!({"ok": false, "error": e.to_string()})
        }
    }
}

/// The cluster's group: an analyst's client joins (the owner's commit and Welcome in the
/// ledger), every photo's name is sealed as its label, the analyst follows the ledger and opens
/// them, and a search shows its best match's label; a client outside the group opens none; the
/// analyst removed, a label sealed after is not opened.
async fn group_check(
    cluster: &LocalCluster,
    client: &obscura_client::Client,
    photos: &[Photo],
    ids: &[Option<ImageId>],
    queries: &[(String, usize, Vec<u8>)],
    progress: &Progress,
) -> Value {
    match group_steps(cluster, client, photos, ids, queries, progress).await {
        Ok(v) => v,
        Err(e) => {
            progress.say(&format!("group FAILED: {e}"));
            json!({"ok": false, "error": e})
        }
    }
}

async fn group_steps(
    cluster: &LocalCluster,
    client: &obscura_client::Client,
    photos: &[Photo],
    ids: &[Option<ImageId>],
    queries: &[(String, usize, Vec<u8>)],
    progress: &Progress,
) -> Result<Value, String> {
    use obscura_client::group::{self, Group};
    use obscura_ledger::entry::Transition;
    let dir = &cluster.dir;
    let s = |e: group::GroupFault| e.to_string();
    let analyst_path = dir.join("analyst.group");
    let outsider_path = dir.join("outsider.group");
    let kp = group::start_at(dir, &analyst_path, "client:analyst").map_err(s)?;
    group::start_at(dir, &outsider_path, "client:outsider").map_err(s)?;
    let candidate = obscura_group::Candidate::parse(&kp).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let added = group::add(dir, client, &candidate, &obscura_group::Admitted::vouched())
        .await
        .map_err(s)?;
    let add_ms = t.elapsed().as_secs_f64() * 1e3;

    // Every photo's name, as its label, in one sealed entry.
    let labels: std::collections::BTreeMap<String, String> = ids
        .iter()
        .zip(photos)
        .filter_map(|(id, p)| {
            let name = p.name.rsplit_once('.').map_or(p.name.as_str(), |(n, _)| n);
            id.map(|id| (id.to_string(), name.to_owned()))
        })
        .collect();
    let mut owner = group::owner_ready(dir, client).await.map_err(s)?;
    let sealed = group::seal_labels(&mut owner, &labels).map_err(s)?;
    let sealed_bytes: usize = sealed
        .iter()
        .map(|t| match t {
            Transition::Sealed { message, .. } => message.len(),
            _ => 0,
        })
        .sum();
    obscura_client::ledger::append(dir, client, sealed)
        .await
        .map_err(|e| e.to_string())?;
    group::keep(&mut owner, labels.clone()).map_err(s)?;
    let (commit_bytes, welcome_bytes) = ledger_group_sizes(dir, client).await;
    progress.say(&format!(
        "group: analyst added in {add_ms:.1} ms (epoch {}, commit {commit_bytes} B, welcome \
         {welcome_bytes} B in the ledger); {} labels sealed in one entry of {sealed_bytes} B",
        added.epoch,
        labels.len()
    ));

    // The analyst follows the ledger; an outsider does too.
    let mut analyst = Group::load_from(dir, &analyst_path)
        .map_err(s)?
        .ok_or("the analyst's state is gone")?;
    group::follow(dir, client, &mut analyst).await.map_err(s)?;
    let mut outsider = Group::load_from(dir, &outsider_path)
        .map_err(s)?
        .ok_or("the outsider's state is gone")?;
    group::follow(dir, client, &mut outsider).await.map_err(s)?;

    // A labelled search, as the analyst sees it.
    let (query, truth, bytes) = queries.first().ok_or("no query")?;
    let out = client
        .search(bytes, 10, 10)
        .await
        .map_err(|e| e.to_string())?;
    let best = out.matches.first().map(|m| m.id);
    let label = best.and_then(|id| analyst.labels.get(&id.to_string()).cloned());
    let expected = labels.get(&ids[*truth].map(|i| i.to_string()).unwrap_or_default());
    progress.say(&format!(
        "labelled search as the analyst: {query} → label {:?} (the nodes hold it as ciphertext); \
         the analyst opened {} of {} labels, a client outside the group {}",
        label.as_deref().unwrap_or("(none)"),
        analyst.labels.len(),
        labels.len(),
        outsider.labels.len()
    ));

    // Removed, the analyst opens nothing sealed after.
    drop(owner);
    let removed = group::remove(dir, client, "client:analyst")
        .await
        .map_err(s)?;
    let mut owner = group::owner_ready(dir, client).await.map_err(s)?;
    let first = labels
        .iter()
        .next()
        .map(|(id, l)| (id.clone(), format!("{l} (reviewed)")));
    let later: std::collections::BTreeMap<String, String> = first.into_iter().collect();
    let sealed = group::seal_labels(&mut owner, &later).map_err(s)?;
    obscura_client::ledger::append(dir, client, sealed)
        .await
        .map_err(|e| e.to_string())?;
    group::keep(&mut owner, later.clone()).map_err(s)?;
    let before = analyst.labels.clone();
    let after = group::follow(dir, client, &mut analyst).await.map_err(s)?;
    let opened_after = usize::from(analyst.labels != before);
    progress.say(&format!(
        "group: analyst removed (epoch {}); of {} label sealed after, the analyst opened \
         {opened_after} ({} entry it cannot open)",
        removed.epoch,
        later.len(),
        after.unreadable
    ));
    let ok = label.as_ref() == expected
        && label.is_some()
        && analyst.labels.len() == labels.len()
        && outsider.labels.is_empty()
        && opened_after == 0
        && after.unreadable == 1;
    Ok(json!({"ok": ok, "add_ms": add_ms, "epoch": removed.epoch,
              "commit_bytes": commit_bytes, "welcome_bytes": welcome_bytes,
              "labels_sealed": labels.len(), "sealed_bytes": sealed_bytes,
              "member_opened": before.len(), "outsider_opened": outsider.labels.len(),
              "labelled_search": {"query": query, "label": label},
              "removed_opened_after": opened_after}))
}

/// The sizes of the first group commit and its Welcome in the ledger.
async fn ledger_group_sizes(
    dir: &std::path::Path,
    client: &obscura_client::Client,
) -> (usize, usize) {
    let Ok(v) = obscura_client::ledger::verify(dir, client, &[]).await else {
        return (0, 0);
    };
    v.entries
        .iter()
        .find_map(|e| match &e.transition {
            obscura_ledger::entry::Transition::GroupCommit {
                commit, welcome, ..
            } => Some((commit.len(), welcome.as_ref().map_or(0, Vec::len))),
            _ => None,
        })
        .unwrap_or((0, 0))
}

/// One clean-room run: the colour statistics of every indexed photo, in a worker of this build
/// that every node appraises, approved by the data owner for one run; the output opened by its
/// recipient and checked against the photos.
async fn room_check(
    cluster: &LocalCluster,
    client: &obscura_client::Client,
    photos: &[Photo],
    ids: &[Option<ImageId>],
    progress: &Progress,
) -> Value {
    let inputs: Vec<(ImageId, &Photo)> = ids
        .iter()
        .zip(photos)
        .filter_map(|(id, p)| id.map(|id| (id, p)))
        .take(obscura_room::work::MAX_INPUTS)
        .collect();
    let policy = match std::fs::read_to_string(cluster.dir.join("attestation-policy.json")) {
        Ok(p) => p,
        Err(e) => return json!({"ok": false, "error": format!("the cluster's policy: {e}")}),
    };
    let worker =
        match crate::local::Worker::start(&cluster.dir, "demo", Some(&cluster.scratch.dir)).await {
            Ok(w) => w,
            Err(e) => {
                progress.say(&format!("clean room: the worker did not start: {e}"));
                return json!({"ok": false, "error": e.to_string()});
            }
        };
    let id_list: Vec<ImageId> = inputs.iter().map(|(id, _)| *id).collect();
    let ran = crate::room::colour_stats(client, &policy, &id_list, &worker.url).await;
    worker.stop().await;
    match ran {
        Ok(run) => {
            let right = crate::room::stats_match(
                &run.output,
                &inputs.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            );
            let r = &run.report;
            let w = &run.phases_ms;
            progress.say(&format!(
                "clean room (SIMULATION worker, no TEE): the owner approved one run of \
                 colour_stats.wat over {} photos; {} nodes appraised the worker and released their \
                 shares to it; the recipient opened {}; {} nodes entered the signed result in \
                 their audit logs: attestation {:.0} ms, release {:.0} ms, worker {:.0} ms (open \
                 {:.0}, rebuild {:.0}, decode {:.0}, function {:.0})",
                inputs.len(),
                r.released_by.len(),
                if right {
                    "the right size and mean colour of each"
                } else {
                    "WRONG statistics"
                },
                r.filed_at.len(),
                r.attestation_ms,
                r.release_ms,
                r.run_ms,
                w.open,
                w.rebuild,
                w.decode,
                w.function,
            ));
            let entered = r.filed_at.len() == r.released_by.len();
            json!({"ok": right && entered && r.result.blamed.is_empty(),
                "work": obscura_tokens::keyfile::to_hex(&r.result.work),
                "inputs": inputs.len(), "released_by": r.released_by.len(), "output_right": right,
                "entered_at": r.filed_at, "simulation": true,
                "ms": {"load": r.load_ms, "attestation": r.attestation_ms, "release": r.release_ms,
                "run": r.run_ms, "worker": w}})
        }
        Err(e) => {
            progress.say(&format!("clean room FAILED: {e}"));
            json!({"ok": false, "error": e.to_string()})
        }
    }
}

/// Every node's and keeper's appraisal, said loudly when it rests on the simulation backend.
async fn attestation_check(
    cluster: &LocalCluster,
    client: &obscura_client::Client,
    progress: &Progress,
) -> Value {
    let Some(policy) = client.attestation_policy() else {
        progress.say("attestation: the cluster has no policy; servers not appraised");
        return json!({"ok": false, "policy": null, "servers": []});
    };
    let (name, version, simulation) =
        (policy.name.clone(), policy.version, policy.allow_simulation);
    progress.say(&format!("attestation policy {name:?} version {version}"));
    if simulation {
        progress.say(
            "  SIMULATION: this machine has no TEE; each appraisal below proves only that the \
             cluster's own simulation root endorsed the server running this executable",
        );
    }
    let appraisals = client.appraisals().await;
    let mut servers = Vec::new();
    for (party, outcome) in &appraisals {
        let who = match party {
            obscura_client::Party::Node(i) => format!("node {i}"),
            obscura_client::Party::Keeper(j) => format!("keeper {j}"),
        };
        match outcome {
            Ok(a) => {
                progress.say(&format!("  {who}: attested, {}", a.summary()));
                servers.push(json!({"server": who, "ok": true, "appraisal": a}));
            }
            Err(e) => {
                progress.say(&format!("  {who}: NOT attested: {e}"));
                servers.push(json!({"server": who, "ok": false, "error": e.to_string()}));
            }
        }
    }
    // The token-key shares went to each keeper only once it was appraised; nothing of them is
    // left at the data owner.
    let keepers = client.keeper_status().await.len();
    let left = cluster
        .dir
        .join(obscura_cluster::provision::PROVISION_FILE)
        .exists();
    let provisioned = cluster.provisioned.len() == keepers && !left;
    if keepers > 0 {
        progress.say(&format!(
            "  keepers {:?} took their token-key shares sealed to their appraised keys, and keep \
             them sealed to their build; {}",
            cluster.provisioned,
            if left {
                "SOME STILL WAIT at the data owner"
            } else {
                "the data owner kept none"
            }
        ));
    }
    let ok = !appraisals.is_empty() && appraisals.iter().all(|(_, a)| a.is_ok()) && provisioned;
    json!({"ok": ok, "policy": {"name": name, "version": version, "simulation": simulation},
        "servers": servers, "keepers_provisioned": cluster.provisioned, "shares_left_at_owner": left})
}

/// Stop the last node and search again with the first variant of up to four photos: each
/// still finds its photo, since a search needs fewer nodes than the default cluster has.
async fn node_down_check(
    cluster: &mut LocalCluster,
    client: &obscura_client::Client,
    queries: &[(String, usize, Vec<u8>)],
    ids: &[Option<ImageId>],
    progress: &Progress,
) -> Value {
    let x = cluster.nodes() as u8;
    if let Err(e) = cluster.stop_node(x).await {
        progress.say(&format!("stopping node {x} failed: {e}"));
        return json!({"ok": false, "node": x, "error": e.to_string()});
    }
    let picked: Vec<_> = queries.iter().step_by(Edit::ALL.len()).take(4).collect();
    let (mut found, mut ms, mut errors) = (0, Vec::new(), Vec::new());
    for (query, truth, bytes) in &picked {
        let t = Instant::now();
        match client.search(bytes, 10, 10).await {
            Ok(out) => {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                if ids[*truth].is_some_and(|id| out.matches.first().is_some_and(|m| m.id == id)) {
                    found += 1;
                }
            }
            Err(e) => errors.push(format!("{query}: {e}")),
        }
    }
    let ms = Spread::of(ms);
    progress.say(&format!(
        "node {x} stopped: {found} of {} searches still find their photo (p50 {:.1} ms)",
        picked.len(),
        ms.p50
    ));
    for e in &errors {
        progress.say(&format!("  search failed: {e}"));
    }
    json!({"ok": found == picked.len() && errors.is_empty(), "node": x,
        "searches": picked.len(), "found": found, "latency_ms": ms.json(), "errors": errors})
}

/// A querier's view: its search of the first query, the rebuild of its top match with its own
/// match proof, an image it did not find (refused by the client before any node), and another
/// querier presenting its proof (refused by every node).
async fn roles_check(
    cluster: &LocalCluster,
    operator: &obscura_client::Client,
    queries: &[(String, usize, Vec<u8>)],
    ids: &[Option<ImageId>],
    progress: &Progress,
) -> Value {
    let run = async {
        let querier = obscura_proto::roles::QUERIER;
        let analyst = cluster.user_client(operator, "analyst", querier).await?;
        let intruder = cluster.user_client(operator, "intruder", querier).await?;
        let (_, truth, bytes) = queries.first().ok_or("no query")?;
        let found = analyst.search(bytes, 10, 10).await.map_err(Error::from)?;
        let top = found.matches.first().ok_or("the analyst found nothing")?.id;
        let rebuilt = analyst.get(top).await.map_err(Error::from)?;
        let own = Some(top) == ids[*truth] && !rebuilt.image.is_empty();
        let other = ids
            .iter()
            .flatten()
            .find(|id| found.matches.iter().all(|m| m.id != **id))
            .copied();
        let unmatched_refused = match other {
            Some(id) => matches!(
                analyst.get(id).await,
                Err(obscura_client::Error::NotEntitled(_))
            ),
            None => true,
        };
        let proof = analyst.match_proof(&top).ok_or("no proof kept")?;
        let stolen_refused = intruder.get_matched(top, proof).await.is_err();
        Ok::<_, Error>((own, unmatched_refused, stolen_refused))
    };
    match run.await {
        Ok((own, unmatched, stolen)) => {
            progress.say(&format!(
                "querier \"analyst\" (no owner key): rebuilt its own match: {}; an image it did \
                 not find: {}; querier \"intruder\" with the analyst's proof: {}",
                if own { "yes" } else { "NO" },
                if unmatched { "refused" } else { "SERVED" },
                if stolen {
                    "refused by every node"
                } else {
                    "SERVED"
                },
            ));
            json!({"ok": own && unmatched && stolen, "own_match_rebuilt": own,
                "unmatched_refused": unmatched, "stolen_proof_refused": stolen})
        }
        Err(e) => {
            progress.say(&format!("querier check failed: {e}"));
            json!({"ok": false, "error": e.to_string()})
        }
    }
}
