//! The client against five real node servers and three keepers on loopback over mutual TLS:
//! index, search and get end to end with VOPRF tokens (and with HMAC tokens); a node down (at
//! five nodes, and at six, where searches go on); a node whose stored share was corrupted; a
//! keeper down, a lying keeper, a spent budget.

mod common;

use common::*;
use obscura_client::{Client, Error, Fault, Party};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use redb::ReadableTable;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_search_get_across_five_nodes() {
    let mut c = Cluster::start("e2e").await;
    let names = ["camera", "coffee", "astronaut", "rocket"];
    let files = [
        testdata("photos/camera.png"),
        testdata("photos/coffee.png"),
        testdata("photos/astronaut.png"),
        testdata("photos/rocket.jpg"),
    ];
    // One batch; a file that is not an image fails alone, nothing of it written.
    let mut batch: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    batch.insert(2, b"not an image");
    let mut results = c.client.index_many(&batch).await;
    assert!(matches!(results.remove(2), Err(Error::Image(_))));
    let ids: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    for (node, s) in c.client.status().await {
        let s = s.unwrap();
        assert_eq!((s.committed, s.pending), (4, 0), "node {node}");
        assert_eq!(s.key_versions, vec![1], "node {node}");
    }
    for (name, id) in names.iter().zip(&ids) {
        let q = testdata(&format!("derived/{name}.q75.jpg"));
        let found = c.client.search(&q, 10, 10).await.unwrap();
        assert_eq!(found.matches[0].id, *id, "{name}");
        assert!(found.bytes_sent > 0 && found.bytes_received > 0);
    }
    let rebuilt = c.client.get(ids[1]).await.unwrap();
    assert_eq!(rebuilt.image, files[1]);
    assert!(rebuilt.faults.is_empty(), "{:?}", rebuilt.faults);

    // A file that is not an image: a typed error, nothing written.
    assert!(matches!(
        c.client.index(b"not an image").await,
        Err(Error::Image(_))
    ));

    // Node 5 down: get still works from k of the other 4; search needs all 2t + 1 = 5 and says
    // which node is missing; indexing fails naming node 5 and leaves nothing behind.
    c.down(5).await;
    let rebuilt = c.client.get(ids[2]).await.unwrap();
    assert_eq!(rebuilt.image, files[2]);
    assert_eq!(rebuilt.faults.len(), 1);
    assert_eq!(rebuilt.faults[0].node, 5);
    let err = c.client.search(&files[0], 10, 10).await.unwrap_err();
    assert!(err.to_string().contains("node 5"), "{err}");
    let (text, horse) = (testdata("photos/text.png"), testdata("photos/horse.png"));
    for result in c.client.index_many(&[&text, &horse]).await {
        let err = result.unwrap_err();
        assert!(err.to_string().contains("node 5"), "{err}");
    }
    for (node, s) in c.client.status().await {
        if node != 5 {
            let s = s.unwrap();
            assert_eq!((s.committed, s.pending), (4, 0), "node {node}");
        }
    }
    // The failed batch was cleaned up at nodes 1–4; its journal entry stays until node 5
    // confirms too, and is settled once node 5 is back.
    assert_eq!(
        std::fs::read_dir(c.dir.join("client/journal"))
            .unwrap()
            .count(),
        1
    );
    c.up(5).await;
    let finished = c.client.finish_interrupted().await.unwrap();
    assert_eq!((finished.removed.len(), finished.remaining.len()), (2, 0));
    assert_eq!(
        std::fs::read_dir(c.dir.join("client/journal"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        c.client.finish_interrupted().await.unwrap(),
        Default::default()
    );
    assert_eq!(
        c.client.search(&files[3], 10, 10).await.unwrap().matches[0].id,
        ids[3]
    );

    // Deleting removes it everywhere; deleting again says it is unknown.
    c.client.delete(ids[0]).await.unwrap();
    assert!(matches!(
        c.client.get(ids[0]).await,
        Err(Error::UnknownImage(_))
    ));
    assert!(matches!(
        c.client.delete(ids[0]).await,
        Err(Error::UnknownImage(_))
    ));
}

/// The test photos named `names` (`rocket` is the JPEG, the others PNGs).
fn photos(names: &[&str]) -> Vec<Vec<u8>> {
    names
        .iter()
        .map(|n| {
            testdata(&format!(
                "photos/{n}.{}",
                if *n == "rocket" { "jpg" } else { "png" }
            ))
        })
        .collect()
}

/// The default shape, 3-of-6 (t = 2, as with five nodes): with any one node down every search
/// still finds its image, names the node it missed, and the match is rebuilt; with two down,
/// searches fail at once naming both, while images are still rebuilt from the four left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_goes_on_with_a_node_down_on_six_nodes() {
    let mut c = Cluster::start_with("six", Setup { nodes: 6, ..VOPRF }).await;
    let names = ["camera", "coffee", "rocket"];
    let files = photos(&names);
    let mut ids = Vec::new();
    for f in &files {
        ids.push(c.client.index(f).await.unwrap());
    }
    for down in [6u8, 2] {
        c.down(down).await;
        for (i, name) in names.iter().enumerate() {
            let q = testdata(&format!("derived/{name}.q75.jpg"));
            let found = c.client.search(&q, 5, 10).await.unwrap();
            assert_eq!(found.matches[0].id, ids[i], "{name}, node {down} down");
        }
        let rebuilt = c.client.get(ids[1]).await.unwrap();
        assert_eq!(rebuilt.image, files[1]);
        assert_eq!(rebuilt.faults.len(), 1, "{:?}", rebuilt.faults);
        assert_eq!(rebuilt.faults[0].node, down);
        if down == 6 {
            c.up(6).await;
        }
    }
    // Nodes 2 and 6 down: a search needs five.
    c.down(6).await;
    let t0 = std::time::Instant::now();
    let err = c
        .client
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("node 2") && text.contains("node 6"), "{text}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "search hung"
    );
    assert_eq!(c.client.get(ids[2]).await.unwrap().image, files[2]);
}

