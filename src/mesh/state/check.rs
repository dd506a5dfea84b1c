//! The invariants of [`Mesh`], checked by the fuzzer after every event it feeds.

use super::Mesh;
use crate::wire::Frame;

impl Mesh {
    /// Checks what must hold between events: the database within its caps and its byte
    /// count exact, this node absent from it; once routes are settled, every route leads to
    /// a known node other than this one through an up link to its next hop, within
    /// `max_hops`, never through a peer this node marked as not a relay, and relayed
    /// frames never to a peer that marked this node; a leaf's default route (see
    /// [`Mesh::check_default_route`]). Returns what is broken.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.lsdb.contains_key(&self.me) {
            return Err("the database holds this node's own advertisement".into());
        }
        if self.lsdb.len() > self.cfg.max_nodes {
            return Err(format!("{} nodes held, max_nodes is {}", self.lsdb.len(), self.cfg.max_nodes));
        }
        let bytes: usize = self.lsdb.values().map(|e| e.lsa.held_bytes()).sum();
        if bytes != self.db_bytes {
            return Err(format!("db_bytes says {} but the database holds {bytes}", self.db_bytes));
        }
        if bytes > self.cfg.max_db_bytes {
            return Err(format!("{bytes} bytes held, max_db_bytes is {}", self.cfg.max_db_bytes));
        }
        if self.links.len() > crate::wire::MAX_LSA_ITEMS {
            return Err(format!("{} links, more than an advertisement can list", self.links.len()));
        }
        let own = Frame::Lsa(self.own_lsa()).encode();
        if own.len() - 4 > crate::wire::MAX_FRAME || Frame::decode(own.slice(4..)).is_err() {
            return Err("this node's own advertisement does not decode".into());
        }
        if self.dirty {
            return Ok(());
        }
        self.check_default_route()?;
        for (dst, r) in &self.routes {
            if *dst == self.me {
                return Err("a route to this node itself".into());
            }
            let link = self.links.get(&r.link).filter(|l| l.up);
            let Some(link) = link else {
                return Err(format!("the route to {dst} uses link {} which is not up", r.link));
            };
            if link.peer != r.next_hop {
                return Err(format!(
                    "the route to {dst} goes to {} over a link to {}",
                    r.next_hop, link.peer
                ));
            }
            if link.not_relay && *dst != r.next_hop {
                return Err(format!("the route to {dst} goes through {}, which is not a relay", r.next_hop));
            }
            let known = self.lsdb.get(dst).is_some_and(|e| !e.lsa.leaving)
                || self.links.values().any(|l| l.up && l.peer == *dst);
            if !known {
                return Err(format!("a route to {dst}, which is neither in the database nor a peer"));
            }
            if r.hops == 0 || r.hops > self.cfg.max_hops {
                return Err(format!(
                    "the route to {dst} has {} hops (max_hops {})",
                    r.hops, self.cfg.max_hops
                ));
            }
            // Sums of huge (finite) advertised costs may reach infinity; that still orders.
            if r.cost.is_nan() || r.cost <= 0.0 {
                return Err(format!("the route to {dst} costs {}", r.cost));
            }
        }
        for (dst, r) in self.transit_routes.iter().flatten() {
            let marked_me = self.lsdb.get(&r.next_hop).is_some_and(|e| e.lsa.listing(&self.me) == Some(true));
            let next = self.links.get(&r.link).filter(|l| l.up && l.peer == r.next_hop);
            if marked_me || next.is_none_or(|l| l.not_relay && *dst != r.next_hop) {
                return Err(format!(
                    "relayed frames to {dst} go to {}, which takes none from here",
                    r.next_hop
                ));
            }
        }
        Ok(())
    }

    /// A leaf's default route is its cheapest up link to a relay that has not left, and
    /// it has one whenever such a link exists; a hub has none.
    fn check_default_route(&self) -> Result<(), String> {
        let Some((link, hub)) = &self.default_route else {
            return match self.is_leaf() && self.pick_default_route().is_some() {
                true => Err("a leaf with a link to a hub but no default route".into()),
                false => Ok(()),
            };
        };
        if !self.is_leaf() {
            return Err(format!("a hub with a default route via {hub}"));
        }
        // The choice itself (up, a relay, not left, cheapest) is `pick_default_route`'s:
        // what is held must be what it picks now, not a stale link.
        if self.pick_default_route().as_ref() != Some(&(*link, hub.clone())) {
            return Err(format!(
                "the default route via {hub} (link {link}) is not the cheapest up link to a relay"
            ));
        }
        Ok(())
    }
}
