//! Capabilities: what the keepers sign together for a logged-in user, and how a node checks a
//! request against one.
//!
//! A capability names the user, its roles, its per-node rate limits, an expiry, and the public
//! half of a key the user's client made for it ([`obscura_proto::Capability`]). The keepers sign
//! `"obscura/capability/v1" ‖ postcard(capability)` with the cluster's FROST key, `T` of them
//! together, each after checking the capability against the caller's account
//! ([`check_for_signing`]). A node holds only the group's public key ([`CapabilityKey`]).
//!
//! Every request to a node carries the capability and the holder's signature over
//! [`obscura_proto::request_digest`] — the node's number, the request id and time, and the body —
//! so a node that sees a user's requests cannot replay them at another node, nor use the
//! capability for requests of its own. An upload also carries, in a header, an
//! [`UploadTicket`] signed the same way for its node and request id, so that a node checks the
//! uploader before it reads a large body ([`check_upload_ticket`]).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use obscura_proto::{
    roles, Auth, Capability, Limits, NodeBody, Request, SignedCapability, UploadTicket, WireRoles,
};

use crate::Error;

const DOMAIN: &[u8] = b"obscura/capability/v1";

/// The canonical encoding of a capability, as signed.
pub fn encode(capability: &Capability) -> Vec<u8> {
    postcard::to_allocvec(capability).expect("a capability encodes")
}

/// The bytes the keepers sign for `body` (an [`encode`]d capability).
pub fn signing_message(body: &[u8]) -> Vec<u8> {
    [DOMAIN, body].concat()
}

/// The encoded capability a signing message carries, if it is one.
pub fn body_of(message: &[u8]) -> Option<&[u8]> {
    message.strip_prefix(DOMAIN)
}

/// The capability inside a signing message, if the message is exactly one in canonical form:
/// what a keeper reads before it signs.
///
/// # Errors
/// [`Error::Refused`] for anything else.
pub fn parse_signing_message(message: &[u8]) -> Result<Capability, Error> {
    let body = message
        .strip_prefix(DOMAIN)
        .ok_or(Error::Refused("not a capability"))?;
    let capability: Capability =
        postcard::from_bytes(body).map_err(|_| Error::Refused("not a capability"))?;
    // One encoding per capability: what is signed is exactly what nodes will decode.
    if encode(&capability) != body {
        return Err(Error::Refused("not in canonical form"));
    }
    Ok(capability)
}

/// What a keeper signs for a caller: the caller's roles there, the limits of those roles, and
/// the latest expiry it allows (its session's end or its capability lifetime, whichever is
/// first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The caller's roles.
    pub roles: WireRoles,
    /// Their limits.
    pub limits: Limits,
    /// The latest expiry.
    pub expires_at: u64,
}

/// A keeper's check before it signs `capability` for the logged-in `user`: the name is the
/// caller's, the roles are a non-empty subset of the account's, the limits are the policy's,
/// it is issued about now and expires no later than the offer allows.
///
/// # Errors
/// [`Error::Refused`] saying which field is wrong.
pub fn check_for_signing(
    capability: &Capability,
    user: &str,
    offer: &Offer,
    now: u64,
    skew: u64,
) -> Result<(), Error> {
    if capability.user != user {
        return Err(Error::Refused("it names another user"));
    }
    if capability.roles == 0 || capability.roles & !offer.roles != 0 {
        return Err(Error::Refused("it claims roles the account does not hold"));
    }
    if capability.limits != offer.limits {
        return Err(Error::Refused("its limits are not the policy's"));
    }
    if capability.issued_at.abs_diff(now) > skew {
        return Err(Error::Refused("it is not issued now"));
    }
    if capability.expires_at <= capability.issued_at || capability.expires_at > offer.expires_at {
        return Err(Error::Refused("it lasts longer than the keeper allows"));
    }
    Ok(())
}

/// The keepers' group public key, which every node and client holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapabilityKey(VerifyingKey);

impl From<VerifyingKey> for CapabilityKey {
    fn from(key: VerifyingKey) -> Self {
        CapabilityKey(key)
    }
}

