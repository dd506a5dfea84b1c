//! Serving a netceptor stream service to Go nodes: a quinn endpoint on the service's
//! socket; each QUIC connection's first bidirectional stream, once its `0x00` byte
//! arrived, is one session. The control service plugs this into its one accept loop
//! (`control::Acceptor`), so Go's `work submit`, `status` and `results` reach the same
//! handlers, budgets and admission as every other control client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::task::TaskTracker;

use super::config;
use crate::control::io::{ByteWrite, IoRead};
use crate::control::{Acceptor, Pending};
use crate::work::units::Origin;

/// Go's limits: the handshake within 15 s, the first stream within 60 s.
const HANDSHAKE: Duration = Duration::from_secs(15);
const FIRST_STREAM: Duration = Duration::from_secs(60);

/// A stream service this node serves over netceptor.
pub struct Listener {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) tracker: TaskTracker,
}

/// A connection not yet a session.
pub struct NetStream {
    incoming: quinn::Incoming,
    tracker: TaskTracker,
}

impl Acceptor for Listener {
    type Conn = NetStream;
    async fn accept(&mut self) -> Option<NetStream> {
        let incoming = self.endpoint.accept().await?;
        Some(NetStream { incoming, tracker: self.tracker.clone() })
    }
}

/// The writing half of a netceptor stream: ending it sends FIN, waits (bounded) until the
/// peer has every byte, and leaves the connection to the dialer to close, as Go does.
pub struct QuicWrite {
    send: quinn::SendStream,
    conn: quinn::Connection,
    tracker: TaskTracker,
}

impl ByteWrite for QuicWrite {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.send.write_all(&data).await.map_err(std::io::Error::other)
    }

    async fn close(&mut self) {
        let _ = self.send.finish();
        let _ = tokio::time::timeout(config::IDLE_TIMEOUT, self.send.stopped()).await;
        let conn = self.conn.clone();
        self.tracker.spawn(async move {
            let _ = tokio::time::timeout(config::IDLE_TIMEOUT, conn.closed()).await;
        });
    }
}

impl Pending for NetStream {
    type Read = IoRead<quinn::RecvStream>;
    type Write = QuicWrite;

    fn origin(&self) -> crate::control::OriginKey {
        // The netceptor packet's claimed source is not proved: the UDP address is.
        crate::control::OriginKey::Remote(self.incoming.remote_address().ip().to_string())
    }

    async fn open(self) -> Option<(Self::Read, Self::Write, Origin)> {
        let connecting = self.incoming.accept().ok()?;
        let conn = match tokio::time::timeout(HANDSHAKE, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "netceptor QUIC handshake failed");
                return None;
            }
            Err(_) => return None,
        };
        let (send, mut recv) = match tokio::time::timeout(FIRST_STREAM, conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            _ => {
                conn.close(500u32.into(), b"Accept Timeout");
                return None;
            }
        };
        let mut first = [0u8; 1];
        match tokio::time::timeout(FIRST_STREAM, recv.read_exact(&mut first)).await {
            Ok(Ok(_)) if first[0] == 0 => {}
            _ => {
                conn.close(500u32.into(), b"Read Data Error");
                return None;
            }
        }
        // Insecure mode (Go's ConnType 1): nothing proves who dialed, so the session is an
        // anonymous network client, never the node ID a packet claims.
        let origin = Origin::Network(None);
        Some((IoRead(recv), QuicWrite { send, conn, tracker: self.tracker }, origin))
    }

    async fn refuse(self, _why: &'static str) {
        self.incoming.refuse();
    }
}

/// Builds the endpoint of a stream service on `socket`.
pub(crate) fn endpoint(socket: super::socket::NetSocket) -> Result<quinn::Endpoint, config::ConfigError> {
    let server = config::insecure_server()?;
    quinn::Endpoint::new_with_abstract_socket(
        config::endpoint(),
        Some(server),
        Arc::new(socket),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| config::ConfigError::Quic(e.to_string()))
}
