//! Rolling upgrades: nodes that know relay marks and nodes of the same protocol version
//! 2 built before them share one mesh. A frozen copy of the advertisement codec as those
//! older nodes have it (`v2`, written from docs/PROTOCOL.md §3 of that version: unknown
//! flag bits dropped on re-encoding, costs kept bit for bit) shows that they decode a
//! marked, signed advertisement, verify it over the same signed message and forward it
//! byte for byte; and that what they originate means "no marks" here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::tests::{ca, context, issue};
use super::{CertSigner, LsaSigner, Verifier};
use crate::wire::{Frame, Lsa, NodeId, marked_cost};

/// The advertisement codec of nodes built before relay marks.
mod v2 {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    pub struct Lsa {
        pub origin: String,
        pub epoch: u64,
        pub seq: u64,
        pub leaving: bool,
        pub ephemeral: bool,
        pub leaf: bool,
        pub neighbors: Vec<(String, f64)>,
        pub work_types: Vec<(String, String)>,
        /// scheme, signed_at, chain, signature
        pub sig: Option<(u16, u64, Vec<Bytes>, Bytes)>,
    }

    fn str(b: &mut Bytes) -> String {
        let n = b.get_u16() as usize;
        String::from_utf8(b.split_to(n).to_vec()).expect("utf-8")
    }

    fn blob(b: &mut Bytes) -> Bytes {
        let n = b.get_u32() as usize;
        b.split_to(n)
    }

    /// Decodes a frame body (tag first); panics where a v2 node would close the link.
    pub fn decode(mut b: Bytes) -> Lsa {
        assert_eq!(b.get_u8(), 0x05, "an Lsa frame");
        let origin = str(&mut b);
        let (epoch, seq, flags) = (b.get_u64(), b.get_u64(), b.get_u8());
        let neighbors = (0..b.get_u16()).map(|_| (str(&mut b), b.get_f64())).collect::<Vec<_>>();
        assert!(neighbors.iter().all(|(_, c)| c.is_finite() && *c > 0.0), "v2 takes positive finite costs");
        let work_types = (0..b.get_u16()).map(|_| (str(&mut b), str(&mut b))).collect();
        let sig = (flags & 4 != 0).then(|| {
            let (scheme, signed_at, k) = (b.get_u16(), b.get_u64(), b.get_u8());
            let chain = (0..k).map(|_| blob(&mut b)).collect();
            (scheme, signed_at, chain, blob(&mut b))
        });
        assert!(!b.has_remaining(), "no trailing bytes");
        Lsa {
            origin,
            epoch,
            seq,
            leaving: flags & 1 != 0,
            ephemeral: flags & 2 != 0,
            leaf: flags & 8 != 0,
            neighbors,
            work_types,
            sig,
        }
    }

    fn fields(l: &Lsa, buf: &mut BytesMut, signed: bool) {
        let put = |buf: &mut BytesMut, s: &str| {
            buf.put_u16(s.len() as u16);
            buf.put_slice(s.as_bytes());
        };
        buf.put_u8(0x05);
        put(buf, &l.origin);
        buf.put_u64(l.epoch);
        buf.put_u64(l.seq);
        buf.put_u8(
            u8::from(l.leaving) | u8::from(l.ephemeral) << 1 | u8::from(signed) << 2 | u8::from(l.leaf) << 3,
        );
        buf.put_u16(l.neighbors.len() as u16);
        for (n, c) in &l.neighbors {
            put(buf, n);
            buf.put_f64(*c);
        }
        buf.put_u16(l.work_types.len() as u16);
        for (n, v) in &l.work_types {
            put(buf, n);
            put(buf, v);
        }
    }

