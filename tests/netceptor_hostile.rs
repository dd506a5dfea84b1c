//! Hostile netceptor peers against receptord (`[limits.netceptor]`, docs/SECURITY.md): a
//! fake Go peer that lies about node IDs the native mesh holds or about this node's own,
//! floods routing updates, sends oversized frames, or never reads. Each attack costs the
//! attacker its link, never the daemon, its native routes or other peers.

mod common;

use std::time::Duration;

use common::fakego::FakeGo;
use common::go::{connections, ctl};
use common::{Daemon, Spec, wait_until, with_socket};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(40);

fn status(sock: &std::path::Path) -> Value {
    serde_json::from_str(&ctl(sock, "status")).expect("status JSON")
}

fn netceptor_linked(sock: &std::path::Path, peer: &str) -> bool {
    connections(&status(sock)).iter().any(|(n, _, p)| n == peer && p.as_deref() == Some("netceptor"))
}

fn advertised(st: &Value, node: &str, work_type: &str) -> bool {
    st["Advertisements"].as_array().into_iter().flatten().any(|a| {
        a["NodeID"] == node
            && a["WorkCommands"].as_array().into_iter().flatten().any(|w| w["WorkType"] == work_type)
    })
}

#[test]
fn a_netceptor_peer_cannot_take_native_node_ids_or_poison_native_routes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let r = Daemon::start(Spec::new("rnode").extra(&control));
    let _r2 = Daemon::start(Spec::new("r2").peer(r.port));
    wait_until("rnode routes to r2 natively", WITHIN, || {
        let st = status(&sock);
        st["RoutingTable"]["r2"] == "r2"
            && connections(&st).iter().any(|(n, _, p)| n == "r2" && p.as_deref() == Some("receptor"))
    });

    // Linking as a node the native mesh holds, or as rnode itself: rejected, closed.
    for claimed in ["r2", "rnode"] {
        let mut liar = FakeGo::connect(r.port);
        liar.update(claimed, claimed, 1, "");
        let types = liar.types_until_closed();
        assert_eq!(types.last(), Some(&3), "{claimed}: a reject before the close: {types:?}");
    }

    // Linked under its own name, a peer lies about r2 and about rnode.
    let mut evil = FakeGo::link_as(r.port, "evil", "rnode");
    wait_until("rnode lists evil", WITHIN, || netceptor_linked(&sock, "evil"));
    evil.update("r2", "evil", 7, r#""evil":1,"rnode":1"#);
    evil.update("ghost", "evil", 7, r#""r2":1,"evil":1"#);
    evil.update("rnode", "evil", 7, r#""evil":1,"ghost":1"#);
    evil.ad("r2", "evilwork");
    evil.ad("rnode", "evilwork");
    // A marker behind the lies: once it shows, every lie before it was handled.
    evil.update("evil", "evil", 9, r#""rnode":1"#);
    evil.ad("evil", "marker");
    wait_until("the marker arrives", WITHIN, || advertised(&status(&sock), "evil", "marker"));

    let st = status(&sock);
    assert_eq!(st["RoutingTable"]["r2"], "r2", "native route to r2 kept: {st}");
    assert!(!advertised(&st, "r2", "evilwork"), "no forged work type for r2: {st}");
    assert!(!advertised(&st, "rnode", "evilwork"), "no forged work type for rnode: {st}");
    let r2_links = &st["KnownConnectionCosts"]["r2"];
    assert!(r2_links.get("evil").is_none(), "no forged link of r2: {st}");
    assert!(st["KnownConnectionCosts"]["ghost"].get("r2").is_none(), "no forged link to r2: {st}");
    assert!(ctl(&sock, "ping r2").contains("\"Success\":true"), "r2 still answers natively");
    // The liar keeps its link (its lies were only dropped), and the daemon serves on.
    assert!(netceptor_linked(&sock, "evil"));
}

#[test]
fn oversized_frames_and_advertisement_floods_cost_the_sender_its_link() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let limits = "[limits.netceptor]\nmax_packet = 2000\nadvert_rate = 20000\nadvert_burst = 40000\n\
                  advert_drops_to_close = 200\n";
    let r = Daemon::start(Spec::new("rnode").extra(&control).extra(limits));

    // A frame beyond max_packet closes the connection before it is buffered.
    let mut big = FakeGo::link_as(r.port, "big", "rnode");
    wait_until("rnode lists big", WITHIN, || netceptor_linked(&sock, "big"));
    let mut p = vec![2u8];
    p.resize(3000, b' ');
    big.send(&p);
    big.types_until_closed();
    wait_until("big's link gone", WITHIN, || !netceptor_linked(&sock, "big"));

    // 5,000 routing updates as fast as the socket takes them: most are dropped, then the
    // link is closed; a well-behaved peer linked meanwhile keeps its link.
    let _calm = FakeGo::link_as(r.port, "calm", "rnode");
    let mut flood = FakeGo::link_as(r.port, "flood", "rnode");
    wait_until("rnode lists flood and calm", WITHIN, || {
        netceptor_linked(&sock, "flood") && netceptor_linked(&sock, "calm")
    });
    for i in 0..5000u64 {
        if !flood.try_send(&FakeGo::update_packet(&format!("f{i}"), "flood", 10 + i, r#""flood":1"#)) {
            break;
        }
    }
    flood.types_until_closed();
    wait_until("flood's link gone", WITHIN, || !netceptor_linked(&sock, "flood"));
    let st = status(&sock);
    let learned =
        st["KnownConnectionCosts"].as_object().map_or(0, |m| m.keys().filter(|k| k.starts_with('f')).count());
    assert!(learned < 2000, "the flood was rate-limited: {learned} nodes learned");
    assert!(netceptor_linked(&sock, "calm"), "the other peer keeps its link");
}

#[test]
fn a_peer_that_never_reads_loses_its_link() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let limits = "[limits]\nstall_timeout = \"2s\"\n[limits.netceptor]\nlink_queue_bytes = 65535\n";
    let r = Daemon::start(Spec::new("rnode").extra(&control).extra(limits));

    // A small receive buffer, and pings whose answers it never reads.
    let sk = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sk.set_recv_buffer_size(4096).expect("rcvbuf");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", r.port).parse().expect("addr");
    sk.connect(&addr.into()).expect("connect");
    let mut sloth = FakeGo(sk.into());
    sloth.update("sloth", "sloth", 1, "");
    sloth.update("sloth", "sloth", 2, r#""rnode":1"#);
    wait_until("rnode lists sloth", WITHIN, || netceptor_linked(&sock, "sloth"));
    let ping = FakeGo::ping_packet("sloth", "p", "rnode");
    // Writes until the daemon closes the connection (bounded in time, not in count: how
    // many pings fit before the close depends on the machine's speed).
    let writer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(150);
        while std::time::Instant::now() < deadline {
            if !sloth.try_send(&ping) {
                return true;
            }
        }
        false
    });
    wait_until("the stalled link is closed", Duration::from_secs(120), || !netceptor_linked(&sock, "sloth"));
    let closed = writer.join().expect("writer");
    assert!(closed, "receptord closed the connection");
    assert_eq!(status(&sock)["NodeID"], "rnode", "the daemon serves on");
}
