//! Cosigned heads and a client's view, attacked as a node would: a head cosigned by too few
//! nodes, by strangers, or once per node many times; another ledger's head; an old head shown
//! again; a proof altered on the way; and a split view, two heads of one size with different
//! roots, which names exactly the nodes that cosigned both.

use ed25519_dalek::SigningKey;
use obscura_ledger::head::*;
use obscura_ledger::merkle::{consistency_proof, leaf_hash, root, Hash};
use rand_core::OsRng;

const LOG: [u8; 32] = [7; 32];

struct Cluster {
    keys: Vec<SigningKey>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster {
            keys: (0..n).map(|_| SigningKey::generate(&mut OsRng)).collect(),
        }
    }

    fn cosigners(&self, quorum: usize) -> Cosigners {
        Cosigners {
            nodes: self.keys.iter().map(SigningKey::verifying_key).collect(),
            quorum,
        }
    }

    /// The head of `leaves`, cosigned by `nodes` (from 1).
    fn head(&self, leaves: &[Hash], nodes: &[u8]) -> CosignedHead {
        let head = TreeHead {
            log: LOG,
            size: leaves.len() as u64,
            root: root(leaves),
        };
        CosignedHead {
            head,
            cosignatures: nodes
                .iter()
                .map(|&n| head.cosign(n, &self.keys[usize::from(n) - 1]))
                .collect(),
        }
    }
}

fn entries(tag: &str, n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("{tag} {i}").as_bytes()))
        .collect()
}

#[test]
fn a_view_takes_only_quorum_cosigned_consistent_extensions() {
    let cluster = Cluster::new(5);
    let mut view = View::new(LOG, cluster.cosigners(3), None);
    let history = entries("entry", 20);

    // Two cosignatures, or one node's three times, or a stranger's: not a quorum.
    let two = cluster.head(&history[..5], &[1, 2]);
    assert_eq!(
        view.observe(two, &[]),
        Err(HeadError::NotCosigned { have: 2, need: 3 })
    );
    let mut thrice = cluster.head(&history[..5], &[1]);
    thrice.cosignatures = vec![thrice.cosignatures[0].clone(); 3];
    assert!(matches!(
        view.observe(thrice, &[]),
        Err(HeadError::NotCosigned { have: 1, .. })
    ));
    let stranger = Cluster::new(5);
    let mut mixed = cluster.head(&history[..5], &[1, 2]);
    mixed
        .cosignatures
        .push(mixed.head.cosign(3, &stranger.keys[2]));
    assert!(matches!(
        view.observe(mixed, &[]),
        Err(HeadError::NotCosigned { have: 2, .. })
    ));
    // Another ledger's head, however cosigned.
    let mut other = cluster.head(&history[..5], &[1, 2, 3]);
    other.head.log = [8; 32];
    assert_eq!(view.observe(other, &[]), Err(HeadError::OtherLog));

    // The first head, then extensions with their proofs.
    view.observe(cluster.head(&history[..5], &[1, 2, 3]), &[])
        .unwrap();
    let proof = consistency_proof(&history[..12], 5).unwrap();
    view.observe(cluster.head(&history[..12], &[2, 4, 5]), &proof)
        .unwrap();
    assert_eq!(view.last().unwrap().head.size, 12);
    // The same head again changes nothing.
    view.observe(cluster.head(&history[..12], &[1, 2, 3]), &[])
        .unwrap();

    // An old head shown again (a node rolled back, or a relay replayed it): refused as stale.
    let proof = consistency_proof(&history[..12], 5).unwrap();
    assert_eq!(
        view.observe(cluster.head(&history[..5], &[1, 2, 3]), &proof),
        Err(HeadError::Stale { shown: 5, last: 12 })
    );
    // A proof altered on the way: refused, and nobody blamed.
    let mut bent = consistency_proof(&history, 12).unwrap();
    bent[0][0] ^= 1;
    assert_eq!(
        view.observe(cluster.head(&history, &[1, 2, 3]), &bent),
        Err(HeadError::Unproven {
            shown: 20,
            last: 12
        })
    );
    // A rewritten history, longer, with a proof of its own making: not accepted.
    let mut rewritten = history.clone();
    rewritten[3] = leaf_hash(b"rewritten");
    let forged = consistency_proof(&rewritten, 12).unwrap();
    assert!(matches!(
        view.observe(cluster.head(&rewritten, &[1, 2, 3]), &forged),
        Err(HeadError::Unproven { .. })
    ));
    assert_eq!(view.last().unwrap().head.size, 12);
}

#[test]
fn a_split_view_names_exactly_the_nodes_that_cosigned_both_heads() {
    let cluster = Cluster::new(5);
    let honest = entries("entry", 9);
    let mut forked = honest.clone();
    forked[8] = leaf_hash(b"what another client was shown");

    // Nodes 1, 2, 3 cosign the head this client sees; nodes 3, 4, 5 the fork another client
    // sees. Node 3 signed both.
    let mut view = View::new(LOG, cluster.cosigners(3), None);
    view.observe(cluster.head(&honest, &[1, 2, 3]), &[])
        .unwrap();
    let fork = cluster.head(&forked, &[3, 4, 5]);
    match view.observe(fork.clone(), &[]) {
        Err(HeadError::SplitView {
            nodes,
            first,
            second,
        }) => {
            assert_eq!(nodes, vec![3]);
            // The evidence stands on its own: both heads verify under node 3's key.
            let cosigners = cluster.cosigners(3);
            assert!(cosigners.signers(&first).contains(&3));
            assert!(cosigners.signers(&second).contains(&3));
            assert_eq!(first.head.size, second.head.size);
            assert_ne!(first.head.root, second.head.root);
        }
        other => panic!("{other:?}"),
    }
    // The view keeps the head it had.
    assert_eq!(view.last().unwrap().head.root, root(&honest));
    // A forged cosignature in node 2's name on the fork does not make node 2 a culprit.
    let mut framed = fork;
    framed.cosignatures.push(Cosignature {
        node: 2,
        signature: vec![0; 64],
    });
    match view.observe(framed, &[]) {
        Err(HeadError::SplitView { nodes, .. }) => assert_eq!(nodes, vec![3]),
        other => panic!("{other:?}"),
    }
}