/// Each fault's node and reason, in order.
fn named(faults: &[obscura_client::NodeFailure]) -> Vec<(u8, String)> {
    faults.iter().map(|f| (f.node, f.reason())).collect()
}

/// Flip one byte of `image`'s value in a node's redb table (the node must be stopped).
fn flip_byte(
    store: &std::path::Path,
    table: &str,
    image: &obscura_sharing::manifest::ImageId,
    at: usize,
) {
    let db = redb::Database::open(store).unwrap();
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(table).unwrap();
        let mut value = t.get(image.0.as_slice()).unwrap().unwrap().value().to_vec();
        value[at] ^= 0x55;
        t.insert(image.0.as_slice(), value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_shares_and_manifests_are_named_and_the_image_still_rebuilt() {
    let mut c = Cluster::start("corrupt").await;
    let file = testdata("photos/chelsea.png");
    let id = c.client.index(&file).await.unwrap();
    // Corrupt node 2's stored share and node 3's stored manifest on disk while they are down.
    c.down(2).await;
    c.down(3).await;
    flip_byte(&c.node_store(2), "image_shares", &id, 500);
    flip_byte(&c.node_store(3), "manifests", &id, 40);
    c.up(2).await;
    c.up(3).await;
    let rebuilt = c.client.get(id).await.unwrap();
    assert_eq!(rebuilt.image, file);
    assert_eq!(
        named(&rebuilt.faults),
        [
            (2, "node 2 share failed its digest".to_string()),
            (3, "returned a manifest that is not the owner's".to_string())
        ]
    );
    // The faults are typed: a caller matches on them, never on their text.
    assert!(matches!(
        rebuilt.faults[0].fault,
        obscura_client::Fault::BadShare(c) if c.node == 2
    ));
    assert_eq!(
        rebuilt.faults[1].fault,
        obscura_client::Fault::ForeignManifest
    );
    // With two more nodes down only node 2's bad share and one good one remain: named.
    c.down(4).await;
    c.down(5).await;
    let err = c.client.get(id).await.unwrap_err().to_string();
    assert!(
        err.contains("need 3 shares")
            && err.contains("node 2 share failed its digest")
            && err.contains("node 4")
            && err.contains("node 5"),
        "{err}"
    );
}

/// Read one image's stored share from a node's redb table (the node must be stopped).
fn stored_share(store: &std::path::Path, image: &obscura_sharing::manifest::ImageId) -> Vec<u8> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(store).unwrap();
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("image_shares");
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(table).unwrap();
    let value = t.get(image.0.as_slice()).unwrap().unwrap().value().to_vec();
    value
}

/// `cluster init --storage compact`: each node stores about a k-th of the image, and what it
/// stores is ciphertext. A node that reads its own store finds no byte run of the photo in its
/// piece (the code is systematic: without the encryption, nodes 1..=k would hold the file in
/// the clear); a node that alters its piece is named and the image still rebuilt from any k,
/// recovery pieces included; and with fewer than k good pieces nothing is returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_storage_keeps_a_kth_per_node_names_a_bad_piece_and_rebuilds_from_any_k() {
    let mut c = Cluster::start_with(
        "compact",
        Setup {
            storage: obscura_client::config::StorageKind::Compact,
            ..VOPRF
        },
    )
    .await;
    let file = testdata("photos/chelsea.png");
    let id = c.client.index(&file).await.unwrap();

    let expected = obscura_sharing::compact::share_len(file.len() as u64, K).unwrap();
    let mut stored = 0;
    for node in 1..=N as u8 {
        c.down(node).await;
        let share = stored_share(&c.node_store(node), &id);
        assert_eq!(share.len(), expected, "node {node}");
        stored += share.len();
        // Not one 16-byte run of the photo appears in any node's share.
        let piece = &share[obscura_sharing::compact::KEY_SHARE_LEN..];
        for run in file.chunks_exact(16).step_by(7) {
            assert!(
                !piece.windows(16).any(|w| w == run),
                "node {node} holds the photo's bytes in the clear"
            );
        }
    }
    let ratio = stored as f64 / file.len() as f64;
    assert!(ratio <= N as f64 / K as f64 * 1.02, "{ratio}");

    // Node 1 (an original piece) alters its piece, node 3 its key share.
    flip_byte(&c.node_store(1), "image_shares", &id, 600);
    flip_byte(&c.node_store(3), "image_shares", &id, 5);
    for node in 1..=N as u8 {
        c.up(node).await;
    }
    let rebuilt = c.client.get(id).await.unwrap();
    assert_eq!(rebuilt.image, file);
    assert_eq!(
        named(&rebuilt.faults),
        [
            (1, "node 1 share failed its digest".to_string()),
            (3, "node 3 share failed its digest".to_string())
        ]
    );

    // Nodes 2, 4 and 5 only: one original piece and both recovery pieces.
    c.down(1).await;
    c.down(3).await;
    assert_eq!(c.client.get(id).await.unwrap().image, file);
    // Two good pieces are not enough, and the bad one is named.
    c.up(1).await;
    c.down(5).await;
    let err = c.client.get(id).await.unwrap_err().to_string();
    assert!(
        err.contains("need 3 shares") && err.contains("node 1 share failed its digest"),
        "{err}"
    );
}

