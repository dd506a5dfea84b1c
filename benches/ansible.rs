//! Remote playbook benchmark (`make bench`): wall time of `receptor run` via three hops
//! divided by the wall time of a local `ansible-runner run` of the same playbook (median of
//! several runs each), and the client's peak RSS. Prints figures; asserts nothing on time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "common/mod.rs"]
mod harness;
use std::time::{Duration, Instant};

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");
const RUNS: usize = 7;

/// A daemon and its temporary directory.
struct Node {
    daemon: harness::Daemon,
    _dir: tempfile::TempDir,
}

fn venv_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    assert!(bin.join("ansible-runner").exists(), "run `make venv` first");
    bin
}

fn path_with_venv() -> String {
    format!("{}:{}", venv_bin().display(), std::env::var("PATH").unwrap_or_default())
}

fn start(id: &str, peer: Option<u16>) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = format!(
        "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:0\"\n",
        dir.path().join("data").display()
    );
    if let Some(p) = peer {
        cfg.push_str(&format!("[[peers]]\nurl = \"receptor://127.0.0.1:{p}\"\n"));
    }
    let path = dir.path().join("receptor.toml");
    std::fs::write(&path, cfg).expect("config");
    let daemon = harness::spawn(RECEPTORD, &path, Some(&path_with_venv()));
    Node { daemon, _dir: dir }
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
    let n1 = start("node1", None);
    let n2 = start("node2", Some(n1.daemon.port));
    let n3 = start("node3", Some(n2.daemon.port));
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
    drop(n3);
}
