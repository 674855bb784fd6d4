//! The VOPRF key shared among keepers, and the client's side of a threshold evaluation.
//!
//! A key `k` is Shamir-shared over the scalars of ristretto255 with threshold `T`: keeper `j`
//! holds `k_j = f(j)` for a random polynomial `f` of degree `T − 1` with `f(0) = k`, and
//! publishes `k_j · G`. To evaluate, a client blinds its inputs once and sends the same batch to
//! `T` keepers; each answers `k_j · B_i` with a batched DLEQ proof against its public share. The
//! client checks every proof, then computes, per element, `r⁻¹ · Σ_j λ_j · (k_j · B_i)` with the
//! Lagrange coefficients `λ_j` at zero: that is `k · HashToGroup(x)`, exactly what one server
//! holding `k` would give. Fewer than `T` keepers know nothing about `k` (their shares are
//! uniformly random whatever `k` is), and no keeper sees an input.

use curve25519_dalek::ristretto::{RistrettoBasepointTable, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{MultiscalarMul, VartimeMultiscalarMul};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::oprf::{self, Blinded, Elements, Evaluation, ELEMENT_LEN};
use crate::Error;

/// Keeper `index`'s share of a key.
#[derive(Clone)]
pub struct KeyShare {
    /// The keeper, 1..=M: the x-coordinate of its share.
    pub index: u8,
    /// `f(index)`; secret.
    pub secret: Scalar,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyShare {{ index: {}, .. }}", self.index)
    }
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl KeyShare {
    /// From its stored form: the index and the canonical little-endian encoding of the secret.
    ///
    /// # Errors
    /// [`Error::Keepers`] for index 0 or a secret that is not a canonical non-zero scalar.
    pub fn from_bytes(index: u8, secret: &[u8; 32]) -> Result<KeyShare, Error> {
        let secret = Option::<Scalar>::from(Scalar::from_canonical_bytes(*secret))
            .filter(|s| *s != Scalar::ZERO)
            .ok_or_else(|| {
                Error::Keepers("a key share is not a canonical non-zero scalar".into())
            })?;
        if index == 0 {
            return Err(Error::Keepers("keeper index 0".into()));
        }
        Ok(KeyShare { index, secret })
    }

    /// The secret's canonical encoding, for sealing.
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret.to_bytes())
    }

    /// `k_j · G`, which clients check this keeper's proofs against.
    pub fn public(&self) -> RistrettoPoint {
        oprf::public_key(&self.secret)
    }
}

fn check_params(m: usize, t: usize) -> Result<(), Error> {
    if (1..=m).contains(&t) && m <= 255 {
        Ok(())
    } else {
        Err(Error::Params { m, t })
    }
}

/// Split `key` among `m` keepers so that any `t` of them evaluate it (a dealer: whoever calls
/// this sees the key).
///
/// # Errors
/// [`Error::Params`] unless `1 ≤ t ≤ m ≤ 255`.
pub fn deal<R: RngCore + CryptoRng>(
    key: &Scalar,
    m: usize,
    t: usize,
    rng: &mut R,
) -> Result<Vec<KeyShare>, Error> {
    check_params(m, t)?;
    let mut coefficients: Vec<Scalar> = std::iter::once(*key)
        .chain((1..t).map(|_| Scalar::random(rng)))
        .collect();
    let shares = (1..=m as u8)
        .map(|j| KeyShare {
            index: j,
            secret: eval_poly(&coefficients, Scalar::from(j)),
        })
        .collect();
    coefficients.zeroize();
    Ok(shares)
}

/// The parts of a key rotation for one node key: the re-keying factor `ρ` and a fresh sharing
/// of zero, `z_j = g(j)` with `g(0) = 0`. Keeper `j`'s next share is `ρ · k_j + z_j`, which lies
/// on `ρ · f + g`: a polynomial of the same degree whose value at zero is `ρ · k`, the next key.
/// Nobody computes `k` or `ρ · k`, and a share of one version and a share of the other do not
/// combine, because of `g`. Whoever holds `ρ` and `T` shares of the old key can compute the next
/// key: `ρ` is as secret as a key share.
pub struct Rekey {
    /// `ρ`, non-zero.
    pub factor: Scalar,
    /// `g(1..=m)`.
    pub zero_shares: Vec<Scalar>,
}

