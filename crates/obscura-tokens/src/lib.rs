//! Stage-1 of Obscura's search: band tokens.
//!
//! A 64-bit pHash is cut into 8 bands of 8 bits (band `i` = DCT row `i`). With HMAC tokens, for
//! each node, band and key version there is a separate key; a stored image is posted at node `x`
//! under the 8 tokens `PRF(key[x][band][version], "obscura/band/v1" ‖ band ‖ value)`, truncated
//! to 16 bytes. With VOPRF tokens, keepers hold one cluster key per version and node `x`'s token
//! hashes `x` with the evaluated element ([`voprf_input`], [`voprf_token`]). Either way no node
//! holds a key, so no node can build the 256-entry dictionary of a band (DESIGN invariant 1).
//!
//! A query sends every node a batch of fixed shape ([`BatchPlan`]): the same number of lookups in
//! every band, real tokens (the band value and, with multi-probe, its neighbours within a
//! Hamming radius) shuffled among dummy tokens that are uniformly random 16-byte strings, which a
//! party without the key cannot tell from PRF outputs.
//!
//! Token keys are never stored in the clear: [`keyfile`] seals them with AES-256-GCM.
//!
//! One full use: derive a node's keys, post an image, then find it with a near-duplicate query.
//!
//! ```
//! use obscura_tokens::{bands, BatchPlan, NodeTokenKeys, TokenRoot};
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let mut rng = ChaCha20Rng::from_entropy();
//! let root = TokenRoot::random(&mut rng);         // held by clients, sealed at rest
//! let node3 = NodeTokenKeys::derive(&root, 3, 1);  // node 3, key version 1
//!
//! let stored: u64 = 0xc2924c5532bddfc8;
//! let postings = node3.index_tokens(stored);      // what node 3 keeps for this image
//! assert_eq!(bands(stored)[0], 0xc2);
//!
//! // The query differs from the stored hash in one bit of band 0 and one of band 5.
//! let query = stored ^ (1 << 60) ^ (1 << 17);
//! let plan = BatchPlan::new(1, 12)?;              // radius 1: 9 real + 3 dummy lookups per band
//! let batch = plan.query_tokens(&node3, query, &mut rng);
//! assert_eq!(batch.len(), 8 * 12);                // the same shape for every query
//! let hits = postings.iter().filter(|t| batch.contains(t)).count();
//! assert_eq!(hits, 8);                            // every band matches within radius 1
//! # Ok::<(), obscura_tokens::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod keyfile;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bands per 64-bit hash.
pub const BANDS: usize = 8;
/// Token length in bytes.
pub const TOKEN_LEN: usize = 16;

const TOKEN_DOMAIN: &[u8] = b"obscura/band/v1";
const KDF_SALT: &[u8] = b"obscura/token-root/v1";
const KDF_INFO: &[u8] = b"obscura/band-key/v1";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A batch must have room for every real lookup.
    #[error("{lookups} lookups per band cannot hold the {needed} probes of radius {radius}")]
    BatchTooSmall {
        /// Multi-probe radius.
        radius: u32,
        /// Probes the radius needs per band.
        needed: usize,
        /// Lookups per band requested.
        lookups: usize,
    },
    /// Radius above the band width.
    #[error("multi-probe radius {0} is larger than the 8-bit band")]
    RadiusTooLarge(u32),
    /// A key file could not be opened: wrong wrapping key, or the file was altered.
    #[error("key file does not open: wrong wrapping key, or the file was altered")]
    KeyFileAuthentication,
    /// A key file is not in our format.
    #[error("malformed key file: {0}")]
    MalformedKeyFile(&'static str),
    /// A key file holds a key for another purpose than requested.
    #[error("key file holds a {found:?} key, expected {expected:?}")]
    WrongPurpose {
        /// What the caller asked for.
        expected: String,
        /// What the file says.
        found: String,
    },
    /// The wrapping key is missing or not 64 hex digits.
    #[error("wrapping key: {0}")]
    BadWrappingKey(String),
}

/// The 8 band values of a hash: band `i` is DCT row `i`, i.e. byte `i` of the big-endian hash.
pub fn bands(hash: u64) -> [u8; BANDS] {
    hash.to_be_bytes()
}

/// The root secret all token keys derive from. Held by data owners and queriers only.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TokenRoot([u8; 32]);

impl TokenRoot {
    /// A fresh random root.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut r = [0u8; 32];
        rng.fill_bytes(&mut r);
        TokenRoot(r)
    }

    /// From stored bytes (for example a [`keyfile`] that was opened).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenRoot(bytes)
    }

    /// The bytes, for sealing into a key file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for TokenRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenRoot(<redacted>)")
    }
}

/// A 16-byte band token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub [u8; TOKEN_LEN]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

/// The token keys of one node and key version: one HMAC-SHA256 key per band.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct NodeTokenKeys {
    #[zeroize(skip)]
    node: u8,
    #[zeroize(skip)]
    version: u32,
    keys: [[u8; 32]; BANDS],
}

