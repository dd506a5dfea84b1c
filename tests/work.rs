//! Durable work units through the control socket, driven by the real receptorctl 1.6.9
//! (CLI and Python `ReceptorControl`): local and remote units, cancel and release, a
//! daemon killed mid-job, a link cut under a remote unit, and hostile requests.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::units::*;
use common::*;
use serde_json::Value;

/// Work types for the tests: `echo` prints its payload then `done`; `sh` runs what the
/// submitter passes in `params`.
const WORK: &str = r#"
[[work.command]]
name = "echo"
program = "/bin/sh"
args = ["-c", "cat; echo done"]
[[work.command]]
name = "sh"
program = "/bin/sh"
allow_runtime_params = true
"#;

#[test]
fn receptorctl_drives_local_work_units() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let _n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{WORK}")));

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

/// A leaf knows only its hubs (docs/PROTOCOL.md §5.8), yet a remote unit it creates for a
/// node behind them is submitted at once through its default route and runs there.
#[test]
fn a_leaf_runs_remote_units_on_nodes_it_does_not_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n2 = Daemon::start(Spec::new("node2"));
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).extra(WORK));
    let n1 =
        Daemon::start(Spec::new("node1").peer(n2.port).extra(&format!("{ctl}[mesh]\nrole = \"leaf\"\n")));
    // (`wait_route` joins a client through node1, and a client joining a leaf gets no
    // database: ask node1 itself.)
    wait_until("node1 reaches node3", Duration::from_secs(20), || {
        receptorctl(&sock, &["ping", "node3", "--count", "1"]).status.success()
    });
    let listed = receptorctl(&sock, &["status"]);
    assert!(!stdout(&listed).contains("node3"), "a leaf lists only itself and its hubs: {}", stdout(&listed));

    let out = receptorctl(&sock, &["work", "submit", "echo", "--node", "node3", "-l", "from a leaf", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from a leaf\ndone\n");
    let local = list(&sock);
    let (_, st) = local.as_object().and_then(|m| m.iter().next()).expect("local unit");
    assert_eq!(st["ExtraData"]["RemoteNode"], "node3");
    assert_eq!(st["StateName"], "Succeeded", "{st}");

    // A client joining through the leaf reaches the leaf, and is told why nothing else.
    let out = receptor(&n1, &["ping", "node1", "--count", "1"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = receptor(&n1, &["ping", "node3", "--count", "1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("only through node1") && err.contains("join through a hub"), "{err}");
    drop((n1, n3));
}

/// The default config scales (docs/PROTOCOL.md §5.8): a node with no role key and no
/// listener — a managed host dialling its hop node — is a leaf, and still reaches the mesh.
#[test]
fn a_node_that_accepts_no_links_is_a_leaf_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("host", dir.path());
    let hop = Daemon::start(Spec::new("hop"));
    let _exec = Daemon::start(Spec::new("exec").peer(hop.port).extra(WORK));
    let _host = Daemon::start(Spec { listen: false, ..Spec::new("host").peer(hop.port).extra(&ctl) });
    wait_until("host reaches exec", Duration::from_secs(20), || {
        receptorctl(&sock, &["ping", "exec", "--count", "1"]).status.success()
    });
    let listed = stdout(&receptorctl(&sock, &["status"]));
    assert!(
        listed.contains("hop") && !listed.contains("exec"),
        "a leaf lists only itself and its hubs: {listed}"
    );
    // The hop node, a hub because it listens, lists both and routes between them.
    wait_route(&hop, "host");
    let out = receptor(&hop, &["status", "--json"]);
    assert!(stdout(&out).contains("\"exec\""), "{}", stdout(&out));
}

#[test]
fn remote_units_mirror_state_and_output_and_connect_reaches_other_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&ctl));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port));
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).extra(WORK));
    wait_route(&n1, "node3");

    let out = receptorctl(&sock, &["work", "submit", "echo", "--node", "node3", "-l", "over two hops", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "over two hops\ndone\n");

    // `work list --node` goes through `connect node3 control`.
    let out = receptorctl(&sock, &["work", "list", "--node", "node3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let remote: Value = serde_json::from_slice(&out.stdout).expect("json");
    let units = remote.as_object().expect("object");
    assert_eq!(units.len(), 1);
    let (rid, rst) = units.iter().next().expect("one unit");
    assert_eq!(rst["StateName"], "Succeeded");

    // The local mirror says where it ran.
    let local = list(&sock);
    let (lid, lst) = local.as_object().and_then(|m| m.iter().next()).expect("local unit");
    assert_eq!(lst["WorkType"], "remote");
    assert_eq!(lst["ExtraData"]["RemoteNode"], "node3");
    assert_eq!(lst["ExtraData"]["RemoteUnitID"], rid.as_str());
    assert_eq!(lst["ExtraData"]["RemoteStarted"], true);

    // Releasing the mirror releases the remote unit.
    let out = receptorctl(&sock, &["work", "release", lid]);
    assert_eq!(stdout(&out), format!("Released:\n({lid}, released)\n"), "{}", stderr(&out));
    let out = receptorctl(&sock, &["work", "list", "--node", "node3"]);
    assert_eq!(stdout(&out).trim(), "{}");

    // Cancel a running remote unit: it ends Canceled on both nodes.
    let py = format!(
        "from receptorctl.socket_interface import ReceptorControl\n\
         rc = ReceptorControl('{}')\n\
         r = rc.submit_work('sh', '', node='node3', params={{'params': \"-c 'echo up; exec sleep 60'\"}})\n\
         print(r['unitid'])\n",
        sock.display()
    );
    let out = python(&py);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    wait_until("remote unit running with output", Duration::from_secs(20), || {
        let st = unit_status(&sock, &id);
        st["StateName"] == "Running" && st["StdoutSize"] == 3
    });
    let out = receptorctl(&sock, &["work", "cancel", &id]);
    assert_eq!(stdout(&out), format!("Cancelled:\n({id}, cancelled)\n"), "{}", stderr(&out));
    wait_state(&sock, &id, "Canceled");
    assert_eq!(results(&sock, &id), "up\n");

    // A unit for a node that never appears expires.
    let id = submit(&sock, &["echo", "--node", "nosuch", "--ttl", "1s", "-n"]);
    let st = wait_state(&sock, &id, "Failed");
    assert!(st["Detail"].as_str().unwrap_or_default().starts_with("Work unit expired on "), "{st}");
    drop(n3);
}

#[test]
fn a_daemon_killed_mid_job_reattaches_or_reports_the_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let mut n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{WORK}")));

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

/// The bytes of unit `id`'s stdout on a daemon.
fn unit_stdout(d: &Daemon, id: &str) -> Vec<u8> {
    std::fs::read(d.data_dir().join("units").join(id).join("stdout")).unwrap_or_default()
}

#[test]
fn a_remote_unit_mirror_survives_a_link_cut_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let ticker = r#"
[[work.command]]
name = "ticker"
program = "/bin/sh"
args = ["-c", "i=0; while [ $i -lt 80 ]; do i=$((i+1)); printf 'line %05d %0300d\n' $i $i; sleep 0.05; done"]
"#;
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{FAST_MESH}")));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(FAST_MESH));
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).extra(&format!("{FAST_MESH}{ticker}")));
    wait_route(&n1, "node3");

    let id = submit(&sock, &["ticker", "--node", "node3", "-n"]);
    wait_until("mirroring started", Duration::from_secs(20), || {
        unit_status(&sock, &id)["StdoutSize"].as_u64() > Some(0)
    });
    // Partition: the relay goes silent until both sides drop their links to it.
    n2.freeze(true);
    n1.wait_log("link ended", Duration::from_secs(20));
    let during = unit_status(&sock, &id);
    n2.freeze(false);
    let st = wait_state(&sock, &id, "Succeeded");
    assert_ne!(during["StateName"], "Succeeded", "the cut happened mid-run: {during}");

    let rid = st["ExtraData"]["RemoteUnitID"].as_str().expect("remote id").to_owned();
    let remote = unit_stdout(&n3, &rid);
    let expected: String = (1..=80).map(|i| format!("line {i:05} {i:0300}\n")).collect();
    assert_eq!(remote, expected.as_bytes());
    assert_eq!(unit_stdout(&n1, &id), remote, "the mirror is byte-identical");
    assert_eq!(st["StdoutSize"].as_u64(), Some(remote.len() as u64));
}

