//! Deterministic simulations of netceptor state machines wired together in memory:
//! establishment and its refusals, flooding, routes over a line, forwarding with hop
//! counts, `ping`, `unreach`, duplicate node IDs and idle links.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::*;
use crate::netceptor::wire::DataPacket;

/// Nodes and the wires between their links: (node, link) ↔ (node, link).
struct Sim {
    now: Instant,
    nodes: Vec<Netceptor>,
    wires: HashMap<(usize, LinkId), (usize, LinkId)>,
    closed: Vec<(usize, CloseReason)>,
    delivered: Vec<(usize, String, String, Bytes)>,
    duplicates: Vec<usize>,
    next_link: LinkId,
    /// Every packet sent: (node, link, when).
    sent: Vec<(usize, LinkId, Instant)>,
}

impl Sim {
    fn new(ids: &[&str]) -> Sim {
        let now = Instant::now();
        let wall = time::OffsetDateTime::now_utc();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Netceptor::new(
                    Config::new(NodeId::new(id).expect("id"), new_epoch(1000 + i as u64, 7)),
                    now,
                    wall,
                )
            })
            .collect();
        Sim {
            now,
            nodes,
            wires: HashMap::new(),
            closed: Vec::new(),
            delivered: Vec::new(),
            duplicates: Vec::new(),
            next_link: 1,
            sent: Vec::new(),
        }
    }

    fn connect(&mut self, a: usize, b: usize, cost: f64) -> (LinkId, LinkId) {
        let (la, lb) = (self.next_link, self.next_link + 1);
        self.next_link += 2;
        self.wires.insert((a, la), (b, lb));
        self.wires.insert((b, lb), (a, la));
        self.nodes[a].link_opened(self.now, la, cost);
        self.nodes[b].link_opened(self.now, lb, cost);
        (la, lb)
    }

    /// Delivers every pending action; then advances time by `step` up to `total`.
    fn run(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        loop {
            self.pump();
            if self.now >= end {
                break;
            }
            self.now += step;
            for n in &mut self.nodes {
                n.tick(self.now);
            }
        }
    }

    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(a) = self.nodes[i].poll_action() {
                    any = true;
                    match a {
                        Action::Send { link, packet } => {
                            self.sent.push((i, link, self.now));
                            if let Some(&(j, lj)) = self.wires.get(&(i, link)) {
                                self.nodes[j].link_packet(self.now, lj, &packet);
                            }
                        }
                        Action::Close { link, reason } => {
                            self.closed.push((i, reason));
                            if let Some((j, lj)) = self.wires.remove(&(i, link)) {
                                self.wires.remove(&(j, lj));
                                self.nodes[j].link_closed(self.now, lj);
                            }
                            self.nodes[i].link_closed(self.now, link);
                        }
                        Action::Deliver { service, from_node, payload, .. } => {
                            self.delivered.push((i, service, from_node, payload))
                        }
                        Action::Duplicate { .. } => self.duplicates.push(i),
                        Action::Up { .. } => {}
                    }
                }
            }
            if !any {
                return;
            }
        }
        panic!("actions never settled");
    }
}

const MS100: Duration = Duration::from_millis(100);

#[test]
fn two_nodes_link_and_list_each_other() {
    let mut s = Sim::new(&["a", "b"]);
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    assert_eq!(s.nodes[0].established().count(), 1);
    assert_eq!(s.nodes[0].next_hop("b"), Some("b"));
    assert_eq!(s.nodes[1].next_hop("a"), Some("a"));
    assert!(s.closed.is_empty(), "{:?}", s.closed);
    // Periodic updates keep the link past the idle timeout.
    s.run(Duration::from_secs(60), Duration::from_secs(1));
    assert!(s.closed.is_empty(), "{:?}", s.closed);
}

