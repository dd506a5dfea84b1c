//! Bounded, panic-free decoding of frame bodies read from the network.

use bytes::{Buf, Bytes};

use super::encode::{LSA_LEAF, LSA_SIGNED, tag};
use super::{
    Body, DecodeError, Frame, Hello, Lsa, LsaSig, MAX_DATA_CHUNK, MAX_LSA_ITEMS, MAX_META, MAX_NAME,
    MAX_NETCEPTOR_PACKET, MAX_REASON, MAX_SIG_CERT, MAX_SIG_CHAIN, MAX_SIGNATURE, Name, NodeId, Reason,
    Routed, Side, WorkTypeAd,
};

impl Frame {
    /// Decodes one frame body (without its length prefix).
    pub fn decode(mut b: Bytes) -> Result<Frame, DecodeError> {
        let frame = match get_u8(&mut b)? {
            tag::HELLO => Frame::Hello(decode_hello(&mut b)?),
            tag::ADMIT => Frame::Admit,
            tag::REJECT => Frame::Reject { reason: get_reason(&mut b)? },
            tag::KEEPALIVE => Frame::Keepalive,
            tag::LSA => Frame::Lsa(decode_lsa(&mut b)?),
            tag::SYNC_DONE => Frame::SyncDone,
            tag::GOODBYE => Frame::Goodbye { reason: get_reason(&mut b)? },
            tag::ROUTED => Frame::Routed(decode_routed(&mut b)?),
            tag::NETCEPTOR => {
                if b.len() > MAX_NETCEPTOR_PACKET {
                    return Err(DecodeError::TooLong {
                        what: "netceptor packet",
                        len: b.len(),
                        max: MAX_NETCEPTOR_PACKET,
                    });
                }
                Frame::Netceptor(b.split_off(0))
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        if b.has_remaining() {
            return Err(DecodeError::Trailing(b.remaining()));
        }
        Ok(frame)
    }
}

fn decode_hello(b: &mut Bytes) -> Result<Hello, DecodeError> {
    Ok(Hello {
        version: get_u16(b)?,
        node_id: get_node(b)?,
        epoch: get_u64(b)?,
        caps: get_u32(b)?,
        idle_timeout_ms: get_u32(b)?,
        cost: get_cost(b)?,
    })
}

fn decode_lsa(b: &mut Bytes) -> Result<Lsa, DecodeError> {
    let origin = get_node(b)?;
    let epoch = get_u64(b)?;
    let seq = get_u64(b)?;
    let flags = get_u8(b)?;
    let n = get_count(b, "neighbour list")?;
    let mut neighbors = Vec::with_capacity(n);
    for _ in 0..n {
        neighbors.push((get_node(b)?, get_cost(b)?));
    }
    let m = get_count(b, "work type list")?;
    let mut work_types = Vec::with_capacity(m);
    for _ in 0..m {
        let name = get_name(b, "work type name")?;
        let version = get_name(b, "work type version")?;
        work_types.push(WorkTypeAd { name, version });
    }
    let sig = if flags & LSA_SIGNED != 0 { Some(decode_sig(b)?) } else { None };
    Ok(Lsa {
        origin,
        epoch,
        seq,
        leaving: flags & 1 != 0,
        ephemeral: flags & 2 != 0,
        leaf: flags & LSA_LEAF != 0,
        relay_marks: super::carries_relay_marks(&neighbors),
        neighbors,
        work_types,
        sig,
    })
}

fn decode_sig(b: &mut Bytes) -> Result<LsaSig, DecodeError> {
    let scheme = get_u16(b)?;
    let signed_at = get_u64(b)?;
    let n = usize::from(get_u8(b)?);
    if n == 0 {
        return Err(DecodeError::Invalid("empty signature chain"));
    }
    if n > MAX_SIG_CHAIN {
        return Err(DecodeError::TooLong { what: "signature chain", len: n, max: MAX_SIG_CHAIN });
    }
    // Copied: an advertisement may be stored for long, and a slice would pin the whole
    // read buffer it arrived in.
    let mut chain = Vec::with_capacity(n);
    for _ in 0..n {
        chain.push(Bytes::copy_from_slice(&get_blob(b, "signature certificate", MAX_SIG_CERT)?));
    }
    let signature = Bytes::copy_from_slice(&get_blob(b, "signature", MAX_SIGNATURE)?);
    Ok(LsaSig { scheme, signed_at, chain, signature })
}

fn decode_routed(b: &mut Bytes) -> Result<Routed, DecodeError> {
    let src = get_node(b)?;
    let dst = get_node(b)?;
    let hops_left = get_u8(b)?;
    let body = match get_u8(b)? {
        tag::PING => Body::Ping { id: get_u64(b)? },
        tag::PONG => Body::Pong { id: get_u64(b)? },
        tag::EXPIRED => Body::Expired { id: get_u64(b)? },
        tag::UNREACHABLE => decode_unreachable(b)?,
        tag::OPEN => Body::Open {
            stream: get_u64(b)?,
            service: get_name(b, "service")?,
            window: get_u32(b)?,
            header: get_blob(b, "stream header", MAX_META)?,
        },
        tag::DATA => Body::Data {
            stream: get_u64(b)?,
            from: get_side(b)?,
            offset: get_u64(b)?,
            data: get_blob(b, "data chunk", MAX_DATA_CHUNK)?,
        },
        tag::CREDIT => Body::Credit { stream: get_u64(b)?, from: get_side(b)?, n: get_u32(b)? },
        tag::FIN => Body::Fin {
            stream: get_u64(b)?,
            from: get_side(b)?,
            trailer: get_blob(b, "stream trailer", MAX_META)?,
        },
        tag::RESET => Body::Reset { stream: get_u64(b)?, from: get_side(b)?, reason: get_reason(b)? },
        tag::STOP => Body::Stop { stream: get_u64(b)?, from: get_side(b)? },
        other => return Err(DecodeError::UnknownBody(other)),
    };
    Ok(Routed { src, dst, hops_left, body })
}

fn decode_unreachable(b: &mut Bytes) -> Result<Body, DecodeError> {
    let flag = get_u8(b)?;
    let id = get_u64(b)?;
    let stream = match flag {
        0 => None,
        1 => Some((id, Side::Opener)),
        2 => Some((id, Side::Acceptor)),
        _ => return Err(DecodeError::Invalid("unreachable stream flag")),
    };
    Ok(Body::Unreachable { stream, reason: get_reason(b)? })
}

fn need(b: &Bytes, n: usize) -> Result<(), DecodeError> {
    if b.remaining() < n { Err(DecodeError::Truncated) } else { Ok(()) }
}

fn get_u8(b: &mut Bytes) -> Result<u8, DecodeError> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn get_u16(b: &mut Bytes) -> Result<u16, DecodeError> {
    need(b, 2)?;
    Ok(b.get_u16())
}

fn get_u32(b: &mut Bytes) -> Result<u32, DecodeError> {
    need(b, 4)?;
    Ok(b.get_u32())
}

fn get_u64(b: &mut Bytes) -> Result<u64, DecodeError> {
    need(b, 8)?;
    Ok(b.get_u64())
}

fn get_cost(b: &mut Bytes) -> Result<f64, DecodeError> {
    need(b, 8)?;
    let c = b.get_f64();
    if c.is_finite() && c > 0.0 { Ok(c) } else { Err(DecodeError::Invalid("link cost")) }
}

fn get_side(b: &mut Bytes) -> Result<Side, DecodeError> {
    match get_u8(b)? {
        0 => Ok(Side::Opener),
        1 => Ok(Side::Acceptor),
        _ => Err(DecodeError::Invalid("stream side")),
    }
}

fn get_count(b: &mut Bytes, what: &'static str) -> Result<usize, DecodeError> {
    let n = get_u16(b)? as usize;
    if n > MAX_LSA_ITEMS {
        return Err(DecodeError::TooLong { what, len: n, max: MAX_LSA_ITEMS });
    }
    Ok(n)
}

fn get_str(b: &mut Bytes, what: &'static str, max: usize) -> Result<String, DecodeError> {
    let len = get_u16(b)? as usize;
    if len > max {
        return Err(DecodeError::TooLong { what, len, max });
    }
    need(b, len)?;
    let raw = b.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Utf8(what))
}

fn get_reason(b: &mut Bytes) -> Result<Reason, DecodeError> {
    Ok(Reason::new(get_str(b, "reason", MAX_REASON)?))
}

fn get_name(b: &mut Bytes, what: &'static str) -> Result<Name, DecodeError> {
    Ok(Name::from_wire(get_str(b, what, MAX_NAME)?))
}

fn get_node(b: &mut Bytes) -> Result<NodeId, DecodeError> {
    let s = get_str(b, "node id", super::node_id::MAX_LEN)?;
    Ok(NodeId::new(s)?)
}

fn get_blob(b: &mut Bytes, what: &'static str, max: usize) -> Result<Bytes, DecodeError> {
    let len = get_u32(b)? as usize;
    if len > max {
        return Err(DecodeError::TooLong { what, len, max });
    }
    need(b, len)?;
    Ok(b.split_to(len))
}
