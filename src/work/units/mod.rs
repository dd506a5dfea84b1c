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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use released::{RELEASED, Reaper};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admit::{Admission, Ask};
use super::remote::{RemoteControl, RemoteUnit};
use super::signing::{Op, Signer};
use super::{SubmitError, UnitPlan};
use crate::wire::NodeId;

mod disk;
mod follow;
mod model;
mod recover;
mod released;
mod supervise;

pub(super) use disk::{file_len, read_json, write_json};
use disk::{io_err, new_id, supervisor_pid};
pub use disk::{read_status, supervisor_alive, valid_id};
pub use follow::Follow;
pub use model::*;

/// Length of the unit IDs this node makes (letters and digits, as Go Receptor's).
pub const UNIT_ID_LEN: usize = 8;
/// Longest unit ID accepted from anyone (IDs name directories: letters and digits only).
pub const MAX_UNIT_ID: usize = 64;
/// Largest `status` or `unit.json` file read back from disk.
const MAX_META_FILE: u64 = 1 << 20;
/// How often the daemon looks at a running unit's status.
pub const MONITOR_TICK: Duration = Duration::from_millis(250);
/// Largest read of a unit's `stdout` for `work results`: each read of a `tokio::fs` file
/// is a hop to the blocking pool (issue 26); a read returns what is there, so small
/// output still goes out at once.
const FOLLOW_CHUNK: usize = 1 << 20;

/// Settings for the unit store.
#[derive(Clone)]
pub struct UnitsConfig {
    pub node: NodeId,
    /// `<data_dir>/units`.
    pub root: PathBuf,
    /// The `receptord` executable that supervises units.
    pub supervisor_exe: PathBuf,
    /// `systemd-run`, when each unit runs in its own transient scope (`[work]
    /// unit_scopes`, under systemd as root: [`crate::systemd::scope_runner`]).
    pub scope_runner: Option<PathBuf>,
    /// Completed units older than this are released (`None`: never).
    pub retention: Option<Duration>,
    pub signer: Option<Signer>,
    /// How long a cancelled unit's processes get before SIGKILL (plus margin to wait).
    pub cancel_wait: Duration,
    /// Largest payload of one unit (`limits.max_payload`).
    pub max_payload: u64,
    /// Integrity failures before a remote unit fails (`limits.integrity_attempts`).
    pub integrity_attempts: u32,
}

/// The unit store of one node.
#[derive(Clone)]
pub struct Units {
    pub(super) inner: Arc<Inner>,
}

/// How many lease-released unit IDs are remembered (in memory) to be named as expired.
const EXPIRED_KEPT: usize = 1024;

pub(super) struct Inner {
    pub(super) cfg: RwLock<UnitsConfig>,
    pub(super) node: NodeId,
    root: PathBuf,
    /// The admission path (and job slots) shared with the `work` service.
    pub(super) admission: Admission,
    pub(super) remote: Arc<dyn RemoteControl>,
    units: Mutex<BTreeMap<String, Arc<Unit>>>,
    /// Units their lease released, most recent last (bounded: [`EXPIRED_KEPT`]), with the
    /// lease, so a late `--attach` hears "expired" rather than "unknown".
    expired: Mutex<std::collections::VecDeque<(String, Duration)>>,
    pub(super) tracker: TaskTracker,
    pub(super) cancel: CancellationToken,
    reaper: Reaper,
}

