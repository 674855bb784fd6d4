//! Stage-2 computes exactly the plaintext Hamming distance, ranks like a plaintext scan, and
//! turns every missing, duplicated or lying node into a clear error.

use obscura_mpc::node::{self, NodeSession};
use obscura_mpc::{
    share_hash, Error, HashShare, NodeAnswer, NodeRequest, Querier, Ranked, SearchParams,
};
use obscura_phash::phash64;
use obscura_sharing::field::Fp;
use obscura_sharing::manifest::ImageId;
use obscura_sharing::zero::{deal, ZeroSharingKeys};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Cluster {
    n: usize,
    t: usize,
    keys: Vec<ZeroSharingKeys>,
    /// stored[image][node]
    stored: Vec<Vec<HashShare>>,
    ids: Vec<ImageId>,
}

fn cluster(n: usize, t: usize, hashes: &[u64], rng: &mut ChaCha20Rng) -> Cluster {
    Cluster {
        n,
        t,
        keys: deal(n, t, rng).unwrap(),
        stored: hashes
            .iter()
            .map(|&h| share_hash(h, t, n, rng).unwrap())
            .collect(),
        ids: (0..hashes.len())
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                ImageId(id)
            })
            .collect(),
    }
}

impl Cluster {
    fn params(&self, max_distance: u32, top: usize) -> SearchParams {
        SearchParams {
            n: self.n,
            t: self.t,
            max_distance,
            top,
        }
    }

    /// Every node's answer to `requests`, the openings relayed between them in this process.
    fn answers(&self, requests: &[NodeRequest]) -> Vec<NodeAnswer> {
        let stored: Vec<Vec<Option<&HashShare>>> = (0..self.n)
            .map(|i| self.stored.iter().map(|s| Some(&s[i])).collect())
            .collect();
        node::run_all(&self.keys, requests, &stored)
            .unwrap()
            .answers
    }

    fn search(&self, q: u64, max_distance: u32, top: usize, rng: &mut ChaCha20Rng) -> Ranked {
        let (querier, requests) =
            Querier::start(q, self.ids.clone(), self.params(max_distance, top), rng).unwrap();
        querier.finish(self.answers(&requests)).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn distances_equal_popcount(hashes in prop::collection::vec(any::<u64>(), 1..20), q in any::<u64>(), seed in any::<u64>()) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let c = cluster(5, 2, &hashes, &mut rng);
        let ranked = c.search(q, 64, usize::MAX, &mut rng);
        prop_assert_eq!(ranked.matches.len(), hashes.len());
        for m in ranked.matches {
            let i = u64::from_be_bytes(m.id.0[..8].try_into().unwrap()) as usize;
            prop_assert_eq!(m.distance, (hashes[i] ^ q).count_ones());
        }
    }

    /// Within τ every distance comes back exact; beyond it, only the count.
    #[test]
    fn winners_come_back_exact_and_the_rest_only_counted(
        hashes in prop::collection::vec(any::<u64>(), 1..12),
        flips in prop::collection::vec(0u32..64, 1..12),
        tau in 0u32..=64,
        q in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        // Hashes near the query, at `flips` bits, and random ones far from it.
        let near: Vec<u64> = flips.iter().map(|&f| q ^ ((1u64 << f) - 1)).collect();
        let all: Vec<u64> = near.iter().chain(&hashes).copied().collect();
        let c = cluster(6, 2, &all, &mut rng);
        let ranked = c.search(q, tau, usize::MAX, &mut rng);
        let mut plain: Vec<(u32, ImageId)> = all
            .iter()
            .zip(&c.ids)
            .map(|(h, id)| ((h ^ q).count_ones(), *id))
            .filter(|(d, _)| *d <= tau)
            .collect();
        plain.sort();
        let private: Vec<(u32, ImageId)> = ranked.matches.iter().map(|m| (m.distance, m.id)).collect();
        prop_assert_eq!(&private, &plain);
        prop_assert_eq!(ranked.beyond, all.len() - plain.len());
    }
}

#[test]
fn real_photos_rank_like_a_plaintext_scan() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata");
    let mut names: Vec<_> = std::fs::read_dir(format!("{dir}/photos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let hashes: Vec<u64> = names
        .iter()
        .map(|n| {
            phash64(&std::fs::read(format!("{dir}/photos/{n}")).unwrap())
                .unwrap()
                .0
        })
        .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let c = cluster(5, 2, &hashes, &mut rng);
    for n in &names {
        let stem = n.rsplit_once('.').unwrap().0;
        let q = phash64(&std::fs::read(format!("{dir}/derived/{stem}.q75.jpg")).unwrap())
            .unwrap()
            .0;
        let ranked = c.search(q, 10, 10, &mut rng);
        // The plaintext reference ranking.
        let mut plain: Vec<(u32, ImageId)> = hashes
            .iter()
            .zip(&c.ids)
            .map(|(h, id)| ((h ^ q).count_ones(), *id))
            .filter(|(d, _)| *d <= 10)
            .collect();
        plain.sort();
        plain.truncate(10);
        let private: Vec<(u32, ImageId)> =
            ranked.matches.iter().map(|m| (m.distance, m.id)).collect();
        assert_eq!(private, plain, "{n}");
        let own = names.iter().position(|x| x == n).unwrap();
        assert_eq!(ranked.matches[0].id, c.ids[own], "{n} finds itself first");
    }
}

#[test]
fn threshold_and_top_apply() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let q = 0u64;
    let hashes = [0b1, 0b11, 0b111, 0xffff, 0b1 << 40, 0];
    let c = cluster(5, 2, &hashes, &mut rng);
    let r = c.search(q, 2, 3, &mut rng);
    let got: Vec<u32> = r.matches.iter().map(|m| m.distance).collect();
    assert_eq!(got, vec![0, 1, 1]);
    assert_eq!(r.candidates, 6);
    // Ties are broken by id.
    assert!(r.matches[1].id < r.matches[2].id);
}

