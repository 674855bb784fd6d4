//! Every message round-trips; other versions, garbage, truncation, trailing bytes and oversized
//! fields are refused cleanly; and the encoding is frozen by a snapshot.

use obscura_proto::{
    roles, Auth, Capability, Error, FetchBy, KeeperBatch, KeeperBody, KeeperEvaluation,
    KeeperRekeyPart, Limits, MatchProof, NodeBody, Opening, PreparedImage, Request, Response,
    ResponseBody, RotateOp, ScanOf, SignedCapability, WireAuditEntry, WireCheck, WireOpened,
};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>()
}

fn body() -> impl Strategy<Value = NodeBody> {
    prop_oneof![
        prop::collection::vec(
            (
                id(),
                prop::collection::vec(any::<u8>(), 1..200),
                prop::collection::vec(any::<u8>(), 1..2000),
                prop::collection::vec(any::<u8>(), 256),
                prop::collection::vec(id(), 8),
                prop::option::of(prop::collection::vec(any::<[u8; 32]>(), 8)),
            )
                .prop_map(
                    |(image, manifest, image_share, hash_share, tokens, elements)| {
                        PreparedImage {
                            image,
                            manifest,
                            image_share,
                            hash_share,
                            tokens,
                            elements: elements.unwrap_or_default(),
                        }
                    }
                ),
            1..4
        )
        .prop_map(|images| NodeBody::Prepare {
            key_version: 1,
            images
        }),
        prop::collection::vec(id(), 1..20).prop_map(|images| NodeBody::Commit { images }),
        (id(), any::<u64>(), prop::collection::vec(any::<u8>(), 64)).prop_map(
            |(image, issued_at, signature)| NodeBody::Delete {
                image,
                issued_at,
                signature
            }
        ),
        (
            any::<u32>(),
            id(),
            any::<u64>(),
            prop::collection::vec(id(), 0..100)
        )
            .prop_map(|(key_version, query, issued, tokens)| NodeBody::Lookup {
                key_version,
                query,
                issued,
                tokens
            }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 32]>(),
            prop::collection::vec(any::<u8>(), 64)
        )
            .prop_map(|(from, to, factor, signature)| NodeBody::Rotate {
                op: RotateOp::Begin {
                    from,
                    to,
                    factor,
                    signature
                },
            }),
        (any::<u32>(), any::<u32>()).prop_map(|(to, max_images)| NodeBody::Rotate {
            op: RotateOp::Move {
                to,
                max_images,
                signature: vec![1; 64]
            }
        }),
        any::<u32>().prop_map(|to| NodeBody::Rotate {
            op: RotateOp::Finish {
                to,
                signature: vec![2; 64]
            }
        }),
        (
            id(),
            any::<u8>(),
            prop::collection::vec(prop::option::of(0u32..0x7fff_ffff), 0..40)
        )
            .prop_map(|(query_id, round, values)| NodeBody::Reduce {
                query_id,
                issued: 9,
                part: u32::from(round) * 3,
                round,
                openings: (1..=5)
                    .map(|node| WireOpened {
                        node,
                        round,
                        values: values.clone(),
                        signature: vec![node; 64],
                    })
                    .collect(),
            }),
        (
            id(),
            prop::collection::vec(any::<u8>(), 256),
            prop::collection::vec(id(), 0..50)
        )
            .prop_map(|(query_id, query_share, candidates)| NodeBody::Evaluate {
                query_id,
                issued: 7,
                query_share,
                scan: ScanOf {
                    count: candidates.len() as u32 * 7,
                    digest: [candidates.len() as u8; 32],
                },
                part: 2,
                candidates,
                share_digests: vec![[9; 32]; 5],
                checks: (1..=5)
                    .map(|node| WireCheck {
                        node,
                        degree: vec![u32::from(node); 2],
                        bits: vec![7; 2],
                        signature: vec![node; 64],
                    })
                    .collect(),
            }),
        (
            id(),
            prop::collection::vec(any::<u8>(), 256),
            prop::collection::vec(id(), 0..50)
        )
            .prop_map(|(query_id, query_share, candidates)| NodeBody::CheckQuery {
                query_id,
                issued: 8,
                query_share,
                scan: ScanOf {
                    count: candidates.len() as u32,
                    digest: candidates.first().map_or([0; 32], |c| [c[0]; 32]),
                },
                share_digests: vec![[8; 32]; 5],
            }),
        id().prop_map(|image| NodeBody::Fetch {
            by: FetchBy::Owner { image }
        }),
        (id(), any::<u64>()).prop_map(|(image, expires_at)| NodeBody::Fetch {
            by: FetchBy::Grant {
                image,
                expires_at,
                signature: vec![6; 64]
            }
        }),
        proof().prop_map(|p| NodeBody::Fetch {
            by: FetchBy::Match(p)
        }),
        prop::collection::vec(proof(), 1..4).prop_map(|proofs| NodeBody::Resolve { proofs }),
        Just(NodeBody::Status),
        (any::<u64>(), 0..=4096u32).prop_map(|(from, max)| NodeBody::Audit { from, max }),
        Just(NodeBody::Checkpoint),
    ]
}