/// A cluster made when every node had its own token key (its elements hash other inputs, so its
/// tokens would match nothing) is refused with a message to make it again, not used.
#[test]
fn a_cluster_made_with_a_token_key_per_node_is_refused_with_a_message_to_make_it_again() {
    let dir = std::env::temp_dir().join(format!(
        "obscura-client-per-node-keys-{}-{}",
        std::process::id(),
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    ));
    let opt = obscura_cluster::deal::InitOptions::new(N, K, "127.0.0.1", 30_000, 30_100);
    obscura_cluster::deal::init(&dir, &opt).unwrap();
    assert!(obscura_client::config::load(&dir).is_ok());
    // As an older version wrote it: a row of public shares per node.
    edit_json(
        &dir.join("client.json"),
        |c: &mut obscura_client::config::ClientConfig| {
            c.keeper_public_shares = vec![c.keeper_public_shares[0].clone(); N];
        },
    );
    let err = obscura_client::config::load(&dir).err().expect("refused");
    assert!(
        err.to_string().contains("older version") && err.to_string().contains("cluster init"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The same index and search with HMAC tokens: the `--tokens hmac` path still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_tokens_still_index_and_search() {
    let c = Cluster::start_with(
        "hmac",
        Setup {
            voprf: false,
            ..VOPRF
        },
    )
    .await;
    assert!(!c.client.uses_keepers());
    let id = c
        .client
        .index(&testdata("photos/coffee.png"))
        .await
        .unwrap();
    let found = c
        .client
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap();
    assert_eq!(found.matches[0].id, id);
    assert!(found.keeper_faults.is_empty());
}

/// Any T of the M keepers serve; with fewer, tokens fail naming the keepers that did not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_down_changes_nothing_until_fewer_than_t_remain() {
    let mut c = Cluster::start("keeper-down").await;
    assert!(c.client.uses_keepers());
    c.keeper_down(2).await;
    let id = c
        .client
        .index(&testdata("photos/camera.png"))
        .await
        .unwrap();
    for _ in 0..4 {
        let found = c
            .client
            .search(&testdata("derived/camera.q75.jpg"), 5, 10)
            .await
            .unwrap();
        assert_eq!(found.matches[0].id, id);
        // Keeper 2 is named whenever it was asked; the others answered instead.
        assert!(found.keeper_faults.iter().all(|f| f.keeper == 2));
    }
    c.keeper_down(3).await;
    let err = c
        .client
        .search(&testdata("derived/camera.q75.jpg"), 5, 10)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Tokens(_)), "{text}");
    assert!(
        text.contains("keeper 2") && text.contains("keeper 3"),
        "{text}"
    );
    // Keepers that are only down are named as failures, never as culprits.
    assert_eq!(err.culprits(), [], "{text}");
    // Indexing fails the same way, before anything reaches a node.
    let err = c.client.index(&testdata("photos/coffee.png")).await;
    assert!(matches!(err, Err(Error::Tokens(_))), "{err:?}");
    for (node, s) in c.client.status().await {
        let s = s.unwrap();
        assert_eq!((s.committed, s.pending), (1, 0), "node {node}");
    }
    c.keeper_up(2).await;
    assert!(c.client.index(&testdata("photos/coffee.png")).await.is_ok());
}