impl Units {
    /// Opens the store, creating `root`, and recovers every unit found there: finished ones
    /// are kept, running ones whose supervisor is alive are reattached, the rest are marked
    /// Failed with the reason. Remote units resume mirroring.
    pub fn open(
        cfg: UnitsConfig,
        admission: Admission,
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
                admission,
                remote,
                units: Mutex::default(),
                expired: Mutex::default(),
                tracker,
                cancel,
                reaper: Reaper::default(),
            }),
        };
        Units::open_released(&units.inner.root)?;
        // What an earlier run left to delete; units recovery releases join it.
        units.reap();
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
        self.inner.admission.is_secure(name)
    }

    fn insert(&self, id: &str, dir: &Path, kind: UnitKind, status: UnitStatus) -> Arc<Unit> {
        let unit = Arc::new(Unit::new(id, dir, kind, status, self.inner.cancel.child_token()));
        self.lock().insert(id.to_owned(), unit.clone());
        unit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Unit>>> {
        self.inner.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds a unit by ID (validated first: IDs become paths).
    pub fn get(&self, id: &str) -> Result<Arc<Unit>, UnitError> {
        valid_id(id)?;
        if let Some(unit) = self.lock().get(id).cloned() {
            return Ok(unit);
        }
        let expired = self.inner.expired.lock().unwrap_or_else(|p| p.into_inner());
        Err(match expired.iter().rev().find(|(e, _)| e == id) {
            Some((_, lease)) => UnitError::Expired {
                id: id.to_owned(),
                lease: humantime::format_duration(*lease).to_string(),
            },
            None => UnitError::Unknown(id.to_owned()),
        })
    }

    /// Records that the lease released `id` (see [`UnitError::Expired`]).
    pub(crate) fn note_expired(&self, id: &str, lease: Duration) {
        let mut expired = self.inner.expired.lock().unwrap_or_else(|p| p.into_inner());
        if expired.len() >= EXPIRED_KEPT {
            expired.pop_front();
        }
        expired.push_back((id.to_owned(), lease));
    }

    /// How many units are not final yet.
    pub fn active(&self) -> usize {
        self.lock().values().filter(|u| !u.status().state.is_final()).count()
    }

    /// The payload of a unit whose token demanded a digest must match it: `sha256` is the
    /// received payload's (hex). A mismatch fails the unit, which never starts.
    pub fn check_payload(&self, unit: &Unit, sha256: &str) -> Result<(), UnitError> {
        let expected = unit.expect_payload.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let checked = self.inner.admission.check_payload(expected.as_deref(), sha256).map_err(unit_error);
        if let Err(e) = &checked {
            let _ = unit.update_status(|st| {
                st.state = State::Failed;
                st.detail = e.to_string();
            });
        }
        checked
    }

    /// Validates a submission and creates its unit (status Pending, empty `stdin`).
    pub fn create(&self, origin: &Origin, req: SubmitRequest) -> Result<Arc<Unit>, UnitError> {
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
        let held = self.lock().values().filter(|u| self.owned_by(origin, u)).count();
        let ask = Ask {
            origin,
            op: Op::Submit,
            work_type: &req.work_type,
            params: Some(super::signing::string_params_digest(&req.params)),
            unit: None,
            signature: req.signature.as_deref(),
            signed_unit: false,
        };
        let admitted = self.inner.admission.submit(&ask, Some(held)).map_err(unit_error)?;
        let wt = admitted.work_type;
        let params = req.params.get("params").map(String::as_str).unwrap_or("");
        let (plan, shown) = wt.unit_plan(params).map_err(UnitError::Refused)?;
        let submitter = origin.node().cloned().unwrap_or_else(|| self.inner.node.clone());
        let kind = UnitKind::Local(LocalUnit {
            work_type: req.work_type.clone(),
            params: shown.clone(),
            plan,
            submitter,
            lease: req.lease,
        });
        let status =
            UnitStatus::new(&req.work_type, "Waiting for Input Data", json!({"Pid": 0, "Params": shown}));
        let unit = self.allocate(kind, status)?;
        *unit.expect_payload.lock().unwrap_or_else(|p| p.into_inner()) = admitted.payload_sha256;
        Ok(unit)
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
        // `tlsclient` names a TLS config in Go; receptord has one identity, `[tls]`, so any
        // name asks that every stream of the unit be authenticated with it. Refused now
        // if that cannot be promised; each stream is held to it later (`work::remote`).
        let tls_client = req.tls_client.unwrap_or_default();
        if !tls_client.is_empty() {
            if let Err(e) = self.inner.remote.clone().user_tls(&node) {
                return Err(UnitError::Refused(format!("tlsclient={tls_client}: {e}")));
            }
        }
        // Secrets travel where the links are TLS, or over streams authenticated and
        // encrypted end to end with `[tls]` (`tlsclient`).
        if req.params.keys().any(|k| k.to_ascii_lowercase().starts_with("secret_"))
            && tls_client.is_empty()
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
            tls_client,
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

    /// Records that the payload could not be read. A unit submitted by another node is then
    /// discarded: it can never run, and its submitter — which may not even have learned its
    /// ID before the link broke — submits afresh (`work::remote`), so keeping it would leave
    /// a dead twin behind. Local clients keep theirs to inspect, as in Go Receptor.
    pub async fn input_failed(&self, origin: &Origin, unit: &Arc<Unit>, why: &str) {
        let _ = unit.update_status(|st| {
            st.state = State::Failed;
            st.detail = format!("Error reading input data: {why}");
        });
        if matches!(origin, Origin::Mesh(_)) {
            tracing::info!(unit = %unit.id, "discarding a work unit whose payload never arrived whole");
            let _ = self.release_unit(unit, true).await;
        }
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
        self.check_unit_access(origin, &unit, Op::Release, signature)?;
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

    /// Deletes a unit's directory and forgets it.
    pub(super) fn forget(&self, unit: &Unit, force: bool) -> Result<(), UnitError> {
        unit.stop.cancel();
        let last = unit.remove_dir(force).map(|moved| {
            if moved {
                self.reap();
            }
        });
        if last.is_ok() || force {
            self.lock().remove(&unit.id);
            // Wake followers so they notice the release.
            unit.status.send_modify(|_| {});
            tracing::info!(unit = %unit.id, "work unit released");
        }
        if force { Ok(()) } else { last }
    }

    /// Another node (over the mesh, or a TLS control client with its certificate) may
    /// only see and act on the units it submitted itself.
    fn owned_by(&self, origin: &Origin, unit: &Unit) -> bool {
        let Some(id) = origin.node() else { return true };
        match unit.kind() {
            // This node reaching its own control service (`connect localhost control`).
            _ if *id == self.inner.node => true,
            UnitKind::Local(l) => l.submitter == *id,
            UnitKind::Remote(_) => false,
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
        op: Op,
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
        let ask = Ask {
            origin,
            op,
            work_type: &work_type,
            params: None,
            unit: Some(&unit.id),
            signature,
            signed_unit: sign,
        };
        self.inner.admission.operate(&ask).map_err(unit_error)
    }
}

/// An admission refusal in the unit store's (and Go Receptor's) words.
fn unit_error(e: SubmitError) -> UnitError {
    match e {
        SubmitError::Unknown { work_type, .. } => UnitError::UnknownWorkType(work_type),
        SubmitError::NoWorker { work_type, why, .. } => {
            UnitError::Refused(format!("unknown work type {work_type}: {why}"))
        }
        SubmitError::Signature(e) => UnitError::Signature(e.to_string()),
        other => UnitError::Refused(other.to_string()),
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
