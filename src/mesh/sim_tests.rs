//! Deterministic mesh simulations: many [`Mesh`] state machines wired together in memory.
//!
//! The simulator plays the parts of `link.rs` and `driver.rs`: a handshake is `admit` on both
//! sides and then `link_up` on both; `Lsa` and `SyncDone` frames travel FIFO per connection;
//! `Close` ends a connection only once it is up (as in the driver, which knows a link only
//! from its `Up` event); the clock is simulated and ticked in one-second steps. There are no
//! sockets, no real time and no randomness but a seeded one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::state::{Action, Admission, LinkId, Mesh, MeshConfig};
use crate::wire::{Frame, Hello, Name, NodeId, PROTOCOL_VERSION, WorkTypeAd, caps};

const REFRESH: Duration = Duration::from_secs(10);
const NODE_TIMEOUT: Duration = Duration::from_secs(40);
const FORGET: Duration = Duration::from_secs(5);

fn cfg(max_hops: u8) -> MeshConfig {
    MeshConfig {
        refresh: REFRESH,
        node_timeout: NODE_TIMEOUT,
        forget_unreachable: FORGET,
        max_hops,
        ..MeshConfig::default()
    }
}

fn nid(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node id")
}

fn wt(name: &str, version: &str) -> WorkTypeAd {
    WorkTypeAd { name: Name::new(name).expect("name"), version: Name::new(version).expect("version") }
}

/// A connection whose handshake is running: `a` dialed `b`.
#[derive(Debug, Clone, Copy)]
struct Dial {
    a: usize,
    la: LinkId,
    b: usize,
    lb: LinkId,
    cost_a: f64,
    cost_b: f64,
}

struct Sim {
    now: Instant,
    nodes: Vec<Mesh>,
    ephemeral: Vec<bool>,
    work: Vec<Vec<WorkTypeAd>>,
    /// Established connections, both directions: (node, link) → (peer node, peer link).
    wires: BTreeMap<(usize, LinkId), (usize, LinkId)>,
    /// Each side's cost for its end of a connection.
    costs: BTreeMap<(usize, LinkId), f64>,
    /// Admission answers of handshakes still running.
    verdicts: BTreeMap<(usize, LinkId), Admission>,
    /// Frames on the wire, by receiving end, in sending order.
    in_flight: VecDeque<(usize, LinkId, Frame)>,
    next_link: LinkId,
    next_epoch: u64,
    /// Crashed nodes: no longer ticked.
    stopped: Vec<bool>,
    duplicate_self: Vec<Option<u64>>,
    routes_changed: Vec<usize>,
    /// (node, link) on which a SyncDone arrived, with how many nodes the receiver knew
    /// and could route to at that moment.
    synced: BTreeMap<(usize, LinkId), (usize, usize)>,
    /// Extra caps node i announces to node j in its Hello, whatever it advertises.
    caps_to: BTreeMap<(usize, usize), u32>,
    /// (i, j): node i's link (policy, certificate) says node j is not a relay.
    not_relay: BTreeSet<(usize, usize)>,
}

impl Sim {
    fn empty() -> Sim {
        Sim {
            now: Instant::now(),
            nodes: Vec::new(),
            ephemeral: Vec::new(),
            work: Vec::new(),
            wires: BTreeMap::new(),
            costs: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            in_flight: VecDeque::new(),
            next_link: 1,
            next_epoch: 1_000,
            stopped: Vec::new(),
            duplicate_self: Vec::new(),
            routes_changed: Vec::new(),
            synced: BTreeMap::new(),
            caps_to: BTreeMap::new(),
            not_relay: BTreeSet::new(),
        }
    }

    /// `n` nodes named n00, n01, … (so index order is ID order).
    fn new(n: usize) -> Sim {
        Sim::with(n, 30, &[])
    }

    fn with(n: usize, max_hops: u8, ephemeral: &[usize]) -> Sim {
        let mut s = Sim::empty();
        for i in 0..n {
            s.add(&format!("n{i:02}"), None, ephemeral.contains(&i), max_hops);
        }
        s
    }

