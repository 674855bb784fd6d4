//! The cluster's group key: an MLS group (RFC 9420, through `openmls`) whose members are the
//! data owners' clients and attested workers, and whose epoch keys encrypt what only members may
//! read in the ledger (image labels and metadata). Nodes store and order its messages as
//! ciphertext.
//!
//! - The data owner's client creates the group and is its only committer: it adds and removes
//!   members, each change a Commit (and, for an add, a Welcome) that goes into the ledger as one
//!   entry. A commit is merged only once the ledger took it ([`Member::confirm`]); a refused one
//!   is dropped ([`Member::abandon`]), so the owner never runs ahead of the ledger.
//! - Every member reads the ledger in order and hands each group entry to [`Member::receive`]:
//!   a Welcome makes it a member, a Commit moves it to the next epoch, a sealed message opens to
//!   its plaintext.
//! - Handshake and application messages are both `PrivateMessage`s (the pure-ciphertext wire
//!   format): a node sees an epoch number and a length, not who joined or left.
//! - Forward secrecy: a message key is deleted once used, and no past epoch's secrets are kept
//!   (`max_past_epochs` 0), so a member whose state leaks later does not give away what it read.
//!   Post-compromise security: a removed member's leaf is gone from the tree, and the next
//!   epoch's secrets are sent along paths it holds no key for.
//! - A worker's KeyPackage carries its attestation evidence ([`EVIDENCE_EXTENSION`]), whose
//!   report data binds the KeyPackage's signature key, the worker's identity and the owner's
//!   fresh challenge ([`binding`]): only the enclave that holds that signature key could have
//!   signed the KeyPackage (its init and leaf keys included). [`Member::add`] admits a worker
//!   only through an appraisal by the attestation layer's verifier.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use openmls::prelude::tls_codec::{DeserializeBytes, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{MemoryStorage, RustCrypto};
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The one ciphersuite a group uses: X25519, AES-128-GCM, SHA-256, Ed25519.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// The KeyPackage extension (from the private-use range) carrying a worker's attestation
/// evidence, as the attestation layer's JSON.
pub const EVIDENCE_EXTENSION: u16 = 0xff0b;

/// The longest identity: `client:NAME` or `worker:NAME`.
pub const MAX_IDENTITY: usize = 80;

/// The largest message [`Member::receive`] or [`Member::add`] parses.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Sealed messages are padded to a multiple of this many bytes, so a label batch's length
/// tells a node less about its content.
const PADDING: usize = 256;

/// Domain separation for the context a member's evidence binds.
const CONTEXT_DOMAIN: &[u8] = b"obscura group member v1";

/// Format of [`Member::to_bytes`].
const STATE_VERSION: u8 = 1;

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Not a member of any group yet.
    #[error("not a member of the group")]
    NotMember,
    /// Already in a group; a member belongs to one.
    #[error("already a member of a group")]
    AlreadyMember,
    /// A message that does not parse, or is of the wrong kind.
    #[error("malformed group message: {0}")]
    Malformed(String),
    /// An identity that is not `client:NAME` or `worker:NAME`.
    #[error("an identity is `client:NAME` or `worker:NAME`, NAME being 1 to 64 letters, digits, '-', '_' or '.'")]
    Identity,
    /// A member of that identity is in the group already, or none is (to remove).
    #[error("{0}")]
    Membership(String),
    /// A worker's KeyPackage without evidence, or evidence the verifier refused.
    #[error("worker not admitted: {0}")]
    NotAdmitted(String),
    /// A message this member cannot open: not for its epoch, a key it deleted, or not for it.
    #[error("cannot open: {0}")]
    Undecryptable(String),
    /// The saved state does not load.
    #[error("group state: {0}")]
    State(String),
    /// An openmls failure not covered above.
    #[error("MLS: {0}")]
    Mls(String),
}

fn mls(e: impl std::fmt::Display) -> GroupError {
    GroupError::Mls(e.to_string())
}

