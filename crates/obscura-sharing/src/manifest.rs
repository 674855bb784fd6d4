//! The owner-signed manifest of one stored image, and share verification against it.
//!
//! The manifest names, for every node, the digest of each share that node stores. A client
//! accepts a share only after checking it against a manifest whose owner signature it verified:
//! [`SignedManifest::verify`] is the only way to obtain a [`VerifiedManifest`], and only a
//! `VerifiedManifest` can check shares or rebuild an image, so skipping the signature check does
//! not compile.
//!
//! Share digests are BLAKE3 in derive-key mode over the image id, the node, the share's role and
//! the share bytes, so a share cannot be replayed under another image, node or role.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::bytes::{reconstruct, ByteShare, Params};
use crate::{compact, Error};

const SIGNING_DOMAIN: &[u8] = b"obscura/manifest/v1";
const SHARE_DIGEST_CONTEXT: &str = "obscura 2026 share digest v1";
const CONTENT_DIGEST_CONTEXT: &str = "obscura 2026 content digest v1";
/// Current encoding version.
const VERSION: u8 = 1;
/// Fixed part of the encoding: domain, version and every fixed-size field.
const FIXED_LEN: usize = SIGNING_DOMAIN.len() + 1 + 16 + 6 + 32 + 8 + 4 + 8 + 1;
const NODE_ENTRY_LEN: usize = 1 + 32 + 32;

/// A 128-bit random image identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(pub [u8; 16]);

impl ImageId {
    /// A fresh random id.
    pub fn random<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        ImageId(id)
    }
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageId({self})")
    }
}

impl std::str::FromStr for ImageId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        // Hex digits only: `u8::from_str_radix` alone also takes a sign ("+a"), which would
        // give one id many spellings.
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::MalformedManifest("image id must be 32 hex digits"));
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| Error::MalformedManifest("image id must be 32 hex digits"))?;
        }
        Ok(ImageId(id))
    }
}

/// What a node stores for an image, each with its own digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShareRole {
    /// The GF(2^8) share of the encoded image file.
    Image,
    /// The prime-field shares of the 64 hash bits.
    Hash,
}

impl ShareRole {
    fn tag(self) -> u8 {
        match self {
            ShareRole::Image => 1,
            ShareRole::Hash => 2,
        }
    }
}

/// How the encoded file is shared among the nodes: the manifest's `share_scheme`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Storage {
    /// Shamir over GF(2^8) ([`crate::bytes`]): every share as long as the file, and `k − 1`
    /// shares independent of it when the coefficients are uniform.
    #[default]
    Shamir,
    /// AES-256-GCM, Reed–Solomon pieces and a Shamir-shared key ([`crate::compact`]): every
    /// share about `1/k` of the file, hidden from `k − 1` nodes as well as AES hides it.
    Compact,
}

impl Storage {
    /// The manifest's identifier of the scheme.
    pub fn scheme(self) -> u8 {
        match self {
            Storage::Shamir => 1,
            Storage::Compact => 2,
        }
    }

    /// The scheme a manifest names, if it is one of these.
    pub fn from_scheme(scheme: u8) -> Option<Storage> {
        match scheme {
            1 => Some(Storage::Shamir),
            2 => Some(Storage::Compact),
            _ => None,
        }
    }

    /// Share `file` among `params.n()` nodes this way.
    ///
    /// # Errors
    /// [`Error::EmptySecret`] for an empty file.
    pub fn split<R: rand_core::RngCore + rand_core::CryptoRng>(
        self,
        file: &[u8],
        params: Params,
        rng: &mut R,
    ) -> Result<Vec<ByteShare>, Error> {
        match self {
            Storage::Shamir => crate::bytes::split(file, params, rng),
            Storage::Compact => compact::split(file, params, rng),
        }
    }
}

/// Digests of what node `node` stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeDigests {
    /// The node's x-coordinate.
    pub node: u8,
    /// Digest of its image share.
    pub image_share: [u8; 32],
    /// Digest of its hash-bit shares.
    pub hash_share: [u8; 32],
}

/// The digest of one share as recorded in a manifest.
pub fn share_digest(image: &ImageId, node: u8, role: ShareRole, bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(SHARE_DIGEST_CONTEXT);
    h.update(&image.0);
    h.update(&[node, role.tag()]);
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
    *h.finalize().as_bytes()
}

