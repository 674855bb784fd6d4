//! A keeper's cost per token against one ristretto255 scalar multiplication, and the client's
//! cost per token for a threshold evaluation with T = 2.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Dkg;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use obscura_keeper::{oprf, threshold};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Tokens per node in one default query (8 bands × 12 lookups).
const BATCH: usize = 96;

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_entropy();
    let key = oprf::random_scalar(&mut rng);
    let shares = threshold::deal(&key, 3, 2, &mut rng).unwrap();
    let inputs: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| format!("band {i}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let point = oprf::hash_to_group(b"x");

    let mut g = c.benchmark_group("keeper");
    g.throughput(Throughput::Elements(1));
    g.bench_function("scalar_mul", |b| {
        b.iter(|| black_box(point) * black_box(key))
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    let batch = threshold::BlindedBatch::new(&refs, &mut rng).unwrap();
    let sent = batch.to_send().to_vec();
    g.bench_function("keeper_evaluate_96", |b| {
        b.iter(|| {
            let blinded = oprf::Elements::from_bytes(sent.clone()).unwrap();
            oprf::evaluate_batch(&shares[0].secret, &blinded, &mut rng).unwrap()
        })
    });
    let answers: Vec<_> = shares[..2]
        .iter()
        .map(|s| {
            let blinded = oprf::Elements::from_bytes(sent.clone()).unwrap();
            (
                s,
                oprf::evaluate_batch(&s.secret, &blinded, &mut rng).unwrap(),
            )
        })
        .collect();
    g.bench_function("client_blind_96", |b| {
        b.iter(|| threshold::BlindedBatch::new(&refs, &mut rng).unwrap())
    });
    g.bench_function("client_verify_combine_96_t2", |b| {
        b.iter(|| {
            let verified: Vec<_> = answers
                .iter()
                .map(|(s, a)| batch.verify(s.index, &s.public(), a).unwrap())
                .collect();
            batch.finish(&verified, 2).unwrap()
        })
    });
    // The same with additive blinding (fixed-base multiplications), as clients do.
    let publics: Vec<_> = shares.iter().map(threshold::KeyShare::public).collect();
    let pk = threshold::PublicKey::from_shares(&publics, 2).unwrap();
    let additive = threshold::AdditiveBatch::new(&refs, &mut rng).unwrap();
    let add_sent = oprf::Elements::from_bytes(additive.to_send().to_vec()).unwrap();
    let add_answers: Vec<_> = shares[..2]
        .iter()
        .map(|s| {
            (
                s,
                oprf::evaluate_batch(&s.secret, &add_sent, &mut rng).unwrap(),
            )
        })
        .collect();
    g.bench_function("client_blind_additive_96", |b| {
        b.iter(|| threshold::AdditiveBatch::new(&refs, &mut rng).unwrap())
    });
    g.bench_function("client_verify_combine_additive_96_t2", |b| {
        b.iter(|| {
            let verified: Vec<_> = add_answers
                .iter()
                .map(|(s, a)| additive.verify(s.index, &s.public(), a).unwrap())
                .collect();
            additive.finish(&verified, 2, &pk).unwrap()
        })
    });
    g.finish();
}

/// A whole OPAQUE login with one keeper (both ends, Argon2id at its default cost), and one
/// session message sealed and opened.
fn login(c: &mut Criterion) {
    use obscura_keeper::session::{self, Channel, ClientLogin, ClientRegistration, Role};
    let mut rng = ChaCha20Rng::from_entropy();
    let keeper = session::ServerKeys::random(&mut rng);
    let (reg, request) = ClientRegistration::start(b"pw", &mut rng).unwrap();
    let response = keeper.registration_response(&request, b"alice").unwrap();
    let file = session::ServerKeys::password_file(&reg.finish(b"pw", &response, &mut rng).unwrap())
        .unwrap();
    let mut g = c.benchmark_group("session");
    g.sample_size(10);
    g.bench_function("opaque_login_both_ends", |b| {
        b.iter(|| {
            let (client, ke1) = ClientLogin::start(b"pw", &mut rng).unwrap();
            let (pending, ke2) = keeper
                .login_response(Some(&file), &ke1, b"alice", b"k1", &mut rng)
                .unwrap();
            let (ke3, key) = client.finish(b"pw", &ke2, b"k1", &mut rng).unwrap();
            pending.finish(&ke3, b"k1").unwrap();
            key
        })
    });
    // The keeper's side alone: the KE1 of one finished login, answered again and again, and
    // that login's KE3, which no later answer accepts (the keeper's work is the same, the
    // result a refusal).
    let (ke1, ke3) = {
        let (client, ke1) = ClientLogin::start(b"pw", &mut rng).unwrap();
        let (_, ke2) = keeper
            .login_response(Some(&file), &ke1, b"alice", b"k1", &mut rng)
            .unwrap();
        let (ke3, _) = client.finish(b"pw", &ke2, b"k1", &mut rng).unwrap();
        (ke1, ke3)
    };
    g.bench_function("opaque_login_keeper_side_unknown_user", |b| {
        b.iter(|| {
            let (pending, _) = keeper
                .login_response(None, &ke1, b"nobody", b"k1", &mut rng)
                .unwrap();
            black_box(pending.finish(&ke3, b"k1").is_err())
        })
    });
    g.bench_function("opaque_login_keeper_side", |b| {
        b.iter(|| {
            let (pending, _) = keeper
                .login_response(Some(&file), &ke1, b"alice", b"k1", &mut rng)
                .unwrap();
            black_box(pending.finish(&ke3, b"k1").is_err())
        })
    });
    let mut client = Channel::new(&[1; 64], [2; 16], Role::Client, u64::MAX);
    let mut server = Channel::new(&[1; 64], [2; 16], Role::Server, u64::MAX);
    let msg = vec![0u8; 4096];
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("seal_open_4k", |b| {
        b.iter(|| server.open(&client.seal(&msg, 0).unwrap(), 0).unwrap())
    });
    g.finish();
}

/// A FROST 2-of-3 Ed25519 signature, all in one process: two commitments, the signing
/// package, two shares, aggregation with every share checked. Also the keeper's step alone
/// (commit and share).
fn signing(c: &mut Criterion) {
    use obscura_keeper::signing;
    let mut rng = ChaCha20Rng::from_entropy();
    let (packages, public) = Dkg::through_round2(3, 2, b"ctx", &mut rng).finish(b"ctx");
    let mut g = c.benchmark_group("signing");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("frost_2_of_3_signature", |b| {
        b.iter(|| {
            let (n1, c1) = signing::commit(&packages[0], &mut rng).unwrap();
            let (n2, c2) = signing::commit(&packages[1], &mut rng).unwrap();
            let package = signing::signing_package(b"a release", &[(1, c1), (2, c2)]).unwrap();
            let s1 = signing::sign_share(&packages[0], n1, &package).unwrap();
            let s2 = signing::sign_share(&packages[1], n2, &package).unwrap();
            signing::aggregate(&package, &[(1, s1), (2, s2)], &public).unwrap()
        })
    });
    g.bench_function("keeper_commit_and_share", |b| {
        b.iter(|| {
            let (n1, c1) = signing::commit(&packages[0], &mut rng).unwrap();
            let (_, c2) = signing::commit(&packages[1], &mut rng).unwrap();
            let package = signing::signing_package(b"a release", &[(1, c1), (2, c2)]).unwrap();
            signing::sign_share(&packages[0], n1, &package).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, login, signing);
criterion_main!(benches);
