//! Durable work units, as the Receptor control protocol knows them: each unit is a
//! directory under `<data_dir>/units/<ID>/` holding its `status`, `stdin` and `stdout`, so
//! a unit outlives the connection that created it and the daemon that ran it.
//!
//! A local unit runs under a detached supervisor process (`receptord --supervise-unit`)
//! that owns the job's process tree, writes its output straight into `stdout` and records
//! the outcome in `status`; the daemon only watches. If the daemon dies, the supervisor
//! carries on and a restarted daemon reattaches; if both die, the restart says so in the
//! unit's status and keeps the output written so far. Remote units (see [`super::remote`])
//! mirror a unit on another node into the same layout.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::authz::Authorization;
use super::remote::{RemoteControl, RemoteUnit};
use super::signing::{Signer, Verifier};
use super::{Registry, UnitPlan};
use crate::wire::NodeId;

/// Length of the unit IDs this node makes (letters and digits, as Go Receptor's).
pub const UNIT_ID_LEN: usize = 8;
/// Longest unit ID accepted from anyone (IDs name directories: letters and digits only).
pub const MAX_UNIT_ID: usize = 64;
/// Largest `status` or `unit.json` file read back from disk.
const MAX_META_FILE: u64 = 1 << 20;
/// How often the daemon looks at a running unit's status.
pub const MONITOR_TICK: Duration = Duration::from_millis(250);
const FOLLOW_CHUNK: usize = 256 * 1024;

/// A unit's state, with Go Receptor's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum State {
    Pending = 0,
    Running = 1,
    Succeeded = 2,
    Failed = 3,
    Canceled = 4,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "Pending",
            State::Running => "Running",
            State::Succeeded => "Succeeded",
            State::Failed => "Failed",
            State::Canceled => "Canceled",
        }
    }

    /// Whether the unit will not change any more. Unlike Go Receptor, Canceled counts:
    /// `work results` on a cancelled unit ends instead of hanging.
    pub fn is_final(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Canceled)
    }
}

impl From<State> for u8 {
    fn from(s: State) -> u8 {
        s as u8
    }
}

impl TryFrom<u8> for State {
    type Error = String;
    fn try_from(n: u8) -> Result<State, String> {
        Ok(match n {
            0 => State::Pending,
            1 => State::Running,
            2 => State::Succeeded,
            3 => State::Failed,
            4 => State::Canceled,
            n => return Err(format!("unknown unit state {n}")),
        })
    }
}

/// The `status` file, field for field as Go Receptor writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    #[serde(rename = "State")]
    pub state: State,
    #[serde(rename = "Detail")]
    pub detail: String,
    #[serde(rename = "StdoutSize")]
    pub stdout_size: u64,
    #[serde(rename = "WorkType")]
    pub work_type: String,
    #[serde(rename = "ExtraData")]
    pub extra: Value,
}

impl UnitStatus {
    fn new(work_type: &str, detail: &str, extra: Value) -> UnitStatus {
        UnitStatus {
            state: State::Pending,
            detail: detail.to_owned(),
            stdout_size: 0,
            work_type: work_type.to_owned(),
            extra,
        }
    }
}

/// What a unit is, stored as `unit.json` when it is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnitKind {
    Local(LocalUnit),
    Remote(RemoteUnit),
}

/// A unit this node runs itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalUnit {
    pub work_type: String,
    /// The parameter string shown in `ExtraData.Params`.
    pub params: String,
    pub plan: UnitPlan,
    /// Who asked for it: this node (control socket) or a node of the mesh.
    pub submitter: NodeId,
    /// Released once no client has been attached for this long (see [`super::lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Duration>,
}

/// Who is speaking on a control session, for authorization and signature checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The local Unix control socket: trusted, as in Go Receptor.
    Socket,
    /// The TCP (or TLS) control listener: full control, but signed work is verified.
    Network,
    /// A control session opened over the mesh by this node.
    Mesh(NodeId),
}

/// A `work submit`, parsed.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    /// `None`: this node.
    pub node: Option<NodeId>,
    pub work_type: String,
    /// Every work parameter (`params` and any others, `secret_*` included).
    pub params: BTreeMap<String, String>,
    pub tls_client: Option<String>,
    pub ttl: Option<Duration>,
    pub sign_work: bool,
    pub signature: Option<String>,
    /// Release the unit once no client has been attached for this long.
    pub lease: Option<Duration>,
}

/// How `start` went.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    Started,
    /// A remote unit whose node is not reachable yet; it is submitted when it is.
    Submitted,
}

/// How a cancel or release went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A remote unit whose node could not be told yet; retried in the background.
    Pending,
}

