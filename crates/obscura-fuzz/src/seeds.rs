//! The first corpus of every target: real encodings from the project's own encoders, signed
//! and sealed with the fixed keys the targets use, so that the fuzzer starts past every
//! signature and MAC and mutates from there.

use ed25519_dalek::Signer;
use obscura_auth::capability::{self, CapabilityKey, Holder};
use obscura_auth::matching::{self, Answered, KeptAnswer};
use obscura_client::config::{ClientConfig, ClientSecrets, TokenKind};
use obscura_client::rotation::RotationPlan;
use obscura_cluster::keeper::{CapabilityPolicy, LoginPolicy, Quotas};
use obscura_cluster::keeper::{KeeperConfig, KeeperSecrets, SealedShare};
use obscura_cluster::node::{NodeConfig, NodeSecrets, SearchPolicy, StorageSettings};
use obscura_cluster::server::{ServerFiles, ServerLimits};
use obscura_keeper::oprf;
use obscura_keeper::session::{Channel, Role};
use obscura_keeper::signing;
use obscura_keeper::Scalar;
use obscura_proto::{
    roles, Capability, ErrorCode, FetchBy, KeeperBatch, KeeperBody, KeeperEvaluation,
    KeeperPackage, KeeperRekeyPart, Limits, MatchProof, NodeBody, PreparedImage, Request, Response,
    ResponseBody, RotateOp, SecretInfo, SecretKind, SignedCapability, UserEvent, WireAuditEntry,
    WireCheck, WireOpened,
};
use obscura_sharing::bytes::Params;
use obscura_sharing::field::Fp;
use obscura_sharing::manifest::{ImageId, Manifest, Storage};
use obscura_sharing::order::{user_digest, Order};
use obscura_sharing::prime::share_values;
use obscura_store::audit::{AuditEntry, AuditKind};
use obscura_tokens::keyfile;
use rand_core::RngCore;

use crate::{
    group_key, holder_key, node_key, owner_key, rng, stranger_wrapping_key, wrapping_key,
    BAND_INPUTS, FROST, NODE, NOW, OPAQUE, SESSION_ID, SESSION_KEY, SESSION_REQUEST, USER,
};

/// Valid inputs of every target, by target name: what `fuzz/seed.sh` writes to
/// `fuzz/corpus/NAME/seed-N` (the image target also gets a few of the test photos there).
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("wire_request", requests()),
        (
            "wire_response",
            responses().iter().map(Response::encode).collect(),
        ),
        ("manifest", manifests()),
        ("orders", order_seeds()),
        ("capability", capability_seeds()),
        ("matching", matching_seeds()),
        ("image", images()),
        ("sealed_file", sealed_files()),
        ("node_config", configs()),
        ("journal", journals()),
        ("audit_entry", audit_seeds()),
        ("keeper_session", sessions()),
        ("opaque_keeper", opaque_seeds()),
        ("voprf_keeper", voprf_seeds()),
        ("frost_keeper", frost_seeds()),
        (
            "stage2_combine",
            prefixed_random(0x51, &[0, 1], &[8, 24, 64, 200, 600]),
        ),
        (
            "stage2_node",
            prefixed_random(0x52, &[0, 1, 2, 3], &[48, 120, 300, 700]),
        ),
        (
            "share_roundtrip",
            prefixed_random(0x53, &[0, 3, 6], &[49, 60, 300, 5000]),
        ),
        ("handle", prefixed_random(0x54, &[0], &[0, 72, 80, 200])),
        ("store_records", store_record_seeds()),
        ("session_file", session_files()),
        ("room", room_seeds()),
        ("group", group_seeds()),
    ]
}

/// Random bytes from a fixed stream: for each prefix byte, one input of each length.
fn prefixed_random(stream: u8, prefixes: &[u8], lengths: &[usize]) -> Vec<Vec<u8>> {
    let mut rng = rng([stream; 32]);
    let mut out = Vec::new();
    for &p in prefixes {
        for &len in lengths {
            let mut bytes = vec![0u8; len + 1];
            rng.fill_bytes(&mut bytes);
            bytes[0] = p;
            out.push(bytes);
        }
    }
    out
}