#[test]
fn routes_and_forwards_over_a_line_with_hop_counts() {
    let mut s = Sim::new(&["a", "b", "c"]);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 2.5);
    s.run(Duration::from_secs(2), MS100);
    assert_eq!(s.nodes[0].next_hop("c"), Some("b"));
    assert_eq!(s.nodes[2].next_hop("a"), Some("b"));
    s.nodes[0].bind("probe");
    s.nodes[0].send_datagram(s.now, "probe", "c", "ping", Bytes::new()).expect("route");
    s.pump();
    assert!(s.delivered.iter().any(|(i, svc, from, _)| *i == 0 && svc == "probe" && from == "c"));
    // A packet with no hops left is not forwarded; its source hears "message expired".
    s.nodes[0].bind("trace");
    let hash = |n: &str| crate::netceptor::names::name_hash(n);
    let expired = DataPacket {
        hops: 0,
        from_hash: hash("a"),
        to_hash: hash("c"),
        from_service: "trace".into(),
        to_service: "ping".into(),
        payload: Bytes::new(),
    };
    let (link_ab, _) = s.nodes[1]
        .established()
        .find(|(_, p, _)| p.as_str() == "a")
        .map(|(l, p, _)| (l, p.clone()))
        .expect("link");
    s.nodes[1].link_packet(s.now, link_ab, &Packet::Data(expired).encode().expect("encodes"));
    s.pump();
    let unreach = s.delivered.iter().find(|(i, svc, _, _)| *i == 0 && svc == "unreach").expect("unreach");
    let m = crate::netceptor::wire::decode_unreachable(&unreach.3).expect("decodes");
    assert_eq!((m.problem.as_str(), m.to_node.as_str()), (data::EXPIRED, "c"));
}

#[test]
fn unknown_service_is_reported_unreachable() {
    let mut s = Sim::new(&["a", "b"]);
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    s.nodes[0].bind("x");
    s.nodes[0].send_datagram(s.now, "x", "b", "nothere", Bytes::from_static(b"hi")).expect("route");
    s.pump();
    let (_, _, from, payload) =
        s.delivered.iter().find(|(i, svc, _, _)| *i == 0 && svc == "unreach").expect("unreach");
    assert_eq!(from, "b");
    assert_eq!(
        crate::netceptor::wire::decode_unreachable(payload).expect("json").problem,
        data::SERVICE_UNKNOWN
    );
}

#[test]
fn refusals_close_links() {
    let mut s = Sim::new(&["a", "a"]);
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    assert!(s.closed.iter().any(|(_, r)| *r == CloseReason::SelfId), "{:?}", s.closed);

    let mut s = Sim::new(&["a", "b"]);
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    assert!(s.closed.iter().any(|(_, r)| matches!(r, CloseReason::Duplicate(_))), "{:?}", s.closed);
    assert_eq!(s.nodes[0].established().count(), 1, "the first link stays");

    let mut s = Sim::new(&["a", "b"]);
    s.nodes[0].cfg.allowed_peers = vec![NodeId::new("c").expect("id")];
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    assert!(s.closed.iter().any(|(i, r)| *i == 0 && matches!(r, CloseReason::NotAllowed(_))));
    assert!(s.closed.iter().any(|(i, r)| *i == 1 && *r == CloseReason::Rejected));
}

#[test]
fn cost_disagreement_closes_the_link() {
    let mut s = Sim::new(&["a", "b"]);
    let (la, lb) = (s.next_link, s.next_link + 1);
    s.next_link += 2;
    s.wires.insert((0, la), (1, lb));
    s.wires.insert((1, lb), (0, la));
    s.nodes[0].link_opened(s.now, la, 1.0);
    s.nodes[1].link_opened(s.now, lb, 2.0);
    s.run(Duration::from_secs(1), MS100);
    assert!(s.closed.iter().any(|(_, r)| *r == CloseReason::CostMismatch), "{:?}", s.closed);
}

#[test]
fn a_silent_peer_that_never_answers_is_given_up() {
    let mut s = Sim::new(&["a"]);
    s.nodes[0].link_opened(s.now, 1, 1.0);
    s.run(Duration::from_secs(15), MS100);
    assert!(s.closed.iter().any(|(_, r)| *r == CloseReason::InitTimeout), "{:?}", s.closed);
}

#[test]
fn newer_duplicate_is_told_to_stop() {
    // "x" (older epoch) and "x" (newer) join through a and b.
    let mut s = Sim::new(&["x", "a", "b", "x"]);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    s.run(Duration::from_secs(2), MS100);
    s.connect(2, 3, 1.0);
    s.run(Duration::from_secs(25), MS100);
    assert!(!s.duplicates.is_empty(), "the newer incarnation is told to stop");
    assert!(s.duplicates.iter().all(|i| *i == 3), "only the newer incarnation stops: {:?}", s.duplicates);
}

#[test]
fn service_ads_flood_and_newer_wins() {
    let mut s = Sim::new(&["a", "b", "c"]);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    s.run(Duration::from_secs(1), MS100);
    let svc = LocalService { name: "control".into(), conn_type: 1, tags: None, work_commands: None };
    s.nodes[0].set_services(s.now, vec![svc]);
    s.pump();
    assert_eq!(s.nodes[2].ads().filter(|a| a.node_id == "a").count(), 1);
    s.run(Duration::from_secs(1), MS100);
    s.nodes[0].set_services(s.now, vec![]);
    s.pump();
    assert_eq!(s.nodes[2].ads().count(), 0, "a cancel removes the ad everywhere");
}

