//! `receptor run --via-receptor NODE`: run a playbook on a mesh node as if it ran here.
//!
//! The private data dir is packed into ansible-runner's transmit stream (from a temporary
//! zip, never held in memory) and run by NODE's `ansible_runner` worker: as a durable work
//! unit followed by byte offset (`client::durable`), or — when the job runs through this
//! client's own node — as a job stream. The worker stream that comes back is printed live
//! and turned into `PDD/artifacts/<ident>/` exactly as `ansible-runner process` would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::{ClientError, ClientOptions, MeshClient, parse_result, stream_failure};
use crate::mesh::{Chunk, StreamWriter};
use crate::runner::{self, ArtifactWriter, DecodeLimits, Item, LineKind, RunPrinter, StreamDecoder, decode};
use crate::transport::PeerUrl;
use crate::wire::NodeId;
use crate::work::JobResult;
use crate::work::ansible::WORK_TYPE;

/// The `ansible-runner run` options that make sense remotely.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub private_data_dir: PathBuf,
    pub playbook: Option<String>,
    pub module: Option<String>,
    pub module_args: Option<String>,
    pub host_pattern: Option<String>,
    pub ident: Option<String>,
    pub inventory: Option<String>,
    pub limit: Option<String>,
    pub forks: Option<u32>,
    pub verbosity: Option<u8>,
    pub cmdline: Option<String>,
    pub json_mode: bool,
    pub omit_event_data: bool,
    pub only_failed_event_data: bool,
    /// Keep only this many artifact directories locally (0 = keep all).
    pub rotate_artifacts: u32,
    /// `ansible_runner.run(extravars=...)`: a JSON object, sent in the kwargs line.
    pub extravars: Option<Map<String, Value>>,
    /// `ansible_runner.run(envvars=...)`: string values, sent in the kwargs line.
    pub envvars: Option<Map<String, Value>>,
    /// Further `ansible_runner.run` kwargs, merged over the line's other keys (the Python
    /// package's passwords, settings, ssh_key, fact_cache, ...). Its `playbook` is not
    /// looked for locally: the worker reports a missing one as ansible-runner does.
    pub kwargs: Option<Map<String, Value>>,
}

/// Where to run: the three options of the original feature, plus the run options.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Run on this mesh node; `None` runs through this client's own node.
    pub via_receptor: Option<NodeId>,
    /// Entry point into the mesh (default `receptor://localhost:8888`).
    pub receptor_peer: Option<PeerUrl>,
    /// This client's node ID (default a unique temporary ID). Equal to `via_receptor`,
    /// the job runs through this client's own node without any peer.
    pub receptor_node_id: Option<NodeId>,
    /// TLS material for `receptors://` peers.
    pub tls: Option<crate::transport::TlsSettings>,
    /// Submit through this local daemon's control socket instead of joining the mesh:
    /// the work unit is then that daemon's (mirroring NODE's), released when the run ends.
    pub control_socket: Option<PathBuf>,
    /// Signs the run's requests (submit, results, release) for a node whose
    /// `ansible_runner` has `verify_signature`. Mesh runs only: through a local daemon,
    /// the daemon's own `[work.signing]` signs what it forwards.
    pub signer: Option<crate::work::signing::Signer>,
    /// Remote runs: the unit is cancelled and released once no client has followed it for
    /// this long (default [`crate::work::lease::DEFAULT_LEASE`], 10 minutes).
    pub lease: Option<Duration>,
    /// Remote runs: cancel and release the unit after this long.
    pub timeout: Option<Duration>,
    pub options: RunOptions,
}

type Handler = Box<dyn FnMut(&Value) + Send>;
/// Receives the client's remarks on a remote run.
pub type NoticeHandler = Box<dyn FnMut(&str) + Send>;

