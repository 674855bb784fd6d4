//! `obscura load`: searches from several clients at once and an indexing client, through the
//! library against a temporary cluster of real node and keeper processes, for a set time;
//! throughput, latency percentiles, errors, and each process's memory over the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Error;

use obscura_client::config::TokenKind;
use serde_json::{json, Value};

use crate::harness::{load_photos, percentile, photos_dir, LocalCluster, Progress};

pub struct LoadOptions {
    pub photos: Option<std::path::PathBuf>,
    pub seconds: u64,
    pub searchers: usize,
    pub json: bool,
    pub keep: bool,
}

/// The run's first fifth warms the processes up; memory is compared from its end.
const WARM_UP_SHARE: f64 = 0.2;

/// Memory is compared as the mean over a tenth of the run right after the warm-up and over the
/// last tenth: one sample falls at any moment of a burst of uploads, whose buffers are freed a
/// moment later, and would decide alone.
const LEVEL_SHARE: f64 = 0.1;

/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// What the searchers and the indexer saw.
#[derive(Default)]
struct Tally {
    searches: Vec<f64>,
    indexed: usize,
    errors: Vec<String>,
}

/// Run the load; `Ok(true)` when no request failed and every search found its photo. Whether
/// every process's memory stayed within 10 % of its size after the warm-up is reported beside
/// (a run shorter than the time the nodes' page caches take to fill shows them filling).
pub async fn run(opt: LoadOptions) -> Result<bool, Error> {
    let progress = Progress::new(opt.json);
    let photos = load_photos(&photos_dir(opt.photos.as_deref())?, &progress)?;
    let mut cluster = LocalCluster::start("load", opt.keep, TokenKind::Voprf)?;
    progress.say(&format!("cluster: {}", cluster.describe()));
    let outcome = drive(&mut cluster, &photos, &opt, &progress).await;
    let (_scratch, stopped) = cluster.stop().await;
    let report = outcome?;
    if let Err(lines) = stopped {
        return Err(format!("nodes did not stop cleanly: {}", lines.join("; ")).into());
    }
    let ok = report["ok"].as_bool().unwrap_or(false);
    if opt.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(ok)
}

async fn drive(
    cluster: &mut LocalCluster,
    photos: &[crate::harness::Photo],
    opt: &LoadOptions,
    progress: &Progress,
) -> Result<Value, Error> {
    let operator = cluster.client(None).await?;
    let files: Vec<&[u8]> = photos.iter().map(|p| p.bytes.as_slice()).collect();
    for result in operator.index_many(&files).await {
        result.map_err(|e| format!("indexing the photos: {e}"))?;
    }
    let mut searchers = Vec::new();
    for i in 0..opt.searchers {
        let querier = obscura_proto::roles::QUERIER;
        let client = cluster
            .user_client(&operator, &format!("searcher{i}"), querier)
            .await?;
        searchers.push(Arc::new(client));
    }
    progress.say(&format!(
        "{} searching clients and one indexing client for {} s…",
        opt.searchers, opt.seconds
    ));

    let queries: Arc<Vec<Vec<u8>>> = Arc::new(photos.iter().map(|p| p.bytes.clone()).collect());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in searchers.into_iter().enumerate() {
        let (queries, tally, stop) = (queries.clone(), tally.clone(), stop.clone());
        tasks.spawn(async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let query = &queries[n % queries.len()];
                n += 1;
                let t = Instant::now();
                let outcome = client.search(query, 5, 10).await;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    Ok(found) if found.matches.first().is_some_and(|m| m.distance == 0) => {
                        tally.searches.push(ms)
                    }
                    Ok(found) => tally.errors.push(format!(
                        "searcher {i}: a stored photo was not found at distance 0 ({} matches)",
                        found.matches.len()
                    )),
                    Err(e) => tally.errors.push(format!("searcher {i}: {e}")),
                }
            }
        });
    }
    {
        let (operator, queries, tally, stop) = (
            operator.clone(),
            queries.clone(),
            tally.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let outcome = operator.index(&queries[n % queries.len()]).await;
                n += 1;
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    Ok(_) => tally.indexed += 1,
                    Err(e) => tally.errors.push(format!("indexer: {e}")),
                }
            }
        });
    }

    // Memory of every process, sampled until the end.
    let run_for = Duration::from_secs(opt.seconds);
    let mut samples: Vec<(f64, Vec<(String, u64)>)> = Vec::new();
    let bar = progress.bar(opt.seconds as usize, "load");
    while started.elapsed() < run_for {
        tokio::time::sleep(SAMPLE_EVERY.min(run_for.saturating_sub(started.elapsed()))).await;
        let at = started.elapsed().as_secs_f64();
        let rss = cluster
            .memory()
            .into_iter()
            .filter_map(|(member, rss)| Some((member.to_string(), rss?)))
            .collect();
        samples.push((at, rss));
        bar.set_position(at as u64);
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    let mut latencies = tally.searches;
    latencies.sort_by(f64::total_cmp);
    let spread = |p| {
        if latencies.is_empty() {
            0.0
        } else {
            percentile(&latencies, p)
        }
    };
    let memory = memory_report(&samples);
    let flat = !memory.is_empty()
        && memory
            .iter()
            .all(|m| m["growth"].as_f64().is_some_and(|g| g <= 0.10));
    // With searchers, a run in which none finished a search is not clean; without (indexing
    // alone) there is none to finish.
    let ok = tally.errors.is_empty() && (opt.searchers == 0 || !latencies.is_empty());
    Ok(json!({
        "seconds": seconds,
        "searching_clients": opt.searchers,
        "searches": latencies.len(),
        "searches_per_s": latencies.len() as f64 / seconds,
        "latency_ms": {"p50": spread(50), "p95": spread(95), "p99": spread(99),
            "max": latencies.last().copied().unwrap_or(0.0)},
        "indexed": tally.indexed,
        "indexed_per_s": tally.indexed as f64 / seconds,
        "errors": tally.errors.len(),
        "first_errors": tally.errors.iter().take(5).collect::<Vec<_>>(),
        "memory": memory,
        "memory_flat": flat,
        "ok": ok,
    }))
}

