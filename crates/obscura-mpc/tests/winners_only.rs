//! Stage-2 reveals the winners (candidates within τ) and, of the rest, only how many there are:
//! tried as a querier who keeps everything it sees, in every round.

use obscura_mpc::node::{self, NodeSession, Step};
use obscura_mpc::{share_hash, Error, HashShare, Opened, Querier, SearchParams};
use obscura_sharing::field::Fp;
use obscura_sharing::manifest::ImageId;
use obscura_sharing::prime::interpolate_at_zero;
use obscura_sharing::zero::{deal, ZeroSharingKeys};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const N: usize = 6;
const T: usize = 2;
const TAU: u32 = 10;
const QUERY: u64 = 0x0123_4567_89ab_cdef;

fn params() -> SearchParams {
    SearchParams {
        n: N,
        t: T,
        max_distance: TAU,
        top: 10,
    }
}

/// A hash at `d` bits from the query.
fn at(d: u32) -> u64 {
    QUERY ^ (((1u128 << d) - 1) as u64)
}

/// Everything the querier sees of candidate `c` in one query, as the values every round's
/// openings and the answer interpolate to (what the querier would read off them).
fn view(
    keys: &[ZeroSharingKeys],
    stored: &[Vec<HashShare>],
    c: usize,
    rng: &mut ChaCha20Rng,
) -> Vec<Fp> {
    let ids: Vec<ImageId> = (0..stored.len()).map(|i| ImageId([i as u8; 16])).collect();
    let (querier, requests) = Querier::start(QUERY, ids, params(), rng).unwrap();
    let per_node: Vec<Vec<Option<&HashShare>>> = (0..N)
        .map(|i| stored.iter().map(|s| Some(&s[i])).collect())
        .collect();
    let transcript = node::run_all(keys, &requests, &per_node).unwrap();
    let mut seen = Vec::new();
    for round in &transcript.rounds {
        let width = round[0].values.len() / stored.len();
        for k in c * width..(c + 1) * width {
            let points: Vec<(u8, Fp)> = round
                .iter()
                .map(|o| (o.node, o.values[k].unwrap()))
                .collect();
            seen.push(interpolate_at_zero(&points).unwrap());
        }
    }
    for part in 0..2 {
        let points: Vec<(u8, Fp)> = transcript
            .answers
            .iter()
            .map(|a| (a.node, a.values[c].unwrap()[part]))
            .collect();
        seen.push(interpolate_at_zero(&points).unwrap());
    }
    // The winner still comes back exact.
    let ranked = querier.finish(transcript.answers).unwrap();
    assert_eq!(ranked.matches.len(), 1);
    assert_eq!(ranked.matches[0].distance, 3);
    assert_eq!(ranked.beyond, 1);
    seen
}

/// Two databases that differ only in a candidate beyond τ (at distance 11 or 40 from the
/// query; a winner at 3 in both). For each value the querier sees of that candidate, the top
/// four bits over many queries: the two databases must give the same distribution (two-sample
/// χ², df = 15, below mean + 6 sd), and no value may be the distance. Before only the winners
/// were revealed, the answer opened the distance itself: 11 in one database, 40 in the other.
#[test]
fn a_querier_cannot_tell_two_databases_that_differ_only_beyond_tau() {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let keys = deal(N, T, &mut rng).unwrap();
    let queries = 1500;
    let mut hists: Vec<Vec<[u64; 16]>> = Vec::new();
    for far in [11, 40] {
        let stored: Vec<Vec<HashShare>> = [at(3), at(far)]
            .iter()
            .map(|&h| share_hash(h, T, N, &mut rng).unwrap())
            .collect();
        let mut hist: Vec<[u64; 16]> = Vec::new();
        for _ in 0..queries {
            let seen = view(&keys, &stored, 1, &mut rng);
            hist.resize(seen.len(), [0; 16]);
            for (h, v) in hist.iter_mut().zip(&seen) {
                assert_ne!(v.value(), far, "the querier sees the distance beyond τ");
                h[(v.value() >> 27) as usize] += 1;
            }
            let [.., h, g] = seen[..] else { unreachable!() };
            assert!(
                g != Fp::ZERO && h.value() > 64,
                "a candidate beyond τ looks like a winner"
            );
        }
        hists.push(hist);
    }
    assert_eq!(hists[0].len(), hists[1].len(), "the same rounds in both");
    for (k, (a, b)) in hists[0].iter().zip(&hists[1]).enumerate() {
        let chi: f64 = a
            .iter()
            .zip(b)
            .filter(|(x, y)| **x + **y > 0)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2) / (x + y) as f64)
            .sum();
        assert!(
            chi < 15.0 + 6.0 * 30f64.sqrt(),
            "value {k} tells the databases apart: χ² = {chi}"
        );
    }
}

