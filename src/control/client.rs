//! The client side of the control protocol: [`ControlClient`] speaks it over any byte
//! transport (the `receptor work` CLI over the Unix socket), and [`MeshControl`] uses it
//! over mesh streams to drive work units on other nodes (remote units).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::io::{ByteRead, ByteWrite, Line, LineReader, MeshWrite};
use super::{CONTROL_SERVICE, MAX_LINE, gojson};
use crate::mesh::{Node, StreamReader};
use crate::wire::NodeId;
use crate::work::payload::PayloadReader;
use crate::work::remote::{BoxFut, RemoteBytes, RemoteControl, RemoteError, RemoteOp, RemoteSubmit};
use crate::work::units::UnitStatus;

/// How long a remote node has to greet us.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed or closed early.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered `ERROR: …`.
    #[error("{0}")]
    Remote(String),
    /// The daemon answered something this client does not understand.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

/// One control session.
pub struct ControlClient<R, W> {
    rd: LineReader<R>,
    wr: W,
    /// The node ID from the greeting.
    pub node: String,
}

impl<R: ByteRead, W: ByteWrite> ControlClient<R, W> {
    /// Reads the greeting.
    pub async fn connect(rd: R, wr: W) -> Result<ControlClient<R, W>, ClientError> {
        let mut rd = LineReader::new(rd);
        let line = next_line(&mut rd).await?;
        let node = line
            .strip_prefix("Receptor Control, node ")
            .ok_or_else(|| ClientError::Protocol(format!("not a Receptor control greeting: {line}")))?
            .to_owned();
        Ok(ControlClient { rd, wr, node })
    }

    /// The writing half (to end the request direction).
    pub fn wr_mut(&mut self) -> &mut W {
        &mut self.wr
    }

    /// The reading half, for raw output after a reply.
    pub fn into_reader(self) -> LineReader<R> {
        self.rd
    }

    pub async fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        self.wr.write(Bytes::from(format!("{line}\n"))).await?;
        Ok(())
    }

    /// Reads one reply line; `ERROR: …` becomes [`ClientError::Remote`].
    pub async fn read_line(&mut self) -> Result<String, ClientError> {
        let line = next_line(&mut self.rd).await?;
        match line.strip_prefix("ERROR: ") {
            Some(msg) => Err(ClientError::Remote(msg.to_owned())),
            None => Ok(line),
        }
    }

    /// Sends a request and parses its one-line JSON reply.
    pub async fn request(&mut self, line: &str) -> Result<Value, ClientError> {
        self.send_line(line).await?;
        let reply = self.read_line().await?;
        serde_json::from_str(&reply).map_err(|_| ClientError::Protocol(reply))
    }

    /// `work submit`: creates the unit, sends `payload` (then ends our direction) and
    /// returns the unit ID and the final reply (`result`, `unitid`).
    pub async fn submit(
        &mut self,
        fields: Map<String, Value>,
        payload: impl ByteRead,
    ) -> Result<(String, Value), ClientError> {
        let id = self.submit_create(fields).await?;
        let reply = self.submit_payload(payload).await?;
        Ok((id, reply))
    }

    /// The first half of `work submit`: sends the request, returns the new unit's ID.
    pub async fn submit_create(&mut self, fields: Map<String, Value>) -> Result<String, ClientError> {
        let mut req = Map::new();
        req.insert("command".into(), json!("work"));
        req.insert("subcommand".into(), json!("submit"));
        req.extend(fields);
        self.send_line(&gojson::to_string(&Value::Object(req))).await?;
        let created = self.read_line().await?;
        // As Go Receptor parses it: `with ID ([a-zA-Z0-9]+)\.`
        let id = created
            .split("with ID ")
            .nth(1)
            .and_then(|rest| rest.split('.').next())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| ClientError::Protocol(created.clone()))?
            .to_owned();
        Ok(id)
    }

    /// The second half of `work submit`: the payload, our end of input, the final reply.
    pub async fn submit_payload(&mut self, mut payload: impl ByteRead) -> Result<Value, ClientError> {
        while let Some(chunk) = payload.read().await? {
            self.wr.write(chunk).await?;
        }
        self.wr.close().await;
        let reply = self.read_line().await?;
        serde_json::from_str(&reply).map_err(|_| ClientError::Protocol(reply))
    }

    /// `work results`: after the header, the raw output until the daemon closes.
    pub async fn results(mut self, unit: &str, from: u64) -> Result<LineReader<R>, ClientError> {
        self.send_line(&format!("work results {unit} {from}")).await?;
        let header = self.read_line().await?;
        if !header.starts_with("Streaming results for work unit ") {
            return Err(ClientError::Protocol(header));
        }
        self.wr.close().await;
        Ok(self.rd)
    }
}

