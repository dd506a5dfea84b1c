//! Serving a netceptor stream service to Go nodes: a quinn endpoint on the service's
//! socket; each QUIC connection's first bidirectional stream, once its `0x00` byte
//! arrived, is one session. The control service plugs this into its one accept loop
//! (`control::Acceptor`), so Go's `work submit`, `status` and `results` reach the same
//! handlers, budgets and admission as every other control client. Each service holds at
//! most `limits.netceptor.quic_connections` connections, at most
//! `quic_connections_per_peer` from any one node, each with at most `quic_streams` streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    pub(crate) resolver: super::socket::Resolver,
    pub(crate) quota: Arc<Quota>,
}

/// The connections a service holds, per remote node.
#[derive(Debug)]
pub struct Quota {
    per_peer: usize,
    total: usize,
    live: Mutex<HashMap<String, usize>>,
}

/// Why a connection was refused before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the node holds limits.netceptor.quic_connections_per_peer connections with this service")]
    PerPeer,
    #[error("the service holds limits.netceptor.quic_connections connections")]
    Total,
}

impl Quota {
    pub fn new(per_peer: usize, total: usize) -> Arc<Quota> {
        Arc::new(Quota { per_peer, total, live: Mutex::default() })
    }

    /// A slot for one more connection from `node`, held until dropped.
    pub fn take(self: &Arc<Self>, node: &str) -> Result<Slot, Refused> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.values().sum::<usize>() >= self.total {
            return Err(Refused::Total);
        }
        let n = live.entry(node.to_owned()).or_default();
        if *n >= self.per_peer {
            return Err(Refused::PerPeer);
        }
        *n += 1;
        Ok(Slot { quota: self.clone(), node: node.to_owned() })
    }

    /// Connections held by `node`.
    pub fn held(&self, node: &str) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied().unwrap_or(0)
    }
}

/// One connection's place in its service's [`Quota`].
#[derive(Debug)]
pub struct Slot {
    quota: Arc<Quota>,
    node: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self.quota.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = live.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.node);
            }
        }
    }
}

/// A connection not yet a session.
pub struct NetStream {
    incoming: quinn::Incoming,
    tracker: TaskTracker,
    slot: Option<Slot>,
}

impl Acceptor for Listener {
    type Conn = NetStream;
    async fn accept(&mut self) -> Option<NetStream> {
        loop {
            let incoming = self.endpoint.accept().await?;
            let node =
                self.resolver.remote_of(&incoming.remote_address()).map(|r| r.node).unwrap_or_default();
            match self.quota.take(&node) {
                Ok(slot) => {
                    return Some(NetStream { incoming, tracker: self.tracker.clone(), slot: Some(slot) });
                }
                Err(why) => {
                    static LOG: crate::logging::Throttle =
                        crate::logging::Throttle::new(Duration::from_secs(10), 5);
                    if let Some(suppressed) = LOG.allow() {
                        tracing::warn!(%node, %why, suppressed, "netceptor QUIC connection refused");
                    }
                    incoming.refuse();
                }
            }
        }
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

    async fn open(mut self) -> Option<(Self::Read, Self::Write, Origin)> {
        let slot = self.slot.take();
        let connecting = self.incoming.accept().ok()?;
        let conn = match tokio::time::timeout(HANDSHAKE, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "netceptor QUIC handshake failed");
                return None;
            }
            Err(_) => return None,
        };
        // The slot is held for the connection's life.
        let watched = conn.clone();
        self.tracker.spawn(async move {
            watched.closed().await;
            drop(slot);
        });
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

/// Builds the endpoint of a stream service on `socket`, allowing `streams` streams per
/// connection.
pub(crate) fn endpoint(
    socket: super::socket::NetSocket,
    streams: u32,
) -> Result<quinn::Endpoint, config::ConfigError> {
    let server = config::insecure_server(streams)?;
    quinn::Endpoint::new_with_abstract_socket(
        config::endpoint(),
        Some(server),
        Arc::new(socket),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| config::ConfigError::Quic(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_bounds_each_node_and_the_whole_service() {
        let q = Quota::new(2, 3);
        let a1 = q.take("a").expect("a1");
        let _a2 = q.take("a").expect("a2");
        assert_eq!(q.take("a").err(), Some(Refused::PerPeer));
        let _b1 = q.take("b").expect("b1");
        assert_eq!(q.take("c").err(), Some(Refused::Total));
        drop(a1);
        assert_eq!(q.held("a"), 1);
        let _c1 = q.take("c").expect("a slot freed by a closed connection");
    }
}
