//! The forwarding plane: routes each routed frame to the next hop or to a local endpoint.
//!
//! Link readers call [`Router::route`] directly, so relaying never queues behind the
//! control-plane driver. The table they read is a snapshot the driver republishes
//! whenever routing changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lane::AdvertLane;
use super::stream::{StreamKey, StreamReader, StreamTable, StreamWriter};
use crate::logging::Throttle;
use crate::wire::{Body, Frame, NodeId, Reason, Routed, Side};

/// Queues feeding one link's writer. Stream data waits behind a bounded queue (this is
/// where relays apply backpressure); advertisements wait in the link's [`AdvertLane`]
/// (one per origin); everything else takes the priority queue.
#[derive(Clone)]
pub(crate) struct LinkTx {
    pub(crate) peer: NodeId,
    pub(crate) ctrl: mpsc::Sender<Bytes>,
    /// (frame up to its payload, payload): stream data is never copied into a new frame.
    pub(crate) data: mpsc::Sender<(Bytes, Bytes)>,
    pub(crate) adverts: Arc<AdvertLane>,
    /// Closes the link.
    pub(crate) stop: CancellationToken,
    /// How long stream data may wait for room in `data` before the link counts as stalled.
    pub(crate) stall: Duration,
    /// The peer may relay other nodes' frames (it did not announce itself as a leaf).
    pub(crate) relay: bool,
}

impl std::fmt::Debug for LinkTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTx").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// Why a frame was not queued on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The link is closed or closing.
    Closed,
    /// The peer stopped reading: the link has been closed.
    Stalled,
}

impl LinkTx {
    /// Whether the peer is a relay, i.e. may forward frames that other nodes originated.
    /// A leaf (a short-lived client) may only originate frames as itself.
    pub(crate) fn is_relay(&self) -> bool {
        self.relay
    }

    /// Queues `frame`. Never waits on a link that is not draining: a full priority queue,
    /// or a data queue full for `stall`, closes this link (its peer is not reading; a
    /// configured peer is redialed), so no reader anywhere can hang behind it.
    pub(crate) async fn send(&self, frame: &Frame) -> Result<(), SendError> {
        // Data and Fin share one queue so a stream's end never overtakes its bytes. A closed
        // queue means the link just died; stream offsets expose any loss.
        match frame {
            Frame::Routed(r @ Routed { body: Body::Data { .. } | Body::Fin { .. }, .. }) => {
                let item = match self.data.try_send(r.encode_split()) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(SendError::Closed),
                    Err(mpsc::error::TrySendError::Full(item)) => item,
                };
                tokio::select! {
                    r = self.data.send_timeout(item, self.stall) => match r {
                        Ok(()) => Ok(()),
                        Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(SendError::Closed),
                        Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(self.stalled("its data queue stayed full")),
                    },
                    _ = self.stop.cancelled() => Err(SendError::Closed),
                }
            }
            other => self.send_ctrl(other.encode()),
        }
    }

    /// Queues an encoded control frame without waiting.
    pub(crate) fn send_ctrl(&self, frame: Bytes) -> Result<(), SendError> {
        match self.ctrl.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.stalled("its control queue overflowed")),
        }
    }

    fn stalled(&self, why: &str) -> SendError {
        if !self.stop.is_cancelled() {
            static STALLED: Throttle = Throttle::new(Duration::from_secs(10), 5);
            if let Some(suppressed) = STALLED.allow() {
                tracing::warn!(peer = %self.peer, suppressed, "closing link: the peer is not reading ({why})");
            }
            crate::metrics::global().link_stalled();
            self.stop.cancel();
        }
        SendError::Stalled
    }
}

/// A stream opened towards this node for a registered service.
pub struct Incoming {
    /// Who opened the stream: proved by its node certificate on a protected stream,
    /// the frame's source in a trusted (plain-TCP, or unprotected) mesh.
    pub peer: crate::identity::Peer,
    pub header: Bytes,
    pub writer: StreamWriter,
    pub reader: StreamReader,
}

