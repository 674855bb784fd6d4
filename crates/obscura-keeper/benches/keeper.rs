//! A keeper's cost per token against one ristretto255 scalar multiplication, and the client's
//! cost per token for a threshold evaluation with T = 2.

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
    g.bench_function("opaque_login_keeper_side_unknown_user", |b| {
        let (client, ke1) = ClientLogin::start(b"pw", &mut rng).unwrap();
        let (_, ke2) = keeper
            .login_response(Some(&file), &ke1, b"alice", b"k1", &mut rng)
            .unwrap();
        let (ke3, _) = client.finish(b"pw", &ke2, b"k1", &mut rng).unwrap();
        b.iter(|| {
            let (pending, _) = keeper
                .login_response(None, &ke1, b"nobody", b"k1", &mut rng)
                .unwrap();
            black_box(pending.finish(&ke3, b"k1").is_err())
        })
    });
    g.bench_function("opaque_login_keeper_side", |b| {
        let (client, ke1) = ClientLogin::start(b"pw", &mut rng).unwrap();
        let (_, ke2) = keeper
            .login_response(Some(&file), &ke1, b"alice", b"k1", &mut rng)
            .unwrap();
        let (ke3, _) = client.finish(b"pw", &ke2, b"k1", &mut rng).unwrap();
        b.iter(|| {
            let (pending, _) = keeper
                .login_response(Some(&file), &ke1, b"alice", b"k1", &mut rng)
                .unwrap();
            // The KE3 of another login: the keeper's work is the same, the result a refusal.
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
/// package, two shares, aggregation with every share checked. Also the keeper-side step alone
/// and the unknown-user keeper-side login (for comparison with `opaque_login_keeper_side`).
fn signing(c: &mut Criterion) {
    use obscura_keeper::signing;
    let mut rng = ChaCha20Rng::from_entropy();
    let (m, t) = (3u8, 2u8);
    let keys: Vec<_> = (0..m).map(|_| signing::peer_key(&mut rng)).collect();
    let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.1).collect();
    let peers: Vec<_> = (1..=m)
        .map(|j| signing::PeerKeys::new(j, &keys[j as usize - 1].0, &publics).unwrap())
        .collect();
    let mut states = Vec::new();
    let mut round1 = Vec::new();
    for j in 1..=m {
        let (s, p) = signing::dkg_start(j, m, t, &mut rng).unwrap();
        states.push(s);
        round1.push((j, p));
    }
    let others =
        |j: u8| -> Vec<(u8, Vec<u8>)> { round1.iter().filter(|p| p.0 != j).cloned().collect() };
    let mut to: Vec<Vec<(u8, Vec<u8>)>> = vec![Vec::new(); m as usize];
    let mut after = Vec::new();
    for (j, s) in (1..=m).zip(states) {
        let (s, out) =
            signing::dkg_round2(s, &peers[j as usize - 1], b"ctx", &others(j), &mut rng).unwrap();
        for (r, sealed) in out {
            to[r as usize - 1].push((j, sealed));
        }
        after.push(s);
    }
    let mut packages = Vec::new();
    let mut public = None;
    for j in 1..=m {
        let (k, p) = signing::dkg_finish(
            &after[j as usize - 1],
            &peers[j as usize - 1],
            b"ctx",
            &others(j),
            &to[j as usize - 1],
        )
        .unwrap();
        packages.push(k);
        public = Some(p);
    }
    let public = public.unwrap();
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
