//! The `[netceptor]` section: how this node takes part in Go Receptor meshes. Peers are
//! `[[peers]]` with `netceptor://` URLs; this section only says whether `receptor://`
//! listeners also accept Go peers and which services are advertised to them.

use serde::Deserialize;

/// The `[netceptor]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetceptorSection {
    /// Accept Go Receptor peers (`--tcp-peer`) on every `receptor://` listener, told apart
    /// from native peers by their first bytes.
    pub accept: bool,
    /// Serve the control service to Go nodes (netceptor streams; with `[control]
    /// mesh_service`) and advertise it with this node's work types, so `receptorctl
    /// status` and AWX list them and Go control nodes can submit work here.
    pub advertise_control: bool,
}

impl Default for NetceptorSection {
    fn default() -> Self {
        NetceptorSection { accept: true, advertise_control: true }
    }
}

/// Checks the link URLs that name Go peers: `netceptor://` only in `[[peers]]` (Go
/// peers reach this node on its `receptor://` listeners), TLS not yet.
pub(crate) fn validate_links(
    listeners: &[super::LinkSection],
    peers: &[super::LinkSection],
) -> Result<(), (String, String)> {
    use crate::transport::{Protocol, Scheme};
    for (i, l) in listeners.iter().enumerate() {
        if l.url.protocol == Protocol::Netceptor {
            return Err((
                format!("listeners[{i}].url"),
                "netceptor:// names Go Receptor peers to dial ([[peers]]); every receptor:// listener \
                 already accepts Go peers (their --tcp-peer needs no change)"
                    .into(),
            ));
        }
    }
    for (i, p) in peers.iter().enumerate() {
        if p.url.protocol == Protocol::Netceptor && p.url.scheme == Scheme::Tls {
            return Err((
                format!("peers[{i}].url"),
                "netceptors:// (TLS to Go peers) is not supported yet".into(),
            ));
        }
    }
    Ok(())
}
