//! `receptor config import`: a Go Receptor (1.4) YAML configuration translated into a
//! receptord TOML configuration, plus the list of what could not be translated, each item
//! named by its YAML path. Nothing is guessed: a Go setting receptord has no equivalent for
//! is left out and listed, never approximated by something weaker. The TOML is built here
//! (`emit`), the TLS material resolved in `tls`, the YAML read in `yaml`.

use std::path::Path;
use std::time::Duration;

use crate::transport::PeerUrl;

mod emit;
mod tls;
mod work;
mod ws;
mod yaml;

pub use yaml::{MAX_ENTRIES, MAX_IMPORT_BYTES};

/// A file that is not a Go Receptor configuration at all (as opposed to one with parts
/// receptord cannot express, which are [`LeftOut`]).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    #[error("larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A Go setting with no receptord equivalent: where it is and why it was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// YAML path: `[3].tcp-peer.redial`, `tcp-peers[0].allowedpeers` (version 2 files).
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// How to translate.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dial `tcp-peer`s as receptord nodes (`receptor://`, `receptors://`) instead of Go
    /// nodes (`netceptor://`, `netceptors://`): for a mesh migrated node by node, once the
    /// peer runs receptord.
    pub native_peers: bool,
}

/// The translation: TOML text and what it lacks.
#[derive(Debug, Clone)]
pub struct Imported {
    pub toml: String,
    pub left_out: Vec<LeftOut>,
}

/// Reads `path` (at most [`MAX_IMPORT_BYTES`]) and translates it.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Imported, ImportError> {
    use std::io::Read;
    let file = path.display().to_string();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_IMPORT_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| ImportError::Read { file: file.clone(), reason: e.to_string() })?;
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(ImportError::TooLarge { max: MAX_IMPORT_BYTES });
    }
    let text =
        String::from_utf8(bytes).map_err(|_| ImportError::Read { file, reason: "not UTF-8".into() })?;
    import_str(&text, opts)
}

/// Translates the YAML `text`.
pub fn import_str(text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let mut t = Translation { opts: opts.clone(), ..Translation::default() };
    let mut entries = yaml::entries(text)?;
    // TLS definitions first: links may name one defined further down.
    for e in entries.iter_mut().filter(|e| e.name == "tls-server" || e.name == "tls-client") {
        t.tls_def(e)?;
    }
    for mut e in entries {
        t.entry(&mut e)?;
        for path in e.rest() {
            t.left(path, "not a parameter receptord knows for this entry");
        }
    }
    t.finish();
    Ok(Imported { toml: emit::toml(&t), left_out: t.left_out })
}

/// A `[[listeners]]` or `[[peers]]` entry, and the Go TLS config it names.
#[derive(Debug)]
struct Link {
    path: String,
    url: PeerUrl,
    cost: Option<f64>,
    tls: Option<String>,
    /// WebSocket peers: Go's `extraheader`.
    headers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Control {
    /// Whether Go had a control service at all.
    present: bool,
    socket: Option<String>,
    mode: Option<String>,
    tcp_listen: Option<String>,
    /// The tls-server named by `tcptls`, and where.
    tcp_tls: Option<(String, String)>,
    /// The tls-server named by the mesh control service's `tls` (Go's ConnType 2 ->
    /// `netceptor.control_tls`), and where.
    mesh_tls: Option<(String, String)>,
    /// Go served the mesh control service with TLS that receptord cannot reproduce: it is
    /// not served to Go nodes at all rather than served without TLS.
    mesh_withheld: bool,
}

#[derive(Debug)]
struct Command {
    path: String,
    name: String,
    program: String,
    args: Vec<String>,
    allow_runtime_params: bool,
    verify_signature: bool,
}

/// Go's `ansible-runner worker` command, served by receptord's built-in worker.
#[derive(Debug, Default)]
struct AnsibleRunner {
    at: String,
    path: Option<String>,
    verify_signature: bool,
}

/// Everything translated so far.
#[derive(Debug, Default)]
struct Translation {
    opts: ImportOptions,
    node_id: Option<String>,
    data_dir: Option<String>,
    log_level: Option<String>,
    listeners: Vec<Link>,
    peers: Vec<Link>,
    control: Control,
    commands: Vec<Command>,
    ansible_runner: Option<AnsibleRunner>,
    signing: Option<(String, Option<Duration>)>,
    verification: Option<String>,
    tls_servers: Vec<(String, tls::TlsDef)>,
    tls_clients: Vec<(String, tls::TlsDef)>,
    tls: Option<tls::TlsOut>,
    seen_node: bool,
    left_out: Vec<LeftOut>,
}

impl Translation {
    fn left(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.left_out.push(LeftOut { path: path.into(), reason: reason.into() });
    }

