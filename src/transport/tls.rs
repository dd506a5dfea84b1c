//! TLS links (rustls): mutual TLS by default, TLS 1.3 preferred and 1.2 only with AEAD
//! suites. A peer's identity is the node ID in its certificate's otherName SAN (Go
//! Receptor's convention); the link handshake checks it against the ID the peer announces.
//! Material is reloadable: new connections use the newest, established ones are untouched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::BoxedIo;

/// The otherName OID Receptor uses for node IDs (in certificates Go Receptor and
/// `receptor cert` issue).
pub const NODE_ID_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 2312, 19, 1];

/// Where a node's TLS material comes from, and its policy.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Vec<PathBuf>,
    /// TLS listeners demand a client certificate (mutual TLS).
    pub require_client_cert: bool,
    /// Accept only peers whose leaf certificate has one of these SHA-256 fingerprints.
    pub pinned: Vec<[u8; 32]>,
    pub min_tls13: bool,
    /// Run even if our own certificate does not name our node ID.
    pub skip_node_id_check: bool,
}

/// Why TLS material is unusable or a TLS connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("peer certificate fingerprint {0} is not pinned")]
    NotPinned(String),
}

/// What a TLS peer proved about itself.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub node_ids: Vec<String>,
    pub fingerprint: [u8; 32],
    /// The peer presented a certificate (verified against the CAs). A TLS listener without
    /// `require_client_cert` also accepts peers without one: they prove no node ID, and
    /// link admission only lets them join under a temporary client ID
    /// (`identity::may_join_uncertified`).
    pub certified: bool,
}

struct Material {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// End-to-end stream handshakes (`mesh::e2e`).
    streams: Arc<super::stream_tls::StreamTls>,
    credentials: Arc<Credentials>,
}

/// The node's certificate material as `mesh::origin` signs and verifies advertisements
/// with it: the same files as the links, reloaded with them.
pub struct Credentials {
    /// This node's certificate chain, leaf first, as configured in `tls.cert`.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf (`tls.key`): ECDSA, Ed25519 or RSA.
    pub key: Arc<dyn rustls::sign::SigningKey>,
    /// The configured CAs (`tls.ca`).
    pub roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("chain", &self.chain.len()).finish_non_exhaustive()
    }
}

/// The node's current TLS material; cheap to clone, reloadable in place.
#[derive(Clone)]
pub struct TlsContext {
    settings: Arc<TlsSettings>,
    /// `limits.stream_resumption`: how long end-to-end stream tickets are good for.
    resumption: std::time::Duration,
    current: Arc<RwLock<Arc<Material>>>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext").field("cert", &self.settings.cert).finish_non_exhaustive()
    }
}

impl TlsContext {
    /// Loads and checks the material: files readable, certificate current and naming
    /// `node_id` (unless configured otherwise).
    pub fn load(settings: TlsSettings, node_id: &str) -> Result<TlsContext, TlsError> {
        Self::load_with(settings, node_id, crate::limits::Limits::default().stream_resumption)
    }

    /// [`TlsContext::load`] with end-to-end stream resumption good for `resumption`
    /// (`limits.stream_resumption`; zero turns it off).
    pub fn load_with(
        settings: TlsSettings,
        node_id: &str,
        resumption: std::time::Duration,
    ) -> Result<TlsContext, TlsError> {
        let material = build(&settings, node_id, resumption)?;
        Ok(TlsContext {
            settings: Arc::new(settings),
            resumption,
            current: Arc::new(RwLock::new(Arc::new(material))),
        })
    }

    /// Re-reads every file; on error the old material stays in use.
    pub fn reload(&self, node_id: &str) -> Result<(), TlsError> {
        let material = build(&self.settings, node_id, self.resumption)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(material);
        }
        Ok(())
    }

    /// The current certificate, key and CAs (they change on reload).
    pub fn credentials(&self) -> Result<Arc<Credentials>, TlsError> {
        Ok(self.material()?.credentials.clone())
    }

    fn material(&self) -> Result<Arc<Material>, TlsError> {
        self.current.read().map(|m| m.clone()).map_err(|_| TlsError::Config("TLS state poisoned".into()))
    }

    /// The configurations of end-to-end protected streams, from the current material.
    pub(crate) fn stream_tls(&self) -> Result<Arc<super::stream_tls::StreamTls>, TlsError> {
        Ok(self.material()?.streams.clone())
    }

    /// Client side of a link.
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> Result<(BoxedIo, PeerIdentity), TlsError> {
        let connector = tokio_rustls::TlsConnector::from(self.material()?.client.clone());
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| TlsError::Config(format!("{host:?} is not a valid server name")))?;
        let stream = connector.connect(name, tcp).await.map_err(TlsError::Handshake)?;
        let id = identity(stream.get_ref().1.peer_certificates())?;
        self.check_pin(&id)?;
        Ok((Box::new(stream), id))
    }

    /// Server side of a link. Without mutual TLS the peer may have no certificate: its
    /// identity then names no node ID and is not `certified` (and fails any pinning).
    pub async fn accept(&self, tcp: TcpStream) -> Result<(BoxedIo, Option<PeerIdentity>), TlsError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.material()?.server.clone());
        let stream = acceptor.accept(tcp).await.map_err(TlsError::Handshake)?;
        let id = match stream.get_ref().1.peer_certificates() {
            Some(certs) if !certs.is_empty() => identity(Some(certs))?,
            _ => PeerIdentity { node_ids: Vec::new(), fingerprint: [0; 32], certified: false },
        };
        self.check_pin(&id)?;
        Ok((Box::new(stream), Some(id)))
    }

    fn check_pin(&self, id: &PeerIdentity) -> Result<(), TlsError> {
        if self.settings.pinned.is_empty() || self.settings.pinned.contains(&id.fingerprint) {
            return Ok(());
        }
        Err(TlsError::NotPinned(hex(&id.fingerprint)))
    }
}