/// Length-prefixed messages (`u16` big-endian) after `prefix`, as the session target reads them.
fn framed(prefix: &[u8], messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    for m in messages {
        out.extend_from_slice(&(m.len() as u16).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// Keeper-addressed messages after `prefix`, as the frost target reads them.
fn addressed(prefix: &[u8], messages: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    for (keeper, m) in messages {
        out.push(*keeper);
        out.extend_from_slice(&(m.len() as u16).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// A signed manifest of `content` shared `k`-of-`n` by Shamir with degree `t`, under `key`.
fn signed_manifest(
    content: &[u8],
    k: usize,
    n: usize,
    t: u8,
    key: &ed25519_dalek::SigningKey,
) -> Vec<u8> {
    signed_manifest_of(Storage::Shamir, content, k, n, t, key)
}

/// [`signed_manifest`] of shares made by `storage`.
fn signed_manifest_of(
    storage: Storage,
    content: &[u8],
    k: usize,
    n: usize,
    t: u8,
    key: &ed25519_dalek::SigningKey,
) -> Vec<u8> {
    let mut rng = rng([n as u8; 32]);
    let shares = storage
        .split(content, Params::new(k, n).expect("valid k, n"), &mut rng)
        .expect("a non-empty content splits");
    let hash_shares: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 256]).collect();
    Manifest::for_shares(
        ImageId([7; 16]),
        storage,
        k as u8,
        t,
        content,
        &shares,
        hash_shares.as_slice(),
        1,
        NOW,
    )
    .and_then(|m| m.sign(key))
    .expect("a consistent manifest signs")
    .to_bytes()
}

fn element() -> [u8; 32] {
    oprf::serialize(&oprf::hash_to_group(b"obscura fuzz element"))
}

fn sample_capability() -> Capability {
    Capability {
        id: [3; 16],
        user: USER.into(),
        roles: roles::ALL,
        holder: holder_key().verifying_key().to_bytes(),
        issued_at: NOW - 60,
        expires_at: NOW + 3600,
        limits: Limits {
            queries_per_hour: 100,
            fetches_per_hour: 10,
        },
    }
}

/// The capability holder of the seeds, its capability signed by the group key.
fn holder() -> Holder {
    let group = group_key();
    let body = capability::encode(&sample_capability());
    let signature = group
        .sign(&capability::signing_message(&body))
        .to_bytes()
        .to_vec();
    Holder::new(
        holder_key(),
        SignedCapability { body, signature },
        &CapabilityKey::from(group.verifying_key()),
        NOW,
    )
    .expect("the group signed it for this holder")
}

/// A proof that `USER`'s query matched candidate 2 of 4 at distance 3, by nodes 1–3 (t = 1).
fn honest_proof() -> MatchProof {
    let mut rng = rng([0x33; 32]);
    let (n, t, position) = (3usize, 1usize, 2usize);
    let handles: Vec<[u8; 16]> = (0..4u8).map(|c| [c; 16]).collect();
    let shares = share_values(&[Fp::from(3u32), Fp::ZERO], 2 * t, n, &mut rng).expect("2t < n");
    let query_id = [0x51; 16];
    let answers: Vec<KeptAnswer> = (0..n)
        .map(|i| {
            let node = i as u8 + 1;
            let values: Vec<Option<[u32; 2]>> = (0..handles.len())
                .map(|c| (c == position).then(|| [shares[i][0].value(), shares[i][1].value()]))
                .collect();
            let answered = Answered {
                node,
                user: USER,
                query_id: &query_id,
                issued: NOW,
            };
            let signed =
                matching::sign_answer(&node_key(node), &answered, 0, &handles, &values, &mut rng);
            KeptAnswer {
                node,
                values,
                answer_key: signed.answer_key,
                signature: signed.signature,
            }
        })
        .collect();
    matching::prove(query_id, NOW, 0, &handles, &answers, position)
}

fn packages(list: &[(u8, Vec<u8>)]) -> Vec<KeeperPackage> {
    list.iter()
        .map(|(keeper, bytes)| KeeperPackage {
            keeper: *keeper,
            bytes: bytes.clone(),
        })
        .collect()
}

/// Requests of `node` bodies and `keeper` bodies, as they go on the wire.
fn encoded(
    node: impl IntoIterator<Item = NodeBody>,
    keeper: impl IntoIterator<Item = KeeperBody>,
) -> Vec<Vec<u8>> {
    let node = node
        .into_iter()
        .enumerate()
        .map(|(i, b)| request(i, b).encode());
    let keeper = keeper
        .into_iter()
        .enumerate()
        .map(|(i, b)| request(i, b).encode());
    node.chain(keeper).collect()
}

fn request<B>(i: usize, body: B) -> Request<B> {
    Request {
        request_id: [i as u8; 16],
        timestamp: NOW,
        body,
        auth: None,
    }
}

/// One request of every kind, to nodes and to keepers, and two signed by a capability holder,
/// as they go on the wire.
fn requests() -> Vec<Vec<u8>> {
    let element = element();
    let (registration, upload, ke1, ke3) = OPAQUE.with(|f| {
        (
            f.registration.clone(),
            f.upload.clone(),
            f.ke1.clone(),
            f.ke3.clone(),
        )
    });
    let (package, round1) = FROST.with(|f| (f.package.clone(), f.round1.clone()));
    let mut client = Channel::new(&SESSION_KEY, SESSION_ID, Role::Client, NOW + 3600);
    let sealed = client
        .seal(&request(0, KeeperBody::SecretList).encode(), NOW)
        .expect("the session is in force");
    let node_bodies = [
        NodeBody::Prepare {
            key_version: 1,
            images: vec![PreparedImage {
                image: [7; 16],
                manifest: signed_manifest(b"\x89PNG seed image", 2, 3, 1, &owner_key()),
                image_share: vec![1; 32],
                hash_share: vec![0; obscura_proto::limits::HASH_SHARE_LEN],
                tokens: vec![[2; 16]; 8],
                elements: vec![element; 8],
            }],
        },
        NodeBody::Commit {
            images: vec![[7; 16], [8; 16]],
        },
        NodeBody::Delete {
            image: [7; 16],
            issued_at: NOW,
            signature: vec![0; 64],
        },
        NodeBody::Lookup {
            key_version: 1,
            query: [3; 16],
            issued: NOW,
            tokens: vec![[1; 16]; 96],
        },
        NodeBody::Evaluate {
            query_id: [3; 16],
            issued: NOW,
            query_share: vec![0; obscura_proto::limits::HASH_SHARE_LEN],
            scan: matching::scan_of(&[[4; 16], [5; 16]]),
            part: 0,
            candidates: vec![[4; 16], [5; 16]],
            share_digests: vec![[6; 32]; 3],
            checks: vec![WireCheck {
                node: 1,
                degree: vec![1, 2],
                bits: vec![3, 4],
                signature: vec![0; 64],
            }],
        },
        NodeBody::CheckQuery {
            query_id: [3; 16],
            issued: NOW,
            query_share: vec![0; obscura_proto::limits::HASH_SHARE_LEN],
            scan: matching::scan_of(&[[4; 16]]),
            share_digests: vec![[6; 32]; 3],
        },
        NodeBody::Reduce {
            query_id: [3; 16],
            issued: NOW,
            part: 0,
            round: 0,
            openings: vec![WireOpened {
                node: 1,
                round: 0,
                values: vec![Some(5), None],
                signature: vec![0; 64],
            }],
        },
        NodeBody::List {
            query: [3; 16],
            issued: NOW,
        },
        NodeBody::Fetch {
            by: FetchBy::Owner { image: [7; 16] },
        },
        NodeBody::Fetch {
            by: FetchBy::Grant {
                image: [7; 16],
                expires_at: NOW + 60,
                signature: vec![0; 64],
            },
        },
        NodeBody::Fetch {
            by: FetchBy::Match(honest_proof()),
        },
        NodeBody::Resolve {
            proofs: vec![honest_proof()],
        },
        NodeBody::Status,
        NodeBody::Audit { from: 0, max: 100 },
        NodeBody::Checkpoint,
        NodeBody::Rotate {
            op: RotateOp::Begin {
                from: 1,
                to: 2,
                factor: Scalar::from(3u8).to_bytes(),
                signature: vec![0; 64],
            },
        },
        NodeBody::Rotate {
            op: RotateOp::Move {
                to: 2,
                max_images: 100,
                signature: vec![0; 64],
            },
        },
        NodeBody::Rotate {
            op: RotateOp::Finish {
                to: 2,
                signature: vec![0; 64],
            },
        },
    ];
    let keeper_bodies = [
        KeeperBody::KeeperEvaluate {
            version: 1,
            batches: vec![KeeperBatch {
                node: 1,
                elements: vec![element; 3],
            }],
        },
        KeeperBody::KeeperRekey {
            from: 1,
            to: 2,
            parts: vec![KeeperRekeyPart {
                node: 1,
                factor: Scalar::from(3u8).to_bytes(),
                zero_share: Scalar::from(5u8).to_bytes(),
                zero_commitments: vec![element; 3],
            }],
            signature: vec![0; 64],
        },
        KeeperBody::KeeperRetire {
            version: 1,
            signature: vec![0; 64],
        },
        KeeperBody::KeeperRegister {
            user: USER.into(),
            request: registration,
            bootstrap: Some([9; 32]),
        },
        KeeperBody::KeeperRegisterFinish {
            user: USER.into(),
            upload,
            roles: roles::QUERIER,
            bootstrap: None,
        },
        KeeperBody::KeeperLoginStart {
            user: USER.into(),
            ke1,
        },
        KeeperBody::KeeperLoginFinish {
            login: [1; 16],
            ke3,
        },
        KeeperBody::KeeperSealed {
            session: SESSION_ID,
            message: sealed,
        },
        KeeperBody::KeeperLogout,
        KeeperBody::KeeperUnlock { user: USER.into() },
        KeeperBody::SecretPut {
            id: [5; 16],
            name: "backup key".into(),
            origin: "import".into(),
            share: vec![1, 2, 3, 4],
        },
        KeeperBody::SecretGet {
            id: [5; 16],
            export: true,
        },
        KeeperBody::SecretDelete { id: [5; 16] },
        KeeperBody::SecretList,
        KeeperBody::UserEvents,
        KeeperBody::DkgStart {
            id: [6; 16],
            name: "signing key".into(),
        },
        KeeperBody::DkgRound2 {
            id: [6; 16],
            round1: packages(&round1),
        },
        KeeperBody::DkgFinish {
            id: [6; 16],
            round1: packages(&round1),
            round2: packages(&[(2, vec![0; 80])]),
        },
        KeeperBody::SignCommit { id: [6; 16] },
        KeeperBody::SignShare {
            id: [6; 16],
            package: package.clone(),
        },
        KeeperBody::CapabilityCommit,
        KeeperBody::CapabilityShare { package },
        KeeperBody::Evidence { nonce: [7; 32] },
        KeeperBody::SecretPutReleased {
            id: [5; 16],
            name: "api token".into(),
            origin: "import".into(),
            share: vec![1, 2, 3, 4],
            policy: br#"{"version":1,"name":"workers"}"#.to_vec(),
        },
        KeeperBody::ReleaseStart { id: [5; 16] },
        KeeperBody::ReleaseFinish {
            id: [5; 16],
            nonce: [7; 32],
            party_key: [8; 32],
            evidence: br#"{"platform":"simulation"}"#.to_vec(),
        },
        KeeperBody::Provision {
            party_key: [8; 32],
            enc: vec![9; 32],
            ciphertext: vec![10; 120],
            signature: vec![0; 64],
        },
        KeeperBody::Recover {
            plan: recovery_plan(),
            signature: vec![0; 64],
            parts: [1, 3]
                .into_iter()
                .map(|helper| obscura_proto::RecoveryPart {
                    helper,
                    enc: vec![9; 32],
                    ciphertext: vec![10; 80],
                    masks: vec![vec![[11; 32]]; 2],
                    tag: [13; 32],
                })
                .collect(),
            receipt_enc: vec![9; 32],
            receipt_ciphertext: vec![12; 48],
        },
    ];
    let mut out = encoded(node_bodies, keeper_bodies);
    let holder = holder();
    for body in [
        NodeBody::Status,
        NodeBody::Lookup {
            key_version: 1,
            query: [3; 16],
            issued: NOW,
            tokens: vec![[1; 16]; 8],
        },
    ] {
        let mut r = request(out.len(), body);
        holder.sign(NODE, &mut r);
        out.push(r.encode());
    }
    out
}

/// An honest chain of `len` audit entries, a checkpoint (with a signature that is not the
/// node's) at `checkpoint`.
fn audit_chain(len: u64, checkpoint: Option<u64>) -> Vec<AuditEntry> {
    let mut prev = [0; 32];
    (0..len)
        .map(|seq| {
            let kind = match (Some(seq) == checkpoint, seq % 3) {
                (true, _) => AuditKind::Checkpoint,
                (false, 0) => AuditKind::Prepare,
                (false, 1) => AuditKind::Commit,
                (false, _) => AuditKind::Query,
            };
            let detail = if kind == AuditKind::Checkpoint {
                vec![0x11; 64]
            } else {
                format!("entry {seq}").into_bytes()
            };
            let mut e = AuditEntry {
                seq,
                prev,
                hash: [0; 32],
                time: NOW + seq,
                kind,
                subject: [seq as u8; 16],
                detail,
            };
            e.hash = e.expected_hash();
            prev = e.hash;
            e
        })
        .collect()
}

fn to_wire(entries: Vec<AuditEntry>) -> Vec<WireAuditEntry> {
    entries.into_iter().map(WireAuditEntry::from).collect()
}

/// One response of every kind.
fn responses() -> Vec<Response> {
    let element = element();
    let limits = Limits {
        queries_per_hour: 100,
        fetches_per_hour: 10,
    };
    let check = WireCheck {
        node: 2,
        degree: vec![1, 2],
        bits: vec![3, 4],
        signature: vec![0; 64],
    };
    let bodies = [
        ResponseBody::Ok,
        ResponseBody::Lookup {
            handles: vec![[9; 16], [10; 16]],
            matched: 3,
        },
        ResponseBody::Evaluate {
            node: 1,
            values: vec![Some([1, 2]), None, Some([0x7fff_fffe, 0])],
            answer_key: [4; 32],
            signature: vec![0; 64],
        },
        ResponseBody::Resolved {
            manifests: vec![
                Some(signed_manifest(b"resolved", 2, 3, 1, &owner_key())),
                None,
            ],
        },
        ResponseBody::Checkpointed { seq: 12 },
        ResponseBody::Fetch {
            manifest: signed_manifest(b"fetched", 2, 3, 1, &owner_key()),
            image_share: vec![5; 7],
        },
        ResponseBody::Status {
            node: 1,
            committed: 10,
            pending: 1,
            audit_entries: 40,
            key_versions: vec![1, 2],
        },
        ResponseBody::Audit {
            entries: to_wire(audit_chain(4, None)),
            total: 4,
        },
        ResponseBody::KeeperEvaluated {
            keeper: 1,
            batches: vec![KeeperEvaluation {
                elements: vec![element; 2],
                proof: vec![0; 64],
            }],
        },
        ResponseBody::Rotation {
            node: 1,
            current: 1,
            next: Some(2),
            moved: 5,
            total: 9,
            postings: 40,
            done: false,
        },
        ResponseBody::KeeperRekeyed {
            keeper: 1,
            public_shares: vec![element; 3],
        },
        ResponseBody::KeeperRegistration {
            response: vec![0x33; 64],
        },
        ResponseBody::KeeperLoginStarted {
            login: [1; 16],
            ke2: vec![0x44; 320],
        },
        ResponseBody::KeeperSession {
            session: SESSION_ID,
            expires_at: NOW + 3600,
        },
        ResponseBody::KeeperSealed {
            message: vec![0x55; 40],
        },
        ResponseBody::Secret {
            keeper: 2,
            name: "backup key".into(),
            share: vec![1, 2, 3],
        },
        ResponseBody::Secrets {
            items: vec![SecretInfo {
                id: [5; 16],
                name: "backup key".into(),
                kind: SecretKind::Data,
                created: NOW,
            }],
        },
        ResponseBody::Events {
            events: vec![UserEvent {
                time: NOW,
                action: "login".into(),
                secret: Some([5; 16]),
                ok: true,
            }],
        },
        ResponseBody::DkgPackages {
            keeper: 1,
            packages: vec![KeeperPackage {
                keeper: 2,
                bytes: vec![6; 50],
            }],
        },
        ResponseBody::DkgDone {
            keeper: 1,
            public_key: [7; 32],
            public_package: vec![8; 100],
        },
        ResponseBody::SignCommitment {
            keeper: 1,
            commitment: vec![9; 69],
            public_package: vec![8; 100],
        },
        ResponseBody::CapabilityOffer {
            keeper: 1,
            commitment: vec![9; 69],
            roles: roles::QUERIER | roles::AUDITOR,
            limits,
            expires_at: NOW + 3600,
            public_package: vec![8; 100],
        },
        ResponseBody::SignatureShare {
            keeper: 1,
            share: vec![10; 32],
        },
        ResponseBody::Error {
            code: ErrorCode::Unauthorized,
            message: "log in again".into(),
        },
        ResponseBody::QueryChecked { check },
        ResponseBody::Opened {
            opened: WireOpened {
                node: 2,
                round: 1,
                values: vec![Some(1), None, Some(3)],
                signature: vec![0; 64],
            },
        },
        ResponseBody::Listed {
            handles: vec![[1; 16], [2; 16]],
        },
    ];
    bodies.into_iter().map(Response).collect()
}

fn manifests() -> Vec<Vec<u8>> {
    let owner = owner_key();
    let mut out = vec![
        signed_manifest(b"a small image", 2, 3, 1, &owner),
        signed_manifest(b"another image, five nodes", 3, 5, 2, &owner),
        signed_manifest(b"two of two", 2, 2, 1, &owner),
        signed_manifest_of(Storage::Compact, b"compact pieces", 3, 5, 2, &owner),
        // Signed by a key neither the owner's nor the one that signs nothing.
        signed_manifest(
            b"signed by someone else",
            2,
            3,
            1,
            &ed25519_dalek::SigningKey::from_bytes(&[0x6b; 32]),
        ),
    ];
    // The unsigned encoding alone, as `Manifest::decode` reads it.
    out.push(out[0][64..].to_vec());
    out
}

/// Requests carrying the owner's orders for node `NODE` and user `USER`, and structured bytes.
fn order_seeds() -> Vec<Vec<u8>> {
    let owner = owner_key();
    let sign = |order: Order| order.sign(&owner).to_vec();
    let factor = Scalar::from(3u8).to_bytes();
    let parts = vec![KeeperRekeyPart {
        node: 1,
        factor,
        zero_share: Scalar::from(5u8).to_bytes(),
        zero_commitments: vec![element(); 3],
    }];
    let plan = obscura_proto::rekey_digest(1, 2, &parts);
    let node_bodies = [
        NodeBody::Delete {
            image: [7; 16],
            issued_at: NOW,
            signature: sign(Order::Delete {
                image: ImageId([7; 16]),
                issued_at: NOW,
            }),
        },
        NodeBody::Rotate {
            op: RotateOp::Begin {
                from: 1,
                to: 2,
                factor,
                signature: sign(Order::Rotate {
                    node: NODE,
                    from: 1,
                    to: 2,
                    factor,
                }),
            },
        },
        NodeBody::Rotate {
            op: RotateOp::Move {
                to: 2,
                max_images: 10,
                signature: sign(Order::RotateMove { node: NODE, to: 2 }),
            },
        },
        NodeBody::Rotate {
            op: RotateOp::Finish {
                to: 2,
                signature: sign(Order::RotateFinish { node: NODE, to: 2 }),
            },
        },
        NodeBody::Fetch {
            by: FetchBy::Grant {
                image: [7; 16],
                expires_at: NOW + 3600,
                signature: sign(Order::Grant {
                    image: ImageId([7; 16]),
                    user: user_digest(USER),
                    expires_at: NOW + 3600,
                }),
            },
        },
    ];
    let keeper_bodies = [
        KeeperBody::KeeperRekey {
            from: 1,
            to: 2,
            parts,
            signature: sign(Order::Rekey {
                from: 1,
                to: 2,
                plan,
            }),
        },
        KeeperBody::KeeperRetire {
            version: 1,
            signature: sign(Order::Retire { version: 1 }),
        },
    ];
    let mut out = encoded(node_bodies, keeper_bodies);
    out.extend(prefixed_random(0x55, &[0, 1, 2, 3, 4, 5, 6], &[80]));
    out
}

fn capability_seeds() -> Vec<Vec<u8>> {
    let holder = holder();
    let mut out = Vec::new();
    let mut status = request(0, NodeBody::Status);
    holder.sign(NODE, &mut status);
    out.push(status.encode());
    let mut lookup = request(
        1,
        NodeBody::Lookup {
            key_version: 1,
            query: [3; 16],
            issued: NOW,
            tokens: vec![[1; 16]; 8],
        },
    );
    holder.sign(NODE, &mut lookup);
    out.push(lookup.encode());
    let ticket =
        postcard::to_allocvec(&holder.upload_ticket(NODE, &status)).expect("a ticket encodes");
    out.push(keyfile::to_hex(&ticket).into_bytes());
    out.push(ticket);
    let capability = sample_capability();
    out.push(capability::signing_message(&capability::encode(
        &capability,
    )));
    out.push(capability::encode(&capability));
    let expired = Capability {
        expires_at: NOW - 1,
        ..sample_capability()
    };
    out.push(capability::encode(&expired));
    let future = Capability {
        issued_at: NOW + 3600,
        expires_at: NOW + 7200,
        ..sample_capability()
    };
    out.push(capability::encode(&future));
    out
}

fn matching_seeds() -> Vec<Vec<u8>> {
    let mut out = vec![
        request(
            0,
            NodeBody::Fetch {
                by: FetchBy::Match(honest_proof()),
            },
        )
        .encode(),
        request(
            1,
            NodeBody::Resolve {
                proofs: vec![honest_proof(), honest_proof()],
            },
        )
        .encode(),
    ];
    out.extend(prefixed_random(0x56, &[0, 1, 2, 3], &[120, 400]));
    out
}

/// Small images in every format the decoder takes, a few shapes and sample types, and a JPEG
/// cut short.
fn images() -> Vec<Vec<u8>> {
    use image::{DynamicImage, ImageFormat};
    let rgb = DynamicImage::ImageRgb8(image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x ^ y) * 4) as u8])
    }));
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_fn(33, 17, |x, y| {
        image::Luma([((x * y) % 256) as u8])
    }));
    let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(16, 16, |x, y| {
        image::Rgba([(x * 16) as u8, (y * 16) as u8, 128, (x * y) as u8])
    }));
    let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(8, 8, |x, y| {
        image::Rgb([x as u16 * 8000, y as u16 * 8000, 1000u16])
    }));
    let dot = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3])));
    let mut out = Vec::new();
    for (picture, format) in [
        (&rgb, ImageFormat::Png),
        (&rgb, ImageFormat::Jpeg),
        (&rgb, ImageFormat::WebP),
        (&rgb, ImageFormat::Gif),
        (&grey, ImageFormat::Png),
        (&grey, ImageFormat::Jpeg),
        (&rgba, ImageFormat::Png),
        (&rgba, ImageFormat::WebP),
        (&deep, ImageFormat::Png),
        (&dot, ImageFormat::Png),
        (&dot, ImageFormat::Gif),
    ] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        if picture.write_to(&mut bytes, format).is_ok() {
            out.push(bytes.into_inner());
        }
    }
    if let Some(jpeg) = out.get(1) {
        let cut = jpeg[..jpeg.len() / 2].to_vec();
        out.push(cut);
    }
    out
}

