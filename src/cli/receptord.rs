//! Command-line definition of the `receptord` daemon.

use std::path::PathBuf;

use clap::Parser;

/// A persistent node of the receptor mesh.
#[derive(Parser, Debug)]
#[command(name = "receptord", version, about)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "/etc/receptor.toml", env = "RECEPTOR_CONFIG")]
    pub config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Override log.format: text (journald-friendly) or json (one object per line).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// For systemd's ExecReload: send SIGHUP to the daemon PID and wait until it has
    /// applied the new configuration (exit 0) or refused it (exit 1).
    #[arg(long, value_name = "PID")]
    pub reload_service: Option<i32>,
    /// Internal: supervise the work unit in this directory (started by the daemon).
    #[arg(long, hide = true, value_name = "DIR")]
    pub supervise_unit: Option<PathBuf>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for crate::config::LogFormat {
    fn from(a: LogFormatArg) -> Self {
        match a {
            LogFormatArg::Text => crate::config::LogFormat::Text,
            LogFormatArg::Json => crate::config::LogFormat::Json,
        }
    }
}
