//! Peer and listener URLs: `receptor://host:port` (alias `rnp://`, default port 8888) and
//! `receptors://host:port` (alias `rnps://`, TLS, default port 8899). A bare `host:port`
//! means plain TCP. Go Receptor peers (the netceptor protocol, `crate::netceptor`) are
//! named with their own schemes: `netceptor://host:port` (TCP) and `netceptors://host:port`
//! (TLS); Go backends have no default port, so these need one.
//!
//! WebSocket links carry a path: `ws://host:port/path` and `wss://…` (receptord's own
//! protocol, default ports 80 and 443), `netceptor+ws://host:port/path` and
//! `netceptor+wss://…` (Go Receptor's `--ws-listener`). The path and the HTTP side of such a
//! link (extra headers, bounds) are its [`WsTarget`].
//! (TLS); Go backends have no default port, so these need one. `netceptor+udp://host:port`
//! is Go's UDP backend (`--udp-peer`, `--udp-listener`; one packet per datagram), spoken
//! only with Go peers: receptord's own protocol does not run over UDP.

use std::fmt;
use std::str::FromStr;

/// Default port of plain links, as in the original Receptor.
pub const DEFAULT_TCP_PORT: u16 = 8888;
/// Default port of TLS links.
pub const DEFAULT_TLS_PORT: u16 = 8899;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Tcp,
    Tls,
    /// Datagrams (netceptor only).
    Udp,
}

/// Which wire protocol a link speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// receptord's own.
    #[default]
    Native,
    /// Go Receptor's netceptor.
    Netceptor,
}

/// A parsed link address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUrl {
    pub protocol: Protocol,
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Set for WebSocket links (over TCP for `Scheme::Tcp`, TLS for `Scheme::Tls`).
    pub ws: Option<Box<WsTarget>>,
}

/// The HTTP side of a WebSocket link: the upgrade request's path, the extra headers a
/// dialer sends (the link's `headers` config key) and `[limits.websocket]` (both filled
/// in by the configuration; defaults otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsTarget {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub limits: crate::limits::WsLimits,
}

/// Longest path a WebSocket URL may carry.
pub const MAX_WS_PATH: usize = 1024;

/// Whether `path` is an absolute URL path of RFC 3986 `pchar`s and `/` (no query, no
/// fragment), so it goes into a request line unchanged.
fn valid_ws_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_WS_PATH
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error(
        "unsupported scheme {0:?} (use receptor://, rnp://, receptors://, rnps://, ws://, wss://, or netceptor://, netceptors://, netceptor+ws://, netceptor+wss:// and netceptor+udp:// for Go Receptor peers)"
    )]
    Scheme(String),
    #[error("missing host in {0:?}")]
    Host(String),
    #[error("invalid port in {0:?}")]
    Port(String),
    #[error("unexpected path or query in {0:?}")]
    Path(String),
    #[error("{0:?} needs a port (Go Receptor listeners have no default port)")]
    NoPort(String),
    #[error("invalid WebSocket path in {0:?} (an absolute path of URL characters, no query)")]
    WsPath(String),
}

impl FromStr for PeerUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (protocol, scheme, rest) = match s.split_once("://") {
            Some(("receptor" | "rnp" | "tcp", rest)) => (Protocol::Native, Scheme::Tcp, rest),
            Some(("receptors" | "rnps" | "tls", rest)) => (Protocol::Native, Scheme::Tls, rest),
            Some(("netceptor", rest)) => (Protocol::Netceptor, Scheme::Tcp, rest),
            Some(("netceptors", rest)) => (Protocol::Netceptor, Scheme::Tls, rest),
            Some(("ws" | "wss" | "netceptor+ws" | "netceptor+wss", _)) => return parse_ws(s),
            Some(("netceptor+udp", rest)) => (Protocol::Netceptor, Scheme::Udp, rest),
            Some((other, _)) => return Err(UrlError::Scheme(other.to_owned())),
            None => (Protocol::Native, Scheme::Tcp, s),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(UrlError::Path(s.to_owned()));
        }
        let default_port = match scheme {
            Scheme::Tcp | Scheme::Udp => DEFAULT_TCP_PORT,
            Scheme::Tls => DEFAULT_TLS_PORT,
        };
        let (host, port) = host_port(rest, s, protocol, default_port)?;
        Ok(PeerUrl { protocol, scheme, host, port, ws: None })
    }
}

