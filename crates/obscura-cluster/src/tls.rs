//! TLS material made at cluster creation, and the rustls configurations built from it.
//!
//! One cluster CA signs a server certificate per node and per keeper and a client certificate
//! per cluster client. Each server certificate is valid for one name only, its party's
//! (`node-3.obscura`, `keeper-1.obscura`, see [`Party::name`]), and clients connect to a party by
//! that name ([`Endpoint`]: the configured address, reached under the party's name), so the
//! certificate of node 2 cannot answer as node 3 even though the same CA signed both. Nodes
//! accept only connections that present a client certificate from that CA. The CA's private key
//! is used once, at creation, and not stored: adding a member means making new material.
//!
//! Both sides use rustls with the `ring` provider.

use std::sync::Arc;

#[cfg(feature = "deal")]
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// TLS errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Certificate generation failed.
    #[cfg(feature = "deal")]
    #[error("cannot make certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file does not hold what it should.
    #[error("cannot read {what}: {reason}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A certificate and its private key, PEM-encoded. The key is wiped on drop.
pub struct Identity {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity { key: <redacted>, .. }")
    }
}

/// A server of the cluster, as its certificate names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// Node `i`.
    Node(u8),
    /// Keeper `j`.
    Keeper(u8),
}

impl Party {
    /// The one DNS name its certificate is valid for, and that clients ask for.
    pub fn name(self) -> String {
        match self {
            Party::Node(i) => format!("node-{i}.obscura"),
            Party::Keeper(j) => format!("keeper-{j}.obscura"),
        }
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Party::Node(i) => write!(f, "node {i}"),
            Party::Keeper(j) => write!(f, "keeper {j}"),
        }
    }
}

/// How a client reaches a party: it connects to the configured address but asks for, and
/// checks the certificate against, the party's own name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The party.
    pub party: Party,
    /// The base URL requests go to: `https://<party name>:<port>`.
    pub base: String,
    /// The address the party's name stands for.
    pub addr: std::net::SocketAddr,
}

impl Endpoint {
    /// The endpoint of `party` configured at `url` (`https://host:port`).
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that is not `https://host:port` or a host that does not
    /// resolve.
    pub fn new(party: Party, url: &str) -> Result<Endpoint, Error> {
        use std::net::ToSocketAddrs;
        let bad = |why: &str| Error::Config(format!("{party} at {url:?}: {why}"));
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("not an https:// URL"))?
            .trim_end_matches('/');
        let addr = rest
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("the host does not resolve"))?;
        Ok(Endpoint {
            party,
            base: format!("https://{}:{}", party.name(), addr.port()),
            addr,
        })
    }
}

/// Everything a cluster's TLS needs: the CA certificate, one server identity per node and one
/// client identity per client.
#[cfg(feature = "deal")]
#[derive(Debug)]
pub struct ClusterTls {
    /// The CA certificate every party trusts.
    pub ca_cert_pem: String,
    /// Node `i + 1`'s server identity.
    pub nodes: Vec<Identity>,
    /// Keeper `j + 1`'s server identity.
    pub keepers: Vec<Identity>,
    /// Client identities, in the order of the names given.
    pub clients: Vec<Identity>,
}

#[cfg(feature = "deal")]
fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Obscura cluster");
    dn.push(DnType::CommonName, common);
    dn
}

/// Make a CA, then `nodes` node and `keepers` keeper server identities, each valid for its
/// party's name only, and one client identity per name.
///
/// # Errors
/// [`Error::Generate`] if a key or certificate cannot be made.
#[cfg(feature = "deal")]
pub fn make_cluster_tls(
    cluster: &str,
    nodes: usize,
    keepers: usize,
    clients: &[&str],
) -> Result<ClusterTls, Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name(&format!("{cluster} CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let issue = |common: String, sans: Vec<String>, usage| -> Result<Identity, Error> {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name = name(&common);
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    };
    let nodes = (1..=nodes)
        .map(|i| {
            issue(
                format!("{cluster} node {i}"),
                vec![Party::Node(i as u8).name()],
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        })
        .collect::<Result<_, _>>()?;
    let keepers = (1..=keepers)
        .map(|j| {
            issue(
                format!("{cluster} keeper {j}"),
                vec![Party::Keeper(j as u8).name()],
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        })
        .collect::<Result<_, _>>()?;
    let clients = clients
        .iter()
        .map(|c| {
            issue(
                format!("{cluster} client {c}"),
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(ClusterTls {
        ca_cert_pem: ca.pem(),
        nodes,
        keepers,
        clients,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what,
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Pem {
        what,
        reason: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "CA certificate")? {
        roots
            .add(c)
            .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A node's server configuration: its identity, and client certificates required from the CA.
///
/// # Errors
/// [`Error::Pem`] for unreadable PEM, [`Error::Config`] when rustls refuses the material.
pub fn server_config(ca_pem: &str, node: &Identity) -> Result<Arc<ServerConfig>, Error> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&node.cert_pem, "node certificate")?,
            key(&node.key_pem, "node key")?,
        )
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A client configuration: trust only the cluster CA, present `client` when asked.
///
/// # Errors
/// [`Error::Pem`] for unreadable PEM, [`Error::Config`] when rustls refuses the material.
pub fn client_config(ca_pem: &str, client: &Identity) -> Result<ClientConfig, Error> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(
            certs(&client.cert_pem, "client certificate")?,
            key(&client.key_pem, "client key")?,
        )
        .map_err(|e| Error::Config(e.to_string()))
}
