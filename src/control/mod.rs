//! The control socket: the Receptor control protocol that `receptorctl` (and AWX) speak,
//! on a Unix socket and, as the `control` mesh service, to other nodes. A greeting line,
//! then request lines (plain `cmd params` or a JSON object), each answered by one JSON line
//! or an `ERROR: …` line; `work submit`, `work results` and `connect` switch the session
//! to raw bytes.
//!
//! Commands: `status` (with `requested_fields`), `ping`, `traceroute`, `reload`,
//! `connect`, and `work` (`submit`, `list`, `status`, `results`, `cancel`, `release`,
//! `force-release`). Anything else gets `ERROR: Unknown command`, as from Go Receptor.

pub mod allow;
pub mod budget;
pub mod client;
pub mod gojson;
pub mod io;
mod listen;
mod netceptor;
pub mod plane;
pub(crate) mod work;

pub use budget::{OriginKey, SessionBudget};
pub(crate) use listen::{Acceptor, Pending};

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::net::UnixListener;

use self::io::{ByteRead, ByteWrite, Line, LineReader};
use crate::mesh::{Node, PingError};
use crate::wire::NodeId;
use crate::work::units::{Origin, Units};

/// The `Version` reported by `status`: the receptorctl release whose protocol this
/// implements, so that receptorctl does not warn on every call. `receptord --version`
/// gives receptord's own version.
pub const RECEPTORCTL_VERSION: &str = "1.6.9";

/// The mesh service name of the control protocol (as in Go Receptor).
pub const CONTROL_SERVICE: &str = "control";
/// Longest request line accepted; a longer one ends the session with an error.
pub const MAX_LINE: usize = 1 << 20;
/// How long a ping waits for its reply (as Go Receptor).
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Re-reads the configuration; `Err` carries the reason.
pub type ReloadFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("control socket {path}: {reason}")]
pub struct ControlError {
    pub path: String,
    pub reason: String,
}

/// Binds the Unix socket: removes a stale socket file, binds, applies `mode` and `group`.
pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener, ControlError> {
    let err = |reason: String| ControlError { path: path.display().to_string(), reason };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(err("exists and is not a socket".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| err(e.to_string()))?;
    if let Some(name) = group {
        let g = nix::unistd::Group::from_name(name)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err(format!("no group {name:?}")))?;
        nix::unistd::chown(path, None, Some(g.gid)).map_err(|e| err(format!("chown to {name}: {e}")))?;
    }
    Ok(listener)
}

/// What the control protocol needs from the daemon.
#[derive(Clone)]
pub struct Control {
    pub node: Node,
    pub reload: ReloadFn,
    pub units: Units,
    /// Sessions open at once over all control listeners (`limits.control_sessions`, with
    /// the local socket's reserve and per-origin shares: `control::budget`).
    pub sessions: Arc<SessionBudget>,
    /// `[[control.allow]]` (replaced on reload).
    pub allow: Arc<std::sync::RwLock<Vec<allow::ControlAllow>>>,
    /// The netceptor plane (Go Receptor peers), when the node runs one.
    pub netceptor: Option<crate::netceptor::NetceptorNode>,
    /// A session waits this long for a request line or the next payload bytes
    /// (`limits.control_idle_timeout`).
    pub idle_timeout: std::time::Duration,
    /// A TLS control client's handshake must finish within this
    /// (`limits.control_handshake_timeout`).
    pub handshake_timeout: std::time::Duration,
    /// A write to a client that does not complete within this ends the session
    /// (`limits.control_write_timeout`).
    pub write_timeout: std::time::Duration,
}

/// The `status` field (`requested_fields`) that carries receptord's status document.
pub const STATUS_DOC_FIELD: &str = "ReceptordStatus";

/// What the session does after a command.
pub(crate) enum Flow {
    Continue,
    /// The command took over the connection (results streamed, bridge ended): close it.
    End,
}