    /// Adds a node; `epoch` defaults to a fresh, increasing one.
    fn add(&mut self, name: &str, epoch: Option<u64>, ephemeral: bool, max_hops: u8) -> usize {
        self.next_epoch += 1;
        let epoch = epoch.unwrap_or(self.next_epoch);
        self.nodes.push(Mesh::new(nid(name), epoch, ephemeral, cfg(max_hops), self.now));
        self.ephemeral.push(ephemeral);
        self.work.push(Vec::new());
        self.stopped.push(false);
        self.duplicate_self.push(None);
        self.routes_changed.push(0);
        self.nodes.len() - 1
    }

    fn id(&self, i: usize) -> NodeId {
        self.nodes[i].me().clone()
    }

    /// The Hello node `i` sends node `to`.
    fn hello(&self, i: usize, to: usize) -> Hello {
        let caps = caps::STREAMS
            | if self.ephemeral[i] { caps::EPHEMERAL } else { 0 }
            | self.caps_to.get(&(i, to)).copied().unwrap_or(0);
        Hello {
            version: PROTOCOL_VERSION,
            node_id: self.id(i),
            epoch: self.nodes[i].epoch(),
            caps,
            idle_timeout_ms: 4000,
            cost: 1.0,
        }
    }

    fn dial(&mut self, a: usize, b: usize, cost_a: f64, cost_b: f64) -> Dial {
        let (la, lb) = (self.next_link, self.next_link + 1);
        self.next_link += 2;
        Dial { a, la, b, lb, cost_a, cost_b }
    }

    /// One side of `d` answers the other's Hello.
    fn answer(&mut self, d: Dial, dialer_side: bool) {
        let (me, link, peer, cost) =
            if dialer_side { (d.a, d.la, d.b, d.cost_a) } else { (d.b, d.lb, d.a, d.cost_b) };
        let hello = self.hello(peer, me);
        let not_relay = hello.not_relay() || self.not_relay.contains(&(me, peer));
        let verdict = self.nodes[me].admit(link, &hello, cost, dialer_side, not_relay);
        self.verdicts.insert((me, link), verdict);
    }

    /// Ends the handshake of `d`: when both sides admitted, the link comes up on both (as the
    /// driver's `Up` events); otherwise both sides see it go down.
    fn establish(&mut self, d: Dial) -> bool {
        let va = self.verdicts.remove(&(d.a, d.la));
        let vb = self.verdicts.remove(&(d.b, d.lb));
        let now = self.now;
        if va != Some(Admission::Admit) || vb != Some(Admission::Admit) {
            self.nodes[d.a].link_down(now, d.la);
            self.nodes[d.b].link_down(now, d.lb);
            return false;
        }
        self.wires.insert((d.a, d.la), (d.b, d.lb));
        self.wires.insert((d.b, d.lb), (d.a, d.la));
        self.costs.insert((d.a, d.la), d.cost_a);
        self.costs.insert((d.b, d.lb), d.cost_b);
        self.nodes[d.a].link_up(now, d.la);
        self.nodes[d.b].link_up(now, d.lb);
        true
    }

    /// A full handshake with per-side costs, then quiescence; whether the link came up.
    fn connect_costs(&mut self, a: usize, b: usize, cost_a: f64, cost_b: f64) -> bool {
        let d = self.dial(a, b, cost_a, cost_b);
        self.answer(d, true);
        self.answer(d, false);
        self.settle();
        let up = self.establish(d);
        self.settle();
        up
    }

    fn connect(&mut self, a: usize, b: usize, cost: f64) -> bool {
        self.connect_costs(a, b, cost, cost)
    }

    fn wires_between(&self, a: usize, b: usize) -> Vec<(LinkId, LinkId)> {
        self.wires
            .iter()
            .filter(|((x, _), (y, _))| *x == a && *y == b)
            .map(|((_, l), (_, r))| (*l, *r))
            .collect()
    }

