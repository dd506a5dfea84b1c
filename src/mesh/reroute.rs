//! Which routes changed, and when: a stream whose frames arrive with a gap, out of order
//! or cut short (`StreamError::Sequence`) was either tampered with or caught in a reroute
//! (frames in flight on a link that went down). Only cryptographic evidence proves
//! tampering; a sequence failure counts as tampering only when, while the stream ran,
//! no route this node held moved or went away (a change beyond the first hop, or on the
//! way back, which the other end routes, is invisible from here) and none of its own
//! links that could carry others' frames went down. This module keeps that record for [`crate::mesh::Node::rerouted_since`].

use std::collections::HashMap;
use std::sync::Mutex;

use super::routing::Route;
use super::state::LinkId;
use crate::wire::NodeId;

/// A point in this node's history of route changes (see `RouteChanges::mark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMark(u64);

/// The route to one destination, as far as a change of it matters.
type Fingerprint = (LinkId, NodeId, u64, u8);

#[derive(Default)]
struct Inner {
    /// Counts events (a published table, a link down).
    now: u64,
    /// The last published route to each destination.
    routes: HashMap<NodeId, Fingerprint>,
    /// When each destination's route last changed (appeared, moved, went away).
    changed: HashMap<NodeId, u64>,
    /// When a leaf's default route, or any route of destinations now gone, last changed.
    default_changed: u64,
    default: Option<LinkId>,
    /// When one of this node's links last went down.
    link_down: u64,
    /// When any known route last moved or went away: a change beyond the first hop, or
    /// on the way back (which the other end routes), cannot be told from here, so every
    /// change of a route this node held counts as a possible reroute for every stream.
    any_changed: u64,
}

/// The record kept by the router, written by the mesh driver.
#[derive(Default)]
pub(crate) struct RouteChanges(Mutex<Inner>);

impl RouteChanges {
    /// Records a newly published table (and a leaf's default route).
    pub(crate) fn published(&self, routes: &HashMap<NodeId, Route>, default: Option<LinkId>) {
        let Ok(mut g) = self.0.lock() else { return };
        let inner = &mut *g;
        inner.now += 1;
        let now = inner.now;
        let mut next: HashMap<NodeId, Fingerprint> = HashMap::with_capacity(routes.len());
        for (dst, r) in routes {
            let fp = (r.link, r.next_hop.clone(), r.cost.to_bits(), r.hops);
            match inner.routes.get(dst) {
                Some(old) if *old == fp => {}
                Some(_) => {
                    inner.changed.insert(dst.clone(), now);
                    inner.any_changed = now;
                }
                None => {
                    inner.changed.insert(dst.clone(), now);
                }
            }
            next.insert(dst.clone(), fp);
        }
        for dst in inner.routes.keys() {
            if !next.contains_key(dst) {
                inner.changed.insert(dst.clone(), now);
                inner.any_changed = now;
            }
        }
        // Destinations forgotten long ago need no entry: an unknown one counts as changed
        // at the last table (see `rerouted_since`), so keep the map to known ones.
        inner.changed.retain(|dst, at| next.contains_key(dst) || *at == now);
        inner.routes = next;
        if inner.default != default {
            inner.default = default;
            inner.default_changed = now;
        }
    }

    /// Records that one of this node's links went down.
    pub(crate) fn link_down(&self) {
        if let Ok(mut g) = self.0.lock() {
            g.now += 1;
            g.link_down = g.now;
        }
    }

    /// Now, to compare with later.
    pub(crate) fn mark(&self) -> RouteMark {
        RouteMark(self.0.lock().map(|g| g.now).unwrap_or(u64::MAX))
    }

    /// Whether, since `mark`, the route to `dst` changed or one of this node's links went
    /// down (a leaf, which routes most nodes through its default route: whether that
    /// changed). Unknown destinations count as changed.
    pub(crate) fn rerouted_since(&self, dst: &NodeId, mark: RouteMark) -> bool {
        let Ok(g) = self.0.lock() else { return true };
        let since = |at: u64| at > mark.0;
        if since(g.link_down) || since(g.any_changed) {
            return true;
        }
        match g.changed.get(dst) {
            Some(at) => since(*at) || !g.routes.contains_key(dst),
            None => g.default.is_none() || since(g.default_changed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(link: LinkId, hop: &str, cost: f64) -> Route {
        Route { link, next_hop: NodeId::new(hop).expect("id"), cost, hops: 2 }
    }

    #[test]
    fn a_changed_route_or_a_link_down_is_a_reroute_and_nothing_else_is() {
        let changes = RouteChanges::default();
        let d = NodeId::new("d").expect("id");
        let other = NodeId::new("e").expect("id");
        let mut table = HashMap::from([(d.clone(), route(1, "b", 2.0)), (other.clone(), route(1, "b", 3.0))]);
        changes.published(&table, None);
        let mark = changes.mark();
        assert!(!changes.rerouted_since(&d, mark), "nothing happened");
        table.insert(other.clone(), route(2, "c", 3.0));
        changes.published(&table, None);
        assert!(changes.rerouted_since(&d, mark), "another route moved: maybe a hop beyond the first");
        let mark = changes.mark();
        table.insert(NodeId::new("new").expect("id"), route(1, "b", 4.0));
        changes.published(&table, None);
        assert!(!changes.rerouted_since(&d, mark), "a new destination moves no path");
        table.insert(d.clone(), route(1, "b", 2.5));
        changes.published(&table, None);
        assert!(changes.rerouted_since(&d, mark), "the cost changed: the path beyond the next hop did");
        let mark = changes.mark();
        changes.link_down();
        assert!(changes.rerouted_since(&d, mark), "a link of this node went down");
        let mark = changes.mark();
        table.remove(&d);
        changes.published(&table, None);
        assert!(changes.rerouted_since(&d, mark), "the route went away");
        assert!(changes.rerouted_since(&NodeId::new("zz").expect("id"), changes.mark()), "unknown");
    }

    #[test]
    fn a_leaf_sees_a_change_of_its_default_route() {
        let changes = RouteChanges::default();
        let far = NodeId::new("far").expect("id");
        changes.published(&HashMap::new(), Some(1));
        let mark = changes.mark();
        changes.published(&HashMap::new(), Some(1));
        assert!(!changes.rerouted_since(&far, mark));
        changes.published(&HashMap::new(), Some(2));
        assert!(changes.rerouted_since(&far, mark));
    }
}
