//! Packet framing of netceptor's stream backends (TCP, and TCP inside TLS): each packet
//! is a 2-byte little-endian length followed by that many bytes (Go `pkg/framer`). A
//! length of zero is not a packet (Go never sends one); it is refused rather than looped
//! on, so a peer cannot spin the reader.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::wire::MAX_PACKET;

/// Codec of u16-LE length-prefixed packets; frames longer than its `max` are refused.
#[derive(Debug, Clone, Copy)]
pub struct PacketCodec {
    max: usize,
}

impl Default for PacketCodec {
    fn default() -> Self {
        PacketCodec { max: MAX_PACKET }
    }
}

impl PacketCodec {
    /// A codec refusing frames longer than `max` bytes (`limits.netceptor.max_packet`).
    pub fn new(max: usize) -> PacketCodec {
        PacketCodec { max: max.min(MAX_PACKET) }
    }
}

/// Why a byte stream is not a sequence of framed packets.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("empty frame")]
    Empty,
    #[error("packet of {0} bytes does not fit a frame")]
    TooLong(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for PacketCodec {
    type Item = Bytes;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        if src.len() < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_le_bytes([src[0], src[1]]));
        if len == 0 {
            return Err(FramingError::Empty);
        }
        if len > self.max {
            return Err(FramingError::TooLong(len));
        }
        if src.len() < 2 + len {
            src.reserve(2 + len - src.len());
            return Ok(None);
        }
        src.advance(2);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl Encoder<Bytes> for PacketCodec {
    type Error = FramingError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FramingError> {
        let len = u16::try_from(item.len()).map_err(|_| FramingError::TooLong(item.len()))?;
        if len == 0 {
            return Err(FramingError::Empty);
        }
        debug_assert!(item.len() <= MAX_PACKET);
        dst.reserve(2 + item.len());
        dst.put_u16_le(len);
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// Whether a connection's first four bytes are how a netceptor peer opens a stream
/// session: the frame length of its first routing update (a JSON object), the type
/// byte 1 and `{`. Listeners shared with another protocol hand only such connections over.
pub fn opens_like_netceptor(first: &[u8]) -> bool {
    matches!(first, [lo, hi, 1, b'{', ..] if u16::from_le_bytes([*lo, *hi]) >= 2)
}

/// Frames one packet (for writers that do not use the codec).
pub fn frame(packet: &[u8]) -> Result<Bytes, FramingError> {
    let mut out = BytesMut::new();
    PacketCodec::default().encode(Bytes::copy_from_slice(packet), &mut out)?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = BytesMut::new();
        for p in [&b"\x01{}"[..], &[0u8; 300][..], &[7u8; MAX_PACKET][..]] {
            PacketCodec::default().encode(Bytes::copy_from_slice(p), &mut wire).expect("encodes");
        }
        let all = wire.freeze();
        for step in [1usize, 3, 1000, all.len()] {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in all.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(p) = PacketCodec::default().decode(&mut buf).expect("decodes") {
                    got.push(p.len());
                }
            }
            assert_eq!(got, vec![3, 300, MAX_PACKET]);
        }
    }

    #[test]
    fn tells_a_go_peer_from_others() {
        assert!(opens_like_netceptor(&[0xa1, 0, 1, b'{']));
        assert!(!opens_like_netceptor(b"RCPT"));
        assert!(!opens_like_netceptor(b"GET "));
        assert!(!opens_like_netceptor(&[1, 0, 1, b'{']));
    }

    #[test]
    fn refuses_frames_over_the_limit_before_buffering_them() {
        let mut buf = BytesMut::from(&[0x00u8, 0x08, 1][..]);
        assert!(matches!(PacketCodec::new(2000).decode(&mut buf), Err(FramingError::TooLong(2048))));
        let mut ok = BytesMut::from(&[0x03u8, 0x00, 1, b'{', b'}'][..]);
        assert_eq!(PacketCodec::new(2000).decode(&mut ok).expect("decodes").map(|b| b.len()), Some(3));
    }

    #[test]
    fn refuses_empty_and_oversized() {
        assert!(matches!(
            PacketCodec::default().decode(&mut BytesMut::from(&[0u8, 0][..])),
            Err(FramingError::Empty)
        ));
        let mut out = BytesMut::new();
        assert!(matches!(
            PacketCodec::default().encode(Bytes::from(vec![0; MAX_PACKET + 1]), &mut out),
            Err(FramingError::TooLong(_))
        ));
    }
}
