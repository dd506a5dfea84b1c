//! `receptor run --via-receptor NODE` as a durable, resumable run: the job is a work unit
//! on NODE (submitted through the mesh to NODE's `control` service, or through the local
//! daemon's control socket), and the client follows its output by byte offset. A lost
//! link, a relay restart or a route change only interrupts the following: the client says
//! so, reconnects with bounded backoff and resumes from the byte it has, so the decoder
//! sees one continuous worker stream and every event reaches the handlers exactly once.
//!
//! The unit carries a lease (see `work::lease`): it stops when the client asks (cancel,
//! then release), at the client's `timeout`, or when no client has followed it for
//! longer than the lease. Detached runs ([`submit`]) are picked up by [`attach`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::run::{Callbacks, Receiver, RunError, RunOutcome, RunRequest};
use super::socket::{self, SocketUnits};
use super::{ClientError, ClientOptions, MeshClient};
use crate::control::client::MeshControl;
use crate::mesh::backoff::Backoff;
use crate::transport::PeerUrl;
use crate::wire::NodeId;
use crate::work::JobResult;
use crate::work::ansible::WORK_TYPE;
use crate::work::integrity::{IntegrityBudget, Judgement};
use crate::work::lease::DEFAULT_LEASE;
use crate::work::remote::{RemoteControl, RemoteError, RemoteOp, RemoteSubmit};
use crate::work::signing::{Grant, Op, Signer, payload_digest, string_params_digest};

mod attach_ref;
mod stop;
pub use attach_ref::{UnitRef, attach_options};
use stop::{stop_error, stop_signal};

/// How often the client polls for the unit's final state once the worker stream ended.
const FINAL_POLL: Duration = Duration::from_millis(10);
/// How long the client waits for the final state after the worker stream's end.
const FINAL_WAIT: Duration = Duration::from_secs(5);
/// How long cancelling and releasing may take before the lease is left to do it.
const RELEASE_WAIT: Duration = Duration::from_secs(15);
/// How long one request (open results, status) may go unanswered before it counts as a
/// lost connection.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// `f`, or `Unreachable` when it does not answer within [`ANSWER_WAIT`].
async fn answered<T>(f: impl std::future::Future<Output = Result<T, RemoteError>>) -> Result<T, RemoteError> {
    answered_within(ANSWER_WAIT, f).await
}

/// `f`, or `Unreachable` when it does not answer within `wait`.
async fn answered_within<T>(
    wait: Duration,
    f: impl std::future::Future<Output = Result<T, RemoteError>>,
) -> Result<T, RemoteError> {
    tokio::time::timeout(wait, f)
        .await
        .unwrap_or_else(|_| Err(RemoteError::Unreachable(format!("no answer within {wait:?}"))))
}

/// How the client reaches the unit: its own mesh node, or a local daemon's socket.
enum Entry {
    Mesh { client: MeshClient, peer: PeerUrl, ctl: MeshControl, signer: Option<Signer> },
    Socket(SocketUnits),
}

impl Entry {
    /// Joins the mesh (or picks the socket); over the mesh, `node` must be known.
    async fn open(req: &RunRequest, node: &NodeId) -> Result<Entry, RunError> {
        if let Some(sock) = &req.control_socket {
            if req.signer.is_some() {
                return Err(RunError::BadOptions(
                    "--signing-key signs runs over the mesh (--receptor-peer); through a local daemon, \
                     its [work.signing] key signs what it forwards"
                        .into(),
                ));
            }
            return Ok(Entry::Socket(SocketUnits(sock.clone())));
        }
        let opts = ClientOptions {
            receptor_peer: req.receptor_peer.clone(),
            receptor_node_id: req.receptor_node_id.clone(),
            tls: req.tls.clone(),
            ..ClientOptions::default()
        };
        let peer = match &opts.receptor_peer {
            Some(p) => p.clone(),
            None => super::DEFAULT_PEER.parse().expect("UNWRAP: the default peer URL is valid"),
        };
        let client = MeshClient::connect(&opts).await?;
        // Joined, the client holds the whole mesh database: an unknown node is reported now.
        let unknown = {
            let topology = client.node().topology().borrow().clone();
            (!topology.reachable.contains(node)).then(|| topology.unknown(node))
        };
        if let Some(e) = unknown {
            client.close().await;
            return Err(RunError::Client(ClientError::Open(e)));
        }
        let ctl = MeshControl {
            node: client.node().clone(),
            tls_only: req.tls.is_some(),
            streams: crate::control::client::StreamAuth::of(req.tls.is_some(), true),
        };
        Ok(Entry::Mesh { client, peer, ctl, signer: req.signer.clone() })
    }

