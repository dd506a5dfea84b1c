//! Work units under hostile conditions: a full disk, a status file that lies about its
//! PID, and a daemon environment that must not leak into jobs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::units::*;
use common::*;

/// A tmpfs of `mib` MiB mounted on `dir` for the life of the value (root only).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<SmallDisk> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "receptord-test"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs");
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

const WORK: &str = r#"
[[work.command]]
name = "big"
program = "/bin/sh"
args = ["-c", "head -c 31457280 /dev/zero; sleep 1"]
[[work.command]]
name = "small"
program = "/bin/sh"
args = ["-c", "sleep 6; echo small done"]
[[work.command]]
name = "env"
program = "/usr/bin/env"
[[work.command]]
name = "slow"
program = "/bin/sh"
args = ["-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do echo line $i; sleep 0.5; done"]
"#;

/// One unit writing 30 MiB into a 20 MiB data disk fails with the disk's own words; a
/// small unit running beside it finishes; the daemon keeps serving; followers end.
#[test]
fn a_full_disk_fails_only_the_unit_that_could_not_write() {
    let Some(disk) = SmallDisk::mount(20) else { return };
    let (ctl, sock) = with_socket("n1", disk.path());
    let mut spec = Spec::new("n1").extra(WORK).extra(&ctl);
    spec.listen = false;
    spec.data_dir = Some(disk.path().join("data"));
    let d = Daemon::start(spec);
    let small = submit(&sock, &["small", "-n"]);
    let big = submit(&sock, &["big", "-n"]);
    let st = wait_state(&sock, &big, "Failed");
    let detail = st["Detail"].as_str().unwrap_or_default();
    assert!(detail.contains("No space left on device"), "the reason is the disk's: {st}");
    let on_disk =
        std::fs::metadata(d.data_dir().join("units").join(&big).join("stdout")).map(|m| m.len()).ok();
    assert_eq!(st["StdoutSize"].as_u64(), on_disk, "the reported size is what is on disk");
    // Following the failed unit ends.
    let out = receptorctl(&sock, &["work", "results", &big]);
    assert!(out.stdout.len() as u64 <= on_disk.unwrap_or(0), "results end at what was kept");
    // Free the disk: the small unit (still running) can write its line and succeed.
    let out = receptorctl(&sock, &["work", "release", &big]);
    assert!(out.status.success(), "release: {}", stderr(&out));
    let mut st = serde_json::Value::Null;
    wait_until("the small unit ends", Duration::from_secs(30), || {
        st = unit_status(&sock, &small);
        ["Succeeded", "Failed", "Canceled"].contains(&st["StateName"].as_str().unwrap_or_default())
    });
    // It writes after the space is freed, unless a loaded machine delayed that release past
    // its write: then it fails with the same clear reason, never a panic or a lie.
    if st["StateName"] == "Succeeded" {
        assert_eq!(results(&sock, &small), "small done\n", "{st}");
    } else {
        assert!(st["Detail"].as_str().unwrap_or_default().contains("No space left on device"), "{st}");
    }
    let log = std::fs::read_to_string(d.data_dir().join("units").join(&small).join("supervisor.log"))
        .unwrap_or_default();
    assert!(!log.contains("panicked"), "no supervisor panics: {log}");
}

/// A job sees the allow-listed environment, not the daemon's.
#[test]
fn jobs_get_a_clean_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("n1", dir.path());
    let mut spec = Spec::new("n1").extra(WORK).extra(&ctl);
    spec.listen = false;
    spec.env = vec![("RECEPTORD_TEST_SECRET", "hunter2"), ("LC_TIME", "C")];
    let _d = Daemon::start(spec);
    let id = submit(&sock, &["env", "-n"]);
    wait_state(&sock, &id, "Succeeded");
    let env = results(&sock, &id);
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "PATH passes: {env}");
    assert!(env.lines().any(|l| l == "LC_TIME=C"), "LC_* passes: {env}");
    assert!(!env.contains("hunter2"), "the daemon's other variables stay out: {env}");
}

