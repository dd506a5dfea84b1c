//! The netceptor node as a sans-IO state machine: links and their establishment, the
//! routing database fed by routing updates, routes, service advertisements and the
//! handling of data packets. It is fed `(now, event)` by the driver and answers with
//! [`Action`]s (packets to send on links, links to close, datagrams for local services);
//! it does no I/O and reads no clock, so simulations and fuzzing drive it directly.
//!
//! Behaviour follows Go Receptor 1.4 (`pkg/netceptor/netceptor.go`) where Go peers can
//! observe it — timers, establishment checks, flooding, duplicate-ID epochs — and is
//! stricter where Go is unbounded: every table has a limit ([`Limits`]).

pub mod data;
mod drops;
mod reserved;
mod routing;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::names::NameTable;
use super::wire::{Packet, RoutingUpdate, ServiceAd, WorkCommand};
use crate::mesh::budget::{TokenBucket, WindowCount};
use crate::wire::NodeId;
pub use drops::{Drops, UdpDrops};

/// A link's handle, chosen by the driver.
pub type LinkId = u64;

/// Go's timers (`netceptor.go:30-46`).
pub const ROUTE_UPDATE_PERIOD: Duration = Duration::from_secs(10);
pub const AD_PERIOD: Duration = Duration::from_secs(60);
pub const INIT_PERIOD: Duration = Duration::from_secs(1);
pub const INIT_TRIES: u32 = 11;
pub const FLOOD_DELAY: Duration = Duration::from_millis(100);
pub const SEEN_UPDATE_TTL: Duration = Duration::from_secs(3600);
/// How long a plane without links sleeps at most (it then only expires remembered update IDs).
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// Go drops a link silent for `2 × route update period + 1 s`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(21);
/// How long relays that tell nothing new — a known node's periodic routing update with
/// the connections it had, an advertisement renewed unchanged — are held, so that each
/// link gets them together. Go relays every update at once; a hub relays every node's
/// update on every link every 10 s, and sent one by one that is one write, and one
/// wake-up of the peer, per update per link (issue 22: the hub's CPU grew with the
/// square of its leaves and more, the kernel's wake-ups costing more the busier the host).
/// News (a first sight, changed connections, duplicates, new or changed services) is
/// relayed at once, as Go does.
pub const RELAY_BATCH: Duration = Duration::from_secs(1);

/// Bounds of the state a peer can make this node hold: `[limits.netceptor]`.
pub use crate::limits::NetceptorLimits as Limits;

/// How the node is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: NodeId,
    /// This incarnation: `unix_seconds << 24 | random24`, as Go's, so epochs of both
    /// implementations order by start time.
    pub epoch: u64,
    /// Node IDs that may link with this node (empty: any).
    pub allowed_peers: Vec<NodeId>,
    /// A link silent this long is closed.
    pub idle_timeout: Duration,
    /// A link whose peer reads nothing for this long is closed (`limits.stall_timeout`;
    /// used by the link tasks, not the state machine).
    pub stall_timeout: Duration,
    pub limits: Limits,
}