    /// The frame body a v2 relay forwards (it re-encodes what it decoded).
    pub fn encode(l: &Lsa) -> Bytes {
        let mut buf = BytesMut::new();
        fields(l, &mut buf, l.sig.is_some());
        if let Some((scheme, signed_at, chain, signature)) = &l.sig {
            buf.put_u16(*scheme);
            buf.put_u64(*signed_at);
            buf.put_u8(chain.len() as u8);
            for c in chain {
                buf.put_u32(c.len() as u32);
                buf.put_slice(c);
            }
            buf.put_u32(signature.len() as u32);
            buf.put_slice(signature);
        }
        buf.freeze()
    }

    /// What a v2 node verifies the signature over.
    pub fn signed_message(l: &Lsa) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_slice(b"receptord link-state advertisement v2\0");
        buf.put_u64(l.sig.as_ref().expect("signed").1);
        fields(l, &mut buf, false);
        buf.to_vec()
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn body(lsa: &Lsa) -> Bytes {
    Frame::Lsa(lsa.clone()).encode().slice(4..)
}

fn decode(b: Bytes) -> Lsa {
    match Frame::decode(b).expect("decodes") {
        Frame::Lsa(l) => l,
        other => panic!("{other:?}"),
    }
}

#[test]
fn older_nodes_verify_and_forward_marked_advertisements_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca(dir.path());
    issue(dir.path(), "hub", "hub", false);
    issue(dir.path(), "other", "other", false);
    // A hub with a leaf, a hub and a client, the leaf and the client marked.
    let mut lsa = Lsa {
        origin: id("hub"),
        epoch: 1_700_000_000_000_000_000,
        seq: 7,
        leaving: false,
        ephemeral: false,
        leaf: false,
        neighbors: vec![
            (id("client"), marked_cost(1.0, true)),
            (id("hub-2"), marked_cost(2.5, false)),
            (id("leaf"), marked_cost(0.3, true)),
        ],
        relay_marks: true,
        work_types: Vec::new(),
        sig: None,
    };
    CertSigner::new(context(dir.path(), "hub", "hub")).sign(&mut lsa);
    let sent = body(&lsa);
    let old = v2::decode(sent.clone());
    assert_eq!(v2::signed_message(&old), lsa.signed_message(lsa.sig.as_ref().expect("signed").signed_at));
    let forwarded = v2::encode(&old);
    assert_eq!(forwarded, sent, "a v2 relay forwards it byte for byte");
    // Costs as an older node routes by them: within 2^-36 of the configured ones.
    for ((_, got), want) in old.neighbors.iter().zip([1.0, 2.5, 0.3]) {
        assert!(((got - want) / want).abs() < 2f64.powi(-36), "{got} vs {want}");
    }
    // A node with marks that gets it through the older relay reads the marks and the
    // signature verifies.
    let back = decode(forwarded);
    assert!(back.relay_marks);
    assert_eq!(back.listing(&id("leaf")), Some(true));
    assert_eq!(back.listing(&id("client")), Some(true));
    assert_eq!(back.listing(&id("hub-2")), Some(false));
    assert_eq!(back.routing_cost(back.neighbors[1].1), 2.5);
    let verifier = Verifier::new(context(dir.path(), "other", "other"), 16);
    assert_eq!(verifier.verify(&back), Ok(()));
}

#[test]
fn what_older_nodes_originate_carries_no_marks() {
    for costs in [vec![1.0], vec![1.0, 2.5, 0.3, 0.9, 10.0], vec![0.001, 1e6, 0.7]] {
        let old = v2::Lsa {
            origin: "old".into(),
            epoch: 1,
            seq: 1,
            leaving: false,
            ephemeral: false,
            leaf: false,
            neighbors: costs.iter().enumerate().map(|(i, c)| (format!("n{i}"), *c)).collect(),
            work_types: vec![("cat".into(), "1".into())],
            sig: None,
        };
        let lsa = decode(v2::encode(&old));
        assert!(!lsa.relay_marks, "{costs:?}");
        assert!((0..costs.len()).all(|i| !lsa.marks(i)));
        assert_eq!(body(&lsa), v2::encode(&old), "and re-encodes unchanged");
    }
}
