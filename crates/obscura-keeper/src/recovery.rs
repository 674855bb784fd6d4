//! Share recovery: `T` keepers give keeper `j` back its share `k_j = f(j)` of a key (a keeper
//! replaced, or upgraded to a build its old sealed shares do not open under), without `j` or
//! any of them learning another keeper's share, and without anyone rebuilding the key.
//!
//! Helper `i` of the set `H` (`|H| = T`, `j ∉ H`) sends `j`
//!
//! ```text
//! c_i = L_i(j) · k_i + Σ_{m ∈ H, m ≠ i} ±r_{im}      (+ when i < m, − when i > m)
//! ```
//!
//! where `r_{im} = r_{mi}` is a scalar only `i` and `m` derive ([`mask`]): from the
//! Diffie–Hellman of the keys their evidence binds, made at start and held inside the attested
//! build, bound to the recovery, the key and the pair.
//! The masks cancel in the sum, so `Σ c_i = Σ L_i(j) · k_i = f(j) = k_j`; each `c_i` alone is
//! uniformly random to `j`, which knows no `r_{im}`.
//!
//! Each helper also publishes `R_{im} = r_{im} · G`. Then `j` checks every part on its own:
//! `c_i · G = L_i(j) · (k_i · G) + Σ ±R_{im}` against the helper's public share, and
//! `R_{im} = R_{mi}` between the two helpers that share a mask. A helper that sends a wrong part
//! is named; two that disagree on a mask are named together (either may be the liar). The
//! commitments reveal nothing of `k_i`: `c_i − L_i(j) · k_i` stays a discrete logarithm.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use zeroize::Zeroize;

use crate::threshold::{lagrange_at, KeyShare};
use crate::Error;

/// One helper's part of a recovery, for one key.
#[derive(Clone)]
pub struct Part {
    /// `c_i`; only the recovering keeper may see it.
    pub contribution: Scalar,
    /// `R_{im}` for every other helper `m`, in the helpers' order.
    pub masks: Vec<RistrettoPoint>,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("masks", &self.masks.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.contribution.zeroize();
    }
}

/// `+1` when `i < m`, `−1` otherwise: the sign of `r_{im}` in helper `i`'s part.
fn sign(i: u8, m: u8, r: Scalar) -> Scalar {
    if i < m {
        r
    } else {
        -r
    }
}

/// Check `helpers` and `keeper`: distinct, nonzero, `keeper` not among them. Returns the
/// Lagrange coefficients at `keeper`.
fn coefficients(keeper: u8, helpers: &[u8]) -> Result<Vec<Scalar>, Error> {
    if keeper == 0 || helpers.contains(&keeper) {
        return Err(Error::Keepers(format!(
            "keeper {keeper} cannot recover its share from a set that includes it"
        )));
    }
    lagrange_at(helpers, Scalar::from(keeper))
}

