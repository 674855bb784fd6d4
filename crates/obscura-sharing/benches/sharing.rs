//! Split and reconstruct throughput beside the raw GF(2^8) multiply-add rate of the same kernel.
//!
//! `cargo bench -p obscura-sharing --bench sharing` runs the criterion benchmarks, then prints a
//! table computed from criterion's own estimates: each throughput, its ceiling (the kernel rate
//! divided by the multiply-adds per byte: n·(k − 1) to split, k to reconstruct) and the ratio.
//! Splitting includes drawing the random coefficients from the AES-128-CTR CSPRNG keyed by the OS.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use obscura_sharing::bytes::{reconstruct, split, split_into, ByteShare, Params};
use obscura_sharing::gf256::Kernel;
use obscura_sharing::rng::AesCtrRng;

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
    let mut g = c.benchmark_group("gf256");
    g.throughput(Throughput::Bytes(KERNEL_LEN as u64));
    let src: Vec<u8> = (0..KERNEL_LEN).map(|i| (i * 131 + 7) as u8).collect();
    let mut dst = vec![0u8; KERNEL_LEN];
    g.bench_function(BenchmarkId::new("mul_add", kernel.name()), |b| {
        b.iter(|| kernel.mul_add(black_box(&mut dst), black_box(&src), black_box(0x53)))
    });
    g.finish();

    let secret: Vec<u8> = (0..SECRET_LEN).map(|i| (i * 17) as u8).collect();
    let mut rng = AesCtrRng::from_os();
    let mut g = c.benchmark_group("shamir_gf256");
    g.throughput(Throughput::Bytes(SECRET_LEN as u64));
    for (k, n) in PARAMS {
        let p = Params::new(k, n).unwrap();
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

/// Mean time per iteration in ns, from criterion's estimates of this run.
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
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn gbps(bytes: usize, ns: f64) -> f64 {
    bytes as f64 / ns
}

fn main() {
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
    println!(
        "{:<13} {:>6} {:>10} {:>10} {:>7}",
        "operation", "k-of-n", "GB/s", "ceiling", "ratio"
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
                println!(
                    "{op:<13} {kn:>6} {got:>10.2} {ceiling:>10.2} {:>7.2}",
                    got / ceiling
                );
            }
        }
    }
}
