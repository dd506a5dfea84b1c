//! Dialing WebSocket links through HTTP proxies, as sites put them in front of outbound
//! HTTP(S): the proxy comes from the usual environment variables (`HTTPS_PROXY` for `wss`,
//! `HTTP_PROXY` for `ws`, then `ALL_PROXY`; upper case first, then lower case, as Go
//! does), `NO_PROXY` exempts hosts, and the link is a `CONNECT` tunnel, with basic auth when
//! the proxy URL has `user:password@`. Only `http://` proxies (the tunnel's TLS, if any, is
//! the link's own); the proxy's reply is bounded in bytes and time
//! (`limits.websocket.max_proxy_reply`, `proxy_reply_timeout`). Unlike Go, loopback targets
//! are not exempt by themselves: list them in `NO_PROXY`.

use std::io;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::limits::WsLimits;

/// An HTTP proxy from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `user:password`, percent-decoded.
    pub auth: Option<String>,
}

/// Why a proxy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy URL {0:?} is not http://[user:password@]host[:port]")]
    Url(String),
    #[error("cannot reach proxy {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("proxy {addr} refused the tunnel: {status}")]
    Refused { addr: String, status: String },
    #[error("proxy {addr} sent no valid answer: {why}")]
    Reply { addr: String, why: String },
}

/// The proxy to use for `host:port` (`tls`: a `wss` link), from the environment.
pub fn from_env(host: &str, port: u16, tls: bool) -> Result<Option<Proxy>, ProxyError> {
    let var = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()));
    let chosen = if tls { var(&["HTTPS_PROXY", "https_proxy"]) } else { var(&["HTTP_PROXY", "http_proxy"]) };
    let Some(url) = chosen.or_else(|| var(&["ALL_PROXY", "all_proxy"])) else { return Ok(None) };
    if no_proxy(&var(&["NO_PROXY", "no_proxy"]).unwrap_or_default(), host, port) {
        return Ok(None);
    }
    parse(&url).map(Some)
}

/// Whether a `NO_PROXY` list exempts `host:port`: `*`, an exact name or address, a domain
/// and its subdomains (`example.com`, `.example.com`), each optionally with `:port`, or an
/// address range (`10.0.0.0/8`, `fd00::/8`) containing a host given as an address (names
/// are not resolved for it, as Go and curl do).
pub fn no_proxy(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    list.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let (name, p) = match entry.rsplit_once(':') {
            Some((n, _)) if !n.ends_with(']') && n.contains(':') => (entry, None), // bare IPv6
            Some((n, p)) => (n, p.parse::<u16>().ok()),
            None => (entry, None),
        };
        if p.is_some_and(|p| p != port) {
            return false;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Some((net, bits)) = name.split_once('/') {
            return in_range(&host, net, bits);
        }
        let domain = name.trim_start_matches('.');
        host == domain || host.ends_with(&format!(".{domain}"))
    })
}

/// Whether `host` is an address inside `net/bits` (false for names and malformed ranges).
fn in_range(host: &str, net: &str, bits: &str) -> bool {
    use std::net::IpAddr;
    let (Ok(host), Ok(net), Ok(bits)) = (host.parse::<IpAddr>(), net.parse::<IpAddr>(), bits.parse::<u32>())
    else {
        return false;
    };
    let (h, n, width) = match (host, net) {
        (IpAddr::V4(h), IpAddr::V4(n)) => (u128::from(u32::from(h)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(h), IpAddr::V6(n)) => (u128::from(h), u128::from(n), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    // The top `bits` of the address, within its own width.
    let mask = if bits == 0 { 0 } else { (u128::MAX << (width - bits)) & (u128::MAX >> (128 - width)) };
    h & mask == n & mask
}

/// Parses `http://[user:password@]host[:port][/]` (a bare `host:port` is taken as
/// `http://`); port 80 by default.
pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
    let bad = || ProxyError::Url(redact(url));
    let rest = match url.split_once("://") {
        Some(("http" | "HTTP", rest)) => rest,
        Some(_) => return Err(bad()),
        None => url,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(bad());
    }
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(percent_decode(a).ok_or_else(bad)?), h),
        None => (None, rest),
    };
    let (host, port) = super::url::split_host_port(hostport, url).map_err(|_| bad())?;
    let port = match port {
        None => 80,
        Some(p) => p.parse().map_err(|_| bad())?,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Proxy { host: host.to_owned(), port, auth })
}

