//! Threshold Ed25519 signing keys: FROST (RFC 9591, `FROST(Ed25519, SHA-512)`), with the key
//! made by distributed key generation among the keepers, so that no keeper, no client and no
//! `T − 1` keepers together ever hold it.
//!
//! Key generation is the two-round Pedersen DKG of the `frost-ed25519` crate, run by the
//! keepers with the user's client relaying their messages. Round-2 packages carry secret shares,
//! so each is sealed for its recipient keeper ([`PeerKeys`]): AES-256-GCM under a key from the
//! static Diffie–Hellman of the two keepers' ristretto255 keys, bound to the key id, the sender
//! and the recipient. The relaying client sees only the public round-1 commitments.
//!
//! The relay must also not show different keepers different round-1 packages (a broadcast it
//! could split, for example by starting a keeper's key generation twice and passing each
//! package to different keepers). So every keeper binds the digest of the whole round-1
//! transcript it saw, its own package included, into the sealing of its round-2 packages: a
//! keeper that saw another transcript cannot open them, and the key generation fails, naming
//! the sender, instead of ending in keys that do not fit together.
//!
//! The cluster's capability key is a FROST key too, dealt to the keepers when the cluster is
//! made ([`deal`]); it signs capabilities for logged-in users.
//!
//! Signing is FROST's two rounds: each of `T` keepers commits to fresh nonces
//! ([`commit`]), the client builds the signing package, each keeper signs with the nonces of its
//! commitment ([`sign_share`], the nonces are used once), and the client aggregates
//! ([`aggregate`]). A keeper whose share does not verify against its public verifying share is
//! named. The signature is a plain Ed25519 signature (RFC 8032) under the group key.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use frost_ed25519 as frost;
use frost_ed25519::keys::dkg;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

pub use frost_ed25519::keys::{KeyPackage, PublicKeyPackage};
pub use frost_ed25519::round1::SigningNonces;

/// Why a key generation or a signature failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// A message that does not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// FROST refused a step (wrong package count, a commitment that does not verify, ...).
    #[error("FROST: {0}")]
    Frost(String),
    /// Keepers whose signature shares do not verify.
    #[error("keeper(s) {0:?} sent signature shares that do not verify")]
    Cheaters(Vec<u8>),
    /// A keeper number outside 1..=m, or a package from or to the wrong keeper.
    #[error("keeper {0} is not part of this key")]
    Keeper(u8),
    /// A sealed round-2 package that does not open: altered, or for another keeper or key.
    #[error("a sealed key-generation package from keeper {0} does not open")]
    Sealed(u8),
}

/// Read a FROST message that must be exactly its own encoding. FROST's decoders read a message
/// and ignore whatever follows it, so each message had endless encodings, and a keeper would
/// sign, record or forward bytes that are not the message it checked.
fn exact<T, B: AsRef<[u8]>>(
    bytes: &[u8],
    what: &'static str,
    read: impl FnOnce(&[u8]) -> Result<T, frost::Error>,
    write: impl FnOnce(&T) -> Option<B>,
) -> Result<T, SigningError> {
    let value = read(bytes).map_err(|_| SigningError::Malformed(what))?;
    if write(&value).as_ref().map(AsRef::as_ref) != Some(bytes) {
        return Err(SigningError::Malformed(what));
    }
    Ok(value)
}

fn signing_package_from(bytes: &[u8]) -> Result<frost::SigningPackage, SigningError> {
    exact(
        bytes,
        "signing package",
        frost::SigningPackage::deserialize,
        |p| p.serialize().ok(),
    )
}

fn frost_err(e: frost::Error) -> SigningError {
    SigningError::Frost(e.to_string())
}

/// Keeper `j`'s FROST identifier.
///
/// # Errors
/// [`SigningError::Keeper`] for 0.
pub fn identifier(j: u8) -> Result<frost::Identifier, SigningError> {
    frost::Identifier::try_from(u16::from(j)).map_err(|_| SigningError::Keeper(j))
}