/// `ws://`, `wss://`, `netceptor+ws://`, `netceptor+wss://` with an optional path.
fn parse_ws(s: &str) -> Result<PeerUrl, UrlError> {
    let (name, rest) = s.split_once("://").ok_or_else(|| UrlError::Scheme(s.to_owned()))?;
    let (protocol, scheme, default_port) = match name {
        "ws" => (Protocol::Native, Scheme::Tcp, 80),
        "wss" => (Protocol::Native, Scheme::Tls, 443),
        "netceptor+ws" => (Protocol::Netceptor, Scheme::Tcp, 0),
        _ => (Protocol::Netceptor, Scheme::Tls, 0),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains(['?', '#']) || !valid_ws_path(path) {
        return Err(UrlError::WsPath(s.to_owned()));
    }
    let (host, port) = host_port(authority, s, protocol, default_port)?;
    let ws = WsTarget { path: path.to_owned(), headers: Vec::new(), limits: Default::default() };
    Ok(PeerUrl { protocol, scheme, host, port, ws: Some(Box::new(ws)) })
}

/// The host and port of an authority; netceptor URLs need an explicit port.
fn host_port(rest: &str, s: &str, protocol: Protocol, default_port: u16) -> Result<(String, u16), UrlError> {
    let (host, port) = split_host_port(rest, s)?;
    let port = match port {
        None if protocol == Protocol::Netceptor => return Err(UrlError::NoPort(s.to_owned())),
        None => default_port,
        Some(p) => p.parse().map_err(|_| UrlError::Port(s.to_owned()))?,
    };
    if host.is_empty() {
        return Err(UrlError::Host(s.to_owned()));
    }
    Ok((host.to_owned(), port))
}

/// Splits `host[:port]`, accepting bracketed IPv6 literals.
/// `host:port` as it goes in a URL or an HTTP request (an IPv6 address in brackets).
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Splits `host[:port]` (`[v6][:port]`); `whole` names the input in errors.
pub(crate) fn split_host_port<'a>(
    rest: &'a str,
    whole: &str,
) -> Result<(&'a str, Option<&'a str>), UrlError> {
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| UrlError::Host(whole.to_owned()))?;
        return match after {
            "" => Ok((host, None)),
            p => Ok((host, Some(p.strip_prefix(':').ok_or_else(|| UrlError::Port(whole.to_owned()))?))),
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    })
}

