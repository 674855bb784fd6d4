//! Fuzz targets for every parser of untrusted bytes in Obscura.
//!
//! Each target is a function from bytes to nothing that hands the bytes to the code a node, a
//! keeper or a client runs on what it receives, and asserts what must hold whatever they are:
//! a parser never panics; what decodes re-encodes to a message that decodes the same; a
//! signature, MAC or proof never verifies under a key that signed nothing; and an exchange
//! that the bytes only shape (sizes, values, which node lies) ends as the protocol says.
//!
//! The same functions run under libFuzzer (the cargo-fuzz crate in `fuzz/`, one binary per
//! entry of [`TARGETS`]) and, on stable, in this crate's `replay` test, which runs every file
//! of `fuzz/corpus/NAME/` and `fuzz/regressions/NAME/` through target `NAME`. [`seeds`] makes
//! the first corpus from the project's own encoders (`fuzz/seed.sh`).
//!
//! Keys are fixed bytes, so a corpus file means the same on every run: the seeds are signed or
//! sealed under them, and the targets also check each input under a key that signed nothing.
//!
//! Bytes a party wrote for itself are read back too, since a damaged disk or anyone who can
//! write the file may have changed them: [`store_records`] runs the store's own record decoders
//! (image state, key rotation, audit entries as stored; through `obscura_store::fuzzing`),
//! [`session_file`] the client's session file reader, [`journal`] the indexing journal's entry
//! parser. A keeper's account records are not reached: each is sealed with AES-256-GCM bound
//! to its kind, user, id and version, and nothing reads their bytes before that opens. FROST
//! packages are checked for panics and forgeries; the keepers' signing module holds each to
//! exactly its encoding (frost-core's decoders ignore trailing bytes).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod seeds;

pub use seeds::seeds;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use obscura_auth::capability::{self, authenticate, check_upload_ticket, CapabilityKey};
use obscura_auth::handle::HandleKey;
use obscura_auth::matching::{self, Answered, KeptAnswer, MatchPolicy, ProvenMatch};
use obscura_client::config::{ClientConfig, ClientSecrets, OWNER_PURPOSE};
use obscura_client::rotation::{RotationPlan, PLAN_PURPOSE};
use obscura_cluster::ed25519_key;
use obscura_cluster::files::open_secrets;
use obscura_cluster::keeper::{keeper_purpose, KeeperConfig, KeeperSecrets};
use obscura_cluster::node::{node_purpose, NodeConfig, NodeSecrets};
use obscura_keeper::oprf::{self, Elements, Evaluation, Proof};
use obscura_keeper::session::{
    Channel, ClientLogin, ClientRegistration, Role, ServerKeys, SessionError, SESSION_KEY_LEN,
};
use obscura_keeper::signing::{self, KeyPackage, PeerKeys, PublicKeyPackage};
use obscura_keeper::threshold::BlindedBatch;
use obscura_keeper::Scalar;
use obscura_mpc::node::{NodeSession, Step};
use obscura_mpc::{
    share_hash, HashShare, Match, NodeAnswer, Opened, Querier, Ranked, SearchParams, HASH_SHARE_LEN,
};
use obscura_phash::{decode_luma, hash_luma, phash64, Limits};
use obscura_proto::{
    account_limits, Body, FetchBy, KeeperBody, MatchProof, NodeBody, Request, Response,
    ResponseBody, RotateOp, SignedCapability, UploadTicket,
};
use obscura_sharing::bytes::{reconstruct, reconstruct_with_kernel, split_with_kernel, Params};
use obscura_sharing::field::{Fp, P};
use obscura_sharing::gf256::Kernel;
use obscura_sharing::manifest::{ImageId, Manifest, ShareRole, SignedManifest, Storage};
use obscura_sharing::order::{user_digest, Order};
use obscura_sharing::prime::{interpolate_at_zero, share_values};
use obscura_store::audit::{self, AuditEntry, AuditError, AuditKind, AuditReport, Verifier};
use obscura_tokens::keyfile::{self, WrappingKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A fuzz target: bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("wire_request", wire_request),
    ("wire_response", wire_response),
    ("manifest", manifest),
    ("orders", orders),
    ("capability", capability),
    ("matching", matching),
    ("image", image),
    ("sealed_file", sealed_file),
    ("node_config", node_config),
    ("journal", journal),
    ("audit_entry", audit_entry),
    ("keeper_session", keeper_session),
    ("opaque_keeper", opaque_keeper),
    ("voprf_keeper", voprf_keeper),
    ("frost_keeper", frost_keeper),
    ("stage2_combine", stage2_combine),
    ("stage2_node", stage2_node),
    ("share_roundtrip", share_roundtrip),
    ("handle", handle),
    ("store_records", store_records),
    ("session_file", session_file),
    ("room", room),
    ("group", group),
];

/// Inputs above this are skipped: every message a server reads in one piece is smaller
/// (uploads aside), and large inputs only slow the fuzzer down.
const MAX_INPUT: usize = 1 << 20;
/// The node (or keeper) whose view the targets take.
const NODE: u8 = 1;
/// The caller's account name.
const USER: &str = "fuzz";
/// The server's clock.
const NOW: u64 = 1_800_000_000;
/// Clock skew a server allows.
const SKEW: u64 = 120;
/// τ of the match proofs.
const MAX_DISTANCE: u32 = 10;
/// Pixel limit of the image target: enough for every test photo, small enough to stay fast.
const IMAGE_MAX_PIXELS: u64 = 1 << 22;

/// The data owner's key: seed manifests and orders are signed with it.
const OWNER_SECRET: [u8; 32] = [0x0f; 32];
/// A key that signs nothing: nothing may verify under it.
const STRANGER_SECRET: [u8; 32] = [0x5a; 32];
/// The keepers' capability key (one Ed25519 key stands in for the FROST group).
const GROUP_SECRET: [u8; 32] = [0x9c; 32];
/// A capability holder's key.
const HOLDER_SECRET: [u8; 32] = [0x3d; 32];
/// The wrapping key of the seed sealed files.
const WRAPPING_SECRET: [u8; 32] = [0x77; 32];
/// A keeper session's key and id.
const SESSION_KEY: [u8; SESSION_KEY_LEN] = [0x42; SESSION_KEY_LEN];
const SESSION_ID: [u8; 16] = [0x24; 16];
/// The password of the OPAQUE fixture's account.
const PASSWORD: &[u8] = b"correct horse battery staple";
/// Seeds the keeper's randomness for KE2, so the fixture's KE3 fits every run.
const KE2_SEED: [u8; 32] = [0x2e; 32];
/// The plaintext a client channel seals before it opens an answer.
const SESSION_REQUEST: &[u8] = b"request";

fn owner_key() -> SigningKey {
    SigningKey::from_bytes(&OWNER_SECRET)
}

fn stranger_key() -> SigningKey {
    SigningKey::from_bytes(&STRANGER_SECRET)
}

fn group_key() -> SigningKey {
    SigningKey::from_bytes(&GROUP_SECRET)
}

fn holder_key() -> SigningKey {
    SigningKey::from_bytes(&HOLDER_SECRET)
}

/// Node `node`'s answer key in the matching target.
fn node_key(node: u8) -> SigningKey {
    SigningKey::from_bytes(&[0x20u8.wrapping_add(node); 32])
}

/// Node keys that never sign anything.
fn stranger_node_keys() -> Vec<VerifyingKey> {
    (1..=3u8)
        .map(|i| SigningKey::from_bytes(&[0x60 + i; 32]).verifying_key())
        .collect()
}

fn wrapping_key() -> WrappingKey {
    WrappingKey::from_hex(&keyfile::to_hex(&WRAPPING_SECRET)).expect("64 hex digits")
}

fn stranger_wrapping_key() -> WrappingKey {
    WrappingKey::from_hex(&keyfile::to_hex(&STRANGER_SECRET)).expect("64 hex digits")
}

/// The keeper's VOPRF key share in the voprf target.
fn oprf_key() -> Scalar {
    oprf::derive_key(&[0x0e; 32], b"obscura fuzz").expect("a short info derives a key")
}

fn rng(seed: [u8; 32]) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(seed)
}

/// Structured values read from fuzz bytes; past the end every read gives zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length-prefixed messages (`u16` big-endian, then the bytes), at most `max`.
    fn frames(&mut self, max: usize) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !self.is_empty() && out.len() < max {
            let len = usize::from(self.u16());
            out.push(self.bytes(len));
        }
        out
    }

    /// Messages addressed to keepers: a keeper byte, then a length-prefixed message, at most
    /// `max`.
    fn addressed(&mut self, max: usize) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !self.is_empty() && out.len() < max {
            let keeper = self.byte();
            let len = usize::from(self.u16());
            out.push((keeper, self.bytes(len).to_vec()));
        }
        out
    }
}

