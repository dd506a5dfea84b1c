//! The AWX path across Go and receptord: on a Go Receptor 1.4.0 control node, the
//! unmodified `receptorctl` submits work to a receptord node (`work submit --node <receptord
//! node>`), which serves it over netceptor streams (QUIC) with its own control service and
//! admission; results come back byte-identical; release and cancel reach the receptord
//! unit; signed work (Go's `--work-signing`, RS512 JWT) passes `verify_signature`, unsigned
//! work is refused with Go's own error.

mod common;

use std::path::Path;
use std::time::Duration;

use common::go::{GoNode, connections, ctl};
use common::{CAT, Daemon, Spec, receptorctl, rsa_keys, stderr, stdout, wait_until, with_socket};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(40);
const RUN: Duration = Duration::from_secs(60);

/// A Go control node with a listener, and receptord (`rnode`) dialing it with `extra`
/// config; returns both once Go lists receptord's work types.
fn mixed(go_extra: &[String], extra: &str) -> (GoNode, Daemon, tempfile::TempDir) {
    let g = GoNode::start("goctl", true, go_extra);
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, _) = with_socket("rnode", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g.port.expect("port"));
    let r = Daemon::start(Spec::new("rnode").extra(&control).extra(&peer).extra(extra));
    wait_until("goctl sees rnode's work types", CONVERGE, || {
        common::go::work_types(&g.status(), "rnode").iter().any(|w| w == "cat")
    });
    (g, r, tmp)
}

fn go_unit(g: &GoNode, unit: &str) -> Value {
    serde_json::from_str(&g.ctl(&format!("work status {unit}"))).unwrap_or(Value::Null)
}

fn r_units(sock: &Path) -> Value {
    serde_json::from_str(&ctl(sock, "work list")).expect("work list JSON")
}

fn payload(dir: &Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let p = dir.join("payload.bin");
    std::fs::write(&p, &data).expect("payload");
    (p, data)
}

#[test]
fn receptorctl_on_a_go_node_runs_work_on_receptord() {
    let (g, _r, tmp) = mixed(&[], CAT);
    let sock = tmp.path().join("rnode.sock");
    let (file, data) = payload(tmp.path(), 4 << 20);
    // receptorctl's AWX sequence: submit and follow (-f) through the Go node.
    let out = std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .args(["--socket"])
        .arg(&g.sock)
        .args(["work", "submit", "--node", "rnode", "cat", "-f", "--payload"])
        .arg(&file)
        .output()
        .expect("receptorctl");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "results differ: {} bytes back of {}", out.stdout.len(), data.len());

    // The unit on Go mirrors the one on receptord; results again from offset 0, then release.
    let list: Value = serde_json::from_str(&g.ctl("work list")).expect("list");
    let (unit, st) = list.as_object().and_then(|m| m.iter().next()).expect("a unit on goctl");
    assert_eq!(st["State"], 2, "{st}");
    let remote = st["ExtraData"]["RemoteUnitID"].as_str().expect("remote unit").to_owned();
    assert_eq!(r_units(&sock)[&remote]["State"], 2, "receptord ran it");
    let again = receptorctl(&g.sock, &["work", "results", unit]);
    assert!(again.stdout == data, "results again: {}", stderr(&again));
    let rel = receptorctl(&g.sock, &["work", "release", unit]);
    assert!(rel.status.success(), "{}", stderr(&rel));
    wait_until("the receptord unit released", RUN, || r_units(&sock).get(&remote).is_none());
}