impl Config {
    pub fn new(id: NodeId, epoch: u64) -> Config {
        Config {
            id,
            epoch,
            allowed_peers: Vec::new(),
            idle_timeout: IDLE_TIMEOUT,
            stall_timeout: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// A new epoch from the wall clock, as Go computes it.
pub fn new_epoch(unix_secs: u64, random: u32) -> u64 {
    (unix_secs << 24) | u64::from(random & 0xff_ffff)
}

/// A service this node advertises.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalService {
    pub name: String,
    pub conn_type: u8,
    pub tags: Option<BTreeMap<String, String>>,
    pub work_commands: Option<Vec<WorkCommand>>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send one packet on a link.
    Send { link: LinkId, packet: Bytes },
    /// Close a link (a reject, when one was due, was sent just before).
    Close { link: LinkId, reason: CloseReason },
    /// A link is established with `peer`.
    Up { link: LinkId, peer: NodeId },
    /// A datagram for a local service.
    Deliver { service: String, from_node: String, from_service: String, payload: Bytes },
    /// An older node with our ID accused this one of being its duplicate: this node must
    /// stop, as Go does (`epoch` is ours).
    Duplicate { epoch: u64 },
}

/// Why a link is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("the peer did not complete the link within {INIT_TRIES} initial updates")]
    InitTimeout,
    #[error("the peer's node ID {0:?} is not a valid receptord node ID")]
    BadId(String),
    #[error("the peer claims this node's own ID")]
    SelfId,
    #[error("{0} is not in allowed_peers")]
    NotAllowed(NodeId),
    #[error("already linked to {0}")]
    Duplicate(NodeId),
    #[error("the routing database is full (limits)")]
    Full,
    #[error("remote node ID changed unexpectedly to {0:?}")]
    IdChanged(String),
    #[error("the remote node no longer lists us")]
    Unlisted,
    #[error("we disagree about the connection cost")]
    CostMismatch,
    #[error("the remote node rejected the connection")]
    Rejected,
    #[error("no packet for {0:?}")]
    Idle(Duration),
    #[error(
        "{0} is a node this node knows on its native links; a netceptor peer may claim it only with a certificate naming it"
    )]
    Reserved(NodeId),
    #[error("the peer's certificate does not name {0}")]
    NotCertified(NodeId),
    #[error("advertisement flood (limits.netceptor.advert_drops_to_close)")]
    AdvertFlood,
}

#[derive(Debug)]
struct Link {
    cost: f64,
    peer: Option<NodeId>,
    last_rx: Instant,
    init_sent: u32,
    next_init: Instant,
    /// The peer's own update has listed us at least once.
    listed_us: bool,
    /// The node IDs the peer's TLS certificate names (`None`: no certificate).
    cert: Option<Vec<String>>,
    /// Carried over a native link (`crate::mesh::carry`): the peer is a receptord
    /// neighbour the native link authenticated, trusted to relay claims about reserved IDs.
    carried: bool,
    /// Routing updates and advertisements the peer may still deliver.
    adverts: TokenBucket,
    advert_drops: WindowCount,
}

impl Link {
    /// Whether the link's peer proved its node ID with a certificate.
    fn proven(&self) -> bool {
        match (&self.peer, &self.cert) {
            (Some(p), Some(names)) => names.iter().any(|n| n == p.as_str()),
            _ => false,
        }
    }
}

/// One known node's incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    epoch: u64,
    sequence: u64,
}

/// What a held relay is about: a newer one about the same thing replaces it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Relay {
    /// A node's routing update.
    Update(String),
    /// A node's advertisement of a service.
    Ad(String, String),
}

/// The state machine.
#[derive(Debug)]
pub struct Netceptor {
    cfg: Config,
    id_hash: u64,
    sequence: u64,
    /// When `Some`, the epoch of the duplicate we accuse in our next updates.
    accuse: Option<u64>,
    links: BTreeMap<LinkId, Link>,
    known: HashMap<String, Known>,
    /// Directed edge costs as advertised by each node (plus ours per link).
    edges: HashMap<String, BTreeMap<String, f64>>,
    seen: HashMap<String, Instant>,
    seen_order: VecDeque<(Instant, String)>,
    routes: BTreeMap<String, String>,
    /// Bumped whenever the routes are recomputed.
    pub(super) routes_generation: u64,
    ads: BTreeMap<(String, String), ServiceAd>,
    local: Vec<LocalService>,
    bound: Vec<String>,
    names: NameTable,
    /// Node IDs the native plane knows (authenticated there): no netceptor peer may
    /// claim them but one whose certificate names them.
    reserved: BTreeSet<String>,
    /// Nodes whose latest believed routing update came over a carried link: claims about
    /// them, reserved or not, were vouched for by a receptord neighbour.
    vouched: std::collections::HashSet<String>,
    actions: VecDeque<Action>,
    next_update: Instant,
    next_ads: Instant,
    flood_due: Option<Instant>,
    routes_due: Option<Instant>,
    /// Relays held for the next batch ([`RELAY_BATCH`]): the link each came from and the
    /// packet, encoded once. Bounded by the known nodes and advertisements.
    relays: BTreeMap<Relay, (LinkId, Bytes)>,
    relay_due: Option<Instant>,
    /// Relay batches sent so far.
    pub(super) relay_batches: u64,
    mono0: Instant,
    wall0: time::OffsetDateTime,
    pub drops: Drops,
}