    /// Takes `k` and, if it was set, lists it as left out.
    fn drop_param(&mut self, e: &mut yaml::Entry, k: &str, reason: &str) {
        let at = e.at(k);
        if e.present(k) {
            self.left(at, reason);
        }
    }

    fn entry(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        match e.name.as_str() {
            "tls-server" | "tls-client" => Ok(()),
            "node" => self.node(e),
            "log-level" => self.log_level(e),
            "tcp-listener" => self.tcp_listener(e),
            "tcp-peer" => self.tcp_peer(e),
            "ws-listener" => self.ws_listener(e),
            "ws-peer" => self.ws_peer(e),
            "udp-listener" => self.udp_listener(e),
            "udp-peer" => self.udp_peer(e),
            "control-service" => self.control_service(e),
            "work-command" => self.work_command(e),
            "work-signing" => self.work_signing(e),
            "work-verification" => {
                self.verification = e.str("publickey")?;
                Ok(())
            }
            // No backends: receptord without listeners or peers is the same.
            "local-only" => Ok(()),
            other => {
                let reason = match other {
                    "work-kubernetes" => "receptord has no Kubernetes work type",
                    "work-python" => "receptord has no Python plugin work type",
                    "trace" => "receptord has no packet trace (log.level = \"trace\" logs its own events)",
                    "command-service" | "tcp-server" | "tcp-client" | "udp-server" | "udp-client"
                    | "unix-socket-server" | "unix-socket-client" | "ip-router" => {
                        "receptord has no service proxies or IP router"
                    }
                    "version" | "cert-init" | "cert-makereq" | "cert-signreq" => {
                        "a one-off command, not configuration (see `receptor cert`)"
                    }
                    _ => "not an entry of Go Receptor 1.4",
                };
                self.left(e.path.clone(), reason);
                // Its parameters go with it.
                e.discard();
                Ok(())
            }
        }
    }

    fn node(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        if std::mem::replace(&mut self.seen_node, true) {
            return Err(ImportError::Invalid { path: e.path.clone(), reason: "a second node entry".into() });
        }
        let at = e.at("id");
        if let Some(id) = e.str("id")? {
            match crate::wire::NodeId::new(id.as_str()) {
                Ok(_) => self.node_id = Some(id),
                Err(err) => self.left(at, format!("{err}: node.id left unset (the host name)")),
            }
        }
        self.data_dir = e.str("datadir")?;
        self.drop_param(
            e,
            "firewallrules",
            "receptord has no firewall rules (see [[work.allow]], mesh.allowed_peers)",
        );
        self.drop_param(
            e,
            "maxidleconnectiontimeout",
            "receptord closes a silent Go link after 21 s (Go's default) and keeps its own links with mesh.idle_timeout",
        );
        Ok(())
    }

    fn log_level(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let at = e.at("level");
        let Some(level) = e.str("level")? else { return Ok(()) };
        match level.to_ascii_lowercase().as_str() {
            "error" => self.log_level = Some("error".into()),
            "warning" | "warn" => self.log_level = Some("warn".into()),
            "info" => self.log_level = Some("info".into()),
            "debug" => self.log_level = Some("debug".into()),
            _ => self.left(at, format!("{level:?} is not a Go log level (Error, Warning, Info, Debug)")),
        }
        Ok(())
    }

    /// `cost` (positive, finite), and `nodecost`/`allowedpeers`, which are per link in Go.
    fn link_common(&mut self, e: &mut yaml::Entry) -> Result<Option<f64>, ImportError> {
        let at = e.at("cost");
        let cost = e.f64("cost")?;
        if let Some(c) = cost {
            if !(c.is_finite() && c > 0.0) {
                return Err(ImportError::Invalid { path: at, reason: "must be a positive number".into() });
            }
        }
        self.drop_param(e, "nodecost", "receptord has one cost per link (per-node costs are Go only)");
        self.drop_param(
            e,
            "allowedpeers",
            "receptord restricts peers for the whole node (mesh.allowed_peers), not per link",
        );
        Ok(cost)
    }

