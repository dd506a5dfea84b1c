//! Child processes for jobs: explicit program and arguments (no shell), their own process
//! group, stdin fed from the job input, stdout streamed to the job output, and the whole
//! group killed on cancel (SIGTERM, a grace period, then SIGKILL) and after exit.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use super::{JobInput, JobOutput, JobResult};

/// Bytes of stderr kept for the job result.
const STDERR_TAIL: usize = 4096;
const READ_CHUNK: usize = 256 * 1024;
/// Pipe buffer asked for the child's stdout, so reads carry more than the 64 KiB default.
const PIPE_SIZE: i32 = 1 << 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(OsString, OsString)>,
    /// How long a cancelled child gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Also send stderr to the output (as Go Receptor's command units do); its tail is
    /// kept for the result either way.
    pub merge_stderr: bool,
    /// The job's own temporary directory (`TMPDIR`), created before it starts and removed
    /// when it ends. It lives under the job directory (the state directory), not in /tmp,
    /// so a job's temporary files outlive a daemon restart or upgrade (systemd deletes a
    /// service's private /tmp on stop even while KillMode=process keeps its jobs running).
    pub tmpdir: Option<PathBuf>,
}

/// Feeds the child's stdin before the job input (e.g. a rewritten header).
pub type Prelude = Option<Bytes>;

/// Runs `spec` to completion or cancellation.
pub async fn run_child(
    spec: &ChildSpec,
    prelude: Prelude,
    input: Option<JobInput>,
    mut output: JobOutput,
    cancel: CancellationToken,
) -> JobResult {
    // Every process of the job inherits this marker, so descendants that left the process
    // group (setsid, as ansible-runner does for ansible-playbook) and were orphaned are
    // still found and stopped with the job.
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let mut cmd = Command::new(&spec.program);
    // A clean environment: the daemon's own (credentials, tokens, RECEPTOR_* overrides)
    // is not the job's business. Only the allow-list passes, then the work type's `env`.
    cmd.env_clear();
    cmd.envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(inherited)));
    cmd.env(JOB_MARKER, &marker);
    if let Some(tmp) = &spec.tmpdir {
        if let Err(e) = make_tmpdir(tmp) {
            return JobResult::failed(format!("cannot create the job's TMPDIR {}: {e}", tmp.display()));
        }
        // Before the spec's own environment, which may override it.
        cmd.env("TMPDIR", tmp);
    }
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return JobResult::failed(format!("cannot start {}: {e}", spec.program.display())),
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    if let Some(out) = &stdout {
        // Best effort: fewer, larger reads per megabyte of output.
        use std::os::fd::AsRawFd;
        let _ = nix::fcntl::fcntl(out.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    let feeder = tokio::spawn(feed_stdin(stdin, prelude, input));
    let tail = tokio::spawn(collect_stderr(stderr, spec.merge_stderr.then(|| output.clone())));
    let pump_cancel = cancel.clone();
    let stdout_done = async {
        if let Some(out) = stdout {
            if let Err(e) = pump_stdout(out, &mut output).await {
                tracing::debug!(error = %e, "output stream closed; stopping job");
                pump_cancel.cancel();
            }
        }
    };
    let (status, ()) =
        tokio::join!(wait_or_kill(&mut child, pgid, &marker, &cancel, spec.grace), stdout_done);
    // Reap stragglers that outlived the leader (and release their pipe ends).
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    kill_marked(&marker, Signal::SIGKILL);
    feeder.abort();
    let stderr_tail = tail.await.unwrap_or_default();
    if let Some(tmp) = &spec.tmpdir {
        remove_tmpdir(tmp).await;
    }
    to_result(status, cancel.is_cancelled(), stderr_tail)
}

/// Creates the job's TMPDIR (and the job directory above it), private to the job's user.
fn make_tmpdir(tmp: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(tmp)
}

/// Removes the TMPDIR, and the job directory above it when nothing else is left there.
async fn remove_tmpdir(tmp: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_dir_all(tmp).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %tmp.display(), error = %e, "cannot remove the job's TMPDIR");
        }
    }
    if let Some(parent) = tmp.parent() {
        let _ = tokio::fs::remove_dir(parent).await;
    }
}

fn to_result(status: std::io::Result<ExitStatus>, cancelled: bool, stderr_tail: String) -> JobResult {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Err(e) => JobResult {
            error: Some(format!("waiting for the process failed: {e}")),
            stderr_tail,
            ..Default::default()
        },
        Ok(st) => JobResult {
            exit_code: st.code(),
            signal: st.signal(),
            error: cancelled.then(|| "job cancelled".to_owned()),
            stderr_tail,
        },
    }
}

