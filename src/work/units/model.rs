//! What a work unit is: its states (Go's numbering and words), its status file, its kind
//! (local plan or remote mirror), who asks (origin), and the in-memory `Unit`.

use super::*;

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
    pub(super) fn new(work_type: &str, detail: &str, extra: Value) -> UnitStatus {
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
    /// Released once no client has been attached for this long (see [`crate::work::lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Duration>,
}

pub use crate::identity::Origin;

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
    /// Released by its lease; named as such to whoever asks after it (`--attach`).
    #[error("work unit {id} expired: no client followed it for {lease}, so it was cancelled and released")]
    Expired { id: String, lease: String },
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

/// One unit in memory.
pub struct Unit {
    pub id: String,
    pub(super) dir: PathBuf,
    pub(super) status: watch::Sender<UnitStatus>,
    pub(super) kind: Mutex<UnitKind>,
    /// Stops the unit's monitor or remote driver (release).
    pub(crate) stop: CancellationToken,
    /// Set once a supervisor process was started for it (the daemon then only reads).
    pub(super) supervised: AtomicBool,
    /// Serialises status writes.
    pub(super) write_lock: Mutex<()>,
    /// A background retry of a remote cancel or release is running.
    pub(crate) retrying: AtomicBool,
    pub(super) releasing: AtomicBool,
    /// Clients attached, for the unit's lease.
    pub(crate) lease: Arc<crate::work::lease::LeaseState>,
    /// The payload digest the submission's token demanded (checked before it starts).
    pub(super) expect_payload: Mutex<Option<String>>,
    /// How far the payload has arrived, for a remote unit forwarding it as it arrives.
    pub(super) arrival: Mutex<Option<crate::work::payload::ArrivalWatch>>,
}

impl Unit {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the submission's token bound the payload's SHA-256, so the payload must be
    /// hashed as it arrives (unsigned payloads are not: hashing was a tenth of the CPU
    /// of a remote unit's three daemons).
    pub fn arrival(&self) -> Option<crate::work::payload::ArrivalWatch> {
        self.arrival.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the unit's payload is forwarded to its remote node while it arrives: a
    /// remote unit this node does not sign (a signature binds the whole payload's digest).
    pub fn forwards_while_arriving(&self) -> bool {
        matches!(self.kind(), UnitKind::Remote(r) if !r.sign_work)
    }

    pub fn expects_payload_digest(&self) -> bool {
        self.expect_payload.lock().unwrap_or_else(|p| p.into_inner()).is_some()
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

    pub(super) fn new(
        id: &str,
        dir: &Path,
        kind: UnitKind,
        status: UnitStatus,
        stop: CancellationToken,
    ) -> Unit {
        Unit {
            id: id.to_owned(),
            dir: dir.to_path_buf(),
            status: watch::Sender::new(status),
            kind: Mutex::new(kind),
            stop,
            supervised: AtomicBool::new(false),
            write_lock: Mutex::new(()),
            retrying: AtomicBool::new(false),
            releasing: AtomicBool::new(false),
            lease: Arc::default(),
            expect_payload: Mutex::default(),
            arrival: Mutex::default(),
        }
    }

    /// Marks the unit as releasing and takes its directory out of the store: renamed into
    /// [`RELEASED`] under the store's root, whose contents the store deletes in the
    /// background (a unit's files can be hundreds of MiB: deleting them took 70 ms per
    /// 256 MiB file, which a release no longer waits for); where the rename fails, the
    /// directory is removed here. Writers check the mark under the same locks, so none
    /// writes into the directory while it goes: a file written meanwhile (the monitor of a
    /// supervisor that just exited recording its end) would make the removal fail and
    /// leave a released unit listed. If the removal fails, the mark is lifted again unless
    /// `force` (the unit is forgotten even so): a unit that stays may still have its status
    /// written. Whether the directory was moved into [`RELEASED`] (left to be deleted).
    pub(super) fn remove_dir(&self, force: bool) -> Result<bool, UnitError> {
        let _status = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _kind = self.kind.lock().unwrap_or_else(|p| p.into_inner());
        self.releasing.store(true, Ordering::SeqCst);
        if let Some(moved) = self.released_path() {
            match std::fs::rename(&self.dir, &moved) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.dir.exists() => return Ok(false),
                Err(_) => {}
            }
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                self.releasing.store(force, Ordering::SeqCst);
                Err(io_err("removing", &self.dir)(e))
            }
            _ => Ok(false),
        }
    }

