//! Dialing a stream service on another netceptor node (Go's `DialContext`): every dial
//! binds a fresh ephemeral service (8 random characters), runs a quinn client endpoint on
//! it and opens one bidirectional stream whose first byte is `0x00`. In Go's insecure
//! mode (ConnType 1, what Go's control service uses without `tls=`) the server proves
//! nothing but the common name `netceptor-insecure-common-name` on its certificate; the
//! TLS 1.3 signature is still verified, so the stream is encrypted end to end. A service
//! advertised with ConnType 2 is dialed with user TLS ([`super::tls`]): this node's `[tls]`
//! certificate as the client's, and the server's must chain to `[tls] ca`, carry EKU
//! serverAuth and name the node dialed.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::config::{self, ALPN, ConfigError, INSECURE_CN};
use super::socket::NetSocket;
use crate::netceptor::NetceptorNode;

/// Go's handshake timeout for dialers.
const HANDSHAKE: Duration = Duration::from_secs(15);

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("no route to node {0} on the netceptor plane")]
    NoRoute(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("QUIC: {0}")]
    Quic(String),
    #[error("no QUIC handshake with {0} within {HANDSHAKE:?}")]
    Timeout(String),
    #[error("{node}:{service} is served with TLS (ConnType 2) and this node has no [tls] section")]
    NeedsTls { node: String, service: String },
    #[error("TLS with {node} refused: {reason}")]
    Tls { node: String, reason: String },
    /// A stream that had to be user TLS (`tlsclient`) to a service not advertised so.
    #[error(
        "{node}:{service} must be reached with TLS (tlsclient) but is advertised {}; \
         the TLS handshake failed: {reason}",
        advertised_as(*advertised)
    )]
    NotServedWithTls { node: String, service: String, advertised: Option<u8>, reason: String },
}

fn advertised_as(conn_type: Option<u8>) -> &'static str {
    match conn_type {
        None => "by no advertisement yet",
        Some(crate::netceptor::wire::CONN_STREAM_TLS) => "with TLS (ConnType 2)",
        Some(_) => "without TLS (Go's insecure mode)",
    }
}

/// Accepts a server certificate iff one presented certificate has the insecure common
/// name (Go `generateClientTLSConfig`); handshake signatures are verified.
#[derive(Debug)]
struct InsecureCn(Arc<rustls::crypto::CryptoProvider>);

fn has_insecure_cn(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| {
        c.subject().iter_common_name().any(|cn| cn.as_str().is_ok_and(|s| s == INSECURE_CN))
    })
}

impl ServerCertVerifier for InsecureCn {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if std::iter::once(end_entity).chain(intermediates).any(|c| has_insecure_cn(c)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("insecure connection to secure service".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn insecure_client() -> Result<quinn::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InsecureCn(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| ConfigError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(config::transport(true, 1)));
    Ok(client)
}

/// One open stream to a remote service: its halves, and what must live as long as they do.
pub struct Dialed {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub session: Arc<DialSession>,
    /// The server proved the node ID dialed (user TLS), rather than Go's insecure mode.
    pub authenticated: bool,
}

/// A name for the TLS ClientHello: Go ignores it (and v1.4 sends its own node ID); a node
/// ID that is no valid DNS name is replaced.
fn sni(node: &str) -> String {
    match ServerName::try_from(node) {
        Ok(ServerName::DnsName(_)) => node.to_owned(),
        _ => INSECURE_CN.to_owned(),
    }
}

/// The connection, its endpoint and the ephemeral service behind a dialed stream; when
/// the last half is dropped the connection is closed ("normal close", code 0, as Go) and
/// the service unbound.
pub struct DialSession {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    node: NetceptorNode,
    service: String,
}

impl Drop for DialSession {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"normal close");
        let (endpoint, node, service) = (self.endpoint.clone(), self.node.clone(), self.service.clone());
        let tracker = node.tracker().clone();
        tracker.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
            node.unbind(&service).await;
        });
    }
}