pub(crate) struct Router {
    pub(crate) me: NodeId,
    table: RwLock<Arc<HashMap<NodeId, LinkTx>>>,
    /// Next hops for frames this node relays (source elsewhere), when some neighbour
    /// marked this node as not a relay: those must not be handed to that neighbour.
    transit: RwLock<Option<Arc<HashMap<NodeId, LinkTx>>>>,
    /// A leaf's route for every node not in `table`: its cheapest hub.
    default: RwLock<Option<LinkTx>>,
    pub(crate) streams: StreamTable,
    services: Mutex<HashMap<String, mpsc::Sender<Incoming>>>,
    /// Pings awaiting an answer: the node that answered, and whether it was the target.
    pings: Mutex<HashMap<u64, oneshot::Sender<(NodeId, bool)>>>,
    pub(crate) window: u32,
    pub(crate) max_hops: u8,
    streams_per_peer: usize,
    tracker: TaskTracker,
    this: Weak<Router>,
    /// Reverse paths: the link a node's traffic last arrived on, for nodes the link-state
    /// table does not know yet (a client that just joined). Replies can then flow before
    /// its advertisement has reached every node.
    learned: Mutex<HashMap<NodeId, (LinkTx, Instant)>>,
    /// Error answers (`limits.error_reply_rate`): forged frames must not make this node
    /// flood the node they name as their source.
    error_replies: Mutex<super::budget::TokenBucket>,
    /// End-to-end stream protection, when the node has TLS material (set once at start).
    pub(crate) e2e: std::sync::OnceLock<super::e2e::E2e>,
    /// When routes changed (a stream's gap: tampering or a reroute?).
    pub(crate) reroutes: super::reroute::RouteChanges,
}

/// How long a learned reverse path is trusted without fresh traffic.
const LEARNED_TTL: Duration = Duration::from_secs(30);
/// Most reverse paths remembered at once (a peer inventing sources cannot grow it).
const LEARNED_MAX: usize = 4096;

impl Router {
    pub(crate) fn new(
        me: NodeId,
        window: u32,
        max_hops: u8,
        limits: &crate::limits::Limits,
        tracker: TaskTracker,
    ) -> Arc<Router> {
        Arc::new_cyclic(|this| Router {
            me,
            table: RwLock::new(Arc::new(HashMap::new())),
            transit: RwLock::new(None),
            default: RwLock::new(None),
            streams: StreamTable::default(),
            services: Mutex::new(HashMap::new()),
            pings: Mutex::new(HashMap::new()),
            window,
            max_hops,
            streams_per_peer: limits.streams_per_peer,
            tracker,
            this: this.clone(),
            learned: Mutex::new(HashMap::new()),
            e2e: std::sync::OnceLock::new(),
            reroutes: Default::default(),
            error_replies: Mutex::new(super::budget::TokenBucket::new(
                limits.error_reply_rate,
                limits.error_reply_rate,
                limits.error_reply_rate,
                Instant::now(),
            )),
        })
    }

    /// Installs a new routing table. `known` says which nodes the link-state database
    /// knows: their learned reverse paths are dropped, so a node that leaves or becomes
    /// unreachable is not kept alive by one.
    /// `default` is a leaf's next hop for every node not in `table`; `transit`, when
    /// set, replaces `table` for frames from other nodes.
    pub(crate) fn publish(
        &self,
        table: HashMap<NodeId, LinkTx>,
        transit: Option<HashMap<NodeId, LinkTx>>,
        default: Option<LinkTx>,
        known: impl Fn(&NodeId) -> bool,
    ) {
        if let Ok(mut learned) = self.learned.lock() {
            let now = Instant::now();
            learned.retain(|node, (_, at)| !known(node) && now.duration_since(*at) < LEARNED_TTL);
        }
        if let Ok(mut t) = self.table.write() {
            *t = Arc::new(table);
        }
        if let Ok(mut t) = self.transit.write() {
            *t = transit.map(Arc::new);
        }
        if let Ok(mut d) = self.default.write() {
            *d = default;
        }
    }

    /// Remembers that `src` is reachable through the link its frame arrived on.
    fn learn(&self, src: &NodeId, via: &LinkTx) {
        if *src == self.me || self.table.read().is_ok_and(|t| t.contains_key(src)) {
            return;
        }
        if let Ok(mut learned) = self.learned.lock() {
            if learned.len() >= LEARNED_MAX && !learned.contains_key(src) {
                let now = Instant::now();
                learned.retain(|_, (_, at)| now.duration_since(*at) < LEARNED_TTL);
                if learned.len() >= LEARNED_MAX {
                    return;
                }
            }
            learned.insert(src.clone(), (via.clone(), Instant::now()));
        }
    }

