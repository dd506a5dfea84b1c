//! Fixtures captured between Go Receptor 1.4.0 nodes, and property tests: every packet
//! the encoder builds decodes back to itself; the decoder never panics.

use proptest::prelude::*;

use super::*;

const GO_UPDATE: &str = r#"{"NodeID":"gonode3","UpdateID":"2WWymFLS","UpdateEpoch":30142315984389383,"UpdateSequence":4,"Connections":{"gonode2":2.5},"ForwardingNode":"gonode2","SuspectedDuplicate":0}"#;
const GO_AD: &str = r#"{"NodeID":"gonode1","Service":"control","Time":"2026-12-07T05:36:07.702065904Z","ConnType":1,"Tags":{"type":"Control Service"},"WorkCommands":[{"WorkType":"cat","Secure":false}],"Cancel":false}"#;
const GO_AD_NULL: &str = r#"{"NodeID":"gonode2","Service":"control","Time":"2026-12-07T05:36:08.214725968Z","ConnType":1,"Tags":{"type":"Control Service"},"WorkCommands":null,"Cancel":false}"#;
/// A ping request (run1 #8) with its two framing bytes removed.
const GO_PING: &str = "001d0000af7bd013be877758f0a82caec3d7343a4a4a77534c5a493070696e6700000000";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn typed(ty: u8, body: &str) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend_from_slice(body.as_bytes());
    v
}

#[test]
fn decodes_go_routing_update_and_reencodes_it() {
    let Packet::Routing(u) = Packet::decode(&typed(1, GO_UPDATE)).expect("decodes") else {
        panic!("not routing")
    };
    assert_eq!(u.node_id, "gonode3");
    assert_eq!(u.epoch, 30142315984389383, "u64 above 2^53 kept exactly");
    assert_eq!(u.sequence, 4);
    assert_eq!(u.connections.get("gonode2"), Some(&2.5));
    assert_eq!(u.forwarding_node, "gonode2");
    let again = Packet::Routing(u.clone()).encode().expect("encodes");
    assert_eq!(&again[..], &typed(1, GO_UPDATE)[..], "field order and number format as Go's");
}

#[test]
fn decodes_go_service_ads() {
    let Packet::Service(a) = Packet::decode(&typed(2, GO_AD)).expect("decodes") else { panic!("not an ad") };
    assert_eq!(a.service, "control");
    assert_eq!(a.conn_type, CONN_STREAM);
    assert_eq!(a.tags.as_ref().and_then(|t| t.get("type")).map(String::as_str), Some("Control Service"));
    assert_eq!(a.work_commands, Some(vec![WorkCommand { work_type: "cat".into(), secure: false }]));
    assert_eq!(a.time.nanosecond(), 702065904);
    let again = Packet::Service(a).encode().expect("encodes");
    assert_eq!(&again[..], &typed(2, GO_AD)[..]);
    let Packet::Service(b) = Packet::decode(&typed(2, GO_AD_NULL)).expect("decodes") else {
        panic!("not an ad")
    };
    assert_eq!(b.work_commands, None);
}

#[test]
fn decodes_go_ping_and_reencodes_it_byte_identically() {
    let raw = hex(GO_PING);
    let Packet::Data(d) = Packet::decode(&raw).expect("decodes") else { panic!("not data") };
    assert_eq!(d.hops, 29);
    assert_eq!(d.from_hash, 0xaf7bd013be877758);
    assert_eq!(d.to_hash, 0xf0a82caec3d7343a);
    assert_eq!(d.from_service, "JJwSLZI0");
    assert_eq!(d.to_service, "ping");
    assert!(d.payload.is_empty());
    assert_eq!(&d.encode().expect("encodes")[..], &raw[..]);
}