/// Every value the querier sees of a candidate beyond τ, in every round and in the answer, is
/// uniform on its own (by its low bits and by its high bits) and so is the difference of any
/// two: a mask dropped from a round would leave a value fixed by d (d², d³, … of a far
/// candidate are all small, so a test over the high bits alone misses them), and one mask
/// drawn twice would leave a fixed difference.
#[test]
fn every_value_seen_of_a_non_winner_is_uniform_and_so_is_every_difference() {
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let keys = deal(N, T, &mut rng).unwrap();
    let stored: Vec<Vec<HashShare>> = [at(3), at(40)]
        .iter()
        .map(|&h| share_hash(h, T, N, &mut rng).unwrap())
        .collect();
    let queries = 800;
    let views: Vec<Vec<Fp>> = (0..queries)
        .map(|_| view(&keys, &stored, 1, &mut rng))
        .collect();
    let values = views[0].len();
    assert_eq!(values, node::opened_per_candidate(TAU), "every value seen");
    let uniform = |what: &str, of: &dyn Fn(&[Fp]) -> u32| {
        for (bucket, name) in [
            (&(|v: u32| v % 16) as &dyn Fn(u32) -> u32, "low"),
            (&|v: u32| v >> 27, "high"),
        ] {
            let mut hist = [0u64; 16];
            for seen in &views {
                hist[bucket(of(seen)) as usize] += 1;
            }
            let expected = queries as f64 / 16.0;
            let chi: f64 = hist
                .iter()
                .map(|&x| (x as f64 - expected).powi(2) / expected)
                .sum();
            assert!(
                chi < 15.0 + 6.0 * 30f64.sqrt(),
                "{what}, {name} bits: χ² = {chi}"
            );
        }
    };
    for k in 0..values {
        uniform(&format!("value {k}"), &|seen| seen[k].value());
        for l in k + 1..values {
            uniform(&format!("value {k} − value {l}"), &|seen| {
                (seen[k] - seen[l]).value()
            });
        }
    }
}

fn started(keys: &[ZeroSharingKeys], rng: &mut ChaCha20Rng) -> (Vec<NodeSession>, Vec<Opened>) {
    let stored: Vec<HashShare> = share_hash(at(2), T, N, rng).unwrap();
    let (_, requests) = Querier::start(QUERY, vec![ImageId([1; 16])], params(), rng).unwrap();
    requests
        .iter()
        .map(|r| {
            NodeSession::start(
                &keys[r.node as usize - 1],
                r,
                &[Some(&stored[r.node as usize - 1])],
            )
            .unwrap()
        })
        .unzip()
}

/// A node takes only `2t + 1` or more openings of the round it waits for, each from a distinct
/// node of the cluster with the right number of values; a refused relay changes nothing.
#[test]
fn a_node_refuses_openings_of_another_round_too_few_or_doubled() {
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let keys = deal(N, T, &mut rng).unwrap();
    let (mut sessions, openings) = started(&keys, &mut rng);
    let s = &mut sessions[0];
    let refused = |r: Result<Step, Error>| {
        matches!(
            r,
            Err(Error::MalformedAnswer { .. } | Error::NotEnoughAnswers { .. })
        )
    };
    assert!(refused(s.step(&keys[0], &openings[..4])));
    let mut twice = openings[..5].to_vec();
    twice[4] = twice[0].clone();
    assert!(refused(s.step(&keys[0], &twice)));
    let mut other_round = openings.clone();
    other_round[2].round = 1;
    assert!(refused(s.step(&keys[0], &other_round)));
    let mut short = openings.clone();
    short[3].values.pop();
    assert!(refused(s.step(&keys[0], &short)));
    let mut stranger = openings.clone();
    stranger[5].node = 7;
    assert!(refused(s.step(&keys[0], &stranger)));
    assert_eq!(s.round(), 0, "nothing moved");
    assert!(matches!(s.step(&keys[0], &openings), Ok(Step::Open(o)) if o.round == 1));
    // The same round's openings again: the session has moved on.
    assert!(refused(s.step(&keys[0], &openings)));
}

