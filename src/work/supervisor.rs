//! The work-unit supervisor: `receptord --supervise-unit DIR`, a small process of its
//! own (own process group, not tied to the daemon) that runs one unit's plan, appends the
//! job's output to `DIR/stdout` as it comes, and records the unit's status. It holds an
//! exclusive lock on `DIR/supervisor.lock` while alive, which is how a (re)started daemon
//! tells a live unit from one whose process is gone.
//!
//! SIGINT means "cancel" (the unit ends Canceled); SIGTERM means the host is stopping it
//! (the unit ends Failed, "Killed"). Either way the job's whole process tree is stopped.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::sink::FileSink;
use super::units::{MONITOR_TICK, State, UnitKind, UnitStatus, read_json, write_json};
use super::{Job, JobInput, JobOutput, JobResult};

/// How long a job runs before its supervisor gives back its start-up pages.
const SUPERVISOR_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the unit in `dir` to completion; returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("supervisor.lock"))
    {
        Ok(f) => f,
        Err(e) => {
            log(format_args!("{}: {e}", dir.display()));
            return 1;
        }
    };
    let _lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, e)) => {
            log(format_args!("{} is already supervised: {e}", dir.display()));
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log(format_args!("cannot start the runtime: {e}"));
            return 1;
        }
    };
    match rt.block_on(supervise(dir)) {
        Ok(()) => 0,
        Err(e) => {
            log(format_args!("{}: {e}", dir.display()));
            let mut st = read_json::<UnitStatus>(&dir.join("status")).unwrap_or_else(|| UnitStatus {
                state: State::Failed,
                detail: String::new(),
                stdout_size: 0,
                work_type: String::new(),
                extra: Value::Null,
            });
            st.state = State::Failed;
            st.detail = format!("Failed to start command runner: {e}");
            st.extra = Value::Null;
            let _ = write_json(&dir.join("status"), &st);
            1
        }
    }
}

/// Writes a line to the supervisor's log (its stderr, `supervisor.log`). Never panics, as
/// `eprintln!` does when the write fails: that log lives on the data disk, which may be
/// full, and a full disk must fail only the unit that could not write, with its reason.
fn log(msg: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "receptord supervisor: {msg}");
}

/// Why the unit ended, when it was stopped from outside.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    None,
    Cancel,
    Kill,
}

