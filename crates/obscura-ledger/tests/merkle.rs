//! The Merkle tree against the published RFC 6962 / RFC 9162 reference values (the
//! Certificate Transparency test tree of eight entries), and every proof of every tree up to
//! 40 leaves verified and tampered with.

use obscura_ledger::merkle::*;
use proptest::prelude::*;

const ENTRIES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// The tree heads of the first 0..=8 entries.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn reference() -> Vec<Hash> {
    ENTRIES
        .iter()
        .map(|e| leaf_hash(&hex::decode(e).unwrap()))
        .collect()
}

#[test]
fn tree_heads_match_the_published_reference() {
    let leaves = reference();
    for (size, want) in ROOTS.iter().enumerate() {
        assert_eq!(root(&leaves[..size]), h(want), "size {size}");
    }
}

#[test]
fn proofs_match_the_published_reference() {
    let leaves = reference();
    let inclusion = [
        (
            0,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            vec![
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, want) in inclusion {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(
            inclusion_proof(&leaves, index).unwrap(),
            want,
            "leaf {index}"
        );
        assert!(verify_inclusion(
            &leaves[index],
            index as u64,
            8,
            &want,
            &h(ROOTS[8])
        ));
    }
    let consistency = [
        (
            6,
            vec![
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
            8,
        ),
        (
            2,
            vec![
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
            5,
        ),
    ];
    for (old, want, new) in consistency {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(
            consistency_proof(&leaves[..new], old).unwrap(),
            want,
            "{old} to {new}"
        );
        assert!(verify_consistency(
            old as u64,
            new as u64,
            &h(ROOTS[old]),
            &h(ROOTS[new]),
            &want
        ));
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u32).to_be_bytes()))
        .collect()
}

#[test]
fn every_proof_of_every_tree_up_to_40_leaves_verifies_and_no_altered_one_does() {
    let all = leaves(40);
    for n in 1..=all.len() {
        let tree = &all[..n];
        let head = root(tree);
        for i in 0..n {
            let proof = inclusion_proof(tree, i).unwrap();
            assert!(verify_inclusion(
                &tree[i], i as u64, n as u64, &proof, &head
            ));
            // Another leaf, another index, another head, a bit flipped, a hash dropped.
            let other = leaf_hash(b"not in the tree");
            assert!(!verify_inclusion(&other, i as u64, n as u64, &proof, &head));
            if n > 1 {
                let j = (i + 1) % n;
                assert!(!verify_inclusion(
                    &tree[i], j as u64, n as u64, &proof, &head
                ));
            }
            // Against the head of a longer tree (size and root come together, from a cosigned
            // head).
            if n < all.len() {
                let longer = root(&all[..n + 1]);
                assert!(!verify_inclusion(
                    &tree[i],
                    i as u64,
                    n as u64 + 1,
                    &proof,
                    &longer
                ));
            }
            for k in 0..proof.len() {
                let mut bent = proof.clone();
                bent[k][0] ^= 1;
                assert!(!verify_inclusion(
                    &tree[i], i as u64, n as u64, &bent, &head
                ));
            }
            if !proof.is_empty() {
                assert!(!verify_inclusion(
                    &tree[i],
                    i as u64,
                    n as u64,
                    &proof[1..],
                    &head
                ));
            }
        }
        for m in 1..=n {
            let old = root(&tree[..m]);
            let proof = consistency_proof(tree, m).unwrap();
            assert!(
                verify_consistency(m as u64, n as u64, &old, &head, &proof),
                "{m} to {n}"
            );
            if m < n {
                for k in 0..proof.len() {
                    let mut bent = proof.clone();
                    bent[k][31] ^= 0x80;
                    assert!(!verify_consistency(m as u64, n as u64, &old, &head, &bent));
                }
                // A rewritten history: the first entry changed, the same sizes.
                let mut rewritten = tree.to_vec();
                rewritten[0] = leaf_hash(b"rewritten");
                let forged = consistency_proof(&rewritten, m).unwrap();
                assert!(!verify_consistency(
                    m as u64,
                    n as u64,
                    &old,
                    &root(&rewritten),
                    &forged
                ));
                assert!(!verify_consistency(
                    m as u64,
                    n as u64,
                    &root(&rewritten[..m]),
                    &head,
                    &forged
                ));
            }
        }
    }
    assert!(inclusion_proof(&all, 40).is_none());
    assert!(consistency_proof(&all, 0).is_none());
}

proptest! {
    /// A proof made for one tree shows nothing about a tree that differs in any leaf.
    #[test]
    fn a_proof_of_one_history_fails_for_any_other(n in 2usize..64, m in 1usize..64, at in 0usize..64) {
        let m = 1 + m % (n - 1);
        let at = at % n;
        let tree = leaves(n);
        let mut other = tree.clone();
        other[at] = leaf_hash(b"another entry");
        let proof = consistency_proof(&tree, m).unwrap();
        let holds = verify_consistency(m as u64, n as u64, &root(&tree[..m]), &root(&other), &proof);
        prop_assert!(!holds);
    }
}

#[test]
fn a_frontier_gives_every_prefix_head_and_only_its_own_peaks_fold_to_it() {
    use obscura_ledger::merkle::Frontier;
    let leaves: Vec<[u8; 32]> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut f = Frontier::default();
    assert_eq!(f.root(), root(&[]));
    for (i, leaf) in leaves.iter().enumerate() {
        f.push(leaf);
        assert_eq!(f.root(), root(&leaves[..=i]), "size {}", i + 1);
        assert_eq!(Frontier::of(&leaves[..=i]), f);
        let again = Frontier::from_peaks(f.size(), f.peaks().to_vec()).unwrap();
        assert_eq!(again.root(), f.root());
    }
    // Peaks of the wrong count are refused; altered ones fold to another head.
    assert!(Frontier::from_peaks(70, vec![[0; 32]; 2]).is_none());
    let mut peaks = f.peaks().to_vec();
    peaks[0][0] ^= 1;
    assert_ne!(Frontier::from_peaks(70, peaks).unwrap().root(), f.root());
}
