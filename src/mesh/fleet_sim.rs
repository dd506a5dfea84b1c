//! A deterministic simulation of a fleet: thousands of [`Mesh`] state machines in the fleet
//! shape (fully meshed hubs, every leaf linked to two hubs), wired together in memory.
//!
//! It exists so the scale behaviour of the routing protocol (what a hub and a leaf send per
//! minute, how the mesh reconverges after a hub fails) is proven and measured on the pure
//! state machines, at sizes no machine runs as real daemons: the fleet simulation tests and
//! `make bench-fleet` both drive it. Frames travel in rounds, like the driver's event
//! batches: every frame sent in one round is delivered in the next, and each node drains its
//! actions (one route computation, one origination) once per round. No sockets, no clock
//! but a simulated one, no randomness.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::state::{Action, Admission, LinkId, Mesh, MeshConfig, Role};
use crate::wire::{Frame, Hello, Name, NodeId, PROTOCOL_VERSION, WorkTypeAd, caps};

/// Hubs and leaves of a fleet.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub hubs: usize,
    pub leaves: usize,
}

impl Shape {
    /// `nodes` in all; three hubs up to 1,000 nodes, then enough hubs that none has more
    /// links than one advertisement can list (`wire::MAX_LSA_ITEMS`).
    pub fn for_nodes(nodes: usize) -> Shape {
        let mut hubs = 3;
        while 2 * (nodes - hubs) / hubs + hubs > crate::wire::MAX_LSA_ITEMS * 5 / 6 {
            hubs += 1;
        }
        Shape { hubs, leaves: nodes - hubs }
    }

    pub fn nodes(&self) -> usize {
        self.hubs + self.leaves
    }

    /// The two hubs of leaf `l` (pairs spread over all hubs).
    pub fn hubs_of(&self, l: usize) -> (usize, usize) {
        let a = l % self.hubs;
        let b = (a + 1 + (l / self.hubs) % (self.hubs - 1)) % self.hubs;
        (a, b)
    }
}

/// Advertisements one node sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sent {
    pub frames: u64,
    pub bytes: u64,
}

/// The fleet: node `i < hubs` is hub `i`, the rest are leaves.
pub struct FleetSim {
    pub shape: Shape,
    pub now: Instant,
    pub nodes: Vec<Mesh>,
    pub down: Vec<bool>,
    /// (node, link) → (peer node, peer link), both directions.
    wires: BTreeMap<(usize, LinkId), (usize, LinkId)>,
    next_link: LinkId,
    queue: Vec<(usize, LinkId, Frame)>,
    /// (receiver, origin, epoch, seq) of every advertisement queued this round: a second
    /// copy would reach its receiver after the first and be dropped as stale, so it is
    /// counted as sent but not queued (the link's advertisement lane coalesces likewise).
    queued: std::collections::HashSet<(usize, NodeId, u64, u64)>,
    /// Advertisements sent by each node since the counters were last reset.
    pub sent: Vec<Sent>,
    /// Rounds run since the counters were last reset.
    pub rounds: u64,
}

/// The work type every leaf advertises (so hubs can be checked to list it).
pub fn leaf_work() -> Vec<WorkTypeAd> {
    vec![WorkTypeAd {
        name: Name::new("ansible-runner").expect("valid"),
        version: Name::new("1").expect("valid"),
    }]
}

impl FleetSim {
    /// Builds the fleet with `cfg` (its `role` is set per node) and brings it up: the hub
    /// mesh first, then the leaves in batches of `batch`, each batch settled.
    pub fn start(shape: Shape, cfg: &MeshConfig, batch: usize) -> FleetSim {
        let now = Instant::now();
        let mut nodes = Vec::with_capacity(shape.nodes());
        for i in 0..shape.nodes() {
            let mut c = cfg.clone();
            c.role = if i < shape.hubs { Role::Hub } else { Role::Leaf };
            let epoch = 1_000 + i as u64;
            nodes.push(Mesh::new(Self::name(&shape, i), epoch, false, c, now));
        }
        let mut s = FleetSim {
            shape,
            now,
            nodes,
            down: vec![false; shape.nodes()],
            wires: BTreeMap::new(),
            next_link: 1,
            queue: Vec::new(),
            queued: std::collections::HashSet::new(),
            sent: vec![Sent::default(); shape.nodes()],
            rounds: 0,
        };
        for a in 0..shape.hubs {
            for b in a + 1..shape.hubs {
                s.link(a, b);
            }
        }
        s.settle();
        for first in (0..shape.leaves).step_by(batch.max(1)) {
            for l in first..(first + batch).min(shape.leaves) {
                let i = shape.hubs + l;
                let (a, b) = shape.hubs_of(l);
                s.nodes[i].set_work_types(now, leaf_work());
                s.link(i, a);
                s.link(i, b);
            }
            s.settle();
            if std::env::var_os("FLEET_SIM_TRACE").is_some() {
                eprintln!("batch {first}: {} rounds so far", s.rounds);
            }
        }
        s
    }

