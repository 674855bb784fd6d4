//! Stage-2 per candidate, for 64-bit hashes with n = 6, t = 2, τ = 10: one node's round 0
//! (distances and masks), every node's every round in one process (the CPU a search costs the
//! cluster, no network), and the querier's finish.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use obscura_mpc::node::{self, NodeSession};
use obscura_mpc::{share_hash, HashShare, NodeAnswer, Querier, SearchParams};
use obscura_sharing::manifest::ImageId;
use obscura_sharing::zero::deal;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const CANDIDATES: usize = 1_000;

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (n, t) = (6, 2);
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
    g.bench_function("node_round_0", |b| {
        let (_, requests) = Querier::start(42, ids.clone(), params, &mut rng).unwrap();
        b.iter(|| NodeSession::start(&keys[0], black_box(&requests[0]), &node1).unwrap())
    });
    let per_node: Vec<Vec<Option<&HashShare>>> = (0..n)
        .map(|i| stored.iter().map(|s| Some(&s[i])).collect())
        .collect();
    g.bench_function("all_nodes_all_rounds", |b| {
        let (_, requests) = Querier::start(42, ids.clone(), params, &mut rng).unwrap();
        b.iter(|| node::run_all(&keys, black_box(&requests), &per_node).unwrap())
    });
    let (_, requests) = Querier::start(42, ids.clone(), params, &mut rng).unwrap();
    let answers: Vec<NodeAnswer> = node::run_all(&keys, &requests, &per_node).unwrap().answers;
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
