//! The receptord wire protocol: typed frames and their binary encoding, with no I/O.
//!
//! Every byte read from a peer passes through [`Frame::decode`], which bounds every length
//! and never panics; the framing itself lives in [`codec`]. `docs/PROTOCOL.md` is the
//! normative description of what is encoded here.

pub mod codec;
mod decode;
mod encode;
mod node_id;
#[cfg(test)]
mod prop_tests;
mod text;

use bytes::Bytes;

pub use codec::FrameCodec;
pub use encode::{LSA_SIG_CONTEXT, netceptor_head};
pub use node_id::{MAX_LEN as MAX_NODE_ID_LEN, NodeId, NodeIdError};
pub use text::{MAX_NAME, Name, NameError, Reason};

/// Protocol version spoken by this build. Peers must announce the same major version.
/// Version 2 added the signature block of [`Lsa`] (a version 1 node closes a link that
/// carries one).
pub const PROTOCOL_VERSION: u16 = 2;
/// Magic bytes opening every connection, before any frame: "RCPT".
pub const PREFACE: [u8; 4] = *b"RCPT";
/// Largest frame body accepted from the network, in bytes.
pub const MAX_FRAME: usize = 256 * 1024;
/// Largest payload of one [`Body::Data`] frame.
pub const MAX_DATA_CHUNK: usize = 64 * 1024;
/// Largest opaque header/trailer of a stream, in bytes.
pub const MAX_META: usize = 64 * 1024;
/// Largest human-readable reason string, in bytes.
pub const MAX_REASON: usize = 4096;
/// Most neighbours or work types one link-state advertisement may list.
pub const MAX_LSA_ITEMS: usize = 1024;
/// Most certificates in the chain of an advertisement's signature (leaf first).
pub const MAX_SIG_CHAIN: usize = 4;
/// Largest DER certificate in an advertisement's signature, in bytes.
pub const MAX_SIG_CERT: usize = 16 * 1024;
/// Largest signature of an advertisement, in bytes (RSA-8192 needs 1024).
pub const MAX_SIGNATURE: usize = 1024;
/// Largest netceptor packet one [`Frame::Netceptor`] carries (netceptor's own framing
/// ceiling; `limits.netceptor.max_packet` may be lower, checked by the plane).
pub const MAX_NETCEPTOR_PACKET: usize = 65535;
/// Default hop budget of a routed frame.
pub const DEFAULT_HOPS: u8 = 30;

/// Capability bits announced in [`Hello`].
pub mod caps {
    /// The node can carry flow-controlled streams.
    pub const STREAMS: u32 = 1 << 0;
    /// The node is short-lived (a CLI or API client) and will not relay traffic.
    pub const EPHEMERAL: u32 = 1 << 1;
    /// The node is a leaf (`[mesh] role = "leaf"`): it neither receives nor forwards the
    /// link-state database and relays nothing; it reaches the mesh through its hubs.
    pub const LEAF: u32 = 1 << 2;
    /// The node can carry Go Receptor's netceptor packets on this link
    /// ([`super::Frame::Netceptor`]): its netceptor plane serves a session carried over it.
    pub const NETCEPTOR: u32 = 1 << 3;
}

/// One frame on a link.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// First frame in each direction.
    Hello(Hello),
    /// Sent after both hellos: this side accepts the link.
    Admit,
    /// Sent after both hellos: this side refuses the link; the connection closes.
    Reject { reason: Reason },
    /// Liveness probe; carries nothing.
    Keepalive,
    /// A link-state advertisement being flooded.
    Lsa(Lsa),
    /// The sender has finished dumping its link-state database on this link.
    SyncDone,
    /// The sender is closing the link on purpose.
    Goodbye { reason: Reason },
    /// A message routed between two nodes, possibly across relays.
    Routed(Routed),
    /// One netceptor packet of the session carried over this link (docs/PROTOCOL.md,
    /// "Netceptor over native links"): link-local, never routed or forwarded, sent only to
    /// a peer whose hello offered [`caps::NETCEPTOR`]. At most [`MAX_NETCEPTOR_PACKET`] bytes.
    Netceptor(Bytes),
}