/// Why a unit operation failed. The messages are what the control protocol sends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("unknown work unit {0}")]
    Unknown(String),
    #[error("invalid work unit ID {0:?}: unit IDs are 1-64 letters and digits")]
    BadId(String),
    #[error("unknown work type {0}")]
    UnknownWorkType(String),
    #[error("{0}")]
    Refused(String),
    #[error("ttl option is intended for remote work only")]
    TtlLocal,
    #[error("cannot send secrets over a non-TLS connection")]
    SecretsInClear,
    #[error("{0}")]
    Signature(String),
    #[error("{0}")]
    Io(String),
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> UnitError {
    let msg = format!("{what} {}", path.display());
    move |e| UnitError::Io(format!("{msg}: {e}"))
}

/// One unit in memory.
pub struct Unit {
    pub id: String,
    dir: PathBuf,
    status: watch::Sender<UnitStatus>,
    kind: Mutex<UnitKind>,
    /// Stops the unit's monitor or remote driver (release).
    pub(super) stop: CancellationToken,
    /// Set once a supervisor process was started for it (the daemon then only reads).
    supervised: AtomicBool,
    /// Serialises status writes.
    write_lock: Mutex<()>,
    /// A background retry of a remote cancel or release is running.
    pub(super) retrying: AtomicBool,
    releasing: AtomicBool,
    /// Clients attached, for the unit's lease.
    pub(super) lease: Arc<super::lease::LeaseState>,
}

impl Unit {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stdin_path(&self) -> PathBuf {
        self.dir.join("stdin")
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join("stdout")
    }

