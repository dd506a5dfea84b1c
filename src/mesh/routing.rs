//! Shortest-path routing over the link-state database (Dijkstra, deterministic ties).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::state::LinkId;
use crate::wire::{Lsa, NodeId};

/// How to reach one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub link: LinkId,
    pub next_hop: NodeId,
    pub cost: f64,
    pub hops: u8,
}

#[derive(PartialEq)]
struct Candidate {
    cost: f64,
    hops: u8,
    node: NodeId,
    first: (NodeId, LinkId),
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on (cost, hops, node id, first hop id) for deterministic results. The
        // first hop must take part: equal-cost paths to one node differ only there, and the
        // heap's order of equal elements depends on the order of `peers` (a HashMap), so
        // without it a node's next hop could flip at every recomputation.
        other
            .cost
            .total_cmp(&self.cost)
            .then_with(|| other.hops.cmp(&self.hops))
            .then_with(|| other.node.cmp(&self.node))
            .then_with(|| other.first.0.cmp(&self.first.0))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether `lsa` lists `node` as a neighbour.
fn lists(lsa: &Lsa, node: &NodeId) -> bool {
    lsa.neighbors.iter().any(|(n, _)| n == node)
}

/// Computes routes from `me`. `peers` are our up links (peer → link, cost); `graph` holds
/// every other node's advertisement. An edge u→v is used only when both u and v list each
/// other, so half-open links never attract traffic. Ephemeral clients and leaves are routed
/// to, never through (never expanded, so a hub's run costs O(links) for its leaves).
pub fn shortest_paths(
    me: &NodeId,
    peers: &HashMap<NodeId, (LinkId, f64)>,
    graph: &HashMap<&NodeId, &Lsa>,
    max_hops: u8,
) -> HashMap<NodeId, Route> {
    let mut heap = BinaryHeap::new();
    for (peer, (link, cost)) in peers {
        // Our side of the link is up; the peer's advertisement must confirm it, except
        // just after link-up, before the peer's first advertisement arrives.
        let confirmed = graph.get(peer).is_none_or(|lsa| lists(lsa, me));
        if confirmed {
            heap.push(Candidate { cost: *cost, hops: 1, node: peer.clone(), first: (peer.clone(), *link) });
        }
    }
    let mut routes: HashMap<NodeId, Route> = HashMap::new();
    while let Some(c) = heap.pop() {
        if routes.contains_key(&c.node) || c.node == *me {
            continue;
        }
        let route = Route { link: c.first.1, next_hop: c.first.0.clone(), cost: c.cost, hops: c.hops };
        routes.insert(c.node.clone(), route);
        let Some(lsa) = graph.get(&c.node) else { continue };
        if lsa.ephemeral || lsa.leaf || c.hops >= max_hops {
            continue;
        }
        for (next, cost) in &lsa.neighbors {
            if routes.contains_key(next) || next == me {
                continue;
            }
            let back = graph.get(next).is_some_and(|n| lists(n, &c.node));
            if back {
                heap.push(Candidate {
                    cost: c.cost + cost,
                    hops: c.hops + 1,
                    node: next.clone(),
                    first: c.first.clone(),
                });
            }
        }
    }
    routes
}