fn sealed_files() -> Vec<Vec<u8>> {
    let key = wrapping_key();
    let mut rng = rng([0x57; 32]);
    let mut out = Vec::new();
    let zero = obscura_sharing::zero::deal(3, 1, &mut rng).expect("3 nodes, t = 1");
    let node = NodeSecrets {
        tls_key_pem: "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".into(),
        audit_key: [1; 32],
        zero_keys: zero[0]
            .subset_keys()
            .iter()
            .map(|k| (k.members(), *k.key_bytes()))
            .collect(),
        handle_key: [2; 32],
        simulated_platform: None,
    };
    out.push(node.seal(NODE, &key, &mut rng).expect("node secrets seal"));
    let (packages, public) = signing::deal(3, 2, &mut rng).expect("2 of 3");
    let (keeper, _) = KeeperSecrets::new(
        "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n".into(),
        vec![SealedShare {
            node: 1,
            version: 1,
            secret: Scalar::from(5u8).to_bytes(),
        }],
        packages[0].to_vec(),
        signing::public_package_bytes(&public).expect("a public package serializes"),
        &mut rng,
    );
    out.push(
        keeper
            .seal(NODE, &key, &mut rng)
            .expect("keeper secrets seal"),
    );
    let client = ClientSecrets {
        tls_key_pem: "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n".into(),
        token_root: Some([3; 32]),
    };
    out.push(client.seal(&key, &mut rng).expect("client secrets seal"));
    let plan = RotationPlan::draw(1, 3, 2, &mut rng).expect("2 of 3 keepers");
    out.push(plan.seal(&key, &mut rng).expect("a plan seals"));
    out.push(
        keyfile::seal(
            &owner_key().to_bytes(),
            obscura_client::config::OWNER_PURPOSE,
            1,
            &key,
            &mut rng,
        )
        .expect("the owner key seals"),
    );
    out.push(
        client
            .seal(&stranger_wrapping_key(), &mut rng)
            .expect("client secrets seal"),
    );
    out
}