    /// A fresh name for this unit's directory in [`RELEASED`] (the store made it).
    fn released_path(&self) -> Option<PathBuf> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{nanos}.{}.{seq}", self.id, std::process::id());
        Some(self.dir.parent()?.join(RELEASED).join(name))
    }

    /// Changes `unit.json` (memory and disk, in one step: concurrent updates never
    /// leave an older copy on disk).
    pub(crate) fn update_kind(&self, f: impl FnOnce(&mut UnitKind)) -> Result<(), UnitError> {
        let mut k = self.kind.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut k);
        if self.is_releasing() {
            // Its directory is going (or gone): nothing may be written back into it.
            return Ok(());
        }
        write_json(&self.dir.join("unit.json"), &*k)
    }

    /// Records a new status (memory and disk).
    pub(crate) fn set_status(&self, st: UnitStatus) -> Result<(), UnitError> {
        self.update_status(|s| *s = st)
    }

    /// Publishes a change to followers without writing it to disk (yet).
    pub(crate) fn status_in_memory(&self, f: impl FnOnce(&mut UnitStatus)) {
        self.status.send_modify(f);
    }

    /// Changes the status (memory and disk, serialised with other writers).
    pub(crate) fn update_status(&self, f: impl FnOnce(&mut UnitStatus)) -> Result<(), UnitError> {
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_releasing() {
            // A late writer (the monitor of a supervisor that just exited) must neither
            // write into the directory being removed nor show followers a new state.
            return Ok(());
        }
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
    pub(super) fn refresh(&self) -> Option<UnitStatus> {
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
    pub fn attach(&self) -> crate::work::lease::Attached {
        self.lease.attach()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_in(dir: &Path) -> Unit {
        let remote = RemoteUnit {
            node: NodeId::new("node3").expect("node ID"),
            work_type: "cat".into(),
            params: Default::default(),
            sign_work: false,
            expiration: None,
            remote_unit_id: String::new(),
            remote_started: false,
            local_cancelled: false,
            local_released: false,
            lease: None,
            tls_client: String::new(),
        };
        let status = UnitStatus::new("remote", "Running", Value::Null);
        Unit::new("u1", dir, UnitKind::Remote(remote), status, CancellationToken::new())
    }

    /// A writer that comes after the release began (the monitor of a supervisor that
    /// exited just then) neither recreates files in the directory nor changes the
    /// status followers see.
    #[test]
    fn nothing_is_written_once_a_release_removed_the_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("u1");
        std::fs::create_dir(&dir).expect("unit dir");
        let unit = unit_in(&dir);
        unit.update_status(|st| st.state = State::Running).expect("written while live");
        assert!(dir.join("status").exists());
        std::fs::create_dir(root.path().join(RELEASED)).expect("the store's released dir");
        assert!(unit.remove_dir(false).expect("removed"), "moved aside");
        assert!(unit.is_releasing());
        // Moved aside whole, for the store to delete behind the release.
        let moved: Vec<_> =
            std::fs::read_dir(root.path().join(RELEASED)).expect("released").flatten().collect();
        assert_eq!(moved.len(), 1);
        assert!(moved[0].path().join("status").exists());
        // Recreate the directory as a stand-in for one being emptied: a late write would land here.
        std::fs::create_dir(&dir).expect("recreated");
        unit.update_status(|st| st.state = State::Failed).expect("a late write is not an error");
        unit.update_kind(|_| {}).expect("a late kind change is not an error");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0, "nothing written into it");
        assert_eq!(unit.status().state, State::Running, "followers see no new state");
    }

    /// A removal that fails leaves the unit as it was: still recorded, still written.
    #[test]
    fn a_failed_removal_lifts_the_mark() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = root.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("file");
        let unit = unit_in(&file.join("u1"));
        assert!(unit.remove_dir(false).is_err(), "a path under a file cannot be removed");
        assert!(!unit.is_releasing());
    }
}