    pub fn status(&self) -> UnitStatus {
        self.status.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<UnitStatus> {
        self.status.subscribe()
    }

    pub fn kind(&self) -> UnitKind {
        self.kind.lock().map(|k| k.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Changes `unit.json` (memory and disk, in one step: concurrent updates never
    /// leave an older copy on disk).
    pub(super) fn update_kind(&self, f: impl FnOnce(&mut UnitKind)) -> Result<(), UnitError> {
        let mut k = self.kind.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut k);
        write_json(&self.dir.join("unit.json"), &*k)
    }

    /// Records a new status (memory and disk).
    pub(super) fn set_status(&self, st: UnitStatus) -> Result<(), UnitError> {
        self.update_status(|s| *s = st)
    }

    /// Publishes a change to followers without writing it to disk (yet).
    pub(super) fn status_in_memory(&self, f: impl FnOnce(&mut UnitStatus)) {
        self.status.send_modify(f);
    }

    /// Changes the status (memory and disk, serialised with other writers).
    pub(super) fn update_status(&self, f: impl FnOnce(&mut UnitStatus)) -> Result<(), UnitError> {
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut snapshot = None;
        self.status.send_modify(|st| {
            f(st);
            snapshot = Some(st.clone());
        });
        match snapshot {
            Some(st) => write_json(&self.dir.join("status"), &st),
            None => Ok(()),
        }
    }

    /// Re-reads `status` from disk (written by the supervisor), publishing changes.
    fn refresh(&self) -> Option<UnitStatus> {
        let st = read_status(&self.dir)?;
        if *self.status.borrow() != st {
            self.status.send_replace(st.clone());
        }
        Some(st)
    }

    pub fn is_releasing(&self) -> bool {
        self.releasing.load(Ordering::SeqCst)
    }

    /// Counts a client as attached (for the lease) while the guard lives.
    pub fn attach(&self) -> super::lease::Attached {
        self.lease.attach()
    }
}

/// Settings for the unit store.
#[derive(Clone)]
pub struct UnitsConfig {
    pub node: NodeId,
    /// `<data_dir>/units`.
    pub root: PathBuf,
    /// The `receptord` executable that supervises units.
    pub supervisor_exe: PathBuf,
    /// Completed units older than this are released (`None`: never).
    pub retention: Option<Duration>,
    pub signer: Option<Signer>,
    pub verifier: Option<Verifier>,
    /// How long a cancelled unit's processes get before SIGKILL (plus margin to wait).
    pub cancel_wait: Duration,
    /// Units one other node may hold here at once (`limits.units_per_node`).
    pub units_per_node: usize,
    /// Largest payload of one unit (`limits.max_payload`).
    pub max_payload: u64,
}

/// The unit store of one node.
#[derive(Clone)]
pub struct Units {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) cfg: RwLock<UnitsConfig>,
    pub(super) node: NodeId,
    root: PathBuf,
    registry: Arc<RwLock<Registry>>,
    authz: Arc<RwLock<Authorization>>,
    pub(super) remote: Arc<dyn RemoteControl>,
    units: Mutex<BTreeMap<String, Arc<Unit>>>,
    pub(super) tracker: TaskTracker,
    pub(super) cancel: CancellationToken,
}

impl Units {
    /// Opens the store, creating `root`, and recovers every unit found there: finished ones
    /// are kept, running ones whose supervisor is alive are reattached, the rest are marked
    /// Failed with the reason. Remote units resume mirroring.
    pub fn open(
        cfg: UnitsConfig,
        registry: Arc<RwLock<Registry>>,
        authz: Arc<RwLock<Authorization>>,
        remote: Arc<dyn RemoteControl>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Units, UnitError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.root)
            .map_err(io_err("creating", &cfg.root))?;
        let units = Units {
            inner: Arc::new(Inner {
                node: cfg.node.clone(),
                root: cfg.root.clone(),
                cfg: RwLock::new(cfg),
                registry,
                authz,
                remote,
                units: Mutex::default(),
                tracker,
                cancel,
            }),
        };
        units.recover()?;
        units.spawn_retention();
        Ok(units)
    }

    /// Replaces the reloadable settings (signing keys, retention).
    pub fn reconfigure(&self, cfg: UnitsConfig) {
        if let Ok(mut c) = self.inner.cfg.write() {
            *c = cfg;
        }
    }

    /// Largest payload of one unit (`limits.max_payload`).
    pub fn max_payload(&self) -> u64 {
        self.config().max_payload
    }

    pub(super) fn config(&self) -> UnitsConfig {
        self.inner.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether work type `name` requires signed submissions.
    pub fn is_secure(&self, name: &str) -> bool {
        self.inner.registry.read().map(|r| r.secure(name)).unwrap_or(false)
    }

    fn recover(&self) -> Result<(), UnitError> {
        let dir = std::fs::read_dir(&self.inner.root).map_err(io_err("reading", &self.inner.root))?;
        for entry in dir.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if valid_id(&id).is_err() || !entry.path().is_dir() {
                continue;
            }
            match self.recover_one(&id, &entry.path()) {
                Ok(()) => {}
                Err(e) => tracing::warn!(unit = %id, "cannot recover work unit: {e}"),
            }
        }
        Ok(())
    }

    fn recover_one(&self, id: &str, dir: &Path) -> Result<(), UnitError> {
        let kind: UnitKind = read_json(&dir.join("unit.json"))
            .ok_or_else(|| UnitError::Io("unit.json missing or unreadable".into()))?;
        let work_type = match &kind {
            UnitKind::Local(l) => l.work_type.clone(),
            UnitKind::Remote(_) => "remote".to_owned(),
        };
        let mut status = read_status(dir).unwrap_or_else(|| {
            let mut st = UnitStatus::new(&work_type, "", Value::Null);
            st.state = State::Failed;
            st.detail = "status file missing or unreadable at restart".into();
            st
        });
        let size = file_len(&dir.join("stdout"));
        let unit = self.insert(id, dir, kind.clone(), status.clone());
        super::lease::spawn_watch(self.clone(), unit.clone());
        match kind {
            UnitKind::Remote(r) => {
                let has_remote = !r.remote_unit_id.is_empty();
                if status.state == State::Pending && status.detail == "Waiting for Input Data" {
                    // Its payload never finished arriving: never send a truncated one.
                    status.state = State::Failed;
                    status.detail = "Pending at restart".into();
                    unit.set_status(status)?;
                    return Ok(());
                }
                // A cancel or release that had not reached the remote node is retried.
                if r.local_released && !has_remote {
                    self.forget(&unit, true)?;
                    return Ok(());
                }
                let unsettled = r.local_released
                    || (r.local_cancelled && (!r.remote_started || !status.state.is_final()));
                if has_remote && unsettled {
                    super::remote::spawn_retry(self.clone(), unit.clone());
                }
                if !status.state.is_final() && !r.local_released && (r.remote_started || !r.local_cancelled) {
                    tracing::info!(unit = %id, "resuming remote work unit");
                    super::remote::spawn_driver(self.clone(), unit);
                }
            }
            UnitKind::Local(_) if status.state.is_final() => {}
            UnitKind::Local(_) if supervisor_alive(dir) => {
                tracing::info!(unit = %id, "reattached to a running work unit");
                unit.supervised.store(true, Ordering::SeqCst);
                self.spawn_monitor(unit, None);
            }
            UnitKind::Local(_) if dir.join("cancel").exists() => {
                status.state = State::Canceled;
                status.detail = "Canceled".into();
                status.stdout_size = size;
                status.extra = Value::Null;
                unit.set_status(status)?;
            }
            UnitKind::Local(_) => {
                status.detail = if status.state == State::Pending {
                    "Pending at restart".into()
                } else {
                    "receptord restarted and the unit's process was gone; output written before is kept"
                        .into()
                };
                status.state = State::Failed;
                status.stdout_size = size;
                status.extra = Value::Null;
                tracing::warn!(unit = %id, detail = %status.detail, "work unit failed at restart");
                unit.set_status(status)?;
            }
        }
        Ok(())
    }

    fn insert(&self, id: &str, dir: &Path, kind: UnitKind, status: UnitStatus) -> Arc<Unit> {
        let unit = Arc::new(Unit {
            id: id.to_owned(),
            dir: dir.to_path_buf(),
            status: watch::Sender::new(status),
            kind: Mutex::new(kind),
            stop: self.inner.cancel.child_token(),
            supervised: AtomicBool::new(false),
            write_lock: Mutex::new(()),
            retrying: AtomicBool::new(false),
            releasing: AtomicBool::new(false),
            lease: Arc::default(),
        });
        self.lock().insert(id.to_owned(), unit.clone());
        unit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Unit>>> {
        self.inner.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds a unit by ID (validated first: IDs become paths).
    pub fn get(&self, id: &str) -> Result<Arc<Unit>, UnitError> {
        valid_id(id)?;
        self.lock().get(id).cloned().ok_or_else(|| UnitError::Unknown(id.to_owned()))
    }

    /// How many units are not final yet.
    pub fn active(&self) -> usize {
        self.lock().values().filter(|u| !u.status().state.is_final()).count()
    }

    /// Whether `origin` may act on units of `work_type`.
    fn authorize(&self, origin: &Origin, work_type: &str) -> Result<(), UnitError> {
        let Origin::Mesh(peer) = origin else { return Ok(()) };
        let ok = self.inner.authz.read().map(|a| a.allows(peer, work_type)).unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(UnitError::Refused(format!(
                "node {} does not allow {peer} to run {work_type:?}",
                self.inner.node
            )))
        }
    }

    /// Checks a unit operation's signature, as Go Receptor's `processSignature` does:
    /// required (and checked) for secure work types unless the request came through the
    /// local socket; refused when not expected.
    pub fn check_signature(
        &self,
        origin: &Origin,
        work_type: &str,
        remote_sign_work: bool,
        signature: Option<&str>,
    ) -> Result<(), UnitError> {
        let should = remote_sign_work || self.is_secure(work_type);
        let signature = signature.filter(|s| !s.is_empty());
        if !should {
            return match signature {
                Some(_) => Err(UnitError::Signature("work type did not expect a signature".into())),
                None => Ok(()),
            };
        }
        if *origin == Origin::Socket {
            return Ok(());
        }
        let Some(token) = signature else {
            return Err(UnitError::Signature("could not verify signature: signature is empty".into()));
        };
        let cfg = self.config();
        let Some(verifier) = cfg.verifier.as_ref() else {
            return Err(UnitError::Signature(
                "could not verify signature: verifying key not specified".into(),
            ));
        };
        verifier.verify(token, self.inner.node.as_str()).map_err(UnitError::Signature)
    }

    /// Validates a submission and creates its unit (status Pending, empty `stdin`).
    pub fn create(&self, origin: &Origin, req: SubmitRequest) -> Result<Arc<Unit>, UnitError> {
        if let Origin::Mesh(peer) = origin {
            let quota = self.config().units_per_node;
            let held = self.lock().values().filter(|u| self.owned_by(origin, u)).count();
            if *peer != self.inner.node && held >= quota {
                return Err(UnitError::Refused(format!(
                    "node {peer} holds {held} work units on {}, the most limits.units_per_node allows; \
                     release some first",
                    self.inner.node
                )));
            }
        }
        let remote_node = req.node.clone().filter(|n| *n != self.inner.node);
        match remote_node {
            None => self.create_local(origin, req),
            Some(node) => self.create_remote(origin, node, req),
        }
    }

    fn create_local(&self, origin: &Origin, req: SubmitRequest) -> Result<Arc<Unit>, UnitError> {
        if req.ttl.is_some() {
            return Err(UnitError::TtlLocal);
        }
        self.check_signature(origin, &req.work_type, false, req.signature.as_deref())?;
        let wt = {
            let reg = self.inner.registry.read().map_err(|_| UnitError::Io("registry poisoned".into()))?;
            match reg.get(&req.work_type) {
                Some(wt) => wt,
                None => {
                    return Err(match reg.absent_reason(&req.work_type) {
                        Some(why) => {
                            UnitError::Refused(format!("unknown work type {}: {why}", req.work_type))
                        }
                        None => UnitError::UnknownWorkType(req.work_type.clone()),
                    });
                }
            }
        };
        self.authorize(origin, &req.work_type)?;
        let params = req.params.get("params").map(String::as_str).unwrap_or("");
        let (plan, shown) = wt.unit_plan(params).map_err(UnitError::Refused)?;
        let submitter = match origin {
            Origin::Socket | Origin::Network => self.inner.node.clone(),
            Origin::Mesh(n) => n.clone(),
        };
        let kind = UnitKind::Local(LocalUnit {
            work_type: req.work_type.clone(),
            params: shown.clone(),
            plan,
            submitter,
            lease: req.lease,
        });
        let status =
            UnitStatus::new(&req.work_type, "Waiting for Input Data", json!({"Pid": 0, "Params": shown}));
        self.allocate(kind, status)
    }

    fn create_remote(
        &self,
        origin: &Origin,
        node: NodeId,
        req: SubmitRequest,
    ) -> Result<Arc<Unit>, UnitError> {
        // A node relaying work for someone else would hide who asked: only the local
        // socket may create remote units.
        if *origin != Origin::Socket {
            return Err(UnitError::Refused(
                "remote work units can only be created from the local control socket".into(),
            ));
        }
        if let Some(name) = req.tls_client.as_deref().filter(|n| !n.is_empty()) {
            return Err(UnitError::Refused(format!(
                "unknown TLS config {name} (receptord secures mesh links themselves: configure [tls] and use receptors:// links)"
            )));
        }
        if req.params.keys().any(|k| k.to_ascii_lowercase().starts_with("secret_"))
            && !self.inner.remote.links_are_tls()
        {
            return Err(UnitError::SecretsInClear);
        }
        if req.sign_work && self.config().signer.is_none() {
            return Err(UnitError::Signature("cannot sign work: signing key is empty".into()));
        }
        let expiration = req.ttl.map(|ttl| SystemTime::now() + ttl);
        let remote = RemoteUnit {
            node,
            work_type: req.work_type,
            params: req.params,
            sign_work: req.sign_work,
            expiration,
            remote_unit_id: String::new(),
            remote_started: false,
            local_cancelled: false,
            local_released: false,
            lease: req.lease,
        };
        let status = UnitStatus::new("remote", "Waiting for Input Data", remote.extra_data());
        self.allocate(UnitKind::Remote(remote), status)
    }

    fn allocate(&self, kind: UnitKind, status: UnitStatus) -> Result<Arc<Unit>, UnitError> {
        for _ in 0..100 {
            let id = new_id();
            let dir = self.inner.root.join(&id);
            if self.lock().contains_key(&id) {
                continue;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("creating", &dir)(e)),
            }
            write_json(&dir.join("unit.json"), &kind)?;
            write_json(&dir.join("status"), &status)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join("stdin"))
                .map_err(io_err("creating", &dir.join("stdin")))?;
            let unit = self.insert(&id, &dir, kind, status);
            tracing::info!(unit = %id, work_type = %unit.status().work_type, "work unit created");
            super::lease::spawn_watch(self.clone(), unit.clone());
            return Ok(unit);
        }
        Err(UnitError::Io("could not find a free unit ID".into()))
    }

