//! The nodes' check of a query before Stage-2 answers it, tried as a malicious querier would:
//! shares of values that are not bits (a consistent degree-t sharing, which a degree check alone
//! would pass), shares that lie on no polynomial of degree t, and the other tricks a querier
//! controls. An honest query passes, and what the check opens looks the same whatever it was.

use obscura_mpc::check::{check_share, verify, CheckCoin, CheckFailure, CheckShare};
use obscura_mpc::{share_hash, HashShare, HASH_BITS};
use obscura_sharing::field::Fp;
use obscura_sharing::prime::{interpolate_coefficients, share_values};
use obscura_sharing::zero::{deal, ZeroSharingKeys};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const COIN_KEY: [u8; 32] = [42; 32];

/// Every node's check values for `shares` under `context`.
fn checks(keys: &[ZeroSharingKeys], shares: &[HashShare], context: &[u8]) -> Vec<CheckShare> {
    let coin = CheckCoin::derive(&COIN_KEY, context);
    keys.iter()
        .zip(shares)
        .map(|(k, s)| check_share(k, &coin, context, s).unwrap())
        .collect()
}

/// Node shares of arbitrary field values, shared with degree `t`.
fn shares_of(values: &[Fp], t: usize, n: usize, rng: &mut ChaCha20Rng) -> Vec<HashShare> {
    share_values(values, t, n, rng)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, v)| HashShare {
            node: i as u8 + 1,
            bits: v.try_into().unwrap(),
        })
        .collect()
}

#[test]
fn an_honest_query_passes_at_every_cluster_shape() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (n, t) in [(3, 1), (5, 2), (6, 2), (7, 3)] {
        let keys = deal(n, t, &mut rng).unwrap();
        for q in [0, u64::MAX, 0xc292_4c55_32bd_dfc8, rng.next_u64()] {
            let shares = share_hash(q, t, n, &mut rng).unwrap();
            let context = rng.next_u64().to_be_bytes();
            assert_eq!(verify(n, t, &checks(&keys, &shares, &context)), Ok(()));
        }
    }
}

/// The attack of the finding: `q_j = (1 − 2^j) / 2` on 30 bits opens 30 stored bits of every
/// candidate per query. It is a valid degree-t sharing, so only the bit check stops it.
#[test]
fn shares_of_values_that_are_not_bits_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (n, t) = (5, 2);
    let keys = deal(n, t, &mut rng).unwrap();
    let half = Fp::from(2u32).inv().unwrap();
    let reading: Vec<Fp> = (0..HASH_BITS)
        .map(|j| {
            if j < 30 {
                (Fp::ONE - Fp::from(2u32).pow(j as u64)) * half
            } else {
                Fp::ZERO
            }
        })
        .collect();
    // One value off by one, and a constant 1/2 everywhere (the simplest probe).
    let mut one_off = vec![Fp::ZERO; HASH_BITS];
    one_off[17] = Fp::from(2u32);
    for values in [reading, one_off, vec![half; HASH_BITS]] {
        for _ in 0..20 {
            let shares = shares_of(&values, t, n, &mut rng);
            let context = rng.next_u64().to_be_bytes();
            assert_eq!(
                verify(n, t, &checks(&keys, &shares, &context)),
                Err(CheckFailure::NotBits)
            );
        }
    }
}

/// Shares that lie on no polynomial of degree t (which let a querier isolate one node's share of
/// a stored bit) fail the degree check, even when every value they interpolate to is a bit.
#[test]
fn shares_of_degree_above_t_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (n, t) = (5, 2);
    let keys = deal(n, t, &mut rng).unwrap();
    for _ in 0..50 {
        let mut shares = share_hash(rng.next_u64(), t, n, &mut rng).unwrap();
        let node = (rng.next_u32() % n as u32) as usize;
        let bit = (rng.next_u32() % HASH_BITS as u32) as usize;
        shares[node].bits[bit] += Fp::from(1 + rng.next_u32() % 1000);
        let context = rng.next_u64().to_be_bytes();
        assert_eq!(
            verify(n, t, &checks(&keys, &shares, &context)),
            Err(CheckFailure::NotDegreeT)
        );
    }
    // Degree 2t with a bit at 0: what isolates node 1's share (Lagrange weights of 2t + 1 nodes).
    let bits = vec![Fp::ONE; HASH_BITS];
    let shares = shares_of(&bits, 2 * t, n, &mut rng);
    assert_eq!(
        verify(n, t, &checks(&keys, &shares, b"degree-2t")),
        Err(CheckFailure::NotDegreeT)
    );
}

