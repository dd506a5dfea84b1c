//! TLS links: certificates from `receptor cert` (and from openssl, as Go Receptor users
//! make them), node identity bound to certificates, and every refusal with its log line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pki::Pki;
use common::*;

fn tls_spec<'a>(id: &'a str, pki: &Pki, cert: &str, extra: &str) -> Spec<'a> {
    let mut spec = Spec::new(id).extra(&pki.tls_toml(cert, extra)).extra(FAST_MESH);
    spec.tls = true;
    spec
}

fn tls_client(d: &Daemon, pki: &Pki, cert: &str, args: &[&str]) -> std::process::Output {
    Command::new(RECEPTOR)
        .arg("--receptor-peer")
        .arg(format!("receptors://127.0.0.1:{}", d.port))
        .args(pki.client_args(cert))
        .args(args)
        .output()
        .expect("receptor")
}

fn wait_tls_route(d: &Daemon, pki: &Pki, node: &str) {
    wait_until(&format!("TLS route to {node}"), Duration::from_secs(20), || {
        tls_client(d, pki, "ctl", &["ping", node, "-c", "1", "--timeout", "1s"]).status.success()
    });
}

#[test]
fn a_three_node_tls_mesh_runs_a_job() {
    let pki = Pki::new();
    for n in ["node1", "node2", "node3", "ctl"] {
        pki.issue(n, n);
    }
    let n1 = Daemon::start(tls_spec("node1", &pki, "node1", CAT));
    let n2 = Daemon::start(tls_spec("node2", &pki, "node2", CAT).peer(n1.port));
    let _n3 = Daemon::start(tls_spec("node3", &pki, "node3", CAT).peer(n2.port));
    wait_tls_route(&n1, &pki, "node3");
    let payload = pki.path("payload");
    std::fs::write(&payload, b"over three TLS hops\n").expect("write");
    let out = tls_client(
        &n1,
        &pki,
        "ctl",
        &["work", "submit", "cat", "--node", "node3", "--payload", payload.to_str().expect("utf8")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "over three TLS hops\n");
    // The same through a client config file instead of flags.
    let client_cfg = pki.path("client.toml");
    let text = format!(
        "peer = \"receptors://127.0.0.1:{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n",
        n1.port,
        pki.path("ctl.crt").display(),
        pki.path("ctl.key").display(),
        pki.path("ca.crt").display()
    );
    std::fs::write(&client_cfg, text).expect("write");
    let out = Command::new(RECEPTOR)
        .arg("--client-config")
        .arg(&client_cfg)
        .args(["ping", "node3", "-c", "1"])
        .output();
    let out = out.expect("receptor");
    assert!(out.status.success(), "{}", stderr(&out));
    let key_mode = std::fs::metadata(pki.path("node1.key")).expect("key").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777, 0o600);
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused() {
    let pki = Pki::new();
    pki.issue("node1", "node1");
    let other = Pki::named("another CA");
    other.issue("node2", "node2");
    let n1 = Daemon::start(tls_spec("node1", &pki, "node1", ""));
    // node2 trusts our CA but presents a certificate from another one.
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n",
        other.path("node2.crt").display(),
        other.path("node2.key").display(),
        pki.path("ca.crt").display()
    );
    let mut spec = Spec::new("node2").peer(n1.port).extra(&extra);
    spec.tls = true;
    let n2 = Daemon::start(spec);
    n1.wait_log("TLS handshake failed", Duration::from_secs(10));
    n2.wait_log("peer refused TLS: received fatal alert", Duration::from_secs(10));
}

#[test]
fn a_valid_certificate_for_another_node_is_refused_on_both_sides() {
    let pki = Pki::new();
    pki.issue("node1", "node1");
    pki.issue("node2", "node2");
    let n2 = Daemon::start(tls_spec("node2", &pki, "node2", ""));
    // "node1" presents node2's certificate (it had to be told to skip its own start-up check).
    let n1 = Daemon::start(tls_spec("node1", &pki, "node2", "skip_node_id_check = true\n").peer(n2.port));
    let why = "the peer announces node id node1 but its certificate names [\"node2\"]";
    n2.wait_log(why, Duration::from_secs(10));
    n1.wait_log(why, Duration::from_secs(10));
}

#[test]
fn plaintext_and_tls_do_not_mix() {
    let pki = Pki::new();
    pki.issue("node1", "node1");
    pki.issue("ctl", "ctl");
    let tls = Daemon::start(tls_spec("node1", &pki, "node1", ""));
    let out = receptor(&tls, &["ping", "node1", "-c", "1"]);
    assert!(!out.status.success(), "a plaintext client on a TLS port fails");
    tls.wait_log("dropped connection", Duration::from_secs(10));

    let plain = Daemon::start(Spec::new("plain"));
    let out = tls_client(&plain, &pki, "ctl", &["ping", "plain", "-c", "1"]);
    assert!(!out.status.success(), "a TLS client on a plaintext port fails");
    assert!(stderr(&out).contains("TLS handshake failed"), "{}", stderr(&out));
    plain.wait_log("dropped connection", Duration::from_secs(10));
}

