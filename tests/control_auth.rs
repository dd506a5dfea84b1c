//! Who a TCP control client is: over TLS, the node ID of its client certificate — held to
//! `[[work.allow]]`, unit ownership and `[[control.allow]]` like another node — and a
//! plain TCP listener only with an explicit opt-in. And who a mesh peer without a
//! certificate may be. Real daemons, real receptorctl, openssl as a bare TLS client.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// A CA and node certificates made with `receptor cert`.
struct Pki(tempfile::TempDir);

impl Pki {
    fn new() -> Pki {
        let pki = Pki(tempfile::tempdir().expect("tempdir"));
        pki.cli(&["cert", "init"]);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn cli(&self, args: &[&str]) {
        let out =
            Command::new(RECEPTOR).current_dir(self.0.path()).args(args).output().expect("receptor cert");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }

    fn issue(&self, id: &str) {
        let (crt, key) = (format!("{id}.crt"), format!("{id}.key"));
        let args =
            ["cert", "issue", "--node-id", id, "--ip", "127.0.0.1", "--out-cert", &crt, "--out-key", &key];
        self.cli(&args);
    }
}

/// node1 with a TLS control listener, an `echo` work type only `ops-*` may run, and
/// `reload` only for `ops-*`.
fn tls_node(pki: &Pki, extra: &str) -> Daemon {
    pki.issue("node1");
    let cfg = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n{extra}\
         [[work.command]]\nname = \"echo\"\nprogram = \"/bin/echo\"\nargs = [\"over tls\"]\n\
         [[work.allow]]\nsubmitters = [\"ops-*\"]\nwork_types = [\"echo\"]\n\
         [control]\ntcp_listen = \"127.0.0.1:0\"\ntcp_tls = true\n\
         [[control.allow]]\nclients = [\"ops-*\"]\nactions = [\"reload\"]\n",
        pki.path("node1.crt").display(),
        pki.path("node1.key").display(),
        pki.path("ca.crt").display()
    );
    Daemon::start(Spec::new("node1").extra(&cfg))
}

fn ctl(pki: &Pki, port: u16, cert: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv_bin().join("receptorctl"));
    cmd.env("PATH", path_with_venv()).args(["--socket", &format!("tls://127.0.0.1:{port}"), "--rootcas"]);
    cmd.arg(pki.path("ca.crt"));
    if let Some(c) = cert {
        cmd.arg("--cert").arg(pki.path(&format!("{c}.crt"))).arg("--key").arg(pki.path(&format!("{c}.key")));
    }
    cmd.args(args).output().expect("receptorctl")
}