    /// The connection at (i, link) dies: both drivers report it down.
    fn cut_wire(&mut self, i: usize, link: LinkId) {
        if let Some((j, lj)) = self.wires.remove(&(i, link)) {
            self.wires.remove(&(j, lj));
            let now = self.now;
            self.nodes[i].link_down(now, link);
            self.nodes[j].link_down(now, lj);
        }
    }

    fn cut(&mut self, a: usize, b: usize) {
        for (la, _) in self.wires_between(a, b) {
            self.cut_wire(a, la);
        }
        self.settle();
    }

    /// Every connection of `i` dies at once (a crash, or the cable pulled).
    fn isolate(&mut self, i: usize) {
        let mine: Vec<LinkId> = self.wires.keys().filter(|(x, _)| *x == i).map(|(_, l)| *l).collect();
        for l in mine {
            self.cut_wire(i, l);
        }
        self.settle();
    }

    /// `i` crashes and comes back at once as a new incarnation (a higher epoch).
    fn restart(&mut self, i: usize) {
        self.isolate(i);
        self.next_epoch += 1;
        let cfg = cfg(30);
        self.nodes[i] = Mesh::new(self.id(i), self.next_epoch, self.ephemeral[i], cfg, self.now);
        self.work[i].clear();
        self.stopped[i] = false;
    }

    fn set_work(&mut self, i: usize, work: Vec<WorkTypeAd>) {
        let now = self.now;
        self.nodes[i].set_work_types(now, work.clone());
        self.work[i] = work;
        self.work[i].sort();
        self.settle();
    }

    /// Carries out every node's pending actions; whether there were any.
    fn pump(&mut self) -> bool {
        let mut acted = false;
        for i in 0..self.nodes.len() {
            for action in self.nodes[i].drain_actions() {
                acted = true;
                match action {
                    Action::Send { link, frame } => {
                        if let Some(&(j, lj)) = self.wires.get(&(i, link)) {
                            self.in_flight.push_back((j, lj, frame));
                        }
                    }
                    // The driver knows only links that are up; a handshake still running is
                    // not affected by a Close.
                    Action::Close { link, .. } => self.cut_wire(i, link),
                    Action::RoutesChanged => self.routes_changed[i] += 1,
                    Action::DuplicateSelf { other_epoch } => self.duplicate_self[i] = Some(other_epoch),
                }
            }
        }
        acted
    }