/// A keeper whose answers do not match its public share is named and dropped; the others
/// answer, and every search still finds its image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_keeper_is_named_and_the_others_answer() {
    let mut c = Cluster::start_with(
        "lying",
        Setup {
            lying_keepers: &[1],
            ..VOPRF
        },
    )
    .await;
    let id = c
        .client
        .index(&testdata("photos/astronaut.png"))
        .await
        .unwrap();
    let mut named = 0;
    for _ in 0..12 {
        let found = c
            .client
            .search(&testdata("derived/astronaut.q75.jpg"), 5, 10)
            .await
            .unwrap();
        assert_eq!(found.matches[0].id, id);
        for f in &found.keeper_faults {
            assert_eq!(f.keeper, 1, "{f:?}");
            assert!(
                matches!(
                    f.fault,
                    Fault::BadEvaluation {
                        error: obscura_keeper::Error::Proof
                    }
                ),
                "{f:?}"
            );
            assert!(f.fault.is_misbehaviour());
            named += 1;
        }
    }
    // Each search starts at a random keeper, so keeper 1 is asked in most of them.
    assert!(named > 0);
    // With keeper 3 down, only the liar and keeper 2 remain: no tokens, and the liar is named.
    c.keeper_down(3).await;
    let err = c
        .client
        .search(&testdata("derived/astronaut.q75.jpg"), 5, 10)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("keeper 1: token evaluation: the DLEQ proof does not verify"),
        "{text}"
    );
    // The liar is the one culprit; keeper 3, down, is not one.
    assert_eq!(err.culprits(), [Party::Keeper(1)], "{text}");
}