#[test]
fn every_node_must_be_there_once() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let (n, t) = (5, 2);
    let keys = deal(n, t, &mut rng).unwrap();
    let shares = share_hash(7, t, n, &mut rng).unwrap();
    let all = checks(&keys, &shares, b"incomplete");
    let missing = &all[..4];
    let twice: Vec<CheckShare> = [&all[..4], &all[..1]].concat();
    let stranger = [&all[..4], &[CheckShare { node: 9, ..all[4] }]].concat();
    for broken in [missing.to_vec(), twice, stranger] {
        assert!(matches!(
            verify(n, t, &broken),
            Err(CheckFailure::Incomplete(_))
        ));
    }
    // With a node to spare (n = 6, t = 2: any 5 of 6), one node's check may be missing.
    let keys6 = deal(6, 2, &mut rng).unwrap();
    let shares6 = share_hash(7, 2, 6, &mut rng).unwrap();
    let all6 = checks(&keys6, &shares6, b"spare");
    assert_eq!(verify(6, 2, &all6[1..]), Ok(()));
    assert!(verify(6, 2, &all6[2..]).is_err());
    // Values checked under another context (another coin) do not pass either.
    let mut mixed = all.clone();
    mixed[2] = checks(&keys, &shares, b"another")[2];
    assert!(verify(n, t, &mixed).is_err());
}

/// What nodes open hides the query: for two different honest queries, the degree polynomial's
/// constant and node 1's values are uniform, and the bit polynomial always opens to 0.
#[test]
fn what_the_check_opens_says_nothing_of_the_query() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (n, t) = (5, 2);
    let keys = deal(n, t, &mut rng).unwrap();
    let samples = 16 * 1024;
    for q in [0u64, u64::MAX] {
        let mut cells = [[0u64; 16]; 3];
        for s in 0..samples {
            let shares = share_hash(q, t, n, &mut rng).unwrap();
            let opened = checks(&keys, &shares, &(s as u64).to_be_bytes());
            let degree: Vec<(u8, Fp)> = opened.iter().map(|c| (c.node, c.degree[0])).collect();
            let bits: Vec<(u8, Fp)> = opened.iter().map(|c| (c.node, c.bits[0])).collect();
            let d = interpolate_coefficients(&degree).unwrap();
            let b = interpolate_coefficients(&bits).unwrap();
            assert_eq!(b[0], Fp::ZERO);
            for (cell, v) in cells.iter_mut().zip([d[0], opened[0].degree[0], b[1]]) {
                cell[(v.value() >> 27) as usize] += 1;
            }
        }
        let expected = samples as f64 / 16.0;
        for cell in cells {
            let chi: f64 = cell
                .iter()
                .map(|&c| (c as f64 - expected).powi(2) / expected)
                .sum();
            // 15 degrees of freedom; far above this only if the values lean somewhere.
            assert!(chi < 50.0, "q = {q:#x}: chi² = {chi}");
        }
    }
}

/// The limit the threat model states: a node colluding with the querier holds the coin key, so
/// it knows the `B(0)` of a non-bit query and shifts its own `B_i` to cancel it. A node that
/// checks exactly `2t + 1` values cannot see the shift (n = 3 and n = 4 at t = 1, where the
/// querier hands each node the fewest checks it needs); one that checks more sees a value off
/// the polynomial (n = 5 at t = 1 needs four).
#[test]
fn a_colluding_node_hides_a_non_bit_query_only_from_a_node_checking_2t_plus_1_values() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let t = 1;
    let half = Fp::from(2u32).inv().unwrap();
    for (n, hidden) in [(3, true), (4, true), (5, false)] {
        let keys = deal(n, t, &mut rng).unwrap();
        let shares = shares_of(&vec![half; HASH_BITS], t, n, &mut rng);
        let context = rng.next_u64().to_be_bytes();
        let need = obscura_mpc::check::checks_needed(n, t);
        let mut given = checks(&keys, &shares, &context)[..need].to_vec();
        assert_eq!(verify(n, t, &given), Err(CheckFailure::NotBits));
        // Node 1 lies: it moves B(0) over the checks given to zero.
        let xs: Vec<u8> = given.iter().map(|c| c.node).collect();
        let weights = obscura_sharing::prime::lagrange_at_zero(&xs).unwrap();
        for k in 0..obscura_mpc::check::CHECKS {
            let opened: Fp = given
                .iter()
                .zip(&weights)
                .map(|(c, &w)| c.bits[k] * w)
                .fold(Fp::ZERO, |a, b| a + b);
            given[0].bits[k] -= opened * weights[0].inv().unwrap();
        }
        let verdict = verify(n, t, &given);
        if hidden {
            assert_eq!(
                verdict,
                Ok(()),
                "n = {n}: the limit is no longer what is documented"
            );
        } else {
            assert_eq!(verdict, Err(CheckFailure::NotBits), "n = {n}");
        }
    }
}
