//! Black-box mesh tests: real receptord daemons on loopback, driven by the real CLI.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const FAIL: &str = "[[work.command]]\nname = \"fail\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"cat >/dev/null; echo oops >&2; exit 3\"]\n";

#[test]
fn line_of_three_carries_bytes_exactly_and_propagates_exit_codes() {
    let extra = format!("{CAT}{FAIL}");
    let (n1, _n2, _n3) = line3(&extra);
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = dir.path().join("payload");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&payload, &data).expect("write payload");
    let p = payload.to_str().expect("utf8 path");
    let out = receptor(&n1, &["work", "submit", "cat", "--node", "node3", "--payload", p]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(out.stdout == data, "output differs from payload ({} vs {} bytes)", out.stdout.len(), data.len());

    let out = receptor(&n1, &["traceroute", "node3"]);
    let hops: Vec<String> =
        stdout(&out).lines().map(|l| l.split(" in ").next().unwrap_or_default().to_owned()).collect();
    assert_eq!(hops[1..], ["1: node1", "2: node2", "3: node3"], "{}", stdout(&out));

    let out = receptor(&n1, &["work", "submit", "fail", "--node", "node3", "--payload", p]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("oops"), "stderr tail is reported: {}", stderr(&out));

    // A literal payload goes too; --follow and --rm are what the mesh path does anyway.
    let out = receptor(&n1, &["work", "submit", "cat", "--node", "node3", "-l", "hello", "-f", "--rm"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    // Options about a stored unit are refused, never silently ignored.
    for opt in [&["--json"][..], &["--ttl", "1m"], &["--signwork"]] {
        let mut args = vec!["work", "submit", "cat", "--node", "node3", "-l", "x"];
        args.extend_from_slice(opt);
        let out = receptor(&n1, &args);
        assert!(!out.status.success(), "{opt:?} was accepted over the mesh");
        assert!(stderr(&out).contains(opt[0]), "the refusal names {}: {}", opt[0], stderr(&out));
    }
}

#[test]
fn square_reconverges_when_a_relay_dies() {
    let extra = format!("{CAT}{FAST_MESH}");
    let a = Daemon::start(Spec::new("a").extra(&extra));
    let mut b = Daemon::start(Spec::new("b").peer(a.port).extra(&extra));
    let c = Daemon::start(Spec::new("c").peer(a.port).extra(&extra));
    let _d = Daemon::start(Spec::new("d").peer(b.port).peer(c.port).extra(&extra));
    wait_route(&a, "d");
    let status = stdout(&receptor(&a, &["status"]));
    assert!(status.contains("d "), "status lists d: {status}");

    let run = |peer: &Daemon| {
        let mut child = receptor_cmd(peer)
            .args(["work", "submit", "cat", "--node", "d", "--payload", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(b"through the square\n").expect("write");
        child.wait_with_output().expect("wait")
    };
    let out = run(&a);
    assert_eq!(stdout(&out), "through the square\n", "stderr: {}", stderr(&out));

    // Ties break towards the smaller node ID, so a→d goes via b. Kill b.
    let st = stdout(&receptor(&a, &["status"]));
    assert!(st.lines().any(|l| l.starts_with("d ") && l.contains(" b ")), "route to d via b: {st}");
    b.kill();
    wait_until("route to d via c", Duration::from_secs(20), || {
        let st = stdout(&receptor(&a, &["status"]));
        st.lines().any(|l| l.starts_with("d ") && l.contains(" c "))
    });
    let out = run(&a);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "through the square\n");
}

#[test]
fn unknown_node_and_unknown_work_type_fail_fast_and_clearly() {
    let n1 = Daemon::start(Spec::new("node1").extra(CAT));
    let start = Instant::now();
    let out = receptor(&n1, &["work", "submit", "cat", "--node", "nowhere"]);
    let took = start.elapsed();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("node nowhere is not known to the mesh"), "{err}");
    assert!(err.contains("known nodes: node1"), "{err}");
    assert!(took < Duration::from_secs(5), "unknown node took {took:?}");

    let out = receptor(&n1, &["work", "submit", "nope", "--node", "node1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("node node1 has no work type \"nope\" (it offers: cat)"), "{err}");
}

#[test]
fn garbage_and_huge_frames_drop_only_that_connection() {
    let n1 = Daemon::start(Spec::new("node1").extra(CAT));
    let closed = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", n1.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let _ = s.write_all(bytes);
        let mut buf = [0u8; 4096];
        // Drain the daemon's preface and hello; the connection must then be closed.
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    assert!(closed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "garbage closes the connection");
    let mut huge = b"RCPT".to_vec();
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xf0]);
    assert!(closed(&huge), "a huge length prefix closes the connection");
    let mut bad_body = b"RCPT".to_vec();
    bad_body.extend_from_slice(&[0, 0, 0, 3, 0x99, 1, 2]);
    assert!(closed(&bad_body), "an unknown frame type closes the connection");
    n1.wait_log("dropped connection", Duration::from_secs(5));
    let out = receptor(&n1, &["ping", "node1", "-c", "1"]);
    assert!(out.status.success(), "daemon still serves: {}", stderr(&out));
}

