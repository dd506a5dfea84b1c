//! `work submit tlsclient=` on receptord as AWX's control node uses it: AWX reads the
//! ConnType of an execution node's control service and, for ConnType 2, submits with the
//! name of its TLS client config. receptord has one identity, `[tls]`, so any name means
//! "authenticate every stream of this unit with [tls]": a Go execution node serving its
//! control service with TLS runs the unit; one in insecure mode is refused in the
//! handshake, before anything runs there, whatever it advertises; a receptord without
//! `[tls]` refuses the submission, saying so. The requirement is part of the unit's
//! record, so it holds after a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::go::{GoNode, GoPki, ctl};
use common::{CAT, Daemon, Spec, raw_session, stderr, stdout, wait_until, with_socket};
use serde_json::Value;

const RUN: Duration = Duration::from_secs(60);
/// Go advertises its services 5 s after start and then every 60 s.
const GO_ADS: Duration = Duration::from_secs(90);

/// A Go execution node `goexec` with a `gocat` work type, its control service served
/// with user TLS (`tls=srv`, Go's ConnType 2, AWX's configuration) when `tls`, in Go's
/// insecure mode otherwise.
fn go_exec(pki: &GoPki, tls: bool) -> GoNode {
    let mut args = pki.go_args("goexec");
    args.extend(["--work-command".into(), "worktype=gocat".into(), "command=cat".into()]);
    GoNode::start_control("goexec", true, tls.then_some("srv"), &args)
}

/// receptord `rnode` (with `[tls]` from the same CA when `tls`) dialing `port` with a
/// netceptor link.
fn rnode(pki: &GoPki, port: u16, tls: bool) -> (Daemon, PathBuf) {
    let (control, sock) = with_socket("rnode", pki.dir.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{port}\"\n");
    let tls = if tls { pki.tls_toml("rnode") } else { String::new() };
    (Daemon::start(Spec::new("rnode").extra(&control).extra(&tls).extra(&peer).extra(CAT)), sock)
}

fn advertised(sock: &Path, node: &str) -> Option<u64> {
    let st: Value = serde_json::from_str(&ctl(sock, "status")).ok()?;
    st["Advertisements"].as_array()?.iter().find(|a| a["NodeID"] == node)?["ConnType"].as_u64()
}

fn payload(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let p = dir.join("payload.bin");
    std::fs::write(&p, &data).expect("payload");
    (p, data)
}

/// `receptorctl work submit --node goexec --tls-client anything gocat …` on rnode.
fn submit(sock: &Path, extra: &[&str], file: &Path) -> Output {
    std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .arg("--socket")
        .arg(sock)
        .args(["work", "submit", "--node", "goexec", "--tls-client", "anything", "gocat"])
        .args(extra)
        .arg("--payload")
        .arg(file)
        .output()
        .expect("receptorctl")
}

/// rnode's one unit, with its status.
fn the_unit(sock: &Path) -> (String, Value) {
    let list: Value = serde_json::from_str(&ctl(sock, "work list")).expect("work list JSON");
    let (id, st) = list.as_object().and_then(|m| m.iter().next()).expect("a unit on rnode");
    (id.clone(), st.clone())
}

fn go_ran_nothing(g: &GoNode) -> bool {
    serde_json::from_str::<Value>(&g.ctl("work list")).ok().and_then(|v| v.as_object().map(|m| m.is_empty()))
        == Some(true)
}

