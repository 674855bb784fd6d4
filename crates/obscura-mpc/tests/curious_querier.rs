//! The masks are what make Stage-2 private against a curious querier.
//!
//! The querier knows its own query polynomials `q_j(x)`. The first values it sees of a
//! candidate are the nodes' round-0 openings, its distance shares `D_i` masked by `−ρ_i + Z_i`.
//! Without the masks, every such value gives it
//! `2t + 1` linear equations in the `64·(t + 1)` coefficients of the candidate's bit polynomials
//! `h_j(x)`: after 40 queries (200 equations for 192 unknowns, with n = 5, t = 2) it solves for
//! them and reads every hash bit off the constant terms. That is fewer queries than the 64 that
//! the distances alone would need. With the mask the same equations are inconsistent, the attack
//! recovers nothing, and the answer polynomials' non-constant coefficients are uniform.

use obscura_mpc::{node, share_hash, HashShare, NodeAnswer, NodeRequest, Querier, SearchParams};
use obscura_sharing::field::Fp;
use obscura_sharing::manifest::ImageId;
use obscura_sharing::prime::interpolate_coefficients;
use obscura_sharing::zero::{deal, ZeroSharingKeys};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const N: usize = 5;
const T: usize = 2;
const UNKNOWNS: usize = 64 * (T + 1);
const ID: ImageId = ImageId([9; 16]);

/// What a node without masks would open in round 0: its share of the distance.
fn opened_unmasked(request: &NodeRequest, stored: &HashShare) -> Fp {
    let q = &request.query.bits;
    stored
        .bits
        .iter()
        .zip(q)
        .map(|(&h, &q)| h + q - Fp::from(2) * q * h)
        .sum()
}

struct World {
    rng: ChaCha20Rng,
    keys: Vec<ZeroSharingKeys>,
    secret_hash: u64,
    stored: Vec<HashShare>,
}

fn world(seed: u64) -> World {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let keys = deal(N, T, &mut rng).unwrap();
    let secret_hash = rng.next_u64();
    let stored = share_hash(secret_hash, T, N, &mut rng).unwrap();
    World {
        rng,
        keys,
        secret_hash,
        stored,
    }
}

/// One query with a random hash, τ = 64 (every candidate a winner): the querier's state, the
/// requests it made (it knows them), what each node opened in round 0, and the answers.
fn query_full(
    w: &mut World,
    masked: bool,
) -> (Querier, u64, Vec<NodeRequest>, Vec<Fp>, Vec<NodeAnswer>) {
    let params = SearchParams {
        n: N,
        t: T,
        max_distance: 64,
        top: 1,
    };
    let q = w.rng.next_u64();
    let (querier, requests) = Querier::start(q, vec![ID], params, &mut w.rng).unwrap();
    if !masked {
        let opened = requests
            .iter()
            .map(|r| opened_unmasked(r, &w.stored[r.node as usize - 1]))
            .collect();
        return (querier, q, requests, opened, Vec::new());
    }
    let stored: Vec<Vec<Option<&HashShare>>> = w.stored.iter().map(|s| vec![Some(s)]).collect();
    let transcript = node::run_all(&w.keys, &requests, &stored).unwrap();
    let opened = transcript.rounds[0]
        .iter()
        .map(|o| o.values[0].unwrap())
        .collect();
    (querier, q, requests, opened, transcript.answers)
}

/// The transcript a querier keeps: its requests and the round-0 openings.
fn query(w: &mut World, masked: bool) -> (Vec<NodeRequest>, Vec<Fp>) {
    let (_, _, requests, opened, _) = query_full(w, masked);
    (requests, opened)
}

/// The attack: one equation per (query, node),
/// `D_i − Σ_j q_j(i) = Σ_j Σ_l c_{j,l} · i^l · (1 − 2·q_j(i))`,
/// solved for the `c_{j,l}` by Gaussian elimination mod p. Returns the recovered constant terms,
/// or `None` if the system is inconsistent.
fn attack(transcripts: &[(Vec<NodeRequest>, Vec<Fp>)]) -> Option<Vec<Fp>> {
    let mut rows: Vec<Vec<Fp>> = Vec::new();
    for (requests, answers) in transcripts {
        for (r, a) in requests.iter().zip(answers) {
            let x = Fp::from(u32::from(r.node));
            let mut row = vec![Fp::ZERO; UNKNOWNS + 1];
            let mut rhs = *a;
            for (j, &qj) in r.query.bits.iter().enumerate() {
                rhs -= qj;
                let factor = Fp::ONE - Fp::from(2) * qj;
                for l in 0..=T {
                    row[j * (T + 1) + l] = x.pow(l as u64) * factor;
                }
            }
            row[UNKNOWNS] = rhs;
            rows.push(row);
        }
    }
    // Row reduction.
    let mut pivot_row = 0;
    let mut pivots = Vec::new();
    for col in 0..UNKNOWNS {
        let Some(p) = (pivot_row..rows.len()).find(|&r| rows[r][col] != Fp::ZERO) else {
            continue;
        };
        rows.swap(pivot_row, p);
        let inv = rows[pivot_row][col].inv().unwrap();
        for v in rows[pivot_row].iter_mut() {
            *v *= inv;
        }
        for r in 0..rows.len() {
            if r != pivot_row && rows[r][col] != Fp::ZERO {
                let f = rows[r][col];
                let (a, b) = if r < pivot_row {
                    let (lo, hi) = rows.split_at_mut(pivot_row);
                    (&mut lo[r], &hi[0])
                } else {
                    let (lo, hi) = rows.split_at_mut(r);
                    (&mut hi[0], &lo[pivot_row])
                };
                for (x, &y) in a.iter_mut().zip(b.iter()) {
                    *x -= f * y;
                }
            }
        }
        pivots.push(col);
        pivot_row += 1;
    }
    // A row 0 = c with c ≠ 0 means no polynomials explain the answers.
    if rows[pivot_row..].iter().any(|r| r[UNKNOWNS] != Fp::ZERO) {
        return None;
    }
    if pivots.len() < UNKNOWNS {
        return None; // underdetermined
    }
    Some(
        (0..64)
            .map(|j| {
                let col = j * (T + 1);
                let r = pivots.iter().position(|&c| c == col).unwrap();
                rows[r][UNKNOWNS]
            })
            .collect(),
    )
}