    /// Handles a frame that arrived on a link.
    pub(crate) async fn route_from(&self, routed: Routed, via: &LinkTx) {
        if !origin_allowed(&routed, via, &self.me) {
            return;
        }
        self.learn(&routed.src, via);
        if routed.dst == self.me {
            if let Body::Open { .. } = &routed.body {
                // Stream admission needs the link the `Open` came on (it is logged when the
                // opener fails to authenticate).
                let Routed { src, body: Body::Open { stream, service, window, header }, .. } = routed else {
                    return;
                };
                self.accept(src, stream, service.as_str(), window, header, Some(via.peer.clone())).await;
                return;
            }
        }
        self.route(routed).await;
    }

    pub(crate) fn reachable(&self, dst: &NodeId) -> bool {
        *dst == self.me || self.next(dst).is_some()
    }

    fn next(&self, dst: &NodeId) -> Option<LinkTx> {
        self.next_for(dst, false)
    }

    /// The next hop to `dst`; `relayed`: for a frame from another node.
    fn next_for(&self, dst: &NodeId, relayed: bool) -> Option<LinkTx> {
        let transit = if relayed { self.transit.read().ok().and_then(|t| t.clone()) } else { None };
        if let Some(transit) = transit {
            if let Some(tx) = transit.get(dst) {
                return Some(tx.clone());
            }
            // Known, but only over a neighbour that takes no relayed frames from here.
            if self.table.read().is_ok_and(|t| t.contains_key(dst)) {
                return None;
            }
        } else if let Some(tx) = self.table.read().ok().and_then(|t| t.get(dst).cloned()) {
            return Some(tx);
        }
        let learned = self.learned.lock().ok().and_then(|learned| {
            let (tx, at) = learned.get(dst)?;
            (at.elapsed() < LEARNED_TTL && !tx.ctrl.is_closed()).then(|| tx.clone())
        });
        learned.or_else(|| self.default.read().ok().and_then(|d| d.clone()))
    }

    pub(crate) fn register_service(&self, name: &str, tx: mpsc::Sender<Incoming>) {
        if let Ok(mut s) = self.services.lock() {
            s.insert(name.to_owned(), tx);
        }
    }

