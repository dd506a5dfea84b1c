//! What an operator sees of the daemon under systemd, without systemd: fatal errors as one
//! `err` line in the journal with exit status 78 (the unit's `RestartPreventExitStatus`),
//! typed config checks, `--reload-service` (the unit's ExecReload) returning only once the
//! daemon applied or refused the new config, and a prompt stop while a client follows a
//! unit's output. `make test-systemd` checks the same under a real systemd.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `receptord -c <cfg> args` with stderr in a file that `JOURNAL_STREAM` names.
fn run_as_journal(cfg: &Path, args: &[&str]) -> (Option<i32>, String) {
    use std::os::unix::fs::MetadataExt;
    let log_path = cfg.with_extension("stderr");
    let log = std::fs::File::create(&log_path).expect("log");
    let meta = log.metadata().expect("metadata");
    let status = Command::new(RECEPTORD)
        .arg("-c")
        .arg(cfg)
        .args(args)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(log)
        .stdout(Stdio::null())
        .status()
        .expect("receptord");
    (status.code(), std::fs::read_to_string(&log_path).expect("read"))
}

#[test]
fn a_config_error_is_one_err_entry_with_the_whole_path_and_status_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    for (text, key) in [
        ("[node]\nid = \"n1\"\ndata_dir = \n", "node.data_dir"),
        ("[node]\nid = \"n1\"\ndata_dir = 17\n", "node.data_dir"),
    ] {
        std::fs::write(&cfg, text).expect("write");
        for args in [&[][..], &["--check-config"][..]] {
            let (code, err) = run_as_journal(&cfg, args);
            assert_eq!(code, Some(78), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "one journal entry: {err}");
            let want = format!("<3>receptord: invalid configuration: {}:3:12: key `{key}`: ", cfg.display());
            assert!(err.starts_with(&want), "{err}");
        }
    }
    // A TLS file that is not there is a configuration error too.
    let text = format!(
        "[node]\nid = \"n1\"\ndata_dir = \"{}\"\n[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\nca = \"/nonexistent/ca.pem\"\n",
        dir.path().join("data").display()
    );
    std::fs::write(&cfg, text).expect("write");
    let (code, err) = run_as_journal(&cfg, &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.starts_with("<3>receptord: ") && err.lines().count() == 1, "{err}");
}

/// The next datagram on the notify socket that contains `want` (bounded).
fn recv_until(sock: &UnixDatagram, want: &str) -> String {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        assert!(start.elapsed() < Duration::from_secs(20), "no {want} notification");
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains(want) {
            return msg;
        }
    }
}

#[test]
fn reload_service_returns_once_the_daemon_applied_or_refused_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("runtime dir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let cfg = dir.path().join("r.toml");
    let good = format!("[node]\nid = \"n1\"\ndata_dir = \"{}\"\n", dir.path().join("data").display());
    std::fs::write(&cfg, &good).expect("config");
    let mut child = Command::new(RECEPTORD)
        .arg("-c")
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("RUNTIME_DIRECTORY", &run)
        .stderr(Stdio::null())
        .spawn()
        .expect("receptord");
    recv_until(&sock, "READY=1");
    let reload = || {
        Command::new(RECEPTORD)
            .arg("--reload-service")
            .arg(child.id().to_string())
            .env("RUNTIME_DIRECTORY", &run)
            .output()
            .expect("receptord --reload-service")
    };
    for _ in 0..3 {
        let out = reload();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "receptord: reload applied");
        // systemd 253's protocol: RELOADING=1 with the monotonic time, then READY=1.
        let reloading = recv_until(&sock, "RELOADING=1");
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
        recv_until(&sock, "READY=1");
    }
    std::fs::write(&cfg, good.replace("data_dir = \"", "data_dir = 17\n#\"")).expect("bad config");
    let out = reload();
    assert!(!out.status.success(), "a refused reload fails");
    assert!(stderr(&out).contains("refused") && stderr(&out).contains("node.data_dir"), "{}", stderr(&out));
    assert!(child.try_wait().expect("try_wait").is_none(), "the daemon keeps running");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("term");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn a_client_following_a_unit_does_not_hold_up_the_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("fol", dir.path());
    let pidfile = dir.path().join("job.pid");
    let slow = format!(
        "[[work.command]]\nname = \"slow\"\nprogram = \"sh\"\nargs = [\"-c\", \"echo $$ > {}; echo begun; exec sleep 60\"]\n",
        pidfile.display()
    );
    let mut d = Daemon::start(Spec::new("fol").extra(&format!("{ctl}{slow}")));
    let mut follower = Command::new(RECEPTOR)
        .arg("--socket")
        .arg(&sock)
        .args(["work", "submit", "slow", "-l", "", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("receptor work submit -f");
    let mut out = follower.stdout.take().expect("stdout");
    let mut first = [0u8; 5];
    std::io::Read::read_exact(&mut out, &mut first).expect("the unit's first output");
    assert_eq!(&first, b"begun");
    assert_eq!(d.stop(), Some(0));
    let log = d.log();
    assert!(!log.contains("tasks still running after shutdown grace"), "{log}");
    let _ = follower.kill();
    let _ = follower.wait();
    // The unit outlives the daemon by design; end its job (its supervisor then exits).
    let pid: i32 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("pid");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
}
