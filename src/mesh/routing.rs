//! Shortest-path routing over the link-state database (Dijkstra, deterministic ties).
//!
//! Who may carry transit traffic is decided from what links authenticated, never from
//! what a node says of itself alone: a node is not expanded when its own advertisement
//! says it is a leaf or a client, nor over an edge whose other end marked it as not a
//! relay (this node's own link, or a neighbour's signed `not_relays`).

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

/// One of this node's up links, as route computation needs it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub link: LinkId,
    pub cost: f64,
    /// The link showed the peer is not a relay (its `Hello` caps, or no certificate).
    pub not_relay: bool,
}

#[derive(PartialEq)]
struct Candidate {
    cost: f64,
    hops: u8,
    node: NodeId,
    first: (NodeId, LinkId),
    /// The edge that reached `node` may be continued: its other end did not mark `node`
    /// as not a relay.
    transit: bool,
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

/// Computes routes from `me`. `peers` are our up links; `graph` holds every other node's
/// advertisement. An edge u→v is used only when both u and v list each other, so
/// half-open links never attract traffic. Ephemeral clients and leaves are routed to, never
/// through (never expanded, so a hub's run costs O(links) for its leaves); so is a node
/// over an edge whose other end marked it as not a relay, whatever it advertises.
pub fn shortest_paths(
    me: &NodeId,
    peers: &HashMap<NodeId, Peer>,
    graph: &HashMap<&NodeId, &Lsa>,
    max_hops: u8,
) -> HashMap<NodeId, Route> {
    let mut heap = BinaryHeap::new();
    for (peer, p) in peers {
        // Our side of the link is up; the peer's advertisement must confirm it, except
        // just after link-up, before the peer's first advertisement arrives.
        let confirmed = graph.get(peer).is_none_or(|lsa| lsa.listing(me).is_some());
        if confirmed {
            heap.push(Candidate {
                cost: p.cost,
                hops: 1,
                node: peer.clone(),
                first: (peer.clone(), p.link),
                transit: !p.not_relay,
            });
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
        if !c.transit || lsa.ephemeral || lsa.leaf || c.hops >= max_hops {
            continue;
        }
        for (i, (next, cost)) in lsa.neighbors.iter().enumerate() {
            if routes.contains_key(next) || next == me {
                continue;
            }
            // `next` must list c.node back, and not as a node that may not relay: that
            // edge is where c.node would carry traffic to `next`.
            if graph.get(next).and_then(|n| n.listing(&c.node)) == Some(false) {
                let marked = u16::try_from(i).is_ok_and(|i| lsa.not_relays.binary_search(&i).is_ok());
                heap.push(Candidate {
                    cost: c.cost + cost,
                    hops: c.hops + 1,
                    node: next.clone(),
                    first: c.first.clone(),
                    transit: !marked,
                });
            }
        }
    }
    routes
}