impl NetceptorNode {
    /// How `node` advertises `service` (Go's `ConnType`), if this node has its advertisement.
    pub async fn conn_type(&self, node: &str, service: &str) -> Option<u8> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let cmd =
            crate::netceptor::driver::Cmd::ConnType { node: node.into(), service: service.into(), reply };
        self.cmds().send(cmd).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Opens a stream to `node:service` as its advertisement says: user TLS for ConnType
    /// 2 (or once it said so), Go's insecure mode otherwise.
    pub async fn dial(&self, node: &str, service: &str) -> Result<Dialed, DialError> {
        let advertised = self.conn_type(node, service).await;
        if self.wants_tls(node, service, advertised) {
            let tls = self
                .user_tls()
                .ok_or_else(|| DialError::NeedsTls { node: node.into(), service: service.into() })?;
            let (client, refusal) = tls.client(node)?;
            return self.dial_with(node, service, client, &sni(node), Some(refusal)).await;
        }
        self.dial_with(node, service, insecure_client()?, INSECURE_CN, None).await
    }

    /// Opens a stream to `node:service` with user TLS whatever its advertisement says (a
    /// unit submitted with `tlsclient`): the server must prove it is `node`, so a Go node
    /// serving in insecure mode is refused in the handshake, before any request.
    pub async fn dial_user_tls(&self, node: &str, service: &str) -> Result<Dialed, DialError> {
        let tls = self.user_tls().ok_or_else(|| {
            ConfigError::Cert("user TLS streams need the [tls] section (this node's certificate)".into())
        })?;
        let advertised = self.conn_type(node, service).await;
        let (client, refusal) = tls.client(node)?;
        match self.dial_with(node, service, client, &sni(node), Some(refusal)).await {
            Err(DialError::Tls { node, reason })
                if advertised != Some(crate::netceptor::wire::CONN_STREAM_TLS) =>
            {
                Err(DialError::NotServedWithTls { node, service: service.into(), advertised, reason })
            }
            r => r,
        }
    }

    /// Opens a stream to `node:service` with the QUIC client config `client`: user TLS
    /// when `refusal` is given (where its verifier, which checks the server's node ID,
    /// says why it refused a certificate).
    pub async fn dial_with(
        &self,
        node: &str,
        service: &str,
        client: quinn::ClientConfig,
        server_name: &str,
        refusal: Option<super::tls::Refusal>,
    ) -> Result<Dialed, DialError> {
        let authenticated = refusal.is_some();
        if !self.routable(node) {
            return Err(DialError::NoRoute(node.to_owned()));
        }
        let local = crate::netceptor::proto::random_name();
        let rx = self.bind(&local, self.limits().service_queue).await;
        let socket = NetSocket::new(local.clone(), rx, self.cmds());
        let target = socket.addr_of(node, service);
        let built = quinn::Endpoint::new_with_abstract_socket(
            config::endpoint(),
            None,
            Arc::new(socket),
            Arc::new(quinn::TokioRuntime),
        );
        let r = async {
            let endpoint = built.map_err(|e| DialError::Quic(e.to_string()))?;
            let target = target.ok_or_else(|| DialError::Quic("address table full".into()))?;
            let connecting = endpoint
                .connect_with(client, target, server_name)
                .map_err(|e| DialError::Quic(e.to_string()))?;
            let conn = match tokio::time::timeout(HANDSHAKE, connecting).await {
                Err(_) => return Err(DialError::Timeout(node.to_owned())),
                Ok(Err(e)) if authenticated => {
                    let reason =
                        refusal.as_ref().and_then(|r| r.get().cloned()).unwrap_or_else(|| e.to_string());
                    return Err(DialError::Tls { node: node.to_owned(), reason });
                }
                Ok(r) => r.map_err(|e| DialError::Quic(e.to_string()))?,
            };
            let session = Arc::new(DialSession {
                conn: conn.clone(),
                endpoint,
                node: self.clone(),
                service: local.clone(),
            });
            let (mut send, recv) = conn.open_bi().await.map_err(|e| DialError::Quic(e.to_string()))?;
            send.write_all(&[0]).await.map_err(|e| DialError::Quic(e.to_string()))?;
            Ok(Dialed { send, recv, session, authenticated })
        }
        .await;
        if r.is_err() {
            self.unbind(&local).await;
        }
        r
    }
}

/// The writing half of a dialed stream: closing it half-closes (FIN), as Go's `Close`.
pub struct DialWrite {
    pub send: quinn::SendStream,
    pub session: Arc<DialSession>,
}
