//! The prime field GF(p), p = 2^31 − 1, on which hash bits are shared for Stage-2.
//!
//! A Mersenne prime makes reduction two shifts and adds: `x mod p = (x & p) + (x >> 31)`, folded
//! until it fits. Products of two elements fit in 62 bits, so dot products can add dozens of
//! partially reduced terms before reducing once.

use rand_core::{CryptoRng, RngCore};

/// The modulus, 2^31 − 1.
pub const P: u32 = 0x7fff_ffff;

/// An element of GF(2^31 − 1), always fully reduced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fp(u32);

/// `x mod p` for any `u64`.
#[inline]
pub fn reduce64(x: u64) -> u32 {
    let x = (x & P as u64) + (x >> 31); // < 2^34
    let x = (x & P as u64) + (x >> 31); // < 2^31 + 8
    let x = x as u32;
    if x >= P {
        x - P
    } else {
        x
    }
}

impl Fp {
    /// Zero.
    pub const ZERO: Fp = Fp(0);
    /// One.
    pub const ONE: Fp = Fp(1);

    /// `v mod p`.
    #[inline]
    pub fn new(v: u64) -> Fp {
        Fp(reduce64(v))
    }

    /// The canonical representative in `0..p`.
    #[inline]
    pub fn value(self) -> u32 {
        self.0
    }

    /// A uniformly random element (rejection sampling on 31 bits: exactly uniform).
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Fp {
        loop {
            let v = rng.next_u32() & P;
            if v != P {
                return Fp(v);
            }
        }
    }

    /// `self^e`.
    pub fn pow(self, mut e: u64) -> Fp {
        let (mut base, mut acc) = (self, Fp::ONE);
        while e > 0 {
            if e & 1 == 1 {
                acc *= base;
            }
            base *= base;
            e >>= 1;
        }
        acc
    }

    /// The multiplicative inverse, or `None` for zero.
    pub fn inv(self) -> Option<Fp> {
        (self.0 != 0).then(|| self.pow(u64::from(P) - 2))
    }
}

impl From<u32> for Fp {
    fn from(v: u32) -> Fp {
        Fp::new(u64::from(v))
    }
}

impl std::ops::Add for Fp {
    type Output = Fp;
    #[inline]
    fn add(self, o: Fp) -> Fp {
        let s = self.0 + o.0; // < 2^32
        Fp(if s >= P { s - P } else { s })
    }
}

impl std::ops::Sub for Fp {
    type Output = Fp;
    #[inline]
    fn sub(self, o: Fp) -> Fp {
        Fp(if self.0 >= o.0 {
            self.0 - o.0
        } else {
            self.0 + P - o.0
        })
    }
}

impl std::ops::Neg for Fp {
    type Output = Fp;
    #[inline]
    fn neg(self) -> Fp {
        Fp::ZERO - self
    }
}

impl std::ops::Mul for Fp {
    type Output = Fp;
    #[inline]
    fn mul(self, o: Fp) -> Fp {
        Fp(reduce64(u64::from(self.0) * u64::from(o.0)))
    }
}

impl std::ops::AddAssign for Fp {
    #[inline]
    fn add_assign(&mut self, o: Fp) {
        *self = *self + o;
    }
}

impl std::ops::SubAssign for Fp {
    #[inline]
    fn sub_assign(&mut self, o: Fp) {
        *self = *self - o;
    }
}

impl std::ops::MulAssign for Fp {
    #[inline]
    fn mul_assign(&mut self, o: Fp) {
        *self = *self * o;
    }
}

impl std::iter::Sum for Fp {
    fn sum<I: Iterator<Item = Fp>>(iter: I) -> Fp {
        iter.fold(Fp::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduction_matches_modulo() {
        for x in [
            0u64,
            1,
            P as u64 - 1,
            P as u64,
            P as u64 + 1,
            (P as u64) * (P as u64 - 1),
            u64::MAX,
            1 << 62,
        ] {
            assert_eq!(u64::from(reduce64(x)), x % P as u64, "{x}");
        }
    }

    #[test]
    fn inverse_and_arithmetic() {
        let a = Fp::new(123_456_789);
        let b = Fp::new(987_654_321);
        assert_eq!(a * a.inv().unwrap(), Fp::ONE);
        assert_eq!(a + b - b, a);
        assert_eq!(a - b + b, a);
        assert_eq!(-a + a, Fp::ZERO);
        assert_eq!(
            (a * b).value() as u64,
            123_456_789u64 * 987_654_321 % P as u64
        );
        assert_eq!(Fp::ZERO.inv(), None);
    }
}
