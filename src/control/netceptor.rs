//! The control service over netceptor streams (Go Receptor's control nodes and
//! `receptorctl` through Go hops): the accept side plugs a netceptor stream service
//! ([`crate::netceptor::quic::Listener`]) into the one accept loop of `control::listen`,
//! and dialed streams write like every other control transport.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::task::TaskTracker;

use super::io::{ByteWrite, IoRead};
use super::{Acceptor, Pending};
use crate::netceptor::quic::config;
use crate::netceptor::quic::dial::DialWrite;
use crate::netceptor::quic::{Listener, NetStream};
use crate::wire::NodeId;
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
                        tls: self.tls.clone(),
                        streams: self.streams,
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

    async fn abort(&mut self, _why: &str) {
        let _ = self.send.reset(quinn::VarInt::from_u32(0));
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

    async fn open(self) -> Option<(Self::Read, Self::Write, Origin)> {
        let NetStream { incoming, tracker, slot, node, tls, streams } = self;
        let connecting = match &tls {
            None => incoming.accept().ok()?,
            // User TLS: a config whose client verifier expects this node's certificate.
            Some(t) => match t.server(&node, streams) {
                Ok(cfg) => incoming.accept_with(Arc::new(cfg)).ok()?,
                Err(e) => {
                    tracing::warn!(error = %e, "netceptor TLS stream refused: no usable TLS material");
                    incoming.refuse();
                    return None;
                }
            },
        };
        // Bounded in time here, in size by rustls (64 KiB per handshake message) and
        // quinn (the crypto stream's out-of-order buffer).
        let conn = match tokio::time::timeout(HANDSHAKE, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                static LOG: crate::logging::Throttle =
                    crate::logging::Throttle::new(Duration::from_secs(10), 5);
                if let Some(suppressed) = LOG.allow() {
                    if tls.is_some() {
                        tracing::warn!(%node, error = %e, suppressed, "netceptor TLS stream refused");
                    } else {
                        tracing::debug!(%node, error = %e, suppressed, "netceptor QUIC handshake failed");
                    }
                }
                return None;
            }
            Err(_) => return None,
        };
        let origin = match identity(tls.is_some(), &node, &conn) {
            Ok(o) => o,
            Err(why) => {
                tracing::warn!(%node, why, "netceptor TLS stream refused");
                conn.close(500u32.into(), why.as_bytes());
                return None;
            }
        };
        // The slot is held for the connection's life.
        let watched = conn.clone();
        tracker.spawn(async move {
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
        Some((IoRead(recv), QuicWrite { send, conn, tracker }, origin))
    }

    async fn refuse(self, _why: &'static str) {
        self.incoming.refuse();
    }
}

/// Who dialed a connection from `node`. Insecure mode (Go's ConnType 1): nothing proves it, so the session is
/// an anonymous network client, never the node ID a packet claims. User TLS: the node
/// the packets come from, proven by a certificate (checked against the CAs and for EKU
/// clientAuth in the handshake) that names it; checked again here, where the identity is
/// taken from the certificate itself.
fn identity(tls: bool, node: &str, conn: &quinn::Connection) -> Result<Origin, &'static str> {
    if !tls {
        return Ok(Origin::Network(None));
    }
    let certs = conn
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .ok_or("no client certificate")?;
    if !crate::netceptor::quic::tls::leaf_names(&certs, node) {
        return Err("the client certificate does not name the dialing node");
    }
    let id = NodeId::new(node).map_err(|_| "the dialing node's ID is not a receptord node ID")?;
    Ok(Origin::Network(Some(id)))
}

impl ByteWrite for DialWrite {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.send.write_all(&data).await.map_err(std::io::Error::other)
    }

    async fn close(&mut self) {
        let _ = self.send.finish();
    }

    async fn abort(&mut self, _why: &str) {
        let _ = self.send.reset(quinn::VarInt::from_u32(0));
    }
}
