//! User TLS inside netceptor streams (Go's ConnType 2) between receptord and Go Receptor
//! 1.4.0, AWX's real configuration: execution nodes serve `control-service tls=`, the
//! control node reads the advertised ConnType and submits with its `tlsclient`. With
//! `[tls]` receptord serves its control service that way (its certificate; the client's
//! must name the node it dials from, and then is who submitted for `[[work.allow]]`), and
//! dials Go services advertised with ConnType 2 with its own certificate, checking the
//! server's names the node dialed. Certificates are Go's own (`--cert-makereq`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::go::{GoNode, GoPki, ctl};
use common::{CAT, Daemon, Spec, rsa_keys, stderr, stdout, wait_until, with_socket};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(40);
const RUN: Duration = Duration::from_secs(60);
/// Go advertises its services 5 s after start and then every 60 s only (not to new
/// peers), so a receptord that links later learns them within a minute.
const GO_ADS: Duration = Duration::from_secs(90);

/// Only the Go controller `goctl` may submit `cat`: a rule an anonymous (insecure-mode)
/// session never passes.
const ONLY_GOCTL: &str = "[[work.allow]]\nsubmitters = [\"goctl\"]\nwork_types = [\"cat\"]\n";

/// A Go control node `goctl` (TLS configs `srv`/`cli` from `go_tls`) and receptord
/// `rnode` (its `[tls]` from the same CA, then `extra`) dialing it over a plain netceptor
/// link; once Go lists rnode's work types.
fn mixed(pki: &GoPki, go_tls: Vec<String>, go_extra: &[String], extra: &str) -> (GoNode, Daemon, PathBuf) {
    let mut args = go_tls;
    args.extend(go_extra.iter().cloned());
    let g = GoNode::start("goctl", true, &args);
    let (control, sock) = with_socket("rnode", pki.dir.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g.port.expect("port"));
    let spec = Spec::new("rnode").extra(&control).extra(&pki.tls_toml("rnode")).extra(&peer).extra(extra);
    let r = Daemon::start(spec);
    wait_until("goctl sees rnode's work types", CONVERGE, || {
        common::go::work_types(&g.status(), "rnode").iter().any(|w| w == "cat")
    });
    (g, r, sock)
}

/// The ConnType of `node`'s advertisement as AWX reads it (`find_node_in_mesh`: the first
/// advertisement in `status` whose NodeID is the node).
fn awx_conn_type(status: &Value, node: &str) -> Option<u64> {
    status["Advertisements"].as_array()?.iter().find(|a| a["NodeID"] == node)?["ConnType"].as_u64()
}

/// Go's TLS configs with `name`'s certificate even where it does not name the Go node's ID
/// (Go refuses that at startup unless told to skip the check).
fn go_args_any_id(pki: &GoPki, name: &str) -> Vec<String> {
    let mut args = Vec::new();
    for a in pki.go_args(name) {
        if a == "--tls-client" {
            args.push("skipreceptornamescheck=true".into());
        }
        args.push(a);
    }
    args.push("skipreceptornamescheck=true".into());
    args
}

fn payload(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let p = dir.join("payload.bin");
    std::fs::write(&p, &data).expect("payload");
    (p, data)
}

/// `receptorctl work submit --node rnode cat --tls-client cli -f …` on the Go node.
fn submit(g: &GoNode, extra: &[&str], file: &Path) -> Output {
    std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .arg("--socket")
        .arg(&g.sock)
        .args(["work", "submit", "--node", "rnode", "cat", "--tls-client", "cli", "-f"])
        .args(extra)
        .arg("--payload")
        .arg(file)
        .output()
        .expect("receptorctl")
}

fn units(sock: &Path) -> Value {
    serde_json::from_str(&ctl(sock, "work list")).expect("work list JSON")
}

fn go_units(g: &GoNode) -> Value {
    serde_json::from_str(&g.ctl("work list")).unwrap_or(Value::Null)
}

