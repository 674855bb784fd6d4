//! Split and reconstruct throughput beside the raw GF(2^8) multiply-add rate of the same kernel.
//!
//! `cargo bench -p obscura-sharing --bench sharing` runs the criterion benchmarks, then prints a
//! table computed from criterion's own estimates: each throughput, its ceiling (the kernel rate
//! divided by the multiply-adds per byte: n·(k − 1) to split, k to reconstruct) and the ratio.
//! The kernel rate is measured on cache-resident buffers; splitting 1 MiB must also write n MiB
//! of shares to memory, so the table adds that floor (copying the secret into n buffers) too.
//! Splitting includes drawing the random coefficients from the AES-128-CTR CSPRNG keyed by the OS.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use obscura_sharing::bytes::{reconstruct, split, split_into, ByteShare, Params};
use obscura_sharing::gf256::Kernel;
use obscura_sharing::rng::AesCtrRng;
use rand_core::RngCore;

const SECRET_LEN: usize = 1 << 20;
/// Buffer for the raw kernel rate: the size of one split/reconstruct chunk.
const KERNEL_LEN: usize = 16 * 1024;
const PARAMS: [(usize, usize); 3] = [(2, 3), (3, 5), (5, 9)];

fn configure() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

fn run(c: &mut Criterion) {
    let kernel = Kernel::detect();
    // Every kernel this CPU runs, so the portable fallback's cost is on record beside the one
    // `detect` picks: on one chunk, and on a buffer as long as the secret split below.
    for (group, len) in [("gf256", KERNEL_LEN), ("gf256_1mib", SECRET_LEN)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(len as u64));
        let src: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
        let mut dst = vec![0u8; len];
        for k in Kernel::available() {
            g.bench_function(BenchmarkId::new("mul_add", k.name()), |b| {
                b.iter(|| k.mul_add(black_box(&mut dst), black_box(&src), black_box(0x53)))
            });
        }
        g.finish();
    }

    let secret: Vec<u8> = (0..SECRET_LEN).map(|i| (i * 17) as u8).collect();
    let mut rng = AesCtrRng::from_os();
    let mut g = c.benchmark_group("rng");
    g.throughput(Throughput::Bytes(KERNEL_LEN as u64));
    let mut buf = vec![0u8; KERNEL_LEN];
    g.bench_function("aes_ctr", |b| {
        b.iter(|| rng.fill_bytes(black_box(&mut buf)))
    });
    g.finish();

    let mut g = c.benchmark_group("shamir_gf256");
    g.throughput(Throughput::Bytes(SECRET_LEN as u64));
    for (k, n) in PARAMS {
        let p = Params::new(k, n).unwrap();
        // The memory floor of splitting: writing n share-sized buffers, nothing computed.
        let mut outs = vec![vec![0u8; SECRET_LEN]; n];
        g.bench_function(
            BenchmarkId::new("write_n_copies", format!("{k}-of-{n}")),
            |b| {
                b.iter(|| {
                    for o in outs.iter_mut() {
                        o.copy_from_slice(black_box(&secret));
                    }
                })
            },
        );
        g.bench_function(BenchmarkId::new("split", format!("{k}-of-{n}")), |b| {
            b.iter(|| split(black_box(&secret), p, &mut rng).unwrap())
        });
        let mut reused: Vec<ByteShare> = split(&secret, p, &mut rng).unwrap();
        g.bench_function(BenchmarkId::new("split_into", format!("{k}-of-{n}")), |b| {
            b.iter(|| split_into(black_box(&secret), p, &mut rng, kernel, &mut reused).unwrap())
        });
        let shares = split(&secret, p, &mut rng).unwrap();
        g.bench_function(
            BenchmarkId::new("reconstruct", format!("{k}-of-{n}")),
            |b| b.iter(|| reconstruct(black_box(&shares[n - k..]), k).unwrap()),
        );
    }
    g.finish();
}

/// Mean time per iteration in ns, from criterion's estimates written by this run (older files,
/// left by a filtered run, are ignored).
fn mean_ns(group: &str, function: &str, param: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = dir
        .join("criterion")
        .join(group)
        .join(function)
        .join(param)
        .join("new/estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= *RUN_STARTED.get()?;
    if !fresh {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn gbps(bytes: usize, ns: f64) -> f64 {
    bytes as f64 / ns
}

static RUN_STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

fn main() {
    RUN_STARTED.get_or_init(std::time::SystemTime::now);
    let mut c = configure();
    run(&mut c);
    c.final_summary();

    let kernel = Kernel::detect();
    let Some(k_ns) = mean_ns("gf256", "mul_add", kernel.name()) else {
        return; // filtered run: nothing to summarise
    };
    let rate = gbps(KERNEL_LEN, k_ns);
    println!(
        "\nGF(2^8) multiply-add, {} kernel: {rate:.2} GB/s (ceiling per op)",
        kernel.name()
    );
    let rng_rate = mean_ns("rng", "aes_ctr", "").map(|ns| gbps(KERNEL_LEN, ns));
    if let Some(r) = rng_rate {
        println!("AES-128-CTR coefficient generator: {r:.2} GB/s");
    }
    println!(
        "{:<13} {:>6} {:>8} {:>8} {:>6} {:>10} {:>6} {:>10} {:>6}",
        "operation",
        "k-of-n",
        "GB/s",
        "ceiling",
        "ratio",
        "+rng bound",
        "ratio",
        "mem floor",
        "ratio"
    );
    for (k, n) in PARAMS {
        let kn = format!("{k}-of-{n}");
        for (op, ops_per_byte) in [
            ("split", n * (k - 1)),
            ("split_into", n * (k - 1)),
            ("reconstruct", k),
        ] {
            if let Some(ns) = mean_ns("shamir_gf256", op, &kn) {
                let got = gbps(SECRET_LEN, ns);
                let ceiling = rate / ops_per_byte as f64;
                let splitting = op != "reconstruct";
                // Splitting also draws k − 1 random bytes per byte: the bound with that cost
                // added, and the memory floor of writing n shares.
                let with_rng = rng_rate
                    .filter(|_| splitting)
                    .map(|r| 1.0 / ((k - 1) as f64 / r + ops_per_byte as f64 / rate));
                let memory = splitting
                    .then(|| mean_ns("shamir_gf256", "write_n_copies", &kn))
                    .flatten()
                    .map(|ns| gbps(SECRET_LEN, ns));
                let cell = |bound: Option<f64>| {
                    bound.map_or(("-".to_string(), "-".to_string()), |b| {
                        (format!("{b:.2}"), format!("{:.2}", got / b))
                    })
                };
                let ((rb, rr), (mb, mr)) = (cell(with_rng), cell(memory));
                println!(
                    "{op:<13} {kn:>6} {got:>8.2} {ceiling:>8.2} {:>6.2} {rb:>10} {rr:>6} {mb:>10} {mr:>6}",
                    got / ceiling
                );
            }
        }
    }
}
