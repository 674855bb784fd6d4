//! Attestation in a running cluster: every node and keeper is appraised under the cluster's
//! policy before a client sends it anything, and a server running a modified build — the
//! cheapest attack of an operator who wants the shares its node sees — is refused, named, and
//! not used, while the others serve searches and rebuild images.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn a_node_running_a_modified_build_is_refused_named_and_not_used() {
    let dir = init_cluster("attest");
    let cluster = dir.to_str().unwrap();
    let up = start(&dir);
    let status = obscura(&["status", "--cluster", cluster]);
    assert!(status.status.success(), "{}", text(&status));
    let said = text(&status);
    assert!(said.contains("SIMULATION ALLOWED"), "{said}");
    assert_eq!(
        said.matches(": attested, simulation measurement").count(),
        NODES + 3,
        "{said}"
    );

    let id = index_one(cluster, &testdata("photos/coffee.png"));

    // Node 3's operator swaps in another build, same configuration and secrets.
    stop_node(&dir, 3, "TERM");
    let modified = modified_build("node3");
    let mut impostor = Command::new(&modified)
        .args(["node", "run"])
        .arg(dir.join("node3").join("node.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Up once it answers (it measures its executable first, which takes a while under load).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let said = loop {
        let status = obscura(&["status", "--cluster", cluster]);
        assert!(!status.status.success(), "{}", text(&status));
        let said = text(&status);
        if !said.contains("node 3: not used: unreachable") {
            break said;
        }
        assert!(std::time::Instant::now() < deadline, "{said}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        said.contains(
            "node 3 (misbehaved): not used: refused by the attestation policy: measurement"
        ) && said.contains("is not allowed for role node on simulation"),
        "{said}"
    );
    assert_eq!(
        said.matches(": attested, ").count(),
        NODES + 3 - 1,
        "{said}"
    );

    // Searches and rebuilds go on without it, and name it.
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("photos/coffee.png"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("{id}  distance 0")), "{said}");
    assert!(
        said.contains("node 3 (misbehaved): refused by the attestation policy"),
        "{said}"
    );
    let rebuilt = dir.join("coffee.png");
    let out = get(cluster, &id, &rebuilt);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&rebuilt).unwrap(),
        std::fs::read(testdata("photos/coffee.png")).unwrap()
    );

    // Indexing needs every node: it is refused, naming node 3.
    let out = obscura(&[
        "index",
        "--cluster",
        cluster,
        &testdata("photos/rocket.jpg"),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("misbehaved: node 3"), "{}", text(&out));

    let _ = impostor.kill();
    let _ = impostor.wait();
    std::fs::remove_file(&modified).ok();
    drop(up);
}

#[test]
fn a_policy_that_refuses_simulation_refuses_every_server_and_a_missing_one_fails_closed() {
    let dir = init_cluster("attest-production");
    let cluster = dir.to_str().unwrap();
    let up = start(&dir);
    // The operator switches to a production policy: simulation refused.
    let path = dir.join("attestation-policy.json");
    let mut policy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    policy["allow_simulation"] = serde_json::Value::Bool(false);
    policy["version"] = serde_json::json!(2);
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();

    let out = obscura(&["status", "--cluster", cluster]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("version 2"), "{said}");
    assert_eq!(
        said.matches("not used: refused by the attestation policy: simulated evidence")
            .count(),
        NODES + 3,
        "{said}"
    );
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("photos/coffee.png"),
    ]);
    assert!(!out.status.success(), "{}", text(&out));

    // Without the policy file, a client of this cluster does not fall back to trusting every
    // server: it does not start.
    std::fs::remove_file(&path).unwrap();
    let out = obscura(&["status", "--cluster", cluster]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("client.json requires attestation"),
        "{}",
        text(&out)
    );
    drop(up);
}