/// Event and status callbacks, and where to print the playbook's output.
#[derive(Default)]
pub struct Callbacks {
    pub event_handler: Option<Handler>,
    pub status_handler: Option<Handler>,
    /// Receives the playbook's output as `ansible-runner run` prints it; `None` is quiet.
    pub output: Option<Box<dyn Write + Send>>,
    /// Show a packing progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Receives what the client has to say about a remote run (its unit, lost
    /// connections, reconnections); `None` logs it.
    pub notice_handler: Option<NoticeHandler>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The runner's final status: `successful`, `failed`, `timeout`, `canceled`.
    pub status: String,
    /// The playbook's return code (0, 2 for a failed play, ...).
    pub rc: i32,
    pub ident: String,
    pub artifact_dir: PathBuf,
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("bad private data dir {path}: {reason}")]
    BadPdd { path: String, reason: String },
    #[error("{0}")]
    BadOptions(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("node {node} refused the job: {reason}")]
    Worker { node: NodeId, reason: String },
    /// The node refused the stream itself (e.g. it has no ansible_runner worker).
    #[error("{0}")]
    Remote(String),
    #[error("packing the private data dir: {0}")]
    Pack(#[from] runner::PackError),
    #[error("invalid worker stream from {node}: {reason}")]
    Stream { node: NodeId, reason: String },
    #[error("writing artifacts: {0}")]
    Artifacts(#[from] runner::ProcessError),
    /// The job failed on the executing node before its worker stream was complete; the
    /// reason is that node's own (or the mirroring node's, through a local daemon).
    #[error("the job failed on {node}: {reason}")]
    Failed { node: NodeId, reason: String },
    /// A stream carrying the run failed its end-to-end integrity check (a relay tampered
    /// with it) `limits.integrity_attempts` times: the reason names the failure and path.
    #[error("{0}")]
    Integrity(String),
    /// Stopped from this side (Ctrl-C, SIGTERM, timeout); the work unit was released.
    #[error("{0}; the work unit was cancelled and released")]
    Stopped(String),
}

/// Runs the request and returns the playbook's status and rc.
pub async fn run(req: &RunRequest, mut callbacks: Callbacks) -> Result<RunOutcome, RunError> {
    let opts = &req.options;
    let pdd = check_pdd(opts)?;
    let ident = opts.ident.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let kwargs = kwargs(opts, &ident, &pdd)?;
    let artifact_dir = pdd.join("artifacts").join(&ident);
    warn_special_files(&pdd, &mut callbacks)?;
    if let Some(target) = remote_target(req) {
        let status =
            super::durable::run_unit(req, &target, &pdd, kwargs, &artifact_dir, &mut callbacks).await?;
        return Ok(finish(opts, &pdd, status, ident, artifact_dir));
    }
    let (client, target, _local_dir) = connect_local(req)?;
    let result = async {
        let (writer, mut reader) = client.open_work(&target, WORK_TYPE, Map::new()).await?;
        let send = send_transmit(pdd.clone(), kwargs, writer, callbacks.progress);
        let recv = async {
            let mut recv = Receiver::new(&target, &artifact_dir, opts.json_mode)?;
            loop {
                match reader.recv().await {
                    Ok(Chunk::Data(data)) => recv.feed(&data, &mut callbacks)?,
                    Ok(Chunk::End(trailer)) => return recv.finish(parse_result(&target, &trailer)?),
                    Err(e) => return Err(remote_error(stream_failure(&target, e))),
                }
            }
        };
        let (sent, received) = tokio::join!(send, recv);
        let status = received?;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "transmit stream not fully sent");
        }
        Ok::<_, RunError>(status)
    }
    .await;
    client.close().await;
    Ok(finish(opts, &pdd, result?, ident, artifact_dir))
}

/// Names every special file (FIFO, socket, device) the archive of `pdd` leaves out: the
/// job on the other end will not find it.
fn warn_special_files(pdd: &Path, cb: &mut Callbacks) -> Result<(), RunError> {
    for (path, what) in runner::pack::special_files(pdd, &["artifacts"])? {
        let msg = format!("{} is a {what}: left out of the archive sent to the node", path.display());
        match cb.notice_handler.as_mut() {
            Some(h) => h(&msg),
            None => tracing::warn!("{msg}"),
        }
    }
    Ok(())
}

