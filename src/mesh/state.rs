//! The mesh's membership and link-state routing as a pure state machine.
//!
//! It is fed events with the current time (`admit`, `link_up`, `link_down`, `on_lsa`,
//! `tick`) and answers with [`Action`]s for the driver to carry out. It does no I/O and
//! reads no clock, so whole meshes can be simulated deterministically in tests.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::origin::LsaSigner;
use super::routing::{self, Route};
use crate::wire::{Frame, Hello, Lsa, NodeId, WorkTypeAd};

mod check;

/// Identifies one connection of this node, for the lifetime of the process.
pub type LinkId = u64;

/// Timers and limits of the routing protocol.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// How often a node re-floods its own advertisement.
    pub refresh: Duration,
    /// How long a silent node's advertisement is kept before it is forgotten.
    pub node_timeout: Duration,
    /// Routes longer than this many hops are not used.
    pub max_hops: u8,
    /// Most nodes the database holds (`limits.max_nodes`).
    pub max_nodes: usize,
    /// Most bytes of advertisements the database holds (`limits.max_db_bytes`).
    pub max_db_bytes: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        let limits = crate::limits::Limits::default();
        MeshConfig {
            refresh: Duration::from_secs(10),
            node_timeout: Duration::from_secs(40),
            max_hops: crate::wire::DEFAULT_HOPS,
            max_nodes: limits.max_nodes,
            max_db_bytes: limits.max_db_bytes,
        }
    }
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send {
        link: LinkId,
        frame: Frame,
    },
    Close {
        link: LinkId,
        reason: String,
    },
    /// The routing table changed; republish it.
    RoutesChanged,
    /// Another, older node holds this node's ID and is alive: this node must stop.
    DuplicateSelf {
        other_epoch: u64,
    },
}

/// The answer to a completed handshake.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Admit,
    Reject(String),
}

#[derive(Debug, Clone)]
struct LinkInfo {
    peer: NodeId,
    peer_epoch: u64,
    cost: f64,
    dialed_by_me: bool,
    up: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    lsa: Lsa,
    received: Instant,
}

/// Per-origin evidence used to tell a restart from a second live node with the same ID.
#[derive(Debug, Default)]
struct Claims {
    /// epoch → (highest seq seen, first time seen, time that highest seq was first seen)
    seen: BTreeMap<u64, (u64, Instant, Instant)>,
    banned: Vec<u64>,
}

/// One node's view of the mesh.
#[derive(Debug)]
pub struct Mesh {
    me: NodeId,
    epoch: u64,
    seq: u64,
    ephemeral: bool,
    cfg: MeshConfig,
    links: HashMap<LinkId, LinkInfo>,
    lsdb: HashMap<NodeId, Entry>,
    claims: HashMap<NodeId, Claims>,
    work_types: Vec<WorkTypeAd>,
    routes: HashMap<NodeId, Route>,
    last_refresh: Instant,
    warned_newer_self: bool,
    /// `leave` was called: never advertise this node as present again.
    left: bool,
    /// Encoded size of every advertisement in `lsdb`.
    db_bytes: usize,
    /// Advertisements refused because the database was full.
    refused_full: u64,
    /// Signs this node's own advertisements (TLS meshes); `None` sends them unsigned.
    signer: Option<std::sync::Arc<dyn LsaSigner>>,
    /// The database or links changed since routes were last computed.
    dirty: bool,
    actions: Vec<Action>,
}

impl Mesh {
    pub fn new(me: NodeId, epoch: u64, ephemeral: bool, cfg: MeshConfig, now: Instant) -> Mesh {
        Mesh {
            me,
            epoch,
            seq: 0,
            ephemeral,
            cfg,
            links: HashMap::new(),
            lsdb: HashMap::new(),
            claims: HashMap::new(),
            work_types: Vec::new(),
            routes: HashMap::new(),
            last_refresh: now,
            warned_newer_self: false,
            left: false,
            db_bytes: 0,
            refused_full: 0,
            signer: None,
            dirty: false,
            actions: Vec::new(),
        }
    }