    /// Whether this run's requests are signed.
    fn signs(&self) -> bool {
        matches!(self, Entry::Mesh { signer: Some(_), .. })
    }

    /// A one-use token for `op` on `node` (on `unit`, or for submitting the payload of
    /// digest `payload`), when the run is signed.
    fn sign(
        &self,
        node: &NodeId,
        op: Op,
        unit: Option<&str>,
        payload: Option<String>,
    ) -> Result<Option<String>, RunError> {
        let Entry::Mesh { client, signer: Some(signer), .. } = self else { return Ok(None) };
        let grant = Grant {
            node: node.to_string(),
            requester: Some(client.node().id().principal().to_string()),
            op,
            work_type: WORK_TYPE.to_owned(),
            params: (op == Op::Submit).then(|| string_params_digest(&Default::default())),
            payload,
            unit: unit.map(str::to_owned),
        };
        signer.token(&grant).map(Some).map_err(RunError::BadOptions)
    }

    fn control(&self) -> &dyn RemoteControl {
        match self {
            Entry::Mesh { ctl, .. } => ctl,
            Entry::Socket(s) => s,
        }
    }

    /// After a failure: if the client's own link into the mesh is gone, joins again.
    async fn repair(&self) -> Result<(), String> {
        let Entry::Mesh { client, peer, .. } = self else { return Ok(()) };
        if !client.node().topology().borrow().linked.is_empty() {
            return Ok(());
        }
        client.node().join(peer, Duration::from_secs(5)).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn close(self) {
        if let Entry::Mesh { client, .. } = self {
            client.close().await;
        }
    }
}

fn say(cb: &mut Callbacks, msg: &str) {
    match cb.notice_handler.as_mut() {
        Some(h) => h(msg),
        None => tracing::warn!("{msg}"),
    }
}

/// Retries an operation that failed for lack of a connection. Bounded: once the time
/// spent disconnected since the last progress exceeds `limit`, it gives up (so a
/// connection that keeps breaking before any byte arrives cannot loop forever).
struct Reconnect {
    backoff: Backoff,
    /// Disconnected since then.
    since: Option<Instant>,
    /// Time spent disconnected since the last progress, before `since`.
    lost: Duration,
    limit: Duration,
    /// Integrity failures in a row (bounded by `limits.integrity_attempts`' default).
    integrity: IntegrityBudget,
}

impl Reconnect {
    /// An attempt starts now.
    fn begin(&mut self, entry: &Entry) {
        self.integrity.begin(entry.control());
    }

    /// Judges a failed attempt (`progressed`: bytes arrived before it failed): the reason
    /// to retry with, or `Err` once a relay tampered `limits.integrity_attempts` times in a
    /// row (`work::integrity`): the run ends, loudly, with the failure and the path.
    async fn failed(
        &mut self,
        e: RemoteError,
        progressed: bool,
        entry: &Entry,
        node: &NodeId,
        cb: &mut Callbacks,
    ) -> Result<String, RunError> {
        match self.integrity.judge(entry.control(), node, e, progressed).await {
            Judgement::Final(why) => Err(RunError::Integrity(format!("work unit on {node}: {why}"))),
            Judgement::Retry(why) => {
                say(cb, &why);
                Ok(why)
            }
            Judgement::Other(e) => Ok(e.to_string()),
        }
    }

    fn new(limit: Duration) -> Reconnect {
        Reconnect {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            since: None,
            lost: Duration::ZERO,
            limit,
            integrity: IntegrityBudget::new(crate::limits::Limits::default().integrity_attempts),
        }
    }

    /// Waits before the next attempt; `Err` once `limit` has passed without a connection.
    async fn wait(
        &mut self,
        entry: &Entry,
        node: &NodeId,
        why: &str,
        cb: &mut Callbacks,
    ) -> Result<(), RunError> {
        let since = *self.since.get_or_insert_with(|| {
            say(cb, &format!("connection to {node} lost ({why}); reconnecting to {node}…"));
            Instant::now()
        });
        if self.lost + since.elapsed() > self.limit {
            return Err(RunError::Client(ClientError::Lost {
                node: node.clone(),
                reason: format!("no connection for {:?}: {why}", self.limit),
            }));
        }
        tokio::time::sleep(self.backoff.next_delay()).await;
        if let Err(e) = entry.repair().await {
            tracing::debug!("rejoining the mesh: {e}");
        }
        Ok(())
    }

    fn connected(&mut self, node: &NodeId, offset: u64, cb: &mut Callbacks) {
        if let Some(since) = self.since.take() {
            self.lost += since.elapsed();
            say(cb, &format!("reconnected to {node}; resuming at byte {offset}"));
        }
    }

