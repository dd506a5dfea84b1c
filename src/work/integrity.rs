//! One policy for end-to-end stream failures while a remote work unit is followed, used
//! by both followers (a node's mirror of a remote unit, `work::remote`, and `receptor
//! run`, `client::durable`): what counts as tampering, when the count resets, and the
//! reason a unit fails with.
//!
//! Proof of tampering ([`RemoteError::Integrity`]: a record failed authentication, a frame
//! arrived twice) always counts. A gap, reordering or early end ([`RemoteError::Sequence`])
//! counts only when this node saw no route change to the other end and none of its links
//! went down during the attempt; otherwise frames were lost to a reroute, a link failure,
//! retried without counting. The count is of attempts in a row: an attempt that makes
//! progress and ends without an integrity failure resets it. At `limits.integrity_attempts`
//! the caller fails the unit with the reason returned, which names the failure and path.

use super::remote::{RemoteControl, RemoteError};
use crate::mesh::reroute::RouteMark;
use crate::wire::NodeId;

/// What a failed attempt means.
#[derive(Debug)]
pub enum Judgement {
    /// Not an integrity failure: the caller handles it as before.
    Other(RemoteError),
    /// An integrity failure that is not final: retry (the reason says why and whether it
    /// counted).
    Retry(String),
    /// Tampering `limits.integrity_attempts` times in a row: fail for good with this.
    Final(String),
}

/// Integrity failures of one follower, in a row.
pub struct IntegrityBudget {
    attempts: u32,
    count: u32,
    mark: Option<RouteMark>,
}

impl IntegrityBudget {
    pub fn new(attempts: u32) -> IntegrityBudget {
        IntegrityBudget { attempts: attempts.max(1), count: 0, mark: None }
    }

    /// An attempt starts now (remembers where the route history stands).
    pub fn begin(&mut self, remote: &dyn RemoteControl) {
        self.mark = remote.route_mark();
    }

    /// The attempt made progress and did not end in an integrity failure.
    pub fn progressed(&mut self) {
        self.count = 0;
    }

    /// Judges a failed attempt to reach `node`; `progressed`: output arrived before it
    /// failed (an attempt that made progress and failed otherwise resets the count).
    pub async fn judge(
        &mut self,
        remote: &dyn RemoteControl,
        node: &NodeId,
        e: RemoteError,
        progressed: bool,
    ) -> Judgement {
        let (why, proof) = match e {
            RemoteError::Integrity(why) => (why, true),
            RemoteError::Sequence(why) => (why, false),
            other => {
                if progressed {
                    self.progressed();
                }
                return Judgement::Other(other);
            }
        };
        let path = remote.path(node).await;
        let path = if path.is_empty() { format!("to {node}") } else { path };
        if !proof && remote.rerouted_since(node, self.mark) {
            if progressed {
                self.progressed();
            }
            return Judgement::Retry(format!(
                "{why} on the path {path}; the route changed or a link went down meanwhile, so \
                 frames were lost to a link failure: retrying"
            ));
        }
        self.count += 1;
        let (n, of) = (self.count, self.attempts);
        let kind =
            if proof { "tampering in transit" } else { "tampering in transit (the path did not change)" };
        if n >= of {
            return Judgement::Final(format!(
                "{kind}: {why} on the path {path} ({n} times in a row; limits.integrity_attempts = {of})"
            ));
        }
        Judgement::Retry(format!("{kind}: {why} on the path {path} (attempt {n} of {of}; retrying)"))
    }
}
