//! `receptor config import` on real Go Receptor configs: each fixture in
//! tests/data/go-configs is first started by the Go 1.4.0 binary (so it is a config Go
//! accepts, with real certificates and keys), then translated, and the TOML must pass
//! `receptord --check-config` and say what the Go config said.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::go::{GoNode, GoPki, connections, ctl, free_port, go_binary};
use common::{RECEPTOR, RECEPTORD, rsa_keys, wait_until};
use receptord::config::Config;

/// A fixture with its placeholders filled in, next to the certificates and keys it names.
struct Fixture {
    pki: GoPki,
    yaml: PathBuf,
}

impl Fixture {
    fn new(name: &str, node: &str) -> Fixture {
        let pki = GoPki::new();
        pki.issue(node, node);
        let dir = pki.path("ca.crt").parent().expect("dir").to_path_buf();
        rsa_keys(&dir);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/go-configs").join(name);
        let mut text = std::fs::read_to_string(&src).expect("fixture");
        text = text.replace("@DIR@", &dir.display().to_string());
        for p in ["@PORT_LISTEN@", "@PORT_PEER@", "@PORT_WS@", "@PORT_CTL@"] {
            text = text.replace(p, &free_port().to_string());
        }
        let yaml = dir.join(name);
        std::fs::write(&yaml, text).expect("write fixture");
        Fixture { pki, yaml }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.pki.path(name)
    }

