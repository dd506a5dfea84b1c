//! A netceptor service as a UDP socket for quinn: QUIC datagrams travel as netceptor data
//! packets from this service to `(node, service)`. quinn needs socket addresses, so each
//! remote `(node, service)` gets a synthetic IPv6 address (`fd00::/16`, port 4242) for as
//! long as it is in use; the table is bounded (idle entries are reaped, and past the bound
//! datagrams from new sources are dropped).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::netceptor::driver::{Cmd, Datagram};

/// Remote endpoints one socket tracks at once.
pub const MAX_PEERS: usize = 4096;
/// A remote endpoint unused this long may be forgotten (QUIC's idle timeout is 30 s).
const PEER_IDLE: Duration = Duration::from_secs(120);
const PORT: u16 = 4242;

/// The remote end of a synthetic address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Remote {
    pub node: String,
    pub service: String,
}

#[derive(Debug, Default)]
struct Table {
    by_remote: HashMap<Remote, (SocketAddr, Instant)>,
    by_addr: HashMap<SocketAddr, Remote>,
    next: u64,
}

impl Table {
    fn addr_of(&mut self, r: &Remote, now: Instant) -> Option<SocketAddr> {
        if let Some((addr, used)) = self.by_remote.get_mut(r) {
            *used = now;
            return Some(*addr);
        }
        if self.by_remote.len() >= MAX_PEERS {
            let stale: Vec<Remote> = self
                .by_remote
                .iter()
                .filter(|(_, (_, used))| now.duration_since(*used) > PEER_IDLE)
                .map(|(r, _)| r.clone())
                .collect();
            for r in stale {
                if let Some((a, _)) = self.by_remote.remove(&r) {
                    self.by_addr.remove(&a);
                }
            }
            if self.by_remote.len() >= MAX_PEERS {
                return None;
            }
        }
        self.next += 1;
        let n = self.next;
        let ip =
            Ipv6Addr::new(0xfd00, 0, 0, 0, (n >> 48) as u16, (n >> 32) as u16, (n >> 16) as u16, n as u16);
        let addr = SocketAddr::V6(SocketAddrV6::new(ip, PORT, 0, 0));
        self.by_remote.insert(r.clone(), (addr, now));
        self.by_addr.insert(addr, r.clone());
        Some(addr)
    }
}

/// One local netceptor service as quinn's socket.
pub struct NetSocket {
    service: String,
    rx: Mutex<mpsc::Receiver<Datagram>>,
    cmds: mpsc::Sender<Cmd>,
    table: Arc<Mutex<Table>>,
}

impl fmt::Debug for NetSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetSocket").field("service", &self.service).finish()
    }
}

impl NetSocket {
    pub(crate) fn new(service: String, rx: mpsc::Receiver<Datagram>, cmds: mpsc::Sender<Cmd>) -> NetSocket {
        NetSocket { service, rx: Mutex::new(rx), cmds, table: Arc::default() }
    }

    /// The synthetic address of `node:service` (registered if new).
    pub fn addr_of(&self, node: &str, service: &str) -> Option<SocketAddr> {
        let r = Remote { node: node.to_owned(), service: service.to_owned() };
        self.table.lock().ok()?.addr_of(&r, Instant::now())
    }

    /// The `(node, service)` behind a synthetic address.
    pub fn remote_of(&self, addr: &SocketAddr) -> Option<Remote> {
        self.table.lock().ok()?.by_addr.get(addr).cloned()
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// A handle to the address table (for mapping connections back to nodes).
    pub fn resolver(&self) -> Resolver {
        Resolver(self.table.clone())
    }
}

/// Maps synthetic addresses of one socket back to `(node, service)`.
#[derive(Clone)]
pub struct Resolver(Arc<Mutex<Table>>);

impl Resolver {
    pub fn remote_of(&self, addr: &SocketAddr) -> Option<Remote> {
        self.0.lock().ok()?.by_addr.get(addr).cloned()
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for NetSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    /// Hands the datagram to the driver without waiting: when its queue is full the
    /// datagram is lost, as on a congested UDP path (QUIC recovers).
    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        let Some(remote) = self.remote_of(&t.destination) else { return Ok(()) };
        let _ = self.cmds.try_send(Cmd::Datagram {
            from: self.service.clone(),
            node: remote.node,
            service: remote.service,
            payload: Bytes::copy_from_slice(t.contents),
        });
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Ok(mut rx) = self.rx.lock() else {
            return Poll::Ready(Err(io::Error::other("socket lock poisoned")));
        };
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let d = if n == 0 {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(d)) => d,
                    Poll::Ready(None) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                match rx.try_recv() {
                    Ok(d) => d,
                    Err(_) => break,
                }
            };
            // `unreach` reports are not QUIC packets.
            if d.from_service == "unreach" {
                continue;
            }
            let Some(addr) = self.addr_of(&d.from_node, &d.from_service) else { continue };
            let len = d.payload.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&d.payload[..len]);
            meta[n] = RecvMeta { addr, len, stride: len, ecn: None, dst_ip: None };
            n += 1;
        }
        if n == 0 {
            // Only skipped datagrams: ask to be polled again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), PORT, 0, 0)))
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