/// Shuffle `items` with choices read from `input`.
fn shuffle<T>(items: &mut [T], input: &mut Input<'_>) {
    for i in (1..items.len()).rev() {
        let j = usize::from(input.byte()) % (i + 1);
        items.swap(i, j);
    }
}

/// A node's and a keeper's request parsers: anything that decodes re-encodes, no longer than it
/// came, to a message that decodes to the same request; its path (and, to a node, its signing
/// digest) exists.
pub fn wire_request(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    if let Some(request) = round_trip::<NodeBody>(data) {
        let _ = obscura_proto::request_digest(
            NODE,
            &request.request_id,
            request.timestamp,
            &request.body,
        );
    }
    round_trip::<KeeperBody>(data);
}

/// `data` decoded as a request of body `B`, checked to re-encode as it came.
fn round_trip<B: Body + Clone + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<Request<B>> {
    let request = Request::<B>::decode(data).ok()?;
    let again = request.encode();
    assert!(again.len() <= data.len(), "re-encoding grew the request");
    assert_eq!(Request::<B>::decode(&again), Ok(request.clone()));
    let _ = request.body.path();
    Some(request)
}

/// A client's response parser: anything that decodes re-encodes, no longer than it came, to a
/// message that decodes to the same response.
pub fn wire_response(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(response) = Response::decode(data) else {
        return;
    };
    let again = response.encode();
    assert!(again.len() <= data.len(), "re-encoding grew the response");
    assert_eq!(Response::decode(&again), Ok(response));
}

/// The owner-signed manifest as a node stores it and a client reads it: the encoding is
/// canonical (decode then encode gives the input back), it never verifies under a key that
/// signed nothing, and a manifest that verifies under the owner's key checks shares, refusing
/// a node it does not list.
pub fn manifest(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data);
    }
    let Ok(signed) = SignedManifest::from_bytes(data) else {
        return;
    };
    assert_eq!(signed.to_bytes(), data);
    let image = signed.image_id();
    match signed.clone().verify(&stranger_key().verifying_key()) {
        Err(obscura_sharing::Error::BadManifestSignature { image: named }) => {
            assert_eq!(named, image)
        }
        other => panic!("a manifest verified under a key that signed nothing: {other:?}"),
    }
    if let Ok(verified) = signed.verify(&owner_key().verifying_key()) {
        assert_eq!(verified.manifest().encode(), &data[64..]);
        assert!(verified
            .check_share(0, ShareRole::Image, b"no node 0")
            .is_err());
        for e in &verified.manifest().nodes {
            let _ = verified.check_share(e.node, ShareRole::Hash, &data[..64]);
        }
    }
}

/// The owner's orders among a node request's fields, as the node builds them before it checks
/// the signature (node `NODE`, caller `USER`).
fn node_orders(body: &NodeBody) -> Vec<(Order, &[u8])> {
    match body {
        NodeBody::Delete {
            image,
            issued_at,
            signature,
        } => vec![(
            Order::Delete {
                image: ImageId(*image),
                issued_at: *issued_at,
            },
            signature.as_slice(),
        )],
        NodeBody::Rotate { op } => match op {
            RotateOp::Begin {
                from,
                to,
                factor,
                signature,
            } => vec![(
                Order::Rotate {
                    node: NODE,
                    from: *from,
                    to: *to,
                    factor: *factor,
                },
                signature.as_slice(),
            )],
            RotateOp::Move { to, signature, .. } => vec![(
                Order::RotateMove {
                    node: NODE,
                    to: *to,
                },
                signature.as_slice(),
            )],
            RotateOp::Finish { to, signature } => vec![(
                Order::RotateFinish {
                    node: NODE,
                    to: *to,
                },
                signature.as_slice(),
            )],
        },
        NodeBody::RoomRelease {
            work,
            images,
            policy,
            expires_at,
            max_runs,
            approval,
            ..
        } => vec![(
            Order::Approve {
                work: *work,
                inputs: obscura_proto::room_inputs_digest(images),
                policy: obscura_proto::room_policy_digest(policy),
                expires_at: *expires_at,
                max_runs: *max_runs,
            },
            approval.as_slice(),
        )],
        NodeBody::Fetch {
            by:
                FetchBy::Grant {
                    image,
                    expires_at,
                    signature,
                },
        } => vec![(
            Order::Grant {
                image: ImageId(*image),
                user: user_digest(USER),
                expires_at: *expires_at,
            },
            signature.as_slice(),
        )],
        _ => Vec::new(),
    }
}

/// The owner's orders among a keeper request's fields, as the keeper builds them before it
/// checks the signature.
fn keeper_orders(body: &KeeperBody) -> Vec<(Order, &[u8])> {
    match body {
        KeeperBody::KeeperRekey {
            from,
            to,
            parts,
            signature,
        } => vec![(
            Order::Rekey {
                from: *from,
                to: *to,
                plan: obscura_proto::rekey_digest(*from, *to, parts),
            },
            signature.as_slice(),
        )],
        KeeperBody::KeeperRetire { version, signature } => {
            vec![(Order::Retire { version: *version }, signature.as_slice())]
        }
        _ => Vec::new(),
    }
}

/// An order built from the bytes.
fn order_from(input: &mut Input<'_>) -> Order {
    match input.byte() % 8 {
        0 => Order::Delete {
            image: ImageId(input.array()),
            issued_at: input.u64(),
        },
        1 => Order::Rotate {
            node: input.byte(),
            from: input.u32(),
            to: input.u32(),
            factor: input.array(),
        },
        2 => Order::RotateMove {
            node: input.byte(),
            to: input.u32(),
        },
        3 => Order::RotateFinish {
            node: input.byte(),
            to: input.u32(),
        },
        4 => Order::Rekey {
            from: input.u32(),
            to: input.u32(),
            plan: input.array(),
        },
        5 => Order::Retire {
            version: input.u32(),
        },
        6 => Order::Approve {
            work: input.array(),
            inputs: input.array(),
            policy: input.array(),
            expires_at: input.u64(),
            max_runs: input.u32(),
        },
        _ => Order::Grant {
            image: ImageId(input.array()),
            user: input.array(),
            expires_at: input.u64(),
        },
    }
}

/// The owner's signed orders (delete, rotation steps, rekey, retire, approve, grant): in a request, an
/// order never verifies under a key that signed nothing; built from the bytes and signed, it
/// verifies, and neither a signature with one bit flipped, nor a short one, nor another order
/// under the same signature does.
pub fn orders(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let owner = owner_key().verifying_key();
    let stranger = stranger_key().verifying_key();
    let node = Request::<NodeBody>::decode(data).ok();
    let keeper = Request::<KeeperBody>::decode(data).ok();
    let found = node
        .iter()
        .flat_map(|r| node_orders(&r.body))
        .chain(keeper.iter().flat_map(|r| keeper_orders(&r.body)));
    for (order, signature) in found {
        assert!(
            order.verify(&stranger, signature).is_err(),
            "{order:?} verified under a key that signed nothing"
        );
        let _ = order.verify(&owner, signature);
    }
    let mut input = Input(data);
    let order = order_from(&mut input);
    let signature = order.sign(&owner_key());
    assert!(order.verify(&owner, &signature).is_ok());
    let bit = input.byte();
    let mut flipped = signature;
    flipped[usize::from(bit / 8) % 64] ^= 1 << (bit % 8);
    assert!(order.verify(&owner, &flipped).is_err());
    assert!(order.verify(&owner, &signature[..63]).is_err());
    let other = order_from(&mut input);
    if other != order {
        assert!(
            other.verify(&owner, &signature).is_err(),
            "{other:?} verified under the signature of {order:?}"
        );
    }
}

/// A node's credential checks: a request's capability or an upload ticket (hex in a header,
/// then postcard) never passes under a capability key that signed nothing; what a keeper
/// parses before it signs is in canonical form; and any capability body the group signs is
/// accepted only while in force and naming a valid holder key.
pub fn capability(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let key = CapabilityKey::from(group_key().verifying_key());
    let stranger = CapabilityKey::from(stranger_key().verifying_key());
    if let Ok(request) = Request::decode(data) {
        assert!(authenticate(&request, NODE, &stranger, NOW, SKEW).is_err());
        let _ = authenticate(&request, NODE, &key, NOW, SKEW);
    }
    let mut tickets = Vec::new();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(bytes) = keyfile::bytes_from_hex(text) {
            assert_eq!(keyfile::to_hex(&bytes), text.to_ascii_lowercase());
            tickets.extend(postcard::from_bytes::<UploadTicket>(&bytes).ok());
        }
    }
    tickets.extend(postcard::from_bytes::<UploadTicket>(data).ok());
    for ticket in &tickets {
        assert!(check_upload_ticket(ticket, NODE, &stranger, NOW, SKEW).is_err());
        let _ = check_upload_ticket(ticket, NODE, &key, NOW, SKEW);
    }
    if let Ok(c) = capability::parse_signing_message(data) {
        assert_eq!(capability::signing_message(&capability::encode(&c)), data);
    }
    let signed = SignedCapability {
        body: data.to_vec(),
        signature: group_key()
            .sign(&capability::signing_message(data))
            .to_bytes()
            .to_vec(),
    };
    if let Ok(verified) = key.verify(&signed, NOW, SKEW) {
        let c = verified.capability();
        assert!(NOW < c.expires_at && c.issued_at <= NOW + SKEW);
        assert!(VerifyingKey::from_bytes(&c.holder).is_ok());
    }
    assert!(stranger.verify(&signed, NOW, SKEW).is_err());
}

