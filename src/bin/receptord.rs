//! `receptord`: the mesh daemon. Loads and validates its config before binding anything,
//! then runs until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use receptord::cli::receptord::Args;
use receptord::config::Config;

/// EX_USAGE / EX_CONFIG from sysexits.h.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.supervise_unit {
        // Its stderr is the unit's supervisor.log.
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).with_target(false).init();
        let code = receptord::work::supervisor::main(dir);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let mut cfg = match Config::load(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("receptord: invalid configuration: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Some(f) = args.log_format {
        cfg.log.format = f.into();
    }
    if args.check_config {
        if let Err(e) = receptord::daemon::load_tls(&cfg) {
            eprintln!("receptord: invalid configuration: {}", receptord::report::chain(&e));
            return ExitCode::from(EX_CONFIG);
        }
        println!("{}: configuration OK (node {})", args.config.display(), cfg.node.id);
        return ExitCode::SUCCESS;
    }
    match run(cfg, args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("receptord: {}", receptord::report::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: Config, path: std::path::PathBuf) -> anyhow::Result<()> {
    let _guard = receptord::logging::init(&cfg.log.level, cfg.log.format, cfg.log.file.as_deref())
        .context("setting up logging")?;
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(receptord::daemon::run(cfg, path)).context("daemon")
}
