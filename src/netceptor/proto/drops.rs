//! What the netceptor plane dropped, by reason: the state machine counts its own drops,
//! the UDP listeners theirs (`netceptor::udp`), and the plane's status and
//! `receptor_netceptor_dropped_total{reason}` show them together.

/// Counters of what was dropped, for status and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drops {
    pub undecodable: u64,
    pub unknown_hash: u64,
    pub no_route: u64,
    pub expired: u64,
    pub over_limits: u64,
    pub service_unknown: u64,
    /// Claims about node IDs the native plane holds, from no certificate naming them.
    pub reserved: u64,
    /// Routing updates and advertisements beyond a link's `advert_rate`.
    pub advert_rate: u64,
    /// Packets for a link whose queue held `link_queue_bytes` already.
    pub link_queue: u64,
    /// Datagrams a `netceptor+udp://` listener dropped (counted by the listeners, not
    /// the state machine; the plane's status adds them).
    pub udp: UdpDrops,
}

/// Why `netceptor+udp://` listeners dropped datagrams, summed over the listeners.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UdpDrops {
    /// From a new source while the listener held `udp_sessions` sessions.
    pub sessions: u64,
    /// From a new source whose address held `udp_sessions_per_ip` sessions.
    pub sessions_per_ip: u64,
    /// From a new source beyond `udp_session_rate`.
    pub session_rate: u64,
    /// From a new source, not opening like a routing update.
    pub not_opening: u64,
    /// Empty, or longer than `max_packet`.
    pub size: u64,
}

impl Drops {
    /// Every counter with its `reason` label in `receptor_netceptor_dropped_total`.
    pub fn by_reason(&self) -> [(&'static str, u64); 14] {
        [
            ("undecodable", self.undecodable),
            ("unknown_hash", self.unknown_hash),
            ("no_route", self.no_route),
            ("expired", self.expired),
            ("over_limits", self.over_limits),
            ("service_unknown", self.service_unknown),
            ("reserved", self.reserved),
            ("advert_rate", self.advert_rate),
            ("link_queue", self.link_queue),
            ("udp_sessions", self.udp.sessions),
            ("udp_sessions_per_ip", self.udp.sessions_per_ip),
            ("udp_session_rate", self.udp.session_rate),
            ("udp_not_opening", self.udp.not_opening),
            ("udp_size", self.udp.size),
        ]
    }
}