impl std::fmt::Debug for NodeTokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NodeTokenKeys {{ node: {}, version: {}, keys: <redacted> }}",
            self.node, self.version
        )
    }
}

impl NodeTokenKeys {
    /// `key[node][band][version] = HKDF-SHA256(salt = "obscura/token-root/v1", ikm = root,
    /// info = "obscura/band-key/v1" ‖ node ‖ band ‖ version)` (RFC 5869).
    pub fn derive(root: &TokenRoot, node: u8, version: u32) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), &root.0);
        let mut keys = [[0u8; 32]; BANDS];
        for (band, key) in keys.iter_mut().enumerate() {
            let mut info = KDF_INFO.to_vec();
            info.extend_from_slice(&[node, band as u8]);
            info.extend_from_slice(&version.to_be_bytes());
            hk.expand(&info, key)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
        }
        NodeTokenKeys {
            node,
            version,
            keys,
        }
    }

    /// The node these keys are for.
    pub fn node(&self) -> u8 {
        self.node
    }

    /// The key version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The token of `value` in `band`.
    ///
    /// # Panics
    /// If `band ≥ 8`.
    pub fn token(&self, band: usize, value: u8) -> Token {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.keys[band])
            .expect("HMAC accepts any key length");
        mac.update(TOKEN_DOMAIN);
        mac.update(&[band as u8, value]);
        let full = mac.finalize().into_bytes();
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&full[..TOKEN_LEN]);
        Token(t)
    }

    /// The 8 tokens an image with this hash is posted under, band order.
    pub fn index_tokens(&self, hash: u64) -> [Token; BANDS] {
        let b = bands(hash);
        std::array::from_fn(|i| self.token(i, b[i]))
    }
}

/// The VOPRF input of a band value: `"obscura/band/v2" ‖ band ‖ value`. Neither the node nor
/// the key version is in it: one cluster key per version is evaluated once per band value, and
/// each node's token is derived from that one element ([`voprf_token`]).
pub fn voprf_input(band: u8, value: u8) -> [u8; VOPRF_INPUT_LEN] {
    let mut input = [0u8; VOPRF_INPUT_LEN];
    input[..VOPRF_DOMAIN.len()].copy_from_slice(VOPRF_DOMAIN);
    input[VOPRF_DOMAIN.len()..].copy_from_slice(&[band, value]);
    input
}

const VOPRF_DOMAIN: &[u8] = b"obscura/band/v2";

/// Length of [`voprf_input`].
pub const VOPRF_INPUT_LEN: usize = VOPRF_DOMAIN.len() + 2;

/// Node `node`'s token of a VOPRF band element `k · HashToGroup(input)` (its 32-byte encoding):
/// `SHA-256("obscura/voprf-token/v2" ‖ node ‖ element)`, truncated to 16 bytes. The same element
/// gives every node a different token, so a lookup's tokens at one node are not those at
/// another.
///
/// Nodes keep the element itself beside the token, so that a key rotation can move it to the
/// next key version by one multiplication; lookups carry only tokens.
pub fn voprf_token(node: u8, element: &[u8; 32]) -> Token {
    use sha2::Digest;
    let full = Sha256::new()
        .chain_update(VOPRF_TOKEN_DOMAIN)
        .chain_update([node])
        .chain_update(element)
        .finalize();
    let mut t = [0u8; TOKEN_LEN];
    t.copy_from_slice(&full[..TOKEN_LEN]);
    Token(t)
}

const VOPRF_TOKEN_DOMAIN: &[u8] = b"obscura/voprf-token/v2";

/// Band values within Hamming distance `radius` of `value`, nearest first (the value itself
/// first).
pub fn probes(value: u8, radius: u32) -> Vec<u8> {
    let mut masks: Vec<u8> = (0..=255u8).filter(|m| m.count_ones() <= radius).collect();
    masks.sort_by_key(|m| (m.count_ones(), *m));
    masks.into_iter().map(|m| value ^ m).collect()
}

/// Probes per band for a radius: `Σ_{d ≤ r} C(8, d)`.
pub fn probes_per_band(radius: u32) -> usize {
    (0..=255u8).filter(|m| m.count_ones() <= radius).count()
}

/// Fewest bands, each within Hamming distance `radius` of the query's, that every stored hash
/// within `max_distance` of the query has: `8 − ⌊max_distance / (radius + 1)⌋`, at least 1.
///
/// A band farther than `radius` from the query's differs in at least `radius + 1` bits, so a
/// hash within `max_distance` has at most `⌊max_distance / (radius + 1)⌋` such bands. Requiring
/// this many matching bands therefore drops no image Stage-2 would keep, while it removes most
/// chance matches: with radius 1 and distance 10, a match needs 3 of the 8 bands. When the
/// distance could make all 8 bands far (see [`stage1_is_lossless`]) there is no such bound and
/// this returns 1: Stage-1 may then miss images within the distance.
pub fn min_bands(radius: u32, max_distance: u32) -> usize {
    let far = (max_distance / (radius + 1)) as usize;
    BANDS.saturating_sub(far).max(1)
}