/// Waits for rnode's unit to fail; its detail.
fn failed_detail(sock: &Path) -> String {
    wait_until("rnode's unit fails", RUN, || the_unit(sock).1["State"] == 3);
    the_unit(sock).1["Detail"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_tlsclient_unit_runs_on_a_go_node_serving_tls() {
    let pki = GoPki::new();
    pki.issue("goexec", "goexec");
    pki.issue("rnode", "rnode");
    let g = go_exec(&pki, true);
    let (_r, sock) = rnode(&pki, g.port.expect("port"), true);
    wait_until("rnode has goexec's advertisement", GO_ADS, || advertised(&sock, "goexec").is_some());
    let (file, data) = payload(pki.dir.path(), 2 << 20);
    let out = submit(&sock, &["-f"], &file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "results differ: {} bytes back of {}", out.stdout.len(), data.len());
    let (_, st) = the_unit(&sock);
    assert_eq!(st["State"], 2, "{st}");
    assert_eq!(st["ExtraData"]["TLSClient"], "anything", "{st}");

    // A secret goes to a server the unit's TLS authenticated (the raw protocol, as AWX
    // sends it); without tlsclient the same submission is refused over plain links.
    let secret = |tls: &str| {
        let req = format!(
            "{{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"goexec\",\"worktype\":\"gocat\",\
             \"tlsclient\":\"{tls}\",\"secret_key\":\"s3cret\"}}\nhello"
        );
        raw_session(&sock, req.as_bytes(), 1).join("")
    };
    let plain = secret("");
    assert!(plain.starts_with("ERROR") && plain.contains("secret"), "{plain}");
    let sent = secret("anything");
    assert!(sent.contains("Work unit created"), "{sent}");
}

#[test]
fn a_tlsclient_unit_is_refused_by_a_go_node_in_insecure_mode() {
    let pki = GoPki::new();
    pki.issue("goexec", "goexec");
    pki.issue("rnode", "rnode");
    let g = go_exec(&pki, false);
    let (_r, sock) = rnode(&pki, g.port.expect("port"), true);
    wait_until("rnode has goexec's advertisement", GO_ADS, || advertised(&sock, "goexec").is_some());
    assert_eq!(advertised(&sock, "goexec"), Some(1), "Go's insecure mode");
    let (file, _) = payload(pki.dir.path(), 1024);
    let out = submit(&sock, &["-f"], &file);
    assert!(!out.status.success(), "the submission fails: {}", stdout(&out));
    let detail = failed_detail(&sock);
    assert!(
        detail.contains("must be reached with TLS (tlsclient)") && detail.contains("insecure mode"),
        "{detail}"
    );
    assert!(go_ran_nothing(&g), "nothing ran on goexec");
}

#[test]
fn tlsclient_without_tls_is_refused_naming_it() {
    let pki = GoPki::new();
    pki.issue("goexec", "goexec");
    let g = go_exec(&pki, false);
    // With a netceptor plane, and without one (native mesh only).
    let (_r, sock) = rnode(&pki, g.port.expect("port"), false);
    let dir = tempfile::tempdir().expect("tempdir");
    let (control, native_sock) = with_socket("native", dir.path());
    let _n = Daemon::start(Spec::new("native").extra(&control).extra(CAT));
    let (file, _) = payload(pki.dir.path(), 16);
    for sock in [&sock, &native_sock] {
        let out = submit(sock, &[], &file);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!out.status.success(), "{said}");
        assert!(said.contains("tlsclient=anything") && said.contains("no [tls] section"), "{said}");
        assert!(ctl(sock, "work list").trim() == "{}", "no unit was created");
    }
    assert!(go_ran_nothing(&g));
}

/// The requirement is in the unit's record: a unit waiting for goexec across a restart of
/// rnode is still refused by goexec in insecure mode once goexec comes up (without the
/// record, the restarted rnode would dial insecurely and the unit would run there).
#[test]
fn the_requirement_survives_a_restart() {
    let pki = GoPki::new();
    pki.issue("goexec", "goexec");
    pki.issue("rnode", "rnode");
    let mut g = go_exec(&pki, false);
    g.kill();
    let (mut r, sock) = rnode(&pki, g.port.expect("port"), true);
    let (file, _) = payload(pki.dir.path(), 1024);
    let out = submit(&sock, &[], &file);
    assert!(out.status.success(), "created while goexec is away: {}", stderr(&out));
    assert_eq!(the_unit(&sock).1["State"], 0, "waiting for goexec");
    r.restart();
    assert_eq!(the_unit(&sock).1["ExtraData"]["TLSClient"], "anything");
    g.restart();
    let detail = failed_detail(&sock);
    assert!(detail.contains("must be reached with TLS (tlsclient)"), "{detail}");
    assert!(go_ran_nothing(&g), "nothing ran on goexec");
}

/// With `[tls] e2e_streams = false` native streams are not authenticated end to end, so
/// a `tlsclient` unit to a node the native plane reaches is refused rather than sent over
/// them.
#[test]
fn tlsclient_without_end_to_end_streams_is_refused() {
    let pki = GoPki::new();
    pki.issue("rnode", "rnode");
    let other = Daemon::start(Spec::new("other").extra(CAT));
    let (control, sock) = with_socket("rnode", pki.dir.path());
    let tls = format!("{}e2e_streams = false\n", pki.tls_toml("rnode"));
    let _r = Daemon::start(Spec::new("rnode").peer(other.port).extra(&control).extra(&tls).extra(CAT));
    wait_until("rnode routes to other", RUN, || {
        let st: Value = serde_json::from_str(&ctl(&sock, "status")).unwrap_or_default();
        st["RoutingTable"].get("other").is_some()
    });
    let (file, _) = payload(pki.dir.path(), 16);
    let out = common::receptorctl(
        &sock,
        &[
            "work",
            "submit",
            "--node",
            "other",
            "--tls-client",
            "anything",
            "cat",
            "--payload",
            &file.to_string_lossy(),
        ],
    );
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("tlsclient=anything") && said.contains("e2e_streams = false"), "{said}");
    assert!(ctl(&sock, "work list").trim() == "{}", "no unit was created");
}