#[test]
fn limits_bound_the_database() {
    let mut s = Sim::new(&["a", "b"]);
    s.nodes[0].cfg.limits.max_nodes = 1;
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    let (link, _) = s.nodes[0].established().map(|(l, p, _)| (l, p.clone())).next().expect("link");
    for i in 0..10 {
        let u = RoutingUpdate {
            node_id: format!("n{i}"),
            update_id: format!("u{i}"),
            epoch: 1,
            sequence: 1,
            connections: BTreeMap::new(),
            forwarding_node: "b".into(),
            suspected_duplicate: 0,
        };
        s.nodes[0].link_packet(s.now, link, &Packet::Routing(u).encode().expect("encodes"));
    }
    assert!(s.nodes[0].known_nodes().count() <= 1);
    assert!(s.nodes[0].drops.over_limits >= 9);
}

fn update(node: &str, id: &str, seq: u64, conns: &[(&str, f64)], fwd: &str) -> Bytes {
    let u = RoutingUpdate {
        node_id: node.into(),
        update_id: id.into(),
        epoch: 1,
        sequence: seq,
        connections: conns.iter().map(|(k, c)| ((*k).to_owned(), *c)).collect(),
        forwarding_node: fwd.into(),
        suspected_duplicate: 0,
    };
    Packet::Routing(u).encode().expect("encodes")
}

#[test]
fn native_ids_cannot_be_claimed_over_netceptor() {
    // a – b – c; "c" is a node a's native plane holds.
    let mut s = Sim::new(&["a", "b", "c"]);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    s.run(Duration::from_secs(12), MS100);
    assert_eq!(s.nodes[0].next_hop("c"), Some("b"));
    let svc = LocalService { name: "control".into(), conn_type: 1, tags: None, work_commands: None };
    s.nodes[2].set_services(s.now, vec![svc.clone()]);
    s.pump();
    assert_eq!(s.nodes[0].ads().filter(|a| a.node_id == "c").count(), 1);

    s.nodes[0].set_reserved(s.now, ["c".to_owned(), "a".to_owned()].into());
    s.run(Duration::from_secs(25), MS100);
    assert_eq!(s.nodes[0].next_hop("b"), Some("b"), "its own ID in the set changes nothing");
    assert_eq!(s.nodes[0].next_hop("c"), None, "no netceptor route to a native node");
    assert!(s.nodes[0].known_nodes().all(|n| n != "c"), "what b said about c is forgotten");
    assert_eq!(s.nodes[0].ads().filter(|a| a.node_id == "c").count(), 0);
    assert!(s.nodes[0].edges().values().all(|e| !e.contains_key("c")), "nobody's link to c is kept");
    assert!(s.nodes[0].drops.reserved > 0, "c's updates keep coming and are dropped");
    s.nodes[2].set_services(s.now, vec![svc]);
    s.pump();
    assert_eq!(s.nodes[0].ads().filter(|a| a.node_id == "c").count(), 0);
    // b is unaffected.
    assert_eq!(s.nodes[1].next_hop("c"), Some("c"));
}

#[test]
fn a_native_id_links_only_with_a_certificate_naming_it() {
    let mut s = Sim::new(&["a", "b"]);
    s.nodes[0].set_reserved(s.now, ["b".to_owned()].into());
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    assert!(
        s.closed.iter().any(|(i, r)| *i == 0 && *r == CloseReason::Reserved(NodeId::new("b").expect("id"))),
        "{:?}",
        s.closed
    );
    assert_eq!(s.nodes[0].established().count(), 0);

    // The same peer proving "b" with its certificate links and is routed to.
    let mut s = Sim::new(&["a", "b"]);
    s.nodes[0].set_reserved(s.now, ["b".to_owned()].into());
    let (la, lb) = (1, 2);
    s.wires.insert((0, la), (1, lb));
    s.wires.insert((1, lb), (0, la));
    s.nodes[0].link_opened_with(s.now, la, 1.0, Some(vec!["b".into()]));
    s.nodes[1].link_opened(s.now, lb, 1.0);
    s.run(Duration::from_secs(1), MS100);
    assert_eq!(s.nodes[0].next_hop("b"), Some("b"), "{:?}", s.closed);
}

