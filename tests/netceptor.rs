//! receptord in Go Receptor meshes (the netceptor plane), against the real Go Receptor
//! 1.4.0 binary: links in both directions on the same ports native peers use, Go's view
//! of receptord (`status`: connections, routes, work types), ping across mixed lines and
//! through a receptord hop, Go's idle timeout and a Go node restarting.

mod common;

use std::time::Duration;

use common::fakego::FakeGo;
use common::go::{GoNode, connections, ctl, work_types};
use common::{CAT, Daemon, Spec, wait_until, with_socket};
use serde_json::Value;

/// Go learns distant nodes only from their periodic updates (every 10 s): convergence
/// across a hop takes up to that long.
const CONVERGE: Duration = Duration::from_secs(40);

fn ping_ok(reply: &str) -> bool {
    serde_json::from_str::<Value>(reply).is_ok_and(|v| v["Success"] == true)
}

fn status(sock: &std::path::Path) -> Value {
    serde_json::from_str(&ctl(sock, "status")).expect("status JSON")
}

fn linked(st: &Value, peer: &str) -> bool {
    connections(st).iter().any(|(id, cost, _)| id == peer && *cost == 1.0)
}

#[test]
fn receptord_joins_a_go_mesh_both_ways_on_shared_ports() {
    let g1 = GoNode::start(
        "gonode1",
        true,
        &["--work-command".into(), "worktype=gocat".into(), "command=cat".into()],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g1.port.expect("port"));
    let r = Daemon::start(Spec::new("rnode").extra(CAT).extra(&control).extra(&peer));
    // A Go node dials receptord's receptor:// listener, and so does a native node.
    let g2 = GoNode::start("gonode2", false, &["--tcp-peer".into(), format!("address=127.0.0.1:{}", r.port)]);
    let native = Daemon::start(Spec::new("rnative").peer(r.port));

    // Go's view: receptord is linked with cost 1, routed, and advertises its work types.
    wait_until("gonode1 lists rnode", CONVERGE, || linked(&g1.status(), "rnode"));
    wait_until("gonode1 routes to rnode", CONVERGE, || g1.status()["RoutingTable"]["rnode"] == "rnode");
    wait_until("rnode's work types on gonode1", CONVERGE, || work_types(&g1.status(), "rnode") == ["cat"]);
    wait_until("gonode2 lists rnode", CONVERGE, || linked(&g2.status(), "rnode"));

    // receptord's view: both Go links and the native one, each with its protocol.
    wait_until("rnode lists all three links", CONVERGE, || {
        let c = connections(&status(&sock));
        let has = |id: &str, proto: &str| c.iter().any(|(n, _, p)| n == id && p.as_deref() == Some(proto));
        has("gonode1", "netceptor") && has("gonode2", "netceptor") && has("rnative", "receptor")
    });
    wait_until("gonode1's work types on rnode", CONVERGE, || {
        work_types(&status(&sock), "gonode1") == ["gocat"]
    });

    // Ping: Go → receptord, Go → Go through the receptord hop, receptord → Go.
    wait_until("gonode2 pings rnode", CONVERGE, || ping_ok(&g2.ctl("ping rnode")));
    wait_until("gonode2 pings gonode1 through rnode", CONVERGE, || ping_ok(&g2.ctl("ping gonode1")));
    wait_until("gonode1 pings gonode2 through rnode", CONVERGE, || ping_ok(&g1.ctl("ping gonode2")));
    assert!(ping_ok(&ctl(&sock, "ping gonode1")), "receptord pings a Go node");
    let st = g2.status();
    assert_eq!(st["RoutingTable"]["gonode1"], "rnode", "Go routes through receptord: {st}");
    assert_eq!(status(&sock)["RoutingTable"]["gonode2"], "gonode2");

    // `receptor status` (JSON, graph, table) shows the Go nodes and which links are netceptor.
    let out = common::receptor(&r, &["status", "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let node = |id: &str| doc["nodes"].as_array().and_then(|n| n.iter().find(|n| n["id"] == id).cloned());
    assert_eq!(node("gonode1").expect("gonode1 listed")["protocol"], "netceptor", "{doc}");
    assert_eq!(node("rnative").expect("rnative listed")["protocol"], "receptor", "{doc}");
    assert!(node("gonode1").expect("gonode1")["work_types"][0]["name"] == "gocat", "{doc}");
    let links = doc["links"].as_array().expect("links");
    assert!(
        links.iter().any(|l| l["a"] == "gonode1" && l["b"] == "rnode" && l["protocol"] == "netceptor"),
        "{doc}"
    );
    assert!(
        links.iter().any(|l| l["protocol"] == "receptor" && (l["a"] == "rnative" || l["b"] == "rnative"))
    );
    let graph = common::stdout(&common::receptor(&r, &["status", "--graph"]));
    assert!(graph.contains("\"gonode1\" -- \"rnode\"") && graph.contains("(netceptor)"), "{graph}");
    let table = common::stdout(&common::receptor(&r, &["status"]));
    assert!(table.contains("Go Receptor nodes") && table.contains("gonode2"), "{table}");
    drop(native);
}

#[test]
fn link_outlives_gos_idle_timeout_and_a_go_restart() {
    let mut g1 = GoNode::start("gonode1", true, &[]);
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g1.port.expect("port"));
    let _r =
        Daemon::start(Spec::new("rnode").extra(&control).extra(&peer).extra("[netceptor]\naccept = false\n"));
    wait_until("gonode1 lists rnode", CONVERGE, || linked(&g1.status(), "rnode"));
    // Go closes a link silent for 21 s: the link must hold past that, on both ends.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(25) {
        assert!(linked(&g1.status(), "rnode"), "Go dropped the link after {:?}", start.elapsed());
        assert!(linked(&status(&sock), "gonode1"), "receptord dropped the link after {:?}", start.elapsed());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(!g1.log().contains("Connection with rnode closed"), "{}", g1.log());
    // Go restarts (a new epoch on the same port): receptord redials and Go lists it again.
    g1.restart();
    wait_until("rnode back on the restarted gonode1", CONVERGE, || linked(&g1.status(), "rnode"));
    wait_until("gonode1 pings rnode again", CONVERGE, || ping_ok(&g1.ctl("ping rnode")));
}

#[test]
fn hostile_netceptor_peers_are_refused_and_cut_off() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let r = Daemon::start(Spec::new("rnode").extra(&control));

    // A peer claiming receptord's own node ID gets a reject and is closed.
    let mut liar = FakeGo::connect(r.port);
    liar.update("rnode", "rnode", 1, "");
    let types = liar.types_until_closed();
    assert_eq!(types.last(), Some(&3), "a reject before the close: {types:?}");

    // A peer that links and then sends an empty frame loses its link, nothing else.
    let mut evil = FakeGo::connect(r.port);
    evil.update("evil", "evil", 1, "");
    wait_until("rnode lists evil", CONVERGE, || {
        connections(&status(&sock)).iter().any(|(n, _, p)| n == "evil" && p.as_deref() == Some("netceptor"))
    });
    evil.send(&[]);
    evil.types_until_closed();
    wait_until("evil's link gone", CONVERGE, || {
        !connections(&status(&sock)).iter().any(|(n, _, _)| n == "evil")
    });

    // Garbage that is neither protocol stays on the native path and is refused there.
    let mut junk = FakeGo::connect(r.port);
    {
        use std::io::Write;
        junk.0.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    }
    let types = junk.types_until_closed();
    assert!(!types.contains(&1), "no netceptor routing update sent to garbage: {types:?}");
    assert!(status(&sock)["NodeID"] == "rnode", "the daemon still serves");
}

fn hops(reply: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(reply).unwrap_or(Value::Null);
    (0..30).map_while(|i| v.get(i.to_string()).and_then(|h| h["From"].as_str()).map(str::to_owned)).collect()
}

/// Traceroute across a mixed line rnode – gonode1 – gonode2, both ways: each hop named
/// as Go names it (the origin is hop 0).
#[test]
fn traceroute_across_go_nodes_both_ways() {
    let g1 = GoNode::start("gonode1", true, &[]);
    let g2 = GoNode::start(
        "gonode2",
        false,
        &["--tcp-peer".into(), format!("address=127.0.0.1:{}", g1.port.expect("port"))],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g1.port.expect("port"));
    let _r = Daemon::start(Spec::new("rnode").extra(&control).extra(&peer));
    let want = ["rnode", "gonode1", "gonode2"];
    wait_until("rnode traces gonode2", CONVERGE, || hops(&ctl(&sock, "traceroute gonode2")) == want);
    let back = ["gonode2", "gonode1", "rnode"];
    wait_until("gonode2 traces rnode", CONVERGE, || hops(&g2.ctl("traceroute rnode")) == back);
}
