//! Test harness: real `receptord` processes on 127.0.0.1:0 in temporary directories, the
//! real `receptor` CLI, and polling helpers (no sleep-and-hope).
#![allow(dead_code)]

pub mod fakego;
pub mod go;
pub mod hostile;
pub mod pki;
pub mod playbooks;
pub mod relay;
pub mod units;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
pub const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running daemon; killed (SIGKILL) on drop unless stopped first.
pub struct Daemon {
    pub id: String,
    pub port: u16,
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    path: String,
    data: PathBuf,
    env: Vec<(String, String)>,
    listen: bool,
    netns: Option<String>,
}

/// What a daemon should look like.
pub struct Spec<'a> {
    pub id: &'a str,
    pub peers: Vec<u16>,
    /// Extra TOML appended to the generated config (work types, mesh timers...).
    pub extra: String,
    pub listen: bool,
    /// PATH for the daemon (default: this process's PATH without the venv).
    pub path: Option<String>,
    /// Listen and dial with receptors:// (the extra config must hold a [tls] section).
    pub tls: bool,
    /// Data directory (default: `data` in the daemon's temporary directory).
    pub data_dir: Option<PathBuf>,
    /// Extra environment variables for the daemon.
    pub env: Vec<(&'a str, &'a str)>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Listen on this address instead of 127.0.0.1.
    pub listen_host: Option<String>,
    /// Further peers, as host:port.
    pub peer_addrs: Vec<String>,
}

