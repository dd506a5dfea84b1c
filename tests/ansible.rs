//! Remote playbook runs against the real ansible-runner and ansible-core (project venv):
//! `receptor run --via-receptor` across a mesh of real daemons, compared with local
//! `ansible-runner run`, interop with `ansible-runner transmit`/`process`, and hostile input.

mod common;

use std::io::{BufRead, BufReader, Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::playbooks::*;
use common::*;
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

fn mesh() -> (Daemon, Daemon, Daemon) {
    let n1 = Daemon::start(Spec::new("node1"));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port));
    let n3 = Daemon::start(Spec::new("node3").peer(n2.port).with_ansible());
    wait_route(&n1, "node3");
    (n1, n2, n3)
}

fn run_cmd(peer: &Daemon, pdd: &Path, extra: &[&str]) -> Command {
    let mut cmd = receptor_cmd(peer);
    cmd.env("PATH", path_without_venv()).arg("run").arg(pdd).args([
        "-p",
        "test.yml",
        "--via-receptor",
        "node3",
    ]);
    cmd.args(extra);
    cmd
}

#[test]
fn three_hop_run_matches_a_local_ansible_runner_run() {
    let (n1, _n2, _n3) = mesh();
    let pdd = make_pdd(PLAY);
    let out = run_cmd(&n1, pdd.path(), &["-i", "remote1"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let remote = pdd.path().join("artifacts/remote1");
    let printed = out.stdout.clone();
    assert_eq!(printed, std::fs::read(remote.join("stdout")).expect("stdout artifact"), "printed == stdout");
    assert_eq!(std::fs::read_to_string(remote.join("rc")).expect("rc"), "0");
    assert_eq!(std::fs::read_to_string(remote.join("status")).expect("status"), "successful");

    let (_local_pdd, local) = local_run(PLAY, "local1");
    assert_eq!(events(&remote), events(&local), "same events in the same order");
    assert!(events(&remote).len() >= 8);
    assert_eq!(tree(&remote), tree(&local), "same artifact files");
}

#[test]
fn a_failing_play_exits_2_with_status_failed() {
    let (n1, _n2, _n3) = mesh();
    let pdd = make_pdd(FAILING);
    let out = run_cmd(&n1, pdd.path(), &["-i", "f1"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let art = pdd.path().join("artifacts/f1");
    assert_eq!(std::fs::read_to_string(art.join("status")).expect("status"), "failed");
    assert!(stdout(&out).contains("deliberate failure"));
}

#[test]
fn events_stream_before_the_job_ends() {
    let (n1, _n2, _n3) = mesh();
    let pdd = make_pdd(&PAUSING.replace("PAUSE_SECONDS", "4"));
    let mut child = run_cmd(&n1, pdd.path(), &[]).stdout(Stdio::piped()).spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut saw_early_while_running = false;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if line.contains("\"msg\": \"early\"") {
            saw_early_while_running = child.try_wait().expect("try_wait").is_none();
            break;
        }
    }
    assert!(saw_early_while_running, "the first task's output arrived while the job was still running");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("\"msg\": \"late\"")), "later output follows");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn interop_with_ansible_runner_transmit_and_process() {
    let (n1, _n2, _n3) = mesh();
    let pdd = make_pdd(PLAY);
    let work = tempfile::tempdir().expect("tempdir");
    let runner = venv_bin().join("ansible-runner");
    let transmit = Command::new(&runner)
        .env("PATH", path_with_venv())
        .arg("transmit")
        .arg(pdd.path())
        .args(["-p", "test.yml", "-i", "tx1"])
        .output()
        .expect("transmit");
    assert!(transmit.status.success());
    let stream = work.path().join("transmit.out");
    std::fs::write(&stream, &transmit.stdout).expect("write");
    let out = receptor(
        &n1,
        &["work", "submit", "ansible-runner", "--node", "node3", "--payload", stream.to_str().expect("utf8")],
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let mut process = Command::new(&runner)
        .env("PATH", path_with_venv())
        .arg("process")
        .arg(work.path().join("proc"))
        .args(["--ident", "tx1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("process");
    process.stdin.take().expect("stdin").write_all(&out.stdout).expect("feed");
    assert!(process.wait().expect("wait").success());
    let processed = work.path().join("proc/artifacts/tx1");
    assert_eq!(std::fs::read_to_string(processed.join("rc")).expect("rc"), "0");

    let ours = run_cmd(&n1, pdd.path(), &["-i", "tx2", "-q"]).output().expect("run");
    assert!(ours.status.success(), "stderr: {}", stderr(&ours));
    let ours = pdd.path().join("artifacts/tx2");
    assert_eq!(tree(&processed), tree(&ours), "process and receptor run write the same files");
    assert_eq!(events(&processed), events(&ours), "and the same events");
}

#[test]
fn the_awx_flow_runs_unchanged_through_receptorctl_across_three_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    // As AWX sets it up: the control node signs its work, the execution node verifies.
    let (private, public) = rsa_keys(dir.path());
    let signing = format!("[work.signing]\nprivate_key = \"{}\"\n", private.display());
    let verify = format!(
        "[work.ansible_runner]\nverify_signature = true\n[work.verification]\npublic_key = \"{}\"\n",
        public.display()
    );
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{signing}")));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port));
    let _n3 = Daemon::start(Spec::new("node3").peer(n2.port).with_ansible().extra(&verify));
    wait_route(&n1, "node3");
    let pdd = make_pdd(PLAY);
    let out_dir = dir.path().join("out");
    // Exactly the pipeline AWX's receptor integration amounts to.
    let pipeline = format!(
        "set -o pipefail; ansible-runner transmit '{pdd}' -p test.yml -i awx1 \
         | receptorctl --socket '{sock}' work submit --node node3 ansible-runner --signwork --payload - -f \
         | ansible-runner process '{out}' --ident awx1",
        pdd = pdd.path().display(),
        sock = sock.display(),
        out = out_dir.display()
    );
    let out =
        Command::new("bash").env("PATH", path_with_venv()).arg("-c").arg(&pipeline).output().expect("bash");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let processed = out_dir.join("artifacts/awx1");
    assert_eq!(std::fs::read_to_string(processed.join("rc")).expect("rc"), "0");
    assert_eq!(std::fs::read_to_string(processed.join("status")).expect("status"), "successful");

    let (_local_pdd, local) = local_run(PLAY, "local1");
    assert_eq!(events(&processed), events(&local), "every event");
    // The unit stays listed on node1 as a finished remote unit until released.
    let out = receptorctl(&sock, &["work", "list"]);
    let units: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let unit = units.as_object().and_then(|m| m.values().next()).expect("a unit").clone();
    assert_eq!(unit["StateName"], "Succeeded", "{unit}");
    assert_eq!(unit["ExtraData"]["RemoteWorkType"], "ansible-runner");
    // AWX's health check of an execution node.
    let args = [
        "work",
        "submit",
        "ansible-runner",
        "--node",
        "node3",
        "--signwork",
        "-n",
        "-a",
        "params=--worker-info",
        "--ttl",
        "20s",
        "-f",
    ];
    let out = receptorctl(&sock, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("runner_version: 2.4.3"), "{}", stdout(&out));
}

#[test]
fn receptor_run_without_a_peer_goes_through_the_local_daemons_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&ctl));
    let _n2 = Daemon::start(Spec::new("node2").peer(n1.port).with_ansible());
    wait_route(&n1, "node2");
    let pdd = make_pdd(PLAY);
    let out = std::process::Command::new(RECEPTOR)
        .arg("--socket")
        .arg(&sock)
        .arg("run")
        .arg(pdd.path())
        .args(["-p", "test.yml", "--via-receptor", "node2", "-i", "sock1"])
        .output()
        .expect("receptor run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let art = pdd.path().join("artifacts/sock1");
    assert_eq!(out.stdout, std::fs::read(art.join("stdout")).expect("stdout artifact"));
    assert_eq!(std::fs::read_to_string(art.join("rc")).expect("rc"), "0");
    assert!(events(&art).len() >= 8);
    // The run's work unit is released when it ends.
    let out = receptorctl(&sock, &["work", "list"]);
    assert_eq!(stdout(&out).trim(), "{}");
}

enum Entry<'a> {
    File(&'a str, Vec<u8>),
    Link(&'a str, &'a str),
    Mode(&'a str, u32),
}

/// A transmit stream (kwargs, zip, eof) around a hand-built zip.
fn hostile_transmit(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut zw = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default();
    let mut patches = Vec::new();
    for e in entries {
        match e {
            Entry::File(name, data) => {
                zw.start_file(*name, opts).expect("file");
                zw.write_all(data).expect("data");
            }
            Entry::Link(name, target) => zw.add_symlink(*name, *target, opts).expect("link"),
            Entry::Mode(name, mode) => {
                zw.start_file(*name, opts).expect("file");
                patches.push((name.to_string(), *mode));
            }
        }
    }
    let mut cur = zw.finish().expect("finish");
    for (name, mode) in patches {
        let at = zip::ZipArchive::new(&mut cur)
            .expect("zip")
            .by_name(&name)
            .expect("entry")
            .central_header_start();
        cur.seek(SeekFrom::Start(at + 38)).expect("seek");
        cur.write_all(&(mode << 16).to_le_bytes()).expect("patch");
    }
    let zip = cur.into_inner();
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("playbook".into(), "test.yml".into());
    kwargs.insert("ident".into(), "hostile".into());
    let mut out = Vec::new();
    let mut reader: &[u8] = &zip;
    receptord::runner::write_transmit(&mut out, &kwargs, Some((&mut reader, zip.len() as u64)))
        .expect("stream");
    out
}

#[test]
fn hostile_archives_are_refused_and_nothing_escapes() {
    let limits = "[work.ansible_runner]\nmax_archive_bytes = 67108864\n";
    let n1 = Daemon::start(Spec::new("node1").extra(limits).with_ansible());
    let canary = format!("receptord-canary-{}", std::process::id());
    let abs = std::env::temp_dir().join(&canary);
    let bomb: Vec<u8> = vec![0u8; 100 << 20];
    let through_link = format!("evil/{canary}");
    let cases: Vec<(&str, Vec<Entry<'_>>, &str)> = vec![
        ("parent", vec![Entry::File("../escape", b"x".to_vec())], "parent directory (..) component"),
        ("absolute", vec![Entry::File(abs.to_str().expect("utf8"), b"x".to_vec())], "absolute path"),
        ("symlink", vec![Entry::Link("evil", "/etc"), Entry::File(&through_link, b"x".to_vec())], "symlink"),
        ("bomb", vec![Entry::File("project/bomb", bomb)], "limit"),
        ("fifo", vec![Entry::Mode("project/fifo", 0o010_644)], "special file (device/FIFO/socket)"),
    ];
    let scratch = tempfile::tempdir().expect("tempdir");
    for (name, entries, rule) in cases {
        let payload = scratch.path().join(name);
        std::fs::write(&payload, hostile_transmit(&entries)).expect("write");
        let out = receptor(
            &n1,
            &[
                "work",
                "submit",
                "ansible_runner",
                "--node",
                "node1",
                "--payload",
                payload.to_str().expect("utf8"),
            ],
        );
        let text = stdout(&out);
        assert!(text.contains("\"status\": \"error\""), "{name}: worker-format error line: {text}");
        assert!(
            text.contains("archive refused") && text.contains(rule),
            "{name}: names the rule {rule:?}: {text}"
        );
        assert!(!out.status.success(), "{name}: non-zero exit");
    }
    assert!(!abs.exists(), "absolute path not written");
    assert!(!Path::new("/etc").join(&canary).exists(), "nothing written through the symlink");
    let data = n1.data_dir();
    wait_until("job dirs and TMPDIRs removed", Duration::from_secs(5), || {
        ["jobs", "tmp"]
            .iter()
            .all(|d| std::fs::read_dir(data.join(d)).map(|d| d.count() == 0).unwrap_or(true))
    });
    let stray: Vec<PathBuf> =
        std::fs::read_dir(&data).expect("data dir").flatten().map(|e| e.path()).collect();
    assert!(
        // The daemon's own files: job and unit dirs, TMPDIRs, the reserved netceptor IDs.
        stray
            .iter()
            .all(|p| ["jobs", "units", "tmp", "netceptor-reserved-ids"].iter().any(|d| p.ends_with(d))),
        "nothing outside the job dir: {stray:?}"
    );
    let out = receptor(&n1, &["ping", "node1", "-c", "1"]);
    assert!(out.status.success(), "daemon unaffected");
}

#[test]
fn clear_errors_for_missing_worker_unknown_node_and_unreachable_peer() {
    let n1 = Daemon::start(Spec::new("node1"));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port));
    wait_route(&n1, "node2");
    let pdd = make_pdd(PLAY);
    let mut cmd = receptor_cmd(&n1);
    cmd.arg("run").arg(pdd.path()).args(["-p", "test.yml", "--via-receptor", "node2"]);
    let out = cmd.output().expect("run");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("node node2 has no ansible_runner worker: ansible-runner not found on PATH"),
        "{}",
        stderr(&out)
    );

    let mut cmd = receptor_cmd(&n1);
    cmd.arg("run").arg(pdd.path()).args(["-p", "test.yml", "--via-receptor", "node9"]);
    let out = cmd.output().expect("run");
    assert!(
        stderr(&out).contains("node node9 is not known to the mesh; known nodes: node1, node2"),
        "{}",
        stderr(&out)
    );

    let out = Command::new(RECEPTOR)
        .args(["run"])
        .arg(pdd.path())
        .args(["-p", "test.yml", "--via-receptor", "node1", "--receptor-peer", "receptor://127.0.0.1:9"])
        .output()
        .expect("run");
    assert!(stderr(&out).contains("cannot reach peer receptor://127.0.0.1:9"), "{}", stderr(&out));

    let out = Command::new(RECEPTOR)
        .args(["run", "/nonexistent/pdd", "-p", "test.yml", "--via-receptor", "node1"])
        .output()
        .expect("run");
    assert!(stderr(&out).contains("bad private data dir /nonexistent/pdd"), "{}", stderr(&out));
    drop(n2);
}

#[test]
fn local_node_id_equal_to_via_runs_without_a_peer() {
    let pdd = make_pdd(PLAY);
    let out = Command::new(RECEPTOR)
        .env("PATH", path_with_venv())
        .arg("run")
        .arg(pdd.path())
        .args([
            "-p",
            "test.yml",
            "-i",
            "l1",
            "--via-receptor",
            "runner-node",
            "--receptor-node-id",
            "runner-node",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(pdd.path().join("artifacts/l1/status")).expect("status"),
        "successful"
    );
}

#[test]
fn every_special_file_left_out_of_the_archive_is_named() {
    let pdd = make_pdd(PLAY);
    let fifo = pdd.path().join("project/a.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let sock = pdd.path().join("env/agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("socket");
    let out = Command::new(RECEPTOR)
        .env("PATH", path_with_venv())
        .arg("run")
        .arg(pdd.path())
        .args(["-p", "test.yml", "-i", "sp1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{} is a FIFO: left out", fifo.display())), "{err}");
    assert!(err.contains(&format!("{} is a socket: left out", sock.display())), "{err}");
}