/// Two keepers of three lie: no tokens can be had, and both are named every time, whichever
/// keepers a search asks first. When the two asked first both fail, the third is asked as a
/// witness: its proof verifies, so the client's public shares are right and the failures are
/// the keepers' own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lying_keepers_are_named_by_the_honest_ones_proof() {
    let c = Cluster::start_with(
        "two-liars",
        Setup {
            lying_keepers: &[1, 2],
            ..VOPRF
        },
    )
    .await;
    // Each search starts at a random keeper: in twelve, the two liars are asked first in one
    // at least, but for a chance of (2/3)^12 < 1%.
    for _ in 0..12 {
        let err = c
            .client
            .search(&testdata("derived/astronaut.q75.jpg"), 5, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Tokens(_)), "{err}");
        assert_eq!(
            err.culprits(),
            [Party::Keeper(1), Party::Keeper(2)],
            "{err}"
        );
    }
}

/// A rotation run through its phases from the cluster directory: a plan of another state of
/// the cluster has no phase, the clients' configuration is switched before the old version is
/// erased, and a client made from the directory afterwards finds every image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_runs_its_phases_in_order_from_the_cluster_directory() {
    use obscura_client::rotation::{Moves, Phase, PlanError, RotationPlan};
    let c = Cluster::start("phases").await;
    let id = c
        .client
        .index(&testdata("photos/coffee.png"))
        .await
        .unwrap();
    let config = obscura_client::config::read_config(&c.dir).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let stale = RotationPlan::draw(7, M, KT, &mut rng).unwrap();
    assert!(matches!(
        Phase::of(stale, config.key_version),
        Err(PlanError::OtherState {
            from: 7,
            to: 8,
            clients: 1
        })
    ));
    let plan = RotationPlan::next_for(&config, &mut rng).unwrap();
    let Ok(Phase::Planned(planned)) = Phase::of(plan, config.key_version) else {
        panic!("a fresh plan is planned")
    };
    let mut moving = planned
        .rekey_keepers(&c.client)
        .await
        .unwrap()
        .begin(&c.client)
        .await
        .unwrap();
    let moved = loop {
        match moving.all_moved() {
            Moves::Done(moved) => break moved,
            Moves::Left(left) => moving = left.step(&c.client, 1).await.unwrap(),
        }
    };
    let switched = moved.switch(&c.dir).unwrap();
    let config = obscura_client::config::read_config(&c.dir).unwrap();
    assert_eq!(config.key_version, 2);
    switched.finish(&c.client).await.unwrap();
    let fresh = c.fresh_client();
    fresh.login(ADMIN, PASSWORD).await.unwrap();
    finds(&fresh, "coffee", id).await;
}

/// A client configured for another cluster (other keys' public shares, another owner's key)
/// finds every server failing its checks alike: it names no server a culprit, since the fault
/// may as well be its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_configured_for_another_cluster_blames_no_server() {
    let c = Cluster::start_with("misconfigured", VOPRF).await;
    let id = c
        .client
        .index(&testdata("photos/astronaut.png"))
        .await
        .unwrap();
    // Each keeper's public share doubled: still one polynomial, of another key.
    let parts = obscura_client::config::load(&c.dir).unwrap();
    let obscura_client::TokenParts::Voprf(keepers) = parts.tokens else {
        panic!("a VOPRF cluster")
    };
    let doubled = keepers
        .public_shares
        .iter()
        .map(|per_node| per_node.iter().map(|p| p + p).collect())
        .collect();
    let client = c.client_at(1, doubled).await;
    let err = client
        .search(&testdata("derived/astronaut.q75.jpg"), 5, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tokens(_)), "{err}");
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert_eq!(err.culprits(), [], "{err}");

    // Another owner's key: no node's manifest verifies.
    let client = c.adjusted_client(|p| {
        p.owner_public = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    });
    client.login(ADMIN, PASSWORD).await.unwrap();
    let err = client.get(id).await.unwrap_err();
    assert!(err.to_string().contains("not the owner's"), "{err}");
    assert_eq!(err.culprits(), [], "{err}");
}