    fn tcp_listener(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let authority = listen_authority(e, "TCP")?;
        let tls = e.str("tls")?.filter(|s| !s.is_empty());
        let cost = self.link_common(e)?;
        let scheme = if tls.is_some() { "receptors" } else { "receptor" };
        let url = parse_url(&e.path, &format!("{scheme}://{authority}"))?;
        self.listeners.push(Link { path: e.path.clone(), url, cost, tls, headers: Vec::new() });
        Ok(())
    }

    fn tcp_peer(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let at = e.at("address");
        let address = e
            .str("address")?
            .ok_or_else(|| ImportError::Invalid { path: at, reason: "is required".into() })?;
        let tls = e.str("tls")?.filter(|s| !s.is_empty());
        let cost = self.link_common(e)?;
        let redial_at = e.at("redial");
        if e.bool("redial")? == Some(false) {
            self.left(redial_at, "receptord always redials its peers");
        }
        let scheme = match (self.opts.native_peers, tls.is_some()) {
            (false, false) => "netceptor",
            (false, true) => "netceptors",
            (true, false) => "receptor",
            (true, true) => "receptors",
        };
        let url = parse_url(&e.path, &format!("{scheme}://{address}"))?;
        self.peers.push(Link { path: e.path.clone(), url, cost, tls, headers: Vec::new() });
        Ok(())
    }

    /// Go's UDP listener: a `netceptor+udp://` listener (Go peers only).
    fn udp_listener(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let authority = listen_authority(e, "UDP")?;
        let cost = self.link_common(e)?;
        let url = parse_url(&e.path, &format!("netceptor+udp://{authority}"))?;
        self.listeners.push(Link { path: e.path.clone(), url, cost, tls: None, headers: Vec::new() });
        Ok(())
    }

    /// Go's UDP peer: always a Go node (receptord's own protocol has no UDP backend).
    fn udp_peer(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let at = e.at("address");
        let address = e
            .str("address")?
            .ok_or_else(|| ImportError::Invalid { path: at, reason: "is required".into() })?;
        let cost = self.link_common(e)?;
        let redial_at = e.at("redial");
        if e.bool("redial")? == Some(false) {
            self.left(redial_at, "receptord always redials its peers");
        }
        let url = parse_url(&e.path, &format!("netceptor+udp://{address}"))?;
        self.peers.push(Link { path: e.path.clone(), url, cost, tls: None, headers: Vec::new() });
        Ok(())
    }

    fn tls_def(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let server = e.name == "tls-server";
        let at = e.at("name");
        let name = e
            .str("name")?
            .filter(|s| !s.is_empty())
            .ok_or(ImportError::Invalid { path: at, reason: "is required".into() })?;
        let def = tls::TlsDef::read(e, server)?;
        let defs = if server { &mut self.tls_servers } else { &mut self.tls_clients };
        if defs.iter().any(|(n, _)| *n == name) {
            return Err(ImportError::Invalid {
                path: e.path.clone(),
                reason: format!("a second TLS config {name:?}"),
            });
        }
        defs.push((name, def));
        Ok(())
    }