    /// Signs every advertisement this node originates from now on.
    pub fn set_signer(&mut self, signer: std::sync::Arc<dyn LsaSigner>) {
        self.signer = Some(signer);
    }

    /// `lsa` as this node sends it: signed when it has a signer. The one place this
    /// node's advertisements get their signature.
    fn signed(&self, mut lsa: Lsa) -> Lsa {
        if let Some(signer) = &self.signer {
            signer.sign(&mut lsa);
        }
        lsa
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Takes the actions produced so far. Routes are recomputed here, once for however
    /// many events came before (a burst of advertisements costs one shortest-path run).
    pub fn drain_actions(&mut self) -> Vec<Action> {
        self.settle();
        std::mem::take(&mut self.actions)
    }

    /// Decides whether a handshaken connection may become a link.
    pub fn admit(&mut self, link: LinkId, hello: &Hello, cost: f64, dialed_by_me: bool) -> Admission {
        self.settle();
        let peer = &hello.node_id;
        if self.links.len() >= crate::wire::MAX_LSA_ITEMS && !self.links.values().any(|l| l.peer == *peer) {
            return Admission::Reject(format!(
                "node {} has {} links, the most one advertisement can list",
                self.me,
                crate::wire::MAX_LSA_ITEMS
            ));
        }
        if *peer == self.me {
            return Admission::Reject(format!(
                "duplicate node id: the peer announces {peer}, which is this node's own id"
            ));
        }
        if let Some(reason) = self.existing_link_conflict(peer, hello.epoch, dialed_by_me) {
            return Admission::Reject(reason);
        }
        if let Some(reason) = self.live_elsewhere(peer, hello.epoch) {
            return Admission::Reject(reason);
        }
        let info = LinkInfo {
            peer: peer.clone(),
            peer_epoch: hello.epoch,
            cost: cost.max(f64::MIN_POSITIVE),
            dialed_by_me,
            up: false,
        };
        self.links.insert(link, info);
        Admission::Admit
    }

    /// Returns a rejection reason when a link to `peer` already exists and should be kept.
    /// Closes the old link instead when the new one wins the tie-break.
    fn existing_link_conflict(&mut self, peer: &NodeId, epoch: u64, dialed_by_me: bool) -> Option<String> {
        let (old_id, old) = self.links.iter().find(|(_, l)| l.peer == *peer)?;
        let (old_id, old) = (*old_id, old.clone());
        if old.peer_epoch != epoch {
            return Some(format!(
                "node id {peer} is already in use by a node linked to {} (epoch {}); \
                 a restarted node is accepted once the old link times out",
                self.me, old.peer_epoch
            ));
        }
        // Both nodes keep the connection dialed by the node with the smaller ID, so
        // simultaneous dials converge on the same single link.
        let preferred_dialer_is_me = self.me < *peer;
        let new_preferred = dialed_by_me == preferred_dialer_is_me;
        let old_preferred = old.dialed_by_me == preferred_dialer_is_me;
        if old_preferred && !new_preferred {
            return Some(format!("duplicate link: already connected to {peer}"));
        }
        self.links.remove(&old_id);
        self.actions
            .push(Action::Close { link: old_id, reason: format!("replaced by a newer link to {peer}") });
        self.recompute();
        None
    }

    /// A reason to refuse `peer` when a different live incarnation of it is reachable.
    fn live_elsewhere(&self, peer: &NodeId, epoch: u64) -> Option<String> {
        let entry = self.lsdb.get(peer)?;
        if entry.lsa.leaving || entry.lsa.epoch == epoch || !self.routes.contains_key(peer) {
            return None;
        }
        Some(format!(
            "node id {peer} is already in use in the mesh (epoch {}, reachable); \
             refusing a second node with the same id",
            entry.lsa.epoch
        ))
    }

    /// Both ends admitted the link: advertise it and sync our database to the peer.
    pub fn link_up(&mut self, now: Instant, link: LinkId) {
        let Some(info) = self.links.get_mut(&link) else {
            // Admitted, then replaced by a preferred duplicate while its handshake was still
            // running (a Close is a no-op for the driver until the link is up): close it now,
            // or it would live on unused and keep the peer in the driver's `linked` set.
            self.actions
                .push(Action::Close { link, reason: "replaced by another link to the same peer".into() });
            return;
        };
        info.up = true;
        // Our fresh advertisement (listing the new peer) goes first, then the database,
        // then the marker: a client that saw SyncDone has a complete, current view.
        self.originate(now);
        let mut frames: Vec<Frame> = self.lsdb.values().map(|e| Frame::Lsa(e.lsa.clone())).collect();
        frames.push(Frame::SyncDone);
        for frame in frames {
            self.actions.push(Action::Send { link, frame });
        }
        self.recompute();
    }

    pub fn link_down(&mut self, now: Instant, link: LinkId) {
        if let Some(info) = self.links.remove(&link) {
            if info.up {
                self.originate(now);
                self.recompute();
            }
        }
    }

    /// The peer of an up link.
    pub fn link_peer(&self, link: LinkId) -> Option<&NodeId> {
        self.links.get(&link).filter(|l| l.up).map(|l| &l.peer)
    }

    pub fn set_work_types(&mut self, now: Instant, mut work_types: Vec<WorkTypeAd>) {
        work_types.sort();
        if work_types != self.work_types {
            self.work_types = work_types;
            self.originate(now);
        }
    }

    /// Floods a "leaving" advertisement so every node forgets this one at once.
    pub fn leave(&mut self) {
        self.left = true;
        self.seq += 1;
        let lsa = Lsa { leaving: true, neighbors: Vec::new(), work_types: Vec::new(), ..self.own_lsa() };
        let lsa = self.signed(lsa);
        self.flood(&Frame::Lsa(lsa), None);
    }

    /// Periodic work: refresh our advertisement and forget silent nodes.
    pub fn tick(&mut self, now: Instant) {
        if now.duration_since(self.last_refresh) >= self.cfg.refresh {
            self.originate(now);
        }
        let timeout = self.cfg.node_timeout;
        let before = self.lsdb.len();
        let mut freed = 0;
        self.lsdb.retain(|_, e| {
            let keep = now.duration_since(e.received) < timeout;
            if !keep {
                freed += e.lsa.encoded_len();
            }
            keep
        });
        self.db_bytes -= freed;
        self.claims.retain(|id, _| self.lsdb.contains_key(id));
        if self.lsdb.len() != before {
            self.recompute();
        }
    }

    fn own_lsa(&self) -> Lsa {
        let mut neighbors: Vec<(NodeId, f64)> =
            self.links.values().filter(|l| l.up).map(|l| (l.peer.clone(), l.cost)).collect();
        neighbors.sort_by(|a, b| a.0.cmp(&b.0));
        Lsa {
            origin: self.me.clone(),
            epoch: self.epoch,
            seq: self.seq,
            leaving: false,
            ephemeral: self.ephemeral,
            neighbors,
            work_types: self.work_types.clone(),
            sig: None,
        }
    }

    fn originate(&mut self, now: Instant) {
        if self.left {
            // A fresh advertisement (e.g. on a link going down during shutdown) would
            // supersede the "leaving" one and resurrect this node until node_timeout.
            return;
        }
        self.seq += 1;
        self.last_refresh = now;
        let frame = Frame::Lsa(self.signed(self.own_lsa()));
        self.flood(&frame, None);
    }

    fn flood(&mut self, frame: &Frame, except: Option<LinkId>) {
        let mut targets: Vec<LinkId> =
            self.links.iter().filter(|(id, l)| l.up && Some(**id) != except).map(|(id, _)| *id).collect();
        targets.sort_unstable();
        for link in targets {
            self.actions.push(Action::Send { link, frame: frame.clone() });
        }
    }

    /// A link-state advertisement arrived on `link`.
    pub fn on_lsa(&mut self, now: Instant, link: LinkId, lsa: Lsa) {
        if !self.links.get(&link).is_some_and(|l| l.up) {
            return;
        }
        crate::metrics::global().advert_in();
        if lsa.origin == self.me {
            self.on_own_id(now, lsa);
            return;
        }
        if !self.accept_lsa(now, link, &lsa) {
            crate::metrics::global().advert_dropped("stale");
            return;
        }
        if !self.room_for(&lsa) {
            crate::metrics::global().advert_dropped("db_full");
            return;
        }
        let frame = Frame::Lsa(lsa.clone());
        self.db_bytes += lsa.encoded_len();
        if let Some(old) = self.lsdb.insert(lsa.origin.clone(), Entry { lsa, received: now }) {
            self.db_bytes -= old.lsa.encoded_len();
        }
        self.flood(&frame, Some(link));
        self.recompute();
    }

    /// Whether the database has room for `lsa` (`max_nodes`, `max_db_bytes`). At the cap,
    /// nodes already known keep being updated (within the byte budget); new nodes are
    /// refused until silent ones are forgotten.
    fn room_for(&mut self, lsa: &Lsa) -> bool {
        let old = self.lsdb.get(&lsa.origin).map(|e| e.lsa.encoded_len());
        let nodes_ok = old.is_some() || self.lsdb.len() < self.cfg.max_nodes;
        let bytes_ok = self.db_bytes - old.unwrap_or(0) + lsa.encoded_len() <= self.cfg.max_db_bytes;
        if nodes_ok && bytes_ok {
            return true;
        }
        self.refused_full += 1;
        if self.refused_full == 1 || self.refused_full.is_power_of_two() {
            tracing::warn!(
                origin = %lsa.origin, nodes = self.lsdb.len(), bytes = self.db_bytes, refused = self.refused_full,
                "link-state database full (limits.max_nodes / limits.max_db_bytes): advertisement refused"
            );
        }
        false
    }

    /// Decides whether `lsa` supersedes what we hold, recording duplicate-ID evidence.
    fn accept_lsa(&mut self, now: Instant, link: LinkId, lsa: &Lsa) -> bool {
        let claims = self.claims.entry(lsa.origin.clone()).or_default();
        if claims.banned.contains(&lsa.epoch) {
            return false;
        }
        let prev = claims.seen.get(&lsa.epoch).map(|s| (s.0, s.2));
        let seen = claims.seen.entry(lsa.epoch).or_insert((lsa.seq, now, now));
        if lsa.seq > seen.0 {
            (seen.0, seen.2) = (lsa.seq, now);
        }
        while claims.seen.len() > 4 {
            claims.seen.pop_first();
        }
        let Some(stored) = self.lsdb.get(&lsa.origin) else { return true };
        let stored_epoch = stored.lsa.epoch;
        if lsa.epoch == stored_epoch {
            return lsa.seq > stored.lsa.seq;
        }
        if lsa.epoch > stored_epoch {
            return true;
        }
        // Signed evidence of an older incarnation counts only when signed after the newer
        // one started (both are the origin's own clock): recorded advertisements of its
        // previous incarnation, replayed by a member, are not a live twin.
        if lsa.sig.as_ref().is_some_and(|s| s.signed_at <= stored_epoch) {
            return false;
        }
        // An older incarnation is still advertising progress after the newer one appeared:
        // two live nodes share an ID, and the older one keeps it.
        //
        // A restart must not pass for that. Parts of the mesh that lost sight of the dead
        // incarnation at different moments hold copies with different seqs, and merging
        // partitions deliver them one after the other: "progress" from stale copies. So
        // progress counts only over a high-water mark itself seen after the newer one
        // appeared, and only once it has gone on for node_timeout, which is how long a
        // stale copy lasts at the node that holds it.
        let newer_first = claims.seen.get(&stored_epoch).map(|s| s.1);
        let progressing = match (prev, newer_first) {
            (Some((seq, raised)), Some(newer)) => {
                lsa.seq > seq && raised >= newer && now.duration_since(newer) >= self.cfg.node_timeout
            }
            _ => false,
        };
        if !progressing {
            return false;
        }
        claims.banned.push(stored_epoch);
        tracing::error!(
            node = %lsa.origin, kept_epoch = lsa.epoch, refused_epoch = stored_epoch,
            "duplicate node id: two live nodes claim {}; the newer one is refused", lsa.origin
        );
        let dup_links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(id, l)| l.peer == lsa.origin && l.peer_epoch == stored_epoch && **id != link)
            .map(|(id, _)| *id)
            .collect();
        for id in dup_links {
            self.links.remove(&id);
            let reason = format!("node id {} is already in use by an older node in the mesh", lsa.origin);
            self.actions.push(Action::Close { link: id, reason });
        }
        true
    }

