//! The daemon's configuration: a TOML file plus `RECEPTOR_…` environment overrides, parsed
//! into typed, validated values before any socket is bound. Every error names the file,
//! the key and the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use allow::{Action, ControlAllow};
pub use duration::parse_go_duration;
pub use metrics::MetricsSection;
pub use netceptor::NetceptorSection;
pub use pattern::{PatternError, check_node_pattern};

use crate::transport::PeerUrl;
use crate::wire::NodeId;

mod allow;
mod duration;
pub mod import;
mod metrics;
mod netceptor;
mod pattern;
mod typed;
mod work;

pub use work::{
    AllowRule, AnsibleRunnerSection, CommandSection, SigningSection, VerificationSection, WorkSection,
};

/// Environment variables starting with this prefix override file keys:
/// `RECEPTOR_NODE__ID=node1`, `RECEPTOR_LOG__LEVEL=debug` (`__` separates levels).
pub const ENV_PREFIX: &str = "RECEPTOR";

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    /// The file is not valid TOML or a value has the wrong type (line and column 1-based).
    #[error("{file}:{line}:{column}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Syntax { file: String, line: usize, column: usize, key: Option<String>, message: String },
    #[error("{file}: {source}")]
    Load { file: String, source: config::ConfigError },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid { file: String, key: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    #[serde(default)]
    pub listeners: Vec<LinkSection>,
    #[serde(default)]
    pub peers: Vec<LinkSection>,
    #[serde(default)]
    pub mesh: MeshSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub work: WorkSection,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub control: ControlSection,
    #[serde(default)]
    pub limits: crate::limits::Limits,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub netceptor: NetceptorSection,
}

/// The control socket `receptorctl` talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    pub enabled: bool,
    /// Unix socket path; default /run/receptor/receptor.sock, used when /run/receptor exists.
    pub socket: Option<PathBuf>,
    /// Socket file permissions, octal.
    pub mode: String,
    /// Group owning the socket (e.g. the group AWX runs as).
    pub group: Option<String>,
    /// Also serve the control protocol to other nodes as the `control` mesh service
    /// (`receptorctl work list --node X`, remote work units). `[[work.allow]]` rules apply
    /// to what other nodes may do with work units; `reload` is refused to them.
    pub mesh_service: bool,
    /// Also listen for control sessions on TCP, `HOST:PORT` (a bare port means all
    /// addresses). Anyone who can connect controls the node: prefer a loopback address, or
    /// `tcp_tls` with `[tls] require_client_cert`.
    pub tcp_listen: Option<String>,
    /// Serve the TCP control listener with TLS, using the `[tls]` certificate and CAs.
    /// Clients must present a certificate naming a node ID: that ID is who they are for
    /// `[[work.allow]]`, unit ownership and `[[control.allow]]`.
    pub tcp_tls: bool,
    /// A plain TCP control listener (`tcp_listen` without `tcp_tls`) gives anyone who can
    /// connect full control of this node, unauthenticated: refused unless this is set.
    pub insecure_plaintext_control: bool,
    /// Which remote control clients may `reload` and `connect` (the Unix socket always
    /// may; nobody else without a rule).
    pub allow: Vec<ControlAllow>,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            enabled: true,
            socket: None,
            mode: "0660".into(),
            group: None,
            mesh_service: true,
            tcp_listen: None,
            tcp_tls: false,
            insecure_plaintext_control: false,
            allow: Vec::new(),
        }
    }
}

impl ControlSection {
    /// The TCP control address (validated at load).
    pub fn tcp_addr(&self) -> Option<String> {
        let l = self.tcp_listen.as_ref()?;
        Some(if l.contains(':') { l.clone() } else { format!("0.0.0.0:{l}") })
    }
}

impl ControlSection {
    /// The socket mode as a number (validated at load).
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(self.mode.trim_start_matches("0o"), 8).unwrap_or(0o660)
    }
}

/// TLS material and policy for `receptors://` listeners and peers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// This node's certificate (PEM; its otherName SAN must name the node ID).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates peers must chain to.
    pub ca: Vec<PathBuf>,
    /// TLS listeners demand a client certificate (mutual TLS).
    #[serde(default = "yes")]
    pub require_client_cert: bool,
    /// If set, only peers whose leaf certificate has one of these SHA-256 fingerprints.
    #[serde(default)]
    pub pinned_fingerprints: Vec<String>,
    /// "1.2" (1.3 preferred, 1.2 with AEAD suites allowed) or "1.3".
    #[serde(default = "tls12")]
    pub min_version: String,
    /// Run even if the certificate does not name this node's ID.
    #[serde(default)]
    pub skip_node_id_check: bool,
    /// Protect every `work`/`control` stream end to end: both ends prove their node IDs
    /// with their certificates and relays see only sealed records. Unprotected streams
    /// are refused. `false` (benchmarks, trusted networks) opens unprotected streams and
    /// still accepts protected ones.
    #[serde(default = "yes")]
    pub e2e_streams: bool,
}

fn yes() -> bool {
    true
}
fn tls12() -> String {
    "1.2".into()
}