impl<'a> Spec<'a> {
    pub fn new(id: &'a str) -> Spec<'a> {
        Spec {
            id,
            peers: Vec::new(),
            extra: String::new(),
            listen: true,
            path: None,
            tls: false,
            data_dir: None,
            env: Vec::new(),
            netns: None,
            listen_host: None,
            peer_addrs: Vec::new(),
        }
    }

    pub fn peer(mut self, port: u16) -> Self {
        self.peers.push(port);
        self
    }

    /// Gives the daemon the project's virtualenv (ansible-runner) on its PATH.
    pub fn with_ansible(mut self) -> Self {
        self.path = Some(path_with_venv());
        self
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
}

/// Standard work types used by the tests.
pub const CAT: &str = "[[work.command]]\nname = \"cat\"\nprogram = \"cat\"\n";

/// Fast timers so failure detection and convergence take seconds, not minutes.
pub const FAST_MESH: &str =
    "[mesh]\nidle_timeout = \"1500ms\"\nroute_refresh = \"2s\"\nnode_timeout = \"6s\"\n";

pub fn config_text(spec: &Spec<'_>, data_dir: &Path) -> String {
    let mut cfg = format!(
        "[node]\nid = \"{}\"\ndata_dir = \"{}\"\nshutdown_grace = \"3s\"\n",
        spec.id,
        data_dir.display()
    );
    let scheme = if spec.tls { "receptors" } else { "receptor" };
    if spec.listen {
        let host = spec.listen_host.as_deref().unwrap_or("127.0.0.1");
        cfg.push_str(&format!("[[listeners]]\nurl = \"{scheme}://{host}:0\"\n"));
    }
    for p in &spec.peers {
        cfg.push_str(&format!("[[peers]]\nurl = \"{scheme}://127.0.0.1:{p}\"\n"));
    }
    for a in &spec.peer_addrs {
        cfg.push_str(&format!("[[peers]]\nurl = \"{scheme}://{a}\"\n"));
    }
    if !spec.extra.contains("[log]") {
        cfg.push_str("[log]\nlevel = \"info\"\n");
    }
    cfg.push_str(&spec.extra);
    cfg
}

impl Daemon {
    pub fn start(spec: Spec<'_>) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg_path = dir.path().join("receptor.toml");
        let data = spec.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
        std::fs::write(&cfg_path, config_text(&spec, &data)).expect("write config");
        let mut d = Daemon {
            data,
            env: spec.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            id: spec.id.to_owned(),
            port: 0,
            child: None,
            dir,
            log: Arc::default(),
            path: spec.path.clone().unwrap_or_else(path_without_venv),
            listen: spec.listen,
            netns: spec.netns.clone(),
        };
        d.spawn();
        d
    }

    /// Starts (again) from the same config file and data directory.
    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, RECEPTORD]);
                c
            }
            None => Command::new(RECEPTORD),
        };
        let mut child = cmd
            .env("PATH", &self.path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(self.dir.path().join("receptor.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn receptord");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("RECEPTOR_TEST_ECHO").is_some() {
                    eprintln!("{line}");
                }
                let mut l = sink.lock().expect("log lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
        self.log = log;
        if self.listen {
            self.port = self.wait_port();
        } else {
            self.wait_log("receptord ready", Duration::from_secs(10));
        }
    }

    /// Kills the daemon (SIGKILL) if it runs, then starts it again on the same config
    /// and data directory (listeners get new ports).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the daemon: its links go silent, as in a partition.
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { nix::sys::signal::SIGSTOP } else { nix::sys::signal::SIGCONT };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig);
    }

    fn wait_port(&self) -> u16 {
        let mut port = 0;
        wait_until("listener bound", Duration::from_secs(10), || {
            let log = self.log();
            port = log
                .lines()
                .find(|l| l.contains("listener bound"))
                .and_then(|l| l.split(" addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            port != 0
        });
        port
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {} log line {needle:?}; log:\n{}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn peer_url(&self) -> String {
        format!("receptor://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
        child.wait().ok().and_then(|s| s.code())
    }

    /// Kills the daemon abruptly (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs the CLI against `peer` and returns its output.
pub fn receptor(peer: &Daemon, args: &[&str]) -> Output {
    receptor_cmd(peer).args(args).output().expect("run receptor")
}

pub fn receptor_cmd(peer: &Daemon) -> Command {
    let mut cmd = Command::new(RECEPTOR);
    cmd.arg("--receptor-peer").arg(peer.peer_url());
    cmd
}

/// A `[metrics]` endpoint on an ephemeral port (see [`metrics_port`]).
pub const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The port a daemon's metrics endpoint got, from its log.
pub fn metrics_port(d: &Daemon) -> u16 {
    d.wait_log("metrics endpoint ready", Duration::from_secs(10));
    d.log()
        .lines()
        .find(|l| l.contains("metrics endpoint ready"))
        .and_then(|l| l.split("addr=127.0.0.1:").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("metrics port in the log")
}

/// The TCP port of a daemon's control listener, from its log.
pub fn control_port(d: &Daemon) -> u16 {
    let mut port = 0;
    wait_until("control TCP socket", Duration::from_secs(10), || {
        port = d
            .log()
            .lines()
            .find(|l| l.contains("control TCP socket ready"))
            .and_then(|l| l.split("addr=127.0.0.1:").nth(1))
            .and_then(|p| p.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        port != 0
    });
    port
}

/// Waits until `from` can ping `node` (routes converged).
pub fn wait_route(from: &Daemon, node: &str) {
    wait_until(&format!("route from {} to {node}", from.id), Duration::from_secs(20), || {
        receptor(from, &["ping", node, "-c", "1", "--timeout", "1s"]).status.success()
    });
}

/// Starts node1–node2–node3 in a line with `extra` config on each.
pub fn line3(extra: &str) -> (Daemon, Daemon, Daemon) {
    let n1 = Daemon::start(Spec::new("node1").extra(extra));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(extra));
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).extra(extra));
    wait_route(&n1, "node3");
    (n1, n2, n3)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether any process in process group `pgid` is still alive.
pub fn group_alive(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

/// The virtualenv the tests drive: the project's (`make venv`, from the lock), or the one
/// `RECEPTORD_VENV` names (`make test-latest`).
pub fn venv_dir() -> PathBuf {
    std::env::var_os("RECEPTORD_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"))
}

/// The virtualenv's `bin`, with the real ansible-runner and ansible-core.
pub fn venv_bin() -> PathBuf {
    let bin = venv_dir().join("bin");
    assert!(
        bin.join("ansible-runner").exists(),
        "{} has no ansible-runner: run `make venv` (`make test` does it for you)",
        bin.display()
    );
    bin
}

pub fn path_with_venv() -> String {
    format!("{}:{}", venv_bin().display(), path_without_venv())
}

/// This process's PATH minus the project's virtualenv, so "no ansible-runner" is real.
pub fn path_without_venv() -> String {
    let venv = venv_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).filter(|d| !d.starts_with(&venv)).collect();
    std::env::join_paths(dirs).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A `[control]` section with a socket in `dir`, and the socket's path.
pub fn with_socket(id: &str, dir: &Path) -> (String, PathBuf) {
    let sock = dir.join(format!("{id}.sock"));
    (format!("[control]\nsocket = \"{}\"\n", sock.display()), sock)
}

/// Runs the real receptorctl (from the project's virtualenv) against `sock`.
pub fn receptorctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(venv_bin().join("receptorctl"))
        .env("PATH", path_with_venv())
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("receptorctl")
}

/// Runs a Python snippet with the virtualenv's interpreter (receptorctl's library).
pub fn python(code: &str) -> Output {
    Command::new(venv_bin().join("python"))
        .env("PATH", path_with_venv())
        .arg("-c")
        .arg(code)
        .output()
        .expect("python")
}

/// Sends `request` on a fresh control session (then ends its input) and returns `lines`
/// reply lines after the greeting.
pub fn raw_session(sock: &Path, request: &[u8], lines: usize) -> Vec<String> {
    use std::io::Write;
    let s = std::os::unix::net::UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).expect("greeting");
    assert!(greeting.starts_with("Receptor Control, node "), "{greeting}");
    // A request the daemon refuses half-way may meet a closed socket: the reply matters.
    let _ = w.write_all(request);
    let _ = w.shutdown(std::net::Shutdown::Write);
    (0..lines)
        .map(|_| {
            let mut l = String::new();
            r.read_line(&mut l).expect("reply");
            l
        })
        .collect()
}

/// An RSA key pair (PKCS#8 private, PKIX public) made with openssl.
pub fn rsa_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let (private, public) = (dir.join("signing.pem"), dir.join("verify.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&private)
        .status()
        .expect("openssl")
        .success();
    assert!(ok);
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl")
        .success();
    assert!(ok);
    (private, public)
}