/// Per process: resident memory just after the warm-up and at the end (each the mean over a
/// tenth of the sampled time, [`LEVEL_SHARE`], and at least three samples) and at most, and
/// how far it grew from the first to the second. A process without both levels (it stopped
/// answering, or the run was too short to sample) has no growth, so the run is not called flat.
fn memory_report(samples: &[(f64, Vec<(String, u64)>)]) -> Vec<Value> {
    let Some(((_, first), (last_at, _))) = samples.first().zip(samples.last()) else {
        return Vec::new();
    };
    let span = (last_at * LEVEL_SHARE).max(3.0 * SAMPLE_EVERY.as_secs_f64());
    let warm = last_at * WARM_UP_SHARE;
    let level = |member: &str, from: f64, to: f64| {
        let within: Vec<u64> = series(samples, member)
            .filter(|(at, _)| (from..=to).contains(at))
            .map(|(_, r)| r)
            .collect();
        (within.len() >= 3).then(|| within.iter().sum::<u64>() as f64 / within.len() as f64)
    };
    first
        .iter()
        .map(|(member, _)| {
            let after_warm_up = level(member, warm, warm + span);
            let end = level(member, last_at - span, *last_at);
            let max = series(samples, member).map(|(_, r)| r).max();
            let growth = after_warm_up
                .zip(end)
                .map(|(from, to)| to / from.max(1.0) - 1.0);
            json!({
                "process": member,
                "after_warm_up_mb": after_warm_up.map(|b| b / 1e6),
                "end_mb": end.map(|b| b / 1e6),
                "max_mb": max.map(|b| b as f64 / 1e6),
                "growth": growth,
            })
        })
        .collect()
}

/// One process's samples: (time, resident bytes).
fn series<'a>(
    samples: &'a [(f64, Vec<(String, u64)>)],
    member: &'a str,
) -> impl Iterator<Item = (f64, u64)> + 'a {
    samples
        .iter()
        .filter_map(move |(at, s)| s.iter().find(|(m, _)| m == member).map(|(_, r)| (*at, *r)))
}

fn print_report(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "{:.0} s, {} searching clients and one indexing client",
        f(&r["seconds"]),
        r["searching_clients"]
    );
    println!(
        "searches: {} ({:.1}/s); latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r["searches"],
        f(&r["searches_per_s"]),
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p95"]),
        f(&r["latency_ms"]["p99"]),
        f(&r["latency_ms"]["max"])
    );
    println!(
        "indexed: {} images ({:.1}/s)",
        r["indexed"],
        f(&r["indexed_per_s"])
    );
    println!("errors: {}", r["errors"]);
    for e in r["first_errors"].as_array().into_iter().flatten() {
        println!("  {}", e.as_str().unwrap_or_default());
    }
    println!(
        "{:<10} {:>16} {:>10} {:>10} {:>8}",
        "process", "after warm-up MB", "end MB", "max MB", "growth"
    );
    // A level the run could not sample is shown as "-".
    let mb = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    for m in r["memory"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:>16} {:>10} {:>10} {:>8}",
            m["process"].as_str().unwrap_or_default(),
            mb(&m["after_warm_up_mb"]),
            mb(&m["end_mb"]),
            mb(&m["max_mb"]),
            m["growth"]
                .as_f64()
                .map_or("-".to_string(), |g| format!("{:.1}%", g * 100.0))
        );
    }
    println!(
        "memory flat within 10 % after the warm-up: {}",
        match r["memory_flat"].as_bool() {
            Some(true) => "met",
            _ => "NOT met",
        }
    );
    println!(
        "{}",
        match r["ok"].as_bool() {
            Some(true) => "no errors",
            _ => "NOT clean: errors, or a search that missed its photo",
        }
    );
}
