//! The TLS 1.3 configurations of end-to-end protected mesh streams (`mesh::e2e`), built
//! from the node's own material next to the link configurations in [`super::tls`]: the
//! same certificate, key and CAs, but TLS 1.3 only, a client certificate always required
//! (both ends prove their node IDs), no session tickets or resumption (each stream is a
//! fresh handshake, so nothing is sent after it that the stream's record layer would
//! have to skip), and no SNI (node IDs are checked from the certificates instead).

use std::sync::Arc;

use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::tls::{NodeVerifier, TlsError};

/// Both halves of the end-to-end stream handshake.
#[derive(Debug)]
pub(crate) struct StreamTls {
    /// Used by a stream's opener; verifies the acceptor's chain (its node ID is checked
    /// after the handshake).
    pub(crate) client: Arc<ClientConfig>,
    /// Used by a stream's acceptor; demands and verifies the opener's certificate.
    pub(crate) server: Arc<ServerConfig>,
}

pub(super) fn build(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<StreamTls, TlsError> {
    let cfg = |e: rustls::Error| TlsError::Config(format!("end-to-end stream TLS: {e}"));
    let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(tls13)
        .map_err(cfg)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(cfg)?;
    server.send_tls13_tickets = 0;
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(tls13)
        .map_err(cfg)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeVerifier { inner: server_verifier }))
        .with_client_auth_cert(chain, key.clone_key())
        .map_err(cfg)?;
    client.resumption = Resumption::disabled();
    client.enable_sni = false;
    Ok(StreamTls { client: Arc::new(client), server: Arc::new(server) })
}
