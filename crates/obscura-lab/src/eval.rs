//! `obscura eval`: what privacy costs in accuracy, measured against plaintext search.
//!
//! Every photo yields the 20 samples of the "medium" profile ([`crate::profile`]). All samples
//! are indexed into a temporary 6-node cluster of real node processes, then every sample queries
//! the cluster privately, in each Stage-1 mode asked for, and the same pHashes are ranked in
//! plaintext by brute-force Hamming distance with the same threshold, ranking and ties. A query's
//! positives are the other 19 samples of its photo; the query itself is left out of its results.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Error;

use obscura_sharing::manifest::ImageId;
use obscura_tokens::{min_bands, probes_per_band, stage1_is_lossless, BatchPlan};
use serde_json::{json, Value};

use crate::harness::{load_photos, photos_dir, LocalCluster, Progress, Spread};
use crate::plot::{self, Series};
use crate::profile::Transform;
use obscura_client::pipeline;

/// Largest Hamming distance a match may have (the search default).
pub const MAX_DISTANCE: u32 = 10;

/// The goal: private recall@10 at least this share of plaintext recall@10, per transform.
pub const GOAL_RATIO: f64 = 0.99;

/// How Stage-1 finds candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// Multi-probe radius: band values within this Hamming distance are looked up too.
    pub radius: u32,
    /// Lookups per band, dummies included.
    pub lookups_per_band: usize,
}

impl Mode {
    /// The mode clusters are created with (`obscura cluster init`): radius 1, 12 lookups a band.
    pub const DEFAULT: Mode = Mode {
        radius: obscura_cluster::deal::DEFAULT_PROBE_RADIUS,
        lookups_per_band: obscura_cluster::deal::DEFAULT_LOOKUPS_PER_BAND,
    };

    /// Parse `exact`, `probe1` or `probe2`.
    pub fn parse(s: &str) -> Result<Mode, Error> {
        match s {
            "exact" => Ok(Mode {
                radius: 0,
                lookups_per_band: 1,
            }),
            "probe1" => Ok(Mode::DEFAULT),
            "probe2" => Ok(Mode {
                radius: 2,
                lookups_per_band: probes_per_band(2),
            }),
            _ => Err(format!("unknown mode {s:?}: use exact, probe1 or probe2").into()),
        }
    }

    pub fn name(self) -> String {
        match self.radius {
            0 => "exact".into(),
            r => format!("probe{r}"),
        }
    }

    fn describe(self) -> String {
        let probes = probes_per_band(self.radius);
        let shape = if self.lookups_per_band > probes {
            format!(
                "{probes} probes + {} dummies",
                self.lookups_per_band - probes
            )
        } else {
            format!("{probes} probe(s)")
        };
        let default = if self == Mode::DEFAULT {
            ", the default"
        } else {
            ""
        };
        format!(
            "{}: multi-probe radius {}, {shape} per band, {} tokens per node per query{default}",
            self.name(),
            self.radius,
            8 * self.lookups_per_band
        )
    }
}

/// What `obscura eval` was asked.
pub struct EvalOptions {
    pub photos: Option<PathBuf>,
    pub out: PathBuf,
    pub json: bool,
    pub modes: Vec<Mode>,
    pub keep: bool,
    pub tokens: obscura_client::config::TokenKind,
}

struct Sample {
    photo: usize,
    transform: usize,
    bytes: Vec<u8>,
    hash: u64,
}

/// One query's ranked results (sample indices, the query left out).
type Ranking = Vec<usize>;

/// Retrieval figures of one query.
#[derive(Clone, Copy, Default)]
struct Scores {
    p: [f64; 3],
    r: [f64; 3],
    ap: f64,
}

const KS: [usize; 3] = [1, 5, 10];

fn scores(ranking: &Ranking, positive: impl Fn(usize) -> bool, positives: usize) -> Scores {
    let mut s = Scores::default();
    let mut hits = 0;
    let mut ap = 0.0;
    for (i, &j) in ranking.iter().enumerate() {
        if positive(j) {
            hits += 1;
            ap += hits as f64 / (i + 1) as f64;
        }
        for (n, &k) in KS.iter().enumerate() {
            if i + 1 == k {
                s.p[n] = hits as f64 / k as f64;
                s.r[n] = hits as f64 / positives.max(1) as f64;
            }
        }
    }
    // Lists shorter than k: the hits so far count, the missing places are misses.
    for (n, &k) in KS.iter().enumerate() {
        if ranking.len() < k {
            s.p[n] = hits as f64 / k as f64;
            s.r[n] = hits as f64 / positives.max(1) as f64;
        }
    }
    s.ap = ap / positives.max(1) as f64;
    s
}

