//! `receptor run --via-receptor` as a durable, resumable run, against real daemons and the
//! real ansible-runner: a relay killed and restarted mid-playbook, the client killed and
//! attached again, Ctrl-C, detach/attach through a local daemon, and the lease.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::playbooks::*;
use common::*;

/// A running `receptor` client whose stdout and stderr are collected as they come.
struct Client {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

impl Client {
    fn spawn(mut cmd: Command) -> Client {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn receptor");
        let out = collect(child.stdout.take().expect("stdout"));
        let err = collect(child.stderr.take().expect("stderr"));
        Client { child, out, err }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("lock")).into_owned()
    }

    fn wait_stdout(&self, needle: &str) {
        wait_until(&format!("client output {needle:?}"), Duration::from_secs(60), || {
            self.stdout().contains(needle)
        });
    }

    fn wait_stderr(&self, needle: &str) {
        wait_until(&format!("client message {needle:?}"), Duration::from_secs(60), || {
            self.stderr().contains(needle)
        });
    }

    /// Waits (bounded) for the exit; returns the exit code.
    fn finish(&mut self) -> Option<i32> {
        let mut code = None;
        wait_until("the client to exit", Duration::from_secs(120), || {
            code = self.child.try_wait().expect("try_wait").map(|s| s.code());
            code.is_some()
        });
        // The collector threads drain what is left in the pipes.
        std::thread::sleep(Duration::from_millis(100));
        code.flatten()
    }

    /// The `NODE:UNIT` the client announced on stderr.
    fn unit(&self) -> String {
        self.wait_stderr("running as work unit ");
        let err = self.stderr();
        let rest = err.split("running as work unit ").nth(1).expect("announced");
        rest.split_whitespace().next().expect("unit ref").to_owned()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_cmd(peer: &Daemon, pdd: &Path, extra: &[&str]) -> Command {
    let mut cmd = receptor_cmd(peer);
    cmd.env("PATH", path_without_venv())
        .arg("run")
        .arg(pdd)
        .args(["-p", "test.yml", "--via-receptor", "node3"])
        .args(extra);
    cmd
}

/// The remote run's artifacts equal those of a local `ansible-runner run` of the same play,
/// and what the client printed is the run's stdout artifact.
fn assert_like_local(client: &Client, artifact_dir: &Path, playbook: &str) {
    assert_eq!(
        client.stdout().as_bytes(),
        std::fs::read(artifact_dir.join("stdout")).expect("stdout artifact"),
        "printed == stdout artifact"
    );
    assert!(client.stdout().contains("PLAY RECAP"), "full recap: {}", client.stdout());
    assert_eq!(std::fs::read_to_string(artifact_dir.join("rc")).expect("rc"), "0");
    assert_eq!(std::fs::read_to_string(artifact_dir.join("status")).expect("status"), "successful");
    let (_local_pdd, local) = local_run(playbook, "local1");
    assert_eq!(events(artifact_dir), events(&local), "same events in the same order, each once");
    assert_eq!(tree(artifact_dir), tree(&local), "same artifact files");
}

/// node1 (entry) and node3 (ansible-runner, control socket) both listen; node2, the only
/// relay between them, dials both, so it can be restarted and rejoin.
fn relayed(dir: &Path) -> (Daemon, Daemon, Daemon, std::path::PathBuf) {
    let (ctl, sock) = with_socket("node3", dir);
    let n1 = Daemon::start(Spec::new("node1"));
    let n3 = Daemon::start(Spec::new("node3").with_ansible().extra(&ctl));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port).peer(n3.port));
    wait_route(&n1, "node3");
    (n1, n2, n3, sock)
}

trait ExpectOk {
    fn expect_ok(self) -> std::process::Output;
}

impl ExpectOk for std::io::Result<std::process::Output> {
    /// The output of a command that must have run and exited 0.
    fn expect_ok(self) -> std::process::Output {
        let out = self.expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        out
    }
}

fn unit_list(sock: &Path) -> String {
    stdout(&receptorctl(sock, &["work", "list"])).trim().to_owned()
}