/// Whether Stage-1 with this multi-probe radius finds every stored hash within `max_distance`
/// of the query: true when `max_distance < 8 · (radius + 1)`.
pub fn stage1_is_lossless(radius: u32, max_distance: u32) -> bool {
    max_distance / (radius + 1) < BANDS as u32
}

/// The fixed shape of every query batch sent to a node: `lookups_per_band` tokens in each of the
/// 8 bands, whatever the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    radius: u32,
    lookups_per_band: usize,
}

impl BatchPlan {
    /// A plan probing all band values within `radius` of the query's, padded with dummies to
    /// `lookups_per_band` per band.
    ///
    /// # Errors
    /// [`Error::RadiusTooLarge`] for `radius > 8`, [`Error::BatchTooSmall`] when the probes do not
    /// fit.
    pub fn new(radius: u32, lookups_per_band: usize) -> Result<Self, Error> {
        if radius > 8 {
            return Err(Error::RadiusTooLarge(radius));
        }
        let needed = probes_per_band(radius);
        if lookups_per_band < needed {
            return Err(Error::BatchTooSmall {
                radius,
                needed,
                lookups: lookups_per_band,
            });
        }
        Ok(BatchPlan {
            radius,
            lookups_per_band,
        })
    }

    /// Exact-match plan with no padding beyond the one lookup per band.
    pub fn exact() -> Self {
        BatchPlan {
            radius: 0,
            lookups_per_band: 1,
        }
    }

    /// Multi-probe radius.
    pub fn radius(&self) -> u32 {
        self.radius
    }

    /// Lookups in each band.
    pub fn lookups_per_band(&self) -> usize {
        self.lookups_per_band
    }

    /// Tokens per node per query: `8 × lookups_per_band`.
    pub fn batch_len(&self) -> usize {
        BANDS * self.lookups_per_band
    }

    /// Real lookups in each band: the probes of the radius, the same count for every query.
    pub fn probes_per_band(&self) -> usize {
        probes_per_band(self.radius)
    }

    /// The real lookups of a query, band-major: `(band, value)` for every probe of every band,
    /// [`probes_per_band`](Self::probes_per_band) per band. Their count depends on the plan
    /// only, never on the hash.
    pub fn probes(&self, hash: u64) -> Vec<(u8, u8)> {
        bands(hash)
            .into_iter()
            .enumerate()
            .flat_map(|(band, value)| {
                probes(value, self.radius)
                    .into_iter()
                    .map(move |v| (band as u8, v))
            })
            .collect()
    }

    /// The batch for one node from the tokens of [`probes`](Self::probes): each band's probes
    /// padded with uniformly random dummies to `lookups_per_band`, then the whole batch
    /// shuffled (Fisher–Yates with `rng`), so a token's position says neither its band nor
    /// which probe of it it is.
    ///
    /// What a node still learns from a lookup is which stored tokens it hits: each is one
    /// image's token for a known band (the node stored it so), so a hit says that band's value
    /// of the query is within the radius of that image's, and hits of one band in one query
    /// that their stored values are within twice the radius of each other. Misses and dummies
    /// look alike and say nothing.
    ///
    /// # Panics
    /// If `real` does not hold exactly one token per probe.
    pub fn assemble<R: RngCore + CryptoRng>(&self, real: &[Token], rng: &mut R) -> Vec<Token> {
        let per_band = self.probes_per_band();
        assert_eq!(real.len(), BANDS * per_band, "one token per probe");
        let mut out = Vec::with_capacity(self.batch_len());
        for band in real.chunks(per_band) {
            let start = out.len();
            out.extend_from_slice(band);
            while out.len() - start < self.lookups_per_band {
                let mut dummy = [0u8; TOKEN_LEN];
                rng.fill_bytes(&mut dummy);
                out.push(Token(dummy));
            }
        }
        shuffle(&mut out, rng);
        out
    }

    /// The batch for one node under HMAC keys: [`probes`](Self::probes) tokenized with `keys`,
    /// then [`assemble`](Self::assemble)d.
    pub fn query_tokens<R: RngCore + CryptoRng>(
        &self,
        keys: &NodeTokenKeys,
        hash: u64,
        rng: &mut R,
    ) -> Vec<Token> {
        let real: Vec<Token> = self
            .probes(hash)
            .into_iter()
            .map(|(band, value)| keys.token(band as usize, value))
            .collect();
        self.assemble(&real, rng)
    }
}

/// Fisher–Yates with unbiased bounded draws.
fn shuffle<T, R: RngCore>(items: &mut [T], rng: &mut R) {
    for i in (1..items.len()).rev() {
        let bound = i as u64 + 1;
        // Rejection sampling: accept only below the largest multiple of `bound`.
        let zone = u64::MAX - (u64::MAX % bound);
        let j = loop {
            let v = rng.next_u64();
            if v < zone {
                break v % bound;
            }
        };
        items.swap(i, j as usize);
    }
}