#[test]
fn a_go_controller_submits_over_user_tls_signed_and_unsigned() {
    let pki = GoPki::new();
    pki.issue("goctl", "goctl");
    pki.issue("rnode", "rnode");
    let keys = tempfile::tempdir().expect("keys");
    let (private, public) = rsa_keys(keys.path());
    let signing =
        ["--work-signing".into(), format!("privatekey={}", private.display()), "tokenexpiration=5m".into()];
    let types = format!(
        "{CAT}[[work.command]]\nname = \"signed\"\nprogram = \"cat\"\nverify_signature = true\n\
         [work.verification]\npublic_key = \"{}\"\naccept_replayable_go_tokens = true\n\
         [[work.allow]]\nsubmitters = [\"goctl\"]\nwork_types = [\"cat\", \"signed\"]\n",
        public.display()
    );
    let (g, _r, sock) = mixed(&pki, pki.go_args("goctl"), &signing, &types);
    // What AWX reads to pick its TLS client.
    assert_eq!(awx_conn_type(&g.status(), "rnode"), Some(2), "{}", g.status());

    let (file, data) = payload(pki.dir.path(), 2 << 20);
    let out = submit(&g, &[], &file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "results differ: {} bytes back of {}", out.stdout.len(), data.len());
    // The receptord unit is goctl's (the certificate's node), so [[work.allow]] let it in.
    let list = units(&sock);
    let (_, st) = list.as_object().and_then(|m| m.iter().next()).expect("a unit on rnode");
    assert_eq!(st["State"], 2, "{st}");

    // Signed (Go's RS512 token), over the same TLS streams.
    let out = std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .arg("--socket")
        .arg(&g.sock)
        .args(["work", "submit", "--node", "rnode", "signed", "--tls-client", "cli", "--signwork", "-f"])
        .arg("--payload")
        .arg(&file)
        .output()
        .expect("receptorctl");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "signed results differ");
    let unsigned = std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .arg("--socket")
        .arg(&g.sock)
        .args(["work", "submit", "--node", "rnode", "signed", "--tls-client", "cli", "--no-payload"])
        .output()
        .expect("receptorctl");
    let said = format!("{}{}", stdout(&unsigned), stderr(&unsigned));
    assert!(said.contains("signature"), "unsigned work must be refused: {said}");
}

/// The same [[work.allow]] rule refuses goctl when the service runs Go's insecure mode
/// (`control_tls = false`): there, a session proves no node, so the rule's "goctl" cannot
/// match it. Proves the identity of a TLS session is what admits it.
#[test]
fn insecure_mode_sessions_prove_no_node() {
    let pki = GoPki::new();
    pki.issue("goctl", "goctl");
    pki.issue("rnode", "rnode");
    let extra = format!("{CAT}{ONLY_GOCTL}[netceptor]\ncontrol_tls = false\n");
    let (g, _r, _sock) = mixed(&pki, pki.go_args("goctl"), &[], &extra);
    assert_eq!(awx_conn_type(&g.status(), "rnode"), Some(1), "{}", g.status());
    let out = common::receptorctl(&g.sock, &["work", "submit", "--node", "rnode", "cat", "--no-payload"]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("not allowed") || said.contains("without a certificate"), "{said}");
}

/// Go's remote unit, once its start failed (or never happened), with what it says.
fn failed_start(g: &GoNode) -> Option<String> {
    let list = go_units(g);
    let (_, st) = list.as_object()?.iter().next()?;
    (st["State"] == 3).then(|| st["Detail"].as_str().unwrap_or_default().to_owned())
}

/// Submits `cat` to rnode from goctl with the TLS client `cli`, which rnode must refuse in
/// the handshake: Go fails a unit whose dial ends in a TLS alert (CRYPTO_ERROR), as it
/// does between Go nodes, and nothing runs on rnode.
fn refused(g: &GoNode, sock: &Path) {
    let out = common::receptorctl(
        &g.sock,
        &["work", "submit", "--node", "rnode", "cat", "--tls-client", "cli", "--no-payload"],
    );
    assert!(out.status.success(), "Go creates its local unit: {}", stderr(&out));
    wait_until("goctl's unit fails to start", RUN, || failed_start(g).is_some());
    let detail = failed_start(g).unwrap_or_default();
    assert!(detail.contains("CRYPTO_ERROR"), "{detail}");
    assert!(units(sock).as_object().is_some_and(|m| m.is_empty()), "nothing ran on rnode");
}