#[test]
fn relay_killed_and_restarted_mid_playbook_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, mut n2, _n3, sock) = relayed(dir.path());
    let pdd = make_pdd(SLEEPY);
    let mut client = Client::spawn(run_cmd(&n1, pdd.path(), &["-i", "r1"]));
    client.wait_stdout("\"msg\": \"early\"");
    n2.kill();
    client.wait_stderr("reconnecting to node3");
    n2.restart();
    assert_eq!(client.finish(), Some(0), "stderr: {}", client.stderr());
    assert!(client.stderr().contains("reconnected to node3; resuming at byte "), "{}", client.stderr());
    assert_like_local(&client, &pdd.path().join("artifacts/r1"), SLEEPY);
    assert_eq!(unit_list(&sock), "{}", "the unit is released at the end");
}

#[test]
fn a_killed_client_attaches_again_and_gets_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, _n2, _n3, sock) = relayed(dir.path());
    let pdd = make_pdd(SLEEPY);
    let me = ["--receptor-node-id", "client7"];
    let mut first = Client::spawn(run_cmd(&n1, pdd.path(), &[&["-i", "k1"][..], &me].concat()));
    let unit = first.unit();
    first.wait_stdout("\"msg\": \"early\"");
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    assert!(unit_list(&sock).contains(unit.split(':').nth(1).expect("id")), "the unit outlives its client");

    let mut again = receptor_cmd(&n1);
    again.arg("run").arg(pdd.path()).args(["--attach", &unit, "-i", "k1"]).args(me);
    let mut again = Client::spawn(again);
    assert_eq!(again.finish(), Some(0), "stderr: {}", again.stderr());
    assert_like_local(&again, &pdd.path().join("artifacts/k1"), SLEEPY);
    assert_eq!(unit_list(&sock), "{}");
}

#[test]
fn ctrl_c_cancels_and_releases_the_remote_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, _n2, n3, sock) = relayed(dir.path());
    let pdd = make_pdd(&PAUSING.replace("PAUSE_SECONDS", "300"));
    let mut client = Client::spawn(run_cmd(&n1, pdd.path(), &[]));
    client.wait_stdout("\"msg\": \"early\"");
    let data = n3.data_dir().to_string_lossy().into_owned();
    assert!(!processes_mentioning(&data).is_empty(), "the worker runs under node3's data dir");
    let pid = nix::unistd::Pid::from_raw(client.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).expect("SIGINT");
    assert_eq!(client.finish(), Some(1));
    assert!(
        client.stderr().contains("interrupted; the work unit was cancelled and released"),
        "{}",
        client.stderr()
    );
    wait_until("remote worker processes gone", Duration::from_secs(20), || {
        processes_mentioning(&data).is_empty()
    });
    assert_eq!(unit_list(&sock), "{}", "the unit is released");

    // --timeout stops a run the same way.
    let out = run_cmd(&n1, pdd.path(), &["--timeout", "2s"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("timed out after 2s; the work unit was cancelled and released"),
        "{}",
        stderr(&out)
    );
    wait_until("remote worker processes gone", Duration::from_secs(20), || {
        processes_mentioning(&data).is_empty()
    });
    assert_eq!(unit_list(&sock), "{}");
}

#[test]
fn detach_then_attach_through_the_local_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&ctl));
    let n3 = Daemon::start(Spec::new("node3").peer(n1.port).with_ansible());
    wait_route(&n1, "node3");
    let pdd = make_pdd(SLEEPY);
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(RECEPTOR);
        cmd.arg("--socket").arg(&sock).arg("run").arg(pdd.path()).args(extra);
        cmd.output().expect("receptor run")
    };
    let out = run(&["-p", "test.yml", "--via-receptor", "node3", "-i", "d1", "--detach"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let at = stdout(&out).trim().to_owned();
    let id = at.strip_prefix("node3:").expect("NODE:UNIT").to_owned();
    assert!(stderr(&out).contains(&format!("--attach {at} -i d1")), "{}", stderr(&out));
    // The daemon's unit mirrors one on node3 that carries the lease too.
    let units3 = n3.data_dir().join("units");
    wait_until("node3's unit with the lease", Duration::from_secs(30), || {
        std::fs::read_dir(&units3).into_iter().flatten().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("unit.json")).is_ok_and(|t| t.contains("\"lease\""))
        })
    });
    let listed = Command::new(RECEPTOR).arg("--socket").arg(&sock).args(["work", "list", "-q"]).output();
    assert!(stdout(&listed.expect("work list")).contains(&id), "work list shows the detached run");

    let mut attach = Command::new(RECEPTOR);
    attach.arg("--socket").arg(&sock).arg("run").arg(pdd.path()).args(["--attach", &at, "-i", "d1"]);
    let mut client = Client::spawn(attach);
    assert_eq!(client.finish(), Some(0), "stderr: {}", client.stderr());
    assert_like_local(&client, &pdd.path().join("artifacts/d1"), SLEEPY);
    assert_eq!(unit_list(&sock), "{}", "attaching to the end releases the unit");
}

