//! A node ID taken twice across the two protocols (issue 22, the spec's T5): a Go node
//! and a receptord node with the same ID join one netceptor mesh through different hubs.
//! As in an all-Go mesh, the older incarnation accuses the newer one in its routing
//! updates and the newer one leaves, whichever implementation each is; the older keeps
//! its place and the mesh still routes to it. A Go node leaves by exiting; receptord
//! withdraws its netceptor plane and keeps its native links and work (the accusation is
//! an unauthenticated routing update, which must not be able to stop a whole daemon).

mod common;

use std::time::{Duration, Instant};

use common::go::{GoNode, connections, ctl};
use common::{Daemon, Spec, wait_until, with_socket};
use serde_json::Value;

/// Go floods updates on change and every 10 s: detection across two hubs can take a
/// couple of rounds.
const CONVERGE: Duration = Duration::from_secs(60);

fn ping_ok(reply: &str) -> bool {
    serde_json::from_str::<Value>(reply).is_ok_and(|v| v["Success"] == true)
}

/// Two linked Go hubs; the second dials the first.
fn hubs() -> (GoNode, GoNode) {
    let a = GoNode::start("huba", true, &[]);
    let b = GoNode::start(
        "hubb",
        true,
        &["--tcp-peer".into(), format!("address=127.0.0.1:{}", a.port.expect("port"))],
    );
    wait_until("the hubs route to each other", CONVERGE, || a.status()["RoutingTable"]["hubb"] == "hubb");
    (a, b)
}

/// Epochs compare by start second (`unix_s << 24 | rand24`): the second incarnation must
/// start in a later second than the first.
fn next_second(after: Instant) {
    while after.elapsed() < Duration::from_millis(1100) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_newer_receptord_with_a_go_nodes_id_leaves_the_go_mesh_and_keeps_its_native_links() {
    let (a, b) = hubs();
    let started = Instant::now();
    let mut go_dup = GoNode::start(
        "dup",
        false,
        &["--tcp-peer".into(), format!("address=127.0.0.1:{}", a.port.expect("port"))],
    );
    wait_until("hubb routes to the Go dup", CONVERGE, || b.status()["RoutingTable"]["dup"] == "huba");
    next_second(started);

    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("dup", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", b.port.expect("port"));
    let mut r = Daemon::start(Spec::new("dup").extra(&control).extra(&peer));
    let native = Daemon::start(Spec::new("rnative").peer(r.port));
    r.wait_log("another node with ID dup started after this one", CONVERGE);
    r.wait_log("leaves the Go Receptor (netceptor) mesh", CONVERGE);
    wait_until("hubb drops its link to receptord", CONVERGE, || {
        !connections(&b.status()).iter().any(|(id, _, _)| id == "dup")
    });

    let child = r.child.as_mut().expect("running");
    assert!(child.try_wait().ok().flatten().is_none(), "receptord keeps running: {}", r.log());
    wait_until("the native plane still pings", CONVERGE, || ping_ok(&ctl(&sock, "ping rnative")));
    assert!(!go_dup.exited(), "the older Go node keeps running: {}", go_dup.log());
    wait_until("hubb pings the Go dup", CONVERGE, || ping_ok(&b.ctl("ping dup")));
    // It does not come back on its own: no redial, and hubb never lists it again.
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(8) {
        assert!(!connections(&b.status()).iter().any(|(id, _, _)| id == "dup"), "receptord redialed");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(native);
}

#[test]
fn a_newer_go_node_with_a_receptord_id_stops_and_receptord_stays() {
    let (a, b) = hubs();
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("dup", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", a.port.expect("port"));
    let started = Instant::now();
    let mut r = Daemon::start(Spec::new("dup").extra(&control).extra(&peer));
    wait_until("hubb routes to receptord's dup", CONVERGE, || b.status()["RoutingTable"]["dup"] == "huba");
    next_second(started);

    let mut go_dup = GoNode::start(
        "dup",
        false,
        &["--tcp-peer".into(), format!("address=127.0.0.1:{}", b.port.expect("port"))],
    );
    wait_until("the newer Go node stops", CONVERGE, || go_dup.exited());

    let child = r.child.as_mut().expect("running");
    assert!(child.try_wait().ok().flatten().is_none(), "the older receptord keeps running: {}", r.log());
    wait_until("hubb pings receptord's dup", CONVERGE, || ping_ok(&b.ctl("ping dup")));
    wait_until("receptord still pings hubb", CONVERGE, || ping_ok(&ctl(&sock, "ping hubb")));
}