/// A client's budget per window is enforced at every keeper; refusals are audited there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_is_refused_and_audited() {
    // One search costs 8 × 9 = 72 evaluations at each keeper asked, whatever the number of
    // nodes (one cluster key): two fit in 200.
    let mut c = Cluster::start_with(
        "budget",
        Setup {
            budget: 200,
            ..VOPRF
        },
    )
    .await;
    let q = testdata("derived/rocket.q75.jpg");
    let mut answered = 0;
    let err = loop {
        match c.client.search(&q, 5, 10).await {
            Ok(_) => answered += 1,
            Err(e) => break e.to_string(),
        }
        assert!(answered <= 3, "more searches than the budgets allow");
    };
    // 3 keepers × 2 searches each, 2 keepers per search: at most 3 searches, and at least 2
    // (the third fails when its first two keepers are both spent).
    assert!((2..=3).contains(&answered), "{answered}: {err}");
    assert!(err.contains("evaluation budget spent"), "{err}");
    let mut audited = 0;
    for keeper in 1..=M as u8 {
        c.keeper_down(keeper).await;
        let store =
            obscura_store::keeper::KeeperStore::open(&c.keeper_store(keeper), keeper).unwrap();
        let entries = store.audit_entries().unwrap();
        let refused = entries.iter().any(|e| {
            e.kind == obscura_store::AuditKind::Refused
                && String::from_utf8_lossy(&e.detail).contains("over budget")
        });
        // Every keeper that refused in the last search has the refusal in its log.
        if err.contains(&format!("keeper {keeper}: evaluation budget spent")) {
            assert!(refused, "keeper {keeper} audited no refusal");
        }
        audited += usize::from(refused);
    }
    assert!(audited >= 1);
}

async fn finds(client: &Client, name: &str, id: obscura_sharing::manifest::ImageId) {
    let q = testdata(&format!("derived/{name}.q75.jpg"));
    let found = client.search(&q, 10, 10).await.unwrap();
    assert!(
        !found.matches.is_empty(),
        "{name}: {} candidates, {} hits",
        found.candidates,
        found.stage1_hits
    );
    assert_eq!(found.matches[0].id, id, "{name}");
}