    /// Delivers frames until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1_000_000 {
            let acted = self.pump();
            let Some((j, lj, frame)) = self.in_flight.pop_front() else {
                if acted {
                    continue;
                }
                return;
            };
            if !self.wires.contains_key(&(j, lj)) {
                continue; // the connection died with the frame on it
            }
            let now = self.now;
            match frame {
                Frame::Lsa(lsa) => self.nodes[j].on_lsa(now, lj, lsa),
                Frame::SyncDone => {
                    let known = self.nodes[j].known().len();
                    let routes = self.nodes[j].routes().len();
                    self.synced.insert((j, lj), (known, routes));
                }
                other => panic!("the state machine sent {other:?}"),
            }
        }
        panic!("the mesh did not settle");
    }

    /// Lets `d` pass in one-second steps, ticking every running node at each.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_secs(1)).min(end);
            let now = self.now;
            for i in 0..self.nodes.len() {
                if !self.stopped[i] {
                    self.nodes[i].tick(now);
                }
            }
            self.settle();
        }
    }

    /// (next hop, hops) from `a` to node `b`.
    fn route(&self, a: usize, b: usize) -> Option<(NodeId, u8)> {
        self.nodes[a].route(&self.id(b)).map(|r| (r.next_hop.clone(), r.hops))
    }

    fn hop(&self, next: usize, hops: u8) -> Option<(NodeId, u8)> {
        Some((self.id(next), hops))
    }

    /// Whether `a` holds `b`'s advertisement (reachable or not).
    fn knows(&self, a: usize, b: usize) -> bool {
        self.nodes[a].held(&self.id(b)).is_some()
    }

    fn known_epoch(&self, a: usize, b: usize) -> Option<u64> {
        self.nodes[a].held(&self.id(b)).map(|l| l.epoch)
    }

    /// Whether `a` lists `b` (what `status` shows: reachable nodes only).
    fn lists(&self, a: usize, b: usize) -> bool {
        self.nodes[a].known().iter().any(|l| l.origin == self.id(b))
    }

    /// Ground truth from `s` over the connections that are up: for every node it reaches,
    /// (cost, hops, first hop), minimising cost, then hops, then the first hop's ID. Edge
    /// u→v weighs u's cost for that connection; ephemeral nodes relay nothing.
    fn truth(&self, s: usize) -> BTreeMap<usize, (f64, u8, usize)> {
        let n = self.nodes.len();
        let mut dist: Vec<Option<(f64, u8)>> = vec![None; n];
        let mut done = vec![false; n];
        let mut order = Vec::new();
        dist[s] = Some((0.0, 0));
        while let Some(u) = (0..n).filter(|&u| !done[u] && dist[u].is_some()).min_by(|&x, &y| {
            let (a, b) = (dist[x].expect("set"), dist[y].expect("set"));
            a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
        }) {
            done[u] = true;
            order.push(u);
            if u != s && self.ephemeral[u] {
                continue;
            }
            let (du, hu) = dist[u].expect("set");
            for (&(x, lx), &(v, _)) in &self.wires {
                if x != u || done[v] {
                    continue;
                }
                let cand = (du + self.costs[&(x, lx)], hu + 1);
                let better = dist[v].is_none_or(|d| cand.0.total_cmp(&d.0).then(cand.1.cmp(&d.1)).is_lt());
                if better {
                    dist[v] = Some(cand);
                }
            }
        }
        // First hops: the smallest-ID first hop over all optimal paths.
        let mut first: BTreeMap<usize, usize> = BTreeMap::new();
        for &v in order.iter().skip(1) {
            let (dv, hv) = dist[v].expect("set");
            let best = self
                .wires
                .iter()
                .filter(|((u, _), (w, _))| *w == v && (*u == s || !self.ephemeral[*u]))
                .filter(|((u, lu), _)| {
                    dist[*u].is_some_and(|(du, hu)| du + self.costs[&(*u, *lu)] == dv && hu + 1 == hv)
                })
                .map(|((u, _), _)| if *u == s { v } else { first[u] })
                .min_by_key(|&f| self.id(f));
            first.insert(v, best.expect("an optimal predecessor"));
        }
        first.into_iter().map(|(v, f)| (v, (dist[v].expect("set").0, dist[v].expect("set").1, f))).collect()
    }

    /// Every node's routes equal the ground truth, every connection is up on both sides,
    /// and every node holds the current advertisement of every node in its component.
    fn assert_converged(&self, ctx: &str) {
        for ((i, li), (j, _)) in &self.wires {
            assert_eq!(self.nodes[*i].link_peer(*li), Some(&self.id(*j)), "{ctx}: link {li} of {i}");
        }
        let pairs: BTreeSet<(usize, usize)> = self.wires.iter().map(|((a, _), (b, _))| (*a, *b)).collect();
        assert_eq!(pairs.len(), self.wires.len(), "{ctx}: two connections between one pair");
        for s in 0..self.nodes.len() {
            let truth = self.truth(s);
            for t in (0..self.nodes.len()).filter(|&t| t != s) {
                let got = self.nodes[s].route(&self.id(t));
                match truth.get(&t) {
                    None => assert!(got.is_none(), "{ctx}: {s}→{t} routed to another component: {got:?}"),
                    Some(&(cost, hops, first)) => {
                        let got = got.unwrap_or_else(|| panic!("{ctx}: no route {s}→{t}"));
                        let want = (cost, hops, self.id(first));
                        assert_eq!((got.cost, got.hops, got.next_hop.clone()), want, "{ctx}: route {s}→{t}");
                        let lsa = self.nodes[s].known().into_iter().find(|l| l.origin == self.id(t));
                        let lsa = lsa.unwrap_or_else(|| panic!("{ctx}: {s} does not know {t}"));
                        assert_eq!(lsa.epoch, self.nodes[t].epoch(), "{ctx}: {s}'s view of {t}");
                        assert_eq!(lsa.work_types, self.work[t], "{ctx}: {s}'s view of {t}'s work");
                    }
                }
            }
            assert_eq!(self.nodes[s].routes().len(), truth.len(), "{ctx}: routes of {s}");
        }
    }
}

