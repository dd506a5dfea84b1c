//! Every budget a peer, client or local job can exhaust, in one place: the `[limits]`
//! section of the configuration. Each field is a documented key with a safe default; the
//! modules that enforce them receive these values and hold no limits of their own.

use std::time::Duration;

use serde::Deserialize;

/// The `[limits]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A connection must finish its TLS and mesh handshakes within this time.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Connections in their handshake at once, per listener; more are closed at accept.
    pub handshakes: usize,
    /// Connections in their handshake at once from one source address.
    pub handshakes_per_source: usize,
    /// Of `handshakes`, slots only addresses that completed a handshake before may use, so
    /// known peers (a restarted node, a redialing hop) get through a flood of strangers.
    pub handshakes_reserved: usize,
    /// Sustained link-state advertisement volume one link may deliver, in bytes/second.
    pub advert_rate: u64,
    /// Advertisement bytes one link may deliver in a burst above `advert_rate`. A peer
    /// sends its whole database on link-up, so this is at least `max_db_bytes`.
    pub advert_burst: u64,
    /// A link whose advertisements are dropped this many times within a minute is closed.
    pub advert_drops_to_close: u32,
    /// A link that delivers this many forged advertisements within a minute is closed:
    /// in a TLS mesh, advertisements about another node than the link's peer that are
    /// unsigned or whose signature or certificate does not verify (every one is dropped
    /// and counted).
    pub forged_adverts_to_close: u32,
    /// Most nodes the link-state database holds; advertisements of further nodes are
    /// dropped (and counted) until some are forgotten.
    pub max_nodes: usize,
    /// Most bytes of memory the link-state database's advertisements hold (their decoded
    /// form and encoded frame, `wire::Lsa::held_bytes`: about three times their wire
    /// size; a 10,000-node mesh of ordinary nodes needs about 5 MiB unsigned, 15 MiB
    /// signed with ECDSA node certificates, 22 MiB with RSA-2048 ones).
    pub max_db_bytes: usize,
    /// Most streams open at once between this node and any one other node.
    pub streams_per_peer: usize,
    /// How long a relay waits for room in a link's data queue before closing that link as
    /// stalled (its peer stopped reading).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Control sessions open at once, over the Unix socket, TCP/TLS and the mesh service.
    pub control_sessions: usize,
    /// Work units one other node may hold on this node at once (it must release some
    /// before it submits more).
    pub units_per_node: usize,
    /// Largest payload (stdin) of one work unit, in bytes.
    pub max_payload: u64,
    /// Signed-work token IDs remembered until their tokens expire, so none is used twice.
    /// When this many unexpired tokens have been seen, further signed requests are refused
    /// (forgetting one would let it be replayed).
    pub signed_tokens: usize,
    /// An end-to-end protected stream's handshake (both ends proving their node IDs) must
    /// finish within this time, on either end.
    #[serde(with = "humantime_serde")]
    pub stream_handshake_timeout: Duration,
    /// End-to-end stream handshakes this node answers at once; further protected `Open`s
    /// are refused until some finish.
    pub stream_handshakes: usize,
    /// Two nodes whose end-to-end stream handshake proved both certificates may resume
    /// (TLS 1.3 PSK with a fresh ECDHE, no 0-RTT) for this long after it, without
    /// certificates or signatures; `0s` turns resumption off (every stream a full
    /// handshake). The acceptor refuses older tickets; a reload of the TLS files refuses
    /// all earlier ones.
    #[serde(with = "humantime_serde")]
    pub stream_resumption: Duration,
    /// Error answers (a `Reset` for an unknown stream, `Unreachable`) this node sends per
    /// second, in bursts of as many: a peer spraying frames with another node's source
    /// cannot turn this node into an amplifier against that node's links. Excess answers
    /// are dropped (the frames they answer are dropped anyway).
    pub error_reply_rate: u64,
    /// A control session (any listener) that sends no complete request line for this long,
    /// or stalls this long in the middle of a payload, is told so and closed: idle
    /// connections cannot hold `control_sessions` and lock operators out. Output a session
    /// is streaming (`work results`) is not idleness.
    #[serde(with = "humantime_serde")]
    pub control_idle_timeout: Duration,
    /// Integrity failures of the streams carrying one remote work unit (its mirror here)
    /// before the unit fails for good, with the failure and the path in its reason:
    /// a relay that keeps tampering with a stream ends the run loudly instead of
    /// having it retried forever. `receptor run` uses the default.
    pub integrity_attempts: u32,
    /// Of `control_sessions`, this many are kept for the local Unix socket: remote control
    /// clients (TCP/TLS, the mesh service) share the rest, so they cannot lock a local
    /// operator out.
    pub control_local_reserved: usize,
    /// Control sessions one origin may hold at once: a remote IP address over TCP/TLS, a
    /// node over the mesh service (the Unix socket has no such cap).
    pub control_sessions_per_origin: usize,
    /// A TLS control client must finish its handshake within this time (it holds a
    /// session slot meanwhile).
    #[serde(with = "humantime_serde")]
    pub control_handshake_timeout: Duration,
    /// A write to a control client (an answer, streamed output) that cannot complete
    /// within this time — the client stopped reading — ends the session and frees its slot.
    #[serde(with = "humantime_serde")]
    pub control_write_timeout: Duration,
    /// The netceptor plane (Go Receptor peers): `[limits.netceptor]`.
    pub netceptor: NetceptorLimits,
    /// WebSocket links (`ws://`, `wss://`, `netceptor+ws://`): `[limits.websocket]`.
    pub websocket: WsLimits,
}

