//! Serving a netceptor stream service to Go nodes: a quinn endpoint on the service's
//! socket; each QUIC connection's first bidirectional stream, once its `0x00` byte
//! arrived, is one session. The control service plugs this into its one accept loop
//! (`control::netceptor` implements `control::Acceptor` for [`Listener`]), so Go's `work submit`, `status` and `results` reach the same
//! handlers, budgets and admission as every other control client. Each service holds at
//! most `limits.netceptor.quic_connections` connections, at most
//! `quic_connections_per_peer` from any one node, each with at most `quic_streams` streams.
//! A service is served in Go's insecure mode (ConnType 1) or with user TLS (ConnType 2,
//! [`super::tls`]): then each connection's handshake proves the dialing node's ID.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::task::TaskTracker;

use super::config;

/// A stream service this node serves over netceptor.
pub struct Listener {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) tracker: TaskTracker,
    pub(crate) resolver: super::socket::Resolver,
    pub(crate) quota: Arc<Quota>,
    /// User TLS (ConnType 2), or Go's insecure mode.
    pub(crate) tls: Option<Arc<super::tls::UserTls>>,
    pub(crate) streams: u32,
}

/// The connections a service holds, per remote node.
#[derive(Debug)]
pub struct Quota {
    per_peer: usize,
    total: usize,
    live: Mutex<HashMap<String, usize>>,
}

/// Why a connection was refused before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the node holds limits.netceptor.quic_connections_per_peer connections with this service")]
    PerPeer,
    #[error("the service holds limits.netceptor.quic_connections connections")]
    Total,
}

impl Quota {
    pub fn new(per_peer: usize, total: usize) -> Arc<Quota> {
        Arc::new(Quota { per_peer, total, live: Mutex::default() })
    }

    /// A slot for one more connection from `node`, held until dropped.
    pub fn take(self: &Arc<Self>, node: &str) -> Result<Slot, Refused> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.values().sum::<usize>() >= self.total {
            return Err(Refused::Total);
        }
        let n = live.entry(node.to_owned()).or_default();
        if *n >= self.per_peer {
            return Err(Refused::PerPeer);
        }
        *n += 1;
        Ok(Slot { quota: self.clone(), node: node.to_owned() })
    }

    /// Connections held by `node`.
    pub fn held(&self, node: &str) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied().unwrap_or(0)
    }
}

/// One connection's place in its service's [`Quota`].
#[derive(Debug)]
pub struct Slot {
    quota: Arc<Quota>,
    node: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self.quota.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = live.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.node);
            }
        }
    }
}

/// A connection not yet a session (`control` makes it one).
pub struct NetStream {
    pub(crate) incoming: quinn::Incoming,
    pub(crate) tracker: TaskTracker,
    pub(crate) slot: Option<Slot>,
    /// The netceptor node the connection came from (as its packets name it).
    pub(crate) node: String,
    pub(crate) tls: Option<Arc<super::tls::UserTls>>,
    pub(crate) streams: u32,
}

/// Builds the endpoint of a stream service on `socket`, allowing `streams` streams per
/// connection. With user TLS every connection is accepted with its own config
/// ([`super::tls::UserTls::server`]); the endpoint's default then is one no client
/// certificate satisfies.
pub(crate) fn endpoint(
    socket: super::socket::NetSocket,
    streams: u32,
    tls: Option<&super::tls::UserTls>,
) -> Result<quinn::Endpoint, config::ConfigError> {
    let server = match tls {
        None => config::insecure_server(streams)?,
        Some(t) => t.server("", streams)?,
    };
    quinn::Endpoint::new_with_abstract_socket(
        config::endpoint(),
        Some(server),
        Arc::new(socket),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| config::ConfigError::Quic(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_bounds_each_node_and_the_whole_service() {
        let q = Quota::new(2, 3);
        let a1 = q.take("a").expect("a1");
        let _a2 = q.take("a").expect("a2");
        assert_eq!(q.take("a").err(), Some(Refused::PerPeer));
        let _b1 = q.take("b").expect("b1");
        assert_eq!(q.take("c").err(), Some(Refused::Total));
        drop(a1);
        assert_eq!(q.held("a"), 1);
        let _c1 = q.take("c").expect("a slot freed by a closed connection");
    }
}
