//! [`Node`]: the public handle of one mesh node, persistent daemon or short-lived client.
//!
//! It owns the driver task, the listeners' accept loops and the peers' dial loops, all
//! under one cancellation token and task tracker.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::{Driver, Event, MeshStatus, Topology};
use super::link::{self, LinkCtx, LinkError};
use super::origin::{CertSigner, OriginCheck, Verifier};
use super::router::{Incoming, Router};
use super::state::{Mesh, MeshConfig};
use super::stream::{StreamKey, StreamReader, StreamWriter};
use crate::limits::Limits;
use crate::transport::{self, PeerUrl, TransportError};
use crate::wire::{Body, Hello, Name, NodeId, PROTOCOL_VERSION, Side, WorkTypeAd, caps};

mod links;

/// First delay before redialing a configured peer whose link ended or that could not be
/// reached; it doubles (jittered) up to [`REDIAL_MAX`], and starts over when a link lasted
/// 10 s or the peer becomes reachable through another node.
pub const REDIAL_BASE: Duration = Duration::from_millis(250);
/// Longest delay between two redials of a configured peer: a relay that comes back is
/// redialed within this time (docs/PROTOCOL.md §4.1).
pub const REDIAL_MAX: Duration = Duration::from_secs(2);

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub id: NodeId,
    /// Short-lived client nodes are leaves: never used as relays.
    pub ephemeral: bool,
    pub mesh: MeshConfig,
    /// A link with no traffic for this long is declared dead (the larger of both ends wins).
    pub idle_timeout: Duration,
    /// Per-stream receive window in bytes.
    pub window: u32,
    pub dial_timeout: Duration,
    /// TLS material for `receptors://` peers and listeners.
    pub tls: Option<crate::transport::TlsContext>,
    /// Node IDs allowed to link with this node (empty: any).
    pub allowed_peers: Vec<NodeId>,
    /// Which peers may relay on links with this node (`[mesh] relays`).
    pub relays: super::relay::RelayPolicy,
    /// Budgets of handshakes, advertisements, the database and streams.
    pub limits: Limits,
    /// With `tls`: protect every stream this node opens end to end and refuse
    /// unprotected ones (`[tls] e2e_streams`). Protected streams are accepted whenever
    /// the node has TLS material.
    pub e2e_streams: bool,
}