/// The proxy URL without its password, for messages.
fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((before, after)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…@{after}"),
            None => format!("…@{after}"),
        },
        None => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Opens a `CONNECT` tunnel to `host:port` through `proxy`; the returned stream is the
/// tunnel, nothing of the far end read off it.
pub async fn tunnel(
    proxy: &Proxy,
    host: &str,
    port: u16,
    limits: &WsLimits,
) -> Result<TcpStream, ProxyError> {
    let addr = super::url::authority(&proxy.host, proxy.port);
    let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|source| ProxyError::Connect { addr: addr.clone(), source })?;
    let _ = tcp.set_nodelay(true);
    let target = super::url::authority(host, port);
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = &proxy.auth {
        let b64 = base64::engine::general_purpose::STANDARD.encode(auth);
        req.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
    }
    req.push_str("\r\n");
    let reply = |why: String| ProxyError::Reply { addr: addr.clone(), why };
    tcp.write_all(req.as_bytes()).await.map_err(|e| reply(e.to_string()))?;
    let head = tokio::time::timeout(limits.proxy_reply_timeout, read_head(&mut tcp, limits.max_proxy_reply))
        .await
        .map_err(|_| reply(format!("no answer within {:?}", limits.proxy_reply_timeout)))?
        .map_err(|e| reply(e.to_string()))?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(reply("not an HTTP response".into())),
    }
    match resp.code {
        Some(c) if (200..300).contains(&c) => Ok(tcp),
        c => Err(ProxyError::Refused {
            addr,
            status: format!("{} {}", c.unwrap_or(0), resp.reason.unwrap_or_default()),
        }),
    }
}

/// Reads a response head (up to and including the blank line) and not a byte more: the
/// tunnel's first bytes belong to the link.
async fn read_head(tcp: &mut TcpStream, max: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply longer than limits.websocket.max_proxy_reply",
            ));
        }
        if tcp.read(&mut byte).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_with_auth_and_default_port() {
        assert_eq!(
            parse("http://u%40x:p%3Aw@proxy.example:3128/").expect("parses"),
            Proxy { host: "proxy.example".into(), port: 3128, auth: Some("u@x:p:w".into()) }
        );
        assert_eq!(parse("proxy:8080").expect("parses").port, 8080);
        assert_eq!(
            parse("http://[::1]").expect("parses"),
            Proxy { host: "::1".into(), port: 80, auth: None }
        );
        for bad in ["https://p:1", "socks5://p:1", "http://p:x", "http://:1", "http://p:1/path"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let err = parse("https://user:secret@p:1").expect_err("https proxy").to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn no_proxy_matches_names_domains_ports_and_star() {
        assert!(no_proxy("*", "anything", 1));
        assert!(no_proxy("a.example, .corp.example", "x.corp.example", 1));
        assert!(no_proxy("corp.example", "corp.example", 1));
        assert!(no_proxy("corp.example", "deep.x.corp.example", 1));
        assert!(!no_proxy("corp.example", "notcorp.example", 1));
        assert!(no_proxy("127.0.0.1:9", "127.0.0.1", 9));
        assert!(!no_proxy("127.0.0.1:9", "127.0.0.1", 10));
        assert!(no_proxy("::1", "[::1]", 5));
        assert!(no_proxy("[::1]:5", "::1", 5));
        assert!(!no_proxy("", "h", 1));
        // Address ranges match addresses, not names.
        assert!(no_proxy("10.0.0.0/8", "10.2.3.4", 1));
        assert!(!no_proxy("10.0.0.0/8", "11.0.0.1", 1));
        assert!(no_proxy("192.168.1.0/24:27199", "192.168.1.9", 27199));
        assert!(!no_proxy("192.168.1.0/24:27199", "192.168.1.9", 1));
        assert!(no_proxy("fd00::/8", "[fd12::1]", 1));
        assert!(!no_proxy("fd00::/8", "fe80::1", 1));
        assert!(no_proxy("0.0.0.0/0", "8.8.8.8", 1));
        assert!(no_proxy("10.1.2.3/32", "10.1.2.3", 1));
        assert!(!no_proxy("10.1.2.3/32", "10.1.2.4", 1));
        assert!(!no_proxy("10.0.0.0/8", "ten.example", 1), "names are not resolved");
        assert!(!no_proxy("10.0.0.0/33", "10.0.0.1", 1), "a malformed range matches nothing");
        assert!(!no_proxy("10.0.0.0/8", "::ffff:10.0.0.1", 1));
    }
}
