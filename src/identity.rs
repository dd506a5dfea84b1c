//! Who is asking. An [`Origin`] is produced only where a party is authenticated — the
//! control listeners (`control::listen`) and the mesh's stream admission (`mesh`) — and
//! is what authorization (`[[work.allow]]`), unit ownership and signature checks see.
//! It is never built from a name copied out of a frame or a request.

use crate::wire::NodeId;

/// What every node ID a peer without a certificate may use begins with: the temporary IDs
/// `receptor` picks for itself. `receptor cert` issues no certificate for such an ID, so a
/// certificate-less peer (a TLS listener without `require_client_cert`) can never pass
/// for a certified node.
pub const UNCERTIFIED_PREFIX: &str = "receptor-client-";

/// Whether a peer that proved nothing may join under `id`.
pub fn may_join_uncertified(id: &NodeId) -> bool {
    id.as_str().starts_with(UNCERTIFIED_PREFIX)
}

/// Why a certificate-less peer was refused its ID.
pub fn uncertified_refusal(id: &NodeId) -> String {
    format!(
        "the peer presented no certificate, so it may only join under a temporary client ID \
         ({UNCERTIFIED_PREFIX}…), not as {id}"
    )
}

/// The party on the other end of a control session or a work stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The local Unix control socket: access is the socket's file permissions; trusted,
    /// as in Go Receptor.
    Socket,
    /// A client of a TCP control listener: `Some(id)` when it presented a TLS client
    /// certificate carrying a node ID (verified against the configured CAs), `None` for a
    /// client without one (plain TCP, or TLS without a client certificate).
    Network(Option<NodeId>),
    /// The far end of a stream over the mesh.
    Mesh(Peer),
}

impl Origin {
    /// The node ID this origin was authenticated as, if any.
    pub fn node(&self) -> Option<&NodeId> {
        match self {
            Origin::Socket | Origin::Network(None) => None,
            Origin::Network(Some(id)) => Some(id),
            Origin::Mesh(p) => Some(p.id()),
        }
    }
}

/// A mesh node at the far end of a stream, and how we know who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    id: NodeId,
    proof: Proof,
}

/// How a [`Peer`]'s node ID was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The far end proved the ID with its node certificate, end to end over the stream.
    Certificate,
    /// A plain-TCP mesh (no `[tls]`, the documented "trusted network" mode), or a TLS mesh
    /// with `[tls] e2e_streams = false`: the ID the stream's frames carry, checked only
    /// where they entered the mesh (a leaf link may only send its own ID), and a stream
    /// a node opens to itself.
    TrustedNetwork,
}

impl Peer {
    /// A peer that proved `id` with its node certificate. Only the mesh's end-to-end
    /// stream handshake calls this.
    /// A client session (`NODE~TAG`) is the node it speaks for.
    pub(crate) fn certified(id: NodeId) -> Peer {
        Peer { id: id.principal(), proof: Proof::Certificate }
    }

    /// A peer of a plain-TCP ("trusted network") mesh. Only the mesh calls this.
    pub(crate) fn trusted_network(id: NodeId) -> Peer {
        Peer { id: id.principal(), proof: Proof::TrustedNetwork }
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    pub fn proof(&self) -> Proof {
        self.proof
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.id.fmt(f)
    }
}
