//! A node's metrics listener, tried as whoever reaches it and as a client who wants to shape
//! what it says: answers are counted by the node's own operation names and outcomes, a request
//! on a path of the client's choosing adds no label value (a label per path would let any client
//! grow the node's memory and the operator's time series without end), and nothing a client
//! chose, its user name included, appears in them.

mod common;

use common::*;
use obscura_proto::{roles, NodeBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole HTTP answer to `GET path`.
async fn get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn metrics_count_answers_by_operation_and_take_no_label_from_a_client() {
    let port = free_port();
    let node = TestNode::start_with("metrics", |c| {
        c.metrics = Some(format!("127.0.0.1:{port}"));
    })
    .await;
    let mallory = node.holder("mallory-the-user", roles::ALL);
    for _ in 0..2 {
        let (status, _) = node
            .send_as(&mallory, &TestNode::request(NodeBody::Status))
            .await;
        assert_eq!(status, 200);
    }
    // Paths and bodies of the client's choosing.
    for i in 0..40 {
        node.post_raw(&format!("/v1/made-up-{i}"), vec![i as u8; 3])
            .await;
    }
    let answer = get(port, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("application/openmetrics-text"));
    assert!(
        answer.contains(r#"obscura_answers_total{op="status",outcome="ok"} 2"#),
        "{answer}"
    );
    assert!(answer.contains(r#"obscura_answer_seconds_count{op="status"} 2"#));
    assert!(
        answer.contains(r#"obscura_answers_total{op="invalid",outcome="bad_request"} 40"#),
        "{answer}"
    );
    assert!(answer.contains("obscura_images_committed 0"));
    assert!(answer.contains("obscura_key_version 1"));
    // A metric's value, as a whole number; missing, the test fails.
    let number = |name: &str| {
        answer
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in\n{answer}"))
    };
    // The store's size and the room left beside it, as bytes.
    assert!(number("obscura_store_bytes") > 0);
    assert!(number("obscura_store_free_bytes") > 0);
    // Read from the store when the server started (and every 10 s): a number.
    number("obscura_audit_entries");
    for chosen in ["made-up", "mallory"] {
        assert!(!answer.contains(chosen), "{chosen} in\n{answer}");
    }
    let ops: std::collections::BTreeSet<&str> = answer
        .lines()
        .filter_map(|l| l.split("op=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(ops, std::collections::BTreeSet::from(["invalid", "status"]));
    assert!(get(port, "/other").await.starts_with("HTTP/1.1 404"));
    node.stop().await;
    // Stopped with the node: nothing listens there any more.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}

/// A metrics address that is taken, public or unspecified (there is no TLS and no login) stops
/// the node before its store is opened, with a message.
#[tokio::test]
async fn a_metrics_address_taken_or_public_stops_the_node_with_a_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut node = TestNode::start("no-metrics").await;
    node.halt().await;
    let config = node.dir.join("node1/node.json");
    let mut c: obscura_cluster::node::NodeConfig =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(c.metrics, None);
    c.metrics = Some(addr.to_string());
    std::fs::write(&config, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    let err = obscura_node::config::LoadedNode::load(&config).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("metrics: cannot listen on {addr}")),
        "{err}"
    );
    for public in ["0.0.0.0:9464", "8.8.8.8:9464", "[::]:9464"] {
        c.metrics = Some(public.into());
        std::fs::write(&config, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        let err = obscura_node::config::LoadedNode::load(&config).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a loopback or private address"),
            "{public}: {err}"
        );
    }
    std::fs::remove_dir_all(&node.scratch).ok();
}

/// Connections closed before any request are counted by why: one over the address's limit, and
/// each whose TLS handshake failed (plain text sent to the TLS port, or nothing at all).
#[tokio::test]
async fn connections_refused_before_a_request_are_counted_by_reason() {
    let port = free_port();
    let node = TestNode::start_with("metrics-connections", |c| {
        c.metrics = Some(format!("127.0.0.1:{port}"));
        c.limits.max_connections_per_source = 3;
    })
    .await;
    // Once the node answers (a request refused, as malformed, after its TLS handshake), it
    // accepts connections as they come.
    node.post_raw("/v1/status", vec![0; 3]).await;
    // Held open (waiting for a ClientHello) until one is closed at once.
    let mut held = Vec::new();
    loop {
        let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        let mut byte = [0u8; 1];
        let wait = std::time::Duration::from_millis(300);
        match tokio::time::timeout(wait, s.read(&mut byte)).await {
            Err(_) => held.push(s),
            Ok(read) => {
                assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
                break;
            }
        }
        assert!(held.len() <= 3, "the per-source limit was not applied");
    }
    assert!(!held.is_empty());
    let n = held.len();
    let mut first = held.remove(0);
    first.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest).await;
    drop(held);
    // Each failed handshake is counted as its connection's task sees it end.
    let expected = [
        r#"obscura_connections_refused_total{reason="per_source"} 1"#.to_string(),
        format!(r#"obscura_connections_refused_total{{reason="handshake"}} {n}"#),
    ];
    let started = std::time::Instant::now();
    loop {
        let answer = get(port, "/metrics").await;
        if expected.iter().all(|e| answer.contains(e.as_str())) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{n} held, {expected:?} in\n{answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    node.stop().await;
}