/// A status file whose PID is not a process's (here 4294967295, which as a C int is -1)
/// is never signalled: cancelling that unit must not `kill(-1)`.
#[test]
fn a_lying_pid_in_a_status_file_is_never_signalled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("n1", dir.path());
    let mut spec = Spec::new("n1").extra(WORK).extra(&ctl);
    spec.listen = false;
    let mut d = Daemon::start(spec);
    let id = submit(&sock, &["small", "-n"]);
    wait_state(&sock, &id, "Running");
    d.kill();
    let status_path = d.data_dir().join("units").join(&id).join("status");
    let mut st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_path).expect("status")).expect("json");
    st["ExtraData"]["Pid"] = serde_json::json!(4_294_967_295u64);
    std::fs::write(&status_path, serde_json::to_vec(&st).expect("json")).expect("write");
    d.restart();
    // The cancel cannot reach a supervisor it cannot identify; it must not signal anyone.
    let _ = receptorctl(&sock, &["work", "cancel", &id]);
    wait_until("the unit settles", Duration::from_secs(20), || {
        let s = unit_status(&sock, &id);
        ["Canceled", "Failed", "Succeeded"].contains(&s["StateName"].as_str().unwrap_or_default())
    });
    assert!(d.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none()), "the daemon lives");
}

/// Control sessions beyond `limits.control_sessions` are told why and closed; a freed
/// slot serves again.
#[test]
fn control_sessions_are_limited() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("n1", dir.path());
    let mut spec =
        Spec::new("n1").extra(&ctl).extra("[limits]\ncontrol_sessions = 2\ncontrol_local_reserved = 0\n");
    spec.listen = false;
    let _d = Daemon::start(spec);
    let greeting = |s: &UnixStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read");
        line
    };
    let held: Vec<UnixStream> = (0..2).map(|_| UnixStream::connect(&sock).expect("connect")).collect();
    for s in &held {
        assert!(greeting(s).starts_with("Receptor Control"), "held sessions are served");
    }
    let third = UnixStream::connect(&sock).expect("connect");
    assert!(greeting(&third).contains("too many control sessions"), "the third is refused with a reason");
    drop(held);
    wait_until("a freed slot serves again", Duration::from_secs(10), || {
        UnixStream::connect(&sock).is_ok_and(|s| greeting(&s).starts_with("Receptor Control"))
    });
}

/// Idle control connections, on the Unix socket and the plain TCP listener alike, are
/// told why and closed after `limits.control_idle_timeout`, giving their slots back: an
/// operator locked out by a crowd of idle connections gets in again, without anyone
/// closing them. A session streaming results is not idle.
#[test]
fn idle_control_sessions_are_closed_and_give_their_slots_back() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("n1", dir.path());
    let tcp = "tcp_listen = \"127.0.0.1:0\"\ninsecure_plaintext_control = true\n";
    let limits =
        "[limits]\ncontrol_sessions = 6\ncontrol_local_reserved = 0\ncontrol_idle_timeout = \"2s\"\n";
    let mut spec = Spec::new("n1").extra(&ctl).extra(tcp).extra(limits).extra(WORK);
    spec.listen = false;
    let d = Daemon::start(spec);
    let port = control_port(&d);
    // A unit whose output keeps coming for longer than the idle timeout.
    let id = submit(&sock, &["slow", "-n"]);
    let mut follower = std::process::Command::new(venv_bin().join("receptorctl"))
        .args(["--socket", sock.to_str().expect("utf8"), "work", "results", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("follower");
    // Its session is up once output arrives (before the idle connections take the slots).
    let mut streamed = BufReader::new(follower.stdout.take().expect("stdout"));
    let mut first = String::new();
    streamed.read_line(&mut first).expect("read");
    assert!(first.starts_with("line"), "the follower streams: {first:?}");
    let unix: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&sock).expect("connect")).collect();
    let tcp: Vec<std::net::TcpStream> =
        (0..3).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect")).collect();
    // Every slot is taken (the follower and five idle connections; the sixth refused).
    let out = receptorctl(&sock, &["status"]);
    assert!(!out.status.success(), "an operator is locked out while the slots are held");
    let rest = |mut r: Box<dyn Read>| {
        let mut all = String::new();
        let _ = r.read_to_string(&mut all);
        all
    };
    for s in &unix {
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    }
    for s in &tcp {
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    }
    let said: Vec<String> = unix
        .iter()
        .map(|s| rest(Box::new(s.try_clone().expect("clone"))))
        .chain(tcp.iter().map(|s| rest(Box::new(s.try_clone().expect("clone")))))
        .collect();
    let closed = said.iter().filter(|t| t.contains("control_idle_timeout")).count();
    assert!(closed >= 4, "idle sessions are told why and closed: {said:?}");
    let out = receptorctl(&sock, &["status"]);
    assert!(out.status.success(), "the operator gets in again: {}", String::from_utf8_lossy(&out.stderr));
    // The follower was never cut off: it still reads the unit's output.
    assert!(follower.try_wait().expect("wait").is_none(), "a streaming session is not idle");
    let mut next = String::new();
    streamed.read_line(&mut next).expect("read");
    assert!(next.starts_with("line"), "it still streams: {next:?}");
    let _ = follower.kill();
    let _ = follower.wait();
}

