//! `receptor status`, `ping` and `traceroute` without `--receptor-peer`: through the local
//! daemon's control socket (`--socket` or `RECEPTOR_SOCKET`), as `work` and `run` are.

mod common;

use std::process::Command;

use common::*;

#[test]
fn status_ping_and_traceroute_use_the_local_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("sock1", dir.path());
    let d = Daemon::start(Spec::new("sock1").extra(&format!("{ctl}{CAT}")));
    let socket_arg = sock.to_str().expect("utf-8 path");

    let out =
        Command::new(RECEPTOR).args(["status", "--json", "--socket", socket_arg]).output().expect("status");
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("the status document");
    assert_eq!(doc["node_id"], "sock1", "{doc}");
    let me = doc["nodes"].as_array().expect("nodes").iter().find(|n| n["id"] == "sock1").expect("itself");
    assert_eq!(me["reachable"], true, "{doc}");
    assert!(me["work_types"].as_array().expect("types").iter().any(|w| w["name"] == "cat"), "{doc}");

    // RECEPTOR_SOCKET, and the flag before the command, as before.
    let out = Command::new(RECEPTOR).arg("status").env("RECEPTOR_SOCKET", &sock).output().expect("status");
    assert!(
        out.status.success() && stdout(&out).starts_with("Node ID: sock1\n"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out =
        Command::new(RECEPTOR).args(["--socket", socket_arg, "status", "--graph"]).output().expect("graph");
    assert!(stdout(&out).contains("\"sock1\" [label=\"sock1\\n(this view)"), "{}", stdout(&out));

    let out = Command::new(RECEPTOR)
        .args(["ping", "sock1", "-c", "2", "--socket", socket_arg])
        .output()
        .expect("ping");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().filter(|l| l.starts_with("Reply from sock1 in ")).count(),
        2,
        "{}",
        stdout(&out)
    );
    let out = Command::new(RECEPTOR)
        .args(["ping", "nowhere", "-c", "1", "--socket", socket_arg])
        .output()
        .expect("ping");
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));

    let out = Command::new(RECEPTOR)
        .args(["traceroute", "sock1", "--json", "--socket", socket_arg])
        .output()
        .expect("tr");
    assert!(out.status.success(), "{}", stderr(&out));
    let hop: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().next().expect("a hop")).expect("json");
    assert_eq!((hop["hop"].as_u64(), hop["node"].as_str()), (Some(0), Some("sock1")), "{hop}");

    // --socket is honoured: a socket that is not there is an error, not the default peer.
    let out =
        Command::new(RECEPTOR).args(["status", "--socket", "/nonexistent/r.sock"]).output().expect("status");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/r.sock"), "{}", stderr(&out));
    drop(d);
}
