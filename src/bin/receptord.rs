//! `receptord`: the mesh daemon. Loads and validates its config before binding anything,
//! then runs until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use receptord::cli::receptord::Args;
use receptord::config::Config;

/// EX_CONFIG from sysexits.h: the unit's `RestartPreventExitStatus=` stops restarting.
const EX_CONFIG: u8 = 78;

/// A fatal error on stderr: one line (one journal entry) and, when stderr is the journal,
/// at `err` priority.
fn fatal(msg: &str) {
    let line = msg.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
    let priority = if receptord::systemd::under_journald() { "<3>" } else { "" };
    eprintln!("{priority}receptord: {line}");
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.supervise_unit {
        // Its stderr is the unit's supervisor.log.
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).with_target(false).init();
        let code = receptord::work::supervisor::main(dir);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // The daemon only (docs/LIMITS.md, "The heap after work"); a supervisor keeps glibc's
    // defaults. Before the runtime starts its threads.
    receptord::alloc::hold_freed_memory();
    if let Some(pid) = args.reload_service {
        return match receptord::systemd::reload_service(pid) {
            Ok(how) => {
                println!("receptord: reload {how}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                fatal(&format!("reload failed: {why}"));
                ExitCode::FAILURE
            }
        };
    }
    let mut cfg = match Config::load(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            fatal(&format!("invalid configuration: {e}"));
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Some(f) = args.log_format {
        cfg.log.format = f.into();
    }
    if args.check_config {
        if let Err(e) = receptord::daemon::load_tls(&cfg) {
            fatal(&format!("invalid configuration: {}", receptord::report::chain(&e)));
            return ExitCode::from(EX_CONFIG);
        }
        println!("{}: configuration OK (node {})", args.config.display(), cfg.node.id);
        return ExitCode::SUCCESS;
    }
    match run(cfg, args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fatal(&receptord::report::chain(e.as_ref()));
            // Configured files that cannot be used (TLS material, signing keys) are
            // configuration errors too: restarting cannot help.
            let config_error = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<receptord::daemon::DaemonError>(),
                    Some(receptord::daemon::DaemonError::Tls(_) | receptord::daemon::DaemonError::Key { .. })
                )
            });
            ExitCode::from(if config_error { EX_CONFIG } else { 1 })
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