    /// Records that the payload could not be read.
    pub fn input_failed(&self, unit: &Unit, why: &str) {
        let _ = unit.update_status(|st| {
            st.state = State::Failed;
            st.detail = format!("Error reading input data: {why}");
        });
    }

    /// Starts a unit whose `stdin` is complete.
    pub fn start(&self, unit: &Arc<Unit>) -> Result<Started, UnitError> {
        if unit.status().state != State::Pending {
            return Err(UnitError::Refused(format!(
                "work unit {} is {}, not waiting to start",
                unit.id,
                unit.status().state.name()
            )));
        }
        match unit.kind() {
            UnitKind::Remote(r) => {
                unit.update_status(|st| st.detail = "Starting Worker".into())?;
                let reachable = self.inner.remote.reachable(&r.node);
                super::remote::spawn_driver(self.clone(), unit.clone());
                Ok(if reachable { Started::Started } else { Started::Submitted })
            }
            UnitKind::Local(_) => {
                unit.update_status(|st| st.detail = "Starting Worker".into())?;
                match self.spawn_supervisor(unit) {
                    Ok(child) => {
                        crate::metrics::global().work_started(crate::metrics::WorkKind::Unit);
                        self.spawn_monitor(unit.clone(), Some(child))
                    }
                    Err(e) => {
                        let _ = unit.update_status(|st| {
                            st.state = State::Failed;
                            st.detail = format!("Error starting worker: {e}");
                        });
                        return Err(UnitError::Io(e));
                    }
                }
                Ok(Started::Started)
            }
        }
    }