/// The provider: RustCrypto for the primitives, an in-memory store that [`Member::to_bytes`]
/// writes out whole.
#[derive(Default)]
struct Provider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &MemoryStorage {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// What a member's attestation evidence binds: the report data is
/// `binding::report_data(worker, party_key, context, nonce)` of the attestation layer, with
/// `party_key` the KeyPackage's signature key (Ed25519) and `context` a digest of the identity.
pub fn binding(identity: &str, signature_key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mut h = Sha256::new();
    h.update(CONTEXT_DOMAIN);
    h.update((identity.len() as u16).to_be_bytes());
    h.update(identity.as_bytes());
    (*signature_key, h.finalize().into())
}

/// Checks an identity: `client:NAME` or `worker:NAME`.
pub fn check_identity(identity: &str) -> Result<(), GroupError> {
    let name = identity
        .strip_prefix("client:")
        .or_else(|| identity.strip_prefix("worker:"))
        .ok_or(GroupError::Identity)?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(GroupError::Identity);
    }
    Ok(())
}

/// A KeyPackage handed to the owner, checked (signature, lifetime, ciphersuite) but not yet
/// admitted.
pub struct Candidate {
    key_package: KeyPackage,
    identity: String,
    signature_key: [u8; 32],
}

impl Candidate {
    /// Parses and checks a KeyPackage (the TLS-encoded `MLSMessage` of [`Member::key_package`]).
    ///
    /// # Errors
    /// [`GroupError::Malformed`] for anything that does not parse, verify or is of another
    /// ciphersuite; [`GroupError::Identity`] for an identity of neither form.
    pub fn parse(bytes: &[u8]) -> Result<Candidate, GroupError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(GroupError::Malformed(format!(
                "a KeyPackage of {} bytes (at most {MAX_MESSAGE})",
                bytes.len()
            )));
        }
        let message = MlsMessageIn::tls_deserialize_exact_bytes(bytes)
            .map_err(|e| GroupError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
            return Err(GroupError::Malformed("not a KeyPackage".into()));
        };
        let key_package = key_package
            .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
            .map_err(|e| GroupError::Malformed(e.to_string()))?;
        if key_package.ciphersuite() != CIPHERSUITE {
            return Err(GroupError::Malformed(format!(
                "ciphersuite {:?}; this group uses {CIPHERSUITE:?}",
                key_package.ciphersuite()
            )));
        }
        let identity = identity_of(key_package.leaf_node().credential())?;
        let signature_key = key_package
            .leaf_node()
            .signature_key()
            .as_slice()
            .try_into()
            .map_err(|_| GroupError::Malformed("a signature key not of Ed25519".into()))?;
        Ok(Candidate {
            key_package,
            identity,
            signature_key,
        })
    }

    /// Its identity (`client:NAME` or `worker:NAME`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether it asks to join as a worker, and so must be attested.
    pub fn is_worker(&self) -> bool {
        self.identity.starts_with("worker:")
    }

    /// The evidence its KeyPackage carries, if any.
    pub fn evidence(&self) -> Option<&[u8]> {
        self.key_package
            .extensions()
            .unknown(EVIDENCE_EXTENSION)
            .map(|e| e.0.as_slice())
    }

    /// What its evidence must bind ([`binding`]).
    pub fn binding(&self) -> ([u8; 32], [u8; 32]) {
        binding(&self.identity, &self.signature_key)
    }

    /// Appraises a worker's evidence for the owner's challenge `nonce`, under `policy` at `now`.
    ///
    /// # Errors
    /// [`GroupError::NotAdmitted`] when there is no evidence or the verifier refuses it.
    pub fn appraise(
        &self,
        verifier: &obscura_attest::Verifier,
        policy: &obscura_attest::Policy,
        nonce: &[u8; 32],
        now: u64,
    ) -> Result<Admitted, GroupError> {
        let evidence = self
            .evidence()
            .ok_or_else(|| GroupError::NotAdmitted("its KeyPackage carries no evidence".into()))?;
        let evidence = obscura_attest::Evidence::from_json(evidence)
            .map_err(|e| GroupError::NotAdmitted(e.to_string()))?;
        let (party_key, context) = self.binding();
        let appraisal = verifier
            .appraise_party(
                &evidence,
                policy,
                &obscura_attest::Role::Worker,
                &party_key,
                &context,
                nonce,
                now,
            )
            .map_err(|e| GroupError::NotAdmitted(e.to_string()))?;
        Ok(Admitted(Admission::Attested(Box::new(appraisal))))
    }
}