#[test]
fn an_abandoned_run_is_released_when_its_lease_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, _n2, n3, sock) = relayed(dir.path());
    let pdd = make_pdd(&PAUSING.replace("PAUSE_SECONDS", "300"));
    let out = run_cmd(&n1, pdd.path(), &["--detach", "--lease", "4s"]).output().expect("detach");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let at = stdout(&out).trim().to_owned();
    assert!(at.starts_with("node3:"), "{at}");
    // `receptor work list --node` shows it to the node ID it was submitted as.
    let hint = stderr(&out);
    let as_node = hint.split("--receptor-node-id ").nth(1).expect("node id printed").trim().to_owned();
    let listed = receptor(&n1, &["--receptor-node-id", &as_node, "work", "list", "--node", "node3", "-q"]);
    assert_eq!(stdout(&listed).trim(), at.trim_start_matches("node3:"), "{}", stderr(&listed));
    let data = n3.data_dir().to_string_lossy().into_owned();
    wait_until("the job to start", Duration::from_secs(30), || !processes_mentioning(&data).is_empty());
    n3.wait_log("lease expired", Duration::from_secs(30));
    wait_until("the unit released", Duration::from_secs(30), || unit_list(&sock) == "{}");
    wait_until("its processes gone", Duration::from_secs(20), || processes_mentioning(&data).is_empty());
    // The hint, pasted as printed (it names the non-default --receptor-peer), now hears that
    // the lease expired.
    let pasted = hint.split(" with: receptor ").nth(1).expect("hint").trim().to_owned();
    assert!(pasted.contains(&format!("--receptor-peer {}", n1.peer_url())), "{pasted}");
    let late = Command::new(RECEPTOR).args(pasted.split_whitespace()).output();
    let late = late.expect("attach");
    assert_eq!(late.status.code(), Some(1), "{}", stderr(&late));
    assert!(stderr(&late).contains("expired: no client followed it for 4s"), "{}", stderr(&late));

    // A followed run outlives a lease shorter than the run itself.
    let pdd = make_pdd(SLEEPY);
    let me = ["--receptor-node-id", "client8"];
    let out =
        run_cmd(&n1, pdd.path(), &[&["--detach", "--lease", "3s", "-i", "f1"][..], &me].concat()).output();
    let at = stdout(&out.expect_ok()).trim().to_owned();
    let mut attach = receptor_cmd(&n1);
    attach.arg("run").arg(pdd.path()).args(["--attach", &at, "-i", "f1", "--lease", "3s"]).args(me);
    let mut client = Client::spawn(attach);
    assert_eq!(client.finish(), Some(0), "stderr: {}", client.stderr());
    assert!(client.stdout().contains("\"msg\": \"late\""), "{}", client.stdout());

    // Hostile or silly leases are refused before anything runs.
    let out = run_cmd(&n1, pdd.path(), &["--lease", "0s"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--lease: lease 0ns out of range"), "{}", stderr(&out));
    let req = br#"{"command":"work","subcommand":"submit","node":"localhost","worktype":"ansible-runner","lease":"99999999h"}"#;
    let reply = raw_session(&sock, &[&req[..], b"\n"].concat(), 1);
    assert!(reply[0].starts_with("ERROR: lease") && reply[0].contains("out of range"), "{reply:?}");
    let req = br#"{"command":"work","subcommand":"submit","node":"localhost","worktype":"ansible-runner","lease":"soon"}"#;
    let reply = raw_session(&sock, &[&req[..], b"\n"].concat(), 1);
    assert!(reply[0].starts_with("ERROR: time: invalid duration"), "{reply:?}");
}

/// A network namespace joined to this one by a veth pair (10.213.N.1 here, 10.213.N.2
/// there); deleted, with the pair, on drop.
struct Netns {
    name: String,
    here: String,
    subnet: u32,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false)
}

