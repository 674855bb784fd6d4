//! The clean room at a node, attacked with raw wire requests by a user with ordinary
//! credentials who plays the controller: a node releases its shares of a work's inputs only to a
//! worker it appraised itself, for that work and its own fresh challenge, under the data owner's
//! approval of exactly those inputs and that policy, before the approval expires and while its
//! runs last; the shares are sealed to the worker's attested key for that release alone, and
//! every release and refusal is in the node's audit log with the Work-ID.

mod common;

use common::*;
use obscura_attest::seal::{PartyKey, Sealed};
use obscura_attest::sim::{SimulatedPlatform, SimulationRoot};
use obscura_attest::{binding, Role};
use obscura_proto::{
    room_cluster_digest, room_context, room_inputs_digest, room_policy_digest, room_purpose,
    room_release_statement, room_result_statement, room_shares_digest, ErrorCode, NodeBody,
    ResponseBody, RoomReleaseProof, RoomResultFiled, RoomShare,
};
use obscura_sharing::order::Order;
use rand_core::OsRng;

const WORK: [u8; 32] = [0x5a; 32];
const GOOD: [u8; 48] = [1; 48];

/// A worker as the test plays it: a platform the cluster's simulation root endorsed, a
/// measurement, the job's keys, and the cluster it trusts.
struct Worker {
    platform: SimulatedPlatform,
    measurement: [u8; 48],
    key: PartyKey,
    signer: ed25519_dalek::SigningKey,
    signing: [u8; 32],
    cluster: [u8; 32],
}

/// The digest of the test node's cluster as a worker binds it: the owner and every node key.
fn cluster_of(node: &TestNode) -> [u8; 32] {
    let config: obscura_cluster::node::NodeConfig =
        serde_json::from_slice(&std::fs::read(node.dir.join("node1/node.json")).unwrap()).unwrap();
    let nodes: Vec<[u8; 32]> = config
        .node_keys
        .iter()
        .map(|k| obscura_tokens::keyfile::from_hex(k).unwrap())
        .collect();
    room_cluster_digest(&node.owner.verifying_key().to_bytes(), &nodes)
}

impl Worker {
    fn new(root: &SimulationRoot, measurement: [u8; 48], cluster: [u8; 32]) -> Worker {
        let signer = ed25519_dalek::SigningKey::generate(&mut OsRng);
        Worker {
            platform: root.issue("worker", &mut OsRng),
            measurement,
            key: PartyKey::generate(&mut OsRng),
            signing: signer.verifying_key().to_bytes(),
            signer,
            cluster,
        }
    }

    /// Evidence for `work` and the node's challenge `nonce`, as a clean-room job makes it.
    fn evidence(&self, work: &[u8; 32], nonce: &[u8; 32]) -> Vec<u8> {
        self.evidence_as(&Role::Work(hex(work)), work, &self.cluster, nonce)
    }

    /// Evidence under any role and cluster digest.
    fn evidence_as(
        &self,
        role: &Role,
        work: &[u8; 32],
        cluster: &[u8; 32],
        nonce: &[u8; 32],
    ) -> Vec<u8> {
        let data = binding::report_data(
            role,
            &self.key.public(),
            &room_context(work, &self.signing, cluster),
            nonce,
        );
        self.platform
            .evidence(&self.measurement, &data, false, now())
            .to_json()
    }
}

fn hex(bytes: &[u8]) -> String {
    obscura_tokens::keyfile::to_hex(bytes)
}

fn policy(root: &SimulationRoot, measurements: &[[u8; 48]], debug: bool) -> Vec<u8> {
    let allowed: Vec<serde_json::Value> = measurements
        .iter()
        .map(|m| {
            serde_json::json!({"role": "worker", "platform": "simulation",
                               "measurement": obscura_tokens::keyfile::to_hex(m)})
        })
        .collect();
    serde_json::json!({
        "version": 1, "name": "test", "allow_simulation": true, "allow_debug": debug,
        "max_evidence_age_secs": 300, "measurements": allowed,
        "simulation_roots": [obscura_tokens::keyfile::to_hex(&root.public())],
    })
    .to_string()
    .into_bytes()
}

/// What the owner approved, and what a release asks.
#[derive(Clone)]
struct Ask {
    work: [u8; 32],
    images: Vec<[u8; 16]>,
    policy: Vec<u8>,
    expires_at: u64,
    max_runs: u32,
    approval: Vec<u8>,
}

