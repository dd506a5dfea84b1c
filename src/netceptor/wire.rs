//! Netceptor packets (Go Receptor's wire protocol), encoded and decoded without I/O.
//!
//! A packet is a type byte and a body: 0 data (a fixed 35-byte header and a payload),
//! 1 routing update, 2 service advertisement, 3 reject (the last three Go `encoding/json`
//! objects). Layouts and field order follow Go Receptor 1.4 (`pkg/netceptor/netceptor.go`;
//! the project's reference note `netceptor-wire.md` §3). Every decoder is bounded: a
//! packet is at most [`MAX_PACKET`] bytes, names at most [`MAX_NAME`], a routing update
//! lists at most [`MAX_CONNECTIONS`] links and an advertisement at most [`MAX_WORK_TYPES`]
//! work types and [`MAX_TAGS`] tags; anything else is a [`DecodeError`], never a panic.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};

/// Largest packet a stream backend can frame (its length prefix is a `u16`).
pub const MAX_PACKET: usize = 65535;
/// Length of a data packet's header, type byte included.
pub const DATA_HEADER: usize = 36;
/// Longest service name on the wire.
pub const MAX_SERVICE: usize = 8;
/// Longest node ID or other name accepted in a JSON body (Go sets no limit; receptord's
/// node IDs are at most 64 bytes, so anything longer is refused).
pub const MAX_NAME: usize = 256;
/// Most entries of a routing update's `Connections`.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most work types in one service advertisement.
pub const MAX_WORK_TYPES: usize = 1024;
/// Most tags in one service advertisement.
pub const MAX_TAGS: usize = 64;
/// Hops a packet starts with (Go's `defaultMaxForwardingHops`).
pub const MAX_HOPS: u8 = 30;

pub const TYPE_DATA: u8 = 0;
pub const TYPE_ROUTING: u8 = 1;
pub const TYPE_SERVICE: u8 = 2;
pub const TYPE_REJECT: u8 = 3;

/// One netceptor packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Data(DataPacket),
    Routing(RoutingUpdate),
    Service(ServiceAd),
    Reject,
    /// A type this node does not know; Go logs and ignores these.
    Unknown(u8),
}

/// A data packet: a datagram from one (node, service) to another, by name hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPacket {
    pub hops: u8,
    pub from_hash: u64,
    pub to_hash: u64,
    pub from_service: String,
    pub to_service: String,
    pub payload: Bytes,
}

/// A routing update (Go `routingUpdate`); field order is Go's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingUpdate {
    #[serde(rename = "NodeID", default, deserialize_with = "name")]
    pub node_id: String,
    #[serde(rename = "UpdateID", default, deserialize_with = "name")]
    pub update_id: String,
    #[serde(rename = "UpdateEpoch", default)]
    pub epoch: u64,
    #[serde(rename = "UpdateSequence", default)]
    pub sequence: u64,
    #[serde(rename = "Connections", default, deserialize_with = "connections")]
    pub connections: BTreeMap<String, f64>,
    #[serde(rename = "ForwardingNode", default, deserialize_with = "name")]
    pub forwarding_node: String,
    #[serde(rename = "SuspectedDuplicate", default)]
    pub suspected_duplicate: u64,
}

/// How a service is reached (Go `ConnType`).
pub const CONN_DATAGRAM: u8 = 0;
pub const CONN_STREAM: u8 = 1;
pub const CONN_STREAM_TLS: u8 = 2;

/// A service advertisement (Go `ServiceAdvertisement` plus `Cancel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAd {
    #[serde(rename = "NodeID", default, deserialize_with = "name")]
    pub node_id: String,
    #[serde(rename = "Service", default, deserialize_with = "name")]
    pub service: String,
    /// RFC 3339 wall-clock time of the origin; newer wins.
    #[serde(rename = "Time", with = "rfc3339", default = "epoch")]
    pub time: time::OffsetDateTime,
    #[serde(rename = "ConnType", default)]
    pub conn_type: u8,
    #[serde(rename = "Tags", default, deserialize_with = "tags")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(rename = "WorkCommands", default, deserialize_with = "work_commands")]
    pub work_commands: Option<Vec<WorkCommand>>,
    #[serde(rename = "Cancel", default)]
    pub cancel: bool,
}

/// A work type as Go advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCommand {
    #[serde(rename = "WorkType", default, deserialize_with = "name")]
    pub work_type: String,
    /// Whether the work type verifies signatures.
    #[serde(rename = "Secure", default)]
    pub secure: bool,
}

/// The payload of a packet from the `unreach` service (Go `UnreachableMessage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreachable {
    #[serde(rename = "FromNode", default, deserialize_with = "name")]
    pub from_node: String,
    #[serde(rename = "ToNode", default, deserialize_with = "name")]
    pub to_node: String,
    #[serde(rename = "FromService", default, deserialize_with = "name")]
    pub from_service: String,
    #[serde(rename = "ToService", default, deserialize_with = "name")]
    pub to_service: String,
    #[serde(rename = "Problem", default, deserialize_with = "name")]
    pub problem: String,
}

/// Why bytes are not a packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("packet of {0} bytes is over the {MAX_PACKET}-byte limit")]
    TooLong(usize),
    #[error("data packet of {0} bytes is shorter than its {DATA_HEADER}-byte header")]
    ShortData(usize),
    #[error("service name is not UTF-8")]
    ServiceName,
    #[error("bad JSON body: {0}")]
    Json(String),
}

