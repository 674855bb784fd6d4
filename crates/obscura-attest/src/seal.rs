//! Sealing to an attested party: HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305) to the key an [`Appraisal`] binds.
//!
//! The only way to name a recipient is an appraisal made by [`crate::Verifier::appraise_party`],
//! so a secret cannot reach a key whose evidence was not appraised.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{hexser, Appraisal};

type Kem = X25519HkdfSha256;

/// Domain for the HPKE `info`: every sealed message names what it is for.
const INFO_DOMAIN: &[u8] = b"obscura attested seal v1 ";

/// A party's HPKE key pair, made at start; the public half goes in its evidence's report data.
pub struct PartyKey {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for PartyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartyKey({}, <redacted>)", hex::encode(self.public))
    }
}

impl PartyKey {
    /// A fresh key pair.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> PartyKey {
        let mut ikm = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *ikm);
        let (secret, public) = Kem::derive_keypair(&*ikm);
        PartyKey {
            public: public.to_bytes().into(),
            secret,
        }
    }

    /// The key pair derived from `seed`, a 32-byte secret: how a person's key (a clean-room
    /// result's recipient) is kept in a file.
    pub fn from_seed(seed: &[u8; 32]) -> PartyKey {
        let (secret, public) = Kem::derive_keypair(seed);
        PartyKey {
            public: public.to_bytes().into(),
            secret,
        }
    }

    /// The public key, X25519.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// X25519 of this key and another party's public key `peer`: a secret only the two
    /// holders share (parties that both hold attested keys derive pairwise masks from it).
    /// `None` for a peer key of small order, whose result would be known to anyone.
    pub fn agree(&self, peer: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let secret = Zeroizing::new(<[u8; 32]>::from(self.secret.to_bytes()));
        let shared = Zeroizing::new(
            curve25519_dalek::montgomery::MontgomeryPoint(*peer)
                .mul_clamped(*secret)
                .to_bytes(),
        );
        (shared.iter().any(|&b| b != 0)).then_some(shared)
    }

    /// Opens a message sealed to this key for `purpose`.
    ///
    /// # Errors
    /// [`SealError::Open`] when it was sealed to another key, for another purpose, or altered.
    pub fn open(&self, purpose: &[u8], sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc)
            .map_err(|_| SealError::Open)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.secret,
            &encapped,
            &info(purpose),
            &sealed.ciphertext,
            &[],
        )
        .map_err(|_| SealError::Open)
    }
}

/// A message sealed to an appraised party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The HPKE encapsulated key.
    #[serde(with = "hexser")]
    pub enc: Vec<u8>,
    /// The AEAD ciphertext.
    #[serde(with = "hexser")]
    pub ciphertext: Vec<u8>,
}

/// Why sealing or opening failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The appraisal binds no party key (it was made by [`crate::Verifier::appraise`] with a
    /// bare report data).
    #[error("the appraisal binds no party key to seal to")]
    NotBound,
    /// HPKE refused the key.
    #[error("the party key is not an X25519 public key")]
    Key,
    /// The message does not open under this key and purpose.
    #[error("the sealed message does not open (another key, another purpose, or altered)")]
    Open,
}

fn info(purpose: &[u8]) -> Vec<u8> {
    [INFO_DOMAIN, purpose].concat()
}

/// Seals `plaintext` for `purpose` to a party that is not appraised: a clean-room result's
/// recipient, a person whose key the data owner approved (in the work's manifest). Whoever calls
/// it vouches for the key; everything sealed to a server goes through [`seal`] instead.
///
/// # Errors
/// [`SealError::Key`] if `key` is not an X25519 public key.
pub fn seal_to_recipient<R: RngCore + CryptoRng>(
    key: &[u8; 32],
    purpose: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Sealed, SealError> {
    seal_to(key, purpose, plaintext, rng)
}

/// Seals `plaintext` for `purpose` to the key `appraisal` binds.
///
/// # Errors
/// [`SealError::NotBound`] for an appraisal without a party key.
pub fn seal<R: RngCore + CryptoRng>(
    appraisal: &Appraisal,
    purpose: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Sealed, SealError> {
    let key = appraisal.party_key().ok_or(SealError::NotBound)?;
    seal_to(key, purpose, plaintext, rng)
}

fn seal_to<R: RngCore + CryptoRng>(
    key: &[u8],
    purpose: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Sealed, SealError> {
    let public = <Kem as hpke::Kem>::PublicKey::from_bytes(key).map_err(|_| SealError::Key)?;
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &public,
        &info(purpose),
        plaintext,
        &[],
        rng,
    )
    .map_err(|_| SealError::Key)?;
    Ok(Sealed {
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}