impl Netns {
    /// `None` (with the reason printed) when this process may not create namespaces.
    fn create() -> Option<Netns> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!(
                "SKIPPED: the veth test needs root (ip netns, veth pairs); run the suite as root to include it"
            );
            return None;
        }
        let pid = std::process::id();
        let subnet = pid % 250;
        let ns = Netns { name: format!("rcpt-test-{pid}"), here: format!("rcv{pid}a"), subnet };
        let there = format!("rcv{pid}b");
        let (a, b) = (format!("10.213.{subnet}.1/30"), format!("10.213.{subnet}.2/30"));
        let steps: [&[&str]; 7] = [
            &["netns", "add", &ns.name],
            &["link", "add", &ns.here, "type", "veth", "peer", "name", &there],
            &["link", "set", &there, "netns", &ns.name],
            &["addr", "add", &a, "dev", &ns.here],
            &["link", "set", &ns.here, "up"],
            &["-n", &ns.name, "addr", "add", &b, "dev", &there],
            &["-n", &ns.name, "link", "set", &there, "up"],
        ];
        for step in steps {
            assert!(ip(step), "ip {step:?} failed");
        }
        assert!(ip(&["-n", &ns.name, "link", "set", "lo", "up"]));
        Some(ns)
    }

    fn there_addr(&self) -> String {
        format!("10.213.{}.2", self.subnet)
    }

    fn link(&self, up: bool) {
        assert!(ip(&["link", "set", &self.here, if up { "up" } else { "down" }]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.here]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_veth_link_down_for_15_seconds_loses_nothing() {
    let Some(ns) = Netns::create() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node3", dir.path());
    let mut spec3 = Spec::new("node3").with_ansible().extra(&ctl).extra(FAST_MESH);
    spec3.netns = Some(ns.name.clone());
    spec3.listen_host = Some(ns.there_addr());
    let n3 = Daemon::start(spec3);
    let mut spec1 = Spec::new("node1").extra(FAST_MESH);
    spec1.peer_addrs.push(format!("{}:{}", ns.there_addr(), n3.port));
    let n1 = Daemon::start(spec1);
    wait_route(&n1, "node3");

    let pdd = make_pdd(SLEEPY);
    let mut client = Client::spawn(run_cmd(&n1, pdd.path(), &["-i", "v1"]));
    client.wait_stdout("\"msg\": \"early\"");
    ns.link(false);
    client.wait_stderr("reconnecting to node3");
    // Down for 15 s in all: polled, not slept blindly, so a client that gave up shows.
    let down = std::time::Instant::now();
    wait_until("15 s of link down", Duration::from_secs(20), || {
        assert!(
            client.child.try_wait().expect("try_wait").is_none(),
            "the client gave up: {}",
            client.stderr()
        );
        down.elapsed() >= Duration::from_secs(15)
    });
    ns.link(true);
    assert_eq!(client.finish(), Some(0), "stderr: {}", client.stderr());
    assert!(client.stderr().contains("reconnected to node3; resuming at byte "), "{}", client.stderr());
    assert_like_local(&client, &pdd.path().join("artifacts/v1"), SLEEPY);
    assert_eq!(unit_list(&sock), "{}");
}

#[test]
fn the_local_daemon_killed_and_restarted_mid_playbook_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    // node1 dials node3, so a restarted node1 (on a new port) links again.
    let n3 = Daemon::start(Spec::new("node3").with_ansible());
    let mut n1 = Daemon::start(Spec::new("node1").extra(&ctl).peer(n3.port));
    wait_route(&n1, "node3");
    let pdd = make_pdd(SLEEPY);
    let mut cmd = Command::new(RECEPTOR);
    cmd.arg("--socket").arg(&sock).arg("run").arg(pdd.path());
    cmd.args(["-p", "test.yml", "--via-receptor", "node3", "-i", "s1"]);
    let mut client = Client::spawn(cmd);
    client.wait_stdout("\"msg\": \"early\"");
    n1.kill();
    client.wait_stderr("reconnecting to node3");
    n1.restart();
    assert_eq!(client.finish(), Some(0), "stderr: {}", client.stderr());
    assert!(client.stderr().contains("reconnected to node3; resuming at byte "), "{}", client.stderr());
    assert_like_local(&client, &pdd.path().join("artifacts/s1"), SLEEPY);
    assert_eq!(unit_list(&sock), "{}");
}

#[test]
fn the_library_resumes_and_hands_each_event_over_once_in_order() {
    use receptord::client::blocking;
    use receptord::client::run::{Callbacks, RunOptions, RunRequest};
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, mut n2, _n3, sock) = relayed(dir.path());
    let pdd = make_pdd(SLEEPY);
    let req = RunRequest {
        via_receptor: Some("node3".parse().expect("id")),
        receptor_peer: Some(n1.peer_url().parse().expect("url")),
        options: RunOptions {
            private_data_dir: pdd.path().to_path_buf(),
            playbook: Some("test.yml".into()),
            ident: Some("lib1".into()),
            ..RunOptions::default()
        },
        ..RunRequest::default()
    };
    let counters = Arc::new(Mutex::new(Vec::<u64>::new()));
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let (c, n) = (counters.clone(), notices.clone());
    let callbacks = Callbacks {
        event_handler: Some(Box::new(move |ev| {
            c.lock().expect("lock").push(ev["counter"].as_u64().expect("counter"))
        })),
        notice_handler: Some(Box::new(move |msg| n.lock().expect("lock").push(msg.to_owned()))),
        ..Callbacks::default()
    };
    let run = std::thread::spawn(move || blocking::run(&req, callbacks));
    wait_until("the first events", Duration::from_secs(60), || counters.lock().expect("lock").len() >= 3);
    n2.kill();
    let reconnecting = || notices.lock().expect("lock").iter().any(|m| m.contains("reconnecting to node3"));
    wait_until("the client to notice", Duration::from_secs(30), reconnecting);
    n2.restart();
    let outcome = run.join().expect("thread").expect("run");
    assert_eq!((outcome.status.as_str(), outcome.rc), ("successful", 0));
    let seen = counters.lock().expect("lock").clone();
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, expected, "every event once, in order");
    let files = std::fs::read_dir(pdd.path().join("artifacts/lib1/job_events")).expect("events").count();
    assert_eq!(files, seen.len(), "as many events handed over as written");
    assert!(notices.lock().expect("lock").iter().any(|m| m.contains("reconnected to node3")));
    assert_eq!(unit_list(&sock), "{}");
}