impl CapabilityKey {
    /// From its 32 bytes.
    ///
    /// # Errors
    /// [`Error::BadCapability`] if they are not an Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Error> {
        VerifyingKey::from_bytes(bytes)
            .map(CapabilityKey)
            .map_err(|_| Error::BadCapability)
    }

    /// Its 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Check the keepers' signature and the validity period at `now` (with `skew` seconds of
    /// clock difference allowed before `issued_at`).
    ///
    /// # Errors
    /// [`Error::BadCapability`], [`Error::Expired`].
    pub fn verify(
        &self,
        signed: &SignedCapability,
        now: u64,
        skew: u64,
    ) -> Result<VerifiedCapability, Error> {
        let signature: [u8; 64] = signed
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Error::BadCapability)?;
        self.0
            .verify_strict(
                &signing_message(&signed.body),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| Error::BadCapability)?;
        let capability: Capability =
            postcard::from_bytes(&signed.body).map_err(|_| Error::BadCapability)?;
        if now >= capability.expires_at || capability.issued_at > now.saturating_add(skew) {
            return Err(Error::Expired {
                expires_at: capability.expires_at,
                now,
            });
        }
        let holder =
            VerifyingKey::from_bytes(&capability.holder).map_err(|_| Error::BadCapability)?;
        Ok(VerifiedCapability { capability, holder })
    }
}

/// A capability whose group signature and validity were checked ([`CapabilityKey::verify`]).
#[derive(Clone, Debug)]
pub struct VerifiedCapability {
    capability: Capability,
    holder: VerifyingKey,
}

impl VerifiedCapability {
    /// What it says.
    pub fn capability(&self) -> &Capability {
        &self.capability
    }
}

/// A client's capability and the key it names.
pub struct Holder {
    key: SigningKey,
    signed: SignedCapability,
    capability: Capability,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("user", &self.capability.user)
            .field("expires_at", &self.capability.expires_at)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Holder {
    /// Keep `signed`, checked against the group key, as the capability of `key`.
    ///
    /// # Errors
    /// [`Error::BadCapability`] when it is not the keepers' or names another key,
    /// [`Error::Expired`].
    pub fn new(
        key: SigningKey,
        signed: SignedCapability,
        group: &CapabilityKey,
        now: u64,
    ) -> Result<Holder, Error> {
        let verified = group.verify(&signed, now, u64::MAX / 2)?;
        if verified.holder != key.verifying_key() {
            return Err(Error::BadCapability);
        }
        Ok(Holder {
            key,
            signed,
            capability: verified.capability,
        })
    }

    /// Sign `request` for node `node`, putting the capability and the signature in its `auth`.
    pub fn sign(&self, node: u8, request: &mut Request<NodeBody>) {
        let digest = obscura_proto::request_digest(
            node,
            &request.request_id,
            request.timestamp,
            &request.body,
        );
        request.auth = Some(Auth {
            capability: self.signed.clone(),
            signature: self.key.sign(&digest).to_bytes().to_vec(),
        });
    }

    /// A ticket for uploading `request` to node `node`, for its header.
    pub fn upload_ticket(&self, node: u8, request: &Request<NodeBody>) -> UploadTicket {
        let digest =
            obscura_proto::upload_ticket_digest(node, &request.request_id, request.timestamp);
        UploadTicket {
            capability: self.signed.clone(),
            request_id: request.request_id,
            timestamp: request.timestamp,
            signature: self.key.sign(&digest).to_bytes().to_vec(),
        }
    }

    /// What the capability says.
    pub fn capability(&self) -> &Capability {
        &self.capability
    }

    /// The capability as signed, for storing.
    pub fn signed(&self) -> &SignedCapability {
        &self.signed
    }

    /// The holder's key, for storing (in a file only its owner reads).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }
}

/// Who asks, checked: minted only by [`authenticate`].
#[derive(Clone, Debug)]
pub struct Authorized {
    capability: Capability,
}

impl Authorized {
    /// The account's name.
    pub fn user(&self) -> &str {
        &self.capability.user
    }