fn identity(certs: Option<&[CertificateDer<'_>]>) -> Result<PeerIdentity, TlsError> {
    let leaf =
        certs.and_then(|c| c.first()).ok_or_else(|| TlsError::Config("peer sent no certificate".into()))?;
    Ok(PeerIdentity {
        node_ids: node_ids_in_der(leaf).unwrap_or_default(),
        fingerprint: sha256(leaf),
        certified: true,
    })
}

/// SHA-256 of `bytes` (certificate fingerprints, digests used as keys).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a SHA-256 fingerprint written as hex, with or without colons.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let clean: String = s.chars().filter(|c| *c != ':').collect();
    if clean.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(clean.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Node IDs in a DER certificate's otherName SANs.
pub fn node_ids_in_der(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::der_parser::asn1_rs::{Any, FromDer, Tag, TaggedExplicit};
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Ok(Vec::new()) };
    let mut ids = Vec::new();
    for name in &san.value.general_names {
        let GeneralName::OtherName(oid, value) = name else { continue };
        if !oid.iter().is_some_and(|arcs| arcs.eq(NODE_ID_OID.iter().copied())) {
            continue;
        }
        let Ok((_, inner)) =
            TaggedExplicit::<Any<'_>, x509_parser::der_parser::asn1_rs::Error, 0>::from_der(value)
        else {
            continue;
        };
        let inner = inner.into_inner();
        if inner.tag() == Tag::Utf8String {
            if let Ok(s) = std::str::from_utf8(inner.data) {
                ids.push(s.to_owned());
            }
        }
    }
    Ok(ids)
}

/// Node IDs in the first certificate of a PEM text.
pub fn node_ids_in_pem(pem: &str) -> Result<Vec<String>, String> {
    let cert = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())?;
    node_ids_in_der(&cert)
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File { path: path.display().to_string(), reason: reason.to_string() }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    std::fs::metadata(path).map_err(|e| file_err(path, e))?;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "contains no certificate"));
    }
    Ok(certs)
}

fn build(s: &TlsSettings, node_id: &str, resumption: std::time::Duration) -> Result<Material, TlsError> {
    let chain = load_certs(&s.cert)?;
    std::fs::metadata(&s.key).map_err(|e| file_err(&s.key, e))?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| file_err(&s.key, format!("not a PEM private key: {e}")))?;
    check_own_cert(&s.cert, &chain[0], node_id, s.skip_node_id_check)?;
    let mut roots = RootCertStore::empty();
    for ca in &s.ca {
        for c in load_certs(ca)? {
            roots.add(c).map_err(|e| file_err(ca, format!("unusable CA certificate: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::Config("tls.ca: at least one CA certificate is required".into()));
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| file_err(&s.key, format!("unusable private key: {e}")))?;
    let credentials = Arc::new(Credentials { chain: chain.clone(), key: signing_key, roots: roots.clone() });
    let versions: &[&rustls::SupportedProtocolVersion] = if s.min_tls13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let cfg_err = |e: rustls::Error| TlsError::Config(e.to_string());
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let client_verifier =
        if s.require_client_cert { client_verifier } else { client_verifier.allow_unauthenticated() }
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(cfg_err)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| file_err(&s.key, format!("does not match {}: {e}", s.cert.display())))?;
    let streams = super::stream_tls::build(chain.clone(), &key, roots.clone(), provider.clone(), resumption)?;
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(cfg_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeVerifier { inner: server_verifier }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| file_err(&s.key, e))?;
    Ok(Material {
        server: Arc::new(server),
        client: Arc::new(client),
        credentials,
        streams: Arc::new(streams),
    })
}

fn check_own_cert(path: &Path, der: &CertificateDer<'_>, node_id: &str, skip: bool) -> Result<(), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| file_err(path, e))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64);
    if now.is_ok_and(|n| cert.validity().not_after.timestamp() < n) {
        return Err(file_err(path, format!("certificate expired on {}", cert.validity().not_after)));
    }
    let ids = node_ids_in_der(der).map_err(|e| file_err(path, e))?;
    if !skip && !ids.iter().any(|i| i == node_id) {
        let names = if ids.is_empty() { "no node ID".to_owned() } else { format!("node IDs {ids:?}") };
        return Err(file_err(
            path,
            format!(
                "certificate names {names}, not this node's ID {node_id:?} (tls.skip_node_id_check overrides)"
            ),
        ));
    }
    Ok(())
}

/// Verifies the server's chain against our CAs but not its DNS name: a mesh peer is
/// identified by the node ID in its certificate, checked against its handshake.
#[derive(Debug)]
pub(super) struct NodeVerifier {
    pub(super) inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
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