/// A play that prints once, then stays silent for a minute.
const SILENT: &str = "---
- hosts: all
  gather_facts: false
  tasks:
    - name: before the silence
      ansible.builtin.debug:
        msg: early
    - name: silent
      ansible.builtin.command: sleep 60
";

#[test]
fn a_silent_job_whose_client_was_killed_stops_within_its_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, _n2, n3, sock) = relayed(dir.path());
    let pdd = make_pdd(SILENT);
    let mut client = Client::spawn(run_cmd(&n1, pdd.path(), &["--lease", "5s"]));
    client.wait_stdout("\"msg\": \"early\"");
    let data = n3.data_dir().to_string_lossy().into_owned();
    wait_until("the silent task", Duration::from_secs(30), || {
        !processes_mentioning("sleep\x0060").is_empty() && !processes_mentioning(&data).is_empty()
    });
    client.child.kill().expect("SIGKILL");
    let _ = client.child.wait();
    // lease + 5 s, counted by node3's clock from the client's death.
    wait_until("the job stopped within lease + 5 s", Duration::from_secs(10), || {
        processes_mentioning(&data).is_empty()
    });
    n3.wait_log("lease expired", Duration::from_secs(1));
    wait_until("the unit released", Duration::from_secs(10), || unit_list(&sock) == "{}");
}

#[test]
fn a_client_learns_of_a_dead_path_within_its_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, mut n2, _n3, _sock) = relayed(dir.path());
    let pdd = make_pdd(SILENT);
    let mut client = Client::spawn(run_cmd(&n1, pdd.path(), &["--lease", "8s"]));
    client.wait_stdout("\"msg\": \"early\"");
    wait_until("the silent task", Duration::from_secs(30), || {
        !processes_mentioning("sleep\x0060").is_empty()
    });
    n2.kill();
    // The only relay is gone for good: the client gives up within its lease (plus the
    // seconds its probe takes to find out), long before the silent task ends.
    let start = std::time::Instant::now();
    let mut code = None;
    while code.is_none() && start.elapsed() < Duration::from_secs(8 + 5) {
        code = client.child.try_wait().expect("try_wait").map(|s| s.code());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(code, Some(Some(1)), "gave up within lease + 5 s: {}", client.stderr());
    assert!(client.stderr().contains("no connection for 8s"), "{}", client.stderr());
}