fn approved(
    owner: &ed25519_dalek::SigningKey,
    images: &[[u8; 16]],
    policy: Vec<u8>,
    expires_at: u64,
    max_runs: u32,
) -> Ask {
    let approval = Order::Approve {
        work: WORK,
        inputs: room_inputs_digest(images),
        policy: room_policy_digest(&policy),
        expires_at,
        max_runs,
    }
    .sign(owner)
    .to_vec();
    Ask {
        work: WORK,
        images: images.to_vec(),
        policy,
        expires_at,
        max_runs,
        approval,
    }
}

async fn challenge(node: &TestNode, work: [u8; 32]) -> [u8; 32] {
    match node
        .send(&TestNode::request(NodeBody::RoomChallenge { work }))
        .await
    {
        (200, ResponseBody::RoomChallenge { nonce }) => nonce,
        other => panic!("no challenge: {other:?}"),
    }
}

fn release(ask: &Ask, nonce: [u8; 32], worker: &Worker, evidence: Vec<u8>) -> NodeBody {
    NodeBody::RoomRelease {
        work: ask.work,
        images: ask.images.clone(),
        policy: ask.policy.clone(),
        expires_at: ask.expires_at,
        max_runs: ask.max_runs,
        approval: ask.approval.clone(),
        nonce,
        worker_key: worker.key.public(),
        signing_key: worker.signing,
        evidence,
    }
}

/// A fresh challenge, the worker's evidence for it, and the release.
async fn ask_release(node: &TestNode, ask: &Ask, worker: &Worker) -> (u16, ResponseBody) {
    let nonce = challenge(node, ask.work).await;
    let evidence = worker.evidence(&ask.work, &nonce);
    node.send(&TestNode::request(release(ask, nonce, worker, evidence)))
        .await
}

fn refused(answer: &(u16, ResponseBody), code: ErrorCode, why: &str) -> bool {
    matches!(&answer.1, ResponseBody::Error { code: c, message } if *c == code && message.contains(why))
}