fn configs() -> Vec<Vec<u8>> {
    let hex = |k: &ed25519_dalek::SigningKey| keyfile::to_hex(&k.verifying_key().to_bytes());
    let node = NodeConfig {
        node: 1,
        n: 3,
        k: 2,
        t: 1,
        listen: "127.0.0.1:7401".into(),
        files: server_files("node1"),
        owner_public_key: hex(&owner_key()),
        replay_window_s: 120,
        checkpoint_interval_s: 60,
        pending_timeout_s: 600,
        capability_key: hex(&group_key()),
        node_keys: (1..=3).map(|i| hex(&node_key(i))).collect(),
        policy: SearchPolicy::default(),
        limits: ServerLimits::default(),
        storage: StorageSettings::default(),
        database: None,
        shares: None,
        attestation: None,
        metrics: None,
    };
    let keeper = KeeperConfig {
        keeper: 1,
        m: 3,
        threshold: 2,
        listen: "127.0.0.1:7501".into(),
        files: server_files("keeper1"),
        budget_evaluations: 100_000,
        budget_window_s: 3600,
        replay_window_s: 120,
        checkpoint_interval_s: 60,
        keyring: Some("keeper1/keyring".into()),
        peers: vec![keyfile::to_hex(&element()); 3],
        login: LoginPolicy::default(),
        session_ttl_s: 3600,
        owner_public_key: hex(&owner_key()),
        bootstrap_digest: keyfile::to_hex(&[8; 32]),
        capabilities: CapabilityPolicy::default(),
        quotas: Quotas::default(),
        limits: ServerLimits::default(),
        attestation: None,
        metrics: None,
    };
    let client = ClientConfig {
        k: 2,
        t: 1,
        storage: obscura_client::config::StorageKind::Compact,
        nodes: (1..=3)
            .map(|i| format!("https://127.0.0.1:740{i}"))
            .collect(),
        ca_cert: "ca.pem".into(),
        cert: "client/cert.pem".into(),
        secrets: "client/secrets.sealed".into(),
        wrapping_key: "client/wrapping.key".into(),
        owner_public_key: hex(&owner_key()),
        owner_key: Some("owner/owner.sealed".into()),
        owner_wrapping_key: None,
        capability_key: hex(&group_key()),
        tokens: TokenKind::Voprf,
        key_version: 1,
        keepers: (1..=3)
            .map(|i| format!("https://127.0.0.1:750{i}"))
            .collect(),
        keeper_threshold: 2,
        keeper_public_shares: vec![vec![keyfile::to_hex(&element()); 3]],
        probe_radius: 1,
        lookups_per_band: 12,
        timeout_ms: 10_000,
        attestation_required: false,
    };
    let mut out = vec![
        serde_json::to_vec_pretty(&node).expect("a configuration serializes"),
        serde_json::to_vec_pretty(&keeper).expect("a configuration serializes"),
        serde_json::to_vec_pretty(&client).expect("a configuration serializes"),
    ];
    let mut wide = node;
    wide.policy.lookups_per_band = usize::MAX / 2;
    wide.policy.max_distance = 64;
    out.push(serde_json::to_vec(&wide).expect("a configuration serializes"));
    out
}

