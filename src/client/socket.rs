//! The local daemon's control socket as a client transport: `receptor work …`, and
//! `receptor run` when a local daemon is there and no peer is given. Work submitted this
//! way is a durable work unit of the local daemon (mirrored from the target node).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::control::client::{ClientError as ControlError, ControlClient};
use crate::control::io::{ByteRead, IoRead, IoWrite};
use crate::wire::NodeId;
use crate::work::JobResult;
use crate::work::remote::{BoxFut, RemoteBytes, RemoteControl, RemoteError, RemoteOp, RemoteSubmit};
use crate::work::units::{State, UnitStatus};

/// A control session on a Unix socket.
pub type SocketControl = ControlClient<IoRead<OwnedReadHalf>, IoWrite<OwnedWriteHalf>>;

/// Where a packaged daemon's control socket is.
pub const DEFAULT_SOCKET: &str = "/run/receptor/receptor.sock";

/// The default socket, if a daemon seems to be serving it.
pub fn default_socket() -> Option<PathBuf> {
    let p = PathBuf::from(DEFAULT_SOCKET);
    p.exists().then_some(p)
}

/// Why a socket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("control socket {path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("control socket {path}: {source}")]
    Control { path: String, source: ControlError },
}

/// Opens a session (greeting read).
pub async fn connect(path: &Path) -> Result<SocketControl, SocketError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|source| SocketError::Connect { path: path.display().to_string(), source })?;
    let (r, w) = stream.into_split();
    ControlClient::connect(IoRead(r), IoWrite(w)).await.map_err(|source| ctl(path, source))
}

pub fn ctl(path: &Path, source: ControlError) -> SocketError {
    SocketError::Control { path: path.display().to_string(), source }
}

/// One request, one JSON reply, on a fresh session.
pub async fn request(path: &Path, line: &str) -> Result<Value, SocketError> {
    let mut c = connect(path).await?;
    c.request(line).await.map_err(|e| ctl(path, e))
}

/// A unit's status.
pub async fn unit_status(path: &Path, unit: &str) -> Result<UnitStatus, SocketError> {
    let v = request(path, &format!("work status {unit}")).await?;
    serde_json::from_value(v).map_err(|e| ctl(path, ControlError::Protocol(format!("unit status: {e}"))))
}

/// A finished unit's outcome as a job result (exit code from "exit status N").
pub fn job_result(st: &UnitStatus) -> JobResult {
    let code = st.detail.strip_prefix("exit status ").and_then(|n| n.trim().parse::<i32>().ok());
    match (st.state, code) {
        (State::Succeeded, _) => JobResult { exit_code: Some(0), ..JobResult::default() },
        (State::Failed, Some(c)) => JobResult { exit_code: Some(c), ..JobResult::default() },
        (State::Canceled, _) => JobResult::failed("the work unit was cancelled"),
        _ => JobResult::failed(st.detail.clone()),
    }
}

/// The fields of a `work submit` for `work_type` on `node`, plus work parameters.
pub fn submit_fields(node: &str, work_type: &str, params: &[(String, String)]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("node".into(), json!(node));
    m.insert("worktype".into(), json!(work_type));
    for (k, v) in params {
        m.insert(k.clone(), json!(v));
    }
    m
}

/// Bytes from a channel, as a submit payload.
pub struct ChannelRead(pub mpsc::Receiver<Bytes>);

impl ByteRead for ChannelRead {
    async fn read(&mut self) -> std::io::Result<Option<Bytes>> {
        Ok(self.0.recv().await)
    }
}

/// The local daemon's units through its control socket, as a [`RemoteControl`]: `receptor
/// run` through a local daemon drives its run's unit the same way as through the mesh.
/// The unit is the daemon's (a remote unit mirroring the target node's), so `node` only
/// names the target at submission.
pub struct SocketUnits(pub PathBuf);

fn remote_err(e: SocketError) -> RemoteError {
    match e {
        SocketError::Control { source: ControlError::Remote(msg), .. } => RemoteError::from_reply(msg),
        SocketError::Control { source: ControlError::Protocol(msg), .. } => RemoteError::Refused(msg),
        other => RemoteError::Unreachable(other.to_string()),
    }
}

