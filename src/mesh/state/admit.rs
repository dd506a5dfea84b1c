//! Admission: whether a handshaken connection may become a link of the [`Mesh`] — not
//! past the most links one advertisement can list, not to our own ID, one link per peer
//! (simultaneous dials converge on the one the smaller ID dialed), and no second live
//! incarnation of a node the mesh can still reach.

use super::{Action, Admission, LinkId, LinkInfo, Mesh};
use crate::wire::{Hello, NodeId};

impl Mesh {
    /// Decides whether a handshaken connection may become a link.
    /// `not_relay` is what the link showed about the peer ([`Hello::not_relay`] at least).
    pub fn admit(
        &mut self,
        link: LinkId,
        hello: &Hello,
        cost: f64,
        dialed_by_me: bool,
        not_relay: bool,
    ) -> Admission {
        let peer = &hello.node_id;
        if self.links.len() >= crate::wire::MAX_LSA_ITEMS && !self.links.values().any(|l| l.peer == *peer) {
            return Admission::Reject(format!(
                "node {} has {} links, the most one advertisement can list",
                self.me,
                crate::wire::MAX_LSA_ITEMS
            ));
        }
        if *peer == self.me {
            return Admission::Reject(format!(
                "duplicate node id: the peer announces {peer}, which is this node's own id"
            ));
        }
        if let Some(reason) = self.existing_link_conflict(peer, hello.epoch, dialed_by_me) {
            return Admission::Reject(reason);
        }
        if let Some(reason) = self.live_elsewhere(peer, hello.epoch) {
            return Admission::Reject(reason);
        }
        let info = LinkInfo {
            peer: peer.clone(),
            peer_epoch: hello.epoch,
            cost: cost.max(f64::MIN_POSITIVE),
            dialed_by_me,
            up: false,
            leaf: hello.caps & crate::wire::caps::LEAF != 0,
            not_relay: not_relay || hello.not_relay(),
        };
        self.links.insert(link, info);
        Admission::Admit
    }

    /// Returns a rejection reason when a link to `peer` already exists and should be kept.
    /// Closes the old link instead when the new one wins the tie-break.
    fn existing_link_conflict(&mut self, peer: &NodeId, epoch: u64, dialed_by_me: bool) -> Option<String> {
        let (old_id, old) = self.links.iter().find(|(_, l)| l.peer == *peer)?;
        let (old_id, old) = (*old_id, old.clone());
        if old.peer_epoch != epoch {
            return Some(format!(
                "node id {peer} is already in use by a node linked to {} (epoch {}); \
                 a restarted node is accepted once the old link times out",
                self.me, old.peer_epoch
            ));
        }
        // Both nodes keep the connection dialed by the node with the smaller ID, so
        // simultaneous dials converge on the same single link.
        let preferred_dialer_is_me = self.me < *peer;
        let new_preferred = dialed_by_me == preferred_dialer_is_me;
        let old_preferred = old.dialed_by_me == preferred_dialer_is_me;
        if old_preferred && !new_preferred {
            return Some(format!("duplicate link: already connected to {peer}"));
        }
        self.links.remove(&old_id);
        self.flood_targets = None;
        self.actions
            .push(Action::Close { link: old_id, reason: format!("replaced by a newer link to {peer}") });
        self.recompute();
        None
    }

    /// A reason to refuse `peer` when a different live incarnation of it is reachable.
    fn live_elsewhere(&mut self, peer: &NodeId, epoch: u64) -> Option<String> {
        let entry = self.lsdb.get(peer)?;
        if entry.lsa.leaving || entry.lsa.epoch == epoch {
            return None;
        }
        // Only now are current routes needed (a burst of admissions costs no route runs).
        self.settle();
        let entry = self.lsdb.get(peer)?;
        if !self.routes.contains_key(peer) {
            return None;
        }
        Some(format!(
            "node id {peer} is already in use in the mesh (epoch {}, reachable); \
             refusing a second node with the same id",
            entry.lsa.epoch
        ))
    }
}
