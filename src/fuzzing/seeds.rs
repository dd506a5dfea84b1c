//! Well-formed starting inputs for every target, built with the library's own encoders so
//! the fuzzer starts from the formats it must mangle. The corpus replay test runs them too,
//! and `make fuzz` writes them into an empty corpus.

use std::io::{Cursor, Write};

use bytes::Bytes;
use serde_json::json;
use zip::write::SimpleFileOptions;

use crate::wire::{
    Body, Frame, Hello, Lsa, Name, NodeId, PREFACE, PROTOCOL_VERSION, Reason, Routed, Side, WorkTypeAd, caps,
};

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid id")
}

fn hello(node: &str, version: u16) -> Frame {
    Frame::Hello(Hello {
        version,
        node_id: id(node),
        epoch: 3,
        caps: caps::STREAMS,
        idle_timeout_ms: 20_000,
        cost: 1.5,
    })
}

fn frames() -> Vec<Frame> {
    let routed = |body| Frame::Routed(Routed { src: id("a"), dst: id("b"), hops_left: 9, body });
    vec![
        hello("a", PROTOCOL_VERSION),
        Frame::Admit,
        Frame::Reject { reason: Reason::new("no") },
        Frame::Keepalive,
        Frame::Lsa(Lsa {
            origin: id("a"),
            epoch: 1,
            seq: 7,
            leaving: false,
            ephemeral: false,
            leaf: false,
            neighbors: vec![(id("b"), 1.0), (id("c"), 2.5)],
            relay_marks: false,
            work_types: vec![WorkTypeAd {
                name: Name::new("echo").expect("name"),
                version: Name::new("1").expect("name"),
            }],
            sig: None,
        }),
        // A signed one: the signature block's lengths for the fuzzer to mutate.
        Frame::Lsa(Lsa {
            origin: id("b"),
            epoch: 1,
            seq: 1,
            leaving: true,
            ephemeral: false,
            leaf: false,
            neighbors: Vec::new(),
            relay_marks: false,
            work_types: Vec::new(),
            sig: Some(crate::wire::LsaSig {
                scheme: 0x0403,
                signed_at: 2,
                chain: vec![bytes::Bytes::from_static(b"\x30\x03der")],
                signature: bytes::Bytes::from_static(b"signature"),
            }),
        }),
        Frame::SyncDone,
        Frame::Goodbye { reason: Reason::new("bye") },
        routed(Body::Ping { id: 1 }),
        routed(Body::Unreachable { stream: Some((4, Side::Opener)), reason: Reason::new("gone") }),
        routed(Body::Open {
            stream: 4,
            service: Name::new("control").expect("name"),
            window: 65536,
            header: Bytes::from_static(b"hdr"),
        }),
        routed(Body::Data { stream: 4, from: Side::Opener, offset: 0, data: Bytes::from_static(b"hello") }),
        routed(Body::Credit { stream: 4, from: Side::Acceptor, n: 5 }),
        routed(Body::Fin { stream: 4, from: Side::Opener, trailer: Bytes::new() }),
        routed(Body::Reset { stream: 4, from: Side::Acceptor, reason: Reason::new("r") }),
        routed(Body::Stop { stream: 4, from: Side::Acceptor }),
        // A carried netceptor packet (a routing update, as Go frames it).
        Frame::Netceptor(Bytes::from_static(b"\x01{\"NodeID\":\"a\",\"ForwardingNode\":\"a\"}")),
    ]
}

fn zip_seed(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, mode, data) in entries {
        let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        if mode & 0o170_000 == 0o120_000 {
            w.add_symlink(*name, String::from_utf8_lossy(data), opts.unix_permissions(0o777))
                .expect("zip symlink");
        } else if name.ends_with('/') {
            w.add_directory(*name, opts.unix_permissions(*mode)).expect("zip dir");
        } else {
            w.start_file(*name, opts.unix_permissions(*mode)).expect("zip file");
            w.write_all(data).expect("zip data");
        }
    }
    w.finish().expect("zip").into_inner()
}