impl TlsSection {
    /// The transport's view of this section (fingerprints already validated).
    pub fn settings(&self) -> crate::transport::TlsSettings {
        crate::transport::TlsSettings {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            require_client_cert: self.require_client_cert,
            pinned: self
                .pinned_fingerprints
                .iter()
                .filter_map(|f| crate::transport::tls::parse_fingerprint(f))
                .collect(),
            min_tls13: self.min_version == "1.3",
            skip_node_id_check: self.skip_node_id_check,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Default: the host name.
    #[serde(default = "host_node_id")]
    pub id: NodeId,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How long running jobs may continue after SIGTERM before they are killed.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSection {
    pub url: PeerUrl,
    #[serde(default = "one")]
    pub cost: f64,
    /// Listeners only: `false` makes every peer accepted here a non-relay (it speaks only
    /// for itself and no path continues through it on its link with this node).
    #[serde(default = "yes")]
    pub relays: bool,
    /// WebSocket peers (`ws://`, `wss://`, `netceptor+ws://`, `netceptor+wss://`) only:
    /// extra headers sent with the upgrade request, e.g. `{ Authorization = "Bearer …" }`
    /// for a listener behind an authenticating reverse proxy (Go's `extraheader`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshSection {
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub route_refresh: Duration,
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub dial_timeout: Duration,
    pub max_hops: u8,
    pub stream_window: u32,
    /// `hub` (a full member), `leaf` (advertises itself, receives no database, relays
    /// nothing, reaches the mesh through its hubs) or `auto`, the default: a node with
    /// `[[listeners]]` is a hub, one that accepts no links a leaf ([`Config::is_leaf`]).
    pub role: MeshRole,
    /// If non-empty, only these node IDs may link with this node.
    pub allowed_peers: Vec<NodeId>,
    /// If set, only peers whose ID matches one of these patterns (`*`, `prefix*` or a
    /// node ID) may relay on links with this node (`mesh::relay`, docs/SECURITY.md).
    pub relays: Option<Vec<String>>,
}

/// `[mesh] role` as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshRole {
    /// Follows the listeners: a hub with `[[listeners]]`, a leaf without.
    #[default]
    Auto,
    Hub,
    Leaf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub level: String,
    pub file: Option<PathBuf>,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for MeshSection {
    fn default() -> Self {
        MeshSection {
            idle_timeout: Duration::from_secs(5),
            route_refresh: Duration::from_secs(600),
            node_timeout: Duration::from_secs(1800),
            dial_timeout: Duration::from_secs(5),
            max_hops: crate::wire::DEFAULT_HOPS,
            stream_window: 2 * 1024 * 1024,
            role: MeshRole::Auto,
            allowed_peers: Vec::new(),
            relays: None,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: "info".into(), file: None, format: LogFormat::Text }
    }
}

fn host_node_id() -> NodeId {
    let name = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    NodeId::new(name.split('.').next().unwrap_or_default())
        .unwrap_or_else(|_| NodeId::new("receptor-node").expect("UNWRAP: a valid literal node id"))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/receptor")
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn one() -> f64 {
    1.0
}

impl Config {
    /// Whether the node runs as a leaf: `[mesh] role = "leaf"`, or no role given and no
    /// `[[listeners]]` but Go's UDP ones (a node that accepts no links relays for nobody;
    /// docs/PROTOCOL.md §5.8).
    pub fn is_leaf(&self) -> bool {
        match self.mesh.role {
            MeshRole::Leaf => true,
            MeshRole::Hub => false,
            // Go's UDP backend carries no native links.
            MeshRole::Auto => {
                self.listeners.iter().all(|l| l.url.protocol == crate::transport::Protocol::Netceptor)
            }
        }
    }

    /// Loads `path` with environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let load = |source| ConfigError::Load { file: file.clone(), source };
        let text = typed::read_checked(path)?;
        let raw = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(load)?;
        let mut cfg: Config = raw.try_deserialize().map_err(load)?;
        cfg.finish_ws_links();
        cfg.validate().map_err(|(key, reason)| ConfigError::Invalid { file, key, reason })?;
        Ok(cfg)
    }

    /// Gives every WebSocket link its extra headers and `[limits.websocket]`.
    fn finish_ws_links(&mut self) {
        let limits = self.limits.websocket;
        for l in self.listeners.iter_mut().chain(self.peers.iter_mut()) {
            if let Some(ws) = &mut l.url.ws {
                ws.headers = l.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                ws.limits = limits;
            }
        }
    }

    /// Checks what types alone cannot; returns the offending key and why.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: String, reason: &str| Err((key, reason.to_owned()));
        if self.node.id.is_session() {
            return bad("node.id".into(), "NODE~TAG is a client session ID; a node's own ID has no ~");
        }
        for (section, links) in [("listeners", &self.listeners), ("peers", &self.peers)] {
            for (i, l) in links.iter().enumerate() {
                if !(l.cost.is_finite() && l.cost > 0.0) {
                    return bad(format!("{section}[{i}].cost"), "must be a positive number");
                }
            }
        }
        let m = &self.mesh;
        if m.idle_timeout < Duration::from_millis(500) {
            return bad("mesh.idle_timeout".into(), "must be at least 500ms");
        }
        if m.node_timeout <= m.route_refresh * 2 {
            return bad("mesh.node_timeout".into(), "must be more than twice mesh.route_refresh");
        }
        if u32::from_str_radix(self.control.mode.trim_start_matches("0o"), 8).map_or(true, |m| m > 0o777) {
            return bad("control.mode".into(), "must be octal permissions such as \"0660\"");
        }
        if let Some(addr) = self.control.tcp_addr() {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad("control.tcp_listen".into(), "must be HOST:PORT with an IP address, or a port");
            }
            if self.control.tcp_tls && self.tls.is_none() {
                return bad("control.tcp_tls".into(), "needs a [tls] section");
            }
            if !self.control.tcp_tls && !self.control.insecure_plaintext_control {
                return bad(
                    "control.tcp_listen".into(),
                    "a plain TCP control listener lets anyone who connects control this node: set \
                     control.tcp_tls = true (clients authenticate with certificates), or \
                     control.insecure_plaintext_control = true to accept the risk",
                );
            }
        }
        if self.work.max_jobs == 0 {
            return bad("work.max_jobs".into(), "must be at least 1");
        }
        if m.max_hops == 0 {
            return bad("mesh.max_hops".into(), "must be at least 1");
        }
        if m.stream_window < 64 * 1024 {
            return bad("mesh.stream_window".into(), "must be at least 65536 bytes");
        }
        if let Some(Err(e)) = m.relays.iter().flatten().map(|p| check_node_pattern(p)).find(Result::is_err) {
            return bad("mesh.relays".into(), &e.to_string());
        }
        if let Some(i) = self.peers.iter().position(|p| !p.relays) {
            return bad(
                format!("peers[{i}].relays"),
                "applies to listeners only: leave a dialed peer's ID out of mesh.relays instead",
            );
        }
        netceptor::validate_links(&self.listeners, &self.peers)?;
        netceptor::validate_section(&self.netceptor, self.tls.is_some())?;
        netceptor::validate_headers(&self.listeners, &self.peers)?;
        for (section, links) in [("listeners", &self.listeners), ("peers", &self.peers)] {
            for (i, l) in links.iter().enumerate() {
                if l.url.scheme == crate::transport::Scheme::Tls && self.tls.is_none() {
                    return bad(
                        format!("{section}[{i}].url"),
                        "is a TLS address (receptors://) but there is no [tls] section",
                    );
                }
            }
        }
        if let Some(tls) = &self.tls {
            for (i, f) in tls.pinned_fingerprints.iter().enumerate() {
                if crate::transport::tls::parse_fingerprint(f).is_none() {
                    return bad(
                        format!("tls.pinned_fingerprints[{i}]"),
                        "is not a SHA-256 fingerprint (64 hex digits)",
                    );
                }
            }
            if tls.min_version != "1.2" && tls.min_version != "1.3" {
                return bad("tls.min_version".into(), "must be \"1.2\" or \"1.3\"");
            }
            if tls.ca.is_empty() {
                return bad("tls.ca".into(), "needs at least one CA certificate");
            }
        }
        if let Err((key, reason)) = self.limits.validate() {
            return bad(format!("limits.{key}"), reason);
        }
        if let Err((key, reason)) = self.limits.netceptor.validate() {
            return bad(format!("limits.netceptor.{key}"), reason);
        }
        if let Err((key, reason)) = self.limits.websocket.validate() {
            return bad(format!("limits.websocket.{key}"), reason);
        }
        if self.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return bad("log.level".into(), "is not a valid log filter (e.g. info, debug, receptord=trace)");
        }
        self.metrics.validate()?;
        self.validate_work()
    }