#[test]
fn a_client_certificate_for_another_node_is_refused() {
    let pki = GoPki::new();
    pki.issue("rnode", "rnode");
    // goctl presents a certificate from the right CA, naming othernode.
    pki.issue("other", "othernode");
    let (g, _r, sock) = mixed(&pki, go_args_any_id(&pki, "other"), &[], CAT);
    refused(&g, &sock);
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let pki = GoPki::new();
    pki.issue("rnode", "rnode");
    let ca = pki.path("ca.crt");
    let nocert = vec!["--tls-client".into(), "name=cli".into(), format!("rootcas={}", ca.display())];
    let (g, _r, sock) = mixed(&pki, nocert, &[], CAT);
    refused(&g, &sock);
}

/// A Go execution node `goexec` serving its control service with user TLS (`tls=srv`,
/// its certificate `cert`) and a `gocat` work type, with receptord `rnode` linked to it;
/// once rnode has goexec's advertisement.
fn go_exec(pki: &GoPki, cert: &str) -> (GoNode, Daemon, PathBuf) {
    let mut args = go_args_any_id(pki, cert);
    args.extend(["--work-command".into(), "worktype=gocat".into(), "command=cat".into()]);
    let g = GoNode::start_control("goexec", true, Some("srv"), &args);
    let (control, sock) = with_socket("rnode", pki.dir.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g.port.expect("port"));
    let r = Daemon::start(Spec::new("rnode").extra(&control).extra(&pki.tls_toml("rnode")).extra(&peer));
    wait_until("rnode has goexec's advertisement", GO_ADS, || {
        let st: Value = serde_json::from_str(&ctl(&sock, "status")).unwrap_or_default();
        awx_conn_type(&st, "goexec").is_some()
    });
    (g, r, sock)
}

fn submit_to_go(sock: &Path, file: &Path) -> Output {
    std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .arg("--socket")
        .arg(sock)
        .args(["work", "submit", "--node", "goexec", "gocat", "-f", "--payload"])
        .arg(file)
        .output()
        .expect("receptorctl")
}

/// receptord → a Go execution node serving `control-service tls=srv`: receptord reads the
/// ConnType 2 advertisement and dials with its `[tls]` certificate; work round trip.
#[test]
fn receptord_runs_work_on_a_go_node_over_user_tls() {
    let pki = GoPki::new();
    pki.issue("goexec", "goexec");
    pki.issue("rnode", "rnode");
    let (g, _r, sock) = go_exec(&pki, "goexec");
    let st: Value = serde_json::from_str(&ctl(&sock, "status")).expect("status");
    assert_eq!(awx_conn_type(&st, "goexec"), Some(2), "{st}");
    let (file, data) = payload(pki.dir.path(), 2 << 20);
    let out = submit_to_go(&sock, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "results differ: {} bytes back of {}", out.stdout.len(), data.len());
    let list = go_units(&g);
    let (_, st) = list.as_object().and_then(|m| m.iter().next()).expect("a unit on goexec");
    assert_eq!(st["State"], 2, "{st}");
}

/// A Go server certificate (from the right CA) naming another node: receptord refuses it
/// in the handshake and fails the unit, saying why.
#[test]
fn a_go_server_certificate_for_another_node_is_refused() {
    let pki = GoPki::new();
    pki.issue("rnode", "rnode");
    pki.issue("wrong", "notgoexec");
    let (g, _r, sock) = go_exec(&pki, "wrong");
    let (file, _) = payload(pki.dir.path(), 1024);
    let out = submit_to_go(&sock, &file);
    assert!(!out.status.success(), "the submission fails: {}", stderr(&out));
    let list = units(&sock);
    let (_, st) = list.as_object().and_then(|m| m.iter().next()).expect("a unit on rnode");
    let detail = st["Detail"].as_str().unwrap_or_default();
    assert_eq!(st["State"], 3, "{st}");
    assert!(detail.contains("notgoexec") && detail.contains("not node goexec"), "{detail}");
    assert!(go_units(&g).as_object().is_some_and(|m| m.is_empty()), "nothing ran on goexec");
}