struct SocketResults(crate::control::io::LineReader<IoRead<OwnedReadHalf>>);

impl RemoteBytes for SocketResults {
    fn next(&mut self) -> BoxFut<'_, Result<Option<Bytes>, RemoteError>> {
        Box::pin(async move { self.0.raw().await.map_err(|e| RemoteError::Unreachable(e.to_string())) })
    }
}

impl RemoteControl for SocketUnits {
    fn reachable(&self, _node: &NodeId) -> bool {
        self.0.exists()
    }

    fn links_are_tls(&self) -> bool {
        false
    }

    // The daemon behind the socket mirrors units it submits; this client passes no
    // `tlsclient` on, so it cannot promise what that asks.
    fn user_tls(
        self: std::sync::Arc<Self>,
        _node: &NodeId,
    ) -> Result<std::sync::Arc<dyn RemoteControl>, RemoteError> {
        Err(RemoteError::Refused("tlsclient is not passed on through the local control socket".into()))
    }

    // The local daemon's Unix socket: no relay between, so no path to name and nothing
    // to tell tampering from a reroute by (the daemon's own mirror does that).
    fn path<'a>(&'a self, _node: &'a NodeId) -> BoxFut<'a, String> {
        Box::pin(async { String::new() })
    }

    fn route_mark(&self) -> Option<crate::mesh::reroute::RouteMark> {
        None
    }

    fn rerouted_since(&self, _node: &NodeId, _mark: Option<crate::mesh::reroute::RouteMark>) -> bool {
        true
    }

    fn submit<'a>(
        &'a self,
        node: &'a NodeId,
        req: RemoteSubmit,
        on_created: &'a (dyn Fn(&str) + Send + Sync),
    ) -> BoxFut<'a, Result<String, RemoteError>> {
        Box::pin(async move {
            let path = &self.0;
            let mut c = connect(path).await.map_err(remote_err)?;
            let params: Vec<(String, String)> = req.params.into_iter().collect();
            let mut fields = submit_fields(node.as_str(), &req.work_type, &params);
            if let Some(lease) = req.lease {
                fields.insert("lease".into(), json!(format!("{}ms", lease.as_millis())));
            }
            let file = crate::work::payload::PayloadReader::open(&req.stdin, req.arrival)
                .await
                .map_err(|e| RemoteError::Refused(format!("reading the payload: {e}")))?;
            let id = c.submit_create(fields).await.map_err(|e| remote_err(ctl(path, e)))?;
            on_created(&id);
            c.submit_payload(file).await.map_err(|e| remote_err(ctl(path, e)))?;
            Ok(id)
        })
    }

    fn status<'a>(&'a self, _node: &'a NodeId, unit: &'a str) -> BoxFut<'a, Result<UnitStatus, RemoteError>> {
        Box::pin(async move { unit_status(&self.0, unit).await.map_err(remote_err) })
    }

    fn results<'a>(
        &'a self,
        _node: &'a NodeId,
        unit: &'a str,
        from: u64,
        _signature: Option<String>,
    ) -> BoxFut<'a, Result<Box<dyn RemoteBytes>, RemoteError>> {
        Box::pin(async move {
            let c = connect(&self.0).await.map_err(remote_err)?;
            let rd = c.results(unit, from).await.map_err(|e| remote_err(ctl(&self.0, e)))?;
            Ok(Box::new(SocketResults(rd)) as Box<dyn RemoteBytes>)
        })
    }

    fn operate<'a>(
        &'a self,
        _node: &'a NodeId,
        unit: &'a str,
        op: RemoteOp,
        _signature: Option<String>,
    ) -> BoxFut<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            let sub = match op {
                RemoteOp::Cancel => "cancel",
                RemoteOp::Release => "release",
                RemoteOp::ForceRelease => "force-release",
            };
            request(&self.0, &format!("work {sub} {unit}")).await.map(|_| ()).map_err(remote_err)
        })
    }
}