#[test]
fn allowed_peers_and_pinning_refuse_with_a_reason() {
    let pki = Pki::new();
    for n in ["node1", "node2", "node3"] {
        pki.issue(n, n);
    }
    let allow = "[mesh]\nallowed_peers = [\"node2\"]\n";
    let mut spec = tls_spec("node1", &pki, "node1", "");
    spec.extra = format!("{}{allow}", pki.tls_toml("node1", ""));
    spec.tls = true;
    let n1 = Daemon::start(spec);
    let n3 = Daemon::start(tls_spec("node3", &pki, "node3", "").peer(n1.port));
    n1.wait_log("node id node3 is not in allowed_peers of node1", Duration::from_secs(10));
    n3.wait_log("not in allowed_peers", Duration::from_secs(10));

    let pin = format!("pinned_fingerprints = [\"{}\"]\n", "ab".repeat(32));
    let n2 = Daemon::start(tls_spec("node2", &pki, "node2", &pin).peer(n1.port));
    n2.wait_log("is not pinned", Duration::from_secs(10));
}

#[test]
fn work_authorization_refuses_unlisted_submitters() {
    let pki = Pki::new();
    pki.issue("node1", "node1");
    pki.issue("ctl", "ctl");
    pki.issue("ops", "ops");
    let rules = "[[work.allow]]\nsubmitters = [\"ops\"]\nwork_types = [\"cat\"]\n";
    let n1 = Daemon::start(tls_spec("node1", &pki, "node1", "").extra(&format!("{CAT}{rules}")));
    let out = tls_client(&n1, &pki, "ctl", &["work", "submit", "cat", "--node", "node1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("node node1 does not allow ctl to run \"cat\""), "{}", stderr(&out));
    n1.wait_log("work refused by authorization rules", Duration::from_secs(5));
    let out = tls_client(&n1, &pki, "ops", &["work", "submit", "cat", "--node", "node1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn bad_material_at_start_names_the_file() {
    let pki = Pki::new();
    pki.issue("node1", "node1");
    pki.issue("other", "other");
    let check = |toml: String| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("[node]\nid = \"node1\"\n{toml}")).expect("write");
        let out = Command::new(RECEPTORD).arg("--check-config").arg("-c").arg(&path).output().expect("run");
        (out.status.success(), stderr(&out))
    };
    let (ok, err) = check(pki.tls_toml("other", ""));
    assert!(!ok && err.contains("other.crt") && err.contains("not this node's ID"), "{err}");
    let (ok, err) = check(pki.tls_toml("missing", ""));
    assert!(!ok && err.contains("missing.crt"), "{err}");
    let expired = expired_cert(&pki);
    let (ok, err) = check(format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n",
        expired.display(),
        pki.path("node1.key").display(),
        pki.path("ca.crt").display()
    ));
    assert!(!ok && err.contains("expired"), "{err}");
}

/// An expired certificate for node1 (node1's key), signed by the CA.
fn expired_cert(pki: &Pki) -> PathBuf {
    let read = |n: &str| std::fs::read_to_string(pki.path(n)).expect("pem");
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")).expect("ca key");
    let ca = rcgen::CertificateParams::from_ca_cert_pem(&read("ca.crt"))
        .expect("ca")
        .self_signed(&ca_key)
        .expect("ca");
    let key = rcgen::KeyPair::from_pem(&read("node1.key")).expect("key");
    let mut params = rcgen::CertificateParams::default();
    let value = rcgen::OtherNameValue::Utf8String("node1".into());
    params.subject_alt_names.push(rcgen::SanType::OtherName((receptord::certs::NODE_ID_OID.to_vec(), value)));
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
    let path = pki.path("old.crt");
    std::fs::write(&path, cert.pem()).expect("write");
    path
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out =
        Command::new("openssl").current_dir(dir).args(args).stdin(Stdio::null()).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn an_openssl_certificate_with_the_go_receptor_san_is_accepted() {
    let pki = Pki::new();
    pki.issue("node1", "node1");
    pki.issue("ctl", "ctl");
    let dir = pki.dir.path();
    std::fs::write(pki.path("go.cnf"), "subjectAltName=otherName:1.3.6.1.4.1.2312.19.1;UTF8:node2,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n").expect("ext");
    openssl(dir, &["genrsa", "-out", "go.key", "2048"]);
    openssl(dir, &["req", "-new", "-key", "go.key", "-subj", "/CN=node2", "-out", "go.csr"]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "go.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "go.cnf",
            "-out",
            "go.crt",
        ],
    );
    let n1 = Daemon::start(tls_spec("node1", &pki, "node1", ""));
    let _n2 = Daemon::start(tls_spec("node2", &pki, "go", "").peer(n1.port));
    wait_tls_route(&n1, &pki, "node2");
}

