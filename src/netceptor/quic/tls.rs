//! User TLS inside netceptor streams (Go's ConnType 2), from the node's `[tls]` material:
//! the certificate and key this node presents, the CAs it checks peers against. Both
//! directions check what Go checks (docs/PROTOCOL.md, "Netceptor"): a server's chain to
//! the CAs, EKU serverAuth and a node-ID SAN naming the node dialed; a client's chain, EKU
//! clientAuth and a node-ID SAN naming the node its packets come from. Go checks the
//! client's ID in `GetConfigForClient`; here every connection gets a server config whose
//! verifier knows that node (quinn's `Incoming::accept_with`), so a wrong ID fails the
//! handshake (a TLS alert, Go's `CRYPTO_ERROR`) as it does between Go nodes. The configs
//! follow `[tls]` reloads: they are rebuilt when the material changes.

use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::config::{self, ALPN, ConfigError};
use crate::transport::TlsContext;
use crate::transport::tls::{Credentials, node_ids_in_der};

/// Why a certificate's node IDs do not fit the connection (inside a rustls error).
#[derive(Debug, thiserror::Error)]
#[error("the certificate names {found}, not node {expected}")]
pub struct WrongNode {
    pub expected: String,
    pub found: String,
}

fn names(der: &[u8], node: &str) -> Result<(), rustls::Error> {
    let ids = node_ids_in_der(der).unwrap_or_default();
    if ids.iter().any(|i| i == node) {
        return Ok(());
    }
    let found = if ids.is_empty() { "no node ID".to_owned() } else { format!("node IDs {ids:?}") };
    Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(WrongNode {
        expected: node.to_owned(),
        found,
    })))))
}