/// The digest of the original file, checked after reconstruction.
pub fn content_digest(bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CONTENT_DIGEST_CONTEXT);
    h.update(bytes);
    *h.finalize().as_bytes()
}

/// Per-image metadata, signed by the data owner. Scheme identifiers: the image shared by one of
/// the [`Storage`] schemes, pHash-64 bits shared over GF(2^31 − 1), BLAKE3 digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The image's id.
    pub image_id: ImageId,
    /// Shares needed to rebuild the image.
    pub k: u8,
    /// Nodes holding shares.
    pub n: u8,
    /// Degree of the hash-bit sharing (collusion bound).
    pub t: u8,
    /// Image-sharing scheme ([`Storage::scheme`]): 1 = Shamir over GF(2^8), 2 = compact.
    pub share_scheme: u8,
    /// Hash scheme: 1 = pHash-64.
    pub hash_scheme: u8,
    /// Digest algorithm: 1 = BLAKE3.
    pub digest_alg: u8,
    /// Digest of the original encoded file ([`content_digest`]).
    pub content_digest: [u8; 32],
    /// Length of the original encoded file.
    pub content_len: u64,
    /// Version of the token keys the postings were made with.
    pub token_key_version: u32,
    /// Unix time in seconds, as the owner's clock read it.
    pub created_at: u64,
    /// One entry per node, in node order.
    pub nodes: Vec<NodeDigests>,
}

impl Manifest {
    /// The manifest of one image's shares, made by `storage`: the content digest and, for node
    /// `x` = 1..=n, the digests of its image share and hash share (`hash_shares[x − 1]`,
    /// encoded).
    ///
    /// # Errors
    /// [`Error::MalformedManifest`] when the share lists do not hold nodes 1..=n in order, or
    /// `k`, `n`, `t` are inconsistent.
    #[allow(clippy::too_many_arguments)]
    pub fn for_shares(
        image_id: ImageId,
        storage: Storage,
        k: u8,
        t: u8,
        content: &[u8],
        image_shares: &[ByteShare],
        hash_shares: &[impl AsRef<[u8]>],
        token_key_version: u32,
        created_at: u64,
    ) -> Result<Manifest, Error> {
        if image_shares.len() != hash_shares.len() || image_shares.len() > 255 {
            return Err(Error::MalformedManifest(
                "image and hash shares must cover the same nodes",
            ));
        }
        let m = Manifest {
            image_id,
            k,
            n: image_shares.len() as u8,
            t,
            share_scheme: storage.scheme(),
            hash_scheme: 1,
            digest_alg: 1,
            content_digest: content_digest(content),
            content_len: content.len() as u64,
            token_key_version,
            created_at,
            nodes: image_shares
                .iter()
                .zip(hash_shares)
                .map(|(s, h)| NodeDigests {
                    node: s.x,
                    image_share: share_digest(&image_id, s.x, ShareRole::Image, &s.bytes),
                    hash_share: share_digest(&image_id, s.x, ShareRole::Hash, h.as_ref()),
                })
                .collect(),
        };
        m.validate()?;
        Ok(m)
    }

    /// The canonical encoding, which is what is signed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.nodes.len() * NODE_ENTRY_LEN);
        out.extend_from_slice(SIGNING_DOMAIN);
        out.push(VERSION);
        out.extend_from_slice(&self.image_id.0);
        out.extend_from_slice(&[
            self.k,
            self.n,
            self.t,
            self.share_scheme,
            self.hash_scheme,
            self.digest_alg,
        ]);
        out.extend_from_slice(&self.content_digest);
        out.extend_from_slice(&self.content_len.to_be_bytes());
        out.extend_from_slice(&self.token_key_version.to_be_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.push(self.nodes.len() as u8);
        for e in &self.nodes {
            out.push(e.node);
            out.extend_from_slice(&e.image_share);
            out.extend_from_slice(&e.hash_share);
        }
        out
    }