impl fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.protocol, self.scheme, self.ws.is_some()) {
            (Protocol::Native, Scheme::Tcp, false) => "receptor",
            (Protocol::Native, Scheme::Tls, false) => "receptors",
            (Protocol::Netceptor, Scheme::Tcp, false) => "netceptor",
            (Protocol::Netceptor, Scheme::Tls, false) => "netceptors",
            (Protocol::Native, Scheme::Tcp, true) => "ws",
            (Protocol::Native, Scheme::Tls, true) => "wss",
            (Protocol::Netceptor, Scheme::Tcp, true) => "netceptor+ws",
            (Protocol::Netceptor, Scheme::Tls, true) => "netceptor+wss",
            (Protocol::Netceptor, Scheme::Udp, _) => "netceptor+udp",
            // Not produced by parsing: receptord's protocol has no UDP backend.
            (Protocol::Native, Scheme::Udp, _) => "udp",
        };
        write!(f, "{scheme}://{}", authority(&self.host, self.port))?;
        match &self.ws {
            Some(ws) => f.write_str(&ws.path),
            None => Ok(()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for PeerUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PeerUrl {
        s.parse().expect("parses")
    }

    #[test]
    fn parses_schemes_and_default_ports() {
        assert_eq!(
            p("receptor://h"),
            PeerUrl {
                protocol: Protocol::Native,
                scheme: Scheme::Tcp,
                host: "h".into(),
                port: 8888,
                ws: None
            }
        );
        assert_eq!(p("rnp://h:1234").port, 1234);
        assert_eq!(p("receptors://h").port, 8899);
        assert_eq!(p("rnps://h").scheme, Scheme::Tls);
        assert_eq!(p("127.0.0.1:9").port, 9);
        assert_eq!(p("receptor://[::1]:7").host, "::1");
        assert_eq!(p("receptor://host.example.com:1234/").to_string(), "receptor://host.example.com:1234");
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!("http://h".parse::<PeerUrl>(), Err(UrlError::Scheme(_))));
        assert!(matches!("receptor://h:x".parse::<PeerUrl>(), Err(UrlError::Port(_))));
        assert!(matches!("receptor://:8".parse::<PeerUrl>(), Err(UrlError::Host(_))));
        assert!(matches!("receptor://h:1/x".parse::<PeerUrl>(), Err(UrlError::Path(_))));
        assert!(matches!("receptor://h:99999".parse::<PeerUrl>(), Err(UrlError::Port(_))));
        assert!(matches!("netceptor://h".parse::<PeerUrl>(), Err(UrlError::NoPort(_))));
    }

    #[test]
    fn netceptor_schemes_name_go_peers() {
        let u = p("netceptor://go.example.com:27199");
        assert_eq!((u.protocol, u.scheme, u.port), (Protocol::Netceptor, Scheme::Tcp, 27199));
        assert_eq!(u.to_string(), "netceptor://go.example.com:27199");
        let t = p("netceptors://[::1]:5");
        assert_eq!((t.protocol, t.scheme), (Protocol::Netceptor, Scheme::Tls));
        assert_eq!(t.to_string(), "netceptors://[::1]:5");
        let u = p("netceptor+udp://127.0.0.1:27200");
        assert_eq!((u.protocol, u.scheme, u.port), (Protocol::Netceptor, Scheme::Udp, 27200));
        assert_eq!(u.to_string(), "netceptor+udp://127.0.0.1:27200");
        assert!(matches!("netceptor+udp://h".parse::<PeerUrl>(), Err(UrlError::NoPort(_))));
        assert!(matches!("udp://h:1".parse::<PeerUrl>(), Err(UrlError::Scheme(_))));
    }

    #[test]
    fn websocket_schemes_carry_a_path() {
        let u = p("ws://h:9/mesh");
        assert_eq!((u.protocol, u.scheme, u.port), (Protocol::Native, Scheme::Tcp, 9));
        assert_eq!(u.ws.as_ref().map(|w| w.path.as_str()), Some("/mesh"));
        assert_eq!(u.to_string(), "ws://h:9/mesh");
        assert_eq!(p("ws://h").port, 80);
        assert_eq!(p("wss://h").to_string(), "wss://h:443/");
        let g = p("netceptor+wss://[::1]:7/a/b");
        assert_eq!((g.protocol, g.scheme), (Protocol::Netceptor, Scheme::Tls));
        assert_eq!(g.to_string(), "netceptor+wss://[::1]:7/a/b");
        assert_eq!(p("netceptor+ws://h:1").ws.map(|w| w.path), Some("/".into()));
        assert!(matches!("netceptor+ws://h/x".parse::<PeerUrl>(), Err(UrlError::NoPort(_))));
        for bad in ["ws://h:1/a?b", "ws://h:1/a b", "ws://h:1/a#x", "ws://h?x"] {
            assert!(matches!(bad.parse::<PeerUrl>(), Err(UrlError::WsPath(_))), "{bad}");
        }
        let long = format!("ws://h:1/{}", "a".repeat(MAX_WS_PATH));
        assert!(matches!(long.parse::<PeerUrl>(), Err(UrlError::WsPath(_))));
        assert!(p("receptor://h:1").ws.is_none());
    }
}