#[test]
fn go_json_variants_are_accepted() {
    // Missing keys are zero values, null maps are empty, unknown keys are ignored.
    let Packet::Routing(u) =
        Packet::decode(&typed(1, r#"{"NodeID":"a","Connections":null,"Extra":[1,2]}"#)).expect("decodes")
    else {
        panic!("not routing")
    };
    assert!(u.connections.is_empty());
    assert_eq!(u.epoch, 0);
    assert_eq!(Packet::decode(&typed(3, "[]")), Ok(Packet::Reject));
    assert_eq!(Packet::decode(&[9, 1, 2]), Ok(Packet::Unknown(9)));
}

#[test]
fn refuses_hostile_packets() {
    assert_eq!(Packet::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(Packet::decode(&[0; 35]), Err(DecodeError::ShortData(35)));
    assert!(matches!(Packet::decode(&vec![1; MAX_PACKET + 1]), Err(DecodeError::TooLong(_))));
    let long = format!(r#"{{"NodeID":"{}"}}"#, "x".repeat(MAX_NAME + 1));
    assert!(matches!(Packet::decode(&typed(1, &long)), Err(DecodeError::Json(_))));
    let many: Vec<String> = (0..=MAX_CONNECTIONS).map(|i| format!(r#""n{i}":1"#)).collect();
    let body = format!(r#"{{"NodeID":"a","Connections":{{{}}}}}"#, many.join(","));
    assert!(matches!(Packet::decode(&typed(1, &body)), Err(DecodeError::Json(_))));
    let mut bad_svc = hex(GO_PING);
    bad_svc[20] = 0xff;
    assert_eq!(Packet::decode(&bad_svc), Err(DecodeError::ServiceName));
}

#[test]
fn unreachable_round_trips() {
    let m = Unreachable {
        from_node: "a".into(),
        to_node: "b".into(),
        from_service: "x".into(),
        to_service: "y".into(),
        problem: "service unknown".into(),
    };
    assert_eq!(decode_unreachable(&encode_unreachable(&m)), Ok(m));
}

fn svc() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{0,8}"
}

fn node() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._@:-]{1,64}"
}

fn data() -> impl Strategy<Value = DataPacket> {
    (any::<u8>(), any::<u64>(), any::<u64>(), svc(), svc(), proptest::collection::vec(any::<u8>(), 0..2000))
        .prop_map(|(hops, from_hash, to_hash, from_service, to_service, p)| DataPacket {
            hops,
            from_hash,
            to_hash,
            from_service,
            to_service,
            payload: Bytes::from(p),
        })
}

fn update() -> impl Strategy<Value = RoutingUpdate> {
    let conns = proptest::collection::btree_map(node(), 0.001f64..1e9, 0..20);
    (node(), "[A-Za-z0-9]{8}", any::<u64>(), any::<u64>(), conns, node(), any::<u64>()).prop_map(
        |(node_id, update_id, epoch, sequence, connections, forwarding_node, suspected_duplicate)| {
            RoutingUpdate {
                node_id,
                update_id,
                epoch,
                sequence,
                connections,
                forwarding_node,
                suspected_duplicate,
            }
        },
    )
}

fn ad() -> impl Strategy<Value = ServiceAd> {
    let works = proptest::option::of(proptest::collection::vec(
        ("[a-z-]{1,20}", any::<bool>()).prop_map(|(work_type, secure)| WorkCommand { work_type, secure }),
        0..5,
    ));
    let tags = proptest::option::of(proptest::collection::btree_map("[a-z]{1,8}", ".{0,20}", 0..3));
    (node(), svc(), 0i64..4_000_000_000, 0u32..1_000_000_000, 0u8..3, tags, works, any::<bool>()).prop_map(
        |(node_id, service, secs, nanos, conn_type, tags, work_commands, cancel)| ServiceAd {
            node_id,
            service,
            time: time::OffsetDateTime::from_unix_timestamp(secs).expect("time")
                + time::Duration::nanoseconds(i64::from(nanos)),
            conn_type,
            tags,
            work_commands,
            cancel,
        },
    )
}

proptest! {
    #[test]
    fn every_packet_round_trips(p in prop_oneof![
        data().prop_map(Packet::Data),
        update().prop_map(Packet::Routing),
        ad().prop_map(Packet::Service),
        Just(Packet::Reject),
    ]) {
        let bytes = p.encode().expect("encodes");
        prop_assert!(bytes.len() <= MAX_PACKET);
        prop_assert_eq!(Packet::decode(&bytes).expect("decodes"), p);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), ty in 0u8..5) {
        let mut b = vec![ty];
        b.extend_from_slice(&bytes);
        let _ = Packet::decode(&b);
    }
}