async fn next_line<R: ByteRead>(rd: &mut LineReader<R>) -> Result<String, ClientError> {
    match rd.line(MAX_LINE).await? {
        Line::Text(t) => Ok(t),
        Line::Eof => Err(ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the control connection closed",
        ))),
        Line::TooLong => Err(ClientError::Protocol("reply line too long".into())),
    }
}

/// Drives work units on other nodes through their `control` mesh service.
pub struct MeshControl {
    pub node: Node,
    /// Whether every mesh link of this node is TLS (secrets may travel).
    pub tls_only: bool,
    /// What authenticates the streams this node opens.
    pub streams: StreamAuth,
}

/// What authenticates the streams a node opens to other native nodes (`[tls]`,
/// `[tls] e2e_streams`): what a unit submitted with `tlsclient` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamAuth {
    /// No `[tls]`: there is no identity to authenticate with.
    NoTls,
    /// `[tls] e2e_streams = false`: streams are not protected end to end.
    Unprotected,
    /// Every stream to another node is a TLS 1.3 session with it, end to end (`mesh::e2e`).
    EndToEnd,
}

impl StreamAuth {
    /// The protection a node with (`tls`) or without `[tls]` and `e2e_streams` gives.
    pub fn of(tls: bool, e2e_streams: bool) -> StreamAuth {
        match (tls, e2e_streams) {
            (false, _) => StreamAuth::NoTls,
            (true, false) => StreamAuth::Unprotected,
            (true, true) => StreamAuth::EndToEnd,
        }
    }

    /// Why a stream to `node` cannot be authenticated with `[tls]` (`None`: it can).
    pub fn refusal(self, node: &NodeId) -> Option<RemoteError> {
        match self {
            StreamAuth::EndToEnd => None,
            StreamAuth::NoTls => Some(RemoteError::Refused(NO_TLS.into())),
            StreamAuth::Unprotected => Some(RemoteError::Refused(format!(
                "streams to {node} would not be authenticated: this node opens them without \
                 end-to-end protection ([tls] e2e_streams = false)"
            ))),
        }
    }
}

/// Why a unit's streams cannot be authenticated on a node without `[tls]`.
pub const NO_TLS: &str = "this node has no [tls] section to authenticate the unit's streams with \
                          (receptord has one TLS identity, [tls], rather than named TLS configs)";

type MeshClient = ControlClient<StreamReader, MeshWrite>;

fn unreachable(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Unreachable(e.to_string())
}

fn classify(e: ClientError) -> RemoteError {
    match e {
        ClientError::Remote(msg) => RemoteError::from_reply(msg),
        ClientError::Protocol(msg) => RemoteError::Refused(format!("could not parse response: {msg}")),
        ClientError::Io(e) => stream_error(e),
    }
}

/// A mesh stream's failure: tampering on the path when its integrity check failed, a
/// lost connection otherwise.
fn stream_error(e: std::io::Error) -> RemoteError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<crate::mesh::StreamError>()) {
        Some(crate::mesh::StreamError::Integrity(why)) => {
            RemoteError::Integrity(format!("integrity check failed ({why})"))
        }
        Some(crate::mesh::StreamError::Sequence(why)) => {
            RemoteError::Sequence(format!("stream integrity failure ({why})"))
        }
        _ => unreachable(e),
    }
}