    pub(crate) fn expect_pong(&self, id: u64) -> oneshot::Receiver<(NodeId, bool)> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pings.lock() {
            p.insert(id, tx);
        }
        rx
    }

    pub(crate) fn forget_ping(&self, id: u64) {
        if let Ok(mut p) = self.pings.lock() {
            p.remove(&id);
        }
    }

    /// Sends a body we originate to `dst`.
    pub(crate) async fn originate(&self, dst: &NodeId, body: Body) {
        self.originate_hops(dst, body, self.max_hops).await;
    }

    /// Sends a body we originate with a given hop budget (0: the next hop is the last).
    pub(crate) async fn originate_hops(&self, dst: &NodeId, body: Body, hops_left: u8) {
        let routed = Routed { src: self.me.clone(), dst: dst.clone(), hops_left, body };
        self.route(routed).await;
    }

    /// Sends from a synchronous context (drop handlers) without waiting.
    pub(crate) fn send_detached(self: &Arc<Self>, dst: NodeId, body: Body) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let router = self.clone();
        self.tracker.spawn(async move { router.originate(&dst, body).await });
    }

    /// Forwards `routed` towards its destination or handles it here.
    pub(crate) async fn route(&self, mut routed: Routed) {
        if routed.dst == self.me {
            self.local_boxed(routed).await;
            return;
        }
        if routed.hops_left == 0 && routed.src != self.me {
            if let Body::Ping { id } = routed.body {
                Box::pin(self.originate(&routed.src, Body::Expired { id })).await;
                return;
            }
        }
        let fail = match (routed.hops_left, self.next_for(&routed.dst, routed.src != self.me)) {
            (0, _) if routed.src != self.me => {
                format!("hop limit exceeded at {} on the way to {}", self.me, routed.dst)
            }
            (_, None) => format!("no route to node {} from {}", routed.dst, self.me),
            (_, Some(link)) => {
                if routed.src != self.me {
                    routed.hops_left -= 1;
                }
                let _ = link.send(&Frame::Routed(routed)).await;
                return;
            }
        };
        Box::pin(self.unreachable(routed, fail)).await;
    }

    /// Tells the source that `routed` could not be delivered.
    async fn unreachable(&self, routed: Routed, reason: String) {
        if matches!(routed.body, Body::Unreachable { .. }) {
            return;
        }
        let stream = routed.body.stream();
        if routed.src == self.me {
            if let Some((id, from)) = stream {
                self.streams.reset_one(&StreamKey { peer: routed.dst.clone(), id, local: from }, &reason);
            }
            return;
        }
        if self.error_reply_allowed() {
            self.originate(&routed.src, Body::Unreachable { stream, reason: Reason::new(reason) }).await;
        }
    }

    /// Takes one error answer from the budget; false (and counted) when it is spent.
    fn error_reply_allowed(&self) -> bool {
        let ok = self.error_replies.lock().is_ok_and(|mut b| b.take(1, Instant::now()));
        if !ok {
            crate::metrics::global().routed_dropped("error_reply_budget");
        }
        ok
    }

    /// [`Router::local`] behind a `dyn` future: local delivery can loop back into routing
    /// (answers, stream admission), and the erased type ends that cycle for the compiler.
    fn local_boxed(&self, routed: Routed) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.local(routed))
    }

    async fn local(&self, routed: Routed) {
        let Routed { src, body, .. } = routed;
        match body {
            Body::Ping { id } => self.originate(&src, Body::Pong { id }).await,
            Body::Pong { id } | Body::Expired { id } => {
                let reached = matches!(body, Body::Pong { .. });
                let waiter = self.pings.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(tx) = waiter {
                    let _ = tx.send((src, reached));
                }
            }
            Body::Unreachable { stream: Some((id, from)), reason } => {
                self.streams.reset_one(&StreamKey { peer: src, id, local: from }, &reason);
            }
            Body::Unreachable { stream: None, .. } => {}
            Body::Open { stream, service, window, header } => {
                self.accept(src, stream, service.as_str(), window, header, None).await;
            }
            other => {
                if let Some(reset) = self.streams.deliver(&src, other) {
                    if self.error_reply_allowed() {
                        self.originate(&src, reset).await;
                    }
                }
            }
        }
    }

    async fn accept(
        &self,
        src: NodeId,
        id: u64,
        service: &str,
        window: u32,
        header: Bytes,
        via: Option<NodeId>,
    ) {
        let key = StreamKey { peer: src.clone(), id, local: Side::Acceptor };
        let handler = self.services.lock().ok().and_then(|s| s.get(service).cloned());
        let hello = header.strip_prefix(super::e2e::MARKER).map(|h| header.slice_ref(h));
        let e2e = self.e2e.get();
        let refusal = match handler {
            None => Some(format!("node {} offers no service {service:?}", self.me)),
            Some(_) if self.streams.open_with(&src) >= self.streams_per_peer => {
                crate::metrics::global().stream_refused();
                Some(format!("node {} has limits.streams_per_peer streams open with {src}", self.me))
            }
            Some(_) if hello.is_some() && e2e.is_none() => {
                Some(format!("node {} has no TLS material for end-to-end protected streams", self.me))
            }
            // From this node itself (a local client of its own services) nothing crosses
            // the network: links never bring frames naming this node as their source.
            Some(_) if hello.is_none() && e2e.is_some_and(|e| e.required) && src != self.me => {
                self.refused_plain(&src, id, service, via.as_ref());
                Some(format!(
                    "node {} accepts only end-to-end protected streams (tls.e2e_streams); \
                     the opener needs a node certificate",
                    self.me
                ))
            }
            Some(_) => None,
        };
        let (Some(handler), None) = (handler, refusal.clone()) else {
            if self.error_reply_allowed() {
                let reason = refusal.unwrap_or_default().into();
                self.originate(&src, Body::Reset { stream: id, from: Side::Acceptor, reason }).await;
            }
            return;
        };
        if let Some(hello) = hello {
            self.accept_protected(key, service, window, hello, handler, via).await;
            return;
        }
        let (writer, reader) = self.endpoints(key, window);
        let peer = crate::identity::Peer::trusted_network(src.clone());
        if deliver(handler, Incoming { peer, header, writer, reader }, &self.me, service).await {
            self.originate(&src, Body::Credit { stream: id, from: Side::Acceptor, n: self.window }).await;
        }
    }

    /// Logs an unprotected `Open` refused by a node that requires protection (throttled).
    fn refused_plain(&self, src: &NodeId, id: u64, service: &str, via: Option<&NodeId>) {
        crate::metrics::global().stream_auth_failed("acceptor");
        static PLAIN: Throttle = Throttle::new(Duration::from_secs(10), 5);
        if let Some(suppressed) = PLAIN.allow() {
            tracing::warn!(src = %src, stream = id, service, link = ?via.map(NodeId::as_str), suppressed,
                "refused an unprotected stream: this node requires end-to-end protection");
        }
    }

    /// Admits a protected stream: grants the opener credit for its handshake flights and
    /// runs the acceptor's handshake in a task of its own (off the link reader), within
    /// `limits.stream_handshakes` and `limits.stream_handshake_timeout`. Only an opener
    /// that proves `src` with its certificate reaches the service, as `Peer::certified`.
    async fn accept_protected(
        &self,
        key: StreamKey,
        service: &str,
        window: u32,
        hello: Bytes,
        handler: mpsc::Sender<Incoming>,
        via: Option<NodeId>,
    ) {
        let Some(e2e) = self.e2e.get().cloned() else { return };
        let (src, id) = (key.peer.clone(), key.id);
        let Ok(permit) = e2e.slots.clone().try_acquire_owned() else {
            crate::metrics::global().stream_refused();
            let reason = format!("node {} has limits.stream_handshakes handshakes in progress", self.me);
            self.originate(&src, Body::Reset { stream: id, from: Side::Acceptor, reason: reason.into() })
                .await;
            return;
        };
        let (mut writer, mut reader) = self.endpoints(key, window);
        let (me, service) = (self.me.clone(), service.to_owned());
        let (router, n) = (self.self_arc(), self.window);
        self.tracker.spawn(async move {
            let _permit = permit;
            let binding = super::e2e::Binding { id, opener: &src, acceptor: &me };
            // The opener's credit goes out with the acceptor's first flight (one link write
            // and one crossing of each relay, not two).
            let grant = router.originate(&src, Body::Credit { stream: id, from: Side::Acceptor, n });
            let shake = e2e.accept(&hello, binding, grant, &mut writer, &mut reader);
            let result = match tokio::time::timeout(e2e.timeout, shake).await {
                Ok(r) => r,
                Err(_) => Err(super::e2e::HandshakeError::Timeout(e2e.timeout)),
            };
            match result {
                Ok(header) => {
                    let peer = crate::identity::Peer::certified(src);
                    deliver(handler, Incoming { peer, header, writer, reader }, &me, &service).await;
                }
                Err(e) => {
                    crate::metrics::global().stream_auth_failed("acceptor");
                    static FAILED: Throttle = Throttle::new(Duration::from_secs(10), 5);
                    if let Some(suppressed) = FAILED.allow() {
                        tracing::warn!(src = %src, stream = id, service, link = ?via.as_ref().map(NodeId::as_str),
                            suppressed, "refused a stream: the opener did not authenticate as its source: {e}");
                    }
                    writer.reset(&format!("node {me} refused the stream: {e}")).await;
                }
            }
        });
    }

    /// Registers both halves of a local stream end.
    pub(crate) fn endpoints(&self, key: StreamKey, send_credit: u32) -> (StreamWriter, StreamReader) {
        let (rx, credit) = self.streams.register(key.clone(), self.window, send_credit);
        let router = self.self_arc();
        let writer = StreamWriter {
            key: key.clone(),
            router: router.clone(),
            credit,
            offset: 0,
            done: false,
            seal: None,
        };
        let reader =
            StreamReader { key, router, rx, window: self.window, unacked: 0, ended: false, unseal: None };
        (writer, reader)
    }

    fn self_arc(&self) -> Arc<Router> {
        self.this.upgrade().expect("UNWRAP: a Router is only reachable through its Arc")
    }
}

