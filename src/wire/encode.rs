//! Binary encoding of [`Frame`]s: big-endian integers, u16-prefixed strings, u32-prefixed blobs.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Body, Frame, Hello, Lsa, Routed, Side};

pub(super) mod tag {
    pub const HELLO: u8 = 0x01;
    pub const ADMIT: u8 = 0x02;
    pub const REJECT: u8 = 0x03;
    pub const KEEPALIVE: u8 = 0x04;
    pub const LSA: u8 = 0x05;
    pub const SYNC_DONE: u8 = 0x06;
    pub const GOODBYE: u8 = 0x07;
    pub const NETCEPTOR: u8 = 0x08;
    pub const ROUTED: u8 = 0x10;

    pub const PING: u8 = 0x01;
    pub const PONG: u8 = 0x02;
    pub const UNREACHABLE: u8 = 0x03;
    pub const EXPIRED: u8 = 0x04;
    pub const OPEN: u8 = 0x10;
    pub const DATA: u8 = 0x11;
    pub const CREDIT: u8 = 0x12;
    pub const FIN: u8 = 0x13;
    pub const RESET: u8 = 0x14;
    pub const STOP: u8 = 0x15;
}

impl Frame {
    /// Encodes the frame with its 4-byte length prefix.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.size_hint() + 4);
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Appends the length-prefixed frame to `buf`.
    pub fn encode_into(&self, buf: &mut BytesMut) {
        let start = buf.len();
        buf.put_u32(0);
        self.encode_body(buf);
        let len = (buf.len() - start - 4) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn size_hint(&self) -> usize {
        match self {
            Frame::Routed(Routed { body: Body::Data { data, .. }, .. }) => data.len() + 160,
            Frame::Netceptor(p) => p.len() + 1,
            _ => 256,
        }
    }

    fn encode_body(&self, buf: &mut BytesMut) {
        match self {
            Frame::Hello(h) => encode_hello(h, buf),
            Frame::Admit => buf.put_u8(tag::ADMIT),
            Frame::Reject { reason } => {
                buf.put_u8(tag::REJECT);
                put_str(buf, reason);
            }
            Frame::Keepalive => buf.put_u8(tag::KEEPALIVE),
            Frame::Lsa(lsa) => encode_lsa(lsa, buf),
            Frame::SyncDone => buf.put_u8(tag::SYNC_DONE),
            Frame::Goodbye { reason } => {
                buf.put_u8(tag::GOODBYE);
                put_str(buf, reason);
            }
            Frame::Routed(r) => encode_routed(r, buf),
            Frame::Netceptor(p) => {
                buf.put_u8(tag::NETCEPTOR);
                buf.put_slice(p);
            }
        }
    }
}

/// The length prefix and tag of a [`Frame::Netceptor`] carrying `len` bytes: sent before
/// the packet itself, which is never copied into a new frame.
pub fn netceptor_head(len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(5);
    buf.put_u32(len as u32 + 1);
    buf.put_u8(tag::NETCEPTOR);
    buf.freeze()
}

/// Domain separation of advertisement signatures: what is signed can never be mistaken
/// for any other signed message (a TLS handshake, a JWT).
pub const LSA_SIG_CONTEXT: &[u8] = b"receptord link-state advertisement v2\0";

impl Lsa {
    /// The bytes an origin signs: [`LSA_SIG_CONTEXT`], the signing time, then the
    /// advertisement's frame body without its signature block (tag, fields, flags without
    /// the signed bit).
    pub fn signed_message(&self, signed_at: u64) -> Vec<u8> {
        let mut buf = BytesMut::with_capacity(LSA_SIG_CONTEXT.len() + 8 + self.unsigned_len());
        buf.put_slice(LSA_SIG_CONTEXT);
        buf.put_u64(signed_at);
        encode_lsa_fields(self, &mut buf, false);
        buf.to_vec()
    }

    /// The size of this advertisement as a frame, length prefix included (what it costs
    /// to store and to send).
    pub fn encoded_len(&self) -> usize {
        let sig = self.sig.as_ref().map_or(0, |s| {
            2 + 8 + 1 + s.chain.iter().map(|c| 4 + c.len()).sum::<usize>() + 4 + s.signature.len()
        });
        self.unsigned_len() + sig
    }

    /// The memory this advertisement holds once stored, in bytes, roughly as the
    /// allocator sees it: its encoded frame (kept to send it on) plus its decoded form,
    /// where every neighbour ID and work type name is an allocation of its own. What
    /// `limits.max_db_bytes` bounds: a flood of advertisements costs what it takes, not
    /// what it weighed on the wire (a neighbour costs three times its wire size).
    pub fn held_bytes(&self) -> usize {
        // A heap block: the payload, the allocator's 8-byte header, 16-byte granules
        // (32 at least).
        let block = |n: usize| (n + 8).next_multiple_of(16).max(32);
        let sig = self.sig.as_ref().map_or(0, |s| s.chain.iter().map(|c| block(c.len())).sum::<usize>());
        self.encoded_len()
            + 256
            + sig
            + self.neighbors.iter().map(|(id, _)| 24 + block(16 + id.as_str().len())).sum::<usize>()
            + self.work_types.iter().map(|w| 48 + block(w.name.len()) + block(w.version.len())).sum::<usize>()
    }