/// SHA-256 fingerprint of the certificate a TLS port serves, via openssl s_client.
fn served_fingerprint(pki: &Pki, port: u16) -> String {
    let child = Command::new("openssl")
        .current_dir(pki.dir.path())
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "ctl.crt",
            "-key",
            "ctl.key",
            "-CAfile",
            "ca.crt",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("s_client");
    let out = child.wait_with_output().expect("wait");
    let pem = std::fs::write(pki.path("served.txt"), &out.stdout);
    assert!(pem.is_ok());
    openssl(pki.dir.path(), &["x509", "-in", "served.txt", "-noout", "-fingerprint", "-sha256"])
}

fn file_fingerprint(pki: &Pki, name: &str) -> String {
    openssl(pki.dir.path(), &["x509", "-in", name, "-noout", "-fingerprint", "-sha256"])
}

#[test]
fn reload_swaps_the_certificate_without_dropping_links() {
    let pki = Pki::new();
    for n in ["node1", "node2", "ctl"] {
        pki.issue(n, n);
    }
    let n1 = Daemon::start(tls_spec("node1", &pki, "node1", ""));
    let n2 = Daemon::start(tls_spec("node2", &pki, "node2", "").peer(n1.port));
    wait_tls_route(&n1, &pki, "node2");
    assert_eq!(served_fingerprint(&pki, n2.port), file_fingerprint(&pki, "node2.crt"));
    let old = file_fingerprint(&pki, "node2.crt");
    pki.issue("node2", "node2");
    assert_ne!(old, file_fingerprint(&pki, "node2.crt"), "a new certificate was issued");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(n2.pid() as i32), nix::sys::signal::SIGHUP)
        .expect("hup");
    n2.wait_log("TLS material reloaded", Duration::from_secs(10));
    assert_eq!(
        served_fingerprint(&pki, n2.port),
        file_fingerprint(&pki, "node2.crt"),
        "new links use the new certificate"
    );
    assert!(!n1.log().contains("link down peer=node2"), "the established link stayed up: {}", n1.log());
    wait_tls_route(&n1, &pki, "node2");

    std::fs::write(pki.path("node2.crt"), "garbage").expect("corrupt");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(n2.pid() as i32), nix::sys::signal::SIGHUP)
        .expect("hup");
    n2.wait_log("keeping the old TLS material", Duration::from_secs(10));
    wait_tls_route(&n1, &pki, "node2");
}

#[test]
fn receptorctl_works_over_the_tls_control_listener() {
    let pki = Pki::new();
    pki.issue("node1", "node1");
    pki.issue("admin", "admin");
    let work = "[[work.command]]\nname = \"echo\"\nprogram = \"/bin/echo\"\nargs = [\"over tls\"]\n";
    let control = "[control]\ntcp_listen = \"127.0.0.1:0\"\ntcp_tls = true\n";
    let n1 = Daemon::start(tls_spec("node1", &pki, "node1", &format!("{work}{control}")));
    let url = format!("tls://127.0.0.1:{}", control_port(&n1));
    let ctl = |args: &[&str]| {
        Command::new(venv_bin().join("receptorctl"))
            .env("PATH", path_with_venv())
            .args(["--socket", &url, "--rootcas"])
            .arg(pki.path("ca.crt"))
            .arg("--cert")
            .arg(pki.path("admin.crt"))
            .arg("--key")
            .arg(pki.path("admin.key"))
            .args(args)
            .output()
            .expect("receptorctl")
    };
    let out = ctl(&["status"]);
    assert!(out.status.success() && stdout(&out).contains("Node ID: node1"), "{}", stderr(&out));
    let out = ctl(&["work", "submit", "echo", "-n", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "over tls\n");
    // Without a client certificate the handshake is refused (mutual TLS by default).
    let out = Command::new(venv_bin().join("receptorctl"))
        .env("PATH", path_with_venv())
        .args(["--socket", &url, "--rootcas"])
        .arg(pki.path("ca.crt"))
        .arg("status")
        .output()
        .expect("receptorctl");
    assert!(!out.status.success());
    n1.wait_log("control TLS handshake failed", Duration::from_secs(5));
}
