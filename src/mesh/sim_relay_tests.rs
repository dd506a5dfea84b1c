//! Simulations of who may relay: a node is a relay on an edge only if the other end's
//! link showed nothing against it (caps, certificate, local policy), whatever it
//! advertises; the restriction depends on the edge a path takes, so routes must be
//! computed over (node, may continue) states. Part of `sim_tests` (uses its `Sim`).

use super::{REFRESH, Sim};
use crate::wire::{NodeId, caps};

/// Every node's route to every other node, as (next hop, hops), in node order.
fn next_hops(s: &Sim, from: usize) -> Vec<Option<(NodeId, u8)>> {
    (0..s.nodes.len()).map(|to| s.route(from, to)).collect()
}

/// No route from `from` but to 1 itself has 1 as its next hop.
fn never_through_1(s: &Sim, ctx: &str) {
    for from in [0, 2, 3] {
        for (to, r) in next_hops(s, from).into_iter().enumerate() {
            let through_1 = r.as_ref().is_some_and(|(next, _)| *next == s.id(1));
            assert!(!through_1 || to == 1, "{ctx}: {from}→{to} goes through 1: {r:?}");
        }
    }
}

/// Hubs 0, 2 and 3 (0 -10- 2, and 0 -5- 3 -5- 2) and node 1, which advertises itself as
/// a relay with nearly free links to 0 and 2. `setup` says what its links showed.
fn lying_node(setup: impl FnOnce(&mut Sim)) -> Sim {
    let mut s = Sim::new(4);
    setup(&mut s);
    s.connect(0, 2, 10.0);
    s.connect(0, 3, 5.0);
    s.connect(3, 2, 5.0);
    s.connect(0, 1, 0.001);
    s.connect(1, 2, 0.001);
    s.advance(REFRESH);
    s.check_all("lying node");
    let lsa = s.nodes[0].held(&s.id(1)).expect("1 advertised itself").clone();
    assert!(!lsa.leaf && !lsa.ephemeral, "1 advertises itself as a relay");
    assert_eq!(lsa.neighbors.len(), 2, "1 lists both hubs");
    s
}

fn assert_hubs_avoid_1(s: &Sim, ctx: &str) {
    assert_eq!(s.route(0, 2), s.hop(2, 1), "{ctx}: 0 keeps its own link to 2");
    assert_eq!(s.route(2, 0), s.hop(0, 1), "{ctx}: and 2 to 0");
    assert_eq!(s.route(3, 0), s.hop(0, 1), "{ctx}");
    assert_eq!(s.route(0, 1), s.hop(1, 1), "{ctx}: 1 stays reachable");
    assert_eq!(s.route(3, 1), s.hop(0, 2), "{ctx}: from afar too");
    never_through_1(s, ctx);
}

#[test]
fn a_leaf_or_client_advertising_itself_as_a_relay_is_never_routed_through() {
    for announced in [caps::LEAF, caps::EPHEMERAL] {
        let s = lying_node(|s| {
            s.caps_to.insert((1, 0), announced);
            s.caps_to.insert((1, 2), announced);
        });
        assert_hubs_avoid_1(&s, &format!("caps {announced:#x}"));
        // The hubs' signed advertisements say why.
        let ad0 = s.nodes[2].held(&s.id(0)).expect("0 known");
        assert_eq!(ad0.listing(&s.id(1)), Some(true), "0 marks 1 as not a relay");
        assert_eq!(ad0.listing(&s.id(2)), Some(false), "and 2 as one");
        assert!(s.nodes[3].held(&s.id(1)).is_some(), "3 knows 1");
    }
}

#[test]
fn a_certified_node_that_lies_on_its_links_too_is_kept_out_by_the_hubs_policy() {
    // 1 announces itself as a hub on both links: only the hubs' `[mesh] relays`
    // (or `relays = false` on their listener) says otherwise.
    let s = lying_node(|s| {
        s.not_relay.insert((0, 1));
        s.not_relay.insert((2, 1));
    });
    assert_hubs_avoid_1(&s, "policy");
    // Without the policy the same node is a relay: the default follows the links.
    let s = lying_node(|_| {});
    assert_eq!(s.route(0, 2), s.hop(1, 2), "no policy: 1 relays");
}

#[test]
fn a_node_announcing_itself_as_a_leaf_to_one_hub_only_relays_to_none_of_them() {
    // 1 tells 0 it is a leaf and 2 it is a hub: 2 may not send through it to 0 (0 would
    // drop what 1 passes on), and 0 sends nothing through it at all.
    let s = lying_node(|s| {
        s.caps_to.insert((1, 0), caps::LEAF);
    });
    assert_eq!(s.route(2, 0), s.hop(0, 1), "2 → 0 directly, not through 1");
    assert_eq!(s.route(0, 2), s.hop(2, 1), "0 → 2 directly");
    assert_eq!(s.route(3, 0), s.hop(0, 1));
    assert_eq!(s.route(3, 2), s.hop(2, 1));
    assert_eq!(s.route(2, 1), s.hop(1, 1));
    never_through_1(&s, "leaf to 0 only");
}

