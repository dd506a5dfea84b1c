//! Time in the [`Mesh`]: the slow refresh of our own advertisement, the aging of silent
//! entries and the forgetting of unreachable ones, and when the driver must next call
//! [`Mesh::tick`] (nothing here ticks on its own: an idle node wakes up rarely).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Mesh;
use crate::mesh::routing::Route;
use crate::wire::NodeId;

/// How many scans for aged entries fit into `node_timeout` (its precision).
const AGING_SCANS: u32 = 8;

impl Mesh {
    /// Periodic work: refresh our advertisement, forget silent nodes and nodes that have
    /// been unreachable for `forget_unreachable`. Call it at [`Mesh::next_deadline`].
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        if now.duration_since(self.last_refresh) >= self.cfg.refresh {
            self.own_dirty = true;
        }
        let aging = now.duration_since(self.last_aging) >= self.aging_scan();
        let forgetting = self.next_forget.is_some_and(|t| t <= now);
        if !aging && !forgetting {
            return;
        }
        if aging {
            self.last_aging = now;
        }
        let (timeout, grace) = (self.cfg.node_timeout, self.cfg.forget_unreachable);
        let before = self.lsdb.len();
        let mut freed = 0;
        let mut next_forget: Option<Instant> = None;
        self.lsdb.retain(|_, e| {
            let silent = now.duration_since(e.received) >= timeout;
            let gone = e.unreachable_since.is_some_and(|t| now.duration_since(t) >= grace);
            let keep = !silent && !gone;
            if !keep {
                freed += e.lsa.held_bytes();
            } else if let Some(t) = e.unreachable_since {
                next_forget = Some(next_forget.map_or(t + grace, |n| n.min(t + grace)));
            }
            keep
        });
        self.next_forget = next_forget;
        self.db_bytes -= freed;
        self.claims.retain(|id, _| self.lsdb.contains_key(id));
        if self.lsdb.len() != before {
            self.recompute();
        }
    }

    fn aging_scan(&self) -> Duration {
        (self.cfg.node_timeout / AGING_SCANS).max(Duration::from_millis(100))
    }

    /// When [`Mesh::tick`] has something to do next.
    pub fn next_deadline(&self) -> Instant {
        let mut t = (self.last_refresh + self.cfg.refresh).min(self.last_aging + self.aging_scan());
        if let Some(f) = self.next_forget {
            t = t.min(f);
        }
        t
    }

    /// Stamps entries that lost their route (and clears the stamp of those that have one).
    pub(super) fn mark_unreachable(&mut self, routes: &HashMap<NodeId, Route>) {
        let (now, grace) = (self.now, self.cfg.forget_unreachable);
        let mut next_forget = None::<Instant>;
        for (id, e) in self.lsdb.iter_mut() {
            if routes.contains_key(id) {
                e.unreachable_since = None;
                continue;
            }
            let since = *e.unreachable_since.get_or_insert(now);
            next_forget = Some(next_forget.map_or(since + grace, |n| n.min(since + grace)));
        }
        self.next_forget = next_forget;
    }
}
