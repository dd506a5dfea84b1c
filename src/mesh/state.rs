//! The mesh's membership and link-state routing as a pure state machine.
//!
//! It is fed events with the current time (`admit`, `link_up`, `link_down`, `on_lsa`,
//! `tick`) and answers with [`Action`]s for the driver to carry out. It does no I/O and
//! reads no clock, so whole meshes can be simulated deterministically in tests.
//!
//! Advertisement rules (docs/PROTOCOL.md, "Roles"): a node originates its advertisement
//! when something it says changes (coalesced: one origination per batch of events) and
//! otherwise only every `refresh`; hubs hold and flood the whole database among
//! themselves; leaves receive no advertisement at all and reach the mesh through a default
//! route via their hubs; entries of unreachable nodes are forgotten after a short grace.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::origin::LsaSigner;
use super::routing::Route;
use crate::wire::{Frame, Lsa, NodeId, WorkTypeAd, marked_cost};

mod admit;
mod aging;
mod check;
mod table;

/// Identifies one connection of this node, for the lifetime of the process.
pub type LinkId = u64;

/// What a node is in the mesh (`[mesh] role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A full member: holds the whole link-state database, floods it and relays traffic.
    #[default]
    Hub,
    /// An end node: advertises itself to its hubs, receives no database, relays nothing and
    /// reaches every other node through a default route via its cheapest hub.
    Leaf,
}