fn keeper_of(id: &frost::Identifier) -> u8 {
    // Identifiers are made from keeper numbers only: the scalar's first byte is the number.
    id.serialize()[0]
}

/// A keeper's static ristretto255 key for sealing key-generation packages to other keepers, and
/// the other keepers' public keys (from the cluster configuration).
pub struct PeerKeys {
    me: u8,
    secret: Zeroizing<[u8; 32]>,
    peers: Vec<RistrettoPoint>,
}

impl std::fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerKeys")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// A fresh peer key: the secret (sealed with a keeper's secrets) and its public key.
pub fn peer_key<R: RngCore + CryptoRng>(rng: &mut R) -> (Zeroizing<[u8; 32]>, [u8; 32]) {
    let s = Scalar::random(rng);
    let public = (RistrettoPoint::mul_base(&s)).compress().to_bytes();
    (Zeroizing::new(s.to_bytes()), public)
}

impl PeerKeys {
    /// Keeper `me`'s keys: its secret and every keeper's public key, keeper 1 first.
    ///
    /// # Errors
    /// [`SigningError::Malformed`] for a key that is not a scalar or a point, or
    /// [`SigningError::Keeper`] if `me` has no public key in `peers`.
    pub fn new(me: u8, secret: &[u8; 32], peers: &[[u8; 32]]) -> Result<PeerKeys, SigningError> {
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*secret))
            .ok_or(SigningError::Malformed("peer secret key"))?;
        let peers = peers
            .iter()
            .map(|p| {
                CompressedRistretto(*p)
                    .decompress()
                    .ok_or(SigningError::Malformed("peer public key"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if me == 0 || peers.get(usize::from(me) - 1) != Some(&RistrettoPoint::mul_base(&s)) {
            return Err(SigningError::Keeper(me));
        }
        Ok(PeerKeys {
            me,
            secret: Zeroizing::new(s.to_bytes()),
            peers,
        })
    }

    /// Keepers in the cluster.
    pub fn count(&self) -> u8 {
        self.peers.len() as u8
    }

    fn cipher(
        &self,
        other: u8,
        from: u8,
        to: u8,
        context: &[u8],
    ) -> Result<Aes256Gcm, SigningError> {
        let peer = self
            .peers
            .get(usize::from(other).wrapping_sub(1))
            .ok_or(SigningError::Keeper(other))?;
        let s = Scalar::from_canonical_bytes(*self.secret).expect("checked in new");
        let shared = Zeroizing::new((peer * s).compress().to_bytes());
        let hk = hkdf::Hkdf::<sha2::Sha512>::new(Some(context), &*shared);
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(
            &[b"obscura dkg seal v1".as_slice(), &[from, to]].concat(),
            &mut *key,
        )
        .expect("32 bytes is a valid HKDF-SHA512 length");
        Ok(Aes256Gcm::new_from_slice(&*key).expect("32-byte key"))
    }

    fn aad(from: u8, to: u8, context: &[u8]) -> Vec<u8> {
        [b"obscura/dkg/v1".as_slice(), &[from, to], context].concat()
    }

    /// Seal `plain` for keeper `to`, in the key generation named by `context`.
    ///
    /// # Errors
    /// [`SigningError::Keeper`] for an unknown recipient.
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        to: u8,
        context: &[u8],
        plain: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, SigningError> {
        let cipher = self.cipher(to, self.me, to, context)?;
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &Self::aad(self.me, to, context),
                },
            )
            .map_err(|_| SigningError::Sealed(self.me))?;
        Ok([nonce.as_slice(), &ct].concat())
    }

    /// Open a package keeper `from` sealed for this keeper.
    ///
    /// # Errors
    /// [`SigningError::Sealed`] if it does not open.
    pub fn open(
        &self,
        from: u8,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SigningError> {
        if sealed.len() < 12 {
            return Err(SigningError::Sealed(from));
        }
        let cipher = self.cipher(from, from, self.me, context)?;
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[..12]),
                Payload {
                    msg: &sealed[12..],
                    aad: &Self::aad(from, self.me, context),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SigningError::Sealed(from))
    }
}