fn journals() -> Vec<Vec<u8>> {
    let ids: Vec<String> = (1..=3u8)
        .map(|i| ImageId([i * 17; 16]).to_string())
        .collect();
    vec![
        format!("4242 1234567890\n{}\n{}\n", ids[1], ids[2]).into_bytes(),
        format!("4242 1234567890 committed\n{}\n{}\n", ids[0], ids[2]).into_bytes(),
        format!("4242 1234567890\n{}\n{}", ids[1], &ids[2][..20]).into_bytes(),
        format!("{}.partial\n{}\n", ids[0], ids[1].to_uppercase()).into_bytes(),
        b"4242\n".to_vec(),
    ]
}

fn audit_seeds() -> Vec<Vec<u8>> {
    let page = |entries: Vec<AuditEntry>| {
        let total = entries.len() as u64;
        Response(ResponseBody::Audit {
            entries: to_wire(entries),
            total,
        })
        .encode()
    };
    let mut out = vec![
        page(audit_chain(5, None)),
        page(audit_chain(6, Some(5))),
        page(audit_chain(3, Some(1))),
        page(Vec::new()),
    ];
    out.extend(prefixed_random(0x58, &[3, 8, 16], &[120, 600]));
    out
}

/// A client's requests to a keeper (in order, a second lane, then a replay), a keeper's answers
/// to a client, and a request to an expired session.
fn sessions() -> Vec<Vec<u8>> {
    let expires_at = NOW + 3600;
    let mut client = Channel::new(&SESSION_KEY, SESSION_ID, Role::Client, expires_at);
    let mut requests: Vec<Vec<u8>> = [&b"first"[..], b"second", b""]
        .iter()
        .map(|m| client.seal(m, NOW).expect("the session is in force"))
        .collect();
    let mut lane = Channel::resume(&SESSION_KEY, SESSION_ID, expires_at, 7);
    requests.push(
        lane.seal(b"another lane", NOW)
            .expect("the session is in force"),
    );
    requests.push(requests[0].clone());

    let mut client = Channel::new(&SESSION_KEY, SESSION_ID, Role::Client, expires_at);
    let mut keeper = Channel::new(&SESSION_KEY, SESSION_ID, Role::Server, expires_at);
    let mut answers = Vec::new();
    for answer in [&b"answer one"[..], b"answer two", b"answer three"] {
        let sealed = client
            .seal(SESSION_REQUEST, NOW)
            .expect("the session is in force");
        keeper.open(&sealed, NOW).expect("the keeper opens it");
        let reply = keeper.seal(answer, NOW).expect("the keeper answers");
        client
            .open(&reply, NOW)
            .expect("the client opens the answer");
        answers.push(reply);
    }
    vec![
        framed(&[0], &requests),
        framed(&[1], &answers),
        framed(&[2, 0], &requests[..1]),
        framed(&[3, 5], &answers[..1]),
    ]
}