#[tokio::test]
async fn a_node_releases_a_works_inputs_only_to_a_worker_it_appraised_under_the_owners_approval() {
    let node = TestNode::start("room").await;
    let a = {
        let u = upload(&node.owner, "coffee.png", 1);
        assert_eq!(node.send(&TestNode::request(prepare(&u))).await.0, 200);
        assert_eq!(node.send(&TestNode::request(commit(&[u.id]))).await.0, 200);
        u
    };
    let b = upload(&node.owner, "camera.png", 2);
    assert_eq!(node.send(&TestNode::request(prepare(&b))).await.0, 200);
    assert_eq!(node.send(&TestNode::request(commit(&[b.id]))).await.0, 200);
    let root_hex = std::fs::read_to_string(node.dir.join("simulation-root.secret")).unwrap();
    let root = SimulationRoot::from_secret_bytes(
        &obscura_tokens::keyfile::from_hex(root_hex.trim()).unwrap(),
    );
    let cluster = cluster_of(&node);
    let worker = Worker::new(&root, GOOD, cluster);
    let good_policy = policy(&root, &[GOOD], false);
    let far = now() + 3600;
    let ask = approved(&node.owner, &[a.id.0], good_policy.clone(), far, 2);

    // The genuine run: the shares open only under the worker's key, for this release, and
    // hold the stored manifest and share; the node signed the release with its audit key.
    let nonce = challenge(&node, WORK).await;
    let body = release(&ask, nonce, &worker, worker.evidence(&WORK, &nonce));
    let answer = node.send(&TestNode::request(body.clone())).await;
    let ResponseBody::RoomReleased {
        node: 1,
        run: 1,
        shares,
        signature,
    } = &answer.1
    else {
        panic!("{answer:?}");
    };
    let statement = room_release_statement(
        1,
        &WORK,
        &nonce,
        1,
        &worker.key.public(),
        &worker.signing,
        &room_shares_digest(shares),
    );
    node.audit_key
        .verifying_key()
        .verify_strict(
            &statement,
            &ed25519_dalek::Signature::from_slice(signature).unwrap(),
        )
        .unwrap();
    let sealed = |s: &RoomShare| Sealed {
        enc: s.enc.clone(),
        ciphertext: s.ciphertext.clone(),
    };
    let opened = worker
        .key
        .open(
            &room_purpose(1, &WORK, &nonce, &a.id.0),
            &sealed(&shares[0]),
        )
        .unwrap();
    let (manifest, share): (Vec<u8>, Vec<u8>) = postcard::from_bytes(&opened).unwrap();
    assert_eq!(
        (manifest, share),
        (a.manifest.clone(), a.share.bytes.clone())
    );
    // Replayed to another worker, it opens under no other key, nor for another release.
    assert!(PartyKey::generate(&mut OsRng)
        .open(
            &room_purpose(1, &WORK, &nonce, &a.id.0),
            &sealed(&shares[0])
        )
        .is_err());
    assert!(worker
        .key
        .open(
            &room_purpose(1, &WORK, &[0; 32], &a.id.0),
            &sealed(&shares[0])
        )
        .is_err());

    // The same release again (a fresh request id): the challenge is spent.
    let again = node.send(&TestNode::request(body)).await;
    assert!(
        refused(&again, ErrorCode::Rejected, "no clean-room challenge"),
        "{again:?}"
    );

    // A worker of another build is refused, and named as such.
    let other = Worker::new(&root, [2; 48], cluster);
    let answer = ask_release(&node, &ask, &other).await;
    assert!(
        refused(
            &answer,
            ErrorCode::Forbidden,
            "refuses the worker for work 5a5a5a5a5a5a5a5a: measurement"
        ),
        "{answer:?}"
    );
    // A genuine worker's evidence for another work, relayed for this one.
    let nonce = challenge(&node, WORK).await;
    let elsewhere = worker.evidence(&[0x77; 32], &nonce);
    let answer = node
        .send(&TestNode::request(release(&ask, nonce, &worker, elsewhere)))
        .await;
    assert!(
        refused(&answer, ErrorCode::Forbidden, "report data"),
        "{answer:?}"
    );
    // Evidence the worker's plain endpoint makes (role `worker`, as for a secret's release)
    // for the same context: not a clean-room job's, refused.
    let nonce = challenge(&node, WORK).await;
    let plain = worker.evidence_as(&Role::Worker, &WORK, &cluster, &nonce);
    let answer = node
        .send(&TestNode::request(release(&ask, nonce, &worker, plain)))
        .await;
    assert!(
        refused(&answer, ErrorCode::Forbidden, "report data"),
        "{answer:?}"
    );
    // A worker whose host gave it another owner's key (to feed it images of its making).
    let nonce = challenge(&node, WORK).await;
    let fooled = worker.evidence_as(&Role::Work(hex(&WORK)), &WORK, &[3; 32], &nonce);
    let answer = node
        .send(&TestNode::request(release(&ask, nonce, &worker, fooled)))
        .await;
    assert!(
        refused(&answer, ErrorCode::Forbidden, "report data"),
        "{answer:?}"
    );
    // Its evidence with a modified client's own key in place of the worker's.
    let nonce = challenge(&node, WORK).await;
    let genuine = worker.evidence(&WORK, &nonce);
    let mut body = release(&ask, nonce, &worker, genuine);
    if let NodeBody::RoomRelease { worker_key, .. } = &mut body {
        *worker_key = PartyKey::generate(&mut OsRng).public();
    }
    let answer = node.send(&TestNode::request(body)).await;
    assert!(
        refused(&answer, ErrorCode::Forbidden, "report data"),
        "{answer:?}"
    );
    // A challenge made for another work.
    let nonce = challenge(&node, [0x77; 32]).await;
    let answer = node
        .send(&TestNode::request(release(
            &ask,
            nonce,
            &worker,
            worker.evidence(&WORK, &nonce),
        )))
        .await;
    assert!(
        refused(&answer, ErrorCode::Rejected, "no clean-room challenge"),
        "{answer:?}"
    );
    // Another user's challenge.
    let nonce = challenge(&node, WORK).await;
    let mallory = node.holder("mallory", obscura_proto::roles::QUERIER);
    let answer = node
        .send_as(
            &mallory,
            &TestNode::request(release(
                &ask,
                nonce,
                &worker,
                worker.evidence(&WORK, &nonce),
            )),
        )
        .await;
    assert!(
        refused(&answer, ErrorCode::Rejected, "no clean-room challenge"),
        "{answer:?}"
    );

    // Approvals: a stranger's, one for other inputs, one for another policy, an expired one.
    let stranger = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let forged = approved(&stranger, &[a.id.0], good_policy.clone(), far, 2);
    let answer = ask_release(&node, &forged, &worker).await;
    assert!(
        refused(
            &answer,
            ErrorCode::Forbidden,
            "no approval of the data owner's"
        ),
        "{answer:?}"
    );
    let mut widened = ask.clone();
    widened.images.push(b.id.0);
    let answer = ask_release(&node, &widened, &worker).await;
    assert!(
        refused(
            &answer,
            ErrorCode::Forbidden,
            "no approval of the data owner's"
        ),
        "{answer:?}"
    );
    let mut loosened = ask.clone();
    loosened.policy = policy(&root, &[GOOD, [2; 48]], false);
    let answer = ask_release(&node, &loosened, &other).await;
    assert!(
        refused(
            &answer,
            ErrorCode::Forbidden,
            "no approval of the data owner's"
        ),
        "{answer:?}"
    );
    let mut more = ask.clone();
    more.max_runs = 100;
    let answer = ask_release(&node, &more, &worker).await;
    assert!(
        refused(
            &answer,
            ErrorCode::Forbidden,
            "no approval of the data owner's"
        ),
        "{answer:?}"
    );
    let expired = approved(&node.owner, &[a.id.0], good_policy.clone(), now() - 1, 2);
    let answer = ask_release(&node, &expired, &worker).await;
    assert!(
        refused(&answer, ErrorCode::Forbidden, "expired"),
        "{answer:?}"
    );

    // Policies the owner signed but no node appraises under: debug, or another root.
    let debug = approved(&node.owner, &[a.id.0], policy(&root, &[GOOD], true), far, 2);
    let answer = ask_release(&node, &debug, &worker).await;
    assert!(
        refused(&answer, ErrorCode::BadRequest, "debug"),
        "{answer:?}"
    );
    let mine = SimulationRoot::generate(&mut OsRng);
    let own = approved(
        &node.owner,
        &[a.id.0],
        policy(&mine, &[GOOD], false),
        far,
        2,
    );
    let answer = ask_release(&node, &own, &Worker::new(&mine, GOOD, cluster)).await;
    assert!(
        refused(&answer, ErrorCode::BadRequest, "simulation root"),
        "{answer:?}"
    );

    // An image the node does not hold: refused before a run is counted.
    let missing = approved(&node.owner, &[[9; 16]], good_policy.clone(), far, 1);
    let answer = ask_release(&node, &missing, &worker).await;
    assert!(
        refused(&answer, ErrorCode::UnknownImage, "unknown image"),
        "{answer:?}"
    );

    // Runs: the approval allows two at this node; the second is given, the third refused.
    let answer = ask_release(&node, &ask, &worker).await;
    assert!(
        matches!(answer.1, ResponseBody::RoomReleased { run: 2, .. }),
        "{answer:?}"
    );
    let answer = ask_release(&node, &ask, &worker).await;
    assert!(
        refused(
            &answer,
            ErrorCode::Forbidden,
            "has had the 2 runs its approval allows"
        ),
        "{answer:?}"
    );

    // Both releases and every refusal after authentication are in the audit log, with the
    // work named.
    let entries = audit(&node).await;
    let details: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.detail).into_owned())
        .collect();
    let released = details
        .iter()
        .filter(|d| d.contains("op=room-release work=5a5a"))
        .count();
    assert_eq!(released, 2, "{details:#?}");
    assert!(
        details
            .iter()
            .any(|d| d.contains("room-release refused=Forbidden: node 1 refuses the worker")),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|d| d.contains("has had the 2 runs")),
        "{details:#?}"
    );
}

