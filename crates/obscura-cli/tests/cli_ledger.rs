//! The cluster ledger on real processes: the owner's index, approval and deletion each become
//! an entry a majority of the six nodes cosigns; a node down during an append is brought up to
//! date and agrees; `obscura ledger verify` rebuilds the state from the entries alone; a node
//! whose operator cuts its ledger does not serve, and one that also hides the cut is named as
//! rolled back by its own earlier signature; a head that colluding nodes cosign for another
//! history is a split view naming them.

mod common;

use std::path::Path;

use common::*;
use ed25519_dalek::SigningKey;
use obscura_cluster::node::{node_purpose, NodeSecrets};
use obscura_ledger::head::{CosignedHead, TreeHead};
use obscura_tokens::keyfile::WrappingKey;
use serde_json::Value;

fn json_of(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn verify(cluster: &str, extra: &[&str]) -> (bool, Value) {
    let mut args = vec!["ledger", "verify", "--cluster", cluster, "--json"];
    args.extend_from_slice(extra);
    let out = obscura(&args);
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out.status.success(), v)
}

fn node_audit_key(dir: &Path, node: u8) -> SigningKey {
    let d = dir.join(format!("node{node}"));
    let wrapping = WrappingKey::from_file(&d.join("wrapping.key")).unwrap();
    let secrets: NodeSecrets = obscura_cluster::files::open_secrets(
        &std::fs::read(d.join("secrets.sealed")).unwrap(),
        &node_purpose(node),
        &wrapping,
    )
    .unwrap();
    SigningKey::from_bytes(&secrets.audit_key)
}