/// The mask helpers `a` and `b` share in the recovery `label`, from their Diffie–Hellman secret
/// `shared`: the same whichever of the two derives it.
pub fn mask(shared: &[u8; 32], label: &[u8], a: u8, b: u8) -> Scalar {
    let hk = hkdf::Hkdf::<sha2::Sha512>::new(Some(label), shared);
    let mut wide = zeroize::Zeroizing::new([0u8; 64]);
    hk.expand(
        &[
            b"obscura recovery mask v1".as_slice(),
            &[a.min(b), a.max(b)],
        ]
        .concat(),
        &mut *wide,
    )
    .expect("64 bytes is a valid HKDF-SHA512 length");
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Helper `share.index`'s part of keeper `keeper`'s share, with the helpers `helpers` (itself
/// among them); `mask_with(m)` gives the mask it shares with helper `m` ([`mask`]).
///
/// # Errors
/// [`Error::Keepers`] if the helper is not in `helpers`, `keeper` is, or an index repeats; or
/// what `mask_with` fails with.
pub fn part(
    share: &KeyShare,
    keeper: u8,
    helpers: &[u8],
    mut mask_with: impl FnMut(u8) -> Result<Scalar, Error>,
) -> Result<Part, Error> {
    let lambdas = coefficients(keeper, helpers)?;
    let me = share.index;
    let at = helpers
        .iter()
        .position(|&h| h == me)
        .ok_or_else(|| Error::Keepers(format!("keeper {me} is not one of the helpers")))?;
    let mut contribution = lambdas[at] * share.secret;
    let mut masks = Vec::with_capacity(helpers.len() - 1);
    for &m in helpers.iter().filter(|&&m| m != me) {
        let mut r = mask_with(m)?;
        contribution += sign(me, m, r);
        masks.push(RistrettoPoint::mul_base(&r));
        r.zeroize();
    }
    Ok(Part {
        contribution,
        masks,
    })
}

/// Why a recovery's parts were refused, naming whom.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Blame {
    /// The parts are not one per helper, or the helpers are not a valid set.
    #[error("{0}")]
    Malformed(String),
    /// This helper's part does not fit its public share and its published masks.
    #[error("helper keeper {0}'s part does not match its public share")]
    Part(u8),
    /// These two helpers published different commitments to the mask they share.
    #[error("helper keepers {0} and {1} disagree on the mask they share")]
    Masks(u8, u8),
    /// Every part checks, and the sum is not the share expected (the public shares given do
    /// not lie on one polynomial).
    #[error("the parts do not add up to the expected public share")]
    Sum,
}

/// Keeper `keeper`'s share from the helpers' `parts` (in the order of `helpers`), after checking
/// each against the helper's public share in `publics` (same order) and the sum against
/// `expected`, keeper `keeper`'s public share.
///
/// # Errors
/// [`Blame`], naming the helper or helpers at fault.
pub fn combine(
    keeper: u8,
    helpers: &[u8],
    publics: &[RistrettoPoint],
    parts: &[Part],
    expected: &RistrettoPoint,
) -> Result<KeyShare, Blame> {
    let lambdas = coefficients(keeper, helpers).map_err(|e| Blame::Malformed(e.to_string()))?;
    let t = helpers.len();
    if parts.len() != t || publics.len() != t || parts.iter().any(|p| p.masks.len() != t - 1) {
        return Err(Blame::Malformed(format!(
            "a recovery from {t} helpers needs {t} parts of {} masks each",
            t.saturating_sub(1)
        )));
    }
    // R_{im} as helper i published it: masks skip the helper itself.
    let mask = |a: usize, b: usize| parts[a].masks[if b < a { b } else { b - 1 }];
    for a in 0..t {
        for b in a + 1..t {
            if mask(a, b) != mask(b, a) {
                return Err(Blame::Masks(helpers[a], helpers[b]));
            }
        }
    }
    for (a, (part, public)) in parts.iter().zip(publics).enumerate() {
        let (scalars, points): (Vec<Scalar>, Vec<RistrettoPoint>) =
            std::iter::once((lambdas[a], *public))
                .chain(
                    (0..t)
                        .filter(|&b| b != a)
                        .map(|b| (sign(helpers[a], helpers[b], Scalar::ONE), mask(a, b))),
                )
                .unzip();
        let fits = RistrettoPoint::vartime_multiscalar_mul(&scalars, &points);
        if RistrettoPoint::mul_base(&part.contribution) != fits {
            return Err(Blame::Part(helpers[a]));
        }
    }
    let mut secret: Scalar = parts.iter().map(|p| p.contribution).sum();
    let bytes = zeroize::Zeroizing::new(secret.to_bytes());
    secret.zeroize();
    let share = KeyShare::from_bytes(keeper, &bytes).map_err(|_| Blame::Sum)?;
    if share.public() != *expected {
        return Err(Blame::Sum);
    }
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threshold::deal;
    use rand_chacha::rand_core::SeedableRng;

    struct Cluster {
        shares: Vec<KeyShare>,
        /// The secret each pair of keepers shares.
        shared: std::collections::HashMap<(u8, u8), [u8; 32]>,
    }

    fn cluster(m: u8, t: usize) -> Cluster {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let key = Scalar::random(&mut rng);
        let shares = deal(&key, usize::from(m), t, &mut rng).unwrap();
        let mut shared = std::collections::HashMap::new();
        for a in 1..=m {
            for b in a + 1..=m {
                let mut s = [0u8; 32];
                rand_chacha::rand_core::RngCore::fill_bytes(&mut rng, &mut s);
                shared.insert((a, b), s);
            }
        }
        Cluster { shares, shared }
    }

    impl Cluster {
        fn part_of(
            &self,
            helper: u8,
            keeper: u8,
            helpers: &[u8],
            label: &[u8],
        ) -> Result<Part, Error> {
            let share = &self.shares[usize::from(helper - 1)];
            part(share, keeper, helpers, |m| {
                Ok(mask(
                    &self.shared[&(helper.min(m), helper.max(m))],
                    label,
                    helper,
                    m,
                ))
            })
        }

        fn parts(&self, keeper: u8, helpers: &[u8], label: &[u8]) -> Vec<Part> {
            helpers
                .iter()
                .map(|&h| self.part_of(h, keeper, helpers, label).unwrap())
                .collect()
        }

        fn publics(&self, helpers: &[u8]) -> Vec<RistrettoPoint> {
            helpers
                .iter()
                .map(|&h| self.shares[usize::from(h - 1)].public())
                .collect()
        }
    }

    #[test]
    fn any_t_helpers_give_a_keeper_exactly_its_share() {
        let c = cluster(5, 3);
        for (keeper, helpers) in [(1, vec![2, 3, 4]), (5, vec![4, 1, 3]), (3, vec![1, 2, 5])] {
            let parts = c.parts(keeper, &helpers, b"recovery 1");
            let expected = c.shares[usize::from(keeper - 1)].public();
            let share = combine(keeper, &helpers, &c.publics(&helpers), &parts, &expected).unwrap();
            assert_eq!(share.secret, c.shares[usize::from(keeper - 1)].secret);
            assert_eq!(share.index, keeper);
        }
    }

    #[test]
    fn a_part_alone_does_not_show_the_helpers_share() {
        // Without the masks, L_i(j)⁻¹ · c_i would be helper i's share.
        let c = cluster(5, 3);
        let helpers = [2, 3, 4];
        let lambdas = lagrange_at(&helpers, Scalar::from(1u8)).unwrap();
        for (a, p) in c.parts(1, &helpers, b"recovery 1").iter().enumerate() {
            let unmasked = lambdas[a].invert() * p.contribution;
            assert_ne!(unmasked, c.shares[usize::from(helpers[a] - 1)].secret);
        }
        // And two recoveries of the same share use different masks.
        let again = c.parts(1, &helpers, b"recovery 2");
        let first = c.parts(1, &helpers, b"recovery 1");
        assert_ne!(first[0].contribution, again[0].contribution);
    }

    #[test]
    fn a_helper_with_a_wrong_part_is_named() {
        let c = cluster(5, 3);
        let helpers = [2, 3, 4];
        let expected = c.shares[0].public();
        let mut parts = c.parts(1, &helpers, b"r");
        parts[1].contribution += Scalar::ONE;
        assert_eq!(
            combine(1, &helpers, &c.publics(&helpers), &parts, &expected).unwrap_err(),
            Blame::Part(3)
        );
        // A helper that shifts its mask's commitment to cover a wrong part is caught by the
        // helper that shares the mask.
        let mut parts = c.parts(1, &helpers, b"r");
        parts[2].contribution += Scalar::ONE;
        parts[2].masks[0] += RistrettoPoint::mul_base(&-Scalar::ONE);
        assert_eq!(
            combine(1, &helpers, &c.publics(&helpers), &parts, &expected).unwrap_err(),
            Blame::Masks(2, 4)
        );
    }

    #[test]
    fn a_wrong_expected_share_or_set_is_refused() {
        let c = cluster(5, 3);
        let helpers = [2, 3, 4];
        let parts = c.parts(1, &helpers, b"r");
        assert_eq!(
            combine(
                1,
                &helpers,
                &c.publics(&helpers),
                &parts,
                &c.shares[4].public()
            )
            .unwrap_err(),
            Blame::Sum
        );
        assert!(matches!(
            combine(
                1,
                &helpers[..2],
                &c.publics(&helpers[..2]),
                &parts[..2],
                &c.shares[0].public()
            ),
            Err(Blame::Malformed(_))
        ));
        assert!(c.part_of(2, 2, &helpers, b"r").is_err());
        assert!(c.part_of(1, 5, &helpers, b"r").is_err());
    }
}