/// Match proofs, query checks and relayed openings as a node reads them from a request: none
/// passes under node keys that signed nothing. Then an honest exchange shaped by the bytes
/// (cluster size, candidates, which `2t + 1` nodes open, the distance, a node lacking the
/// image): the proof verifies exactly when the candidate is within τ at every opened node, and
/// gives its distance; for another user, later than the window, or with a leaf key changed,
/// it fails.
pub fn matching(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let strangers = stranger_node_keys();
    if let Ok(request) = Request::decode(data) {
        let policy = MatchPolicy {
            node_keys: strangers.clone(),
            t: 1,
            max_distance: MAX_DISTANCE,
            window_s: 3600,
        };
        let proofs: Vec<&MatchProof> = match &request.body {
            NodeBody::Fetch {
                by: FetchBy::Match(proof),
            } => vec![proof],
            NodeBody::Resolve { proofs } => proofs.iter().collect(),
            _ => Vec::new(),
        };
        for proof in proofs {
            assert!(matching::verify(proof, USER, &policy, NOW).is_err());
        }
        match &request.body {
            NodeBody::Evaluate {
                query_id,
                issued,
                scan,
                share_digests,
                checks,
                ..
            } => {
                let answered = Answered {
                    node: NODE,
                    user: USER,
                    query_id,
                    issued: *issued,
                };
                let context = matching::check_context(
                    &matching::query_context(query_id, *issued, scan),
                    share_digests,
                );
                assert!(
                    matching::verify_checks(checks, &answered, &context, &strangers, 1).is_err()
                );
            }
            NodeBody::Reduce {
                query_id,
                issued,
                openings,
                ..
            } => {
                let answered = Answered {
                    node: NODE,
                    user: USER,
                    query_id,
                    issued: *issued,
                };
                let verified = matching::verify_openings(
                    openings,
                    &answered,
                    &[0; 32],
                    MAX_DISTANCE,
                    &strangers,
                );
                assert!(verified.is_err() || openings.is_empty());
            }
            _ => {}
        }
    }
    honest_match(&mut Input(data));
}