impl Drop for Rekey {
    fn drop(&mut self) {
        self.factor.zeroize();
        self.zero_shares.zeroize();
    }
}

impl Rekey {
    /// Draw `ρ` and a sharing of zero among `m` keepers with threshold `t`.
    ///
    /// # Errors
    /// [`Error::Params`] unless `1 ≤ t ≤ m ≤ 255`.
    pub fn random<R: RngCore + CryptoRng>(m: usize, t: usize, rng: &mut R) -> Result<Rekey, Error> {
        check_params(m, t)?;
        let factor = loop {
            let s = Scalar::random(rng);
            if s != Scalar::ZERO {
                break s;
            }
        };
        // A sharing of zero is a dealing of the key zero.
        let zero_shares = deal(&Scalar::ZERO, m, t, rng)?
            .iter()
            .map(|s| s.secret)
            .collect();
        Ok(Rekey {
            factor,
            zero_shares,
        })
    }

    /// Keeper `share.index`'s share of the next key.
    ///
    /// # Errors
    /// [`Error::Keepers`] when the keeper has no zero share here, or the result is zero.
    pub fn share(&self, share: &KeyShare) -> Result<KeyShare, Error> {
        let z = self.zero_share(share.index)?;
        let secret = self.factor * share.secret + z;
        if secret == Scalar::ZERO {
            return Err(Error::Keepers("the next key share is zero".into()));
        }
        Ok(KeyShare {
            index: share.index,
            secret,
        })
    }

    /// Keeper `j`'s public share of the next key, from its current one: `ρ · P_j + z_j · G`.
    ///
    /// # Errors
    /// [`Error::Keepers`] when keeper `j` has no zero share here.
    pub fn public_share(&self, j: u8, current: &RistrettoPoint) -> Result<RistrettoPoint, Error> {
        let z = self.zero_share(j)?;
        Ok(self.factor * current + oprf::public_key(&z))
    }

    /// An element of the current key, `k · H(x)`, as the next key makes it: `ρ · k · H(x)`.
    pub fn element(&self, current: &RistrettoPoint) -> RistrettoPoint {
        self.factor * current
    }

    /// `z_j · G` for every keeper `j = 1..=m`: what every keeper receives with its own `z_j`
    /// to check that the shares are a sharing of zero ([`check_zero_commitments`]).
    pub fn zero_commitments(&self) -> Vec<RistrettoPoint> {
        self.zero_shares.iter().map(oprf::public_key).collect()
    }

    fn zero_share(&self, j: u8) -> Result<Scalar, Error> {
        j.checked_sub(1)
            .and_then(|i| self.zero_shares.get(usize::from(i)))
            .copied()
            .ok_or_else(|| Error::Keepers(format!("no zero share for keeper {j}")))
    }
}

fn eval_poly(coefficients: &[Scalar], x: Scalar) -> Scalar {
    coefficients
        .iter()
        .rev()
        .fold(Scalar::ZERO, |acc, c| acc * x + c)
}

