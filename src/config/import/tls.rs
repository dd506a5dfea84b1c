//! Go's named `tls-server`/`tls-client` configurations folded into receptord's single
//! `[tls]` section: one certificate for every TLS link, one set of CAs, one pin list. What
//! a single section cannot say (a second certificate, a link without pins next to pinned
//! ones, SHA-512 pins, `insecureskipverify`) is listed, never weakened silently.

use super::{ImportError, LeftOut, yaml::Entry};

/// One Go TLS configuration.
#[derive(Debug)]
pub struct TlsDef {
    path: String,
    server: bool,
    cert: Option<String>,
    key: Option<String>,
    /// `clientcas` (server) or `rootcas` (client).
    ca: Option<String>,
    require_client_cert: bool,
    pinned: Vec<String>,
    skip_names_check: bool,
    min_tls13: bool,
    insecure_skip_verify: bool,
}

impl TlsDef {
    pub fn read(e: &mut Entry, server: bool) -> Result<TlsDef, ImportError> {
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let (ca, pinned) =
            if server { ("clientcas", "pinnedclientcert") } else { ("rootcas", "pinnedservercert") };
        Ok(TlsDef {
            path: e.path.clone(),
            server,
            cert: nonempty(e.str("cert")?),
            key: nonempty(e.str("key")?),
            ca: nonempty(e.str(ca)?),
            require_client_cert: e.bool("requireclientcert")?.unwrap_or(false),
            pinned: e.list(pinned)?,
            skip_names_check: e.bool("skipreceptornamescheck")?.unwrap_or(false),
            min_tls13: e.bool("mintls13")?.unwrap_or(false),
            insecure_skip_verify: e.bool("insecureskipverify")?.unwrap_or(false),
        })
    }
}

impl TlsDef {
    /// A server config that demands client certificates.
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
    }
}

/// receptord's `[tls]` section.
#[derive(Debug)]
pub struct TlsOut {
    pub cert: String,
    pub key: String,
    pub ca: Vec<String>,
    pub require_client_cert: bool,
    pub pinned: Vec<String>,
    pub min_version: &'static str,
    pub skip_node_id_check: bool,
}

fn left(out: &mut Vec<LeftOut>, path: String, reason: impl Into<String>) {
    out.push(LeftOut { path, reason: reason.into() });
}

/// Folds the TLS configs the translated entries use (servers first, in use order) into one
/// `[tls]` section, or `None` when none is used or none can be made.
pub fn resolve(used: &[&TlsDef], out: &mut Vec<LeftOut>) -> Option<TlsOut> {
    if used.is_empty() {
        return None;
    }
    let mut order: Vec<&TlsDef> = used.iter().copied().filter(|d| d.server).collect();
    order.extend(used.iter().copied().filter(|d| !d.server));
    let Some(id) = order.iter().copied().find(|d| d.cert.is_some() && d.key.is_some()) else {
        for d in &order {
            left(
                out,
                d.path.clone(),
                "no certificate and key: receptord presents one on every TLS link ([tls] cert, key)",
            );
        }
        return None;
    };
    let (cert, key) = (id.cert.clone()?, id.key.clone()?);
    let mut ca: Vec<String> = Vec::new();
    for d in &order {
        if d.insecure_skip_verify {
            left(out, format!("{}.insecureskipverify", d.path), "receptord always verifies peers");
        }
        if d.cert.is_some() && (d.cert != id.cert || d.key != id.key) {
            left(
                out,
                format!("{}.cert", d.path),
                format!("receptord presents one certificate on every TLS link (the one of {})", id.path),
            );
        }
        match &d.ca {
            Some(c) if !ca.contains(c) => ca.push(c.clone()),
            Some(_) => {}
            None if d.server && !d.require_client_cert => {}
            None => left(
                out,
                d.path.clone(),
                "no CA bundle (Go: the system trust store): receptord checks peers against tls.ca only",
            ),
        }
        if d.server && d.require_client_cert != id_require(&order) {
            left(
                out,
                format!("{}.requireclientcert", d.path),
                "receptord has one require_client_cert for every TLS listener",
            );
        }
    }
    if ca.is_empty() {
        left(out, id.path.clone(), "no CA bundle: receptord needs tls.ca to verify peers");
        return None;
    }
    let min13 = order.iter().all(|d| d.min_tls13);
    for d in order.iter().filter(|d| d.min_tls13 && !min13) {
        left(
            out,
            format!("{}.mintls13", d.path),
            "receptord has one min_version: 1.2, as other TLS configs allow",
        );
    }
    Some(TlsOut {
        cert,
        key,
        ca,
        require_client_cert: id_require(&order),
        pinned: pins(&order, out),
        min_version: if min13 { "1.3" } else { "1.2" },
        skip_node_id_check: id.skip_names_check,
    })
}

/// The first server's `requireclientcert` (mutual TLS when only clients are used).
fn id_require(order: &[&TlsDef]) -> bool {
    order.iter().find(|d| d.server).is_none_or(|d| d.require_client_cert)
}

/// SHA-256 pins, applied by receptord to every TLS link: kept only when every TLS config
/// in use pins.
fn pins(order: &[&TlsDef], out: &mut Vec<LeftOut>) -> Vec<String> {
    let all_pin = order.iter().all(|d| !d.pinned.is_empty());
    let mut pins = Vec::new();
    for d in order.iter().filter(|d| !d.pinned.is_empty()) {
        let field = if d.server { "pinnedclientcert" } else { "pinnedservercert" };
        for (i, p) in d.pinned.iter().enumerate() {
            let at = format!("{}.{field}[{i}]", d.path);
            let hex: String = p.chars().filter(|c| *c != ':').collect();
            if !all_pin {
                left(
                    out,
                    at,
                    "receptord applies pins to every TLS link, and another TLS config in use has none",
                );
            } else if crate::transport::tls::parse_fingerprint(&hex).is_none() {
                left(out, at, "receptord pins SHA-256 fingerprints (64 hex digits) only");
            } else if !pins.contains(&hex) {
                pins.push(hex);
            }
        }
    }
    pins
}