impl Control {
    /// One session: greeting, then commands until the client is done.
    pub async fn session<R: ByteRead, W: ByteWrite>(
        &self,
        rd: R,
        mut wr: W,
        origin: Origin,
    ) -> std::io::Result<()> {
        let _session = crate::metrics::global().control_session();
        let mut rd = LineReader::new(rd);
        wr.write(Bytes::from(format!("Receptor Control, node {}\n", self.node.id()))).await?;
        loop {
            let Ok(line) = tokio::time::timeout(self.idle_timeout, rd.line(MAX_LINE)).await else {
                idle(&mut wr, self.idle_timeout).await;
                break;
            };
            let line = match line? {
                Line::Eof => break,
                Line::TooLong => {
                    let msg = format!("ERROR: request line longer than {MAX_LINE} bytes\n");
                    wr.write(Bytes::from(msg)).await?;
                    break;
                }
                Line::Text(l) => l,
            };
            match self.handle(&line, &mut rd, &mut wr, &origin).await? {
                Flow::Continue => {}
                Flow::End => break,
            }
        }
        wr.close().await;
        Ok(())
    }

    /// The `limits.control_idle_timeout` in force for payload reads.
    pub(crate) fn idle_timeout(&self) -> std::time::Duration {
        self.idle_timeout
    }

    /// Answers one request line (already without `\r` and `\n`, not empty).
    async fn handle<R: ByteRead, W: ByteWrite>(
        &self,
        line: &str,
        rd: &mut LineReader<R>,
        wr: &mut W,
        origin: &Origin,
    ) -> std::io::Result<Flow> {
        let (cmd, request) = match parse(line) {
            Ok(parsed) => parsed,
            // Go answers a bad JSON request twice: the parse error, then "Unknown command".
            Err(e) => {
                wr.write(Bytes::from(format!("ERROR: {e}\nERROR: Unknown command\n"))).await?;
                return Ok(Flow::Continue);
            }
        };
        let result = match cmd.as_str() {
            "work" => return work::handle(self, &request, rd, wr, origin).await,
            // A bridge opens streams under this node's name (around [[work.allow]] on
            // the far end), a reload re-reads its configuration: only the local socket and
            // clients a [[control.allow]] rule names may.
            "connect" | "reload" if !self.permits(origin, &cmd) => Err(format!(
                "{cmd} is not allowed for {} (a [[control.allow]] rule must name it)",
                origin.node().map_or_else(|| "a client without a certificate".to_owned(), |n| n.to_string())
            )),
            "connect" => return self.connect(&request, rd, wr).await,
            "status" => self.status(&request).await,
            "ping" => self.ping(&request).await,
            "reload" => Ok(self.reload().await),
            "traceroute" => self.traceroute(&request).await,
            _ => Err("Unknown command".to_owned()),
        };
        wr.write(Bytes::from(reply_line(result))).await?;
        Ok(Flow::Continue)
    }

    /// Whether `origin` may use the node-wide command `cmd` (`reload`, `connect`).
    fn permits(&self, origin: &Origin, cmd: &str) -> bool {
        let action = if cmd == "reload" { allow::Action::Reload } else { allow::Action::Connect };
        let rules = self.allow.read().map(|r| r.clone()).unwrap_or_default();
        let ok = allow::permits(&rules, origin, action);
        if !ok {
            tracing::warn!(client = ?origin.node(), command = action.as_str(), "control command refused: no [[control.allow]] rule");
        }
        ok
    }