/// Check that `commitments` (`z_j · G` for `j = 1..=m`) lie on one polynomial of degree below
/// `t` whose value at zero is the identity — that is, the `z_j` are a sharing of zero with
/// threshold `t` — and that keeper `me`'s own share `z` is the one committed. Then adding the
/// `z_j` to the key shares changes the shares but not the key, whatever the rotation's sender
/// intended.
///
/// # Errors
/// [`Error::Keepers`] saying which check failed; [`Error::Params`] for `t` out of range.
pub fn check_zero_commitments(
    commitments: &[RistrettoPoint],
    t: usize,
    me: u8,
    z: &Scalar,
) -> Result<(), Error> {
    let m = commitments.len();
    check_params(m, t)?;
    let mine = usize::from(me)
        .checked_sub(1)
        .and_then(|i| commitments.get(i))
        .ok_or_else(|| Error::Keepers(format!("no commitment for keeper {me}")))?;
    if *mine != oprf::public_key(z) {
        return Err(Error::Keepers(
            "this keeper's zero share is not the one committed".into(),
        ));
    }
    let first: Vec<u8> = (1..=t as u8).collect();
    let at = |x: Scalar| -> Result<RistrettoPoint, Error> {
        Ok(lagrange_at(&first, x)?
            .iter()
            .zip(commitments)
            .map(|(l, c)| l * c)
            .sum())
    };
    if at(Scalar::ZERO)? != RistrettoPoint::default() {
        return Err(Error::Keepers(
            "the zero shares do not share zero: the key would change".into(),
        ));
    }
    for (i, c) in commitments.iter().enumerate().skip(t) {
        if at(Scalar::from(i as u8 + 1))? != *c {
            return Err(Error::Keepers(format!(
                "keeper {}'s zero share is off the sharing's polynomial",
                i + 1
            )));
        }
    }
    Ok(())
}

/// The Lagrange coefficients at zero for the keepers `indices` (distinct, nonzero).
///
/// # Errors
/// [`Error::Params`] for an empty list, [`Error::Keepers`] for a zero or repeated index.
pub fn lagrange_at_zero(indices: &[u8]) -> Result<Vec<Scalar>, Error> {
    lagrange_at(indices, Scalar::ZERO)
}

/// The Lagrange coefficients at `x` for the keepers `indices`:
/// `L_i(x) = Π_{j ≠ i} (x − x_j) / (x_i − x_j)`.
///
/// # Errors
/// As [`lagrange_at_zero`].
pub fn lagrange_at(indices: &[u8], x: Scalar) -> Result<Vec<Scalar>, Error> {
    if indices.is_empty() {
        return Err(Error::Params { m: 0, t: 0 });
    }
    for (a, &i) in indices.iter().enumerate() {
        if i == 0 || indices[..a].contains(&i) {
            return Err(Error::Keepers(format!(
                "keeper index {i} is zero or repeated"
            )));
        }
    }
    Ok(indices
        .iter()
        .map(|&i| {
            let xi = Scalar::from(i);
            let (num, den) = indices.iter().filter(|&&j| j != i).fold(
                (Scalar::ONE, Scalar::ONE),
                |(num, den), &j| {
                    let xj = Scalar::from(j);
                    (num * (x - xj), den * (xi - xj))
                },
            );
            num * den.invert()
        })
        .collect())
}

/// Rebuild a key from `t` or more shares (for tests and for a dealer's own check; keepers
/// never do this).
///
/// # Errors
/// As [`lagrange_at_zero`].
pub fn recover_key(shares: &[KeyShare]) -> Result<Scalar, Error> {
    let indices: Vec<u8> = shares.iter().map(|s| s.index).collect();
    let lambdas = lagrange_at_zero(&indices)?;
    Ok(lambdas.iter().zip(shares).map(|(l, s)| l * s.secret).sum())
}

/// A client's batch of blinded inputs for a threshold evaluation.
pub struct BlindedBatch {
    blinded: Vec<Blinded>,
    elements: Elements,
}

/// A keeper's answer once its proof has been checked.
pub struct Verified {
    keeper: u8,
    elements: Vec<RistrettoPoint>,
}

impl Verified {
    /// The keeper that answered.
    pub fn keeper(&self) -> u8 {
        self.keeper
    }
}

impl BlindedBatch {
    /// Blind every input with its own fresh blind.
    ///
    /// # Errors
    /// [`Error::Input`] for an input of 2^16 bytes or more; [`Error::Batch`] for an empty batch.
    pub fn new<R: RngCore + CryptoRng>(inputs: &[&[u8]], rng: &mut R) -> Result<Self, Error> {
        let blinded = inputs
            .iter()
            .map(|x| oprf::blind(x, rng))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_blinded(blinded)
    }