    /// Starts the Go binary on the file until its control socket answers, then stops it.
    fn go_accepts(&self, sock: &str) {
        let mut child = Command::new(go_binary())
            .arg("--config")
            .arg(&self.yaml)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the Go receptor");
        let sock = self.path(sock);
        let mut exited = None;
        wait_until("the Go node's control socket", Duration::from_secs(20), || {
            exited = child.try_wait().expect("try_wait");
            exited.is_some() || std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        if exited.is_some() {
            let out = child.wait_with_output().expect("output");
            panic!("Go refused {}: {}", self.yaml.display(), String::from_utf8_lossy(&out.stderr));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `receptor config import` into `out.toml`; the process's output.
    fn import(&self, extra: &[&str]) -> (Output, PathBuf) {
        let toml = self.path("out.toml");
        let out = Command::new(RECEPTOR)
            .args(["config", "import"])
            .arg(&self.yaml)
            .arg("-o")
            .arg(&toml)
            .args(extra)
            .output()
            .expect("run receptor");
        (out, toml)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `receptord --check-config` accepts the file, and the library loads it.
fn check_config(toml: &Path) -> Config {
    let out =
        Command::new(RECEPTORD).arg("--check-config").arg("--config").arg(toml).output().expect("receptord");
    assert!(
        out.status.success(),
        "receptord --check-config: {}\n{}",
        stderr(&out),
        std::fs::read_to_string(toml).unwrap_or_default()
    );
    Config::load(toml).expect("Config::load")
}

#[test]
fn awx_execution_node_translates_completely() {
    let f = Fixture::new("awx-execution-node.yaml", "exec1");
    f.go_accepts("exec1.sock");
    let (out, toml) = f.import(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "nothing left out: {}", stderr(&out));
    let cfg = check_config(&toml);
    assert_eq!(cfg.node.id.as_str(), "exec1");
    assert_eq!(cfg.node.data_dir, f.path("data-exec1"));
    assert_eq!(cfg.log.level, "info");
    assert_eq!(cfg.listeners.len(), 1);
    assert_eq!(cfg.listeners[0].url.to_string().split("://").next(), Some("receptors"));
    assert_eq!(cfg.listeners[0].url.host, "127.0.0.1");
    assert!(cfg.peers.is_empty());
    let tls = cfg.tls.expect("[tls]");
    assert_eq!(tls.cert, f.path("exec1.crt"));
    assert_eq!(tls.ca, vec![f.path("ca.crt")]);
    assert!(tls.require_client_cert);
    assert_eq!(cfg.control.socket, Some(f.path("exec1.sock")));
    assert_eq!(cfg.control.mode_bits(), 0o660);
    assert_eq!(cfg.netceptor.control_tls, Some(true), "control-service tls=: ConnType 2");
    assert!(cfg.work.command.is_empty(), "ansible-runner worker is the built-in worker");
    assert!(cfg.work.ansible_runner.enabled && cfg.work.ansible_runner.verify_signature);
    let verification = cfg.work.verification.expect("verification");
    assert_eq!(verification.public_key, f.path("verify.pem"));
    assert!(verification.accept_replayable_go_tokens, "AWX's Go control node signs with Go tokens");
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_translated_execution_node_runs_and_go_peers_dial_it_unchanged() {
    let f = Fixture::new("awx-execution-node.yaml", "exec1");
    f.pki.issue("gohop", "gohop");
    let (out, toml) = f.import(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let port = check_config(&toml).listeners[0].url.port;
    let daemon = Command::new(RECEPTORD)
        .arg("--config")
        .arg(&toml)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("receptord");
    let _daemon = Killed(daemon);
    let sock = f.path("exec1.sock");
    wait_until("receptord's control socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    // A Go hop node dials it with Go's TLS client, as it dialled the Go execution node.
    let mut args = f.pki.go_args("gohop");
    args.extend(["--tcp-peer".into(), format!("address=127.0.0.1:{port}"), "tls=cli".into()]);
    let go = GoNode::start("gohop", false, &args);
    wait_until("receptord lists the Go peer", Duration::from_secs(40), || {
        let st: serde_json::Value = serde_json::from_str(&ctl(&sock, "status")).unwrap_or_default();
        connections(&st).iter().any(|(n, _, p)| n == "gohop" && p.as_deref() == Some("netceptor"))
    });
    wait_until("the Go node lists exec1", Duration::from_secs(40), || {
        connections(&go.status()).iter().any(|(n, _, _)| n == "exec1")
    });
}

#[test]
fn hop_node_dials_its_go_peer_with_netceptors_or_natively_on_request() {
    let f = Fixture::new("hop-node.yaml", "hop1");
    f.go_accepts("hop1.sock");
    let (out, toml) = f.import(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cfg = check_config(&toml);
    assert_eq!(cfg.log.level, "warn");
    assert_eq!(cfg.listeners[0].cost, 2.5);
    assert_eq!(cfg.peers.len(), 1);
    assert!(cfg.peers[0].url.to_string().starts_with("netceptors://127.0.0.1:"), "{}", cfg.peers[0].url);
    assert!(!cfg.work.ansible_runner.enabled, "Go offered no ansible-runner");
    assert_eq!(cfg.control.mode_bits(), 0o600, "Go's default permissions");
    let text = std::fs::read_to_string(&toml).expect("toml");
    assert!(
        text.contains("netceptor://") && text.contains("--native-peers"),
        "the header explains the mapping"
    );

    let (out, toml) = f.import(&["--native-peers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cfg = check_config(&toml);
    assert!(cfg.peers[0].url.to_string().starts_with("receptors://127.0.0.1:"), "{}", cfg.peers[0].url);
}

#[test]
fn control_node_lists_what_it_left_out_and_exits_3() {
    let f = Fixture::new("control-node.yaml", "awx-control");
    f.go_accepts("awx-control.sock");
    let (out, toml) = f.import(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let lines: Vec<String> = stderr(&out).lines().map(str::to_owned).collect();
    let expected = ["left out: [0].node.maxidleconnectiontimeout: "];
    assert_eq!(lines.len(), expected.len(), "{lines:?}");
    for (line, prefix) in lines.iter().zip(expected) {
        assert!(line.starts_with(prefix), "{line:?} should start with {prefix:?}");
    }
    let text = std::fs::read_to_string(&toml).expect("toml");
    assert!(text.contains("# - [0].node.maxidleconnectiontimeout: "), "the header lists it too");
    let cfg = check_config(&toml);
    // ws-peer is translated: a Go WebSocket peer on its path.
    assert!(
        cfg.peers.iter().any(|p| p.url.to_string().starts_with("netceptor+ws://127.0.0.1:")
            && p.url.to_string().ends_with("/receptor")),
        "{text}"
    );
    assert_eq!(cfg.log.level, "debug");
    let signing = cfg.work.signing.expect("signing");
    assert_eq!(signing.private_key, f.path("signing.pem"));
    assert_eq!(signing.token_expiration, Duration::from_secs(5400));
    let cmd = &cfg.work.command[0];
    assert_eq!((cmd.name.as_str(), cmd.program.as_path()), ("echo-words", Path::new("/bin/echo")));
    assert_eq!(cmd.args, ["-n", "hello world"]);
    assert!(
        cfg.control.tcp_tls && cfg.control.tcp_listen.as_deref().is_some_and(|l| l.starts_with("127.0.0.1:"))
    );
    assert!(cfg.peers[0].url.to_string().starts_with("netceptors://"));
}

#[test]
fn invalid_input_exits_1_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases: [(&str, &str); 4] = [
        ("notyaml.yaml", "- node: [\n"),
        ("scalar.yaml", "just a string\n"),
        ("badport.yaml", "- tcp-listener:\n    port: eighty\n"),
        ("bomb.yaml", &bomb()),
    ];
    for (name, text) in cases {
        let yaml = dir.path().join(name);
        std::fs::write(&yaml, text).expect("write");
        let toml = dir.path().join(format!("{name}.toml"));
        let out = Command::new(RECEPTOR)
            .args(["config", "import"])
            .arg(&yaml)
            .arg("-o")
            .arg(&toml)
            .output()
            .expect("receptor");
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(name), "the error names the file: {}", stderr(&out));
        assert!(!toml.exists(), "{name}: nothing written");
    }
}

/// A "billion laughs" file: nine levels of nine aliases each (9^9 nodes when expanded).
fn bomb() -> String {
    let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        s.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    s
}