#[test]
fn bad_work_requests_get_clear_errors_and_nothing_escapes_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{WORK}")));
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
fn completed_units_are_released_after_the_retention_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 =
        Daemon::start(Spec::new("node1").extra(&format!("{ctl}{WORK}\n[work]\nunit_retention = \"2s\"\n")));
    let id = submit(&sock, &["echo", "-l", "x"]);
    wait_state(&sock, &id, "Succeeded");
    wait_until("unit released by retention", Duration::from_secs(20), || list(&sock).get(&id).is_none());
    assert!(!n1.data_dir().join("units").join(&id).exists());
    n1.wait_log("releasing expired work unit", Duration::from_secs(1));
}

#[test]
fn signed_work_is_verified_on_the_executing_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    let (ctl, sock) = with_socket("node1", dir.path());
    let (ctl3, sock3) = with_socket("node3", dir.path());
    let signing =
        format!("[work.signing]\nprivate_key = \"{}\"\ntoken_expiration = \"1m\"\n", private.display());
    let verify = format!(
        "[[work.command]]\nname = \"secure\"\nprogram = \"/bin/echo\"\nargs = [\"signed ok\"]\nverify_signature = true\n\
         [work.verification]\npublic_key = \"{}\"\n",
        public.display()
    );
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{signing}")));
    let n3 = Daemon::start(Spec::new("node3").peer(n1.port).extra(&format!("{ctl3}{verify}")));
    wait_route(&n1, "node3");

    let out = receptorctl(&sock3, &["status"]);
    assert!(stdout(&out).contains("Secure Work Types"), "{}", stdout(&out));
    let out = receptorctl(&sock, &["work", "submit", "secure", "--node", "node3", "--signwork", "-n", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "signed ok\n");
    // Without a token the executing node refuses it.
    let id = submit(&sock, &["secure", "--node", "node3", "-n"]);
    let st = wait_state(&sock, &id, "Failed");
    assert!(st["Detail"].as_str().unwrap_or_default().contains("signature is empty"), "{st}");
    // Its own Unix socket is trusted, as in Go Receptor.
    let out = receptorctl(&sock3, &["work", "submit", "secure", "-n", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(n3);
}

#[test]
fn the_receptor_cli_drives_work_units_over_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&ctl));
    let _n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(WORK));
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