#[test]
fn config_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(RECEPTORD).arg("--config").arg(&path).output().expect("run");
        (out.status.code(), stderr(&out), path.display().to_string())
    };
    let (code, err, path) = check("malformed.toml", "[node]\nid = \"n1\"\nlisteners = [\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains(&path), "names the file: {err}");

    let (code, err, _) = check("unknown.toml", "[node]\nid = \"n1\"\ncolour = \"blue\"\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("colour"), "names the unknown key: {err}");

    let (code, err, _) =
        check("badcost.toml", "[node]\nid = \"n1\"\n[[peers]]\nurl = \"receptor://h:1\"\ncost = -2\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("peers[0].cost"), "names the key: {err}");

    let (code, err, _) = check("badurl.toml", "[node]\nid = \"n1\"\n[[peers]]\nurl = \"http://h:1\"\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("unsupported scheme"), "{err}");

    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "[node]\nid = \"n1\"\n").expect("write");
    let out =
        std::process::Command::new(RECEPTORD).arg("--check-config").arg("-c").arg(&ok).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_second_node_with_a_taken_id_is_refused_on_both_sides() {
    let n1 = Daemon::start(Spec::new("node1").extra(FAST_MESH));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port).extra(FAST_MESH));
    wait_route(&n1, "node2");
    let dup = Daemon::start(Spec::new("node2").peer(n1.port).extra(FAST_MESH));
    n1.wait_log("already in use", Duration::from_secs(10));
    dup.wait_log("link refused", Duration::from_secs(10));
    assert!(dup.log().contains("node id node2 is already in use"), "{}", dup.log());
    wait_route(&n1, "node2");
    let out = receptor(&n1, &["ping", "node2", "-c", "1"]);
    assert!(out.status.success(), "the original keeps working: {} {}", stdout(&out), stderr(&out));
    drop(n2);
}

const SLEEPER: &str = "[[work.command]]\nname = \"sleeper\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo $$; sleep 1000 & sleep 1000\"]\n";

/// Starts a sleeper job and returns the client process and the job's process group.
fn start_sleeper(peer: &Daemon, node: &str) -> (std::process::Child, i32) {
    let mut child = receptor_cmd(peer)
        .args(["work", "submit", "sleeper", "--node", node])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).expect("read pid") == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let pgid: i32 = String::from_utf8_lossy(&line).trim().parse().expect("pid line");
    assert!(group_alive(pgid));
    (child, pgid)
}

#[test]
fn client_loss_and_daemon_stop_kill_the_job_process_group() {
    let extra = format!("{SLEEPER}{FAST_MESH}");
    let (n1, _n2, mut n3) = line3(&extra);
    let (mut client, pgid) = start_sleeper(&n1, "node3");
    client.kill().expect("kill client");
    let _ = client.wait();
    wait_until("job group gone after client loss", Duration::from_secs(15), || !group_alive(pgid));

    let (_client, pgid) = start_sleeper(&n1, "node3");
    let code = n3.stop();
    assert_eq!(code, Some(0), "clean exit after the grace period");
    // The group's last members may linger as zombies until init reaps them.
    wait_until("no orphaned children after the daemon stops", Duration::from_secs(5), || !group_alive(pgid));
}