#[test]
fn missing_nodes_are_named() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let c = cluster(5, 2, &[1, 2, 3], &mut rng);
    let (querier, requests) = Querier::start(7, c.ids.clone(), c.params(10, 10), &mut rng).unwrap();
    let answers: Vec<_> = c
        .answers(&requests)
        .into_iter()
        .filter(|a| a.node != 2 && a.node != 4)
        .collect();
    let err = querier.finish(answers).unwrap_err();
    assert!(
        matches!(&err, Error::NotEnoughAnswers { need: 5, got: 3, missing, .. } if missing == &vec![2, 4])
    );
    let msg = err.to_string();
    assert!(
        msg.contains("node 2, node 4") && msg.contains("2t + 1"),
        "{msg}"
    );
}

#[test]
fn malformed_answers_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let c = cluster(5, 2, &[1, 2], &mut rng);
    let run = |edit: &dyn Fn(&mut Vec<NodeAnswer>), rng: &mut ChaCha20Rng| {
        let (querier, requests) = Querier::start(7, c.ids.clone(), c.params(10, 10), rng).unwrap();
        let mut answers = c.answers(&requests);
        edit(&mut answers);
        querier.finish(answers)
    };
    assert!(matches!(
        run(&|a| a[1].node = 1, &mut rng),
        Err(Error::MalformedAnswer {
            node: 1,
            reason: "answered twice"
        })
    ));
    assert!(matches!(
        run(&|a| a[3].node = 9, &mut rng),
        Err(Error::MalformedAnswer { node: 9, .. })
    ));
    assert!(matches!(
        run(
            &|a| {
                a[2].values.pop();
            },
            &mut rng
        ),
        Err(Error::MalformedAnswer { node: 3, .. })
    ));
    // A lying node with exactly 2t + 1 answers goes unseen: a winner whose h it shifts far
    // counts as beyond τ (only extra answers catch a liar, below).
    let shifted = run(
        &|a| {
            let [h, g] = a[4].values[1].unwrap();
            a[4].values[1] = Some([h + Fp::new(123_456_789), g]);
        },
        &mut rng,
    )
    .unwrap();
    assert_eq!((shifted.matches.len(), shifted.beyond), (1, 1));
    // A node that does not hold a candidate: that candidate is skipped and counted.
    let ok = run(&|a| a[0].values[1] = None, &mut rng).unwrap();
    assert_eq!((ok.incomplete, ok.matches.len()), (1, 1));
}

#[test]
fn extra_nodes_catch_a_subtle_liar() {
    // n = 7, t = 2: 5 answers define the polynomial, the other 2 check it. The liar shifts its
    // value by a small amount that would still interpolate to a plausible distance.
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let c = cluster(7, 2, &[0xff], &mut rng);
    let (querier, requests) = Querier::start(0, c.ids.clone(), c.params(64, 10), &mut rng).unwrap();
    let mut answers = c.answers(&requests);
    let [h, g] = answers[6].values[0].unwrap();
    answers[6].values[0] = Some([h + Fp::ONE, g]);
    assert!(matches!(
        querier.finish(answers),
        Err(Error::InconsistentAnswers { .. })
    ));
}

#[test]
fn requests_for_another_node_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let c = cluster(5, 2, &[1], &mut rng);
    let (_, requests) = Querier::start(7, c.ids.clone(), c.params(10, 10), &mut rng).unwrap();
    assert!(matches!(
        NodeSession::start(&c.keys[0], &requests[1], &[Some(&c.stored[0][0])]),
        Err(Error::MalformedRequest(_))
    ));
    assert!(matches!(
        NodeSession::start(&c.keys[0], &requests[0], &[]),
        Err(Error::MalformedRequest(_))
    ));
    let mut greedy = requests[0].clone();
    greedy.max_distance = 65;
    assert!(matches!(
        NodeSession::start(&c.keys[0], &greedy, &[Some(&c.stored[0][0])]),
        Err(Error::MalformedRequest(_))
    ));
    // 2t + 1 > n is refused up front.
    assert!(Querier::start(
        7,
        vec![],
        SearchParams {
            n: 4,
            t: 2,
            max_distance: 1,
            top: 1
        },
        &mut rng
    )
    .is_err());
}

proptest! {
    #[test]
    fn hash_share_encoding_round_trips(hash in any::<u64>(), seed in any::<u64>()) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        for s in share_hash(hash, 2, 5, &mut rng).unwrap() {
            prop_assert_eq!(HashShare::from_bytes(s.node, &s.to_bytes()).unwrap(), s);
        }
    }
}

#[test]
fn malformed_hash_shares_are_refused() {
    assert!(matches!(
        HashShare::from_bytes(1, &[0; 255]),
        Err(Error::MalformedHashShare)
    ));
    let mut b = [0u8; 256];
    b[..4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // = p, not reduced
    assert!(matches!(
        HashShare::from_bytes(1, &b),
        Err(Error::MalformedHashShare)
    ));
}