    fn spawn_supervisor(&self, unit: &Unit) -> Result<tokio::process::Child, String> {
        let exe = self.config().supervisor_exe;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(unit.dir.join("supervisor.log"))
            .map_err(|e| format!("supervisor log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg0("receptord")
            .arg("--supervise-unit")
            .arg(&unit.dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: the daemon's signals and shutdown leave it alone.
            .process_group(0);
        // Marked first: a cancel from now on goes through the supervisor (and its marker).
        unit.supervised.store(true, Ordering::SeqCst);
        let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        tracing::debug!(unit = %unit.id, pid = ?child.id(), "supervisor started");
        Ok(child)
    }

    /// Watches a supervised unit until it is final. With `child` (a supervisor this daemon
    /// started) its exit is seen directly; a reattached one is watched through its lock.
    /// A supervisor gone without a result fails the unit (or cancels it, if asked to).
    fn spawn_monitor(&self, unit: Arc<Unit>, mut child: Option<tokio::process::Child>) {
        let stop = unit.stop.clone();
        let since = child.as_ref().map(|_| std::time::Instant::now());
        self.inner.tracker.spawn(async move {
            let exited = loop {
                let wait_child = async {
                    match child.as_mut() {
                        Some(c) => c.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    // Not killed when the daemon stops: init reaps it then.
                    _ = stop.cancelled() => return,
                    status = wait_child => break status,
                    _ = tokio::time::sleep(MONITOR_TICK) => {}
                }
                let Some(st) = unit.refresh() else { continue };
                if st.state.is_final() {
                    break String::new();
                }
                if child.is_none() && !supervisor_alive(&unit.dir) {
                    break "gone".to_owned();
                }
            };
            // It may have written its result just before exiting.
            if let Some(st) = unit.refresh().filter(|s| s.state.is_final()) {
                tracing::info!(unit = %unit.id, state = st.state.name(), detail = %st.detail, "work unit finished");
                crate::metrics::unit_finished(st.state, since);
                if let Some(mut c) = child {
                    let _ = c.wait().await;
                }
                return;
            }
            let size = file_len(&unit.stdout_path());
            let cancelled = unit.dir.join("cancel").exists();
            tracing::warn!(unit = %unit.id, supervisor = %exited, "work unit supervisor exited without a result");
            let end = if cancelled { State::Canceled } else { State::Failed };
            crate::metrics::unit_finished(end, since);
            let _ = unit.update_status(|st| {
                if cancelled {
                    st.state = State::Canceled;
                    st.detail = "Canceled".into();
                } else {
                    st.state = State::Failed;
                    st.detail = format!("the unit's supervisor process died without recording a result ({exited})");
                }
                st.stdout_size = size;
                st.extra = Value::Null;
            });
        });
    }

    /// Cancels a unit: its processes are stopped and it ends Canceled. A finished unit
    /// stays as it is.
    pub async fn cancel(
        &self,
        origin: &Origin,
        id: &str,
        signature: Option<&str>,
    ) -> Result<Outcome, UnitError> {
        let unit = self.get(id)?;
        self.check_unit_access(origin, &unit, signature)?;
        self.cancel_unit(&unit).await
    }

    async fn cancel_unit(&self, unit: &Arc<Unit>) -> Result<Outcome, UnitError> {
        if let UnitKind::Remote(_) = unit.kind() {
            return super::remote::cancel(self, unit, false, false).await;
        }
        if unit.supervised.load(Ordering::SeqCst) {
            unit.refresh();
        }
        if unit.status().state.is_final() {
            return Ok(Outcome::Done);
        }
        // The marker covers a supervisor still starting (or about to be started): it
        // checks for it before running the job, and its monitor records Canceled if it
        // exits without a result.
        std::fs::write(unit.dir.join("cancel"), b"").map_err(io_err("writing", &unit.dir.join("cancel")))?;
        if !unit.supervised.load(Ordering::SeqCst) {
            unit.update_status(|st| {
                st.state = State::Canceled;
                st.detail = "Canceled".into();
                st.extra = Value::Null;
            })?;
            return Ok(Outcome::Done);
        }
        let mut rx = unit.watch();
        let deadline = self.config().cancel_wait + Duration::from_secs(5);
        let mut signalled = false;
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let st = rx.borrow_and_update().clone();
                if st.state.is_final() {
                    return;
                }
                let pid = supervisor_pid(&unit.dir, &st);
                if let Some(pid) = pid.filter(|_| !signalled && st.state == State::Running) {
                    if supervisor_alive(&unit.dir) {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
                        signalled = true;
                    }
                }
                let _ = tokio::time::timeout(MONITOR_TICK / 5, rx.changed()).await;
                unit.refresh();
            }
        })
        .await;
        if waited.is_err() {
            return Err(UnitError::Io(format!("work unit {} did not stop within {deadline:?}", unit.id)));
        }
        Ok(Outcome::Done)
    }

    /// Releases a unit: cancels it if needed, then deletes it. `force` ignores failures.
    pub async fn release(
        &self,
        origin: &Origin,
        id: &str,
        force: bool,
        signature: Option<&str>,
    ) -> Result<Outcome, UnitError> {
        let unit = self.get(id)?;
        self.check_unit_access(origin, &unit, signature)?;
        self.release_unit(&unit, force).await
    }

    pub(super) async fn release_unit(&self, unit: &Arc<Unit>, force: bool) -> Result<Outcome, UnitError> {
        if let UnitKind::Remote(_) = unit.kind() {
            return super::remote::cancel(self, unit, true, force).await;
        }
        if let Err(e) = self.cancel_unit(unit).await {
            if !force {
                return Err(e);
            }
            self.stop_supervisor(unit).await;
        }
        self.forget(unit, force)?;
        Ok(Outcome::Done)
    }

    /// Stops a supervisor that outlived a failed cancel, before its directory goes: SIGTERM
    /// (it stops the job's whole tree), then SIGKILL for the supervisor's process group.
    async fn stop_supervisor(&self, unit: &Unit) {
        let Some(pid) = supervisor_pid(&unit.dir, &unit.status()) else { return };
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + self.config().cancel_wait;
        while supervisor_alive(&unit.dir) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(MONITOR_TICK).await;
        }
        if supervisor_alive(&unit.dir) {
            tracing::warn!(unit = %unit.id, "supervisor ignored SIGTERM; killing its process group");
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Deletes a unit's directory and forgets it.
    pub(super) fn forget(&self, unit: &Unit, force: bool) -> Result<(), UnitError> {
        unit.releasing.store(true, Ordering::SeqCst);
        unit.stop.cancel();
        let last = match std::fs::remove_dir_all(&unit.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &unit.dir)(e)),
            _ => Ok(()),
        };
        if last.is_ok() || force {
            self.lock().remove(&unit.id);
            // Wake followers so they notice the release.
            unit.status.send_modify(|_| {});
            tracing::info!(unit = %unit.id, "work unit released");
        }
        if force { Ok(()) } else { last }
    }