    /// How long the next attempt may take: never past the point where [`Reconnect::wait`]
    /// gives up, so a client learns of a dead path within its lease.
    fn budget(&self) -> Duration {
        match self.since {
            Some(since) => self
                .limit
                .saturating_sub(self.lost + since.elapsed())
                .clamp(Duration::from_millis(100), ANSWER_WAIT),
            None => ANSWER_WAIT,
        }
    }

    /// Bytes arrived: the connection works.
    fn progress(&mut self) {
        self.lost = Duration::ZERO;
        self.backoff.reset();
    }
}

/// Packs the private data dir into a transmit stream file (resubmittable as it is).
async fn pack(
    pdd: PathBuf,
    kwargs: Map<String, Value>,
    progress: bool,
) -> Result<tempfile::NamedTempFile, RunError> {
    tokio::task::spawn_blocking(move || -> Result<tempfile::NamedTempFile, RunError> {
        let mut zip = tempfile::tempfile().map_err(crate::runner::PackError::Stream)?;
        let bar = super::run::progress_bar(&pdd, progress);
        let mut tick = |n: u64| bar.as_ref().map_or((), |b| b.set_position(n));
        let size = crate::runner::pack::zip_dir_excluding(&pdd, &mut zip, &mut tick, &["artifacts"])?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        std::io::Seek::seek(&mut zip, std::io::SeekFrom::Start(0))
            .map_err(crate::runner::PackError::Stream)?;
        let file = tempfile::NamedTempFile::new().map_err(crate::runner::PackError::Stream)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, file.as_file());
        crate::runner::write_transmit(&mut out, &kwargs, Some((&mut zip, size)))?;
        std::io::Write::flush(&mut out).map_err(crate::runner::PackError::Stream)?;
        drop(out);
        Ok(file)
    })
    .await
    .map_err(|e| RunError::BadOptions(format!("packing task failed: {e}")))?
}

/// Creates the unit on `node` with the transmit stream as its payload; retried while
/// `node` cannot be reached. `created` learns the unit ID as soon as it exists.
async fn submit_unit(
    entry: &Entry,
    node: &NodeId,
    payload: &Path,
    lease: Duration,
    created: &Mutex<Option<String>>,
    cb: &mut Callbacks,
) -> Result<String, RunError> {
    let mut retry = Reconnect::new(lease);
    let digest = match entry.signs() {
        true => Some(
            payload_digest(payload.to_path_buf())
                .await
                .map_err(|e| RunError::BadOptions(format!("signing the payload: {e}")))?,
        ),
        false => None,
    };
    loop {
        retry.begin(entry);
        let req = RemoteSubmit {
            work_type: WORK_TYPE.to_owned(),
            params: Default::default(),
            stdin: payload.to_path_buf(),
            arrival: None,
            signature: entry.sign(node, Op::Submit, None, digest.clone())?,
            lease: Some(lease),
        };
        let record = |id: &str| *created.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_owned());
        match entry.control().submit(node, req, &record).await {
            Ok(id) => return Ok(id),
            Err(RemoteError::Refused(reason) | RemoteError::UnknownUnit(reason)) => {
                return Err(refused(node, reason));
            }
            Err(e @ (RemoteError::Unreachable(_) | RemoteError::Integrity(_) | RemoteError::Sequence(_))) => {
                let why = retry.failed(e, false, entry, node, cb).await?;
                // A unit created with a cut-off payload never runs: drop it, submit again.
                let half = created.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(id) = half {
                    let signature = entry.sign(node, Op::Release, Some(&id), None)?;
                    let _ = entry.control().operate(node, &id, RemoteOp::ForceRelease, signature).await;
                }
                retry.wait(entry, node, &why, cb).await?;
            }
        }
    }
}

/// A refused submission, worded as the job stream's refusals were.
fn refused(node: &NodeId, reason: String) -> RunError {
    let missing = reason.strip_prefix(&format!("unknown work type {WORK_TYPE}: "));
    match missing {
        Some(why) => RunError::Remote(format!("node {node} has no {WORK_TYPE} worker: {why}")),
        None => RunError::Worker { node: node.clone(), reason },
    }
}