/// A result as its controller files it at a node, signed by `signer`.
fn filed(
    worker: &Worker,
    signer: &ed25519_dalek::SigningKey,
    release: RoomReleaseProof,
    blamed: Vec<u8>,
) -> NodeBody {
    let manifests = vec![[0x11; 32]];
    let commitment = [0x22; 32];
    let statement = room_result_statement(&WORK, &manifests, &commitment, &blamed);
    NodeBody::RoomResult(RoomResultFiled {
        work: WORK,
        manifests,
        commitment,
        blamed,
        worker_key: worker.key.public(),
        signing_key: worker.signing,
        signature: ed25519_dalek::Signer::sign(signer, &statement)
            .to_bytes()
            .to_vec(),
        release,
    })
}

#[tokio::test]
async fn a_node_enters_only_results_signed_by_a_worker_it_released_to() {
    let node = TestNode::start("room-result").await;
    let a = upload(&node.owner, "coffee.png", 1);
    assert_eq!(node.send(&TestNode::request(prepare(&a))).await.0, 200);
    assert_eq!(node.send(&TestNode::request(commit(&[a.id]))).await.0, 200);
    let root_hex = std::fs::read_to_string(node.dir.join("simulation-root.secret")).unwrap();
    let root = SimulationRoot::from_secret_bytes(
        &obscura_tokens::keyfile::from_hex(root_hex.trim()).unwrap(),
    );
    let worker = Worker::new(&root, GOOD, cluster_of(&node));
    let ask = approved(
        &node.owner,
        &[a.id.0],
        policy(&root, &[GOOD], false),
        now() + 3600,
        1,
    );
    let nonce = challenge(&node, WORK).await;
    let answer = node
        .send(&TestNode::request(release(
            &ask,
            nonce,
            &worker,
            worker.evidence(&WORK, &nonce),
        )))
        .await;
    let ResponseBody::RoomReleased {
        run,
        shares,
        signature,
        ..
    } = answer.1
    else {
        panic!("{answer:?}");
    };
    let proof = RoomReleaseProof {
        node: 1,
        nonce,
        run,
        shares: room_shares_digest(&shares),
        signature,
    };
    let blamed =
        postcard::to_allocvec(&(vec![(4u8, "a share of coffee.png".to_string())], vec![5u8]))
            .unwrap();

    // A result signed by a key of the controller's own making, with the node's genuine
    // release to the worker: refused.
    let forger = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let answer = node
        .send(&TestNode::request(filed(
            &worker,
            &forger,
            proof.clone(),
            blamed.clone(),
        )))
        .await;
    assert!(
        refused(
            &answer,
            ErrorCode::Forbidden,
            "not signed by the key node 1 released to"
        ),
        "{answer:?}"
    );
    // A release the node did not sign: another run, another node, or to the forger's key.
    for (what, release) in [
        (
            "another run",
            RoomReleaseProof {
                run: 2,
                ..proof.clone()
            },
        ),
        (
            "another node",
            RoomReleaseProof {
                node: 2,
                ..proof.clone()
            },
        ),
    ] {
        let answer = node
            .send(&TestNode::request(filed(
                &worker,
                &worker.signer,
                release,
                blamed.clone(),
            )))
            .await;
        assert!(
            refused(
                &answer,
                ErrorCode::Forbidden,
                "released nothing to this result's keys"
            ),
            "{what}: {answer:?}"
        );
    }
    // A worker the node never released to, signing its own result, with the node's release.
    let stranger = Worker::new(&root, GOOD, cluster_of(&node));
    let answer = node
        .send(&TestNode::request(filed(
            &stranger,
            &stranger.signer,
            proof.clone(),
            blamed.clone(),
        )))
        .await;
    assert!(
        refused(
            &answer,
            ErrorCode::Forbidden,
            "released nothing to this result's keys"
        ),
        "{answer:?}"
    );

    // The genuine result is entered, naming the work, the run and the nodes it blamed.
    let answer = node
        .send(&TestNode::request(filed(
            &worker,
            &worker.signer,
            proof,
            blamed,
        )))
        .await;
    assert_eq!(answer, (200, ResponseBody::Ok));
    let details: Vec<String> = audit(&node)
        .await
        .iter()
        .map(|e| String::from_utf8_lossy(&e.detail).into_owned())
        .collect();
    let entered: Vec<&String> = details
        .iter()
        .filter(|d| d.contains("op=room-result work=5a5a"))
        .collect();
    assert_eq!(entered.len(), 1, "{details:#?}");
    assert!(
        entered[0].contains("run=1 inputs=1 commitment=2222")
            && entered[0].contains("blamed=4 unsigned=5"),
        "{}",
        entered[0]
    );
    assert_eq!(
        details
            .iter()
            .filter(|d| d.contains("room-result refused=Forbidden"))
            .count(),
        4,
        "{details:#?}"
    );
}