#[test]
fn cancel_from_go_reaches_the_receptord_unit() {
    let sleeper = "[[work.command]]\nname = \"sleep\"\nprogram = \"sleep\"\nargs = [\"120\"]\n";
    let (g, _r, tmp) = mixed(&[], &format!("{CAT}{sleeper}"));
    let sock = tmp.path().join("rnode.sock");
    let out = receptorctl(&g.sock, &["work", "submit", "--node", "rnode", "sleep", "--no-payload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = stdout(&out).split_whitespace().last().expect("unit id").to_owned();
    wait_until("the unit running on receptord", RUN, || go_unit(&g, &unit)["State"] == 1);
    let remote = go_unit(&g, &unit)["ExtraData"]["RemoteUnitID"].as_str().expect("remote").to_owned();
    let c = receptorctl(&g.sock, &["work", "cancel", &unit]);
    assert!(c.status.success(), "{}", stderr(&c));
    wait_until("receptord's unit canceled", RUN, || {
        let st = &r_units(&sock)[&remote]["State"];
        *st == 3 || *st == 4
    });
}

#[test]
fn signed_work_from_go_passes_verification_and_unsigned_is_refused() {
    let keys = tempfile::tempdir().expect("keys");
    let (private, public) = rsa_keys(keys.path());
    let go =
        ["--work-signing".into(), format!("privatekey={}", private.display()), "tokenexpiration=5m".into()];
    let verify = format!(
        "[[work.command]]\nname = \"cat\"\nprogram = \"cat\"\nverify_signature = true\n\
         [work.verification]\npublic_key = \"{}\"\naccept_replayable_go_tokens = true\n",
        public.display()
    );
    let (g, _r, tmp) = mixed(&go, &verify);
    let (file, data) = payload(tmp.path(), 256 << 10);
    let out = std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .arg("--socket")
        .arg(&g.sock)
        .args(["work", "submit", "--node", "rnode", "cat", "--signwork", "-f", "--payload"])
        .arg(&file)
        .output()
        .expect("receptorctl");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "signed results differ");
    let unsigned = receptorctl(&g.sock, &["work", "submit", "--node", "rnode", "cat", "--no-payload"]);
    let said = format!("{}{}", stdout(&unsigned), stderr(&unsigned));
    assert!(said.contains("signature"), "unsigned work must be refused: {said}");
    // The link stayed up through all of it.
    assert!(connections(&g.status()).iter().any(|(n, _, _)| n == "rnode"));
}

/// The reverse direction: receptorctl on a receptord node submits to a Go execution node
/// (receptord's control service → a remote unit → Go's control service over a netceptor
/// stream); results come back byte-identical, and release reaches the Go unit.
#[test]
fn receptord_runs_work_on_a_go_node() {
    let g = GoNode::start(
        "goexec",
        true,
        &["--work-command".into(), "worktype=gocat".into(), "command=cat".into()],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g.port.expect("port"));
    let _r = Daemon::start(Spec::new("rnode").extra(&control).extra(&peer));
    wait_until("rnode reaches goexec", CONVERGE, || ctl(&sock, "ping goexec").contains("\"Success\":true"));

    let (file, data) = payload(tmp.path(), 4 << 20);
    let out = std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .arg("--socket")
        .arg(&sock)
        .args(["work", "submit", "--node", "goexec", "gocat", "-f", "--payload"])
        .arg(&file)
        .output()
        .expect("receptorctl");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "results differ: {} bytes back of {}", out.stdout.len(), data.len());

    // The Go node ran it as an ordinary unit; receptord's local unit mirrors it.
    let list: Value = serde_json::from_str(&g.ctl("work list")).expect("list");
    let (go_unit_id, st) = list.as_object().and_then(|m| m.iter().next()).expect("a unit on goexec");
    assert_eq!(st["State"], 2, "{st}");
    let local = r_units(&sock);
    let (unit, lst) = local.as_object().and_then(|m| m.iter().next()).expect("a unit on rnode");
    assert_eq!(lst["ExtraData"]["RemoteUnitID"], go_unit_id.as_str(), "{lst}");
    let again = receptorctl(&sock, &["work", "results", unit]);
    assert!(again.stdout == data, "results again: {}", stderr(&again));
    let rel = receptorctl(&sock, &["work", "release", unit]);
    assert!(rel.status.success(), "{}", stderr(&rel));
    wait_until("the Go unit released", RUN, || {
        go_unit(&g, go_unit_id).is_null() || !g.ctl("work list").contains(go_unit_id.as_str())
    });
}
