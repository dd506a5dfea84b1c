//! Netceptor carried over native links (`[netceptor] native_links`): a Go Receptor 1.4.0
//! control node linked to a receptord hub sees, pings and runs work on receptord nodes
//! linked to that hub only with `receptor://` (one and two native hops away, their configs
//! saying nothing about netceptor); a fleet with no Go node never sends a netceptor
//! packet; a native peer that abuses the carried session loses the session, not its link;
//! and the other way round, a receptord node linked only natively pings and runs work on a
//! Go node behind the hub.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::go::{GoNode, ctl, work_types};
use common::hostile::FakePeer;
use common::{CAT, Daemon, Spec, receptorctl, stderr, wait_until, with_socket};
use receptord::netceptor::wire::{Packet, RoutingUpdate};
use receptord::wire::{Frame, caps};
use serde_json::Value;

/// Go learns distant nodes from their periodic updates (every 10 s).
const CONVERGE: Duration = Duration::from_secs(60);

fn status(sock: &Path) -> Value {
    serde_json::from_str(&ctl(sock, "status")).expect("status JSON")
}

fn ping_ok(reply: &str) -> bool {
    serde_json::from_str::<Value>(reply).is_ok_and(|v| v["Success"] == true)
}

/// `status`'s connection to `peer`: (protocol, whether it carries netceptor).
fn conn(st: &Value, peer: &str) -> Option<(String, bool)> {
    st["Connections"].as_array()?.iter().find(|c| c["NodeID"] == peer).map(|c| {
        (
            c["Protocol"].as_str().unwrap_or_default().to_owned(),
            c.get("Carries").is_some_and(|v| v == "netceptor"),
        )
    })
}

/// Whether any connection in `st` speaks or carries netceptor.
fn any_netceptor(st: &Value) -> bool {
    st["Connections"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["Protocol"] != "receptor" || c.get("Carries").is_some())
}

#[test]
fn a_go_node_reaches_receptord_nodes_linked_only_natively() {
    let g = GoNode::start("goctl", true, &[]);
    let tmp = tempfile::tempdir().expect("tmp");
    let (hub_ctl, hub_sock) = with_socket("hub", tmp.path());
    let go_peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g.port.expect("port"));
    let hub = Daemon::start(Spec::new("hub").extra(&hub_ctl).extra(&go_peer));
    // The leaves' configs say nothing about netceptor.
    let (leaf_ctl, _) = with_socket("leaf", tmp.path());
    let _leaf = Daemon::start(Spec::new("leaf").peer(hub.port).extra(CAT).extra(&leaf_ctl));
    let mid = Daemon::start(Spec::new("mid").peer(hub.port));
    let (leaf2_ctl, _) = with_socket("leaf2", tmp.path());
    let _leaf2 = Daemon::start(Spec::new("leaf2").peer(mid.port).extra(CAT).extra(&leaf2_ctl));

    // Go's view: the leaves, two native hops away too, with their work types.
    for n in ["leaf", "leaf2"] {
        wait_until(&format!("goctl lists {n}'s work types"), CONVERGE, || {
            work_types(&g.status(), n) == ["cat"]
        });
        wait_until(&format!("goctl pings {n}"), CONVERGE, || ping_ok(&g.ctl(&format!("ping {n}"))));
    }
    assert_eq!(g.status()["RoutingTable"]["leaf2"], "hub", "{}", g.status());
    // The hub's view: a Go link, and native links that carry netceptor.
    let st = status(&hub_sock);
    assert_eq!(conn(&st, "goctl"), Some(("netceptor".into(), false)), "{st}");
    assert_eq!(conn(&st, "leaf"), Some(("receptor".into(), true)), "{st}");
    assert_eq!(conn(&st, "mid"), Some(("receptor".into(), true)), "{st}");

    // The AWX path to a node two native hops away, byte-identical.
    let data: Vec<u8> = (0..(3 << 19)).map(|i: usize| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let file = tmp.path().join("payload.bin");
    std::fs::write(&file, &data).expect("payload");
    let payload = file.to_str().expect("a UTF-8 temp path");
    for n in ["leaf2", "leaf"] {
        let out = receptorctl(&g.sock, &["work", "submit", "--node", n, "cat", "-f", "--payload", payload]);
        assert!(out.status.success(), "{n}: {}", stderr(&out));
        assert!(out.stdout == data, "{n}: {} bytes back of {}", out.stdout.len(), data.len());
    }
}

