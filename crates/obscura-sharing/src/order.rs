//! Orders only the data owner may give: delete an image, each step of moving a node's token key
//! to a new version, the keepers' share changes of a rotation, and a grant of one image to one
//! account. Nodes accept uploads only under the owner's signed manifest; these orders carry the
//! same key's signature, so neither a cluster client certificate nor an admin's capability is
//! enough to remove images, re-key a node or the keepers, or read an image one did not find.
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
    /// At node `node`, move more images to key version `to` of the rotation begun.
    RotateMove {
        /// The node the order is for.
        node: u8,
        /// The next version.
        to: u32,
    },
    /// At node `node`, finish the rotation to `to`: forget the old version.
    RotateFinish {
        /// The node the order is for.
        node: u8,
        /// The next version.
        to: u32,
    },
    /// Keepers take shares of version `to` from those of `from`, as the plan with this digest
    /// says (`obscura_proto::rekey_digest`: every node's ρ and zero-share commitments).
    Rekey {
        /// The current version.
        from: u32,
        /// The next version.
        to: u32,
        /// The plan's digest.
        plan: [u8; 32],
    },
    /// Keeper `keeper`, whose appraised HPKE key is `party_key`, takes the token-key shares
    /// sealed in the delivery with digest `delivery` (`obscura_proto::provision_digest`).
    Provision {
        /// The keeper.
        keeper: u8,
        /// Its HPKE public key.
        party_key: [u8; 32],
        /// The delivery's digest.
        delivery: [u8; 32],
    },
    /// Keepers give keeper `keeper`, whose appraised HPKE key is `party_key`, its token-key
    /// shares back, as the recovery plan with digest `plan` says
    /// (`obscura_proto::recovery_digest`: the helpers, the key version, the public shares and
    /// the policy the helpers appraise the keeper under).
    Recover {
        /// The keeper.
        keeper: u8,
        /// Its HPKE public key.
        party_key: [u8; 32],
        /// The plan's digest.
        plan: [u8; 32],
    },
    /// Keepers erase their shares of `version`.
    Retire {
        /// The version.
        version: u32,
    },
    /// Clean-room work `work` (its Work-ID) may read the images whose list has digest `inputs`
    /// (`obscura_proto::room_inputs_digest`), in workers that pass the attestation policy with
    /// digest `policy`, until `expires_at` (Unix seconds), at most `max_runs` times at each node.
    Approve {
        /// The Work-ID.
        work: [u8; 32],
        /// The digest of its input images, in order.
        inputs: [u8; 32],
        /// The digest of the attestation policy a worker must pass.
        policy: [u8; 32],
        /// The end of the approval.
        expires_at: u64,
        /// Most runs each node releases shares to.
        max_runs: u32,
    },
    /// The account whose name has digest `user` ([`user_digest`]) may fetch `image` until
    /// `expires_at` (Unix seconds).
    Grant {
        /// The image.
        image: ImageId,
        /// The account's name digest.
        user: [u8; 32],
        /// The end of the grant.
        expires_at: u64,
    },
}

/// The digest that names an account in a [`Order::Grant`].
pub fn user_digest(user: &str) -> [u8; 32] {
    blake3::derive_key("obscura 2026 grant user", user.as_bytes())
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
            Order::RotateMove { node, to } => {
                out.push(3);
                out.push(*node);
                out.extend_from_slice(&to.to_be_bytes());
            }
            Order::RotateFinish { node, to } => {
                out.push(4);
                out.push(*node);
                out.extend_from_slice(&to.to_be_bytes());
            }
            Order::Rekey { from, to, plan } => {
                out.push(5);
                out.extend_from_slice(&from.to_be_bytes());
                out.extend_from_slice(&to.to_be_bytes());
                out.extend_from_slice(plan);
            }
            Order::Retire { version } => {
                out.push(6);
                out.extend_from_slice(&version.to_be_bytes());
            }
            Order::Grant {
                image,
                user,
                expires_at,
            } => {
                out.push(7);
                out.extend_from_slice(&image.0);
                out.extend_from_slice(user);
                out.extend_from_slice(&expires_at.to_be_bytes());
            }
            Order::Provision {
                keeper,
                party_key,
                delivery,
            } => {
                out.push(8);
                out.push(*keeper);
                out.extend_from_slice(party_key);
                out.extend_from_slice(delivery);
            }
            Order::Recover {
                keeper,
                party_key,
                plan,
            } => {
                out.push(9);
                out.push(*keeper);
                out.extend_from_slice(party_key);
                out.extend_from_slice(plan);
            }
            Order::Approve {
                work,
                inputs,
                policy,
                expires_at,
                max_runs,
            } => {
                out.push(10);
                out.extend_from_slice(work);
                out.extend_from_slice(inputs);
                out.extend_from_slice(policy);
                out.extend_from_slice(&expires_at.to_be_bytes());
                out.extend_from_slice(&max_runs.to_be_bytes());
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
            Order::RotateMove { node: 2, to: 2 },
            Order::RotateFinish { node: 2, to: 2 },
            Order::Retire { version: 1 },
            Order::Provision {
                keeper: 2,
                party_key: [9; 32],
                delivery: [1; 32],
            },
            Order::Recover {
                keeper: 2,
                party_key: [9; 32],
                plan: [1; 32],
            },
        ];
        for other in changed {
            assert!(matches!(
                other.verify(&key, &sig),
                Err(Error::BadOrderSignature)
            ));
        }
        let approve = |work, inputs, policy, expires_at, max_runs| Order::Approve {
            work,
            inputs,
            policy,
            expires_at,
            max_runs,
        };
        let sig = approve([1; 32], [2; 32], [3; 32], 10, 1).sign(&owner);
        assert!(approve([1; 32], [2; 32], [3; 32], 10, 1)
            .verify(&key, &sig)
            .is_ok());
        for other in [
            approve([9; 32], [2; 32], [3; 32], 10, 1),
            approve([1; 32], [9; 32], [3; 32], 10, 1),
            approve([1; 32], [2; 32], [9; 32], 10, 1),
            approve([1; 32], [2; 32], [3; 32], 11, 1),
            approve([1; 32], [2; 32], [3; 32], 10, 2),
        ] {
            assert!(other.verify(&key, &sig).is_err());
        }
        let grant = Order::Grant {
            image: ImageId([1; 16]),
            user: user_digest("ana"),
            expires_at: 10,
        };
        let sig = grant.sign(&owner);
        assert!(grant.verify(&key, &sig).is_ok());
        for other in [
            Order::Grant {
                image: ImageId([2; 16]),
                user: user_digest("ana"),
                expires_at: 10,
            },
            Order::Grant {
                image: ImageId([1; 16]),
                user: user_digest("bob"),
                expires_at: 10,
            },
            Order::Grant {
                image: ImageId([1; 16]),
                user: user_digest("ana"),
                expires_at: 11,
            },
        ] {
            assert!(other.verify(&key, &sig).is_err());
        }
        let sig = rotate.sign(&owner);
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