/// With one node down, the other five carry every round, and a search still ranks exactly.
#[test]
fn five_of_six_nodes_carry_every_round() {
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let keys = deal(N, T, &mut rng).unwrap();
    let stored: Vec<Vec<HashShare>> = [at(0), at(7), at(10), at(11), at(64)]
        .iter()
        .map(|&h| share_hash(h, T, N, &mut rng).unwrap())
        .collect();
    let ids: Vec<ImageId> = (0..stored.len()).map(|i| ImageId([i as u8; 16])).collect();
    let (querier, requests) = Querier::start(QUERY, ids, params(), &mut rng).unwrap();
    let up: Vec<_> = requests.into_iter().filter(|r| r.node != 4).collect();
    let per_node: Vec<Vec<Option<&HashShare>>> = (0..N)
        .map(|i| stored.iter().map(|s| Some(&s[i])).collect())
        .collect();
    let t = node::run_all(&keys, &up, &per_node).unwrap();
    assert_eq!(t.rounds.len(), node::rounds(TAU));
    let ranked = querier.finish(t.answers).unwrap();
    let got: Vec<u32> = ranked.matches.iter().map(|m| m.distance).collect();
    assert_eq!(got, vec![0, 7, 10]);
    assert_eq!(ranked.beyond, 2);
}

/// The limit, shown: a node that colludes with the querier adds `δ/λ₁` to its round-0 opening,
/// so that the 2t + 1 openings the querier relays interpolate to `d + δ`. With exactly 2t + 1
/// relayed, nothing is off any polynomial: a candidate at 25 "wins" at 5 and the querier reads
/// 25. With every node's opening relayed (what the client does), the shifted one is off the
/// polynomial the others fix, and the nodes stop.
#[test]
fn a_colluding_node_opens_a_non_winner_only_when_the_querier_relays_exactly_2t_plus_1() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let keys = deal(N, T, &mut rng).unwrap();
    let stored = share_hash(at(25), T, N, &mut rng).unwrap();
    let lambda_1 = obscura_sharing::prime::lagrange_at_zero(&[1, 2, 3, 4, 5]).unwrap()[0];
    let delta = Fp::ZERO - Fp::from(20);
    let run = |relayed: usize, rng: &mut ChaCha20Rng| {
        let (querier, requests) =
            Querier::start(QUERY, vec![ImageId([1; 16])], params(), rng).unwrap();
        let mut sessions = Vec::new();
        let mut openings = Vec::new();
        for r in &requests {
            let i = r.node as usize - 1;
            let (s, o) = NodeSession::start(&keys[i], r, &[Some(&stored[i])]).unwrap();
            sessions.push(s);
            openings.push(o);
        }
        let shift = delta * lambda_1.inv().unwrap();
        openings[0].values[0] = openings[0].values[0].map(|v| v + shift);
        loop {
            let relay = &openings[..relayed];
            let mut next = Vec::new();
            let mut answers = Vec::new();
            for (s, k) in sessions.iter_mut().zip(&keys) {
                match s.step(k, relay)? {
                    Step::Open(o) => next.push(o),
                    Step::Answer(a) => answers.push(a),
                }
            }
            if !answers.is_empty() {
                return querier.finish(answers);
            }
            openings = next;
        }
    };
    let ranked = run(2 * T + 1, &mut rng).unwrap();
    assert_eq!(ranked.matches.len(), 1, "the shifted candidate wins");
    assert_eq!(
        ranked.matches[0].distance + 20,
        25,
        "and gives its distance away"
    );
    assert!(matches!(
        run(N, &mut rng),
        Err(Error::InconsistentOpenings { round: 0 })
    ));
}