/// A key rotation stopped half-way (with a node and a keeper restarted in the middle) and
/// resumed: every image stays findable throughout, under the old version and the new one, an
/// image indexed meanwhile under the old version lands under the new one, and once finished
/// only the new version works, at nodes and keepers alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_interrupted_half_way_resumes_with_nothing_lost() {
    use obscura_client::rotation::RotationPlan;
    let mut c = Cluster::start("rotation").await;
    let names = ["camera", "coffee", "astronaut", "rocket"];
    let files = photos(&names);
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let mut ids: Vec<_> = c
        .client
        .index_many(&refs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let plan = RotationPlan::draw(1, M, KT, &mut rng).unwrap();
    let next = c.client.rekey_keepers(&plan).await.unwrap();
    // A keeper restarted now has sealed its shares of version 2.
    c.keeper_down(2).await;
    c.keeper_up(2).await;
    let begun = c.client.begin_rotation(&plan).await.unwrap();
    assert!(begun
        .iter()
        .all(|r| r.next == Some(2) && r.total == 4 && !r.done));
    let half = c.client.rotation_step(&plan, 2).await.unwrap();
    assert!(half
        .iter()
        .all(|r| r.moved == 2 && r.postings == 16 && !r.done));
    for (node, s) in c.client.status().await {
        assert_eq!(s.unwrap().key_versions, vec![1, 2], "node {node}");
    }
    for (keeper, s) in c.client.keeper_status().await {
        assert_eq!(s.unwrap().key_versions, vec![1, 2], "keeper {keeper}");
    }

    // Interrupted: node 3 goes down and comes back mid-rotation.
    c.down(3).await;
    c.up(3).await;
    let v2 = c.client_at(2, next.clone()).await;
    for (name, id) in names.iter().zip(&ids) {
        finds(&c.client, name, *id).await;
        finds(&v2, name, *id).await;
    }
    // Indexed under version 1 meanwhile: the nodes write it under version 2.
    let chelsea = testdata("photos/chelsea.png");
    ids.push(c.client.index(&chelsea).await.unwrap());
    finds(&c.client, "chelsea", ids[4]).await;
    finds(&v2, "chelsea", ids[4]).await;
    // And one indexed under version 2 meanwhile: clients still on version 1 find it too.
    ids.push(v2.index(&testdata("photos/horse.png")).await.unwrap());
    finds(&c.client, "horse", ids[5]).await;
    finds(&v2, "horse", ids[5]).await;

    // Finishing before every image moved is refused, and leaves both versions served.
    let err = c.client.finish_rotation(&plan).await.unwrap_err();
    assert!(err.to_string().contains("remain to be moved"), "{err}");
    finds(&c.client, "coffee", ids[1]).await;

    // Resumed: the same plan again, steps to the end.
    assert_eq!(c.client.rekey_keepers(&plan).await.unwrap(), next);
    c.client.begin_rotation(&plan).await.unwrap();
    let mut steps = 0;
    loop {
        let s = c.client.rotation_step(&plan, 2).await.unwrap();
        steps += 1;
        if s.iter().all(|r| r.done) {
            assert!(s.iter().all(|r| r.postings == 4 * 8), "{s:?}");
            break;
        }
    }
    assert!(steps <= 3);
    // A different plan for a version the keepers already hold is refused.
    let other = RotationPlan::draw(1, M, KT, &mut rng).unwrap();
    assert!(c.client.rekey_keepers(&other).await.is_err());
    c.client.finish_rotation(&plan).await.unwrap();
    c.client.finish_rotation(&plan).await.unwrap();

    // Only version 2 now, even after restarts.
    c.keeper_down(1).await;
    c.keeper_up(1).await;
    v2.login(ADMIN, PASSWORD).await.unwrap();
    c.down(1).await;
    c.up(1).await;
    let err = c.client.search(&files[0], 10, 10).await.unwrap_err();
    assert!(err.to_string().contains("version 1"), "{err}");
    for (i, name) in names.iter().chain(["chelsea", "horse"].iter()).enumerate() {
        finds(&v2, name, ids[i]).await;
    }
    assert_eq!(v2.get(ids[4]).await.unwrap().image, chelsea);
    for (node, log) in c.client.audit_logs().await {
        let changes = log
            .unwrap()
            .entries
            .iter()
            .filter(|e| e.kind == obscura_store::AuditKind::KeyChange.tag())
            .count();
        assert!(changes >= 3, "node {node}: {changes} key changes audited");
    }
}

/// An exhaustive search scans every stored image: its candidates are all of them (no token is
/// asked of the keepers, no lookup made), and its ranking is the plaintext scan's within τ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhaustive_search_ranks_every_image_like_a_plaintext_scan() {
    let c = Cluster::start_with("exhaustive", Setup { nodes: 6, ..VOPRF }).await;
    let names = ["camera", "coffee", "astronaut", "rocket", "horse"];
    let files = photos(&names);
    let mut stored = Vec::new();
    for f in &files {
        let id = c.client.index(f).await.unwrap();
        stored.push((id, obscura_phash::phash64(f).unwrap().0));
    }
    for name in names {
        let q = testdata(&format!("derived/{name}.q75.jpg"));
        let qh = obscura_phash::phash64(&q).unwrap().0;
        let found = c.client.search_exhaustive(&q, 10, 10).await.unwrap();
        assert_eq!(
            found.candidates,
            names.len(),
            "{name}: every image a candidate"
        );
        assert_eq!(
            found.tokens,
            std::time::Duration::ZERO,
            "{name}: no tokens asked"
        );
        let mut plain: Vec<(u32, obscura_sharing::manifest::ImageId)> = stored
            .iter()
            .map(|&(id, h)| ((h ^ qh).count_ones(), id))
            .filter(|&(d, _)| d <= 10)
            .collect();
        plain.sort();
        let private: Vec<_> = found.matches.iter().map(|m| (m.distance, m.id)).collect();
        assert_eq!(private, plain, "{name}");
        // The Stage-1 search finds the same (the default policy drops nothing within τ).
        let staged = c.client.search(&q, 10, 10).await.unwrap();
        assert_eq!(staged.matches, found.matches, "{name}");
    }
}

