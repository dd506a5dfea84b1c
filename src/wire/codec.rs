//! Length-prefixed framing (u32 big-endian length, then the body) with a hard size bound.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::{DecodeError, Frame, MAX_FRAME};

/// Splits a byte stream into [`Frame`]s. An oversized length prefix is an error at once,
/// before any of the announced bytes are buffered.
#[derive(Debug, Default)]
pub struct FrameCodec {
    last_len: usize,
}

impl FrameCodec {
    /// The encoded size (length prefix included) of the frame decoded last, so readers
    /// can charge budgets by what the peer actually sent.
    pub fn last_len(&self) -> usize {
        self.last_len
    }
}

/// Why the framing failed; the link is closed on any of these.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    Oversized(usize),
    #[error("empty frame")]
    Empty,
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > MAX_FRAME {
            return Err(CodecError::Oversized(len));
        }
        if len == 0 {
            return Err(CodecError::Empty);
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        self.last_len = 4 + len;
        let body = src.split_to(len).freeze();
        Ok(Some(Frame::decode(body)?))
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes};

    use super::*;
    use crate::wire::*;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    fn samples() -> Vec<Frame> {
        let r = |body| Frame::Routed(Routed { src: node("a"), dst: node("b"), hops_left: 7, body });
        vec![
            Frame::Hello(Hello {
                version: 1,
                node_id: node("n1"),
                epoch: 42,
                caps: caps::STREAMS,
                idle_timeout_ms: 5000,
                cost: 1.5,
            }),
            Frame::Admit,
            Frame::Reject { reason: "nope".into() },
            Frame::Keepalive,
            Frame::Lsa(Lsa {
                origin: node("n1"),
                epoch: 1,
                seq: 9,
                leaving: false,
                ephemeral: true,
                leaf: false,
                neighbors: vec![(node("n2"), 1.0), (node("n3"), 2.5)],
                relay_marks: false,
                work_types: vec![WorkTypeAd { name: name("cat"), version: name("1") }],
                sig: None,
            }),
            Frame::SyncDone,
            Frame::Goodbye { reason: "bye".into() },
            r(Body::Ping { id: 3 }),
            r(Body::Pong { id: 3 }),
            r(Body::Expired { id: 3 }),
            r(Body::Unreachable { stream: Some((5, Side::Acceptor)), reason: "x".into() }),
            r(Body::Unreachable { stream: None, reason: "y".into() }),
            r(Body::Open {
                stream: 1,
                service: name("work"),
                window: 1 << 20,
                header: Bytes::from_static(b"{}"),
            }),
            r(Body::Data { stream: 1, from: Side::Opener, offset: 10, data: Bytes::from(vec![7u8; 1000]) }),
            r(Body::Credit { stream: 1, from: Side::Acceptor, n: 77 }),
            r(Body::Fin { stream: 1, from: Side::Acceptor, trailer: Bytes::from_static(b"t") }),
            r(Body::Reset { stream: 1, from: Side::Opener, reason: "gone".into() }),
            r(Body::Stop { stream: 1, from: Side::Acceptor }),
        ]
    }

    #[test]
    fn round_trips_every_frame() {
        let mut buf = BytesMut::new();
        for f in samples() {
            f.encode_into(&mut buf);
        }
        let mut codec = FrameCodec::default();
        for want in samples() {
            let got = codec.decode(&mut buf).expect("decodes").expect("complete");
            assert_eq!(got, want);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn split_encoding_equals_whole_encoding() {
        for f in samples() {
            if let Frame::Routed(r) = &f {
                let (head, body) = r.encode_split();
                let mut joined = head.to_vec();
                joined.extend_from_slice(&body);
                assert_eq!(joined, f.encode().to_vec());
            }
        }
    }

    #[test]
    fn partial_input_waits_for_more() {
        let bytes = samples()[4].encode();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let r = codec.decode(&mut buf).expect("no error");
            assert_eq!(r.is_some(), i == bytes.len() - 1);
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_without_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(FrameCodec::default().decode(&mut buf), Err(CodecError::Oversized(_))));
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        for f in samples() {
            let enc = f.encode();
            let body = enc.slice(4..);
            for cut in 0..body.len() {
                assert!(Frame::decode(body.slice(..cut)).is_err());
            }
        }
        let mut seed = 0x1234_5678_u64;
        for _ in 0..5000 {
            let len = (seed % 64) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                v.push((seed >> 33) as u8);
            }
            let _ = Frame::decode(Bytes::from(v));
        }
    }

    #[test]
    fn oversized_fields_are_refused() {
        let mut b = BytesMut::new();
        b.put_u8(0x03);
        b.put_u16(u16::MAX);
        b.put_slice(&vec![b'a'; u16::MAX as usize]);
        assert!(matches!(Frame::decode(b.freeze()), Err(DecodeError::TooLong { .. })));
    }
}
