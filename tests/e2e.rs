//! End-to-end protected streams and frame origin rules, against real daemons: a relay
//! sees only ciphertext and cannot change a stream's bytes unnoticed, a member forging
//! another node's source cannot open streams as it or touch its streams, and a leaf may
//! only send frames as itself.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::hostile::{FakePeer, FakeTls, node, stream_client, tls_output};
use common::pki::Pki;
use common::relay::{FakeRelay, Tamper};
use common::*;
use receptord::mesh::origin::CertSigner;
use receptord::wire::{Body, Frame, Name, Routed, Side};

/// alpha and beta, each with TLS material but plain-TCP listeners, linked only through a
/// fake relay "mallory" (no certificate of its own): `tamper` sees every routed frame.
fn relayed_pair(pki: &Pki, beta_extra: &str, tamper: Tamper) -> (Daemon, Daemon, FakeRelay) {
    for n in ["alpha", "beta", "ctl", "mallory"] {
        pki.issue(n, n);
    }
    let alpha = Daemon::start(Spec::new("alpha").extra(&pki.tls_toml("alpha", "")).extra(FAST_MESH));
    let beta =
        Daemon::start(Spec::new("beta").extra(&pki.tls_toml("beta", beta_extra)).extra(FAST_MESH).extra(CAT));
    // Signed with mallory's own certificate: nodes with TLS material take only signed
    // advertisements, and a relay is an admitted member.
    let signer = Some(CertSigner::new(pki.context("mallory")));
    let relay = FakeRelay::start("mallory", ("alpha", alpha.port), ("beta", beta.port), signer, tamper);
    wait_route(&alpha, "beta");
    (alpha, beta, relay)
}

/// Runs `work submit cat --node beta` through alpha with `payload`, as the certified
/// client `ctl` (or as an anonymous plain client).
fn submit(alpha: &Daemon, pki: &Pki, certified: bool, payload: &[u8]) -> std::process::Output {
    let file = pki.path("payload");
    std::fs::write(&file, payload).expect("write payload");
    let mut cmd = receptor_cmd(alpha);
    if certified {
        cmd.args(pki.client_args("ctl"));
    }
    cmd.args(["work", "submit", "cat", "--node", "beta", "--payload", file.to_str().expect("utf8")]);
    cmd.output().expect("receptor")
}

const MARKER: &[u8] = b"TOP-SECRET-PLAYBOOK-VARS ";

fn payload() -> Vec<u8> {
    MARKER.iter().copied().cycle().take(300 * 1024).collect()
}