/// The structured half of [`matching`].
fn honest_match(input: &mut Input<'_>) {
    let t = 1 + usize::from(input.byte() % 2);
    let n = 2 * t + 1 + usize::from(input.byte() % 2);
    let need = 2 * t + 1;
    let keys: Vec<SigningKey> = (1..=n as u8).map(node_key).collect();
    let policy = MatchPolicy {
        node_keys: keys.iter().map(SigningKey::verifying_key).collect(),
        t,
        max_distance: MAX_DISTANCE,
        window_s: 3600,
    };
    let count = 1 + usize::from(input.byte() % 8);
    let position = usize::from(input.byte()) % count;
    let handles: Vec<[u8; 16]> = (0..count)
        .map(|c| {
            let mut h: [u8; 16] = input.array();
            h[0] = c as u8;
            h
        })
        .collect();
    let query_id: [u8; 16] = input.array();
    let issued = NOW - u64::from(input.byte());
    let mut rng = rng(input.array());
    let flags = input.byte();
    let distance = u32::from(input.byte() % 16);
    let g = if flags & 1 == 0 {
        Fp::ZERO
    } else {
        Fp::new(input.u64())
    };
    let shares = share_values(&[Fp::from(distance), g], 2 * t, n, &mut rng).expect("2t < n");
    let mut values: Vec<Vec<Option<[u32; 2]>>> = Vec::with_capacity(n);
    for share in &shares {
        let mut row = Vec::with_capacity(count);
        for c in 0..count {
            if c == position {
                row.push(Some([share[0].value(), share[1].value()]));
            } else if input.byte() & 1 == 1 {
                row.push(Some([input.u32() % P, input.u32() % P]));
            } else {
                row.push(None);
            }
        }
        values.push(row);
    }
    let lacking = (flags & 2 != 0).then(|| usize::from(input.byte()) % n);
    if let Some(l) = lacking {
        values[l][position] = None;
    }
    let answers: Vec<KeptAnswer> = (0..n)
        .map(|i| {
            let node = i as u8 + 1;
            let answered = Answered {
                node,
                user: USER,
                query_id: &query_id,
                issued,
            };
            let signed =
                matching::sign_answer(&keys[i], &answered, 0, &handles, &values[i], &mut rng);
            KeptAnswer {
                node,
                values: values[i].clone(),
                answer_key: signed.answer_key,
                signature: signed.signature,
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, input);
    order.truncate(need);
    let chosen: Vec<KeptAnswer> = order.iter().map(|&i| answers[i].clone()).collect();
    let proof = matching::prove(query_id, issued, 0, &handles, &chosen, position);
    let within =
        g == Fp::ZERO && distance <= MAX_DISTANCE && !lacking.is_some_and(|l| order.contains(&l));
    match matching::verify(&proof, USER, &policy, NOW) {
        Ok(proven) => {
            assert!(within, "a proof of a candidate beyond τ verified");
            assert_eq!(
                proven,
                ProvenMatch {
                    handle: handles[position],
                    distance
                }
            );
        }
        Err(e) => assert!(!within, "an honest proof was refused: {e}"),
    }
    assert!(matching::verify(&proof, "someone else", &policy, NOW).is_err());
    assert!(matching::verify(&proof, USER, &policy, issued + 3601).is_err());
    let mut altered = proof;
    let at = usize::from(input.byte()) % altered.openings.len();
    altered.openings[at].leaf_key[0] ^= 1;
    assert!(matching::verify(&altered, USER, &policy, NOW).is_err());
}

/// A client's image decoder and pHash: any file decodes to a typed error or to an image within
/// the pixel limit whose pixels match its size, and whose hash is the one the client computes
/// with its default limits.
pub fn image(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let limits = Limits {
        max_pixels: IMAGE_MAX_PIXELS,
    };
    match decode_luma(data, &limits) {
        Ok(luma) => {
            let pixels = u64::from(luma.width) * u64::from(luma.height);
            assert!(luma.width >= 1 && luma.height >= 1);
            assert!(pixels <= limits.max_pixels);
            assert_eq!(luma.pixels.len() as u64, pixels);
            let hash = hash_luma(&luma);
            assert_eq!(phash64(data).ok(), Some(hash));
        }
        Err(obscura_phash::Error::TooLarge {
            width,
            height,
            max_pixels,
        }) => assert!(u64::from(width) * u64::from(height) > max_pixels),
        Err(obscura_phash::Error::Empty { width, height }) => assert!(width == 0 || height == 0),
        Err(_) => {}
    }
}

/// Every purpose a sealed file is opened under.
fn purposes() -> Vec<String> {
    vec![
        node_purpose(NODE),
        keeper_purpose(NODE),
        obscura_client::config::SECRETS_PURPOSE.to_string(),
        OWNER_PURPOSE.to_string(),
        PLAN_PURPOSE.to_string(),
        obscura_keeper_server::vault::KEYRING_PURPOSE.to_string(),
    ]
}

/// Sealed key files and secrets as the node, the keeper and the client open them: a file opens
/// under at most one purpose, never under another wrapping key, and its typed contents never
/// panic their readers; the same readers take any plaintext; and what is sealed opens to
/// itself, but not with any bit of the file flipped.
pub fn sealed_file(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let key = wrapping_key();
    let stranger = stranger_wrapping_key();
    let purposes = purposes();
    let mut opened = 0;
    for purpose in &purposes {
        if let Ok(file) = keyfile::open(data, purpose, &key) {
            opened += 1;
            assert_eq!(&file.purpose, purpose);
            assert!(keyfile::open(data, purpose, &stranger).is_err());
        }
    }
    assert!(opened <= 1, "a file opened under {opened} purposes");
    read_secrets(data, &key);
    let plain = &data[..data.len().min(64 << 10)];
    let mut rng = rng([0x5e; 32]);
    for purpose in &purposes[..5] {
        let sealed =
            keyfile::seal(plain, purpose, 1, &key, &mut rng).expect("a printable purpose seals");
        read_secrets(&sealed, &key);
    }
    let purpose = node_purpose(NODE);
    let version = data.len() as u32;
    let sealed = keyfile::seal(plain, &purpose, version, &key, &mut rng).expect("it seals");
    let back = keyfile::open(&sealed, &purpose, &key).expect("what was sealed opens");
    assert_eq!(back.secret.as_slice(), plain);
    assert_eq!(back.version, version);
    let bit = data.first().map_or(0, |&b| usize::from(b)) * 7919 + data.len();
    let mut altered = sealed;
    let at = (bit / 8) % altered.len();
    altered[at] ^= 1 << (bit % 8);
    assert!(keyfile::open(&altered, &purpose, &key).is_err());
}

/// What the servers and the client read from their sealed files.
fn read_secrets(sealed: &[u8], key: &WrappingKey) {
    let _ = open_secrets::<NodeSecrets>(sealed, &node_purpose(NODE), key);
    if let Ok(secrets) = open_secrets::<KeeperSecrets>(sealed, &keeper_purpose(NODE), key) {
        let _ = ServerKeys::from_bytes(&secrets.opaque);
        let _ = signing::key_package_from(&secrets.capability_key);
        let _ = signing::public_package_from(&secrets.capability_public);
    }
    let _ = open_secrets::<ClientSecrets>(sealed, obscura_client::config::SECRETS_PURPOSE, key);
    let _ = RotationPlan::open(sealed, key);
}

/// The node's, keeper's and client's JSON configurations: a file that parses serializes and
/// parses back to the same configuration, and the checks a node runs on it before it opens
/// any file never panic.
pub fn node_config(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    if let Ok(config) = serde_json::from_slice::<NodeConfig>(data) {
        let again = serde_json::to_vec(&config).expect("a configuration serializes");
        assert_eq!(
            serde_json::from_slice::<NodeConfig>(&again).ok(),
            Some(config.clone())
        );
        node_checks(&config);
    }
    if let Ok(config) = serde_json::from_slice::<KeeperConfig>(data) {
        let again = serde_json::to_vec(&config).expect("a configuration serializes");
        assert_eq!(
            serde_json::from_slice::<KeeperConfig>(&again).ok(),
            Some(config.clone())
        );
        let _ = ed25519_key(&config.owner_public_key);
        let _ = keyfile::hex32(&config.bootstrap_digest);
        for peer in &config.peers {
            let _ = keyfile::hex32(peer);
        }
    }
    if let Ok(config) = serde_json::from_slice::<ClientConfig>(data) {
        let again = serde_json::to_vec(&config).expect("a configuration serializes");
        assert_eq!(
            serde_json::from_slice::<ClientConfig>(&again).ok(),
            Some(config.clone())
        );
        for shares in &config.keeper_public_shares {
            for share in shares {
                if let Some(b) = keyfile::hex32(share) {
                    let _ = oprf::deserialize(&b);
                }
            }
        }
    }
}

/// The checks of `LoadedNode::load` that need no file, in its order. `load` itself is not run:
/// it creates the store file a configuration names, anywhere.
fn node_checks(config: &NodeConfig) {
    let _ = ed25519_key(&config.owner_public_key);
    let _ = ed25519_key(&config.capability_key);
    for key in &config.node_keys {
        let _ = ed25519_key(key);
    }
    let p = config.policy;
    // `load` multiplies without a check; here an overflow counts as out of range.
    let in_range = p.lookups_per_band != 0
        && p.lookups_per_band
            .checked_mul(obscura_tokens::BANDS)
            .is_some_and(|n| n <= obscura_proto::limits::MAX_LOOKUP_TOKENS)
        && p.max_candidates as usize <= obscura_proto::limits::MAX_CANDIDATES
        && p.exhaustive() >= p.max_candidates
        && p.exhaustive() as usize <= obscura_proto::limits::MAX_CANDIDATES
        && p.max_distance <= 64;
    if in_range {
        let _ = p.relay_bytes(p.exhaustive(), config.n);
        let _ = p.fitting_exhaustive(config.n);
    }
    let _ = obscura_node::config::store_options(&config.storage);
}

/// The client's indexing journal as it reads an entry back ([`obscura_client::EntryText`]):
/// never panics, every id it yields prints as 32 hex digits that parse to the same id, and an
/// entry written in the journal's own form reads back as written.
pub fn journal(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let text = std::str::from_utf8(data).unwrap_or_default();
    let entry = obscura_client::EntryText::parse(text);
    for id in &entry.ids {
        assert_eq!(id.to_string().parse::<ImageId>().ok(), Some(*id));
    }
    let mut written = format!(
        "{} {}{}\n",
        entry.pid.unwrap_or(1),
        entry.writer.unwrap_or(0),
        if entry.committed { " committed" } else { "" }
    );
    for id in &entry.ids {
        written.push_str(&format!("{id}\n"));
    }
    let again = obscura_client::EntryText::parse(&written);
    assert_eq!(again.ids, entry.ids);
    assert_eq!(again.committed, entry.committed);
}

/// The audit entry an auditor builds from a wire entry, as the client's verification does.
fn from_wire(e: obscura_proto::WireAuditEntry) -> Option<AuditEntry> {
    AuditEntry::try_from(e).ok()
}

/// The position an audit error names.
fn audit_error_seq(e: &AuditError) -> u64 {
    match *e {
        AuditError::Gap { seq, .. }
        | AuditError::BrokenLink { seq }
        | AuditError::Altered { seq }
        | AuditError::BadCheckpoint { seq } => seq,
        _ => u64::MAX,
    }
}

/// A node's audit log as an auditor checks it. A wire page never shows a checkpoint signed by a
/// key that signed nothing, and a report counts what it was fed. A chain built from the bytes
/// verifies, up to its first checkpoint (whose signature is garbage); changing any field of
/// any entry is caught at that entry or at that checkpoint, whichever comes first. (The
/// store's own entry decoder is private; a log reaches an auditor this way.)
pub fn audit_entry(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let stranger = stranger_key().verifying_key();
    if let Ok(Response(ResponseBody::Audit { entries, .. })) = Response::decode(data) {
        if let Some(entries) = entries
            .into_iter()
            .map(from_wire)
            .collect::<Option<Vec<_>>>()
        {
            if let Ok(report) = audit::verify(&entries, &stranger) {
                let n = entries.len() as u64;
                assert_eq!(
                    report,
                    AuditReport {
                        entries: n,
                        checkpoints: 0,
                        unsigned_tail: n
                    }
                );
            }
            if let Some(first) = entries.first() {
                let mut verifier = Verifier::resume(stranger, first.seq, first.hash);
                let _ = verifier.feed(&entries);
                let _ = verifier.report();
            }
        }
    }
    let mut input = Input(data);
    let len = usize::from(input.byte() % 17);
    let mut entries = Vec::with_capacity(len);
    let mut prev = [0u8; 32];
    for seq in 0..len as u64 {
        let kind = AuditKind::from_tag(input.byte() % 10).unwrap_or(AuditKind::Query);
        let time = input.u64();
        let subject = input.array();
        let detail_len = usize::from(input.byte() % 80);
        let detail = input.bytes(detail_len).to_vec();
        let mut e = AuditEntry {
            seq,
            prev,
            hash: [0; 32],
            time,
            kind,
            subject,
            detail,
        };
        e.hash = e.expected_hash();
        prev = e.hash;
        entries.push(e);
    }
    let checkpoint = entries
        .iter()
        .position(|e| e.kind == AuditKind::Checkpoint)
        .map(|i| i as u64);
    match (audit::verify(&entries, &stranger), checkpoint) {
        (Ok(report), None) => assert_eq!(
            report,
            AuditReport {
                entries: len as u64,
                checkpoints: 0,
                unsigned_tail: len as u64
            }
        ),
        (Err(AuditError::BadCheckpoint { seq }), Some(c)) => assert_eq!(seq, c),
        (other, c) => panic!("a well-chained log gave {other:?} (first checkpoint {c:?})"),
    }
    if entries.is_empty() {
        return;
    }
    let at = usize::from(input.byte()) % entries.len();
    let e = &mut entries[at];
    match input.byte() % 5 {
        0 => e.time ^= 1,
        1 => e.subject[0] ^= 1,
        2 => e.detail.push(0),
        3 => e.prev[0] ^= 1,
        _ => e.hash[0] ^= 1,
    }
    let expected = checkpoint.map_or(at as u64, |c| c.min(at as u64));
    let err = audit::verify(&entries, &stranger).expect_err("an altered entry is caught");
    assert_eq!(audit_error_seq(&err), expected, "{err:?}");
}

/// A keeper session's sealed messages, at both ends (first byte: bit 0 the client's end, bit 1
/// an expired session; then length-prefixed messages). A keeper opens a request at most once;
/// a client opens at most one answer per request it sealed; an expired channel opens nothing.
pub fn keeper_session(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut input = Input(data);
    let flags = input.byte();
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let expired = flags & 2 != 0;
    let expires_at = NOW + 3600;
    let now = if expired {
        expires_at + u64::from(input.byte())
    } else {
        NOW
    };
    let mut channel = Channel::new(&SESSION_KEY, SESSION_ID, role, expires_at);
    let mut accepted: Vec<&[u8]> = Vec::new();
    for message in input.frames(64) {
        if role == Role::Client {
            match channel.seal(SESSION_REQUEST, now) {
                Ok(_) => assert!(!expired),
                Err(e) => assert_eq!(e, SessionError::Expired),
            }
        }
        match channel.open(message, now) {
            Ok(plain) => {
                assert!(!expired, "an expired channel opened a message");
                assert!(!accepted.contains(&message), "a message was accepted twice");
                accepted.push(message);
                if role == Role::Server {
                    channel
                        .seal(&plain, now)
                        .expect("a keeper answers the request it opened");
                }
                assert_eq!(channel.open(message, now), Err(SessionError::Refused));
            }
            Err(e) if expired => assert_eq!(e, SessionError::Expired),
            Err(_) => {}
        }
    }
}

/// A keeper's OPAQUE state, made once per thread: its keys, and one account's messages.
struct Opaque {
    keys: ServerKeys,
    context: Vec<u8>,
    registration: Vec<u8>,
    upload: Vec<u8>,
    file: Vec<u8>,
    ke1: Vec<u8>,
    ke3: Vec<u8>,
}

impl Opaque {
    /// Runs Argon2 twice (the client's registration and login), once per thread.
    fn new() -> Opaque {
        let mut rng = rng([0x0a; 32]);
        let keys = ServerKeys::random(&mut rng);
        let context = obscura_cluster::keeper::login_context(NODE);
        let (client, registration) =
            ClientRegistration::start(PASSWORD, &mut rng).expect("registration starts");
        let response = keys
            .registration_response(&registration, USER.as_bytes())
            .expect("the keeper answers a registration");
        let upload = client
            .finish(PASSWORD, &response, &mut rng)
            .expect("registration finishes");
        let file = ServerKeys::password_file(&upload).expect("the upload is well formed");
        let (login, ke1) = ClientLogin::start(PASSWORD, &mut rng).expect("login starts");
        let (_, ke2) = keys
            .login_response(
                Some(file.as_slice()),
                &ke1,
                USER.as_bytes(),
                &context,
                &mut self::rng(KE2_SEED),
            )
            .expect("the keeper answers KE1");
        let (ke3, _) = login
            .finish(PASSWORD, &ke2, &context, &mut rng)
            .expect("the right password logs in");
        Opaque {
            keys,
            context,
            registration,
            upload,
            file,
            ke1,
            ke3,
        }
    }

    /// The keeper's side of the fixture's login, up to KE3.
    fn pending(&self) -> obscura_keeper::session::PendingLogin {
        self.keys
            .login_response(
                Some(self.file.as_slice()),
                &self.ke1,
                USER.as_bytes(),
                &self.context,
                &mut rng(KE2_SEED),
            )
            .expect("the fixture's KE1 is answered")
            .0
    }
}

thread_local! {
    static OPAQUE: Opaque = Opaque::new();
}

/// OPAQUE messages as a keeper parses them (first byte: 0 registration request, 1 KE1, 2
/// registration upload, 3 KE3, 4 the keeper's stored keys). A registration is answered the
/// same each time; KE1 gets an answer for an unknown user exactly when it gets one for a known
/// user, of the same length (no oracle); only the client's own KE3 finishes the login.
pub fn opaque_keeper(data: &[u8]) {
    let Some((&op, message)) = data.split_first() else {
        return;
    };
    if message.len() > account_limits::MAX_BLOB {
        return;
    }
    OPAQUE.with(|f| match op % 5 {
        0 => {
            let first = f.keys.registration_response(message, USER.as_bytes());
            let second = f.keys.registration_response(message, USER.as_bytes());
            assert_eq!(first, second);
        }
        1 => {
            let known = f.keys.login_response(
                Some(f.file.as_slice()),
                message,
                USER.as_bytes(),
                &f.context,
                &mut rng(KE2_SEED),
            );
            let unknown = f.keys.login_response(
                None,
                message,
                USER.as_bytes(),
                &f.context,
                &mut rng(KE2_SEED),
            );
            match (known, unknown) {
                (Ok((_, a)), Ok((_, b))) => assert_eq!(a.len(), b.len()),
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!(
                    "a known and an unknown user are told apart: {:?} / {:?}",
                    a.map(|(_, ke2)| ke2.len()),
                    b.map(|(_, ke2)| ke2.len())
                ),
            }
        }
        2 => {
            if let Ok(file) = ServerKeys::password_file(message) {
                let _ = f.keys.login_response(
                    Some(file.as_slice()),
                    &f.ke1,
                    USER.as_bytes(),
                    &f.context,
                    &mut rng(KE2_SEED),
                );
            }
        }
        3 => {
            if f.pending().finish(message, &f.context).is_ok() {
                assert_eq!(message, f.ke3.as_slice(), "a forged KE3 finished a login");
            }
        }
        _ => {
            let _ = ServerKeys::from_bytes(message);
        }
    });
}

/// What a client blinds in the voprf target.
const BAND_INPUTS: [&[u8]; 8] = [
    b"band 0 value 1",
    b"band 1 value 2",
    b"band 2 value 3",
    b"band 3 value 4",
    b"band 4 value 5",
    b"band 5 value 6",
    b"band 6 value 7",
    b"band 7 value 8",
];

/// Blinded elements as a keeper decodes and evaluates them: an element decodes only from its
/// canonical encoding, a decoded batch is always evaluated, and the keeper's answer verifies
/// against its public key and is its key times each element. A client's check of a keeper's
/// answer made of the bytes never panics.
pub fn voprf_keeper(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let encoded: Vec<[u8; 32]> = data
        .chunks_exact(32)
        .take(64)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    for e in &encoded {
        if let Ok(p) = oprf::deserialize(e) {
            assert_eq!(&oprf::serialize(&p), e);
        }
    }
    let key = oprf_key();
    let public = oprf::public_key(&key);
    let attacker_proof = data
        .get(..64)
        .and_then(|b| Proof::from_bytes(b.try_into().expect("64 bytes")).ok());
    match Elements::from_bytes(encoded.clone()) {
        Ok(blinded) if blinded.is_empty() => {
            assert!(oprf::evaluate_batch(&key, &blinded, &mut rng([1; 32])).is_err())
        }
        Ok(blinded) => {
            let answer = oprf::evaluate_batch(&key, &blinded, &mut rng([1; 32]))
                .expect("a keeper evaluates any decoded batch");
            assert_eq!(answer.elements.len(), blinded.len());
            let points = oprf::verify_batch(&public, &blinded, &answer.elements, &answer.proof)
                .expect("a keeper's honest answer verifies");
            for (p, b) in points.iter().zip(blinded.points()) {
                assert_eq!(*p, b * key);
            }
            if let Some(proof) = &attacker_proof {
                let _ = oprf::verify_batch(&public, &blinded, &answer.elements, proof);
            }
        }
        Err(e) => assert_eq!(e, obscura_keeper::Error::Element),
    }
    let inputs = &BAND_INPUTS[..encoded.len().clamp(1, BAND_INPUTS.len())];
    if let Ok(batch) = BlindedBatch::new(inputs, &mut rng([2; 32])) {
        let answer = Evaluation {
            elements: encoded.iter().take(batch.len()).copied().collect(),
            proof: attacker_proof.unwrap_or(Proof {
                c: Scalar::ZERO,
                s: Scalar::ZERO,
            }),
        };
        let _ = batch.verify(1, &public, &answer);
    }
}

/// A FROST key dealt to three keepers (any two sign), a signing package over one message with
/// two keepers' commitments, and their honest signature shares; made once per thread.
struct Frost {
    key: KeyPackage,
    public: PublicKeyPackage,
    package: Vec<u8>,
    shares: Vec<(u8, Vec<u8>)>,
    commitments: Vec<(u8, Vec<u8>)>,
    peers: Vec<PeerKeys>,
    round1: Vec<(u8, Vec<u8>)>,
    sealed: Vec<u8>,
}

/// The key-generation context of the frost target.
const DKG_CONTEXT: &[u8] = b"obscura fuzz dkg";

impl Frost {
    fn new() -> Frost {
        let mut rng = rng([0x0f; 32]);
        let (packages, public) = signing::deal(3, 2, &mut rng).expect("2 of 3");
        let keys: Vec<KeyPackage> = packages
            .iter()
            .map(|p| signing::key_package_from(p).expect("a dealt package parses"))
            .collect();
        let mut nonces = Vec::new();
        let mut commitments = Vec::new();
        for (j, key) in keys.iter().enumerate().take(2) {
            let (n, c) = signing::commit(key, &mut rng).expect("a commitment serializes");
            nonces.push(n);
            commitments.push((j as u8 + 1, c));
        }
        let package = signing::signing_package(b"obscura fuzz message", &commitments)
            .expect("two commitments make a package");
        let shares = keys
            .iter()
            .zip(nonces)
            .enumerate()
            .map(|(j, (key, n))| {
                let share = signing::sign_share(key, n, &package).expect("a keeper signs");
                (j as u8 + 1, share)
            })
            .collect();
        let secrets: Vec<_> = (0..3).map(|_| signing::peer_key(&mut rng)).collect();
        let public_peers: Vec<[u8; 32]> = secrets.iter().map(|(_, p)| *p).collect();
        let peers: Vec<PeerKeys> = secrets
            .iter()
            .enumerate()
            .map(|(j, (s, _))| PeerKeys::new(j as u8 + 1, s, &public_peers).expect("own key"))
            .collect();
        let sealed = peers[1]
            .seal(1, DKG_CONTEXT, b"a round-2 package", &mut rng)
            .expect("keeper 1 is a peer");
        let round1 = (2..=3u8)
            .map(|j| {
                let (_, package) =
                    signing::dkg_start(j, 3, 2, &mut self::rng([j; 32])).expect("2 of 3 starts");
                (j, package)
            })
            .collect();
        let mut keys = keys;
        Frost {
            key: keys.swap_remove(0),
            public,
            package,
            shares,
            commitments,
            peers,
            round1,
            sealed,
        }
    }
}

thread_local! {
    static FROST: Frost = Frost::new();
}

/// FROST messages as keepers and clients parse them (first byte: 0 a signing package a keeper
/// signs, 1 signature shares a client aggregates, 2 a public key package, 3 a key package, 4
/// a message and commitments a client packs, 5 a sealed round-2 package, 6 round-1 packages a
/// keeper takes into round 2). Nothing panics, and an aggregated signature is a valid Ed25519
/// signature under the group key.
pub fn frost_keeper(data: &[u8]) {
    let Some((&op, message)) = data.split_first() else {
        return;
    };
    if message.len() > account_limits::MAX_BLOB {
        return;
    }
    FROST.with(|f| match op % 7 {
        0 => {
            let _ = signing::package_message(message);
            let (nonces, _) =
                signing::commit(&f.key, &mut rng([3; 32])).expect("a commitment serializes");
            let _ = signing::sign_share(&f.key, nonces, message);
        }
        1 => {
            let shares = Input(message).addressed(8);
            if let Ok(signature) = signing::aggregate(&f.package, &shares, &f.public) {
                let group = VerifyingKey::from_bytes(&signing::public_key(&f.public))
                    .expect("the group key is a point");
                let signed = signing::package_message(&f.package).expect("the package parses");
                assert!(
                    group
                        .verify_strict(&signed, &Signature::from_bytes(&signature))
                        .is_ok(),
                    "an aggregated signature does not verify"
                );
            }
        }
        2 => {
            let _ = signing::public_package_from(message);
        }
        3 => {
            let _ = signing::key_package_from(message);
        }
        4 => {
            let mut input = Input(message);
            let len = usize::from(input.u16());
            let signed = input.bytes(len).to_vec();
            let commitments = input.addressed(8);
            let _ = signing::signing_package(&signed, &commitments);
        }
        5 => {
            let mut input = Input(message);
            let from = input.byte();
            let _ = f.peers[0].open(from, DKG_CONTEXT, input.rest());
        }
        _ => {
            let round1 = Input(message).addressed(4);
            let (state, _) = signing::dkg_start(1, 3, 2, &mut rng([1; 32])).expect("2 of 3");
            let _ =
                signing::dkg_round2(state, &f.peers[0], DKG_CONTEXT, &round1, &mut rng([4; 32]));
        }
    });
}

/// The querier's combination of the nodes' Stage-2 answers (first byte odd: answers straight
/// from the bytes, which must not panic). Otherwise each candidate's `(h, g)` lies on
/// polynomials of degree 2t shaped by the bytes, some nodes lack some candidates, and the
/// answers arrive from a chosen subset in a chosen order: the ranking is exactly the
/// candidates with `g = 0` and `h ≤ τ`; and an answer beyond the first `2t + 1` shifted by one
/// names exactly that candidate.
pub fn stage2_combine(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut input = Input(data);
    let lying = input.byte() & 1 == 1;
    let t = 1 + usize::from(input.byte() % 3);
    let n = 2 * t + 1 + usize::from(input.byte() % 4);
    let need = 2 * t + 1;
    let count = usize::from(input.byte() % 9);
    let params = SearchParams {
        n,
        t,
        max_distance: u32::from(input.byte() % 66),
        top: 1 + usize::from(input.byte() % 8),
    };
    let ids: Vec<ImageId> = (0..count).map(|c| ImageId([c as u8 + 1; 16])).collect();
    let mut rng = rng(input.array());
    let (querier, requests) =
        Querier::start(input.u64(), ids.clone(), params, &mut rng).expect("1 ≤ t and 2t < n");
    assert_eq!(requests.len(), n);
    if lying {
        let mut answers = Vec::new();
        for _ in 0..input.byte() % 12 {
            let node = input.byte() % (n as u8 + 2);
            let len = if input.byte() % 4 == 0 {
                usize::from(input.byte() % 10)
            } else {
                count
            };
            let mut values = Vec::with_capacity(len);
            for _ in 0..len {
                values.push(
                    (input.byte() & 1 == 1).then(|| [Fp::new(input.u64()), Fp::new(input.u64())]),
                );
            }
            answers.push(NodeAnswer { node, values });
        }
        let _ = querier.finish(answers);
        return;
    }
    let mut order: Vec<u8> = (1..=n as u8).collect();
    shuffle(&mut order, &mut input);
    order.truncate(need + usize::from(input.byte()) % (n - need + 1));
    let mut values: Vec<Vec<Option<[Fp; 2]>>> = vec![vec![None; count]; n];
    let mut expected = Ranked {
        matches: Vec::new(),
        candidates: count,
        beyond: 0,
        incomplete: 0,
    };
    let mut whole = vec![true; count];
    for (c, &id) in ids.iter().enumerate() {
        let kind = input.byte();
        let (h, g) = if kind & 1 == 0 {
            (Fp::from(u32::from(input.byte() % 80)), Fp::ZERO)
        } else {
            (Fp::new(input.u64()), Fp::new(input.u64()).max(Fp::ONE))
        };
        let shares = share_values(&[h, g], 2 * t, n, &mut rng).expect("2t < n");
        let lacking = (kind & 2 != 0).then(|| input.byte() % n as u8 + 1);
        for (x, share) in shares.iter().enumerate() {
            values[x][c] = (Some(x as u8 + 1) != lacking).then(|| [share[0], share[1]]);
        }
        if lacking.is_some_and(|l| order[..need].contains(&l)) {
            expected.incomplete += 1;
            whole[c] = false;
        } else if g != Fp::ZERO || h.value() > params.max_distance {
            expected.beyond += 1;
        } else {
            expected.matches.push(Match {
                id,
                distance: h.value(),
            });
        }
    }
    expected.matches.sort_by_key(|m| (m.distance, m.id));
    expected.matches.truncate(params.top);
    let mut answers: Vec<NodeAnswer> = order
        .iter()
        .map(|&x| NodeAnswer {
            node: x,
            values: values[usize::from(x) - 1].clone(),
        })
        .collect();
    let mut shifted = None;
    if order.len() > need && count > 0 && input.byte() & 1 == 1 {
        let c = usize::from(input.byte()) % count;
        let e = need + usize::from(input.byte()) % (order.len() - need);
        let k = usize::from(input.byte() & 1);
        if let (true, Some(v)) = (whole[c], answers[e].values[c].as_mut()) {
            v[k] += Fp::ONE;
            shifted = Some(ids[c]);
        }
    }
    match (querier.finish(answers), shifted) {
        (Ok(ranked), None) => assert_eq!(ranked, expected),
        (Err(obscura_mpc::Error::InconsistentAnswers { candidates }), Some(id)) => {
            assert_eq!(candidates, vec![id])
        }
        (other, shifted) => {
            panic!("answers on polynomials of degree 2t (shifted: {shifted:?}) gave {other:?}")
        }
    }
}

/// A node's side of Stage-2. A query share decodes only from values below p and re-encodes to
/// itself. Nodes that all follow the protocol give the querier exactly the candidates within τ
/// and their Hamming distances. Then node 1 takes relayed openings made of the bytes, round
/// after round: it answers or refuses, and never panics.
pub fn stage2_node(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    if let Some(bytes) = data.get(..HASH_SHARE_LEN) {
        if let Ok(share) = HashShare::from_bytes(NODE, bytes) {
            assert_eq!(share.to_bytes().as_slice(), bytes);
        }
    }
    let mut input = Input(data);
    let t = 1 + usize::from(input.byte() % 2);
    let n = 2 * t + 1 + usize::from(input.byte() % 2);
    let tau = u32::from(input.byte() % 12);
    let count = usize::from(input.byte() % 5);
    let mut rng = rng(input.array());
    let keys = obscura_sharing::zero::deal(n, t, &mut rng).expect("1 ≤ t and 2t < n ≤ 24");
    let query = input.u64();
    let hashes: Vec<u64> = (0..count).map(|_| input.u64()).collect();
    let ids: Vec<ImageId> = (0..count).map(|c| ImageId([c as u8 + 1; 16])).collect();
    let stored: Vec<Vec<HashShare>> = hashes
        .iter()
        .map(|&h| share_hash(h, t, n, &mut rng).expect("1 ≤ t < n"))
        .collect();
    let by_node: Vec<Vec<Option<&HashShare>>> = (0..n)
        .map(|i| stored.iter().map(|shares| Some(&shares[i])).collect())
        .collect();
    let params = SearchParams {
        n,
        t,
        max_distance: tau,
        top: count.max(1),
    };
    let (querier, requests) =
        Querier::start(query, ids.clone(), params, &mut rng).expect("1 ≤ t and 2t < n");
    let transcript =
        obscura_mpc::node::run_all(&keys, &requests, &by_node).expect("honest nodes answer");
    let ranked = querier
        .finish(transcript.answers)
        .expect("honest answers combine");
    let mut within: Vec<Match> = ids
        .iter()
        .zip(&hashes)
        .map(|(&id, &h)| Match {
            id,
            distance: (h ^ query).count_ones(),
        })
        .filter(|m| m.distance <= tau)
        .collect();
    within.sort_by_key(|m| (m.distance, m.id));
    assert_eq!(ranked.beyond, count - within.len());
    assert_eq!(ranked.matches, within);
    assert_eq!(ranked.incomplete, 0);

    let (mut session, mut own) =
        NodeSession::start(&keys[0], &requests[0], &by_node[0]).expect("its own request");
    for _ in 0..=obscura_mpc::node::rounds(tau) {
        let mut openings = Vec::new();
        for _ in 0..input.byte() % (n as u8 + 2) {
            let node = input.byte() % (n as u8 + 2);
            let round = if input.byte() % 8 == 0 {
                input.byte()
            } else {
                session.round()
            };
            let len = if input.byte() % 8 == 0 {
                usize::from(input.byte())
            } else {
                own.values.len()
            };
            let mut values = Vec::with_capacity(len);
            for _ in 0..len {
                values.push((input.byte() % 5 != 0).then(|| Fp::new(input.u64())));
            }
            openings.push(Opened {
                node,
                round,
                values,
            });
        }
        match session.step(&keys[0], &openings) {
            Ok(Step::Open(o)) => {
                assert_eq!(o.node, NODE);
                own = o;
            }
            Ok(Step::Answer(a)) => {
                assert_eq!(a.values.len(), count);
                break;
            }
            Err(_) => break,
        }
    }
}

/// Sharing, differentially. The image bytes split k-of-n over GF(2^8) alike on every kernel
/// this CPU runs, any k shares in any order rebuild them on every kernel, fewer than k or a
/// repeated share are refused; through an owner-signed manifest, with Shamir shares and with
/// compact ones (AES-GCM, Reed–Solomon pieces, a shared key), a lying node is named and the
/// image still rebuilt when k honest shares remain; and values shared over GF(2^31 − 1) with
/// degree t come back from any t + 1 shares.
pub fn share_roundtrip(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut input = Input(data);
    let k = 2 + usize::from(input.byte() % 7);
    let n = k + usize::from(input.byte() % 8);
    let seed: [u8; 32] = input.array();
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut input);
    let secret = input.rest();
    if secret.len() > 64 << 10 {
        return;
    }
    let params = Params::new(k, n).expect("2 ≤ k ≤ n ≤ 255");
    let split = |kernel| split_with_kernel(secret, params, &mut rng(seed), kernel);
    let Ok(shares) = split(Kernel::Portable) else {
        assert!(secret.is_empty(), "a non-empty secret did not split");
        return;
    };
    assert_eq!(shares.len(), n);
    for kernel in Kernel::available() {
        assert_eq!(
            split(kernel).ok().as_ref(),
            Some(&shares),
            "{}",
            kernel.name()
        );
    }
    let chosen: Vec<_> = order.iter().map(|&i| shares[i].clone()).collect();
    for kernel in Kernel::available() {
        let rebuilt = reconstruct_with_kernel(&chosen, k, kernel).expect("k distinct shares");
        assert_eq!(rebuilt, secret, "{}", kernel.name());
    }
    assert!(reconstruct(&chosen[..k - 1], k).is_err());
    let mut repeated = chosen[..k].to_vec();
    repeated[1] = repeated[0].clone();
    assert!(reconstruct(&repeated, k).is_err());

    if secret.len() <= 4096 {
        let owner = owner_key();
        let hash_shares = vec![Vec::<u8>::new(); n];
        let image = ImageId(seed[..16].try_into().expect("16 bytes"));
        for storage in [Storage::Shamir, Storage::Compact] {
            let shares = match storage {
                Storage::Compact => storage
                    .split(secret, params, &mut rng(seed))
                    .expect("a non-empty secret splits"),
                _ => shares.clone(),
            };
            let verified = Manifest::for_shares(
                image,
                storage,
                k as u8,
                1,
                secret,
                &shares,
                hash_shares.as_slice(),
                1,
                NOW,
            )
            .and_then(|m| m.sign(&owner))
            .and_then(|m| SignedManifest::from_bytes(&m.to_bytes()))
            .and_then(|m| m.verify(&owner.verifying_key()))
            .expect("a manifest the owner signed verifies");
            let mut received: Vec<_> = order.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(
                verified
                    .reconstruct(received.clone())
                    .expect("n honest shares"),
                secret,
                "{storage:?}"
            );
            let liar = received[0].x;
            received[0].bytes[0] ^= 1;
            if n > k {
                let (rebuilt, culprits) = verified
                    .reconstruct_naming(received)
                    .expect("k honest shares remain");
                assert_eq!(rebuilt, secret);
                assert_eq!(culprits.len(), 1);
                assert_eq!(culprits[0].node, liar);
            } else {
                assert!(verified.reconstruct(received).is_err());
            }
        }
    }

    let t = k - 1;
    let values: Vec<Fp> = secret
        .chunks(4)
        .take(16)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            Fp::from(u32::from_le_bytes(b))
        })
        .collect();
    let per_node = share_values(&values, t, n, &mut rng(seed)).expect("1 ≤ t < n ≤ 255");
    let xs: Vec<usize> = order[..t + 1].to_vec();
    for (j, &value) in values.iter().enumerate() {
        let points: Vec<(u8, Fp)> = xs.iter().map(|&i| (i as u8 + 1, per_node[i][j])).collect();
        assert_eq!(interpolate_at_zero(&points).expect("distinct nodes"), value);
    }
}

