//! Node IDs the native plane holds, and who may speak of them on this plane: a netceptor
//! peer may claim one only when a certificate names it, a receptord neighbour on a
//! carried link may relay claims it believed itself, and no Go link may draw a path to a
//! native node through itself (docs/SECURITY.md, "Go Receptor peers (netceptor)").

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::{CloseReason, LinkId, Netceptor};
use crate::wire::NodeId;

impl Netceptor {
    /// The node IDs the native plane knows. Claims to them by peers without a
    /// certificate naming them are dropped from now on, and what such peers said about
    /// them is forgotten.
    pub fn set_reserved(&mut self, now: Instant, mut reserved: BTreeSet<String>) {
        // This node's own ID is guarded on its own (and its edges must stay).
        reserved.remove(self.cfg.id.as_str());
        let proven: Vec<(LinkId, String)> = self
            .links
            .iter()
            .filter(|(_, l)| l.proven())
            .filter_map(|(id, l)| l.peer.as_ref().map(|p| (*id, p.as_str().to_owned())))
            .collect();
        let unproven_links: Vec<(LinkId, NodeId)> = self
            .links
            .iter()
            .filter(|(_, l)| !l.proven())
            .filter_map(|(id, l)| l.peer.clone().map(|p| (*id, p)))
            .filter(|(_, p)| reserved.contains(p.as_str()))
            .collect();
        for (link, p) in unproven_links {
            self.close(link, CloseReason::Reserved(p), true);
        }
        let is_proven = |n: &str| proven.iter().any(|(_, p)| p == n);
        let vouched = &self.vouched;
        let gone: Vec<String> = reserved
            .iter()
            .filter(|n| !self.reserved.contains(*n) && !is_proven(n) && !vouched.contains(*n))
            .cloned()
            .collect();
        if !gone.is_empty() {
            for n in &gone {
                self.known.remove(n);
                self.edges.remove(n);
                for e in self.edges.values_mut() {
                    e.remove(n);
                }
            }
            self.ads.retain(|(n, _), _| !gone.contains(n));
            self.routes_due.get_or_insert(now);
        }
        self.reserved = reserved;
    }

    /// The session on `link` is carried over a native link (`crate::mesh::carry`): its
    /// peer, proven by the native link, may relay claims about reserved IDs.
    pub fn mark_carried(&mut self, link: LinkId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.carried = true;
        }
    }

    /// Whether a claim about `node` arriving on `link` is to be dropped: `node` is held
    /// by the native plane, and the link's peer neither proved to be it nor is a receptord
    /// neighbour on a carried link (which applied this same rule before relaying).
    pub(super) fn reserved_claim(&self, link: Option<LinkId>, node: &str) -> bool {
        if !self.reserved.contains(node) {
            return false;
        }
        let believed = link.and_then(|id| self.links.get(&id)).is_some_and(|l| {
            l.peer.is_some()
                && (l.carried || (l.proven() && l.peer.as_ref().is_some_and(|p| p.as_str() == node)))
        });
        !believed
    }

    /// Records where `node`'s believed routing update came from: over a carried link it is
    /// vouched for (so becoming reserved later does not make this node forget it).
    pub(super) fn note_source(&mut self, link: LinkId, node: &str) {
        let carried = self.links.get(&link).is_some_and(|l| l.carried);
        if !carried {
            self.vouched.remove(node);
        } else if self.vouched.len() < 2 * self.cfg.limits.max_nodes {
            self.vouched.insert(node.to_owned());
        }
    }

    /// Whether `node`'s update may list a link to `to`: always, unless `to` is reserved;
    /// then only when `node` is reserved too (its update was believed, so it came from
    /// `node` itself or over carried links) or a netceptor TLS link here proved to be `to`
    /// (`to` then speaks netceptor to Go nodes itself). A netceptor peer thus cannot draw a
    /// path to a native node through itself.
    pub(super) fn reserved_edge(&self, node: &str, to: &str) -> bool {
        !self.reserved.contains(to)
            || self.reserved.contains(node)
            || self
                .links
                .values()
                .any(|l| !l.carried && l.proven() && l.peer.as_ref().is_some_and(|p| p.as_str() == to))
    }

    /// A node ID the native plane holds that no link of this plane proved and no carried
    /// link vouched for.
    pub(super) fn reserved_unproven(&self, node: &str) -> bool {
        self.reserved.contains(node)
            && !self.vouched.contains(node)
            && !self.links.values().any(|l| l.proven() && l.peer.as_ref().is_some_and(|p| p.as_str() == node))
    }
}