    /// `connect <node> <service> [<tls>]`: bridges this session to a mesh stream.
    async fn connect<R: ByteRead, W: ByteWrite>(
        &self,
        req: &Request,
        rd: &mut LineReader<R>,
        wr: &mut W,
    ) -> std::io::Result<Flow> {
        let target = match connect_target(req) {
            Ok(t) => t,
            Err(e) => {
                wr.write(Bytes::from(format!("ERROR: {e}\n"))).await?;
                return Ok(Flow::Continue);
            }
        };
        let (node, service, tls) = target;
        if !tls.is_empty() {
            let msg = format!("ERROR: unknown TLS config {tls}\n");
            wr.write(Bytes::from(msg)).await?;
            return Ok(Flow::Continue);
        }
        let dst = if node.eq_ignore_ascii_case("localhost") {
            Ok(self.node.id().clone())
        } else {
            NodeId::new(&node).map_err(|e| e.to_string())
        };
        let opened = match dst {
            Ok(dst) => self.node.open(&dst, &service, Bytes::new()).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let (mut mw, mut mr) = match opened {
            Ok(s) => s,
            Err(e) => {
                wr.write(Bytes::from(format!("ERROR: {e}\n"))).await?;
                return Ok(Flow::Continue);
            }
        };
        wr.write(Bytes::from_static(b"Connecting\n")).await?;
        // A side that fails is passed on as a failure, never as an end: the other side
        // would take what arrived for all there is (a payload cut short would run).
        let up = async {
            loop {
                match rd.raw().await {
                    Ok(Some(data)) => {
                        if mw.write(data).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return mw.reset(&format!("the client's connection failed: {e}")).await,
                }
            }
            mw.finish(Bytes::new()).await;
        };
        let down = async {
            loop {
                match mr.read().await {
                    Ok(Some(data)) => {
                        if wr.write(data).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(%node, %service, "connect: the service's stream failed: {e}");
                        return wr.abort(&format!("the stream from {service} on {node} failed: {e}")).await;
                    }
                }
            }
            wr.close().await;
        };
        tokio::pin!(up, down);
        // Once the service's side ends, the session ends (whatever the client still
        // holds open); once the client's side ends, the service gets the end of input and
        // its remaining output is still delivered.
        tokio::select! {
            () = &mut down => {}
            () = &mut up => down.await,
        }
        Ok(Flow::End)
    }

    async fn status(&self, req: &Request) -> Result<Value, String> {
        let wanted: Option<Vec<String>> = match req {
            Request::Text(p) if !p.is_empty() => return Err("status command does not take parameters".into()),
            Request::Text(_) => None,
            Request::Json(m) => match m.get("requested_fields") {
                None => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or("each element of requested_fields must be a string")?,
                ),
                Some(_) => return Err("requested_fields must be an array of strings".into()),
            },
        };
        let mut full = self.full_status().await.ok_or("the node is shutting down")?;
        // receptord's own status document (docs/STATUS.md), for `receptor status` on the
        // local socket: only when asked for by name, so Go's reply stays as it is.
        if wanted.as_ref().is_some_and(|f| f.iter().any(|k| k == STATUS_DOC_FIELD)) {
            let st = self.node.status().await.ok_or("the node is shutting down")?;
            let mut doc = crate::status::StatusDoc::from_mesh(&st);
            if self.netceptor.is_some() {
                // Its netceptor plane too, as the mesh client's view adds it.
                crate::status::netceptor::merge(&mut doc, &Value::Object(full.clone()));
            }
            full.insert(STATUS_DOC_FIELD.into(), serde_json::to_value(doc).map_err(|e| e.to_string())?);
        }
        Ok(Value::Object(match wanted {
            None => full,
            Some(fields) => full.into_iter().filter(|(k, _)| fields.contains(k)).collect(),
        }))
    }

    async fn full_status(&self) -> Option<Map<String, Value>> {
        let st = self.node.status().await?;
        let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let me = self.node.id().clone();
        let mut connections = Vec::new();
        let mut costs: BTreeMap<String, Value> = BTreeMap::new();
        let mut ads = Vec::new();
        for lsa in &st.nodes {
            let neighbours: BTreeMap<String, Value> =
                lsa.neighbors.iter().map(|(n, c)| (n.to_string(), json!(c))).collect();
            if lsa.origin == me {
                connections =
                    lsa.neighbors.iter().map(|(n, c)| json!({"NodeID": n.as_str(), "Cost": c})).collect();
            }
            if !neighbours.is_empty() {
                costs.insert(lsa.origin.to_string(), json!(neighbours));
            }
            let work: Vec<Value> = lsa
                .work_types
                .iter()
                .map(|w| json!({"WorkType": w.name, "Secure": lsa.origin == me && self.units.is_secure(&w.name)}))
                .collect();
            ads.push(json!({
                "NodeID": lsa.origin.as_str(),
                "Service": "control",
                "Time": now,
                "ConnType": 1,
                "Tags": {"type": "Control Service"},
                "WorkCommands": if work.is_empty() { Value::Null } else { Value::Array(work) },
            }));
        }
        let routes: BTreeMap<String, Value> =
            st.routes.iter().map(|r| (r.dst.to_string(), json!(r.next_hop.as_str()))).collect();
        let mut m = Map::new();
        // Go writes top-level map keys sorted.
        m.insert("Advertisements".into(), Value::Array(ads));
        m.insert("Connections".into(), Value::Array(connections));
        m.insert("KnownConnectionCosts".into(), json!(costs));
        m.insert("NodeID".into(), json!(me.as_str()));
        m.insert("RoutingTable".into(), json!(routes));
        m.insert("SystemCPUCount".into(), json!(std::thread::available_parallelism().map_or(1, |n| n.get())));
        m.insert("SystemMemoryMiB".into(), json!(memory_mib()));
        m.insert("Version".into(), json!(RECEPTORCTL_VERSION));
        if let Some(net) = &self.netceptor {
            if let Some(ns) = net.status().await {
                crate::netceptor::status::merge_go_style(&mut m, &ns);
            }
        }
        Some(m)
    }

    /// The target node of `ping`/`traceroute` (`None`: not a valid node ID).
    fn target(&self, req: &Request, what: &str) -> Result<Option<NodeId>, String> {
        let target = match req {
            Request::Text(p) if p.is_empty() => return Err(format!("no {what} target")),
            Request::Text(p) => p.clone(),
            Request::Json(m) => match m.get("target") {
                None => return Err(format!("no {what} target")),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(format!("{what} target must be string")),
            },
        };
        if target.eq_ignore_ascii_case("localhost") {
            return Ok(Some(self.node.id().clone()));
        }
        Ok(NodeId::new(&target).ok())
    }

    async fn traceroute(&self, req: &Request) -> Result<Value, String> {
        let me = self.node.id().as_str().to_owned();
        let Some(node) = self.target(req, "traceroute")? else {
            return Ok(json!({"0": {"Error": "no route to node", "From": me, "Time": 0, "TimeStr": "0s"}}));
        };
        let mut m = Map::new();
        if let Some(net) =
            self.netceptor.as_ref().filter(|n| !self.node.routable(&node) && n.routable(node.as_str()))
        {
            // A node only the netceptor plane (Go Receptor) knows: Go's traceroute.
            for (hop, r) in net.traceroute(node.as_str(), PING_TIMEOUT).await {
                let entry = match r {
                    Ok((from, rtt)) => json!({
                        "From": from,
                        "Time": rtt.as_nanos() as u64,
                        "TimeStr": gojson::duration_string(rtt),
                    }),
                    Err(e) => {
                        let error = match e {
                            crate::netceptor::PingError::Timeout(_) => "timeout".to_owned(),
                            crate::netceptor::PingError::Unreachable(why) => why,
                            crate::netceptor::PingError::Send(_) => "no route to node".to_owned(),
                        };
                        json!({"Error": error, "From": me, "Time": 0, "TimeStr": "0s"})
                    }
                };
                m.insert(hop.to_string(), entry);
            }
            return Ok(Value::Object(m));
        }
        for (hop, r) in self.node.traceroute(&node, PING_TIMEOUT).await {
            let entry = match r {
                Ok(reply) => json!({
                    "From": reply.from.as_str(),
                    "Time": reply.rtt.as_nanos() as u64,
                    "TimeStr": gojson::duration_string(reply.rtt),
                }),
                Err(e) => {
                    let error =
                        if matches!(e, PingError::Unknown(_)) { "no route to node" } else { "timeout" };
                    json!({"Error": error, "From": me, "Time": 0, "TimeStr": "0s"})
                }
            };
            m.insert(hop.to_string(), entry);
        }
        Ok(Value::Object(m))
    }

    async fn ping(&self, req: &Request) -> Result<Value, String> {
        let Some(node) = self.target(req, "ping")? else {
            return Ok(json!({"Error": "no route to node", "Success": false}));
        };
        Ok(match self.node.ping(&node, PING_TIMEOUT).await {
            Ok(rtt) => json!({
                "From": node.as_str(),
                "Success": true,
                "Time": rtt.as_nanos() as u64,
                "TimeStr": gojson::duration_string(rtt),
            }),
            Err(PingError::Unknown(_)) => match &self.netceptor {
                // A node only the netceptor plane (Go Receptor) knows.
                Some(net) => match net.ping(node.as_str(), PING_TIMEOUT).await {
                    Ok(rtt) => json!({
                        "From": node.as_str(),
                        "Success": true,
                        "Time": rtt.as_nanos() as u64,
                        "TimeStr": gojson::duration_string(rtt),
                    }),
                    Err(crate::netceptor::PingError::Timeout(_)) => {
                        json!({"Error": "timeout", "Success": false})
                    }
                    Err(_) => json!({"Error": "no route to node", "Success": false}),
                },
                None => json!({"Error": "no route to node", "Success": false}),
            },
            Err(PingError::Timeout(..)) => json!({"Error": "timeout", "Success": false}),
        })
    }

    async fn reload(&self) -> Value {
        match (self.reload)().await {
            Ok(()) => json!({"Success": true}),
            Err(e) => json!({"Error": format!("{e} ERRORCODE 4"), "Success": false}),
        }
    }
}

/// A request's parameters: the text after the command, or the whole JSON object.
pub(crate) enum Request {
    Text(String),
    Json(Map<String, Value>),
}

/// An `ERROR:` line or a JSON line.
fn reply_line(result: Result<Value, String>) -> String {
    match result {
        Ok(v) => format!("{}\n", gojson::to_string(&v)),
        Err(e) => format!("ERROR: {e}\n"),
    }
}

/// The node, service and TLS name of a `connect` request.
pub(crate) fn connect_target(req: &Request) -> Result<(String, String, String), String> {
    match req {
        Request::Text(p) => {
            let tokens: Vec<&str> = p.split(' ').collect();
            if tokens.len() < 2 || tokens[0].is_empty() {
                return Err("no connect target".into());
            }
            if tokens.len() > 3 {
                return Err("too many parameters".into());
            }
            Ok((tokens[0].into(), tokens[1].into(), tokens.get(2).copied().unwrap_or("").into()))
        }
        Request::Json(m) => {
            let field = |key: &str, what: &str| match m.get(key) {
                None => Err(format!("no connect target {what}")),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("connect target {what} must be string")),
            };
            let node = field("node", "node")?;
            let service = field("service", "service")?;
            let tls = match m.get("tls") {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err("connect tls name must be string".into()),
            };
            Ok((node, service, tls))
        }
    }
}

