//! The cluster ledger at a node, attacked over the wire as an ordinary user, a stranger, a
//! node writing the owner's entries and a colluding minority would: each entry is taken only
//! from its author, at its place, under its rule; a head is kept only with a majority's
//! cosignatures and only when the node's own entries give its root; a store cut behind the head
//! the nodes cosigned, or with an entry edited, does not serve.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use obscura_ledger::entry::{Authors, Entry, Transition};
use obscura_ledger::head::{CosignedHead, TreeHead};
use obscura_ledger::replica::Replica;
use obscura_node::config::LoadedNode;
use obscura_proto::{roles, ErrorCode, NodeBody, ResponseBody};

type LedgerTable<'t> = redb::Table<'t, u64, &'static [u8]>;

fn registered(image: u8) -> Transition {
    Transition::ImageRegistered {
        image: [image; 16],
        manifest: [image; 32],
    }
}

struct Cluster {
    replica: Replica,
    nodes: Vec<SigningKey>,
}

impl Cluster {
    fn of(node: &TestNode) -> Cluster {
        let nodes: Vec<SigningKey> = (1..=N as u8)
            .map(|i| SigningKey::from_bytes(&node.secrets_of(i).audit_key))
            .collect();
        let replica = Replica::new(Authors {
            owner: node.owner.verifying_key(),
            nodes: nodes.iter().map(SigningKey::verifying_key).collect(),
        });
        Cluster { replica, nodes }
    }

    /// Entry `seq`, signed after the history this copy holds up to it.
    fn entry(&self, seq: u64, author: u8, t: Transition, key: &SigningKey) -> Entry {
        let prev = self.replica.root_at(seq).unwrap_or([0; 32]);
        Entry::sign(&self.replica.log(), seq, &prev, author, t, key)
    }

    /// The owner's entries after this copy's, each signed after the ones before it.
    fn chain(&self, owner: &SigningKey, ts: Vec<Transition>) -> Vec<Entry> {
        let mut tree = self.replica.frontier().clone();
        ts.into_iter()
            .map(|t| {
                let e = Entry::sign(&self.replica.log(), tree.size(), &tree.root(), 0, t, owner);
                tree.push(&e.leaf());
                e
            })
            .collect()
    }

    /// `head` cosigned by `nodes`.
    fn cosigned(&self, head: TreeHead, nodes: &[u8]) -> CosignedHead {
        CosignedHead {
            head,
            cosignatures: nodes
                .iter()
                .map(|&x| head.cosign(x, &self.nodes[usize::from(x) - 1]))
                .collect(),
        }
    }
}

async fn append(node: &TestNode, entries: Vec<Entry>) -> ResponseBody {
    node.send(&TestNode::request(NodeBody::LedgerAppend {
        entries,
        since: 0,
    }))
    .await
    .1
}

