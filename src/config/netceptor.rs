//! The `[netceptor]` section: how this node takes part in Go Receptor meshes. Peers are
//! `[[peers]]` with `netceptor://` URLs; this section only says whether `receptor://`
//! listeners also accept Go peers and which services are advertised to them. Go's UDP
//! backend is the one netceptor listener: `[[listeners]] url = "netceptor+udp://…"`.

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

/// Checks the link URLs that name Go peers: `netceptor://` and `netceptors://` only in
/// `[[peers]]` (Go peers reach this node on its `receptor://` and `receptors://`
/// listeners); `netceptors://` needs `[tls]`, like every TLS URL. `netceptor+udp://` is
/// both a peer and a listener (Go's `--udp-peer` needs a UDP listener to dial).
pub(crate) fn validate_links(
    listeners: &[super::LinkSection],
    _peers: &[super::LinkSection],
) -> Result<(), (String, String)> {
    use crate::transport::Protocol;
    for (i, l) in listeners.iter().enumerate() {
        if l.url.scheme == crate::transport::Scheme::Udp && !l.relays {
            return Err((
                format!("listeners[{i}].relays"),
                "applies to receptor:// listeners only (a netceptor+udp:// listener serves Go peers)".into(),
            ));
        }
        if l.url.protocol == Protocol::Netceptor && l.url.scheme != crate::transport::Scheme::Udp {
            return Err((
                format!("listeners[{i}].url"),
                "netceptor:// names Go Receptor peers to dial ([[peers]]); every receptor:// listener \
                 already accepts Go peers (their --tcp-peer needs no change)"
                    .into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    fn load(links: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.toml");
        std::fs::write(&path, format!("[node]\nid = \"n\"\ndata_dir = \"/tmp/n\"\n{links}")).expect("write");
        crate::config::Config::load(&path)
    }

    #[test]
    fn udp_is_a_listener_and_a_peer_other_netceptor_urls_only_peers() {
        let cfg = load(
            "[[listeners]]\nurl = \"netceptor+udp://127.0.0.1:27200\"\n\
             [[peers]]\nurl = \"netceptor+udp://go:27201\"\n",
        )
        .expect("loads");
        assert!(cfg.is_leaf(), "a UDP listener carries no native links: still a leaf by default");
        let err = load("[[listeners]]\nurl = \"netceptor://127.0.0.1:1\"\n").expect_err("refused");
        assert!(err.to_string().contains("listeners[0].url"), "{err}");
        let err = load("[[listeners]]\nurl = \"netceptor+udp://127.0.0.1:1\"\nrelays = false\n")
            .expect_err("refused");
        assert!(err.to_string().contains("listeners[0].relays"), "{err}");
        let err = load("[limits.netceptor]\nudp_sessions = 0\n").expect_err("refused");
        assert!(err.to_string().contains("udp_sessions"), "{err}");
    }
}
