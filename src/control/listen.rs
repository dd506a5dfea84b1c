//! The one accept loop of every control listener — the Unix socket, TCP or TLS, and the
//! `control` mesh service. Each listener only says how to take its next connection, where
//! it comes from, and how to open it (TLS handshake, who it is); the loop owns
//! cancellation, the session budget (`control::budget`, shared by all listeners: taken
//! before the handshake), the handshake deadline (`limits.control_handshake_timeout`), the
//! write deadline (`limits.control_write_timeout`) and error pacing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Control;
use super::budget::OriginKey;
use super::io::{ByteRead, ByteWrite, IoRead, IoWrite, MeshWrite};
use crate::logging::Throttle;
use crate::mesh::Incoming;
use crate::transport::{BoxedIo, TlsContext};
use crate::work::units::Origin;

/// A connection taken from a listener, not yet a session.
pub(crate) trait Pending: Send + 'static {
    type Read: ByteRead + 'static;
    type Write: ByteWrite + 'static;
    /// Where the connection comes from (the session budget's per-origin share).
    fn origin(&self) -> OriginKey;
    /// Secures the connection and says who is on it; `None` drops it (already logged).
    fn open(self) -> impl Future<Output = Option<(Self::Read, Self::Write, Origin)>> + Send;
    /// Tells a connection over the session budget why it is closed.
    fn refuse(self, why: &'static str) -> impl Future<Output = ()> + Send;
}

/// A listener of control connections.
pub(crate) trait Acceptor: Send + 'static {
    type Conn: Pending;
    /// The next connection; `None` once the listener is gone for good.
    fn accept(&mut self) -> impl Future<Output = Option<Self::Conn>> + Send;
}

impl Control {
    /// Serves one session per connection of `acceptor` until `cancel`.
    pub(crate) fn serve_on<A: Acceptor>(
        self,
        mut acceptor: A,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) {
        let sessions = tracker.clone();
        tracker.spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = acceptor.accept() => match c { Some(c) => c, None => return },
                };
                let from = conn.origin();
                let slot = self.sessions.admit(&from);
                let (control, cancel) = (self.clone(), cancel.clone());
                sessions.spawn(async move {
                    let _slot = match slot {
                        Ok(slot) => slot,
                        Err(why) => {
                            static REFUSED: Throttle = Throttle::new(Duration::from_secs(10), 3);
                            if let Some(suppressed) = REFUSED.allow() {
                                tracing::warn!(suppressed, origin = ?from, "control session refused: {}",
                                    why.trim_end().trim_start_matches("ERROR: "));
                            }
                            return conn.refuse(why).await;
                        }
                    };
                    let opened = tokio::select! {
                        _ = cancel.cancelled() => None,
                        opened = conn.open() => opened,
                    };
                    let Some((rd, wr, origin)) = opened else { return };
                    let wr = Deadline { inner: wr, after: control.write_timeout };
                    // The session itself ends at shutdown too (a client following a unit's
                    // output would otherwise hold the daemon's stop until its timeout).
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        r = control.session(rd, wr, origin) => if let Err(e) = r {
                            tracing::debug!(error = %e, "control session ended");
                        },
                    }
                });
            }
        });
    }

    /// Serves sessions on the Unix socket.
    pub fn serve(self, listener: UnixListener, tracker: &TaskTracker, cancel: CancellationToken) {
        self.serve_on(UnixAcceptor(listener), tracker, cancel);
    }

    /// Serves sessions on a TCP listener (TLS when `tls` is given).
    pub fn serve_tcp(
        self,
        listener: TcpListener,
        tls: Option<TlsContext>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) {
        let refusals = Arc::new(Semaphore::new(TLS_REFUSALS));
        let handshake = self.handshake_timeout;
        self.serve_on(TcpAcceptor { listener, tls, refusals, handshake }, tracker, cancel);
    }

    /// Serves the control protocol to other nodes as the `control` mesh service.
    pub fn serve_mesh(self, tracker: &TaskTracker, cancel: CancellationToken) {
        let incoming = self.node.serve(super::CONTROL_SERVICE, 64);
        self.serve_on(MeshAcceptor(incoming), tracker, cancel);
    }
}

/// Waits a little after a failed accept (e.g. out of file descriptors), logging it.
async fn accept_failed(e: std::io::Error) {
    static FAILED: Throttle = Throttle::new(Duration::from_secs(10), 3);
    if let Some(suppressed) = FAILED.allow() {
        tracing::warn!(error = %e, suppressed, "control accept failed");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

struct UnixAcceptor(UnixListener);

impl Acceptor for UnixAcceptor {
    type Conn = tokio::net::UnixStream;
    async fn accept(&mut self) -> Option<Self::Conn> {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => return Some(stream),
                Err(e) => accept_failed(e).await,
            }
        }
    }
}

impl Pending for tokio::net::UnixStream {
    type Read = IoRead<tokio::net::unix::OwnedReadHalf>;
    type Write = IoWrite<tokio::net::unix::OwnedWriteHalf>;
    fn origin(&self) -> OriginKey {
        OriginKey::Local
    }
    async fn open(self) -> Option<(Self::Read, Self::Write, Origin)> {
        let (rd, wr) = self.into_split();
        Some((IoRead(rd), IoWrite(wr), Origin::Socket))
    }
    async fn refuse(self, why: &'static str) {
        let (_, wr) = self.into_split();
        let mut wr = IoWrite(wr);
        let _ = wr.write(Bytes::from_static(why.as_bytes())).await;
        wr.close().await;
    }
}