/// Why the owner lets a candidate in: a client it vouches for ([`Admitted::vouched`]), or a
/// worker whose own evidence passed ([`Candidate::appraise`], the only way to the second).
pub struct Admitted(Admission);

enum Admission {
    Vouched,
    Attested(Box<obscura_attest::Appraisal>),
}

impl Admitted {
    /// A data owner's or user's client, admitted on the owner's word. Never a worker.
    pub fn vouched() -> Admitted {
        Admitted(Admission::Vouched)
    }

    /// The appraisal a worker passed; none for a client vouched for.
    pub fn appraisal(&self) -> Option<&obscura_attest::Appraisal> {
        match &self.0 {
            Admission::Vouched => None,
            Admission::Attested(a) => Some(a),
        }
    }
}

fn identity_of(credential: &Credential) -> Result<String, GroupError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| GroupError::Malformed("not a basic credential".into()))?;
    let identity = std::str::from_utf8(basic.identity())
        .map_err(|_| GroupError::Identity)?
        .to_owned();
    check_identity(&identity)?;
    Ok(identity)
}

/// A group change the owner made, to be entered in the ledger before it counts.
pub struct Change {
    /// The epoch the group enters when the change is merged.
    pub epoch: u64,
    /// The Commit (TLS-encoded `MLSMessage`, a `PrivateMessage`).
    pub commit: Vec<u8>,
    /// The Welcome for added members, if any.
    pub welcome: Option<Vec<u8>>,
}

/// What [`Member::receive`] made of a ledger entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// This member joined, at that epoch.
    Joined(u64),
    /// The group moved to that epoch.
    Epoch(u64),
    /// This member was removed: it reads nothing after.
    Removed,
    /// A sealed message, opened.
    Opened(Vec<u8>),
    /// One of this member's own messages (a sender cannot open its own; it kept the plaintext).
    Own,
    /// Not for this member: a Welcome for others, or anything before it joined.
    NotForMe,
}

/// A group member, its identity, its signature key and (once it joined or created one) its
/// group, with everything openmls keeps for it.
pub struct Member {
    provider: Provider,
    identity: String,
    signer: SignatureKeyPair,
    group: Option<MlsGroup>,
    /// Removed from the group: stays so.
    removed: bool,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u8,
    identity: String,
    signature_public: Vec<u8>,
    group_id: Option<Vec<u8>>,
    removed: bool,
    values: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Member {
    /// A new member, with a fresh signature key.
    ///
    /// # Errors
    /// [`GroupError::Identity`].
    pub fn new(identity: &str) -> Result<Member, GroupError> {
        check_identity(identity)?;
        let provider = Provider::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(mls)?;
        signer.store(provider.storage()).map_err(mls)?;
        Ok(Member {
            provider,
            identity: identity.to_owned(),
            signer,
            group: None,
            removed: false,
        })
    }

    /// Its identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Its signature key (Ed25519).
    pub fn signature_key(&self) -> [u8; 32] {
        self.signer
            .public()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes")
    }

    /// The epoch of its group, if it is in one.
    pub fn epoch(&self) -> Option<u64> {
        self.group
            .as_ref()
            .filter(|g| g.is_active())
            .map(|g| g.epoch().as_u64())
    }

    /// Whether it was removed from its group.
    pub fn removed(&self) -> bool {
        self.removed
    }

    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.identity.as_bytes().to_vec()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    fn capabilities() -> Capabilities {
        Capabilities::builder()
            .ciphersuites(vec![CIPHERSUITE])
            .extensions(vec![ExtensionType::Unknown(EVIDENCE_EXTENSION)])
            .build()
    }

    fn join_config() -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(0)
            .padding_size(PADDING)
            .use_ratchet_tree_extension(true)
            .build()
    }

