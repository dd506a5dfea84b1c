//! A mixed ring (the spec's T4): Go and receptord nodes alternate, gonode1 – rnode1 –
//! gonode2 – rnode2 – gonode1, every link netceptor. Pings cross receptord hops both
//! ways; when the receptord hop a route uses is killed (kill -9), both Go nodes route
//! around it through the other one.

mod common;

use std::time::Duration;

use common::go::GoNode;
use common::{Daemon, Spec, wait_until};
use serde_json::Value;

/// Go learns distant nodes from periodic updates (every 10 s).
const CONVERGE: Duration = Duration::from_secs(60);

fn ping_ok(reply: &str) -> bool {
    serde_json::from_str::<Value>(reply).is_ok_and(|v| v["Success"] == true)
}

fn route(g: &GoNode, to: &str) -> String {
    g.status()["RoutingTable"][to].as_str().unwrap_or_default().to_owned()
}

fn netceptor_peer(port: Option<u16>) -> String {
    format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", port.expect("port"))
}

#[test]
fn go_nodes_route_around_a_killed_receptord_hop_in_a_mixed_ring() {
    let g1 = GoNode::start("gonode1", true, &[]);
    let g2 = GoNode::start("gonode2", true, &[]);
    let both = format!("{}{}", netceptor_peer(g1.port), netceptor_peer(g2.port));
    let mut r1 = Daemon::start(Spec::new("rnode1").extra(&both));
    let mut r2 = Daemon::start(Spec::new("rnode2").extra(&both));

    wait_until("gonode1 pings gonode2 across a receptord hop", CONVERGE, || ping_ok(&g1.ctl("ping gonode2")));
    wait_until("gonode2 pings gonode1 across a receptord hop", CONVERGE, || ping_ok(&g2.ctl("ping gonode1")));
    wait_until("gonode1 routes to both receptord nodes", CONVERGE, || {
        route(&g1, "rnode1") == "rnode1" && route(&g1, "rnode2") == "rnode2"
    });
    let via = route(&g1, "gonode2");
    assert!(via == "rnode1" || via == "rnode2", "gonode1 reaches gonode2 through a receptord hop: {via}");

    // Kill the hop in use; the other receptord node carries the ring.
    let (dead, alive) = if via == "rnode1" { (&mut r1, "rnode2") } else { (&mut r2, "rnode1") };
    dead.kill();
    wait_until("gonode1 reroutes through the other receptord", CONVERGE, || route(&g1, "gonode2") == alive);
    wait_until("gonode2 reroutes through the other receptord", CONVERGE, || route(&g2, "gonode1") == alive);
    wait_until("gonode1 pings gonode2 again", CONVERGE, || ping_ok(&g1.ctl("ping gonode2")));
    wait_until("gonode2 pings gonode1 again", CONVERGE, || ping_ok(&g2.ctl("ping gonode1")));
}