/// `[limits.websocket]`: what the HTTP side of a WebSocket link can make this node hold
/// (the link's own protocol is bounded as on any other link). The time bounds are those of
/// every link: `limits.handshake_timeout` from accept to the first message (TLS, the
/// upgrade request, the first message), `mesh.dial_timeout` for a dial (proxy included).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WsLimits {
    /// Largest WebSocket message (and frame) accepted, in bytes; a larger one closes the
    /// link. Go peers' messages are netceptor packets, held to `limits.netceptor.max_packet`
    /// besides.
    pub max_message: usize,
    /// Most bytes an HTTP upgrade request (listener) or response (dialer) may take; a
    /// longer one is refused.
    pub max_http_header: usize,
    /// Most bytes an HTTP proxy's reply to `CONNECT` may take.
    pub max_proxy_reply: usize,
    /// How long an HTTP proxy may take to answer `CONNECT` (within `mesh.dial_timeout`).
    #[serde(with = "humantime_serde")]
    pub proxy_reply_timeout: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_message: 1024 * 1024,
            max_http_header: 16 * 1024,
            max_proxy_reply: 16 * 1024,
            proxy_reply_timeout: Duration::from_secs(10),
        }
    }
}

impl WsLimits {
    /// Checks the values; the offending key (below `limits.websocket.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_message < 65535 {
            return Err(("max_message", "must be at least 65535 (a netceptor packet)"));
        }
        if self.max_http_header < 1024 {
            return Err(("max_http_header", "must be at least 1024"));
        }
        if self.max_proxy_reply < 256 {
            return Err(("max_proxy_reply", "must be at least 256"));
        }
        if self.proxy_reply_timeout.is_zero() {
            return Err(("proxy_reply_timeout", "must be more than zero"));
        }
        Ok(())
    }
}

