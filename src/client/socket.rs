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
use crate::work::JobResult;
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
