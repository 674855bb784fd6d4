//! `obscura bench`: every speed figure beside its ceiling or plaintext baseline, measured in the
//! same run on this machine.
//!
//! In-process figures time the library code in batches of at least 50 ms and report the median
//! of seven batches. Cluster figures run a temporary 3-of-6 cluster of real node processes on
//! loopback: indexing and rebuilding go through the nodes; for the query latency at large N the
//! nodes are stopped, synthetic images (random 64-byte files with random pHashes, prepared by
//! the real client code) are written into their stores in batches, and the nodes restarted, so
//! every query still runs through the real nodes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::Error;

use obscura_client::config::TokenKind;
use obscura_client::rotation::{Moves, Phase, RotationPlan};
use obscura_client::{Client, Scan};
use obscura_mpc::node::{self, NodeSession};
use obscura_mpc::{share_hash, HashShare, Querier, SearchParams};
use obscura_sharing::bytes::{reconstruct, split, Params};
use obscura_sharing::gf256::Kernel;
use obscura_sharing::manifest::ImageId;
use obscura_sharing::rng::AesCtrRng;
use obscura_sharing::zero::deal;
use obscura_store::{NewImage, NodeStore, Store};
use obscura_tokens::{NodeTokenKeys, TokenRoot};
use rand_core::{OsRng, RngCore, SeedableRng};
use serde_json::{json, Value};

use crate::harness::{load_photos, photos_dir, LocalCluster, Progress, Spread};
use obscura_client::pipeline;

/// What `obscura bench` was asked.
pub struct BenchOptions {
    pub photos: Option<PathBuf>,
    pub json: bool,
    pub sizes: Vec<usize>,
    pub queries: usize,
    pub keep: bool,
    pub tokens: obscura_client::config::TokenKind,
    /// A PostgreSQL server: the searches at the largest N are asked in turn of a second cluster
    /// whose nodes keep their stores there.
    pub database: Option<String>,
}

/// One measured figure.
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    baseline: String,
    baseline_value: f64,
    /// `value / baseline_value` (or the inverse for times, so that higher is better).
    ratio: f64,
    goal: Option<(String, bool)>,
}

impl Figure {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "goal": self.goal.as_ref().map(|g| g.0.clone()),
            "goal_met": self.goal.as_ref().map(|g| g.1),
        })
    }
}

/// Calls of `f` per second: batches of at least 50 ms, the median of seven.
fn per_second(mut f: impl FnMut()) -> f64 {
    f();
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed() >= Duration::from_millis(50) {
            break;
        }
        iters *= 2;
    }
    let mut rates: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            iters as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[3]
}

/// Run the benchmark; `Ok(true)` when every goal was met.
pub async fn run(opt: BenchOptions) -> Result<bool, Error> {
    let progress = Progress::new(opt.json);
    let photos = load_photos(&photos_dir(opt.photos.as_deref())?, &progress)?;
    let mut figures = Vec::new();

    progress.say("sharing, hashing, tokens and Stage-2 in this process…");
    let baselines = library_figures(&photos, &mut figures)?;

    let mut cluster = LocalCluster::start("bench", opt.keep, opt.tokens)?;
    progress.say(&format!("cluster: {}", cluster.describe()));
    let outcome = cluster_figures(
        &mut cluster,
        &photos,
        &opt,
        baselines,
        &progress,
        &mut figures,
    )
    .await;
    let (_scratch, stopped) = cluster.stop().await;
    outcome?;
    if let Err(lines) = stopped {
        return Err(format!("nodes did not stop cleanly: {}", lines.join("; ")).into());
    }

    // The cluster ledger on five nodes: appends of one entry, of full pages, proofs, a whole
    // verification.
    let mut five = LocalCluster::start_with_nodes("bench-ledger", opt.keep, opt.tokens, 5)?;
    progress.say(&format!("ledger cluster: {}", five.describe()));
    let outcome = match five.client(None).await {
        Ok(client) => ledger_figures(&five, &client, &mut figures).await,
        Err(e) => Err(e),
    };
    let (_scratch, stopped) = five.stop().await;
    outcome?;
    if let Err(lines) = stopped {
        return Err(format!("nodes did not stop cleanly: {}", lines.join("; ")).into());
    }

    progress.say("the group key (MLS) in this process…");
    group_figures(&mut figures)?;

    let ok = figures.iter().all(|f| f.goal.as_ref().is_none_or(|g| g.1));
    let machine = json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "gf256_kernel": Kernel::detect().name(),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    });
    if opt.json {
        println!(
            "{}",
            json!({"machine": machine, "figures": figures.iter().map(Figure::json).collect::<Vec<_>>(), "ok": ok})
        );
    } else {
        println!();
        println!(
            "{:<52} {:>12} {:<10} {:<40} {:>12} {:>8}  goal",
            "figure", "value", "unit", "beside", "baseline", "ratio"
        );
        for f in &figures {
            let goal = match &f.goal {
                None => String::new(),
                Some((g, met)) => format!("{g}: {}", if *met { "met" } else { "NOT met" }),
            };
            println!(
                "{:<52} {:>12} {:<10} {:<40} {:>12} {:>8}  {goal}",
                f.name,
                fmt(f.value),
                f.unit,
                f.baseline,
                fmt(f.baseline_value),
                format!("{:.3}", f.ratio),
            );
        }
        println!(
            "machine: {} CPUs, GF(2^8) kernel {}",
            machine["cpus"], machine["gf256_kernel"]
        );
        println!(
            "{}",
            if ok {
                "every goal met"
            } else {
                "some goals NOT met"
            }
        );
    }
    Ok(ok)
}

fn fmt(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.3e}", v)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// In-process rates the cluster figures are set beside.
#[derive(Clone, Copy)]
struct Baselines {
    /// Decode + pHash of the test photos, images/s.
    hash_rate: f64,
    /// Reconstructing from k shares in memory, GB/s.
    rebuild_gbs: f64,
}