/// The node a remote run goes to; `None` when the job runs through this client's own node.
fn remote_target(req: &RunRequest) -> Option<NodeId> {
    match (&req.via_receptor, &req.receptor_node_id) {
        (None, _) => None,
        (Some(via), Some(me)) if via == me => None,
        (Some(via), _) => Some(via.clone()),
    }
}

/// Checks a remote run's request: its target, private data dir, kwargs and ident.
pub(super) fn prepare_remote(
    req: &RunRequest,
) -> Result<(NodeId, PathBuf, Map<String, Value>, String), RunError> {
    let target = remote_target(req).ok_or_else(|| {
        RunError::BadOptions("a detached run needs --via-receptor NODE other than this client".into())
    })?;
    let pdd = check_pdd(&req.options)?;
    let ident = req.options.ident.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let kwargs = kwargs(&req.options, &ident, &pdd)?;
    Ok((target, pdd, kwargs, ident))
}

pub(super) fn finish(
    opts: &RunOptions,
    pdd: &Path,
    status: (String, i32),
    ident: String,
    artifact_dir: PathBuf,
) -> RunOutcome {
    if opts.rotate_artifacts > 0 {
        rotate(&pdd.join("artifacts"), opts.rotate_artifacts as usize);
    }
    let rc = read_rc(&artifact_dir).unwrap_or(status.1);
    RunOutcome { status: status.0, rc, ident, artifact_dir }
}

fn check_pdd(opts: &RunOptions) -> Result<PathBuf, RunError> {
    let shown = opts.private_data_dir.display().to_string();
    let bad = |reason: String| RunError::BadPdd { path: shown.clone(), reason };
    let pdd = opts.private_data_dir.canonicalize().map_err(|e| bad(e.to_string()))?;
    if !pdd.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let given = |k: &str| opts.kwargs.as_ref().and_then(|m| m.get(k)).is_some_and(|v| !v.is_null());
    let playbook = opts.playbook.is_some() || given("playbook");
    let module = opts.module.is_some() || given("module");
    match (playbook, module) {
        (false, false) => return Err(RunError::BadOptions("give a playbook (-p) or a module (-m)".into())),
        (true, true) => return Err(RunError::BadOptions("-p and -m are mutually exclusive".into())),
        _ => {}
    }
    if let Some(pb) = &opts.playbook {
        let project = pdd.join("project");
        if !Path::new(pb).is_absolute() && project.is_dir() && !project.join(pb).exists() {
            return Err(bad(format!("playbook {pb} not found in {}", project.display())));
        }
    }
    Ok(pdd)
}

