//! Who may ask a node what, tried as an attacker with ordinary credentials would, with raw wire
//! requests: no capability, a forged or expired one, a request signed for another node or
//! altered after signing; an operation outside one's roles; Stage-1 probes that try to list
//! images (one band repeated, oversized batches, raw ids as candidates, another query's
//! handles); fetches of images one never matched (the owner role claimed, another user's grant
//! or proof, a proof of a distance beyond the limit, altered openings); more queries than the
//! capability allows; rotation steps without the owner's order. Every refusal is a clear error,
//! and those after authentication are audited with the user.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use obscura_auth::capability::Holder;
use obscura_auth::matching::{self, Answered, KeptAnswer};
use obscura_cluster::node::{node_purpose, NodeSecrets};
use obscura_mpc::{share_hash, HashShare};
use obscura_proto::{
    roles, Capability, ErrorCode, FetchBy, Limits, NodeBody, ResponseBody, RotateOp, ScanOf,
};
use obscura_sharing::field::Fp;
use obscura_sharing::order::{user_digest, Order};
use obscura_tokens::keyfile::WrappingKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// `(status, error code)` of an answer.
fn refusal(answer: (u16, ResponseBody)) -> (u16, Option<ErrorCode>) {
    (answer.0, code(&answer.1))
}

/// Index `photo` at node 1 as the owner (prepare and commit).
async fn stored(node: &TestNode, photo: &str, seed: u64) -> Upload {
    let u = upload(&node.owner, photo, seed);
    assert_eq!(node.send(&TestNode::request(prepare(&u))).await.0, 200);
    assert_eq!(node.send(&TestNode::request(commit(&[u.id]))).await.0, 200);
    u
}

#[tokio::test]
async fn requests_without_a_valid_capability_are_refused_and_do_not_grow_the_log() {
    let node = TestNode::start("no-capability").await;
    let before = audit(&node).await.len();
    let status = || TestNode::request(NodeBody::Status);
    let unauthorized = (401, Some(ErrorCode::Unauthorized));

    // No capability at all: the client certificate alone is not a credential.
    let req = status();
    assert_eq!(
        refusal(node.post_raw("/v1/status", req.encode()).await),
        unauthorized
    );
    // A capability signed by someone other than the keepers.
    let stranger = SigningKey::from_bytes(&[7; 32]);
    let forged = mint(&stranger, "mallory", roles::ALL, PLENTY);
    assert_eq!(
        refusal(node.send_as(&forged, &status()).await),
        unauthorized
    );
    // An expired one.
    let holder = SigningKey::generate(&mut rand_core::OsRng);
    let old = Capability {
        id: [1; 16],
        user: "ana".into(),
        roles: roles::ALL,
        holder: holder.verifying_key().to_bytes(),
        issued_at: now() - 7200,
        expires_at: now() - 3600,
        limits: PLENTY,
    };
    let expired = minted(&node.keepers, old, holder);
    assert_eq!(
        refusal(node.send_as(&expired, &status()).await),
        unauthorized
    );
    // A request signed for node 2, sent to node 1 (a node replaying what it saw).
    let ana = node.holder("ana", roles::ALL);
    let mut for_two = status();
    ana.sign(2, &mut for_two);
    assert_eq!(
        refusal(node.post_raw("/v1/status", for_two.encode()).await),
        unauthorized
    );
    // Ana's capability with a request signed by another key (stolen from a log, say).
    let mut stolen = status();
    node.holder("bob", roles::ALL).sign(1, &mut stolen);
    let mut with_anas = stolen.clone();
    let mut anas = status();
    ana.sign(1, &mut anas);
    with_anas.auth.as_mut().unwrap().capability = anas.auth.unwrap().capability;
    assert_eq!(
        refusal(node.post_raw("/v1/status", with_anas.encode()).await),
        unauthorized
    );
    // A signed request whose body was changed afterwards.
    let mut signed = TestNode::request(NodeBody::Audit { from: 0, max: 1 });
    ana.sign(1, &mut signed);
    signed.body = NodeBody::Audit { from: 0, max: 4096 };
    assert_eq!(
        refusal(node.post_raw("/v1/audit", signed.encode()).await),
        unauthorized
    );
    // None of these added an entry to the log, which only the tester's own reads grew.
    let after = audit(&node).await;
    assert_eq!(
        after.len(),
        before + 1,
        "one entry: the tester's first audit read"
    );
    node.stop().await;
}

#[tokio::test]
async fn each_operation_needs_its_role_and_refusals_are_audited_with_the_user() {
    let node = TestNode::start("roles").await;
    let u = upload(&node.owner, "camera.png", 1);
    let querier = node.holder("quinn", roles::QUERIER);
    let owner = node.holder("olga", roles::OWNER);
    let auditor = node.holder("aude", roles::AUDITOR);
    let forbidden = (403, Some(ErrorCode::Forbidden));
    let delete = NodeBody::Delete {
        image: u.id.0,
        issued_at: CREATED_AT,
        signature: Order::Delete {
            image: u.id,
            issued_at: CREATED_AT,
        }
        .sign(&node.owner)
        .to_vec(),
    };
    // A querier holding the owner's signed manifest still cannot store it, nor delete with the
    // owner's order, read the audit log, or fetch by claiming the owner role.
    for body in [
        prepare(&u),
        commit(&[u.id]),
        delete,
        NodeBody::Audit { from: 0, max: 10 },
        NodeBody::Checkpoint,
        fetch(u.id),
        NodeBody::Rotate {
            op: RotateOp::Move {
                to: 2,
                max_images: 1,
                signature: vec![0; 64],
            },
        },
    ] {
        assert_eq!(
            refusal(
                node.send_as(&querier, &TestNode::request(body.clone()))
                    .await
            ),
            forbidden,
            "{body:?}"
        );
    }
    // An owner does not search, an auditor neither searches nor fetches.
    let lookup_body = lookup(&u.tokens, [2; 16]);
    assert_eq!(
        refusal(
            node.send_as(&owner, &TestNode::request(lookup_body.clone()))
                .await
        ),
        forbidden
    );
    assert_eq!(
        refusal(
            node.send_as(&auditor, &TestNode::request(lookup_body))
                .await
        ),
        forbidden
    );
    assert_eq!(
        refusal(
            node.send_as(&auditor, &TestNode::request(fetch(u.id)))
                .await
        ),
        forbidden
    );
    // Each does what its role allows.
    assert_eq!(
        node.send_as(&owner, &TestNode::request(prepare(&u)))
            .await
            .0,
        200
    );
    assert_eq!(
        node.send_as(&auditor, &TestNode::request(NodeBody::Checkpoint))
            .await
            .0,
        200
    );
    for who in [&querier, &owner, &auditor] {
        assert_eq!(
            node.send_as(who, &TestNode::request(NodeBody::Status))
                .await
                .0,
            200
        );
    }
    // The refusals are in the log, each naming its user and operation.
    let entries = audit(&node).await;
    let refused = |user: &str, op: &str| {
        entries.iter().any(|e| {
            let d = String::from_utf8_lossy(&e.detail);
            e.kind == obscura_store::AuditKind::Refused.tag()
                && d.contains(&format!("user={user}"))
                && d.contains(&format!("op={op}"))
        })
    };
    // A prepare is refused at the upload gate, from its header alone, before the signed
    // request is read: it is counted with the unauthenticated refusals, not put to a user.
    assert!(!refused("quinn", "prepare"));
    for op in ["commit", "delete", "audit", "fetch", "rotate"] {
        assert!(refused("quinn", op), "quinn's {op} refusal not audited");
    }
    assert!(refused("olga", "lookup") && refused("aude", "fetch"));
    node.stop().await;
}

