//! Go's WebSocket backends in `receptor config import`: `ws-listener` and `ws-peer`, with
//! `path` and `extraheader` (kept apart from the TCP ones so each backend's rules stay in
//! one place).

use super::{ImportError, Link, Translation, parse_url, yaml};

impl Translation {
    /// `ws-listener` → `[[listeners]]` `ws://` (`wss://` with `tls=`), on its `path`: it
    /// takes Go's `--ws-peer` and receptord's `ws://` peers alike.
    pub(super) fn ws_listener(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let authority = super::listen_authority(e, "TCP")?;
        let path = e.str("path")?.filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        let tls = e.str("tls")?.filter(|s| !s.is_empty());
        let cost = self.link_common(e)?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let path = if path.starts_with('/') { path } else { format!("/{path}") };
        let url = parse_url(&e.path, &format!("{scheme}://{authority}{path}"))?;
        self.listeners.push(Link { path: e.path.clone(), url, cost, tls, headers: Vec::new() });
        Ok(())
    }

    /// `ws-peer` → `[[peers]]` `netceptor+ws://` (`netceptor+wss://` for a `wss://`
    /// address; `ws://`/`wss://` with `--native-peers`), `extraheader` → `headers`.
    pub(super) fn ws_peer(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let at = e.at("address");
        let address = e
            .str("address")?
            .ok_or_else(|| ImportError::Invalid { path: at.clone(), reason: "is required".into() })?;
        let tls = e.str("tls")?.filter(|s| !s.is_empty());
        let header_at = e.at("extraheader");
        let header = e.str("extraheader")?.filter(|h| !h.trim().is_empty());
        let cost = self.link_common(e)?;
        let redial_at = e.at("redial");
        if e.bool("redial")? == Some(false) {
            self.left(redial_at, "receptord always redials its peers");
        }
        let (secure, rest) = match address.split_once("://") {
            Some(("ws", rest)) => (false, rest),
            Some(("wss", rest)) => (true, rest),
            _ => {
                return Err(ImportError::Invalid {
                    path: at,
                    reason: "must be a ws:// or wss:// URL".into(),
                });
            }
        };
        let scheme = match (self.opts.native_peers, secure) {
            (false, false) => "netceptor+ws",
            (false, true) => "netceptor+wss",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        let url = parse_url(&e.path, &format!("{scheme}://{rest}"))?;
        let mut headers = Vec::new();
        if let Some(h) = header {
            match h.split_once(':') {
                Some((name, value)) if !name.trim().is_empty() => {
                    headers.push((name.trim().to_owned(), value.trim().to_owned()));
                }
                _ => self.left(header_at, "is not \"Name: value\""),
            }
        }
        self.peers.push(Link { path: e.path.clone(), url, cost, tls, headers });
        Ok(())
    }
}
