//! Property test: every frame that can be built from the wire types — reasons of any
//! length, names and blobs at their limits, advertisements as nodes build them — encodes
//! into bytes the decoder accepts and decodes back to the same frame.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    "[A-Za-z0-9._@:-]{1,64}".prop_filter_map("reserved", |s| NodeId::new(s).ok())
}

fn name() -> impl Strategy<Value = Name> {
    proptest::string::string_regex(".{0,300}")
        .expect("regex")
        .prop_filter_map("too long for a name", |s| Name::new(s).ok())
}

fn reason() -> impl Strategy<Value = Reason> {
    prop_oneof![
        proptest::string::string_regex(".{0,64}").expect("regex").prop_map(Reason::new),
        (proptest::char::any(), 1000usize..6000).prop_map(|(c, n)| Reason::new(c.to_string().repeat(n))),
    ]
}

fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        Just(Bytes::from(vec![0xA5; max])),
    ]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Opener), Just(Side::Acceptor)]
}

fn lsa() -> impl Strategy<Value = Lsa> {
    let neighbours = prop_oneof![
        proptest::collection::vec((node_id(), 0.001f64..1e6), 0..8),
        // The most links a node admits, with the longest IDs.
        Just((0..MAX_LSA_ITEMS).map(|i| (NodeId::new(format!("{i:0>64}")).expect("id"), 1.0)).collect()),
    ];
    let work = proptest::collection::vec((name(), name()), 0..4)
        .prop_map(|v| v.into_iter().map(|(name, version)| WorkTypeAd { name, version }).collect());
    let sig = (
        any::<u16>(),
        any::<u64>(),
        proptest::collection::vec(blob(MAX_SIG_CERT), 1..=MAX_SIG_CHAIN),
        blob(MAX_SIGNATURE),
    )
        .prop_map(|(scheme, signed_at, chain, signature)| LsaSig { scheme, signed_at, chain, signature });
    let sig = proptest::option::of(sig);
    let flags = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
    (node_id(), any::<u64>(), any::<u64>(), flags, neighbours, work, sig).prop_map(
        |(origin, epoch, seq, (leaving, ephemeral, leaf, marked), mut neighbors, work_types, sig)| {
            // Some advertisements carry relay marks (every other neighbour marked).
            if marked {
                for (i, (_, c)) in neighbors.iter_mut().enumerate() {
                    *c = crate::wire::marked_cost(*c, i % 2 == 1);
                }
            }
            let relay_marks = crate::wire::carries_relay_marks(&neighbors);
            Lsa { origin, epoch, seq, leaving, ephemeral, leaf, neighbors, relay_marks, work_types, sig }
        },
    )
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        any::<u64>().prop_map(|id| Body::Ping { id }),
        any::<u64>().prop_map(|id| Body::Pong { id }),
        any::<u64>().prop_map(|id| Body::Expired { id }),
        (proptest::option::of((any::<u64>(), side())), reason())
            .prop_map(|(stream, reason)| Body::Unreachable { stream, reason }),
        (any::<u64>(), name(), any::<u32>(), blob(MAX_META))
            .prop_map(|(stream, service, window, header)| Body::Open { stream, service, window, header }),
        (any::<u64>(), side(), any::<u64>(), blob(MAX_DATA_CHUNK))
            .prop_map(|(stream, from, offset, data)| Body::Data { stream, from, offset, data }),
        (any::<u64>(), side(), any::<u32>()).prop_map(|(stream, from, n)| Body::Credit { stream, from, n }),
        (any::<u64>(), side(), blob(MAX_META)).prop_map(|(stream, from, trailer)| Body::Fin {
            stream,
            from,
            trailer
        }),
        (any::<u64>(), side(), reason()).prop_map(|(stream, from, reason)| Body::Reset {
            stream,
            from,
            reason
        }),
        (any::<u64>(), side()).prop_map(|(stream, from)| Body::Stop { stream, from }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), node_id(), any::<u64>(), any::<u32>(), any::<u32>(), 0.001f64..1e6).prop_map(
            |(version, node_id, epoch, caps, idle_timeout_ms, cost)| {
                Frame::Hello(Hello { version, node_id, epoch, caps, idle_timeout_ms, cost })
            }
        ),
        Just(Frame::Admit),
        reason().prop_map(|reason| Frame::Reject { reason }),
        Just(Frame::Keepalive),
        lsa().prop_map(Frame::Lsa),
        Just(Frame::SyncDone),
        reason().prop_map(|reason| Frame::Goodbye { reason }),
        (node_id(), node_id(), any::<u8>(), body())
            .prop_map(|(src, dst, hops_left, body)| Frame::Routed(Routed { src, dst, hops_left, body })),
        blob(MAX_NETCEPTOR_PACKET).prop_map(Frame::Netceptor),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_frame_that_can_be_built_decodes_to_itself(f in frame()) {
        let bytes = f.encode();
        prop_assert!(bytes.len() - 4 <= MAX_FRAME, "frame of {} bytes", bytes.len());
        if let Frame::Lsa(lsa) = &f {
            prop_assert_eq!(lsa.encoded_len(), bytes.len(), "encoded_len of an advertisement");
        }
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let decoded = tokio_util::codec::Decoder::decode(&mut FrameCodec::default(), &mut buf);
        prop_assert_eq!(decoded.expect("decodes"), Some(f));
    }
}

#[test]
fn a_carried_netceptor_packet_is_bounded_and_its_head_matches_the_frame() {
    let p = Bytes::from(vec![7u8; 300]);
    let mut head = netceptor_head(p.len()).to_vec();
    head.extend_from_slice(&p);
    assert_eq!(head, Frame::Netceptor(p).encode().to_vec(), "head + packet is the frame");
    let mut body = vec![0x08];
    body.extend(std::iter::repeat_n(0u8, MAX_NETCEPTOR_PACKET + 1));
    assert!(matches!(
        Frame::decode(Bytes::from(body)),
        Err(DecodeError::TooLong { what: "netceptor packet", .. })
    ));
    assert_eq!(Frame::decode(Bytes::from_static(&[0x08])), Ok(Frame::Netceptor(Bytes::new())));
}