    fn on_own_id(&mut self, now: Instant, lsa: Lsa) {
        if lsa.epoch == self.epoch {
            return;
        }
        if lsa.epoch > self.epoch {
            if !self.warned_newer_self {
                self.warned_newer_self = true;
                tracing::error!(
                    node = %self.me, other_epoch = lsa.epoch,
                    "duplicate node id: a newer node also claims {}; it will be refused", self.me
                );
            }
            self.originate(now);
            return;
        }
        let claims = self.claims.entry(self.me.clone()).or_default();
        let prev = claims.seen.get(&lsa.epoch).map(|s| s.0);
        let first_seen = claims.seen.entry(lsa.epoch).or_insert((lsa.seq, now, now)).1;
        if let Some(s) = claims.seen.get_mut(&lsa.epoch) {
            s.0 = s.0.max(lsa.seq);
        }
        // Signed before this incarnation started: a copy (or a replay) of the previous one.
        let replayed = lsa.sig.as_ref().is_some_and(|s| s.signed_at <= self.epoch);
        let progressing = prev.is_some_and(|p| lsa.seq > p) && !replayed;
        if progressing && now.duration_since(first_seen) >= self.cfg.refresh / 2 {
            self.actions.push(Action::DuplicateSelf { other_epoch: lsa.epoch });
        } else {
            // Most likely a stale copy from our own previous incarnation: supersede it.
            self.originate(now);
        }
    }

