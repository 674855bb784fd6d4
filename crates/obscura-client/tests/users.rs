//! Users with their own credentials and roles against five real nodes and three keepers, tried
//! as an attacker with an ordinary account would: a querier fetches what its own search matched
//! and nothing else, not with another user's proof, and cannot index or delete; the owner grants
//! one image to one user; a node serving another node's certificate is named; and the first
//! account of a keeper that missed the cluster's first registration cannot be taken by whoever
//! registers there next.

mod common;

use common::*;
use obscura_client::Error;
use obscura_proto::roles;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_querier_fetches_what_its_own_search_matched_and_nothing_else() {
    let c = Cluster::start("querier").await;
    let coffee = testdata("photos/coffee.png");
    let camera = testdata("photos/camera.png");
    let ids: Vec<_> = c
        .client
        .index_many(&[&coffee, &camera])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ana = c.user("ana", roles::QUERIER).await;
    let bob = c.user("bob", roles::QUERIER).await;

    // Ana's search finds coffee; its match proof entitles her to the image.
    let found = ana
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap();
    assert_eq!(found.matches[0].id, ids[0]);
    assert_eq!(found.unresolved, 0);
    assert_eq!(ana.get(ids[0]).await.unwrap().image, coffee);
    // The camera never matched a search of hers: not hers to fetch.
    assert!(matches!(ana.get(ids[1]).await, Err(Error::NotEntitled(_))));
    // Bob did not search: nothing is his, and ana's proof does not work for him at any node.
    assert!(matches!(bob.get(ids[0]).await, Err(Error::NotEntitled(_))));
    let proof = ana.match_proof(&ids[0]).unwrap();
    let err = bob
        .get_matched(ids[0], proof)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("forbidden") && err.contains("match proof"),
        "{err}"
    );
    // A querier's client holds no owner key: it cannot index, delete or grant.
    assert!(matches!(ana.index(&coffee).await, Err(Error::NotOwner)));
    assert!(matches!(ana.delete(ids[0]).await, Err(Error::NotOwner)));
    assert!(matches!(
        ana.grant(ids[1], "ana", u64::MAX),
        Err(Error::NotOwner)
    ));
    // Nor can it read the nodes' audit logs.
    for (node, log) in ana.audit_logs().await {
        let err = log.unwrap_err();
        assert!(err.to_string().contains("forbidden"), "node {node}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_grants_one_image_to_one_user_until_a_time() {
    let c = Cluster::start("grant").await;
    let coffee = testdata("photos/coffee.png");
    let id = c.client.index(&coffee).await.unwrap();
    let bob = c.user("bob", roles::QUERIER).await;
    let ana = c.user("ana", roles::QUERIER).await;
    let until = obscura_now() + 600;
    let grant = c.client.grant(id, "bob", until).unwrap();
    assert_eq!(
        bob.get_granted(id, until, grant).await.unwrap().image,
        coffee
    );
    // The grant names bob: ana cannot use it, nor can bob stretch it.
    let err = ana
        .get_granted(id, until, grant)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the owner's for user \"ana\""), "{err}");
    assert!(bob.get_granted(id, until + 1, grant).await.is_err());
    let old = c.client.grant(id, "bob", obscura_now() - 1).unwrap();
    let err = bob
        .get_granted(id, obscura_now() - 1, old)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expired"), "{err}");
}

fn obscura_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serving_another_nodes_certificate_is_named_and_not_used() {
    use obscura_cluster::node::{node_purpose, NodeSecrets};
    use obscura_tokens::keyfile::WrappingKey;
    let mut c = Cluster::start("impostor").await;
    let coffee = testdata("photos/coffee.png");
    let id = c.client.index(&coffee).await.unwrap();
    // Node 3 now answers with node 2's certificate and key (node 2's TLS key leaked to it).
    c.down(3).await;
    let secrets = |i: u8| {
        let dir = c.dir.join(format!("node{i}"));
        let key = WrappingKey::from_file(&dir.join("wrapping.key")).unwrap();
        let s: NodeSecrets = obscura_cluster::files::open_secrets(
            &std::fs::read(dir.join("secrets.sealed")).unwrap(),
            &node_purpose(i),
            &key,
        )
        .unwrap();
        (s, key, dir)
    };
    let (two, _, dir2) = secrets(2);
    let (mut three, key3, dir3) = secrets(3);
    three.tls_key_pem = two.tls_key_pem.clone();
    obscura_cluster::files::write_private_atomic(
        &dir3.join("secrets.sealed"),
        &three.seal(3, &key3, &mut rand_core::OsRng).unwrap(),
    )
    .unwrap();
    std::fs::copy(dir2.join("cert.pem"), dir3.join("cert.pem")).unwrap();
    c.up(3).await;
    // Clients ask for node 3 by its name: the handshake fails and node 3 is named.
    let rebuilt = c.client.get(id).await.unwrap();
    assert_eq!(rebuilt.image, coffee);
    assert_eq!(
        rebuilt.faults.iter().map(|f| f.node).collect::<Vec<_>>(),
        vec![3]
    );
    let err = c
        .client
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("node 3") || err.contains("[3]"), "{err}");
}

