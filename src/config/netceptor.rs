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
    /// Serve that control service with user TLS inside the netceptor streams (Go's
    /// ConnType 2, as `control-service tls=` on a Go node): this node's `[tls]`
    /// certificate, and every client must present a certificate from `[tls] ca` naming
    /// the node it dials from, which then is its identity for `[[work.allow]]` and
    /// `[[control.allow]]`. Unset: on when `[tls]` exists (AWX's control nodes read the
    /// advertised ConnType and submit with their TLS client); `false` serves Go's insecure
    /// mode (ConnType 1), for Go controllers that submit without `--tls-client`.
    pub control_tls: Option<bool>,
    /// Carry netceptor packets over native (`receptor://`) links whose peers offer to, so
    /// Go nodes reach receptord nodes linked only natively: the plane runs on every node
    /// (idle, and silent, until a Go node is linked somewhere in the mesh). `false`: the
    /// plane runs only with netceptor peers or listeners, and native links carry nothing.
    pub native_links: bool,
}

impl Default for NetceptorSection {
    fn default() -> Self {
        NetceptorSection { accept: true, advertise_control: true, control_tls: None, native_links: true }
    }
}

impl NetceptorSection {
    /// Whether the control service is served with user TLS, given whether `[tls]` exists.
    pub fn control_tls(&self, have_tls: bool) -> bool {
        self.control_tls.unwrap_or(have_tls)
    }
}

/// Checks the link URLs that name Go peers: `netceptor://`, `netceptors://`,
/// `netceptor+ws://` and `netceptor+wss://` only in `[[peers]]` (Go peers reach this node on
/// its `receptor://`, `receptors://`, `ws://` and `wss://` listeners); the TLS ones need
/// `[tls]`, like every TLS URL. `netceptor+udp://` is both a peer and a listener (Go's
/// `--udp-peer` needs a UDP listener to dial).
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
                 already accepts Go peers (their --tcp-peer needs no change), every ws:// or wss:// \
                 listener Go's --ws-peer"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// `control_tls = true` needs `[tls]` (the certificate the service presents).
pub(crate) fn validate_section(section: &NetceptorSection, have_tls: bool) -> Result<(), (String, String)> {
    if section.control_tls == Some(true) && !have_tls {
        return Err((
            "netceptor.control_tls".into(),
            "user TLS streams need the [tls] section (this node's certificate, key and CAs)".into(),
        ));
    }
    Ok(())
}

/// Headers the upgrade request may not be given: the WebSocket handshake's own.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "upgrade",
    "connection",
    "origin",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
];

/// Checks `headers`: only on WebSocket `[[peers]]`, valid HTTP names and values, none of
/// the handshake's own.
pub(crate) fn validate_headers(
    listeners: &[super::LinkSection],
    peers: &[super::LinkSection],
) -> Result<(), (String, String)> {
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    if let Some(i) = listeners.iter().position(|l| !l.headers.is_empty()) {
        return Err((format!("listeners[{i}].headers"), "applies to WebSocket peers only".into()));
    }
    for (i, p) in peers.iter().enumerate() {
        if p.headers.is_empty() {
            continue;
        }
        let key = format!("peers[{i}].headers");
        if p.url.ws.is_none() {
            return Err((
                key,
                "applies to ws://, wss://, netceptor+ws:// and netceptor+wss:// peers only".into(),
            ));
        }
        for (name, value) in &p.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
                return Err((format!("{key}.{name}"), "is not a valid HTTP header".into()));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err((format!("{key}.{name}"), "is set by the WebSocket handshake itself".into()));
            }
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