/// Records the payload bytes of every `Data` frame the relay forwards (bounded).
fn recorder(seen: Arc<Mutex<Vec<u8>>>, flip: Arc<AtomicBool>) -> Tamper {
    Arc::new(move |r: &mut Routed| {
        if let Body::Data { data, from, offset, .. } = &mut r.body {
            if let Ok(mut s) = seen.lock() {
                if s.len() < 8 << 20 {
                    s.extend_from_slice(data);
                }
            }
            // Past the handshake, flip one byte of every chunk going back to the client.
            if flip.load(Ordering::Relaxed) && *from == Side::Acceptor && *offset >= 16 * 1024 {
                let mut bytes = data.to_vec();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x01;
                *data = Bytes::from(bytes);
            }
        }
        true
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_relay_sees_only_ciphertext_and_flipped_bytes_fail_the_stream() {
    let pki = Pki::new();
    let (seen, flip) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
    let (alpha, beta, _relay) = relayed_pair(&pki, "", recorder(seen.clone(), flip.clone()));
    let data = payload();

    let out = submit(&alpha, &pki, true, &data);
    assert!(out.status.success(), "protected job through the relay: {}", stderr(&out));
    assert!(out.stdout == data, "output intact ({} of {} bytes)", out.stdout.len(), data.len());
    let relayed = std::mem::take(&mut *seen.lock().expect("lock"));
    assert!(relayed.len() > 2 * data.len(), "the relay carried both directions ({} bytes)", relayed.len());
    assert!(!contains(&relayed, MARKER), "the relay saw plaintext");

    // A client without a certificate cannot open a stream beta must protect.
    let out = submit(&alpha, &pki, false, b"anonymous\n");
    assert!(!out.status.success(), "an unprotected stream was accepted: {}", stdout(&out));
    assert!(stderr(&out).contains("end-to-end protected"), "{}", stderr(&out));
    beta.wait_log("refused an unprotected stream", Duration::from_secs(5));

    flip.store(true, Ordering::Relaxed);
    let out = submit(&alpha, &pki, true, &data);
    assert!(!out.status.success(), "a tampered stream succeeded");
    assert!(stderr(&out).contains("integrity"), "the failure names the integrity check: {}", stderr(&out));
    assert!(data.starts_with(&out.stdout), "output is a clean prefix, never altered bytes");
    assert!(out.stdout.len() < data.len());
}

#[test]
fn without_protection_the_same_relay_reads_the_stream() {
    // The control experiment of the test above: it shows the relay's recording works.
    let pki = Pki::new();
    let (seen, flip) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
    let (alpha, _beta, _relay) = relayed_pair(&pki, "e2e_streams = false", recorder(seen.clone(), flip));
    let data = payload();
    let out = submit(&alpha, &pki, false, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(contains(&seen.lock().expect("lock"), MARKER), "an unprotected stream is readable by relays");
}

fn tls_spec<'a>(id: &'a str, pki: &Pki, extra: &str) -> Spec<'a> {
    let mut spec = Spec::new(id).extra(&pki.tls_toml(id, "")).extra(FAST_MESH).extra(extra);
    spec.tls = true;
    spec
}

fn open_as(src: &str, dst: &str, stream: u64, header: Vec<u8>) -> Frame {
    let body = Body::Open {
        stream,
        service: Name::new("work").expect("name"),
        window: 1 << 20,
        header: header.into(),
    };
    Frame::Routed(Routed { src: node(src), dst: node(dst), hops_left: 30, body })
}

/// A member holding a real certificate (mallory) opens `work` streams on beta claiming
/// to be alpha: plain, and with a genuine TLS ClientHello (its own certificate). Both
/// are refused and logged with the link they came on; alpha's own streams still work.
#[test]
fn a_forged_source_open_is_refused_and_logged_with_its_link() {
    let pki = Pki::new();
    for n in ["alpha", "beta", "mallory", "ctl"] {
        pki.issue(n, n);
    }
    let alpha = Daemon::start(tls_spec("alpha", &pki, ""));
    let beta = Daemon::start(tls_spec("beta", &pki, CAT).peer(alpha.port));
    let (crt, key, ca) = (pki.path("mallory.crt"), pki.path("mallory.key"), pki.path("ca.crt"));
    let mut mallory =
        FakePeer::try_join_tls(beta.port, "mallory", &FakeTls::new(&crt, &key)).expect("mallory joins");

    let plain = br#"{"work_type":"cat","params":{}}"#.to_vec();
    mallory.send(&open_as("alpha", "beta", 7, plain)).expect("send");
    beta.wait_log("refused an unprotected stream", Duration::from_secs(5));
    let mut hello = b"\xffRCPT-E2E/1\n".to_vec();
    hello.extend_from_slice(&tls_output(&mut stream_client(&crt, &key, &ca)));
    mallory.send(&open_as("alpha", "beta", 8, hello)).expect("send");
    beta.wait_log("the opener did not authenticate as its source", Duration::from_secs(15));
    let log = beta.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused an unprotected") || l.contains("did not authenticate"))
        .collect();
    assert!(refusals.iter().all(|l| l.contains("link=") && l.contains("mallory")), "{refusals:?}");
    assert!(refusals.iter().all(|l| l.contains("src=alpha")), "{refusals:?}");
    assert!(!log.contains("job started"), "no job ran for the forger: {log}");

    let out = Command::new(RECEPTOR)
        .arg("--receptor-peer")
        .arg(format!("receptors://127.0.0.1:{}", alpha.port))
        .args(pki.client_args("ctl"))
        .args(["work", "submit", "cat", "--node", "beta", "--payload", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("receptor");
    assert!(out.status.success(), "a real protected stream still works: {}", stderr(&out));
}

/// A forger that is the path to the node it claims to be (here "ghost", unknown to the
/// mesh, so beta's replies follow the forger's link back) completes the TLS handshake
/// with its own certificate: beta refuses it, since the certificate names mallory, not
/// ghost, and logs the link. Nothing reaches the work service.
#[test]
fn an_on_path_forger_with_its_own_certificate_is_refused() {
    let pki = Pki::new();
    for n in ["beta", "mallory"] {
        pki.issue(n, n);
    }
    let beta = Daemon::start(tls_spec("beta", &pki, CAT));
    let (crt, key, ca) = (pki.path("mallory.crt"), pki.path("mallory.key"), pki.path("ca.crt"));
    let mut mallory =
        FakePeer::try_join_tls(beta.port, "mallory", &FakeTls::new(&crt, &key)).expect("mallory joins");
    let mut tls = stream_client(&crt, &key, &ca);
    let mut hello = b"\xffRCPT-E2E/1\n".to_vec();
    hello.extend_from_slice(&tls_output(&mut tls));
    mallory.send(&open_as("ghost", "beta", 42, hello)).expect("send");
    let (mut offset, mut ended) = (0u64, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ended.is_none() && std::time::Instant::now() < deadline {
        let Some(Frame::Routed(Routed { dst, body, .. })) = mallory.recv() else { continue };
        match body {
            Body::Data { stream: 42, data, .. } if dst.as_str() == "ghost" => {
                let mut rd = &data[..];
                while !rd.is_empty() {
                    tls.read_tls(&mut rd).expect("read_tls");
                    tls.process_new_packets().expect("beta's flight verifies");
                }
                let out = tls_output(&mut tls);
                if !out.is_empty() {
                    let n = out.len() as u64;
                    let body = Body::Data { stream: 42, from: Side::Opener, offset, data: out.into() };
                    offset += n;
                    let r = Routed { src: node("ghost"), dst: node("beta"), hops_left: 30, body };
                    mallory.send(&Frame::Routed(r)).expect("send");
                }
            }
            Body::Reset { stream: 42, reason, .. } if dst.as_str() == "ghost" => {
                ended = Some(reason.to_string())
            }
            _ => {}
        }
    }
    assert!(!tls.is_handshaking(), "the forger finished its side of the handshake");
    let reason = ended.expect("beta reset the stream");
    assert!(reason.contains("not node ghost"), "{reason}");
    beta.wait_log("did not authenticate as its source", Duration::from_secs(5));
    let log = beta.log();
    assert!(
        log.lines()
            .any(|l| l.contains("did not authenticate") && l.contains("mallory") && l.contains("src=ghost")),
        "{log}"
    );
    assert!(!log.contains("job started"), "{log}");
}

/// While a job streams between a client and beta, a member sprays `Reset`, `Data`,
/// `Credit` and `Stop` frames for the first few thousand stream numbers in both
/// directions, forging the client's and alpha's sources: stream numbers are random, so
/// none lands, and the job's output is intact.
#[test]
fn forged_resets_and_data_for_another_nodes_stream_have_no_effect() {
    let pki = Pki::new();
    for n in ["alpha", "beta", "mallory", "ctl"] {
        pki.issue(n, n);
    }
    let slow = "[[work.command]]\nname = \"slowcat\"\nprogram = \"sh\"\nargs = [\"-c\", \"sleep 3; cat\"]\n";
    let alpha = Daemon::start(tls_spec("alpha", &pki, ""));
    let beta = Daemon::start(tls_spec("beta", &pki, slow).peer(alpha.port));
    let client = || {
        let mut cmd = Command::new(RECEPTOR);
        cmd.arg("--receptor-peer").arg(format!("receptors://127.0.0.1:{}", alpha.port));
        cmd.args(pki.client_args("ctl"));
        cmd
    };
    wait_until("TLS route to beta", Duration::from_secs(20), || {
        client().args(["ping", "beta", "-c", "1", "--timeout", "1s"]).status().is_ok_and(|s| s.success())
    });
    let data = payload();
    std::fs::write(pki.path("payload"), &data).expect("write");
    let mut cmd = client();
    cmd.args(["work", "submit", "slowcat", "--node", "beta", "--payload"]).arg(pki.path("payload"));
    let client = std::thread::spawn(move || cmd.output().expect("receptor"));
    beta.wait_log("job started", Duration::from_secs(10));

    let (crt, key) = (pki.path("mallory.crt"), pki.path("mallory.key"));
    let mut mallory =
        FakePeer::try_join_tls(beta.port, "mallory", &FakeTls::new(&crt, &key)).expect("mallory joins");
    let mut frames = Vec::new();
    for id in 0..=2000u64 {
        for (src, dst) in [("ctl", "beta"), ("alpha", "beta"), ("beta", "ctl")] {
            for from in [Side::Opener, Side::Acceptor] {
                let bodies = [
                    Body::Reset { stream: id, from, reason: "forged".into() },
                    Body::Data { stream: id, from, offset: 0, data: Bytes::from_static(b"forged bytes") },
                    Body::Credit { stream: id, from, n: u32::MAX },
                    Body::Stop { stream: id, from },
                ];
                for body in bodies {
                    frames.push(Frame::Routed(Routed {
                        src: node(src),
                        dst: node(dst),
                        hops_left: 30,
                        body,
                    }));
                }
            }
        }
    }
    for batch in frames.chunks(500) {
        mallory.send_raw(&common::hostile::encode_all(batch.iter().cloned())).expect("spray");
    }
    let out = client.join().expect("client");
    assert!(
        out.status.success(),
        "the job survived the spray: {}\nalpha:\n{}\nbeta:\n{}",
        stderr(&out),
        alpha.log(),
        beta.log()
    );
    assert!(out.stdout == data, "output intact ({} of {} bytes)", out.stdout.len(), data.len());
}

/// A leaf (short-lived client) link may only send frames as itself; the daemon drops
/// the rest and logs them with the link. Plain-TCP meshes too.
#[test]
fn a_leaf_may_only_send_frames_as_itself() {
    let n1 = Daemon::start(Spec::new("n1").extra(FAST_MESH).extra(CAT));
    let mut leaf = FakePeer::join_leaf(n1.port, "leafy");
    let ping = |src: &str, id| {
        Frame::Routed(Routed { src: node(src), dst: node("n1"), hops_left: 30, body: Body::Ping { id } })
    };
    leaf.send(&ping("leafy", 1)).expect("send");
    let pong = leaf.recv_until(Duration::from_secs(5), |f| match f {
        Frame::Routed(Routed { body: Body::Pong { id }, .. }) => Some(id),
        _ => None,
    });
    assert_eq!(pong, Some(1), "the leaf's own frames are answered");
    leaf.send(&ping("n2", 2)).expect("send");
    leaf.send(&open_as("someone", "n1", 9, br#"{"work_type":"cat","params":{}}"#.to_vec())).expect("send");
    leaf.send(&ping("leafy", 3)).expect("send");
    let pong = leaf.recv_until(Duration::from_secs(5), |f| match f {
        Frame::Routed(Routed { body: Body::Pong { id }, .. }) => Some(id),
        _ => None,
    });
    assert_eq!(pong, Some(3), "still linked, and nothing answered the forged ping");
    n1.wait_log("names another node as its source", Duration::from_secs(5));
    let log = n1.log();
    assert!(log.lines().any(|l| l.contains("names another node") && l.contains("link=leafy")), "{log}");
    assert!(!log.contains("job started"), "{log}");
}

/// `receptor run --via-receptor` across a three-node TLS mesh, with protected streams
/// (the client presents its certificate): the playbook runs and its artifacts arrive.
#[test]
fn receptor_run_works_end_to_end_over_protected_streams() {
    let pki = Pki::new();
    for n in ["node1", "node2", "node3", "ctl"] {
        pki.issue(n, n);
    }
    let n1 = Daemon::start(tls_spec("node1", &pki, ""));
    let n2 = Daemon::start(tls_spec("node2", &pki, "").peer(n1.port));
    let n3 = Daemon::start(tls_spec("node3", &pki, "").peer(n2.port).with_ansible());
    let client = || {
        let mut cmd = Command::new(RECEPTOR);
        cmd.env("PATH", path_without_venv());
        cmd.arg("--receptor-peer").arg(format!("receptors://127.0.0.1:{}", n1.port));
        cmd.args(pki.client_args("ctl"));
        cmd
    };
    wait_until("TLS route to node3", Duration::from_secs(20), || {
        client().args(["ping", "node3", "-c", "1", "--timeout", "1s"]).status().is_ok_and(|s| s.success())
    });
    let pdd = common::playbooks::make_pdd(common::playbooks::PLAY);
    let out = client()
        .arg("run")
        .arg(pdd.path())
        .args(["-p", "test.yml", "--via-receptor", "node3", "-i", "tls1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let art = pdd.path().join("artifacts/tls1");
    assert_eq!(std::fs::read_to_string(art.join("status")).expect("status"), "successful");
    assert!(common::playbooks::events(&art).len() >= 8);
    let log = n3.log();
    assert!(!log.contains("refused a stream") && !log.contains("integrity"), "{log}");
}

/// An opener that starts protected streams and never finishes their handshakes holds at
/// most `limits.stream_handshakes` of them, each for `limits.stream_handshake_timeout`:
/// the next is refused with the limit's name, and slots come back after the timeout.
#[test]
fn stalled_handshakes_are_bounded_and_time_out() {
    let pki = Pki::new();
    for n in ["beta", "mallory"] {
        pki.issue(n, n);
    }
    let limits = "[limits]\nstream_handshakes = 2\nstream_handshake_timeout = \"1s\"\n";
    let beta = Daemon::start(tls_spec("beta", &pki, &format!("{CAT}{limits}")));
    let (crt, key, ca) = (pki.path("mallory.crt"), pki.path("mallory.key"), pki.path("ca.crt"));
    let mut mallory =
        FakePeer::try_join_tls(beta.port, "mallory", &FakeTls::new(&crt, &key)).expect("mallory joins");
    let open = |id| {
        let mut hello = b"\xffRCPT-E2E/1\n".to_vec();
        hello.extend_from_slice(&tls_output(&mut stream_client(&crt, &key, &ca)));
        open_as("mallory", "beta", id, hello)
    };
    // The answer to stream `id`: Credit (accepted) or Reset (with its reason).
    let answer = |peer: &mut FakePeer, id: u64| {
        peer.recv_until(Duration::from_secs(10), |f| match f {
            Frame::Routed(Routed { body: Body::Credit { stream, .. }, .. }) if stream == id => Some(Ok(())),
            Frame::Routed(Routed { body: Body::Reset { stream, reason, .. }, .. }) if stream == id => {
                Some(Err(reason.to_string()))
            }
            _ => None,
        })
    };
    for id in [1, 2] {
        mallory.send(&open(id)).expect("send");
        assert_eq!(answer(&mut mallory, id), Some(Ok(())), "handshake {id} admitted");
    }
    mallory.send(&open(3)).expect("send");
    let refused = answer(&mut mallory, 3).expect("an answer").expect_err("refused");
    assert!(refused.contains("stream_handshakes"), "{refused}");
    let mut timed_out = Vec::new();
    mallory.recv_until(Duration::from_secs(10), |f| {
        if let Frame::Routed(Routed { body: Body::Reset { stream, reason, .. }, .. }) = f {
            assert!(reason.contains("did not finish within"), "{reason}");
            timed_out.push(stream);
        }
        (timed_out.len() == 2).then_some(())
    });
    timed_out.sort();
    assert_eq!(timed_out, vec![1, 2], "both stalled handshakes timed out");
    mallory.send(&open(4)).expect("send");
    assert_eq!(answer(&mut mallory, 4), Some(Ok(())), "a slot is free again");
}

/// beta's count of accepted end-to-end handshakes of `kind` (`full` or `resumed`), from
/// its metrics endpoint.
fn handshakes(port: u16, kind: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("get");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let series = format!("stream_handshakes_total{{kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.split_once(series.as_str()).and_then(|(_, v)| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// alpha (with a control socket and `alpha_extra`) linked to beta (a `cat` work type and
/// a metrics endpoint): alpha, beta, alpha's socket, beta's metrics port.
fn metered_pair(
    pki: &Pki,
    dir: &std::path::Path,
    alpha_extra: &str,
) -> (Daemon, Daemon, std::path::PathBuf, u16) {
    for n in ["alpha", "beta"] {
        pki.issue(n, n);
    }
    let (ctl, sock) = with_socket("alpha", dir);
    let metrics = "[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let beta = Daemon::start(tls_spec("beta", pki, &format!("{CAT}{metrics}")));
    let alpha = Daemon::start(tls_spec("alpha", pki, &format!("{ctl}{alpha_extra}")).peer(beta.port));
    wait_until("route from alpha to beta", Duration::from_secs(20), || {
        raw_session(&sock, b"ping beta\n", 1)[0].contains("\"Success\":true")
    });
    let port = metrics_port(&beta);
    (alpha, beta, sock, port)
}

/// A remote `cat` unit on beta through alpha's socket, its output checked.
fn remote_cat(sock: &std::path::Path, text: &str) {
    let out = Command::new(RECEPTOR)
        .arg("--socket")
        .arg(sock)
        .args(["work", "submit", "--node", "beta", "cat", "-f", "--rm", "-l", text])
        .output()
        .expect("receptor");
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{text}\n"));
}

/// Streams between two nodes that completed a full handshake resume it (issue 26): the
/// second remote unit alpha runs on beta costs beta no certificate check and still
/// works end to end (the node-ID checks pass on the resumed streams), and after beta
/// reloads its TLS files every earlier ticket is refused (a full handshake again).
#[test]
fn resumed_streams_keep_identity_and_fall_back_after_reload() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_alpha, beta, sock, port) = metered_pair(&pki, dir.path(), "");
    remote_cat(&sock, "first");
    let full = handshakes(port, "full");
    assert!(full >= 1, "the first contact is a full handshake");
    remote_cat(&sock, "second");
    assert!(handshakes(port, "resumed") >= 1, "later streams resume (full {full})");

    let before = handshakes(port, "full");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(beta.pid() as i32), nix::sys::signal::SIGHUP)
        .expect("SIGHUP");
    beta.wait_log("TLS material reloaded", Duration::from_secs(10));
    remote_cat(&sock, "third");
    assert!(handshakes(port, "full") > before, "a reload refuses every earlier ticket");
    let log = beta.log();
    assert!(!log.contains("refused a stream") && !log.contains("integrity"), "{log}");
}

/// An opener that does not ask for tickets (resumption off, as on nodes from before
/// issue 26) gets none: its streams to an acceptor with resumption on work as before,
/// every one a full handshake.
#[test]
fn an_opener_without_resumption_gets_no_ticket_and_full_handshakes() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let off = "[limits]\nstream_resumption = \"0s\"\n";
    let (_alpha, beta, sock, port) = metered_pair(&pki, dir.path(), off);
    remote_cat(&sock, "first");
    remote_cat(&sock, "second");
    assert!(handshakes(port, "full") >= 2);
    assert_eq!(handshakes(port, "resumed"), 0);
    let log = beta.log();
    assert!(!log.contains("refused a stream") && !log.contains("integrity"), "{log}");
}
