//! Byte-for-byte output: a job that writes what is not an ansible event by itself
//! (tests/data/odd-output: stderr lines at start-up, invalid UTF-8, text without a newline
//! at start-up and at exit, tabs, CRLF, ANSI colour and a 100 KiB line in the play) prints
//! exactly the same bytes through `receptor run` — remote across three nodes, through the
//! local daemon's socket, detached then attached, and as `--events-stream` output lines —
//! as a local `ansible-runner run` of the same private data dir, and leaves the same
//! `artifacts/<ident>/stdout`. (Runs resumed after a reconnection are compared with their
//! own stdout artifact in tests/durable.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/odd-output")
}

/// A fresh copy of the fixture's private data dir.
fn pdd() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = Command::new("cp").arg("-r").arg(fixture().join(".")).arg(dir.path()).status().expect("cp");
    assert!(st.success());
    dir
}

/// What a local `ansible-runner run` prints, checked against its own stdout artifact.
fn local_output() -> Vec<u8> {
    let pdd = pdd();
    let out = Command::new(venv_bin().join("ansible-runner"))
        .env("PATH", path_with_venv())
        .arg("run")
        .arg(pdd.path())
        .args(["-p", "test.yml", "-i", "local"])
        .stdin(Stdio::null())
        .output()
        .expect("ansible-runner run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, std::fs::read(pdd.path().join("artifacts/local/stdout")).expect("artifact"));
    let text = String::from_utf8_lossy(&out.stdout);
    for part in ["sitecustomize: a warning line\r\n", "a line without a newline", "\u{fffd}", "PLAY RECAP"] {
        assert!(text.contains(part), "the fixture's job writes {part:?}: {text}");
    }
    assert!(!text.contains("bye, no newline"), "text left without a newline at exit is not printed");
    out.stdout
}

/// `receptor [global options of cmd] run PDD -p test.yml FLAGS`.
fn run(cmd: &mut Command, pdd: &Path, flags: &[&str]) -> Output {
    cmd.env("PATH", path_without_venv()).arg("run").arg(pdd).args(["-p", "test.yml"]).args(flags);
    cmd.stdin(Stdio::null()).output().expect("receptor run")
}

/// The run printed `want` and left it as its stdout artifact.
fn assert_same(what: &str, out: &Output, printed: &[u8], artifact_dir: &Path, want: &[u8]) {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(out));
    let artifact = std::fs::read(artifact_dir.join("stdout")).expect("stdout artifact");
    assert!(printed == want, "{what}: printed\n{}\n--- local run printed\n{}", lossy(printed), lossy(want));
    assert!(artifact == want, "{what}: stdout artifact differs from the local run's");
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

#[test]
fn every_way_of_running_prints_what_a_local_ansible_runner_run_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&ctl));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port));
    let _n3 = Daemon::start(Spec::new("node3").peer(n2.port).with_ansible());
    wait_route(&n1, "node3");
    let want = local_output();

    let p = pdd();
    let out = run(&mut receptor_cmd(&n1), p.path(), &["--via-receptor", "node3", "-i", "remote"]);
    assert_same("three hops", &out, &out.stdout, &p.path().join("artifacts/remote"), &want);

    let p = pdd();
    let mut cmd = Command::new(RECEPTOR);
    cmd.arg("--socket").arg(&sock);
    let out = run(&mut cmd, p.path(), &["--via-receptor", "node3", "-i", "sock"]);
    assert_same("through the local daemon", &out, &out.stdout, &p.path().join("artifacts/sock"), &want);

    let p = pdd();
    let out = run(&mut receptor_cmd(&n1), p.path(), &["--via-receptor", "node3", "-i", "det", "--detach"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unit = stdout(&out).trim().to_owned();
    let node_id = stderr(&out)
        .split("--receptor-node-id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_owned)
        .expect("the attach hint names the node ID");
    let out = run(
        &mut receptor_cmd(&n1),
        p.path(),
        &["--receptor-node-id", &node_id, "--attach", &unit, "-i", "det"],
    );
    assert_same("detached, then attached", &out, &out.stdout, &p.path().join("artifacts/det"), &want);

    let p = pdd();
    let out =
        run(&mut receptor_cmd(&n1), p.path(), &["--via-receptor", "node3", "-i", "es", "--events-stream"]);
    let mut printed = Vec::new();
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).expect("events-stream line");
        if v["type"] == "output" {
            printed.extend_from_slice(v["text"].as_str().expect("text").as_bytes());
        }
    }
    assert_same("events stream", &out, &printed, &p.path().join("artifacts/es"), &want);
}
