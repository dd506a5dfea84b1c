//! Fleet-scale simulations of the roles and advertisement rules (correctness, not time):
//! hubs know every node and route to it, leaves hold nothing but reach everything through a
//! default route, leaves cost O(1) advertisements per minute, and a failed hub or leaf is
//! absorbed. Driven by [`FleetSim`].

use std::time::Duration;

use super::fleet_sim::{FleetSim, Shape};
use super::state::{LinkId, MeshConfig};
use crate::wire::{Hello, Lsa, PROTOCOL_VERSION, caps};

fn cfg() -> MeshConfig {
    MeshConfig::default()
}

fn check(s: &FleetSim, ctx: &str) {
    if let Err(e) = s.check() {
        panic!("{ctx}: {e}");
    }
}

#[test]
fn a_small_fleet_converges_and_absorbs_leaf_crashes_restarts_and_a_hub_failure() {
    let shape = Shape { hubs: 3, leaves: 40 };
    let mut s = FleetSim::start(shape, &cfg(), 7);
    check(&s, "started");
    // A crashed leaf is unlisted by every hub as soon as its links drop.
    let leaf = shape.hubs + 5;
    s.crash(leaf);
    s.settle();
    check(&s, "leaf crashed");
    for h in 0..shape.hubs {
        assert!(!s.nodes[h].knows(&s.id(leaf)), "hub {h} still lists the crashed leaf");
    }
    // The forgotten entry goes after the grace; the leaf comes back as a new incarnation.
    s.advance(cfg().forget_unreachable * 2, Duration::from_secs(1));
    s.restart_leaf(leaf, 99_999);
    s.settle();
    check(&s, "leaf restarted");
    s.crash(0);
    s.settle();
    check(&s, "hub 0 failed");
    s.advance(cfg().forget_unreachable * 2, Duration::from_secs(1));
    check(&s, "hub 0 forgotten");
}

#[test]
fn a_leaf_sends_a_constant_number_of_advertisements_and_hubs_at_most_linear() {
    let mut small = FleetSim::start(Shape::for_nodes(100), &cfg(), 50);
    let mut large = FleetSim::start(Shape::for_nodes(1_000), &cfg(), 250);
    let hour = Duration::from_secs(3600);
    let mut rates = Vec::new();
    for s in [&mut small, &mut large] {
        s.advance(Duration::from_secs(600), Duration::from_secs(5));
        s.reset_counters();
        s.advance(hour, Duration::from_secs(5));
        check(s, "steady state");
        rates.push(s.per_minute(hour));
    }
    let [_, hub_small, _, leaf_small] = rates[0];
    let [_, hub_large, _, leaf_large] = rates[1];
    // A leaf refreshes once per route_refresh to each of its two hubs, whatever the size.
    assert_eq!(leaf_small.0, leaf_large.0, "leaf advertisements per minute depend on the fleet size");
    assert!(leaf_large.0 <= 2.0 * 60.0 / cfg().refresh.as_secs_f64() + 1e-9, "{leaf_large:?}");
    // A hub forwards each node's refresh to each other hub: linear in the fleet.
    let per_node = |r: (f64, f64), n: usize| r.0 / n as f64;
    assert!(per_node(hub_large, 1_000) <= 2.0 * per_node(hub_small, 100), "{hub_small:?} {hub_large:?}");
}

#[test]
fn ten_thousand_nodes_converge_and_survive_a_hub_failure() {
    let shape = Shape::for_nodes(10_000);
    let mut s = FleetSim::start(shape, &cfg(), 2_000);
    check(&s, "10,000 started");
    s.crash(1);
    s.settle();
    check(&s, "10,000 after a hub failure");
    let leaf = shape.hubs + 1234;
    s.crash(leaf);
    s.settle();
    check(&s, "10,000 after a leaf crash");
}

/// A leaf (or a client) speaks only for itself: a hub drops what it relays about others.
#[test]
fn a_hub_refuses_advertisements_a_leaf_makes_up_about_other_nodes() {
    let shape = Shape { hubs: 2, leaves: 2 };
    let mut s = FleetSim::start(shape, &cfg(), 2);
    check(&s, "started");
    let hub = &mut s.nodes[0];
    let liar = crate::wire::NodeId::new("liar").expect("valid");
    let hello = Hello {
        version: PROTOCOL_VERSION,
        node_id: liar.clone(),
        epoch: 7,
        caps: caps::STREAMS | caps::LEAF,
        idle_timeout_ms: 5000,
        cost: 1.0,
    };
    let link: LinkId = 1_000_000;
    assert_eq!(hub.admit(link, &hello, 1.0, false, false), super::state::Admission::Admit);
    let now = s.now;
    let hub = &mut s.nodes[0];
    hub.link_up(now, link);
    assert!(hub.link_not_relay(link));
    let forged = Lsa {
        origin: s.id(3),
        epoch: 1_000_000,
        seq: 1,
        leaving: true,
        ephemeral: false,
        leaf: true,
        neighbors: Vec::new(),
        relay_marks: false,
        work_types: Vec::new(),
        sig: None,
    };
    let hub = &mut s.nodes[0];
    hub.on_lsa(now, link, forged);
    hub.drain_actions();
    let victim = s.id(3);
    assert!(s.nodes[0].knows(&victim), "a leaf's forged departure of another node was believed");
}
