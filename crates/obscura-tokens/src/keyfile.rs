//! Sealed key files: token keys are never written to disk in the clear.
//!
//! A key file is `magic ‖ purpose length ‖ purpose ‖ key version ‖ nonce ‖ AES-256-GCM(secret)`,
//! where the whole header (so the purpose and the version) is the associated data: a file renamed
//! to another purpose, or edited to claim another version, fails to open just as a file opened
//! with the wrong wrapping key does. The wrapping key is kept apart from the files, in an
//! environment variable or a separate file of 64 hex digits.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;

const MAGIC: &[u8; 8] = b"OBSKEY01";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest purpose label.
pub const MAX_PURPOSE_LEN: usize = 64;

/// The key that seals key files (AES-256-GCM).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct WrappingKey([u8; 32]);

impl std::fmt::Debug for WrappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WrappingKey(<redacted>)")
    }
}

impl WrappingKey {
    /// A fresh random key.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        WrappingKey(k)
    }

    /// A key derived elsewhere (a platform's sealing key).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        WrappingKey(key)
    }

    /// Parse 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`Error::BadWrappingKey`] for anything else.
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        hex32(text)
            .map(WrappingKey)
            .ok_or_else(|| Error::BadWrappingKey("expected 64 hexadecimal digits".into()))
    }

    /// The key as 64 hex digits, for writing to its own file once at set-up.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(to_hex(&self.0))
    }

    /// Read the key from environment variable `var`.
    ///
    /// # Errors
    /// [`Error::BadWrappingKey`] when it is unset or malformed.
    pub fn from_env(var: &str) -> Result<Self, Error> {
        let v = Zeroizing::new(std::env::var(var).map_err(|e| {
            Error::BadWrappingKey(match e {
                std::env::VarError::NotPresent => format!("environment variable {var} is not set"),
                std::env::VarError::NotUnicode(_) => {
                    format!("environment variable {var} is not 64 hex digits")
                }
            })
        })?);
        Self::from_hex(&v)
    }

    /// Read the key from a file holding 64 hex digits.
    ///
    /// # Errors
    /// [`Error::BadWrappingKey`] when the file cannot be read or is malformed.
    pub fn from_file(path: &std::path::Path) -> Result<Self, Error> {
        let v =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                Error::BadWrappingKey(format!("cannot read {}: {e}", path.display()))
            })?);
        Self::from_hex(&v)
    }
}

/// A key file's contents after it opened.
pub struct OpenedKey {
    /// The purpose label it was sealed with.
    pub purpose: String,
    /// Its key version.
    pub version: u32,
    /// The secret, wiped when dropped.
    pub secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for OpenedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OpenedKey {{ purpose: {:?}, version: {}, secret: <redacted> }}",
            self.purpose, self.version
        )
    }
}

fn header(purpose: &str, version: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.push(purpose.len() as u8);
    h.extend_from_slice(purpose.as_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h
}

/// Seal `secret` for `purpose` (an ASCII label such as `"token-root"`) and `version`.
///
/// # Errors
/// [`Error::MalformedKeyFile`] if the purpose is empty, longer than [`MAX_PURPOSE_LEN`] or not
/// printable ASCII.
pub fn seal<R: RngCore + CryptoRng>(
    secret: &[u8],
    purpose: &str,
    version: u32,
    key: &WrappingKey,
    rng: &mut R,
) -> Result<Vec<u8>, Error> {
    if purpose.is_empty()
        || purpose.len() > MAX_PURPOSE_LEN
        || !purpose.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::MalformedKeyFile(
            "purpose must be 1–64 printable ASCII characters",
        ));
    }
    let mut out = header(purpose, version);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new(&key.0.into());
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: &out,
            },
        )
        .expect("AES-GCM encryption of a short message cannot fail");
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Open a key file, requiring it to hold a key for `purpose`.
///
/// # Errors
/// [`Error::MalformedKeyFile`] when it is not a key file, [`Error::WrongPurpose`] when it holds a
/// key for something else, [`Error::KeyFileAuthentication`] for a wrong wrapping key or any
/// alteration of header or ciphertext.
pub fn open(bytes: &[u8], purpose: &str, key: &WrappingKey) -> Result<OpenedKey, Error> {
    let bad = Error::MalformedKeyFile;
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or(bad("not an Obscura key file"))?;
    let (&plen, rest) = rest.split_first().ok_or(bad("truncated"))?;
    let plen = plen as usize;
    if plen == 0 || plen > MAX_PURPOSE_LEN || rest.len() < plen + 4 + NONCE_LEN + TAG_LEN {
        return Err(bad("truncated"));
    }
    let found = std::str::from_utf8(&rest[..plen]).map_err(|_| bad("purpose is not text"))?;
    if found != purpose {
        return Err(Error::WrongPurpose {
            expected: purpose.into(),
            found: found.into(),
        });
    }
    let version = u32::from_be_bytes(rest[plen..plen + 4].try_into().expect("4 bytes"));
    let header_len = MAGIC.len() + 1 + plen + 4;
    let (aad, body) = bytes.split_at(header_len);
    let (nonce, ct) = body.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(&key.0.into());
    let secret = cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| Error::KeyFileAuthentication)?;
    Ok(OpenedKey {
        purpose: found.into(),
        version,
        secret: Zeroizing::new(secret),
    })
}

/// Lower-case hex digits of `bytes`: keys and public keys in the cluster's text files.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse 64 hex digits (surrounding whitespace ignored) into 32 bytes: keys and public keys in
/// the cluster's text files.
pub fn hex32(text: &str) -> Option<[u8; 32]> {
    from_hex(text.trim())
}

/// Parse exactly `2 N` hex digits into `N` bytes (nothing else is accepted, whitespace included).
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    bytes_from_hex(text)?.try_into().ok()
}

/// Parse an even number of hex digits into bytes (nothing else is accepted, whitespace
/// included).
pub fn bytes_from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}