#[test]
fn a_certificate_naming_another_node_is_refused() {
    let mut s = Sim::new(&["a", "b"]);
    let (la, lb) = (1, 2);
    s.wires.insert((0, la), (1, lb));
    s.wires.insert((1, lb), (0, la));
    s.nodes[0].link_opened_with(s.now, la, 1.0, Some(vec!["z".into()]));
    s.nodes[1].link_opened(s.now, lb, 1.0);
    s.run(Duration::from_secs(1), MS100);
    assert!(
        s.closed
            .iter()
            .any(|(i, r)| *i == 0 && *r == CloseReason::NotCertified(NodeId::new("b").expect("id"))),
        "{:?}",
        s.closed
    );
}

#[test]
fn an_advertisement_flood_is_dropped_then_cut_off() {
    let mut s = Sim::new(&["a", "b"]);
    s.nodes[0].cfg.limits.advert_rate = 1000;
    s.nodes[0].cfg.limits.advert_burst = 2000;
    s.nodes[0].cfg.limits.advert_drops_to_close = 50;
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    let (link, _) = s.nodes[0].established().map(|(l, p, _)| (l, p.clone())).next().expect("link");
    for i in 0..200 {
        let p = update(&format!("n{i}"), &format!("u{i}"), 1, &[], "b");
        s.nodes[0].link_packet(s.now, link, &p);
    }
    assert!(s.nodes[0].known_nodes().count() < 30, "most of the flood is dropped");
    assert!(s.nodes[0].drops.advert_rate >= 150);
    s.pump();
    assert!(s.closed.iter().any(|(i, r)| *i == 0 && *r == CloseReason::AdvertFlood), "{:?}", s.closed);
}

#[test]
fn a_peer_cannot_claim_this_nodes_id_or_route_through_it() {
    let mut s = Sim::new(&["a", "b"]);
    s.connect(0, 1, 1.0);
    s.run(Duration::from_secs(1), MS100);
    let (link, _) = s.nodes[0].established().map(|(l, p, _)| (l, p.clone())).next().expect("link");
    // b floods updates as if from "a" (our ID) listing fake links.
    for i in 0..5 {
        let p = update("a", &format!("self{i}"), 100 + i, &[("ghost", 1.0)], "b");
        s.nodes[0].link_packet(s.now, link, &p);
    }
    s.run(Duration::from_secs(1), MS100);
    assert!(s.nodes[0].known_nodes().all(|n| n != "a" && n != "ghost"));
    assert_eq!(s.nodes[0].next_hop("ghost"), None);
    assert!(s.duplicates.is_empty(), "same epoch rules: no accusation, no stop");
}

impl Sim {
    /// A session carried over the native link between `a` and `b`: each end's certificate
    /// is the native peer's ID, and the link relays reserved IDs.
    fn connect_carried(&mut self, a: usize, b: usize) -> (LinkId, LinkId) {
        let (la, lb) = (self.next_link, self.next_link + 1);
        self.next_link += 2;
        self.wires.insert((a, la), (b, lb));
        self.wires.insert((b, lb), (a, la));
        let (ida, idb) = (self.nodes[a].id().as_str().to_owned(), self.nodes[b].id().as_str().to_owned());
        self.nodes[a].link_opened_with(self.now, la, 1.0, Some(vec![idb]));
        self.nodes[a].mark_carried(la);
        self.nodes[b].link_opened_with(self.now, lb, 1.0, Some(vec![ida]));
        self.nodes[b].mark_carried(lb);
        (la, lb)
    }
}

#[test]
fn carried_links_relay_reserved_ids_and_go_links_still_cannot() {
    // g (Go) – h ⇐ m ⇐ l (receptord, carried over native links); e is a second Go peer of h.
    let (g, h, m, l, e) = (0, 1, 2, 3, 4);
    let mut s = Sim::new(&["g", "h", "m", "l", "e"]);
    let native: std::collections::BTreeSet<String> =
        ["h", "m", "l"].iter().map(|n| (*n).to_owned()).collect();
    for n in [h, m, l] {
        s.nodes[n].set_reserved(s.now, native.clone());
    }
    s.connect(g, h, 1.0);
    let (_, eh) = s.connect(e, h, 1.0);
    s.connect_carried(h, m);
    s.connect_carried(m, l);
    s.run(Duration::from_secs(25), MS100);
    assert_eq!(s.nodes[h].next_hop("l"), Some("m"), "two native hops away, relayed by m: {:?}", s.closed);
    assert_eq!(s.nodes[g].next_hop("l"), Some("h"));
    assert_eq!(s.nodes[l].next_hop("g"), Some("m"));
    assert!(s.closed.is_empty(), "{:?}", s.closed);

    // A Go peer cannot claim l, nor draw a cheaper path to it through itself.
    let before = s.nodes[h].drops.reserved;
    s.nodes[h].link_packet(s.now, eh, &update("l", "forged-l", 99, &[("e", 0.01)], "e"));
    s.nodes[h].link_packet(s.now, eh, &update("e", "e-lies", 99, &[("h", 1.0), ("l", 0.01)], "e"));
    s.run(Duration::from_secs(1), MS100);
    assert!(s.nodes[h].drops.reserved > before, "the claim to be l is dropped");
    assert!(
        !s.nodes[h].edges().get("e").is_some_and(|c| c.contains_key("l")),
        "e's link to l is not believed"
    );
    assert_eq!(s.nodes[h].next_hop("l"), Some("m"));
}