fn refusal(body: &ResponseBody) -> (ErrorCode, String) {
    match body {
        ResponseBody::Error { code, message } => (*code, message.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn every_node_takes_an_entry_only_from_its_author_at_its_place_under_its_rule() {
    let node = TestNode::start("ledger-entries").await;
    let mut c = Cluster::of(&node);
    let owner = node.owner.clone();
    let first = c.entry(0, 0, registered(1), &owner);

    // An ordinary user relaying the owner's own entry: not a role that may append.
    let querier = node.holder("mallory", roles::QUERIER);
    let req = TestNode::request(NodeBody::LedgerAppend {
        entries: vec![first.clone()],
        since: 0,
    });
    let (_, body) = node.send_as(&querier, &req).await;
    assert_eq!(refusal(&body).0, ErrorCode::Forbidden, "{body:?}");

    // A stranger's key as the owner's, node 2 writing an owner's transition, and the owner's
    // entry moved to another place: refused, each naming why.
    let stranger = SigningKey::from_bytes(&[7; 32]);
    let forged = c.entry(0, 0, registered(1), &stranger);
    let by_node = c.entry(0, 2, Transition::KeyVersion { version: 9 }, &c.nodes[1]);
    let mut moved = c.entry(5, 0, registered(1), &owner);
    moved.seq = 0;
    for (bad, why) in [
        (forged, "not signed by its author"),
        (by_node, "only the owner"),
        (moved, "not signed by its author"),
    ] {
        let body = append(&node, vec![bad]).await;
        let (code, message) = refusal(&body);
        assert_eq!(code, ErrorCode::Rejected);
        assert!(message.contains(why), "{message}");
    }

    // The owner's entry is taken; the node cosigns the head every party computes.
    let body = append(&node, vec![first.clone()]).await;
    c.replica.append(std::slice::from_ref(&first)).unwrap();
    let ResponseBody::LedgerAppended(appended) = body else {
        panic!("{body:?}")
    };
    let (head, stored) = (appended.head, appended.stored);
    assert_eq!(head, c.replica.head());
    let cosigners = obscura_ledger::replica::majority(&c.replica_nodes());
    assert_eq!(cosigners.storers(&head, std::slice::from_ref(&stored)), [1]);
    // Storing is no cosignature: it does not count towards a majority's head.
    let one = CosignedHead {
        head,
        cosignatures: vec![stored],
    };
    assert!(cosigners.signers(&one).is_empty());

    // Sent again it changes nothing; another entry in its place, a gap, a deletion of an image
    // never registered: refused.
    assert!(matches!(
        append(&node, vec![first.clone()]).await,
        ResponseBody::LedgerAppended(a) if a.head.size == 1
    ));
    // (An entry in a held place that does follow on from the history before it would
    // replace it, as the node committed to nothing yet: see
    // `a_node_replaces_only_what_it_never_committed_to_and_commits_only_with_a_majority`.)
    let other = Entry::sign(&c.replica.log(), 0, &[7; 32], 0, registered(2), &owner);
    let gap = c.entry(3, 0, registered(2), &owner);
    let unknown = c.entry(1, 0, Transition::ImageDeleted { image: [9; 16] }, &owner);
    for (bad, why) in [
        (other, "position and history"),
        (gap, "send from entry 1"),
        (unknown, "is not registered"),
    ] {
        let (code, message) = refusal(&append(&node, vec![bad]).await);
        assert_eq!(code, ErrorCode::Rejected);
        assert!(message.contains(why), "{message}");
    }

    // Signed for a history that did not come to be (after another first entry): refused.
    let mut elsewhere = c.clone_empty();
    elsewhere
        .replica
        .append(&[c.entry(0, 0, registered(7), &owner)])
        .unwrap();
    let stale = elsewhere.chain(&owner, vec![registered(3)]);
    let (code, message) = refusal(&append(&node, stale).await);
    assert_eq!(code, ErrorCode::Rejected);
    assert!(message.contains("position and history"), "{message}");

    // A batch with one bad entry is taken not at all.
    let batch = c.chain(
        &owner,
        vec![registered(2), Transition::ImageDeleted { image: [9; 16] }],
    );
    let (_, message) = refusal(&append(&node, batch).await);
    assert!(message.contains("is not registered"), "{message}");
    let (_, body) = node
        .send(&TestNode::request(NodeBody::LedgerHead { since: 0 }))
        .await;
    assert!(matches!(body, ResponseBody::LedgerHead(h) if h.own.size == 1));
    node.stop().await;
}

impl Cluster {
    /// The same cluster, with an empty copy of its ledger.
    fn clone_empty(&self) -> Cluster {
        Cluster {
            replica: Replica::new(self.replica.authors().clone()),
            nodes: self.nodes.clone(),
        }
    }

    fn replica_nodes(&self) -> Vec<ed25519_dalek::VerifyingKey> {
        self.nodes.iter().map(SigningKey::verifying_key).collect()
    }
}

#[tokio::test]
async fn a_node_keeps_only_a_majority_head_of_its_own_history_and_a_cut_store_does_not_serve() {
    let mut node = TestNode::start("ledger-heads").await;
    let mut c = Cluster::of(&node);
    let owner = node.owner.clone();
    let entries = c.chain(&owner, (1..=3).map(registered).collect());
    assert!(matches!(
        append(&node, entries.clone()).await,
        ResponseBody::LedgerAppended(_)
    ));
    c.replica.append(&entries).unwrap();
    let head = c.replica.head();
    let cosigned = |h: CosignedHead| TestNode::request(NodeBody::LedgerCosigned { head: h });

    // Two of five nodes are no majority.
    let (_, body) = node.send(&cosigned(c.cosigned(head, &[1, 2]))).await;
    assert!(refusal(&body).1.contains("2 node(s) cosigned"), "{body:?}");

    // Three colluding nodes cosign a head of the same size for another history: the node
    // names them and keeps nothing.
    let forged = TreeHead {
        root: [0xee; 32],
        ..head
    };
    let (_, body) = node.send(&cosigned(c.cosigned(forged, &[2, 3, 4]))).await;
    let (code, message) = refusal(&body);
    assert_eq!(code, ErrorCode::Rejected);
    assert!(
        message.contains("[2, 3, 4]") && message.contains("split view"),
        "{message}"
    );

    // A majority's head of its own history is kept and shown to any user.
    let (_, body) = node.send(&cosigned(c.cosigned(head, &[3, 4, 5]))).await;
    assert_eq!(body, ResponseBody::Ok);
    let querier = node.holder("ana", roles::QUERIER);
    let (_, body) = node
        .send_as(
            &querier,
            &TestNode::request(NodeBody::LedgerHead { since: 1 }),
        )
        .await;
    let ResponseBody::LedgerHead(h) = body else {
        panic!("{body:?}")
    };
    let kept = h.cosigned.clone().expect("a kept head");
    assert_eq!((h.own, kept.head), (head, head));
    let cosigned_proof = h.cosigned_proof;
    let old = c.replica.root_at(1).unwrap();
    assert!(obscura_ledger::merkle::verify_consistency(
        1,
        3,
        &old,
        &head.root,
        &cosigned_proof
    ));
    // Entries are for the owner, auditors and admins only.
    let (_, body) = node
        .send_as(
            &querier,
            &TestNode::request(NodeBody::LedgerRead { from: 0, max: 10 }),
        )
        .await;
    assert_eq!(refusal(&body).0, ErrorCode::Forbidden);

    // Restarted, the node rebuilds the same ledger from its store.
    node.restart_abruptly().await;
    let (_, body) = node
        .send(&TestNode::request(NodeBody::LedgerHead { since: 0 }))
        .await;
    assert!(matches!(body, ResponseBody::LedgerHead(h) if h.own == head));

    // Its operator cuts the last entry: the store no longer reaches the cosigned head, and the
    // node does not serve.
    node.halt().await;
    let store = node.dir.join("node1").join("store.redb");
    let ledger: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("ledger");
    let edit = |f: &dyn Fn(&mut LedgerTable)| {
        let db = redb::Database::open(&store).unwrap();
        let txn = db.begin_write().unwrap();
        f(&mut txn.open_table(ledger).unwrap());
        txn.commit().unwrap();
    };
    let last = postcard::to_allocvec(&entries[2]).unwrap();
    edit(&|t| {
        t.remove(2).unwrap();
    });
    let why = LoadedNode::load(&node.dir.join("node1/node.json"))
        .unwrap_err()
        .to_string();
    assert!(why.contains("cut or rewritten"), "{why}");

    // Put back with one byte changed: the owner's signature no longer holds.
    let mut edited = last.clone();
    edited[3] ^= 1;
    edit(&|t| {
        t.insert(2, edited.as_slice()).unwrap();
    });
    let why = LoadedNode::load(&node.dir.join("node1/node.json"))
        .unwrap_err()
        .to_string();
    assert!(why.contains("ledger entry 2"), "{why}");

    // Restored, it serves again.
    edit(&|t| {
        t.insert(2, last.as_slice()).unwrap();
    });
    node.serve_again().await;
    node.stop().await;
}

#[tokio::test]
async fn a_node_replaces_only_what_it_never_committed_to_and_commits_only_with_a_majority() {
    let node = TestNode::start("ledger-replace").await;
    let mut c = Cluster::of(&node);
    let owner = node.owner.clone();
    let commit = |head: TreeHead, by: &[u8], c: &Cluster| {
        let stored = by
            .iter()
            .map(|&x| head.sign_stored(x, &c.nodes[usize::from(x) - 1]))
            .collect();
        TestNode::request(NodeBody::LedgerCommit { head, stored })
    };

    // Two entries; the node commits to their head only when a majority stores it.
    let two = c.chain(&owner, vec![registered(1), registered(2)]);
    assert!(matches!(
        append(&node, two.clone()).await,
        ResponseBody::LedgerAppended(_)
    ));
    c.replica.append(&two).unwrap();
    let at2 = c.replica.head();
    let (_, body) = node.send(&commit(at2, &[1, 2], &c)).await;
    assert!(
        refusal(&body)
            .1
            .contains("2 node(s) store the head; 3 must"),
        "{body:?}"
    );
    let (_, body) = node.send(&commit(at2, &[1, 2, 3], &c)).await;
    let ResponseBody::LedgerCommitted { cosignature } = body else {
        panic!("{body:?}")
    };
    assert_eq!(cosignature, at2.cosign(1, &c.nodes[0]));

    // A third the owner wrote in an append no majority took, then node 2's own entry after
    // it: the node holds four, two past what it committed to.
    let mut pending = c.clone_empty();
    pending.replica.append(&two).unwrap();
    let third = pending.chain(&owner, vec![registered(3)]);
    pending.replica.append(&third).unwrap();
    let tree = pending.replica.frontier().clone();
    let anchor = Entry::sign(
        &c.replica.log(),
        3,
        &tree.root(),
        2,
        Transition::Checkpoint {
            node: 2,
            seq: 5,
            head: [5; 32],
        },
        &c.nodes[1],
    );
    let mut four = third.clone();
    four.push(anchor);
    assert!(matches!(
        append(&node, four).await,
        ResponseBody::LedgerAppended(a) if a.head.size == 4
    ));

    // An entry in place of one under its commitment: refused, whoever signed it.
    let mut early = c.clone_empty();
    early.replica.append(&two[..1]).unwrap();
    let rewrite = early.chain(&owner, vec![registered(9)]);
    let (_, message) = refusal(&append(&node, rewrite).await);
    assert!(
        message.contains("under the head of 2 entries it committed to"),
        "{message}"
    );

    // In place of the third, following on from the committed two: replaces the third and node
    // 2's entry, in one commit, and the node stores the head every party computes.
    let replacement = c.chain(&owner, vec![Transition::KeyVersion { version: 2 }]);
    let body = append(&node, replacement.clone()).await;
    c.replica.append(&replacement).unwrap();
    assert!(
        matches!(&body, ResponseBody::LedgerAppended(a) if a.head == c.replica.head()),
        "{body:?}"
    );

    // A replacement whose batch breaks a rule replaces nothing.
    let broken = {
        let mut other = c.clone_empty();
        other.replica.append(&two).unwrap();
        other.chain(
            &owner,
            vec![registered(4), Transition::ImageDeleted { image: [8; 16] }],
        )
    };
    refusal(&append(&node, broken).await);
    let (_, body) = node
        .send(&TestNode::request(NodeBody::LedgerHead { since: 0 }))
        .await;
    assert!(
        matches!(&body, ResponseBody::LedgerHead(h) if h.own == c.replica.head()),
        "{body:?}"
    );

    // Committed at three, it refuses to replace the third too.
    let at3 = c.replica.head();
    let (_, body) = node.send(&commit(at3, &[1, 4, 5], &c)).await;
    assert!(
        matches!(body, ResponseBody::LedgerCommitted { .. }),
        "{body:?}"
    );
    let mut other = c.clone_empty();
    other.replica.append(&two).unwrap();
    let again = other.chain(&owner, vec![registered(5)]);
    let (_, message) = refusal(&append(&node, again).await);
    assert!(
        message.contains("under the head of 3 entries it committed to"),
        "{message}"
    );

    // A head of the kept size with another root, once one is kept: refused and named.
    let cosigned = |h: CosignedHead| TestNode::request(NodeBody::LedgerCosigned { head: h });
    let (_, body) = node.send(&cosigned(c.cosigned(at3, &[1, 2, 3]))).await;
    assert_eq!(body, ResponseBody::Ok);
    let forged = TreeHead {
        root: [0xab; 32],
        ..at3
    };
    let (_, body) = node.send(&cosigned(c.cosigned(forged, &[3, 4, 5]))).await;
    let (_, message) = refusal(&body);
    assert!(message.contains("[3, 4, 5]"), "{message}");
    node.stop().await;
}