struct TcpAcceptor {
    listener: TcpListener,
    tls: Option<TlsContext>,
    /// TLS handshakes done only to tell a client it was refused (session budget), at once.
    refusals: Arc<Semaphore>,
    /// `limits.control_handshake_timeout`.
    handshake: Duration,
}

/// TLS clients over the session budget that are told why at once; more are just closed.
const TLS_REFUSALS: usize = 8;

/// Said to a TLS control client whose certificate names no node ID (or that sent none).
const NO_IDENTITY: &str =
    "ERROR: this control listener needs a client certificate that names a node ID (receptor cert issue)\n";

/// A TCP control connection and the TLS context to secure it with.
struct TcpConn {
    tcp: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    tls: Option<TlsContext>,
    refusals: Arc<Semaphore>,
    handshake: Duration,
}

impl Acceptor for TcpAcceptor {
    type Conn = TcpConn;
    async fn accept(&mut self) -> Option<TcpConn> {
        loop {
            match self.listener.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some(TcpConn {
                        tcp,
                        addr,
                        tls: self.tls.clone(),
                        refusals: self.refusals.clone(),
                        handshake: self.handshake,
                    });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }
}

impl Pending for TcpConn {
    type Read = IoRead<tokio::io::ReadHalf<BoxedIo>>;
    type Write = IoWrite<tokio::io::WriteHalf<BoxedIo>>;
    fn origin(&self) -> OriginKey {
        OriginKey::Remote(self.addr.ip().to_string())
    }
    async fn open(self) -> Option<(Self::Read, Self::Write, Origin)> {
        let TcpConn { tcp, addr, tls, handshake, .. } = self;
        let Some(ctx) = tls else {
            // Plain TCP: allowed only with control.insecure_plaintext_control.
            let io: BoxedIo = Box::new(tcp);
            let (rd, wr) = tokio::io::split(io);
            return Some((IoRead(rd), IoWrite(wr), Origin::Network(None)));
        };
        let (io, identity) = tls_accept(&ctx, tcp, addr, handshake).await?;
        // The client's certificate (verified against the configured CAs) says who it is.
        let id = identity.and_then(|i| i.node_ids.iter().find_map(|n| crate::wire::NodeId::new(n).ok()));
        let (rd, wr) = tokio::io::split(io);
        let Some(id) = id else {
            tracing::warn!(%addr, "control client refused: its certificate names no node ID");
            let mut wr = IoWrite(wr);
            let _ = wr.write(Bytes::from_static(NO_IDENTITY.as_bytes())).await;
            wr.close().await;
            return None;
        };
        Some((IoRead(rd), IoWrite(wr), Origin::Network(Some(id))))
    }
    async fn refuse(self, why: &'static str) {
        let io: BoxedIo = match &self.tls {
            None => Box::new(self.tcp),
            // A TLS client only understands bytes after its handshake: do it, within a
            // small budget of its own (beyond it, the connection is just closed).
            Some(ctx) => {
                let Ok(_permit) = self.refusals.clone().try_acquire_owned() else { return };
                match tls_accept(ctx, self.tcp, self.addr, self.handshake).await {
                    Some((io, _)) => io,
                    None => return,
                }
            }
        };
        let mut wr = IoWrite(io);
        let _ = wr.write(Bytes::from_static(why.as_bytes())).await;
        wr.close().await;
    }
}

/// The TLS handshake of a control client, within `limits.control_handshake_timeout` (10 s,
/// as Go Receptor).
async fn tls_accept(
    ctx: &TlsContext,
    tcp: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    within: Duration,
) -> Option<(BoxedIo, Option<crate::transport::PeerIdentity>)> {
    match tokio::time::timeout(within, ctx.accept(tcp)).await {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(e)) => {
            tracing::warn!(%addr, "control TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(%addr, ?within, "control TLS handshake timed out (limits.control_handshake_timeout)");
            None
        }
    }
}

struct MeshAcceptor(tokio::sync::mpsc::Receiver<Incoming>);

impl Acceptor for MeshAcceptor {
    type Conn = Incoming;
    async fn accept(&mut self) -> Option<Incoming> {
        self.0.recv().await
    }
}

impl Pending for Incoming {
    type Read = crate::mesh::StreamReader;
    type Write = MeshWrite;
    fn origin(&self) -> OriginKey {
        // A peer is its principal already (a client session NODE~TAG is NODE: `Peer`).
        OriginKey::Remote(format!("node {}", self.peer))
    }
    async fn open(self) -> Option<(Self::Read, Self::Write, Origin)> {
        Some((self.reader, MeshWrite(Some(self.writer)), Origin::Mesh(self.peer)))
    }
    async fn refuse(self, why: &'static str) {
        self.writer.reset(why.trim_end()).await;
    }
}

/// A control client's writer with a deadline: a write (or the close) that does not complete
/// within `after` — the client stopped reading — fails, and the session ends.
pub(crate) struct Deadline<W> {
    inner: W,
    after: Duration,
}

impl<W: ByteWrite> ByteWrite for Deadline<W> {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        match tokio::time::timeout(self.after, self.inner.write(data)).await {
            Ok(r) => r,
            Err(_) => {
                static STUCK: Throttle = Throttle::new(Duration::from_secs(10), 3);
                if let Some(suppressed) = STUCK.allow() {
                    tracing::info!(suppressed, after = ?self.after,
                        "control session closed: the client is not reading (limits.control_write_timeout)");
                }
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client is not reading (limits.control_write_timeout)",
                ))
            }
        }
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(self.after, self.inner.close()).await;
    }

    async fn abort(&mut self, why: &str) {
        let _ = tokio::time::timeout(self.after, self.inner.abort(why)).await;
    }

    fn close_watch(&self) -> Option<crate::mesh::CloseWatch> {
        self.inner.close_watch()
    }
}
