//! Shamir sharing over GF(2^31 − 1): the hash bits of Stage-2 and the querier's bits.

use rand_core::{CryptoRng, RngCore};

use crate::field::Fp;
use crate::Error;

/// Share each of `secrets` with its own random polynomial of degree `t`; returns, for each node
/// x = 1..=n, the vector of its shares (`out[x − 1][j] = f_j(x)`).
///
/// # Errors
/// [`Error::InvalidDegree`] unless `1 ≤ t < n ≤ 255`.
pub fn share_values<R: RngCore + CryptoRng>(
    secrets: &[Fp],
    t: usize,
    n: usize,
    rng: &mut R,
) -> Result<Vec<Vec<Fp>>, Error> {
    if !(1 <= t && t < n && n <= 255) {
        return Err(Error::InvalidDegree { t, n });
    }
    let mut out = vec![Vec::with_capacity(secrets.len()); n];
    let mut coeffs = vec![Fp::ZERO; t];
    for &s in secrets {
        coeffs.iter_mut().for_each(|c| *c = Fp::random(rng));
        for (x, node) in out.iter_mut().enumerate() {
            node.push(eval_with_constant(s, &coeffs, Fp::from(x as u32 + 1)));
        }
    }
    Ok(out)
}

/// `c0 + c[0]·x + c[1]·x² + …` by Horner's rule.
pub fn eval_with_constant(c0: Fp, higher: &[Fp], x: Fp) -> Fp {
    higher.iter().rev().fold(Fp::ZERO, |acc, &c| (acc + c) * x) + c0
}

/// The Lagrange weights that give f(0) from values at `xs` (distinct, non-zero).
///
/// # Errors
/// [`Error::InvalidShareIndex`] for x = 0 and [`Error::DuplicateShare`] for a repeated x.
pub fn lagrange_at_zero(xs: &[u8]) -> Result<Vec<Fp>, Error> {
    lagrange_at(xs, 0)
}

/// The Lagrange weights that give f(x) from values at `xs` (distinct, non-zero):
/// `Π_{j≠i} (x − x_j) / (x_i − x_j)` for each `x_i`.
///
/// # Errors
/// As [`lagrange_at_zero`].
pub fn lagrange_at(xs: &[u8], x: u8) -> Result<Vec<Fp>, Error> {
    crate::check_share_indices(xs)?;
    let x = Fp::from(u32::from(x));
    Ok(xs
        .iter()
        .map(|&xi| {
            let xi = Fp::from(u32::from(xi));
            let (num, den) = xs
                .iter()
                .map(|&xj| Fp::from(u32::from(xj)))
                .filter(|&xj| xj != xi)
                .fold((Fp::ONE, Fp::ONE), |(num, den), xj| {
                    (num * (x - xj), den * (xi - xj))
                });
            num * den.inv().expect("distinct x")
        })
        .collect())
}

/// f(0) from the points `(x, f(x))`; exact when `f` has degree < `points.len()`.
///
/// # Errors
/// As [`lagrange_at_zero`].
pub fn interpolate_at_zero(points: &[(u8, Fp)]) -> Result<Fp, Error> {
    let xs: Vec<u8> = points.iter().map(|p| p.0).collect();
    Ok(lagrange_at_zero(&xs)?
        .into_iter()
        .zip(points)
        .map(|(l, &(_, y))| l * y)
        .sum())
}

/// All coefficients of the polynomial of degree < `points.len()` through `points` (Newton form
/// expanded), lowest degree first. Used by tests and audits that inspect answer polynomials.
///
/// # Errors
/// As [`lagrange_at_zero`].
pub fn interpolate_coefficients(points: &[(u8, Fp)]) -> Result<Vec<Fp>, Error> {
    let xs: Vec<u8> = points.iter().map(|p| p.0).collect();
    crate::check_share_indices(&xs)?;
    let m = points.len();
    let mut coeffs = vec![Fp::ZERO; m];
    for (i, &(xi, yi)) in points.iter().enumerate() {
        // basis_i(x) = Π_{j≠i} (x − x_j) / (x_i − x_j)
        let xi = Fp::from(u32::from(xi));
        let mut basis = vec![Fp::ONE];
        let mut den = Fp::ONE;
        for (j, &(xj, _)) in points.iter().enumerate() {
            if i == j {
                continue;
            }
            let xj = Fp::from(u32::from(xj));
            let mut next = vec![Fp::ZERO; basis.len() + 1];
            for (d, &b) in basis.iter().enumerate() {
                next[d + 1] += b;
                next[d] -= b * xj;
            }
            basis = next;
            den *= xi - xj;
        }
        let w = yi * den.inv().expect("distinct x");
        for (c, b) in coeffs.iter_mut().zip(basis) {
            *c += w * b;
        }
    }
    Ok(coeffs)
}
