//! The thin tokio task that drives the [`Mesh`] state machine: it feeds it link events and
//! clock ticks, and carries out the actions it returns.
//!
//! It has no periodic timer: it sleeps until the state machine's next deadline (a refresh
//! every `route_refresh`, an aging scan, forgetting an unreachable node), so an idle node
//! costs nothing here.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lane::LaneKey;
use super::router::{LinkTx, Router};
use super::state::{Action, Admission, LinkId, Mesh};
use crate::wire::{Frame, Hello, Lsa, NodeId, WorkTypeAd};

/// Events handled before routes are recomputed and actions carried out, at most: a burst
/// of advertisements costs one shortest-path run, while the driver still yields often.
const EVENT_BATCH: usize = 256;
/// The shortest sleep between two ticks (a deadline in the past never spins the loop).
const MIN_TICK: Duration = Duration::from_millis(50);

/// Everything that reaches the driver.
pub(crate) enum Event {
    Admit {
        link: LinkId,
        hello: Hello,
        cost: f64,
        dialed_by_me: bool,
        /// What the link showed: the peer is not a relay (`mesh::relay::not_relay`).
        not_relay: bool,
        reply: oneshot::Sender<Admission>,
    },
    Up {
        link: LinkId,
        tx: LinkTx,
        peer: Hello,
        stop: CancellationToken,
    },
    Down {
        link: LinkId,
    },
    /// `held`: the advertisement's share of `link::ADVERTS_IN_FLIGHT`, given back once
    /// it is handled.
    Lsa {
        link: LinkId,
        lsa: Lsa,
        held: tokio::sync::OwnedSemaphorePermit,
    },
    SyncDone {
        link: LinkId,
    },
    SetWorkTypes(Vec<WorkTypeAd>),
    Status(oneshot::Sender<MeshStatus>),
    Leave(oneshot::Sender<()>),
}

/// What `receptor status` shows: this node's view of the mesh.
#[derive(Debug, Clone)]
pub struct MeshStatus {
    pub node_id: NodeId,
    pub nodes: Vec<Lsa>,
    pub routes: Vec<RouteInfo>,
}

#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub dst: NodeId,
    pub next_hop: NodeId,
    pub cost: f64,
    pub hops: u8,
}

/// Link-level facts that waiters (dialers, clients) watch for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// Peers with an up link.
    pub linked: BTreeSet<NodeId>,
    /// Peers that finished sending us their database.
    pub synced: BTreeSet<NodeId>,
    /// Nodes with a route from here.
    pub reachable: BTreeSet<NodeId>,
    /// Linked peers that are leaves (`[mesh] role = "leaf"`): they relay nothing.
    pub leaves: BTreeSet<NodeId>,
}

impl Topology {
    /// Why `node` cannot be reached from here: the nodes that can, and, when every link
    /// of this node leads to a leaf, those leaves (a client must join through a hub).
    pub fn unknown(&self, node: &NodeId) -> super::OpenError {
        let only_leaves = !self.linked.is_empty() && self.linked.is_subset(&self.leaves);
        super::OpenError::UnknownNode {
            node: node.clone(),
            known: self.reachable.iter().cloned().collect(),
            only_leaves: if only_leaves { self.linked.iter().cloned().collect() } else { Vec::new() },
        }
    }
}

struct LinkHandle {
    tx: LinkTx,
    stop: CancellationToken,
    peer: NodeId,
}

pub(crate) struct Driver {
    pub(crate) mesh: Mesh,
    pub(crate) router: Arc<Router>,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) topology: watch::Sender<Topology>,
    pub(crate) fatal: watch::Sender<Option<String>>,
    pub(crate) cancel: CancellationToken,
    links: HashMap<LinkId, LinkHandle>,
    /// The last advertisement encoded (a flood sends the same one to every link).
    encoded: Option<(NodeId, u64, u64, bool, bytes::Bytes)>,
    /// The most the database held since memory was last given back ([`Self::trim`]).
    db_peak: usize,
    last_trim: Option<Instant>,
}

