//! HMAC band tokens per second, and the cost of one padded query batch.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use obscura_tokens::{BatchPlan, NodeTokenKeys, TokenRoot};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_entropy();
    let keys = NodeTokenKeys::derive(&TokenRoot::random(&mut rng), 1, 1);
    let mut g = c.benchmark_group("tokens");
    g.throughput(Throughput::Elements(8));
    g.bench_function("index_tokens", |b| {
        b.iter(|| keys.index_tokens(black_box(0xc292_4c55_32bd_dfc8)))
    });
    let plan = BatchPlan::new(1, 12).unwrap();
    g.throughput(Throughput::Elements(plan.batch_len() as u64));
    g.bench_function("query_batch_r1_12", |b| {
        b.iter(|| plan.query_tokens(&keys, black_box(0xc292_4c55_32bd_dfc8), &mut rng))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
