//! QUIC and TLS settings that Go Receptor 1.4 (quic-go 0.28/0.29) accepts: ALPN
//! `netceptor`, TLS 1.3, a 30 s idle timeout, datagrams never above quic-go's 1452-byte
//! receive buffer, one bidirectional stream per connection. "Insecure" services (Go's
//! ConnType 1) present a self-signed certificate whose common name is
//! `netceptor-insecure-common-name`, the only thing a Go dialer checks in that mode.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{EndpointConfig, IdleTimeout, MtuDiscoveryConfig, ServerConfig, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// ALPN of every netceptor QUIC connection.
pub const ALPN: &[u8] = b"netceptor";
/// The common name of the certificates of insecure services.
pub const INSECURE_CN: &str = "netceptor-insecure-common-name";
/// quic-go reads netceptor datagrams into a buffer this large and truncates the rest.
pub const MAX_DATAGRAM: u16 = 1452;
/// Go's `MaxIdleTimeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why QUIC settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("certificate: {0}")]
    Cert(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("QUIC: {0}")]
    Quic(String),
}

/// The transport parameters of every netceptor connection: the peer may open `streams`
/// bidirectional streams at once (Go uses one).
pub fn transport(keep_alive: bool, streams: u32) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    if keep_alive {
        t.keep_alive_interval(Some(Duration::from_secs(15)));
    }
    t.initial_mtu(1200);
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_DATAGRAM);
    t.mtu_discovery_config(Some(mtu));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.max_concurrent_bidi_streams(VarInt::from_u32(streams));
    t
}

/// Endpoint settings: datagrams within quic-go's limit.
pub fn endpoint() -> EndpointConfig {
    let mut e = EndpointConfig::default();
    let _ = e.max_udp_payload_size(MAX_DATAGRAM);
    e
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server for an insecure service: a fresh self-signed certificate (as Go makes one
/// per listener), no client authentication.
pub fn insecure_server(streams: u32) -> Result<ServerConfig, ConfigError> {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| ConfigError::Cert(e.to_string()))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, INSECURE_CN);
    let key = rcgen::KeyPair::generate().map_err(|e| ConfigError::Cert(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| ConfigError::Cert(e.to_string()))?;
    let der: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| ConfigError::Quic(e.to_string()))?;
    let mut server = ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(transport(false, streams)));
    server.migration(false);
    Ok(server)
}