#[test]
fn a_natively_linked_receptord_node_runs_work_on_a_go_node_behind_the_hub() {
    let g = GoNode::start(
        "goexec",
        true,
        &["--work-command".into(), "worktype=gocat".into(), "command=cat".into()],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let go_peer = format!("[[peers]]\nurl = \"netceptor://127.0.0.1:{}\"\n", g.port.expect("port"));
    let hub = Daemon::start(Spec::new("hub").extra(&go_peer));
    // The leaf's config says nothing about netceptor; it reaches Go through the hub.
    let (leaf_ctl, leaf_sock) = with_socket("leaf", tmp.path());
    let _leaf = Daemon::start(Spec::new("leaf").peer(hub.port).extra(&leaf_ctl));
    wait_until("leaf pings goexec", CONVERGE, || ping_ok(&ctl(&leaf_sock, "ping goexec")));
    wait_until("leaf sees goexec's work type", CONVERGE, || {
        work_types(&status(&leaf_sock), "goexec") == ["gocat"]
    });

    // The AWX path from the leaf's socket to the Go node, byte-identical.
    let data: Vec<u8> = (0..(1 << 20)).map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let file = tmp.path().join("payload.bin");
    std::fs::write(&file, &data).expect("payload");
    let payload = file.to_str().expect("a UTF-8 temp path");
    let out =
        receptorctl(&leaf_sock, &["work", "submit", "--node", "goexec", "gocat", "-f", "--payload", payload]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "{} bytes back of {}", out.stdout.len(), data.len());
    // Go ran it as an ordinary unit.
    let list: Value = serde_json::from_str(&g.ctl("work list")).expect("list");
    let (_, st) = list.as_object().and_then(|m| m.iter().next()).expect("a unit on goexec");
    assert_eq!(st["State"], 2, "{st}");
}

#[test]
fn a_fleet_without_go_nodes_carries_no_netceptor() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (hub_ctl, hub_sock) = with_socket("hub", tmp.path());
    let hub = Daemon::start(Spec::new("hub").extra(&hub_ctl));
    let (mid_ctl, mid_sock) = with_socket("mid", tmp.path());
    let mid = Daemon::start(Spec::new("mid").peer(hub.port).extra(&mid_ctl));
    let (leaf_ctl, leaf_sock) = with_socket("leaf", tmp.path());
    let leaf = Daemon::start(Spec::new("leaf").peer(mid.port).extra(CAT).extra(&leaf_ctl));
    wait_until("hub reaches leaf natively", CONVERGE, || {
        common::receptor(&hub, &["ping", "leaf", "-c", "1"]).status.success()
    });
    // Every node's links offer to carry netceptor, and none carries it.
    for (sock, peers) in
        [(&hub_sock, vec!["mid"]), (&mid_sock, vec!["hub", "leaf"]), (&leaf_sock, vec!["mid"])]
    {
        let st = status(sock);
        for p in peers {
            assert_eq!(conn(&st, p), Some(("receptor".into(), false)), "{st}");
        }
        assert!(!any_netceptor(&st), "{st}");
    }
    for d in [&hub, &mid, &leaf] {
        assert!(!d.log().contains("netceptor link up"), "{}: {}", d.id, d.log());
    }
}

fn update(node: &str, forwarding: &str, seq: u64) -> Frame {
    let u = RoutingUpdate {
        node_id: node.into(),
        update_id: format!("u{node}{forwarding}{seq}"),
        epoch: 1 << 40,
        sequence: seq,
        connections: BTreeMap::new(),
        forwarding_node: forwarding.into(),
        suspected_duplicate: 0,
    };
    Frame::Netceptor(Packet::Routing(u).encode().expect("encode"))
}

