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