/// Timers and limits of the routing protocol.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// How often a node re-floods its own advertisement when nothing changed (a safety net:
    /// changes are advertised at once).
    pub refresh: Duration,
    /// How long a silent node's advertisement is kept before it is forgotten.
    pub node_timeout: Duration,
    /// How long the advertisement of a node with no route to it is kept (a partition that
    /// heals resyncs the database on link-up, so this only rides out convergence).
    pub forget_unreachable: Duration,
    pub role: Role,
    /// Routes longer than this many hops are not used.
    pub max_hops: u8,
    /// Most nodes the database holds (`limits.max_nodes`).
    pub max_nodes: usize,
    /// Most bytes of memory the database's advertisements hold (`limits.max_db_bytes`,
    /// counted by [`Lsa::held_bytes`]).
    pub max_db_bytes: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        let limits = crate::limits::Limits::default();
        MeshConfig {
            refresh: Duration::from_secs(600),
            node_timeout: Duration::from_secs(1800),
            forget_unreachable: Duration::from_secs(5),
            role: Role::Hub,
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
    /// The peer is a leaf: it is sent no advertisement (only the end-of-sync marker).
    leaf: bool,
    /// The peer is not a relay (a leaf or a client by its caps, no certificate, a
    /// temporary client ID, or this node's relay policy): it may advertise only itself,
    /// this node marks it in its advertisement, and no path continues through it here.
    not_relay: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    lsa: Lsa,
    received: Instant,
    /// Since when no route leads to the origin (forgotten `forget_unreachable` later).
    unreachable_since: Option<Instant>,
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
    /// Routes for frames this node relays, when some neighbour marked it as not a relay
    /// (they must not leave over that edge); `None`: the same as `routes`.
    transit_routes: Option<HashMap<NodeId, Route>>,
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
    /// Something our advertisement says changed: originate it once, when actions are taken.
    own_dirty: bool,
    /// The time of the latest event (lazy originations are stamped with it).
    now: Instant,
    /// When the next entry of an unreachable node is due to be forgotten.
    next_forget: Option<Instant>,
    /// When the database was last scanned for aged entries.
    last_aging: Instant,
    /// The cheapest up link to a relay, for a leaf: (link, peer).
    default_route: Option<(LinkId, NodeId)>,
    /// Up links that take floods (not to leaves), sorted; `None` after a link change.
    flood_targets: Option<Vec<(LinkId, NodeId)>>,
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
            transit_routes: None,
            last_refresh: now,
            warned_newer_self: false,
            left: false,
            db_bytes: 0,
            refused_full: 0,
            signer: None,
            dirty: false,
            own_dirty: false,
            now,
            next_forget: None,
            last_aging: now,
            default_route: None,
            flood_targets: None,
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

    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    pub fn role(&self) -> Role {
        self.cfg.role
    }

    fn is_leaf(&self) -> bool {
        self.cfg.role == Role::Leaf
    }

    /// Takes the actions produced so far. Routes are recomputed here, once for however
    /// many events came before (a burst of advertisements costs one shortest-path run).
    /// Bytes of memory the database's advertisements hold now.
    pub fn db_bytes(&self) -> usize {
        self.db_bytes
    }

    pub fn drain_actions(&mut self) -> Vec<Action> {
        self.settle();
        std::mem::take(&mut self.actions)
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
        self.flood_targets = None;
        let leaf = info.leaf;
        self.now = now;
        self.recompute();
        if leaf {
            // A leaf gets no advertisement, only the marker; ours (listing the leaf) goes to
            // the other hubs once for the whole batch of link-ups.
            self.own_dirty = true;
            self.actions.push(Action::Send { link, frame: Frame::SyncDone });
            return;
        }
        // Our fresh advertisement (listing the new peer) goes first, then the database (a
        // leaf forwards none), then the marker: a client that saw SyncDone has a complete,
        // current view.
        self.originate(now);
        let mut frames: Vec<Frame> = if self.is_leaf() {
            Vec::new()
        } else {
            self.lsdb.values().map(|e| Frame::Lsa(e.lsa.clone())).collect()
        };
        frames.push(Frame::SyncDone);
        for frame in frames {
            self.actions.push(Action::Send { link, frame });
        }
    }

    pub fn link_down(&mut self, now: Instant, link: LinkId) {
        if let Some(info) = self.links.remove(&link) {
            self.flood_targets = None;
            if info.up {
                self.now = now;
                self.own_dirty = true;
                self.recompute();
            }
        }
    }

    /// The peer of `link` is not a relay (a leaf or a short-lived client): it may originate
    /// frames and advertisements for its own ID only.
    pub fn link_not_relay(&self, link: LinkId) -> bool {
        self.links.get(&link).is_some_and(|l| l.not_relay)
    }

    /// Peers of up links that are leaves.
    pub fn leaf_peers(&self) -> impl Iterator<Item = &NodeId> {
        self.links.values().filter(|l| l.up && l.leaf).map(|l| &l.peer)
    }

    /// The peer of an up link.
    pub fn link_peer(&self, link: LinkId) -> Option<&NodeId> {
        self.links.get(&link).filter(|l| l.up).map(|l| &l.peer)
    }

    pub fn set_work_types(&mut self, now: Instant, mut work_types: Vec<WorkTypeAd>) {
        work_types.sort();
        if work_types != self.work_types {
            self.work_types = work_types;
            self.now = now;
            self.own_dirty = true;
        }
    }

    /// Floods a "leaving" advertisement so every node forgets this one at once.
    pub fn leave(&mut self) {
        self.left = true;
        self.seq += 1;
        let lsa = Lsa {
            leaving: true,
            neighbors: Vec::new(),
            relay_marks: false,
            work_types: Vec::new(),
            ..self.own_lsa()
        };
        let lsa = self.signed(lsa);
        self.flood(&Frame::Lsa(lsa), None);
    }

    fn own_lsa(&self) -> Lsa {
        // What each link showed about its peer goes out signed with the rest (relay marks
        // in the costs' lowest bit): every node keeps paths from continuing through a
        // peer that is not a relay over its edge with this node, whatever that peer says.
        let relay_marks = self.links.values().any(|l| l.up && l.not_relay);
        let mut neighbors: Vec<(NodeId, f64)> = self
            .links
            .values()
            .filter(|l| l.up)
            .map(|l| (l.peer.clone(), if relay_marks { marked_cost(l.cost, l.not_relay) } else { l.cost }))
            .collect();
        neighbors.sort_by(|a, b| a.0.cmp(&b.0));
        Lsa {
            origin: self.me.clone(),
            epoch: self.epoch,
            seq: self.seq,
            leaving: false,
            ephemeral: self.ephemeral,
            leaf: self.is_leaf(),
            neighbors,
            relay_marks,
            work_types: self.work_types.clone(),
            sig: None,
        }
    }

    /// The one place this node's advertisement is made and sent: every change it reports
    /// (links, work types, a refresh) comes through here.
    fn originate(&mut self, now: Instant) {
        self.own_dirty = false;
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

    /// Sends `frame` on every up link but `except`, leaves excepted (they get no database),
    /// and never to the origin of the advertisement it carries.
    fn flood(&mut self, frame: &Frame, except: Option<LinkId>) {
        let origin = match frame {
            Frame::Lsa(lsa) => Some(&lsa.origin),
            _ => None,
        };
        // A hub floods to a few hubs among a thousand leaf links: the targets are kept.
        let links = &self.links;
        let targets = self.flood_targets.get_or_insert_with(|| {
            let mut t: Vec<(LinkId, NodeId)> =
                links.iter().filter(|(_, l)| l.up && !l.leaf).map(|(id, l)| (*id, l.peer.clone())).collect();
            t.sort_unstable_by_key(|(id, _)| *id);
            t
        });
        for (link, peer) in targets.iter() {
            if Some(*link) != except && Some(peer) != origin {
                self.actions.push(Action::Send { link: *link, frame: frame.clone() });
            }
        }
    }

    /// A link-state advertisement arrived on `link`.
    pub fn on_lsa(&mut self, now: Instant, link: LinkId, lsa: Lsa) {
        let Some((not_relay, peer)) =
            self.links.get(&link).filter(|l| l.up).map(|l| (l.not_relay, l.peer.clone()))
        else {
            return;
        };
        self.now = now;
        crate::metrics::global().advert_in();
        if lsa.origin == self.me {
            self.on_own_id(now, lsa);
            return;
        }
        // A leaf or client speaks for itself only; a leaf stores only its peers' own words
        // (it is sent no database, so anything else is a hostile or confused peer).
        if (not_relay || self.is_leaf()) && lsa.origin != peer {
            crate::metrics::global().advert_dropped("not_origin");
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
        self.db_bytes += lsa.held_bytes();
        let entry = Entry { lsa, received: now, unreachable_since: None };
        let origin = entry.lsa.origin.clone();
        // A refresh that changes nothing routing reads costs no route computation.
        let mut same_graph = false;
        if let Some(old) = self.lsdb.insert(origin.clone(), entry) {
            self.db_bytes -= old.lsa.held_bytes();
            if let Some(e) = self.lsdb.get_mut(&origin) {
                same_graph = same_topology(&old.lsa, &e.lsa);
                if same_graph {
                    e.unreachable_since = old.unreachable_since;
                }
            }
        }
        if !self.is_leaf() {
            self.flood(&frame, Some(link));
        }
        if !same_graph {
            self.recompute();
        }
    }

    /// Whether the database has room for `lsa` (`max_nodes`, `max_db_bytes`). At the cap,
    /// nodes already known keep being updated (within the byte budget); new nodes are
    /// refused until silent ones are forgotten.
    fn room_for(&mut self, lsa: &Lsa) -> bool {
        let old = self.lsdb.get(&lsa.origin).map(|e| e.lsa.held_bytes());
        let nodes_ok = old.is_some() || self.lsdb.len() < self.cfg.max_nodes;
        let bytes_ok = self.db_bytes - old.unwrap_or(0) + lsa.held_bytes() <= self.cfg.max_db_bytes;
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
            self.flood_targets = None;
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
            self.own_dirty = true;
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
            self.own_dirty = true;
        }
    }
}

/// Whether two advertisements of one origin say the same to route computation.
fn same_topology(a: &Lsa, b: &Lsa) -> bool {
    a.epoch == b.epoch
        && a.leaving == b.leaving
        && a.ephemeral == b.ephemeral
        && a.leaf == b.leaf
        && a.neighbors == b.neighbors
        && a.relay_marks == b.relay_marks
}
