//! Targets on the netceptor plane: the packet decoders (data, routing update, service
//! advertisement) with the u16-LE stream framing, and the sans-IO state machine fed
//! hostile packets on links.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::Cursor;
use crate::netceptor::framing::PacketCodec;
use crate::netceptor::proto::{Action, Config, Limits, LocalService, Netceptor};
use crate::netceptor::wire::{DataPacket, MAX_PACKET, Packet, RoutingUpdate, ServiceAd, WorkCommand};
use crate::wire::NodeId;

/// `Packet::decode` on the input as one packet, then `PacketCodec` on it as a stream.
/// A decoded packet re-encodes within `MAX_PACKET` to bytes that decode to the same
/// packet; a data packet re-encodes to the input itself (but its reserved bytes).
pub fn netceptor_packet(data: &[u8]) {
    check_packet(data);
    let mut buf = BytesMut::from(data);
    // Each frame consumes at least 3 bytes (an empty frame is an error), so this ends.
    while let Ok(Some(p)) = PacketCodec::default().decode(&mut buf) {
        assert!(!p.is_empty() && p.len() <= MAX_PACKET);
        check_packet(&p);
    }
}

fn check_packet(data: &[u8]) {
    let Ok(p) = Packet::decode(data) else { return };
    let enc = p.encode().expect("a decoded packet re-encodes");
    assert!(enc.len() <= MAX_PACKET);
    let again = Packet::decode(&enc).expect("a re-encoded packet decodes");
    if let Packet::Data(_) = p {
        assert_eq!(enc[..2], data[..2]);
        assert_eq!(enc[4..], data[4..], "data packets re-encode byte for byte");
    }
    if let (Packet::Routing(a), Packet::Routing(b)) = (&p, &again) {
        // NaN is not JSON, so equality holds for every decoded update.
        assert_eq!(a, b);
    } else if !matches!(p, Packet::Routing(_)) {
        assert_eq!(p, again);
    }
}

/// The state machine with small limits, fed by the input: links opened and closed, any
/// packet (structured or raw bytes) on any link, time passing, services set, datagrams
/// sent. After every event its tables stay within their limits, and after it settles no
/// route leads to itself and every route's next hop is an established peer.
pub fn netceptor_events(data: &[u8]) {
    let mut c = Cursor::new(data);
    let limits = Limits {
        max_nodes: 1 + usize::from(c.byte() % 8),
        max_ads: 1 + usize::from(c.byte() % 8),
        max_seen_updates: 1 + usize::from(c.byte() % 16),
        service_queue: 4,
        ..Limits::default()
    };
    let mut cfg = Config::new(NodeId::new("me").expect("id"), 1 << 30);
    cfg.limits = limits.clone();
    let mut now = Instant::now();
    let mut n = Netceptor::new(cfg, now, time::OffsetDateTime::UNIX_EPOCH);
    let names = ["me", "a", "b", "c", "d", "a\u{0}", ""];
    let pick = |c: &mut Cursor<'_>| names[usize::from(c.byte()) % names.len()].to_owned();
    for _ in 0..2000 {
        if c.is_empty() {
            break;
        }
        let link = u64::from(c.byte() % 4);
        match c.byte() % 8 {
            0 => n.link_opened(now, link, f64::from(1 + c.byte() % 3)),
            1 => n.link_closed(now, link),
            2 => {
                let connections: BTreeMap<String, f64> =
                    (0..c.byte() % 4).map(|_| (pick(&mut c), f64::from(c.byte() % 4))).collect();
                let u = RoutingUpdate {
                    node_id: pick(&mut c),
                    update_id: format!("u{}", c.byte() % 32),
                    epoch: u64::from(c.byte() % 4) << 30,
                    sequence: u64::from(c.byte()),
                    connections,
                    forwarding_node: pick(&mut c),
                    suspected_duplicate: u64::from(c.byte() % 4) << 30,
                };
                feed(&mut n, now, link, &Packet::Routing(u));
            }
            3 => {
                let ad = ServiceAd {
                    node_id: pick(&mut c),
                    service: format!("s{}", c.byte() % 4),
                    time: time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs(u64::from(c.byte())),
                    conn_type: c.byte() % 3,
                    tags: None,
                    work_commands: Some(vec![WorkCommand { work_type: "w".into(), secure: false }]),
                    cancel: c.byte() % 4 == 0,
                };
                feed(&mut n, now, link, &Packet::Service(ad));
            }
            4 => {
                let d = DataPacket {
                    hops: c.byte() % 4,
                    from_hash: crate::netceptor::names::name_hash(&pick(&mut c)),
                    to_hash: crate::netceptor::names::name_hash(&pick(&mut c)),
                    from_service: format!("s{}", c.byte() % 3),
                    to_service: ["ping", "unreach", "s1", "x"][usize::from(c.byte() % 4)].into(),
                    payload: {
                        let len = usize::from(c.byte() % 16);
                        Bytes::copy_from_slice(c.take(len))
                    },
                };
                feed(&mut n, now, link, &Packet::Data(d));
            }
            5 => {
                let len = usize::from(c.byte());
                n.link_packet(now, link, c.take(len));
            }
            6 => {
                now += Duration::from_millis(u64::from(c.u16()) * 20);
                n.tick(now);
            }
            _ => match c.byte() % 3 {
                0 => n.set_services(
                    now,
                    vec![LocalService {
                        name: "control".into(),
                        conn_type: 1,
                        tags: None,
                        work_commands: None,
                    }],
                ),
                1 => n.set_services(now, Vec::new()),
                _ => {
                    let to = pick(&mut c);
                    let _ = n.send_datagram(now, "s1", &to, "ping", Bytes::new());
                }
            },
        }
        drain(&mut n, now);
        assert!(n.known_nodes().count() <= limits.max_nodes);
        assert!(n.ads().count() <= limits.max_ads);
    }
    for _ in 0..2 {
        now += Duration::from_secs(1);
        n.tick(now);
        drain(&mut n, now);
    }
    let peers: Vec<String> = n.established().map(|(_, p, _)| p.as_str().to_owned()).collect();
    for (dst, hop) in n.routes() {
        assert_ne!(dst, "me", "a route to itself");
        assert!(peers.contains(hop), "route to {dst} via {hop}, not an established peer ({peers:?})");
    }
}

fn feed(n: &mut Netceptor, now: Instant, link: u64, p: &Packet) {
    if let Ok(b) = p.encode() {
        n.link_packet(now, link, &b);
    }
}

/// Takes every action; closes what the machine asks to close, as the driver does.
fn drain(n: &mut Netceptor, now: Instant) {
    for _ in 0..100_000 {
        match n.poll_action() {
            None => return,
            Some(Action::Close { link, .. }) => n.link_closed(now, link),
            Some(Action::Send { packet, .. }) => {
                assert!(Packet::decode(&packet).is_ok(), "the machine sends only decodable packets");
            }
            Some(_) => {}
        }
    }
    panic!("actions never run dry");
}
