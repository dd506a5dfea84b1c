//! Go Receptor's UDP backend (`netceptor+udp://`) against the real Go Receptor 1.4.0
//! binary: Go dials receptord's UDP listener and receptord dials Go's, ping both ways,
//! `receptorctl status` on a Go node lists receptord, work through a Go node over UDP, Go
//! nodes restarting on both ends; and hostile senders: a flood from spoofed source ports
//! and addresses stays within `limits.netceptor.udp_*` while the real peer keeps its link,
//! and oversize, empty and garbage datagrams are dropped without costing a link, each drop
//! counted by reason in `receptor_netceptor_dropped_total`.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fakego::FakeGo;
use common::go::{GoNode, connections, ctl, work_types};
use common::{
    CAT, Daemon, METRICS, Spec, metrics_port, receptorctl, stderr, stdout, wait_until, with_socket,
};
use serde_json::Value;

/// Go learns distant nodes from their periodic updates (every 10 s); a restarted Go node
/// dialing over UDP waits for its old session to expire (21 s) and redials (≤ 20 s).
const CONVERGE: Duration = Duration::from_secs(60);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn ping_ok(reply: &str) -> bool {
    serde_json::from_str::<Value>(reply).is_ok_and(|v| v["Success"] == true)
}

fn status(sock: &std::path::Path) -> Value {
    serde_json::from_str(&ctl(sock, "status")).expect("status JSON")
}

fn linked(st: &Value, peer: &str) -> bool {
    connections(st).iter().any(|(id, cost, _)| id == peer && *cost == 1.0)
}

fn udp_listener(port: u16) -> Vec<String> {
    vec!["--udp-listener".into(), format!("port={port}"), "bindaddr=127.0.0.1".into()]
}

fn udp_peer(port: u16) -> Vec<String> {
    vec!["--udp-peer".into(), format!("address=127.0.0.1:{port}")]
}

/// receptord `rnode` dialing `netceptor+udp://` Go's `dial` port and listening on `listen`.
fn rnode(tmp: &std::path::Path, dial: Option<u16>, listen: u16, extra: &str) -> (Daemon, std::path::PathBuf) {
    let (control, sock) = with_socket("rnode", tmp);
    let mut cfg = format!("[[listeners]]\nurl = \"netceptor+udp://127.0.0.1:{listen}\"\n");
    if let Some(p) = dial {
        cfg.push_str(&format!("[[peers]]\nurl = \"netceptor+udp://127.0.0.1:{p}\"\n"));
    }
    let r = Daemon::start(Spec::new("rnode").extra(CAT).extra(&control).extra(&cfg).extra(extra));
    (r, sock)
}

