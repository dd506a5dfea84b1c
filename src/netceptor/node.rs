//! [`NetceptorNode`]: the handle of this node's netceptor plane. It owns the driver task,
//! the dial loops of `netceptor://` (and `netceptor+udp://`) peers, UDP listeners and the
//! sessions of accepted Go peers, all under one cancellation token and the daemon's task
//! tracker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::{Cmd, Datagram, Driver};
use super::link::{self, LinkLimits, Session};
use super::proto::data::SendError;
use super::proto::{Config, LocalService, Netceptor, new_epoch};
use super::status::NetStatus;
use crate::mesh::backoff::Backoff;
use crate::transport::{PeerUrl, Scheme, TlsContext};
use crate::wire::NodeId;

/// Go's redial back-off: 5 s, growing to 20 s (`pkg/backends/utils.go`).
const REDIAL_FIRST: Duration = Duration::from_secs(5);
const REDIAL_MAX: Duration = Duration::from_secs(20);
/// Go's dial timeout.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// A dialed session: a byte stream, or a connected UDP socket.
enum Dialed {
    Stream(Session),
    Udp(tokio::net::UdpSocket, std::net::SocketAddr),
}

/// The netceptor plane of this node.
#[derive(Clone)]
pub struct NetceptorNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    cmds: mpsc::Sender<Cmd>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    next_link: AtomicU64,
    fatal: watch::Receiver<Option<String>>,
    link_limits: LinkLimits,
    udp_limits: super::udp::UdpLimits,
    limits: super::proto::Limits,
    routable: watch::Receiver<Arc<std::collections::BTreeSet<String>>>,
    active: watch::Receiver<bool>,
    /// This node's TLS material (`[tls]`), for `netceptors://` peers.
    tls: Option<TlsContext>,
    /// The same material for user-TLS streams (Go's ConnType 2).
    user_tls: Option<Arc<super::quic::tls::UserTls>>,
    /// `(node, service)` pairs once advertised with ConnType 2: dialed with user TLS from
    /// then on, whatever later (unsigned, forgeable) advertisements say.
    tls_seen: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// Why the UDP listeners dropped datagrams.
    udp_drops: Arc<super::udp::UdpCounters>,
}

impl NetceptorNode {
    /// Starts the plane's driver on `tracker`; it stops with `cancel`. `tls` is the
    /// node's TLS material, used to dial `netceptors://` peers.
    pub fn start(
        cfg: Config,
        tls: Option<TlsContext>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> NetceptorNode {
        let (cmds, rx) = mpsc::channel(1024);
        let (fatal_tx, fatal) = watch::channel(None);
        let id = cfg.id.clone();
        let link_limits = LinkLimits {
            max_packet: cfg.limits.max_packet,
            queue_bytes: cfg.limits.link_queue_bytes,
            stall: cfg.stall_timeout,
        };
        let udp_limits = super::udp::UdpLimits {
            max_packet: cfg.limits.max_packet,
            queue_bytes: cfg.limits.link_queue_bytes,
            sessions: cfg.limits.udp_sessions,
            sessions_per_ip: cfg.limits.udp_sessions_per_ip,
            session_rate: cfg.limits.udp_session_rate,
            idle: cfg.idle_timeout,
        };
        let limits = cfg.limits.clone();
        let state = Netceptor::new(cfg, Instant::now(), time::OffsetDateTime::now_utc());
        let (routable_tx, routable) = watch::channel(Arc::default());
        let (active_tx, active) = watch::channel(false);
        let driver = Driver {
            state,
            cmds: rx,
            cancel: cancel.clone(),
            fatal: fatal_tx,
            routable: routable_tx,
            active: active_tx,
        };
        tracker.spawn(driver.run());
        NetceptorNode {
            inner: Arc::new(Inner {
                id,
                cmds,
                tracker: tracker.clone(),
                cancel,
                next_link: AtomicU64::new(1),
                fatal,
                link_limits,
                udp_limits,
                limits,
                routable,
                active,
                user_tls: tls.clone().map(|t| Arc::new(super::quic::tls::UserTls::new(t))),
                tls_seen: std::sync::Mutex::default(),
                udp_drops: Arc::default(),
                tls,
            }),
        }
    }

    /// A config with a fresh epoch for `id`.
    pub fn config(id: NodeId) -> Config {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Config::new(id, new_epoch(secs, rand::random()))
    }

    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// Set when the plane must stop (a newer node took our ID, or a routing update says
    /// this node is that newer one).
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.inner.fatal.clone()
    }

    /// Stops the plane: its driver, links and dial loops end; sessions accepted later are
    /// closed at once. The daemon's other planes are untouched.
    pub fn withdraw(&self) {
        self.inner.cancel.cancel();
    }

