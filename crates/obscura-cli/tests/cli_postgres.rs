//! A node kept in PostgreSQL (its image shares as objects in a folder), served by two processes
//! at once: what one of them indexed the other finds, and killing the one the client used loses
//! nothing.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// The PostgreSQL server of the test run (`OBSCURA_TEST_POSTGRES`); under CI it must be there.
fn postgres_server() -> Option<String> {
    match std::env::var("OBSCURA_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("OBSCURA_TEST_POSTGRES is not set (.ci/run starts a server and sets it)")
        }
        _ => {
            eprintln!("SKIPPED: set OBSCURA_TEST_POSTGRES to run a node on PostgreSQL");
            None
        }
    }
}

fn edit_json(path: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn a_node_on_postgres_served_by_two_processes_loses_nothing_when_one_dies() {
    let Some(server) = postgres_server() else {
        return;
    };
    let dir = init_cluster("postgres");
    let cluster = dir.to_str().unwrap();
    let url = obscura_store::pg::fresh_database(
        &server,
        &format!("obscura_cli_node1_{}", std::process::id()),
    )
    .unwrap();
    let _dropped = Dropped(url.clone());
    // Its image shares as objects in a folder, the database keeping their digests.
    let shares = dir.join("node1-shares");
    edit_json(&dir.join("node1/node.json"), |c| {
        c["database"] = url.into();
        c["shares"] = format!("file://{}", shares.display()).into();
    });
    let second = free_ports(1);
    let config_b = dir.join("node1/node-b.json");
    std::fs::copy(dir.join("node1/node.json"), &config_b).unwrap();
    edit_json(&config_b, |c| {
        c["listen"] = format!("127.0.0.1:{second}").into();
    });
    let up = start(&dir);

    // The second process of node 1 serves from the same database, beside the first.
    let mut b = Command::new(BIN)
        .args(["node", "run"])
        .arg(&config_b)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Up (its ledger read) before the first process takes any entry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", second)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the second process never listened"
        );
        assert!(
            b.try_wait().unwrap().is_none(),
            "the second process stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let coffee = index_one(cluster, &testdata("photos/coffee.png"));
    index_one(cluster, &testdata("photos/camera.png"));
    index_one(cluster, &testdata("photos/rocket.jpg"));

    // The client is pointed at the second process; the first dies without a word once the
    // second has answered for the ledger the first kept: its head, read straight after, with
    // nothing in between that would have sent it the entries.
    edit_json(&dir.join("client.json"), |c| {
        c["nodes"][0] = format!("https://127.0.0.1:{second}").into();
    });
    let v: serde_json::Value = serde_json::from_slice(
        &obscura(&["ledger", "verify", "--cluster", cluster, "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(v["nodes"][0]["size"], 3, "{v}");
    stop_node(&dir, 1, "KILL");
    let said = text(&obscura(&["status", "--cluster", cluster]));
    assert!(said.contains("node 1: 3 images, 0 pending"), "{said}");

    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("photos/coffee.png"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{coffee}  distance 0")),
        "{}",
        text(&out)
    );
    let rebuilt = dir.join("coffee-again.png");
    let out = get(cluster, &coffee, &rebuilt);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&rebuilt).unwrap(),
        std::fs::read(testdata("photos/coffee.png")).unwrap()
    );
    // The ledger entries the first process took are the second's too: an owner's act sent to it
    // follows on from them, cosigned by every node.
    let out = obscura(&[
        "index",
        "--cluster",
        cluster,
        &testdata("photos/horse.png"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["ledger"]["first"].as_u64(), v["ledger"]["size"].as_u64()),
        (Some(3), Some(4)),
        "{v}"
    );
    assert_eq!(
        v["ledger"]["cosigners"],
        serde_json::json!([1, 2, 3, 4, 5, 6]),
        "{v}"
    );
    // Node 1's shares are objects in the folder: four images, one object each.
    let objects = std::fs::read_dir(shares.join("images")).unwrap().count();
    assert_eq!(objects, 4);
    // Its audit log holds both processes' entries as one chain.
    let out = obscura(&["audit", "verify", "--cluster", cluster]);
    assert!(out.status.success(), "{}", text(&out));

    // Stopped as an operator stops it, the process signs its log and exits cleanly: its store's
    // connections are closed off the async workers, where closing one would panic.
    assert!(Command::new("kill")
        .arg(b.id().to_string())
        .status()
        .unwrap()
        .success());
    let stopped = b.wait_with_output().unwrap();
    assert!(
        stopped.status.success(),
        "{:?}: {}",
        stopped.status,
        String::from_utf8_lossy(&stopped.stderr)
    );
    drop(up);
}

/// The test's database, dropped when the test ends, passing or failing.
struct Dropped(String);

impl Drop for Dropped {
    fn drop(&mut self) {
        if let Err(e) = obscura_store::pg::drop_database(&self.0) {
            eprintln!("the test database {} stays: {e}", self.0);
        }
    }
}
