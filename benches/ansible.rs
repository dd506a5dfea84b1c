//! Remote playbook benchmark (`make bench`): wall time of `receptor run` via three hops
//! divided by the wall time of a local `ansible-runner run` of the same playbook (median of
//! several runs each), the client's peak RSS, and how long a run takes to resume once the
//! only relay on its path is killed and restarted. Prints figures; asserts nothing on time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "common/mod.rs"]
mod harness;
use std::time::{Duration, Instant};

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");
const RUNS: usize = 7;

/// A daemon, its config and its temporary directory.
struct Node {
    daemon: harness::Daemon,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Kills the daemon (SIGKILL) and starts it again from the same config.
    fn kill(&mut self) {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
    }

    fn restart(&mut self) {
        self.daemon = harness::spawn(RECEPTORD, &self.config, Some(&path_with_venv()));
    }
}

fn venv_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    assert!(bin.join("ansible-runner").exists(), "run `make venv` first");
    bin
}

fn path_with_venv() -> String {
    format!("{}:{}", venv_bin().display(), std::env::var("PATH").unwrap_or_default())
}

fn start(id: &str, peers: &[u16]) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = format!(
        "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:0\"\n",
        dir.path().join("data").display()
    );
    for p in peers {
        cfg.push_str(&format!("[[peers]]\nurl = \"receptor://127.0.0.1:{p}\"\n"));
    }
    let path = dir.path().join("receptor.toml");
    std::fs::write(&path, cfg).expect("config");
    let daemon = harness::spawn(RECEPTORD, &path, Some(&path_with_venv()));
    Node { daemon, config: path, _dir: dir }
}

fn pdd() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let st = Command::new("cp").arg("-r").arg(format!("{}/.", src.display())).arg(dir.path()).status();
    assert!(st.expect("cp").success());
    dir
}

/// Runs `cmd` to completion; returns wall time and the last VmHWM (peak RSS, KiB) seen.
fn timed(mut cmd: Command) -> (Duration, u64) {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let mut peak = 0;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            assert!(st.success(), "benchmark command failed");
            return (start.elapsed(), peak);
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        if let Some(v) = status.lines().find(|l| l.starts_with("VmHWM:")) {
            peak = v.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(peak);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // node2, the relay, dials both ends, so it can be restarted and rejoin.
    let n1 = start("node1", &[]);
    let n3 = start("node3", &[]);
    let mut n2 = start("node2", &[n1.daemon.port, n3.daemon.port]);
    let peer = format!("receptor://127.0.0.1:{}", n1.daemon.port);
    let t0 = Instant::now();
    while !Command::new(RECEPTOR)
        .args(["--receptor-peer", &peer, "ping", "node3", "-c", "1", "--timeout", "1s"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "mesh did not converge");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut remote, mut local, mut peak) = (Vec::new(), Vec::new(), 0);
    for i in 0..RUNS {
        let dir = pdd();
        let mut cmd = Command::new(RECEPTOR);
        cmd.arg("run").arg(dir.path()).args([
            "-p",
            "test.yml",
            "--via-receptor",
            "node3",
            "--receptor-peer",
            &peer,
        ]);
        let (t, rss) = timed(cmd);
        peak = peak.max(rss);
        remote.push(t);
        let dir = pdd();
        let mut cmd = Command::new(venv_bin().join("ansible-runner"));
        cmd.env("PATH", path_with_venv()).arg("run").arg(dir.path()).args([
            "-p",
            "test.yml",
            "-i",
            &format!("l{i}"),
        ]);
        local.push(timed(cmd).0);
    }
    let (r, l) = (median(remote), median(local));
    let ratio = r.as_secs_f64() / l.as_secs_f64();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!("| `receptor run` via 3 hops, median of {RUNS} | {:.3} s | |", r.as_secs_f64());
    println!("| local `ansible-runner run`, median of {RUNS} | {:.3} s | |", l.as_secs_f64());
    println!(
        "| ratio remote / local | {ratio:.3} | <= 1.05 ({}) |",
        if ratio <= 1.05 { "met" } else { "missed" }
    );
    println!("| `receptor run` client peak RSS | {:.1} MiB | |", peak as f64 / 1024.0);
    let resume = resume_after_relay_restart(&peer, &mut n2);
    println!("| relay restarted mid-run: restart → output resumed | {:.3} s | |", resume.as_secs_f64());
    drop(n3);
}

/// Starts a run of a play with a few 1 s sleeps, kills the relay once output flows, and
/// restarts it once the client reports the loss: the time from the restart to the
/// client's "reconnected" (daemon start, links, routes, the client's backoff).
fn resume_after_relay_restart(peer: &str, relay: &mut Node) -> Duration {
    let dir = pdd();
    let play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug: {msg: early}\n".to_owned()
        + &"    - {command: sleep 1, changed_when: false}\n".repeat(4)
        + "    - debug: {msg: late}\n";
    std::fs::write(dir.path().join("project/sleepy.yml"), play).expect("playbook");
    let mut child = Command::new(RECEPTOR)
        .arg("run")
        .arg(dir.path())
        .args(["-p", "sleepy.yml", "--via-receptor", "node3", "--receptor-peer", peer])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("receptor run");
    let (out, err) = (collect(child.stdout.take()), collect(child.stderr.take()));
    let wait = |buf: &std::sync::Arc<std::sync::Mutex<String>>, needle: &str| {
        let t0 = Instant::now();
        while !buf.lock().expect("lock").contains(needle) {
            assert!(t0.elapsed() < Duration::from_secs(60), "no {needle:?}: {}", err.lock().expect("lock"));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait(&out, "early");
    relay.kill();
    wait(&err, "reconnecting to node3");
    let restarted = Instant::now();
    relay.restart();
    wait(&err, "reconnected to node3");
    let resumed = restarted.elapsed();
    assert!(child.wait().expect("wait").success(), "run failed: {}", err.lock().expect("lock"));
    resumed
}

/// Collects a pipe's text in the background.
fn collect(pipe: Option<impl std::io::Read + Send + 'static>) -> std::sync::Arc<std::sync::Mutex<String>> {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = buf.clone();
    let mut pipe = pipe.expect("piped");
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}
