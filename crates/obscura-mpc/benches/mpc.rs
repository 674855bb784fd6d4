//! Node-side candidates evaluated per second (zero sharing included) and querier-side cost per
//! candidate, for 64-bit hashes with n = 5, t = 2.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use obscura_mpc::{node, share_hash, HashShare, NodeAnswer, Querier, SearchParams};
use obscura_sharing::manifest::ImageId;
use obscura_sharing::zero::deal;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const CANDIDATES: usize = 10_000;

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (n, t) = (5, 2);
    let keys = deal(n, t, &mut rng).unwrap();
    let stored: Vec<Vec<HashShare>> = (0..CANDIDATES)
        .map(|_| share_hash(rng.next_u64(), t, n, &mut rng).unwrap())
        .collect();
    let ids: Vec<ImageId> = (0..CANDIDATES)
        .map(|i| ImageId((i as u128).to_be_bytes()))
        .collect();
    let params = SearchParams {
        n,
        t,
        max_distance: 10,
        top: 10,
    };
    let node1: Vec<Option<&HashShare>> = stored.iter().map(|s| Some(&s[0])).collect();

    let mut g = c.benchmark_group("stage2");
    g.throughput(Throughput::Elements(CANDIDATES as u64));
    g.bench_function("node_answer", |b| {
        let (_, requests) = Querier::start(42, ids.clone(), params, &mut rng).unwrap();
        b.iter(|| node::answer(&keys[0], black_box(&requests[0]), &node1).unwrap())
    });
    let (_, requests) = Querier::start(42, ids.clone(), params, &mut rng).unwrap();
    let answers: Vec<NodeAnswer> = requests
        .iter()
        .map(|r| {
            let i = r.node as usize - 1;
            let s: Vec<_> = stored.iter().map(|s| Some(&s[i])).collect();
            node::answer(&keys[i], r, &s).unwrap()
        })
        .collect();
    g.bench_function("querier_finish", |b| {
        b.iter_batched(
            || {
                let (q, _) = Querier::start(42, ids.clone(), params, &mut rng).unwrap();
                (q, answers.clone())
            },
            |(q, a)| q.finish(a).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
