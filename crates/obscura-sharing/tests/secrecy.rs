//! k − 1 shares reveal nothing: for a fixed secret byte, the joint distribution of any k − 1
//! shares is uniform. Each byte position of a long constant secret is an independent trial, so
//! one split of 1 MiB gives 2^20 samples.

use obscura_sharing::bytes::{reconstruct, split, Params};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Pearson's chi-square statistic against the uniform distribution over `counts.len()` cells.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// Reject uniformity above mean + 6 standard deviations (df = cells − 1); a correct sharing fails
/// this about once in 10^9 runs.
fn limit(cells: usize) -> f64 {
    let df = (cells - 1) as f64;
    df + 6.0 * (2.0 * df).sqrt()
}

#[test]
fn two_shares_of_a_3_of_5_sharing_are_jointly_uniform() {
    const LEN: usize = 1 << 20;
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed);
    for secret_byte in [0u8, 0xa7, 0xff] {
        let secret = vec![secret_byte; LEN];
        let shares = split(&secret, Params::new(3, 5).unwrap(), &mut rng).unwrap();
        // Every pair of k − 1 = 2 shares, joint over 65536 cells.
        for (a, b) in [(0, 1), (1, 4), (2, 3)] {
            let mut joint = vec![0u64; 1 << 16];
            for (x, y) in shares[a].bytes.iter().zip(&shares[b].bytes) {
                joint[(*x as usize) << 8 | *y as usize] += 1;
            }
            let chi = chi_square(&joint);
            assert!(
                chi < limit(joint.len()),
                "secret {secret_byte:#x}, shares {a},{b}: chi² = {chi:.0}"
            );
        }
        // Control: three shares determine the byte, so the statistic must explode.
        let rebuilt = reconstruct(&shares[..3], 3).unwrap();
        let mut hist = vec![0u64; 256];
        rebuilt.iter().for_each(|&v| hist[v as usize] += 1);
        assert!(chi_square(&hist) > 100.0 * limit(256));
    }
}
