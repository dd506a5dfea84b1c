//! The control service over netceptor streams (Go Receptor's control nodes and
//! `receptorctl` through Go hops): the accept side plugs a netceptor stream service
//! ([`crate::netceptor::quic::Listener`]) into the one accept loop of `control::listen`,
//! and dialed streams write like every other control transport.

use std::time::Duration;

use bytes::Bytes;
use tokio_util::task::TaskTracker;

use super::io::{ByteWrite, IoRead};
use super::{Acceptor, Pending};
use crate::netceptor::quic::config;
use crate::netceptor::quic::dial::DialWrite;
use crate::netceptor::quic::{Listener, NetStream};
use crate::work::units::Origin;

/// Go's limits: the handshake within 15 s, the first stream within 60 s.
const HANDSHAKE: Duration = Duration::from_secs(15);
const FIRST_STREAM: Duration = Duration::from_secs(60);

impl Acceptor for Listener {
    type Conn = NetStream;
    async fn accept(&mut self) -> Option<NetStream> {
        loop {
            let incoming = self.endpoint.accept().await?;
            let node =
                self.resolver.remote_of(&incoming.remote_address()).map(|r| r.node).unwrap_or_default();
            match self.quota.take(&node) {
                Ok(slot) => {
                    return Some(NetStream {
                        incoming,
                        tracker: self.tracker.clone(),
                        slot: Some(slot),
                        node,
                    });
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

    fn origin(&self) -> super::OriginKey {
        // One origin per netceptor node: Go dials every stream from a fresh ephemeral
        // service (a new synthetic address each time), so the address would be no origin
        // at all. The node name is what its packets claim (not proven); a peer claiming
        // many names is bounded by limits.netceptor.max_nodes and the shared remote slots.
        super::OriginKey::Remote(format!("netceptor:{}", self.node))
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

impl ByteWrite for DialWrite {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.send.write_all(&data).await.map_err(std::io::Error::other)
    }

    async fn close(&mut self) {
        let _ = self.send.finish();
    }
}
