//! The client library: join the mesh as a short-lived node (`receptor_peer`,
//! `receptor_node_id`), then ping, inspect, or run work on any node (`via_receptor`).
//!
//! Everything here is async; [`blocking`] wraps it for callers without a runtime.

pub mod blocking;
pub mod durable;
pub mod run;
pub mod socket;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::mesh::{
    Chunk, JoinError, MeshStatus, Node, NodeOptions, OpenError, PingError, StreamReader, StreamWriter,
};
use crate::transport::PeerUrl;
use crate::wire::NodeId;
use crate::work::{JobResult, WORK_SERVICE, WorkRequest};

/// Where a client enters the mesh when no peer is given.
pub const DEFAULT_PEER: &str = "receptor://localhost:8888";

/// How a client joins the mesh.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Entry point into the mesh; default [`DEFAULT_PEER`].
    pub receptor_peer: Option<PeerUrl>,
    /// This client's node ID; default a unique temporary ID.
    pub receptor_node_id: Option<NodeId>,
    /// How long the peer may take to send its routing table once linked (default 15 s: a
    /// peer under an advertisement flood sends a database bounded by its limits, which on a
    /// loaded host can take more than a few seconds; a peer that refuses or does not answer
    /// fails at once, or at the dial and handshake timeouts).
    pub join_timeout: Duration,
    /// TLS material for `receptors://` peers; the node ID must be in the certificate.
    pub tls: Option<crate::transport::TlsSettings>,
    /// Signs the work this client submits (for work types with `verify_signature`).
    pub signer: Option<crate::work::signing::Signer>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            receptor_peer: None,
            receptor_node_id: None,
            join_timeout: Duration::from_secs(15),
            tls: None,
            signer: None,
        }
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Ping(#[from] PingError),
    #[error("{0}")]
    Remote(String),
    #[error("connection to node {node} lost: {reason}")]
    Lost { node: NodeId, reason: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] crate::transport::TlsError),
    #[error("{0}")]
    Identity(String),
    #[error("invalid job result from {node}: {reason}")]
    BadResult { node: NodeId, reason: String },
}

/// A unique temporary node ID for a client.
/// A new client session of `principal` (`principal~` and 8 random hex digits).
fn session_id(principal: &NodeId) -> Result<NodeId, ClientError> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    NodeId::session(principal, tag).map_err(|e| ClientError::Identity(format!("--receptor-node-id: {e}")))
}

pub fn temporary_node_id() -> NodeId {
    let id = format!(
        "{}{}",
        crate::identity::UNCERTIFIED_PREFIX,
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    NodeId::new(id).expect("UNWRAP: generated ids are valid")
}

/// A short-lived node joined to the mesh.
pub struct MeshClient {
    node: Node,
    signer: Option<crate::work::signing::Signer>,
}

impl MeshClient {
    /// Starts a short-lived node and joins the mesh through the peer.
    pub async fn connect(opts: &ClientOptions) -> Result<MeshClient, ClientError> {
        let client = MeshClient::detached(opts)?;
        let peer = match &opts.receptor_peer {
            Some(p) => p.clone(),
            None => DEFAULT_PEER.parse().expect("UNWRAP: the default peer URL is valid"),
        };
        if let Err(e) = client.node.join(&peer, opts.join_timeout).await {
            client.node.shutdown(Duration::from_secs(1)).await;
            return Err(e.into());
        }
        Ok(client)
    }

    /// Starts a short-lived node that is not connected to anything (it can only reach itself).
    /// With TLS, the node ID defaults to the one in the certificate and must match it.
    ///
    /// A client that speaks for a given node ID (`receptor_node_id`, or its certificate's)
    /// joins as a session of it, `NODE~TAG` with a random tag: any number of clients (runs
    /// in threads, in processes) may speak for one ID at once, each with its own address
    /// in the mesh, while what they own and may do is NODE's ([`NodeId::principal`]).
    pub fn detached(opts: &ClientOptions) -> Result<MeshClient, ClientError> {
        let principal = match (&opts.receptor_node_id, &opts.tls) {
            (Some(id), _) => Some(id.principal()),
            (None, Some(tls)) => Some(cert_node_id(&tls.cert)?),
            (None, None) => None,
        };
        let id = match &principal {
            Some(p) => session_id(p)?,
            None => temporary_node_id(),
        };
        let mut node_opts = NodeOptions::new(id.clone());
        node_opts.ephemeral = true;
        if let Some(tls) = &opts.tls {
            let named = id.principal();
            node_opts.tls = Some(crate::transport::TlsContext::load(tls.clone(), named.as_str())?);
        }
        Ok(MeshClient { node: Node::start(node_opts), signer: opts.signer.clone() })
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub async fn ping(&self, dst: &NodeId, timeout: Duration) -> Result<Duration, ClientError> {
        Ok(self.node.ping(dst, timeout).await?)
    }

    pub async fn status(&self) -> Option<MeshStatus> {
        self.node.status().await
    }

    /// Opens a work stream to `node` for `work_type`.
    pub async fn open_work(
        &self,
        node: &NodeId,
        work_type: &str,
        params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(StreamWriter, StreamReader), ClientError> {
        let signature = match &self.signer {
            Some(signer) => {
                let grant = crate::work::signing::Grant {
                    node: node.to_string(),
                    requester: Some(self.node.id().principal().to_string()),
                    op: crate::work::signing::Op::Submit,
                    work_type: work_type.to_owned(),
                    params: Some(crate::work::signing::params_digest(&params)),
                    payload: None,
                    unit: None,
                };
                Some(signer.token(&grant).map_err(ClientError::Remote)?)
            }
            None => None,
        };
        let req = WorkRequest { work_type: work_type.to_owned(), params, signature };
        let header = serde_json::to_vec(&req).map_err(|e| ClientError::Remote(e.to_string()))?;
        Ok(self.node.open(node, WORK_SERVICE, Bytes::from(header)).await?)
    }

    /// Runs `work_type` on `node`, streaming `payload` in and the output to `out`.
    pub async fn submit<R, W>(
        &self,
        node: &NodeId,
        work_type: &str,
        params: serde_json::Map<String, serde_json::Value>,
        payload: R,
        out: &mut W,
    ) -> Result<JobResult, ClientError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (writer, mut reader) = self.open_work(node, work_type, params).await?;
        let send = send_payload(payload, writer);
        let recv = async {
            let trailer = copy_output(&mut reader, out, node).await?;
            parse_result(node, &trailer)
        };
        let (sent, result) = tokio::join!(send, recv);
        let result = result?;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "payload not fully sent (the job ended first)");
        }
        Ok(result)
    }

    /// Leaves the mesh cleanly.
    pub async fn close(self) {
        self.node.shutdown(Duration::from_secs(2)).await;
    }
}