    /// Marks routes stale; [`Mesh::settle`] recomputes them once.
    fn recompute(&mut self) {
        self.dirty = true;
    }

    /// Recomputes routes if anything changed since the last time.
    pub fn settle(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.compute_routes();
        }
    }

    fn compute_routes(&mut self) {
        crate::metrics::global().route_computation();
        // A peer whose stored advertisement says it is leaving is gone already, even while
        // its link is still open (the routing graph omits it, which `shortest_paths` would
        // otherwise read as "its first advertisement has not arrived yet").
        let left = |peer: &NodeId| self.lsdb.get(peer).is_some_and(|e| e.lsa.leaving);
        let peers: HashMap<NodeId, (LinkId, f64)> = self
            .links
            .iter()
            .filter(|(_, l)| l.up && !left(&l.peer))
            .map(|(id, l)| (l.peer.clone(), (*id, l.cost)))
            .collect();
        let graph: HashMap<&NodeId, &Lsa> =
            self.lsdb.iter().filter(|(_, e)| !e.lsa.leaving).map(|(k, e)| (k, &e.lsa)).collect();
        let routes = routing::shortest_paths(&self.me, &peers, &graph, self.cfg.max_hops);
        if routes != self.routes {
            self.routes = routes;
            self.actions.push(Action::RoutesChanged);
        }
    }

    pub fn route(&self, dst: &NodeId) -> Option<&Route> {
        self.routes.get(dst)
    }

    pub fn routes(&self) -> &HashMap<NodeId, Route> {
        &self.routes
    }

    /// All known advertisements, ours included (the mesh as this node sees it).
    pub fn known(&self) -> Vec<Lsa> {
        let mut v: Vec<Lsa> = self.lsdb.values().filter(|e| !e.lsa.leaving).map(|e| e.lsa.clone()).collect();
        v.push(self.own_lsa());
        v.sort_by(|a, b| a.origin.cmp(&b.origin));
        v
    }
}