/// Whether the leaf of a verified chain names `node` (the server's confirmation after the
/// handshake, from which the session's identity is taken).
pub fn leaf_names(certs: &[CertificateDer<'_>], node: &str) -> bool {
    certs.first().is_some_and(|c| names(c, node).is_ok())
}

/// This node's certificate and key, presented as server and as client.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for OneCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client verifier for one connection: chain to the CAs and EKU clientAuth (webpki),
/// then the node-ID SAN must name `node`, the node the connection's packets come from.
#[derive(Debug)]
struct ExpectClient {
    inner: Arc<dyn ClientCertVerifier>,
    node: String,
}

impl ClientCertVerifier for ExpectClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        names(end_entity, &self.node)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// Why a dial's server certificate was refused, in words (set by its verifier; rustls's
/// own error text shows the reason only in debug form).
pub type Refusal = Arc<std::sync::OnceLock<String>>;

/// A server verifier for one dial: chain to the CAs and EKU serverAuth (webpki; the DNS
/// name is not checked, Go does not either), then the node-ID SAN must name `node`.
#[derive(Debug)]
struct ExpectServer {
    inner: Arc<WebPkiServerVerifier>,
    node: String,
    refusal: Refusal,
}

impl ServerCertVerifier for ExpectServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                names(end_entity, &self.node)
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(e) => {
                let why = match &e {
                    rustls::Error::InvalidCertificate(CertificateError::Other(o)) => o.to_string(),
                    other => other.to_string(),
                };
                let _ = self.refusal.set(why);
                Err(e)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The parts built from one version of the material.
struct Built {
    of: Arc<Credentials>,
    key: Arc<CertifiedKey>,
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

/// User-TLS configurations of this node's netceptor streams.
pub struct UserTls {
    ctx: TlsContext,
    provider: Arc<rustls::crypto::CryptoProvider>,
    built: Mutex<Option<Arc<Built>>>,
}

impl std::fmt::Debug for UserTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTls").finish_non_exhaustive()
    }
}

impl UserTls {
    pub fn new(ctx: TlsContext) -> UserTls {
        UserTls { ctx, provider: Arc::new(rustls::crypto::ring::default_provider()), built: Mutex::default() }
    }

    fn current(&self) -> Result<Arc<Built>, ConfigError> {
        let creds = self.ctx.credentials().map_err(|e| ConfigError::Cert(e.to_string()))?;
        let mut cache = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = cache.as_ref().filter(|b| Arc::ptr_eq(&b.of, &creds)) {
            return Ok(b.clone());
        }
        let key = Arc::new(CertifiedKey::new(creds.chain.clone(), creds.key.clone()));
        let clients = WebPkiClientVerifier::builder_with_provider(creds.roots.clone(), self.provider.clone())
            .build()
            .map_err(|e| ConfigError::Cert(e.to_string()))?;
        let servers = WebPkiServerVerifier::builder_with_provider(creds.roots.clone(), self.provider.clone())
            .build()
            .map_err(|e| ConfigError::Cert(e.to_string()))?;
        let b = Arc::new(Built { of: creds, key, clients, servers });
        *cache = Some(b.clone());
        Ok(b)
    }

    /// The server config of one connection from `node` (at most `streams` streams).
    pub fn server(&self, node: &str, streams: u32) -> Result<quinn::ServerConfig, ConfigError> {
        let b = self.current()?;
        let verifier = Arc::new(ExpectClient { inner: b.clients.clone(), node: node.to_owned() });
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(OneCert(b.key.clone())));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(|e| ConfigError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(Arc::new(config::transport(false, streams)));
        server.migration(false);
        Ok(server)
    }

    /// The client config of one dial to `node`, and where its verifier says why it refused
    /// the server's certificate.
    pub fn client(&self, node: &str) -> Result<(quinn::ClientConfig, Refusal), ConfigError> {
        let b = self.current()?;
        let refusal = Refusal::default();
        let verifier = Arc::new(ExpectServer {
            inner: b.servers.clone(),
            node: node.to_owned(),
            refusal: refusal.clone(),
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(OneCert(b.key.clone())));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(|e| ConfigError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(Arc::new(config::transport(true, 1)));
        Ok((client, refusal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, OtherNameValue, SanType,
    };
    use rustls::RootCertStore;

    struct Pki {
        ca: rcgen::Certificate,
        ca_key: KeyPair,
    }

    impl Pki {
        fn new() -> Pki {
            let ca_key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            Pki { ca: p.self_signed(&ca_key).expect("ca"), ca_key }
        }

        /// A leaf naming `node` with the EKUs `eku`.
        fn leaf(&self, node: &str, eku: Vec<ExtendedKeyUsagePurpose>) -> CertificateDer<'static> {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            let oid = crate::transport::tls::NODE_ID_OID.to_vec();
            p.subject_alt_names.push(SanType::OtherName((oid, OtherNameValue::Utf8String(node.into()))));
            p.extended_key_usages = eku;
            p.signed_by(&key, &self.ca, &self.ca_key).expect("leaf").der().clone()
        }

        fn roots(&self) -> Arc<RootCertStore> {
            let mut r = RootCertStore::empty();
            r.add(self.ca.der().clone()).expect("root");
            Arc::new(r)
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn expect_server(pki: &Pki, node: &str) -> ExpectServer {
        let inner = WebPkiServerVerifier::builder_with_provider(pki.roots(), provider()).build().expect("v");
        ExpectServer { inner, node: node.into(), refusal: Refusal::default() }
    }

    fn expect_client(pki: &Pki, node: &str) -> ExpectClient {
        let inner = WebPkiClientVerifier::builder_with_provider(pki.roots(), provider()).build().expect("v");
        ExpectClient { inner, node: node.into() }
    }

    #[test]
    fn servers_need_the_chain_server_auth_and_the_node_dialed() {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let pki = Pki::new();
        let name = ServerName::try_from("goexec").expect("name");
        let now = UnixTime::now();
        let check = |v: &ExpectServer, c: &CertificateDer<'_>| v.verify_server_cert(c, &[], &name, &[], now);
        let v = expect_server(&pki, "goexec");
        assert!(check(&v, &pki.leaf("goexec", vec![ServerAuth, ClientAuth])).is_ok());
        assert!(check(&v, &pki.leaf("goexec", vec![ClientAuth])).is_err(), "EKU serverAuth required");
        let wrong = expect_server(&pki, "goexec");
        assert!(check(&wrong, &pki.leaf("notgoexec", vec![ServerAuth])).is_err());
        let why = wrong.refusal.get().cloned().unwrap_or_default();
        assert_eq!(why, "the certificate names node IDs [\"notgoexec\"], not node goexec");
        let other = Pki::new();
        assert!(check(&v, &other.leaf("goexec", vec![ServerAuth])).is_err(), "another CA");
    }

    #[test]
    fn clients_need_the_chain_client_auth_and_the_node_their_packets_name() {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let pki = Pki::new();
        let now = UnixTime::now();
        let v = expect_client(&pki, "goctl");
        assert!(v.client_auth_mandatory());
        assert!(v.verify_client_cert(&pki.leaf("goctl", vec![ClientAuth]), &[], now).is_ok());
        assert!(
            v.verify_client_cert(&pki.leaf("goctl", vec![ServerAuth]), &[], now).is_err(),
            "EKU clientAuth"
        );
        assert!(v.verify_client_cert(&pki.leaf("other", vec![ClientAuth]), &[], now).is_err(), "node ID");
        assert!(v.verify_client_cert(&Pki::new().leaf("goctl", vec![ClientAuth]), &[], now).is_err(), "CA");
        assert!(leaf_names(&[pki.leaf("goctl", vec![])], "goctl"));
        assert!(!leaf_names(&[pki.leaf("goctl", vec![])], "goct"));
        assert!(!leaf_names(&[], "goctl"));
    }
}
