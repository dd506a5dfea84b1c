//! Deterministic mesh simulations: many `Mesh` state machines wired together in memory,
//! simulated time, a seeded random churn. No sockets, no clocks, no sleeping.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::state::{Action, Admission, LinkId, Mesh, MeshConfig};
use crate::wire::{Frame, Hello, NodeId, PROTOCOL_VERSION, WorkTypeAd};

struct Sim {
    now: Instant,
    ids: Vec<NodeId>,
    nodes: Vec<Mesh>,
    /// (node, link) → (peer node, peer's link)
    links: HashMap<(usize, LinkId), (usize, LinkId)>,
    next_link: LinkId,
    stopped: Vec<bool>,
    duplicate_self: Vec<bool>,
}

fn cfg() -> MeshConfig {
    MeshConfig { refresh: Duration::from_secs(10), node_timeout: Duration::from_secs(40), max_hops: 30 }
}

fn hello(id: &NodeId, epoch: u64) -> Hello {
    Hello { version: PROTOCOL_VERSION, node_id: id.clone(), epoch, caps: 0, idle_timeout_ms: 4000, cost: 1.0 }
}

impl Sim {
    fn new(n: usize) -> Sim {
        let now = Instant::now();
        let ids: Vec<NodeId> = (0..n).map(|i| NodeId::new(format!("n{i:02}")).expect("valid")).collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Mesh::new(id.clone(), 100 + i as u64, false, cfg(), now))
            .collect();
        Sim {
            now,
            ids,
            nodes,
            links: HashMap::new(),
            next_link: 1,
            stopped: vec![false; n],
            duplicate_self: vec![false; n],
        }
    }

    /// Handshakes a link between `a` (dialer) and `b`; returns whether both admitted it.
    fn connect(&mut self, a: usize, b: usize, cost: f64) -> bool {
        let (la, lb) = (self.next_link, self.next_link + 1);
        self.next_link += 2;
        let (ha, hb) =
            (hello(&self.ids[a], self.nodes[a].epoch()), hello(&self.ids[b], self.nodes[b].epoch()));
        let va = self.nodes[a].admit(la, &hb, cost, true);
        let vb = self.nodes[b].admit(lb, &ha, cost, false);
        if va != Admission::Admit || vb != Admission::Admit {
            let now = self.now;
            self.nodes[a].link_down(now, la);
            self.nodes[b].link_down(now, lb);
            self.settle();
            return false;
        }
        self.links.insert((a, la), (b, lb));
        self.links.insert((b, lb), (a, la));
        let now = self.now;
        self.nodes[a].link_up(now, la);
        self.nodes[b].link_up(now, lb);
        self.settle();
        true
    }

    fn links_between(&self, a: usize, b: usize) -> Vec<(LinkId, LinkId)> {
        self.links
            .iter()
            .filter(|((x, _), (y, _))| *x == a && *y == b)
            .map(|((_, la), (_, lb))| (*la, *lb))
            .collect()
    }

    fn drop_link(&mut self, a: usize, la: LinkId) {
        if let Some((b, lb)) = self.links.remove(&(a, la)) {
            self.links.remove(&(b, lb));
            let now = self.now;
            self.nodes[a].link_down(now, la);
            self.nodes[b].link_down(now, lb);
        }
    }

    fn cut(&mut self, a: usize, b: usize) {
        for (la, _) in self.links_between(a, b) {
            self.drop_link(a, la);
        }
        self.settle();
    }

    /// Delivers every pending action until the mesh is quiet.
    fn settle(&mut self) {
        let mut queue: VecDeque<(usize, Action)> = VecDeque::new();
        for _ in 0..100_000 {
            for i in 0..self.nodes.len() {
                queue.extend(self.nodes[i].drain_actions().into_iter().map(|a| (i, a)));
            }
            let Some((i, action)) = queue.pop_front() else { return };
            match action {
                Action::Send { link, frame: Frame::Lsa(lsa) } => {
                    if let Some(&(j, lj)) = self.links.get(&(i, link)) {
                        let now = self.now;
                        self.nodes[j].on_lsa(now, lj, lsa);
                    }
                }
                Action::Send { .. } | Action::RoutesChanged => {}
                Action::Close { link, .. } => self.drop_link(i, link),
                Action::DuplicateSelf { .. } => self.duplicate_self[i] = true,
            }
        }
        panic!("the mesh did not settle");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if !self.stopped[i] {
                n.tick(now);
            }
        }
        self.settle();
    }

    /// Next hop and hop count from `a` to `b`.
    fn route(&self, a: usize, b: usize) -> Option<(String, u8)> {
        self.nodes[a].route(&self.ids[b]).map(|r| (r.next_hop.to_string(), r.hops))
    }

    /// Hop distances over the links currently up (BFS), the ground truth for equal costs.
    fn bfs(&self, from: usize) -> HashMap<usize, u8> {
        let mut dist = HashMap::from([(from, 0u8)]);
        let mut q = VecDeque::from([from]);
        while let Some(u) = q.pop_front() {
            for ((x, _), (y, _)) in &self.links {
                if *x == u && !dist.contains_key(y) {
                    dist.insert(*y, dist[&u] + 1);
                    q.push_back(*y);
                }
            }
        }
        dist
    }
}

#[test]
fn a_line_converges_with_next_hops_and_hop_counts() {
    let mut s = Sim::new(3);
    assert!(s.connect(0, 1, 1.0));
    assert!(s.connect(1, 2, 1.0));
    assert_eq!(s.route(0, 2), Some(("n01".into(), 2)));
    assert_eq!(s.route(2, 0), Some(("n01".into(), 2)));
    assert_eq!(s.route(1, 0), Some(("n00".into(), 1)));
}