impl MeshControl {
    /// The path to `node` as traceroute sees it now, e.g. `a → hub → b` (`?` where a
    /// hop did not answer within a second).
    pub async fn path(&self, node: &NodeId) -> String {
        let hops = self.node.traceroute(node, Duration::from_secs(1)).await;
        let names: Vec<String> = hops
            .into_iter()
            .map(|(_, r)| r.map_or_else(|_| "?".to_owned(), |reply| reply.from.to_string()))
            .collect();
        names.join(" → ")
    }
}

impl MeshControl {
    /// One request to `node`'s control service; its one-line JSON reply.
    pub async fn request(&self, node: &NodeId, line: &str) -> Result<Value, RemoteError> {
        let mut c = self.session(node).await?;
        let v = c.request(line).await.map_err(classify)?;
        c.wr.close().await;
        Ok(v)
    }

    async fn session(&self, node: &NodeId) -> Result<MeshClient, RemoteError> {
        let (w, r) = self.node.open(node, CONTROL_SERVICE, Bytes::new()).await.map_err(unreachable)?;
        let client = tokio::time::timeout(GREETING_TIMEOUT, ControlClient::connect(r, MeshWrite(Some(w))))
            .await
            .map_err(|_| unreachable(format!("no greeting from {node} within {GREETING_TIMEOUT:?}")))?
            .map_err(classify)?;
        if client.node != node.as_str() {
            return Err(RemoteError::Refused(format!("expected node {node}, reached {}", client.node)));
        }
        Ok(client)
    }
}

/// A results stream; while the unit prints nothing its path is probed, so a node or relay
/// that died is noticed within seconds (as an error here), not at the job's next output.
struct MeshResults(LineReader<StreamReader>, crate::mesh::Prober);

impl RemoteBytes for MeshResults {
    fn next(&mut self) -> BoxFut<'_, Result<Option<Bytes>, RemoteError>> {
        Box::pin(async move {
            tokio::select! {
                r = self.0.raw() => r.map_err(stream_error),
                // Never ends; the read above does (with an error once a probe failed).
                () = self.1.run() => Ok(None),
            }
        })
    }
}

/// The remote-unit requests of the control protocol, the same whichever transport carries
/// the session (a mesh stream: [`MeshControl`]; a netceptor stream to a Go node:
/// `control::plane`).
pub(crate) mod unit_requests {
    use super::*;
    use crate::work::remote::RemoteOp;

    /// Creates the unit on `node` and sends its payload (the local unit's stdin); returns
    /// the remote unit ID, told to `on_created` as soon as it exists. `lease`: send the
    /// unit's lease field (other receptord nodes honour it; Go nodes get none).
    pub(crate) async fn submit<R: ByteRead, W: ByteWrite>(
        c: &mut ControlClient<R, W>,
        node: &NodeId,
        req: RemoteSubmit,
        lease: bool,
        on_created: &(dyn Fn(&str) + Send + Sync),
        classify: fn(ClientError) -> RemoteError,
    ) -> Result<String, RemoteError> {
        // String values, as Go's JSON submit takes them.
        let mut fields: BTreeMap<String, Value> =
            req.params.into_iter().map(|(k, v)| (k, json!(v))).collect();
        fields.insert("node".into(), json!(node.as_str()));
        fields.insert("worktype".into(), json!(req.work_type));
        if let Some(sig) = req.signature {
            fields.insert("signature".into(), json!(sig));
        }
        if let Some(lease) = req.lease.filter(|_| lease) {
            fields.insert("lease".into(), json!(format!("{}ms", lease.as_millis())));
        }
        let payload = PayloadReader::open(&req.stdin, req.arrival)
            .await
            .map_err(|e| RemoteError::Refused(format!("reading stdin: {e}")))?;
        let id = c.submit_create(fields.into_iter().collect()).await.map_err(classify)?;
        on_created(&id);
        // A payload that fails to arrive here fails the read: the session is dropped
        // unended (its stream reset), so the remote node never runs a truncated one.
        c.submit_payload(payload).await.map_err(classify)?;
        Ok(id)
    }