    /// Its roles.
    pub fn roles(&self) -> WireRoles {
        self.capability.roles
    }

    /// Its rate limits.
    pub fn limits(&self) -> Limits {
        self.capability.limits
    }

    /// The capability's id.
    pub fn capability_id(&self) -> [u8; 16] {
        self.capability.id
    }

    /// Act in `role` (one of [`roles`]).
    ///
    /// # Errors
    /// [`Error::MissingRole`] when the capability does not hold it.
    pub fn acting(&self, role: WireRoles) -> Result<Acting<'_>, Error> {
        if self.capability.roles & role == role && role != 0 {
            Ok(Acting { who: self, role })
        } else {
            Err(Error::MissingRole {
                user: self.capability.user.clone(),
                needed: roles::names(role).first().copied().unwrap_or("unknown"),
            })
        }
    }

    /// Act in the first of `any` that the capability holds.
    ///
    /// # Errors
    /// [`Error::MissingRole`] naming the first when it holds none.
    pub fn acting_as_any(&self, any: &[WireRoles]) -> Result<Acting<'_>, Error> {
        any.iter()
            .find_map(|&r| self.acting(r).ok())
            .ok_or_else(|| Error::MissingRole {
                user: self.capability.user.clone(),
                needed: any
                    .first()
                    .and_then(|&r| roles::names(r).first().copied())
                    .unwrap_or("unknown"),
            })
    }
}

/// A caller acting in a role it was checked to hold.
#[derive(Clone, Copy, Debug)]
pub struct Acting<'a> {
    who: &'a Authorized,
    role: WireRoles,
}

impl Acting<'_> {
    /// The caller.
    pub fn user(&self) -> &str {
        self.who.user()
    }

    /// The role it acts in.
    pub fn role(&self) -> WireRoles {
        self.role
    }

    /// Who the caller is.
    pub fn who(&self) -> &Authorized {
        self.who
    }
}

/// Check a request to node `node`: the capability is the keepers', valid at `now`, and the
/// request is signed by its holder for this node.
///
/// # Errors
/// [`Error::NoCapability`], [`Error::BadCapability`], [`Error::Expired`],
/// [`Error::BadRequestSignature`].
pub fn authenticate(
    request: &Request<NodeBody>,
    node: u8,
    key: &CapabilityKey,
    now: u64,
    skew: u64,
) -> Result<Authorized, Error> {
    let auth = request.auth.as_ref().ok_or(Error::NoCapability)?;
    let verified = key.verify(&auth.capability, now, skew)?;
    let signature: [u8; 64] = auth
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| Error::BadRequestSignature)?;
    let digest =
        obscura_proto::request_digest(node, &request.request_id, request.timestamp, &request.body);
    verified
        .holder
        .verify_strict(&digest, &Signature::from_bytes(&signature))
        .map_err(|_| Error::BadRequestSignature)?;
    Ok(Authorized {
        capability: verified.capability,
    })
}