/// The database must have let go of this much since its peak before freed memory is
/// handed back to the system, and no more often than [`TRIM_EVERY`].
const TRIM_STEP: usize = 4 << 20;
const TRIM_EVERY: Duration = Duration::from_secs(5);

impl Driver {
    pub(crate) fn new(
        mesh: Mesh,
        router: Arc<Router>,
        events: mpsc::Receiver<Event>,
        topology: watch::Sender<Topology>,
        fatal: watch::Sender<Option<String>>,
        cancel: CancellationToken,
    ) -> Driver {
        Driver {
            mesh,
            router,
            events,
            topology,
            fatal,
            cancel,
            links: HashMap::new(),
            encoded: None,
            db_peak: 0,
            last_trim: None,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let deadline = self.mesh.next_deadline().max(Instant::now() + MIN_TICK);
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                ev = self.events.recv() => match ev {
                    Some(ev) => {
                        self.handle(ev);
                        for _ in 1..EVENT_BATCH {
                            match self.events.try_recv() {
                                Ok(ev) => self.handle(ev),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => self.mesh.tick(Instant::now()),
            }
            self.apply();
            self.trim();
        }
        for (_, link) in self.links.drain() {
            link.stop.cancel();
        }
    }

    /// After a flood of advertisements the nodes they named are forgotten, but glibc keeps
    /// the freed memory: once the database has shrunk by [`TRIM_STEP`] from its peak, it
    /// is handed back (on a blocking thread: the call walks every arena).
    fn trim(&mut self) {
        let now = self.mesh.db_bytes();
        if now >= self.db_peak {
            self.db_peak = now;
            return;
        }
        let due = self.last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY);
        if self.db_peak - now >= TRIM_STEP && due {
            self.db_peak = now;
            self.last_trim = Some(Instant::now());
            tokio::task::spawn_blocking(crate::alloc::release_free_memory);
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Admit { link, hello, cost, dialed_by_me, not_relay, reply } => {
                let verdict = self.mesh.admit(link, &hello, cost, dialed_by_me, not_relay);
                if let Admission::Reject(reason) = &verdict {
                    tracing::warn!(peer = %hello.node_id, %reason, "refusing link");
                }
                let _ = reply.send(verdict);
            }
            Event::Up { link, tx, peer, stop } => {
                tracing::info!(peer = %peer.node_id, link, "link up");
                self.links.insert(link, LinkHandle { tx, stop, peer: peer.node_id.clone() });
                self.mesh.link_up(now, link);
                self.publish_topology();
            }
            Event::Down { link } => {
                if let Some(h) = self.links.remove(&link) {
                    tracing::info!(peer = %h.peer, link, "link down");
                    self.topology.send_modify(|t| {
                        t.synced.remove(&h.peer);
                    });
                    // Only an established link that could carry others' frames can have
                    // cut a stream short (not a refused handshake, not a client's link).
                    if !self.mesh.link_not_relay(link) {
                        self.router.reroutes.link_down();
                    }
                }
                self.mesh.link_down(now, link);
                self.publish_topology();
            }
            Event::Lsa { link, lsa, held } => {
                self.mesh.on_lsa(now, link, lsa);
                drop(held);
            }
            Event::SyncDone { link } => {
                // Whoever waits for the sync expects routes to everything it carried.
                self.apply();
                if let Some(peer) = self.mesh.link_peer(link).cloned() {
                    self.topology.send_modify(|t| {
                        t.synced.insert(peer);
                    });
                }
            }
            Event::SetWorkTypes(wts) => self.mesh.set_work_types(now, wts),
            Event::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Event::Leave(reply) => {
                self.mesh.leave();
                self.apply();
                let _ = reply.send(());
            }
        }
    }

    fn apply(&mut self) {
        let actions = self.mesh.drain_actions();
        for action in actions {
            match action {
                Action::Send { link, frame } => self.send(link, &frame),
                Action::Close { link, reason } => self.close(link, reason),
                Action::RoutesChanged => self.routes_changed(),
                Action::DuplicateSelf { other_epoch } => {
                    let msg = format!(
                        "duplicate node id: an older live node (epoch {other_epoch}) already uses id {}; \
                         this node stops",
                        self.mesh.me()
                    );
                    tracing::error!("{msg}");
                    let _ = self.fatal.send(Some(msg));
                }
            }
        }
    }

    fn send(&mut self, link: LinkId, frame: &Frame) {
        let Some(h) = self.links.get(&link) else { return };
        match frame {
            Frame::Lsa(lsa) => {
                crate::metrics::global().advert_out();
                let bytes = encoded(&mut self.encoded, lsa);
                h.tx.adverts.push(LaneKey::Origin(lsa.origin.clone()), bytes);
            }
            Frame::SyncDone => h.tx.adverts.push(LaneKey::SyncDone, frame.encode()),
            // A full queue closes the link itself (the peer is not reading).
            other => {
                let _ = h.tx.send_ctrl(other.encode());
            }
        }
    }

    fn close(&mut self, link: LinkId, reason: String) {
        let Some(h) = self.links.get(&link) else { return };
        tracing::warn!(peer = %h.peer, link, %reason, "closing link");
        let _ = h.tx.ctrl.try_send(Frame::Goodbye { reason: reason.into() }.encode());
        h.stop.cancel();
    }

    fn routes_changed(&mut self) {
        let txs = |routes: &HashMap<NodeId, crate::mesh::routing::Route>| -> HashMap<NodeId, LinkTx> {
            routes
                .iter()
                .filter_map(|(dst, r)| self.links.get(&r.link).map(|h| (dst.clone(), h.tx.clone())))
                .collect()
        };
        let table = txs(self.mesh.routes());
        let transit = self.mesh.transit_routes().map(txs);
        let default =
            self.mesh.default_route().and_then(|(link, _)| self.links.get(link)).map(|h| h.tx.clone());
        let mesh = &self.mesh;
        self.router.reroutes.published(mesh.routes(), mesh.default_route().map(|(link, _)| *link));
        self.router.publish(table, transit, default, |n| mesh.knows(n));
        let router = self.router.clone();
        let me = self.mesh.me().clone();
        self.router.streams.reset_where(
            |peer| *peer != me && !router.reachable(peer),
            |peer| format!("lost the route to node {peer}"),
        );
        self.publish_topology();
    }

    fn publish_topology(&self) {
        let linked: BTreeSet<NodeId> = self.links.values().map(|h| h.peer.clone()).collect();
        let leaves: BTreeSet<NodeId> = self.mesh.leaf_peers().cloned().collect();
        let reachable: BTreeSet<NodeId> = self.mesh.routes().keys().cloned().collect();
        self.topology.send_if_modified(|t| {
            let changed = t.linked != linked || t.reachable != reachable || t.leaves != leaves;
            t.linked = linked;
            t.leaves = leaves;
            t.reachable = reachable;
            t.synced.retain(|p| t.linked.contains(p));
            changed
        });
    }

    fn status(&self) -> MeshStatus {
        let mut routes: Vec<RouteInfo> = self
            .mesh
            .routes()
            .iter()
            .map(|(dst, r)| RouteInfo {
                dst: dst.clone(),
                next_hop: r.next_hop.clone(),
                cost: r.cost,
                hops: r.hops,
            })
            .collect();
        routes.sort_by(|a, b| a.dst.cmp(&b.dst));
        MeshStatus { node_id: self.mesh.me().clone(), nodes: self.mesh.known(), routes }
    }
}

/// The frame of `lsa`, reusing the last encoding when it is the same advertisement.
fn encoded(cache: &mut Option<(NodeId, u64, u64, bool, bytes::Bytes)>, lsa: &Lsa) -> bytes::Bytes {
    if let Some((origin, epoch, seq, leaving, bytes)) = cache {
        if *origin == lsa.origin && *epoch == lsa.epoch && *seq == lsa.seq && *leaving == lsa.leaving {
            return bytes.clone();
        }
    }
    let bytes = Frame::Lsa(lsa.clone()).encode();
    *cache = Some((lsa.origin.clone(), lsa.epoch, lsa.seq, lsa.leaving, bytes.clone()));
    bytes
}
