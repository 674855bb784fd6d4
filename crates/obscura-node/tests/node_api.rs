//! The node API over real TLS on loopback: two-phase indexing, Stage-1 and Stage-2, fetch,
//! audit; and every refusal a hostile or confused client can provoke.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use obscura_auth::matching;
use obscura_mpc::share_hash;
use obscura_proto::{ErrorCode, NodeBody, ResponseBody, RotateOp};
use obscura_sharing::manifest::{ImageId, ShareRole, SignedManifest};
use obscura_sharing::order::Order;
use obscura_store::audit::verify;
use obscura_store::AuditEntry;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[tokio::test]
async fn index_search_fetch_and_audit() {
    let node = TestNode::start("flow").await;
    let u = upload(&node.owner, "camera.png", 1);
    assert_eq!(
        node.send(&TestNode::request(prepare(&u))).await,
        (200, ResponseBody::Ok)
    );

    // Pending: Stage-1 does not see it. (A node answers one lookup per query id.)
    let query_id = [3; 16];
    match node
        .send(&TestNode::request(lookup(&u.tokens, [2; 16])))
        .await
    {
        (200, ResponseBody::Lookup { handles, matched }) => {
            assert!(handles.is_empty() && matched == 0)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        node.send(&TestNode::request(commit(&[u.id]))).await,
        (200, ResponseBody::Ok)
    );
    // Committed: one candidate, as a handle of this query, never its id.
    let lookup_req = TestNode::request(lookup(&u.tokens, query_id));
    let issued = match &lookup_req.body {
        NodeBody::Lookup { issued, .. } => *issued,
        _ => unreachable!(),
    };
    let handle = match node.send(&lookup_req).await {
        (200, ResponseBody::Lookup { handles, matched }) => {
            assert_eq!((handles.len(), matched), (1, 1));
            assert_ne!(handles[0], u.id.0);
            handles[0]
        }
        other => panic!("{other:?}"),
    };

    // Stage-2: a value for the committed image, none for an unknown handle.
    let query = share_hash(u.hash ^ 1, T, N, &mut ChaCha20Rng::seed_from_u64(9)).unwrap();
    let candidates = [handle, [0xee; 16]];
    let checks = node
        .checks_as(&node.tester, query_id, issued, &query, &candidates)
        .await
        .unwrap();
    let eval = NodeBody::Evaluate {
        query_id,
        issued,
        query_share: query[0].to_bytes().to_vec(),
        scan: matching::scan_of(&candidates),
        part: 0,
        candidates: candidates.to_vec(),
        share_digests: TestNode::digests(&query),
        checks,
    };
    let first = match node.send(&TestNode::request(eval.clone())).await {
        (200, ResponseBody::Opened { opened }) => {
            let width = opened.values.len() / 2;
            assert_eq!((opened.node, opened.round, width), (1, 0, 1));
            assert!(opened.values[0].is_some() && opened.values[1].is_none());
            opened
        }
        other => panic!("{other:?}"),
    };
    match node
        .rounds_as(&node.tester, query_id, issued, &query, &candidates, first)
        .await
    {
        (
            200,
            ResponseBody::Evaluate {
                node: 1, values, ..
            },
        ) => {
            assert!(values[0].is_some() && values[1].is_none());
        }
        other => panic!("{other:?}"),
    }
    // The same query id again, under a fresh request id: the zero-sharing context would repeat.
    let (status, body) = node.send(&TestNode::request(eval)).await;
    assert_eq!((status, code(&body)), (409, Some(ErrorCode::Replay)));
    // Nor is the query checked twice (under other shares, that would tell the querier how the
    // check's coefficients act).
    let (status, body) = node
        .evaluate_as(&node.tester, query_id, issued, &query, &candidates)
        .await;
    assert_eq!(
        (status, code(&body)),
        (409, Some(ErrorCode::Replay)),
        "{body:?}"
    );

    // Fetch returns a share that verifies against the owner-signed manifest.
    match node.send(&TestNode::request(fetch(u.id))).await {
        (
            200,
            ResponseBody::Fetch {
                manifest,
                image_share,
            },
        ) => {
            let m = SignedManifest::from_bytes(&manifest)
                .unwrap()
                .verify(&node.owner.verifying_key())
                .unwrap();
            m.check_share(1, ShareRole::Image, &image_share).unwrap();
        }
        other => panic!("{other:?}"),
    }

    // The audit log verifies under the node's key and, once signed, ends in a checkpoint. Every
    // request is in it with its user.
    assert!(matches!(
        node.send(&TestNode::request(NodeBody::Checkpoint)).await,
        (200, ResponseBody::Checkpointed { .. })
    ));
    let entries: Vec<AuditEntry> = audit(&node)
        .await
        .into_iter()
        .map(|e| AuditEntry {
            seq: e.seq,
            prev: e.prev,
            hash: e.hash,
            time: e.time,
            kind: obscura_store::AuditKind::from_tag(e.kind).unwrap(),
            subject: e.subject,
            detail: e.detail,
        })
        .collect();
    let report = verify(&entries, &node.audit_key.verifying_key()).unwrap();
    assert_eq!(
        report.unsigned_tail, 1,
        "the audit read after the checkpoint"
    );
    assert!(report.entries >= 6, "{report:?}");
    for op in [
        "prepare",
        "commit",
        "lookup",
        "evaluate",
        "fetch",
        "checkpoint",
    ] {
        assert!(
            entries.iter().any(|e| {
                let d = String::from_utf8_lossy(&e.detail);
                d.contains("user=tester") && d.contains(&format!("op={op}"))
            }),
            "no audit entry names the tester's {op}"
        );
    }

    // The log is read in pages no larger than asked, with its length; reading signs nothing
    // (before, every read signed, synced and returned the whole log).
    let checkpoints = |entries: &[obscura_proto::WireAuditEntry]| {
        entries
            .iter()
            .filter(|e| e.kind == obscura_store::AuditKind::Checkpoint.tag())
            .count()
    };
    let before = checkpoints(&audit(&node).await);
    for from in 0..5 {
        match node
            .send(&TestNode::request(NodeBody::Audit { from, max: 2 }))
            .await
        {
            (200, ResponseBody::Audit { entries, total }) => {
                assert_eq!(entries.len(), 2);
                assert_eq!(entries[0].seq, from);
                assert!(total > from + 2);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(checkpoints(&audit(&node).await), before);

    // Delete needs the owner's order, made no earlier than the stored copy; then it is gone.
    let mallory = SigningKey::from_bytes(&[9; 32]);
    for (signer, issued_at) in [(&mallory, CREATED_AT), (&node.owner, CREATED_AT - 1)] {
        let (status, body) = node
            .send(&TestNode::request(delete(signer, u.id, issued_at)))
            .await;
        assert_eq!((status, code(&body)), (422, Some(ErrorCode::Rejected)));
        assert!(matches!(
            node.send(&TestNode::request(fetch(u.id))).await,
            (200, ResponseBody::Fetch { .. })
        ));
    }
    let mut moved = delete(&node.owner, u.id, CREATED_AT);
    if let NodeBody::Delete { image, .. } = &mut moved {
        image[0] ^= 1; // the owner's order for another image
    }
    let (status, body) = node.send(&TestNode::request(moved)).await;
    assert_eq!((status, code(&body)), (422, Some(ErrorCode::Rejected)));
    let del = delete(&node.owner, u.id, CREATED_AT);
    assert_eq!(
        node.send(&TestNode::request(del.clone())).await,
        (200, ResponseBody::Ok)
    );
    let (status, body) = node.send(&TestNode::request(del)).await;
    assert_eq!((status, code(&body)), (404, Some(ErrorCode::UnknownImage)));
    node.stop().await;
}

/// The owner's signed order to delete `image`.
fn delete(owner: &SigningKey, image: ImageId, issued_at: u64) -> NodeBody {
    NodeBody::Delete {
        image: image.0,
        issued_at,
        signature: Order::Delete { image, issued_at }.sign(owner).to_vec(),
    }
}

#[tokio::test]
async fn replayed_stale_and_malformed_requests_are_refused() {
    let node = TestNode::start("refusals").await;
    let status = TestNode::request(NodeBody::Status);
    assert_eq!(node.send(&status).await.0, 200);
    let (s, b) = node.send(&status).await;
    assert_eq!((s, code(&b)), (409, Some(ErrorCode::Replay)));

    let mut stale = TestNode::request(NodeBody::Status);
    stale.timestamp -= 600;
    let (s, b) = node.send(&stale).await;
    assert_eq!((s, code(&b)), (403, Some(ErrorCode::Stale)));

    let mut future = TestNode::request(NodeBody::Status).encode();
    future[5] = (obscura_proto::VERSION + 1) as u8;
    let (s, b) = node.post_raw("/v1/status", future).await;
    assert_eq!((s, code(&b)), (400, Some(ErrorCode::UnsupportedVersion)));

    let (s, b) = node.post_raw("/v1/status", b"garbage".to_vec()).await;
    assert_eq!((s, code(&b)), (400, Some(ErrorCode::BadRequest)));

    // A body for one operation posted to another path.
    let (s, b) = node
        .post_raw("/v1/delete", TestNode::request(NodeBody::Status).encode())
        .await;
    assert_eq!((s, code(&b)), (400, Some(ErrorCode::BadRequest)));
    node.stop().await;
}

#[tokio::test]
async fn unsigned_or_mismatched_uploads_are_rejected_and_not_stored() {
    let node = TestNode::start("reject").await;
    // Signed by someone other than the owner.
    let mallory = SigningKey::from_bytes(&[9; 32]);
    let forged = upload(&mallory, "coffee.png", 2);
    let (s, b) = node.send(&TestNode::request(prepare(&forged))).await;
    assert_eq!((s, code(&b)), (422, Some(ErrorCode::Rejected)));

    // Signed by the owner, but the share was altered in transit.
    let mut altered = upload(&node.owner, "coffee.png", 3);
    altered.share.bytes[100] ^= 1;
    let (s, b) = node.send(&TestNode::request(prepare(&altered))).await;
    assert_eq!((s, code(&b)), (422, Some(ErrorCode::Rejected)));
    assert!(
        matches!(&b, ResponseBody::Error { message, .. } if message.contains("node 1")),
        "{b:?}"
    );

    // Two bands with one token (which would count one band twice) are no honest upload.
    let mut doubled = upload(&node.owner, "coffee.png", 5);
    doubled.tokens[1] = doubled.tokens[0];
    let (s, b) = node.send(&TestNode::request(prepare(&doubled))).await;
    assert_eq!((s, code(&b)), (422, Some(ErrorCode::Rejected)), "{b:?}");

    // A batch with one bad image is refused whole, naming that image.
    let good = upload(&node.owner, "camera.png", 4);
    let (s, b) = node
        .send(&TestNode::request(prepare_batch(&[&good, &altered])))
        .await;
    assert_eq!((s, code(&b)), (422, Some(ErrorCode::Rejected)));
    assert!(
        matches!(&b, ResponseBody::Error { message, .. } if message.contains(&altered.id.to_string())),
        "{b:?}"
    );

    // Nothing was stored.
    match node.send(&TestNode::request(NodeBody::Status)).await {
        (
            200,
            ResponseBody::Status {
                committed: 0,
                pending: 0,
                ..
            },
        ) => {}
        other => panic!("{other:?}"),
    }
    let (s, b) = node.send(&TestNode::request(commit(&[altered.id]))).await;
    assert_eq!((s, code(&b)), (404, Some(ErrorCode::UnknownImage)));

    // Nor does a commit batch naming a never-prepared image commit the prepared one beside it.
    assert_eq!(node.send(&TestNode::request(prepare(&good))).await.0, 200);
    let (s, b) = node
        .send(&TestNode::request(commit(&[good.id, altered.id])))
        .await;
    assert_eq!((s, code(&b)), (404, Some(ErrorCode::UnknownImage)));
    match node.send(&TestNode::request(NodeBody::Status)).await {
        (
            200,
            ResponseBody::Status {
                committed: 0,
                pending: 1,
                ..
            },
        ) => {}
        other => panic!("{other:?}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn a_prepared_image_never_committed_is_purged() {
    let node = TestNode::start_with("purge", |c| {
        c.checkpoint_interval_s = 1;
        c.pending_timeout_s = 0;
    })
    .await;
    let abandoned = upload(&node.owner, "coffee.png", 4);
    let (s, _) = node.send(&TestNode::request(prepare(&abandoned))).await;
    assert_eq!(s, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match node.send(&TestNode::request(NodeBody::Status)).await {
            (200, ResponseBody::Status { pending: 0, .. }) => break,
            (200, ResponseBody::Status { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let entries = audit(&node).await;
    assert!(entries
        .iter()
        .any(|e| e.kind == obscura_store::AuditKind::Purge.tag() && e.subject == abandoned.id.0));
    // Committing it now finds nothing.
    let (s, b) = node.send(&TestNode::request(commit(&[abandoned.id]))).await;
    assert_eq!((s, code(&b)), (404, Some(ErrorCode::UnknownImage)));
    node.stop().await;
}

#[tokio::test]
async fn clients_without_a_cluster_certificate_cannot_connect() {
    let node = TestNode::start("stranger").await;
    let other = obscura_cluster::tls::make_cluster_tls("other", 1, 0, &["x"]).unwrap();
    let stranger = reqwest::Client::builder()
        .use_preconfigured_tls(
            obscura_cluster::tls::client_config(&node.ca_pem, &other.clients[0]).unwrap(),
        )
        .resolve("node-1.obscura", node.addr)
        .build()
        .unwrap();
    let r = stranger
        .post(format!("{}/v1/status", node.url))
        .body(TestNode::request(NodeBody::Status).encode())
        .send()
        .await;
    assert!(r.is_err(), "a foreign client got {r:?}");
    node.stop().await;
}

/// With VOPRF tokens a node keeps each band element beside its token, and refuses a token that
/// is not the hash of a valid element: what it posts is what a rotation will move.
#[tokio::test]
async fn voprf_elements_must_match_their_tokens() {
    use obscura_keeper::oprf::{hash_to_group, serialize};
    let node = TestNode::start("elements").await;
    let key = obscura_keeper::oprf::random_scalar(&mut ChaCha20Rng::seed_from_u64(4));
    let with_elements = |u: &mut Upload| {
        let values = u.hash.to_be_bytes();
        let elements: Vec<[u8; 32]> = (0..8u8)
            .map(|band| {
                let input = obscura_tokens::voprf_input(band, values[band as usize]);
                serialize(&(hash_to_group(&input) * key))
            })
            .collect();
        u.tokens = elements
            .iter()
            .map(|e| obscura_tokens::voprf_token(1, e).0)
            .collect();
        elements
    };
    let mut good = upload(&node.owner, "camera.png", 5);
    let elements = with_elements(&mut good);
    let mut body = prepare(&good);
    if let NodeBody::Prepare { images, .. } = &mut body {
        images[0].elements = elements.clone();
    }
    assert_eq!(node.send(&TestNode::request(body)).await.0, 200);
    assert_eq!(
        node.send(&TestNode::request(commit(&[good.id]))).await.0,
        200
    );
    match node
        .send(&TestNode::request(lookup(&good.tokens, [1; 16])))
        .await
    {
        (200, ResponseBody::Lookup { handles, .. }) => assert_eq!(handles.len(), 1),
        other => panic!("{other:?}"),
    }

    // A token that is not the hash of its element, an element that is not a group element, and
    // the tokens another node derives from the same elements (the cluster key is one: the node
    // number in the hash is what keeps each node's tokens its own).
    let mut bad = upload(&node.owner, "coffee.png", 6);
    let elements = with_elements(&mut bad);
    for corrupt in [
        |_: &mut Vec<[u8; 32]>, t: &mut Vec<[u8; 16]>| t[3][0] ^= 1,
        |e: &mut Vec<[u8; 32]>, _: &mut Vec<[u8; 16]>| e[5] = [0xff; 32],
        |e: &mut Vec<[u8; 32]>, t: &mut Vec<[u8; 16]>| {
            *t = e
                .iter()
                .map(|e| obscura_tokens::voprf_token(2, e).0)
                .collect()
        },
    ] {
        let (mut e, mut t) = (elements.clone(), bad.tokens.clone());
        corrupt(&mut e, &mut t);
        let mut body = prepare(&bad);
        if let NodeBody::Prepare { images, .. } = &mut body {
            images[0].elements = e;
            images[0].tokens = t;
        }
        let (s, b) = node.send(&TestNode::request(body)).await;
        assert_eq!((s, code(&b)), (422, Some(ErrorCode::Rejected)), "{b:?}");
    }
    node.stop().await;
}

#[tokio::test]
async fn a_key_rotation_needs_the_owners_order_for_this_node() {
    let node = TestNode::start("rotate-order").await;
    let factor = obscura_keeper::Scalar::from(7u64).to_bytes();
    let begin = |signer: &SigningKey, for_node: u8| NodeBody::Rotate {
        op: RotateOp::Begin {
            from: 1,
            to: 2,
            factor,
            signature: Order::Rotate {
                node: for_node,
                from: 1,
                to: 2,
                factor,
            }
            .sign(signer)
            .to_vec(),
        },
    };
    let mallory = SigningKey::from_bytes(&[9; 32]);
    for refused in [begin(&mallory, 1), begin(&node.owner, 2)] {
        let (status, body) = node.send(&TestNode::request(refused)).await;
        assert_eq!((status, code(&body)), (422, Some(ErrorCode::Rejected)));
    }
    match node.send(&TestNode::request(begin(&node.owner, 1))).await {
        (200, ResponseBody::Rotation { current, next, .. }) => {
            assert_eq!((current, next), (1, Some(2)));
        }
        other => panic!("{other:?}"),
    }
    node.stop().await;
}
