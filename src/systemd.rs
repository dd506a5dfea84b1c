//! systemd integration: readiness, reload and stop notifications, STATUS lines, and
//! watchdog pings. Every call is a no-op when the daemon is not run by systemd.
//!
//! Reload: systemd 253+ (`Type=notify-reload`) waits for `RELOADING=1` with
//! `MONOTONIC_USEC` then `READY=1`; systemd 252 (Debian 12) ends a reload job when
//! `ExecReload` exits, so the unit's `ExecReload` is `receptord --reload-service $MAINPID`
//! ([`reload_service`]), which sends SIGHUP and returns once the daemon has recorded the
//! outcome in `$RUNTIME_DIRECTORY/reload` ([`reload_done`]): applied, or refused (then it
//! fails, and `systemctl reload` with it).

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

/// A reload starts (`RELOADING=1` and the monotonic time, as systemd 253 asks).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// The file a reload's outcome is recorded in, under systemd's `RuntimeDirectory=`.
fn reload_record() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("RUNTIME_DIRECTORY")?;
    // Several directories are separated by colons; the first is the service's own.
    let first = dir.to_str()?.split(':').next()?.to_owned();
    Some(std::path::Path::new(&first).join("reload"))
}

/// How many reloads this process has finished.
static RELOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A reload ended with `result`: recorded for `--reload-service`, then `READY=1`.
pub fn reload_done(result: &Result<(), String>) {
    if let Some(path) = reload_record() {
        let n = RELOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let line = match result {
            Ok(()) => format!("{} {n} applied\n", std::process::id()),
            Err(e) => format!("{} {n} refused: {}\n", std::process::id(), e.replace('\n', " ")),
        };
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, &path)).is_err() {
            tracing::debug!(path = %path.display(), "could not record the reload outcome");
        }
    }
    ready();
}

/// How long `--reload-service` waits for the daemon to apply or refuse the new config.
pub const RELOAD_WAIT: Duration = Duration::from_secs(90);

/// `receptord --reload-service PID` (the unit's `ExecReload`): SIGHUP to `pid`, then wait
/// for its recorded outcome. Without `$RUNTIME_DIRECTORY` it only signals.
pub fn reload_service(pid: i32) -> Result<String, String> {
    use nix::sys::signal::{Signal, kill};
    let record = reload_record();
    let read = || record.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    let before = read();
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| format!("signalling {pid}: {e}"))?;
    if record.is_none() {
        return Ok("reload signalled".into());
    }
    let start = std::time::Instant::now();
    while start.elapsed() < RELOAD_WAIT {
        let now = read();
        // Ours: this daemon's, and a new one.
        if now != before && now.starts_with(&format!("{pid} ")) {
            let outcome = now.trim_end().splitn(3, ' ').nth(2).unwrap_or("").to_owned();
            return if outcome == "applied" { Ok(outcome) } else { Err(outcome) };
        }
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            return Err(format!("process {pid} exited during the reload"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("no reload outcome after {}s", RELOAD_WAIT.as_secs()))
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

/// The slice every work unit's scope is placed in (`systemctl stop receptord-units.slice`
/// ends them all).
pub const UNITS_SLICE: &str = "receptord-units.slice";

/// `systemd-run`, when this daemon was started by systemd (`INVOCATION_ID`), runs as root
/// and a probe scope starts: work units then run in transient scopes of their own, so
/// systemd neither logs their processes as left over on every restart nor counts them as
/// the service's. Probed once per process; the probe is bounded to 5 s.
pub fn scope_runner() -> Option<std::path::PathBuf> {
    static RUNNER: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    RUNNER
        .get_or_init(|| {
            if std::env::var_os("INVOCATION_ID").is_none() || !nix::unistd::geteuid().is_root() {
                return None;
            }
            let runner = crate::config::resolve_program(std::path::Path::new("systemd-run"))?;
            let probe = format!("receptord-probe-{}", std::process::id());
            match probe_scope(&runner, &probe) {
                Ok(()) => {
                    tracing::info!(slice = UNITS_SLICE, "work units run in transient systemd scopes");
                    Some(runner)
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "work units stay in the service's control group: systemd-run --scope failed"
                    );
                    None
                }
            }
        })
        .clone()
}

fn probe_scope(runner: &std::path::Path, name: &str) -> Result<(), String> {
    let truth = crate::config::resolve_program(std::path::Path::new("true")).ok_or("no `true` on PATH")?;
    let mut child = std::process::Command::new(runner)
        .args(scope_args(name))
        .arg(truth)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(st) if st.success() => return Ok(()),
            Some(st) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.by_ref().take(4096).read_to_string(&mut err);
                }
                return Err(format!("{st}: {}", err.trim()));
            }
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("no answer within 5 s".into());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `systemd-run` arguments that run the rest of the command line in scope `name`.
pub fn scope_args(name: &str) -> Vec<String> {
    vec![
        "--scope".into(),
        "--quiet".into(),
        "--collect".into(),
        format!("--slice={UNITS_SLICE}"),
        format!("--unit={name}"),
        "--".into(),
    ]
}