async fn wait_or_kill(
    child: &mut Child,
    pgid: Option<Pid>,
    marker: &str,
    cancel: &CancellationToken,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    tokio::select! {
        st = child.wait() => return st,
        _ = cancel.cancelled() => {}
    }
    let Some(pgid) = pgid else { return child.wait().await };
    // Descendants may live in process groups of their own (ansible-runner runs
    // ansible-playbook under a pty, in a new session): signal every group of the tree.
    let mut groups = tree_groups(pgid);
    signal_groups(&groups, Signal::SIGTERM);
    kill_marked(marker, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(st) => st,
        Err(_) => {
            groups.extend(tree_groups(pgid));
            signal_groups(&groups, Signal::SIGKILL);
            child.wait().await
        }
    };
    // Whatever the leader left behind goes with it.
    signal_groups(&groups, Signal::SIGKILL);
    kill_marked(marker, Signal::SIGKILL);
    status
}

/// Variables a job inherits from the daemon (documented in config/receptor.toml); a work
/// type's `env` adds or overrides others.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "SSH_AUTH_SOCK",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "VIRTUAL_ENV",
];

fn inherited(name: &str) -> bool {
    INHERITED_ENV.contains(&name) || name.starts_with("LC_") || name.starts_with("ANSIBLE_")
}

/// The environment variable carrying a job's marker.
pub const JOB_MARKER: &str = "RECEPTOR_JOB_MARKER";

/// Signals every process whose environment carries `marker`.
fn kill_marked(marker: &str, sig: Signal) {
    let needle = format!("{JOB_MARKER}={marker}");
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for pid in dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if env.split(|b| *b == 0).any(|entry| entry == needle.as_bytes()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        }
    }
}

fn signal_groups(groups: &BTreeSet<i32>, sig: Signal) {
    for g in groups {
        let _ = killpg(Pid::from_raw(*g), sig);
    }
}

/// The process groups of `root` and all its descendants, from /proc. Never includes the
/// daemon's own group.
fn tree_groups(root: Pid) -> BTreeSet<i32> {
    let own = nix::unistd::getpgrp().as_raw();
    let procs = proc_table();
    let mut groups = BTreeSet::from([root.as_raw()]);
    let mut frontier = vec![root.as_raw()];
    while let Some(pid) = frontier.pop() {
        for &(child, ppid, pgrp) in &procs {
            if ppid == pid {
                frontier.push(child);
                groups.insert(pgrp);
            }
        }
    }
    groups.remove(&own);
    groups
}

/// (pid, ppid, pgrp) of every process, read from /proc/PID/stat.
fn proc_table() -> Vec<(i32, i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces and parentheses).
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut f = rest.split_whitespace().skip(1);
            let ppid = f.next()?.parse().ok()?;
            let pgrp = f.next()?.parse().ok()?;
            Some((pid, ppid, pgrp))
        })
        .collect()
}

async fn feed_stdin(stdin: Option<ChildStdin>, prelude: Prelude, input: Option<JobInput>) {
    let Some(mut stdin) = stdin else { return };
    if let Some(p) = prelude {
        if stdin.write_all(&p).await.is_err() {
            return;
        }
    }
    let Some(mut input) = input else { return };
    while let Ok(Some(chunk)) = input.read().await {
        if stdin.write_all(&chunk).await.is_err() {
            return;
        }
    }
    // Dropping stdin closes it: the child sees end of input.
}

async fn pump_stdout(mut out: ChildStdout, output: &mut JobOutput) -> Result<(), super::io::PipeError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match out.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => output.write(buf.split().freeze()).await?,
        }
    }
}

async fn collect_stderr(stderr: Option<ChildStderr>, mut forward: Option<JobOutput>) -> String {
    let Some(mut stderr) = stderr else { return String::new() };
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(STDERR_TAIL);
    let mut buf = [0u8; 8192];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Some(out) = forward.as_mut() {
            if out.write(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                forward = None;
            }
        }
        tail.extend(&buf[..n]);
        while tail.len() > STDERR_TAIL {
            tail.pop_front();
        }
    }
    String::from_utf8_lossy(tail.make_contiguous()).into_owned()
}

/// Runs `program --version` and returns its first output line (e.g. `2.4.3`).
pub fn program_version(program: &std::path::Path, path: &std::ffi::OsStr) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .arg("--version")
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("`--version` failed: {}", err.lines().last().unwrap_or("no output")));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("unknown").trim().chars().take(64).collect())
}
