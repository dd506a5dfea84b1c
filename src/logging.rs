//! Log output through `tracing`: human-readable or JSON lines on stderr (journald-friendly),
//! optionally also to a daily-rotated file via `tracing-appender`. Under systemd (stderr is
//! the journal) text lines carry `<N>` syslog priorities and no timestamp of their own.

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log level {0:?}")]
    Level(String),
    #[error("log file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Installs the global subscriber. Keep the returned guard alive to flush file output.
pub fn init(level: &str, format: LogFormat, file: Option<&Path>) -> Result<Option<WorkerGuard>, LogError> {
    let filter = || EnvFilter::try_new(level).map_err(|_| LogError::Level(level.to_owned()));
    let stderr = match format {
        LogFormat::Text if crate::systemd::under_journald() => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(Journald::default())
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter()?);
    let (file_layer, guard) = match file {
        None => (None, None),
        Some(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let name = path.file_name().ok_or_else(|| LogError::File {
                path: path.display().to_string(),
                reason: "not a file name".into(),
            })?;
            std::fs::create_dir_all(dir)
                .map_err(|e| LogError::File { path: path.display().to_string(), reason: e.to_string() })?;
            let appender = tracing_appender::rolling::daily(dir, name);
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = fmt::layer().with_writer(writer).with_ansi(false).with_filter(filter()?);
            (Some(layer), Some(guard))
        }
    };
    let _ = tracing_subscriber::registry().with(stderr).with(file_layer).try_init();
    Ok(guard)
}

/// Text lines for the journal: a `<N>` syslog priority prefix, no timestamp (journald
/// stamps each line itself), otherwise the usual compact format.
struct Journald {
    inner: fmt::format::Format<fmt::format::Full, ()>,
}

impl Default for Journald {
    fn default() -> Self {
        Journald { inner: fmt::format().without_time().with_target(false).with_ansi(false) }
    }
}

impl<S, N> fmt::FormatEvent<S, N> for Journald
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &fmt::FmtContext<'_, S, N>,
        mut writer: fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Keeps a repetitive warning from flooding the log: at most `burst` lines per `per`,
/// after which occurrences are only counted; the next line that passes carries the count
/// (`suppressed = N`). One `static` per call site:
///
/// ```ignore
/// static DROPPED: Throttle = Throttle::new(Duration::from_secs(10), 5);
/// if let Some(suppressed) = DROPPED.allow() { tracing::warn!(suppressed, "…"); }
/// ```
pub struct Throttle {
    per: std::time::Duration,
    burst: u32,
    state: std::sync::Mutex<ThrottleState>,
}

struct ThrottleState {
    window: Option<std::time::Instant>,
    emitted: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(per: std::time::Duration, burst: u32) -> Throttle {
        Throttle {
            per,
            burst,
            state: std::sync::Mutex::new(ThrottleState { window: None, emitted: 0, suppressed: 0 }),
        }
    }

    /// `Some(occurrences suppressed since the last line)` when this one may be logged.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(std::time::Instant::now())
    }

    fn allow_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut s = self.state.lock().ok()?;
        if s.window.is_none_or(|w| now.saturating_duration_since(w) >= self.per) {
            s.window = Some(now);
            s.emitted = 0;
        }
        if s.emitted >= self.burst {
            s.suppressed += 1;
            return None;
        }
        s.emitted += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Throttle;

    #[test]
    fn the_throttle_passes_a_burst_then_reports_what_it_held_back() {
        let t = Throttle::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(t.allow_at(t0), Some(0));
        assert_eq!(t.allow_at(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.allow_at(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(t.allow_at(t0 + Duration::from_secs(11)), Some(1000));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(11)), Some(0));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(12)), None);
    }
}
