//! Transports that carry mesh links: peer URLs, listeners and dialers.
//!
//! The mesh only sees [`BoxedIo`] byte streams, so TLS (or anything else) plugs in here
//! without the mesh knowing.

pub mod prefixed;
pub(crate) mod stream_tls;
#[cfg(test)]
mod stream_tls_tests;
pub mod tls;
mod url;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

pub use tls::{Credentials, PeerIdentity, TlsContext, TlsError, TlsSettings};
pub use url::{PeerUrl, Protocol, Scheme, UrlError};

/// A connected, bidirectional byte stream of any transport.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub type BoxedIo = Box<dyn Io>;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {url}: {source}")]
    Resolve { url: String, source: io::Error },
    #[error("cannot reach peer {url}: {source}")]
    Connect { url: String, source: io::Error },
    #[error("cannot reach peer {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("cannot listen on {url}: {source}")]
    Bind { url: String, source: io::Error },
    #[error("{0} is a TLS address but no [tls] material is configured")]
    NoTls(String),
    #[error(transparent)]
    Tls(TlsError),
    #[error("{0} is a Go Receptor (netceptor) address; only a daemon's [[peers]] can link to it")]
    Netceptor(String),
}

/// A bound listener (plain TCP, or TLS when it has a context).
pub struct Listener {
    inner: TcpListener,
    url: PeerUrl,
    tls: Option<TlsContext>,
}

/// An accepted connection, not yet secured.
pub struct Accepted {
    tcp: TcpStream,
    tls: Option<TlsContext>,
}

impl Accepted {
    /// Runs the TLS handshake for TLS listeners; returns the stream and the peer's identity.
    pub async fn secure(self) -> Result<(BoxedIo, Option<PeerIdentity>), TransportError> {
        match self.tls {
            None => Ok((Box::new(self.tcp), None)),
            Some(ctx) => ctx.accept(self.tcp).await.map_err(TransportError::Tls),
        }
    }
}

impl Listener {
    /// Binds `url`; `receptors://` listeners need a TLS context.
    pub async fn bind(url: &PeerUrl, tls: Option<TlsContext>) -> Result<Listener, TransportError> {
        if url.protocol == Protocol::Netceptor {
            return Err(TransportError::Netceptor(url.to_string()));
        }
        let tls = match (url.scheme, tls) {
            (Scheme::Tcp, _) => None,
            (Scheme::Tls, Some(ctx)) => Some(ctx),
            (Scheme::Tls, None) => return Err(TransportError::NoTls(url.to_string())),
            (Scheme::Udp, _) => return Err(TransportError::Netceptor(url.to_string())),
        };
        let inner = TcpListener::bind((url.host.as_str(), url.port))
            .await
            .map_err(|source| TransportError::Bind { url: url.to_string(), source })?;
        Ok(Listener { inner, url: url.clone(), tls })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    pub fn url(&self) -> &PeerUrl {
        &self.url
    }

    /// Accepts the next connection (the TLS handshake happens in [`Accepted::secure`], off
    /// the accept loop).
    pub async fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        let (tcp, addr) = self.inner.accept().await?;
        tcp.set_nodelay(true)?;
        Ok((Accepted { tcp, tls: self.tls.clone() }, addr))
    }
}

/// Connects to `url` within `timeout` (TLS handshake included for `receptors://`).
pub async fn dial(
    url: &PeerUrl,
    timeout: Duration,
    tls: Option<&TlsContext>,
) -> Result<(BoxedIo, Option<PeerIdentity>), TransportError> {
    if url.protocol == Protocol::Netceptor {
        return Err(TransportError::Netceptor(url.to_string()));
    }
    let ctx = match (url.scheme, tls) {
        (Scheme::Tcp, _) => None,
        (Scheme::Tls, Some(ctx)) => Some(ctx),
        (Scheme::Tls, None) => return Err(TransportError::NoTls(url.to_string())),
        (Scheme::Udp, _) => return Err(TransportError::Netceptor(url.to_string())),
    };
    let connect = async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|source| TransportError::Connect { url: url.to_string(), source })?;
        let _ = tcp.set_nodelay(true);
        match ctx {
            None => Ok((Box::new(tcp) as BoxedIo, None)),
            Some(ctx) => {
                let (io, id) = ctx.connect(tcp, &url.host).await.map_err(TransportError::Tls)?;
                Ok((io, Some(id)))
            }
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err(TransportError::Timeout { url: url.to_string(), timeout }),
        Ok(r) => r,
    }
}