    /// Resolves the TLS material the translated links and control listener use, and drops
    /// what needs TLS when none can be made.
    fn finish(&mut self) {
        let mut used: Vec<&tls::TlsDef> = Vec::new();
        let mut missing = Vec::new();
        let refs = self.listeners.iter().map(|l| (true, l.tls.as_ref(), &l.path));
        let refs = refs.chain(self.peers.iter().map(|p| (false, p.tls.as_ref(), &p.path)));
        let control = self.control.tcp_tls.as_ref().map(|(n, p)| (true, Some(n), p));
        let mesh = self.control.mesh_tls.as_ref().map(|(n, p)| (true, Some(n), p));
        for (server, name, path) in refs.chain(control).chain(mesh) {
            let Some(name) = name else { continue };
            let defs = if server { &self.tls_servers } else { &self.tls_clients };
            match defs.iter().find(|(n, _)| n == name) {
                Some((_, d)) if !used.iter().any(|u| std::ptr::eq(*u, d)) => used.push(d),
                Some(_) => {}
                None => missing.push((path.clone(), name.clone(), server)),
            }
        }
        if let Some((name, path)) = &self.control.mesh_tls {
            let lax = self.tls_servers.iter().any(|(n, d)| n == name && !d.requires_client_cert());
            if lax {
                self.left_out.push(LeftOut {
                    path: path.clone(),
                    reason: format!(
                        "{name} lets TLS clients without a certificate in; receptord's control service over \
                         TLS streams always requires one (a client's certificate is who it is)"
                    ),
                });
            }
        }
        let mut left = Vec::new();
        self.tls = tls::resolve(&used, &mut left);
        self.left_out.extend(left);
        for (path, name, server) in missing {
            let kind = if server { "tls-server" } else { "tls-client" };
            self.listeners.retain(|l| l.path != path);
            self.peers.retain(|l| l.path != path);
            if self.control.tcp_tls.as_ref().is_some_and(|(_, p)| *p == path) {
                self.control.tcp_tls = None;
                self.control.tcp_listen = None;
            }
            if self.control.mesh_tls.as_ref().is_some_and(|(_, p)| *p == path) {
                self.control.mesh_tls = None;
                self.control.mesh_withheld = true;
            }
            self.left(path, format!("no {kind} named {name:?}: left out rather than made plain"));
        }
        if self.verification.is_none() {
            let reason = "verifysignature needs a work-verification public key";
            let mut dropped: Vec<String> = Vec::new();
            self.commands.retain(|c| {
                !c.verify_signature || {
                    dropped.push(c.path.clone());
                    false
                }
            });
            if let Some(a) = self.ansible_runner.take_if(|a| a.verify_signature) {
                dropped.push(a.at);
            }
            for d in dropped {
                self.left(d, reason);
            }
        }
        if self.tls.is_none() {
            let reason = "needs TLS, and no receptord [tls] section could be made (see above)";
            let mut dropped = Vec::new();
            self.listeners.retain(|l| {
                l.tls.is_none() || {
                    dropped.push(l.path.clone());
                    false
                }
            });
            self.peers.retain(|l| {
                l.tls.is_none() || {
                    dropped.push(l.path.clone());
                    false
                }
            });
            if let Some((_, path)) = self.control.tcp_tls.take() {
                self.control.tcp_listen = None;
                dropped.push(path);
            }
            if let Some((_, path)) = self.control.mesh_tls.take() {
                self.control.mesh_withheld = true;
                dropped.push(path);
            }
            for path in dropped {
                self.left(path, reason);
            }
        }
    }
}

/// A listener entry's `port` (required) and `bindaddr` (default: all addresses) as the
/// `host:port` of a URL; `kind` names the port in the error.
pub(super) fn listen_authority(e: &mut yaml::Entry, kind: &str) -> Result<String, ImportError> {
    let port_at = e.at("port");
    let port: u16 = e
        .str("port")?
        .ok_or_else(|| ImportError::Invalid { path: port_at.clone(), reason: "is required".into() })?
        .trim()
        .parse()
        .map_err(|_| ImportError::Invalid { path: port_at, reason: format!("must be a {kind} port") })?;
    let bind = e.str("bindaddr")?.unwrap_or_else(|| "0.0.0.0".into());
    Ok(crate::transport::authority(&bind, port))
}

fn parse_url(path: &str, url: &str) -> Result<PeerUrl, ImportError> {
    url.parse().map_err(|e: crate::transport::UrlError| ImportError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Go's file permissions: YAML 1.1 reads `0660` as octal, YAML 1.2 parsers as 660; a value
/// whose digits are all octal is taken as written in octal.
fn octal_mode(p: &str) -> Option<String> {
    let p = p.trim().trim_start_matches("0o");
    let bits = u32::from_str_radix(p, 8).ok()?;
    (bits <= 0o777).then(|| format!("0{bits:o}"))
}

/// `tcplisten` as receptord takes it (a port, or an IP address and port).
fn valid_tcp_listen(l: &str) -> Option<()> {
    if l.parse::<u16>().is_ok() {
        return Some(());
    }
    l.parse::<std::net::SocketAddr>().ok().map(|_| ())
}

/// A Go `time.ParseDuration` string (`30m`, `1h30m`, `1.5h`, `300ms`), at most 10 years.
pub fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.len() > 64 || s == "0" {
        return None;
    }
    super::parse_go_duration(s).ok().filter(|d| d.as_secs() <= 10 * 365 * 86400)
}

#[cfg(test)]
mod tests;
