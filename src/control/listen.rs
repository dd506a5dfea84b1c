//! The one accept loop of every control listener — the Unix socket, TCP or TLS, and the
//! `control` mesh service. Each listener only says how to take its next connection and how
//! to open it (TLS handshake, who it is); the loop owns cancellation, the session budget
//! (`limits.control_sessions`, shared by all listeners) and error pacing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::io::{ByteRead, ByteWrite, IoRead, IoWrite, MeshWrite};
use super::{Control, TLS_HANDSHAKE};
use crate::logging::Throttle;
use crate::mesh::Incoming;
use crate::transport::{BoxedIo, TlsContext};
use crate::work::units::Origin;

/// A connection taken from a listener, not yet a session.
pub(crate) trait Pending: Send + 'static {
    type Read: ByteRead + 'static;
    type Write: ByteWrite + 'static;
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

/// Sessions beyond the budget are told this and closed.
const TOO_MANY: &str = "ERROR: too many control sessions (limits.control_sessions); try again later\n";

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
                let permit: Option<OwnedSemaphorePermit> = self.sessions.clone().try_acquire_owned().ok();
                let (control, cancel) = (self.clone(), cancel.clone());
                sessions.spawn(async move {
                    let Some(_permit) = permit else {
                        static REFUSED: Throttle = Throttle::new(Duration::from_secs(10), 3);
                        if let Some(suppressed) = REFUSED.allow() {
                            tracing::warn!(
                                suppressed,
                                "control session refused: limits.control_sessions reached"
                            );
                        }
                        return conn.refuse(TOO_MANY).await;
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        opened = conn.open() => if let Some((rd, wr, origin)) = opened {
                            if let Err(e) = control.session(rd, wr, origin).await {
                                tracing::debug!(error = %e, "control session ended");
                            }
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
        self.serve_on(TcpAcceptor { listener, tls }, tracker, cancel);
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
}

/// A TCP control connection and the TLS context to secure it with.
struct TcpConn {
    tcp: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    tls: Option<TlsContext>,
}

impl Acceptor for TcpAcceptor {
    type Conn = TcpConn;
    async fn accept(&mut self) -> Option<TcpConn> {
        loop {
            match self.listener.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some(TcpConn { tcp, addr, tls: self.tls.clone() });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }
}

impl Pending for TcpConn {
    type Read = IoRead<tokio::io::ReadHalf<BoxedIo>>;
    type Write = IoWrite<tokio::io::WriteHalf<BoxedIo>>;
    async fn open(self) -> Option<(Self::Read, Self::Write, Origin)> {
        let TcpConn { tcp, addr, tls } = self;
        let io: BoxedIo = match tls {
            None => Box::new(tcp),
            // As Go Receptor: the handshake gets 10 s.
            Some(ctx) => match tokio::time::timeout(TLS_HANDSHAKE, ctx.accept(tcp)).await {
                Ok(Ok((io, _))) => io,
                Ok(Err(e)) => {
                    tracing::warn!(%addr, "control TLS handshake failed: {e}");
                    return None;
                }
                Err(_) => {
                    tracing::warn!(%addr, "control TLS handshake timed out");
                    return None;
                }
            },
        };
        let (rd, wr) = tokio::io::split(io);
        Some((IoRead(rd), IoWrite(wr), Origin::Network(None)))
    }
    async fn refuse(self, why: &'static str) {
        // Plain TCP only: a TLS client would not understand bytes before its handshake.
        if self.tls.is_none() {
            let mut wr = IoWrite(self.tcp);
            let _ = wr.write(Bytes::from_static(why.as_bytes())).await;
            wr.close().await;
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
    async fn open(self) -> Option<(Self::Read, Self::Write, Origin)> {
        Some((self.reader, MeshWrite(Some(self.writer)), Origin::Mesh(self.peer)))
    }
    async fn refuse(self, why: &'static str) {
        self.writer.reset(why.trim_end()).await;
    }
}

/// The session budget shared by every control listener of a daemon.
pub fn session_budget(max: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max))
}