    /// Asks for `unit`'s results from byte `from`; the session then streams them.
    pub(crate) async fn start_results<R: ByteRead, W: ByteWrite>(
        c: &mut ControlClient<R, W>,
        unit: &str,
        from: u64,
        signature: Option<String>,
        classify: fn(ClientError) -> RemoteError,
    ) -> Result<(), RemoteError> {
        let mut req = json!({"command": "work", "subcommand": "results", "unitid": unit, "startpos": from});
        if let Some(sig) = signature {
            req["signature"] = json!(sig);
        }
        c.send_line(&gojson::to_string(&req)).await.map_err(classify)?;
        let header = c.read_line().await.map_err(classify)?;
        if !header.contains("Streaming results") {
            return Err(RemoteError::Refused(format!("could not parse response: {header}")));
        }
        Ok(())
    }

    /// The request line of a cancel or release of `unit`.
    pub(crate) fn operate_line(unit: &str, op: RemoteOp, signature: Option<String>) -> String {
        let sub = match op {
            RemoteOp::Cancel => "cancel",
            RemoteOp::Release => "release",
            RemoteOp::ForceRelease => "force-release",
        };
        let mut req = json!({"command": "work", "subcommand": sub, "unitid": unit});
        if let Some(sig) = signature {
            req["signature"] = json!(sig);
        }
        gojson::to_string(&req)
    }
}

impl RemoteControl for MeshControl {
    fn reachable(&self, node: &NodeId) -> bool {
        self.node.routable(node)
    }

    fn path<'a>(&'a self, node: &'a NodeId) -> BoxFut<'a, String> {
        Box::pin(MeshControl::path(self, node))
    }

    fn route_mark(&self) -> Option<crate::mesh::reroute::RouteMark> {
        Some(self.node.route_mark())
    }

    fn rerouted_since(&self, node: &NodeId, mark: Option<crate::mesh::reroute::RouteMark>) -> bool {
        mark.is_none_or(|m| self.node.rerouted_since(node, m))
    }

    fn links_are_tls(&self) -> bool {
        self.tls_only
    }

    /// Native streams are authenticated end to end by the mesh itself, or not at all.
    fn user_tls(self: Arc<Self>, node: &NodeId) -> Result<Arc<dyn RemoteControl>, RemoteError> {
        match self.streams.refusal(node) {
            None => Ok(self),
            Some(e) => Err(e),
        }
    }

    fn submit<'a>(
        &'a self,
        node: &'a NodeId,
        req: RemoteSubmit,
        on_created: &'a (dyn Fn(&str) + Send + Sync),
    ) -> BoxFut<'a, Result<String, RemoteError>> {
        Box::pin(async move {
            let mut c = self.session(node).await?;
            unit_requests::submit(&mut c, node, req, true, on_created, classify).await
        })
    }

    fn status<'a>(&'a self, node: &'a NodeId, unit: &'a str) -> BoxFut<'a, Result<UnitStatus, RemoteError>> {
        Box::pin(async move {
            let mut c = self.session(node).await?;
            let v = c.request(&format!("work status {unit}")).await.map_err(classify)?;
            let st = serde_json::from_value(v).map_err(|e| RemoteError::Refused(format!("bad status: {e}")));
            c.wr.close().await;
            st
        })
    }

    fn results<'a>(
        &'a self,
        node: &'a NodeId,
        unit: &'a str,
        from: u64,
        signature: Option<String>,
    ) -> BoxFut<'a, Result<Box<dyn RemoteBytes>, RemoteError>> {
        Box::pin(async move {
            let mut c = self.session(node).await?;
            unit_requests::start_results(&mut c, unit, from, signature, classify).await?;
            c.wr.close().await;
            let prober = c.rd.prober().ok_or_else(|| RemoteError::Refused("not a mesh stream".into()))?;
            Ok(Box::new(MeshResults(c.rd, prober)) as Box<dyn RemoteBytes>)
        })
    }

    fn operate<'a>(
        &'a self,
        node: &'a NodeId,
        unit: &'a str,
        op: RemoteOp,
        signature: Option<String>,
    ) -> BoxFut<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            let mut c = self.session(node).await?;
            c.request(&unit_requests::operate_line(unit, op, signature)).await.map_err(classify)?;
            c.wr.close().await;
            Ok(())
        })
    }
}