    /// Another node may only see and act on the units it submitted itself.
    fn owned_by(&self, origin: &Origin, unit: &Unit) -> bool {
        match (origin, unit.kind()) {
            // This node reaching its own control service (`connect localhost control`).
            (Origin::Mesh(peer), _) if *peer == self.inner.node => true,
            (Origin::Mesh(peer), UnitKind::Local(l)) => l.submitter == *peer,
            (Origin::Mesh(_), UnitKind::Remote(_)) => false,
            _ => true,
        }
    }

    /// A unit's status, for `origin`.
    pub fn status_for(&self, origin: &Origin, id: &str) -> Result<UnitStatus, UnitError> {
        let unit = self.get(id)?;
        if !self.owned_by(origin, &unit) {
            return Err(UnitError::Unknown(id.to_owned()));
        }
        // A supervisor may have recorded the outcome since the monitor last looked.
        if unit.supervised.load(Ordering::SeqCst) && !unit.status().state.is_final() {
            unit.refresh();
        }
        Ok(unit.status())
    }

    /// The units `origin` may see, with their status.
    pub fn list_for(&self, origin: &Origin) -> Vec<(String, UnitStatus)> {
        self.lock()
            .values()
            .filter(|u| self.owned_by(origin, u))
            .map(|u| (u.id.clone(), u.status()))
            .collect()
    }