/// Handshake contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub version: u16,
    pub node_id: NodeId,
    /// Start-up instant of the sender's incarnation (Unix nanoseconds); distinguishes restarts.
    pub epoch: u64,
    pub caps: u32,
    /// The sender's idle timeout in milliseconds; the link uses the larger of the two.
    pub idle_timeout_ms: u32,
    /// The cost the sender assigns to this link.
    pub cost: f64,
}

impl Lsa {
    /// Whether the origin marks its `i`-th neighbour as not a relay.
    pub fn marks(&self, i: usize) -> bool {
        self.relay_marks && self.neighbors.get(i).is_some_and(|(_, c)| c.to_bits() & 1 == 1)
    }

    /// The cost to route by of the neighbour cost `c` from this advertisement: its mark,
    /// if any, cleared (so a mark never changes a route's cost or its ties).
    pub fn routing_cost(&self, c: f64) -> f64 {
        let bits = c.to_bits() & !MARK_MASK;
        if self.relay_marks && bits != 0 { f64::from_bits(bits) } else { c }
    }

    /// Whether this advertisement lists `node` as a neighbour: `None` when it does not,
    /// otherwise whether it marks `node` as not a relay.
    pub fn listing(&self, node: &NodeId) -> Option<bool> {
        let i = self.neighbors.iter().position(|(n, _)| n == node)?;
        Some(self.marks(i))
    }
}

/// The low significand bits of a cost that carry a relay mark, and their pattern.
const MARK_MASK: u64 = 0xFFFF;
const MARK_PATTERN: u64 = 0x8000;

/// `cost` as sent with relay marks: its low 16 significand bits set to `0x8000`, plus 1
/// when `not_relay` (it stays positive and finite, and moves by less than 2^-36 of itself).
pub fn marked_cost(cost: f64, not_relay: bool) -> f64 {
    f64::from_bits((cost.to_bits() & !MARK_MASK) | MARK_PATTERN | u64::from(not_relay))
}

/// Whether every one of (at least one) neighbour costs carries a relay mark. Configured
/// costs written as decimals practically never end in these bit patterns (one chance in
/// 2^15 per cost), and then all of an advertisement's costs must.
pub(crate) fn carries_relay_marks(neighbors: &[(NodeId, f64)]) -> bool {
    !neighbors.is_empty() && neighbors.iter().all(|(_, c)| c.to_bits() & (MARK_MASK & !1) == MARK_PATTERN)
}

impl Hello {
    /// The peer is not a relay (a short-lived client or a leaf): it may originate frames and
    /// advertisements only for its own ID, and nothing is routed through it.
    pub fn not_relay(&self) -> bool {
        self.caps & (caps::EPHEMERAL | caps::LEAF) != 0
    }
}

/// A link-state advertisement: what one node says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Lsa {
    pub origin: NodeId,
    pub epoch: u64,
    pub seq: u64,
    /// The origin is leaving the mesh; forget it now.
    pub leaving: bool,
    pub ephemeral: bool,
    /// The origin is a leaf: routed to, never through (like an ephemeral client, but a
    /// long-lived daemon).
    pub leaf: bool,
    /// The origin's up links and its cost for each. With `relay_marks`, the low 16 bits
    /// of each cost's significand carry a relay mark ([`Lsa::marks`]); costs are kept
    /// exactly as received, so the advertisement re-encodes to the same bytes (its
    /// signature covers them) — in this version and in every older one.
    pub neighbors: Vec<(NodeId, f64)>,
    /// The neighbours' costs carry relay marks (docs/PROTOCOL.md §3, §6): every cost's
    /// low 16 significand bits are `0x8000` or `0x8001`, the last bit saying that the
    /// origin's link showed that neighbour is not a relay. Derived from the costs when
    /// decoding (nothing else on the wire says it): nodes that do not know marks decode,
    /// verify and forward them unchanged and see costs off by less than 2^-36 of them.
    pub relay_marks: bool,
    pub work_types: Vec<WorkTypeAd>,
    /// The origin's signature over everything above (`mesh::origin`); `None` when unsigned
    /// (plain-TCP meshes, simulations).
    pub sig: Option<LsaSig>,
}