/// `[limits.netceptor]`: what a Go Receptor peer (or anything speaking netceptor) can make
/// this node hold. Go Receptor bounds none of these; receptord does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetceptorLimits {
    /// Largest packet accepted on a stream backend, in bytes (at most 65535, the u16
    /// length prefix); a longer frame closes the link.
    pub max_packet: usize,
    /// Most nodes in the netceptor routing database (and so in its routing table);
    /// updates from further nodes are dropped, a new neighbour beyond it is rejected.
    pub max_nodes: usize,
    /// Most service advertisements held, over all nodes.
    pub max_ads: usize,
    /// Update IDs remembered for flood deduplication (each for an hour; the oldest go
    /// first).
    pub max_seen_updates: usize,
    /// Routing updates and service advertisements one link may deliver, in bytes per
    /// second, and the burst above it; excess ones are dropped (counted).
    pub advert_rate: u64,
    pub advert_burst: u64,
    /// A link whose advertisements are dropped this many times within a minute is closed.
    pub advert_drops_to_close: u32,
    /// Bytes queued towards one link; further packets for it are dropped (datagram
    /// semantics: QUIC retransmits, updates repeat every 10 s).
    pub link_queue_bytes: usize,
    /// Datagrams queued for one local service (a QUIC endpoint) before further ones are
    /// dropped.
    pub service_queue: usize,
    /// QUIC connections (Go streams) one node may hold with one service of this node.
    pub quic_connections_per_peer: usize,
    /// QUIC connections one service holds at once, from all nodes.
    pub quic_connections: usize,
    /// Bidirectional streams a peer may open on one QUIC connection (Go uses one).
    pub quic_streams: u32,
    /// Sessions one `netceptor+udp://` listener holds (one per source address); datagrams
    /// from further sources are dropped until one expires (silent for the idle timeout, 21 s,
    /// or closed by netceptor).
    pub udp_sessions: usize,
    /// Sessions one source IP address may hold on one UDP listener.
    pub udp_sessions_per_ip: usize,
    /// New UDP sessions one listener opens per second (and the burst): each costs this
    /// node a link and sends initial routing updates to an address anyone can spoof.
    pub udp_session_rate: u32,
}

impl Default for NetceptorLimits {
    fn default() -> Self {
        NetceptorLimits {
            max_packet: 65535,
            max_nodes: 10_000,
            max_ads: 40_000,
            max_seen_updates: 200_000,
            advert_rate: 1024 * 1024,
            advert_burst: 8 * 1024 * 1024,
            advert_drops_to_close: 1000,
            link_queue_bytes: 4 * 1024 * 1024,
            service_queue: 1024,
            quic_connections_per_peer: 1024,
            quic_connections: 4096,
            quic_streams: 1,
            udp_sessions: 256,
            udp_sessions_per_ip: 32,
            udp_session_rate: 20,
        }
    }
}

impl NetceptorLimits {
    /// Checks the values; the offending key (below `limits.netceptor.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let positive: [(&'static str, bool); 14] = [
            ("max_nodes", self.max_nodes > 0),
            ("udp_sessions", self.udp_sessions > 0),
            ("udp_sessions_per_ip", self.udp_sessions_per_ip > 0),
            ("udp_session_rate", self.udp_session_rate > 0),
            ("max_ads", self.max_ads > 0),
            ("max_seen_updates", self.max_seen_updates > 0),
            ("advert_rate", self.advert_rate > 0),
            ("advert_drops_to_close", self.advert_drops_to_close > 0),
            ("service_queue", self.service_queue > 0),
            ("quic_connections_per_peer", self.quic_connections_per_peer > 0),
            ("quic_connections", self.quic_connections > 0),
            ("quic_streams", self.quic_streams > 0),
            ("advert_burst", self.advert_burst > 0),
            ("link_queue_bytes", self.link_queue_bytes > 0),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err((key, "must be more than zero"));
        }
        // A packet carrying one full QUIC datagram (1452 bytes and the 36-byte header)
        // must fit, and a frame's length prefix is a u16.
        if !(1488..=65535).contains(&self.max_packet) {
            return Err(("max_packet", "must be between 1488 and 65535"));
        }
        if (self.advert_burst as usize) < self.max_packet {
            return Err(("advert_burst", "must be at least limits.netceptor.max_packet"));
        }
        if self.link_queue_bytes < self.max_packet {
            return Err(("link_queue_bytes", "must be at least limits.netceptor.max_packet"));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(5),
            handshakes: 256,
            handshakes_per_source: 8,
            handshakes_reserved: 64,
            advert_rate: 1024 * 1024,
            advert_burst: 24 * 1024 * 1024,
            advert_drops_to_close: 1000,
            forged_adverts_to_close: 10,
            max_nodes: 20_000,
            max_db_bytes: 24 * 1024 * 1024,
            streams_per_peer: 256,
            stall_timeout: Duration::from_secs(30),
            control_sessions: 128,
            units_per_node: 1000,
            max_payload: 1 << 30,
            signed_tokens: 100_000,
            stream_handshake_timeout: Duration::from_secs(10),
            stream_handshakes: 64,
            stream_resumption: Duration::from_secs(600),
            error_reply_rate: 256,
            control_idle_timeout: Duration::from_secs(60),
            integrity_attempts: 3,
            control_local_reserved: 8,
            control_sessions_per_origin: 32,
            control_handshake_timeout: Duration::from_secs(10),
            control_write_timeout: Duration::from_secs(60),
            netceptor: NetceptorLimits::default(),
            websocket: WsLimits::default(),
        }
    }
}