/// Reads one line from a raw session.
fn read_reply(r: &mut BufReader<UnixStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("reply");
    l
}

#[test]
fn other_nodes_are_held_to_the_allow_rules_and_cannot_act_for_this_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let (ctl2, sock2) = with_socket("node2", dir.path());
    let rules = "[[work.allow]]\nsubmitters = [\"trusted-*\"]\nwork_types = [\"echo\"]\n\
                 [[work.allow]]\nsubmitters = [\"node1\"]\nwork_types = [\"sh\"]\n";
    let n1 = Daemon::start(Spec::new("node1").extra(&ctl));
    let _n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(&format!("{ctl2}{WORK}{rules}")));
    wait_route(&n1, "node2");
    // node2's own unit, and one node1 may run there.
    let own = submit(&sock2, &["echo", "-l", "mine"]);
    let theirs = submit(&sock, &["sh", "--node", "node2", "-n", "-a", "params=-c 'echo theirs'"]);
    let theirs =
        wait_state(&sock, &theirs, "Succeeded")["ExtraData"]["RemoteUnitID"].as_str().expect("id").to_owned();

    // node1 is not allowed to run echo on node2: its remote unit fails, saying so.
    let id = submit(&sock, &["echo", "--node", "node2", "-l", "x"]);
    let st = wait_state(&sock, &id, "Failed");
    assert!(st["Detail"].as_str().unwrap_or_default().contains("does not allow node1"), "{st}");

    // Bridged into node2's control service, node1 is "another node" there.
    let s = UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    assert!(read_reply(&mut r).starts_with("Receptor Control, node node1"));
    w.write_all(b"connect node2 control \n").expect("write");
    assert_eq!(read_reply(&mut r), "Connecting\n");
    assert_eq!(read_reply(&mut r), "Receptor Control, node node2\n");
    let mut ask = |line: &str| {
        w.write_all(line.as_bytes()).expect("write");
        read_reply(&mut r)
    };
    let refused = |cmd: &str| {
        format!("ERROR: {cmd} is not allowed for node1 (a [[control.allow]] rule must name it)\n")
    };
    assert_eq!(ask("reload\n"), refused("reload"));
    assert_eq!(ask("connect node1 control \n"), refused("connect"));
    assert!(
        ask("work submit node1 echo\n").starts_with("ERROR: remote work units can only be created"),
        "no relaying under node2's name"
    );
    assert!(ask("work submit node2 echo\n").contains("does not allow node1"));
    assert!(ask("ping localhost\n").contains("\"Success\":true"), "harmless commands are fine");
    // Another node sees and touches only the units it submitted.
    let listed = ask("work list\n");
    assert!(listed.contains(&theirs) && !listed.contains(&own), "{listed}");
    assert_eq!(ask(&format!("work status {own}\n")), format!("ERROR: unknown work unit {own}\n"));
    assert_eq!(ask(&format!("work release {own}\n")), format!("ERROR: unknown work unit {own}\n"));
    assert_eq!(ask(&format!("work results {own} 0\n")), format!("ERROR: unknown work unit {own}\n"));
    assert!(list(&sock2).get(&own).is_some(), "node2's unit is untouched");
}

