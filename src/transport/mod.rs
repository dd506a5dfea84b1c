//! Transports that carry mesh links: peer URLs, listeners and dialers.
//!
//! The mesh only sees [`BoxedIo`] byte streams, so TLS (or anything else) plugs in here
//! without the mesh knowing.

pub mod prefixed;
pub mod proxy;
pub(crate) mod stream_tls;
#[cfg(test)]
mod stream_tls_tests;
pub mod tls;
mod url;
pub mod ws;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

pub use tls::{Credentials, PeerIdentity, TlsContext, TlsError, TlsSettings};
pub use url::{PeerUrl, Protocol, Scheme, UrlError, WsTarget, authority};

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
    #[error("cannot reach peer {url} through its proxy: {source}")]
    Proxy { url: String, source: proxy::ProxyError },
    #[error("peer {url}: {source}")]
    WebSocket { url: String, source: ws::WsError },
}

/// A bound listener (plain TCP, or TLS when it has a context; WebSocket for `ws://` and
/// `wss://` URLs).
pub struct Listener {
    inner: TcpListener,
    url: PeerUrl,
    tls: Option<TlsContext>,
}

/// An accepted connection, not yet secured.
pub struct Accepted {
    tcp: TcpStream,
    tls: Option<TlsContext>,
    ws: Option<Box<WsTarget>>,
}

impl Accepted {
    /// Runs the TLS handshake for TLS listeners and the HTTP upgrade (and the wait for the
    /// first message) for WebSocket ones; returns the stream and the peer's identity.
    pub async fn secure(self) -> Result<(BoxedIo, Option<PeerIdentity>), TransportError> {
        let (io, id) = match self.tls {
            None => (Box::new(self.tcp) as BoxedIo, None),
            Some(ctx) => ctx.accept(self.tcp).await.map_err(TransportError::Tls)?,
        };
        match self.ws {
            None => Ok((io, id)),
            Some(target) => {
                let io = ws::accept(io, &target)
                    .await
                    .map_err(|source| TransportError::WebSocket { url: target.path.clone(), source })?;
                Ok((io, id))
            }
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
        Ok((Accepted { tcp, tls: self.tls.clone(), ws: self.url.ws.clone() }, addr))
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
    match tokio::time::timeout(timeout, connect(url, ctx, ws::Mode::Stream)).await {
        Err(_) => Err(TransportError::Timeout { url: url.to_string(), timeout }),
        Ok(r) => r,
    }
}

/// Connects to `url` with no time bound of its own: TCP (through a proxy from the
/// environment for WebSocket URLs), TLS with `ctx`, and the WebSocket upgrade carrying
/// `mode`. Both protocols' dialers use it.
pub async fn connect(
    url: &PeerUrl,
    ctx: Option<&TlsContext>,
    mode: ws::Mode,
) -> Result<(BoxedIo, Option<PeerIdentity>), TransportError> {
    let tcp = match &url.ws {
        Some(target) => {
            let via = proxy::from_env(&url.host, url.port, url.scheme == Scheme::Tls)
                .map_err(|source| TransportError::Proxy { url: url.to_string(), source })?;
            match via {
                Some(p) => proxy::tunnel(&p, &url.host, url.port, &target.limits)
                    .await
                    .map_err(|source| TransportError::Proxy { url: url.to_string(), source })?,
                None => tcp_connect(url).await?,
            }
        }
        None => tcp_connect(url).await?,
    };
    let _ = tcp.set_nodelay(true);
    let (io, id) = match ctx {
        None => (Box::new(tcp) as BoxedIo, None),
        Some(ctx) => {
            let (io, id) = ctx.connect(tcp, &url.host).await.map_err(TransportError::Tls)?;
            (io, Some(id))
        }
    };
    match &url.ws {
        None => Ok((io, id)),
        Some(target) => {
            let io = ws::connect(io, &url.host, url.port, url.scheme, target, mode)
                .await
                .map_err(|source| TransportError::WebSocket { url: url.to_string(), source })?;
            Ok((io, id))
        }
    }
}

async fn tcp_connect(url: &PeerUrl) -> Result<TcpStream, TransportError> {
    TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| TransportError::Connect { url: url.to_string(), source })
}