    /// A batch of inputs blinded elsewhere.
    ///
    /// # Errors
    /// [`Error::Batch`] for an empty batch or one of 2^16 or more elements.
    pub fn from_blinded(blinded: Vec<Blinded>) -> Result<Self, Error> {
        if blinded.is_empty() || blinded.len() > oprf::MAX_BATCH {
            return Err(Error::Batch);
        }
        let elements = Elements::from_points(blinded.iter().map(|b| b.element).collect());
        Ok(BlindedBatch { blinded, elements })
    }

    /// The blinded elements, serialized, in input order: what every keeper is sent.
    pub fn to_send(&self) -> &[[u8; ELEMENT_LEN]] {
        self.elements.bytes()
    }

    /// Inputs in the batch.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Never true (a batch holds at least one input).
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Check keeper `keeper`'s answer against its public key share.
    ///
    /// # Errors
    /// [`Error::Keeper`] naming the keeper, for a wrong-sized answer, an element that does not
    /// decode, or a proof that fails.
    pub fn verify(
        &self,
        keeper: u8,
        public_share: &RistrettoPoint,
        answer: &Evaluation,
    ) -> Result<Verified, Error> {
        verify_answer(&self.elements, keeper, public_share, answer)
    }

    /// Combine `t` verified answers from distinct keepers and unblind: per input,
    /// `k · HashToGroup(input)`, in input order. Answers beyond the first `t` are not used.
    ///
    /// # Errors
    /// [`Error::NotEnoughKeepers`] with fewer than `t` answers, [`Error::Keepers`] when two come
    /// from the same keeper.
    pub fn finish(&self, answers: &[Verified], t: usize) -> Result<Vec<RistrettoPoint>, Error> {
        let (answers, lambdas) = combine(answers, t)?;
        let mut blinds: Vec<Scalar> = self.blinded.iter().map(|b| b.blind).collect();
        Scalar::batch_invert(&mut blinds);
        let out = blinds
            .iter()
            .enumerate()
            .map(|(i, inv)| {
                // Secret scalars (the blinds): the constant-time multiscalar multiplication.
                RistrettoPoint::multiscalar_mul(
                    lambdas.iter().map(|l| l * inv),
                    answers.iter().map(|a| a.elements[i]),
                )
            })
            .collect();
        blinds.zeroize();
        Ok(out)
    }
}

/// Check one keeper's answer to `elements` against its public share.
fn verify_answer(
    elements: &Elements,
    keeper: u8,
    public_share: &RistrettoPoint,
    answer: &Evaluation,
) -> Result<Verified, Error> {
    oprf::verify_batch(public_share, elements, &answer.elements, &answer.proof)
        .map(|elements| Verified { keeper, elements })
        .map_err(|e| Error::Keeper {
            keeper,
            reason: Box::new(e),
        })
}

/// The first `t` answers and their Lagrange coefficients at zero.
fn combine(answers: &[Verified], t: usize) -> Result<(&[Verified], Vec<Scalar>), Error> {
    if answers.len() < t || t == 0 {
        return Err(Error::NotEnoughKeepers {
            need: t.max(1),
            got: answers.len(),
        });
    }
    let answers = &answers[..t];
    let indices: Vec<u8> = answers.iter().map(|a| a.keeper).collect();
    Ok((answers, lagrange_at_zero(&indices)?))
}

/// A node key's public key `k · G`, rebuilt from the keepers' public shares, with a table for
/// fast constant-time multiplication (see [`AdditiveBatch`]).
pub struct PublicKey {
    point: RistrettoPoint,
    table: RistrettoBasepointTable,
}