    fn validate_work(&self) -> Result<(), (String, String)> {
        if self.work.ansible_runner.verify_signature && self.work.verification.is_none() {
            return Err((
                "work.ansible_runner.verify_signature".into(),
                "needs a [work.verification] public_key".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, c) in self.work.command.iter().enumerate() {
            let key = |k: &str| format!("work.command[{i}].{k}");
            if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
            {
                return Err((key("name"), "must be letters, digits, '_', '-' or '.'".into()));
            }
            for (k, v) in [("name", &c.name), ("version", &c.version)] {
                if let Err(e) = crate::wire::Name::new(v.as_str()) {
                    return Err((key(k), e.to_string()));
                }
            }
            if c.verify_signature && self.work.verification.is_none() {
                return Err((key("verify_signature"), "needs a [work.verification] public_key".into()));
            }
            if !names.insert(c.name.as_str())
                || ["ansible_runner", "ansible-runner", "remote"].contains(&c.name.as_str())
            {
                return Err((key("name"), format!("{:?} is already taken", c.name)));
            }
            if resolve_program(&c.program).is_none() {
                let reason = format!("program {} not found (or not executable)", c.program.display());
                return Err((key("program"), reason));
            }
        }
        Ok(())
    }
}

/// Finds `program` the way exec would: a path as given, or a bare name on `PATH` (config
/// validation and `work` spawning agree on it).
pub fn resolve_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| executable(p))
}

#[cfg(test)]
mod tests;