#[test]
fn a_tls_control_client_is_its_certificates_node_id() {
    let pki = Pki::new();
    pki.issue("ops-1");
    pki.issue("dev-1");
    let n1 = tls_node(&pki, "");
    let port = control_port(&n1);
    let out = ctl(&pki, port, Some("ops-1"), &["work", "submit", "echo", "-n", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "over tls\n");
    let out = ctl(&pki, port, Some("ops-1"), &["work", "submit", "echo", "-n"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // [[work.allow]] applies to the certificate's node ID.
    let out = ctl(&pki, port, Some("dev-1"), &["work", "submit", "echo", "-n", "-f"]);
    assert!(!out.status.success());
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("does not allow dev-1"), "{}", stderr(&out));
    // Each sees only the units it submitted.
    let list = |who: &str| {
        let out = ctl(&pki, port, Some(who), &["work", "list"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    assert_eq!(list("ops-1").as_object().map(|m| m.len()), Some(2), "{}", list("ops-1"));
    assert_eq!(list("dev-1").as_object().map(|m| m.len()), Some(0), "{}", list("dev-1"));
    // reload needs a [[control.allow]] rule.
    let out = ctl(&pki, port, Some("dev-1"), &["reload"]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("reload is not allowed for dev-1"), "{said}");
    let out = ctl(&pki, port, Some("ops-1"), &["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    n1.wait_log("reload: done", Duration::from_secs(10));
}

#[test]
fn a_tls_control_client_without_a_node_id_is_told_and_closed() {
    let pki = Pki::new();
    let n1 = tls_node(&pki, "require_client_cert = false\n");
    let port = control_port(&n1);
    let out = ctl(&pki, port, None, &["status"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    n1.wait_log("its certificate names no node ID", Duration::from_secs(10));
}

#[test]
fn a_tls_control_client_over_the_session_budget_is_told_why() {
    let pki = Pki::new();
    pki.issue("ops-1");
    let n1 = tls_node(&pki, "[limits]\ncontrol_sessions = 1\ncontrol_local_reserved = 0\n");
    let port = control_port(&n1);
    // One session held open by a TLS client that never sends a request.
    let (mut held, greeting) = s_client(&pki, port);
    assert!(greeting.starts_with("Receptor Control"), "{greeting}");
    // The next one completes its handshake and reads why it is closed.
    let (mut second, said) = s_client(&pki, port);
    assert!(said.contains("too many control sessions"), "{said}");
    for c in [&mut held, &mut second] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A TLS client (openssl) as `ops-1` that sends nothing: the process and its first line.
fn s_client(pki: &Pki, port: u16) -> (std::process::Child, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-CAfile"])
        .arg(pki.path("ca.crt"))
        .arg("-cert")
        .arg(pki.path("ops-1.crt"))
        .arg("-key")
        .arg(pki.path("ops-1.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut line = String::new();
    let mut rd = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut rd, &mut line).expect("first line");
    (child, line)
}

#[test]
fn a_plain_tcp_control_listener_needs_the_explicit_opt_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("receptor.toml");
    let base = format!("[node]\nid = \"n1\"\ndata_dir = \"{}\"\n", dir.path().join("data").display());
    std::fs::write(&cfg, format!("{base}[control]\ntcp_listen = \"127.0.0.1:0\"\n")).expect("write");
    let out =
        Command::new(RECEPTORD).arg("--config").arg(&cfg).arg("--check-config").output().expect("receptord");
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("control.tcp_listen") && said.contains("insecure_plaintext_control"), "{said}");
    let opted = format!("{base}[control]\ntcp_listen = \"127.0.0.1:0\"\ninsecure_plaintext_control = true\n");
    std::fs::write(&cfg, opted).expect("write");
    let out =
        Command::new(RECEPTORD).arg("--config").arg(&cfg).arg("--check-config").output().expect("receptord");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Speaks the link handshake as `id` over TLS without a client certificate; returns the
/// daemon's answer to it (the frame after its Hello).
fn uncertified_hello(pki: &Pki, port: u16, id: &str) -> receptord::wire::Frame {
    tls_hello(pki, port, id, None, receptord::wire::caps::STREAMS)
}

/// Speaks the link handshake as `id` with `caps` over TLS, presenting `cert`'s certificate
/// (made by [`Pki::issue`]) when given; returns the daemon's answer to it.
fn tls_hello(pki: &Pki, port: u16, id: &str, cert: Option<&str>, caps: u32) -> receptord::wire::Frame {
    use receptord::wire::{Frame, FrameCodec, Hello, NodeId, PREFACE, PROTOCOL_VERSION};
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    use tokio_util::codec::Decoder;
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-CAfile"])
        .arg(pki.path("ca.crt"));
    if let Some(c) = cert {
        cmd.arg("-cert").arg(pki.path(&format!("{c}.crt"))).arg("-key").arg(pki.path(&format!("{c}.key")));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let hello = Hello {
        version: PROTOCOL_VERSION,
        node_id: NodeId::new(id).expect("id"),
        epoch: 1,
        caps,
        idle_timeout_ms: 60_000,
        cost: 1.0,
    };
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(&Frame::Hello(hello).encode());
    child.stdin.as_mut().expect("stdin").write_all(&out).expect("send hello");
    let got = Arc::new(Mutex::new(Vec::new()));
    let (sink, mut stdout) = (got.clone(), child.stdout.take().expect("stdout"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let frames = || {
        let bytes = got.lock().expect("lock").clone();
        let mut buf = bytes::BytesMut::from(bytes.get(4..).unwrap_or_default());
        let mut codec = FrameCodec::default();
        std::iter::from_fn(|| codec.decode(&mut buf).ok().flatten()).collect::<Vec<_>>()
    };
    wait_until("the daemon's answer to the hello", Duration::from_secs(10), || frames().len() >= 2);
    let _ = child.kill();
    let _ = child.wait();
    frames().swap_remove(1)
}

#[test]
fn a_peer_without_a_certificate_may_only_join_as_a_temporary_client() {
    let pki = Pki::new();
    pki.issue("node1");
    let cfg = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\nrequire_client_cert = false\n",
        pki.path("node1.crt").display(),
        pki.path("node1.key").display(),
        pki.path("ca.crt").display()
    );
    let mut spec = Spec::new("node1").extra(&cfg);
    spec.tls = true;
    let n1 = Daemon::start(spec);
    // Claiming a node's ID without a certificate to prove it: refused.
    match uncertified_hello(&pki, n1.port, "controller") {
        receptord::wire::Frame::Reject { reason } => {
            assert!(reason.to_string().contains("presented no certificate"), "{reason}")
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    // A temporary client ID, which no certificate can name: admitted.
    let answer = uncertified_hello(&pki, n1.port, "receptor-client-0123456789ab");
    assert!(matches!(answer, receptord::wire::Frame::Admit), "{answer:?}");
    // And no certificate is issued for such an ID.
    let out = Command::new(RECEPTOR)
        .current_dir(pki.path(""))
        .args([
            "cert",
            "issue",
            "--node-id",
            "receptor-client-x",
            "--out-cert",
            "x.crt",
            "--out-key",
            "x.key",
        ])
        .output()
        .expect("receptor cert");
    assert!(!out.status.success() && stderr(&out).contains("reserved"), "{}", stderr(&out));
}

/// Shared client IDs (`NODE~TAG` sessions) over mutual TLS: a session speaks for the node
/// its certificate names and for no other; only a client may be one.
#[test]
fn a_session_id_must_be_of_the_node_its_certificate_names() {
    use receptord::wire::{Frame, caps};
    let pki = Pki::new();
    for id in ["node1", "controller", "other"] {
        pki.issue(id);
    }
    let cfg = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n",
        pki.path("node1.crt").display(),
        pki.path("node1.key").display(),
        pki.path("ca.crt").display()
    );
    let mut spec = Spec::new("node1").extra(&cfg);
    spec.tls = true;
    let n1 = Daemon::start(spec);
    let client = caps::STREAMS | caps::EPHEMERAL;
    // controller's certificate, a session claiming another node's principal: refused.
    match tls_hello(&pki, n1.port, "other~3f9a0c21", Some("controller"), client) {
        Frame::Reject { reason } => {
            let reason = reason.to_string();
            assert!(reason.contains("other~3f9a0c21") && reason.contains("controller"), "{reason}")
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    // ... and a session of a node whose certificate it lacks, even a daemon's: refused.
    let answer = tls_hello(&pki, n1.port, "node1~3f9a0c21", Some("controller"), client);
    assert!(matches!(answer, Frame::Reject { .. }), "{answer:?}");
    // A session of its own certificate's node: admitted, any number of them at once.
    for tag in ["3f9a0c21", "77aa0c21"] {
        let answer = tls_hello(&pki, n1.port, &format!("controller~{tag}"), Some("controller"), client);
        assert!(matches!(answer, Frame::Admit), "{answer:?}");
    }
    // The right certificate, but not a client: a daemon never takes a session ID.
    match tls_hello(&pki, n1.port, "controller~3f9a0c21", Some("controller"), caps::STREAMS) {
        Frame::Reject { reason } => assert!(reason.to_string().contains("not a client"), "{reason}"),
        other => panic!("expected a reject, got {other:?}"),
    }
    // The same through the real client: `--receptor-node-id` other than the certificate's.
    let peer = format!("receptors://127.0.0.1:{}", n1.port);
    let ping = |node_id: &str| {
        Command::new(RECEPTOR)
            .args(["--receptor-peer", &peer, "--receptor-node-id", node_id, "--tls-cert"])
            .arg(pki.path("controller.crt"))
            .arg("--tls-key")
            .arg(pki.path("controller.key"))
            .arg("--tls-ca")
            .arg(pki.path("ca.crt"))
            .args(["ping", "node1", "-c", "1", "--timeout", "5s"])
            .output()
            .expect("receptor ping")
    };
    let ok = ping("controller");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let refused = ping("other");
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("certificate"), "{}", stderr(&refused));
}
