//! Durable work units through the control socket, driven by the real receptorctl 1.6.9
//! (CLI and Python `ReceptorControl`) and receptord's own CLI: local units, cancel and
//! release, a daemon killed mid-job, retention, and hostile requests. Remote units are in
//! `work_remote.rs`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::units::*;
use common::*;
use serde_json::Value;

#[test]
fn receptorctl_drives_local_work_units() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let _n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{UNIT_WORK}")));

    // Submit and follow: the payload goes to stdin, the output comes back, exit 0.
    let out = receptorctl(&sock, &["work", "submit", "echo", "-l", "hello", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\ndone\n");
    assert!(!stderr(&out).contains("different versions"));

    // Refusals: unknown type, params not allowed, a failing unit.
    let out = receptorctl(&sock, &["work", "submit", "nosuch", "-n"]);
    assert_eq!(out.status.code(), Some(101));
    assert!(stderr(&out).contains("Failed to start work unit: unknown work type nosuch"), "{}", stderr(&out));
    let out = receptorctl(&sock, &["work", "submit", "echo", "-n", "-a", "params=-x"]);
    assert_eq!(out.status.code(), Some(101));
    assert!(stderr(&out).contains("extra params provided but not allowed"), "{}", stderr(&out));
    let out =
        receptorctl(&sock, &["work", "submit", "sh", "-n", "-a", "params=-c 'echo partial; exit 3'", "-f"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "partial\n");
    assert!(stderr(&out).contains("Remote unit failed: exit status 3"), "{}", stderr(&out));

    // A running unit: status while running, results from an offset, cancel.
    let id = submit(&sock, &["sh", "-n", "-a", "params=-c 'echo started; exec sleep 60'"]);
    let st = wait_state(&sock, &id, "Running");
    assert_eq!(st["WorkType"], "sh");
    assert!(st["Detail"].as_str().unwrap_or_default().starts_with("Running: PID "), "{st}");
    assert!(st["ExtraData"]["Pid"].as_u64().unwrap_or(0) > 0, "{st}");
    wait_until("output written", Duration::from_secs(10), || unit_status(&sock, &id)["StdoutSize"] == 8);
    let out = receptorctl(&sock, &["work", "cancel", &id]);
    assert_eq!(stdout(&out), format!("Cancelled:\n({id}, cancelled)\n"), "{}", stderr(&out));
    let st = wait_state(&sock, &id, "Canceled");
    assert_eq!(st["ExtraData"], Value::Null);
    assert_eq!(results(&sock, &id), "started\n", "results of a cancelled unit end");

    // The Python class, as AWX uses it.
    let py = format!(
        "from receptorctl.socket_interface import ReceptorControl\n\
         rc = ReceptorControl('{sock}')\n\
         r = rc.submit_work('echo', 'py-payload\\n')\n\
         print(r['result'])\n\
         uid = r['unitid']\n\
         f = rc.get_work_results(uid, startpos=3)\n\
         print(repr(f.read()))\n\
         rc = ReceptorControl('{sock}')\n\
         st = rc.simple_command('work status ' + uid)\n\
         print(st['StateName'], st['StdoutSize'], st['Detail'])\n\
         print(rc.simple_command('work cancel ' + uid))\n\
         print(rc.simple_command('work release ' + uid) == {{'released': uid}})\n\
         print(uid in rc.simple_command('work list'))\n\
         r = rc.submit_work('sh', '', params={{'params': \"-c 'exec sleep 60'\"}})\n\
         print(rc.simple_command('work force-release ' + r['unitid']) == {{'released': r['unitid']}})\n",
        sock = sock.display()
    );
    let out = python(&py);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap_or_default().lines().collect();
    assert_eq!(lines[0], "Job Started");
    assert_eq!(lines[1], "b'payload\\ndone\\n'", "results from byte 3");
    assert_eq!(lines[2], "Succeeded 16 exit status 0");
    assert!(lines[3].starts_with("{'cancelled': "), "{}", lines[3]);
    assert_eq!(&lines[4..], ["True", "False", "True"]);

    // Release one, then all; force-release of an unknown unit is an error.
    let out = receptorctl(&sock, &["work", "release", &id]);
    assert_eq!(stdout(&out), format!("Released:\n({id}, released)\n"));
    let out = receptorctl(&sock, &["work", "release", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(list(&sock), serde_json::json!({}));
    let out = receptorctl(&sock, &["work", "release", "--force", "Nope1234"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown work unit Nope1234"), "{}", stderr(&out));
}

#[test]
fn a_daemon_killed_mid_job_reattaches_or_reports_the_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let mut n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{UNIT_WORK}")));

    // The supervisor outlives the daemon: the restarted daemon reattaches.
    let script = "params=-c 'for i in $(seq 1 30); do echo tick $i; sleep 0.1; done'";
    let id = submit(&sock, &["sh", "-n", "-a", script]);
    wait_until("some output", Duration::from_secs(10), || {
        unit_status(&sock, &id)["StdoutSize"].as_u64() > Some(0)
    });
    n1.restart();
    n1.wait_log("reattached to a running work unit", Duration::from_secs(10));
    wait_state(&sock, &id, "Succeeded");
    let expected: String = (1..=30).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(results(&sock, &id), expected);

    // Daemon and supervisor both gone: the unit fails, saying why; its output is kept.
    let id = submit(&sock, &["sh", "-n", "-a", "params=-c 'echo before; exec sleep 5'"]);
    wait_until("output", Duration::from_secs(10), || unit_status(&sock, &id)["StdoutSize"] == 7);
    let pid = unit_status(&sock, &id)["ExtraData"]["Pid"].as_i64().expect("pid") as i32;
    n1.kill();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    wait_until("supervisor gone", Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}")).exists());
    n1.restart();
    let st = unit_status(&sock, &id);
    assert_eq!(st["StateName"], "Failed", "{st}");
    assert!(st["Detail"].as_str().unwrap_or_default().contains("process was gone"), "{st}");
    assert_eq!(st["StdoutSize"], 7);
    assert_eq!(results(&sock, &id), "before\n");
}

#[test]
fn bad_work_requests_get_clear_errors_and_nothing_escapes_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{UNIT_WORK}")));
    let cases: &[(&[u8], &str)] = &[
        (b"work\n", "ERROR: bad command\n"),
        (b"work frob\n", "ERROR: bad command\n"),
        (b"work li", "ERROR: bad command\n"),
        (b"{\"command\":\"work\"}\n", "ERROR: field subcommand missing\n"),
        (b"work status\n", "ERROR: work status requires a unit ID\n"),
        (b"work status a b\n", "ERROR: work status does not take parameters after the unit ID\n"),
        (b"work results\n", "ERROR: work results requires a unit ID\n"),
        (b"work results nope 0\n", "ERROR: unknown work unit nope\n"),
        (
            b"work results X abc\n",
            "ERROR: error converting start position to integer: strconv.ParseInt: parsing \"abc\": invalid syntax\n",
        ),
        (b"work submit localhost\n", "ERROR: work submit requires a target node and work type\n"),
        (
            b"{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"localhost\",\"worktype\":\"echo\",\"x\":1}\n",
            "ERROR: submit parameters must all be strings and x is not\n",
        ),
        (
            b"{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"localhost\",\"worktype\":\"echo\",\"ttl\":\"1m\"}\n",
            "ERROR: ttl option is intended for remote work only\n",
        ),
        (b"connect node2\n", "ERROR: no connect target\n"),
        (b"connect node2 control tlsname\n", "ERROR: unknown TLS config tlsname\n"),
        (b"{\"command\":\"connect\",\"node\":\"node2\"}\n", "ERROR: no connect target service\n"),
    ];
    for (req, want) in cases {
        assert_eq!(raw_session(&sock, req, 1), [*want], "request {:?}", String::from_utf8_lossy(req));
    }
    // Unit IDs name directories: path tricks are refused before touching the disk.
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).expect("mkdir");
    for trick in ["../../secret", "..", "a/b", "%2e%2e", "/etc"] {
        for verb in ["status", "results", "cancel", "release", "force-release"] {
            let reply = raw_session(&sock, format!("work {verb} {trick}\n").as_bytes(), 1);
            assert!(reply[0].starts_with("ERROR: invalid work unit ID"), "{verb} {trick}: {reply:?}");
        }
    }
    assert!(secret.exists());
    let reply =
        raw_session(&sock, b"{\"command\":\"work\",\"subcommand\":\"list\",\"unitid\":\"../x\"}\n", 1);
    assert!(reply[0].starts_with("ERROR: invalid work unit ID"), "{reply:?}");
    // A client that goes away mid-submit never leaves a unit waiting forever: it runs
    // (the payload ended where the client closed) or fails saying why, depending on
    // whether the client was still there when told the unit ID. The daemon carries on.
    let s = UnixStream::connect(&sock).expect("connect");
    let mut w = s.try_clone().expect("clone");
    let mut greeting = String::new();
    BufReader::new(s).read_line(&mut greeting).expect("greeting");
    w.write_all(b"work submit localhost echo\npartial").expect("write");
    drop(w);
    let reply = raw_session(&sock, b"status\n", 1);
    assert!(reply[0].starts_with("{\"Advertisements\""), "{reply:?}");
    let mut id = String::new();
    wait_until("the unit of the vanished client", Duration::from_secs(10), || {
        let mut buf = String::new();
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.write_all(b"work list\n").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        s.read_to_string(&mut buf).expect("read");
        let v: Value = buf.lines().nth(1).and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
        id = v.as_object().and_then(|m| m.keys().next().cloned()).unwrap_or_default();
        !id.is_empty()
    });
    let mut st = Value::Null;
    let settled = (0..200).any(|_| {
        st = unit_status(&sock, &id);
        std::thread::sleep(Duration::from_millis(50));
        st["StateName"] == "Succeeded" || st["StateName"] == "Failed"
    });
    assert!(settled, "unit never settled: {st}");
    let detail = st["Detail"].as_str().unwrap_or_default();
    assert!(
        detail == "exit status 0" || detail.starts_with("Error reading input data: the client went away"),
        "{st}"
    );
    drop(n1);
}

#[test]
fn completed_units_are_released_after_the_retention_period_and_their_files_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let mut n1 = Daemon::start(
        Spec::new("node1").extra(&format!("{ctl}{UNIT_WORK}\n[work]\nunit_retention = \"2s\"\n")),
    );
    let id = submit(&sock, &["echo", "-l", "x"]);
    wait_state(&sock, &id, "Succeeded");
    wait_until("unit released by retention", Duration::from_secs(20), || list(&sock).get(&id).is_none());
    assert!(!n1.data_dir().join("units").join(&id).exists());
    n1.wait_log("releasing expired work unit", Duration::from_secs(1));
    // Its files are deleted behind the release, and what a stopped daemon left to delete
    // is deleted when it starts again.
    let released = n1.data_dir().join("units").join(".released");
    let empty = |d: &std::path::Path| std::fs::read_dir(d).map(|mut e| e.next().is_none()).unwrap_or(false);
    wait_until("the released unit's files deleted", Duration::from_secs(20), || empty(&released));
    // Many at once (a `release --all`, a crash after one) take one reaper, not a thread
    // each: the blocking pool keeps idle threads 10 s, so a thread per directory would
    // still be counted here.
    n1.stop();
    for i in 0..1000 {
        std::fs::create_dir_all(released.join(format!("left.{i}"))).expect("left-over dir");
        std::fs::write(released.join(format!("left.{i}")).join("stdout"), b"output").expect("left-over file");
    }
    n1.restart();
    wait_until("left-over released files deleted at start-up", Duration::from_secs(30), || empty(&released));
    let status = std::fs::read_to_string(format!("/proc/{}/status", n1.pid())).expect("status");
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|t| t.trim().parse().ok())
        .expect("Threads:");
    assert!(threads < 32, "{threads} threads after deleting 1000 released directories");
}

#[test]
fn the_receptor_cli_drives_work_units_over_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&ctl));
    let _n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(UNIT_WORK));
    wait_route(&n1, "node2");
    let cli = |args: &[&str]| {
        std::process::Command::new(RECEPTOR).arg("--socket").arg(&sock).args(args).output().expect("receptor")
    };
    let out = cli(&["work", "submit", "echo", "--node", "node2", "-l", "cli", "-f"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "cli\ndone\n");
    let out =
        cli(&["work", "submit", "sh", "--node", "node2", "-a", "params=-c 'echo x; exit 4'", "-f", "--rm"]);
    assert_eq!(out.status.code(), Some(4), "the unit's exit status: {}", stderr(&out));
    let out = cli(&["work", "submit", "sh", "--node", "node2", "-a", "params=-c 'exec sleep 60'"]);
    let id = stdout(&out).lines().find_map(|l| l.strip_prefix("Unit ID: ")).expect("unit id").to_owned();
    wait_until("running", Duration::from_secs(20), || {
        serde_json::from_slice::<Value>(&cli(&["work", "status", &id]).stdout)
            .is_ok_and(|v| v["StateName"] == "Running")
    });
    let out = cli(&["work", "cancel", &id]);
    assert_eq!(stdout(&out), format!("{id}: cancelled\n"));
    wait_until("cancelled", Duration::from_secs(20), || {
        serde_json::from_slice::<Value>(&cli(&["work", "status", &id]).stdout)
            .is_ok_and(|v| v["StateName"] == "Canceled")
    });
    let out = cli(&["work", "list", "-q"]);
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    let out = cli(&["work", "results", &id]);
    assert_eq!(out.status.code(), Some(1));
    let out = cli(&["work", "release", "--state", "canceled"]);
    assert_eq!(stdout(&out), format!("{id}: released\n"), "release by state: {}", stderr(&out));
    let out = cli(&["work", "release", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&cli(&["work", "list"])).trim(), "{}");
    let out = cli(&["work", "status", "nope"]);
    assert!(stderr(&out).contains("unknown work unit nope"), "{}", stderr(&out));
}

/// A unit's job reads its payload straight from the unit's stored `stdin` file (no copy
/// through the supervisor and a pipe): the job can even seek in it.
#[test]
fn a_units_job_reads_its_payload_from_the_stored_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{UNIT_WORK}")));
    let script = "params=-c 'readlink /proc/self/fd/0; tail -c 4'";
    let id = submit(&sock, &["sh", "-l", "0123456789", "-a", script]);
    wait_state(&sock, &id, "Succeeded");
    let stdin = n1.data_dir().join("units").join(&id).join("stdin");
    // (receptorctl's literal payload ends with a newline.)
    assert_eq!(results(&sock, &id), format!("{}\n789\n", stdin.display()));
}
