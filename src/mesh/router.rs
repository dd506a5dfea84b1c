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
    pub peer: NodeId,
    pub header: Bytes,
    pub writer: StreamWriter,
    pub reader: StreamReader,
}

pub(crate) struct Router {
    pub(crate) me: NodeId,
    table: RwLock<Arc<HashMap<NodeId, LinkTx>>>,
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
        })
    }

    /// Installs a new routing table. `known` says which nodes the link-state database
    /// knows: their learned reverse paths are dropped, so a node that leaves or becomes
    /// unreachable is not kept alive by one.
    /// `default` is a leaf's next hop for every node not in `table`.
    pub(crate) fn publish(
        &self,
        table: HashMap<NodeId, LinkTx>,
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
        self.learn(&routed.src, via);
        self.route(routed).await;
    }

    pub(crate) fn reachable(&self, dst: &NodeId) -> bool {
        *dst == self.me || self.next(dst).is_some()
    }

    fn next(&self, dst: &NodeId) -> Option<LinkTx> {
        if let Some(tx) = self.table.read().ok().and_then(|t| t.get(dst).cloned()) {
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
            Box::pin(self.local(routed)).await;
            return;
        }
        if routed.hops_left == 0 && routed.src != self.me {
            if let Body::Ping { id } = routed.body {
                Box::pin(self.originate(&routed.src, Body::Expired { id })).await;
                return;
            }
        }
        let fail = match (routed.hops_left, self.next(&routed.dst)) {
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
        self.originate(&routed.src, Body::Unreachable { stream, reason: Reason::new(reason) }).await;
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
                self.accept(src, stream, service.as_str(), window, header).await;
            }
            other => {
                if let Some(reset) = self.streams.deliver(&src, other) {
                    self.originate(&src, reset).await;
                }
            }
        }
    }

    async fn accept(&self, src: NodeId, id: u64, service: &str, window: u32, header: Bytes) {
        let key = StreamKey { peer: src.clone(), id, local: Side::Acceptor };
        let handler = self.services.lock().ok().and_then(|s| s.get(service).cloned());
        let refusal = match handler {
            None => Some(format!("node {} offers no service {service:?}", self.me)),
            Some(_) if self.streams.open_with(&src) >= self.streams_per_peer => {
                crate::metrics::global().stream_refused();
                Some(format!("node {} has limits.streams_per_peer streams open with {src}", self.me))
            }
            Some(_) => None,
        };
        let (Some(handler), None) = (handler, refusal.clone()) else {
            let reason = refusal.unwrap_or_default().into();
            self.originate(&src, Body::Reset { stream: id, from: Side::Acceptor, reason }).await;
            return;
        };
        let (writer, reader) = self.endpoints(key, window);
        let incoming = Incoming { peer: src.clone(), header, writer, reader };
        if let Err(err) = handler.try_send(incoming) {
            let reason = format!("node {} is too busy to accept a {service} stream", self.me);
            let incoming = match err {
                mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => i,
            };
            incoming.writer.reset(&reason).await;
            return;
        }
        self.originate(&src, Body::Credit { stream: id, from: Side::Acceptor, n: self.window }).await;
    }

    /// Registers both halves of a local stream end.
    pub(crate) fn endpoints(&self, key: StreamKey, send_credit: u32) -> (StreamWriter, StreamReader) {
        let (rx, credit) = self.streams.register(key.clone(), self.window, send_credit);
        let router = self.self_arc();
        let writer =
            StreamWriter { key: key.clone(), router: router.clone(), credit, offset: 0, done: false };
        let reader = StreamReader { key, router, rx, window: self.window, unacked: 0, ended: false };
        (writer, reader)
    }

    fn self_arc(&self) -> Arc<Router> {
        self.this.upgrade().expect("UNWRAP: a Router is only reachable through its Arc")
    }
}