async fn supervise(dir: &Path) -> Result<(), String> {
    let kind: UnitKind = read_json(&dir.join("unit.json")).ok_or("unit.json missing or unreadable")?;
    let UnitKind::Local(unit) = kind else { return Err("not a local unit".into()) };
    let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let stdout_path = dir.join("stdout");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&stdout_path)
        .map_err(|e| format!("opening {}: {e}", stdout_path.display()))?;
    let size = Arc::new(AtomicU64::new(out.metadata().map(|m| m.len()).unwrap_or(0)));
    let stdin = tokio::fs::File::open(dir.join("stdin")).await.map_err(|e| format!("opening stdin: {e}"))?;
    let pid = std::process::id();
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let status = |state: State, detail: String, size: u64, extra: Value| UnitStatus {
        state,
        detail,
        stdout_size: size,
        work_type: unit.work_type.clone(),
        extra,
    };
    let running_extra = json!({"Pid": pid, "Params": unit.params});
    let write_status = |st: &UnitStatus| {
        if let Err(e) = write_json(&dir.join("status"), st) {
            log(format_args!("{e}"));
        }
    };
    // Cancelled before it could start.
    if dir.join("cancel").exists() {
        write_status(&status(State::Canceled, "Canceled".into(), size.load(Ordering::SeqCst), Value::Null));
        return Ok(());
    }
    write_status(&status(
        State::Running,
        format!("Running: PID {pid}"),
        size.load(Ordering::SeqCst),
        running_extra.clone(),
    ));

    let (output, mut rx) = JobOutput::channel();
    let cancel = CancellationToken::new();
    let job = Job {
        id: id.clone(),
        submitter: unit.submitter.clone(),
        node: unit.submitter.clone(),
        params: serde_json::Map::new(),
        input: JobInput::file(stdin),
        output,
        cancel: cancel.clone(),
        job_dir: dir.join("job"),
        // DIR is data_dir/units/ID.
        tmp_root: dir.parent().and_then(Path::parent).unwrap_or(dir).join("tmp"),
    };
    let work = unit.plan.work_type().run(job);

    // Output goes to disk as it comes; the size is published for the status. Output that
    // cannot be written (a full disk) stops the job: a unit's output is never silently cut.
    let written = size.clone();
    let stop_job = cancel.clone();
    // One thread writes the output as it comes (`work::sink`), whatever has queued in
    // one go; a lone chunk is written at once, so followers see output as soon as it comes.
    let writer = async move {
        let told = written.clone();
        let mut out = FileSink::new(out, Box::new(move |len| told.store(len, Ordering::SeqCst)));
        let mut failed = false;
        while let Some(chunk) = rx.recv().await {
            // Output queued behind this chunk goes to the thread with it; a lone chunk
            // goes at once.
            if !failed && out.write_more(chunk, !rx.is_empty()).await.is_err() {
                // The reason comes from `finish` below.
                failed = true;
                stop_job.cancel();
            }
        }
        // What the status reports is what is on disk.
        match out.finish(true).await {
            Ok(len) => {
                written.store(len, Ordering::SeqCst);
                None
            }
            Err(e) => {
                log(format_args!("writing output: {e}; stopping the job"));
                stop_job.cancel();
                Some(e.to_string())
            }
        }
    };

    let mut stop = Stop::None;
    let mut ticker = tokio::time::interval(MONITOR_TICK);
    // A supervisor lives as long as its job, often hours: once the job has run a while,
    // the pages of the executable only its start-up used are given back, as the daemon's
    // are (`alloc::executable_pages`, docs/LIMITS.md "Memory of an idle daemon").
    let settle = tokio::time::sleep(SUPERVISOR_SETTLE);
    tokio::pin!(settle);
    let mut settled = false;
    let mut reported = size.load(Ordering::SeqCst);
    let both = async { tokio::join!(work, writer) };
    tokio::pin!(both);
    let (result, write_err): (JobResult, Option<String>) = loop {
        tokio::select! {
            r = &mut both => break r,
            _ = sigint.recv(), if stop == Stop::None => { stop = Stop::Cancel; cancel.cancel(); }
            _ = sigterm.recv(), if stop == Stop::None => { stop = Stop::Kill; cancel.cancel(); }
            _ = &mut settle, if !settled => {
                settled = true;
                let released = crate::alloc::executable_pages().and_then(|pages| {
                    // Said before: formatting is code the job's wait does not run either.
                    log(format_args!("releasing the executable's start-up pages ({} KiB)", pages.resident_kib));
                    pages.release()
                });
                if let Err(e) = released {
                    log(format_args!("could not release the executable's start-up pages: {e}"));
                }
            }
            _ = ticker.tick() => {
                let now = size.load(Ordering::SeqCst);
                if now != reported {
                    reported = now;
                    write_status(&status(State::Running, format!("Running: PID {pid}"), now, running_extra.clone()));
                }
            }
        }
    };
    let size = size.load(Ordering::SeqCst);
    let (state, detail) = match (stop, write_err) {
        (_, Some(e)) => (State::Failed, format!("Error writing output: {e}")),
        (Stop::Cancel, None) => (State::Canceled, "Canceled".to_owned()),
        (Stop::Kill, None) => (State::Failed, "Killed".to_owned()),
        (Stop::None, None) => outcome(&result),
    };
    write_status(&status(state, detail, size, Value::Null));
    Ok(())
}

/// State and Detail for a job that ran to its end, in Go's wording.
fn outcome(r: &JobResult) -> (State, String) {
    match (r.exit_code, r.signal, &r.error) {
        (_, _, Some(e)) if r.exit_code.is_none() && r.signal.is_none() => (State::Failed, e.clone()),
        (Some(0), _, _) => (State::Succeeded, "exit status 0".into()),
        (Some(c), _, _) => (State::Failed, format!("exit status {c}")),
        (None, Some(s), _) => (State::Failed, format!("signal: {}", signal_name(s))),
        (None, None, _) => (State::Failed, "Failed: no exit status".into()),
    }
}

/// Go's names for the common signals (`signal: killed`).
fn signal_name(sig: i32) -> String {
    match sig {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        6 => "aborted".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_use_go_wording() {
        let ok = JobResult { exit_code: Some(0), ..JobResult::default() };
        assert_eq!(outcome(&ok), (State::Succeeded, "exit status 0".into()));
        let bad = JobResult { exit_code: Some(2), ..JobResult::default() };
        assert_eq!(outcome(&bad), (State::Failed, "exit status 2".into()));
        let killed = JobResult { signal: Some(9), ..JobResult::default() };
        assert_eq!(outcome(&killed), (State::Failed, "signal: killed".into()));
        let err = JobResult::failed("cannot start x: No such file");
        assert_eq!(outcome(&err), (State::Failed, "cannot start x: No such file".into()));
    }
}
