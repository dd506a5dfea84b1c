//! The daemon as a systemd service: the shipped unit verifies, and the daemon speaks the
//! notify protocol (READY once listeners are bound, STATUS lines, STOPPING on shutdown).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const UNIT: &str = include_str!("../systemd/receptord.service");
const HOP: &str = include_str!("../systemd/hop.conf");

fn has(text: &str, directive: &str) -> bool {
    text.lines().any(|l| l.starts_with(directive))
}

/// Writes the unit (with `extra` appended, as a drop-in would add it) where systemd-analyze
/// can read it, with the daemon path pointing at the built binary.
fn unit_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let unit = dir.join("receptord.service");
    std::fs::write(&unit, format!("{UNIT}{extra}").replace("/usr/bin/receptord", RECEPTORD)).expect("write");
    unit
}

/// The "Overall exposure level" systemd-analyze security gives the unit.
fn exposure(unit: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .expect("systemd-analyze");
    let text = stdout(&out);
    text.lines()
        .find_map(|l| l.split("exposure level for receptord.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}{}", stderr(&out)))
}

#[test]
fn the_managed_host_unit_lets_playbooks_manage_the_host_and_verifies() {
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/usr/bin/receptord --reload-service $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "KillMode=process",
        "StateDirectory=receptor",
        "RuntimeDirectory=receptor",
        "ConfigurationDirectory=receptor",
        "LimitNOFILE=",
        "UMask=0022",
    ] {
        assert!(has(UNIT, needle), "unit lacks {needle}");
    }
    // Each of these stops `become`, package installs or edits of /etc, or loses a running
    // job's temporary files on restart (see the unit's comments).
    for breaking in [
        "User=",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictSUIDSGID=yes",
        "SystemCallFilter=",
        "ProtectKernelTunables=yes",
        "ProtectHostname=yes",
    ] {
        assert!(!has(UNIT, breaking), "the managed-host unit sets {breaking}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_file(dir.path(), "");
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze");
    assert!(out.status.success(), "systemd-analyze verify: {}", stderr(&out));
    let managed = exposure(&unit);
    let hop = exposure(&unit_file(dir.path(), HOP));
    eprintln!("systemd-analyze security: managed host {managed}, hop {hop}");
    assert!(hop < 2.0 && hop < managed, "hop profile exposure {hop}, managed host {managed}");
}

#[test]
fn the_hop_profile_keeps_the_strict_sandbox_with_reasons() {
    for needle in [
        "User=receptor",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(has(HOP, needle), "hop profile lacks {needle}");
    }
    // Every directive has its reason on the comment lines just above it.
    let lines: Vec<&str> = HOP.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains('=') && !l.starts_with('#') {
            let above = lines[..i].iter().rev().take_while(|p| !p.is_empty() && !p.starts_with('['));
            assert!(above.clone().any(|p| p.starts_with("# ")), "no reason given for {l}");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit_file(dir.path(), HOP))
        .output()
        .expect("systemd-analyze");
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

/// Each job runs with its own TMPDIR under the state directory (not /tmp, which a
/// service's PrivateTmp loses on stop), private to it, and removed when the job ends.
#[test]
fn each_job_gets_its_own_tmpdir_under_the_state_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("tmpnode", dir.path());
    let sh = "[[work.command]]\nname = \"sh\"\nprogram = \"/bin/sh\"\nallow_runtime_params = true\n";
    let d = Daemon::start(Spec::new("tmpnode").extra(&format!("{ctl}{sh}")));
    let script = "params=-c 'echo $TMPDIR; stat -c %a \"$TMPDIR\"; touch \"$TMPDIR/f\" && echo wrote'";
    let out = receptorctl(&sock, &["work", "submit", "sh", "-n", "-a", script, "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let tmp = Path::new(lines[0]);
    assert_eq!(tmp.parent(), Some(d.data_dir().join("tmp").as_path()), "{text}");
    assert_eq!(&lines[1..], ["700", "wrote"], "{text}");
    assert!(!tmp.exists(), "the job's TMPDIR outlived the job");
}