fn opaque_seeds() -> Vec<Vec<u8>> {
    OPAQUE.with(|f| {
        vec![
            [&[0u8][..], f.registration.as_slice()].concat(),
            [&[1u8][..], f.ke1.as_slice()].concat(),
            [&[2u8][..], f.upload.as_slice()].concat(),
            [&[3u8][..], f.ke3.as_slice()].concat(),
            [&[4u8][..], f.keys.to_bytes().as_slice()].concat(),
        ]
    })
}

fn voprf_seeds() -> Vec<Vec<u8>> {
    let mut rng = rng([0x59; 32]);
    let mut out: Vec<Vec<u8>> = [1usize, 2, 8]
        .iter()
        .map(|&n| {
            BAND_INPUTS[..n]
                .iter()
                .flat_map(|input| {
                    let blinded = oprf::blind(input, &mut rng).expect("a short input blinds");
                    oprf::serialize(&blinded.element)
                })
                .collect()
        })
        .collect();
    out.push(vec![0; 32]);
    out.push(vec![0xff; 64]);
    out
}

fn frost_seeds() -> Vec<Vec<u8>> {
    FROST.with(|f| {
        let text = b"obscura fuzz message";
        let mut packing = vec![4u8];
        packing.extend_from_slice(&(text.len() as u16).to_be_bytes());
        packing.extend_from_slice(text);
        let public = signing::public_package_bytes(&f.public).expect("a public package serializes");
        let key = signing::key_package_bytes(&f.key).expect("a key package serializes");
        vec![
            [&[0u8][..], f.package.as_slice()].concat(),
            addressed(&[1], &f.shares),
            [&[2u8][..], public.as_slice()].concat(),
            [&[3u8][..], key.as_slice()].concat(),
            addressed(&packing, &f.commitments),
            [&[5u8, 2][..], f.sealed.as_slice()].concat(),
            addressed(&[6], &f.round1),
        ]
    })
}

