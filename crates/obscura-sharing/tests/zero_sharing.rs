//! The zero shares of all nodes lie on one polynomial of degree 2t through (0, 0), and any t of
//! them are uniformly distributed: the mask hides answers from the querier and from t nodes.

use obscura_sharing::field::Fp;
use obscura_sharing::prime::{interpolate_at_zero, interpolate_coefficients};
use obscura_sharing::zero::{deal, ZeroSharingKeys};
use obscura_sharing::Error;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn shares_for(keys: &[ZeroSharingKeys], context: &[u8], count: usize) -> Vec<Vec<(u8, Fp)>> {
    let mut streams: Vec<_> = keys.iter().map(|k| k.stream(context)).collect();
    (0..count)
        .map(|_| {
            keys.iter()
                .zip(&mut streams)
                .map(|(k, s)| (k.node(), s.next_share()))
                .collect()
        })
        .collect()
}

#[test]
fn shares_interpolate_to_zero_with_degree_2t() {
    for (n, t) in [(3, 1), (5, 2), (7, 2), (7, 3), (9, 4)] {
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64 * 100 + t as u64);
        let keys = deal(n, t, &mut rng).unwrap();
        for points in shares_for(&keys, b"query-1", 50) {
            // Any 2t + 1 of them give 0.
            for start in 0..=(n - (2 * t + 1)) {
                let window = &points[start..start + 2 * t + 1];
                assert_eq!(
                    interpolate_at_zero(window).unwrap(),
                    Fp::ZERO,
                    "n={n} t={t}"
                );
            }
            // All n lie on a polynomial of degree ≤ 2t.
            let coeffs = interpolate_coefficients(&points).unwrap();
            assert!(coeffs[2 * t + 1..].iter().all(|&c| c == Fp::ZERO));
            // And it is not the zero polynomial.
            assert!(points.iter().any(|p| p.1 != Fp::ZERO));
        }
    }
}

#[test]
fn contexts_give_independent_masks() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let keys = deal(5, 2, &mut rng).unwrap();
    let a = shares_for(&keys, b"query-a", 4);
    let b = shares_for(&keys, b"query-b", 4);
    assert_ne!(a, b);
    assert_eq!(
        a,
        shares_for(&keys, b"query-a", 4),
        "deterministic per context"
    );
}

#[test]
fn any_t_shares_look_uniform() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let keys = deal(5, 2, &mut rng).unwrap();
    let samples = 64 * 1024;
    let mut cells = vec![0u64; 256];
    for points in shares_for(&keys, b"uniformity", samples) {
        // Nodes 2 and 5 colluding: the top 4 bits of each of their shares, jointly.
        let a = points[1].1.value() >> 27;
        let b = points[4].1.value() >> 27;
        cells[(a << 4 | b) as usize] += 1;
    }
    let expected = samples as f64 / 256.0;
    let chi: f64 = cells
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(chi < 255.0 + 6.0 * 510f64.sqrt(), "chi² = {chi}");
}

#[test]
fn bad_parameters_and_keys_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    assert!(matches!(
        deal(4, 2, &mut rng),
        Err(Error::InvalidDegree { t: 2, n: 4 })
    ));
    assert!(matches!(
        deal(5, 0, &mut rng),
        Err(Error::InvalidDegree { .. })
    ));
    assert!(matches!(
        deal(40, 19, &mut rng),
        Err(Error::TooManySubsets { .. })
    ));
    let keys = deal(5, 2, &mut rng).unwrap();
    let parts: Vec<(u64, [u8; 32])> = keys[0]
        .subset_keys()
        .iter()
        .map(|k| (k.members(), *k.key_bytes()))
        .collect();
    assert!(ZeroSharingKeys::from_parts(1, 5, 2, parts.clone()).is_ok());
    // Node 2's keys presented as node 1's, or a missing set, are refused.
    assert!(matches!(
        ZeroSharingKeys::from_parts(2, 5, 2, parts.clone()),
        Err(Error::InvalidZeroKeys(_))
    ));
    assert!(matches!(
        ZeroSharingKeys::from_parts(1, 5, 2, parts[1..].to_vec()),
        Err(Error::InvalidZeroKeys(_))
    ));
    assert!(format!("{:?}", keys[0].subset_keys()[0]).contains("<redacted>"));
}

/// The random sharing of degree t: every node's share lies on one polynomial of degree t (its
/// constant nobody knows), and contexts give unrelated values.
#[test]
fn random_shares_lie_on_one_polynomial_of_degree_t() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    for (n, t) in [(3, 1), (5, 2), (7, 3)] {
        let keys = deal(n, t, &mut rng).unwrap();
        let mut secrets = Vec::new();
        for context in [&b"check-a"[..], b"check-b", b"check-c"] {
            let points: Vec<(u8, Fp)> = keys
                .iter()
                .map(|k| (k.node(), k.random_share(context)))
                .collect();
            let coeffs = interpolate_coefficients(&points).unwrap();
            assert!(
                coeffs[t + 1..].iter().all(|&c| c == Fp::ZERO),
                "n={n} t={t}"
            );
            assert_ne!(coeffs[t], Fp::ZERO, "degree exactly t, almost surely");
            secrets.push(coeffs[0]);
        }
        assert!(secrets[0] != secrets[1] && secrets[1] != secrets[2]);
    }
}

/// The stream of random sharings: each value's shares lie on one polynomial of degree t, and
/// successive values and contexts are unrelated.
#[test]
fn random_share_streams_give_degree_t_sharings_of_unrelated_values() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    for (n, t) in [(3, 1), (5, 2), (6, 2), (7, 3)] {
        let keys = deal(n, t, &mut rng).unwrap();
        let mut secrets = Vec::new();
        for context in [&b"round-a"[..], b"round-b"] {
            let mut streams: Vec<_> = keys.iter().map(|k| k.random_stream(context)).collect();
            for _ in 0..4 {
                let points: Vec<(u8, Fp)> = keys
                    .iter()
                    .zip(&mut streams)
                    .map(|(k, s)| (k.node(), s.next_share()))
                    .collect();
                let coeffs = interpolate_coefficients(&points).unwrap();
                assert!(
                    coeffs[t + 1..].iter().all(|&c| c == Fp::ZERO),
                    "n={n} t={t}"
                );
                assert_ne!(coeffs[t], Fp::ZERO, "degree exactly t, almost surely");
                secrets.push(coeffs[0]);
            }
        }
        let mut unique = secrets.clone();
        unique.sort_by_key(|f| f.value());
        unique.dedup();
        assert_eq!(unique.len(), secrets.len(), "n={n} t={t}: no value repeats");
        // Another domain than the single random share's.
        let single = interpolate_coefficients(
            &keys
                .iter()
                .map(|k| (k.node(), k.random_share(b"round-a")))
                .collect::<Vec<_>>(),
        )
        .unwrap()[0];
        assert!(!secrets.contains(&single));
    }
}