/// What a first registration leaves at keeper `j` when it passes both steps there (a run whose
/// other keepers failed between the steps leaves it at some keepers only).
async fn first_account_at(c: &Cluster, j: u8, password: &[u8]) {
    use obscura_keeper::session::ClientRegistration;
    use obscura_proto::{KeeperBody, ResponseBody};
    let (reg, request) = ClientRegistration::start(password, &mut rand_core::OsRng).unwrap();
    let body = KeeperBody::KeeperRegister {
        user: ADMIN.into(),
        request,
        bootstrap: Some(c.bootstrap),
    };
    let ResponseBody::KeeperRegistration { response } = raw(c, j, body).await else {
        panic!("keeper {j} refused the first step");
    };
    let upload = reg
        .finish(password, &response, &mut rand_core::OsRng)
        .unwrap();
    let body = KeeperBody::KeeperRegisterFinish {
        user: ADMIN.into(),
        upload,
        roles: roles::ALL,
        bootstrap: Some(c.bootstrap),
    };
    assert_eq!(raw(c, j, body).await, ResponseBody::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_a_keeper_missed_is_finished_by_running_it_again_and_by_nobody_else() {
    let mut c = Cluster::start_with(
        "bootstrap",
        Setup {
            register: false,
            ..VOPRF
        },
    )
    .await;
    // The operator's first registration reached keepers 1 and 2 only.
    for j in [1, 2] {
        first_account_at(&c, j, PASSWORD).await;
    }
    // Run again while keeper 3 is down, it stores nothing: keeper 3 may hold the account.
    c.keeper_down(3).await;
    let err = c
        .client
        .register_first(ADMIN, PASSWORD, c.bootstrap)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("keeper 3"), "{err}");
    c.keeper_up(3).await;
    // A stranger who comes next cannot make itself keeper 3's admin without the code.
    let stranger = c.fresh_client();
    let err = stranger
        .register_first("mallory", b"pw", [0; 32])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("keeper 3") && text.contains("bootstrap code"),
        "{text}"
    );
    assert!(stranger
        .register("mallory", b"pw", roles::ALL)
        .await
        .is_err());
    // The same code with another password registers nothing: keepers 1 and 2 hold the account,
    // and that password does not log in there, so keeper 3 is not asked to store it.
    let err = c
        .client
        .register_first(ADMIN, b"another password", c.bootstrap)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("keeper 1") && text.contains("does not log in there"),
        "{text}"
    );
    assert!(
        text.contains("keeper 3: not registered: another keeper holds this account"),
        "{text}"
    );
    // The operator runs the registration again and it finishes at keeper 3: keepers 1 and 2
    // count as done because its password logs in there. Before, they refused a second first
    // account and the run failed, leaving keeper 3 without one for good.
    c.client
        .register_first(ADMIN, PASSWORD, c.bootstrap)
        .await
        .unwrap();
    let report = c.client.login(ADMIN, PASSWORD).await.unwrap();
    assert_eq!(report.keepers, vec![1, 2, 3]);

    // An admin's registration while a keeper is down stores nothing, so a later run with
    // another password cannot leave the account with two; run again, it registers everywhere.
    c.keeper_down(2).await;
    let err = c
        .client
        .register("alice", PASSWORD, roles::QUERIER)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("keeper 2"), "{err}");
    assert!(c.querier_client().login("alice", PASSWORD).await.is_err());
    c.keeper_up(2).await;
    c.client
        .register("alice", PASSWORD, roles::QUERIER)
        .await
        .unwrap();
    let alice = c.querier_client();
    assert_eq!(
        alice.login("alice", PASSWORD).await.unwrap().keepers,
        vec![1, 2, 3]
    );
}
