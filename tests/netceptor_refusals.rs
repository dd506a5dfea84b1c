//! Link refusals between Go and receptord (the spec's T3), against the real Go binary:
//! each side's `allowedpeers` refuses the other with a reject (type 3) and the refused
//! dialer keeps redialing with back-off (so the link comes up once the policy allows it,
//! here after a restart with the rule widened); a second link to a node already linked is
//! refused without disturbing the first.

mod common;

use std::time::Duration;

use common::go::{GoNode, connections, ctl};
use common::{Daemon, Spec, wait_until, with_socket};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(40);

fn status(sock: &std::path::Path) -> Value {
    serde_json::from_str(&ctl(sock, "status")).expect("status JSON")
}

fn linked(st: &Value, peer: &str) -> bool {
    connections(st).iter().any(|(id, _, _)| id == peer)
}

/// How many times `needle` appears in `log`.
fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn receptords_allowed_peers_refuses_a_go_node_which_keeps_redialing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let r =
        Daemon::start(Spec::new("rnode").extra(&control).extra("[mesh]\nallowed_peers = [\"someone\"]\n"));
    let g = GoNode::start("gonode1", false, &["--tcp-peer".into(), format!("address=127.0.0.1:{}", r.port)]);
    // Go is told (a reject, type 3), not just cut off, and redials (every 5 s).
    wait_until("Go redials after two rejections", CONVERGE, || {
        count(&g.log(), "remote node rejected the connection") >= 2
    });
    assert!(count(&r.log(), "gonode1 is not in allowed_peers") >= 2, "{}", r.log());
    assert!(!linked(&status(&sock), "gonode1"), "a refused peer is never listed");
    assert!(!linked(&g.status(), "rnode"));
}

#[test]
fn gos_allowed_peers_refuses_receptord_which_backs_off() {
    // allowedpeers is per listener in Go.
    let gport = common::go::free_port();
    let listener = ["--tcp-listener", &format!("port={gport}"), "bindaddr=127.0.0.1", "allowedpeers=someone"];
    let g = GoNode::start("gonode1", false, &listener.map(String::from));
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{gport}\"\n");
    let r = Daemon::start(Spec::new("rnode").extra(&control).extra(&peer));
    // Go logs each refusal before it sends its reject, and then races its own close
    // against that send (its log then shows "use of closed network connection" on the
    // write): the reject reaches receptord only some of the time, so Go's log is what
    // counts the refusals. Each ends receptord's link with a reason in its log.
    let refused = "rejected connection with node rnode because it is not in the allowed peers list";
    wait_until("Go refuses receptord twice", CONVERGE, || count(&g.log(), refused) >= 2);
    wait_until("receptord logs why both links ended", CONVERGE, || {
        let log = r.log();
        let causes = count(&log, "rejected the connection") + count(&log, "cause=");
        causes >= 2
    });
    // receptord's back-off (5 s, doubling): two refusals take at least one back-off, so
    // a dialer without one would have been refused hundreds of times by now.
    assert!(count(&g.log(), refused) < 10, "{}", g.log());
    assert!(!linked(&status(&sock), "gonode1"));
    assert!(!linked(&g.status(), "rnode"));
}

#[test]
fn a_second_link_to_a_linked_node_is_refused_and_the_first_stays() {
    let g = GoNode::start("gonode1", true, &[]);
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let port = g.port.expect("port");
    let twice = format!(
        "[[peers]]\nurl = \"netceptor://127.0.0.1:{port}\"\n[[peers]]\nurl = \"netceptor://localhost:{port}\"\n"
    );
    let r = Daemon::start(Spec::new("rnode").extra(&control).extra(&twice));
    wait_until("one link up", CONVERGE, || linked(&g.status(), "rnode"));
    // Both ends refuse the second link; whichever decides first closes it (Go's reject
    // may be lost to its own close race, so either end's log shows the refusal).
    wait_until("the second refused", CONVERGE, || {
        let ours = r.log();
        ours.contains("already linked to gonode1")
            || ours.contains("rejected the connection")
            || g.log().contains("a node ID we are already connected to")
    });
    let links = connections(&status(&sock)).into_iter().filter(|(id, _, _)| id == "gonode1").count();
    assert_eq!(links, 1, "exactly one link to gonode1");
    assert!(linked(&g.status(), "rnode"), "the first link stays");
}