/// Another node may hold at most `limits.units_per_node` work units on a node.
#[test]
fn units_per_node_are_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n2 =
        Daemon::start(Spec::new("n2").extra(WORK).extra(FAST_MESH).extra("[limits]\nunits_per_node = 2\n"));
    let (ctl, sock) = with_socket("n1", dir.path());
    let n1 = Daemon::start(Spec::new("n1").peer(n2.port).extra(FAST_MESH).extra(&ctl));
    wait_route(&n1, "n2");
    let ids: Vec<String> = (0..3).map(|_| submit(&sock, &["small", "--node", "n2", "-n"])).collect();
    let third = wait_state(&sock, &ids[2], "Failed");
    assert!(third["Detail"].as_str().unwrap_or_default().contains("units_per_node"), "{third}");
    for id in &ids[..2] {
        let st = unit_status(&sock, id);
        assert_ne!(st["StateName"], "Failed", "the first two run: {st}");
    }
}

/// Work units and mesh jobs share `work.max_jobs`: a unit beyond it is refused with the
/// reason, and a freed slot serves again.
#[test]
fn work_units_count_against_max_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("n1", dir.path());
    let mut spec = Spec::new("n1").extra(WORK).extra(&ctl).extra("[work]\nmax_jobs = 1\n");
    spec.listen = false;
    let _d = Daemon::start(spec);
    let first = submit(&sock, &["small", "-n"]);
    let out = receptorctl(&sock, &["work", "submit", "small", "-n"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("max_jobs"), "the second unit is refused with the reason: {text}");
    wait_state(&sock, &first, "Succeeded");
    let third = submit(&sock, &["env", "-n"]);
    wait_state(&sock, &third, "Succeeded");
}

/// The submitting side of a remote unit runs out of disk while mirroring: its unit fails
/// with the disk's words, reports the size it holds, and following it ends.
#[test]
fn a_mirror_that_fills_its_disk_fails_and_followers_end() {
    let Some(disk) = SmallDisk::mount(20) else { return };
    let n2 = Daemon::start(Spec::new("n2").extra(WORK).extra(FAST_MESH));
    let (ctl, sock) = with_socket("n1", disk.path());
    let mut spec = Spec::new("n1").peer(n2.port).extra(FAST_MESH).extra(&ctl);
    spec.listen = false;
    spec.data_dir = Some(disk.path().join("data"));
    let n1 = Daemon::start(spec);
    wait_until("n1 links to n2", Duration::from_secs(20), || n1.log().contains("link up"));
    let id = submit(&sock, &["big", "--node", "n2", "-n"]);
    let st = wait_state(&sock, &id, "Failed");
    assert!(st["Detail"].as_str().unwrap_or_default().contains("No space left on device"), "{st}");
    let on_disk =
        std::fs::metadata(n1.data_dir().join("units").join(&id).join("stdout")).map(|m| m.len()).ok();
    assert_eq!(st["StdoutSize"].as_u64(), on_disk, "the reported size is what the mirror holds");
    let mut follow = Command::new(venv_bin().join("receptorctl"))
        .env("PATH", path_with_venv())
        .args(["--socket", sock.to_str().expect("utf8"), "work", "results", &id])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("receptorctl");
    wait_until("following the failed unit ends", Duration::from_secs(20), || {
        follow.try_wait().ok().flatten().is_some()
    });
    let _ = receptorctl(&sock, &["work", "release", &id]);
}
