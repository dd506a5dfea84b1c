//! When the daemon gives back the executable's pages that only start-up used
//! (`alloc::executable_pages`): once it is ready (argument and config parsing,
//! TLS material, binding are over), again [`SETTLE`] later (the configured peers dialled,
//! their handshakes and first advertisements done), and after each reload, which runs the
//! configuration code once more. Why it helps and what it costs: docs/LIMITS.md, "Memory".

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long after start-up the second release comes: links to reachable peers are up and
/// have exchanged their first advertisements well within it.
pub(super) const SETTLE: Duration = Duration::from_secs(10);

/// Releases now, and once more after [`SETTLE`] unless the daemon stops first.
pub(super) fn after_start_up(tracker: &TaskTracker, cancel: CancellationToken) {
    release("start-up");
    tracker.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(SETTLE) => release("settling"),
            _ = cancel.cancelled() => {}
        }
    });
}

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
