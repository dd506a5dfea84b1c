//! Target on the link-state machine: arbitrary event sequences, invariants after each.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::Cursor;
use crate::mesh::state::{Action, Admission, LinkId, Mesh, MeshConfig, Role};
use crate::wire::{Frame, Hello, Lsa, LsaSig, MAX_FRAME, Name, NodeId, PROTOCOL_VERSION, WorkTypeAd, caps};

const NODES: [&str; 8] = ["fuzz-me", "a", "b", "c", "d", "e", "f", "g"];
const COSTS: [f64; 8] = [1.0, 0.5, 2.0, 100.0, 1e-300, 1e300, f64::MIN_POSITIVE, 3.25];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Admitted,
    Up,
}

fn node(c: &mut Cursor<'_>) -> NodeId {
    let b = c.byte();
    // Mostly a small cast that meets again and again; sometimes a stranger, to fill the database.
    let name =
        if b < 0xf0 { NODES[usize::from(b) % NODES.len()].to_owned() } else { format!("x{}", c.u16()) };
    NodeId::new(name).expect("valid id")
}

fn work_types(c: &mut Cursor<'_>) -> Vec<WorkTypeAd> {
    (0..c.byte() % 4)
        .map(|_| {
            let name = Name::new(["echo", "ansible", "w"][usize::from(c.byte()) % 3]).expect("name");
            let version = Name::new("1").expect("name");
            WorkTypeAd { name, version }
        })
        .collect()
}

/// An advertisement as a peer may send it: only what the decoder lets through.
fn lsa(c: &mut Cursor<'_>) -> Option<Lsa> {
    if c.byte() & 0x80 != 0 {
        // Raw frame bytes through the real decoder.
        let len = usize::from(c.byte());
        let mut body = vec![0x05];
        body.extend_from_slice(c.take(len));
        return match Frame::decode(Bytes::from(body)) {
            Ok(Frame::Lsa(l)) => Some(l),
            _ => None,
        };
    }
    let origin = node(c);
    let epoch = u64::from(c.byte() % 4);
    let seq = u64::from(c.byte());
    let flags = c.byte();
    // What the link reader lets through once the signature checked out: only `signed_at`
    // matters to the state machine (an older incarnation's evidence must postdate ours).
    let sig = (flags & 4 != 0).then(|| LsaSig {
        scheme: 0x0403,
        signed_at: u64::from(flags >> 4) % 5,
        chain: vec![Bytes::from_static(b"\x30\x00")],
        signature: Bytes::from_static(b"sig"),
    });
    let mut neighbors: Vec<(NodeId, f64)> =
        (0..c.byte() % 6).map(|_| (node(c), COSTS[usize::from(c.byte()) % COSTS.len()])).collect();
    // Relay marks, as a node sends them (a mark for each neighbour by a bit of `marks`).
    let marks = c.byte();
    if marks & 1 != 0 {
        for (i, (_, cost)) in neighbors.iter_mut().enumerate() {
            *cost = crate::wire::marked_cost(*cost, marks >> (i + 1) & 1 != 0);
        }
    }
    let work_types = work_types(c);
    let lsa = Lsa {
        origin,
        epoch,
        seq,
        leaving: flags & 1 != 0,
        ephemeral: flags & 2 != 0,
        leaf: flags & 8 != 0,
        relay_marks: marks & 1 != 0 && !neighbors.is_empty(),
        neighbors,
        work_types,
        sig,
    };
    let enc = Frame::Lsa(lsa).encode();
    match Frame::decode(enc.slice(4..)) {
        Ok(Frame::Lsa(l)) => Some(l),
        _ => None,
    }
}