/// The handle node 1 gave image `u` for `who`'s lookup of `tokens` under query `query`, if any.
async fn handles(
    node: &TestNode,
    who: &Holder,
    tokens: &[[u8; 16]],
    query: [u8; 16],
) -> Vec<[u8; 16]> {
    handles_issued(node, who, tokens, query, now()).await
}

#[tokio::test]
async fn stage1_hands_out_handles_of_one_query_and_counts_the_bands_itself() {
    let node = TestNode::start("stage1").await;
    let u = stored(&node, "camera.png", 1).await;
    let ana = node.holder("ana", roles::QUERIER);
    let bob = node.holder("bob", roles::QUERIER);

    // One band's token sent twelve times: counted once, so the image (one band of eight) is no
    // candidate. Before, the client chose `min_bands = 1`: 2,048 such lookups listed every id.
    assert!(handles(&node, &ana, &[u.tokens[0]; 12], [1; 16])
        .await
        .is_empty());
    // Two bands are not enough either with the default policy (radius 1, τ = 10: three).
    assert!(handles(&node, &ana, &u.tokens[..2], [11; 16])
        .await
        .is_empty());
    let three = handles(&node, &ana, &u.tokens[..3], [12; 16]).await;
    assert_eq!(three.len(), 1);
    // The handle is not the id, and differs per query and per user. (Each lookup has its own
    // query id: a node answers one lookup per id.)
    assert_ne!(three[0], u.id.0);
    let again = handles(&node, &ana, &u.tokens, [2; 16]).await;
    let bobs = handles(&node, &bob, &u.tokens, [13; 16]).await;
    assert_ne!(again, three);
    assert_ne!(bobs, three);
    // More tokens than the policy's shape are refused.
    let mut oversized = lookup(&u.tokens, [3; 16]);
    if let NodeBody::Lookup { tokens, .. } = &mut oversized {
        tokens.push([9; 16]);
    }
    let (s, b) = node.send_as(&ana, &TestNode::request(oversized)).await;
    assert_eq!((s, code(&b)), (400, Some(ErrorCode::BadRequest)));

    // Stage-2 takes only handles of the caller's own query: the raw id, bob's handle, or ana's
    // handle of another query evaluate to nothing.
    let issued = now();
    let query = share_hash(u.hash, T, N, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
    let lookup_now = |q| TestNode::request(lookup(&u.tokens, q));
    let mut req = lookup_now([4; 16]);
    if let NodeBody::Lookup { issued: i, .. } = &mut req.body {
        *i = issued;
    }
    let ResponseBody::Lookup { handles: mine, .. } = node.send_as(&ana, &req).await.1 else {
        panic!()
    };
    let candidates = vec![mine[0], u.id.0, bobs[0], again[0]];
    match node
        .evaluate_as(&ana, [4; 16], issued, &query, &candidates)
        .await
    {
        (200, ResponseBody::Evaluate { values, .. }) => {
            assert!(values[0].is_some(), "her own handle");
            assert!(values[1..].iter().all(Option::is_none), "{values:?}");
        }
        other => panic!("{other:?}"),
    }
    // A query issued outside the window is stale: its handles have expired.
    let (s, b) = node
        .evaluate_as(&ana, [5; 16], issued - 600, &query, &[mine[0]])
        .await;
    assert_eq!((s, code(&b)), (403, Some(ErrorCode::Stale)));
    // More candidates than the policy allows are refused.
    let (s, b) = node
        .evaluate_as(&ana, [6; 16], issued, &query, &[[0; 16]; 16_385])
        .await;
    assert_eq!((s, code(&b)), (400, Some(ErrorCode::BadRequest)));
    node.stop().await;
}

/// Every node's answer key (each node's audit key), from the cluster directory.
fn node_keys(node: &TestNode) -> Vec<SigningKey> {
    (1..=N as u8)
        .map(|i| {
            let dir = node.dir.join(format!("node{i}"));
            let wrapping = WrappingKey::from_file(&dir.join("wrapping.key")).unwrap();
            let secrets: NodeSecrets = obscura_cluster::files::open_secrets(
                &std::fs::read(dir.join("secrets.sealed")).unwrap(),
                &node_purpose(i),
                &wrapping,
            )
            .unwrap();
            SigningKey::from_bytes(&secrets.audit_key)
        })
        .collect()
}

/// A proof for node 1's real answer to `who`'s query, with nodes 2–5's answers made up (with
/// their keys) on a degree-4 polynomial through node 1's value whose constant is `distance`.
/// Only a coalition of 2t + 1 nodes could do this; here it lets the test put any distance
/// in a proof that every signature check passes.
async fn proof_with_distance(
    node: &TestNode,
    who: &Holder,
    u: &Upload,
    query_id: [u8; 16],
    distance: u32,
) -> obscura_proto::MatchProof {
    let issued = now();
    let mut req = TestNode::request(lookup(&u.tokens, query_id));
    if let NodeBody::Lookup { issued: i, .. } = &mut req.body {
        *i = issued;
    }
    let ResponseBody::Lookup { handles, .. } = node.send_as(who, &req).await.1 else {
        panic!()
    };
    let query = share_hash(u.hash, T, N, &mut ChaCha20Rng::seed_from_u64(2)).unwrap();
    let ResponseBody::Evaluate {
        values,
        answer_key,
        signature,
        ..
    } = node
        .evaluate_as(who, query_id, issued, &query, &handles)
        .await
        .1
    else {
        panic!()
    };
    // H(x) = distance + c1·x + … + c4·x^4 with H(1) = node 1's h, and G the same through 0 and
    // node 1's g.
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let [h1, g1] = values[0].unwrap().map(Fp::from);
    let through = |constant: Fp, at_1: Fp, rng: &mut ChaCha20Rng| {
        let mut c: Vec<Fp> = (0..4).map(|_| Fp::random(rng)).collect();
        let rest: Fp = c[1..].iter().copied().sum();
        c[0] = at_1 - constant - rest;
        move |x: u8| {
            let x = Fp::from(u32::from(x));
            c.iter().rev().fold(Fp::ZERO, |acc, &k| acc * x + k) * x + constant
        }
    };
    let h = through(Fp::from(distance), h1, &mut rng);
    let g = through(Fp::ZERO, g1, &mut rng);
    let keys = node_keys(node);
    let mut kept = vec![KeptAnswer {
        node: 1,
        values,
        answer_key,
        signature: signature.try_into().unwrap(),
    }];
    for i in 2..=N as u8 {
        let values = vec![Some([h(i).value(), g(i).value()])];
        let s = matching::sign_answer(
            &keys[usize::from(i) - 1],
            &Answered {
                node: i,
                user: &who.capability().user,
                query_id: &query_id,
                issued,
            },
            0,
            &handles,
            &values,
            &mut rng,
        );
        kept.push(KeptAnswer {
            node: i,
            values,
            answer_key: s.answer_key,
            signature: s.signature,
        });
    }
    assert_eq!((h(1), g(1)), (h1, g1));
    matching::prove(query_id, issued, 0, &handles, &kept, 0)
}

#[tokio::test]
async fn a_querier_fetches_only_what_its_own_query_matched_or_the_owner_granted() {
    let node = TestNode::start("fetch").await;
    let u = stored(&node, "camera.png", 1).await;
    let ana = node.holder("ana", roles::QUERIER);
    let bob = node.holder("bob", roles::QUERIER);
    let forbidden = (403, Some(ErrorCode::Forbidden));
    let by = |by: FetchBy| TestNode::request(NodeBody::Fetch { by });

    // The owner role claimed, a grant for bob, an expired grant, a grant for another image.
    assert_eq!(
        refusal(node.send_as(&ana, &TestNode::request(fetch(u.id))).await),
        forbidden
    );
    let grant =
        |user: &str, image: obscura_sharing::manifest::ImageId, expires_at: u64| FetchBy::Grant {
            image: u.id.0,
            expires_at,
            signature: Order::Grant {
                image,
                user: user_digest(user),
                expires_at,
            }
            .sign(&node.owner)
            .to_vec(),
        };
    let later = now() + 3600;
    assert_eq!(
        refusal(node.send_as(&ana, &by(grant("bob", u.id, later))).await),
        forbidden
    );
    assert_eq!(
        refusal(node.send_as(&ana, &by(grant("ana", u.id, now() - 1))).await),
        forbidden
    );
    let other = obscura_sharing::manifest::ImageId([0x42; 16]);
    assert_eq!(
        refusal(node.send_as(&ana, &by(grant("ana", other, later))).await),
        forbidden
    );
    assert!(matches!(
        node.send_as(&ana, &by(grant("ana", u.id, later))).await,
        (200, ResponseBody::Fetch { .. })
    ));

    // A proof of a match within τ opens the image; beyond τ, for bob's query, with an altered
    // opening, with an opening missing, it does not.
    let near = proof_with_distance(&node, &ana, &u, [1; 16], 3).await;
    assert!(matches!(
        node.send_as(&ana, &by(FetchBy::Match(near.clone()))).await,
        (200, ResponseBody::Fetch { .. })
    ));
    match node
        .send_as(
            &ana,
            &TestNode::request(NodeBody::Resolve {
                proofs: vec![near.clone()],
            }),
        )
        .await
    {
        (200, ResponseBody::Resolved { manifests }) => assert!(manifests[0].is_some()),
        other => panic!("{other:?}"),
    }
    let far = proof_with_distance(&node, &ana, &u, [2; 16], 11).await;
    assert_eq!(
        refusal(node.send_as(&ana, &by(FetchBy::Match(far.clone()))).await),
        forbidden
    );
    assert_eq!(
        refusal(node.send_as(&bob, &by(FetchBy::Match(near.clone()))).await),
        forbidden,
        "ana's proof is not bob's"
    );
    let mut altered = near.clone();
    altered.openings[2].value = altered.openings[2].value.map(|[h, g]| [h ^ 1, g]);
    assert_eq!(
        refusal(node.send_as(&ana, &by(FetchBy::Match(altered))).await),
        forbidden
    );
    let mut short = near.clone();
    short.openings.pop();
    assert_eq!(
        refusal(node.send_as(&ana, &by(FetchBy::Match(short))).await),
        forbidden
    );
    // Resolving the far proof opens nothing.
    match node
        .send_as(
            &ana,
            &TestNode::request(NodeBody::Resolve { proofs: vec![far] }),
        )
        .await
    {
        (200, ResponseBody::Resolved { manifests }) => assert!(manifests[0].is_none()),
        other => panic!("{other:?}"),
    }
    // The fetches are audited with how they were entitled.
    let entries = audit(&node).await;
    // A match fetch's entry names no distance: the log says who fetched what, not how close.
    assert!(!entries
        .iter()
        .any(|e| String::from_utf8_lossy(&e.detail).contains("distance")));
    for how in ["by=grant", "by=match"] {
        assert!(
            entries.iter().any(|e| {
                let d = String::from_utf8_lossy(&e.detail);
                d.contains("user=ana") && d.contains("op=fetch") && d.contains(how)
            }),
            "no fetch {how} audited"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn queries_and_fetches_beyond_the_capabilitys_hourly_limits_are_refused() {
    let node = TestNode::start("rates").await;
    let u = stored(&node, "camera.png", 1).await;
    let few = Limits {
        queries_per_hour: 3,
        fetches_per_hour: 1,
    };
    let ana = mint(&node.keepers, "ana", roles::QUERIER, few);
    for q in 0..3u8 {
        assert_eq!(
            node.send_as(&ana, &TestNode::request(lookup(&u.tokens, [q; 16])))
                .await
                .0,
            200
        );
    }
    let (s, b) = node
        .send_as(&ana, &TestNode::request(lookup(&u.tokens, [9; 16])))
        .await;
    assert_eq!((s, code(&b)), (429, Some(ErrorCode::RateLimited)));
    assert!(
        matches!(&b, ResponseBody::Error { message, .. } if message.contains("limit is 3")),
        "{b:?}"
    );
    // A new capability of the same user does not reset the count: it is per user.
    let again = mint(&node.keepers, "ana", roles::QUERIER, few);
    let (s, _) = node
        .send_as(&again, &TestNode::request(lookup(&u.tokens, [10; 16])))
        .await;
    assert_eq!(s, 429);
    node.stop().await;
}

#[tokio::test]
async fn rotation_steps_need_the_owners_order_for_this_node() {
    let node = TestNode::start("rotation-orders").await;
    let mallory = SigningKey::from_bytes(&[9; 32]);
    let step = |op: RotateOp| TestNode::request(NodeBody::Rotate { op });
    let factor = obscura_keeper::Scalar::from(7u64).to_bytes();
    let begin = Order::Rotate {
        node: 1,
        from: 1,
        to: 2,
        factor,
    };
    assert_eq!(
        node.send(&step(RotateOp::Begin {
            from: 1,
            to: 2,
            factor,
            signature: begin.sign(&node.owner).to_vec(),
        }))
        .await
        .0,
        200
    );
    let rejected = (422, Some(ErrorCode::Rejected));
    for (signer, for_node) in [(&mallory, 1), (&node.owner, 2)] {
        let moving = RotateOp::Move {
            to: 2,
            max_images: 10,
            signature: Order::RotateMove {
                node: for_node,
                to: 2,
            }
            .sign(signer)
            .to_vec(),
        };
        assert_eq!(refusal(node.send(&step(moving)).await), rejected);
        let finish = RotateOp::Finish {
            to: 2,
            signature: Order::RotateFinish {
                node: for_node,
                to: 2,
            }
            .sign(signer)
            .to_vec(),
        };
        assert_eq!(refusal(node.send(&step(finish)).await), rejected);
    }
    // A move order is not a finish order.
    let finish = RotateOp::Finish {
        to: 2,
        signature: Order::RotateMove { node: 1, to: 2 }
            .sign(&node.owner)
            .to_vec(),
    };
    assert_eq!(refusal(node.send(&step(finish)).await), rejected);
    // With the owner's orders, the rotation moves and finishes.
    let moving = RotateOp::Move {
        to: 2,
        max_images: 10,
        signature: Order::RotateMove { node: 1, to: 2 }
            .sign(&node.owner)
            .to_vec(),
    };
    assert!(matches!(
        node.send(&step(moving)).await,
        (200, ResponseBody::Rotation { done: true, .. })
    ));
    let finish = RotateOp::Finish {
        to: 2,
        signature: Order::RotateFinish { node: 1, to: 2 }
            .sign(&node.owner)
            .to_vec(),
    };
    match node.send(&step(finish)).await {
        (200, ResponseBody::Rotation { current, next, .. }) => {
            assert_eq!((current, next), (2, None))
        }
        other => panic!("{other:?}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn a_query_id_is_looked_up_once_so_handles_cannot_be_followed_across_lookups() {
    let node = TestNode::start("lookup-once").await;
    let u = stored(&node, "camera.png", 1).await;
    let ana = node.holder("ana", roles::QUERIER);
    // The first lookup under a query id gets its handles; a second one under the same id, with
    // other tokens (to follow one handle band by band), is refused.
    assert_eq!(handles(&node, &ana, &u.tokens, [7; 16]).await.len(), 1);
    let (s, b) = node
        .send_as(&ana, &TestNode::request(lookup(&u.tokens[..3], [7; 16])))
        .await;
    assert_eq!((s, code(&b)), (409, Some(ErrorCode::Replay)), "{b:?}");
    node.stop().await;
}

/// The attack: one query, the same shares, sent again under the same query id once the node
/// has forgotten the id's admission. With the id alone as the zero-sharing context the masks
/// repeat, and the two answers' difference (here: none) is the difference of unmasked values.
#[tokio::test]
async fn a_query_id_sent_again_after_the_window_gets_fresh_masks() {
    // A one-second window, so that the admissions are forgotten within the test.
    let node = TestNode::start_with("reuse", |c| c.replay_window_s = 1).await;
    let u = stored(&node, "camera.png", 1).await;
    let ana = node.holder("ana", roles::QUERIER);
    let query = share_hash(u.hash ^ 0b101, T, N, &mut ChaCha20Rng::seed_from_u64(3)).unwrap();
    let ask = || async {
        let issued = now();
        let mut req = TestNode::request(lookup(&u.tokens, [8; 16]));
        if let NodeBody::Lookup { issued: i, .. } = &mut req.body {
            *i = issued;
        }
        let ResponseBody::Lookup { handles, .. } = node.send_as(&ana, &req).await.1 else {
            panic!("no handles")
        };
        match node
            .evaluate_as(&ana, [8; 16], issued, &query, &handles)
            .await
        {
            (200, ResponseBody::Evaluate { values, .. }) => values,
            other => panic!("{other:?}"),
        }
    };
    let first = ask().await;
    // Past twice the window: both admissions of the query id are gone.
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    let second = ask().await;
    assert!(first[0].is_some());
    assert_ne!(first, second, "the same masks served twice");
    node.stop().await;
}

/// The attack: keep a query's checks, let the node answer, and send the same `Evaluate` again
/// once the node has restarted (here abruptly, without its clean stop), or check the query
/// again with another candidate list under the same id. Nothing is answered twice under one
/// query id: its admissions were synced before the node answered. A malformed check, on the
/// other hand, does not spend the id.
#[tokio::test]
async fn a_query_id_answered_before_a_restart_is_not_answered_after_it() {
    let mut node = TestNode::start("reuse-restart").await;
    let u = stored(&node, "camera.png", 1).await;
    let v = stored(&node, "coffee.png", 2).await;
    let ana = node.holder("ana", roles::QUERIER);
    let query = share_hash(u.hash ^ 0b11, T, N, &mut ChaCha20Rng::seed_from_u64(4)).unwrap();
    let issued = now();
    let both: Vec<[u8; 16]> = u.tokens.iter().chain(&v.tokens).copied().collect();
    let handles = handles_issued(&node, &ana, &both, [9; 16], issued).await;
    assert_eq!(handles.len(), 2);
    let check = |digests: Vec<[u8; 32]>| {
        TestNode::request(NodeBody::CheckQuery {
            query_id: [9; 16],
            issued,
            query_share: query[0].to_bytes().to_vec(),
            scan: matching::scan_of(&handles),
            share_digests: digests,
        })
    };
    let (_, b) = node.send_as(&ana, &check(vec![[0; 32]; 2])).await;
    assert_eq!(code(&b), Some(ErrorCode::Rejected), "{b:?}");
    let checks = node
        .checks_as(&ana, [9; 16], issued, &query, &handles)
        .await
        .expect("a malformed check left the query id unspent");
    let evaluate = || {
        TestNode::request(NodeBody::Evaluate {
            query_id: [9; 16],
            issued,
            query_share: query[0].to_bytes().to_vec(),
            scan: matching::scan_of(&handles),
            part: 0,
            candidates: handles.clone(),
            share_digests: TestNode::digests(&query),
            checks: checks.clone(),
        })
    };
    let (s, b) = node.send_as(&ana, &evaluate()).await;
    assert_eq!(s, 200, "{b:?}");
    node.restart_abruptly().await;
    let (s, b) = node.send_as(&ana, &evaluate()).await;
    assert_eq!((s, code(&b)), (409, Some(ErrorCode::Replay)), "{b:?}");
    let (s, b) = node
        .evaluate_as(&ana, [9; 16], issued, &query, &handles[..1])
        .await;
    assert_eq!((s, code(&b)), (409, Some(ErrorCode::Replay)), "{b:?}");
    node.stop().await;
}

/// The handles of `who`'s lookup of `tokens` under `query_id` issued at `issued`.
async fn handles_issued(
    node: &TestNode,
    who: &Holder,
    tokens: &[[u8; 16]],
    query_id: [u8; 16],
    issued: u64,
) -> Vec<[u8; 16]> {
    let mut req = TestNode::request(lookup(tokens, query_id));
    if let NodeBody::Lookup { issued: i, .. } = &mut req.body {
        *i = issued;
    }
    match node.send_as(who, &req).await {
        (200, ResponseBody::Lookup { handles, .. }) => handles,
        other => panic!("{other:?}"),
    }
}

/// The finding: shares of `q_j = (1 − 2^j) / 2` on 30 bits (a valid degree-t sharing) open 30
/// stored bits of every candidate in one evaluation. Now every node checks, with the others,
/// that a query is a degree-t sharing of bits before it answers; each way a querier could
/// bend that check is refused too.
#[tokio::test]
async fn a_query_that_is_not_a_sharing_of_bits_gets_no_answer() {
    let node = TestNode::start("bit-check").await;
    let u = stored(&node, "camera.png", 1).await;
    let ana = node.holder("ana", roles::QUERIER);
    let bob = node.holder("bob", roles::QUERIER);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let share_of = |values: &[Fp], degree: usize, rng: &mut ChaCha20Rng| -> Vec<HashShare> {
        obscura_sharing::prime::share_values(values, degree, N, rng)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, v)| HashShare {
                node: i as u8 + 1,
                bits: v.try_into().unwrap(),
            })
            .collect()
    };
    let refused = |(status, body): (u16, ResponseBody), what: &str| {
        assert_eq!(
            (status, code(&body)),
            (422, Some(ErrorCode::Rejected)),
            "{body:?}"
        );
        let ResponseBody::Error { message, .. } = body else {
            unreachable!()
        };
        assert!(message.contains(what), "{message}");
    };

    // The reading query, and a constant 1/2: refused as not bits.
    let half = Fp::from(2u32).inv().unwrap();
    let reading: Vec<Fp> = (0..64)
        .map(|j| {
            if j < 30 {
                (Fp::ONE - Fp::from(2u32).pow(j)) * half
            } else {
                Fp::ZERO
            }
        })
        .collect();
    for (q, values) in [(1u8, reading), (2, vec![half; 64])] {
        let issued = now();
        let handles = handles_issued(&node, &ana, &u.tokens, [q; 16], issued).await;
        let shares = share_of(&values, T, &mut rng);
        refused(
            node.evaluate_as(&ana, [q; 16], issued, &shares, &handles)
                .await,
            "not a sharing of bits",
        );
    }
    // Shares of bits on a polynomial of degree 2t: what isolates one node's stored share.
    let issued = now();
    let handles = handles_issued(&node, &ana, &u.tokens, [3; 16], issued).await;
    let shares = share_of(&[Fp::ONE; 64], 2 * T, &mut rng);
    refused(
        node.evaluate_as(&ana, [3; 16], issued, &shares, &handles)
            .await,
        "not a sharing of degree t",
    );

    // An honest query's checks, bent: a node's check made up, one left out, another user's,
    // or another share than the one node 1 checked.
    let honest = share_hash(u.hash, T, N, &mut rng).unwrap();
    let digests = TestNode::digests(&honest);
    let evaluate = |query_id: [u8; 16],
                    issued: u64,
                    share: &HashShare,
                    handles: &[[u8; 16]],
                    digests: &[[u8; 32]],
                    checks: Vec<obscura_proto::WireCheck>| {
        TestNode::request(NodeBody::Evaluate {
            query_id,
            issued,
            query_share: share.to_bytes().to_vec(),
            scan: matching::scan_of(handles),
            part: 0,
            candidates: handles.to_vec(),
            share_digests: digests.to_vec(),
            checks,
        })
    };
    let issued = now();
    let handles = handles_issued(&node, &ana, &u.tokens, [4; 16], issued).await;
    let checks = node
        .checks_as(&ana, [4; 16], issued, &honest, &handles)
        .await
        .unwrap();
    let mut forged = checks.clone();
    forged[2].bits[0] = 0;
    refused(
        node.send_as(
            &ana,
            &evaluate([4; 16], issued, &honest[0], &handles, &digests, forged),
        )
        .await,
        "node 3's check is not its own",
    );
    refused(
        node.send_as(
            &ana,
            &evaluate(
                [4; 16],
                issued,
                &honest[0],
                &handles,
                &digests,
                checks[..4].to_vec(),
            ),
        )
        .await,
        "node 5 missing",
    );
    // Another share than the committed one; or another share with a commitment to match, under
    // which no node's check was made.
    let mut other = honest.clone();
    other[0].bits[0] += Fp::ONE;
    refused(
        node.send_as(
            &ana,
            &evaluate(
                [4; 16],
                issued,
                &other[0],
                &handles,
                &digests,
                checks.clone(),
            ),
        )
        .await,
        "not the one the querier committed to",
    );
    refused(
        node.send_as(
            &ana,
            &evaluate(
                [4; 16],
                issued,
                &other[0],
                &handles,
                &TestNode::digests(&other),
                checks.clone(),
            ),
        )
        .await,
        "is not its own",
    );
    refused(
        node.send_as(
            &bob,
            &evaluate(
                [4; 16],
                issued,
                &honest[0],
                &handles,
                &digests,
                checks.clone(),
            ),
        )
        .await,
        "is not its own",
    );
    // The checks as they came: the first round is opened.
    let (status, body) = node
        .send_as(
            &ana,
            &evaluate([4; 16], issued, &honest[0], &handles, &digests, checks),
        )
        .await;
    assert!(
        matches!(&body, ResponseBody::Opened { opened } if opened.values[0].is_some()),
        "{status} {body:?}"
    );
    // A first round whose commitment names another share for this node is refused too.
    let issued = now();
    let handles = handles_issued(&node, &ana, &u.tokens, [5; 16], issued).await;
    let (status, body) = node
        .send_as(
            &ana,
            &TestNode::request(NodeBody::CheckQuery {
                query_id: [5; 16],
                issued,
                query_share: other[0].to_bytes().to_vec(),
                scan: matching::scan_of(&handles),
                share_digests: digests.clone(),
            }),
        )
        .await;
    refused((status, body), "not the one the querier committed to");
    // Every refusal is in the log with the user.
    let entries = audit(&node).await;
    let refusals = entries
        .iter()
        .filter(|e| {
            let d = String::from_utf8_lossy(&e.detail);
            e.kind == obscura_store::AuditKind::Refused.tag()
                && (d.contains("op=evaluate") || d.contains("op=check-query"))
                && d.contains("refused=Rejected")
        })
        .count();
    assert_eq!(refusals, 9);
    node.stop().await;
}

#[tokio::test]
async fn refused_requests_count_against_the_hourly_limit_so_they_cannot_flood_the_log() {
    let node = TestNode::start("refusal-flood").await;
    let few = Limits {
        queries_per_hour: 5,
        fetches_per_hour: 5,
    };
    let mallory = mint(&node.keepers, "mallory", roles::QUERIER, few);
    let before = audit(&node).await.len();
    let mut refused = 0;
    for _ in 0..40 {
        // A querier may not sign the log's head: each try is refused, and counted.
        match node
            .send_as(&mallory, &TestNode::request(NodeBody::Checkpoint))
            .await
        {
            (403, _) => refused += 1,
            (429, _) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 5, "only the hour's allowance reached the log");
    let after = audit(&node).await.len();
    assert!(after - before <= 5 + 1, "{} new entries", after - before);

    // The same with one signed request sent again and again, and with stale ones: a replay is
    // counted like any other request, so it cannot write entries beyond the allowance either.
    let rory = mint(&node.keepers, "rory", roles::QUERIER, few);
    let before = audit(&node).await.len();
    let once = TestNode::request(NodeBody::Status);
    let mut stale = TestNode::request(NodeBody::Status);
    stale.timestamp = 1;
    let mut answered = Vec::new();
    for i in 0..40 {
        let req = if i % 2 == 0 { &once } else { &stale };
        match node.send_as(&rory, req).await {
            (429, _) => {}
            (status, _) => answered.push(status),
        }
    }
    assert_eq!(answered.len(), 5, "{answered:?}");
    assert_eq!(answered[0], 200);
    assert!(answered[1..].iter().all(|s| *s != 200), "{answered:?}");
    let after = audit(&node).await.len();
    assert!(after - before <= 5 + 1, "{} new entries", after - before);
    node.stop().await;
}

/// Start `who`'s Stage-2 of `query` at node 1 over handles of query id `q`: node 1's first
/// openings, with nodes 2–5 played here.
async fn started_search(
    node: &TestNode,
    who: &Holder,
    u: &Upload,
    q: u8,
    query: &[HashShare],
) -> (u64, Vec<[u8; 16]>, obscura_proto::WireOpened) {
    let issued = now();
    let handles = handles_issued(node, who, &u.tokens, [q; 16], issued).await;
    let checks = node
        .checks_as(who, [q; 16], issued, query, &handles)
        .await
        .unwrap();
    let req = TestNode::request(NodeBody::Evaluate {
        query_id: [q; 16],
        issued,
        query_share: query[0].to_bytes().to_vec(),
        scan: matching::scan_of(&handles),
        part: 0,
        candidates: handles.clone(),
        share_digests: TestNode::digests(query),
        checks,
    });
    match node.send_as(who, &req).await {
        (200, ResponseBody::Opened { opened }) => (issued, handles, opened),
        other => panic!("{other:?}"),
    }
}

/// The querier carries every round's openings from node to node. Were it able to hand a node
/// openings other than those the nodes gave, it would choose what that node multiplies and
/// learn from the answer (a shifted share of the random factor unmasks a candidate beyond τ).
/// So each opening is signed by its node for this user, query, round and τ, and a node checks
/// every one: a changed value, another query's opening, a round out of order, another user's
/// relay, or a relay after the search ended is refused, and a refused relay spends nothing.
#[tokio::test]
async fn a_relay_the_querier_bent_gets_no_answer() {
    let node = TestNode::start("relay").await;
    let u = stored(&node, "camera.png", 1).await;
    let ana = node.holder("ana", roles::QUERIER);
    let bob = node.holder("bob", roles::QUERIER);
    let query = share_hash(u.hash ^ 0b111, T, N, &mut ChaCha20Rng::seed_from_u64(21)).unwrap();
    let (issued, handles, first) = started_search(&node, &ana, &u, 31, &query).await;
    let played: Vec<_> = (2..=N as u8)
        .map(|i| {
            node.played_node(
                i,
                "ana",
                &[31; 16],
                issued,
                &query[usize::from(i) - 1],
                &handles,
            )
            .3
        })
        .collect();
    let honest: Vec<obscura_proto::WireOpened> =
        std::iter::once(first.clone()).chain(played).collect();
    let relay = |round: u8, openings: Vec<obscura_proto::WireOpened>| {
        TestNode::request(NodeBody::Reduce {
            query_id: [31; 16],
            issued,
            part: 0,
            round,
            openings,
        })
    };
    let refused = |answer: (u16, ResponseBody), what: &str| {
        assert_eq!(
            refusal(answer.clone()).1,
            Some(ErrorCode::Rejected),
            "{answer:?}"
        );
        let ResponseBody::Error { message, .. } = answer.1 else {
            unreachable!()
        };
        assert!(message.contains(what), "{message}");
    };

    // Node 3's opening with one value shifted.
    let mut bent = honest.clone();
    bent[2].values[0] = bent[2].values[0].map(|v| (v + 1) % 0x7fff_ffff);
    refused(
        node.send_as(&ana, &relay(0, bent)).await,
        "node 3's opening is not its own",
    );
    // Node 2's opening of another query by ana.
    let other = share_hash(u.hash, T, N, &mut ChaCha20Rng::seed_from_u64(22)).unwrap();
    let elsewhere = node
        .played_node(2, "ana", &[32; 16], issued, &other[1], &handles)
        .3;
    let mut bent = honest.clone();
    bent[1] = elsewhere;
    refused(
        node.send_as(&ana, &relay(0, bent)).await,
        "node 2's opening is not its own",
    );
    // The right openings, named as another round.
    refused(
        node.send_as(&ana, &relay(1, honest.clone())).await,
        "waits for round 0",
    );
    // Fewer than 2t + 1 nodes' openings.
    let (s, b) = node.send_as(&ana, &relay(0, honest[..4].to_vec())).await;
    assert_eq!((s, code(&b)), (400, Some(ErrorCode::BadRequest)), "{b:?}");
    // Bob relays ana's search: he has none in progress.
    refused(
        node.send_as(&bob, &relay(0, honest.clone())).await,
        "no search",
    );

    // None of that spent the search: the honest relay completes it.
    let (s, b) = node
        .rounds_as(&ana, [31; 16], issued, &query, &handles, first)
        .await;
    assert!(matches!(b, ResponseBody::Evaluate { .. }), "{s} {b:?}");
    // And once answered, the search is over.
    refused(node.send_as(&ana, &relay(0, honest)).await, "no search");

    // A search that keeps getting bent relays is dropped after 8 of them.
    let (issued, handles, first) = started_search(&node, &ana, &u, 33, &query).await;
    let played: Vec<_> = (2..=N as u8)
        .map(|i| {
            node.played_node(
                i,
                "ana",
                &[33; 16],
                issued,
                &query[usize::from(i) - 1],
                &handles,
            )
            .3
        })
        .collect();
    let honest: Vec<obscura_proto::WireOpened> = std::iter::once(first).chain(played).collect();
    let relay = |round: u8, openings: Vec<obscura_proto::WireOpened>| {
        TestNode::request(NodeBody::Reduce {
            query_id: [33; 16],
            issued,
            part: 0,
            round,
            openings,
        })
    };
    for _ in 0..8 {
        refused(
            node.send_as(&ana, &relay(1, honest.clone())).await,
            "waits for round 0",
        );
    }
    refused(node.send_as(&ana, &relay(0, honest)).await, "no search");
    node.stop().await;
}

/// A node keeps a search between rounds; a querier who starts searches and never finishes them
/// could fill its memory. Each user has at most 8 in progress at a node.
#[tokio::test]
async fn searches_left_in_progress_are_bounded_per_user() {
    let node = TestNode::start("live-searches").await;
    let u = stored(&node, "camera.png", 1).await;
    let ana = node.holder("ana", roles::QUERIER);
    let bob = node.holder("bob", roles::QUERIER);
    let query = share_hash(u.hash, T, N, &mut ChaCha20Rng::seed_from_u64(23)).unwrap();
    let mut searches = Vec::new();
    for q in 40..48 {
        searches.push(started_search(&node, &ana, &u, q, &query).await);
    }
    let issued = now();
    let handles = handles_issued(&node, &ana, &u.tokens, [48; 16], issued).await;
    let checks = node
        .checks_as(&ana, [48; 16], issued, &query, &handles)
        .await
        .unwrap();
    let ninth = TestNode::request(NodeBody::Evaluate {
        query_id: [48; 16],
        issued,
        query_share: query[0].to_bytes().to_vec(),
        scan: matching::scan_of(&handles),
        part: 0,
        candidates: handles.clone(),
        share_digests: TestNode::digests(&query),
        checks,
    });
    let (s, b) = node.send_as(&ana, &ninth).await;
    assert_eq!((s, code(&b)), (429, Some(ErrorCode::RateLimited)), "{b:?}");
    // Once one of them ends, the ninth goes through: the refusal did not spend its part.
    let (issued40, handles40, first) = searches.swap_remove(0);
    let (s, b) = node
        .rounds_as(&ana, [40; 16], issued40, &query, &handles40, first)
        .await;
    assert!(matches!(b, ResponseBody::Evaluate { .. }), "{s} {b:?}");
    let mut again = ninth.clone();
    again.request_id = [0x99; 16];
    let (s, b) = node.send_as(&ana, &again).await;
    assert!(matches!(b, ResponseBody::Opened { .. }), "{s} {b:?}");
    // Another user is not held up by ana's.
    let (s, b) = {
        let issued = now();
        let handles = handles_issued(&node, &bob, &u.tokens, [49; 16], issued).await;
        node.evaluate_as(&bob, [49; 16], issued, &query, &handles)
            .await
    };
    assert!(matches!(b, ResponseBody::Evaluate { .. }), "{s} {b:?}");
    node.stop().await;
}

/// A relay of a search's rounds costs nothing of the user's hourly limit when it goes through
/// (the search was charged for its lookup, check and evaluation), but a refused one counts like
/// any other request, each an audit entry; past the limit a refused relay is refused unaudited:
/// garbage relays cannot grow the audit log without end.
#[tokio::test]
async fn refused_relays_count_against_the_hourly_limit_and_good_ones_do_not() {
    let node = TestNode::start("relay-limits").await;
    let u = stored(&node, "camera.png", 1).await;
    // A lookup, a check and an evaluation: 3; two refused relays: 5.
    let five = Limits {
        queries_per_hour: 5,
        fetches_per_hour: 1,
    };
    let ana = mint(&node.keepers, "ana", roles::QUERIER, five);
    let query = share_hash(u.hash, T, N, &mut ChaCha20Rng::seed_from_u64(24)).unwrap();
    let (issued, handles, opened) = started_search(&node, &ana, &u, 50, &query).await;
    let garbage = || {
        TestNode::request(NodeBody::Reduce {
            query_id: [51; 16],
            issued,
            part: 0,
            round: 0,
            openings: vec![],
        })
    };
    // A relay for no search, then a stale one: refused, and counted.
    let first = garbage();
    let (s, b) = node.send_as(&ana, &first).await;
    assert_eq!((s, code(&b)), (422, Some(ErrorCode::Rejected)), "{b:?}");
    let mut stale = garbage();
    stale.timestamp -= 1000;
    let (s, b) = node.send_as(&ana, &stale).await;
    assert_eq!((s, code(&b)), (403, Some(ErrorCode::Stale)), "{b:?}");
    // Past the limit: the first one replayed, and more garbage, refused unaudited.
    let (s, b) = node.send_as(&ana, &first).await;
    assert_eq!((s, code(&b)), (429, Some(ErrorCode::RateLimited)), "{b:?}");
    for _ in 0..3 {
        let (s, b) = node.send_as(&ana, &garbage()).await;
        assert_eq!((s, code(&b)), (429, Some(ErrorCode::RateLimited)), "{b:?}");
    }
    // Two refusals audited, not six.
    let relays = audit(&node)
        .await
        .iter()
        .filter(|e| String::from_utf8_lossy(&e.detail).contains("op=reduce"))
        .count();
    assert_eq!(relays, 2);
    // The good relays of the search in progress still go through at the limit.
    let (s, b) = node
        .rounds_as(&ana, [50; 16], issued, &query, &handles, opened)
        .await;
    assert!(matches!(b, ResponseBody::Evaluate { .. }), "{s} {b:?}");
    node.stop().await;
}

/// A query's candidates are evaluated in parts of at most 16,384 under one check, each part
/// once and with masks of its own (its context holds the part's number and handles): a part
/// beyond the list or not as long as its place in it, a list of one part other than the one
/// checked, a list longer than the wire or the policy allows, a part sent again (even with
/// other handles) and one part's openings relayed as another's (even one with the same
/// handles) are refused.
#[tokio::test]
async fn a_scan_in_parts_takes_each_part_once_and_only_as_a_part_of_its_list() {
    let node = TestNode::start_with("parts", |c| c.policy.max_exhaustive = Some(40_000)).await;
    let u = stored(&node, "camera.png", 1).await;
    let v = stored(&node, "coffee.png", 2).await;
    let ana = node.holder("ana", roles::QUERIER);
    let query = share_hash(u.hash ^ 1, T, N, &mut ChaCha20Rng::seed_from_u64(26)).unwrap();
    let both: Vec<[u8; 16]> = u.tokens.iter().chain(&v.tokens).copied().collect();
    let evaluate = |id: u8,
                    issued: u64,
                    scan: ScanOf,
                    part: u32,
                    candidates: Vec<[u8; 16]>,
                    checks: &[obscura_proto::WireCheck]| {
        TestNode::request(NodeBody::Evaluate {
            query_id: [id; 16],
            issued,
            query_share: query[0].to_bytes().to_vec(),
            scan,
            part,
            candidates,
            share_digests: TestNode::digests(&query),
            checks: checks.to_vec(),
        })
    };
    let refused = |(s, b): (u16, ResponseBody), what: &str| {
        assert_eq!((s, code(&b)), (400, Some(ErrorCode::BadRequest)), "{b:?}");
        assert!(format!("{b:?}").contains(what), "{what}: {b:?}");
    };

    // A list of one part.
    let issued = now();
    let handles = handles_issued(&node, &ana, &both, [70; 16], issued).await;
    assert_eq!(handles.len(), 2);
    let checks = node
        .checks_as(&ana, [70; 16], issued, &query, &handles)
        .await
        .unwrap();
    let one = |scan, part, candidates| evaluate(70, issued, scan, part, candidates, &checks);
    let scan = matching::scan_of(&handles);
    refused(
        node.send_as(&ana, &one(scan, 1, handles.clone())).await,
        "part 1 of a list of 2 candidates holds 0",
    );
    refused(
        node.send_as(&ana, &one(scan, 0, handles[..1].to_vec()))
            .await,
        "part 0 of a list of 2 candidates holds 2, not 1",
    );
    // It must be the list checked: the same handles in another order are another list.
    refused(
        node.send_as(&ana, &one(scan, 0, vec![handles[1], handles[0]]))
            .await,
        "not the list the query was checked with",
    );
    // A list longer than the wire takes, or than this node's policy.
    let beyond = ScanOf {
        count: obscura_proto::limits::MAX_SCAN as u32 + 1,
        digest: scan.digest,
    };
    refused(
        node.send_as(&ana, &one(beyond, 1, handles.clone())).await,
        "field scan",
    );
    let beyond = ScanOf {
        count: 40_001,
        digest: scan.digest,
    };
    refused(
        node.send_as(&ana, &one(beyond, 1, handles.clone())).await,
        "at most 40000 candidates",
    );
    let (s, b) = node.send_as(&ana, &one(scan, 0, handles.clone())).await;
    assert_eq!(s, 200, "{b:?}");
    let (s, b) = node.send_as(&ana, &one(scan, 0, handles.clone())).await;
    assert_eq!((s, code(&b)), (409, Some(ErrorCode::Replay)), "{b:?}");

    // A list of three parts: twice the same 16,384 handles, then the two of this query.
    let issued = now();
    let handles = handles_issued(&node, &ana, &both, [71; 16], issued).await;
    let per = obscura_proto::limits::MAX_CANDIDATES;
    let scan = ScanOf {
        count: (2 * per + 2) as u32,
        digest: [7; 32],
    };
    let checks = node
        .checks_of_scan(&ana, [71; 16], issued, &query, scan)
        .await
        .unwrap();
    let three = |part, candidates| evaluate(71, issued, scan, part, candidates, &checks);
    let filler = filler_handles(per);
    let first_of = |answer: (u16, ResponseBody)| match answer {
        (200, ResponseBody::Opened { opened }) => opened,
        other => panic!("{other:?}"),
    };
    let part0 = first_of(node.send_as(&ana, &three(0, filler.clone())).await);
    assert_eq!(part0.values.len(), per, "every handle of part 0 at width 1");
    let part1 = first_of(node.send_as(&ana, &three(1, filler.clone())).await);
    let part2 = first_of(node.send_as(&ana, &three(2, handles.clone())).await);
    assert_eq!(part2.values.len(), 2);
    // Each part once, whatever handles it comes with.
    let (s, b) = node
        .send_as(&ana, &three(2, vec![handles[1], handles[0]]))
        .await;
    assert_eq!((s, code(&b)), (409, Some(ErrorCode::Replay)), "{b:?}");
    // Part 1's round-0 openings, every node's (nodes 2–6 played here). Parts 0 and 1 hold the
    // same handles: only the part's number keeps their masks, and so their openings, apart.
    let openings: Vec<obscura_proto::WireOpened> = std::iter::once(part1)
        .chain((2..=N as u8).map(|i| {
            node.played_part(
                i,
                "ana",
                &[71; 16],
                issued,
                &query[usize::from(i) - 1],
                (&scan, 1, &filler),
            )
            .3
        }))
        .collect();
    let relay = |part| {
        TestNode::request(NodeBody::Reduce {
            query_id: [71; 16],
            issued,
            part,
            round: 0,
            openings: openings.clone(),
        })
    };
    let (s, b) = node.send_as(&ana, &relay(0)).await;
    assert_eq!((s, code(&b)), (422, Some(ErrorCode::Rejected)), "{b:?}");
    assert!(format!("{b:?}").contains("is not its own"), "{b:?}");
    let (s, b) = node.send_as(&ana, &relay(1)).await;
    assert!(
        s == 200 && matches!(b, ResponseBody::Opened { ref opened } if opened.round == 1),
        "{s} {b:?}"
    );
    node.stop().await;
}

/// `count` made-up handles: each opens, under any query, to an id no node holds (but by a
/// 2^-128 chance).
fn filler_handles(count: usize) -> Vec<[u8; 16]> {
    (0..count as u32)
        .map(|i| {
            let mut h = [0xee; 16];
            h[..4].copy_from_slice(&i.to_be_bytes());
            h
        })
        .collect()
}

/// An exhaustive list costs a query for every part it makes (16,384 images), charged before
/// the node reads its images or spends the query id: at a node holding 16,385 images a user
/// with one query left is refused, and the id stays unspent for another.
#[tokio::test]
async fn a_list_is_charged_for_every_part_it_makes() {
    let mut node = TestNode::start("list-charge").await;
    node.fill_store(obscura_proto::limits::MAX_CANDIDATES + 1)
        .await;
    let one = Limits {
        queries_per_hour: 1,
        fetches_per_hour: 1,
    };
    let ana = mint(&node.keepers, "ana", roles::QUERIER, one);
    let bob = node.holder("bob", roles::QUERIER);
    let list = TestNode::request(NodeBody::List {
        query: [81; 16],
        issued: now(),
    });
    let (s, b) = node.send_as(&ana, &list).await;
    assert_eq!((s, code(&b)), (429, Some(ErrorCode::RateLimited)), "{b:?}");
    let mut again = list.clone();
    again.request_id = [0x81; 16];
    match node.send_as(&bob, &again).await {
        (200, ResponseBody::Listed { handles }) => {
            assert_eq!(handles.len(), obscura_proto::limits::MAX_CANDIDATES + 1)
        }
        other => panic!("{other:?}"),
    }
    node.stop().await;
}

/// A part costs a query for every `max_candidates` (1,024) candidates it holds, charged before
/// it is spent: 16,384 handles are 16 lookups' worth of work, whatever the node holds.
#[tokio::test]
async fn a_part_is_charged_for_its_size() {
    let node = TestNode::start("part-charge").await;
    let u = stored(&node, "camera.png", 1).await;
    let ten = Limits {
        queries_per_hour: 10,
        fetches_per_hour: 1,
    };
    let ana = mint(&node.keepers, "ana", roles::QUERIER, ten);
    let query = share_hash(u.hash, T, N, &mut ChaCha20Rng::seed_from_u64(27)).unwrap();
    let issued = now();
    let handles = handles_issued(&node, &ana, &u.tokens, [72; 16], issued).await;
    let per = obscura_proto::limits::MAX_CANDIDATES;
    let scan = ScanOf {
        count: (per + handles.len()) as u32,
        digest: [8; 32],
    };
    // A lookup and a check: 2 of 10.
    let checks = node
        .checks_of_scan(&ana, [72; 16], issued, &query, scan)
        .await
        .unwrap();
    let evaluate = |part, candidates| {
        TestNode::request(NodeBody::Evaluate {
            query_id: [72; 16],
            issued,
            query_share: query[0].to_bytes().to_vec(),
            scan,
            part,
            candidates,
            share_digests: TestNode::digests(&query),
            checks: checks.clone(),
        })
    };
    let filler = filler_handles(per);
    let (s, b) = node.send_as(&ana, &evaluate(0, filler)).await;
    assert_eq!((s, code(&b)), (429, Some(ErrorCode::RateLimited)), "{b:?}");
    // The small part costs one.
    let (s, b) = node.send_as(&ana, &evaluate(1, handles)).await;
    assert!(matches!(b, ResponseBody::Opened { .. }), "{s} {b:?}");
    node.stop().await;
}

/// An exhaustive search's candidates: every committed image once, as handles of the caller's
/// query (pending ones left out), so that Stage-2 scans them all and the node sees no token of
/// the query. The list spends the query id as a lookup does (no second list, no lookup, to
/// link handles across), and a node holding more images than its policy's `max_exhaustive`
/// refuses it.
#[tokio::test]
async fn an_exhaustive_list_hands_out_every_image_once_per_query_id() {
    let node = TestNode::start_with("list", |c| c.policy.max_exhaustive = Some(2048)).await;
    let u = stored(&node, "camera.png", 1).await;
    let v = stored(&node, "coffee.png", 2).await;
    let pending = upload(&node.owner, "rocket.jpg", 3);
    assert_eq!(
        node.send(&TestNode::request(prepare(&pending))).await.0,
        200
    );
    let ana = node.holder("ana", roles::QUERIER);
    let issued = now();
    let list = |q: u8| {
        TestNode::request(NodeBody::List {
            query: [q; 16],
            issued,
        })
    };
    let handles = match node.send_as(&ana, &list(60)).await {
        (200, ResponseBody::Listed { handles }) => handles,
        other => panic!("{other:?}"),
    };
    let keys = obscura_auth::handle::HandleKey::from_bytes(node.secrets_of(1).handle_key)
        .for_query("ana", &[60; 16], issued);
    let mut opened: Vec<[u8; 16]> = handles.iter().map(|h| keys.open(h)).collect();
    opened.sort();
    let mut want = vec![u.id.0, v.id.0];
    want.sort();
    assert_eq!(
        opened, want,
        "every committed image, the pending one left out"
    );
    assert!(handles.windows(2).all(|w| w[0] < w[1]), "sorted");
    // The query id is spent: no second list and no lookup under it.
    let (s, b) = node.send_as(&ana, &list(60)).await;
    assert_eq!((s, code(&b)), (409, Some(ErrorCode::Replay)), "{b:?}");
    let mut lookup_same = TestNode::request(lookup(&u.tokens, [60; 16]));
    if let NodeBody::Lookup { issued: i, .. } = &mut lookup_same.body {
        *i = issued;
    }
    let (s, b) = node.send_as(&ana, &lookup_same).await;
    assert_eq!((s, code(&b)), (409, Some(ErrorCode::Replay)), "{b:?}");
    // Stage-2 over the whole list: the near image wins, the other is only counted.
    let query = share_hash(u.hash ^ 0b11, T, N, &mut ChaCha20Rng::seed_from_u64(25)).unwrap();
    let issued2 = now();
    let (_, b) = node
        .send_as(
            &ana,
            &TestNode::request(NodeBody::List {
                query: [61; 16],
                issued: issued2,
            }),
        )
        .await;
    let ResponseBody::Listed { handles } = b else {
        panic!("{b:?}")
    };
    let (s, b) = node
        .evaluate_as(&ana, [61; 16], issued2, &query, &handles)
        .await;
    assert!(
        matches!(&b, ResponseBody::Evaluate { values, .. } if values.len() == 2),
        "{s} {b:?}"
    );
    node.stop().await;

    // A node over its limit refuses, saying why.
    let small = TestNode::start_with("list-small", |c| {
        c.policy.max_candidates = 1;
        c.policy.max_exhaustive = Some(1);
    })
    .await;
    stored(&small, "camera.png", 1).await;
    stored(&small, "coffee.png", 2).await;
    let ana = small.holder("ana", roles::QUERIER);
    let (s, b) = small
        .send_as(
            &ana,
            &TestNode::request(NodeBody::List {
                query: [62; 16],
                issued: now(),
            }),
        )
        .await;
    assert_eq!((s, code(&b)), (400, Some(ErrorCode::BadRequest)), "{b:?}");
    assert!(
        matches!(&b, ResponseBody::Error { message, .. } if message.contains("more than 1 images")),
        "{b:?}"
    );
    small.stop().await;
}
