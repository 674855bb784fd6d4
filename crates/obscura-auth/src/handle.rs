//! Per-query handles: what a Stage-1 answer gives in place of image ids.
//!
//! Every node holds the same handle key (dealt when the cluster is made). For one query, the key
//! that makes handles is derived from it, the caller's name, the query id and the time the query
//! was issued; a handle is the AES-256 encryption of the image id under that key, one block. So
//! every node gives an image the same handle within one query (the querier can merge the nodes'
//! answers), handles of two queries or two users cannot be linked, and a handle means nothing
//! to another user's or another query's Stage-2: it decrypts to an id no image has (with
//! probability 1 − stored images / 2^128).

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::Aes256;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The nodes' shared handle key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HandleKey([u8; 32]);

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(<redacted>)")
    }
}

impl HandleKey {
    /// A fresh key.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        HandleKey(k)
    }

    /// From its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        HandleKey(bytes)
    }

    /// Its bytes, for sealing.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0)
    }

    /// The key from which nodes derive the coefficients of a query's check
    /// (`obscura_mpc::check::CheckCoin`): the same at every node, held by no querier.
    pub fn check_coin_key(&self) -> Zeroizing<[u8; 32]> {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"obscura 2026 query-check coin key v1");
        Zeroizing::new(*h.finalize().as_bytes())
    }

    /// The handles of `user`'s query `query` issued at `issued`.
    pub fn for_query(&self, user: &str, query: &[u8; 16], issued: u64) -> QueryHandles {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"obscura 2026 stage-1 handles v1");
        h.update(&(user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(query);
        h.update(&issued.to_be_bytes());
        let key = Zeroizing::new(*h.finalize().as_bytes());
        QueryHandles(Aes256::new(&Array::from(*key)))
    }
}

/// The handle cipher of one query.
pub struct QueryHandles(Aes256);

impl QueryHandles {
    /// The handle of image `id`.
    pub fn seal(&self, id: &[u8; 16]) -> [u8; 16] {
        let mut block = Array::from(*id);
        self.0.encrypt_block(&mut block);
        block.into()
    }

    /// The image id behind `handle` (an id no image has, for a handle of another query).
    pub fn open(&self, handle: &[u8; 16]) -> [u8; 16] {
        let mut block = Array::from(*handle);
        self.0.decrypt_block(&mut block);
        block.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_per_user_query_and_time() {
        let key = HandleKey::from_bytes([7; 32]);
        let id = [42u8; 16];
        let q = key.for_query("ana", &[1; 16], 100);
        let h = q.seal(&id);
        assert_ne!(h, id);
        assert_eq!(q.open(&h), id);
        // The same at every node (same key), different for anything else.
        assert_eq!(
            HandleKey::from_bytes([7; 32])
                .for_query("ana", &[1; 16], 100)
                .seal(&id),
            h
        );
        for other in [
            key.for_query("bob", &[1; 16], 100),
            key.for_query("ana", &[2; 16], 100),
            key.for_query("ana", &[1; 16], 101),
            HandleKey::from_bytes([8; 32]).for_query("ana", &[1; 16], 100),
        ] {
            assert_ne!(other.seal(&id), h);
            assert_ne!(other.open(&h), id);
        }
    }
}