#[test]
fn a_square_takes_the_cheaper_path_and_reconverges() {
    let mut s = Sim::new(4);
    s.connect(0, 1, 1.0);
    s.connect(1, 3, 1.0);
    s.connect(0, 2, 5.0);
    s.connect(2, 3, 5.0);
    assert_eq!(s.route(0, 3), Some(("n01".into(), 2)));
    s.cut(1, 3);
    assert_eq!(s.route(0, 3), Some(("n02".into(), 2)), "after the cut, the other path");
    s.connect(1, 3, 1.0);
    assert_eq!(s.route(0, 3), Some(("n01".into(), 2)), "restored, back to the cheap path");
}

#[test]
fn leaving_is_immediate_and_silence_expires() {
    let mut s = Sim::new(3);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    s.nodes[2].leave();
    s.settle();
    assert!(s.nodes[0].known().iter().all(|l| l.origin != s.ids[2]), "n02 forgotten at once");

    let mut s = Sim::new(3);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    s.stopped[2] = true;
    s.cut(1, 2);
    assert_eq!(s.route(0, 2), None, "unreachable at once");
    assert!(s.nodes[0].known().iter().any(|l| l.origin == s.ids[2]), "still remembered");
    for _ in 0..5 {
        s.advance(Duration::from_secs(10));
    }
    assert!(s.nodes[0].known().iter().all(|l| l.origin != s.ids[2]), "forgotten after node_timeout");
}

#[test]
fn a_partition_heals() {
    let mut s = Sim::new(6);
    for (a, b) in [(0, 1), (1, 2), (3, 4), (4, 5), (2, 3)] {
        s.connect(a, b, 1.0);
    }
    assert!(s.route(0, 5).is_some());
    s.cut(2, 3);
    assert_eq!(s.route(0, 5), None);
    assert_eq!(s.route(3, 5), Some(("n04".into(), 2)), "each half still routes inside");
    s.connect(2, 3, 1.0);
    assert_eq!(s.route(0, 5), Some(("n01".into(), 5)));
}

#[test]
fn simultaneous_dials_keep_exactly_one_link() {
    let mut s = Sim::new(2);
    assert!(s.connect(0, 1, 1.0));
    // n01 dials n00 too; n00 (the smaller ID) dialled the link both keep.
    assert!(!s.connect(1, 0, 1.0), "the second link is refused");
    assert_eq!(s.links_between(0, 1).len(), 1);
    assert_eq!(s.route(0, 1), Some(("n01".into(), 1)));
}

#[test]
fn own_id_and_a_live_duplicate_are_refused_at_admission() {
    let mut s = Sim::new(3);
    s.connect(0, 1, 1.0);
    let own = hello(&s.ids[0], 999);
    assert!(matches!(s.nodes[0].admit(77, &own, 1.0, false), Admission::Reject(r) if r.contains("own id")));
    s.connect(1, 2, 1.0);
    // A newcomer claiming n02 (another epoch) knocks on n00, which reaches the real n02.
    let dup = hello(&s.ids[2], 12345);
    assert!(
        matches!(s.nodes[0].admit(78, &dup, 1.0, false), Admission::Reject(r) if r.contains("already in use"))
    );
}

#[test]
fn hop_limit_and_ephemeral_leaves() {
    let now = Instant::now();
    let mut s = Sim::new(5);
    for i in 0..5 {
        let hops = MeshConfig { max_hops: 2, ..cfg() };
        s.nodes[i] = Mesh::new(s.ids[i].clone(), 100 + i as u64, i == 2, hops, now);
    }
    for i in 0..4 {
        s.connect(i, i + 1, 1.0);
    }
    assert_eq!(s.route(0, 1).map(|r| r.1), Some(1));
    assert_eq!(s.route(0, 2).map(|r| r.1), Some(2), "an ephemeral node is reachable");
    assert_eq!(s.route(0, 3), None, "but never a relay (and 3 hops exceed the limit anyway)");
    assert_eq!(s.route(4, 3).map(|r| r.1), Some(1));
}

#[test]
fn work_types_are_visible_everywhere() {
    let mut s = Sim::new(3);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    let now = s.now;
    s.nodes[2].set_work_types(now, vec![WorkTypeAd { name: "cat".into(), version: "1".into() }]);
    s.settle();
    let seen = s.nodes[0].known().into_iter().find(|l| l.origin == s.ids[2]).expect("n02 known");
    assert_eq!(seen.work_types, vec![WorkTypeAd { name: "cat".into(), version: "1".into() }]);
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

#[test]
fn random_churn_always_matches_shortest_paths() {
    let n = 8;
    let mut s = Sim::new(n);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for step in 0..300 {
        let (a, b) = (rng.below(n), rng.below(n));
        if a == b {
            continue;
        }
        if s.links_between(a, b).is_empty() {
            s.connect(a, b, 1.0);
        } else {
            s.cut(a, b);
        }
        if step % 50 == 0 {
            s.advance(Duration::from_secs(10));
        }
        for from in 0..n {
            let truth = s.bfs(from);
            for to in 0..n {
                if from == to {
                    continue;
                }
                let got = s.route(from, to).map(|r| r.1);
                assert_eq!(got, truth.get(&to).copied(), "step {step}: route {from}→{to}");
            }
        }
    }
    let unique: HashSet<(usize, usize)> =
        s.links.keys().map(|(a, _)| *a).zip(s.links.values().map(|(b, _)| *b)).collect();
    assert_eq!(unique.len(), s.links.len(), "never two links between the same pair");
}
