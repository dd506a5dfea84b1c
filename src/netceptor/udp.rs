//! Go Receptor's UDP backend (`--udp-peer`, `--udp-listener`; `netceptor+udp://`): one
//! netceptor packet per datagram, no framing and no TLS (Go `pkg/backends/udp.go`). A
//! dialed peer gets a connected socket; a listener tells sessions apart by source address.
//!
//! UDP sources are spoofable, so the listener bounds what they can make this node hold:
//! at most `limits.netceptor.udp_sessions` sessions (and `udp_sessions_per_ip` per source
//! address), at most `udp_session_rate` new ones a second, a new session only for a
//! datagram that opens like a routing update (Go's first packet), datagrams from unknown
//! sources dropped when full, sessions silent for the idle timeout expired, one receive
//! buffer per socket (a datagram is copied out at its own size, at most `max_packet`).
//! Go's listener bounds none of these (docs/SECURITY.md). Every datagram a listener drops
//! is counted by reason (`UdpCounters`: the plane's status and
//! `receptor_netceptor_dropped_total`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::driver::Cmd;
use super::link::Outbox;
use super::proto::{LinkId, UdpDrops};
use crate::mesh::budget::TokenBucket;

/// The largest UDP payload over IPv4 (Go's limit, `udp.go:20`).
pub const MAX_DATAGRAM: usize = 65507;

/// The bounds of UDP sessions (from `[limits.netceptor]` and the idle timeout).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpLimits {
    pub max_packet: usize,
    pub queue_bytes: usize,
    pub sessions: usize,
    pub sessions_per_ip: usize,
    pub session_rate: u32,
    pub idle: Duration,
}

impl UdpLimits {
    /// The receive buffer: one byte more than the largest packet taken, so a longer
    /// datagram shows as longer (the kernel truncates to the buffer) and is dropped.
    fn buffer(&self) -> Vec<u8> {
        vec![0u8; self.max_packet.min(MAX_DATAGRAM) + 1]
    }

    fn fits(&self, n: usize) -> bool {
        n > 0 && n <= self.max_packet.min(MAX_DATAGRAM)
    }
}

/// Whether a datagram from an unknown source may open a session: Go's first packet on a
/// link is a routing update (type 1, a JSON object).
pub fn opens_session(datagram: &[u8]) -> bool {
    matches!(datagram, [1, b'{', ..])
}

/// Binds a listener socket for `host:port`.
pub async fn bind(host: &str, port: u16) -> io::Result<UdpSocket> {
    UdpSocket::bind((host, port)).await
}

/// Opens a connected socket to `host:port` (the first address it resolves to).
pub async fn connect(host: &str, port: u16) -> io::Result<(UdpSocket, SocketAddr)> {
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))?;
    let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(addr).await?;
    Ok((sock, addr))
}

/// Sends `Opened` for a new session; its outbound queue and close token.
async fn open(
    link: LinkId,
    remote: String,
    cost: f64,
    dialed: bool,
    cmds: &mpsc::Sender<Cmd>,
    stop: &CancellationToken,
    lim: &UdpLimits,
) -> Option<(crate::netceptor::link::OutboxRx, CancellationToken)> {
    let (out, rx) = Outbox::new(lim.queue_bytes);
    let close = stop.child_token();
    let opened =
        Cmd::Opened { link, cost, out, close: close.clone(), remote, dialed, cert: None, carried: false };
    cmds.send(opened).await.ok()?;
    Some((rx, close))
}

/// Runs a dialed session on a connected socket until the peer's port refuses (ICMP), the
/// driver closes the link or `stop`.
pub(crate) async fn run_dialed(
    link: LinkId,
    sock: UdpSocket,
    remote: SocketAddr,
    cost: f64,
    plane: DialedPlane,
) {
    let DialedPlane { cmds, stop, lim, drops } = plane;
    let Some((mut out, close)) = open(link, format!("udp://{remote}"), cost, true, &cmds, &stop, &lim).await
    else {
        return;
    };
    let writer = async {
        while let Some(p) = out.recv().await {
            // A refused port (ICMP) ends the session; any other failure (a packet too large
            // for a datagram) loses the packet, as on Go's side.
            if let Err(e) = sock.send(&p).await {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    break;
                }
            }
        }
    };
    let reader = async {
        let mut buf = lim.buffer();
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) if lim.fits(n) => {
                    let bytes = Bytes::copy_from_slice(&buf[..n]);
                    if cmds.send(Cmd::Packet { link, bytes }).await.is_err() {
                        break;
                    }
                }
                // Empty or longer than max_packet: dropped, and counted as a listener does.
                Ok(_) => drops.add(Reason::Size),
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "netceptor UDP peer unreachable");
                    break;
                }
            }
        }
    };
    tokio::select! {
        _ = close.cancelled() => {}
        _ = writer => {}
        _ = reader => {}
    }
    let _ = cmds.send(Cmd::Closed { link, cause: None }).await;
}

