//! The daemon as a systemd service: the shipped unit verifies, and the daemon speaks the
//! notify protocol (READY once listeners are bound, STATUS lines, STOPPING on shutdown).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const UNIT: &str = include_str!("../systemd/receptord.service");

#[test]
fn the_unit_has_the_required_directives_and_verifies() {
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=receptor",
        "StateDirectory=receptor",
        "RuntimeDirectory=receptor",
        "ConfigurationDirectory=receptor",
        "LimitNOFILE=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(UNIT.lines().any(|l| l.starts_with(needle)), "unit lacks {needle}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("receptord.service");
    std::fs::write(&unit, UNIT.replace("/usr/bin/receptord", RECEPTORD)).expect("write");
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze");
    assert!(out.status.success(), "systemd-analyze verify: {}", stderr(&out));
}

#[test]
fn the_daemon_notifies_ready_status_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let cfg = dir.path().join("r.toml");
    let data = dir.path().join("data");
    let text = format!(
        "[node]\nid = \"n1\"\ndata_dir = \"{}\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:0\"\n",
        data.display()
    );
    std::fs::write(&cfg, text).expect("config");
    let mut child = Command::new(RECEPTORD)
        .arg("-c")
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .expect("receptord");
    let received = |want: &str| recv_until(&sock, want, Path::new(&sock_path));
    let ready = received("READY=1");
    assert!(ready.contains("READY=1"));
    let status = received("STATUS=links:");
    assert!(status.contains("running jobs: 0"), "{status}");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("term");
    received("STOPPING=1");
    assert!(child.wait().expect("wait").success());
}

fn recv_until(sock: &UnixDatagram, want: &str, path: &Path) -> String {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        assert!(start.elapsed() < Duration::from_secs(15), "no {want} on {}", path.display());
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains(want) {
            return msg;
        }
    }
}

/// Runs receptord until it is ready, with stderr into a file; returns the file's text.
fn log_of(extra_args: &[&str], journal: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("r.toml");
    let text = format!("[node]\nid = \"n1\"\ndata_dir = \"{}\"\n", dir.path().join("data").display());
    std::fs::write(&cfg, text).expect("config");
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut cmd = Command::new(RECEPTORD);
    cmd.arg("-c").arg(&cfg).args(extra_args).stderr(log.try_clone().expect("clone"));
    if journal {
        use std::os::unix::fs::MetadataExt;
        let meta = log.metadata().expect("metadata");
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let mut child = cmd.spawn().expect("receptord");
    wait_until("receptord ready", Duration::from_secs(10), || {
        std::fs::read_to_string(&log_path).unwrap_or_default().contains("receptord ready")
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("term");
    assert!(child.wait().expect("wait").success());
    std::fs::read_to_string(&log_path).expect("log")
}

#[test]
fn logs_suit_the_journal_and_aggregators() {
    let journal = log_of(&[], true);
    for line in journal.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<3>"),
            "priority: {line}"
        );
        assert!(!line.contains("Z "), "no timestamp of our own: {line}");
    }
    let plain = log_of(&[], false);
    assert!(plain.lines().all(|l| !l.starts_with('<')), "no priorities outside the journal");
    let json = log_of(&["--log-format", "json"], false);
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}

#[test]
fn log_file_output_is_rotated_daily() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("r.toml");
    let logs = dir.path().join("logs");
    let text = format!(
        "[node]\nid = \"n1\"\ndata_dir = \"{}\"\n[log]\nfile = \"{}\"\n",
        dir.path().join("data").display(),
        logs.join("receptord.log").display()
    );
    std::fs::write(&cfg, text).expect("config");
    let mut child =
        Command::new(RECEPTORD).arg("-c").arg(&cfg).stderr(Stdio::null()).spawn().expect("receptord");
    // Signal handlers are installed by the time "receptord ready" is logged.
    wait_until("ready in the log file", Duration::from_secs(10), || {
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path()).unwrap_or_default().contains("receptord ready"))
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("term");
    assert!(child.wait().expect("wait").success());
    let file = std::fs::read_dir(&logs).expect("logs").flatten().next().expect("a log file").path();
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    assert!(name.starts_with("receptord.log."), "dated file name: {name}");
    assert!(std::fs::read_to_string(&file).expect("read").contains("receptord ready"));
}
