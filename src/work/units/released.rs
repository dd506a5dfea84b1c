//! Released units' files, deleted behind the release. A release renames the unit's
//! directory into `units/.released/` (the unit is gone from the store at once), and one
//! reaper on the blocking pool empties that directory: one task at a time however many
//! units are released together (`work release --all`, or leftovers found at start-up),
//! never a thread per unit. What a stopped daemon left there is deleted when it starts.

use std::sync::atomic::Ordering;

use super::*;

/// Where released units' directories wait for their deletion, under the store's root
/// (a name no unit ID can take: IDs are alphanumeric).
pub(super) const RELEASED: &str = ".released";

/// Whether the reaper runs, and whether it must look again before it stops.
#[derive(Default)]
pub(super) struct Reaper {
    running: AtomicBool,
    again: AtomicBool,
}

impl Units {
    /// Creates [`RELEASED`] if missing (a release whose rename finds no directory deletes
    /// the unit's files inline instead).
    pub(super) fn open_released(root: &Path) -> Result<(), UnitError> {
        let dir = root.join(RELEASED);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io_err("creating", &dir)(e)),
            _ => Ok(()),
        }
    }

    /// Has [`RELEASED`] emptied: starts the reaper, or has the running one look again
    /// (what was moved there before this call is deleted). Inline outside a runtime.
    pub(super) fn reap(&self) {
        let reaper = &self.inner.reaper;
        reaper.again.store(true, Ordering::SeqCst);
        if reaper.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        let work = move || {
            let reaper = &inner.reaper;
            loop {
                reaper.again.store(false, Ordering::SeqCst);
                empty(&inner.root.join(RELEASED));
                reaper.running.store(false, Ordering::SeqCst);
                // A request that came while emptying, and found it running, is ours.
                if !reaper.again.load(Ordering::SeqCst) || reaper.running.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.inner.tracker.spawn_blocking(work);
        } else {
            work();
        }
    }
}

/// Deletes every entry of `dir`. A failure is logged: the entry is out of the store
/// either way, and the next reap tries it again.
fn empty(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let deleted = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match deleted {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %path.display(), "cannot delete a released unit's files: {e}");
            }
            _ => {}
        }
    }
}