pub(crate) fn parse(line: &str) -> Result<(String, Request), String> {
    if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let Value::Object(m) = v else { return Err("JSON did not contain a command".into()) };
        let cmd = match m.get("command") {
            None => return Err("JSON did not contain a command".into()),
            Some(Value::String(c)) => c.clone(),
            Some(_) => return Err("command must be a string".into()),
        };
        return Ok((cmd, Request::Json(m)));
    }
    let (cmd, params) = line.split_once(' ').unwrap_or((line, ""));
    Ok((cmd.to_lowercase(), Request::Text(params.to_owned())))
}

/// Total memory in MiB, from /proc/meminfo.
fn memory_mib() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// The default socket path, used only when its directory exists.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/receptor/receptor.sock")
}

/// Tells an idle session why it is closed (best effort: the client may be gone).
pub(crate) async fn idle<W: ByteWrite>(wr: &mut W, after: std::time::Duration) {
    static IDLE: crate::logging::Throttle =
        crate::logging::Throttle::new(std::time::Duration::from_secs(10), 3);
    if let Some(suppressed) = IDLE.allow() {
        tracing::info!(suppressed, ?after, "control session closed: idle (limits.control_idle_timeout)");
    }
    let msg = format!("ERROR: idle for {after:?} (limits.control_idle_timeout); closing\n");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wr.write(Bytes::from(msg))).await;
}