impl PublicKey {
    /// From the public shares of keepers `1..=m` (in order), which must lie on one polynomial of
    /// degree `t − 1` in the exponent: a dealer that published inconsistent shares is caught
    /// here, before any evaluation could depend on which keepers answer.
    ///
    /// # Errors
    /// [`Error::Params`] unless `1 ≤ t ≤ m`, [`Error::Keepers`] for inconsistent shares.
    pub fn from_shares(shares: &[RistrettoPoint], t: usize) -> Result<PublicKey, Error> {
        let m = shares.len();
        check_params(m, t)?;
        let first: Vec<u8> = (1..=t as u8).collect();
        let at = |x: Scalar| -> Result<RistrettoPoint, Error> {
            let l = lagrange_at(&first, x)?;
            Ok(RistrettoPoint::vartime_multiscalar_mul(&l, &shares[..t]))
        };
        for j in t + 1..=m {
            if at(Scalar::from(j as u8))? != shares[j - 1] {
                return Err(Error::Keepers(format!(
                    "keeper {j}'s public share is not on the others' polynomial"
                )));
            }
        }
        let point = at(Scalar::ZERO)?;
        Ok(PublicKey {
            table: RistrettoBasepointTable::create(&point),
            point,
        })
    }

    /// `k · G`.
    pub fn point(&self) -> RistrettoPoint {
        self.point
    }
}

/// A client's batch blinded additively: `B = HashToGroup(x) + r · G`, uniformly random like a
/// multiplicative blind, but made with the fixed-base table, and unblinded as
/// `Σ λ_j Z_j − r · PK` with a table for `PK`, so a token costs the client two fixed-base
/// multiplications instead of two variable-base ones. Keepers cannot tell the difference: they
/// evaluate and prove exactly as RFC 9497's `BlindEvaluate`, and the output is the same
/// `k · HashToGroup(x)`. Sound only in verifiable mode, where `PK` is known and every answer is
/// proven to use the key behind it.
pub struct AdditiveBatch {
    blinds: Vec<Scalar>,
    elements: Elements,
}

impl Drop for AdditiveBatch {
    fn drop(&mut self) {
        self.blinds.zeroize();
    }
}

impl AdditiveBatch {
    /// Blind every input with its own fresh `r`.
    ///
    /// # Errors
    /// [`Error::Input`] for an input of 2^16 bytes or more; [`Error::Batch`] for an empty batch
    /// or one of 2^16 or more.
    pub fn new<R: RngCore + CryptoRng>(inputs: &[&[u8]], rng: &mut R) -> Result<Self, Error> {
        if inputs.is_empty() || inputs.len() > oprf::MAX_BATCH {
            return Err(Error::Batch);
        }
        let mut blinds = Vec::with_capacity(inputs.len());
        let mut points = Vec::with_capacity(inputs.len());
        for x in inputs {
            if x.len() > oprf::MAX_BATCH {
                return Err(Error::Input);
            }
            let r = oprf::random_scalar(rng);
            points.push(oprf::hash_to_group(x) + RistrettoPoint::mul_base(&r));
            blinds.push(r);
        }
        Ok(AdditiveBatch {
            blinds,
            elements: Elements::from_points(points),
        })
    }

    /// The blinded elements, serialized, in input order: what every keeper is sent.
    pub fn to_send(&self) -> &[[u8; ELEMENT_LEN]] {
        self.elements.bytes()
    }

    /// Check keeper `keeper`'s answer against its public key share, as
    /// [`BlindedBatch::verify`].
    ///
    /// # Errors
    /// [`Error::Keeper`] naming the keeper.
    pub fn verify(
        &self,
        keeper: u8,
        public_share: &RistrettoPoint,
        answer: &Evaluation,
    ) -> Result<Verified, Error> {
        verify_answer(&self.elements, keeper, public_share, answer)
    }

    /// Combine `t` verified answers and unblind: per input, `k · HashToGroup(input)`.
    ///
    /// # Errors
    /// As [`BlindedBatch::finish`].
    pub fn finish(
        &self,
        answers: &[Verified],
        t: usize,
        pk: &PublicKey,
    ) -> Result<Vec<RistrettoPoint>, Error> {
        let (answers, lambdas) = combine(answers, t)?;
        Ok(self
            .blinds
            .iter()
            .enumerate()
            .map(|(i, r)| {
                // The answers and the coefficients are public: variable time is fine there;
                // the blind is secret, and the table multiplication is constant-time.
                let z = RistrettoPoint::vartime_multiscalar_mul(
                    &lambdas,
                    answers.iter().map(|a| a.elements[i]),
                );
                z - &pk.table * r
            })
            .collect())
    }
}
