//! Decode + pHash throughput on the test photos, and hash-only time per image.
//!
//! `cargo bench -p obscura-phash`: criterion reports time per iteration; the "elements" throughput
//! it prints for `decode_and_hash` is images per second.

use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use obscura_phash::{decode_luma, hash_luma, phash64, Limits};

fn photos() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/photos");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn bench(c: &mut Criterion) {
    let files = photos();
    let mut g = c.benchmark_group("phash");
    g.throughput(Throughput::Elements(files.len() as u64));
    g.bench_function("decode_and_hash", |b| {
        b.iter(|| {
            for f in &files {
                black_box(phash64(f).unwrap());
            }
        })
    });
    let decoded: Vec<_> = files
        .iter()
        .map(|f| decode_luma(f, &Limits::default()).unwrap())
        .collect();
    g.bench_function("hash_only", |b| {
        b.iter(|| {
            for d in &decoded {
                black_box(hash_luma(d));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
