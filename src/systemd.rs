//! systemd integration: readiness, reload and stop notifications, STATUS lines, and
//! watchdog pings. Every call is a no-op when the daemon is not run by systemd.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn notify(state: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, state);
    }
}

/// Listeners are bound and the configuration is loaded.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

pub fn reloading() {
    notify(&[NotifyState::Reloading]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// A one-line status shown by `systemctl status`.
pub fn status(line: &str) {
    notify(&[NotifyState::Status(line)]);
}

/// Whether stderr is connected to the journal (systemd sets JOURNAL_STREAM to its dev:ino).
pub fn under_journald() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Pings the watchdog at half its interval and refreshes the STATUS line with `describe()`
/// until `cancel` fires. Spawned only when systemd is listening.
pub fn spawn_heartbeat<F>(tracker: &TaskTracker, cancel: CancellationToken, describe: F)
where
    F: Fn() -> String + Send + 'static,
{
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
    let period = if watchdog {
        Duration::from_micros(usec / 2).max(Duration::from_millis(100))
    } else {
        Duration::from_secs(5)
    };
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let line = describe();
            if watchdog {
                notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
            } else {
                status(&line);
            }
        }
    });
}
