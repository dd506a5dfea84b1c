//! Shortest-path routing over the link-state database (Dijkstra, deterministic ties).
//!
//! Who may carry transit traffic is decided from what links authenticated, never from
//! what a node says of itself alone. Besides the origin's own *leaf* and *ephemeral*
//! flags, every node marks in its (signed) advertisement the neighbours its links showed
//! are not relays ([`Lsa::marks`]), and a path never continues through X over an edge
//! whose other end marked X. That restriction depends on the edge a path arrived by, so
//! the search runs over (node, may continue) states: X reached cheaply over a marked edge
//! is a destination only, and X reached over an unmarked edge may still relay.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

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
    /// The link showed the peer is not a relay (caps, certificate, or local policy).
    pub not_relay: bool,
}

/// Whose traffic the routes are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node's own frames: it may leave over any up link.
    Own,
    /// Frames this node relays: like any relay, it must not pass them to a neighbour
    /// that marked it as not a relay (that neighbour would drop them).
    Transit,
}

#[derive(PartialEq)]
struct Candidate {
    cost: f64,
    hops: u8,
    node: NodeId,
    /// The path may continue through `node`: it arrived over an edge whose other end did
    /// not mark it, and `node` does not call itself a leaf or a client.
    go_on: bool,
    first: (NodeId, LinkId),
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on (cost, hops, node id, continuing first, first hop id) for
        // deterministic results. The first hop must take part: equal-cost paths to one
        // node differ only there, and the heap's order of equal elements depends on the
        // order of `peers` (a HashMap), so without it a next hop could flip at every run.
        other
            .cost
            .total_cmp(&self.cost)
            .then_with(|| other.hops.cmp(&self.hops))
            .then_with(|| other.node.cmp(&self.node))
            .then_with(|| self.go_on.cmp(&other.go_on))
            .then_with(|| other.first.0.cmp(&self.first.0))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether a peer's advertisement marks `me` as not a relay (only a neighbour can; then
/// frames this node relays need routes of their own: [`Source::Transit`]).
pub fn marked_by_any(me: &NodeId, peers: &HashMap<NodeId, Peer>, graph: &HashMap<&NodeId, &Lsa>) -> bool {
    peers.keys().any(|p| graph.get(p).is_some_and(|lsa| lsa.relay_marks && lsa.listing(me) == Some(true)))
}

/// Computes routes from `me`. `peers` are our up links; `graph` holds every other node's
/// advertisement. An edge u→v is used only when both u and v list each other, so
/// half-open links never attract traffic. A path continues through a node X only when X
/// is not a leaf or client by its own flags and neither edge of X on the path was marked
/// by its other end (the node before X marked X: X came in over it; the node after X
/// marked X: it would drop what X passes on). Leaves and clients are routed to, never
/// through (never expanded, so a hub's run costs O(links) for its leaves).
pub fn shortest_paths(
    me: &NodeId,
    peers: &HashMap<NodeId, Peer>,
    graph: &HashMap<&NodeId, &Lsa>,
    max_hops: u8,
    source: Source,
) -> HashMap<NodeId, Route> {
    let mut heap = BinaryHeap::new();
    for (peer, p) in peers {
        // Our side of the link is up; the peer's advertisement must confirm it, except
        // just after link-up, before the peer's first advertisement arrives.
        let back = graph.get(peer).map(|lsa| lsa.listing(me));
        let confirmed = back.is_none_or(|b| b.is_some());
        // Relaying, this node may not hand frames to a peer that marked it.
        let allowed = source == Source::Own || back.flatten() != Some(true);
        if confirmed && allowed {
            let go_on = !p.not_relay;
            heap.push(Candidate {
                cost: p.cost,
                hops: 1,
                node: peer.clone(),
                go_on,
                first: (peer.clone(), p.link),
            });
        }
    }
    let mut routes: HashMap<NodeId, Route> = HashMap::new();
    // States settled with "may continue"; a node settled as a destination only may be
    // settled again later, over a dearer edge that lets the path continue.
    let mut expanded: HashSet<NodeId> = HashSet::new();
    while let Some(c) = heap.pop() {
        if c.node == *me || expanded.contains(&c.node) || (!c.go_on && routes.contains_key(&c.node)) {
            continue;
        }
        routes.entry(c.node.clone()).or_insert_with(|| Route {
            link: c.first.1,
            next_hop: c.first.0.clone(),
            cost: c.cost,
            hops: c.hops,
        });
        let Some(lsa) = graph.get(&c.node) else { continue };
        if !c.go_on || lsa.ephemeral || lsa.leaf {
            continue;
        }
        expanded.insert(c.node.clone());
        if c.hops >= max_hops {
            continue;
        }
        for (i, (next, cost)) in lsa.neighbors.iter().enumerate() {
            if next == me || expanded.contains(next) {
                continue;
            }
            // `next` must list c.node back, and not as a node that may not relay: that
            // edge is where c.node would carry traffic on to `next`.
            if graph.get(next).and_then(|n| n.listing(&c.node)) == Some(false) {
                heap.push(Candidate {
                    cost: c.cost + lsa.routing_cost(*cost),
                    hops: c.hops + 1,
                    node: next.clone(),
                    go_on: !lsa.marks(i),
                    first: c.first.clone(),
                });
            }
        }
    }
    routes
}
