//! Any k of n shares rebuild the secret exactly, in any order, on every kernel; bad parameters
//! and bad share sets are typed errors.

use obscura_sharing::bytes::{
    reconstruct, reconstruct_with_kernel, split, split_with_kernel, ByteShare, Params,
};
use obscura_sharing::gf256::Kernel;
use obscura_sharing::Error;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn params() -> impl Strategy<Value = (usize, usize)> {
    (2usize..=12).prop_flat_map(|n| (2..=n, Just(n)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_k_of_n_rebuild(
        secret in prop::collection::vec(any::<u8>(), 1..3000),
        (k, n) in params(),
        seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
        extra in 0usize..3,
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let p = Params::new(k, n).unwrap();
        for kernel in Kernel::available() {
            let shares = split_with_kernel(&secret, p, &mut rng, kernel).unwrap();
            prop_assert_eq!(shares.len(), n);
            prop_assert!(shares.iter().all(|s| s.bytes.len() == secret.len()));
            // A pseudo-random subset of size k..=n in a shuffled order.
            let mut order: Vec<usize> = (0..n).collect();
            let r = pick.index(usize::MAX);
            for i in (1..n).rev() {
                order.swap(i, (r >> (i % 32)) % (i + 1));
            }
            let take = (k + extra).min(n);
            let subset: Vec<ByteShare> = order[..take].iter().map(|&i| shares[i].clone()).collect();
            for kernel2 in Kernel::available() {
                prop_assert_eq!(&reconstruct_with_kernel(&subset, k, kernel2).unwrap(), &secret);
            }
        }
    }
}

#[test]
fn large_secret_crosses_chunk_boundaries() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let secret: Vec<u8> = (0..100_003u32).map(|i| (i * 31 + i / 7) as u8).collect();
    let shares = split(&secret, Params::new(5, 9).unwrap(), &mut rng).unwrap();
    assert_eq!(reconstruct(&shares[4..], 5).unwrap(), secret);
}

#[test]
fn parameter_errors_are_typed() {
    assert!(matches!(
        Params::new(4, 3),
        Err(Error::InvalidParams { k: 4, n: 3 })
    ));
    assert!(matches!(
        Params::new(1, 3),
        Err(Error::InvalidParams { k: 1, n: 3 })
    ));
    assert!(matches!(
        Params::new(2, 256),
        Err(Error::InvalidParams { k: 2, n: 256 })
    ));
    assert!(Params::new(255, 255).is_ok());
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    assert!(matches!(
        split(&[], Params::new(2, 3).unwrap(), &mut rng),
        Err(Error::EmptySecret)
    ));
}

#[test]
fn bad_share_sets_are_typed_errors() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let shares = split(b"secret", Params::new(3, 5).unwrap(), &mut rng).unwrap();
    assert!(matches!(
        reconstruct(&shares[..2], 3),
        Err(Error::NotEnoughShares { need: 3, got: 2 })
    ));
    let dup = vec![shares[0].clone(), shares[1].clone(), shares[0].clone()];
    assert!(matches!(
        reconstruct(&dup, 3),
        Err(Error::DuplicateShare { x: 1 })
    ));
    let mut zero = shares[..3].to_vec();
    zero[2].x = 0;
    assert!(matches!(
        reconstruct(&zero, 3),
        Err(Error::InvalidShareIndex { x: 0 })
    ));
    let mut short = shares[..3].to_vec();
    short[1].bytes.pop();
    assert!(matches!(
        reconstruct(&short, 3),
        Err(Error::ShareLengthMismatch { x: 2, .. })
    ));
}

#[test]
fn every_constant_in_the_field_survives_all_share_positions() {
    // All 256 byte values with the maximum n: every x-coordinate 1..=255 is exercised.
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let secret: Vec<u8> = (0..=255u8).collect();
    let shares = split(&secret, Params::new(2, 255).unwrap(), &mut rng).unwrap();
    for pair in shares.windows(2).step_by(17) {
        assert_eq!(reconstruct(pair, 2).unwrap(), secret);
    }
}
