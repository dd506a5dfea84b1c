//! Child processes for jobs: explicit program and arguments (no shell), their own process
//! group, stdin fed from the job input, stdout streamed to the job output. A stopped job
//! (cancel, timeout, lease expiry, release, shutdown) loses its whole process tree
//! (SIGTERM, a grace period, then SIGKILL); a job that ends by itself leaves alone what it
//! deliberately left running (`work::proctree`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use super::proctree::JOB_MARKER;
use super::proctree::{group_alive, kill_marked, marked, signal_groups, sweep_tmpdirs, tree_groups};
use super::{JobInput, JobOutput, JobResult};

/// Bytes of stderr kept for the job result.
const STDERR_TAIL: usize = 4096;
const READ_CHUNK: usize = 256 * 1024;
/// Pipe buffer asked for the child's stdout, so reads carry more than the 64 KiB default.
const PIPE_SIZE: i32 = 1 << 20;
/// Once the job's first process has exited, its output pipes are read until they close, or
/// until they stay quiet this long: a process the job left running in the background may
/// hold them open forever (`sh -c 'sleep 600 &'`).
const DRAIN_QUIET: Duration = Duration::from_secs(1);
/// And at most this long in all, waiting on a pipe after the exit.
const DRAIN_TOTAL: Duration = Duration::from_secs(10);

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
    /// Where the job's own temporary directory (`TMPDIR`) is made: `<tmp_root>/<marker>`,
    /// created before it starts and removed when it ends — unless processes it left running
    /// still use it, in which case a later job's start removes it once they are gone. It
    /// lives in the state directory, not in /tmp, so a job's temporary files outlive a
    /// daemon restart or upgrade (systemd deletes a service's private /tmp on stop even
    /// while KillMode=process keeps its jobs running).
    pub tmp_root: Option<PathBuf>,
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
    let tmpdir = spec.tmp_root.as_ref().map(|root| root.join(&marker));
    if let (Some(root), Some(tmp)) = (&spec.tmp_root, &tmpdir) {
        let root = root.clone();
        let _ = tokio::task::spawn_blocking(move || sweep_tmpdirs(&root)).await;
        if let Err(e) = make_tmpdir(tmp) {
            return JobResult::failed(format!("cannot create the job's TMPDIR {}: {e}", tmp.display()));
        }
        // Before the spec's own environment, which may override it.
        cmd.env("TMPDIR", tmp);
    }
    // A work unit's stdin file is the child's stdin itself when nothing goes before it:
    // the child reads it with no copy through this process and a pipe (as Go Receptor's
    // command units do). A stream, or a prelude, is fed through a pipe.
    let input = match (input, &prelude) {
        (Some(i), None) => match i.into_file().await {
            Ok(file) => {
                cmd.stdin(file);
                None
            }
            Err(stream) => {
                cmd.stdin(Stdio::piped());
                Some(stream)
            }
        },
        (input, _) => {
            cmd.stdin(Stdio::piped());
            input
        }
    };
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(tmp) = &tmpdir {
                remove_tmpdir(tmp).await;
            }
            return JobResult::failed(format!("cannot start {}: {e}", spec.program.display()));
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    if let Some(out) = &stdout {
        // Best effort: fewer, larger reads per megabyte of output.
        use std::os::fd::AsRawFd;
        let _ = nix::fcntl::fcntl(out.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    if let Some(input) = &stdin {
        // The same for a large payload going in (issue 26): fewer wake-ups per megabyte.
        use std::os::fd::AsRawFd;
        let _ = nix::fcntl::fcntl(input.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    let (exited_tx, exited) = watch::channel(false);
    let feeder = tokio::spawn(feed_stdin(stdin, prelude, input));
    let tail =
        tokio::spawn(collect_stderr(stderr, spec.merge_stderr.then(|| output.clone()), exited.clone()));
    let pump_cancel = cancel.clone();
    let stdout_done = async {
        if let Some(out) = stdout {
            if let Err(e) = pump_stdout(out, &mut output, exited).await {
                tracing::debug!(error = %e, "output stream closed; stopping job");
                pump_cancel.cancel();
            }
        }
    };
    let exit = async {
        let st = wait_or_kill(&mut child, pgid, &marker, &cancel, spec.grace).await;
        let _ = exited_tx.send(true);
        st
    };
    let (status, ()) = tokio::join!(exit, stdout_done);
    // A job stopped from outside lost its whole tree in `wait_or_kill`. A job that ended by
    // itself keeps what it deliberately left running (`async` tasks, `nohup … &`,
    // `setsid -f`): a local `ansible-runner run` lets them finish too.
    let left = if cancel.is_cancelled() { Vec::new() } else { left_running(pgid, &marker).await };
    feeder.abort();
    let stderr_tail = tail.await.unwrap_or_default();
    if let Some(tmp) = &tmpdir {
        if left.is_empty() {
            remove_tmpdir(tmp).await;
        } else {
            tracing::info!(
                processes = ?left,
                tmpdir = %tmp.display(),
                "the job left processes running; they and its TMPDIR are kept"
            );
        }
    } else if !left.is_empty() {
        tracing::info!(processes = ?left, "the job left processes running; they are kept");
    }
    to_result(status, cancel.is_cancelled(), stderr_tail)
}

/// The processes a job that ended by itself left running: those carrying its marker, and
/// any still in its process group (e.g. under `sudo`, which clears the environment).
async fn left_running(pgid: Option<Pid>, marker: &str) -> Vec<i32> {
    let marker = marker.to_owned();
    let mut left = tokio::task::spawn_blocking(move || marked(&marker)).await.unwrap_or_default();
    if let Some(g) = pgid.filter(|g| group_alive(*g)) {
        if !left.contains(&g.as_raw()) {
            left.push(-g.as_raw());
        }
    }
    left
}

/// Creates the job's TMPDIR (and the directory above it), private to the job's user.
fn make_tmpdir(tmp: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(tmp)
}

async fn remove_tmpdir(tmp: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(tmp).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %tmp.display(), error = %e, "cannot remove the job's TMPDIR");
        }
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

/// Reads the next chunk of a job's output pipe into `buf`; `None` at its end. Once the job's
/// first process has exited (`exited`), a pipe still held open by something it left running
/// counts as ended after [`DRAIN_QUIET`] without data, or [`DRAIN_TOTAL`] of waiting in all.
async fn read_pipe<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    exited: &mut watch::Receiver<bool>,
    waited: &mut Duration,
) -> Option<usize> {
    let ended = |res: std::io::Result<usize>| res.ok().filter(|n| *n > 0);
    if !*exited.borrow() {
        tokio::select! {
            res = r.read_buf(buf) => return ended(res),
            // Reading is cancel safe: nothing read is lost when the exit wins.
            _ = exited.wait_for(|e| *e) => {}
        }
    }
    let quiet = DRAIN_QUIET.min(DRAIN_TOTAL.saturating_sub(*waited));
    let start = Instant::now();
    let res = tokio::time::timeout(quiet, r.read_buf(buf)).await;
    *waited += start.elapsed();
    match res {
        Ok(res) => ended(res),
        Err(_) => {
            tracing::debug!("a process the job left running holds its output open; not waiting for it");
            None
        }
    }
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

async fn pump_stdout(
    mut out: ChildStdout,
    output: &mut JobOutput,
    mut exited: watch::Receiver<bool>,
) -> Result<(), super::io::PipeError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut waited = Duration::ZERO;
    loop {
        buf.reserve(READ_CHUNK);
        match read_pipe(&mut out, &mut buf, &mut exited, &mut waited).await {
            None => return Ok(()),
            Some(_) => output.write(buf.split().freeze()).await?,
        }
    }
}

async fn collect_stderr(
    stderr: Option<ChildStderr>,
    mut forward: Option<JobOutput>,
    mut exited: watch::Receiver<bool>,
) -> String {
    let Some(mut stderr) = stderr else { return String::new() };
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(STDERR_TAIL);
    let mut buf = BytesMut::with_capacity(8192);
    let mut waited = Duration::ZERO;
    while let Some(n) = {
        buf.clear();
        read_pipe(&mut stderr, &mut buf, &mut exited, &mut waited).await
    } {
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
