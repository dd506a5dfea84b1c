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
    /// `[[listeners]]` is a hub, one that accepts no links a leaf ([`Config::role`]).
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkSection {
    pub command: Vec<CommandSection>,
    pub ansible_runner: AnsibleRunnerSection,
    /// Most jobs running at once; further requests are refused until one ends.
    pub max_jobs: usize,
    /// Who may submit what. No rules: any node admitted to the mesh may submit any work
    /// type (admission is the trust boundary: with mutual TLS, holders of a certificate
    /// from your CA). With rules, only what a rule allows.
    pub allow: Vec<AllowRule>,
    /// Completed work units older than this are released automatically ("0s": never).
    #[serde(with = "humantime_serde")]
    pub unit_retention: Duration,
    /// Signs remote work units submitted with `signwork` (JWT RS512).
    pub signing: Option<SigningSection>,
    /// Verifies signed submissions for work types with `verify_signature`.
    pub verification: Option<VerificationSection>,
    /// Under systemd, as root: run each work unit (its supervisor and job) in its own
    /// transient scope `receptord-unit-<ID>.scope` in `receptord-units.slice`, outside the
    /// service's control group, so restarts and upgrades leave nothing behind in it.
    pub unit_scopes: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSection {
    /// PEM RSA private key (PKCS#1 or PKCS#8).
    pub private_key: PathBuf,
    /// Lifetime of each token.
    #[serde(with = "humantime_serde", default = "default_token_expiration")]
    pub token_expiration: Duration,
}

fn default_token_expiration() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationSection {
    /// PEM RSA public key (PKIX `PUBLIC KEY`).
    pub public_key: PathBuf,
    /// Also accept Go Receptor's tokens (only `aud` and `exp`: not bound to the request,
    /// replayable by anyone who sees one until it expires) for submissions. Without it
    /// they are accepted only for cancel, release and results of a unit the requester
    /// owns. See docs/SECURITY.md.
    #[serde(default)]
    pub accept_replayable_go_tokens: bool,
}

/// Lets `submitters` (node IDs; `*` alone or as a suffix wildcard) run `work_types`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub submitters: Vec<String>,
    pub work_types: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSection {
    pub name: String,
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Whether a work unit submitted through the control socket may add arguments
    /// (receptorctl's `params`); they are split shell-like, never run through a shell.
    #[serde(default)]
    pub allow_runtime_params: bool,
    /// Whether submissions that do not come through the Unix control socket must carry a
    /// token signed by the key in `[work.verification]` (Go Receptor's `verifysignature`).
    #[serde(default)]
    pub verify_signature: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnsibleRunnerSection {
    /// `auto` registers the worker when ansible-runner is found; `false` never does.
    pub enabled: bool,
    /// An explicit `ansible-runner` executable.
    pub path: Option<PathBuf>,
    /// A virtualenv whose `bin/ansible-runner` to use.
    pub virtualenv: Option<PathBuf>,
    pub keep_job_dirs: bool,
    /// Like a command type's `verify_signature`: submissions from outside the Unix socket
    /// must carry a signed token (AWX execution nodes: its control node signs).
    pub verify_signature: bool,
    pub max_archive_bytes: u64,
    pub max_archive_entries: u64,
    pub max_compression_ratio: u64,
}

impl Default for AnsibleRunnerSection {
    fn default() -> Self {
        AnsibleRunnerSection {
            enabled: true,
            path: None,
            virtualenv: None,
            keep_job_dirs: false,
            verify_signature: false,
            max_archive_bytes: 1 << 30,
            max_archive_entries: 100_000,
            max_compression_ratio: 200,
        }
    }
}

impl Default for WorkSection {
    fn default() -> Self {
        WorkSection {
            command: Vec::new(),
            ansible_runner: AnsibleRunnerSection::default(),
            max_jobs: 64,
            allow: Vec::new(),
            unit_retention: Duration::from_secs(7 * 24 * 3600),
            signing: None,
            verification: None,
            unit_scopes: true,
        }
    }
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
fn default_version() -> String {
    "1".into()
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
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("receptor.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&path)
    }

    #[test]
    fn the_shipped_example_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/receptor.toml");
        let cfg = Config::load(&path).expect("config/receptor.toml loads");
        assert_eq!(cfg.node.id.as_str(), "node1");
        assert_eq!(cfg.listeners.len(), 1);
        assert_eq!(cfg.work.command[0].name, "echo");
        assert!(cfg.work.ansible_runner.enabled);
    }

    #[test]
    fn relay_policy_is_checked_at_load_and_names_the_key() {
        let listening =
            "[node]\nid = \"n\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:0\"\nrelays = false\n";
        let cfg = load_text(&format!("{listening}[mesh]\nrelays = [\"hub-*\", \"core\"]\n")).expect("loads");
        assert!(!cfg.listeners[0].relays);
        assert_eq!(cfg.mesh.relays.as_deref(), Some(&["hub-*".to_owned(), "core".to_owned()][..]));
        let err = load_text(&format!("{listening}[mesh]\nrelays = [\"h*b\"]\n")).expect_err("bad pattern");
        assert!(err.to_string().contains("mesh.relays"), "{err}");
        let err = load_text("[node]\nid = \"n\"\n[[peers]]\nurl = \"receptor://h:1\"\nrelays = false\n")
            .expect_err("peers");
        assert!(err.to_string().contains("peers[0].relays"), "{err}");
        assert!(load_text("[node]\nid = \"n\"\n").expect("loads").mesh.relays.is_none());
    }

    #[test]
    fn websocket_headers_are_checked_and_reach_the_url() {
        let peer = |url: &str, headers: &str| {
            format!("[node]\nid = \"n\"\n[[peers]]\nurl = \"{url}\"\nheaders = {headers}\n")
        };
        let cfg = load_text(&format!(
            "{}[limits.websocket]\nmax_message = 70000\n",
            peer("ws://h:1/p", "{ Authorization = \"Bearer t\" }")
        ))
        .expect("loads");
        let ws = cfg.peers[0].url.ws.as_ref().expect("ws");
        assert_eq!(ws.headers.len(), 1);
        assert_eq!(ws.headers[0].1, "Bearer t");
        assert_eq!(ws.limits.max_message, 70000);
        for (text, key) in [
            (peer("receptor://h:1", "{ A = \"b\" }"), "peers[0].headers"),
            (peer("ws://h:1/", "{ Host = \"x\" }"), "peers[0].headers"),
            (peer("ws://h:1/", "{ \"a b\" = \"x\" }"), "peers[0].headers"),
            (
                "[node]\nid = \"n\"\n[[listeners]]\nurl = \"ws://h:1/\"\nheaders = { A = \"b\" }\n".into(),
                "listeners[0].headers",
            ),
            ("[node]\nid = \"n\"\n[[listeners]]\nurl = \"netceptor+ws://h:1/\"\n".into(), "listeners[0].url"),
            (
                "[node]\nid = \"n\"\n[limits.websocket]\nmax_message = 10\n".into(),
                "limits.websocket.max_message",
            ),
        ] {
            let err = load_text(&text).expect_err(&text).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_node_id_defaults_to_the_host_name() {
        let cfg = load_text("[node]\n").expect("loads");
        assert!(!cfg.node.id.as_str().is_empty());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = load_text("[node]\nid = \"n\"\n").expect("loads");
        assert_eq!(cfg.node.data_dir, PathBuf::from("/var/lib/receptor"));
        assert_eq!(cfg.mesh.max_hops, 30);
        assert_eq!(cfg.log.format, LogFormat::Text);
    }

    #[test]
    fn tls_and_authorization_sections_parse() {
        let cfg = load_text(
            "[node]\nid = \"n\"\n[[listeners]]\nurl = \"receptors://0.0.0.0\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nca = [\"a\"]\n\
             [mesh]\nallowed_peers = [\"x\"]\n[[work.allow]]\nsubmitters = [\"*\"]\nwork_types = [\"cat\"]\n",
        )
        .expect("loads");
        assert_eq!(cfg.listeners[0].url.port, 8899);
        let tls = cfg.tls.expect("tls");
        assert!(tls.require_client_cert);
        assert!(tls.e2e_streams, "streams are protected end to end by default");
        assert_eq!(cfg.work.allow.len(), 1);
        let err =
            load_text("[node]\nid = \"n\"\n[[listeners]]\nurl = \"receptors://h\"\n").expect_err("no tls");
        assert!(err.to_string().contains("listeners[0].url"), "{err}");
    }

    #[test]
    fn without_a_role_a_node_that_accepts_no_links_is_a_leaf() {
        let listening = "[[listeners]]\nurl = \"receptor://127.0.0.1:0\"\n";
        let cases = [
            ("", true),
            (listening, false),
            ("[mesh]\nrole = \"auto\"\n", true),
            ("[mesh]\nrole = \"hub\"\n", false),
            (&format!("{listening}[mesh]\nrole = \"leaf\"\n"), true),
        ];
        for (extra, leaf) in cases {
            let cfg = load_text(&format!("[node]\nid = \"n\"\n{extra}")).expect("valid");
            assert_eq!(cfg.is_leaf(), leaf, "{extra}");
        }
        let err = load_text("[node]\nid = \"n\"\n[mesh]\nrole = \"spoke\"\n").expect_err("invalid");
        assert!(err.to_string().contains("spoke"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let err = load_text("[node]\nid = \"n\"\n[mesh]\nmax_hops = 0\n").expect_err("invalid");
        assert!(err.to_string().contains("mesh.max_hops"), "{err}");
        let err = load_text("[node]\nid = \"bad id\"\n").expect_err("invalid");
        assert!(err.to_string().contains("bad id"), "{err}");
        let err =
            load_text("[node]\nid = \"n\"\n[[work.command]]\nname = \"x\"\nprogram = \"/nonexistent\"\n")
                .expect_err("invalid");
        assert!(err.to_string().contains("work.command[0].program"), "{err}");
        let err = load_text("[node]\nid = \"n\"\n[log]\nformat = \"xml\"\n").expect_err("invalid");
        assert!(err.to_string().contains("xml"), "{err}");
    }
}
