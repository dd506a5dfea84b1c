//! Command-line definition of the `receptord` daemon.

use std::path::PathBuf;

use clap::Parser;

/// A persistent node of the receptor mesh.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "/etc/receptor.toml", env = "RECEPTOR_CONFIG")]
    pub config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}