/// The kwargs line, with the keys `ansible-runner transmit` sends, in its order.
fn kwargs(opts: &RunOptions, ident: &str, pdd: &Path) -> Result<Map<String, Value>, RunError> {
    let inventory = match &opts.inventory {
        None => Value::Null,
        Some(inv) if Path::new(inv).is_absolute() => match Path::new(inv).strip_prefix(pdd) {
            Ok(rel) => json!(rel.to_string_lossy()),
            Err(_) => {
                return Err(RunError::BadOptions(format!(
                    "--inventory {inv} is outside the private data dir; the remote node cannot read it"
                )));
            }
        },
        Some(inv) => json!(inv),
    };
    let v = json!({
        "ident": ident,
        "binary": null,
        "playbook": opts.playbook,
        "module": opts.module,
        "module_args": opts.module_args,
        "host_pattern": opts.host_pattern,
        "verbosity": opts.verbosity,
        "quiet": false,
        "rotate_artifacts": 0,
        "json_mode": opts.json_mode,
        "omit_event_data": opts.omit_event_data,
        "only_failed_event_data": opts.only_failed_event_data,
        "inventory": inventory,
        "forks": opts.forks.map(|f| f.to_string()),
        "project_dir": null,
        "artifact_dir": null,
        "roles_path": null,
        "cmdline": opts.cmdline,
        "limit": opts.limit,
        "suppress_env_files": false,
    });
    match v {
        Value::Object(mut m) => {
            // Only when given, so a plain run's kwargs line stays `ansible-runner transmit`'s.
            if let Some(x) = &opts.extravars {
                m.insert("extravars".into(), Value::Object(x.clone()));
            }
            if let Some(e) = &opts.envvars {
                m.insert("envvars".into(), Value::Object(e.clone()));
            }
            for (k, v) in opts.kwargs.iter().flatten() {
                m.insert(k.clone(), v.clone());
            }
            Ok(m)
        }
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// Starts a private local node that runs the job itself (no peer, no daemon).
fn connect_local(req: &RunRequest) -> Result<(MeshClient, NodeId, tempfile::TempDir), RunError> {
    let opts = ClientOptions {
        receptor_peer: req.receptor_peer.clone(),
        receptor_node_id: req.receptor_node_id.clone(),
        tls: req.tls.clone(),
        // The job runs on this client's own node, which verifies nothing: nothing to sign.
        signer: None,
        ..ClientOptions::default()
    };
    let dir = tempfile::tempdir().map_err(|e| RunError::BadOptions(format!("temporary directory: {e}")))?;
    let client = MeshClient::detached(&opts)?;
    let mut reg = crate::work::Registry::default();
    let section = crate::config::AnsibleRunnerSection::default();
    crate::work::ansible::register(&mut reg, &section, Duration::from_secs(10));
    let service =
        crate::work::service::WorkService::new(client.node().clone(), reg, dir.path().to_path_buf());
    service.start();
    let target = client.node().id().clone();
    Ok((client, target, dir))
}

/// Packs the private data dir and streams the transmit stream into the job.
async fn send_transmit(
    pdd: PathBuf,
    kwargs: Map<String, Value>,
    mut writer: StreamWriter,
    progress: bool,
) -> Result<(), RunError> {
    let (mut rx, packer) = start_packer(pdd, kwargs, progress);
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = writer.write(chunk).await {
            return Err(RunError::BadOptions(format!("sending the job: {e}")));
        }
    }
    packer.await.map_err(|e| RunError::BadOptions(format!("packing task failed: {e}")))??;
    writer.finish(Bytes::new()).await;
    Ok(())
}

type Packer = tokio::task::JoinHandle<Result<(), runner::PackError>>;

/// Packs the private data dir into a transmit stream, chunk by chunk, on a blocking thread.
fn start_packer(pdd: PathBuf, kwargs: Map<String, Value>, progress: bool) -> (mpsc::Receiver<Bytes>, Packer) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let packer = tokio::task::spawn_blocking(move || -> Result<(), runner::PackError> {
        let mut tmp = tempfile::tempfile().map_err(runner::PackError::Stream)?;
        let bar = progress_bar(&pdd, progress);
        let mut tick = |n: u64| bar.as_ref().map_or((), |b| b.set_position(n));
        let size = runner::pack::zip_dir_excluding(&pdd, &mut tmp, &mut tick, &["artifacts"])?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        std::io::Seek::seek(&mut tmp, std::io::SeekFrom::Start(0)).map_err(runner::PackError::Stream)?;
        let mut out = ChannelWriter { tx, buf: Vec::with_capacity(CHUNK) };
        runner::write_transmit(&mut out, &kwargs, Some((&mut tmp, size)))
    });
    (rx, packer)
}

const CHUNK: usize = 64 * 1024;

/// Bridges the synchronous stream writer to the async job stream, chunk by chunk.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(chunk).map_err(|_| std::io::Error::other("job stream closed"))
    }
}