/// Follows the unit's output from byte 0 into `recv`, resuming after any interruption;
/// returns once the worker stream is complete.
async fn follow(
    entry: &Entry,
    at: &UnitRef,
    recv: &mut Receiver,
    lease: Duration,
    cb: &mut Callbacks,
) -> Result<JobResult, RunError> {
    let ctl = entry.control();
    let (node, unit) = (&at.node, at.unit.as_str());
    let gone = |msg: String| RunError::Remote(format!("work unit {at}: {msg}"));
    let mut retry = Reconnect::new(lease);
    let mut have = 0u64;
    loop {
        retry.begin(entry);
        let before = have;
        let signature = entry.sign(node, Op::Results, Some(unit), None)?;
        let why = match answered_within(retry.budget(), ctl.results(node, unit, have, signature)).await {
            Ok(mut stream) => {
                retry.connected(node, have, cb);
                let ended = loop {
                    match stream.next().await {
                        Ok(Some(data)) => {
                            have += data.len() as u64;
                            retry.progress();
                            recv.feed(&data, cb)?;
                            if recv.is_done() {
                                break Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                match ended {
                    Ok(()) if recv.is_done() => return Ok(final_result(ctl, node, unit).await),
                    Ok(()) => match answered(ctl.status(node, unit)).await {
                        Ok(st) if st.state.is_final() && have >= st.stdout_size => {
                            return Ok(socket::job_result(&st));
                        }
                        Ok(_) => "the results stream ended early".to_owned(),
                        Err(RemoteError::Refused(msg) | RemoteError::UnknownUnit(msg)) => {
                            return Err(gone(msg));
                        }
                        Err(
                            e @ (RemoteError::Unreachable(_)
                            | RemoteError::Integrity(_)
                            | RemoteError::Sequence(_)),
                        ) => retry.failed(e, have > before, entry, node, cb).await?,
                    },
                    Err(e) => retry.failed(e, have > before, entry, node, cb).await?,
                }
            }
            Err(RemoteError::Refused(msg) | RemoteError::UnknownUnit(msg)) => return Err(gone(msg)),
            Err(e @ (RemoteError::Unreachable(_) | RemoteError::Integrity(_) | RemoteError::Sequence(_))) => {
                retry.failed(e, false, entry, node, cb).await?
            }
        };
        retry.wait(entry, node, &why, cb).await?;
    }
}

/// The unit's outcome once its worker stream is complete: the worker exits right after,
/// so its final state follows within moments (an unfinished one counts as success: the
/// stream itself carries the playbook's status and rc).
async fn final_result(ctl: &dyn RemoteControl, node: &NodeId, unit: &str) -> JobResult {
    let start = Instant::now();
    while start.elapsed() < FINAL_WAIT {
        match answered(ctl.status(node, unit)).await {
            Ok(st) if st.state.is_final() => return socket::job_result(&st),
            Ok(_) => tokio::time::sleep(FINAL_POLL).await,
            Err(_) => break,
        }
    }
    JobResult { exit_code: Some(0), ..JobResult::default() }
}

/// Cancels (if still running) and releases the unit, retrying for a while; what is left
/// undone, the unit's lease does.
async fn release(entry: &Entry, at: &UnitRef, cb: &mut Callbacks) {
    let attempts = release_attempts(entry, at, cb);
    if tokio::time::timeout(RELEASE_WAIT * 2, attempts).await.is_err() {
        say(cb, &format!("could not release work unit {at} (no answer); its lease will"));
    }
}

/// [`release`], unless the run ended because its node stayed unreachable for a whole
/// lease: then nothing would answer, and the node releases the unit itself.
async fn release_unless_lost<T>(
    entry: &Entry,
    at: &UnitRef,
    outcome: &Result<T, RunError>,
    cb: &mut Callbacks,
) {
    if !matches!(outcome, Err(RunError::Client(ClientError::Lost { .. }))) {
        release(entry, at, cb).await;
    }
}

async fn release_attempts(entry: &Entry, at: &UnitRef, cb: &mut Callbacks) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    let start = Instant::now();
    loop {
        let signature = entry.sign(&at.node, Op::Release, Some(&at.unit), None).unwrap_or(None);
        match entry.control().operate(&at.node, &at.unit, RemoteOp::Release, signature).await {
            Ok(()) => return,
            Err(RemoteError::UnknownUnit(_)) => return,
            Err(e) if start.elapsed() > RELEASE_WAIT => {
                say(cb, &format!("could not release work unit {at} ({e}); its lease will"));
                return;
            }
            Err(RemoteError::Refused(msg)) => {
                say(cb, &format!("releasing work unit {at}: {msg}"));
                return;
            }
            Err(RemoteError::Unreachable(_) | RemoteError::Integrity(_) | RemoteError::Sequence(_)) => {
                tokio::time::sleep(backoff.next_delay()).await;
                let _ = entry.repair().await;
            }
        }
    }
}

/// Submits the run and follows it to the end; interrupted (Ctrl-C, SIGTERM) or timed
/// out, the unit is cancelled and released.
pub(super) async fn run_unit(
    req: &RunRequest,
    target: &NodeId,
    pdd: &Path,
    kwargs: Map<String, Value>,
    artifact_dir: &Path,
    cb: &mut Callbacks,
) -> Result<(String, i32), RunError> {
    let lease = req.lease.unwrap_or(DEFAULT_LEASE);
    // Signals are caught from before the unit exists, so it is always released.
    let stop = stop_signal(req.timeout);
    tokio::pin!(stop);
    let payload = pack(pdd.to_path_buf(), kwargs, cb.progress).await?;
    let entry = tokio::select! {
        e = Entry::open(req, target) => e?,
        s = &mut stop => return Err(stop_error(s)),
    };
    let created = Mutex::new(None);
    let submitted = tokio::select! {
        r = submit_unit(&entry, target, payload.path(), lease, &created, cb) => r,
        s = &mut stop => Err(stop_error(s)),
    };
    let unit = match submitted {
        Ok(unit) => unit,
        Err(e) => {
            let half = created.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(unit) = half {
                release(&entry, &UnitRef { node: target.clone(), unit }, cb).await;
            }
            entry.close().await;
            return Err(e);
        }
    };
    drop(payload);
    let at = UnitRef { node: target.clone(), unit };
    let ident = artifact_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let as_node = match &entry {
        Entry::Mesh { client, .. } => attach_options(req, Some(&client.node().id().principal())),
        Entry::Socket(_) => String::new(),
    };
    say(
        cb,
        &format!(
            "running as work unit {at} (lease {}); to follow it from another client: --attach {at} -i {ident}{as_node}",
            humantime::format_duration(lease)
        ),
    );
    let mut recv = Receiver::new(target, artifact_dir, req.options.json_mode)?;
    let outcome = tokio::select! {
        r = follow(&entry, &at, &mut recv, lease, cb) => r,
        s = &mut stop => {
            say(cb, &format!("stopping: cancelling and releasing work unit {at}"));
            Err(stop_error(s))
        }
    };
    let outcome = match outcome {
        Ok(result) => recv.finish(result),
        Err(e) => Err(e),
    };
    release_unless_lost(&entry, &at, &outcome, cb).await;
    entry.close().await;
    outcome
}

/// Submits the run and returns at once (`--detach`); [`attach`] follows it later. The
/// unit's lease runs from now: attach within it.
pub async fn submit(req: &RunRequest) -> Result<UnitRef, RunError> {
    let (target, pdd, kwargs, _ident) = super::run::prepare_remote(req)?;
    let lease = req.lease.unwrap_or(DEFAULT_LEASE);
    let payload = pack(pdd, kwargs, false).await?;
    let entry = Entry::open(req, &target).await?;
    let created = Mutex::new(None);
    let mut cb = Callbacks::default();
    let r = submit_unit(&entry, &target, payload.path(), lease, &created, &mut cb).await;
    entry.close().await;
    Ok(UnitRef { node: target, unit: r? })
}

/// Follows a submitted run from its start: prints its output, writes the artifacts
/// under `PDD/artifacts/<ident>/` (`req.options.ident` must be the run's ident), releases
/// the unit and returns the playbook's outcome. Reach it the way it was submitted (the
/// same local daemon socket, or the mesh under the same `receptor_node_id`).
pub async fn attach(req: &RunRequest, at: &UnitRef, mut cb: Callbacks) -> Result<RunOutcome, RunError> {
    let Some(ident) = req.options.ident.clone() else {
        return Err(RunError::BadOptions("attaching needs the run's ident (-i)".into()));
    };
    let pdd = req.options.private_data_dir.canonicalize().map_err(|e| RunError::BadPdd {
        path: req.options.private_data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let lease = req.lease.unwrap_or(DEFAULT_LEASE);
    let artifact_dir = pdd.join("artifacts").join(&ident);
    let stop = stop_signal(req.timeout);
    tokio::pin!(stop);
    let entry = Entry::open(req, &at.node).await?;
    let mut recv = Receiver::new(&at.node, &artifact_dir, req.options.json_mode)?;
    let outcome = tokio::select! {
        r = follow(&entry, at, &mut recv, lease, &mut cb) => r,
        s = &mut stop => Err(stop_error(s)),
    };
    let outcome = match outcome {
        Ok(result) => recv.finish(result),
        Err(e) => Err(e),
    };
    release_unless_lost(&entry, at, &outcome, &mut cb).await;
    entry.close().await;
    let status = outcome?;
    Ok(super::run::finish(&req.options, &pdd, status, ident, artifact_dir))
}