    /// Runs a netceptor session on an accepted connection.
    pub fn accept(&self, session: Session) {
        let (link, cmds, stop) = self.link_parts();
        self.inner.tracker.spawn(link::run(link, session, cmds, stop, self.inner.link_limits));
    }

    /// True while some link of this plane is up: native links then carry sessions
    /// without waiting for their peers (docs/PROTOCOL.md, "Netceptor over native links").
    pub fn active(&self) -> watch::Receiver<bool> {
        self.inner.active.clone()
    }

    /// Opens a session carried over the native link with `peer` (which authenticated it)
    /// at `cost`: packets from the peer go into the returned sender (dropping it ends the
    /// session; one over `limits.netceptor.max_packet` closes it), the session's packets
    /// come out of the stream, which ends when the session is closed.
    pub fn carry(
        &self,
        peer: &NodeId,
        cost: f64,
    ) -> (mpsc::Sender<Bytes>, impl futures_util::Stream<Item = Bytes> + Send + 'static) {
        let (link, cmds, stop) = self.link_parts();
        let (out, out_rx) = link::Outbox::new(self.inner.link_limits.queue_bytes);
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(64);
        let close = stop.child_token();
        let max = self.inner.link_limits.max_packet;
        let peer_name = peer.as_str().to_owned();
        let opened = Cmd::Opened {
            link,
            cost,
            out,
            close: close.clone(),
            remote: format!("receptor://{peer} (native link)"),
            dialed: false,
            // The native link proved the peer (TLS) or holds the trust a plain-TCP mesh
            // has: its netceptor ID must be the same.
            cert: Some(vec![peer.as_str().to_owned()]),
            carried: true,
        };
        self.inner.tracker.spawn(async move {
            if cmds.send(opened).await.is_err() {
                return;
            }
            let cause = loop {
                tokio::select! {
                    _ = close.cancelled() => break None,
                    p = in_rx.recv() => match p {
                        None => break Some("the native link ended".to_owned()),
                        Some(p) if p.len() > max => {
                            tracing::info!(peer = %peer_name, len = p.len(), max, "carried netceptor packet over limits.netceptor.max_packet; closing the session (the native link stays)");
                            break Some(format!(
                                "a carried packet of {} bytes exceeds limits.netceptor.max_packet ({max})",
                                p.len()
                            ));
                        }
                        Some(bytes) => {
                            if cmds.send(Cmd::Packet { link, bytes }).await.is_err() {
                                break None;
                            }
                        }
                    },
                }
            };
            let _ = cmds.send(Cmd::Closed { link, cause }).await;
        });
        let packets =
            futures_util::stream::unfold(out_rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
        (in_tx, packets)
    }

    fn link_parts(&self) -> (u64, mpsc::Sender<Cmd>, CancellationToken) {
        (
            self.inner.next_link.fetch_add(1, Ordering::Relaxed),
            self.inner.cmds.clone(),
            self.inner.cancel.clone(),
        )
    }

    /// Keeps a link to the Go node at `url` up, redialing as Go does, until `stop` (or
    /// the node) is cancelled.
    pub fn add_peer(&self, url: PeerUrl, cost: f64, stop: CancellationToken) {
        let node = self.clone();
        self.inner.tracker.spawn(async move { node.dial_loop(url, cost, stop).await });
    }

    async fn dial_loop(self, url: PeerUrl, cost: f64, stop: CancellationToken) {
        let mut backoff = Backoff::new(REDIAL_FIRST, REDIAL_MAX);
        let mut failures = 0u32;
        let withdrawn = self.inner.cancel.clone();
        loop {
            let dialed = tokio::select! {
                _ = stop.cancelled() => return,
                _ = withdrawn.cancelled() => return,
                r = tokio::time::timeout(DIAL_TIMEOUT, self.connect(&url)) => r,
            };
            match dialed {
                Ok(Ok(dialed)) => {
                    failures = 0;
                    let (link, cmds, _) = self.link_parts();
                    let started = Instant::now();
                    let run = async {
                        match dialed {
                            Dialed::Stream(session) => {
                                let session = Session { cost, ..session };
                                link::run(link, session, cmds, stop.clone(), self.inner.link_limits).await;
                            }
                            Dialed::Udp(sock, addr) => {
                                let plane = super::udp::DialedPlane {
                                    cmds,
                                    stop: stop.clone(),
                                    lim: self.inner.udp_limits,
                                    drops: self.inner.udp_drops.clone(),
                                };
                                super::udp::run_dialed(link, sock, addr, cost, plane).await;
                            }
                        }
                    };
                    tokio::select! {
                        _ = run => {}
                        _ = withdrawn.cancelled() => return,
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff.reset();
                    }
                }
                Ok(Err(e)) => {
                    failures += 1;
                    if failures == 1 || failures % 10 == 0 {
                        tracing::warn!(peer = %url, error = %e, attempts = failures, "cannot reach netceptor peer");
                    }
                }
                Err(_) => {
                    failures += 1;
                    tracing::warn!(peer = %url, "cannot reach netceptor peer: no answer within {DIAL_TIMEOUT:?}");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = withdrawn.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Opens a session to `url`: TCP, and TLS for `netceptors://` with this node's
    /// material (the server's chain and EKU verified; its node ID, from its first routing
    /// update, must be one its certificate names); a connected socket for `netceptor+udp://`.
    async fn connect(&self, url: &PeerUrl) -> std::io::Result<Dialed> {
        if url.scheme == Scheme::Udp {
            let (sock, addr) = super::udp::connect(&url.host, url.port).await?;
            return Ok(Dialed::Udp(sock, addr));
        }
        if url.ws.is_some() {
            // `netceptor+ws(s)://`: one packet per WebSocket message, through a proxy from
            // the environment, TLS as for `netceptors://`.
            let ctx = match url.scheme {
                Scheme::Tcp | Scheme::Udp => None,
                Scheme::Tls => Some(self.inner.tls.as_ref().ok_or_else(|| {
                    std::io::Error::other(
                        "netceptor+wss:// needs the [tls] section (this node's certificate)",
                    )
                })?),
            };
            let (io, id) = crate::transport::connect(url, ctx, crate::transport::ws::Mode::Packets)
                .await
                .map_err(std::io::Error::other)?;
            let cert = id.map(|i| i.node_ids);
            return Ok(Dialed::Stream(Session {
                io,
                prefix: Bytes::new(),
                remote: url.to_string(),
                cost: 1.0,
                dialed: true,
                cert,
            }));
        }
        let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
        let _ = tcp.set_nodelay(true);
        let remote = tcp.peer_addr().map_or_else(|_| url.to_string(), |a| a.to_string());
        let (io, cert): (crate::transport::BoxedIo, _) = match url.scheme {
            Scheme::Tcp | Scheme::Udp => (Box::new(tcp), None),
            Scheme::Tls => {
                let ctx = self.inner.tls.as_ref().ok_or_else(|| {
                    std::io::Error::other("netceptors:// needs the [tls] section (this node's certificate)")
                })?;
                let (io, id) = ctx.connect(tcp, &url.host).await.map_err(std::io::Error::other)?;
                (io, Some(id.node_ids))
            }
        };
        Ok(Dialed::Stream(Session { io, prefix: Bytes::new(), remote, cost: 1.0, dialed: true, cert }))
    }

    /// Serves Go's UDP peers (`--udp-peer`) on `sock`, bound for the listener `url`, with
    /// link cost `cost`, until `stop` (or the node) is cancelled.
    pub fn serve_udp(&self, sock: tokio::net::UdpSocket, url: &PeerUrl, cost: f64, stop: CancellationToken) {
        let node = self.clone();
        let parts = super::udp::ListenerParts {
            url: url.to_string(),
            cost,
            cmds: self.inner.cmds.clone(),
            stop,
            lim: self.inner.udp_limits,
            next_link: Arc::new(move || node.inner.next_link.fetch_add(1, Ordering::Relaxed)),
            tracker: self.inner.tracker.clone(),
            drops: self.inner.udp_drops.clone(),
        };
        self.inner.tracker.spawn(super::udp::serve(sock, parts));
    }

    /// The node IDs the native plane holds: from now on no netceptor peer may claim one
    /// unless its certificate names it.
    pub async fn set_reserved(&self, ids: std::collections::BTreeSet<String>) {
        let _ = self.inner.cmds.send(Cmd::Reserved(ids)).await;
    }

    /// Whether the netceptor plane has a route to `node` (never once withdrawn).
    pub fn routable(&self, node: &str) -> bool {
        !self.inner.cancel.is_cancelled() && self.inner.routable.borrow().contains(node)
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    pub(crate) fn cmds(&self) -> mpsc::Sender<Cmd> {
        self.inner.cmds.clone()
    }

    /// The plane's limits.
    pub fn limits(&self) -> &super::proto::Limits {
        &self.inner.limits
    }

    /// Replaces the services this node advertises.
    pub async fn set_services(&self, services: Vec<LocalService>) {
        let _ = self.inner.cmds.send(Cmd::Services(services)).await;
    }

    /// A snapshot of the plane; `None` once it has stopped.
    pub async fn status(&self) -> Option<NetStatus> {
        let (tx, rx) = oneshot::channel();
        self.inner.cmds.send(Cmd::Status(tx)).await.ok()?;
        let mut st = rx.await.ok()?;
        st.drops.udp = self.inner.udp_drops.snapshot();
        Some(st)
    }

    /// Receives datagrams sent to local `service` (and `unreach` reports about packets it
    /// sent).
    pub async fn bind(&self, service: &str, queue: usize) -> mpsc::Receiver<Datagram> {
        let (tx, rx) = mpsc::channel(queue);
        let _ = self.inner.cmds.send(Cmd::Bind { service: service.to_owned(), tx }).await;
        rx
    }

    pub async fn unbind(&self, service: &str) {
        let _ = self.inner.cmds.send(Cmd::Unbind { service: service.to_owned() }).await;
    }

    /// Serves stream service `service` (QUIC) to Go nodes, with user TLS (`tls`: Go's
    /// ConnType 2, with this node's `[tls]` material; clients must prove the node ID their
    /// packets carry) or in Go's insecure mode; the listener's connections are taken by an
    /// accept loop (e.g. the control service's).
    pub async fn listen_stream(
        &self,
        service: &str,
        tls: bool,
    ) -> Result<super::quic::Listener, super::quic::config::ConfigError> {
        let tls = match (tls, self.user_tls()) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => {
                return Err(super::quic::config::ConfigError::Cert(
                    "user TLS streams need the [tls] section (this node's certificate)".into(),
                ));
            }
        };
        let lim = &self.inner.limits;
        let rx = self.bind(service, self.inner.limits.service_queue).await;
        let socket = super::quic::socket::NetSocket::new(service.to_owned(), rx, self.inner.cmds.clone());
        let resolver = socket.resolver();
        let endpoint = match super::quic::serve::endpoint(socket, lim.quic_streams, tls.as_deref()) {
            Ok(e) => e,
            Err(e) => {
                self.unbind(service).await;
                return Err(e);
            }
        };
        let quota = super::quic::serve::Quota::new(lim.quic_connections_per_peer, lim.quic_connections);
        Ok(super::quic::Listener {
            endpoint,
            tracker: self.inner.tracker.clone(),
            resolver,
            quota,
            tls,
            streams: lim.quic_streams,
        })
    }

    /// Whether `node:service` is dialed with user TLS, given its advertised ConnType: once
    /// a pair was advertised with ConnType 2 it stays so (netceptor advertisements are
    /// not signed, so a later ConnType 1 may be a downgrade forged on the path). At most
    /// `max_nodes` pairs are remembered.
    pub(crate) fn wants_tls(&self, node: &str, service: &str, conn_type: Option<u8>) -> bool {
        let mut seen = self.inner.tls_seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (node.to_owned(), service.to_owned());
        if conn_type == Some(super::wire::CONN_STREAM_TLS) {
            if seen.len() < self.inner.limits.max_nodes {
                seen.insert(key);
            }
            return true;
        }
        seen.contains(&key)
    }

    /// User-TLS stream configurations from this node's `[tls]` material, if it has any.
    pub fn user_tls(&self) -> Option<Arc<super::quic::tls::UserTls>> {
        self.inner.user_tls.clone()
    }

    /// Sends one datagram from local `from` to `node:service`.
    pub async fn send_to(
        &self,
        from: &str,
        node: &str,
        service: &str,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Send { from: from.into(), node: node.into(), service: service.into(), payload, reply };
        if self.inner.cmds.send(cmd).await.is_err() {
            return Err(SendError::NoRoute(node.to_owned()));
        }
        rx.await.unwrap_or_else(|_| Err(SendError::NoRoute(node.to_owned())))
    }

    /// Waits up to `within` for a route to `node`.
    pub async fn wait_route(&self, node: &str, within: Duration) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.inner.cmds.send(Cmd::Linked { peer: node.to_owned(), reply }).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, rx).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_service_once_advertised_with_tls_is_never_dialed_without() {
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let n = NetceptorNode::start(
            NetceptorNode::config(NodeId::new("a").expect("id")),
            None,
            &tracker,
            cancel.clone(),
        );
        assert!(!n.wants_tls("g", "control", Some(super::super::wire::CONN_STREAM)));
        assert!(!n.wants_tls("g", "control", None), "no advertisement yet: Go's insecure mode");
        assert!(n.wants_tls("g", "control", Some(super::super::wire::CONN_STREAM_TLS)));
        assert!(
            n.wants_tls("g", "control", Some(super::super::wire::CONN_STREAM)),
            "a later ConnType 1 is no downgrade"
        );
        assert!(!n.wants_tls("h", "control", Some(super::super::wire::CONN_STREAM)), "per node");
        cancel.cancel();
    }
}