impl Netceptor {
    /// A node whose wall clock read `wall` at monotonic time `now`.
    pub fn new(cfg: Config, now: Instant, wall: time::OffsetDateTime) -> Netceptor {
        let mut names = NameTable::default();
        let id_hash = names.learn(cfg.id.as_str());
        Netceptor {
            cfg,
            id_hash,
            sequence: 0,
            accuse: None,
            links: BTreeMap::new(),
            known: HashMap::new(),
            edges: HashMap::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            routes: BTreeMap::new(),
            routes_generation: 0,
            ads: BTreeMap::new(),
            local: Vec::new(),
            bound: vec!["ping".into()],
            names,
            reserved: BTreeSet::new(),
            vouched: Default::default(),
            actions: VecDeque::new(),
            next_update: now + ROUTE_UPDATE_PERIOD,
            next_ads: now + AD_PERIOD,
            flood_due: None,
            routes_due: None,
            relays: BTreeMap::new(),
            relay_due: None,
            relay_batches: 0,
            mono0: now,
            wall0: wall,
            drops: Drops::default(),
        }
    }

    pub fn id(&self) -> &NodeId {
        &self.cfg.id
    }

    pub fn epoch(&self) -> u64 {
        self.cfg.epoch
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Netceptor::tick`] must next run.
    pub fn next_deadline(&self) -> Instant {
        if self.links.is_empty() && self.flood_due.is_none() && self.routes_due.is_none() {
            // Nothing to send to anyone: a plane without links (a node that only serves
            // carried sessions, none yet) does not wake up every update period.
            return self.next_update.max(self.next_ads) + IDLE_WAKE;
        }
        let mut t = self.next_update.min(self.next_ads);
        for d in [self.flood_due, self.routes_due, self.relay_due].into_iter().flatten() {
            t = t.min(d);
        }
        for l in self.links.values() {
            if l.peer.is_none() {
                t = t.min(l.next_init);
            }
            t = t.min(l.last_rx + self.cfg.idle_timeout);
        }
        t
    }

    fn wall(&self, now: Instant) -> time::OffsetDateTime {
        self.wall0 + now.saturating_duration_since(self.mono0)
    }

    /// A backend session is open: start sending initial updates.
    pub fn link_opened(&mut self, now: Instant, link: LinkId, cost: f64) {
        self.link_opened_with(now, link, cost, None);
    }

    /// A backend session is open whose peer presented a TLS certificate naming `cert`
    /// (`None`: no certificate); the peer's node ID must be one of them.
    pub fn link_opened_with(&mut self, now: Instant, link: LinkId, cost: f64, cert: Option<Vec<String>>) {
        self.link_closed(now, link);
        let lim = &self.cfg.limits;
        let l = Link {
            cost,
            peer: None,
            last_rx: now,
            init_sent: 0,
            next_init: now,
            listed_us: false,
            cert,
            carried: false,
            adverts: TokenBucket::new(lim.advert_rate, lim.advert_burst, lim.advert_burst, now),
            advert_drops: WindowCount::new(Duration::from_secs(60), lim.advert_drops_to_close),
        };
        self.links.insert(link, l);
        self.send_init(now, link);
    }

    /// Charges a routing update or advertisement of `len` bytes to `link`'s budget;
    /// false when it is over (the packet is dropped; a link that keeps flooding is closed).
    fn charge_advert(&mut self, now: Instant, link: LinkId, len: usize) -> bool {
        let Some(l) = self.links.get_mut(&link) else { return false };
        if l.adverts.take(len as u64, now) {
            return true;
        }
        self.drops.advert_rate += 1;
        if l.advert_drops.record(now) {
            self.close(link, CloseReason::AdvertFlood, false);
        }
        false
    }

    /// A backend session ended (closed by either side).
    pub fn link_closed(&mut self, now: Instant, link: LinkId) {
        let Some(l) = self.links.remove(&link) else { return };
        if let Some(peer) = l.peer {
            let me = self.cfg.id.as_str().to_owned();
            if let Some(e) = self.edges.get_mut(&me) {
                e.remove(peer.as_str());
            }
            if let Some(e) = self.edges.get_mut(peer.as_str()) {
                e.remove(&me);
            }
            self.flood_due.get_or_insert(now + FLOOD_DELAY);
            self.routes_due.get_or_insert(now + FLOOD_DELAY);
        }
    }

    /// A packet arrived on `link`.
    pub fn link_packet(&mut self, now: Instant, link: LinkId, bytes: &[u8]) {
        let Some(l) = self.links.get_mut(&link) else { return };
        l.last_rx = now;
        let established = l.peer.is_some();
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(_) => {
                self.drops.undecodable += 1;
                return;
            }
        };
        let advert = matches!(packet, Packet::Routing(_) | Packet::Service(_));
        if established && advert && !self.charge_advert(now, link, bytes.len()) {
            return;
        }
        match (packet, established) {
            (Packet::Reject, _) => self.close(link, CloseReason::Rejected, false),
            (Packet::Routing(u), false) => self.establish(now, link, &u),
            (_, false) => {}
            (Packet::Routing(u), true) => self.routing_on_link(now, link, u),
            (Packet::Service(ad), true) => self.service_ad(now, Some(link), ad),
            (Packet::Data(d), true) => self.data(now, d),
            (Packet::Unknown(_), true) => {}
        }
    }

    /// Timers: initial updates, idle links, periodic updates and advertisements, debounced
    /// floods and route computations.
    pub fn tick(&mut self, now: Instant) {
        let due: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.peer.is_none() && l.next_init <= now)
            .map(|(id, _)| *id)
            .collect();
        for link in due {
            self.send_init(now, link);
        }
        let idle = self.cfg.idle_timeout;
        let silent: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| now.duration_since(l.last_rx) > idle)
            .map(|(id, _)| *id)
            .collect();
        for link in silent {
            self.close(link, CloseReason::Idle(idle), false);
        }
        if self.routes_due.is_some_and(|t| t <= now) {
            self.routes_due = None;
            self.compute_routes();
        }
        if self.flood_due.is_some_and(|t| t <= now) || self.next_update <= now {
            self.flood_due = None;
            self.next_update = now + ROUTE_UPDATE_PERIOD;
            self.flood_own_update(now);
        }
        if self.next_ads <= now {
            self.next_ads = now + AD_PERIOD;
            self.send_local_ads(now, None);
        }
        if self.relay_due.is_some_and(|t| t <= now) {
            self.flush_relays();
        }
        self.expire_seen(now);
    }

    /// Replaces the services this node advertises; changed or new ones are advertised now,
    /// removed ones cancelled.
    pub fn set_services(&mut self, now: Instant, services: Vec<LocalService>) {
        let wall = self.wall(now);
        let gone: Vec<ServiceAd> = self
            .local
            .iter()
            .filter(|old| !services.iter().any(|s| s.name == old.name))
            .map(|old| ServiceAd { cancel: true, ..self.ad_for(old, wall) })
            .collect();
        for ad in gone {
            self.flood_packet(None, &Packet::Service(ad));
        }
        self.local = services;
        for s in &self.local {
            self.names.learn(&s.name);
        }
        self.send_local_ads(now, None);
    }

    /// Lets datagrams for `service` be delivered (as [`Action::Deliver`]).
    pub fn bind(&mut self, service: &str) {
        if !self.bound.iter().any(|s| s == service) {
            self.names.learn(service);
            self.bound.push(service.to_owned());
        }
    }

    pub fn unbind(&mut self, service: &str) {
        self.bound.retain(|s| s != service || s == "ping");
    }

    fn ad_for(&self, s: &LocalService, wall: time::OffsetDateTime) -> ServiceAd {
        ServiceAd {
            node_id: self.cfg.id.as_str().to_owned(),
            service: s.name.clone(),
            time: wall,
            conn_type: s.conn_type,
            tags: s.tags.clone(),
            work_commands: s.work_commands.clone(),
            cancel: false,
        }
    }

    /// Sends this node's advertisements (fresh times) to `only`, or to every link.
    fn send_local_ads(&mut self, now: Instant, only: Option<LinkId>) {
        let wall = self.wall(now);
        let ads: Vec<ServiceAd> = self.local.iter().map(|s| self.ad_for(s, wall)).collect();
        for ad in ads {
            let p = Packet::Service(ad);
            match only {
                Some(link) => self.send(link, &p),
                None => self.flood_packet(None, &p),
            }
        }
    }

    fn send_init(&mut self, now: Instant, link: LinkId) {
        let Some(l) = self.links.get_mut(&link) else { return };
        if l.init_sent >= INIT_TRIES {
            return self.close(link, CloseReason::InitTimeout, false);
        }
        l.init_sent += 1;
        l.next_init = now + INIT_PERIOD;
        let u = self.own_update();
        self.send(link, &Packet::Routing(u));
    }

    /// Encodes and queues `p` on `link` (encoding cannot fail for what this node builds;
    /// a failure is dropped and counted rather than trusted).
    fn send(&mut self, link: LinkId, p: &Packet) {
        match p.encode() {
            Ok(packet) => self.actions.push_back(Action::Send { link, packet }),
            Err(_) => self.drops.over_limits += 1,
        }
    }

    /// Sends `p` on every established link but `except`.
    fn flood_packet(&mut self, except: Option<LinkId>, p: &Packet) {
        let Ok(packet) = p.encode() else {
            self.drops.over_limits += 1;
            return;
        };
        for (id, l) in &self.links {
            if l.peer.is_some() && Some(*id) != except {
                self.actions.push_back(Action::Send { link: *id, packet: packet.clone() });
            }
        }
    }

    fn close(&mut self, link: LinkId, reason: CloseReason, reject: bool) {
        if reject {
            self.send(link, &Packet::Reject);
        }
        self.actions.push_back(Action::Close { link, reason });
    }

    /// The links that are up: (link, peer, cost).
    pub fn established(&self) -> impl Iterator<Item = (LinkId, &NodeId, f64)> {
        self.links.iter().filter_map(|(id, l)| l.peer.as_ref().map(|p| (*id, p, l.cost)))
    }

    fn link_to(&self, peer: &str) -> Option<LinkId> {
        self.established().find(|(_, p, _)| p.as_str() == peer).map(|(id, _, _)| id)
    }

    fn own_update(&mut self) -> RoutingUpdate {
        self.sequence += 1;
        let connections = self.established().map(|(_, p, c)| (p.as_str().to_owned(), c)).collect();
        RoutingUpdate {
            node_id: self.cfg.id.as_str().to_owned(),
            update_id: random_name(),
            epoch: self.cfg.epoch,
            sequence: self.sequence,
            connections,
            forwarding_node: self.cfg.id.as_str().to_owned(),
            suspected_duplicate: self.accuse.take().unwrap_or(0),
        }
    }

    fn flood_own_update(&mut self, _now: Instant) {
        if self.links.values().all(|l| l.peer.is_none()) {
            return;
        }
        let u = self.own_update();
        self.flood_packet(None, &Packet::Routing(u));
    }
}

/// Eight random characters of `[0-9a-zA-Z]` (update IDs, ephemeral services).
pub fn random_name() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    (0..8).map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())])).collect()
}