/// Mean scores of a group of queries.
fn mean(scores: &[Scores]) -> Scores {
    let n = scores.len().max(1) as f64;
    let mut m = Scores::default();
    for s in scores {
        for i in 0..3 {
            m.p[i] += s.p[i] / n;
            m.r[i] += s.r[i] / n;
        }
        m.ap += s.ap / n;
    }
    m
}

fn scores_json(s: &Scores) -> Value {
    json!({"p_at_1": s.p[0], "p_at_5": s.p[1], "p_at_10": s.p[2],
        "r_at_1": s.r[0], "r_at_5": s.r[1], "r_at_10": s.r[2], "map": s.ap})
}

/// Everything measured for one mode.
struct ModeRun {
    mode: Mode,
    rankings: Vec<Ranking>,
    candidates: Vec<usize>,
    hits: Vec<usize>,
    stage1: Vec<f64>,
    stage2: Vec<f64>,
    total: Vec<f64>,
    sent: u64,
    received: u64,
}

/// Run the evaluation; `Ok(true)` when every mode ran without error and the default mode (when
/// run) met the goal on every transform.
pub async fn run(opt: EvalOptions) -> Result<bool, Error> {
    let progress = Progress::new(opt.json);
    let dir = photos_dir(opt.photos.as_deref())?;
    let photos = load_photos(&dir, &progress)?;
    std::fs::create_dir_all(&opt.out).map_err(|e| format!("{}: {e}", opt.out.display()))?;

    // The samples, and their pHashes for the plaintext baseline (timed: the ceiling of indexing).
    let bar = progress.bar(photos.len(), "samples");
    let mut samples = Vec::new();
    let mut hash_time = 0.0;
    for (i, p) in photos.iter().enumerate() {
        let rgb = p.decoded.to_rgb8();
        for (j, t) in Transform::ALL.iter().enumerate() {
            let bytes = t
                .apply(&p.name, &p.bytes, &rgb)
                .map_err(|e| format!("{} ({}): {e}", p.name, t.name()))?;
            let t0 = Instant::now();
            let hash = obscura_phash::phash64(&bytes)
                .map_err(|e| format!("{} ({}): {e}", p.name, t.name()))?
                .0;
            hash_time += t0.elapsed().as_secs_f64();
            samples.push(Sample {
                photo: i,
                transform: j,
                bytes,
                hash,
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let total_bytes: usize = samples.iter().map(|s| s.bytes.len()).sum();
    progress.say(&format!(
        "{} photos from {} → {} samples ({:.1} MB), {} per photo",
        photos.len(),
        dir.display(),
        samples.len(),
        total_bytes as f64 / 1e6,
        Transform::ALL.len()
    ));

    let mut cluster = LocalCluster::start("eval", opt.keep, opt.tokens)?;
    progress.say(&format!("cluster: {}", cluster.describe()));
    let outcome = measure(&mut cluster, &samples, &opt.modes, &progress).await;
    let (_scratch, stopped) = cluster.stop().await;
    let (ids, index_s, runs) = outcome?;
    if let Err(lines) = stopped {
        return Err(format!("nodes did not stop cleanly: {}", lines.join("; ")).into());
    }

    // Plaintext: brute force over the same hashes, same threshold, ranked by (distance, id).
    let t0 = Instant::now();
    let plain = plaintext_rankings(&samples, &ids, MAX_DISTANCE);
    let plain_ms = t0.elapsed().as_secs_f64() * 1e3 / samples.len() as f64;
    // And with no threshold at all, to show what the threshold itself costs.
    let unbounded = plaintext_rankings(&samples, &ids, 64);

    let report = report(
        &samples,
        &plain,
        &unbounded,
        &runs,
        IndexFigures {
            seconds: index_s,
            bytes: total_bytes,
            hash_seconds: hash_time,
        },
        plain_ms,
    );
    write_outputs(&opt.out, &report, &runs, &samples)?;
    let ok = report["ok"] == json!(true);
    if opt.json {
        println!("{report}");
    } else {
        print_report(&report);
        println!(
            "wrote {} and the plots recall.svg, latency.svg",
            opt.out.join("summary.json").display()
        );
        println!("{}", if ok { "eval passed" } else { "eval FAILED" });
    }
    Ok(ok)
}

/// Every other sample within `max_distance` of each sample, by (distance, id).
fn plaintext_rankings(samples: &[Sample], ids: &[ImageId], max_distance: u32) -> Vec<Ranking> {
    (0..samples.len())
        .map(|q| {
            let mut hits: Vec<(u32, ImageId, usize)> = samples
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != q)
                .map(|(j, s)| ((s.hash ^ samples[q].hash).count_ones(), ids[j], j))
                .filter(|&(d, _, _)| d <= max_distance)
                .collect();
            hits.sort_unstable();
            hits.into_iter().map(|(_, _, j)| j).collect()
        })
        .collect()
}

type Measured = (Vec<ImageId>, f64, Vec<ModeRun>);

/// Index every sample, then query with every sample in each mode.
async fn measure(
    cluster: &mut LocalCluster,
    samples: &[Sample],
    modes: &[Mode],
    progress: &Progress,
) -> Result<Measured, Error> {
    let client = cluster.client(None).await?;
    let bar = progress.bar(samples.len(), "index");
    let files: Vec<&[u8]> = samples.iter().map(|s| s.bytes.as_slice()).collect();
    let batch = pipeline::index_files(&client, &files, || bar.inc(1)).await;
    bar.finish_and_clear();
    if !batch.failures.is_empty() {
        let lines: Vec<String> = batch
            .failures
            .iter()
            .map(|(i, e)| format!("sample {i}: {e}"))
            .collect();
        return Err(format!("indexing failed: {}", lines.join("; ")).into());
    }
    let index_s = batch.seconds;
    let ids: Vec<ImageId> = batch.ids.into_iter().flatten().collect();
    progress.say(&format!(
        "indexed {} samples in {index_s:.2} s: {:.1} images/s",
        ids.len(),
        ids.len() as f64 / index_s
    ));
    let sample_of: HashMap<ImageId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();

    let mut runs = Vec::new();
    for &mode in modes {
        progress.say(&format!("querying in mode {}", mode.describe()));
        let plan = BatchPlan::new(mode.radius, mode.lookups_per_band).map_err(|e| e.to_string())?;
        // Nodes enforce the cluster's Stage-1 policy, so each mode is its own policy.
        cluster
            .set_policy(mode.radius, mode.lookups_per_band)
            .await?;
        let client = cluster.client(Some(plan)).await?;
        let bar = progress.bar(samples.len(), &mode.name());
        let mut run = ModeRun {
            mode,
            rankings: Vec::new(),
            candidates: Vec::new(),
            hits: Vec::new(),
            stage1: Vec::new(),
            stage2: Vec::new(),
            total: Vec::new(),
            sent: 0,
            received: 0,
        };
        for (q, s) in samples.iter().enumerate() {
            // Every match within the threshold, so recall and keep rate see the whole list.
            let out = client
                .search(&s.bytes, samples.len(), MAX_DISTANCE)
                .await
                .map_err(|e| format!("query {q} in mode {}: {e}", mode.name()))?;
            run.rankings.push(
                out.matches
                    .iter()
                    .filter_map(|m| sample_of.get(&m.id).copied())
                    .filter(|&j| j != q)
                    .collect(),
            );
            run.candidates.push(out.candidates);
            run.hits.push(out.stage1_hits);
            run.stage1.push(out.stage1.as_secs_f64() * 1e3);
            run.stage2.push(out.stage2.as_secs_f64() * 1e3);
            run.total.push(out.total.as_secs_f64() * 1e3);
            run.sent += out.bytes_sent;
            run.received += out.bytes_received;
            bar.inc(1);
        }
        bar.finish_and_clear();
        runs.push(run);
    }
    Ok((ids, index_s, runs))
}

struct IndexFigures {
    seconds: f64,
    bytes: usize,
    hash_seconds: f64,
}

/// The whole summary as JSON (what `summary.json` holds).
fn report(
    samples: &[Sample],
    plain: &[Ranking],
    unbounded: &[Ranking],
    runs: &[ModeRun],
    index: IndexFigures,
    plain_ms: f64,
) -> Value {
    let n = samples.len();
    let positive = |q: usize| move |j: usize| samples[j].photo == samples[q].photo;
    // Positives of a query: the other samples of its photo.
    let mut per_photo: HashMap<usize, usize> = HashMap::new();
    for s in samples {
        *per_photo.entry(s.photo).or_default() += 1;
    }
    let positives = |q: usize| per_photo[&samples[q].photo] - 1;
    let plain_scores: Vec<Scores> = (0..n)
        .map(|q| scores(&plain[q], positive(q), positives(q)))
        .collect();
    let unbounded_scores: Vec<Scores> = (0..n)
        .map(|q| scores(&unbounded[q], positive(q), positives(q)))
        .collect();
    let groups: Vec<(String, Vec<usize>)> = std::iter::once(("all".to_string(), (0..n).collect()))
        .chain(Transform::ALL.iter().enumerate().map(|(t, tr)| {
            (
                tr.name().to_string(),
                (0..n).filter(|&q| samples[q].transform == t).collect(),
            )
        }))
        .collect();
    let pick = |all: &[Scores], qs: &[usize]| mean(&qs.iter().map(|&q| all[q]).collect::<Vec<_>>());

    let mut modes = Vec::new();
    let mut ok = true;
    for run in runs {
        let private: Vec<Scores> = (0..n)
            .map(|q| scores(&run.rankings[q], positive(q), positives(q)))
            .collect();
        let mut per_transform = Vec::new();
        let mut goal_met = true;
        for (name, qs) in &groups {
            let (pv, pl) = (pick(&private, qs), pick(&plain_scores, qs));
            // Keep rate: of the positives plaintext finds, the share the private search finds.
            let (mut kept, mut findable) = (0usize, 0usize);
            let mut identical = 0;
            for &q in qs {
                let found: std::collections::HashSet<_> = run.rankings[q].iter().collect();
                for j in plain[q].iter().filter(|&&j| positive(q)(j)) {
                    findable += 1;
                    kept += usize::from(found.contains(j));
                }
                identical += usize::from(run.rankings[q] == plain[q]);
            }
            let ratio = if pl.r[2] > 0.0 {
                pv.r[2] / pl.r[2]
            } else {
                1.0
            };
            if name != "all" && ratio < GOAL_RATIO {
                goal_met = false;
            }
            per_transform.push(json!({
                "transform": name,
                "queries": qs.len(),
                "private": scores_json(&pv),
                "plaintext": scores_json(&pl),
                "plaintext_no_threshold": scores_json(&pick(&unbounded_scores, qs)),
                "r_at_10_ratio": ratio,
                "keep_rate": if findable > 0 { kept as f64 / findable as f64 } else { 1.0 },
                "findable_positives": findable,
                "rankings_identical_to_plaintext": identical,
            }));
        }
        if run.mode == Mode::DEFAULT {
            ok &= goal_met;
        }
        let mean_candidates = run.candidates.iter().sum::<usize>() as f64 / n as f64;
        let mean_hits = run.hits.iter().sum::<usize>() as f64 / n as f64;
        modes.push(json!({
            "mode": run.mode.name(),
            "description": run.mode.describe(),
            "radius": run.mode.radius,
            "lookups_per_band": run.mode.lookups_per_band,
            "default": run.mode == Mode::DEFAULT,
            "goal_met": goal_met,
            "stage1_lossless": stage1_is_lossless(run.mode.radius, MAX_DISTANCE),
            "min_bands": min_bands(run.mode.radius, MAX_DISTANCE),
            "stage1_hits_per_query": mean_hits,
            "candidates_per_query": mean_candidates,
            "candidate_ratio": mean_candidates / n as f64,
            "latency_ms": {
                "stage1": Spread::of(run.stage1.clone()).json(),
                "stage2": Spread::of(run.stage2.clone()).json(),
                "total": Spread::of(run.total.clone()).json(),
            },
            "bytes_per_query": {"sent": run.sent as f64 / n as f64,
                "received": run.received as f64 / n as f64},
            "transforms": per_transform,
        }));
    }
    json!({
        "profile": "medium",
        "seed": crate::profile::SEED,
        "photos": samples.iter().map(|s| s.photo).max().map_or(0, |m| m + 1),
        "samples": n,
        "transforms": Transform::ALL.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "max_distance": MAX_DISTANCE,
        "definitions": "positives of a query: the other samples of its photo; R@k = positives in the top k / all positives (so at most 10/19 at k = 10); P@k = positives in the top k / k; mAP over the ranked list within the threshold; keep rate = of the positives plaintext finds within the threshold, the share the private search finds; plaintext_no_threshold ranks every sample",
        "goal": format!("private R@10 >= {GOAL_RATIO} x plaintext R@10 for every transform"),
        "index": {
            "samples": n,
            "seconds": index.seconds,
            "images_per_s": n as f64 / index.seconds,
            "mb_per_s": index.bytes as f64 / 1e6 / index.seconds,
            "in_flight": pipeline::IN_FLIGHT, "batch_files": pipeline::BATCH_FILES,
            "plaintext_decode_hash_images_per_s": n as f64 / index.hash_seconds,
            "ratio_to_plaintext": index.hash_seconds / index.seconds,
        },
        "plaintext_scan_ms_per_query": plain_ms,
        "modes": modes,
        "ok": ok,
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn print_report(r: &Value) {
    let index = &r["index"];
    println!(
        "index: {:.1} images/s ({:.1} MB/s, batches of {}, {} in flight); plaintext decode + pHash alone: {:.1} images/s (ratio {:.2})",
        f(&index["images_per_s"]),
        f(&index["mb_per_s"]),
        index["batch_files"],
        index["in_flight"],
        f(&index["plaintext_decode_hash_images_per_s"]),
        f(&index["ratio_to_plaintext"])
    );
    for m in r["modes"].as_array().into_iter().flatten() {
        println!();
        println!("mode {}", m["description"].as_str().unwrap_or("?"));
        println!(
            "{:<15} {:>5} {:>13} {:>13} {:>13} {:>13} {:>6} {:>6} {:>9}",
            "transform",
            "n",
            "P@1 priv/pl",
            "R@5 priv/pl",
            "R@10 priv/pl",
            "mAP priv/pl",
            "ratio",
            "keep",
            "R@10 no τ"
        );
        for t in m["transforms"].as_array().into_iter().flatten() {
            let (pv, pl) = (&t["private"], &t["plaintext"]);
            let pair = |k: &str| format!("{:.3}/{:.3}", f(&pv[k]), f(&pl[k]));
            println!(
                "{:<15} {:>5} {:>13} {:>13} {:>13} {:>13} {:>6.3} {:>6.3} {:>9.3}",
                t["transform"].as_str().unwrap_or("?"),
                t["queries"],
                pair("p_at_1"),
                pair("r_at_5"),
                pair("r_at_10"),
                pair("map"),
                f(&t["r_at_10_ratio"]),
                f(&t["keep_rate"]),
                f(&t["plaintext_no_threshold"]["r_at_10"]),
            );
        }
        let lat = &m["latency_ms"];
        println!(
            "Stage-1: {:.1} images match a band, {:.1} match ≥ {} bands and go to Stage-2 ({:.1} % of stored); latency ms p50/p95: stage 1 {:.1}/{:.1}, stage 2 {:.1}/{:.1}, total {:.1}/{:.1}; {:.0} B sent, {:.0} B received per query",
            f(&m["stage1_hits_per_query"]),
            f(&m["candidates_per_query"]),
            m["min_bands"],
            100.0 * f(&m["candidate_ratio"]),
            f(&lat["stage1"]["p50"]),
            f(&lat["stage1"]["p95"]),
            f(&lat["stage2"]["p50"]),
            f(&lat["stage2"]["p95"]),
            f(&lat["total"]["p50"]),
            f(&lat["total"]["p95"]),
            f(&m["bytes_per_query"]["sent"]),
            f(&m["bytes_per_query"]["received"]),
        );
        println!(
            "goal (R@10 ≥ {GOAL_RATIO} × plaintext on every transform): {}",
            if m["goal_met"] == json!(true) {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}

/// `summary.json`, `recall.svg` and `latency.svg`.
fn write_outputs(
    out: &Path,
    report: &Value,
    runs: &[ModeRun],
    samples: &[Sample],
) -> Result<(), Error> {
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text)
            .map_err(|e| format!("{}: {e}", out.join(name).display()))
    };
    write(
        "summary.json",
        &serde_json::to_string_pretty(report).map_err(|e| e.to_string())?,
    )?;
    let colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let modes = report["modes"].as_array().cloned().unwrap_or_default();
    let categories: Vec<String> = Transform::ALL
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let r10 = |m: &Value, side: &str| -> Vec<f64> {
        m["transforms"]
            .as_array()
            .into_iter()
            .flatten()
            .skip(1)
            .map(|t| f(&t[side]["r_at_10"]))
            .collect()
    };
    let names: Vec<String> = modes
        .iter()
        .map(|m| format!("private, {}", m["mode"].as_str().unwrap_or("?")))
        .collect();
    let mut series = vec![Series {
        name: "plaintext",
        colour: "#7f7f7f",
        values: modes
            .first()
            .map(|m| r10(m, "plaintext"))
            .unwrap_or_default(),
    }];
    for (i, m) in modes.iter().enumerate() {
        series.push(Series {
            name: &names[i],
            colour: colours[i % colours.len()],
            values: r10(m, "private"),
        });
    }
    write(
        "recall.svg",
        &plot::bars(
            &format!(
                "Recall@10 per transform, private vs plaintext ({} samples, distance ≤ {MAX_DISTANCE})",
                samples.len()
            ),
            "recall@10",
            &categories,
            &series,
            1.0,
        ),
    )?;
    // The latency plot shows the default mode, or the first mode run when it was not.
    let shown = runs
        .iter()
        .find(|r| r.mode == Mode::DEFAULT)
        .or(runs.first());
    let series: Vec<Series<'_>> = shown
        .into_iter()
        .flat_map(|run| {
            [
                ("stage 1", "#1f77b4", &run.stage1),
                ("stage 2", "#2ca02c", &run.stage2),
                ("total", "#d62728", &run.total),
            ]
        })
        .map(|(name, colour, values)| Series {
            name,
            colour,
            values: values.clone(),
        })
        .collect();
    let x_max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1.0)
        .ceil();
    let mode = shown.map_or(String::new(), |r| r.mode.name());
    write(
        "latency.svg",
        &plot::histogram(
            &format!(
                "Query latency, mode {mode}, {}-node loopback cluster",
                obscura_cluster::deal::DEFAULT_NODES
            ),
            "milliseconds",
            &series,
            x_max,
            40,
        ),
    )
    .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_textbook_definitions() {
        // Positives are even numbers; 4 of them exist.
        let ranking = vec![2, 1, 4, 3, 5, 7, 9, 11, 13, 6, 8];
        let s = scores(&ranking, |j| j % 2 == 0, 4);
        assert_eq!(s.p, [1.0, 2.0 / 5.0, 3.0 / 10.0]);
        assert_eq!(s.r, [0.25, 0.5, 0.75]);
        let ap = (1.0 / 1.0 + 2.0 / 3.0 + 3.0 / 10.0 + 4.0 / 11.0) / 4.0;
        assert!((s.ap - ap).abs() < 1e-12);
    }

    #[test]
    fn short_rankings_count_missing_places_as_misses() {
        let s = scores(&vec![0], |j| j == 0, 2);
        assert_eq!(s.p, [1.0, 0.2, 0.1]);
        assert_eq!(s.r, [0.5, 0.5, 0.5]);
        assert_eq!(s.ap, 0.5);
        let empty = scores(&vec![], |_| true, 3);
        assert_eq!((empty.p, empty.r, empty.ap), ([0.0; 3], [0.0; 3], 0.0));
    }

    #[test]
    fn modes_parse_and_name_round_trip() {
        for m in ["exact", "probe1", "probe2"] {
            assert_eq!(Mode::parse(m).unwrap().name(), m);
        }
        assert!(Mode::parse("probe9").is_err());
        assert_eq!(Mode::parse("probe2").unwrap().lookups_per_band, 37);
    }
}