/// A search scans a list longer than one Stage-2 request takes (16,384 candidates) in parts,
/// all under one check of the query, each part's masks its own: 24,000 images written into
/// every node's store, scanned exhaustively, rank like a plaintext scan, with matches planted
/// so that both parts hold some, and every match resolved; two nodes each lack an image, and
/// still take the union of the lists. Before, a node refused any list over 16,384 candidates,
/// so no exhaustive search could scan such a cluster, and one over the images it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_longer_than_one_part_is_evaluated_in_parts_and_ranks_like_a_plaintext_scan() {
    const IMAGES: usize = 24_000;
    let mut c = Cluster::start_with(
        "parts",
        Setup {
            nodes: 6,
            voprf: false,
            ..VOPRF
        },
    )
    .await;
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let query = rng.next_u64();
    // 40 hashes within τ of the query (distances 0..=10), the rest random (none near).
    let hashes: Vec<u64> = (0..IMAGES)
        .map(|i| match i {
            0..40 => query ^ (((1u128 << (i % 11)) - 1) as u64).rotate_left(i as u32),
            _ => rng.next_u64(),
        })
        .collect();
    // Token of band b of a hash at node i: a table of every (band, value).
    let table = c
        .client
        .index_tokens(
            &(0..=255u8)
                .map(|v| u64::from_be_bytes([v; 8]))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let uploads: Vec<obscura_client::Upload> = hashes
        .iter()
        .map(|&h| {
            let mut file = [0u8; 32];
            rng.fill_bytes(&mut file);
            c.client.upload(&file, h).unwrap()
        })
        .collect();
    for node in 1..=6u8 {
        c.down(node).await;
        let store = obscura_store::Store::open(&c.node_store(node), node).unwrap();
        let i = usize::from(node) - 1;
        // Nodes 5 and 6 each lack one image (as after an interrupted index): the union of
        // the lists names both, and no node may refuse the scan for holding fewer.
        let lacking = |u: &obscura_client::Upload| {
            (node == 5 && u.id == uploads[100].id) || (node == 6 && u.id == uploads[101].id)
        };
        for batch in uploads.chunks(2000) {
            let batch: Vec<&obscura_client::Upload> =
                batch.iter().filter(|u| !lacking(u)).collect();
            let images: Vec<obscura_store::NewImage<'_>> = batch
                .iter()
                .map(|u| obscura_store::NewImage {
                    id: u.id,
                    manifest: &u.manifest,
                    image_share: &u.parts[i].image_share,
                    hash_share: &u.parts[i].hash_share,
                    tokens: std::array::from_fn(|b| {
                        table[usize::from(u.hash.to_be_bytes()[b])][i].tokens[b]
                    }),
                    key_version: 1,
                    elements: None,
                    retired_tokens: None,
                })
                .collect();
            store.prepare_many(&images, now()).unwrap();
            let ids: Vec<_> = batch.iter().map(|u| u.id).collect();
            store.commit_many(&ids, now()).unwrap();
        }
        drop(store);
        c.up(node).await;
    }
    let found = c
        .client
        .search_hash_with(
            query,
            64,
            10,
            std::time::Instant::now(),
            obscura_client::Scan::Exhaustive,
        )
        .await
        .unwrap();
    assert_eq!(found.candidates, IMAGES, "every image a candidate");
    let mut plain: Vec<(u32, obscura_sharing::manifest::ImageId)> = hashes
        .iter()
        .zip(&uploads)
        .map(|(&h, u)| ((h ^ query).count_ones(), u.id))
        .filter(|&(d, _)| d <= 10)
        .collect();
    plain.sort();
    assert_eq!(plain.len(), 40);
    let private: Vec<_> = found.matches.iter().map(|m| (m.distance, m.id)).collect();
    assert_eq!(private, plain);
    assert_eq!(found.unresolved, 0);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
