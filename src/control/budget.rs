//! The session budget shared by every control listener of a daemon, so hostile clients
//! cannot lock an operator out: `limits.control_sessions` in all; of those,
//! `limits.control_local_reserved` only for the local Unix socket (remote listeners — TCP,
//! TLS, the mesh service — share the rest); and at most `limits.control_sessions_per_origin`
//! for one origin (a remote IP address over TCP, a node over the mesh). A connection gets
//! its slot before anything else happens on it (a TLS handshake included), and gives it
//! back when it closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Who a connection comes from, as far as the budget is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OriginKey {
    /// The local Unix socket: may use the reserved slots, no per-origin cap.
    Local,
    /// A remote IP address (TCP/TLS) or node (mesh service).
    Remote(String),
}

/// Why a connection got no slot: its line to the client.
pub(crate) const TOO_MANY: &str =
    "ERROR: too many control sessions (limits.control_sessions); try again later\n";
pub(crate) const TOO_MANY_FROM_ORIGIN: &str = "ERROR: too many control sessions from this origin (limits.control_sessions_per_origin); try again later\n";

/// The budget (see the module doc).
pub struct SessionBudget {
    all: Arc<Semaphore>,
    remote: Arc<Semaphore>,
    per_origin: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// A slot, given back on drop.
pub(crate) struct Slot {
    _all: OwnedSemaphorePermit,
    _remote: Option<OwnedSemaphorePermit>,
    _origin: OriginCount,
}

/// One connection counted against its origin, until dropped.
struct OriginCount(Option<(Arc<SessionBudget>, String)>);

impl Drop for OriginCount {
    fn drop(&mut self) {
        let Some((budget, key)) = self.0.take() else { return };
        if let Ok(mut open) = budget.open.lock() {
            if let Some(n) = open.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}

impl SessionBudget {
    pub fn new(limits: &crate::limits::Limits) -> Arc<SessionBudget> {
        let all = limits.control_sessions;
        let remote = all.saturating_sub(limits.control_local_reserved).max(1);
        Arc::new(SessionBudget {
            all: Arc::new(Semaphore::new(all)),
            remote: Arc::new(Semaphore::new(remote)),
            per_origin: limits.control_sessions_per_origin,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `origin`, or the line telling it why not.
    pub(crate) fn admit(self: &Arc<Self>, origin: &OriginKey) -> Result<Slot, &'static str> {
        let OriginKey::Remote(key) = origin else {
            let all = self.all.clone().try_acquire_owned().map_err(|_| TOO_MANY)?;
            return Ok(Slot { _all: all, _remote: None, _origin: OriginCount(None) });
        };
        {
            let mut open = self.open.lock().map_err(|_| TOO_MANY)?;
            let n = open.entry(key.clone()).or_insert(0);
            if *n >= self.per_origin {
                return Err(TOO_MANY_FROM_ORIGIN);
            }
            *n += 1;
        }
        // Dropped on any return below: the origin's count is given back.
        let counted = OriginCount(Some((self.clone(), key.clone())));
        let remote = self.remote.clone().try_acquire_owned().map_err(|_| TOO_MANY)?;
        let all = self.all.clone().try_acquire_owned().map_err(|_| TOO_MANY)?;
        Ok(Slot { _all: all, _remote: Some(remote), _origin: counted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(all: usize, reserved: usize, per_origin: usize) -> crate::limits::Limits {
        crate::limits::Limits {
            control_sessions: all,
            control_local_reserved: reserved,
            control_sessions_per_origin: per_origin,
            ..Default::default()
        }
    }

    #[test]
    fn one_origin_cannot_take_every_slot_and_local_ones_are_kept() {
        let budget = SessionBudget::new(&limits(6, 2, 3));
        let a = OriginKey::Remote("10.0.0.1".into());
        let b = OriginKey::Remote("10.0.0.2".into());
        let from_a: Vec<Slot> = (0..3).map(|_| budget.admit(&a).expect("a")).collect();
        assert_eq!(budget.admit(&a).err(), Some(TOO_MANY_FROM_ORIGIN));
        let _b1 = budget.admit(&b).expect("b has its own share");
        assert_eq!(budget.admit(&b).err(), Some(TOO_MANY), "remote slots (6 - 2 reserved) are used up");
        let local: Vec<Slot> = (0..2).map(|_| budget.admit(&OriginKey::Local).expect("reserved")).collect();
        assert_eq!(budget.admit(&OriginKey::Local).err(), Some(TOO_MANY), "all 6 in use");
        drop(from_a);
        drop(local);
        let again = budget.admit(&a).expect("slots and the origin's count come back");
        assert_eq!(budget.open.lock().map(|o| o.get("10.0.0.1").copied()).ok().flatten(), Some(1));
        drop(again);
        assert_eq!(budget.open.lock().map(|o| o.len()).ok(), Some(1), "only b's count is left");
    }
}