#[test]
fn go_and_receptord_link_over_udp_both_ways() {
    let gp = free_udp_port();
    let mut g1_args = udp_listener(gp);
    g1_args.extend(["--work-command".into(), "worktype=gocat".into(), "command=cat".into()]);
    let g1 = GoNode::start("gonode1", false, &g1_args);
    let tmp = tempfile::tempdir().expect("tmp");
    let rp = free_udp_port();
    let (_r, sock) = rnode(tmp.path(), Some(gp), rp, "");
    let g2 = GoNode::start("gonode2", false, &udp_peer(rp));

    // receptord → Go (receptord dials gonode1) and Go → receptord (gonode2 dials rnode).
    wait_until("gonode1 lists rnode", CONVERGE, || linked(&g1.status(), "rnode"));
    wait_until("gonode2 lists rnode", CONVERGE, || linked(&g2.status(), "rnode"));
    wait_until("rnode lists both Go links", CONVERGE, || {
        let c = connections(&status(&sock));
        let has = |g: &str| c.iter().any(|(n, _, p)| n == g && p.as_deref() == Some("netceptor"));
        has("gonode1") && has("gonode2")
    });
    wait_until("rnode's work types on gonode1", CONVERGE, || work_types(&g1.status(), "rnode") == ["cat"]);

    // Ping both ways, and Go → Go through the receptord hop.
    wait_until("gonode1 pings rnode", CONVERGE, || ping_ok(&g1.ctl("ping rnode")));
    wait_until("gonode2 pings rnode", CONVERGE, || ping_ok(&g2.ctl("ping rnode")));
    wait_until("gonode2 pings gonode1 through rnode", CONVERGE, || ping_ok(&g2.ctl("ping gonode1")));
    assert!(ping_ok(&ctl(&sock, "ping gonode1")), "receptord pings gonode1");
    assert!(ping_ok(&ctl(&sock, "ping gonode2")), "receptord pings gonode2");

    // The unmodified receptorctl on a Go node lists the receptord node.
    let out = receptorctl(&g2.sock, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("rnode"), "{}", stdout(&out));

    // Work from a Go node over UDP: submitted through gonode2, run by receptord, results back.
    let out = receptorctl(
        &g2.sock,
        &["work", "submit", "--node", "rnode", "cat", "-f", "--payload-literal", "over udp"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "over udp", "results through gonode2");
}

#[test]
fn go_nodes_restarting_on_either_end_relink_over_udp() {
    let gp = free_udp_port();
    let mut g1 = GoNode::start("gonode1", false, &udp_listener(gp));
    let tmp = tempfile::tempdir().expect("tmp");
    let rp = free_udp_port();
    let (_r, sock) = rnode(tmp.path(), Some(gp), rp, "");
    let mut g2 = GoNode::start("gonode2", false, &udp_peer(rp));
    wait_until("gonode1 lists rnode", CONVERGE, || linked(&g1.status(), "rnode"));
    wait_until("gonode2 lists rnode", CONVERGE, || linked(&g2.status(), "rnode"));

    // The Go listener restarts: receptord's connected socket is refused, it redials.
    g1.restart();
    wait_until("rnode back on the restarted gonode1", CONVERGE, || linked(&g1.status(), "rnode"));
    wait_until("gonode1 pings rnode again", CONVERGE, || ping_ok(&g1.ctl("ping rnode")));

    // The Go dialer restarts (a new source port): its new session links once the old one
    // has expired on receptord.
    g2.restart();
    wait_until("the restarted gonode2 lists rnode", CONVERGE, || linked(&g2.status(), "rnode"));
    wait_until("gonode2 pings rnode again", CONVERGE, || ping_ok(&g2.ctl("ping rnode")));
    wait_until("rnode pings gonode2 again", CONVERGE, || ping_ok(&ctl(&sock, "ping gonode2")));
}

/// `receptor_netceptor_dropped_total{reason}` on the metrics endpoint at `port` (0 when
/// absent or unreadable).
fn dropped(port: u16, reason: &str) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl (install it: make test does)");
    let series = format!("receptor_netceptor_dropped_total{{reason=\"{reason}\"}} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls until the drops for `reason` reach `at_least`.
fn wait_dropped(port: u16, reason: &str, at_least: u64) {
    wait_until(&format!("{at_least} datagrams dropped for {reason}"), CONVERGE, || {
        dropped(port, reason) >= at_least
    });
}

/// A socket bound to `ip` (127.0.0.x), any port.
fn socket_on(ip: &str, rp: u16) -> Option<UdpSocket> {
    let s = UdpSocket::bind((ip, 0)).ok()?;
    s.connect(("127.0.0.1", rp)).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Whether anything came back on `s` (non-blocking).
fn answered(s: &UdpSocket) -> bool {
    let mut buf = [0u8; 65536];
    matches!(s.recv(&mut buf), Ok(n) if n > 0)
}

#[test]
fn a_spoofed_source_flood_stays_bounded_and_the_real_peer_keeps_its_link() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rp = free_udp_port();
    let limits = "[limits.netceptor]\nudp_sessions = 8\nudp_sessions_per_ip = 3\nudp_session_rate = 1000\n";
    let (r, sock) = rnode(tmp.path(), None, rp, &format!("{limits}{METRICS}"));
    let mp = metrics_port(&r);
    let g = GoNode::start("gonode", false, &udp_peer(rp));
    wait_until("gonode lists rnode", CONVERGE, || linked(&g.status(), "rnode"));

    // Spoofed sources: 200 ports on 127.0.0.1 (gonode's address), 10 on each of
    // 127.0.0.2-31, each sending a valid first routing update under its own node ID
    // (`f<x>n<i>`, x the address's last byte), three rounds.
    let mut flood: Vec<(String, UdpSocket)> = Vec::new();
    for x in 1..32 {
        let n = if x == 1 { 200 } else { 10 };
        for i in 0..n {
            if let Some(s) = socket_on(&format!("127.0.0.{x}"), rp) {
                flood.push((format!("f{x}n{i}"), s));
            }
        }
    }
    assert!(flood.len() > 400, "the flood has its sockets ({})", flood.len());
    for round in 0..3u64 {
        for (id, s) in &flood {
            let _ = s.send(&FakeGo::update_packet(id, id, round + 1, ""));
        }
        let c = connections(&status(&sock));
        assert!(c.len() <= 8, "at most udp_sessions links: {c:?}");
    }
    // The admitted sources link; the rest are dropped.
    wait_until("the admitted sources' links", CONVERGE, || connections(&status(&sock)).len() >= 8);
    let c = connections(&status(&sock));
    assert_eq!(c.len(), 8, "udp_sessions bounds the links: {c:?}");
    let from_lo = c.iter().filter(|(n, _, _)| n.starts_with("f1n")).count();
    assert!(from_lo <= 2, "udp_sessions_per_ip bounds 127.0.0.1 (gonode holds one): {c:?}");
    let heard = flood.iter().filter(|(_, s)| answered(s)).count();
    assert!(heard <= 7, "only admitted sources hear back: {heard}");
    // The real peer kept its link on both ends, and it carries traffic.
    assert!(c.iter().any(|(n, _, _)| n == "gonode"), "rnode lost gonode: {c:?}");
    assert!(linked(&g.status(), "rnode"), "gonode lost its link");
    wait_until("gonode pings rnode after the flood", CONVERGE, || ping_ok(&g.ctl("ping rnode")));
    // Each refusal was counted by its reason: 127.0.0.1's ports beyond its 3 sessions
    // (200 sources, three rounds), and the sources beyond the listener's 8 sessions.
    wait_dropped(mp, "udp_sessions_per_ip", 100);
    wait_dropped(mp, "udp_sessions", 100);
    assert_eq!(dropped(mp, "udp_not_opening"), 0, "every flood datagram opened like an update");
}

#[test]
fn oversize_empty_and_garbage_datagrams_cost_no_link() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rp = free_udp_port();
    let (r, sock) = rnode(tmp.path(), None, rp, &format!("[limits.netceptor]\nmax_packet = 2000\n{METRICS}"));
    let mp = metrics_port(&r);
    let fake = UdpSocket::bind("127.0.0.1:0").expect("bind");
    fake.connect(("127.0.0.1", rp)).expect("connect");
    fake.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    fake.send(&FakeGo::update_packet("fake", "fake", 1, "")).expect("send");
    fake.send(&FakeGo::update_packet("fake", "fake", 2, r#""rnode":1"#)).expect("send");
    wait_until("rnode lists fake", CONVERGE, || {
        connections(&status(&sock)).iter().any(|(n, _, _)| n == "fake")
    });

    // Garbage from an unknown source opens no session; on the linked one it is dropped.
    let stranger = socket_on("127.0.0.1", rp).expect("socket");
    stranger.send(b"GET / HTTP/1.1\r\n\r\n").expect("send");
    stranger.send(&[0u8; 3000]).expect("send");
    for junk in [&b""[..], &b"\x00\xff\xfe"[..], &b"\x01{not json"[..], &[7u8; 1999][..]] {
        fake.send(junk).expect("send");
    }
    // Oversize for max_packet and the largest datagram UDP carries.
    fake.send(&vec![1u8; 2001]).expect("send");
    fake.send(&vec![0u8; 65507]).expect("send");

    // The link still carries traffic: a ping from fake is answered.
    let ping = FakeGo::ping_packet("fake", "pinger", "rnode");
    let start = Instant::now();
    let mut pong = false;
    let mut buf = [0u8; 65536];
    while !pong {
        assert!(start.elapsed() < CONVERGE, "no answer to fake's ping");
        fake.send(&ping).expect("send");
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if let Ok(n) = fake.recv(&mut buf) {
                pong |= n > 0 && buf[0] == 0;
            }
        }
    }
    assert!(connections(&status(&sock)).iter().any(|(n, _, _)| n == "fake"), "fake kept its link");
    assert!(!answered(&stranger), "garbage from a stranger got an answer");
    assert_eq!(connections(&status(&sock)).len(), 1, "no session for the stranger");
    // Counted by reason: the stranger's request opens no session; its 3000 bytes, fake's
    // empty datagram and the two oversize ones are the wrong size (the other junk reached
    // fake's link, whose state machine counts what it cannot decode).
    wait_dropped(mp, "udp_not_opening", 1);
    wait_dropped(mp, "udp_size", 4);
    wait_dropped(mp, "undecodable", 2);
    // The same counts in the control `status` and in `receptor status` (JSON and table).
    let st = status(&sock);
    assert_eq!(st["NetceptorDropped"]["udp_size"].as_u64(), Some(dropped(mp, "udp_size")), "{st}");
    let cli = |args: &[&str]| {
        let out = Command::new(common::RECEPTOR).arg("--socket").arg(&sock).args(args).output();
        let out = out.expect("receptor status");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let doc: Value = serde_json::from_str(&cli(&["status", "--json"])).expect("status JSON");
    assert!(doc["netceptor_dropped"]["rnode"]["undecodable"].as_u64() >= Some(2), "{doc}");
    assert!(cli(&["status"]).contains("Netceptor packets rnode dropped: "), "the table says so");
}

#[test]
fn a_reload_moves_a_udp_listener() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (rp, rp2) = (free_udp_port(), free_udp_port());
    let (r, _sock) = rnode(tmp.path(), None, rp, "");
    let path = r.dir.path().join("receptor.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let moved =
        text.replace(&format!("netceptor+udp://127.0.0.1:{rp}"), &format!("netceptor+udp://127.0.0.1:{rp2}"));
    assert_ne!(text, moved);
    std::fs::write(&path, moved).expect("write config");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(r.pid() as i32), nix::sys::signal::SIGHUP)
        .expect("SIGHUP");
    wait_until("the reload", CONVERGE, || r.log().contains("reload: done"));
    // The old port is released, the new one serves Go.
    wait_until("the old UDP port free", CONVERGE, || UdpSocket::bind(("127.0.0.1", rp)).is_ok());
    let g = GoNode::start("gonode", false, &udp_peer(rp2));
    wait_until("gonode lists rnode on the new port", CONVERGE, || linked(&g.status(), "rnode"));
}

/// A session receptord dialed drops and counts what its peer sends at the wrong size, as
/// a listener does, and keeps the link.
#[test]
fn a_dialed_session_counts_what_it_drops() {
    let tmp = tempfile::tempdir().expect("tmp");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    peer.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let port = peer.local_addr().expect("addr").port();
    let extra = format!("[limits.netceptor]\nmax_packet = 2000\n{METRICS}");
    let (r, sock) = rnode(tmp.path(), Some(port), free_udp_port(), &extra);
    let mp = metrics_port(&r);
    // rnode's first routing update names the source its dialed session sends from.
    let mut buf = [0u8; 65536];
    let start = Instant::now();
    let from = loop {
        assert!(start.elapsed() < CONVERGE, "rnode never dialed");
        if let Ok((n, from)) = peer.recv_from(&mut buf) {
            if n > 0 {
                break from;
            }
        }
    };
    peer.connect(from).expect("connect");
    peer.send(&FakeGo::update_packet("fake", "fake", 1, r#""rnode":1"#)).expect("send");
    wait_until("rnode lists fake", CONVERGE, || {
        connections(&status(&sock)).iter().any(|(n, _, _)| n == "fake")
    });
    peer.send(&vec![1u8; 2001]).expect("send");
    peer.send(&vec![0u8; 65507]).expect("send");
    wait_dropped(mp, "udp_size", 2);
    assert!(connections(&status(&sock)).iter().any(|(n, _, _)| n == "fake"), "fake kept its link");
}
