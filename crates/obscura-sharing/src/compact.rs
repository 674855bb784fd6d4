//! Compact storage: secret sharing made short (Krawczyk, CRYPTO '93).
//!
//! The file is encrypted once with AES-256-GCM under a fresh key. The ciphertext is cut into `k`
//! pieces and a systematic Reed–Solomon code adds `n − k` more, so that any `k` pieces give the
//! ciphertext back. Only the 32-byte key is Shamir-shared, `k`-of-`n` over GF(2^8) as
//! [`crate::bytes`] shares a whole file. Node `x` keeps its key share followed by piece `x`:
//! about `1/k` of the file, where a Shamir share is as long as the file.
//!
//! What `k − 1` nodes learn changes kind: their key shares are independent of the key, as Shamir
//! shares of a file are of the file, and their pieces are pieces of a ciphertext under that key.
//! So the file is hidden as well as AES-256-GCM hides it, under a 256-bit key the caller draws
//! (the client draws it from the operating system). Its length is known either way.
//!
//! A node's stored bytes are still one share, with one digest in the owner-signed manifest
//! ([`crate::manifest`]), so a bad piece or key share names its node exactly as a bad Shamir share
//! does. What gets past the digests (only the owner can make such shares) is refused by AES-GCM's
//! tag when the ciphertext changed, by the zero padding, and in the end by the manifest's content
//! digest.
//!
//! ```
//! use obscura_sharing::bytes::Params;
//! use obscura_sharing::compact;
//! use rand_core::OsRng;
//!
//! let file = vec![7u8; 100_000];
//! let shares = compact::split(&file, Params::new(3, 5)?, &mut OsRng)?;
//! assert_eq!(Some(shares[0].bytes.len()), compact::share_len(file.len() as u64, 3));
//! assert!(shares[0].bytes.len() < 34_000); // a third of the file, and the key share
//! // Any three, here nodes 2, 4 and 5 (two of them recovery pieces).
//! let some = [shares[1].clone(), shares[3].clone(), shares[4].clone()];
//! assert_eq!(compact::reconstruct(&some, 3, 5, file.len() as u64)?, file);
//! # Ok::<(), obscura_sharing::Error>(())
//! ```

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::bytes::{self, ByteShare, Params};
use crate::Error;

/// Bytes of the key share at the head of every compact share.
pub const KEY_SHARE_LEN: usize = 32;
/// Bytes of AES-GCM's tag, kept with the ciphertext.
const TAG_LEN: usize = 16;
/// Associated data: a label of the scheme (each key encrypts one file, so it binds nothing more).
const AAD: &[u8] = b"obscura/compact/v1";
/// The longest file: AES-GCM encrypts at most 2^36 − 32 bytes under one nonce.
pub const MAX_FILE: u64 = (1 << 36) - 32;

/// Length of each of the `n` pieces of a file of `content_len` bytes: the ciphertext and tag
/// cut into `k`, rounded up to an even length (the Reed–Solomon coder works on 16-bit symbols).
/// `None` for an empty file, one longer than [`MAX_FILE`] or one this machine cannot address.
pub fn piece_len(content_len: u64, k: usize) -> Option<usize> {
    if content_len == 0 || content_len > MAX_FILE || k == 0 {
        return None;
    }
    let sealed = usize::try_from(content_len).ok()?.checked_add(TAG_LEN)?;
    sealed.div_ceil(k).checked_next_multiple_of(2)
}

/// Length of each node's compact share: its key share and its piece (`None` as for
/// [`piece_len`]).
pub fn share_len(content_len: u64, k: usize) -> Option<usize> {
    piece_len(content_len, k)?.checked_add(KEY_SHARE_LEN)
}

/// Encrypt `secret` under a fresh key drawn from `rng`, code the ciphertext into `n` pieces of
/// which any `k` rebuild it, share the key `k`-of-`n`, and give node `x` (1..=n) its key share
/// followed by piece `x`. Pieces `1..=k` are the ciphertext itself; `k + 1..=n` are recovery.
///
/// # Errors
/// [`Error::EmptySecret`] for an empty input, [`Error::SecretTooLong`] past [`MAX_FILE`].
pub fn split<R: RngCore + CryptoRng>(
    secret: &[u8],
    params: Params,
    rng: &mut R,
) -> Result<Vec<ByteShare>, Error> {
    if secret.is_empty() {
        return Err(Error::EmptySecret);
    }
    let (k, n) = (params.k(), params.n());
    let piece = piece_len(secret.len() as u64, k).ok_or(Error::SecretTooLong {
        len: secret.len() as u64,
        max: MAX_FILE,
    })?;
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());

    // The ciphertext, its tag and zero padding, laid out as the k original pieces.
    let mut sealed = vec![0u8; k * piece];
    sealed[..secret.len()].copy_from_slice(secret);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).expect("a 32-byte key");
    // The key is fresh and encrypts one message, so a fixed nonce never repeats under it.
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::default(), AAD, &mut sealed[..secret.len()])
        .expect("MAX_FILE is within AES-GCM's limit");
    sealed[secret.len()..secret.len() + TAG_LEN].copy_from_slice(&tag);

    let recovery = if n > k {
        reed_solomon_simd::encode(k, n - k, sealed.chunks_exact(piece))
            .map_err(|_| Error::InvalidParams { k, n })?
    } else {
        Vec::new()
    };
    let mut keys = bytes::split(key.as_ref(), params, rng)?;
    let shares = keys
        .iter()
        .zip(
            sealed
                .chunks_exact(piece)
                .chain(recovery.iter().map(|r| &r[..])),
        )
        .map(|(key_share, piece)| {
            let mut out = Vec::with_capacity(KEY_SHARE_LEN + piece.len());
            out.extend_from_slice(&key_share.bytes);
            out.extend_from_slice(piece);
            ByteShare {
                x: key_share.x,
                bytes: out,
            }
        })
        .collect();
    keys.iter_mut().for_each(|s| s.bytes.zeroize());
    Ok(shares)
}