    /// Parse and validate a canonical encoding.
    ///
    /// # Errors
    /// [`Error::MalformedManifest`] for a wrong domain or version, truncation, trailing bytes,
    /// unknown schemes, or inconsistent `k, n, t` and node entries.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, Error> {
        let bad = Error::MalformedManifest;
        let mut r = Reader(bytes);
        if r.take(SIGNING_DOMAIN.len())? != SIGNING_DOMAIN {
            return Err(bad("not an Obscura manifest"));
        }
        if r.take(1)?[0] != VERSION {
            return Err(bad("unknown manifest version"));
        }
        let image_id = ImageId(r.array()?);
        let [k, n, t, share_scheme, hash_scheme, digest_alg] = r.array()?;
        let content_digest = r.array()?;
        let content_len = u64::from_be_bytes(r.array()?);
        let token_key_version = u32::from_be_bytes(r.array()?);
        let created_at = u64::from_be_bytes(r.array()?);
        let count = r.take(1)?[0];
        let mut nodes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            nodes.push(NodeDigests {
                node: r.take(1)?[0],
                image_share: r.array()?,
                hash_share: r.array()?,
            });
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let m = Manifest {
            image_id,
            k,
            n,
            t,
            share_scheme,
            hash_scheme,
            digest_alg,
            content_digest,
            content_len,
            token_key_version,
            created_at,
            nodes,
        };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = Error::MalformedManifest;
        if Storage::from_scheme(self.share_scheme).is_none()
            || (self.hash_scheme, self.digest_alg) != (1, 1)
        {
            return Err(bad("unknown scheme"));
        }
        if !(2 <= self.k && self.k <= self.n) || self.t == 0 || self.t >= self.n {
            return Err(bad("inconsistent k, n, t"));
        }
        if self.nodes.len() != self.n as usize
            || self
                .nodes
                .iter()
                .enumerate()
                .any(|(i, e)| e.node as usize != i + 1)
        {
            return Err(bad("node entries must be nodes 1..=n in order"));
        }
        Ok(())
    }

    /// Sign with the owner's key.
    ///
    /// # Errors
    /// [`Error::MalformedManifest`] if the manifest is inconsistent (see [`Manifest::decode`]).
    pub fn sign(self, owner: &SigningKey) -> Result<SignedManifest, Error> {
        self.validate()?;
        let signature = owner.sign(&self.encode()).to_bytes();
        Ok(SignedManifest {
            manifest: self,
            signature,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::MalformedManifest("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
}

/// A manifest and the owner's signature over its encoding, as nodes store it. Not yet trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    manifest: Manifest,
    signature: [u8; 64],
}

impl SignedManifest {
    /// `signature ‖ encoding`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.signature.to_vec();
        out.extend(self.manifest.encode());
        out
    }

    /// Parse `signature ‖ encoding`; the signature is not checked here.
    ///
    /// # Errors
    /// [`Error::MalformedManifest`] as [`Manifest::decode`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < 64 {
            return Err(Error::MalformedManifest("truncated"));
        }
        let (sig, body) = bytes.split_at(64);
        Ok(SignedManifest {
            manifest: Manifest::decode(body)?,
            signature: sig.try_into().expect("64 bytes"),
        })
    }

    /// The image id, readable before verification (for routing only).
    pub fn image_id(&self) -> ImageId {
        self.manifest.image_id
    }

    /// When the owner made it (its clock, Unix seconds), readable before verification: for a
    /// manifest a node verified when it stored it.
    pub fn created_at(&self) -> u64 {
        self.manifest.created_at
    }

    /// Check the owner's signature.
    ///
    /// # Errors
    /// [`Error::BadManifestSignature`] when it does not verify under `owner`.
    pub fn verify(self, owner: &VerifyingKey) -> Result<VerifiedManifest, Error> {
        let sig = Signature::from_bytes(&self.signature);
        owner
            .verify_strict(&self.manifest.encode(), &sig)
            .map_err(|_| Error::BadManifestSignature {
                image: self.manifest.image_id,
            })?;
        Ok(VerifiedManifest(self.manifest))
    }
}

/// A manifest whose owner signature verified. The only value that can check shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest(Manifest);

/// Why a node's share was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareFault {
    /// The node is not in the manifest.
    UnknownNode,
    /// The bytes do not match the manifest's digest.
    DigestMismatch,
}

/// A node whose share was refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Culprit {
    /// The node's x-coordinate.
    pub node: u8,
    /// What was wrong.
    pub fault: ShareFault,
}

impl std::fmt::Display for Culprit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.fault {
            ShareFault::UnknownNode => write!(f, "node {} is not in the manifest", self.node),
            ShareFault::DigestMismatch => write!(f, "node {} share failed its digest", self.node),
        }
    }
}