#[test]
fn a_secret_with_a_release_policy_reaches_a_worker_of_this_build_and_not_another() {
    let dir = init_cluster("release");
    let cluster = dir.to_str().unwrap();
    let up = start(&dir);
    let port = free_ports(2);
    let mut good = worker(std::path::Path::new(BIN), &dir, "good", port);
    let modified = modified_build("worker");
    let mut other = worker(&modified, &dir, "other", port + 1);

    let file = dir.join("api-token");
    std::fs::write(&file, b"a token only attested workers may hold").unwrap();
    let policy = dir.join("attestation-policy.json");
    let out = obscura(&[
        "secret",
        "import",
        "--cluster",
        cluster,
        "--name",
        "api",
        "--release-to",
        policy.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = text(&out).split_whitespace().nth(1).unwrap().to_owned();

    // Its owner cannot read it back.
    let out = obscura(&[
        "secret",
        "get",
        "--cluster",
        cluster,
        &id,
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("released only to attested workers"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("x").exists());

    // A worker of this build rebuilds it (its check passes), and says only its size.
    let url = format!("http://127.0.0.1:{port}");
    let out = obscura(&[
        "secret",
        "release",
        "--cluster",
        cluster,
        &id,
        "--worker",
        &url,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["bytes"],
        b"a token only attested workers may hold".len(),
        "{v}"
    );
    assert_eq!(v["released_by"].as_array().unwrap().len(), 3, "{v}");
    assert!(!text(&out).contains("a token only"), "{}", text(&out));

    // Anyone on the worker's port can post a delivery; one the keepers did not sign is refused.
    let shares: Vec<serde_json::Value> = [1, 2]
        .iter()
        .map(|k| {
            serde_json::json!({
                "keeper": k, "nonce": "00".repeat(32),
                "sealed": {"enc": "00".repeat(32), "ciphertext": "00".repeat(48)},
                "signature": "00".repeat(64),
            })
        })
        .collect();
    // For the secret it holds: refused, it is not replaced.
    let forged = serde_json::json!({"secret": id, "threshold": 2, "shares": shares});
    assert_eq!(post_status(port, "/v1/deliver", &forged.to_string()), 409);
    // For another: refused, the keepers' signatures do not verify.
    let forged = serde_json::json!({"secret": "ab".repeat(16), "threshold": 2, "shares": shares});
    assert_eq!(post_status(port, "/v1/deliver", &forged.to_string()), 403);

    // A worker of another build is refused by every keeper, and nothing reaches it.
    let url = format!("http://127.0.0.1:{}", port + 1);
    let out = obscura(&[
        "secret",
        "release",
        "--cluster",
        cluster,
        &id,
        "--worker",
        &url,
    ]);
    assert!(!out.status.success());
    let said = text(&out);
    assert_eq!(
        said.matches("refuses the worker: measurement").count(),
        3,
        "{said}"
    );

    // Both outcomes are in the keepers' audit trail.
    let out = obscura(&["audit", "events", "--cluster", cluster]);
    let said = text(&out);
    assert_eq!(
        said.matches("secret release to worker simulation").count(),
        3,
        "{said}"
    );
    assert_eq!(
        said.matches("secret release refused: measurement").count(),
        3,
        "{said}"
    );

    for child in [&mut good, &mut other] {
        let _ = child.kill();
        let _ = child.wait();
    }
    std::fs::remove_file(&modified).ok();
    drop(up);
}

/// Start keeper `keeper` of `dir` from `binary`.
fn keeper(
    binary: &std::path::Path,
    dir: &std::path::Path,
    keeper: u8,
    stderr: Stdio,
) -> std::process::Child {
    Command::new(binary)
        .args(["keeper", "run"])
        .arg(dir.join(format!("keeper{keeper}")).join("keeper.json"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// `obscura cluster provision --json`: whether it succeeded, and each keeper's entry.
fn provision(cluster: &str) -> (bool, Vec<serde_json::Value>) {
    let out = obscura(&["cluster", "provision", "--cluster", cluster, "--json"]);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("not JSON: {}", text(&out)));
    (
        out.status.success(),
        json["keepers"].as_array().unwrap().clone(),
    )
}

/// `obscura search` with a JPEG of the coffee photo succeeds and finds `id`.
fn search_finds(cluster: &str, id: &str) {
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("derived/coffee.q75.jpg"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(id), "{}", text(&out));
}

#[test]
fn token_key_shares_reach_only_keepers_of_this_build_and_stay_bound_to_it() {
    let dir = init_cluster("provision");
    let cluster = dir.to_str().unwrap();
    let waiting = dir.join("owner").join("provision.sealed");
    assert!(waiting.exists(), "the dealt shares wait at the data owner");
    let up = up(&dir);
    // Every keeper is up and attested, and none holds a share yet: no token can be made, and
    // the shares wait at the owner (a cluster being set up, not a fault).
    let out = obscura(&["status", "--cluster", cluster, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["tokens"], false, "{status}");
    assert_eq!(status["shares_waiting"], true, "{status}");
    // A user's copy of the directory, without the owner's folder, cannot tell a cluster being
    // set up from keepers that lost their shares: it says so and fails.
    let copy = dir.with_extension("user-copy");
    assert!(Command::new("cp")
        .args(["-a"])
        .arg(&dir)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    std::fs::remove_dir_all(copy.join("owner")).unwrap();
    let out = obscura(&["status", "--cluster", copy.to_str().unwrap(), "--json"]);
    std::fs::remove_dir_all(&copy).ok();
    assert!(!out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["tokens"], false, "{status}");
    assert_eq!(status["shares_waiting"], false, "{status}");
    let keepers = status["keepers"].as_array().unwrap();
    assert_eq!(keepers.len(), 3, "{status}");
    assert!(
        keepers.iter().all(|k| k["holds_shares"] == false),
        "{status}"
    );

    // Keeper 2's operator runs another build from the start, with the keeper's own files.
    stop_keeper(&dir, 2, "TERM");
    let modified = modified_build("keeper2");
    let mut impostor = keeper(&modified, &dir, 2, Stdio::null());
    // Up once it answers (it measures its executable first, which takes a while under load).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let said = text(&obscura(&["status", "--cluster", cluster]));
        if said.contains("keeper 2 (misbehaved): not used") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{said}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (ok, entries) = provision(cluster);
    assert!(!ok, "{entries:?}");
    // It is refused and sent nothing; the others took theirs.
    let two = entries.iter().find(|e| e["keeper"] == 2).unwrap();
    assert_eq!(two["provisioned"], false, "{entries:?}");
    assert_eq!(two["misbehaved"], true, "{entries:?}");
    assert!(
        two["reason"]
            .as_str()
            .unwrap()
            .contains("is not allowed for role keeper on simulation"),
        "{entries:?}"
    );
    for j in [1, 3] {
        let e = entries.iter().find(|e| e["keeper"] == j);
        assert!(e.is_some_and(|e| e["provisioned"] == true), "{entries:?}");
    }
    assert!(waiting.exists(), "keeper 2's shares still wait");
    // `status --json` says the same: keeper 2 refused and holding nothing, the others holding
    // their shares.
    let out = obscura(&["status", "--cluster", cluster, "--json"]);
    assert!(!out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let servers = status["attestation"]["servers"].as_array().unwrap();
    let two = servers.iter().find(|s| s["server"] == "keeper 2").unwrap();
    assert_eq!(two["misbehaved"], true, "{status}");
    assert_eq!(status["attestation"]["policy"]["allow_simulation"], true);
    for k in status["keepers"].as_array().unwrap() {
        if k["keeper"] == 2 {
            assert_eq!(k["misbehaved"], true, "{status}");
        } else {
            assert_eq!(k["holds_shares"], true, "{status}");
        }
    }

    // A rotation now would leave keeper 2's waiting shares in the owner's folder after the old
    // version is erased: it is refused until every keeper has confirmed its shares.
    let out = obscura(&["keys", "rotate", "--cluster", cluster]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("keepers [2] have not confirmed their token-key shares"),
        "{}",
        text(&out)
    );

    // Its operator runs this build: appraised, it takes its shares, and the owner forgets them.
    let _ = impostor.kill();
    let _ = impostor.wait();
    let mut genuine = keeper(std::path::Path::new(BIN), &dir, 2, Stdio::null());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ok, entries) = provision(cluster);
        if ok {
            assert_eq!(entries.len(), 1, "only keeper 2 was waiting: {entries:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{entries:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        !waiting.exists(),
        "delivered shares are forgotten by the owner"
    );
    let (ok, entries) = provision(cluster);
    assert!(ok && entries.is_empty(), "{entries:?}");

    // Every keeper evaluates: an image is indexed and found.
    register_and_login(&dir);
    let id = index_one(cluster, &testdata("photos/coffee.png"));
    search_finds(cluster, &id);

    // Later the operator upgrades keeper 2 to another build. Its shares, sealed to this
    // build, do not open under that one: it starts holding none, and says so.
    let _ = Command::new("kill").arg(genuine.id().to_string()).status();
    let _ = genuine.wait();
    let log = dir.join("keeper2-upgraded.log");
    let started = |log: &std::path::Path| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            if said.contains("listening on") {
                return said;
            }
            assert!(std::time::Instant::now() < deadline, "{said}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let mut upgraded = keeper(
        &modified,
        &dir,
        2,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let said = started(&log);
    assert!(
        said.contains("keeper 2's token-key shares are sealed to another build or platform"),
        "{said}"
    );
    assert!(said.contains("key_shares=0"), "{said}");

    // The owner cannot have its shares sent to a build the policy does not allow.
    let recover = || {
        let out = obscura(&[
            "cluster",
            "recover",
            "--cluster",
            cluster,
            "--keeper",
            "2",
            "--json",
        ]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("not JSON: {}", text(&out)));
        (out.status.success(), json)
    };
    let (ok, json) = recover();
    assert!(!ok, "{json}");
    assert_eq!(json["recovered"], false, "{json}");
    assert!(
        json["reason"]
            .as_str()
            .unwrap()
            .contains("is not allowed for role keeper on simulation"),
        "{json}"
    );
    assert_eq!(
        json["misbehaved"],
        serde_json::json!(["keeper 2"]),
        "{json}"
    );

    // Once the owner allows the new build for keepers, the other two give keeper 2 its shares
    // back, each part checked, and no key is rebuilt anywhere.
    let out = obscura(&[
        "attest",
        "allow",
        "--cluster",
        cluster,
        "--binary",
        modified.to_str().unwrap(),
        "--role",
        "keeper",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let (ok, json) = recover();
    assert!(ok, "{json}");
    assert_eq!(json["recovered"], true, "{json}");
    assert_eq!(json["helpers"], serde_json::json!([1, 3]), "{json}");
    assert_eq!(json["token_keys"], 1, "{json}"); // the cluster key

    // Keeper 2 now evaluates: with keeper 1 down, search needs keepers 2 and 3.
    stop_keeper(&dir, 1, "TERM");
    search_finds(cluster, &id);

    // And its shares are now sealed to the new build: restarted, it holds them at once.
    let _ = Command::new("kill").arg(upgraded.id().to_string()).status();
    let _ = upgraded.wait();
    let log = dir.join("keeper2-restarted.log");
    let mut restarted = keeper(
        &modified,
        &dir,
        2,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let said = started(&log);
    assert!(!said.contains("sealed to another build"), "{said}");
    assert!(said.contains("key_shares=1"), "{said}"); // the cluster key
    let _ = restarted.kill();
    let _ = restarted.wait();
    std::fs::remove_file(&modified).ok();
    drop(up);
}