/// A progress bar for large directories when stderr is a terminal.
pub(super) fn progress_bar(pdd: &Path, wanted: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = dir_size(pdd);
    if total < 16 << 20 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("packing {bar:40} {bytes}/{total_bytes} {eta}")
    {
        bar.set_style(style);
    }
    Some(bar)
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// Turns the worker stream into output, callbacks and artifacts. Fed the stream's bytes
/// in order (however they were split or resumed), it sees each event exactly once.
pub(super) struct Receiver {
    node: NodeId,
    writer: ArtifactWriter,
    decoder: StreamDecoder,
    printer: RunPrinter,
    status: String,
    explanation: Option<String>,
}

impl Receiver {
    pub(super) fn new(node: &NodeId, artifact_dir: &Path, json_mode: bool) -> Result<Receiver, RunError> {
        let limits = DecodeLimits { max_zip: 16 << 30, ..DecodeLimits::default() };
        Ok(Receiver {
            node: node.clone(),
            writer: ArtifactWriter::new(artifact_dir.to_path_buf())?,
            decoder: StreamDecoder::new(limits),
            printer: RunPrinter::new(json_mode),
            status: String::from("unknown"),
            explanation: None,
        })
    }

    fn bad(&self, reason: String) -> RunError {
        RunError::Stream { node: self.node.clone(), reason }
    }

    /// The next bytes of the worker stream: prints output, calls back, writes artifacts.
    pub(super) fn feed(&mut self, data: &[u8], cb: &mut Callbacks) -> Result<(), RunError> {
        self.decoder.feed(data);
        while let Some(item) = self.decoder.next_item().map_err(|e| self.bad(e.to_string()))? {
            if let Item::Line { raw, value } = &item {
                if decode::kind(value) == LineKind::Status {
                    self.status = value["status"].as_str().unwrap_or("unknown").to_owned();
                    if self.status == "error" {
                        self.explanation = value["job_explanation"].as_str().map(str::to_owned);
                    }
                    call(&mut cb.status_handler, value);
                } else if decode::kind(value) == LineKind::Event {
                    call(&mut cb.event_handler, value);
                    self.writer.event(raw, value)?;
                    let mut text = String::new();
                    self.printer.line(raw, value, &mut text);
                    print(cb, &text);
                }
                continue;
            }
            self.writer.handle(&item)?;
        }
        Ok(())
    }

    /// Whether the worker stream's end (`eof`) has been seen.
    pub(super) fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// The final status and the worker's exit status, given how the job ended.
    pub(super) fn finish(mut self, result: JobResult) -> Result<(String, i32), RunError> {
        let unknown = self.status == "unknown";
        if let Some(reason) = self.explanation.take().or_else(|| result.error.clone().filter(|_| unknown)) {
            return Err(RunError::Worker { node: self.node.clone(), reason });
        }
        if !self.decoder.is_done() {
            // The stream was cut short: the executing node's own reason (a full disk, the
            // job process gone, …) says why, not the truncated stream.
            if let Some(reason) = result.error.clone() {
                return Err(RunError::Failed { node: self.node.clone(), reason });
            }
            self.decoder.finish().map_err(|e| self.bad(e.to_string()))?;
        }
        Ok((self.status, result.exit_status()))
    }
}

fn call(handler: &mut Option<Handler>, value: &Value) {
    if let Some(h) = handler.as_mut() {
        h(value);
    }
}

/// Writes what the run printed by now (nothing when it is empty) and flushes it.
fn print(cb: &mut Callbacks, text: &str) {
    let Some(out) = cb.output.as_mut() else { return };
    if text.is_empty() {
        return;
    }
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        // Output closed (e.g. piped into `head`): keep running, stop printing.
        cb.output = None;
    }
}

/// A refusal by the remote node is reported verbatim (it names the node and the reason).
fn remote_error(e: ClientError) -> RunError {
    match e {
        ClientError::Remote(reason) => RunError::Remote(reason),
        other => RunError::Client(other),
    }
}

fn read_rc(artifact_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(artifact_dir.join("rc")).ok()?.trim().parse().ok()
}

/// Keeps the `keep` most recent artifact directories.
fn rotate(artifacts: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(artifacts) else { return };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_dir().then(|| (m.modified().unwrap_or(std::time::UNIX_EPOCH), e.path()))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, old) in dirs.into_iter().skip(keep) {
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(dir = %old.display(), error = %e, "cannot rotate artifacts");
        }
    }
}