/// A package and the keeper it is from or to.
pub type Addressed = (u8, Vec<u8>);

/// A keeper's state between key-generation rounds. Secret; kept in memory only.
pub enum DkgState {
    /// After round 1, with the package this keeper broadcast.
    Round1(dkg::round1::SecretPackage, Vec<u8>),
    /// After round 2, with the digest of the round-1 transcript it saw.
    Round2(dkg::round2::SecretPackage, [u8; 32]),
}

/// The digest of a round-1 transcript: every keeper's package, this keeper's own included, in
/// keeper order.
fn transcript(me: u8, own: &[u8], others: &[(u8, Vec<u8>)]) -> [u8; 32] {
    let mut all: Vec<(u8, &[u8])> = others.iter().map(|(j, p)| (*j, p.as_slice())).collect();
    all.push((me, own));
    all.sort_by_key(|(j, _)| *j);
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 dkg round-1 transcript");
    for (j, p) in all {
        h.update(&[j]);
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

fn with_transcript(context: &[u8], transcript: &[u8; 32]) -> Vec<u8> {
    [context, transcript.as_slice()].concat()
}

/// Key generation, round 1 at keeper `me` of `m`, any `t` to sign: the state to keep and the
/// package to broadcast.
///
/// # Errors
/// [`SigningError::Frost`] for `t < 2` or `t > m`.
pub fn dkg_start<R: RngCore + CryptoRng>(
    me: u8,
    m: u8,
    t: u8,
    rng: &mut R,
) -> Result<(DkgState, Vec<u8>), SigningError> {
    let (secret, package) =
        dkg::part1(identifier(me)?, u16::from(m), u16::from(t), rng).map_err(frost_err)?;
    let package = package.serialize().map_err(frost_err)?;
    Ok((DkgState::Round1(secret, package.clone()), package))
}

fn round1_map(
    me: u8,
    round1: &[(u8, Vec<u8>)],
) -> Result<BTreeMap<frost::Identifier, dkg::round1::Package>, SigningError> {
    let mut map = BTreeMap::new();
    for (j, bytes) in round1 {
        if *j == me {
            return Err(SigningError::Keeper(*j));
        }
        let p = exact(
            bytes,
            "round-1 package",
            dkg::round1::Package::deserialize,
            |p| p.serialize().ok(),
        )?;
        if map.insert(identifier(*j)?, p).is_some() {
            return Err(SigningError::Keeper(*j));
        }
    }
    Ok(map)
}

/// Key generation, round 2: given every other keeper's round-1 package, the packages to send,
/// each sealed for its recipient and bound to the round-1 transcript this keeper saw.
///
/// # Errors
/// [`SigningError::Frost`] (a commitment's proof of knowledge fails, a wrong count),
/// [`SigningError::Malformed`], [`SigningError::Keeper`].
pub fn dkg_round2<R: RngCore + CryptoRng>(
    state: DkgState,
    keys: &PeerKeys,
    context: &[u8],
    round1: &[(u8, Vec<u8>)],
    rng: &mut R,
) -> Result<(DkgState, Vec<Addressed>), SigningError> {
    let DkgState::Round1(secret, own) = state else {
        return Err(SigningError::Frost("round 2 asked twice".into()));
    };
    let map = round1_map(keys.me, round1)?;
    let seen = transcript(keys.me, &own, round1);
    let (secret, packages) = dkg::part2(secret, &map).map_err(frost_err)?;
    let context = with_transcript(context, &seen);
    let mut out = Vec::with_capacity(packages.len());
    for (id, p) in packages {
        let to = keeper_of(&id);
        let plain = Zeroizing::new(p.serialize().map_err(frost_err)?);
        out.push((to, keys.seal(to, &context, &plain, rng)?));
    }
    Ok((DkgState::Round2(secret, seen), out))
}

/// Key generation, last step: this keeper's key package and the group's public key package.
///
/// # Errors
/// [`SigningError::Sealed`] for a package that does not open (altered, or sealed by a keeper
/// that saw another round-1 transcript), [`SigningError::Frost`] for a share that does not
/// match its sender's commitment or round-1 packages other than those of round 2.
pub fn dkg_finish(
    state: &DkgState,
    keys: &PeerKeys,
    context: &[u8],
    round1: &[(u8, Vec<u8>)],
    round2: &[(u8, Vec<u8>)],
) -> Result<(KeyPackage, PublicKeyPackage), SigningError> {
    let DkgState::Round2(secret, seen) = state else {
        return Err(SigningError::Frost("finish asked before round 2".into()));
    };
    let map1 = round1_map(keys.me, round1)?;
    let context = with_transcript(context, seen);
    let mut map2 = BTreeMap::new();
    for (from, sealed) in round2 {
        let plain = keys.open(*from, &context, sealed)?;
        let p = exact(
            &plain,
            "round-2 package",
            dkg::round2::Package::deserialize,
            |p| p.serialize().ok(),
        )?;
        if map2.insert(identifier(*from)?, p).is_some() {
            return Err(SigningError::Keeper(*from));
        }
    }
    dkg::part3(secret, &map1, &map2).map_err(frost_err)
}

/// What [`deal`] makes: every keeper's serialized key package, keeper 1 first, and the public
/// key package.
pub type Dealt = (Vec<Zeroizing<Vec<u8>>>, PublicKeyPackage);

/// A FROST key dealt by one party to `m` keepers, any `t` to sign (the cluster's capability key,
/// made when the cluster is: the dealer sees the key then, as it sees the token keys). Returns
/// keeper `j`'s key package (serialized) at `j − 1`, and the public key package.
///
/// # Errors
/// [`SigningError::Frost`] unless `2 ≤ t ≤ m`.
pub fn deal<R: RngCore + CryptoRng>(m: u8, t: u8, rng: &mut R) -> Result<Dealt, SigningError> {
    let (shares, public) = frost::keys::generate_with_dealer(
        u16::from(m),
        u16::from(t),
        frost::keys::IdentifierList::Default,
        &mut *rng,
    )
    .map_err(frost_err)?;
    let mut packages = Vec::with_capacity(usize::from(m));
    for j in 1..=m {
        let share = shares
            .get(&identifier(j)?)
            .ok_or(SigningError::Keeper(j))?
            .clone();
        let key = KeyPackage::try_from(share).map_err(frost_err)?;
        packages.push(key_package_bytes(&key)?);
    }
    Ok((packages, public))
}

/// The message of a signing package, which a signer checks before it signs.
///
/// # Errors
/// [`SigningError::Malformed`].
pub fn package_message(package: &[u8]) -> Result<Vec<u8>, SigningError> {
    signing_package_from(package).map(|p| p.message().clone())
}

/// The 32-byte Ed25519 public key of a key package.
pub fn public_key(package: &PublicKeyPackage) -> [u8; 32] {
    package
        .verifying_key()
        .serialize()
        .expect("a verifying key serializes")
        .try_into()
        .expect("32 bytes")
}

/// Signing, round 1 at a keeper: fresh nonces to keep (once) and the commitment to send.
///
/// # Errors
/// [`SigningError::Frost`] if the commitment does not serialize.
pub fn commit<R: RngCore + CryptoRng>(
    key: &KeyPackage,
    rng: &mut R,
) -> Result<(SigningNonces, Vec<u8>), SigningError> {
    let (nonces, commitment) = frost::round1::commit(key.signing_share(), rng);
    Ok((nonces, commitment.serialize().map_err(frost_err)?))
}

/// Check that `bytes` is a signing commitment, exactly encoded: what a client checks of each
/// keeper's before it builds a signing package of them, so that one malformed commitment
/// leaves its keeper out instead of failing the package.
///
/// # Errors
/// [`SigningError::Malformed`].
pub fn check_commitment(bytes: &[u8]) -> Result<(), SigningError> {
    exact(
        bytes,
        "commitment",
        frost::round1::SigningCommitments::deserialize,
        |c| c.serialize().ok(),
    )
    .map(|_| ())
}

/// The signing package the client sends to every signer: the message and the commitments of
/// keepers `(j, commitment)`.
///
/// # Errors
/// [`SigningError::Malformed`], [`SigningError::Keeper`].
pub fn signing_package(
    message: &[u8],
    commitments: &[(u8, Vec<u8>)],
) -> Result<Vec<u8>, SigningError> {
    let mut map = BTreeMap::new();
    for (j, bytes) in commitments {
        let c = exact(
            bytes,
            "commitment",
            frost::round1::SigningCommitments::deserialize,
            |c| c.serialize().ok(),
        )?;
        if map.insert(identifier(*j)?, c).is_some() {
            return Err(SigningError::Keeper(*j));
        }
    }
    frost::SigningPackage::new(map, message)
        .serialize()
        .map_err(frost_err)
}

/// Signing, round 2 at a keeper: its signature share over `package` with the nonces of its
/// commitment (consumed).
///
/// # Errors
/// [`SigningError::Malformed`]; [`SigningError::Frost`] if the package lacks this keeper's
/// commitment or has too few.
pub fn sign_share(
    key: &KeyPackage,
    nonces: SigningNonces,
    package: &[u8],
) -> Result<Vec<u8>, SigningError> {
    let package = signing_package_from(package)?;
    let share = frost::round2::sign(&package, &nonces, key).map_err(frost_err)?;
    Ok(share.serialize())
}

/// Aggregate signature shares `(j, share)` into an Ed25519 signature, checking each share
/// against keeper `j`'s verifying share; keepers whose shares fail are named.
///
/// # Errors
/// [`SigningError::Cheaters`], [`SigningError::Malformed`], [`SigningError::Frost`].
pub fn aggregate(
    package: &[u8],
    shares: &[(u8, Vec<u8>)],
    public: &PublicKeyPackage,
) -> Result<[u8; 64], SigningError> {
    let package = signing_package_from(package)?;
    let mut map = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (j, bytes) in shares {
        match exact(
            bytes,
            "signature share",
            frost::round2::SignatureShare::deserialize,
            |s| Some(s.serialize()),
        ) {
            Ok(s) => {
                map.insert(identifier(*j)?, s);
            }
            Err(_) => unreadable.push(*j),
        }
    }
    if !unreadable.is_empty() {
        return Err(SigningError::Cheaters(unreadable));
    }
    match frost::aggregate_custom(&package, &map, public, frost::CheaterDetection::AllCheaters) {
        Ok(sig) => Ok(sig
            .serialize()
            .map_err(frost_err)?
            .try_into()
            .map_err(|_| SigningError::Malformed("signature"))?),
        Err(frost::Error::InvalidSignatureShare { culprits }) => Err(SigningError::Cheaters(
            culprits.iter().map(keeper_of).collect(),
        )),
        Err(e) => Err(frost_err(e)),
    }
}

/// Serialized forms, for storing a key package and sending a public one.
///
/// # Errors
/// [`SigningError::Frost`].
pub fn key_package_bytes(key: &KeyPackage) -> Result<Zeroizing<Vec<u8>>, SigningError> {
    key.serialize().map(Zeroizing::new).map_err(frost_err)
}

/// See [`key_package_bytes`].
///
/// # Errors
/// [`SigningError::Malformed`].
pub fn key_package_from(bytes: &[u8]) -> Result<KeyPackage, SigningError> {
    // The encoding holds the secret share: wiped once compared.
    exact(bytes, "key package", KeyPackage::deserialize, |k| {
        k.serialize().ok().map(Zeroizing::new)
    })
}

/// See [`key_package_bytes`].
///
/// # Errors
/// [`SigningError::Frost`].
pub fn public_package_bytes(p: &PublicKeyPackage) -> Result<Vec<u8>, SigningError> {
    p.serialize().map_err(frost_err)
}

/// See [`key_package_bytes`].
///
/// # Errors
/// [`SigningError::Malformed`].
pub fn public_package_from(bytes: &[u8]) -> Result<PublicKeyPackage, SigningError> {
    exact(
        bytes,
        "public key package",
        PublicKeyPackage::deserialize,
        |p| p.serialize().ok(),
    )
}