/// Records as a store writes them (layouts of `obscura-store`), each behind the byte that
/// picks its decoder; the target checks each reads back the same.
fn store_record_seeds() -> Vec<Vec<u8>> {
    let tokens: Vec<u8> = (0..obscura_tokens::BANDS * obscura_tokens::TOKEN_LEN)
        .map(|i| i as u8)
        .collect();
    let image = |state: u8| {
        let mut r = vec![0, state];
        r.extend_from_slice(&NOW.to_be_bytes());
        r.extend_from_slice(&tokens);
        r
    };
    let rotation = |cursor: Option<[u8; 16]>, done: bool| {
        let mut r = vec![1];
        r.extend_from_slice(&2u32.to_be_bytes());
        r.extend_from_slice(&[0x5e; 32]);
        r.push(u8::from(cursor.is_some()));
        r.extend_from_slice(&cursor.unwrap_or_default());
        for v in [40u64, 100, 800] {
            r.extend_from_slice(&v.to_be_bytes());
        }
        r.push(u8::from(done));
        r
    };
    let mut out = vec![
        image(1),
        image(2),
        rotation(None, false),
        rotation(Some([0x7a; 16]), false),
        rotation(Some([0xff; 16]), true),
    ];
    // Each layout is written out here, not taken from the store's encoders: a change of an
    // encoder that would leave existing stores unreadable then fails the check below, which
    // every test that makes the seeds runs.
    for entry in audit_chain(4, Some(3)) {
        let mut r = vec![2];
        r.extend_from_slice(&entry.seq.to_be_bytes());
        r.extend_from_slice(&entry.prev);
        r.extend_from_slice(&entry.hash);
        r.extend_from_slice(&entry.time.to_be_bytes());
        r.push(entry.kind.tag());
        r.extend_from_slice(&entry.subject);
        r.extend_from_slice(&entry.detail);
        out.push(r);
    }
    for seed in &out {
        let (kind, rest) = seed.split_first().expect("a picking byte");
        let read = match kind {
            0 => obscura_store::fuzzing::image_record(rest).is_some(),
            1 => obscura_store::fuzzing::rotation_record(rest).is_some(),
            _ => obscura_store::fuzzing::audit_entry(0, &rest[8..]).is_some(),
        };
        assert!(read, "a seed record the store does not read");
    }
    out
}