fn bits_of(hash: u64) -> Vec<Fp> {
    (0..64)
        .map(|j| Fp::from(((hash >> (63 - j)) & 1) as u32))
        .collect()
}

#[test]
fn without_the_mask_40_queries_reveal_every_bit() {
    let mut w = world(1);
    let transcripts: Vec<_> = (0..40).map(|_| query(&mut w, false)).collect();
    let recovered = attack(&transcripts).expect("unmasked answers are consistent");
    assert_eq!(
        recovered,
        bits_of(w.secret_hash),
        "attack recovered the hash"
    );
}

#[test]
fn with_the_mask_the_same_attack_fails() {
    let mut w = world(1);
    let transcripts: Vec<_> = (0..40).map(|_| query(&mut w, true)).collect();
    assert!(
        attack(&transcripts).is_none(),
        "masked answers must not fit any bit polynomials"
    );
    // Even a square system (exactly as many equations as unknowns) gives garbage, not bits.
    let mut square: Vec<_> = transcripts.clone();
    square.truncate(UNKNOWNS / N + 1);
    let last = square.last_mut().unwrap();
    last.0.truncate(UNKNOWNS % N);
    last.1.truncate(UNKNOWNS % N);
    if let Some(rec) = attack(&square) {
        let right = rec
            .iter()
            .zip(bits_of(w.secret_hash))
            .filter(|(a, b)| *a == b)
            .count();
        assert!(
            right < 8,
            "{right} of 64 bits recovered from masked answers"
        );
    }
}

#[test]
fn masked_answers_still_give_the_right_distance() {
    let mut w = world(2);
    for _ in 0..20 {
        let (querier, q, _, _, answers) = query_full(&mut w, true);
        let ranked = querier.finish(answers).unwrap();
        assert_eq!(ranked.matches[0].distance, (q ^ w.secret_hash).count_ones());
    }
}

/// χ² of the top 4 bits against uniform is below mean + 6 sd (df = 15).
fn assert_uniform(hist: &[u64; 16], what: &str) {
    let e = hist.iter().sum::<u64>() as f64 / 16.0;
    let chi: f64 = hist.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
    assert!(chi < 15.0 + 6.0 * 30f64.sqrt(), "{what}: chi² = {chi}");
}

/// Over many queries of one candidate, every coefficient of the round-0 openings' polynomial
/// (the distance too) and each non-constant coefficient of the answer polynomial is uniform on
/// GF(p); the answer's constant is the distance.
#[test]
fn masked_answer_coefficients_are_uniform() {
    let mut w = world(3);
    let queries = 3000;
    let mut opened_cells = vec![[0u64; 16]; 2 * T + 1];
    let mut answer_cells = vec![[0u64; 16]; 2 * T];
    for _ in 0..queries {
        let (_, q, requests, opened, answers) = query_full(&mut w, true);
        let points: Vec<(u8, Fp)> = requests.iter().map(|r| r.node).zip(opened).collect();
        for (d, c) in interpolate_coefficients(&points)
            .unwrap()
            .iter()
            .enumerate()
        {
            opened_cells[d][(c.value() >> 27) as usize] += 1;
        }
        let points: Vec<(u8, Fp)> = answers
            .iter()
            .map(|a| (a.node, a.values[0].unwrap()[0]))
            .collect();
        let coeffs = interpolate_coefficients(&points).unwrap();
        assert_eq!(coeffs[0].value(), (q ^ w.secret_hash).count_ones());
        for (d, c) in coeffs[1..].iter().enumerate() {
            answer_cells[d][(c.value() >> 27) as usize] += 1;
        }
    }
    for (d, hist) in opened_cells.iter().enumerate() {
        assert_uniform(hist, &format!("round-0 coefficient {d}"));
    }
    for (d, hist) in answer_cells.iter().enumerate() {
        assert_uniform(hist, &format!("answer coefficient {}", d + 1));
    }
}