const GEN: &str = r#"[[work.command]]
name = "gen"
program = "python3"
args = ["-c", "import sys,struct\nout=sys.stdout.buffer\nfor i in range(16384): out.write(struct.pack('<Q', i)*8192)\n"]
"#;

#[test]
fn flow_control_bounds_memory_while_the_reader_stalls() {
    let (n1, n2, n3) = line3(GEN);
    let mut child = receptor_cmd(&n1)
        .args(["work", "submit", "gen", "--node", "node3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 1 << 20];
    let mut offset: u64 = 0;
    let check = |data: &[u8], offset: &mut u64| {
        for word in data.chunks_exact(8) {
            let v = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            assert_eq!(v, *offset / 65536, "byte {offset} out of order");
            *offset += 8;
        }
    };
    let mut stalled = false;
    let mut peak = (0, 0, 0);
    loop {
        let n = read_aligned(&mut out, &mut buf);
        if n == 0 {
            break;
        }
        check(&buf[..n], &mut offset);
        if !stalled && offset >= 64 << 20 {
            stalled = true;
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                peak.0 = peak.0.max(n1.rss_kib());
                peak.1 = peak.1.max(n2.rss_kib());
                peak.2 = peak.2.max(n3.rss_kib());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success());
    assert_eq!(offset, 1 << 30, "every byte arrived");
    let ceiling = 32 * 1024;
    eprintln!(
        "peak RSS while stalled (KiB): node1 {} relay node2 {} sender node3 {}",
        peak.0, peak.1, peak.2
    );
    assert!(peak.1 < ceiling, "relay RSS {} KiB over {ceiling} KiB", peak.1);
    assert!(peak.2 < ceiling, "sender RSS {} KiB over {ceiling} KiB", peak.2);
    assert!(peak.0 < ceiling, "entry relay RSS {} KiB over {ceiling} KiB", peak.0);
}

/// Reads a multiple of 8 bytes (unless at EOF).
fn read_aligned(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = r.read(buf).expect("read");
    if n == 0 {
        return 0;
    }
    while n % 8 != 0 {
        let m = r.read(&mut buf[n..]).expect("read");
        assert!(m > 0, "truncated word");
        n += m;
    }
    n
}

#[test]
fn a_full_node_refuses_more_jobs_with_a_reason() {
    let extra = format!("{SLEEPER}[work]\nmax_jobs = 1\n");
    let n1 = Daemon::start(Spec::new("node1").extra(&extra));
    let (mut first, pgid) = start_sleeper(&n1, "node1");
    let out = receptor(&n1, &["work", "submit", "sleeper", "--node", "node1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("node node1 is busy: all job slots are in use"), "{}", stderr(&out));
    first.kill().expect("kill");
    let _ = first.wait();
    wait_until("first job gone", Duration::from_secs(15), || !group_alive(pgid));
}

#[test]
fn environment_overrides_and_sighup_reload_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("r.toml");
    let data = dir.path().join("data");
    let base = format!(
        "[node]\nid = \"from-file\"\ndata_dir = \"{}\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:0\"\n",
        data.display()
    );
    std::fs::write(&cfg, &base).expect("config");
    let out = std::process::Command::new(RECEPTORD)
        .env("RECEPTOR_NODE__ID", "from-env")
        .args(["--check-config", "-c"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(stdout(&out).contains("node from-env"), "{}{}", stdout(&out), stderr(&out));

    let mut spec = Spec::new("reloader");
    spec.extra = CAT.to_owned();
    let d = Daemon::start(spec);
    let status = || stdout(&receptor(&d, &["status"]));
    assert!(status().contains("cat 1") && !status().contains("echo2"), "{}", status());
    let cfg = d.dir.path().join("receptor.toml");
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str("[[work.command]]\nname = \"echo2\"\nprogram = \"cat\"\nversion = \"7\"\n");
    std::fs::write(&cfg, text).expect("write");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::SIGHUP)
        .expect("hup");
    d.wait_log("reload: done", Duration::from_secs(10));
    wait_until("new work type advertised", Duration::from_secs(10), || status().contains("echo2 7"));
    std::fs::write(&cfg, "not toml [").expect("write");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::SIGHUP)
        .expect("hup");
    d.wait_log("keeping the running configuration", Duration::from_secs(10));
    assert!(status().contains("echo2 7"), "a bad file keeps the running configuration");
}
