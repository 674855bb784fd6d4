//! What a connection can make a node spend, tried as a client of the cluster (or anyone who
//! reaches the port) would: a body far over the operation's limit, headers sent a byte at a
//! time and then not at all, a body that never finishes, more connections than allowed, and a
//! flood of requests that fail authentication. Each is cut off by a limit from the node's
//! configuration, and none grows the audit log one entry at a time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use obscura_proto::{ErrorCode, ResponseBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TLS connection to node 1 with the cluster's client certificate.
async fn connect(node: &TestNode) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(node.addr).await?;
    let name = rustls_pki_types::ServerName::try_from("node-1.obscura").unwrap();
    TlsConnector::from(Arc::new(node.tls.clone()))
        .connect(name, tcp)
        .await
}

/// Everything the server sends until it closes the connection or `limit` passes; `None` when
/// it was still open at the end.
async fn read_until_closed(
    stream: &mut TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_body_over_the_operations_limit_is_refused_before_it_is_read() {
    let node = TestNode::start("big-body").await;
    // 200 MB announced to an operation that takes at most 1 MiB, and to an owner's prepare
    // (about 80 MiB): refused at once, from the announced length, without reading it.
    let owner = node.holder("olga", obscura_proto::roles::OWNER);
    let upload = ticket_header(&owner, 1, &TestNode::request(prepare(&some_upload(&node))));
    for (path, header, len) in [
        ("/v1/status", "", 200u64 << 20),
        ("/v1/prepare", upload.as_str(), 200 << 20),
    ] {
        let mut s = connect(&node).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: node-1.obscura\r\n{header}content-length: {len}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[0u8; 1024]).await.unwrap();
        let t = Instant::now();
        let answer = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    // A body just over the limit, really sent, is refused too, with a clear error.
    let big = vec![0u8; obscura_proto::limits::MAX_BODY + 1];
    let (status, body) = node.post_raw("/v1/status", big).await;
    assert_eq!((status, code(&body)), (413, Some(ErrorCode::TooLarge)));
    node.stop().await;
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let node = TestNode::start_with("slow", |c| {
        c.limits.header_timeout_s = 1;
        c.limits.body_timeout_s = 1;
    })
    .await;
    // Half a header, then nothing: closed after the header timeout.
    let mut s = connect(&node).await.unwrap();
    s.write_all(b"POST /v1/status HTTP/1.1\r\nhost: node-1")
        .await
        .unwrap();
    let t = Instant::now();
    assert!(
        read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .is_some(),
        "a half-sent header kept its connection open"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // A connection that sends nothing at all is closed as well.
    let mut idle = connect(&node).await.unwrap();
    assert!(read_until_closed(&mut idle, Duration::from_secs(5))
        .await
        .is_some());
    // A body that stops half-way: refused after the body timeout.
    let mut s = connect(&node).await.unwrap();
    s.write_all(
        b"POST /v1/status HTTP/1.1\r\nhost: node-1.obscura\r\ncontent-length: 1000\r\n\r\nOBSC",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    node.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_are_closed_at_once() {
    let node = TestNode::start_with("connections", |c| {
        c.limits.max_connections_per_source = 2;
    })
    .await;
    let first = connect(&node).await.unwrap();
    let second = connect(&node).await.unwrap();
    // The third is closed before its handshake completes.
    assert!(
        connect(&node).await.is_err(),
        "a third connection was served"
    );
    drop(first);
    // A place freed is taken again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if connect(&node).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    node.stop().await;
}

#[tokio::test]
async fn refused_unauthenticated_requests_are_summed_up_not_logged_one_by_one() {
    let node = TestNode::start_with("flood", |c| c.checkpoint_interval_s = 1).await;
    let before = audit(&node).await.len();
    for i in 0..60u32 {
        let (status, _) = if i % 2 == 0 {
            node.post_raw("/v1/status", b"garbage".to_vec()).await
        } else {
            let req = TestNode::request(obscura_proto::NodeBody::Status);
            node.post_raw("/v1/status", req.encode()).await
        };
        assert!(status == 400 || status == 401, "{status}");
    }
    // At the next tick, one entry sums them up (and a checkpoint may follow).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let entries = audit(&node).await;
    let summaries: Vec<String> = entries[before..]
        .iter()
        .filter(|e| e.kind == obscura_store::AuditKind::Refused.tag())
        .map(|e| String::from_utf8_lossy(&e.detail).into_owned())
        .collect();
    assert_eq!(
        summaries,
        vec!["unauthenticated requests refused=60".to_string()],
        "{summaries:?}"
    );
    assert!(
        entries.len() - before <= 4,
        "{} new entries",
        entries.len() - before
    );
    match node
        .send(&TestNode::request(obscura_proto::NodeBody::Status))
        .await
    {
        (200, ResponseBody::Status { .. }) => {}
        other => panic!("{other:?}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn an_upload_is_read_only_from_an_owner_whose_ticket_comes_first() {
    let node = TestNode::start_with("upload-gate", |c| c.limits.max_uploads = 1).await;
    let u = some_upload(&node);
    let owner = node.holder("olga", obscura_proto::roles::OWNER);
    let quinn = node.holder("quinn", obscura_proto::roles::QUERIER);
    let req = TestNode::request(prepare(&u));
    // Refused at once, before a place for uploads is taken or a byte of the body read: no
    // header; a querier's ticket; the owner's bare capability, as every node sees it on the
    // owner's requests (what a node that turned would send the others); the owner's ticket
    // for node 2 (what node 2 would replay here); a ticket from long ago.
    let bare = format!(
        "obscura-upload-ticket: {}\r\n",
        hex(&postcard::to_allocvec(owner.signed()).unwrap())
    );
    let mut old = req.clone();
    old.timestamp -= 3600;
    for header in [
        String::new(),
        ticket_header(&quinn, 1, &req),
        bare,
        ticket_header(&owner, 2, &req),
        ticket_header(&owner, 1, &old),
    ] {
        let mut s = connect(&node).await.unwrap();
        let head = format!(
            "POST /v1/prepare HTTP/1.1\r\nhost: node-1.obscura\r\n{header}content-length: 50000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let t = Instant::now();
        let answer = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 401") || text.starts_with("HTTP/1.1 403"),
            "{header}: {text}"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    // A ticket opens the gate for its own request only: another body behind it is refused.
    let mut signed = req.clone();
    owner.sign(1, &mut signed);
    let other = TestNode::request(prepare(&u));
    let (status, body) = node
        .post_with(
            "/v1/prepare",
            {
                let mut o = other.clone();
                owner.sign(1, &mut o);
                o.encode()
            },
            Some(&owner.upload_ticket(1, &signed)),
        )
        .await;
    assert_eq!((status, code(&body)), (401, Some(ErrorCode::Unauthorized)));
    // So strangers holding the cluster certificate cannot keep the one upload place busy:
    // the owner's upload goes through while they try.
    let mut hogs = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&node).await.unwrap();
        s.write_all(b"POST /v1/prepare HTTP/1.1\r\nhost: node-1.obscura\r\ncontent-length: 50000000\r\n\r\nx")
            .await
            .unwrap();
        hogs.push(s);
    }
    let (status, _) = node
        .post_with(
            "/v1/prepare",
            signed.encode(),
            Some(&owner.upload_ticket(1, &signed)),
        )
        .await;
    assert_eq!(status, 200);
    drop(hogs);
    node.stop().await;
}

/// The header line of `holder`'s upload ticket for `req` at node `node`.
fn ticket_header(
    holder: &obscura_auth::capability::Holder,
    node: u8,
    req: &obscura_proto::Request<obscura_proto::NodeBody>,
) -> String {
    let ticket = postcard::to_allocvec(&holder.upload_ticket(node, req)).unwrap();
    format!("obscura-upload-ticket: {}\r\n", hex(&ticket))
}

/// An upload of one photo from the test owner.
fn some_upload(node: &TestNode) -> Upload {
    upload(&node.owner, "camera.png", 1)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