#[test]
fn a_node_learned_over_a_carried_link_is_kept_when_it_becomes_reserved() {
    // h ⇐ m ⇐ l: h's native plane learns of l only after its netceptor update arrived.
    let (h, m, l) = (0, 1, 2);
    let mut s = Sim::new(&["h", "m", "l"]);
    s.connect_carried(h, m);
    s.connect_carried(m, l);
    s.run(Duration::from_secs(12), MS100);
    assert_eq!(s.nodes[h].next_hop("l"), Some("m"));
    s.nodes[h].set_reserved(s.now, ["m".to_owned(), "l".to_owned()].into());
    s.run(Duration::from_secs(1), MS100);
    assert_eq!(s.nodes[h].next_hop("l"), Some("m"), "vouched for by a carried link: not forgotten");
    assert!(s.nodes[h].known_nodes().any(|n| n == "l"));
}

/// Issue 22: a hub relays every leaf's periodic update to every other leaf. Relays that
/// tell nothing new go out in batches, so a link gets them in one burst per
/// [`RELAY_BATCH`] (one write, one wake-up of the peer) rather than one per leaf; nothing
/// is lost (every leaf still hears every other one each period) and an unchanged mesh
/// costs no route computation.
#[test]
fn a_hub_relays_periodic_updates_in_batches() {
    let n = 30;
    let ids: Vec<String> =
        std::iter::once("hub".to_owned()).chain((0..n).map(|i| format!("leaf{i}"))).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut s = Sim::new(&refs);
    // Leaves join 100 ms apart, so their periodic updates fall at 30 different moments.
    let mut to_leaf0 = 0;
    for i in 1..=n {
        let (hub_side, _) = s.connect(0, i, 1.0);
        if i == 1 {
            to_leaf0 = hub_side;
        }
        s.run(MS100, MS100);
    }
    s.run(Duration::from_secs(30), MS100);
    for i in 1..=n {
        assert_eq!(s.nodes[i].routes().len(), n, "leaf {i} routes to the hub and every other leaf");
    }
    let (from, generation, batches) = (s.now, s.nodes[0].routes_generation, s.nodes[0].relay_batches);
    s.sent.clear();
    s.run(Duration::from_secs(60), MS100);
    let to0: Vec<Instant> =
        s.sent.iter().filter(|(n, l, t)| *n == 0 && *l == to_leaf0 && *t > from).map(|e| e.2).collect();
    let moments: std::collections::BTreeSet<Instant> = to0.iter().copied().collect();
    // The other 29 leaves' updates, six periods each (and the hub's own, and ads).
    assert!(to0.len() >= (n - 1) * 6, "{} packets to leaf0 in a minute", to0.len());
    // One relay burst a second at most, plus the hub's own six updates and its ads; sent
    // one by one they would fall at about 30 × 6 moments.
    let bound = (60 / RELAY_BATCH.as_secs()) as usize + 6 + 2;
    assert!(moments.len() <= bound, "{} send moments to leaf0 in a minute (at most {bound})", moments.len());
    assert!(s.nodes[0].relay_batches > batches);
    assert_eq!(s.nodes[0].routes_generation, generation, "nothing changed: no route computation");

    // News is not held: a new leaf's first update reaches the others at once.
    let late = NodeId::new("late").expect("id");
    s.nodes.push(Netceptor::new(
        Config::new(late, new_epoch(5000, 7)),
        s.now,
        time::OffsetDateTime::now_utc(),
    ));
    s.connect(0, n + 1, 1.0);
    s.run(Duration::from_millis(400), MS100);
    assert!(
        s.nodes[1].known_nodes().any(|k| k == "late"),
        "the new leaf's first update is relayed at once, not held for the batch"
    );
}