#[test]
fn a_line_of_three_converges_with_next_hops_and_hop_counts() {
    let mut s = Sim::new(3);
    assert!(s.connect(0, 1, 1.0));
    assert!(s.connect(1, 2, 1.0));
    assert_eq!(s.route(0, 2), s.hop(1, 2));
    assert_eq!(s.route(2, 0), s.hop(1, 2));
    assert_eq!(s.route(0, 1), s.hop(1, 1));
    assert_eq!(s.route(1, 0), s.hop(0, 1));
    assert_eq!(s.route(1, 2), s.hop(2, 1));
    assert_eq!(s.nodes[0].route(&s.id(2)).map(|r| r.cost), Some(2.0));
    s.assert_converged("line");
}

#[test]
fn a_square_takes_the_cheaper_path_and_reconverges_on_cut_and_restore() {
    // 0 -1- 1 -1- 3 and 0 -5- 2 -5- 3.
    let mut s = Sim::new(4);
    s.connect(0, 1, 1.0);
    s.connect(1, 3, 1.0);
    s.connect(0, 2, 5.0);
    s.connect(2, 3, 5.0);
    assert_eq!(s.route(0, 3), s.hop(1, 2));
    assert_eq!(s.route(3, 0), s.hop(1, 2));
    assert_eq!(s.route(2, 1), s.hop(0, 2), "2→1: via 0 (cost 6) and via 3 (cost 6) tie; smaller ID");
    s.assert_converged("square");
    s.cut(1, 3);
    assert_eq!(s.route(0, 3), s.hop(2, 2), "after the cut, the other path");
    assert_eq!(s.route(1, 3), s.hop(0, 3));
    s.assert_converged("square cut");
    assert!(s.connect(1, 3, 1.0));
    assert_eq!(s.route(0, 3), s.hop(1, 2), "restored: back to the cheap path");
    assert_eq!(s.nodes[0].route(&s.id(3)).map(|r| r.cost), Some(2.0));
    s.assert_converged("square restored");
}

#[test]
fn asymmetric_costs_use_each_senders_own_cost() {
    // The edge u→v weighs what u says about it: 0→1 costs 1, 1→0 costs 9.
    let mut s = Sim::new(3);
    s.connect_costs(0, 1, 1.0, 9.0);
    s.connect(0, 2, 3.0);
    s.connect(2, 1, 3.0);
    assert_eq!(s.route(0, 1), s.hop(1, 1));
    assert_eq!(s.route(1, 0), s.hop(2, 2), "1→2→0 costs 6, less than 9");
    s.assert_converged("asymmetric");
}

#[test]
fn equal_cost_ties_pick_the_smallest_next_hop_and_never_flap() {
    // 0 reaches 5 through 1, 2, 3 or 4 at equal cost and hops: always through 1.
    let mut s = Sim::new(6);
    for m in [4, 3, 2, 1] {
        s.connect(0, m, 1.0);
        s.connect(m, 5, 1.0);
    }
    for round in 0..20 {
        assert_eq!(s.route(0, 5), s.hop(1, 2), "round {round}");
        assert_eq!(s.route(5, 0), s.hop(1, 2), "round {round}");
        s.assert_converged("ties");
        let before = s.routes_changed.clone();
        s.advance(REFRESH); // everyone re-floods; nothing changes
        assert_eq!(s.routes_changed, before, "refreshes changed routes (round {round})");
    }
}