/// Sharing, decode + pHash, the whole cryptography of indexing, tokens and Stage-2.
fn library_figures(
    photos: &[crate::harness::Photo],
    out: &mut Vec<Figure>,
) -> Result<Baselines, Error> {
    let mut rng = AesCtrRng::from_os();
    let kernel = Kernel::detect();
    const BUF: usize = 16 * 1024;
    let src: Vec<u8> = (0..BUF).map(|i| (i * 131 + 7) as u8).collect();
    let mut dst = vec![0u8; BUF];
    let kernel_gbs = per_second(|| kernel.mul_add(&mut dst, &src, 0x53)) * BUF as f64 / 1e9;

    const SECRET: usize = 1 << 20;
    let (k, n) = (3, 5);
    let secret: Vec<u8> = (0..SECRET).map(|i| (i * 17) as u8).collect();
    let params = Params::new(k, n).map_err(|e| e.to_string())?;
    let split_gbs = per_second(|| {
        std::hint::black_box(split(&secret, params, &mut rng).ok());
    }) * SECRET as f64
        / 1e9;
    let shares = split(&secret, params, &mut rng).map_err(|e| e.to_string())?;
    let rebuild_gbs = per_second(|| {
        std::hint::black_box(reconstruct(&shares[..k], k).ok());
    }) * SECRET as f64
        / 1e9;
    let split_ceiling = kernel_gbs / (n * (k - 1)) as f64;
    let rebuild_ceiling = kernel_gbs / k as f64;
    let name = kernel.name();
    let (split_ratio, rebuild_ratio) = (split_gbs / split_ceiling, rebuild_gbs / rebuild_ceiling);
    out.push(Figure {
        name: format!("split 1 MiB, 3-of-5 (kernel {name})"),
        value: split_gbs,
        unit: "GB/s",
        baseline: format!("{name} mul-add {kernel_gbs:.2} GB/s ÷ n(k−1)"),
        baseline_value: split_ceiling,
        ratio: split_ratio,
        goal: Some(("≥ 0.5× the kernel's ceiling".into(), split_ratio >= 0.5)),
    });
    out.push(Figure {
        name: format!("reconstruct 1 MiB from 3 shares (kernel {name})"),
        value: rebuild_gbs,
        unit: "GB/s",
        baseline: format!("{name} mul-add {kernel_gbs:.2} GB/s ÷ k"),
        baseline_value: rebuild_ceiling,
        ratio: rebuild_ratio,
        goal: Some(("≥ 0.7× the kernel's ceiling".into(), rebuild_ratio >= 0.7)),
    });

    // Decode + pHash alone, then everything indexing computes, over the same photos.
    let mut i = 0;
    let hash_rate = per_second(|| {
        std::hint::black_box(obscura_phash::phash64(&photos[i % photos.len()].bytes).ok());
        i += 1;
    });
    let client = offline_client()?;
    let mut i = 0;
    let mut failed = None;
    let crypto_rate = per_second(|| {
        let bytes = &photos[i % photos.len()].bytes;
        i += 1;
        let r = obscura_phash::phash64(bytes)
            .map_err(|e| e.to_string())
            .and_then(|h| client.upload(bytes, h.0).map_err(|e| e.to_string()));
        if let Err(e) = r {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(format!("preparing an upload failed: {e}").into());
    }
    out.push(Figure {
        name: "decode + pHash (the test photos)".into(),
        value: hash_rate,
        unit: "images/s",
        baseline: "(the baseline of indexing)".into(),
        baseline_value: hash_rate,
        ratio: 1.0,
        goal: None,
    });
    let ratio = crypto_rate / hash_rate;
    out.push(Figure {
        name: "index cryptography: pHash, split, hash shares, signed manifest".into(),
        value: crypto_rate,
        unit: "images/s",
        baseline: "decode + pHash alone".into(),
        baseline_value: hash_rate,
        ratio,
        goal: Some(("≥ 0.95× decode + pHash".into(), ratio >= 0.95)),
    });

    // HMAC band tokens beside the tokens one query needs at every node.
    let keys = NodeTokenKeys::derive(&TokenRoot::random(&mut rng), 1, 1);
    let mut v = 0u8;
    let token_rate = per_second(|| {
        std::hint::black_box(keys.token(usize::from(v % 8), v));
        v = v.wrapping_add(1);
    });
    let per_query = 5 * 8 * obscura_cluster::deal::DEFAULT_LOOKUPS_PER_BAND;
    out.push(Figure {
        name: "HMAC-SHA256 band tokens".into(),
        value: token_rate,
        unit: "tokens/s",
        baseline: format!("queries/s if tokens were all (×{per_query})"),
        baseline_value: token_rate / per_query as f64,
        ratio: 1.0 / per_query as f64,
        goal: None,
    });

    voprf_figures(&mut rng, out)?;
    auth_figures(out)?;

    // Stage-2 at one node beside a plaintext Hamming scan of the same candidates: the distances
    // alone (round 0, all Stage-2 was before only winners were revealed), then every round.
    const CANDIDATES: usize = 10_000;
    let (n, t) = (
        obscura_cluster::deal::DEFAULT_NODES,
        obscura_cluster::deal::DEFAULT_THRESHOLD - 1,
    );
    let zero = deal(n, t, &mut rng).map_err(|e| e.to_string())?;
    let hashes: Vec<u64> = (0..CANDIDATES).map(|_| rng.next_u64()).collect();
    let stored: Vec<Vec<HashShare>> = hashes
        .iter()
        .map(|&h| share_hash(h, t, n, &mut rng))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let ids: Vec<ImageId> = (0..CANDIDATES as u128)
        .map(|i| ImageId(i.to_be_bytes()))
        .collect();
    let params = SearchParams {
        n,
        t,
        max_distance: 10,
        top: 10,
    };
    let (_, requests) = Querier::start(42, ids, params, &mut rng).map_err(|e| e.to_string())?;
    let per_node: Vec<Vec<Option<&HashShare>>> = (0..n)
        .map(|i| stored.iter().map(|s| Some(&s[i])).collect())
        .collect();
    let round0 = per_second(|| {
        std::hint::black_box(NodeSession::start(&zero[0], &requests[0], &per_node[0]).ok());
    }) * CANDIDATES as f64;
    // Every node's every round in this process, so the time per node is that over n.
    let all = per_second(|| {
        std::hint::black_box(node::run_all(&zero, &requests, &per_node).ok());
    }) * (CANDIDATES * n) as f64;
    let transcript = node::run_all(&zero, &requests, &per_node).map_err(|e| e.to_string())?;
    let opened: usize = transcript
        .rounds
        .iter()
        .map(|r| r[0].values.len() / CANDIDATES)
        .sum::<usize>()
        + 2;
    let q = 42u64;
    let plain = per_second(|| {
        std::hint::black_box(
            hashes
                .iter()
                .filter(|&&h| (h ^ q).count_ones() <= 10)
                .count(),
        );
    }) * CANDIDATES as f64;
    out.push(Figure {
        name: "Stage-2 distances at a node (round 0, one core)".into(),
        value: round0,
        unit: "cand/s",
        baseline: "plaintext XOR + popcount".into(),
        baseline_value: plain,
        ratio: round0 / plain,
        goal: None,
    });
    out.push(Figure {
        name: format!(
            "Stage-2 winners only at a node, τ = 10: {} rounds, {opened} values opened per candidate",
            transcript.rounds.len()
        ),
        value: all,
        unit: "cand/s",
        baseline: "the distances alone (round 0)".into(),
        baseline_value: round0,
        ratio: all / round0,
        goal: None,
    });
    Ok(Baselines {
        hash_rate,
        rebuild_gbs,
    })
}

/// A client with fresh keys that never talks to a node: for timing what indexing computes.
fn offline_client() -> Result<Client, Error> {
    let mut rng = AesCtrRng::from_os();
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let owner = ed25519_dalek::SigningKey::from_bytes(&seed);
    let roots = rustls::RootCertStore::empty();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Client::new(obscura_client::ClientParts {
        k: 3,
        storage: obscura_client::Storage::Shamir,
        t: 2,
        nodes: (1..=5).map(|i| format!("https://127.0.0.1:{i}")).collect(),
        tls,
        tokens: obscura_client::TokenParts::Hmac(TokenRoot::random(&mut rng)),
        key_version: 1,
        owner_public: owner.verifying_key(),
        capability_key: obscura_auth::capability::CapabilityKey::from(owner.verifying_key()),
        owner: Some(owner),
        keepers: (1..=3).map(|j| format!("https://127.0.0.1:{j}")).collect(),
        keeper_threshold: 2,
        plan: obscura_tokens::BatchPlan::exact(),
        timeout: Duration::from_secs(1),
        journal: None,
        // Never connects: it times the client's own work.
        attestation: None,
    })
    .map_err(Error::from)
}

/// Index `file` and time 21 rebuilds of it, each checked byte for byte.
async fn rebuild_times(client: &Client, file: &[u8]) -> Result<Spread, Error> {
    let id = client.index(file).await.map_err(Error::from)?;
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let r = client.get(id).await.map_err(Error::from)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if r.image != file {
            return Err("a rebuilt image differs from the indexed one".into());
        }
    }
    Ok(Spread::of(times))
}

/// Indexing and rebuilding through the nodes, and query latency at each N.
async fn cluster_figures(
    cluster: &mut LocalCluster,
    photos: &[crate::harness::Photo],
    opt: &BenchOptions,
    baselines: Baselines,
    progress: &Progress,
    out: &mut Vec<Figure>,
) -> Result<(), Error> {
    let client = cluster.client(None).await?;
    let hash_rate = baselines.hash_rate;

    // Index the photos three times over (45 files) through the nodes.
    let files: Vec<&[u8]> = photos
        .iter()
        .cycle()
        .take(photos.len() * 3)
        .map(|p| p.bytes.as_slice())
        .collect();
    let batch = pipeline::index_files(&client, &files, || ()).await;
    if !batch.failures.is_empty() {
        let lines: Vec<String> = batch.failures.iter().map(|(_, e)| e.to_string()).collect();
        return Err(format!("indexing failed: {}", lines.join("; ")).into());
    }
    let index_rate = files.len() as f64 / batch.seconds;
    let ratio = index_rate / hash_rate;
    out.push(Figure {
        name: format!(
            "index through {} nodes ({} files, batches of {}, {} in flight)",
            cluster.nodes(),
            files.len(),
            pipeline::BATCH_FILES,
            pipeline::IN_FLIGHT
        ),
        value: index_rate,
        unit: "images/s",
        baseline: "decode + pHash alone".into(),
        baseline_value: hash_rate,
        ratio,
        goal: Some(("≥ 0.6× decode + pHash".into(), ratio >= 0.6)),
    });

    // Rebuild a 1 MB image (random pixels, so PNG cannot shrink it) from k nodes.
    let mut rng = AesCtrRng::from_os();
    let mut pixels = vec![0u8; 580 * 580 * 3];
    rng.fill_bytes(&mut pixels);
    let img = image::RgbImage::from_raw(580, 580, pixels).ok_or("image buffer")?;
    let big = crate::profile::png(&img)?;
    let get = rebuild_times(&client, &big).await?;
    let local = big.len() as f64 / (baselines.rebuild_gbs * 1e9) * 1e3;
    out.push(Figure {
        name: format!(
            "rebuild {:.2} MB from k = 3 nodes, p50",
            big.len() as f64 / 1e6
        ),
        value: get.p50,
        unit: "ms",
        baseline: "the same interpolation in memory".into(),
        baseline_value: local,
        ratio: local / get.p50,
        goal: Some(("≤ 10 ms".into(), get.p50 <= 10.0)),
    });

    // Compact storage (`cluster init --storage compact`), from an owner who shares that way:
    // what every node together stores per image, and the same 1 MB rebuilt.
    let compact = cluster
        .client_with(|parts| parts.storage = obscura_client::Storage::Compact)
        .await?;
    let (n, k) = (cluster.nodes() as f64, 3.0);
    let (mut image_bytes, mut stored) = (0usize, 0usize);
    for file in photos.iter().map(|p| p.bytes.as_slice()).chain([&big[..]]) {
        let upload = compact.upload(file, 0).map_err(Error::from)?;
        image_bytes += file.len();
        stored += upload
            .parts
            .iter()
            .map(|p| p.image_share.len())
            .sum::<usize>();
    }
    let per_image = stored as f64 / image_bytes as f64;
    out.push(Figure {
        name: format!(
            "compact storage, all {n} nodes together ({} images)",
            photos.len() + 1
        ),
        value: per_image,
        unit: "× image",
        baseline: format!("Shamir ({n}× the image)"),
        baseline_value: n,
        ratio: n / per_image,
        goal: Some((
            format!("≤ (n/k)·1.02 = {:.2}×", n / k * 1.02),
            per_image <= n / k * 1.02,
        )),
    });
    let got = rebuild_times(&compact, &big).await?;
    out.push(Figure {
        name: format!(
            "rebuild {:.2} MB from k = 3 nodes, compact storage, p50",
            big.len() as f64 / 1e6
        ),
        value: got.p50,
        unit: "ms",
        baseline: "the same from Shamir shares".into(),
        baseline_value: get.p50,
        ratio: get.p50 / got.p50,
        goal: Some(("≤ 10 ms".into(), got.p50 <= 10.0)),
    });

    // The clean room: the colour statistics of the photos, in a worker of this build.
    room_figures(cluster, &client, photos.len(), &batch.ids, out).await?;

    // Query latency at each N: synthetic images written into the stopped nodes' stores. The
    // nodes hold the indexed files and the 1 MB image twice (Shamir and compact).
    let already = files.len() + 2;
    let mut stored: Vec<u64> = Vec::new();
    let mut sizes = opt.sizes.clone();
    sizes.sort_unstable();
    let mut last_p50 = 0.0;
    // Every (band, value) at every node: 256 hashes whose 8 bands all hold one value, asked
    // once.
    let table = if sizes.iter().any(|&n| n > already) {
        client
            .index_tokens(
                &(0..=255u8)
                    .map(|v| u64::from_be_bytes([v; 8]))
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(obscura_client::Error::from)?
    } else {
        Vec::new()
    };
    for &size in &sizes {
        let add = size.saturating_sub(stored.len() + already);
        if add > 0 {
            cluster.pause().await?;
            let t = Instant::now();
            let fresh: Vec<u64> = (0..add).map(|_| rng.next_u64()).collect();
            load_synthetic(&cluster.dir, &client, &table, &fresh, progress)?;
            stored.extend(fresh);
            progress.say(&format!(
                "wrote {add} synthetic images into each node's store in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
        }
        let t = Instant::now();
        if add > 0 {
            cluster.resume()?;
        }
        let client = cluster.client(None).await?;
        let total = stored.len() + already;
        if add > 0 {
            out.push(Figure {
                name: format!(
                    "node startup holding N = {total}: every node answering, a client logged in"
                ),
                value: t.elapsed().as_secs_f64() * 1e3,
                unit: "ms",
                baseline: "(all nodes start at once, on this machine's cores)".into(),
                baseline_value: cluster.nodes() as f64,
                ratio: 1.0,
                goal: None,
            });
        }
        let bar = progress.bar(opt.queries, &format!("N={total}"));
        let (mut lat, mut s1, mut s2, mut cands) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
        let (mut resolve, mut core) = (Vec::new(), Vec::new());
        let mut scan = Vec::new();
        for _ in 0..opt.queries {
            let q = near(&stored, &mut rng);
            let r = client.search_hash(q, 10, 10, Instant::now()).await?;
            lat.push(r.total.as_secs_f64() * 1e3);
            s1.push(r.stage1.as_secs_f64() * 1e3);
            s2.push(r.stage2.as_secs_f64() * 1e3);
            resolve.push(r.resolve.as_secs_f64() * 1e3);
            core.push((r.stage1 + r.stage2).as_secs_f64() * 1e3);
            cands += r.candidates;
            let t = Instant::now();
            let mut hits: Vec<(u32, usize)> = stored
                .iter()
                .enumerate()
                .map(|(i, &h)| ((h ^ q).count_ones(), i))
                .filter(|&(d, _)| d <= 10)
                .collect();
            hits.sort_unstable();
            hits.truncate(10);
            std::hint::black_box(&hits);
            scan.push(t.elapsed().as_secs_f64() * 1e3);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (lat, s1, s2, scan) = (
            Spread::of(lat),
            Spread::of(s1),
            Spread::of(s2),
            Spread::of(scan),
        );
        let (resolve, core) = (Spread::of(resolve), Spread::of(core));
        // What proving matches costs a search: the round that resolves the matches' ids with
        // their proofs, beside the same searches' two stages alone.
        out.push(Figure {
            name: format!(
                "query N = {total}: stages 1 + 2 alone, p50 (resolving the matches' ids: p50 {:.1} ms)",
                resolve.p50
            ),
            value: core.p50,
            unit: "ms",
            baseline: "the whole search with its proofs, p50".into(),
            baseline_value: lat.p50,
            ratio: lat.p50 / core.p50.max(1e-9),
            goal: None,
        });
        out.push(Figure {
            name: format!(
                "query N = {total}: p50 (p95 {:.1}; stage 1 {:.1}, stage 2 {:.1}; {:.0} cand.)",
                lat.p95,
                s1.p50,
                s2.p50,
                cands as f64 / opt.queries.max(1) as f64
            ),
            value: lat.p50,
            unit: "ms",
            baseline: "plaintext brute-force scan, p50".into(),
            baseline_value: scan.p50,
            ratio: scan.p50 / lat.p50,
            goal: match size {
                1_000_000.. => Some(("p50 ≤ 50 ms".to_string(), lat.p50 <= 50.0)),
                100_000.. => Some(("p50 ≤ 20 ms".to_string(), lat.p50 <= 20.0)),
                _ => None,
            },
        });
        last_p50 = lat.p50;
        memory_figure(cluster, total, out);
        // The exhaustive scan, where the nodes take it: Stage-2 over every stored image.
        if total <= obscura_proto::limits::MAX_SCAN && !stored.is_empty() {
            let runs = opt.queries.clamp(1, 10);
            let bar = progress.bar(runs, &format!("exhaustive N={total}"));
            let (mut all, mut stage2) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let r = client
                    .search_hash_with(
                        near(&stored, &mut rng),
                        10,
                        10,
                        Instant::now(),
                        Scan::Exhaustive,
                    )
                    .await
                    .map_err(|e| format!("exhaustive search: {e}"))?;
                all.push(r.total.as_secs_f64() * 1e3);
                stage2.push(r.stage2.as_secs_f64() * 1e3);
                bar.inc(1);
            }
            bar.finish_and_clear();
            let (all, stage2) = (Spread::of(all), Spread::of(stage2));
            out.push(Figure {
                name: format!(
                    "exhaustive scan N = {total}: p50 (p95 {:.1}; stage 2 {:.1})",
                    all.p95, stage2.p50
                ),
                value: all.p50,
                unit: "ms",
                baseline: "plaintext brute-force scan, p50".into(),
                baseline_value: scan.p50,
                ratio: scan.p50 / all.p50,
                goal: None,
            });
        }
    }
    if let (Some(server), false) = (&opt.database, stored.is_empty()) {
        backend_figures(cluster, &stored, server, opt, progress, out).await?;
    }
    if !stored.is_empty() {
        let total = stored.len() + already;
        node_down_figure(cluster, &stored, total, opt, last_p50, progress, out).await?;
    }
    if cluster.tokens == TokenKind::Voprf {
        let postings_indexed = index_rate * 8.0 * cluster.nodes() as f64;
        let last = (postings_indexed, last_p50);
        rotation_figures(cluster, &stored, opt, last, progress, out).await?;
    }
    Ok(())
}

/// Each node's resident memory after the queries at N images, beside its store's size: the
/// store's page cache (`storage.cache_mb`, 64 MiB by default) bounds how far it grows.
/// Five runs of the colour statistics example over the first `count` images, each approved
/// for one run, in one worker: the median time of each phase beside the whole run's.
async fn room_figures(
    cluster: &LocalCluster,
    client: &Client,
    count: usize,
    ids: &[Option<ImageId>],
    out: &mut Vec<Figure>,
) -> Result<(), Error> {
    let ids: Vec<ImageId> = ids.iter().take(count).flatten().copied().collect();
    let policy = std::fs::read_to_string(cluster.dir.join("attestation-policy.json"))
        .map_err(|e| format!("the cluster's policy: {e}"))?;
    let worker =
        crate::local::Worker::start(&cluster.dir, "bench", Some(&cluster.scratch.dir)).await?;
    let mut phases: Vec<Vec<f64>> = vec![Vec::new(); 10];
    let mut released = 0;
    let mut failed = None;
    for _ in 0..5 {
        match crate::room::colour_stats(client, &policy, &ids, &worker.url).await {
            Ok(run) => {
                let (r, w) = (&run.report, run.phases_ms);
                let whole = r.load_ms + r.attestation_ms + r.release_ms + r.run_ms;
                released = r.released_by.len();
                let rest = r.run_ms - (w.open + w.rebuild + w.decode + w.function);
                // Sealing happens after the payload's times are taken, so it is timed here on
                // the same output, padding and recipients, through the worker's own code.
                let t = Instant::now();
                let sealed =
                    obscura_room::result::seal_outputs(&run.work, &run.payload, &mut OsRng);
                let sealing = t.elapsed().as_secs_f64() * 1e3;
                if let Err(i) = sealed {
                    failed = Some(format!("sealing to recipient {i}").into());
                    break;
                }
                for (i, v) in [
                    r.load_ms,
                    r.attestation_ms,
                    r.release_ms,
                    w.open,
                    w.rebuild,
                    w.decode,
                    w.function,
                    sealing,
                    rest,
                    whole,
                ]
                .into_iter()
                .enumerate()
                {
                    phases[i].push(v);
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    worker.stop().await;
    if let Some(e) = failed {
        return Err(format!("clean-room run: {e}").into());
    }
    let p50: Vec<f64> = phases.into_iter().map(|v| Spread::of(v).p50).collect();
    let whole = p50[9];
    for (i, phase) in [
        "load (start the job's process, which measures its executable, and compile)".to_string(),
        format!("attestation ({released} nodes' challenges and the worker's evidence)"),
        format!("release ({released} nodes' appraisals, run counts and sealed shares)"),
        "open and check the shares".into(),
        "rebuild".into(),
        "decode".into(),
        "function (colour_stats.wat)".into(),
        "sealing the output (timed apart, same output and recipients)".into(),
        "the rest of the run: releases handed over, output sealed and signed".into(),
        "whole run, loading the function included".into(),
    ]
    .iter()
    .enumerate()
    {
        out.push(Figure {
            name: format!("clean room, {} images: {phase}, p50", ids.len()),
            value: p50[i],
            unit: "ms",
            baseline: "the whole run".into(),
            baseline_value: whole,
            ratio: p50[i] / whole,
            goal: None,
        });
    }
    Ok(())
}

/// The ledger at every node of the cluster: the latency of the owner's one-entry appends (the
/// nodes' heads read, the entry checked, stored durably and cosigned at each, the majority's
/// head handed back), the rate of appends of full pages, the proofs a client checks, and a
/// whole verification.
async fn ledger_figures(
    cluster: &LocalCluster,
    client: &Client,
    out: &mut Vec<Figure>,
) -> Result<(), Error> {
    use obscura_client::ledger;
    use obscura_ledger::entry::Transition;
    let nodes = cluster.nodes();
    let grant = |i: usize| Transition::Granted {
        user: format!("bench-{i}"),
        role: "querier".into(),
    };
    // Some entries first, so the single appends are not timed on an empty ledger.
    ledger::append(&cluster.dir, client, (0..256).map(grant).collect())
        .await
        .map_err(|e| e.to_string())?;
    let mut single = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        ledger::append(&cluster.dir, client, vec![grant(1000 + i)])
            .await
            .map_err(|e| e.to_string())?;
        single.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let single = Spread::of(single);
    let pages = 8;
    let t = Instant::now();
    for p in 0..pages {
        let batch = (0..256).map(|i| grant(10_000 + p * 256 + i)).collect();
        ledger::append(&cluster.dir, client, batch)
            .await
            .map_err(|e| e.to_string())?;
    }
    let rate = (pages * 256) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let v = ledger::verify(&cluster.dir, client, &[])
        .await
        .map_err(|e| e.to_string())?;
    let verify_ms = t.elapsed().as_secs_f64() * 1e3;
    if !v.ok() {
        return Err(format!("the ledger did not verify: {:?}", v.faults).into());
    }
    let size = v.replica.size();
    let consistency = v
        .replica
        .proof_between(size / 2, size)
        .map_or(0, |p| p.len())
        * 32;
    let inclusion = v.replica.inclusion(size / 2).map_or(0, |p| p.len()) * 32;
    let majority = nodes / 2 + 1;
    for (name, value, unit, baseline, baseline_value, ratio) in [
        (
            format!("ledger: one-entry append, {nodes} nodes (majority {majority}), p50"),
            single.p50,
            "ms",
            "p95".to_string(),
            single.p95,
            single.p50 / single.p95,
        ),
        (
            format!("ledger: appends of 256 entries, {nodes} nodes"),
            rate,
            "entries/s",
            "one-entry appends".to_string(),
            1e3 / single.p50,
            rate * single.p50 / 1e3,
        ),
        (
            format!("ledger: consistency proof, {} to {size} entries", size / 2),
            consistency as f64,
            "bytes",
            "entries".to_string(),
            size as f64,
            consistency as f64 / size as f64,
        ),
        (
            format!("ledger: inclusion proof of entry {} of {size}", size / 2),
            inclusion as f64,
            "bytes",
            "entries".to_string(),
            size as f64,
            inclusion as f64 / size as f64,
        ),
        (
            format!("ledger: verify {size} entries (fetch, replay, every node's heads)"),
            verify_ms,
            "ms",
            "one-entry append".to_string(),
            single.p50,
            verify_ms / single.p50,
        ),
    ] {
        out.push(Figure {
            name,
            value,
            unit,
            baseline,
            baseline_value,
            ratio,
            goal: None,
        });
    }
    Ok(())
}

/// The MLS group's cost as it grows: for groups of 2 to 512 members, what the owner's commit
/// adding one member costs (time, and the Commit and Welcome the ledger stores), what a member
/// spends processing it, and what removing one costs. Each the median of five.
fn group_figures(out: &mut Vec<Figure>) -> Result<(), Error> {
    use obscura_group::{Admitted, Candidate, Member};
    let e = |e: obscura_group::GroupError| Error::from(e.to_string());
    let client = |i: usize| -> Result<(Member, Candidate), Error> {
        let mut m = Member::new(&format!("client:m{i}")).map_err(e)?;
        let kp = m.key_package(None).map_err(e)?;
        Ok((m, Candidate::parse(&kp).map_err(e)?))
    };
    let mut owner = Member::new("client:owner").map_err(e)?;
    owner.create().map_err(e)?;
    // A member that follows every commit, to time the processing.
    let (mut witness, c) = client(0)?;
    let change = owner.add(&c, &Admitted::vouched()).map_err(e)?;
    owner.confirm().map_err(e)?;
    witness
        .receive(&change.commit, change.welcome.as_deref())
        .map_err(e)?;
    let mut size = 2;
    let mut next = 1;
    let mut first: Option<[f64; 3]> = None;
    for target in [2usize, 16, 128, 512] {
        while size < target {
            let (_, c) = client(next)?;
            next += 1;
            let change = owner.add(&c, &Admitted::vouched()).map_err(e)?;
            owner.confirm().map_err(e)?;
            witness.receive(&change.commit, None).map_err(e)?;
            size += 1;
        }
        // Five times: add one (timed), the witness processes it (timed), remove it (timed).
        let (mut add, mut process, mut remove) = (Vec::new(), Vec::new(), Vec::new());
        let (mut commit_bytes, mut welcome_bytes, mut remove_bytes) = (0, 0, 0);
        for _ in 0..5 {
            let (_, c) = client(next)?;
            let name = format!("client:m{next}");
            next += 1;
            let t = Instant::now();
            let change = owner.add(&c, &Admitted::vouched()).map_err(e)?;
            owner.confirm().map_err(e)?;
            add.push(t.elapsed().as_secs_f64() * 1e3);
            commit_bytes = change.commit.len();
            welcome_bytes = change.welcome.as_ref().map_or(0, Vec::len);
            let t = Instant::now();
            witness.receive(&change.commit, None).map_err(e)?;
            process.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let change = owner.remove(&name).map_err(e)?;
            owner.confirm().map_err(e)?;
            remove.push(t.elapsed().as_secs_f64() * 1e3);
            remove_bytes = change.commit.len();
            witness.receive(&change.commit, None).map_err(e)?;
        }
        let (add, process, remove) = (
            Spread::of(add).p50,
            Spread::of(process).p50,
            Spread::of(remove).p50,
        );
        let base = *first.get_or_insert([add, process, remove]);
        for (name, value, base) in [
            (
                format!(
                    "group: add a member to {target} (commit + welcome {} B)",
                    commit_bytes + welcome_bytes
                ),
                add,
                base[0],
            ),
            (
                format!("group: a member of {} processes that commit", target + 1),
                process,
                base[1],
            ),
            (
                format!(
                    "group: remove one of {} (commit {remove_bytes} B)",
                    target + 1
                ),
                remove,
                base[2],
            ),
        ] {
            out.push(Figure {
                name,
                value,
                unit: "ms",
                baseline: "the same in a group of 2".into(),
                baseline_value: base,
                ratio: value / base,
                goal: None,
            });
        }
    }
    Ok(())
}

fn memory_figure(cluster: &LocalCluster, total: usize, out: &mut Vec<Figure>) {
    let nodes = cluster.node_memory();
    let rss: Vec<u64> = nodes.iter().filter_map(|(_, r, _)| *r).collect();
    if rss.is_empty() {
        return; // no /proc here
    }
    let mean = rss.iter().sum::<u64>() as f64 / rss.len() as f64;
    let max = *rss.iter().max().expect("not empty") as f64;
    let store = nodes.iter().map(|(_, _, s)| *s as f64).sum::<f64>() / nodes.len() as f64;
    out.push(Figure {
        name: format!(
            "node memory N = {total}: resident, mean of {} nodes (max {:.1} MB; {:.0} bytes per image; store {:.0} bytes per image)",
            rss.len(),
            max / 1e6,
            mean / total as f64,
            store / total as f64
        ),
        value: mean / 1e6,
        unit: "MB",
        baseline: "the node's store file".into(),
        baseline_value: store / 1e6,
        ratio: mean / store.max(1.0),
        goal: (total >= 1_000_000).then(|| ("≤ 1 GB per node".to_string(), max <= 1e9)),
    });
}

/// Search latency with the last node stopped (the default cluster has a node to spare), beside
/// the same run's latency with every node up; then every node is started again.
async fn node_down_figure(
    cluster: &mut LocalCluster,
    stored: &[u64],
    total: usize,
    opt: &BenchOptions,
    all_up_p50: f64,
    progress: &Progress,
    out: &mut Vec<Figure>,
) -> Result<(), Error> {
    let client = cluster.client(None).await?;
    let x = cluster.nodes() as u8;
    cluster.stop_node(x).await?;
    let queries = opt.queries.min(50);
    let bar = progress.bar(queries, &format!("node {x} down"));
    let mut rng = AesCtrRng::from_os();
    let mut lat = Vec::new();
    for _ in 0..queries {
        let r = client
            .search_hash(near(stored, &mut rng), 10, 10, Instant::now())
            .await
            .map_err(|e| format!("search with node {x} down: {e}"))?;
        lat.push(r.total.as_secs_f64() * 1e3);
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Back to every node: stop the rest, start them all.
    cluster.pause().await?;
    cluster.resume()?;
    let lat = Spread::of(lat);
    out.push(Figure {
        name: format!(
            "query N = {total}, node {x} of {} down: p50 (p95 {:.1})",
            cluster.nodes(),
            lat.p95
        ),
        value: lat.p50,
        unit: "ms",
        baseline: "every node up, p50".into(),
        baseline_value: all_up_p50,
        ratio: all_up_p50 / lat.p50,
        goal: None,
    });
    Ok(())
}

/// A stored hash with 0..=6 bits flipped, so real matches exist.
fn near(stored: &[u64], rng: &mut AesCtrRng) -> u64 {
    let mut q = stored[(rng.next_u64() % stored.len() as u64) as usize];
    for _ in 0..rng.next_u32() % 7 {
        q ^= 1 << (rng.next_u32() % 64);
    }
    q
}

/// A key rotation of the whole cluster at its largest size: postings moved per second, and
/// query latency half-way, while both versions are served.
async fn rotation_figures(
    cluster: &mut LocalCluster,
    stored: &[u64],
    opt: &BenchOptions,
    (postings_indexed, query_p50): (f64, f64),
    progress: &Progress,
    out: &mut Vec<Figure>,
) -> Result<(), Error> {
    let config = obscura_client::config::read_config(&cluster.dir).map_err(|e| e.to_string())?;
    let client = cluster.client(None).await?;
    let plan = RotationPlan::next_for(&config, &mut rand_core::OsRng).map_err(|e| e.to_string())?;
    let e = Error::from;
    let to = plan.to;
    let Ok(Phase::Planned(planned)) = Phase::of(plan, config.key_version) else {
        return Err("a fresh plan is of the clients' version".into());
    };
    let mut rotation = planned
        .rekey_keepers(&client)
        .await
        .map_err(e)?
        .begin(&client)
        .await
        .map_err(e)?;
    let total: u64 = rotation.began().iter().map(|r| r.total).sum();
    // About eight steps, so that queries can be timed half-way.
    let step = (total / rotation.began().len().max(1) as u64 / 8).clamp(100, 5000) as u32;
    let bar = progress.bar(total as usize, "rotate");
    let (mut moving, mut halfway) = (Duration::ZERO, None);
    let mut rng = AesCtrRng::from_os();
    let (moved_all, postings) = loop {
        let t = Instant::now();
        rotation = rotation.step(&client, step).await.map_err(e)?;
        moving += t.elapsed();
        let moved: u64 = rotation.state().iter().map(|r| r.moved).sum();
        bar.set_position(moved);
        let postings = rotation.state().iter().map(|r| r.postings).sum::<u64>();
        rotation = match rotation.all_moved() {
            Moves::Done(all) => break (all, postings),
            Moves::Left(still) => still,
        };
        if halfway.is_none() && moved * 2 >= total && !stored.is_empty() {
            let mut lat = Vec::new();
            for _ in 0..opt.queries.min(50) {
                let r = client
                    .search_hash(near(stored, &mut rng), 10, 10, Instant::now())
                    .await
                    .map_err(e)?;
                lat.push(r.total.as_secs_f64() * 1e3);
            }
            halfway = Some(Spread::of(lat));
        }
    };
    bar.finish_and_clear();
    moved_all
        .switch(&cluster.dir)
        .map_err(e)?
        .finish(&client)
        .await
        .map_err(e)?;
    let rate = postings as f64 / moving.as_secs_f64().max(1e-9);
    progress.say(&format!(
        "rotated {total} image records ({postings} postings) to key version {} in {:.2} s",
        to,
        moving.as_secs_f64()
    ));
    out.push(Figure {
        name: format!("key rotation: postings moved ({total} records, steps of {step})"),
        value: rate,
        unit: "postings/s",
        baseline: "postings written by indexing".into(),
        baseline_value: postings_indexed,
        ratio: rate / postings_indexed,
        goal: None,
    });
    if let Some(h) = halfway {
        out.push(Figure {
            name: format!(
                "query half-way through the rotation: p50 (p95 {:.1})",
                h.p95
            ),
            value: h.p50,
            unit: "ms",
            baseline: "the same query before the rotation, p50".into(),
            baseline_value: query_p50,
            ratio: query_p50 / h.p50,
            goal: None,
        });
    }
    Ok(())
}

/// The searches at the largest N asked in turn of the redb cluster and of a second cluster whose
/// nodes keep their stores in PostgreSQL on `server`, loaded with the same synthetic hashes: both
/// see the same machine at the same moments, so the ratio holds whatever else the machine does.
async fn backend_figures(
    redb: &mut LocalCluster,
    stored: &[u64],
    server: &str,
    opt: &BenchOptions,
    progress: &Progress,
    out: &mut Vec<Figure>,
) -> Result<(), Error> {
    let mut pg = LocalCluster::start_on(
        "bench-pg",
        opt.keep,
        redb.tokens,
        redb.nodes(),
        Some(server),
    )?;
    progress.say(&format!("PostgreSQL cluster: {}", pg.describe()));
    let outcome = side_by_side(redb, &mut pg, stored, opt, progress, out).await;
    let (_scratch, stopped) = pg.stop().await;
    outcome?;
    stopped.map_err(|lines| format!("nodes did not stop cleanly: {}", lines.join("; ")).into())
}

async fn side_by_side(
    redb: &mut LocalCluster,
    pg: &mut LocalCluster,
    stored: &[u64],
    opt: &BenchOptions,
    progress: &Progress,
    out: &mut Vec<Figure>,
) -> Result<(), Error> {
    let client = pg.client(None).await?;
    let table = client
        .index_tokens(
            &(0..=255u8)
                .map(|v| u64::from_be_bytes([v; 8]))
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(obscura_client::Error::from)?;
    pg.pause().await?;
    let t = Instant::now();
    load_synthetic(&pg.dir, &client, &table, stored, progress)?;
    progress.say(&format!(
        "wrote {} synthetic images into each node's database in {:.1} s",
        stored.len(),
        t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    pg.resume()?;
    let on_pg = pg.client(None).await?;
    let startup = t.elapsed().as_secs_f64() * 1e3;
    let on_redb = redb.client(None).await?;
    let mut rng = AesCtrRng::from_os();
    let bar = progress.bar(opt.queries, "redb and PostgreSQL in turn");
    let (mut a, mut b, mut s1, mut s2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..opt.queries {
        let q = near(stored, &mut rng);
        // Each asked first every other time.
        let order = if i % 2 == 0 {
            [&on_redb, &on_pg]
        } else {
            [&on_pg, &on_redb]
        };
        for c in order {
            let r = c.search_hash(q, 10, 10, Instant::now()).await?;
            let ms = r.total.as_secs_f64() * 1e3;
            if std::ptr::eq(c, &on_pg) {
                b.push(ms);
                s1.push(r.stage1.as_secs_f64() * 1e3);
                s2.push(r.stage2.as_secs_f64() * 1e3);
            } else {
                a.push(ms);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (a, b, s1, s2) = (Spread::of(a), Spread::of(b), Spread::of(s1), Spread::of(s2));
    out.push(Figure {
        name: format!(
            "PostgreSQL stores: query N = {}: p50 (p95 {:.1}; stage 1 {:.1}, stage 2 {:.1})",
            stored.len(),
            b.p95,
            s1.p50,
            s2.p50
        ),
        value: b.p50,
        unit: "ms",
        baseline: "redb stores, the same searches in turn, p50".into(),
        baseline_value: a.p50,
        ratio: a.p50 / b.p50,
        goal: Some(("≤ 1.5× redb".to_string(), b.p50 <= 1.5 * a.p50)),
    });
    out.push(Figure {
        name: format!(
            "PostgreSQL stores: node startup holding N = {}, every node answering",
            stored.len()
        ),
        value: startup,
        unit: "ms",
        baseline: "(all nodes start at once, on this machine's cores)".into(),
        baseline_value: pg.nodes() as f64,
        ratio: 1.0,
        goal: None,
    });
    Ok(())
}

/// Write synthetic images of `hashes` into every node's store (nodes stopped), exactly as the
/// nodes would store them after prepare and commit: all of them made first, then written in id
/// order in transactions of `BATCH`. The stores are written at once, one thread each, with a
/// page cache of 1 GiB each (the nodes are stopped, so the memory is free); databases are
/// vacuumed after, as after any bulk load.
fn load_synthetic(
    cluster: &std::path::Path,
    client: &Client,
    table: &[Vec<obscura_client::IndexTokens>],
    hashes: &[u64],
    progress: &Progress,
) -> Result<(), Error> {
    let count = hashes.len();
    // Large transactions: two syncs each per store.
    const BATCH: usize = 20_000;
    let options = obscura_store::StoreOptions {
        cache_bytes: 1 << 30,
        ..Default::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Every image first, then written in id order: each transaction then lands in a key range
    // of its own, touching only the pages of that range, where batches of random ids would
    // each rewrite nearly every page of a large store.
    let mut rng = AesCtrRng::from_os();
    let made = progress.bar(count, "prepare");
    let mut uploads = Vec::with_capacity(count);
    for &hash in hashes {
        let mut file = [0u8; 64];
        rng.fill_bytes(&mut file);
        uploads.push(client.upload(&file, hash)?);
        made.inc(1);
    }
    made.finish_and_clear();
    uploads.sort_unstable_by_key(|u| u.id);
    // The stores are opened, written and closed on a thread of their own: a database
    // connection blocks on a runtime of its own, which cannot run on an async worker.
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(), Error> {
                let mut stores: Vec<Box<dyn NodeStore>> = Vec::new();
                let mut databases = Vec::new();
                for (node, config) in crate::local::node_configs(cluster)? {
                    let text =
                        std::fs::read(&config).map_err(|e| format!("{}: {e}", config.display()))?;
                    let c: obscura_cluster::node::NodeConfig = serde_json::from_slice(&text)
                        .map_err(|e| format!("{}: {e}", config.display()))?;
                    stores.push(match &c.database {
                        Some(url) => {
                            databases.push(url.clone());
                            Box::new(
                                obscura_store::PgStore::open(url, node)
                                    .map_err(|e| e.to_string())?,
                            )
                        }
                        None => {
                            let path = config.parent().unwrap_or(cluster).join(&c.files.store);
                            Box::new(
                                Store::open_with(&path, node, options)
                                    .map_err(|e| format!("{}: {e}", path.display()))?,
                            )
                        }
                    });
                }
                let bar = progress.bar(count, "load");
                for batch in uploads.chunks(BATCH) {
                    std::thread::scope(|scope| {
                        let writers: Vec<_> = stores
                            .iter()
                            .enumerate()
                            .map(|(i, store)| {
                                scope.spawn(move || write_synthetic(&**store, i, batch, table, now))
                            })
                            .collect();
                        writers.into_iter().try_for_each(|w| {
                            w.join()
                                .map_err(|_| "a store writer panicked".to_string())?
                        })
                    })?;
                    bar.inc(batch.len() as u64);
                }
                bar.finish_and_clear();
                drop(stores);
                for url in &databases {
                    obscura_store::pg::vacuum(url).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .join()
            .map_err(|_| Error::from("a store writer panicked".to_string()))?
    })
}

/// One batch of synthetic images into node `i + 1`'s store: prepared and committed.
fn write_synthetic(
    store: &dyn NodeStore,
    i: usize,
    uploads: &[obscura_client::Upload],
    table: &[Vec<obscura_client::IndexTokens>],
    now: u64,
) -> Result<(), Error> {
    // Token of band b at node i + 1: the table row of the band's value.
    let at = |u: &obscura_client::Upload, b: usize| &table[usize::from(u.hash.to_be_bytes()[b])][i];
    let elements: Vec<Option<[[u8; 32]; 8]>> = uploads
        .iter()
        .map(|u| {
            at(u, 0)
                .elements
                .map(|_| std::array::from_fn(|b| at(u, b).elements.expect("all or none")[b]))
        })
        .collect();
    let images: Vec<NewImage<'_>> = uploads
        .iter()
        .zip(&elements)
        .map(|(u, e)| NewImage {
            id: u.id,
            manifest: &u.manifest,
            image_share: &u.parts[i].image_share,
            hash_share: &u.parts[i].hash_share,
            tokens: std::array::from_fn(|b| at(u, b).tokens[b]),
            key_version: 1,
            elements: e.as_ref(),
            retired_tokens: None,
        })
        .collect();
    store
        .prepare_many(&images, now)
        .map_err(|e| e.to_string())?;
    let ids: Vec<ImageId> = uploads.iter().map(|u| u.id).collect();
    store
        .commit_many(&ids, now)
        .map_err(|e| e.to_string().into())
}

/// A keeper's cost per token beside one scalar multiplication, and a client's cost for the
/// tokens of one search (72 probes under the cluster key, 5 nodes' tokens, T = 2), all on one core.
/// What authorisation costs per request: a node's check of a capability and a request
/// signature, a client's request signature, a node's commitment and signature over a Stage-2
/// answer, and a node's check of a match proof, each beside an Ed25519 verification.
fn auth_figures(out: &mut Vec<Figure>) -> Result<(), Error> {
    use ed25519_dalek::{Signer, SigningKey, Verifier};
    use obscura_auth::capability::{self, authenticate, CapabilityKey, Holder};
    use obscura_auth::matching::{self, Answered, KeptAnswer, MatchPolicy};
    use obscura_proto::{Capability, Limits, NodeBody, Request, SignedCapability};
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
    let group = SigningKey::generate(&mut rng);
    let key = CapabilityKey::from(group.verifying_key());
    let holder_key = SigningKey::generate(&mut rng);
    let now = 1_800_000_000;
    let cap = Capability {
        id: [1; 16],
        user: "bench".into(),
        roles: obscura_proto::roles::QUERIER,
        holder: holder_key.verifying_key().to_bytes(),
        issued_at: now,
        expires_at: now + 3600,
        limits: Limits {
            queries_per_hour: 1,
            fetches_per_hour: 1,
        },
    };
    let body = capability::encode(&cap);
    let signature = group
        .sign(&capability::signing_message(&body))
        .to_bytes()
        .to_vec();
    let holder = Holder::new(holder_key, SignedCapability { body, signature }, &key, now)
        .map_err(|e| e.to_string())?;
    let mut req = Request {
        request_id: [2; 16],
        timestamp: now,
        body: NodeBody::Lookup {
            key_version: 1,
            query: [3; 16],
            issued: now,
            tokens: vec![[4; 16]; 96],
        },
        auth: None,
    };
    let sign_rate = per_second(|| holder.sign(1, std::hint::black_box(&mut req)));
    let check_rate = per_second(|| {
        std::hint::black_box(authenticate(&req, 1, &key, now, 120).is_ok());
    });
    let message = [5u8; 64];
    let sig = group.sign(&message);
    let verify_rate = per_second(|| {
        std::hint::black_box(group.verifying_key().verify(&message, &sig).is_ok());
    });
    out.push(Figure {
        name: "node: check a request's capability and signature".into(),
        value: 1e6 / check_rate,
        unit: "µs",
        baseline: "one Ed25519 verification, µs".into(),
        baseline_value: 1e6 / verify_rate,
        ratio: check_rate / verify_rate,
        goal: None,
    });
    out.push(Figure {
        name: "client: sign a request (96-token lookup) for a node".into(),
        value: 1e6 / sign_rate,
        unit: "µs",
        baseline: "one Ed25519 verification, µs".into(),
        baseline_value: 1e6 / verify_rate,
        ratio: sign_rate / verify_rate,
        goal: None,
    });
    // Five nodes' signed answers for 20 candidates, and a proof of one of them.
    let nodes: Vec<SigningKey> = (0..5).map(|_| SigningKey::generate(&mut rng)).collect();
    let handles: Vec<[u8; 16]> = (0..20u8).map(|i| [i; 16]).collect();
    let values: Vec<Option<[u32; 2]>> = (0..20).map(|i| Some([i * 7, 0])).collect();
    let answered = |node| Answered {
        node,
        user: "bench",
        query_id: &[3; 16],
        issued: now,
    };
    let answer_rate = per_second(|| {
        std::hint::black_box(matching::sign_answer(
            &nodes[0],
            &answered(1),
            0,
            &handles,
            &values,
            &mut rand_core::OsRng,
        ));
    });
    let kept: Vec<KeptAnswer> = nodes
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let s = matching::sign_answer(
                k,
                &answered(i as u8 + 1),
                0,
                &handles,
                &values,
                &mut rand_core::OsRng,
            );
            KeptAnswer {
                node: i as u8 + 1,
                values: values.clone(),
                answer_key: s.answer_key,
                signature: s.signature,
            }
        })
        .collect();
    let proof = matching::prove([3; 16], now, 0, &handles, &kept, 7);
    let policy = MatchPolicy {
        node_keys: nodes.iter().map(SigningKey::verifying_key).collect(),
        t: 2,
        max_distance: u32::MAX,
        window_s: 3600,
    };
    let proof_rate = per_second(|| {
        std::hint::black_box(matching::verify(&proof, "bench", &policy, now).is_ok());
    });
    // The relayed openings a node checks in the busiest round: 2t + 1 nodes', 1,000 candidates
    // with the widest round's values each (τ = 10).
    let width = obscura_mpc::node::widest_opening(10);
    let context = [9u8; 32];
    let relayed: Vec<obscura_proto::WireOpened> = nodes
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let opened = obscura_mpc::Opened {
                node: i as u8 + 1,
                round: 1,
                values: (0..1000 * width as u32)
                    .map(|v| Some(obscura_sharing::field::Fp::from(v)))
                    .collect(),
            };
            matching::sign_opened(k, &answered(i as u8 + 1), &context, 10, &opened)
        })
        .collect();
    let node_keys: Vec<_> = nodes.iter().map(SigningKey::verifying_key).collect();
    let relay_rate = per_second(|| {
        std::hint::black_box(
            matching::verify_openings(&relayed, &answered(1), &context, 10, &node_keys).is_ok(),
        );
    });
    out.push(Figure {
        name: format!(
            "node: check 5 relayed openings of a round (1,000 candidates × {width} values)"
        ),
        value: 1e6 / relay_rate,
        unit: "µs",
        baseline: "one Ed25519 verification, µs".into(),
        baseline_value: 1e6 / verify_rate,
        ratio: relay_rate / verify_rate,
        goal: None,
    });
    out.push(Figure {
        name: "node: commit to and sign a Stage-2 answer (20 candidates)".into(),
        value: 1e6 / answer_rate,
        unit: "µs",
        baseline: "one Ed25519 verification, µs".into(),
        baseline_value: 1e6 / verify_rate,
        ratio: answer_rate / verify_rate,
        goal: None,
    });
    out.push(Figure {
        name: "node: check a match proof (2t + 1 = 5 signed openings)".into(),
        value: 1e6 / proof_rate,
        unit: "µs",
        baseline: "one Ed25519 verification, µs".into(),
        baseline_value: 1e6 / verify_rate,
        ratio: proof_rate / verify_rate,
        goal: None,
    });
    // The query check: what a node opens and signs (first round), and what it verifies before
    // answering (every node's signed check, then the two checks).
    use obscura_mpc::check::{self, CheckCoin};
    let zero = obscura_sharing::zero::deal(5, 2, &mut rng).map_err(|e| e.to_string())?;
    let shares = obscura_mpc::share_hash(0x0123_4567_89ab_cdef, 2, 5, &mut rng)
        .map_err(|e| e.to_string())?;
    let digests: Vec<[u8; 32]> = shares
        .iter()
        .map(|s| matching::share_digest(&s.to_bytes()))
        .collect();
    let coin_key = [9u8; 32];
    let open_rate = per_second(|| {
        let own = matching::share_digest(&shares[0].to_bytes());
        std::hint::black_box(own == digests[0]);
        let scan = matching::scan_of(&handles);
        let context =
            matching::check_context(&matching::query_context(&[3; 16], now, &scan), &digests);
        let coin = CheckCoin::derive(&coin_key, &context);
        let c = check::check_share(&zero[0], &coin, &context, &shares[0]).expect("node 1");
        std::hint::black_box(matching::sign_check(&nodes[0], &answered(1), &context, &c));
    });
    let context = matching::check_context(
        &matching::query_context(&[3; 16], now, &matching::scan_of(&handles)),
        &digests,
    );
    let coin = CheckCoin::derive(&coin_key, &context);
    let checks: Vec<_> = (0..5)
        .map(|i| {
            let c = check::check_share(&zero[i], &coin, &context, &shares[i]).expect("a node");
            matching::sign_check(&nodes[i], &answered(i as u8 + 1), &context, &c)
        })
        .collect();
    let checked_rate = per_second(|| {
        std::hint::black_box(
            matching::verify_checks(&checks, &answered(1), &context, &policy.node_keys, 2).is_ok(),
        );
    });
    out.push(Figure {
        name: "node: open and sign its check of a query (2 + 2 values)".into(),
        value: 1e6 / open_rate,
        unit: "µs",
        baseline: "one Ed25519 verification, µs".into(),
        baseline_value: 1e6 / verify_rate,
        ratio: open_rate / verify_rate,
        goal: None,
    });
    out.push(Figure {
        name: "node: verify every node's check before answering (5 signed)".into(),
        value: 1e6 / checked_rate,
        unit: "µs",
        baseline: "one Ed25519 verification, µs".into(),
        baseline_value: 1e6 / verify_rate,
        ratio: checked_rate / verify_rate,
        goal: None,
    });
    Ok(())
}

fn voprf_figures(rng: &mut AesCtrRng, out: &mut Vec<Figure>) -> Result<(), Error> {
    use obscura_keeper::{oprf, threshold};
    let err = |e: obscura_keeper::Error| e.to_string();
    let key = oprf::random_scalar(rng);
    let shares = threshold::deal(&key, 3, 2, rng).map_err(err)?;
    let point = oprf::hash_to_group(b"obscura bench");
    let mul_rate = per_second(|| {
        std::hint::black_box(std::hint::black_box(point) * std::hint::black_box(key));
    });
    const PROBES: usize = 72;
    let inputs: Vec<_> = (0..PROBES)
        .map(|i| obscura_tokens::voprf_input((i / 9) as u8, i as u8))
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(|i| i.as_slice()).collect();
    let batch = threshold::BlindedBatch::new(&refs, rng).map_err(err)?;
    let sent = batch.to_send().to_vec();
    let mut failed = None;
    let eval_rate = per_second(|| {
        let r = oprf::Elements::from_bytes(sent.clone())
            .and_then(|b| oprf::evaluate_batch(&shares[0].secret, &b, &mut rand_core::OsRng));
        if let Err(e) = r {
            failed = Some(e);
        }
    }) * PROBES as f64;
    if let Some(e) = failed {
        return Err(e.to_string().into());
    }
    let ratio = mul_rate / eval_rate;
    out.push(Figure {
        name: "keeper: tokens evaluated per core (batches of 72, with proof)".into(),
        value: eval_rate,
        unit: "tokens/s",
        baseline: "ristretto255 scalar multiplications/s".into(),
        baseline_value: mul_rate,
        ratio,
        goal: Some(("cost ≤ 1.3× a scalar multiplication".into(), ratio <= 1.3)),
    });
    // The client's work for one search: blind (additively, as clients do), check two keepers'
    // proofs, combine, unblind, once under the cluster key; then each of 5 nodes' tokens.
    let publics: Vec<_> = shares.iter().map(threshold::KeyShare::public).collect();
    let pk = threshold::PublicKey::from_shares(&publics, 2).map_err(err)?;
    let batch = threshold::AdditiveBatch::new(&refs, rng).map_err(err)?;
    let sent = oprf::Elements::from_bytes(batch.to_send().to_vec()).map_err(err)?;
    let answers: Vec<_> = shares[..2]
        .iter()
        .map(|s| {
            oprf::evaluate_batch(&s.secret, &sent, &mut rand_core::OsRng)
                .map(|a| (s.index, s.public(), a))
        })
        .collect::<Result<_, _>>()
        .map_err(err)?;
    // Blinding a fresh batch costs what blinding `batch` did; the answers are to `batch`.
    let evaluate = || {
        threshold::AdditiveBatch::new(&refs, &mut rand_core::OsRng).and_then(|fresh| {
            std::hint::black_box(fresh);
            let verified = answers
                .iter()
                .map(|(j, pk, a)| batch.verify(*j, pk, a))
                .collect::<Result<Vec<_>, _>>()?;
            batch.finish(&verified, 2, &pk)
        })
    };
    // One batch's work alone: what each node's key cost when every node had its own.
    let single_rate = per_second(|| {
        if let Err(e) = evaluate() {
            failed = Some(e);
        }
    });
    let client_rate = per_second(|| match evaluate() {
        Ok(elements) => {
            for node in 1..=5 {
                for e in &elements {
                    std::hint::black_box(obscura_tokens::voprf_token(node, &oprf::serialize(e)));
                }
            }
        }
        Err(e) => failed = Some(e),
    });
    if let Some(e) = failed {
        return Err(e.to_string().into());
    }
    out.push(Figure {
        name: format!(
            "client: VOPRF tokens of one search (72 under the cluster key, 5 nodes' tokens, T = 2), one core ({:.0} scalar multiplications' time)",
            mul_rate / client_rate
        ),
        value: 1e3 / client_rate,
        unit: "ms",
        baseline: "a key per node: 5 × 72 evaluated".into(),
        baseline_value: 5e3 / single_rate,
        ratio: 5e3 / single_rate / (1e3 / client_rate),
        goal: None,
    });
    Ok(())
}
