//! `node run --log-format json`: one JSON object per line on standard error, a line for each
//! refused request, and nothing a client sent in any of them.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn a_node_logs_json_lines_with_each_refusal_and_no_clients_words() {
    let dir = init_cluster("logs");
    let _up = start(&dir);
    let cluster = dir.to_str().unwrap();
    // Node 1 again, logging JSON.
    stop_node(&dir, 1, "TERM");
    let log = dir.join("node1-json.log");
    let mut node = Command::new(BIN)
        .args(["node", "run"])
        .arg(dir.join("node1").join("node.json"))
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    wait_for_status(&dir);

    // Refused at every node: an image nobody stored.
    let unknown = "5eed".repeat(8);
    let out = get(cluster, &unknown, &dir.join("never.png"));
    assert!(!out.status.success());

    stop_node(&dir, 1, "TERM");
    let _ = node.wait();
    let said = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = said
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["server"] == "node 1" && l["ts"].is_string()));
    assert_eq!(lines.first().unwrap()["msg"], "listening", "{said}");
    assert_eq!(lines.last().unwrap()["msg"], "stopped", "{said}");
    let refused: Vec<_> = lines.iter().filter(|l| l["msg"] == "refused").collect();
    assert!(!refused.is_empty(), "{said}");
    assert!(
        refused
            .iter()
            .all(|l| l["level"] == "warn" && l["op"].is_string() && l["outcome"].is_string()),
        "{said}"
    );
    // The user and the image asked for are the audit log's, not the log's.
    assert!(
        !said.contains("admin") && !said.contains(&unknown),
        "{said}"
    );
}