impl NodeOptions {
    pub fn new(id: NodeId) -> NodeOptions {
        NodeOptions {
            id,
            ephemeral: false,
            mesh: MeshConfig::default(),
            idle_timeout: Duration::from_secs(5),
            window: 2 * 1024 * 1024,
            dial_timeout: Duration::from_secs(5),
            tls: None,
            allowed_peers: Vec::new(),
            relays: super::relay::RelayPolicy::any(),
            limits: Limits::default(),
            e2e_streams: true,
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("node {node} is not known to the mesh{}{}", known_list(.known), leaf_hint(.only_leaves))]
    UnknownNode {
        node: NodeId,
        known: Vec<NodeId>,
        /// Non-empty when every link of this node leads to one of these leaves, which
        /// relay nothing (docs/PROTOCOL.md §5.8).
        only_leaves: Vec<NodeId>,
    },
    #[error("service name: {0}")]
    Service(#[from] crate::wire::NameError),
    #[error("stream header of {0} bytes exceeds the protocol's {max} bytes", max = crate::wire::MAX_META)]
    HeaderTooLarge(usize),
    /// The end-to-end handshake failed: the other end refused the stream, could not
    /// prove its node ID, or did not answer in time.
    #[error("stream to {node}: {source}")]
    Protection { node: NodeId, source: super::e2e::HandshakeError },
}

/// Who answered a ping, and how fast.
#[derive(Debug, Clone)]
pub struct PingReply {
    pub from: NodeId,
    /// The target answered (otherwise a relay where the hop budget ran out).
    pub reached: bool,
    pub rtt: Duration,
}

/// Why a ping failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error(transparent)]
    Unknown(#[from] OpenError),
    #[error("no reply from {0} within {1:?}")]
    Timeout(NodeId, Duration),
}

/// Why a client could not join through a peer.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The transport error names the peer and the reason.
    #[error(transparent)]
    Transport(TransportError),
    #[error("peer {url}: {source}")]
    Link { url: PeerUrl, source: LinkError },
    #[error("peer {url} did not send its routing table within {timeout:?}")]
    SyncTimeout { url: PeerUrl, timeout: Duration },
}

fn known_list(known: &[NodeId]) -> String {
    if known.is_empty() {
        return "; no other node is reachable".into();
    }
    let names: Vec<&str> = known.iter().map(|n| n.as_str()).collect();
    format!("; known nodes: {}", names.join(", "))
}

fn leaf_hint(leaves: &[NodeId]) -> String {
    if leaves.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = leaves.iter().map(|n| n.as_str()).collect();
    format!(
        "; this node joined the mesh only through {} ([mesh] role = \"leaf\"), which relays \
         nothing: join through a hub",
        names.join(", ")
    )
}

struct Inner {
    router: Arc<Router>,
    events: mpsc::Sender<Event>,
    topology: watch::Receiver<Topology>,
    fatal: watch::Receiver<Option<String>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    next_link: AtomicU64,
    hello: Hello,
    limits: Arc<Limits>,
    origins: OriginCheck,
    opts: NodeOptions,
    /// Shared by every link's reader (`link::ADVERTS_IN_FLIGHT`).
    adverts_in_flight: Arc<tokio::sync::Semaphore>,
    /// The netceptor plane's hook, once set: links offer and carry its packets.
    carrier: std::sync::OnceLock<super::carry::Carrier>,
}

/// A fresh connection waiting for its handshake.
struct Conn {
    io: transport::BoxedIo,
    identity: Option<transport::PeerIdentity>,
    cost: f64,
    /// Peers linked through this connection's listener may relay (`relays = false`).
    relays: bool,
    dialed_by_me: bool,
    /// Ends the link: the node's token, or the token of the listener or peer it came from.
    stop: CancellationToken,
}

/// Stops one listener (its accept loop and the links it accepted) or one peer (its dial
/// loop and its link), leaving every other link alone. Used by the daemon's reload.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    stop: CancellationToken,
}