/// Hands an accepted stream to its service; false (and the stream reset) when the
/// service's backlog is full.
async fn deliver(handler: mpsc::Sender<Incoming>, incoming: Incoming, me: &NodeId, service: &str) -> bool {
    let Err(err) = handler.try_send(incoming) else { return true };
    let reason = format!("node {me} is too busy to accept a {service} stream");
    let incoming = match err {
        mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => i,
    };
    incoming.writer.reset(&reason).await;
    false
}

/// The frame origin rules: a link whose peer is not a relay (a leaf, e.g. a short-lived
/// client) may only originate frames as itself, and no link may bring a frame that names
/// this node as its source (only frames it originates locally do). Others are dropped,
/// counted and logged with the link (throttled). Plain-TCP and TLS meshes alike.
fn origin_allowed(routed: &Routed, via: &LinkTx, me: &NodeId) -> bool {
    let own = routed.src == *me;
    if !own && (via.is_relay() || routed.src == via.peer) {
        return true;
    }
    crate::metrics::global().routed_dropped(if own { "own_src" } else { "foreign_src" });
    static FORGED: Throttle = Throttle::new(Duration::from_secs(10), 5);
    if let Some(suppressed) = FORGED.allow() {
        tracing::warn!(link = %via.peer, src = %routed.src, dst = %routed.dst, suppressed, "dropped a frame from a leaf link that names another node as its source");
    }
    false
}