    /// A KeyPackage for joining (TLS-encoded `MLSMessage`), carrying `evidence` when given: a
    /// worker's, made by its platform for the report data of [`binding`] with this member's
    /// identity and [`Member::signature_key`]. Its private keys stay in this member's state.
    ///
    /// # Errors
    /// [`GroupError::AlreadyMember`], or an openmls failure.
    pub fn key_package(&mut self, evidence: Option<Vec<u8>>) -> Result<Vec<u8>, GroupError> {
        if self.group.is_some() {
            return Err(GroupError::AlreadyMember);
        }
        let mut builder = KeyPackage::builder().leaf_node_capabilities(Self::capabilities());
        if let Some(evidence) = evidence {
            builder = builder.key_package_extensions(
                Extensions::single(Extension::Unknown(
                    EVIDENCE_EXTENSION,
                    UnknownExtension(evidence),
                ))
                .map_err(mls)?,
            );
        }
        let bundle = builder
            .build(CIPHERSUITE, &self.provider, &self.signer, self.credential())
            .map_err(mls)?;
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .map_err(mls)
    }

    /// Creates the group, with this member alone in it, at epoch 0.
    ///
    /// # Errors
    /// [`GroupError::AlreadyMember`], or an openmls failure.
    pub fn create(&mut self) -> Result<(), GroupError> {
        if self.group.is_some() || self.removed {
            return Err(GroupError::AlreadyMember);
        }
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(0)
            .padding_size(PADDING)
            .use_ratchet_tree_extension(true)
            .capabilities(Self::capabilities())
            .build();
        let group =
            MlsGroup::new(&self.provider, &self.signer, &config, self.credential()).map_err(mls)?;
        self.group = Some(group);
        Ok(())
    }

    /// The members: identity and signature key (hex), leaf order.
    pub fn members(&self) -> Vec<(String, String)> {
        self.group
            .iter()
            .filter(|g| g.is_active())
            .flat_map(|g| g.members())
            .map(|m| {
                (
                    identity_of(&m.credential).unwrap_or_else(|_| "(unreadable)".into()),
                    hex::encode(&m.signature_key),
                )
            })
            .collect()
    }

    /// Stages the addition of `candidate`, admitted as `admitted`. A worker must come
    /// [`Admitted::Attested`], with the appraisal of its own evidence. Nothing counts until
    /// [`Member::confirm`].
    ///
    /// # Errors
    /// [`GroupError::NotAdmitted`] for a worker without an appraisal, or one of another key;
    /// [`GroupError::Membership`] for an identity already in the group.
    pub fn add(
        &mut self,
        candidate: &Candidate,
        admitted: &Admitted,
    ) -> Result<Change, GroupError> {
        match admitted.appraisal() {
            None if candidate.is_worker() => {
                return Err(GroupError::NotAdmitted(format!(
                    "{} is a worker: it joins only on its attestation",
                    candidate.identity
                )))
            }
            Some(appraisal)
                if appraisal.party_key() != Some(&candidate.signature_key[..])
                    || appraisal.role() != obscura_attest::Role::Worker.name() =>
            {
                return Err(GroupError::NotAdmitted(
                    "the appraisal is of another key or role".into(),
                ))
            }
            _ => {}
        }
        if self
            .members()
            .iter()
            .any(|(identity, _)| *identity == candidate.identity)
        {
            return Err(GroupError::Membership(format!(
                "{} is a member already",
                candidate.identity
            )));
        }
        let provider = &self.provider;
        let signer = &self.signer;
        let group = match &mut self.group {
            Some(g) if g.is_active() => g,
            _ => return Err(GroupError::NotMember),
        };
        let (commit, welcome, _) = group
            .add_members(
                provider,
                signer,
                std::slice::from_ref(&candidate.key_package),
            )
            .map_err(mls)?;
        Ok(Change {
            epoch: group.epoch().as_u64() + 1,
            commit: commit.tls_serialize_detached().map_err(mls)?,
            welcome: Some(welcome.tls_serialize_detached().map_err(mls)?),
        })
    }