impl LinkHandle {
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// A running mesh node. Cloning gives another handle to the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Starts the node's driver; add listeners and peers afterwards.
    pub fn start(opts: NodeOptions) -> Node {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let router =
            Router::new(opts.id.clone(), opts.window, opts.mesh.max_hops, &opts.limits, tracker.clone());
        let (events_tx, events_rx) = mpsc::channel(1024);
        let (topo_tx, topo_rx) = watch::channel(Topology::default());
        let (fatal_tx, fatal_rx) = watch::channel(None);
        let mut mesh = Mesh::new(opts.id.clone(), epoch, opts.ephemeral, opts.mesh.clone(), Instant::now());
        // A node with TLS material signs its advertisements and demands signed ones.
        let origins = match &opts.tls {
            Some(tls) => {
                mesh.set_signer(Arc::new(CertSigner::new(tls.clone())));
                OriginCheck::Signed(Arc::new(Verifier::new(tls.clone(), opts.limits.max_nodes)))
            }
            None => OriginCheck::TrustedNetwork,
        };
        if let Some(tls) = &opts.tls {
            let _ = router.e2e.set(super::e2e::E2e::new(tls.clone(), opts.e2e_streams, &opts.limits));
        }
        let driver = Driver::new(mesh, router.clone(), events_rx, topo_tx, fatal_tx, cancel.clone());
        tracker.spawn(driver.run());
        let mut caps_bits = caps::STREAMS;
        if opts.ephemeral {
            caps_bits |= caps::EPHEMERAL;
        }
        if opts.mesh.role == super::state::Role::Leaf {
            caps_bits |= caps::LEAF;
        }
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node_id: opts.id.clone(),
            epoch,
            caps: caps_bits,
            idle_timeout_ms: opts.idle_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            cost: 1.0,
        };
        let inner = Inner {
            router,
            events: events_tx,
            topology: topo_rx,
            fatal: fatal_rx,
            cancel,
            tracker,
            next_link: AtomicU64::new(1),
            hello,
            limits: Arc::new(opts.limits.clone()),
            origins,
            opts,
            adverts_in_flight: Arc::new(tokio::sync::Semaphore::new(link::ADVERTS_IN_FLIGHT)),
            carrier: std::sync::OnceLock::new(),
        };
        Node { inner: Arc::new(inner) }
    }

    pub fn id(&self) -> &NodeId {
        &self.inner.opts.id
    }

    pub fn topology(&self) -> watch::Receiver<Topology> {
        self.inner.topology.clone()
    }

    /// Becomes `Some(reason)` when the node must stop (e.g. its ID is taken).
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.inner.fatal.clone()
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    pub fn tracker(&self) -> TaskTracker {
        self.inner.tracker.clone()
    }

    /// Lets links carry another plane's packets (netceptor sessions over native links):
    /// links set up from now on offer [`caps::NETCEPTOR`]. Set once, before links start;
    /// later calls are ignored.
    pub fn set_carrier(&self, carrier: super::carry::Carrier) {
        let _ = self.inner.carrier.set(carrier);
    }

    fn ctx(&self, cancel: CancellationToken) -> LinkCtx {
        let carrier = self.inner.carrier.get().cloned();
        let mut hello = self.inner.hello.clone();
        if carrier.is_some() {
            hello.caps |= caps::NETCEPTOR;
        }
        LinkCtx {
            allowed_peers: Arc::new(self.inner.opts.allowed_peers.clone()),
            router: self.inner.router.clone(),
            events: self.inner.events.clone(),
            hello,
            carrier,
            cancel,
            limits: self.inner.limits.clone(),
            origins: self.inner.origins.clone(),
            relays: Arc::new(self.inner.opts.relays.clone()),
            adverts_in_flight: self.inner.adverts_in_flight.clone(),
        }
    }

    /// Registers a stream service; incoming streams for it arrive on the returned queue.
    pub fn serve(&self, service: &str, backlog: usize) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(backlog.max(1));
        self.inner.router.register_service(service, tx);
        rx
    }

    /// Whether frames for `dst` have a way out of this node: a route, a learned reverse
    /// path, or (on a leaf) the default route through its hubs. A leaf's topology lists
    /// only its direct peers, so this, not [`Topology::reachable`], says whether to try.
    pub fn routable(&self, dst: &NodeId) -> bool {
        self.inner.router.reachable(dst)
    }

    /// Now, in this node's history of route changes: see [`Node::rerouted_since`].
    pub fn route_mark(&self) -> super::reroute::RouteMark {
        self.inner.router.reroutes.mark()
    }

    /// Whether, since `mark`, this node's route to `dst` changed or one of its links went
    /// down: a stream to `dst` that failed with a gap then may have lost frames to a
    /// reroute, and is not proof of tampering.
    pub fn rerouted_since(&self, dst: &NodeId, mark: super::reroute::RouteMark) -> bool {
        self.inner.router.reroutes.rerouted_since(dst, mark)
    }

    fn check_known(&self, dst: &NodeId) -> Result<(), OpenError> {
        if self.inner.router.reachable(dst) {
            return Ok(());
        }
        Err(self.inner.topology.borrow().unknown(dst))
    }

    /// Opens a stream to `service` on `dst`.
    pub async fn open(
        &self,
        dst: &NodeId,
        service: &str,
        header: Bytes,
    ) -> Result<(StreamWriter, StreamReader), OpenError> {
        self.check_known(dst)?;
        let service = Name::new(service)?;
        if header.len() > crate::wire::MAX_META {
            return Err(OpenError::HeaderTooLarge(header.len()));
        }
        let router = &self.inner.router;
        let id = router.streams.new_id(dst);
        let key = StreamKey { peer: dst.clone(), id, local: Side::Opener };
        let Some(e2e) = router.e2e.get().filter(|e| e.required && *dst != self.inner.opts.id) else {
            let (writer, reader) = router.endpoints(key, 0);
            let body = Body::Open { stream: id, service, window: router.window, header };
            router.originate(dst, body).await;
            return Ok((writer, reader));
        };
        let fail = |source| OpenError::Protection { node: dst.clone(), source };
        let (hello, conn) = e2e.client_hello(dst).map_err(fail)?;
        let (mut writer, mut reader) = router.endpoints(key, 0);
        let body = Body::Open { stream: id, service, window: router.window, header: hello };
        router.originate(dst, body).await;
        let me = &self.inner.opts.id;
        let binding = super::e2e::Binding { id, opener: me, acceptor: dst };
        let shake = e2e.open(conn, binding, header, &mut writer, &mut reader);
        let result = match tokio::time::timeout(e2e.timeout, shake).await {
            Ok(r) => r,
            Err(_) => Err(super::e2e::HandshakeError::Timeout(e2e.timeout)),
        };
        if let Err(e) = result {
            crate::metrics::global().stream_auth_failed("opener");
            writer.reset(&format!("end-to-end handshake failed at {me}: {e}")).await;
            return Err(fail(e));
        }
        Ok((writer, reader))
    }

    /// Round-trip time to `dst`.
    pub async fn ping(&self, dst: &NodeId, timeout: Duration) -> Result<Duration, PingError> {
        let max = self.inner.opts.mesh.max_hops;
        self.ping_hops(dst, max, timeout).await.map(|r| r.rtt)
    }

    /// Pings `dst` with a hop budget: the answer comes from `dst`, or from the node where
    /// the budget ran out (`reached` false).
    pub async fn ping_hops(
        &self,
        dst: &NodeId,
        hops_left: u8,
        timeout: Duration,
    ) -> Result<PingReply, PingError> {
        self.check_known(dst)?;
        let id = rand::random::<u64>();
        let rx = self.inner.router.expect_pong(id);
        let start = Instant::now();
        self.inner.router.originate_hops(dst, Body::Ping { id }, hops_left).await;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok((from, reached))) => Ok(PingReply { from, reached, rtt: start.elapsed() }),
            _ => {
                self.inner.router.forget_ping(id);
                Err(PingError::Timeout(dst.clone(), timeout))
            }
        }
    }

    /// The nodes on the way to `dst`, by hop number: hop 0 is this node; the walk ends at
    /// `dst` or at the first error.
    pub async fn traceroute(
        &self,
        dst: &NodeId,
        timeout: Duration,
    ) -> Vec<(u8, Result<PingReply, PingError>)> {
        let here = PingReply { from: self.id().clone(), reached: *dst == *self.id(), rtt: Duration::ZERO };
        let mut hops = vec![(0, Ok(here))];
        if *dst == *self.id() {
            return hops;
        }
        for k in 1..=self.inner.opts.mesh.max_hops {
            let r = self.ping_hops(dst, k - 1, timeout).await;
            let done = !matches!(r, Ok(PingReply { reached: false, .. }));
            hops.push((k, r));
            if done {
                break;
            }
        }
        hops
    }

    pub async fn status(&self) -> Option<MeshStatus> {
        let (tx, rx) = oneshot::channel();
        self.inner.events.send(Event::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn set_work_types(&self, work_types: Vec<WorkTypeAd>) {
        let _ = self.inner.events.send(Event::SetWorkTypes(work_types)).await;
    }

    /// Leaves the mesh cleanly (peers forget this node at once), then stops every task.
    pub async fn shutdown(&self, grace: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.inner.events.send(Event::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
        }
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_err() {
            tracing::warn!(tasks = self.inner.tracker.len(), "tasks still running after shutdown grace");
        }
    }
}