/// Streams `payload` into the job's input, then ends it.
pub async fn send_payload<R: AsyncRead + Unpin>(
    mut payload: R,
    mut writer: StreamWriter,
) -> Result<(), ClientError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        buf.reserve(64 * 1024);
        let n = payload
            .read_buf(&mut buf)
            .await
            .map_err(|source| ClientError::Io { context: "reading the payload".into(), source })?;
        if n == 0 {
            break;
        }
        writer.write(buf.split().freeze()).await.map_err(|e| ClientError::Remote(e.to_string()))?;
    }
    writer.finish(Bytes::new()).await;
    Ok(())
}

/// Copies job output to `out` until the end of the stream; returns the trailer.
pub async fn copy_output<W: AsyncWrite + Unpin>(
    reader: &mut StreamReader,
    out: &mut W,
    node: &NodeId,
) -> Result<Bytes, ClientError> {
    loop {
        match reader.recv().await {
            Ok(Chunk::Data(data)) => out
                .write_all(&data)
                .await
                .map_err(|source| ClientError::Io { context: "writing the output".into(), source })?,
            Ok(Chunk::End(trailer)) => {
                out.flush()
                    .await
                    .map_err(|source| ClientError::Io { context: "writing the output".into(), source })?;
                return Ok(trailer);
            }
            Err(e) => return Err(stream_failure(node, e)),
        }
    }
}

/// Turns a stream reset into the most specific client error.
pub fn stream_failure(node: &NodeId, e: crate::mesh::StreamError) -> ClientError {
    let reason = match e {
        crate::mesh::StreamError::Reset(reason) => reason,
        crate::mesh::StreamError::Integrity(why) => {
            return ClientError::Remote(format!("the stream from {node} failed its integrity check: {why}"));
        } // A gap or an early end: a reroute can do this too; retried like a lost link.
        crate::mesh::StreamError::Sequence(why) => {
            return ClientError::Lost {
                node: node.clone(),
                reason: format!("stream integrity failure: {why}"),
            };
        }
    };
    if reason.starts_with("lost the route") || reason.starts_with("no route") || reason.contains("in transit")
    {
        ClientError::Lost { node: node.clone(), reason }
    } else {
        ClientError::Remote(reason)
    }
}

pub fn parse_result(node: &NodeId, trailer: &[u8]) -> Result<JobResult, ClientError> {
    serde_json::from_slice(trailer)
        .map_err(|e| ClientError::BadResult { node: node.clone(), reason: e.to_string() })
}

/// The first node ID named by a certificate file.
fn cert_node_id(cert: &std::path::Path) -> Result<NodeId, ClientError> {
    let pem = std::fs::read_to_string(cert)
        .map_err(|source| ClientError::Io { context: format!("reading {}", cert.display()), source })?;
    let ids = crate::transport::tls::node_ids_in_pem(&pem).map_err(ClientError::Identity)?;
    let first = ids.first().ok_or_else(|| {
        ClientError::Identity(format!("{} names no node ID; give --receptor-node-id", cert.display()))
    })?;
    NodeId::new(first).map_err(|e| ClientError::Identity(e.to_string()))
}

/// A client configuration file: the same settings as the CLI flags.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub peer: Option<PeerUrl>,
    pub node_id: Option<NodeId>,
    pub tls: Option<ClientTls>,
}

/// TLS material of a client.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    #[serde(default)]
    pub ca: Vec<std::path::PathBuf>,
}

impl ClientFile {
    /// Reads a client config file (TOML).
    pub fn load(path: &std::path::Path) -> Result<ClientFile, crate::config::ConfigError> {
        let file = path.display().to_string();
        let load = |source| crate::config::ConfigError::Load { file: file.clone(), source };
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml).required(true))
            .build()
            .map_err(load)?
            .try_deserialize()
            .map_err(load)
    }
}
