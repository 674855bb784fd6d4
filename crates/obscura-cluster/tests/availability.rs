//! What a cluster shape withstands, as `cluster init` reports it: the default keeps searching
//! with a node down, and no shape claims more than its checks allow.

use obscura_cluster::deal::{Availability, DEFAULT_NODES, DEFAULT_THRESHOLD};

#[test]
fn the_default_cluster_searches_with_a_node_down_and_keeps_t_at_2() {
    let a = Availability::of(DEFAULT_NODES, DEFAULT_THRESHOLD).unwrap();
    assert_eq!((a.collusion, a.search_down, a.get_down), (2, 1, 3));
    assert_eq!(
        a.describe(),
        "any 2 nodes together learn nothing; searches go on with 1 node down, rebuilding an \
         image with 3 down; indexing needs every node"
    );
    // 3-of-5, the shape before: every search needs every node.
    let five = Availability::of(5, 3).unwrap();
    assert_eq!(five.search_down, 0);
    assert!(five.describe().contains("every search needs every node"));
}

/// For every shape, the nodes a search still has can answer (2t + 1) and any two such sets
/// share t + 1 nodes, so two nodes that each saw the query check pass saw the same polynomials.
#[test]
fn no_shape_claims_more_than_its_checks_allow() {
    for n in 2..=16 {
        for k in 1..=n + 1 {
            let Some(a) = Availability::of(n, k) else {
                assert!(k < 2 || 2 * (k - 1) + 1 > n, "{k}-of-{n} refused");
                continue;
            };
            let t = k - 1;
            let left = n - a.search_down;
            assert!(left > 2 * t, "{k}-of-{n}");
            assert!(
                2 * left > n + t,
                "{k}-of-{n}: two sets share fewer than t + 1"
            );
            // And no node more could be spared.
            let one_more = left - 1;
            assert!(
                one_more < 2 * t + 1 || 2 * one_more < n + t + 1,
                "{k}-of-{n}"
            );
            assert_eq!(a.get_down, n - k);
        }
    }
}