/// A [`Mesh`] fed admit/link_up/link_down/on_lsa/tick/set_work_types/leave events decoded
/// from the input (with small database caps, so the caps are reached), its invariants
/// checked after every event and every frame it asks to send checked to decode.
pub fn mesh_events(data: &[u8]) {
    let mut c = Cursor::new(data);
    let start = Instant::now();
    let mut now = start;
    let cfg = MeshConfig {
        refresh: Duration::from_secs(10),
        node_timeout: Duration::from_secs(40),
        max_hops: 1 + c.byte() % 8,
        max_nodes: 1 + usize::from(c.byte() % 8),
        max_db_bytes: 64 + usize::from(c.u16() % 2048),
        ..MeshConfig::default()
    };
    let me = NodeId::new(NODES[0]).expect("valid id");
    let (ephemeral, leaf) = match c.byte() {
        b if b & 1 != 0 => (true, false),
        b => (false, b & 2 != 0),
    };
    let cfg = MeshConfig { role: if leaf { Role::Leaf } else { Role::Hub }, ..cfg };
    let mut mesh = Mesh::new(me, 2, ephemeral, cfg, now);
    // Which links lead to leaves, by id (actions may still name a link just removed).
    let mut leaf_links: HashSet<LinkId> = HashSet::new();
    // Link ids as the driver hands them out: fresh for every handshake, up at most once,
    // down at most once; advertisements arrive only on up links.
    let mut links: Vec<(LinkId, Phase)> = Vec::new();
    let mut next_link: LinkId = 0;
    let mut steps = 0;
    while !c.is_empty() && steps < 2000 {
        steps += 1;
        let op = c.byte();
        let pick = usize::from(c.byte());
        let find = |links: &[(LinkId, Phase)], ok: &dyn Fn(Phase) -> bool| {
            let live: Vec<usize> = (0..links.len()).filter(|i| ok(links[*i].1)).collect();
            (!live.is_empty()).then(|| live[pick % live.len()])
        };
        match op % 9 {
            0 => {
                let peer = node(&mut c);
                let epoch = u64::from(c.byte() % 4);
                let flags = c.byte();
                let hello = Hello {
                    version: PROTOCOL_VERSION,
                    node_id: peer.clone(),
                    epoch,
                    caps: match flags & 6 {
                        0 => caps::STREAMS,
                        2 => caps::EPHEMERAL,
                        _ => caps::STREAMS | caps::LEAF,
                    },
                    idle_timeout_ms: 1000,
                    cost: 1.0,
                };
                let cost = COSTS[usize::from(c.byte()) % COSTS.len()];
                next_link += 1;
                if hello.caps & caps::LEAF != 0 {
                    leaf_links.insert(next_link);
                }
                if mesh.admit(next_link, &hello, cost, flags & 1 != 0, flags & 16 != 0) == Admission::Admit {
                    assert_ne!(&peer, mesh.me(), "admitted a peer with this node's id");
                    links.push((next_link, Phase::Admitted));
                    if links.len() > 64 {
                        links.remove(0);
                    }
                }
            }
            1 => {
                if let Some(i) = find(&links, &|p| p == Phase::Admitted) {
                    links[i].1 = Phase::Up;
                    mesh.link_up(now, links[i].0);
                }
            }
            2 => {
                if let Some(i) = find(&links, &|_| true) {
                    mesh.link_down(now, links.remove(i).0);
                }
            }
            3 | 8 => {
                let l = lsa(&mut c);
                if let (Some(i), Some(l)) = (find(&links, &|p| p == Phase::Up), l) {
                    mesh.on_lsa(now, links[i].0, l);
                }
            }
            4 => {
                now += Duration::from_millis(250 * u64::from(c.byte()));
                mesh.tick(now);
            }
            5 => mesh.set_work_types(now, work_types(&mut c)),
            6 => mesh.leave(),
            _ => drain(&mut mesh, &leaf_links),
        }
        if let Err(e) = mesh.check_invariants() {
            panic!("after step {steps} (op {}): {e}", op % 9);
        }
    }
    drain(&mut mesh, &leaf_links);
    if let Err(e) = mesh.check_invariants() {
        panic!("at the end: {e}");
    }
}

/// Takes the mesh's actions and checks every frame it asks to send: encodable within the
/// frame limit, decodable; no advertisement to a leaf, none but its own from a leaf.
fn drain(mesh: &mut Mesh, leaf_links: &HashSet<LinkId>) {
    let leaf = mesh.role() == Role::Leaf;
    for action in mesh.drain_actions() {
        if let Action::Send { frame, link } = action {
            if let Frame::Lsa(lsa) = &frame {
                assert!(!leaf_links.contains(&link), "an advertisement of {} sent to a leaf", lsa.origin);
                assert!(!leaf || lsa.origin == *mesh.me(), "a leaf forwarded {}'s advertisement", lsa.origin);
            }
            let enc = frame.encode();
            assert!(enc.len() - 4 <= MAX_FRAME, "the mesh asked to send an oversized {}", frame.kind());
            assert!(
                Frame::decode(enc.slice(4..)).is_ok(),
                "the mesh asked to send an undecodable {}",
                frame.kind()
            );
        }
    }
}