#[test]
fn concurrent_runs_share_one_receptor_node_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, _n2, _n3, sock) = relayed(dir.path());
    let pdds: Vec<_> = (0..3).map(|_| make_pdd(PLAY)).collect();
    let me = ["--receptor-node-id", "controller"];
    let mut clients: Vec<Client> = pdds
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ident = format!("c{i}");
            Client::spawn(run_cmd(&n1, p.path(), &[&["-i", ident.as_str()][..], &me].concat()))
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.finish(), Some(0), "run {i}: {}", c.stderr());
        assert!(c.stdout().contains("PLAY RECAP"), "{}", c.stdout());
        // The hint names the shared ID, not this client's session.
        let hint = format!("--receptor-peer {} --receptor-node-id controller\n", n1.peer_url());
        assert!(c.stderr().contains(&hint), "{}", c.stderr());
    }
    assert_eq!(unit_list(&sock), "{}");

    // What one session submitted, another session of the same ID may follow.
    let pdd = make_pdd(SLEEPY);
    let out = run_cmd(&n1, pdd.path(), &[&["--detach", "-i", "s1"][..], &me].concat()).output();
    let at = stdout(&out.expect_ok()).trim().to_owned();
    let mut attach = receptor_cmd(&n1);
    attach.arg("run").arg(pdd.path()).args(["--attach", &at, "-i", "s1"]).args(me);
    let mut client = Client::spawn(attach);
    assert_eq!(client.finish(), Some(0), "stderr: {}", client.stderr());
    // Another ID may not.
    let out = run_cmd(&n1, pdd.path(), &[&["--detach", "-i", "s2"][..], &me].concat()).output();
    let at = stdout(&out.expect_ok()).trim().to_owned();
    let other = receptor(&n1, &["--receptor-node-id", "intruder", "run", "x", "--attach", &at]);
    assert_ne!(other.status.code(), Some(0), "{}", stderr(&other));
    let mut attach = receptor_cmd(&n1);
    attach.arg("run").arg(pdd.path()).args(["--attach", &at, "-i", "s2"]).args(me);
    let mut client = Client::spawn(attach);
    assert_eq!(client.finish(), Some(0), "stderr: {}", client.stderr());
    assert_eq!(unit_list(&sock), "{}");

    // A daemon cannot take a session ID: its own stays unique.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nid = \"node3~x\"\n").expect("write");
    let check =
        std::process::Command::new(RECEPTORD).arg("--check-config").arg("--config").arg(&bad).output();
    let check = check.expect("receptord");
    assert_ne!(check.status.code(), Some(0));
    assert!(stderr(&check).contains("node.id"), "{}", stderr(&check));
}

/// The job killed on the executing node: `receptor run` exits 1 with that node's own reason
/// (error kind `failed`), not with a truncated worker stream.
#[test]
fn a_job_killed_on_its_node_is_reported_with_that_nodes_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, _n2, _n3, sock) = relayed(dir.path());
    let pdd = make_pdd(SLEEPY);
    let mut client = Client::spawn(run_cmd(&n1, pdd.path(), &["-i", "gone1"]));
    client.wait_stdout("\"msg\": \"early\"");
    let units: serde_json::Value =
        serde_json::from_slice(&receptorctl(&sock, &["work", "list"]).stdout).expect("work list JSON");
    let pid = units.as_object().expect("units").values().find_map(|u| u["ExtraData"]["Pid"].as_i64());
    let pid = nix::unistd::Pid::from_raw(pid.expect("the unit's supervisor PID") as i32);
    // The supervisor and its job's process group, as an OOM killer or an operator would.
    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::SIGKILL);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
    assert_eq!(client.finish(), Some(1), "stderr: {}", client.stderr());
    let err = client.stderr();
    assert!(err.contains("the job failed on node3: "), "the executing node's reason: {err}");
    assert!(!err.contains("runner stream ended before the eof line"), "{err}");
}