/// Why a packet cannot be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("service name {0:?} is longer than {MAX_SERVICE} bytes")]
    Service(String),
    #[error("packet of {0} bytes is over the {MAX_PACKET}-byte limit")]
    TooLong(usize),
    #[error("cannot encode: {0}")]
    Json(String),
}

impl Packet {
    /// Decodes one whole packet (as a backend delivers it).
    pub fn decode(b: &[u8]) -> Result<Packet, DecodeError> {
        if b.len() > MAX_PACKET {
            return Err(DecodeError::TooLong(b.len()));
        }
        let (&ty, body) = b.split_first().ok_or(DecodeError::Empty)?;
        match ty {
            TYPE_DATA => DataPacket::decode(b).map(Packet::Data),
            TYPE_ROUTING => json(body).map(Packet::Routing),
            TYPE_SERVICE => json(body).map(Packet::Service),
            TYPE_REJECT => Ok(Packet::Reject),
            other => Ok(Packet::Unknown(other)),
        }
    }

    /// Encodes the packet (type byte and body).
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let out = match self {
            Packet::Data(d) => return d.encode(),
            Packet::Routing(u) => with_type(TYPE_ROUTING, u)?,
            Packet::Service(a) => with_type(TYPE_SERVICE, a)?,
            Packet::Reject => Bytes::from_static(&[TYPE_REJECT, b'[', b']']),
            Packet::Unknown(t) => Bytes::copy_from_slice(&[*t]),
        };
        if out.len() > MAX_PACKET {
            return Err(EncodeError::TooLong(out.len()));
        }
        Ok(out)
    }
}

impl DataPacket {
    fn decode(b: &[u8]) -> Result<DataPacket, DecodeError> {
        if b.len() < DATA_HEADER {
            return Err(DecodeError::ShortData(b.len()));
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Ok(DataPacket {
            hops: b[1],
            from_hash: u64_at(4),
            to_hash: u64_at(12),
            from_service: service(&b[20..28])?,
            to_service: service(&b[28..36])?,
            payload: Bytes::copy_from_slice(&b[DATA_HEADER..]),
        })
    }

    /// Encodes the header and payload.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let len = DATA_HEADER + self.payload.len();
        if len > MAX_PACKET {
            return Err(EncodeError::TooLong(len));
        }
        let mut out = BytesMut::with_capacity(len);
        out.put_u8(TYPE_DATA);
        out.put_u8(self.hops);
        out.put_u16(0);
        out.put_u64(self.from_hash);
        out.put_u64(self.to_hash);
        put_service(&mut out, &self.from_service)?;
        put_service(&mut out, &self.to_service)?;
        out.extend_from_slice(&self.payload);
        Ok(out.freeze())
    }
}

/// A service name: up to 8 bytes, trailing NULs stripped (as Go does).
fn service(b: &[u8]) -> Result<String, DecodeError> {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    std::str::from_utf8(&b[..end]).map(str::to_owned).map_err(|_| DecodeError::ServiceName)
}

fn put_service(out: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    if s.len() > MAX_SERVICE {
        return Err(EncodeError::Service(s.to_owned()));
    }
    out.extend_from_slice(s.as_bytes());
    out.put_bytes(0, MAX_SERVICE - s.len());
    Ok(())
}

fn with_type<T: Serialize>(ty: u8, v: &T) -> Result<Bytes, EncodeError> {
    let mut out = vec![ty];
    serde_json::to_writer(&mut out, v).map_err(|e| EncodeError::Json(e.to_string()))?;
    Ok(Bytes::from(out))
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))
}

/// Encodes an unreachable message as the payload of a packet from `unreach`.
pub fn encode_unreachable(m: &Unreachable) -> Bytes {
    Bytes::from(serde_json::to_vec(m).unwrap_or_default())
}

/// Decodes the payload of a packet from `unreach`.
pub fn decode_unreachable(b: &[u8]) -> Result<Unreachable, DecodeError> {
    json(b)
}

// Bounded deserializers: Go sends `null` for empty maps and slices, and nothing bounds
// its strings and maps, so every size is checked here before anything is stored.

fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = Option::<String>::deserialize(d)?.unwrap_or_default();
    if s.len() > MAX_NAME {
        return Err(serde::de::Error::custom(format!("name longer than {MAX_NAME} bytes")));
    }
    Ok(s)
}

fn connections<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<String, f64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of node IDs to costs, or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = m.next_entry::<String, f64>()? {
                if out.len() >= MAX_CONNECTIONS || k.len() > MAX_NAME {
                    return Err(serde::de::Error::custom("routing update over its limits"));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_option(V)
}

fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let t = Option::<BTreeMap<String, String>>::deserialize(d)?;
    if let Some(t) = &t {
        if t.len() > MAX_TAGS || t.iter().any(|(k, v)| k.len() > MAX_NAME || v.len() > MAX_NAME) {
            return Err(serde::de::Error::custom("tags over their limits"));
        }
    }
    Ok(t)
}

fn work_commands<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<WorkCommand>>, D::Error> {
    let w = Option::<Vec<WorkCommand>>::deserialize(d)?;
    if w.as_ref().is_some_and(|w| w.len() > MAX_WORK_TYPES) {
        return Err(serde::de::Error::custom("too many work commands"));
    }
    Ok(w)
}

fn epoch() -> time::OffsetDateTime {
    time::OffsetDateTime::UNIX_EPOCH
}

/// Go's `time.Time` JSON form: RFC 3339 with optional nanoseconds.
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > 64 {
            return Err(serde::de::Error::custom("time too long"));
        }
        OffsetDateTime::parse(&s, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