    fn check_unit_access(
        &self,
        origin: &Origin,
        unit: &Unit,
        signature: Option<&str>,
    ) -> Result<(), UnitError> {
        if !self.owned_by(origin, unit) {
            // To another node, units it did not submit do not exist.
            return Err(UnitError::Unknown(unit.id.clone()));
        }
        let (work_type, sign) = match unit.kind() {
            UnitKind::Local(l) => (l.work_type, false),
            UnitKind::Remote(r) => ("remote".to_owned(), r.sign_work),
        };
        self.check_signature(origin, &work_type, sign, signature)?;
        self.authorize(origin, &work_type)
    }

    /// The unit's output from byte `from`, following it until the unit is complete.
    pub fn follow(
        &self,
        origin: &Origin,
        id: &str,
        from: u64,
        signature: Option<&str>,
    ) -> Result<Follow, UnitError> {
        let unit = self.get(id)?;
        self.check_unit_access(origin, &unit, signature)?;
        let attached = unit.attach();
        Ok(Follow {
            rx: unit.watch(),
            unit,
            file: None,
            pos: from,
            idle: Duration::ZERO,
            _attached: attached,
        })
    }

    /// Releases completed units older than the retention period, now and then.
    fn spawn_retention(&self) {
        let units = self.clone();
        let cancel = self.inner.cancel.clone();
        self.inner.tracker.spawn(async move {
            loop {
                let Some(retention) = units.config().retention else {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
                    }
                };
                let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let all: Vec<Arc<Unit>> = units.lock().values().cloned().collect();
                for unit in all {
                    let age = std::fs::metadata(unit.dir.join("status"))
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if unit.status().state.is_final()
                        && age.is_some_and(|a| a >= retention)
                        && !unit.is_releasing()
                    {
                        tracing::info!(unit = %unit.id, ?retention, "releasing expired work unit");
                        if let Err(e) = units.release_unit(&unit, false).await {
                            tracing::warn!(unit = %unit.id, "retention release failed: {e}");
                        }
                    }
                }
            }
        });
    }
}

/// A reader of a unit's `stdout` that follows it while the unit runs.
pub struct Follow {
    unit: Arc<Unit>,
    rx: watch::Receiver<UnitStatus>,
    file: Option<tokio::fs::File>,
    pos: u64,
    idle: Duration,
    /// A follower keeps the unit's lease.
    _attached: super::lease::Attached,
}