/// Check an upload ticket for node `node`: the capability is the keepers', valid at `now`, the
/// ticket is fresh and signed by the capability's holder for this node. The body it comes
/// with must then carry the ticket's request id under the same capability.
///
/// # Errors
/// [`Error::BadCapability`], [`Error::Expired`], [`Error::BadRequestSignature`] (a signature
/// that does not verify, or a ticket outside the window).
pub fn check_upload_ticket(
    ticket: &UploadTicket,
    node: u8,
    key: &CapabilityKey,
    now: u64,
    skew: u64,
) -> Result<Authorized, Error> {
    let verified = key.verify(&ticket.capability, now, skew)?;
    if ticket.timestamp.abs_diff(now) > skew {
        return Err(Error::BadRequestSignature);
    }
    let signature: [u8; 64] = ticket
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| Error::BadRequestSignature)?;
    let digest = obscura_proto::upload_ticket_digest(node, &ticket.request_id, ticket.timestamp);
    verified
        .holder
        .verify_strict(&digest, &Signature::from_bytes(&signature))
        .map_err(|_| Error::BadRequestSignature)?;
    Ok(Authorized {
        capability: verified.capability,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use obscura_proto::NodeBody;

    fn cap(holder: &SigningKey, now: u64) -> Capability {
        Capability {
            id: [1; 16],
            user: "ana".into(),
            roles: roles::QUERIER,
            holder: holder.verifying_key().to_bytes(),
            issued_at: now,
            expires_at: now + 600,
            limits: Limits {
                queries_per_hour: 10,
                fetches_per_hour: 5,
            },
        }
    }

    #[test]
    fn a_keeper_signs_only_what_the_account_allows() {
        let holder = SigningKey::from_bytes(&[2; 32]);
        let now = 1_000_000;
        let good = cap(&holder, now);
        let offer = Offer {
            roles: roles::QUERIER | roles::AUDITOR,
            limits: good.limits,
            expires_at: now + 600,
        };
        assert!(check_for_signing(&good, "ana", &offer, now, 60).is_ok());
        let message = signing_message(&encode(&good));
        assert_eq!(parse_signing_message(&message).unwrap(), good);
        assert!(parse_signing_message(&message[1..]).is_err());
        assert!(parse_signing_message(&[message.as_slice(), &[0]].concat()).is_err());

        let mut wrong = Vec::new();
        let mut c = good.clone();
        c.user = "bob".into();
        wrong.push(c);
        let mut c = good.clone();
        c.roles = roles::OWNER;
        wrong.push(c);
        let mut c = good.clone();
        c.roles = 0;
        wrong.push(c);
        let mut c = good.clone();
        c.limits.queries_per_hour += 1;
        wrong.push(c);
        let mut c = good.clone();
        c.expires_at += 1;
        wrong.push(c);
        let mut c = good.clone();
        c.issued_at -= 61;
        wrong.push(c);
        for c in wrong {
            assert!(
                matches!(
                    check_for_signing(&c, "ana", &offer, now, 60),
                    Err(Error::Refused(_))
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn requests_are_bound_to_their_node_body_and_holder() {
        let group = SigningKey::from_bytes(&[1; 32]);
        let key = CapabilityKey::from(group.verifying_key());
        let holder_key = SigningKey::from_bytes(&[2; 32]);
        let now = 1_000_000;
        let body = encode(&cap(&holder_key, now));
        let signature = group.sign(&signing_message(&body)).to_bytes().to_vec();
        let signed = SignedCapability { body, signature };
        let holder = Holder::new(holder_key, signed.clone(), &key, now).unwrap();
        let mut req = Request {
            request_id: [9; 16],
            timestamp: now,
            body: NodeBody::Status,
            auth: None,
        };
        assert_eq!(
            authenticate(&req, 1, &key, now, 60).unwrap_err(),
            Error::NoCapability
        );
        holder.sign(1, &mut req);
        assert!(authenticate(&req, 1, &key, now, 60).is_ok());
        // Another node, another body, another id, a later expiry, a stranger's signature.
        assert_eq!(
            authenticate(&req, 2, &key, now, 60).unwrap_err(),
            Error::BadRequestSignature
        );
        let mut moved = req.clone();
        moved.body = NodeBody::Checkpoint;
        assert_eq!(
            authenticate(&moved, 1, &key, now, 60).unwrap_err(),
            Error::BadRequestSignature
        );
        let mut moved = req.clone();
        moved.request_id[0] ^= 1;
        assert_eq!(
            authenticate(&moved, 1, &key, now, 60).unwrap_err(),
            Error::BadRequestSignature
        );
        assert!(matches!(
            authenticate(&req, 1, &key, now + 600, 60),
            Err(Error::Expired { .. })
        ));
        let stranger = CapabilityKey::from(SigningKey::from_bytes(&[7; 32]).verifying_key());
        assert_eq!(
            authenticate(&req, 1, &stranger, now, 60).unwrap_err(),
            Error::BadCapability
        );
        // A capability for another holder is refused by the client too.
        assert!(Holder::new(SigningKey::from_bytes(&[5; 32]), signed, &key, now).is_err());
    }
}
