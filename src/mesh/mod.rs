//! The mesh: membership, link-state routing and flow-controlled streams.
//!
//! [`state`] and [`routing`] are pure (fed events and time); [`driver`] is the thin tokio
//! task around them; [`link`] runs connections, [`router`] forwards frames, [`stream`]
//! carries work end to end, and [`node`] is the handle the rest of the program uses.

pub mod backoff;
mod budget;
pub mod driver;
mod gate;
mod lane;
pub mod link;
pub mod node;
pub(crate) mod router;
pub mod routing;
pub mod state;
pub mod stream;

pub use driver::{MeshStatus, RouteInfo, Topology};
pub use node::{JoinError, Node, NodeOptions, OpenError, PingError, PingReply};
pub use router::Incoming;
pub use state::MeshConfig;
pub use stream::{Chunk, StreamError, StreamReader, StreamWriter};

/// What a node refused or dropped to protect itself, since it started.
#[derive(Debug, Default)]
pub struct MeshCounters {
    /// Advertisements dropped because their link exceeded `limits.advert_rate`.
    pub adverts_dropped: std::sync::atomic::AtomicU64,
    /// Advertisements refused because the link-state database is full.
    pub adverts_refused_full: std::sync::atomic::AtomicU64,
    /// Connections closed before their handshake because of `limits.handshakes*`.
    pub handshakes_refused: std::sync::atomic::AtomicU64,
    /// Links closed because their peer stopped reading (a queue overflowed or stalled).
    pub links_stalled: std::sync::atomic::AtomicU64,
    /// Streams refused because the peer has `limits.streams_per_peer` open.
    pub streams_refused: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
mod sim_tests;
