//! Remote work units through the control socket, driven by the real receptorctl 1.6.9
//! (CLI and Python `ReceptorControl`): units run on other nodes (leaves included), their
//! mirrored state and output, a link cut under one, signed work, the allow rules other
//! nodes are held to, and submissions cut short or forwarded while they arrive.

mod common;

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::units::*;
use common::*;
use serde_json::Value;

/// A leaf knows only its hubs (docs/PROTOCOL.md §5.8), yet a remote unit it creates for a
/// node behind them is submitted at once through its default route and runs there.
#[test]
fn a_leaf_runs_remote_units_on_nodes_it_does_not_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n2 = Daemon::start(Spec::new("node2"));
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).extra(UNIT_WORK));
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
    let _exec = Daemon::start(Spec::new("exec").peer(hop.port).extra(UNIT_WORK));
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
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).extra(UNIT_WORK));
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
fn other_nodes_are_held_to_the_allow_rules_and_cannot_act_for_this_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let (ctl2, sock2) = with_socket("node2", dir.path());
    let rules = "[[work.allow]]\nsubmitters = [\"trusted-*\"]\nwork_types = [\"echo\"]\n\
                 [[work.allow]]\nsubmitters = [\"node1\"]\nwork_types = [\"sh\"]\n";
    let n1 = Daemon::start(Spec::new("node1").extra(&ctl));
    let _n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(&format!("{ctl2}{UNIT_WORK}{rules}")));
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
    while unit_dirs(&units3).is_empty() {
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
    let left: Vec<String> = unit_dirs(&units3)
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
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
            unit_dirs(&units3)
                .iter()
                .any(|p| std::fs::metadata(p.join("stdin")).map(|m| m.len()).unwrap_or(0) >= n)
        });
    };

    // Whole: most of 4 MiB reach node3 before the client ends its payload (node1 forwards
    // in steps of 1 MiB); the job sees all of it.
    let (mut w, mut r, id) = open_submit();
    for _ in 0..4 {
        w.write_all(&block).expect("payload");
    }
    remote_stdin_reaches(2 << 20);
    let remote = unit_dirs(&units3);
    assert_eq!(remote.len(), 1);
    let st = std::fs::read_to_string(remote[0].join("status")).expect("status");
    assert!(st.contains("Waiting for Input Data"), "node3 must not start before the end: {st}");
    w.write_all(&block).expect("payload");
    w.shutdown(std::net::Shutdown::Write).expect("end of payload");
    assert!(read_reply(&mut r).contains("Job Started"));
    wait_state(&sock, &id, "Succeeded");
    assert_eq!(results(&sock, &id).trim(), (5u64 << 20).to_string());
    let done = unit_dirs(&units3).len();

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
        unit_dirs(&units3).len() == done
    });
    n3.wait_log("discarding a work unit whose payload never arrived whole", Duration::from_secs(10));
}
