//! The routing table side of the [`Mesh`]: recomputing routes once per batch of events
//! (`settle`), a leaf's default route through its hubs, and the questions the driver and
//! `status` ask of the table (`route`, `knows`, `known`).

use std::collections::HashMap;

use super::{Action, LinkId, Mesh};
use crate::mesh::routing::{self, Peer, Route, Source};
use crate::wire::{Lsa, NodeId};

impl Mesh {
    /// Marks routes stale; [`Mesh::settle`] recomputes them once.
    pub(super) fn recompute(&mut self) {
        self.dirty = true;
    }

    /// Originates our advertisement if it changed, and recomputes routes if anything
    /// changed since the last time.
    pub fn settle(&mut self) {
        if self.own_dirty {
            self.originate(self.now);
        }
        if std::mem::take(&mut self.dirty) {
            self.compute_routes();
        }
    }

    pub(super) fn compute_routes(&mut self) {
        crate::metrics::global().route_computation();
        // A peer that has left is omitted (the routing graph omits it too, which
        // `shortest_paths` would otherwise read as "its first advertisement has not arrived
        // yet").
        let peers: HashMap<NodeId, Peer> = self
            .links
            .iter()
            .filter(|(_, l)| l.up && !self.has_left(&l.peer))
            .map(|(id, l)| (l.peer.clone(), Peer { link: *id, cost: l.cost, not_relay: l.not_relay }))
            .collect();
        let graph: HashMap<&NodeId, &Lsa> =
            self.lsdb.iter().filter(|(_, e)| !e.lsa.leaving).map(|(k, e)| (k, &e.lsa)).collect();
        let hops = self.cfg.max_hops;
        let routes = routing::shortest_paths(&self.me, &peers, &graph, hops, Source::Own);
        // Relayed frames may not go to a neighbour that marked this node as not a relay;
        // nodes nobody marked (every honest hub by default) need no second run.
        let transit = routing::marked_by_any(&self.me, &peers, &graph)
            .then(|| routing::shortest_paths(&self.me, &peers, &graph, hops, Source::Transit));
        let default_route = self.pick_default_route();
        self.mark_unreachable(&routes);
        if routes != self.routes || default_route != self.default_route || transit != self.transit_routes {
            self.routes = routes;
            self.transit_routes = transit;
            self.default_route = default_route;
            self.actions.push(Action::RoutesChanged);
        }
    }

    /// Whether `peer`'s stored advertisement says it is leaving: it is gone already, even
    /// while its link is still open.
    fn has_left(&self, peer: &NodeId) -> bool {
        self.lsdb.get(peer).is_some_and(|e| e.lsa.leaving)
    }

    /// A leaf's way to every node it has no route to: its cheapest up link to a relay
    /// (ties to the smallest peer ID). Hubs have none: they know the whole mesh.
    pub(super) fn pick_default_route(&self) -> Option<(LinkId, NodeId)> {
        if !self.is_leaf() {
            return None;
        }
        self.links
            .iter()
            .filter(|(_, l)| l.up && !l.not_relay && !self.has_left(&l.peer))
            .min_by(|a, b| a.1.cost.total_cmp(&b.1.cost).then_with(|| a.1.peer.cmp(&b.1.peer)))
            .map(|(id, l)| (*id, l.peer.clone()))
    }

    /// The default route of a leaf: (link, hub).
    pub fn default_route(&self) -> Option<&(LinkId, NodeId)> {
        self.default_route.as_ref()
    }

    pub fn route(&self, dst: &NodeId) -> Option<&Route> {
        self.routes.get(dst)
    }

    pub fn routes(&self) -> &HashMap<NodeId, Route> {
        &self.routes
    }

    /// Routes for frames this node relays, when they differ from [`Mesh::routes`] (some
    /// neighbour marked this node as not a relay).
    pub fn transit_routes(&self) -> Option<&HashMap<NodeId, Route>> {
        self.transit_routes.as_ref()
    }

    /// The advertisement held for `node`, reachable or not (tests look into the database).
    #[cfg(test)]
    pub(crate) fn held(&self, node: &NodeId) -> Option<&Lsa> {
        self.lsdb.get(node).map(|e| &e.lsa).filter(|l| !l.leaving)
    }

    /// Whether `node` is this node or one with a route and an advertisement here.
    pub fn knows(&self, node: &NodeId) -> bool {
        *node == self.me
            || (self.routes.contains_key(node) && self.lsdb.get(node).is_some_and(|e| !e.lsa.leaving))
    }

    /// The advertisements of every node with a route from here, ours included (the mesh as
    /// this node sees it; a leaf sees itself and whichever peers advertised to it), with
    /// costs as routing reads them (relay marks cleared): for showing, not for sending.
    pub fn known(&self) -> Vec<Lsa> {
        let mut v: Vec<Lsa> = self
            .lsdb
            .values()
            .filter(|e| !e.lsa.leaving && self.routes.contains_key(&e.lsa.origin))
            .map(|e| e.lsa.clone())
            .collect();
        v.push(self.own_lsa());
        for lsa in &mut v {
            let plain: Vec<f64> = lsa.neighbors.iter().map(|(_, c)| lsa.routing_cost(*c)).collect();
            for ((_, c), p) in lsa.neighbors.iter_mut().zip(plain) {
                *c = p;
            }
        }
        v.sort_by(|a, b| a.origin.cmp(&b.origin));
        v
    }
}