#[test]
fn a_leaving_node_is_forgotten_by_everyone_at_once() {
    // 0 - 1 - 2 - 3, and 4 hanging off 2 (partitioned away when 1 leaves).
    let mut s = Sim::new(5);
    for (a, b) in [(0, 1), (1, 2), (2, 3), (2, 4)] {
        s.connect(a, b, 1.0);
    }
    s.cut(2, 4);
    s.nodes[1].leave();
    s.settle();
    for i in [0, 2, 3] {
        assert!(!s.knows(i, 1), "{i} still knows n01");
        assert_eq!(s.route(i, 1), None, "{i} still routes to n01, which left");
    }
    // The leaver's links drop one by one as it shuts down: it must not come back.
    s.cut(0, 1);
    s.cut(1, 2);
    for i in [0, 2, 3] {
        assert!(!s.knows(i, 1), "n01 resurrected at {i}");
    }
    // A node that missed the departure brings an older copy; the tombstone wins.
    assert!(s.knows(4, 1));
    s.connect(4, 2, 1.0);
    for i in [0, 2, 3, 4] {
        assert!(!s.knows(i, 1), "a stale copy resurrected n01 at {i}");
    }
    s.stopped[1] = true;
    s.advance(NODE_TIMEOUT);
    s.assert_converged("after leaving");
}

#[test]
fn a_silent_node_is_unlisted_at_once_and_forgotten_after_the_grace() {
    let mut s = Sim::new(4);
    for (a, b) in [(0, 1), (1, 2), (2, 3)] {
        s.connect(a, b, 1.0);
    }
    s.stopped[3] = true;
    s.isolate(3);
    for i in 0..3 {
        assert_eq!(s.route(i, 3), None, "{i} still routes to the vanished n03");
        assert!(!s.lists(i, 3), "{i} still lists the unreachable n03");
        assert!(s.knows(i, 3), "{i} dropped n03's entry before forget_unreachable");
    }
    s.advance(FORGET - Duration::from_secs(1));
    assert!((0..3).all(|i| s.knows(i, 3)), "forgotten too early");
    s.advance(Duration::from_secs(1));
    assert!((0..3).all(|i| !s.knows(i, 3)), "not forgotten after forget_unreachable");
    s.advance(NODE_TIMEOUT * 2);
    assert!(
        (0..3).all(|i| (0..3).all(|j| i == j || s.lists(i, j))),
        "a live node expired despite its refreshes"
    );
    s.assert_converged("after expiry");
}

#[test]
fn a_partition_converges_on_both_sides_then_heals() {
    // Two triangles joined by 2 - 3.
    let mut s = Sim::new(6);
    for (a, b) in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)] {
        s.connect(a, b, 1.0);
    }
    assert_eq!(s.route(0, 5), s.hop(2, 3));
    s.cut(2, 3);
    s.assert_converged("split");
    assert_eq!(s.route(0, 5), None);
    assert_eq!(s.route(3, 5), s.hop(5, 1), "each half still routes inside");
    s.set_work(5, vec![wt("cat", "1")]); // a change the other half cannot see yet
    s.advance(Duration::from_secs(15));
    assert!(s.connect(1, 4, 2.0), "heal elsewhere");
    s.assert_converged("healed");
    assert_eq!(s.route(0, 5), s.hop(1, 3));
    assert_eq!(s.nodes[0].route(&s.id(5)).map(|r| r.cost), Some(4.0));
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

#[path = "sim_relay_tests.rs"]
mod relays;

#[path = "sim_identity_tests.rs"]
mod identity;

#[path = "sim_reach_tests.rs"]
mod reach;

#[path = "sim_churn_tests.rs"]
mod churn;