#[test]
fn an_interrupted_remote_submission_is_discarded_and_sent_again_never_run_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let count = "[[work.command]]\nname = \"count\"\nprogram = \"wc\"\nargs = [\"-c\"]\n";
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{FAST_MESH}")));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(FAST_MESH));
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).extra(&format!("{FAST_MESH}{count}")));
    wait_route(&n1, "node3");
    let payload = dir.path().join("payload");
    let size: u64 = 256 << 20;
    std::fs::File::create(&payload).and_then(|f| f.set_len(size)).expect("payload");

    let id = submit(&sock, &["count", "--node", "node3", "-p", payload.to_str().expect("utf8")]);
    // Stop node3 as soon as its unit exists, while node1 is still sending the payload.
    let units3 = n3.data_dir().join("units");
    let started = std::time::Instant::now();
    while std::fs::read_dir(&units3).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "node3 never got the unit");
        std::thread::sleep(Duration::from_millis(5));
    }
    n3.freeze(true);
    n1.wait_log("remote work unit: retrying", Duration::from_secs(30));
    n3.freeze(false);
    let st = wait_state(&sock, &id, "Succeeded");
    // node1 discards the half-sent unit itself ("discarded an incomplete remote
    // submission"), unless node3 already failed and dropped it: either way one unit is left.
    assert_eq!(results(&sock, &id).trim(), size.to_string(), "the whole payload, once");
    // node3 ran it once: the half-sent unit was released, only the resent one is left.
    let left: Vec<String> = std::fs::read_dir(&units3)
        .expect("units")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [st["ExtraData"]["RemoteUnitID"].as_str().expect("id")], "{st}");
}

/// A remote unit's payload goes on to the remote node while the client still sends it,
/// and the remote node runs it only once it is whole: a payload cut short (here: over
/// node1's `limits.max_payload`) resets the forwarding stream and never runs there.
#[test]
fn a_remote_payload_is_forwarded_while_it_arrives_and_never_runs_cut_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let count = "[[work.command]]\nname = \"count\"\nprogram = \"wc\"\nargs = [\"-c\"]\n";
    let limits = "[limits]\nmax_payload = 16777216\n";
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{FAST_MESH}{limits}")));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(FAST_MESH));
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).extra(&format!("{FAST_MESH}{count}")));
    wait_route(&n1, "node3");
    let units3 = n3.data_dir().join("units");
    let block = vec![b'x'; 1 << 20];
    let open_submit = || {
        let s = UnixStream::connect(&sock).expect("connect");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        read_reply(&mut r);
        let mut w = s;
        w.write_all(
            b"{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"node3\",\"worktype\":\"count\"}\n",
        )
        .expect("submit");
        let created = read_reply(&mut r);
        let id = created.split("with ID ").nth(1).and_then(|t| t.split('.').next()).expect("id").to_owned();
        (w, r, id)
    };
    // The remote unit's stdin, on node3, once it holds at least `n` bytes.
    let remote_stdin_reaches = |n: u64| {
        wait_until("the payload forwarded while it arrives", Duration::from_secs(30), || {
            std::fs::read_dir(&units3)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| std::fs::metadata(e.path().join("stdin")).map(|m| m.len()).unwrap_or(0) >= n)
        });
    };

    // Whole: most of 4 MiB reach node3 before the client ends its payload (node1 forwards
    // in steps of 1 MiB); the job sees all of it.
    let (mut w, mut r, id) = open_submit();
    for _ in 0..4 {
        w.write_all(&block).expect("payload");
    }
    remote_stdin_reaches(2 << 20);
    let remote: Vec<_> = std::fs::read_dir(&units3).expect("units").flatten().collect();
    assert_eq!(remote.len(), 1);
    let st = std::fs::read_to_string(remote[0].path().join("status")).expect("status");
    assert!(st.contains("Waiting for Input Data"), "node3 must not start before the end: {st}");
    w.write_all(&block).expect("payload");
    w.shutdown(std::net::Shutdown::Write).expect("end of payload");
    assert!(read_reply(&mut r).contains("Job Started"));
    wait_state(&sock, &id, "Succeeded");
    assert_eq!(results(&sock, &id).trim(), (5u64 << 20).to_string());
    let done = std::fs::read_dir(&units3).expect("units").count();

    // Cut short: 8 MiB forwarded, then the payload goes over node1's limit.
    let (mut w, mut r, id) = open_submit();
    for _ in 0..8 {
        w.write_all(&block).expect("payload");
    }
    remote_stdin_reaches(6 << 20);
    let mut refused = false;
    for _ in 0..16 {
        if w.write_all(&block).is_err() {
            refused = true;
            break;
        }
    }
    let reply = read_reply(&mut r);
    assert!(reply.contains("limits.max_payload"), "refused: {refused}, {reply}");
    let st = wait_state(&sock, &id, "Failed");
    assert!(st["Detail"].as_str().unwrap_or("").contains("Error reading input data"), "{st}");
    // node3 discards its half of it (never run): only the finished unit is left.
    wait_until("node3 discards the cut-short unit", Duration::from_secs(30), || {
        std::fs::read_dir(&units3).map(|d| d.count()).unwrap_or(0) == done
    });
    n3.wait_log("discarding a work unit whose payload never arrived whole", Duration::from_secs(10));
}