impl Limits {
    /// Checks the values; returns the offending key (without the `limits.` prefix) and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let positive: [(&'static str, bool); 21] = [
            ("control_sessions_per_origin", self.control_sessions_per_origin > 0),
            ("control_handshake_timeout", !self.control_handshake_timeout.is_zero()),
            ("control_write_timeout", !self.control_write_timeout.is_zero()),
            ("control_idle_timeout", !self.control_idle_timeout.is_zero()),
            ("integrity_attempts", self.integrity_attempts > 0),
            ("signed_tokens", self.signed_tokens > 0),
            ("control_sessions", self.control_sessions > 0),
            ("units_per_node", self.units_per_node > 0),
            ("max_payload", self.max_payload > 0),
            ("handshakes", self.handshakes > 0),
            ("handshakes_per_source", self.handshakes_per_source > 0),
            ("advert_rate", self.advert_rate > 0),
            ("advert_drops_to_close", self.advert_drops_to_close > 0),
            ("forged_adverts_to_close", self.forged_adverts_to_close > 0),
            ("max_nodes", self.max_nodes > 0),
            ("streams_per_peer", self.streams_per_peer > 0),
            ("handshake_timeout", !self.handshake_timeout.is_zero()),
            ("stall_timeout", !self.stall_timeout.is_zero()),
            ("stream_handshake_timeout", !self.stream_handshake_timeout.is_zero()),
            ("stream_handshakes", self.stream_handshakes > 0),
            ("error_reply_rate", self.error_reply_rate > 0),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err((key, "must be more than zero"));
        }
        if self.control_local_reserved >= self.control_sessions {
            return Err(("control_local_reserved", "must be less than limits.control_sessions"));
        }
        if self.handshakes_reserved >= self.handshakes {
            return Err(("handshakes_reserved", "must be less than limits.handshakes"));
        }
        if self.max_db_bytes < crate::wire::MAX_FRAME {
            return Err(("max_db_bytes", "must be at least one largest frame (262144 bytes)"));
        }
        if self.advert_burst < self.max_db_bytes as u64 {
            return Err(("advert_burst", "must be at least limits.max_db_bytes (a peer's database dump)"));
        }
        if self.stream_resumption > Duration::from_secs(7 * 24 * 3600) {
            // TLS 1.3 tickets live at most 7 days (RFC 8446 §4.6.1).
            return Err(("stream_resumption", "must be at most 7 days"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_resumption_may_be_off_and_is_at_most_seven_days() {
        let with = |d: Duration| Limits { stream_resumption: d, ..Limits::default() }.validate();
        assert_eq!(with(Duration::ZERO), Ok(()));
        assert_eq!(with(Duration::from_secs(7 * 24 * 3600)), Ok(()));
        assert_eq!(with(Duration::from_secs(7 * 24 * 3600 + 1)).map_err(|e| e.0), Err("stream_resumption"));
    }
}