#[test]
fn a_native_peer_abusing_its_carried_session_loses_the_session_not_the_link() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (hub_ctl, hub_sock) = with_socket("hub", tmp.path());
    let hub = Daemon::start(
        Spec::new("hub").extra(CAT).extra(&hub_ctl).extra("[limits.netceptor]\nmax_packet = 2000\n"),
    );
    let mut evil = FakePeer::try_join_caps(hub.port, "evil", caps::STREAMS | caps::NETCEPTOR).expect("join");
    // The first packet opens a session; the hub answers with its own routing updates.
    evil.send(&update("evil", "evil", 1)).expect("send");
    let answered = evil.recv_until(Duration::from_secs(10), |f| match f {
        Frame::Netceptor(p) => {
            matches!(Packet::decode(&p), Ok(Packet::Routing(u)) if u.forwarding_node == "hub").then_some(())
        }
        _ => None,
    });
    assert!(answered.is_some(), "the hub opened a carried session");
    wait_until("the hub's link to evil carries netceptor", CONVERGE, || {
        conn(&status(&hub_sock), "evil") == Some(("receptor".into(), true))
    });
    // Garbage is dropped; an update forwarded by another node closes the session.
    evil.send(&Frame::Netceptor(Bytes::from_static(b"\x01{not json"))).expect("send");
    evil.send(&update("evil", "mallory", 2)).expect("send");
    wait_until("the session closed", CONVERGE, || {
        conn(&status(&hub_sock), "evil") == Some(("receptor".into(), false))
    });
    hub.wait_log("remote node ID changed unexpectedly", CONVERGE);
    // Reopened by the next packet (after a pause); an oversized one closes it again.
    wait_until("the session reopened", CONVERGE, || {
        let _ = evil.send(&update("evil", "evil", 3));
        std::thread::sleep(Duration::from_millis(200));
        conn(&status(&hub_sock), "evil") == Some(("receptor".into(), true))
    });
    evil.send(&Frame::Netceptor(Bytes::from(vec![1u8; 3000]))).expect("send");
    hub.wait_log("exceeds limits.netceptor.max_packet", CONVERGE);
    wait_until("the session closed", CONVERGE, || {
        conn(&status(&hub_sock), "evil") == Some(("receptor".into(), false))
    });
    // The native link stayed up all along (one link: never redialed).
    assert!(!hub.log().contains("dropped connection"), "{}", hub.log());

    // A session whose first update names another node than the native peer is refused.
    let mut liar = FakePeer::try_join_caps(hub.port, "liar", caps::STREAMS | caps::NETCEPTOR).expect("join");
    liar.send(&update("goctl", "goctl", 1)).expect("send");
    let rejected = liar.recv_until(Duration::from_secs(10), |f| match f {
        Frame::Netceptor(p) => matches!(Packet::decode(&p), Ok(Packet::Reject)).then_some(()),
        _ => None,
    });
    assert!(rejected.is_some(), "a reject on the carried session");
    hub.wait_log("certificate does not name goctl", CONVERGE);
    assert_eq!(conn(&status(&hub_sock), "liar"), Some(("receptor".into(), false)), "the native link stays");

    // A peer that did not offer the capability: the frame is a protocol violation.
    let mut plain = FakePeer::try_join_caps(hub.port, "plain", caps::STREAMS).expect("join");
    plain.send(&update("plain", "plain", 1)).expect("send");
    let bye = plain.recv_until(Duration::from_secs(10), |f| match f {
        Frame::Goodbye { reason } => Some(reason.to_string()),
        Frame::Netceptor(_) => panic!("the hub carried netceptor to a peer that did not offer it"),
        _ => None,
    });
    assert!(bye.as_deref().is_some_and(|r| r.contains("unexpected netceptor")), "{bye:?}");
    assert!(conn(&status(&hub_sock), "evil").is_some(), "evil's link is untouched");
}
