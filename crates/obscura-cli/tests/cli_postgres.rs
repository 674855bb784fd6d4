//! A node kept in PostgreSQL, served by two processes at once: what one of them indexed the
//! other finds, and killing the one the client used loses nothing.

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
    edit_json(&dir.join("node1/node.json"), |c| c["database"] = url.into());
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
    let coffee = index_one(cluster, &testdata("photos/coffee.png"));
    index_one(cluster, &testdata("photos/camera.png"));
    index_one(cluster, &testdata("photos/rocket.jpg"));

    // The process the client used dies without a word; the client is pointed at the other.
    stop_node(&dir, 1, "KILL");
    edit_json(&dir.join("client.json"), |c| {
        c["nodes"][0] = format!("https://127.0.0.1:{second}").into();
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let said = loop {
        let said = text(&obscura(&["status", "--cluster", cluster]));
        if !said.contains("node 1: not used: unreachable")
            || std::time::Instant::now() > deadline
            || b.try_wait().unwrap().is_some()
        {
            break said;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    if let Ok(Some(_)) = b.try_wait() {
        let mut why = String::new();
        std::io::Read::read_to_string(&mut b.stderr.take().unwrap(), &mut why).unwrap();
        panic!("the second process of node 1 stopped: {why}");
    }
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
    // Its audit log holds both processes' entries as one chain.
    let out = obscura(&["audit", "verify", "--cluster", cluster]);
    assert!(out.status.success(), "{}", text(&out));

    let _ = b.kill();
    let _ = b.wait();
    drop(up);
}