/// Stage-1 handles as nodes make and open them: every node gives an image the same handle for
/// one query, and the handle opens to the image; any handle opens without a panic.
pub fn handle(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut input = Input(data);
    let key = HandleKey::from_bytes(input.array());
    let query: [u8; 16] = input.array();
    let issued = input.u64();
    let id: [u8; 16] = input.array();
    let user = String::from_utf8_lossy(input.rest());
    let handles = key.for_query(&user, &query, issued);
    let sealed = handles.seal(&id);
    assert_eq!(handles.open(&sealed), id);
    assert_eq!(key.for_query(&user, &query, issued).seal(&id), sealed);
    let _ = key.for_query(&user, &query, issued).open(&query);
}

/// A record of a node's store, read back as the store reads it. The first byte picks the
/// record: 0 an image's state, 1 a key rotation, 2 an audit entry (then 8 bytes of its
/// position). What decodes must be exactly what the store writes for it: a record read back
/// as something it was not written as is a record the node acts on wrongly.
pub fn store_records(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Some(again) = obscura_store::fuzzing::image_record(rest) {
                assert_eq!(again, rest, "an image record reads back as another");
            }
        }
        1 => {
            if let Some(again) = obscura_store::fuzzing::rotation_record(rest) {
                assert_eq!(
                    again.as_slice(),
                    rest,
                    "a rotation record reads back as another"
                );
            }
        }
        _ => {
            let Some((seq, record)) = rest.split_first_chunk::<8>() else {
                return;
            };
            let seq = u64::from_be_bytes(*seq);
            if let Some((entry, again)) = obscura_store::fuzzing::audit_entry(seq, record) {
                assert_eq!(again, record, "an audit entry reads back as another");
                // A log starting with it verifies only if it is a first entry, rightly hashed.
                let verdict = audit::verify(
                    std::slice::from_ref(&entry),
                    &node_key(NODE).verifying_key(),
                );
                if seq != 0 || entry.prev != [0; 32] || entry.hash != entry.expected_hash() {
                    assert!(verdict.is_err(), "a log of a wrong first entry verifies");
                }
            }
        }
    }
}