    /// Stages the removal of the member `identity`. Nothing counts until [`Member::confirm`].
    ///
    /// # Errors
    /// [`GroupError::Membership`] when it is not a member, or is this member.
    pub fn remove(&mut self, identity: &str) -> Result<Change, GroupError> {
        if identity == self.identity {
            return Err(GroupError::Membership(
                "the group's creator does not remove itself".into(),
            ));
        }
        let provider = &self.provider;
        let signer = &self.signer;
        let group = match &mut self.group {
            Some(g) if g.is_active() => g,
            _ => return Err(GroupError::NotMember),
        };
        let leaf = group
            .members()
            .find(|m| identity_of(&m.credential).is_ok_and(|i| i == identity))
            .map(|m| m.index)
            .ok_or_else(|| GroupError::Membership(format!("{identity} is not a member")))?;
        let (commit, welcome, _) = group
            .remove_members(provider, signer, &[leaf])
            .map_err(mls)?;
        Ok(Change {
            epoch: group.epoch().as_u64() + 1,
            commit: commit.tls_serialize_detached().map_err(mls)?,
            welcome: welcome
                .map(|w| w.tls_serialize_detached())
                .transpose()
                .map_err(mls)?,
        })
    }

    /// Merges the staged change: the ledger took it.
    ///
    /// # Errors
    /// [`GroupError::NotMember`], or an openmls failure.
    pub fn confirm(&mut self) -> Result<u64, GroupError> {
        let provider = &self.provider;
        let group = match &mut self.group {
            Some(g) if g.is_active() => g,
            _ => return Err(GroupError::NotMember),
        };
        group.merge_pending_commit(provider).map_err(mls)?;
        Ok(group.epoch().as_u64())
    }

    /// Drops the staged change: the ledger did not take it.
    pub fn abandon(&mut self) {
        let provider = &self.provider;
        if let Some(group) = &mut self.group {
            let _ = group.clear_pending_commit(provider.storage());
        }
    }