/// An advertisement's signature by its origin: the certificate chain that names the
/// origin's node ID (leaf first) and the signature over [`Lsa::signed_message`].
#[derive(Debug, Clone, PartialEq)]
pub struct LsaSig {
    /// The TLS `SignatureScheme` code of the signature (e.g. `0x0403` ECDSA P-256 SHA-256).
    pub scheme: u16,
    /// When the origin signed, by its own clock (Unix nanoseconds, like epochs): evidence
    /// of an old incarnation still alive must be signed after the newer one started.
    pub signed_at: u64,
    /// 1 to [`MAX_SIG_CHAIN`] DER certificates, each at most [`MAX_SIG_CERT`] bytes.
    pub chain: Vec<Bytes>,
    /// At most [`MAX_SIGNATURE`] bytes.
    pub signature: Bytes,
}

/// One advertised work type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkTypeAd {
    pub name: Name,
    pub version: Name,
}

/// Header of every routed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub src: NodeId,
    pub dst: NodeId,
    pub hops_left: u8,
    pub body: Body,
}

/// Which end of a stream sent a stream frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Opener,
    Acceptor,
}

/// Routed message bodies.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Ping {
        id: u64,
    },
    Pong {
        id: u64,
    },
    /// Ping `id` ran out of hops at the sending node (traceroute).
    Expired {
        id: u64,
    },
    /// A frame for `dst` could not be delivered; sent back to the frame's source.
    Unreachable {
        stream: Option<(u64, Side)>,
        reason: Reason,
    },
    /// Opens stream `stream` to `service`; `window` is the opener's receive window.
    Open {
        stream: u64,
        service: Name,
        window: u32,
        header: Bytes,
    },
    /// Stream bytes starting at byte `offset` of this direction.
    Data {
        stream: u64,
        from: Side,
        offset: u64,
        data: Bytes,
    },
    /// The receiver consumed bytes: the sender may send `n` more.
    Credit {
        stream: u64,
        from: Side,
        n: u32,
    },
    /// The sender will send no more data; `trailer` is opaque end-of-stream metadata.
    Fin {
        stream: u64,
        from: Side,
        trailer: Bytes,
    },
    /// The stream is aborted in both directions.
    Reset {
        stream: u64,
        from: Side,
        reason: Reason,
    },
    /// The sender stopped reading: the receiver must stop sending (and then finish).
    Stop {
        stream: u64,
        from: Side,
    },
}

/// Why a frame could not be decoded. Any of these closes the link it came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame truncated")]
    Truncated,
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("unknown routed body type {0:#04x}")]
    UnknownBody(u8),
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("invalid UTF-8 in {0}")]
    Utf8(&'static str),
    #[error("invalid node id: {0}")]
    NodeId(#[from] NodeIdError),
    #[error("{0} trailing bytes after frame")]
    Trailing(usize),
    #[error("invalid value in {0}")]
    Invalid(&'static str),
}

impl Frame {
    /// A short name of the frame's kind, for messages (never the frame's contents, which
    /// may be large or hostile).
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Admit => "admit",
            Frame::Reject { .. } => "reject",
            Frame::Keepalive => "keepalive",
            Frame::Lsa(_) => "advertisement",
            Frame::SyncDone => "sync-done",
            Frame::Goodbye { .. } => "goodbye",
            Frame::Routed(_) => "routed",
            Frame::Netceptor(_) => "netceptor",
        }
    }
}

impl Body {
    /// The stream a body belongs to, if any, with the side that sent it.
    pub fn stream(&self) -> Option<(u64, Side)> {
        match self {
            Body::Open { stream, .. } => Some((*stream, Side::Opener)),
            Body::Data { stream, from, .. }
            | Body::Credit { stream, from, .. }
            | Body::Fin { stream, from, .. }
            | Body::Reset { stream, from, .. }
            | Body::Stop { stream, from } => Some((*stream, *from)),
            _ => None,
        }
    }
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Opener => Side::Acceptor,
            Side::Acceptor => Side::Opener,
        }
    }
}
