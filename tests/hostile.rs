//! Hostile peers against real daemons: floods, idle connections and malformed streams from
//! a fake node that speaks the wire protocol (`common::hostile`). Each test replays an
//! attack and checks that the mesh keeps working and the daemon stays bounded.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hostile::{FakePeer, connect_from, encode_all, fat_lsa, node};
use common::*;
use receptord::wire::{Body, Frame, Name, Routed, Side};

/// 3,000 advertisements of 1,024 made-up neighbours each (about 46 MiB) from one peer,
/// which reconnects whenever it is cut off: the link between two other nodes keeps
/// answering pings all along, and memory stays bounded.
#[test]
fn an_advertisement_flood_leaves_other_links_working_and_memory_bounded() {
    let n1 = Daemon::start(Spec::new("n1").extra(FAST_MESH));
    let n2 = Daemon::start(Spec::new("n2").peer(n1.port).extra(FAST_MESH));
    wait_route(&n2, "n1");
    let port = n1.port;
    let flood = std::thread::spawn(move || {
        let (mut sent, mut links) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(90);
        while sent < 3000 && Instant::now() < deadline && links < 100 {
            links += 1;
            let Ok(mut peer) = FakePeer::try_join(port, "attacker") else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            while sent < 3000 {
                let batch = (sent..sent + 10).map(|i| Frame::Lsa(fat_lsa(&format!("forged{i}"), 1, 1024)));
                if peer.send_raw(&encode_all(batch)).is_err() {
                    break;
                }
                sent += 10;
            }
        }
        (sent, links)
    });
    let mut pings = 0;
    while (!flood.is_finished() || pings < 5) && pings < 200 {
        let out = receptor(&n2, &["ping", "n1", "-c", "1", "--timeout", "5s"]);
        assert!(out.status.success(), "ping n2→n1 failed during the flood: {}", stderr(&out));
        pings += 1;
    }
    let (sent, links) = flood.join().expect("flood thread");
    assert!(sent >= 3000, "the flood was sent ({sent} advertisements over {links} links)");
    let (rss1, rss2) = (n1.rss_kib(), n2.rss_kib());
    eprintln!(
        "flood: {sent} advertisements over {links} links; {pings} pings ok; RSS n1 {rss1} KiB, n2 {rss2} KiB"
    );
    assert!(rss1 < 128 * 1024 && rss2 < 128 * 1024, "memory stays bounded: n1 {rss1} KiB, n2 {rss2} KiB");
    let log = n1.log();
    assert!(
        log.contains("advertisement dropped") || log.contains("database full"),
        "the flood is logged: {log}"
    );
    assert!(log.lines().count() < 2_000, "warnings are throttled ({} lines)", log.lines().count());
}

/// Hundreds of idle connections from other addresses, reopened as soon as the daemon
/// drops them, cannot keep a known peer from relinking after it restarts.
#[test]
fn idle_connections_do_not_lock_a_known_peer_out() {
    let n1 = Daemon::start(Spec::new("n1").extra(FAST_MESH));
    let mut n2 = Daemon::start(Spec::new("n2").peer(n1.port).extra(FAST_MESH));
    wait_route(&n2, "n1");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (port, flag) = (n1.port, stop.clone());
    // 40 addresses × 8 connections: more than the 256 handshake slots, none sending a byte.
    let attacker = std::thread::spawn(move || {
        let addr = |i: usize| IpAddr::from([127, 0, 0, 2 + (i / 8) as u8]);
        let mut conns: Vec<Option<std::net::TcpStream>> = (0..320).map(|_| None).collect();
        let (mut opened, deadline) = (0usize, Instant::now() + Duration::from_secs(60));
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            for (i, c) in conns.iter_mut().enumerate() {
                let closed = c.as_ref().is_none_or(|s| {
                    s.set_nonblocking(true).ok();
                    matches!(s.peek(&mut [0u8; 1]), Ok(0) | Err(_)) && !would_block(s)
                });
                if closed {
                    *c = connect_from(addr(i), port).ok();
                    opened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        opened
    });
    wait_until("the attacker holds its connections", Duration::from_secs(10), || {
        n1.log().contains("connection closed before its handshake")
    });
    n2.restart();
    wait_route(&n2, "n1");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = attacker.join().expect("attacker");
    assert!(opened >= 320, "the attacker opened {opened} connections");
}

/// Whether a non-blocking socket merely has nothing to read (it is still open).
fn would_block(s: &std::net::TcpStream) -> bool {
    matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Stream frames that cost the receiver without carrying anything are protocol errors
/// charged to their sender: an empty `Data` resets the stream.
#[test]
fn an_empty_data_frame_resets_the_stream() {
    let n1 = Daemon::start(Spec::new("n1").extra(FAST_MESH));
    let mut peer = FakePeer::join(n1.port, "mallory");
    let routed = |body| Frame::Routed(Routed { src: node("mallory"), dst: node("n1"), hops_left: 5, body });
    let open = Body::Open { stream: 7, service: name("control"), window: 65536, header: Bytes::new() };
    peer.send(&routed(open)).expect("open");
    let empty = Body::Data { stream: 7, from: Side::Opener, offset: 0, data: Bytes::new() };
    peer.send(&routed(empty)).expect("empty data");
    let reset = peer.recv_until(Duration::from_secs(10), |f| match f {
        Frame::Routed(Routed { body: Body::Reset { stream: 7, reason, .. }, .. }) => Some(reason.to_string()),
        _ => None,
    });
    assert_eq!(reset.as_deref(), Some("empty data frame"));
}

/// One peer may hold `limits.streams_per_peer` streams with a node; more are refused.
#[test]
fn streams_per_peer_are_limited() {
    let n1 = Daemon::start(Spec::new("n1").extra(FAST_MESH).extra("[limits]\nstreams_per_peer = 4\n"));
    let mut peer = FakePeer::join(n1.port, "mallory");
    for id in 1..=5u64 {
        let open = Body::Open { stream: id, service: name("control"), window: 65536, header: Bytes::new() };
        let frame = Frame::Routed(Routed { src: node("mallory"), dst: node("n1"), hops_left: 5, body: open });
        peer.send(&frame).expect("open");
    }
    let refused = peer.recv_until(Duration::from_secs(10), |f| match f {
        Frame::Routed(Routed { body: Body::Reset { stream: 5, reason, .. }, .. }) => Some(reason.to_string()),
        _ => None,
    });
    let reason = refused.expect("the fifth stream is refused");
    assert!(reason.contains("streams_per_peer"), "{reason}");
}

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}