/// Seeds for `target` (empty for an unknown name).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame" => {
            let mut all = Vec::new();
            let mut out: Vec<Vec<u8>> = frames()
                .iter()
                .map(|f| {
                    let enc = f.encode();
                    all.extend_from_slice(&enc);
                    enc[4..].to_vec()
                })
                .collect();
            out.push(all);
            out
        }
        "handshake" => {
            let opening = |opts: u8, frames: &[Frame]| {
                let mut v = vec![opts];
                v.extend_from_slice(&PREFACE);
                frames.iter().for_each(|f| v.extend_from_slice(&f.encode()));
                v
            };
            vec![
                opening(0, &[hello("a", PROTOCOL_VERSION), Frame::Admit]),
                opening(3, &[hello("a", PROTOCOL_VERSION), Frame::Reject { reason: Reason::new("no") }]),
                opening(4, &[hello("fuzz-me", PROTOCOL_VERSION), Frame::Admit]),
                opening(1, &[hello("b", PROTOCOL_VERSION + 1)]),
                opening(0, &[Frame::Keepalive]),
            ]
        }
        "transmit_stream" => {
            let zip = zip_seed(&[("project/", 0o755, b""), ("project/main.yml", 0o644, b"- hosts: all\n")]);
            let mut s = vec![7, 3];
            s.extend_from_slice(&crate::runner::pyjson::line(&json!({"kwargs": {"playbook": "main.yml"}})));
            crate::runner::write_zip_section(&mut s, &mut zip.as_slice(), zip.len() as u64).expect("section");
            s.extend_from_slice(b"{\"status\": \"running\"}\n{\"event\": \"keepalive\"}\n");
            s.extend_from_slice(b"{\"counter\": 1, \"uuid\": \"u\", \"stdout\": \"ok\"}\n{\"eof\": true}\n");
            vec![s, b"\x01\x01{\"zipfile\": 4}\nAAAA\nAA==\n{\"eof\": true}\n".to_vec()]
        }
        "extract" => vec![
            zip_seed(&[("env/", 0o755, b""), ("env/extravars", 0o600, b"{}"), ("project/x.yml", 0o644, b"-")]),
            zip_seed(&[("l", 0o120_777, b"sub/x"), ("sub/x", 0o644, b"y"), ("file", 0o4755, b"z")]),
            zip_seed(&[("up", 0o120_777, b"../outside"), ("out/x", 0o644, b"y"), ("../x", 0o644, b"")]),
        ],
        "control_line" => vec![
            b"\x07status\nping a\r\nwork submit a echo x y\nwork status abc\nconnect a control\n".to_vec(),
            b"\x40{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"a\",\"worktype\":\"echo\",\"ttl\":\"1h2m3.5s\"}\n{\"command\":\"connect\",\"node\":\"localhost\",\"service\":\"s\"}\n{\"command\":\"work\",\"subcommand\":\"release\",\"unitid\":\"u\"}\n".to_vec(),
        ],
        "mesh_events" => vec![
            // Caps, then: admit a on link 1, link up, a's advert listing us, drain, tick.
            vec![4, 3, 0, 4, 0, 0, 1, 1, 0, 1, 1, 1, 3, 1, 0, 1, 0, 5, 0, 1, 0, 0, 0, 7, 0, 4, 0, 200, 7, 0],
            vec![8, 8, 255, 7, 0, 0, 2, 2, 1, 0, 0, 1, 2, 3, 2, 2, 1, 2, 9, 0, 2, 5, 1, 2, 7, 1, 2, 1, 6, 0],
        ],
        "stream_records" => vec![
            // Raw bytes: a plausible record prefix and a body that cannot open.
            vec![0, 40, 0, 0, 0, 0, 33, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18],
            // Header, data, end; untouched, fed in 7-byte pieces.
            vec![1, 3, 2, 4, 0, 20, 1, 0, 0, 7, 0],
            // The same with one bit flipped, one record cut short, and a reflected copy.
            vec![1, 3, 2, 4, 0, 20, 1, 0, 1, 30, 0, 3, 0, 9, 0],
            vec![1, 3, 2, 4, 0, 20, 1, 0, 1, 10, 0, 0, 4, 9, 0],
            vec![3, 2, 0, 9, 1, 0, 0, 50, 0],
        ],
        "netceptor_packet" => netceptor_seeds(),
        "netceptor_events" => vec![
            // Caps; open link 0; b's first update on it; an ad; a ping for us; time passes.
            vec![3, 3, 8, 0, 0, 1, 0, 2, 0, 2, 0, 1, 5, 2, 0, 3, 0, 2, 0, 1, 1, 0, 0, 1, 0, 4, 2, 2, 1, 0, 0, 0, 6, 5, 0],
            vec![8, 8, 15, 1, 0, 2, 1, 2, 1, 0, 2, 3, 1, 2, 0, 2, 1, 2, 1, 7, 0, 1, 7, 2, 6, 200, 0, 1, 6, 255, 3],
        ],
        _ => Vec::new(),
    }
}

/// Packets Go Receptor 1.4.0 sent (captured), alone and framed as a TCP stream.
fn netceptor_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        b"\x01{\"NodeID\":\"gonode3\",\"UpdateID\":\"2WWymFLS\",\"UpdateEpoch\":30142315984389383,\"UpdateSequence\":4,\"Connections\":{\"gonode2\":2.5},\"ForwardingNode\":\"gonode2\",\"SuspectedDuplicate\":0}".to_vec(),
        b"\x02{\"NodeID\":\"gonode1\",\"Service\":\"control\",\"Time\":\"2026-12-07T05:36:07.702065904Z\",\"ConnType\":1,\"Tags\":{\"type\":\"Control Service\"},\"WorkCommands\":[{\"WorkType\":\"cat\",\"Secure\":false}],\"Cancel\":false}".to_vec(),
        b"\x03[]".to_vec(),
    ];
    let mut ping = vec![0u8, 0x1d, 0, 0];
    ping.extend_from_slice(&0xaf7bd013be877758u64.to_be_bytes());
    ping.extend_from_slice(&0xf0a82caec3d7343au64.to_be_bytes());
    ping.extend_from_slice(b"JJwSLZI0ping\0\0\0\0");
    out.push(ping);
    let mut stream = Vec::new();
    for p in &out {
        stream.extend_from_slice(&crate::netceptor::framing::frame(p).expect("frames"));
    }
    out.push(stream);
    out
}