    /// Seals `plaintext` under the current epoch: returns the epoch and the message. A sender
    /// cannot open its own messages, so it keeps what it sealed.
    ///
    /// # Errors
    /// [`GroupError::NotMember`], or an openmls failure.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<(u64, Vec<u8>), GroupError> {
        let provider = &self.provider;
        let signer = &self.signer;
        let group = match &mut self.group {
            Some(g) if g.is_active() => g,
            _ => return Err(GroupError::NotMember),
        };
        let message = group
            .create_message(provider, signer, plaintext)
            .map_err(mls)?;
        Ok((
            group.epoch().as_u64(),
            message.tls_serialize_detached().map_err(mls)?,
        ))
    }

    /// Takes a Welcome from the ledger: joins if it is for this member.
    fn welcome(&mut self, bytes: &[u8]) -> Result<Received, GroupError> {
        let message = MlsMessageIn::tls_deserialize_exact_bytes(bytes)
            .map_err(|e| GroupError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(GroupError::Malformed("not a Welcome".into()));
        };
        let staged = match StagedWelcome::new_from_welcome(
            &self.provider,
            &Self::join_config(),
            welcome,
            None,
        ) {
            Ok(staged) => staged,
            // Sealed to other members' KeyPackages.
            Err(WelcomeError::NoMatchingKeyPackage) => return Ok(Received::NotForMe),
            Err(e) => return Err(mls(e)),
        };
        let group = staged.into_group(&self.provider).map_err(mls)?;
        let epoch = group.epoch().as_u64();
        self.group = Some(group);
        Ok(Received::Joined(epoch))
    }

    /// Takes a group entry from the ledger, in ledger order: a Commit (with its Welcome, if
    /// any) or a sealed message.
    ///
    /// # Errors
    /// [`GroupError::Undecryptable`] for a message of an epoch this member is not in (or no
    /// longer holds keys for), or one it opened already; [`GroupError::Malformed`].
    pub fn receive(
        &mut self,
        message: &[u8],
        welcome: Option<&[u8]>,
    ) -> Result<Received, GroupError> {
        if message.len() > MAX_MESSAGE || welcome.is_some_and(|w| w.len() > MAX_MESSAGE) {
            return Err(GroupError::Malformed(format!(
                "a group message over {MAX_MESSAGE} bytes"
            )));
        }
        if self.removed {
            return Err(GroupError::Undecryptable(
                "this member was removed from the group".into(),
            ));
        }
        if self.group.is_none() {
            return match welcome {
                Some(welcome) => self.welcome(welcome),
                None => Ok(Received::NotForMe),
            };
        }
        let parsed = MlsMessageIn::tls_deserialize_exact_bytes(message)
            .map_err(|e| GroupError::Malformed(e.to_string()))?;
        let protocol = parsed
            .try_into_protocol_message()
            .map_err(|e| GroupError::Malformed(e.to_string()))?;
        let provider = &self.provider;
        let group = self.group.as_mut().expect("checked above");
        let processed = match group.process_message(provider, protocol) {
            Ok(p) => p,
            Err(e) => return Err(GroupError::Undecryptable(e.to_string())),
        };
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => Ok(Received::Opened(m.into_bytes())),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let removed = staged.self_removed();
                group.merge_staged_commit(provider, *staged).map_err(mls)?;
                if removed || !group.is_active() {
                    self.removed = true;
                    return Ok(Received::Removed);
                }
                Ok(Received::Epoch(group.epoch().as_u64()))
            }
            ProcessedMessageContent::OwnPrivateMessage => Ok(Received::Own),
            _ => Err(GroupError::Malformed(
                "a proposal: only commits and sealed messages go into the ledger".into(),
            )),
        }
    }

    /// Its whole state (keys included: keep it private).
    pub fn to_bytes(&self) -> Vec<u8> {
        let values = self
            .provider
            .storage
            .values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let saved = Saved {
            version: STATE_VERSION,
            identity: self.identity.clone(),
            signature_public: self.signer.public().to_vec(),
            group_id: self
                .group
                .as_ref()
                .map(|g| g.group_id().as_slice().to_vec()),
            removed: self.removed,
            values,
        };
        postcard::to_allocvec(&saved).expect("the state serialises")
    }

    /// Loads what [`Member::to_bytes`] wrote. Only bytes this member wrote, authenticated by
    /// the caller (sealed under a key): the MLS library's store trusts the values it holds,
    /// and panics on some it cannot decode.
    ///
    /// # Errors
    /// [`GroupError::State`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Member, GroupError> {
        let saved: Saved =
            postcard::from_bytes(bytes).map_err(|e| GroupError::State(e.to_string()))?;
        if saved.version != STATE_VERSION {
            return Err(GroupError::State(format!(
                "format {} (this build reads {STATE_VERSION})",
                saved.version
            )));
        }
        check_identity(&saved.identity)?;
        let provider = Provider::default();
        *provider
            .storage
            .values
            .write()
            .unwrap_or_else(|e| e.into_inner()) = saved.values.into_iter().collect();
        let signer = SignatureKeyPair::read(
            provider.storage(),
            &saved.signature_public,
            CIPHERSUITE.signature_algorithm(),
        )
        .ok_or_else(|| GroupError::State("the signature key is missing".into()))?;
        let group = match saved.group_id {
            Some(id) => Some(
                MlsGroup::load(provider.storage(), &GroupId::from_slice(&id))
                    .map_err(|e| GroupError::State(e.to_string()))?
                    .ok_or_else(|| GroupError::State("the group is missing".into()))?,
            ),
            None => None,
        };
        Ok(Member {
            provider,
            identity: saved.identity,
            signer,
            group,
            removed: saved.removed,
        })
    }
}