/// What a dialed UDP session needs of its plane.
pub(crate) struct DialedPlane {
    pub cmds: mpsc::Sender<Cmd>,
    pub stop: CancellationToken,
    pub lim: UdpLimits,
    /// Where its drops are counted, with the listeners'.
    pub drops: Arc<UdpCounters>,
}

/// One session of a listener.
struct Entry {
    link: LinkId,
    close: CancellationToken,
    last_rx: Instant,
}

/// Why the plane's listeners dropped datagrams, summed over them: the plane's status
/// shows them (`Drops::udp`), and each drop counts in `receptor_netceptor_dropped_total`.
#[derive(Debug, Default)]
pub(crate) struct UdpCounters {
    sessions: AtomicU64,
    sessions_per_ip: AtomicU64,
    session_rate: AtomicU64,
    not_opening: AtomicU64,
    size: AtomicU64,
}

impl UdpCounters {
    /// Counts one drop in the plane's counters and in the metrics.
    fn add(&self, why: Reason) {
        let (counter, label) = match why {
            Reason::Sessions => (&self.sessions, "udp_sessions"),
            Reason::PerIp => (&self.sessions_per_ip, "udp_sessions_per_ip"),
            Reason::Rate => (&self.session_rate, "udp_session_rate"),
            Reason::NotOpening => (&self.not_opening, "udp_not_opening"),
            Reason::Size => (&self.size, "udp_size"),
        };
        counter.fetch_add(1, AtomicOrdering::Relaxed);
        crate::metrics::global().netceptor_dropped(label, 1);
    }

    pub(crate) fn snapshot(&self) -> UdpDrops {
        let get = |c: &AtomicU64| c.load(AtomicOrdering::Relaxed);
        UdpDrops {
            sessions: get(&self.sessions),
            sessions_per_ip: get(&self.sessions_per_ip),
            session_rate: get(&self.session_rate),
            not_opening: get(&self.not_opening),
            size: get(&self.size),
        }
    }
}

/// Why a listener dropped a datagram.
#[derive(Debug, Clone, Copy)]
enum Reason {
    Sessions,
    PerIp,
    Rate,
    NotOpening,
    Size,
}

/// Why datagrams were dropped on one listener (logged, at most once a minute).
#[derive(Debug, Default)]
struct Dropped {
    full: u64,
    per_ip: u64,
    rate: u64,
    not_opening: u64,
    size: u64,
    logged: Option<Instant>,
}

impl Dropped {
    /// Counts a drop here, in the plane's counters and in the metrics.
    fn count(&mut self, why: Reason, shared: &UdpCounters) {
        let mine = match why {
            Reason::Sessions => &mut self.full,
            Reason::PerIp => &mut self.per_ip,
            Reason::Rate => &mut self.rate,
            Reason::NotOpening => &mut self.not_opening,
            Reason::Size => &mut self.size,
        };
        *mine += 1;
        shared.add(why);
    }

    fn log(&mut self, url: &str, now: Instant) {
        if self.logged.is_some_and(|t| now.duration_since(t) < Duration::from_secs(60)) {
            return;
        }
        self.logged = Some(now);
        tracing::warn!(
            listener = url,
            full = self.full,
            per_ip = self.per_ip,
            rate = self.rate,
            not_opening = self.not_opening,
            size = self.size,
            "netceptor UDP datagrams dropped (limits.netceptor.udp_*; counts since start)"
        );
    }
}

/// What a listener needs from the plane.
pub(crate) struct ListenerParts {
    pub url: String,
    pub cost: f64,
    pub cmds: mpsc::Sender<Cmd>,
    pub stop: CancellationToken,
    pub lim: UdpLimits,
    /// Hands out link IDs.
    pub next_link: Arc<dyn Fn() -> LinkId + Send + Sync>,
    pub tracker: tokio_util::task::TaskTracker,
    /// The plane's drop counters.
    pub drops: Arc<UdpCounters>,
}

