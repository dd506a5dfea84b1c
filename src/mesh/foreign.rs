//! Another wire protocol on a mesh listener's port: the one hook by which Go Receptor peers
//! (`crate::netceptor`) share `receptor://` ports. The listener reads a connection's first
//! four bytes; a connection that does not open with this protocol's preface and that the
//! other protocol claims is handed over, everything else stays on the native path (and
//! fails its handshake there as before).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::transport::{self, BoxedIo, PeerIdentity};
use crate::wire::PREFACE;

/// A connection handed to another protocol.
pub struct ForeignConn {
    /// The stream, its first bytes put back.
    pub io: BoxedIo,
    pub addr: SocketAddr,
    /// The listener's cost.
    pub cost: f64,
    pub identity: Option<PeerIdentity>,
}

/// Another protocol sharing a listener: which connections it `claims` (by their first four
/// bytes) and where they go.
#[derive(Clone)]
pub struct Foreign {
    pub claims: fn(&[u8]) -> bool,
    pub take: Arc<dyn Fn(ForeignConn) + Send + Sync>,
}

/// What became of a sniffed connection.
pub(crate) enum Sniffed {
    /// Ours: carry on with the native handshake (the first bytes are put back).
    Native(BoxedIo),
    /// Handed to the other protocol.
    Taken,
    /// Closed or silent before four bytes arrived.
    Silent,
}

impl Foreign {
    pub(crate) async fn sniff(
        &self,
        io: BoxedIo,
        addr: SocketAddr,
        cost: f64,
        identity: Option<PeerIdentity>,
        timeout: Duration,
    ) -> Sniffed {
        let Some((first, io)) = transport::prefixed::peek(io, PREFACE.len(), timeout).await else {
            return Sniffed::Silent;
        };
        if first[..] != PREFACE[..] && (self.claims)(&first) {
            (self.take)(ForeignConn { io, addr, cost, identity });
            return Sniffed::Taken;
        }
        Sniffed::Native(io)
    }
}