thread_local! {
    /// Where the session file target writes its file: a folder per thread (tests run targets
    /// on several at once), made on first use.
    static SCRATCH: std::cell::RefCell<Option<std::path::PathBuf>> =
        const { std::cell::RefCell::new(None) };
}

/// This thread's scratch folder, in memory where the system has `/dev/shm`. Made fresh under a
/// random name, owner-only, never one found there: another user who made it first could have
/// placed links in it.
fn scratch() -> std::path::PathBuf {
    use std::hash::{BuildHasher, Hasher};
    SCRATCH.with(|held| {
        held.borrow_mut()
            .get_or_insert_with(|| {
                let shm = std::path::Path::new("/dev/shm");
                let base = if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                let mut builder = std::fs::DirBuilder::new();
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                loop {
                    // The standard library's per-process random keys, as a random name.
                    let draw = std::collections::hash_map::RandomState::new()
                        .build_hasher()
                        .finish();
                    let dir = base.join(format!("obscura-fuzz-{}-{draw:016x}", std::process::id()));
                    match builder.create(&dir) {
                        Ok(()) => break dir,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => panic!("a scratch folder in {}: {e}", base.display()),
                    }
                }
            })
            .clone()
    })
}

/// Remove this thread's scratch folder of the session file target (the replay tests do, once
/// done with a target); the next use makes a new one.
pub fn remove_scratch() {
    if let Some(dir) = SCRATCH.with(|held| held.borrow_mut().take()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The client's session file, as a client of three keepers reads it when it starts (at the
/// targets' fixed time, so a kept capability means the same on every run). It must load or be
/// refused without a panic; what loads is written back as the client writes it, owner only,
/// and that reads back to the same file. (The reader is lenient by design: it ignores unknown
/// fields and drops a kept match or capability that no longer holds; a file it writes is one
/// form of what it read.)
pub fn session_file(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let path = scratch().join("session.json");
    std::fs::write(&path, data).expect("the scratch folder is writable");
    let group = CapabilityKey::from(group_key().verifying_key());
    let Ok(Some(written)) = obscura_client::fuzzing::reload_session_file(&path, 3, &group, NOW)
    else {
        return;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the session file is open to others");
    }
    let again = obscura_client::fuzzing::reload_session_file(&path, 3, &group, NOW)
        .expect("a file the client wrote loads")
        .expect("it is there");
    assert_eq!(
        again, written,
        "a written session file reads back as another"
    );
}

/// The clean room's files and bodies as a worker, a controller or a recipient reads them: a
/// work (its manifest's limits, the Work-ID stable through its own file), an approval (never
/// the owner's under a key that signed nothing), a load, the releases a worker is handed
/// (postcard), and a result: its signature may verify under the key it names, but never with
/// releases signed by nodes whose keys signed nothing.
pub fn room(data: &[u8]) {
    use obscura_room::result::{verify_result, Release, RunResult, Witnesses};
    use obscura_room::work::{Approval, Work};
    if data.len() > MAX_INPUT {
        return;
    }
    let work = Work::from_json(data).ok();
    if let Some(w) = &work {
        let again = Work::from_json(w.to_json().as_bytes()).expect("a work reads its own file");
        assert_eq!(again.id(), w.id());
    }
    if let Ok(load) = serde_json::from_slice::<obscura_client::room::Load>(data) {
        if let Ok(w) = Work::from_json(load.work.as_bytes()) {
            assert!(load
                .approval
                .check(&w, &stranger_key().verifying_key())
                .is_err());
            let _ = load.approval.check(&w, &owner_key().verifying_key());
        }
    }
    if let Ok(approval) = serde_json::from_slice::<Approval>(data) {
        for w in work.iter().chain(seed_work().iter()) {
            assert!(approval.check(w, &stranger_key().verifying_key()).is_err());
            let _ = approval.check(w, &owner_key().verifying_key());
        }
    }
    let _ = postcard::from_bytes::<Vec<Release>>(data);
    if let Ok(result) = serde_json::from_slice::<RunResult>(data) {
        let nodes = [stranger_key().verifying_key()];
        for k in [1, 2] {
            let witnesses = Witnesses { nodes: &nodes, k };
            assert!(
                verify_result(&result, Some(&witnesses)).is_err(),
                "a result verified with releases no node signed"
            );
        }
        let _ = verify_result(&result, None);
    }
}

/// The clean-room work the seeds use.
pub(crate) fn seed_work() -> Option<obscura_room::work::Work> {
    use obscura_room::work::{InputSpec, Limits, Manifest, OutputKind, OutputSpec, Work};
    let manifest = Manifest {
        inputs: vec![InputSpec {
            image: [7; 16],
            label: Some(0),
        }],
        labels: vec!["cat".into()],
        parameters: vec![1, 2, 3],
        output: OutputSpec {
            kind: OutputKind::Json,
            max_bytes: 4096,
        },
        limits: Limits {
            fuel: 1_000_000,
            memory_bytes: 1 << 20,
        },
        recipients: vec![[9; 32]],
    };
    let module =
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) i32.const 0))"#;
    Work::new(module.as_bytes(), manifest).ok()
}

