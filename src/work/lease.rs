//! Unit leases: a unit submitted with a lease (`receptor run` asks for one) is cancelled
//! and released once no client has followed its output (`work results`) for longer than
//! the lease, so an abandoned run cannot linger forever while a client that is briefly
//! disconnected (a relay restart, a link down) finds its unit still there.
//!
//! The lease is a submit field (`"lease": "10m"`) that receptorctl and AWX never send, so
//! their flows are unchanged; it is stored in `unit.json` and so survives daemon restarts
//! (the clock starts again at the restart: no client could attach meanwhile). A remote
//! unit forwards its lease to the node that runs the work, where the mirroring node is the
//! client that keeps it alive.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::units::{Unit, UnitKind, Units};

/// Shortest lease accepted: shorter would expire between a client's reconnection attempts.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Longest lease accepted (7 days, the default retention of completed units).
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest lease a remote unit forwards to the node that runs it: there, this node's
/// mirror is the attached client, and it reconnects with a backoff of up to 5 s.
pub const MIN_FORWARDED_LEASE: Duration = Duration::from_secs(30);
/// The lease `receptor run` asks for unless told otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(600);

/// Who is attached to a unit, and since when nobody is.
#[derive(Debug)]
pub struct LeaseState {
    clients: AtomicUsize,
    unattached_since: Mutex<Instant>,
}

impl Default for LeaseState {
    fn default() -> Self {
        LeaseState { clients: AtomicUsize::new(0), unattached_since: Mutex::new(Instant::now()) }
    }
}

impl LeaseState {
    /// Marks a client as attached until the returned guard is dropped.
    pub fn attach(self: &Arc<Self>) -> Attached {
        self.clients.fetch_add(1, Ordering::SeqCst);
        Attached(self.clone())
    }

    /// How long nobody has been attached (zero while someone is).
    pub fn unattached_for(&self) -> Duration {
        if self.clients.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.unattached_since.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// A client attached to a unit (a `work results` follower, or a submission in progress).
#[derive(Debug)]
pub struct Attached(Arc<LeaseState>);

impl Drop for Attached {
    fn drop(&mut self) {
        *self.0.unattached_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks a lease against [`MIN_LEASE`] and [`MAX_LEASE`].
pub fn check(d: Duration) -> Result<Duration, String> {
    if !(MIN_LEASE..=MAX_LEASE).contains(&d) {
        return Err(format!("lease {d:?} out of range: between {MIN_LEASE:?} and {MAX_LEASE:?}"));
    }
    Ok(d)
}

/// The lease recorded for a unit, if any.
pub fn of(kind: &UnitKind) -> Option<Duration> {
    match kind {
        UnitKind::Local(l) => l.lease,
        UnitKind::Remote(r) => r.lease,
    }
}

/// Watches a leased unit: once nobody has been attached for longer than the lease, the
/// unit is cancelled and released (for a remote unit, on its node too).
pub(super) fn spawn_watch(units: Units, unit: Arc<Unit>) {
    let Some(lease) = of(&unit.kind()) else { return };
    let tracker = units.inner.tracker.clone();
    let stop = unit.stop.clone();
    // At most a second late: with the results session's path probes (every 2 s), a unit
    // whose client is gone stops within its lease and 3 s, whatever the job prints.
    let tick = (lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            if unit.is_releasing() {
                return;
            }
            let idle = unit.lease.unattached_for();
            if idle <= lease {
                continue;
            }
            tracing::info!(unit = %unit.id, ?lease, ?idle, "lease expired: no client attached; releasing the work unit");
            match units.release_unit(&unit, false).await {
                Ok(_) => {
                    units.note_expired(&unit.id, lease);
                    return;
                }
                Err(e) => tracing::warn!(unit = %unit.id, "lease release failed (retrying): {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_bounded() {
        assert_eq!(check(Duration::from_secs(600)), Ok(Duration::from_secs(600)));
        assert!(check(Duration::from_millis(500)).is_err());
        assert!(check(Duration::from_secs(10_000 * 3600)).is_err());
    }

    #[test]
    fn attachment_is_counted() {
        let st = Arc::new(LeaseState::default());
        let a = st.attach();
        let b = st.attach();
        assert_eq!(st.unattached_for(), Duration::ZERO);
        drop(a);
        assert_eq!(st.unattached_for(), Duration::ZERO);
        drop(b);
        assert!(st.unattached_for() < Duration::from_secs(5));
    }
}
