//! Nodes talk only to clients holding a certificate from their cluster's CA, and clients only to
//! nodes the CA certified: a stranger, or a client of another cluster, cannot complete a handshake.
//! And a client that asks for node 3 accepts only node 3's certificate: another node of the same
//! cluster cannot answer in its place.

use std::sync::Arc;

use obscura_cluster::tls::{client_config, make_cluster_tls, server_config, Identity, Party};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Run one handshake with a client asking for node 1 over an in-memory pipe and exchange a byte;
/// Ok if both sides succeed.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: rustls::ClientConfig,
) -> Result<(), String> {
    handshake_as(server, client, Party::Node(1)).await
}

/// [`handshake`] with a client asking for `party`.
async fn handshake_as(
    server: Arc<rustls::ServerConfig>,
    client: rustls::ClientConfig,
    party: Party,
) -> Result<(), String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let srv = tokio::spawn(async move {
        let mut s = TlsAcceptor::from(server)
            .accept(a)
            .await
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        s.write_all(&byte).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let name = ServerName::try_from(party.name()).unwrap();
    let cli = async move {
        let mut c = TlsConnector::from(Arc::new(client))
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        c.write_all(&[42]).await.map_err(|e| e.to_string())?;
        c.flush().await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(byte[0])
    };
    let (s, c) = tokio::join!(srv, cli);
    s.unwrap()?;
    assert_eq!(c?, 42);
    Ok(())
}

#[tokio::test]
async fn cluster_members_connect() {
    let tls = make_cluster_tls("test", 2, 0, &["admin"]).unwrap();
    let server = server_config(&tls.ca_cert_pem, &tls.nodes[1]).unwrap();
    let client = client_config(&tls.ca_cert_pem, &tls.clients[0]).unwrap();
    handshake_as(server, client, Party::Node(2)).await.unwrap();
}

#[tokio::test]
async fn node_2s_certificate_cannot_answer_as_node_3_or_as_a_keeper() {
    let tls = make_cluster_tls("test", 3, 1, &["admin"]).unwrap();
    let client = || client_config(&tls.ca_cert_pem, &tls.clients[0]).unwrap();
    let node2 = server_config(&tls.ca_cert_pem, &tls.nodes[1]).unwrap();
    let err = handshake_as(node2.clone(), client(), Party::Node(3))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(handshake_as(node2, client(), Party::Keeper(1))
        .await
        .is_err());
    let keeper1 = server_config(&tls.ca_cert_pem, &tls.keepers[0]).unwrap();
    assert!(handshake_as(keeper1.clone(), client(), Party::Node(1))
        .await
        .is_err());
    handshake_as(keeper1, client(), Party::Keeper(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_of_another_cluster_is_refused() {
    let ours = make_cluster_tls("ours", 1, 0, &["admin"]).unwrap();
    let theirs = make_cluster_tls("theirs", 1, 0, &["admin"]).unwrap();
    let server = server_config(&ours.ca_cert_pem, &ours.nodes[0]).unwrap();
    // Trusts our CA (so it would accept our node) but presents their certificate.
    let client = client_config(&ours.ca_cert_pem, &theirs.clients[0]).unwrap();
    assert!(handshake(server, client).await.is_err());
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let tls = make_cluster_tls("test", 1, 0, &[]).unwrap();
    let server = server_config(&tls.ca_cert_pem, &tls.nodes[0]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(tls.ca_cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    assert!(handshake(server, client).await.is_err());
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused_by_the_client() {
    let ours = make_cluster_tls("ours", 1, 0, &["admin"]).unwrap();
    let theirs = make_cluster_tls("theirs", 1, 0, &["admin"]).unwrap();
    let server = server_config(&ours.ca_cert_pem, &theirs.nodes[0]).unwrap();
    let client = client_config(&ours.ca_cert_pem, &ours.clients[0]).unwrap();
    assert!(handshake(server, client).await.is_err());
}

#[test]
fn bad_pem_is_a_clear_error() {
    let tls = make_cluster_tls("test", 1, 0, &["admin"]).unwrap();
    let garbage = Identity {
        cert_pem: "not a certificate".into(),
        key_pem: tls.nodes[0].key_pem.clone(),
    };
    let err = server_config(&tls.ca_cert_pem, &garbage).unwrap_err();
    assert!(err.to_string().contains("node certificate"), "{err}");
    assert!(client_config("nope", &tls.clients[0]).is_err());
    assert!(format!("{:?}", tls.nodes[0]).contains("redacted"));
}