/// Proof that one share matched its owner-signed manifest: only
/// [`VerifiedManifest::check_share`] makes one, so code that stores a share can require it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedShare {
    image: ImageId,
    node: u8,
    role: ShareRole,
}

impl CheckedShare {
    /// The image the share is of.
    pub fn image(&self) -> ImageId {
        self.image
    }

    /// The node it is for.
    pub fn node(&self) -> u8 {
        self.node
    }

    /// Which share it is.
    pub fn role(&self) -> ShareRole {
        self.role
    }
}

impl VerifiedManifest {
    /// The verified contents.
    pub fn manifest(&self) -> &Manifest {
        &self.0
    }

    /// Check one share against the manifest.
    ///
    /// # Errors
    /// [`Error::BadShares`] naming the node.
    pub fn check_share(
        &self,
        node: u8,
        role: ShareRole,
        bytes: &[u8],
    ) -> Result<CheckedShare, Error> {
        let fault = match self.0.nodes.iter().find(|e| e.node == node) {
            None => ShareFault::UnknownNode,
            Some(e) => {
                let want = match role {
                    ShareRole::Image => &e.image_share,
                    ShareRole::Hash => &e.hash_share,
                };
                let got = share_digest(&self.0.image_id, node, role, bytes);
                if bool::from(subtle::ConstantTimeEq::ct_eq(&got[..], &want[..])) {
                    return Ok(CheckedShare {
                        image: self.0.image_id,
                        node,
                        role,
                    });
                }
                ShareFault::DigestMismatch
            }
        };
        Err(Error::BadShares {
            image: self.0.image_id,
            culprits: vec![Culprit { node, fault }],
        })
    }

    /// Split received image shares into those that verify and the culprits.
    pub fn partition_image_shares(&self, shares: Vec<ByteShare>) -> (Vec<ByteShare>, Vec<Culprit>) {
        let mut good = Vec::new();
        let mut culprits = Vec::new();
        for s in shares {
            match self.check_share(s.x, ShareRole::Image, &s.bytes) {
                Ok(_) => good.push(s),
                Err(Error::BadShares { culprits: c, .. }) => culprits.extend(c),
                Err(_) => unreachable!("check_share only reports bad shares"),
            }
        }
        (good, culprits)
    }

    /// Verify every share, rebuild the image from `k` good ones and check the result's digest.
    /// Bad shares are skipped as long as `k` good ones remain.
    ///
    /// # Errors
    /// [`Error::NotEnoughVerifiedShares`] naming every culprit when fewer than `k` verify;
    /// [`Error::ContentDigestMismatch`] if the result does not match (which a correct
    /// reconstruction of verified shares cannot produce).
    pub fn reconstruct(&self, shares: Vec<ByteShare>) -> Result<Vec<u8>, Error> {
        self.reconstruct_naming(shares).map(|(image, _)| image)
    }

    /// [`reconstruct`](Self::reconstruct), also returning the nodes whose shares were refused
    /// when the image could still be rebuilt without them, so a caller can name them.
    ///
    /// # Errors
    /// As [`reconstruct`](Self::reconstruct).
    pub fn reconstruct_naming(
        &self,
        shares: Vec<ByteShare>,
    ) -> Result<(Vec<u8>, Vec<Culprit>), Error> {
        let (good, culprits) = self.partition_image_shares(shares);
        let k = self.0.k as usize;
        if good.len() < k {
            return Err(Error::NotEnoughVerifiedShares {
                image: self.0.image_id,
                need: k,
                got: good.len(),
                culprits,
            });
        }
        let out = match Storage::from_scheme(self.0.share_scheme) {
            Some(Storage::Compact) => {
                compact::reconstruct(&good, k, self.0.n as usize, self.0.content_len)
            }
            Some(Storage::Shamir) => reconstruct(&good, k),
            None => Err(Error::MalformedManifest("unknown scheme")),
        }
        .map_err(|e| match e {
            // Verified shares that do not open: the owner made them so. No node is to blame.
            Error::CompactOpen => Error::ContentDigestMismatch {
                image: self.0.image_id,
            },
            e => e,
        })?;
        if out.len() as u64 != self.0.content_len || content_digest(&out) != self.0.content_digest {
            return Err(Error::ContentDigestMismatch {
                image: self.0.image_id,
            });
        }
        Ok((out, culprits))
    }
}
