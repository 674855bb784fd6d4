//! Band tokens: deterministic per key, unlinkable across nodes and key versions, and query
//! batches whose shape and order reveal nothing about the query.

use std::collections::HashSet;

use obscura_tokens::{
    bands, min_bands, probes, probes_per_band, stage1_is_lossless, BatchPlan, Error, NodeTokenKeys,
    TokenRoot,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

fn root(seed: u64) -> TokenRoot {
    TokenRoot::random(&mut ChaCha20Rng::seed_from_u64(seed))
}

#[test]
fn bands_are_dct_rows() {
    // Bit 63 (DC) is the top bit of band 0; bits 7..0 are band 7.
    assert_eq!(bands(1 << 63), [0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(bands(0xff), [0, 0, 0, 0, 0, 0, 0, 0xff]);
}

#[test]
fn tokens_are_deterministic_and_separated() {
    let r = root(1);
    let a = NodeTokenKeys::derive(&r, 1, 1);
    assert_eq!(a.token(2, 77), NodeTokenKeys::derive(&r, 1, 1).token(2, 77));
    let others = [
        NodeTokenKeys::derive(&r, 2, 1).token(2, 77), // other node
        NodeTokenKeys::derive(&r, 1, 2).token(2, 77), // other version
        a.token(3, 77),                               // other band
        a.token(2, 78),                               // other value
        NodeTokenKeys::derive(&root(2), 1, 1).token(2, 77), // other root
    ];
    for t in others {
        assert_ne!(t, a.token(2, 77));
    }
    // All 256 values of a band give distinct tokens.
    let set: HashSet<_> = (0..=255u8).map(|v| a.token(0, v)).collect();
    assert_eq!(set.len(), 256);
    assert!(format!("{a:?}").contains("redacted"));
}

/// VOPRF tokens: one element per band value (the input names no node), and each node's token of
/// it its own; the encodings are fixed, since nodes check uploads against them.
#[test]
fn voprf_inputs_name_no_node_and_each_node_hashes_its_own_token() {
    use obscura_tokens::{voprf_input, voprf_token};
    assert_eq!(&voprf_input(3, 0xa7), b"obscura/band/v2\x03\xa7");
    let e = [0x42u8; 32];
    let tokens: HashSet<_> = (1..=64u8).map(|node| voprf_token(node, &e)).collect();
    assert_eq!(tokens.len(), 64, "a node's token is not another's");
    assert_ne!(voprf_token(1, &e), voprf_token(1, &[0x43; 32]));
    // SHA-256("obscura/voprf-token/v2" ‖ 01 ‖ 42^32), first 16 bytes.
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"obscura/voprf-token/v2");
    h.update([1u8]);
    h.update(e);
    assert_eq!(voprf_token(1, &e).0, h.finalize()[..16]);
}

#[test]
fn probes_cover_the_radius() {
    assert_eq!(probes(0x0f, 0), vec![0x0f]);
    assert_eq!(probes_per_band(1), 9);
    assert_eq!(probes_per_band(2), 37);
    let p = probes(0x5a, 2);
    assert_eq!(p.len(), 37);
    assert_eq!(p[0], 0x5a);
    assert!(p.iter().all(|v| (v ^ 0x5a).count_ones() <= 2));
    assert_eq!(p.iter().collect::<HashSet<_>>().len(), 37);
}

#[test]
fn plan_errors() {
    assert!(matches!(
        BatchPlan::new(1, 8),
        Err(Error::BatchTooSmall { needed: 9, .. })
    ));
    assert!(matches!(
        BatchPlan::new(9, 300),
        Err(Error::RadiusTooLarge(9))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every stored image within the radius in some band is found; the batch always has the same
    /// length; real tokens are present exactly once per probe.
    #[test]
    fn multi_probe_finds_near_hashes(stored in any::<u64>(), flips in prop::collection::vec(0u32..64, 0..6), seed in any::<u64>()) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys = NodeTokenKeys::derive(&root(3), 4, 1);
        let query = flips.iter().fold(stored, |h, &b| h ^ (1 << b));
        let plan = BatchPlan::new(1, 10).unwrap();
        let batch = plan.query_tokens(&keys, query, &mut rng);
        prop_assert_eq!(batch.len(), 80);
        let posted = keys.index_tokens(stored);
        let (stored_bands, query_bands) = (bands(stored), bands(query));
        for (band, token) in posted.iter().enumerate() {
            let d = (stored_bands[band] ^ query_bands[band]).count_ones();
            prop_assert_eq!(batch.contains(token), d <= 1);
        }
    }
}

/// Token positions say nothing: the exact-match token of the first band and of the last, and
/// a one-bit neighbour, each fall uniformly over the whole batch (before, batches kept band
/// order, so position told a node a token's band).
#[test]
fn token_positions_are_uniform_over_the_whole_batch() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let keys = NodeTokenKeys::derive(&root(4), 1, 1);
    let plan = BatchPlan::new(1, 12).unwrap();
    let hash = 0x1234_5678_9abc_def0u64;
    let watched = [
        keys.token(0, 0x12),
        keys.token(7, 0xf0),
        keys.token(3, 0x78 ^ 0x04),
    ];
    let trials = 24_000;
    // 96 positions in 12 cells of 8.
    let mut counts = [[0u64; 12]; 3];
    for _ in 0..trials {
        let batch = plan.query_tokens(&keys, hash, &mut rng);
        for (c, w) in counts.iter_mut().zip(&watched) {
            let pos = batch.iter().position(|t| t == w).unwrap();
            c[pos / 8] += 1;
        }
    }
    let e = trials as f64 / 12.0;
    for c in counts {
        let chi: f64 = c.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        // df = 11; mean + 6 sd.
        assert!(chi < 11.0 + 6.0 * 22f64.sqrt(), "chi² = {chi}, {c:?}");
    }
}

/// Dummies are drawn from the same distribution as PRF outputs: their bytes, like real tokens',
/// are uniform; and a dummy never collides with a real token.
#[test]
fn dummies_look_like_tokens() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let keys = NodeTokenKeys::derive(&root(5), 1, 1);
    let plan = BatchPlan::new(0, 16).unwrap();
    let real: HashSet<_> = (0..8)
        .flat_map(|b| (0..=255u8).map(move |v| (b, v)))
        .map(|(b, v)| keys.token(b, v))
        .collect();
    let (mut dummy_hist, mut real_hist) = ([0u64; 256], [0u64; 256]);
    let mut real_seen = 0;
    for q in 0..2000u64 {
        for t in plan.query_tokens(&keys, q.wrapping_mul(0x9e37_79b9_7f4a_7c15), &mut rng) {
            if real.contains(&t) {
                real_seen += 1;
            } else {
                t.0.iter().for_each(|&b| dummy_hist[b as usize] += 1);
            }
        }
    }
    assert_eq!(real_seen, 2000 * 8, "exactly one real token per band");
    // Every distinct real token once (repeats across queries are not independent samples).
    for t in &real {
        t.0.iter().for_each(|&b| real_hist[b as usize] += 1);
    }
    for (what, hist) in [("dummy", dummy_hist), ("real", real_hist)] {
        let total: u64 = hist.iter().sum();
        let e = total as f64 / 256.0;
        let chi: f64 = hist.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        assert!(chi < 255.0 + 6.0 * 510f64.sqrt(), "{what}: chi² = {chi}");
    }
}

/// Bands of `diff` (query XOR stored hash) within `radius` of the query's band.
fn close_bands(diff: u64, radius: u32) -> usize {
    bands(diff)
        .iter()
        .filter(|b| b.count_ones() <= radius)
        .count()
}

#[test]
fn min_bands_never_drops_a_hash_within_the_distance_and_is_tight() {
    assert_eq!(min_bands(1, 10), 3);
    assert_eq!(min_bands(0, 10), 1);
    assert_eq!(min_bands(2, 10), 5);
    assert_eq!(min_bands(0, 0), 8);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    for radius in 0..=3u32 {
        for max_distance in 0..=16u32 {
            let need = min_bands(radius, max_distance);
            // Random differences of every weight up to the distance.
            for _ in 0..300 {
                let weight = rng.next_u32() % (max_distance + 1);
                let mut diff = 0u64;
                while diff.count_ones() < weight {
                    diff |= 1 << (rng.next_u32() % 64);
                }
                if stage1_is_lossless(radius, max_distance) {
                    assert!(
                        close_bands(diff, radius) >= need,
                        "r={radius} d={max_distance}"
                    );
                }
            }
            // The worst case: radius + 1 bits in as many bands as the distance allows.
            let far = ((max_distance / (radius + 1)) as usize).min(8);
            let mut diff = 0u64;
            for band in 0..far {
                diff |= ((1u64 << (radius + 1)) - 1) << (8 * band);
            }
            assert!(diff.count_ones() <= max_distance);
            assert_eq!(stage1_is_lossless(radius, max_distance), far < 8);
            if far < 8 {
                assert_eq!(
                    close_bands(diff, radius),
                    need,
                    "r={radius} d={max_distance}"
                );
            }
        }
    }
}