    pub fn name(shape: &Shape, i: usize) -> NodeId {
        let name = if i < shape.hubs { format!("hub-{i:03}") } else { format!("leaf-{:05}", i - shape.hubs) };
        NodeId::new(name).expect("valid id")
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].me().clone()
    }

    fn hello(&self, i: usize) -> Hello {
        let leaf = if self.nodes[i].role() == Role::Leaf { caps::LEAF } else { 0 };
        Hello {
            version: PROTOCOL_VERSION,
            node_id: self.id(i),
            epoch: self.nodes[i].epoch(),
            caps: caps::STREAMS | leaf,
            idle_timeout_ms: 5000,
            cost: 1.0,
        }
    }

    /// `a` dials `b`; both admit, the link comes up on both sides (frames wait for a round).
    pub fn link(&mut self, a: usize, b: usize) -> bool {
        let (la, lb) = (self.next_link, self.next_link + 1);
        self.next_link += 2;
        let (ha, hb) = (self.hello(a), self.hello(b));
        let va = self.nodes[a].admit(la, &hb, 1.0, true, hb.not_relay());
        let vb = self.nodes[b].admit(lb, &ha, 1.0, false, ha.not_relay());
        if va != Admission::Admit || vb != Admission::Admit {
            self.nodes[a].link_down(self.now, la);
            self.nodes[b].link_down(self.now, lb);
            return false;
        }
        self.wires.insert((a, la), (b, lb));
        self.wires.insert((b, lb), (a, la));
        self.nodes[a].link_up(self.now, la);
        self.nodes[b].link_up(self.now, lb);
        true
    }

    /// Node `i` crashes: every link of it drops (its peers see the connections close).
    pub fn crash(&mut self, i: usize) {
        let mine: Vec<(LinkId, (usize, LinkId))> =
            self.wires.range((i, 0)..(i + 1, 0)).map(|(k, v)| (k.1, *v)).collect();
        for (l, (j, lj)) in mine {
            self.wires.remove(&(i, l));
            self.wires.remove(&(j, lj));
            self.nodes[j].link_down(self.now, lj);
        }
        self.down[i] = true;
    }

    /// Restarts a crashed leaf as a new incarnation and links it to its hubs again.
    pub fn restart_leaf(&mut self, i: usize, epoch: u64) {
        let cfg = self.nodes[i].config().clone();
        self.nodes[i] = Mesh::new(self.id(i), epoch, false, cfg, self.now);
        self.down[i] = false;
        self.nodes[i].set_work_types(self.now, leaf_work());
        let (a, b) = self.shape.hubs_of(i - self.shape.hubs);
        self.link(i, a);
        self.link(i, b);
    }

    /// Every node drains its actions once; what they send waits for the next round.
    fn drain(&mut self) -> bool {
        let mut acted = false;
        for i in 0..self.nodes.len() {
            if self.down[i] {
                continue;
            }
            for action in self.nodes[i].drain_actions() {
                acted = true;
                match action {
                    Action::Send { link, frame } => {
                        if let Some(&(j, lj)) = self.wires.get(&(i, link)) {
                            let len = match &frame {
                                Frame::Lsa(lsa) => lsa.encoded_len(),
                                other => other.encode().len(),
                            };
                            self.sent[i].frames += 1;
                            self.sent[i].bytes += len as u64;
                            if let Frame::Lsa(lsa) = &frame {
                                if !self.queued.insert((j, lsa.origin.clone(), lsa.epoch, lsa.seq)) {
                                    continue;
                                }
                            }
                            self.queue.push((j, lj, frame));
                        }
                    }
                    Action::Close { link, .. } => {
                        if let Some((j, lj)) = self.wires.remove(&(i, link)) {
                            self.wires.remove(&(j, lj));
                            self.nodes[i].link_down(self.now, link);
                            self.nodes[j].link_down(self.now, lj);
                        }
                    }
                    Action::RoutesChanged | Action::DuplicateSelf { .. } => {}
                }
            }
        }
        acted
    }

    /// Runs rounds until nothing moves; the number of rounds it took.
    pub fn settle(&mut self) -> u64 {
        let mut rounds = 0;
        loop {
            let acted = self.drain();
            if self.queue.is_empty() {
                if acted {
                    continue;
                }
                return rounds;
            }
            rounds += 1;
            self.rounds += 1;
            assert!(rounds < 10_000, "the fleet did not settle");
            self.queued.clear();
            for (j, lj, frame) in std::mem::take(&mut self.queue) {
                if self.down[j] || !self.wires.contains_key(&(j, lj)) {
                    continue;
                }
                if let Frame::Lsa(lsa) = frame {
                    self.nodes[j].on_lsa(self.now, lj, lsa);
                }
            }
        }
    }

    /// Lets `d` pass in steps of `step`, ticking every running node whose deadline is due.
    pub fn advance(&mut self, d: Duration, step: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + step).min(end);
            let now = self.now;
            for i in 0..self.nodes.len() {
                if !self.down[i] && self.nodes[i].next_deadline() <= now {
                    self.nodes[i].tick(now);
                }
            }
            self.settle();
        }
    }

    pub fn reset_counters(&mut self) {
        self.sent.iter_mut().for_each(|s| *s = Sent::default());
        self.rounds = 0;
    }

    /// Frames and bytes per node per minute over `window`: (hubs average, hubs max, leaves
    /// average, leaves max), each as (frames, bytes).
    pub fn per_minute(&self, window: Duration) -> [(f64, f64); 4] {
        let minutes = window.as_secs_f64() / 60.0;
        let stats = |range: std::ops::Range<usize>| {
            let live: Vec<&Sent> = range.filter(|&i| !self.down[i]).map(|i| &self.sent[i]).collect();
            let n = live.len().max(1) as f64;
            let avg = (
                live.iter().map(|s| s.frames as f64).sum::<f64>() / n / minutes,
                live.iter().map(|s| s.bytes as f64).sum::<f64>() / n / minutes,
            );
            let max = (
                live.iter().map(|s| s.frames).max().unwrap_or(0) as f64 / minutes,
                live.iter().map(|s| s.bytes).max().unwrap_or(0) as f64 / minutes,
            );
            (avg, max)
        };
        let (h_avg, h_max) = stats(0..self.shape.hubs);
        let (l_avg, l_max) = stats(self.shape.hubs..self.nodes.len());
        [h_avg, h_max, l_avg, l_max]
    }

    /// Checks every running node's view against the fleet's ground truth; the first thing
    /// wrong. Hubs list every running node with its work types and route to it over the
    /// cheapest path (ties to the smallest next hop); leaves route to their hubs directly
    /// and reach everything else through their smallest-ID running hub.
    pub fn check(&self) -> Result<(), String> {
        let shape = self.shape;
        let live_hubs: Vec<usize> = (0..shape.hubs).filter(|&h| !self.down[h]).collect();
        for &h in &live_hubs {
            let known: BTreeMap<NodeId, Vec<WorkTypeAd>> =
                self.nodes[h].known().into_iter().map(|l| (l.origin, l.work_types)).collect();
            let live = (0..self.nodes.len()).filter(|&i| !self.down[i]).count();
            if known.len() != live {
                return Err(format!("hub {h} lists {} nodes, {live} are running", known.len()));
            }
            for t in (0..self.nodes.len()).filter(|&t| t != h && !self.down[t]) {
                let want = self.expected_hop(h, t);
                let got = self.nodes[h].route(&self.id(t)).map(|r| (r.next_hop.clone(), r.hops));
                if got.as_ref() != Some(&want) {
                    return Err(format!("hub {h} → {t}: route {got:?}, expected {want:?}"));
                }
                if t >= shape.hubs && known.get(&self.id(t)) != Some(&leaf_work()) {
                    return Err(format!("hub {h} does not list leaf {t} with its work types"));
                }
            }
        }
        for i in (shape.hubs..self.nodes.len()).filter(|&i| !self.down[i]) {
            let (a, b) = shape.hubs_of(i - shape.hubs);
            let hubs: Vec<usize> = [a, b].into_iter().filter(|&h| !self.down[h]).collect();
            let mesh = &self.nodes[i];
            if mesh.routes().len() != hubs.len() || hubs.iter().any(|&h| mesh.route(&self.id(h)).is_none()) {
                return Err(format!(
                    "leaf {i} routes {:?}, its live hubs are {hubs:?}",
                    mesh.routes().keys()
                ));
            }
            let want = hubs.iter().map(|&h| self.id(h)).min();
            if mesh.default_route().map(|d| d.1.clone()) != want {
                return Err(format!("leaf {i}: default route {:?}, expected {want:?}", mesh.default_route()));
            }
            if mesh.known().len() != 1 {
                return Err(format!(
                    "leaf {i} lists {} nodes (a leaf holds no database)",
                    mesh.known().len()
                ));
            }
        }
        Ok(())
    }

    /// (next hop, hops) from hub `h` to `t` in the fleet as it runs now.
    fn expected_hop(&self, h: usize, t: usize) -> (NodeId, u8) {
        if t < self.shape.hubs {
            return (self.id(t), 1);
        }
        let (a, b) = self.shape.hubs_of(t - self.shape.hubs);
        if a == h || b == h {
            return (self.id(t), 1);
        }
        let via = [a, b].into_iter().filter(|&x| !self.down[x]).map(|x| self.id(x)).min();
        (via.expect("a leaf with a running hub"), 2)
    }
}