#[test]
fn a_node_reached_cheaply_over_a_marked_edge_still_relays_over_an_unmarked_one() {
    // S=0, M=1, H=2, X=3, D=4: 0 -1- 1 -1- 3 (1 marks 3: its policy), 0 -1- 2 -5- 3, 3 -1- 4.
    // Plain Dijkstra settles X over the marked edge (cost 2) and never expands it, losing
    // D; over (node, may continue) states X is also reached from H (cost 6) and relays.
    let mut s = Sim::new(5);
    s.not_relay.insert((1, 3));
    s.connect(0, 1, 1.0);
    s.connect(1, 3, 1.0);
    s.connect(0, 2, 1.0);
    s.connect(2, 3, 5.0);
    s.connect(3, 4, 1.0);
    s.advance(REFRESH);
    assert_eq!(s.route(0, 3), s.hop(1, 2), "X itself: the cheap way, M relays to it");
    assert_eq!(s.route(0, 4), s.hop(2, 3), "D: through H and X");
    assert_eq!(s.nodes[0].route(&s.id(4)).map(|r| r.cost), Some(7.0));
    assert_eq!(s.route(1, 4), s.hop(0, 4), "M's own traffic avoids continuing through X");
    assert_eq!(s.route(4, 0), s.hop(3, 3), "D → S through X, then H");
    // X's own frames may use its link to M (M takes frames from X itself); frames X
    // relays may not (M would drop them), so X keeps a transit table.
    assert_eq!(s.route(3, 0), s.hop(1, 2), "X's own traffic: through M");
    let transit = s.nodes[3].transit_routes().expect("X is marked by M: a transit table");
    assert_eq!(transit.get(&s.id(0)).map(|r| r.next_hop.clone()), Some(s.id(2)), "relayed: through H");
    assert!(
        !transit.contains_key(&s.id(1)) || transit[&s.id(1)].next_hop != s.id(1),
        "never hands M relayed frames"
    );
    assert!(s.nodes[0].transit_routes().is_none(), "nobody marked S: one table");
}

#[test]
fn a_node_marking_an_honest_hub_stops_nothing_that_does_not_pass_through_it() {
    // 0 -1- 1 -1- 2 with hub 1; node 3 links to 1 and marks it (a compromised node, or a
    // policy that leaves 1 out): paths between 0 and 2 are untouched.
    let mut s = Sim::new(4);
    s.not_relay.insert((3, 1));
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    s.connect(3, 1, 1.0);
    s.advance(REFRESH);
    assert_eq!(s.route(0, 2), s.hop(1, 2));
    assert_eq!(s.route(2, 0), s.hop(1, 2));
    let transit = s.nodes[1].transit_routes().expect("1 is marked by 3");
    assert_eq!(transit.get(&s.id(2)).map(|r| r.next_hop.clone()), Some(s.id(2)), "1 relays to 2");
    assert_eq!(transit.get(&s.id(0)).map(|r| r.next_hop.clone()), Some(s.id(0)), "and to 0");
    // 3 refuses what 1 relays, so nobody reaches 3 through 1; 1 itself still does.
    assert_eq!(s.route(0, 3), None);
    assert_eq!(s.route(1, 3), s.hop(3, 1));
    assert!(!transit.contains_key(&s.id(3)));
}

#[test]
fn the_routes_stay_consistent_hop_by_hop_under_marks() {
    // A grid with random marks: following next hops (transit tables past the first hop)
    // from every node reaches every destination its own table names, without a loop.
    let mut rng = super::Rng(7);
    for round in 0..20 {
        let n = 7;
        let mut s = Sim::new(n);
        for a in 0..n {
            for b in a + 1..n {
                if rng.below(3) == 0 {
                    if rng.below(4) == 0 {
                        s.not_relay.insert((a, b));
                    }
                    if rng.below(4) == 0 {
                        s.not_relay.insert((b, a));
                    }
                    s.connect(a, b, 1.0 + rng.below(4) as f64);
                }
            }
        }
        s.advance(REFRESH);
        s.check_all(&format!("round {round}"));
        for from in 0..n {
            for to in (0..n).filter(|&t| t != from) {
                let Some(first) = s.nodes[from].route(&s.id(to)) else { continue };
                let mut at = s.index(&first.next_hop);
                let mut prev = from;
                for _ in 0..n {
                    if at == to {
                        break;
                    }
                    assert!(
                        !s.not_relay.contains(&(prev, at)),
                        "round {round}: {from}→{to}: {prev} sent transit to {at}, which it marked"
                    );
                    let node = &s.nodes[at];
                    let r = node.transit_routes().unwrap_or(node.routes()).get(&s.id(to));
                    let r =
                        r.unwrap_or_else(|| panic!("round {round}: {from}→{to}: {at} has no transit route"));
                    let next = s.index(&r.next_hop);
                    assert!(
                        !s.not_relay.contains(&(next, at)),
                        "round {round}: {from}→{to}: {at} relays to {next}, which marked it"
                    );
                    (prev, at) = (at, next);
                }
                assert_eq!(at, to, "round {round}: {from}→{to} did not arrive within {n} hops");
            }
        }
    }
}

impl Sim {
    /// Every node's invariants hold (routes never through a peer it marked, relayed frames
    /// never to a peer that marked it).
    fn check_all(&self, ctx: &str) {
        for (i, node) in self.nodes.iter().enumerate() {
            node.check_invariants().unwrap_or_else(|e| panic!("{ctx}: node {i}: {e}"));
        }
    }

    /// The index of the node named `id`.
    fn index(&self, id: &NodeId) -> usize {
        (0..self.nodes.len()).find(|&i| self.id(i) == *id).expect("a simulated node")
    }
}