fn cosigners(v: &Value) -> Vec<u64> {
    v["cosigners"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn the_ledger_records_the_owners_acts_catches_up_a_node_and_names_rollbacks_and_split_views() {
    let dir = init_cluster("ledger");
    let cluster = dir.to_str().unwrap();
    let mut up = start(&dir);

    // Three images: entries 0..3, cosigned by all six nodes.
    let photos = three_photos("ledger");
    let v = json_of(&obscura(&[
        "index",
        "--cluster",
        cluster,
        photos.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(
        (v["ledger"]["first"].as_u64(), v["ledger"]["size"].as_u64()),
        (Some(0), Some(3)),
        "{v}"
    );
    assert_eq!(cosigners(&v["ledger"]), [1, 2, 3, 4, 5, 6]);
    let ids: Vec<String> = v["indexed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    let (ok, v) = verify(cluster, &[]);
    assert!(ok, "{v}");
    assert_eq!(v["size"], 3);

    // Node 6 is down while the owner approves a clean-room work: five cosign, and the append
    // stands.
    stop_node(&dir, 6, "TERM");
    let key = dir.join("recipient.key");
    let out = obscura(&["room", "keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let recipient = text(&out).trim().to_owned();
    let manifest = serde_json::json!({
        "inputs": [{"image": ids[0]}],
        "output": {"kind": "json", "max_bytes": 4096},
        "limits": {"fuel": 200_000_000u64, "memory_bytes": 64u64 << 20},
        "recipients": [recipient],
    });
    let manifest_path = dir.join("stats.manifest.json");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let work = dir.join("stats.work.json");
    let module = format!(
        "{}/../../examples/room/colour_stats.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = obscura(&[
        "room",
        "work",
        "--module",
        &module,
        "--manifest",
        manifest_path.to_str().unwrap(),
        "--out",
        work.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let approval = dir.join("stats.approval.json");
    let out = obscura(&[
        "room",
        "approve",
        "--cluster",
        cluster,
        "--work",
        work.to_str().unwrap(),
        "--out",
        approval.to_str().unwrap(),
        "--json",
    ]);
    let v = json_of(&out);
    assert_eq!(cosigners(&v["ledger"]), [1, 2, 3, 4, 5], "{v}");
    assert!(
        text(&out).contains("warning: ledger: node 6"),
        "{}",
        text(&out)
    );

    // Back, node 6 is behind, not at fault; a sync brings it up, anchors every node's audit
    // log, and all six agree.
    up.restart_node(6);
    wait_for_status(&dir);
    let (ok, v) = verify(cluster, &[]);
    assert!(ok, "{v}");
    assert_eq!(
        (v["size"].as_u64(), v["nodes"][5]["size"].as_u64()),
        (Some(4), Some(3)),
        "{v}"
    );
    let v = json_of(&obscura(&[
        "ledger",
        "sync",
        "--cluster",
        cluster,
        "--json",
    ]));
    assert_eq!(
        v["caught_up"],
        serde_json::json!([{"node": 6, "from": 3}]),
        "{v}"
    );
    assert_eq!(cosigners(&v), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        (v["size"].as_u64(), v["anchored"].clone()),
        (Some(11), serde_json::json!([1, 2, 3, 4, 5, 6])),
        "{v}"
    );

    // A deletion; the state rebuilt from the entries alone: two images, one approval.
    let out = obscura(&["delete", "--cluster", cluster, &ids[2]]);
    assert!(out.status.success(), "{}", text(&out));
    let v = json_of(&obscura(&[
        "ledger",
        "show",
        "--cluster",
        cluster,
        "--json",
    ]));
    assert_eq!(v["size"], 12, "{v}");
    assert_eq!(
        (
            v["state"]["images"].as_u64(),
            v["state"]["approvals"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let kinds: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["transition"].as_str().unwrap())
        .collect();
    let mut expected = vec!["image registered"; 3];
    expected.extend(["work approved", "synced"]);
    expected.extend(["audit checkpoint"; 6]);
    expected.push("image deleted");
    assert_eq!(kinds, expected);
    let anchor = v["entries"][7]["fields"].clone();
    assert_eq!(anchor["node"], 3, "{v}");
    let (ok, v) = verify(cluster, &[]);
    assert!(ok, "{v}");
    let head: TreeHead = {
        let kept: CosignedHead =
            serde_json::from_slice(&std::fs::read(dir.join("client/ledger-head.json")).unwrap())
                .unwrap();
        assert_eq!(kept.head.size, 12);
        kept.head
    };

    // Node 3's operator cuts its audit log back before the checkpoint it anchored, and the
    // node signs checkpoints of the shorter log from then on: a client that never saw the log
    // before (no pins of its own) finds a valid chain, and the ledger's anchor names the cut.
    let out = obscura(&["audit", "verify", "--cluster", cluster, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    stop_node(&dir, 3, "TERM");
    let anchored = anchor["seq"].as_u64().unwrap();
    {
        let db = redb::Database::open(dir.join("node3").join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let def: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
        txn.open_table(def)
            .unwrap()
            .retain(|seq, _| seq < anchored)
            .unwrap();
        txn.commit().unwrap();
    }
    up.restart_node(3);
    wait_for_status(&dir);
    std::fs::remove_file(dir.join("client/audit-heads.json")).unwrap();
    let out = obscura(&["audit", "verify", "--cluster", cluster, "--json"]);
    assert!(!out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = v["nodes"][2]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("entry {anchored} as it anchored it")),
        "{v}"
    );
    assert_eq!(v["nodes"][0]["ok"], true, "{v}");

    // Four of six nodes (a majority) cosign another history of twelve entries, and show it to
    // some client: this client, shown that head, names the four.
    let forged = TreeHead {
        root: [0x5a; 32],
        ..head
    };
    let split = CosignedHead {
        head: forged,
        cosignatures: (1..=4)
            .map(|x| forged.cosign(x, &node_audit_key(&dir, x)))
            .collect(),
    };
    let forged_path = dir.join("forged-head.json");
    std::fs::write(&forged_path, serde_json::to_vec(&split).unwrap()).unwrap();
    let (ok, v) = verify(cluster, &["--head", forged_path.to_str().unwrap()]);
    assert!(!ok, "{v}");
    let faults = v["faults"].to_string();
    assert!(
        faults.contains("split view") && faults.contains("[1, 2, 3, 4]"),
        "{faults}"
    );

    // Node 2's operator cuts the deletion from its ledger: the node no longer starts.
    stop_node(&dir, 2, "TERM");
    let store = dir.join("node2").join("store.redb");
    let edit = |f: &dyn Fn(&redb::WriteTransaction)| {
        let db = redb::Database::open(&store).unwrap();
        let txn = db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
    };
    edit(&|txn| {
        let def: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("ledger");
        txn.open_table(def).unwrap().remove(11).unwrap();
    });
    let out = obscura(&["node", "run", dir.join("node2/node.json").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("cut or rewritten"), "{}", text(&out));

    // It also drops the heads it kept and committed to, and starts: clients name it, by the signature it gave
    // on the head of twelve entries.
    edit(&|txn| {
        let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        let mut meta = txn.open_table(def).unwrap();
        meta.remove("ledger_cosigned").unwrap();
        meta.remove("ledger_committed").unwrap();
    });
    up.restart_node(2);
    wait_for_status(&dir);
    let (ok, v) = verify(cluster, &[]);
    assert!(!ok, "{v}");
    assert!(
        v["nodes"][1]["error"]
            .as_str()
            .unwrap_or("")
            .contains("rolled back"),
        "{v}"
    );
    assert_eq!(v["nodes"][0]["ok"], true, "{v}");

    // A sync brings node 2 back and anchors every log again, node 3's shorter one too: the
    // earlier anchor still names node 3's cut to a client that never saw its log.
    let v = json_of(&obscura(&[
        "ledger",
        "sync",
        "--cluster",
        cluster,
        "--json",
    ]));
    assert_eq!(
        v["caught_up"],
        serde_json::json!([{"node": 2, "from": 11}]),
        "{v}"
    );
    assert_eq!(v["anchored"], serde_json::json!([1, 2, 3, 4, 5, 6]), "{v}");
    std::fs::remove_file(dir.join("client/audit-heads.json")).unwrap();
    let out = obscura(&["audit", "verify", "--cluster", cluster, "--json"]);
    assert!(!out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = v["nodes"][2]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("entry {anchored} as it anchored it")),
        "{v}"
    );
    let (ok, v) = verify(cluster, &[]);
    assert!(ok, "{v}");
}

#[test]
fn a_node_that_makes_up_a_longer_history_of_its_own_entries_is_passed_over_and_overwritten() {
    use obscura_ledger::entry::{Entry, Transition};
    use obscura_ledger::merkle::Frontier;
    use redb::{ReadableDatabase, ReadableTable};

    let dir = init_cluster("ledger-liar");
    let cluster = dir.to_str().unwrap();
    let mut up = start(&dir);
    let photos = three_photos("ledger-liar");
    let v = json_of(&obscura(&[
        "index",
        "--cluster",
        cluster,
        photos.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["ledger"]["size"], 3, "{v}");

    // Node 4's operator appends forty entries of its own to its ledger, each validly signed
    // with its key after the ones before (anchors of audit heads it never had): the longest
    // history any node shows, and one no other node took.
    stop_node(&dir, 4, "TERM");
    let key = node_audit_key(&dir, 4);
    let store = dir.join("node4").join("store.redb");
    let def: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("ledger");
    let held: Vec<Entry> = {
        let db = redb::Database::open(&store).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(def).unwrap();
        table
            .iter()
            .unwrap()
            .map(|r| postcard::from_bytes(r.unwrap().1.value()).unwrap())
            .collect()
    };
    let log = {
        let kept: CosignedHead =
            serde_json::from_slice(&std::fs::read(dir.join("client/ledger-head.json")).unwrap())
                .unwrap();
        kept.head.log
    };
    let mut tree = Frontier::of(&held.iter().map(Entry::leaf).collect::<Vec<_>>());
    let made_up: Vec<Entry> = (0..40u64)
        .map(|i| {
            let e = Entry::sign(
                &log,
                tree.size(),
                &tree.root(),
                4,
                Transition::Checkpoint {
                    node: 4,
                    seq: 1_000 + i,
                    head: [0x66; 32],
                },
                &key,
            );
            tree.push(&e.leaf());
            e
        })
        .collect();
    {
        let db = redb::Database::open(&store).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(def).unwrap();
            for e in &made_up {
                table
                    .insert(e.seq, postcard::to_allocvec(e).unwrap().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    up.restart_node(4);
    wait_for_status(&dir);

    // The owner's next act is built on the majority's head, not node 4's: its made-up entries
    // are relayed to no one, and the owner's entry replaces them at node 4 too.
    let v = json_of(&obscura(&[
        "ledger",
        "sync",
        "--cluster",
        cluster,
        "--json",
    ]));
    assert_eq!(cosigners(&v), [1, 2, 3, 4, 5, 6], "{v}");
    assert_eq!(v["size"], 3 + 1 + 6, "{v}");
    let v = json_of(&obscura(&[
        "ledger",
        "show",
        "--cluster",
        cluster,
        "--json",
    ]));
    assert!(!v.to_string().contains(&"66".repeat(32)), "{v}");
    let (ok, v) = verify(cluster, &[]);
    assert!(ok, "{v}");
    assert!(v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["size"] == 10));
}

/// The label `obscura search --json` shows for the one result `id`, if any.
fn label_of(search: &Value, id: &str) -> Option<String> {
    let results = search["results"].as_array().unwrap();
    let hit = results
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} not found: {search}"));
    hit["label"].as_str().map(str::to_owned)
}

#[test]
fn labels_sealed_in_the_ledger_are_shown_to_members_only_and_a_removed_member_reads_none_after() {
    let dir = init_cluster("group");
    let cluster = dir.to_str().unwrap();
    let mut up = start(&dir);
    let photos = three_photos("group");
    let (first, later) = (dir.join("first"), dir.join("later"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&later).unwrap();
    for name in ["camera.png", "coffee.png"] {
        std::fs::rename(photos.join(name), first.join(name)).unwrap();
    }
    std::fs::rename(photos.join("rocket.jpg"), later.join("rocket.jpg")).unwrap();

    // ana starts as a member on her own client; the owner adds her.
    let ana = dir.join("ana.group");
    let kp = dir.join("ana.kp");
    let out = as_member(
        &ana,
        &[
            "ledger",
            "key-package",
            "--cluster",
            cluster,
            "--name",
            "ana",
            "--out",
            kp.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Her state is sealed under the client's wrapping key: one byte changed, it is refused
    // whole, and nothing of it is parsed.
    let kept = std::fs::read(&ana).unwrap();
    let mut bent = kept.clone();
    let at = bent.len() - 20;
    bent[at] ^= 1;
    std::fs::write(&ana, &bent).unwrap();
    let out = as_member(&ana, &["ledger", "members", "--cluster", cluster]);
    assert!(
        !out.status.success() && !text(&out).contains("panicked"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("does not open"), "{}", text(&out));
    std::fs::write(&ana, &kept).unwrap();
    let v = json_of(&obscura(&[
        "ledger",
        "add-member",
        "--cluster",
        cluster,
        "--key-package",
        kp.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(
        (v["identity"].as_str(), v["epoch"].as_u64()),
        (Some("client:ana"), Some(1)),
        "{v}"
    );

    let v = json_of(&obscura(&[
        "index",
        "--cluster",
        cluster,
        first.to_str().unwrap(),
        "--label",
        "harbour survey",
        "--json",
    ]));
    // Two registrations and one sealed message.
    assert_eq!(v["ledger"]["size"], 4, "{v}");
    let camera = v["indexed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"].as_str().unwrap().ends_with("camera.png"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nodes hold the label as ciphertext only: not in any node's store, and `ledger show`
    // gives an epoch and a length.
    stop_node(&dir, 1, "TERM");
    let store = std::fs::read(dir.join("node1").join("store.redb")).unwrap();
    assert!(!store.windows(7).any(|w| w == b"harbour"));
    assert!(!store.windows(10).any(|w| w == b"client:ana"));
    up.restart_node(1);
    wait_for_status(&dir);
    let shown = json_of(&obscura(&[
        "ledger",
        "show",
        "--cluster",
        cluster,
        "--json",
    ]));
    let sealed = &shown["entries"][3];
    assert_eq!(sealed["transition"], "sealed", "{shown}");
    assert_eq!(sealed["fields"]["epoch"], 1);

    let query = first.join("camera.png");
    let search = |state: &Path| {
        let out = as_member(
            state,
            &[
                "search",
                "--cluster",
                cluster,
                query.to_str().unwrap(),
                "--json",
            ],
        );
        json_of(&out)
    };
    // The owner, ana, and a client that is no member.
    assert_eq!(
        label_of(
            &json_of(&obscura(&[
                "search",
                "--cluster",
                cluster,
                query.to_str().unwrap(),
                "--json"
            ])),
            &camera
        )
        .as_deref(),
        Some("harbour survey")
    );
    assert_eq!(
        label_of(&search(&ana), &camera).as_deref(),
        Some("harbour survey")
    );
    assert_eq!(label_of(&search(&dir.join("nobody.group")), &camera), None);

    // The owner's state as it is now, to be put back later as a backup would.
    let owner_state = dir.join("client").join("group.json");
    let backup = std::fs::read(&owner_state).unwrap();

    // ana is removed; what is sealed after, she does not open.
    let v = json_of(&obscura(&[
        "ledger",
        "remove-member",
        "--cluster",
        cluster,
        "client:ana",
        "--json",
    ]));
    assert_eq!(v["epoch"], 2, "{v}");
    let v = json_of(&obscura(&[
        "index",
        "--cluster",
        cluster,
        later.to_str().unwrap(),
        "--label",
        "night launch",
        "--json",
    ]));
    let rocket = v["indexed"][0]["id"].as_str().unwrap().to_owned();
    let rocket_query = later.join("rocket.jpg");
    let search_rocket = |state: Option<&Path>| {
        let mut args = vec![
            "search",
            "--cluster",
            cluster,
            rocket_query.to_str().unwrap(),
            "--json",
        ];
        args.extend(["--max-distance", "10"]);
        json_of(&match state {
            Some(s) => as_member(s, &args),
            None => obscura(&args),
        })
    };
    assert_eq!(
        label_of(&search_rocket(None), &rocket).as_deref(),
        Some("night launch")
    );
    assert_eq!(label_of(&search_rocket(Some(&ana)), &rocket), None);
    let m = json_of(&as_member(
        &ana,
        &["ledger", "members", "--cluster", cluster, "--json"],
    ));
    assert_eq!(m["removed"], true, "{m}");
    assert_eq!(m["unreadable"], 1, "{m}");
    let m = json_of(&obscura(&[
        "ledger",
        "members",
        "--cluster",
        cluster,
        "--json",
    ]));
    assert_eq!(m["members"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["epoch"], 2, "{m}");

    // The owner's state restored from the backup (epoch 1) would seal with keys used already:
    // it is refused before it seals or commits; the current one goes on.
    let current = std::fs::read(&owner_state).unwrap();
    std::fs::write(&owner_state, &backup).unwrap();
    let out = obscura(&["ledger", "members", "--cluster", cluster]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("a lost or restored state cannot go on"),
        "{}",
        text(&out)
    );
    std::fs::write(&owner_state, &current).unwrap();
    json_of(&obscura(&[
        "ledger",
        "members",
        "--cluster",
        cluster,
        "--json",
    ]));

    // A client that is no member cannot add anyone, nor seal: it holds no group.
    let out = as_member(
        &ana,
        &[
            "ledger",
            "add-member",
            "--cluster",
            cluster,
            "--key-package",
            kp.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn a_worker_joins_the_group_only_on_evidence_of_this_build_and_only_from_the_owners_entries() {
    let dir = init_cluster("group-worker");
    let cluster = dir.to_str().unwrap();
    let _up = start(&dir);
    let port = free_ports(2);
    let mut good = worker(Path::new(BIN), &dir, "good", port);
    let modified = modified_build("group-worker");
    let mut other = worker(&modified, &dir, "other", port + 1);
    let url = |p: u16| format!("http://127.0.0.1:{p}");

    // Another build's measurement: refused, and neither the group nor the ledger moves.
    let out = obscura(&[
        "ledger",
        "add-member",
        "--cluster",
        cluster,
        "--worker",
        &url(port + 1),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("not admitted") && text(&out).contains("measurement"),
        "{}",
        text(&out)
    );
    let shown = json_of(&obscura(&[
        "ledger",
        "show",
        "--cluster",
        cluster,
        "--json",
    ]));
    assert_eq!(shown["size"], 0, "{shown}");

    // The ledger's real keys: the owner's, and every node's.
    use ed25519_dalek::Signer as _;
    let owner = obscura_client::config::load(&dir).unwrap().owner.unwrap();
    let nodes: Vec<SigningKey> = (1..=NODES as u8).map(|x| node_audit_key(&dir, x)).collect();
    let log = obscura_ledger::replica::log_id(
        &owner.verifying_key(),
        &nodes
            .iter()
            .map(SigningKey::verifying_key)
            .collect::<Vec<_>>(),
    );
    let stranger = SigningKey::generate(&mut rand_core::OsRng);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let request = |by: &SigningKey, identity: &str, nonce: [u8; 32], at: u64| {
        let signature = by.sign(&obscura_client::group::key_package_statement(
            &log, identity, &nonce, at,
        ));
        serde_json::json!({"identity": identity, "nonce": hex::encode(nonce), "issued_at": at,
                           "signature": hex::encode(signature.to_bytes())})
        .to_string()
    };
    let ask = |body: &str| post_worker(port, "/v1/group/key-package", &[], body);
    // Only the data owner's request, for this worker, fresh, once, is taken: a stranger's, one
    // for another worker of the cluster, one of ten minutes ago and one replayed are refused.
    for (body, why) in [
        (
            request(&stranger, "worker:good", [1; 32], now),
            "data owner",
        ),
        (
            request(&owner, "worker:other", [2; 32], now),
            "a request for worker:other",
        ),
        (
            request(&owner, "worker:good", [3; 32], now - 600),
            "older than two minutes",
        ),
    ] {
        let (status, answer) = ask(&body);
        assert_eq!(status, 403, "{answer}");
        assert!(answer.contains(why), "{answer}");
    }
    let fresh = request(&owner, "worker:good", [4; 32], now);
    assert_eq!(ask(&fresh).0, 200);
    let (status, answer) = ask(&fresh);
    assert_eq!(
        (status, answer.contains("taken already")),
        (403, true),
        "{answer}"
    );

    // Nor does it take group entries but as the owner signed them, in a head a majority of
    // nodes cosigned: not under a head strangers cosigned, not a stranger's entry under a real
    // majority's head, and not an owner's entry the head does not hold (an append that failed).
    let commit = |by: &SigningKey| {
        obscura_ledger::entry::Entry::sign(
            &log,
            0,
            &[0; 32],
            0,
            obscura_ledger::entry::Transition::GroupCommit {
                epoch: 1,
                commit: vec![0; 8],
                welcome: Some(vec![0; 8]),
            },
            by,
        )
    };
    let relay = |entry: &obscura_ledger::entry::Entry, root: [u8; 32], signers: &[&SigningKey]| {
        let head = obscura_ledger::head::TreeHead { log, size: 1, root };
        let cosignatures: Vec<_> = signers
            .iter()
            .enumerate()
            .map(|(i, k)| head.cosign(i as u8 + 1, k))
            .collect();
        let body = serde_json::json!({
            "head": {"head": head, "cosignatures": cosignatures},
            "entries": [{"entry": hex::encode(postcard::to_allocvec(entry).unwrap()),
                         "prev": "00".repeat(32), "proof": []}],
        });
        post_worker(port, "/v1/group/entries", &[], &body.to_string())
    };
    let majority: Vec<&SigningKey> = nodes.iter().take(NODES / 2 + 1).collect();
    let owners = commit(&owner);
    for (answer, why) in [
        (relay(&owners, owners.leaf(), &[&stranger; 4]), "majority"),
        (
            relay(&commit(&stranger), commit(&stranger).leaf(), &majority),
            "data owner",
        ),
        (relay(&owners, [7; 32], &majority), "not in the head"),
    ] {
        assert_eq!(answer.0, 403, "{}", answer.1);
        assert!(answer.1.contains(why), "{}", answer.1);
    }

    // This build's worker: appraised, added, and it joins by the entry it is handed.
    let v = json_of(&obscura(&[
        "ledger",
        "add-member",
        "--cluster",
        cluster,
        "--worker",
        &url(port),
        "--json",
    ]));
    assert_eq!(v["identity"], "worker:good", "{v}");
    assert_eq!(v["worker"]["joined"], true, "{v}");
    assert_eq!(v["worker"]["epoch"], 1, "{v}");
    let m = json_of(&obscura(&[
        "ledger",
        "members",
        "--cluster",
        cluster,
        "--json",
    ]));
    let names: Vec<&str> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["identity"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["client:owner", "worker:good"], "{m}");
    let _ = good.kill();
    let _ = other.kill();
    let _ = good.wait();
    let _ = other.wait();
    std::fs::remove_file(modified).ok();
}