fn keeper_body() -> impl Strategy<Value = KeeperBody> {
    prop_oneof![
        (
            any::<u32>(),
            prop::collection::vec((any::<u8>(), any::<[u8; 32]>(), any::<[u8; 32]>()), 1..6)
        )
            .prop_map(|(from, parts)| KeeperBody::KeeperRekey {
                from,
                to: from.wrapping_add(1),
                parts: parts
                    .into_iter()
                    .map(|(node, factor, zero_share)| KeeperRekeyPart {
                        node,
                        factor,
                        zero_share,
                        zero_commitments: vec![[3; 32]; 3],
                    })
                    .collect(),
                signature: vec![4; 64],
            }),
        any::<u32>().prop_map(|version| KeeperBody::KeeperRetire {
            version,
            signature: vec![5; 64]
        }),
        Just(KeeperBody::CapabilityCommit),
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|package| KeeperBody::CapabilityShare { package }),
        (
            any::<u32>(),
            prop::collection::vec(
                (any::<u8>(), prop::collection::vec(any::<[u8; 32]>(), 1..20)),
                1..6
            )
        )
            .prop_map(|(version, batches)| KeeperBody::KeeperEvaluate {
                version,
                batches: batches
                    .into_iter()
                    .map(|(node, elements)| KeeperBatch { node, elements })
                    .collect(),
            }),
        Just(KeeperBody::Status),
        (
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(
                |(party_key, enc, ciphertext, signature)| KeeperBody::Provision {
                    party_key,
                    enc,
                    ciphertext,
                    signature,
                }
            ),
        (any::<u64>(), 0..=4096u32).prop_map(|(from, max)| KeeperBody::Audit { from, max }),
        (
            recovery_plan(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(plan, evidence)| KeeperBody::RecoverPart {
                plan,
                evidence,
                signature: vec![6; 64],
            }),
        (
            recovery_plan(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(plan, ciphertext)| KeeperBody::Recover {
                parts: plan
                    .helpers
                    .iter()
                    .map(|&helper| obscura_proto::RecoveryPart {
                        helper,
                        enc: vec![8; 32],
                        ciphertext: ciphertext.clone(),
                        masks: vec![vec![[helper; 32]; plan.helpers.len() - 1]; 2],
                        tag: [helper; 32],
                    })
                    .collect(),
                plan,
                signature: vec![7; 64],
                receipt_enc: vec![9; 32],
                receipt_ciphertext: vec![10; 48],
            }),
    ]
}

fn recovery_plan() -> impl Strategy<Value = obscura_proto::RecoveryPlan> {
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<u8>(),
        any::<[u8; 32]>(),
        any::<u32>(),
        proptest::sample::subsequence(vec![1u8, 3, 4, 5, 6], 2..5),
        proptest::collection::vec(proptest::collection::vec(any::<[u8; 32]>(), 0..4), 0..4),
        proptest::collection::vec(any::<u8>(), 0..100),
    )
        .prop_map(
            |(id, issued_at, _, party_key, version, helpers, public_shares, policy)| {
                obscura_proto::RecoveryPlan {
                    id,
                    issued_at,
                    keeper: 2,
                    party_key,
                    nonce: party_key,
                    version,
                    helper_keys: helpers.iter().map(|&h| [h; 32]).collect(),
                    helpers,
                    public_shares,
                    policy,
                }
            },
        )
}

fn proof() -> impl Strategy<Value = MatchProof> {
    (
        id(),
        any::<u64>(),
        id(),
        any::<u32>(),
        prop::collection::vec(
            (
                any::<u8>(),
                prop::option::of(any::<[u32; 2]>()),
                any::<[u8; 32]>(),
                prop::collection::vec(any::<[u8; 32]>(), 0..12),
            ),
            1..6,
        ),
    )
        .prop_map(
            |(query_id, issued, handle, position, openings)| MatchProof {
                query_id,
                issued,
                part: position / 3,
                handle,
                position,
                count: position.saturating_add(1),
                openings: openings
                    .into_iter()
                    .map(|(node, value, leaf_key, path)| Opening {
                        node,
                        value,
                        leaf_key,
                        path,
                        signature: vec![9; 64],
                    })
                    .collect(),
            },
        )
}

fn auth() -> impl Strategy<Value = Option<Auth>> {
    prop::option::of(
        prop::collection::vec(any::<u8>(), 1..200).prop_map(|body| Auth {
            capability: SignedCapability {
                body,
                signature: vec![1; 64],
            },
            signature: vec![2; 64],
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(request_id in id(), timestamp in any::<u64>(), body in body(), auth in auth()) {
        let r = Request { request_id, timestamp, body, auth };
        prop_assert_eq!(Request::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn keeper_requests_round_trip(request_id in id(), timestamp in any::<u64>(), body in keeper_body()) {
        let r = Request { request_id, timestamp, body, auth: None };
        prop_assert_eq!(Request::decode(&r.encode()).unwrap(), r);
    }

    /// Each server parses only its own operations: a keeper's request sent to a node (or a
    /// node's to a keeper) is refused whole by the decoder, before any handler sees it, and never
    /// read as whichever of the server's own operations shares its variant index.
    #[test]
    fn one_servers_requests_do_not_parse_as_the_others(body in body(), keeper in keeper_body()) {
        let node = Request { request_id: [1; 16], timestamp: 2, body, auth: None }.encode();
        prop_assert_eq!(Request::<KeeperBody>::decode(&node), Err(Error::OtherServer("node")));
        let keeper = Request { request_id: [1; 16], timestamp: 2, body: keeper, auth: None }.encode();
        prop_assert_eq!(Request::<NodeBody>::decode(&keeper), Err(Error::OtherServer("keeper")));
    }

    #[test]
    fn responses_round_trip(values in prop::collection::vec(prop::option::of(0u32..0x7fff_ffff), 0..50), node in any::<u8>(), entries in prop::collection::vec((any::<u64>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..70)), 0..5)) {
        for r in [
            Response(ResponseBody::Evaluate { node, values: values.iter().map(|v| v.map(|v| [v, v ^ 1])).collect(), answer_key: [3; 32], signature: vec![4; 64] }),
            Response(ResponseBody::Opened { opened: WireOpened { node, round: 3, values: values.clone(), signature: vec![5; 64] } }),
            Response(ResponseBody::Audit {
                entries: entries.iter().map(|(seq, kind, detail)| WireAuditEntry {
                    seq: *seq, prev: [1; 32], hash: [2; 32], time: 3, kind: *kind, subject: [4; 16], detail: detail.clone(),
                }).collect(),
                total: entries.len() as u64,
            }),
            Response(ResponseBody::Lookup { handles: vec![[5; 16]; values.len()], matched: 3 }),
            Response(ResponseBody::Resolved { manifests: values.iter().map(|v| v.map(|v| v.to_be_bytes().to_vec())).collect() }),
            Response(ResponseBody::Ok),
            Response(ResponseBody::QueryChecked {
                check: WireCheck { node, degree: vec![1, 2], bits: vec![3, 4], signature: vec![7; 64] },
            }),
            Response(ResponseBody::Rotation {
                node, current: 1, next: Some(2), moved: values.len() as u64, total: 9, postings: 72, done: false,
            }),
            Response(ResponseBody::KeeperRekeyed { keeper: node, public_shares: vec![[5; 32]; values.len()] }),
            Response(ResponseBody::KeeperEvaluated {
                keeper: node,
                batches: vec![KeeperEvaluation { elements: vec![[7; 32]; values.len()], proof: vec![8; 64] }],
            }),
        ] {
            prop_assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Request::<NodeBody>::decode(&bytes);
        let _ = Request::<KeeperBody>::decode(&bytes);
        let _ = Response::decode(&bytes);
        let mut framed = b"OBSC\x00\x0e".to_vec();
        framed.extend(&bytes);
        let _ = Request::<NodeBody>::decode(&framed);
        let _ = Request::<KeeperBody>::decode(&framed);
        let _ = Response::decode(&framed);
    }

    #[test]
    fn truncation_is_refused(body in body(), cut in any::<prop::sample::Index>()) {
        let bytes = Request { request_id: [1; 16], timestamp: 2, body, auth: None }.encode();
        let cut = cut.index(bytes.len());
        prop_assert!(Request::<NodeBody>::decode(&bytes[..cut]).is_err());
    }
}

#[test]
fn headers_and_trailers_are_checked() {
    let bytes = Request {
        request_id: [1; 16],
        timestamp: 2,
        body: NodeBody::Status,
        auth: None,
    }
    .encode();
    assert_eq!(
        Request::<NodeBody>::decode(b"HTTP/1.1 200"),
        Err(Error::BadMagic)
    );
    let mut v0 = bytes.clone();
    v0[4..6].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(
        Request::<NodeBody>::decode(&v0),
        Err(Error::UnsupportedVersion(0))
    );
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        Request::<NodeBody>::decode(&long),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn size_limits_are_enforced() {
    use obscura_proto::limits::{MAX_BATCH, MAX_IMAGE_SHARE, MAX_KEEPER_ELEMENTS};
    let image = |hash_len: usize, tokens: usize, share: usize| PreparedImage {
        image: [0; 16],
        manifest: vec![1],
        image_share: vec![2; share],
        hash_share: vec![3; hash_len],
        tokens: vec![[4; 16]; tokens],
        elements: Vec::new(),
    };
    let batch = |images: Vec<PreparedImage>| Request {
        request_id: [0; 16],
        timestamp: 0,
        body: NodeBody::Prepare {
            key_version: 1,
            images,
        },
        auth: None,
    };
    let prepare = |hash_len, tokens, share| batch(vec![image(hash_len, tokens, share)]);
    assert!(Request::<NodeBody>::decode(&prepare(256, 8, 10).encode()).is_ok());
    assert_eq!(
        Request::<NodeBody>::decode(&prepare(255, 8, 10).encode()),
        Err(Error::BadSize("hash_share"))
    );
    assert_eq!(
        Request::<NodeBody>::decode(&prepare(256, 9, 10).encode()),
        Err(Error::BadSize("tokens"))
    );
    assert_eq!(
        Request::<NodeBody>::decode(&prepare(256, 8, 0).encode()),
        Err(Error::BadSize("image_share"))
    );
    assert_eq!(
        Request::<NodeBody>::decode(&batch(vec![]).encode()),
        Err(Error::BadSize("images"))
    );
    assert!(
        Request::<NodeBody>::decode(&batch(vec![image(256, 8, 1); MAX_BATCH]).encode()).is_ok()
    );
    assert_eq!(
        Request::<NodeBody>::decode(&batch(vec![image(256, 8, 1); MAX_BATCH + 1]).encode()),
        Err(Error::BadSize("images"))
    );
    // The shares of a batch count together against the share limit.
    let half = MAX_IMAGE_SHARE / 2 + 1;
    assert_eq!(
        Request::<NodeBody>::decode(
            &batch(vec![image(256, 8, half), image(256, 8, half)]).encode()
        ),
        Err(Error::BadSize("image_share"))
    );
    let commit = |n| Request {
        request_id: [0; 16],
        timestamp: 0,
        body: NodeBody::Commit {
            images: vec![[0; 16]; n],
        },
        auth: None,
    };
    assert!(Request::<NodeBody>::decode(&commit(MAX_BATCH).encode()).is_ok());
    assert_eq!(
        Request::<NodeBody>::decode(&commit(0).encode()),
        Err(Error::BadSize("images"))
    );
    let eval = Request {
        request_id: [0; 16],
        timestamp: 0,
        body: NodeBody::Evaluate {
            query_id: [0; 16],
            issued: 0,
            query_share: vec![0; 64],
            scan: ScanOf {
                count: 0,
                digest: [0; 32],
            },
            part: 0,
            candidates: vec![],
            share_digests: vec![],
            checks: vec![],
        },
        auth: None,
    };
    assert_eq!(
        Request::<NodeBody>::decode(&eval.encode()),
        Err(Error::BadSize("query_share"))
    );
    // A relayed round: openings bounded in number and length, each signed.
    let reduce = |nodes: usize, len: usize, signature: usize| Request {
        request_id: [0; 16],
        timestamp: 0,
        body: NodeBody::Reduce {
            query_id: [0; 16],
            issued: 0,
            part: 0,
            round: 1,
            openings: vec![
                WireOpened {
                    node: 1,
                    round: 1,
                    values: vec![None; len],
                    signature: vec![0; signature],
                };
                nodes
            ],
        },
        auth: None,
    };
    assert!(Request::<NodeBody>::decode(&reduce(5, 7 * 4096, 64).encode()).is_ok());
    let longest = obscura_proto::limits::MAX_CANDIDATES * obscura_proto::limits::MAX_OPENED_WIDTH;
    for (nodes, len, signature) in [(65, 1, 64), (5, longest + 1, 64), (5, 1, 63)] {
        assert!(
            matches!(
                Request::<NodeBody>::decode(&reduce(nodes, len, signature).encode()),
                Err(Error::BadSize(_))
            ),
            "{nodes} {len} {signature}"
        );
    }
    // Elements come 8 per image or not at all.
    let mut with_elements = image(256, 8, 1);
    with_elements.elements = vec![[5; 32]; 8];
    assert!(Request::<NodeBody>::decode(&batch(vec![with_elements.clone()]).encode()).is_ok());
    with_elements.elements.pop();
    assert_eq!(
        Request::<NodeBody>::decode(&batch(vec![with_elements]).encode()),
        Err(Error::BadSize("elements"))
    );
    // A keeper request: no empty batch, and a bound on all its elements together.
    let keeper = |sizes: &[usize]| Request {
        request_id: [0; 16],
        timestamp: 0,
        body: KeeperBody::KeeperEvaluate {
            version: 1,
            batches: sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| KeeperBatch {
                    node: i as u8 + 1,
                    elements: vec![[6; 32]; n],
                })
                .collect(),
        },
        auth: None,
    };
    assert!(Request::<KeeperBody>::decode(&keeper(&[72; 5]).encode()).is_ok());
    let half = MAX_KEEPER_ELEMENTS / 2;
    assert!(Request::<KeeperBody>::decode(&keeper(&[half, half]).encode()).is_ok());
    for bad in [&[][..], &[72, 0], &[half, half, 1]] {
        assert!(
            Request::<KeeperBody>::decode(&keeper(bad).encode()).is_err(),
            "{bad:?}"
        );
    }
    // Credentials have fixed sizes; a capability is small.
    let with_auth = |body_len: usize, sig: usize| Request {
        request_id: [0; 16],
        timestamp: 0,
        body: NodeBody::Status,
        auth: Some(Auth {
            capability: SignedCapability {
                body: vec![1; body_len],
                signature: vec![2; 64],
            },
            signature: vec![3; sig],
        }),
    };
    assert!(Request::<NodeBody>::decode(&with_auth(100, 64).encode()).is_ok());
    assert_eq!(
        Request::<NodeBody>::decode(&with_auth(100, 63).encode()),
        Err(Error::BadSize("auth"))
    );
    assert_eq!(
        Request::<NodeBody>::decode(
            &with_auth(obscura_proto::limits::MAX_CAPABILITY + 1, 64).encode()
        ),
        Err(Error::BadSize("auth"))
    );
    // Match proofs: bounded openings and paths, 64-byte signatures.
    let resolve = |openings: usize, path: usize| Request {
        request_id: [0; 16],
        timestamp: 0,
        body: NodeBody::Resolve {
            proofs: vec![MatchProof {
                query_id: [0; 16],
                issued: 0,
                part: 0,
                handle: [0; 16],
                position: 0,
                count: 1,
                openings: vec![
                    Opening {
                        node: 1,
                        value: Some([1, 0]),
                        leaf_key: [0; 32],
                        path: vec![[0; 32]; path],
                        signature: vec![0; 64],
                    };
                    openings
                ],
            }],
        },
        auth: None,
    };
    assert!(Request::<NodeBody>::decode(&resolve(5, 10).encode()).is_ok());
    assert_eq!(
        Request::<NodeBody>::decode(&resolve(0, 10).encode()),
        Err(Error::BadSize("match proof"))
    );
    assert_eq!(
        Request::<NodeBody>::decode(&resolve(5, obscura_proto::limits::MAX_PATH + 1).encode()),
        Err(Error::BadSize("match proof"))
    );
}

/// The wire format is a contract between nodes and clients of different builds.
#[test]
fn encoding_is_frozen() {
    let r = Request {
        request_id: [0xab; 16],
        timestamp: 1_790_000_000,
        body: NodeBody::Evaluate {
            query_id: [0x01; 16],
            issued: 1_790_000_000,
            query_share: (0..=255).collect(),
            scan: ScanOf {
                count: 2,
                digest: [0x66; 32],
            },
            part: 0,
            candidates: vec![[0x11; 16], [0x22; 16]],
            share_digests: vec![],
            checks: vec![],
        },
        auth: Some(Auth {
            capability: SignedCapability {
                body: vec![0x33; 40],
                signature: vec![0x44; 64],
            },
            signature: vec![0x55; 64],
        }),
    };
    let hex: String = r.encode().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex.len(),
        2 * (7
            + 16
            + 5
            + 1
            + 16
            + 5
            + 2
            + 256
            + 1
            + 32
            + 1
            + 1
            + 32
            + 1
            + 1
            + 1
            + 1
            + 40
            + 1
            + 64
            + 1
            + 64)
    );
    assert_eq!(&hex[..14], "4f425343000f01");
    assert_eq!(
        fnv1a(&r.encode()),
        "c713abc932e52049",
        "wire encoding changed"
    );
}

/// A keeper's request encoding: the kind byte after the version, then the body, whose variants
/// (Status, Audit and Checkpoint first) may not drift.
#[test]
fn keeper_encoding_is_frozen() {
    let r = Request {
        request_id: [0xab; 16],
        timestamp: 1_790_000_000,
        body: KeeperBody::KeeperEvaluate {
            version: 3,
            batches: vec![KeeperBatch {
                node: 2,
                elements: vec![[0x5a; 32]],
            }],
        },
        auth: None,
    };
    let bytes = r.encode();
    assert_eq!(&bytes[..7], b"OBSC\x00\x0f\x02");
    assert_eq!(
        fnv1a(&bytes),
        "123205ec87ce5112",
        "keeper wire encoding changed"
    );
    let status = Request {
        request_id: [0; 16],
        timestamp: 0,
        body: KeeperBody::Status,
        auth: None,
    };
    // Status is variant 0 of a keeper's requests.
    assert_eq!(status.encode()[7 + 16 + 1], 0);
}

/// A capability's encoding is what the keepers sign and nodes decode: it may not drift.
#[test]
fn capability_encoding_is_frozen() {
    let c = Capability {
        id: [0x01; 16],
        user: "ana".into(),
        roles: roles::QUERIER | roles::AUDITOR,
        holder: [0x02; 32],
        issued_at: 1_790_000_000,
        expires_at: 1_790_003_600,
        limits: Limits {
            queries_per_hour: 3600,
            fetches_per_hour: 600,
        },
    };
    let bytes = postcard::to_allocvec(&c).unwrap();
    assert_eq!(bytes.len(), 16 + 1 + 3 + 1 + 32 + 5 + 5 + 2 + 2);
    assert_eq!(
        fnv1a(&bytes),
        "de9930c60981995b",
        "capability encoding changed"
    );
}

/// FNV-1a, enough to pin the bytes in a readable snapshot without another dependency.
fn fnv1a(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// A request's digest is BLAKE3 of exactly its encoding (after the node, id and time), however
/// the encoder hands the bytes over: a body far larger than the hasher's buffer, with byte
/// vectors of every length around the buffer's size, digests as its whole encoding does.
#[test]
fn a_request_digest_hashes_exactly_the_body_as_encoded() {
    let image = |len: usize, fill: u8| PreparedImage {
        image: [fill; 16],
        manifest: vec![fill; 300],
        image_share: (0..len).map(|i| (i as u8) ^ fill).collect(),
        hash_share: vec![fill; 256],
        tokens: vec![[fill; 16]; 8],
        elements: Vec::new(),
    };
    for lens in [
        vec![0],
        vec![1, 16 << 10],
        vec![(16 << 10) - 1, (16 << 10) + 1, 3],
        vec![2 << 20, 7, 100_000],
    ] {
        let body = NodeBody::Prepare {
            key_version: 3,
            images: lens
                .iter()
                .enumerate()
                .map(|(i, &l)| image(l, i as u8))
                .collect(),
        };
        let mut want = blake3::Hasher::new_derive_key("obscura 2026 request signature v1");
        want.update(&[4]);
        want.update(&[9; 16]);
        want.update(&77u64.to_be_bytes());
        want.update(&postcard::to_allocvec(&body).unwrap());
        assert_eq!(
            obscura_proto::request_digest(4, &[9; 16], 77, &body),
            *want.finalize().as_bytes(),
            "{lens:?}"
        );
    }
}
