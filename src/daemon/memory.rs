//! When the daemon gives back the executable's pages that only start-up used
//! (`alloc::executable_pages`): once it is ready (argument and config parsing,
//! TLS material, binding are over), again [`SETTLE`] later (the configured peers dialled,
//! their handshakes and first advertisements done), and after each reload, which runs the
//! configuration code once more. Why it helps and what it costs: docs/LIMITS.md, "Memory".
//! And when it gives back the heap the data path freed: [`QUIET`] after a burst of
//! traffic on the links ends (`alloc::TRAFFIC`), since the allocator keeps what it freed
//! meanwhile (`alloc::hold_freed_memory`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long after start-up the second release comes: links to reachable peers are up and
/// have exchanged their first advertisements well within it.
pub(super) const SETTLE: Duration = Duration::from_secs(10);

/// How long the links must carry nothing after a burst before the freed heap goes back.
pub(super) const QUIET: Duration = Duration::from_secs(5);

/// Releases now, and once more after [`SETTLE`] unless the daemon stops first; gives the
/// freed heap back after each burst of traffic until the daemon stops.
pub(super) fn after_start_up(tracker: &TaskTracker, cancel: CancellationToken) {
    release("start-up");
    let (stop, tasks) = (cancel.clone(), tracker.clone());
    tracker.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(SETTLE) => {
                release("settling");
                // And what start-up freed (config parsing, TLS material, first handshakes).
                let _ = tasks.spawn_blocking(crate::alloc::release_free_memory).await;
            }
            _ = stop.cancelled() => {}
        }
    });
    let tasks = tracker.clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = crate::alloc::TRAFFIC.burst_then_quiet(QUIET) => {}
                _ = cancel.cancelled() => return,
            }
            let trimmed = tasks.spawn_blocking(crate::alloc::release_free_memory).await;
            tracing::debug!(trimmed = trimmed.unwrap_or(false), "{QUIET_TRIM}");
        }
    });
}

/// What the log says when the links went quiet and the heap was given back.
const QUIET_TRIM: &str = "the links went quiet: freed heap given back";

/// Releases what start-up (or a reload) mapped of the executable, saying how much first:
/// the formatting code of a log line is code an idle daemon does not run either.
pub(super) fn release(after: &str) {
    let released = crate::alloc::executable_pages().and_then(|pages| {
        tracing::info!(
            after,
            mappings = pages.mappings,
            resident_kib = pages.resident_kib,
            "releasing the executable's start-up pages"
        );
        pages.release()
    });
    if let Err(e) = released {
        tracing::warn!(after, "could not release the executable's start-up pages: {e}");
    }
}