impl Follow {
    /// The next bytes, or `None` once the unit is complete and everything was read (or
    /// the unit was released).
    pub async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        loop {
            if self.unit.is_releasing() {
                return Ok(None);
            }
            if self.file.is_none() {
                match tokio::fs::File::open(self.unit.stdout_path()).await {
                    Ok(mut f) => {
                        f.seek(std::io::SeekFrom::Start(self.pos)).await?;
                        self.file = Some(f);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(f) = self.file.as_mut() {
                let mut buf = BytesMut::with_capacity(FOLLOW_CHUNK);
                let n = f.read_buf(&mut buf).await?;
                if n > 0 {
                    self.pos += n as u64;
                    self.idle = Duration::ZERO;
                    return Ok(Some(buf.freeze()));
                }
            }
            let st = self.rx.borrow_and_update().clone();
            if st.state.is_final() && (self.pos >= st.stdout_size || self.file.is_none()) {
                // One last look: the final status is written after the last byte.
                if let Some(f) = self.file.as_mut() {
                    let mut buf = BytesMut::with_capacity(FOLLOW_CHUNK);
                    if f.read_buf(&mut buf).await? > 0 {
                        self.pos += buf.len() as u64;
                        return Ok(Some(buf.freeze()));
                    }
                }
                return Ok(None);
            }
            // Back off while nothing arrives (1 ms up to 64 ms); a status change wakes us.
            self.idle = (self.idle * 2).clamp(Duration::from_millis(1), Duration::from_millis(64));
            let _ = tokio::time::timeout(self.idle, self.rx.changed()).await;
        }
    }
}

/// A fresh unit ID: 8 letters and digits from the OS's random source.
fn new_id() -> String {
    use rand::Rng;
    use rand::distributions::Alphanumeric;
    rand::rngs::OsRng.sample_iter(&Alphanumeric).take(UNIT_ID_LEN).map(char::from).collect()
}

/// Unit IDs name directories: only letters and digits, bounded.
pub fn valid_id(id: &str) -> Result<(), UnitError> {
    if id.is_empty() || id.len() > MAX_UNIT_ID || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(UnitError::BadId(id.chars().take(80).collect()));
    }
    Ok(())
}

/// Whether a supervisor process holds the unit's lock.
/// The PID of the unit's supervisor from its status, if the status names a live supervisor
/// of this very unit: the file is on disk and could say anything (0, -1 or 4294967295
/// would signal whole process groups; another number, an unrelated process).
pub(super) fn supervisor_pid(dir: &Path, st: &UnitStatus) -> Option<nix::unistd::Pid> {
    let pid = st.extra.get("Pid").and_then(Value::as_i64)?;
    let pid = i32::try_from(pid).ok().filter(|p| *p > 1 && *p <= PID_MAX)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0);
    let supervises = args.any(|a| a == b"--supervise-unit")
        && args.next().is_some_and(|d| {
            Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(d)) == dir
        });
    supervises.then(|| nix::unistd::Pid::from_raw(pid))
}

/// Linux's largest possible PID (`/proc/sys/kernel/pid_max` is at most 2^22).
const PID_MAX: i32 = 1 << 22;

pub fn supervisor_alive(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join("supervisor.lock")) else { return false };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

pub(super) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Reads a unit's `status` file (bounded; `None` if missing or malformed).
pub fn read_status(dir: &Path) -> Option<UnitStatus> {
    read_json(&dir.join("status"))
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let file = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(MAX_META_FILE).read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

/// Writes JSON (plus a newline) atomically: a temporary file, synced, renamed over the old
/// one. When the disk is full the temporary file cannot be written; the small file is then
/// rewritten in place, in the blocks it frees, so a status still tells the truth (a crash
/// during that rewrite can leave it unreadable, which readers treat as missing).
pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), UnitError> {
    let mut data = serde_json::to_vec(value).map_err(|e| UnitError::Io(e.to_string()))?;
    data.push(b'\n');
    let tmp = path.with_extension("tmp");
    let open =
        |p: &Path| std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(p);
    let atomic = || -> std::io::Result<()> {
        let mut f = open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    match atomic() {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) && path.exists() => {
            let _ = std::fs::remove_file(&tmp);
            let mut f = open(path).map_err(io_err("writing", path))?;
            f.write_all(&data).and_then(|()| f.sync_all()).map_err(io_err("writing", path))
        }
        r => r.map_err(io_err("writing", path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("AbC123xY").is_ok());
        for bad in ["", "../x", "a/b", "a b", "x.y", &"a".repeat(65), "é"] {
            assert!(valid_id(bad).is_err(), "{bad:?}");
        }
        let id = new_id();
        assert_eq!(id.len(), UNIT_ID_LEN);
        assert!(valid_id(&id).is_ok());
    }

    #[test]
    fn status_file_matches_go() {
        let st = UnitStatus {
            state: State::Succeeded,
            detail: "exit status 0".into(),
            stdout_size: 12,
            work_type: "local".into(),
            extra: Value::Null,
        };
        assert_eq!(
            serde_json::to_string(&st).unwrap_or_default(),
            r#"{"State":2,"Detail":"exit status 0","StdoutSize":12,"WorkType":"local","ExtraData":null}"#
        );
        assert!(
            serde_json::from_str::<UnitStatus>(
                r#"{"State":9,"Detail":"","StdoutSize":0,"WorkType":"x","ExtraData":null}"#
            )
            .is_err()
        );
    }

    #[test]
    fn final_states() {
        assert!(!State::Pending.is_final());
        assert!(!State::Running.is_final());
        assert!(State::Succeeded.is_final() && State::Failed.is_final() && State::Canceled.is_final());
    }
}