/// Serves a listener socket until `stop`: demultiplexes datagrams into sessions by
/// source address, within the limits.
pub(crate) async fn serve(sock: UdpSocket, p: ListenerParts) {
    let sock = Arc::new(sock);
    let lim = p.lim;
    let mut sessions: HashMap<SocketAddr, Entry> = HashMap::new();
    let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
    let (gone_tx, mut gone_rx) = mpsc::unbounded_channel::<(SocketAddr, LinkId)>();
    let rate = u64::from(lim.session_rate);
    let mut bucket = TokenBucket::new(rate, rate, rate, Instant::now());
    let mut dropped = Dropped::default();
    let mut sweep = tokio::time::interval((lim.idle / 4).max(Duration::from_millis(100)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = lim.buffer();
    loop {
        let (n, from) = tokio::select! {
            _ = p.stop.cancelled() => break,
            Some((addr, link)) = gone_rx.recv() => {
                if sessions.get(&addr).is_some_and(|e| e.link == link) {
                    sessions.remove(&addr);
                    release(&mut per_ip, addr.ip());
                }
                continue;
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                let idle: Vec<SocketAddr> = sessions
                    .iter()
                    .filter(|(_, e)| now.duration_since(e.last_rx) > lim.idle)
                    .map(|(a, _)| *a)
                    .collect();
                for addr in idle {
                    if let Some(e) = sessions.remove(&addr) {
                        e.close.cancel();
                        release(&mut per_ip, addr.ip());
                    }
                }
                continue;
            }
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // Unconnected sockets rarely fail; never spin on one that does.
                    tracing::debug!(listener = %p.url, error = %e, "netceptor UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let now = Instant::now();
        if !lim.fits(n) {
            dropped.count(Reason::Size, &p.drops);
            dropped.log(&p.url, now);
            continue;
        }
        let datagram = &buf[..n];
        if let Some(e) = sessions.get_mut(&from) {
            e.last_rx = now;
            let link = e.link;
            if p.cmds.send(Cmd::Packet { link, bytes: Bytes::copy_from_slice(datagram) }).await.is_err() {
                break;
            }
            continue;
        }
        // An unknown source: a new session only within every bound.
        let refused = if !opens_session(datagram) {
            Some(Reason::NotOpening)
        } else if sessions.len() >= lim.sessions {
            Some(Reason::Sessions)
        } else if per_ip.get(&from.ip()).copied().unwrap_or(0) >= lim.sessions_per_ip {
            Some(Reason::PerIp)
        } else if !bucket.take(1, now) {
            Some(Reason::Rate)
        } else {
            None
        };
        if let Some(why) = refused {
            dropped.count(why, &p.drops);
            dropped.log(&p.url, now);
            continue;
        }
        let link = (p.next_link)();
        let Some((out, close)) =
            open(link, format!("udp://{from}"), p.cost, false, &p.cmds, &p.stop, &lim).await
        else {
            break;
        };
        if p.cmds.send(Cmd::Packet { link, bytes: Bytes::copy_from_slice(datagram) }).await.is_err() {
            break;
        }
        sessions.insert(from, Entry { link, close: close.clone(), last_rx: now });
        *per_ip.entry(from.ip()).or_default() += 1;
        p.tracker.spawn(write_session(link, from, sock.clone(), out, close, p.cmds.clone(), gone_tx.clone()));
    }
    for e in sessions.values() {
        e.close.cancel();
    }
}

fn release(per_ip: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(c) = per_ip.get_mut(&ip) {
        *c -= 1;
        if *c == 0 {
            per_ip.remove(&ip);
        }
    }
}

/// Drains one accepted session's queue onto the shared socket until the link closes.
async fn write_session(
    link: LinkId,
    to: SocketAddr,
    sock: Arc<UdpSocket>,
    mut out: crate::netceptor::link::OutboxRx,
    close: CancellationToken,
    cmds: mpsc::Sender<Cmd>,
    gone: mpsc::UnboundedSender<(SocketAddr, LinkId)>,
) {
    let writer = async {
        while let Some(p) = out.recv().await {
            // A datagram that cannot be sent is lost (UDP); the session stays.
            let _ = sock.send_to(&p, to).await;
        }
    };
    tokio::select! {
        _ = close.cancelled() => {}
        _ = writer => {}
    }
    let _ = cmds.send(Cmd::Closed { link, cause: None }).await;
    let _ = gone.send((to, link));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_routing_update_opens_a_session() {
        assert!(opens_session(b"\x01{\"NodeID\":\"x\"}"));
        assert!(!opens_session(b"\x00{"));
        assert!(!opens_session(b"\x01"));
        assert!(!opens_session(b""));
        assert!(!opens_session(b"GET / HTTP/1.1"));
    }

    #[test]
    fn the_buffer_shows_oversize_datagrams() {
        let lim = UdpLimits {
            max_packet: 2000,
            queue_bytes: 1 << 20,
            sessions: 1,
            sessions_per_ip: 1,
            session_rate: 1,
            idle: Duration::from_secs(21),
        };
        assert_eq!(lim.buffer().len(), 2001);
        assert!(lim.fits(2000) && !lim.fits(2001) && !lim.fits(0));
        let big = UdpLimits { max_packet: 65535, ..lim };
        assert_eq!(big.buffer().len(), MAX_DATAGRAM + 1);
    }
}