    fn unsigned_len(&self) -> usize {
        let s = |n: usize| 2 + n;
        4 + 1
            + s(self.origin.as_str().len())
            + 8
            + 8
            + 1
            + 2
            + self.neighbors.iter().map(|(id, _)| s(id.as_str().len()) + 8).sum::<usize>()
            + 2
            + self.work_types.iter().map(|w| s(w.name.len()) + s(w.version.len())).sum::<usize>()
    }
}

impl Routed {
    /// Encodes the frame as (everything before the payload, the payload) when it carries
    /// stream data, so the payload is queued and written without being copied; other
    /// frames come whole with an empty second part.
    pub fn encode_split(&self) -> (Bytes, Bytes) {
        let Body::Data { stream, from, offset, data } = &self.body else {
            return (Frame::Routed(self.clone()).encode(), Bytes::new());
        };
        let mut buf = BytesMut::with_capacity(64 + self.src.as_str().len() + self.dst.as_str().len());
        buf.put_u32(0);
        buf.put_u8(tag::ROUTED);
        put_str(&mut buf, self.src.as_str());
        put_str(&mut buf, self.dst.as_str());
        buf.put_u8(self.hops_left);
        stream_head(&mut buf, tag::DATA, *stream, *from);
        buf.put_u64(*offset);
        buf.put_u32(data.len() as u32);
        let len = (buf.len() - 4 + data.len()) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        (buf.freeze(), data.clone())
    }
}

fn encode_hello(h: &Hello, buf: &mut BytesMut) {
    buf.put_u8(tag::HELLO);
    buf.put_u16(h.version);
    put_str(buf, h.node_id.as_str());
    buf.put_u64(h.epoch);
    buf.put_u32(h.caps);
    buf.put_u32(h.idle_timeout_ms);
    buf.put_f64(h.cost);
}

/// Flag bit of an [`Lsa`] carrying a signature block after its work types.
pub(super) const LSA_SIGNED: u8 = 1 << 2;
/// Advertisement flag: the origin is a leaf (docs/PROTOCOL.md §5.8).
pub(super) const LSA_LEAF: u8 = 1 << 3;

fn encode_lsa(lsa: &Lsa, buf: &mut BytesMut) {
    encode_lsa_fields(lsa, buf, lsa.sig.is_some());
    if let Some(sig) = &lsa.sig {
        buf.put_u16(sig.scheme);
        buf.put_u64(sig.signed_at);
        buf.put_u8(sig.chain.len() as u8);
        for cert in &sig.chain {
            put_blob(buf, cert);
        }
        put_blob(buf, &sig.signature);
    }
}

fn encode_lsa_fields(lsa: &Lsa, buf: &mut BytesMut, signed: bool) {
    buf.put_u8(tag::LSA);
    put_str(buf, lsa.origin.as_str());
    buf.put_u64(lsa.epoch);
    buf.put_u64(lsa.seq);
    let signed = if signed { LSA_SIGNED } else { 0 };
    let leaf = if lsa.leaf { LSA_LEAF } else { 0 };
    buf.put_u8(u8::from(lsa.leaving) | (u8::from(lsa.ephemeral) << 1) | signed | leaf);
    buf.put_u16(lsa.neighbors.len() as u16);
    for (id, cost) in &lsa.neighbors {
        put_str(buf, id.as_str());
        buf.put_f64(*cost);
    }
    buf.put_u16(lsa.work_types.len() as u16);
    for wt in &lsa.work_types {
        put_str(buf, &wt.name);
        put_str(buf, &wt.version);
    }
}

fn encode_routed(r: &Routed, buf: &mut BytesMut) {
    buf.put_u8(tag::ROUTED);
    put_str(buf, r.src.as_str());
    put_str(buf, r.dst.as_str());
    buf.put_u8(r.hops_left);
    match &r.body {
        Body::Ping { id } => {
            buf.put_u8(tag::PING);
            buf.put_u64(*id);
        }
        Body::Pong { id } => {
            buf.put_u8(tag::PONG);
            buf.put_u64(*id);
        }
        Body::Expired { id } => {
            buf.put_u8(tag::EXPIRED);
            buf.put_u64(*id);
        }
        Body::Unreachable { stream, reason } => {
            buf.put_u8(tag::UNREACHABLE);
            match stream {
                None => {
                    buf.put_u8(0);
                    buf.put_u64(0);
                }
                Some((id, side)) => {
                    buf.put_u8(1 + side_byte(*side));
                    buf.put_u64(*id);
                }
            }
            put_str(buf, reason);
        }
        Body::Open { stream, service, window, header } => {
            buf.put_u8(tag::OPEN);
            buf.put_u64(*stream);
            put_str(buf, service);
            buf.put_u32(*window);
            put_blob(buf, header);
        }
        Body::Data { stream, from, offset, data } => {
            stream_head(buf, tag::DATA, *stream, *from);
            buf.put_u64(*offset);
            put_blob(buf, data);
        }
        Body::Credit { stream, from, n } => {
            stream_head(buf, tag::CREDIT, *stream, *from);
            buf.put_u32(*n);
        }
        Body::Fin { stream, from, trailer } => {
            stream_head(buf, tag::FIN, *stream, *from);
            put_blob(buf, trailer);
        }
        Body::Reset { stream, from, reason } => {
            stream_head(buf, tag::RESET, *stream, *from);
            put_str(buf, reason);
        }
        Body::Stop { stream, from } => stream_head(buf, tag::STOP, *stream, *from),
    }
}

fn stream_head(buf: &mut BytesMut, t: u8, stream: u64, from: Side) {
    buf.put_u8(t);
    buf.put_u64(stream);
    buf.put_u8(side_byte(from));
}

pub(super) fn side_byte(side: Side) -> u8 {
    match side {
        Side::Opener => 0,
        Side::Acceptor => 1,
    }
}

/// Strings longer than u16::MAX are truncated at a char boundary; callers bound them first.
fn put_str(buf: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_u16(end as u16);
    buf.put_slice(&s.as_bytes()[..end]);
}

fn put_blob(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32(b.len() as u32);
    buf.put_slice(b);
}
