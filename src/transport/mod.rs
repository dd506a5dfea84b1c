//! Transports that carry mesh links: peer URLs, listeners and dialers.
//!
//! The mesh only sees [`BoxedIo`] byte streams, so TLS (or anything else) plugs in here
//! without the mesh knowing.

mod url;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

pub use url::{PeerUrl, Scheme, UrlError};

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
    #[error("{0} links are not supported by this build yet")]
    Unsupported(&'static str),
}

/// A bound listener.
pub struct Listener {
    inner: TcpListener,
    url: PeerUrl,
}

impl Listener {
    pub async fn bind(url: &PeerUrl) -> Result<Listener, TransportError> {
        if url.scheme != Scheme::Tcp {
            return Err(TransportError::Unsupported("TLS"));
        }
        let inner = TcpListener::bind((url.host.as_str(), url.port))
            .await
            .map_err(|source| TransportError::Bind { url: url.to_string(), source })?;
        Ok(Listener { inner, url: url.clone() })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    pub fn url(&self) -> &PeerUrl {
        &self.url
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<(BoxedIo, SocketAddr)> {
        let (stream, addr) = self.inner.accept().await?;
        stream.set_nodelay(true)?;
        Ok((Box::new(stream), addr))
    }
}

/// Connects to `url` within `timeout`.
pub async fn dial(url: &PeerUrl, timeout: Duration) -> Result<BoxedIo, TransportError> {
    if url.scheme != Scheme::Tcp {
        return Err(TransportError::Unsupported("TLS"));
    }
    let connect = TcpStream::connect((url.host.as_str(), url.port));
    let stream = match tokio::time::timeout(timeout, connect).await {
        Err(_) => return Err(TransportError::Timeout { url: url.to_string(), timeout }),
        Ok(Err(source)) => return Err(TransportError::Connect { url: url.to_string(), source }),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(Box::new(stream))
}
