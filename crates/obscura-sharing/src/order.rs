//! Orders only the data owner may give a node: delete an image, or start moving the node's
//! token key to a new version. Nodes accept uploads only under the owner's signed manifest;
//! these orders carry the same key's signature, so holding a cluster client certificate is not
//! enough to remove images or to re-key a node.
//!
//! A signature covers the order's kind and every field, under its own domain, so it cannot be
//! taken for a manifest signature or for another kind of order. A rotation order names the
//! node it is for. A delete order carries the owner's clock at issue; a node refuses it for an
//! image whose manifest is newer, so an old order replayed cannot delete the image indexed again
//! under the same id later.
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use obscura_sharing::manifest::ImageId;
//! use obscura_sharing::order::Order;
//!
//! let owner = SigningKey::from_bytes(&[7; 32]);
//! let order = Order::Delete { image: ImageId([1; 16]), issued_at: 1_800_000_000 };
//! let signature = order.sign(&owner);
//! assert!(order.verify(&owner.verifying_key(), &signature).is_ok());
//! let other = Order::Delete { image: ImageId([2; 16]), issued_at: 1_800_000_000 };
//! assert!(other.verify(&owner.verifying_key(), &signature).is_err());
//! ```

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::manifest::ImageId;
use crate::Error;

const SIGNING_DOMAIN: &[u8] = b"obscura/order/v1";

/// An order from the data owner to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Remove `image`, as stored when the owner's clock read `issued_at` (Unix seconds).
    Delete {
        /// The image.
        image: ImageId,
        /// The owner's clock when the order was made.
        issued_at: u64,
    },
    /// At node `node`, move the token key from version `from` to `to`, multiplying every stored
    /// element by `factor` (ρ).
    Rotate {
        /// The node the order is for.
        node: u8,
        /// The version the node serves now.
        from: u32,
        /// The next version.
        to: u32,
        /// ρ, as the keepers received it for this node.
        factor: [u8; 32],
    },
}

impl Order {
    fn encode(&self) -> Vec<u8> {
        let mut out = SIGNING_DOMAIN.to_vec();
        match self {
            Order::Delete { image, issued_at } => {
                out.push(1);
                out.extend_from_slice(&image.0);
                out.extend_from_slice(&issued_at.to_be_bytes());
            }
            Order::Rotate {
                node,
                from,
                to,
                factor,
            } => {
                out.push(2);
                out.push(*node);
                out.extend_from_slice(&from.to_be_bytes());
                out.extend_from_slice(&to.to_be_bytes());
                out.extend_from_slice(factor);
            }
        }
        out
    }

    /// The owner's signature over this order.
    pub fn sign(&self, owner: &SigningKey) -> [u8; 64] {
        owner.sign(&self.encode()).to_bytes()
    }

    /// Check the owner's signature (strict Ed25519: no malleable or small-order forms).
    ///
    /// # Errors
    /// [`Error::BadOrderSignature`] when `signature` is not 64 bytes or does not verify under
    /// `owner` for exactly this order.
    pub fn verify(&self, owner: &VerifyingKey, signature: &[u8]) -> Result<(), Error> {
        let signature: [u8; 64] = signature.try_into().map_err(|_| Error::BadOrderSignature)?;
        owner
            .verify_strict(&self.encode(), &Signature::from_bytes(&signature))
            .map_err(|_| Error::BadOrderSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_signed_and_kinds_do_not_mix() {
        let owner = SigningKey::from_bytes(&[3; 32]);
        let key = owner.verifying_key();
        let rotate = Order::Rotate {
            node: 2,
            from: 1,
            to: 2,
            factor: [9; 32],
        };
        let sig = rotate.sign(&owner);
        assert!(rotate.verify(&key, &sig).is_ok());
        let changed = [
            Order::Rotate {
                node: 3,
                from: 1,
                to: 2,
                factor: [9; 32],
            },
            Order::Rotate {
                node: 2,
                from: 0,
                to: 2,
                factor: [9; 32],
            },
            Order::Rotate {
                node: 2,
                from: 1,
                to: 3,
                factor: [9; 32],
            },
            Order::Rotate {
                node: 2,
                from: 1,
                to: 2,
                factor: [8; 32],
            },
            Order::Delete {
                image: ImageId([9; 16]),
                issued_at: 1,
            },
        ];
        for other in changed {
            assert!(matches!(
                other.verify(&key, &sig),
                Err(Error::BadOrderSignature)
            ));
        }
        let stranger = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(matches!(
            rotate.verify(&stranger, &sig),
            Err(Error::BadOrderSignature)
        ));
        assert!(matches!(
            rotate.verify(&key, &sig[..63]),
            Err(Error::BadOrderSignature)
        ));
    }
}