/// `member` (whose KeyPackage is `kp`) added to `owner`'s group on the owner's word, the change
/// merged and the member joined by its Welcome: the Commit and Welcome.
fn admit(
    owner: &mut obscura_group::Member,
    member: &mut obscura_group::Member,
    kp: &[u8],
) -> obscura_group::Change {
    let change = owner
        .add(
            &obscura_group::Candidate::parse(kp).expect("its own KeyPackage parses"),
            &obscura_group::Admitted::vouched(),
        )
        .expect("added");
    owner.confirm().expect("merged");
    member
        .receive(&change.commit, change.welcome.as_deref())
        .expect("joined");
    change
}

/// The cluster's group as its members read it: a KeyPackage handed to the owner's add (never a
/// panic; a worker's never admitted on the owner's word), a group message from the ledger given
/// to a member of a live group and to one waiting for its Welcome (never a panic; the group's
/// keys are fresh each run, so this reaches the framing and the group's checks, not the
/// decryption of a valid message), and a member's state file (never a panic, opened only under
/// the client's key; what opens is written back and opens again the same).
pub fn group(data: &[u8]) {
    use obscura_group::{Admitted, Candidate, Member, Received};
    if data.len() > MAX_INPUT {
        return;
    }
    let mut owner = Member::new("client:owner").expect("a member");
    owner.create().expect("a group");
    if let Ok(candidate) = Candidate::parse(data) {
        // A would-be member's KeyPackage goes through the owner's add (a client's on its word,
        // a worker's never).
        let added = owner.add(&candidate, &Admitted::vouched());
        assert!(
            !(candidate.is_worker() && added.is_ok()),
            "a worker admitted on the owner's word"
        );
        owner.abandon();
    }
    // A member of the owner's group, and a would-be member.
    let mut member = Member::new("client:member").expect("a member");
    let kp = member.key_package(None).expect("a KeyPackage");
    admit(&mut owner, &mut member, &kp);
    let opened = member.receive(data, None);
    assert!(
        !matches!(opened, Ok(Received::Opened(_))),
        "bytes the owner never sealed opened"
    );
    let mut waiting = Member::new("client:waiting").expect("a member");
    waiting.key_package(None).expect("a KeyPackage");
    let _ = waiting.receive(data, Some(data));
    // A member's state file: sealed under the client's wrapping key, so nothing the client
    // did not write reaches the MLS store (which trusts its values); what opens is written
    // back and opens again the same.
    if let Ok((saved, loaded)) = obscura_client::group::open_state(data, &wrapping_key()) {
        let resealed =
            obscura_client::group::seal_state(&saved, &wrapping_key()).expect("it seals");
        let (_, again) = obscura_client::group::open_state(&resealed, &wrapping_key())
            .expect("a state it wrote opens");
        assert_eq!(
            (again.identity(), again.epoch(), again.removed()),
            (loaded.identity(), loaded.epoch(), loaded.removed()),
            "a state read back as another"
        );
    }
}