/// Session files as a client of three keepers writes them: sessions with one, two and three
/// keepers, with and without a capability and kept match proofs.
fn session_files() -> Vec<Vec<u8>> {
    let session = |keeper: u8| {
        serde_json::json!({
            "keeper": keeper,
            "session": keyfile::to_hex(&[keeper; 16]),
            "key": keyfile::to_hex(&SESSION_KEY),
            "expires_at": NOW + 3600,
        })
    };
    let signed = holder().signed().clone();
    let capability = serde_json::json!({
        "key": keyfile::to_hex(holder_key().as_bytes()),
        "body": keyfile::to_hex(&signed.body),
        "signature": keyfile::to_hex(&signed.signature),
    });
    let proof = postcard::to_allocvec(&honest_proof()).expect("a proof encodes");
    let files = [
        serde_json::json!({ "user": USER, "sessions": [session(1)] }),
        serde_json::json!({
            "user": USER,
            "sessions": [session(1), session(2), session(3)],
            "capability": capability,
        }),
        serde_json::json!({
            "user": "another user",
            "sessions": [session(3), session(2)],
            "capability": capability,
            "matches": [
                [ImageId([2; 16]).to_string(), keyfile::to_hex(&proof)],
                [ImageId([9; 16]).to_string(), "00"],
            ],
        }),
    ];
    files
        .iter()
        .map(|f| serde_json::to_vec_pretty(f).expect("a session file serializes"))
        .collect()
}

/// A server's files in folder `dir` of a cluster directory.
fn server_files(dir: &str) -> ServerFiles {
    ServerFiles {
        store: format!("{dir}/store.redb").into(),
        ca_cert: "ca.pem".into(),
        cert: format!("{dir}/cert.pem").into(),
        secrets: format!("{dir}/secrets.sealed").into(),
        wrapping_key: format!("{dir}/wrapping.key").into(),
    }
}

/// A recovery plan of keeper 2 from keepers 1 and 3, for two node keys.
fn recovery_plan() -> obscura_proto::RecoveryPlan {
    obscura_proto::RecoveryPlan {
        id: [4; 16],
        issued_at: NOW,
        keeper: 2,
        party_key: [8; 32],
        nonce: [7; 32],
        version: 1,
        helpers: vec![1, 3],
        helper_keys: vec![[5; 32], [6; 32]],
        public_shares: vec![vec![[2; 32]; 3]; 2],
        policy: br#"{"version":1,"name":"keepers"}"#.to_vec(),
    }
}

/// A work, its approval, a load, a result and releases, as the clean room's parties read them.
fn room_seeds() -> Vec<Vec<u8>> {
    use obscura_room::result::{
        blamed_encoding, Blame, Release, ReleaseProof, RunResult, SealedOutput,
    };
    use obscura_room::work::Approval;
    let work = crate::seed_work().expect("the seed work is valid");
    let approval = Approval::sign(&work, "{}", 1_900_000_000, 1, &owner_key());
    let load = obscura_client::room::Load {
        work: work.to_json(),
        approval: approval.clone(),
    };
    let releases = vec![Release {
        node: 1,
        nonce: [1; 32],
        run: 1,
        shares: vec![obscura_proto::RoomShare {
            image: [7; 16],
            enc: vec![2; 32],
            ciphertext: vec![3; 48],
        }],
        signature: vec![4; 64],
    }];
    let job = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let blamed = vec![Blame {
        node: 2,
        why: "image 07…: node 2 share failed its digest".into(),
    }];
    let (manifests, commitment) = (vec![[6; 32]], [8; 32]);
    let statement = obscura_proto::room_result_statement(
        &work.id().0,
        &manifests,
        &commitment,
        &blamed_encoding(&blamed, &[3]),
    );
    let result = RunResult {
        work: work.id().0,
        manifests,
        commitment,
        outputs: vec![SealedOutput {
            recipient: [9; 32],
            sealed: obscura_attest::seal::Sealed {
                enc: vec![1; 32],
                ciphertext: vec![2; 40],
            },
        }],
        worker_key: [10; 32],
        signing_key: job.verifying_key().to_bytes(),
        releases: vec![ReleaseProof {
            node: 1,
            nonce: [1; 32],
            run: 1,
            shares: [11; 32],
            signature: vec![4; 64],
        }],
        blamed,
        unsigned: vec![3],
        signature: ed25519_dalek::Signer::sign(&job, &statement)
            .to_bytes()
            .to_vec(),
    };
    vec![
        work.to_json().into_bytes(),
        serde_json::to_vec(&approval).expect("an approval serialises"),
        serde_json::to_vec(&load).expect("a load serialises"),
        serde_json::to_vec(&result).expect("a result serialises"),
        postcard::to_allocvec(&releases).expect("releases encode"),
    ]
}

/// A client's and a would-be worker's KeyPackages, a Commit with its Welcome, a sealed
/// message, a removal, and members' state files (the group's keys are fresh each time: these
/// shape the inputs, they do not open).
fn group_seeds() -> Vec<Vec<u8>> {
    use obscura_group::Member;
    let state = |m: &Member| {
        obscura_client::group::seal_state(&obscura_client::group::Saved::new(m), &wrapping_key())
            .expect("it seals")
    };
    let mut owner = Member::new("client:owner").expect("a member");
    owner.create().expect("a group");
    let mut member = Member::new("client:ana").expect("a member");
    let kp = member.key_package(None).expect("a KeyPackage");
    let mut worker = Member::new("worker:w1").expect("a member");
    let worker_kp = worker
        .key_package(Some(b"{\"platform\":\"simulation\"}".to_vec()))
        .expect("a KeyPackage");
    let added = crate::admit(&mut owner, &mut member, &kp);
    let (_, sealed) = owner
        .seal(br#"{"labels":{"00112233445566778899aabbccddeeff":"harbour"}}"#)
        .expect("sealed");
    let removed = owner.remove("client:ana").expect("removed");
    vec![
        kp,
        worker_kp,
        added.commit,
        added.welcome.expect("a Welcome"),
        sealed,
        removed.commit,
        state(&owner),
        state(&member),
    ]
}