/// A compact share's piece, after its key share.
fn body(s: &ByteShare) -> &[u8] {
    &s.bytes[KEY_SHARE_LEN..]
}

/// Rebuild a file of `content_len` bytes from at least `k` compact shares of an `n`-node
/// split; the first `k` are used.
///
/// Like [`bytes::reconstruct`], this cannot tell which share is wrong: verify shares against the
/// signed manifest first. A wrong share that got through is still caught here, as a whole, by
/// AES-GCM's tag.
///
/// # Errors
/// [`Error::NotEnoughShares`], [`Error::DuplicateShare`], [`Error::InvalidShareIndex`] for an x
/// outside `1..=n`, [`Error::ShareLengthMismatch`] for a share of the wrong length, and
/// [`Error::CompactOpen`] when the rebuilt ciphertext does not open under the rebuilt key or
/// `content_len` is no length [`split`] makes.
pub fn reconstruct(
    shares: &[ByteShare],
    k: usize,
    n: usize,
    content_len: u64,
) -> Result<Vec<u8>, Error> {
    let used = bytes::first_k(shares, k)?;
    let xs: Vec<u8> = used.iter().map(|s| s.x).collect();
    crate::check_share_indices(&xs)?;
    let piece = piece_len(content_len, k).ok_or(Error::CompactOpen)?;
    for s in used {
        if usize::from(s.x) > n {
            return Err(Error::InvalidShareIndex { x: s.x });
        }
        if s.bytes.len() != KEY_SHARE_LEN + piece {
            return Err(Error::ShareLengthMismatch {
                x: s.x,
                expected: KEY_SHARE_LEN + piece,
                got: s.bytes.len(),
            });
        }
    }
    let mut key_shares: Vec<ByteShare> = used
        .iter()
        .map(|s| ByteShare {
            x: s.x,
            bytes: s.bytes[..KEY_SHARE_LEN].to_vec(),
        })
        .collect();
    let key = bytes::reconstruct(&key_shares, k).map(Zeroizing::new);
    key_shares.iter_mut().for_each(|s| s.bytes.zeroize());
    let key = key?;

    // Original pieces in hand go straight into place; the missing ones are decoded from the
    // recovery pieces.
    let mut sealed = vec![0u8; k * piece];
    let mut missing = Vec::new();
    for i in 0..k {
        match used.iter().find(|s| usize::from(s.x) == i + 1) {
            Some(s) => sealed[i * piece..(i + 1) * piece].copy_from_slice(body(s)),
            None => missing.push(i),
        }
    }
    if !missing.is_empty() {
        let originals = used
            .iter()
            .filter(|s| usize::from(s.x) <= k)
            .map(|s| (usize::from(s.x) - 1, body(s)));
        let recovery = used
            .iter()
            .filter(|s| usize::from(s.x) > k)
            .map(|s| (usize::from(s.x) - k - 1, body(s)));
        let restored = reed_solomon_simd::decode(k, n - k, originals, recovery)
            .map_err(|_| Error::CompactOpen)?;
        for i in missing {
            let got = restored.get(&i).ok_or(Error::CompactOpen)?;
            sealed[i * piece..(i + 1) * piece].copy_from_slice(got);
        }
    }

    let len = content_len as usize;
    let tag = Tag::clone_from_slice(&sealed[len..len + TAG_LEN]);
    if sealed[len + TAG_LEN..].iter().any(|&b| b != 0) {
        return Err(Error::CompactOpen);
    }
    sealed.truncate(len);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| Error::CompactOpen)?;
    cipher
        .decrypt_in_place_detached(&Nonce::default(), AAD, &mut sealed, &tag)
        .map_err(|_| Error::CompactOpen)?;
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn file(len: usize, seed: u64) -> Vec<u8> {
        let mut f = vec![0u8; len];
        ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut f);
        f
    }

    /// Every set of `k` shares, in every order the subsets come in, rebuilds the file: originals
    /// only, recovery only, and mixed.
    #[test]
    fn any_k_of_n_rebuild_the_file() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for (k, n) in [(2, 2), (2, 3), (3, 5), (4, 6), (5, 5)] {
            for len in [1usize, 15, 16, 17, 1000, 65_537] {
                let f = file(len, len as u64);
                let shares = split(&f, Params::new(k, n).unwrap(), &mut rng).unwrap();
                assert_eq!(shares.len(), n);
                assert!(shares
                    .iter()
                    .all(|s| Some(s.bytes.len()) == share_len(len as u64, k)));
                for mask in 0u32..(1 << n) {
                    if mask.count_ones() as usize != k {
                        continue;
                    }
                    let mut some: Vec<ByteShare> = shares
                        .iter()
                        .filter(|s| mask & (1 << (s.x - 1)) != 0)
                        .cloned()
                        .collect();
                    some.reverse();
                    assert_eq!(
                        reconstruct(&some, k, n, len as u64).unwrap(),
                        f,
                        "{k}-of-{n}, {len} bytes, nodes {mask:b}"
                    );
                }
            }
        }
    }

    #[test]
    fn pieces_are_a_kth_of_the_file() {
        let f = file(1 << 20, 2);
        let shares = split(&f, Params::new(3, 5).unwrap(), &mut rand_core::OsRng).unwrap();
        let stored: usize = shares.iter().map(|s| s.bytes.len()).sum();
        let ratio = stored as f64 / f.len() as f64;
        assert!(ratio <= 5.0 / 3.0 * 1.001, "{ratio}");
        // Systematic, but encrypted: piece 1 is the head of the ciphertext, not of the file.
        assert_ne!(
            &shares[0].bytes[KEY_SHARE_LEN..KEY_SHARE_LEN + 64],
            &f[..64]
        );
    }

    /// A share changed anywhere (key share, piece, padding of an original piece, recovery
    /// piece) is caught when it got past the digests: the file is never returned altered.
    #[test]
    fn an_altered_share_does_not_open() {
        // 5001 bytes and the tag, 3-of-5: pieces of 1674 bytes, the last original piece ending
        // in 5 bytes of padding.
        let f = file(5001, 3);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let shares = split(&f, Params::new(3, 5).unwrap(), &mut rng).unwrap();
        let len = shares[0].bytes.len();
        assert_eq!(len, KEY_SHARE_LEN + 1674);
        for (node, at) in [
            (1, 0),
            (1, 31),
            (1, 32),
            (3, len - 1),
            (5, 40),
            (5, len - 1),
        ] {
            let mut some = vec![shares[0].clone(), shares[2].clone(), shares[4].clone()];
            let target = some.iter_mut().find(|s| s.x == node).unwrap();
            target.bytes[at] ^= 0x40;
            assert!(
                matches!(reconstruct(&some, 3, 5, 5001), Err(Error::CompactOpen)),
                "node {node} byte {at}"
            );
        }
        // From the originals alone nothing is decoded: a changed padding byte alters neither
        // ciphertext nor tag, and only the padding check refuses it.
        let mut originals = shares[..3].to_vec();
        originals[2].bytes[len - 1] ^= 0x40;
        assert!(matches!(
            reconstruct(&originals, 3, 5, 5001),
            Err(Error::CompactOpen)
        ));
    }

    #[test]
    fn wrong_shapes_are_refused_not_panicked_on() {
        let f = file(300, 5);
        let shares = split(&f, Params::new(2, 3).unwrap(), &mut rand_core::OsRng).unwrap();
        let pair = || vec![shares[0].clone(), shares[2].clone()];
        let mut short = pair();
        short[1].bytes.pop();
        assert!(matches!(
            reconstruct(&short, 2, 3, 300),
            Err(Error::ShareLengthMismatch { x: 3, .. })
        ));
        let mut beyond = pair();
        beyond[1].x = 4;
        assert!(matches!(
            reconstruct(&beyond, 2, 3, 300),
            Err(Error::InvalidShareIndex { x: 4 })
        ));
        let mut twice = pair();
        twice[1].x = 1;
        assert!(matches!(
            reconstruct(&twice, 2, 3, 300),
            Err(Error::DuplicateShare { x: 1 })
        ));
        assert!(matches!(
            reconstruct(&pair()[..1], 2, 3, 300),
            Err(Error::NotEnoughShares { need: 2, got: 1 })
        ));
        // A wrong length claimed for the file: the shares do not fit it; and lengths no split
        // makes (a manifest signed with them) are refused, not overflowed.
        assert!(reconstruct(&pair(), 2, 3, 301).is_err());
        for absurd in [0, MAX_FILE + 1, u64::MAX - 15, u64::MAX] {
            assert!(
                matches!(reconstruct(&pair(), 2, 3, absurd), Err(Error::CompactOpen)),
                "{absurd}"
            );
        }
        assert!(matches!(
            split(&[], Params::new(2, 3).unwrap(), &mut rand_core::OsRng),
            Err(Error::EmptySecret)
        ));
    }
}
