//! Work: the plugin registry, the job service that runs work arriving over the mesh, and
//! the plugins themselves. This is the only module that spawns processes.
//!
//! Plugins see a [`Job`] (parameters, an input to read, an output to write, a cancel
//! token) and return a [`JobResult`]; they never touch sockets or mesh frames.

pub mod admit;
pub mod ansible;
pub mod authz;
pub mod command;
pub mod integrity;
pub mod io;
pub mod lease;
pub mod payload;
pub mod process;
mod proctree;
pub mod remote;
pub mod replay;
pub mod service;
pub mod signing;
pub mod sink;
pub mod supervisor;
pub mod units;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::wire::{Name, NodeId, WorkTypeAd};
pub use io::{JobInput, JobOutput};

/// The name of the mesh service that accepts work.
pub const WORK_SERVICE: &str = "work";

/// What a requester sends when opening a work stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkRequest {
    pub work_type: String,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// A signed-work token (see `work::signing`), for work types with `verify_signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// How a job ended; sent back as the stream's trailer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The process's exit code, when it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why the job could not run or was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last bytes the process wrote to stderr.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
}

impl JobResult {
    pub fn failed(error: impl Into<String>) -> JobResult {
        JobResult { error: Some(error.into()), ..JobResult::default() }
    }

    /// A conventional process exit status for this result (128+signal, 1 on error).
    pub fn exit_status(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 1,
        }
    }
}

/// One unit of work handed to a plugin.
pub struct Job {
    pub id: String,
    pub submitter: NodeId,
    pub node: NodeId,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub input: JobInput,
    pub output: JobOutput,
    pub cancel: CancellationToken,
    /// A directory this job may use under the node's data dir (not yet created).
    pub job_dir: PathBuf,
    /// Where the job's TMPDIR is made (`work::process::ChildSpec::tmp_root`): the node's
    /// `data_dir/tmp`, shared by all its jobs.
    pub tmp_root: PathBuf,
}

pub type JobFuture = Pin<Box<dyn Future<Output = JobResult> + Send>>;

/// A kind of work a node can run.
pub trait WorkType: Send + Sync {
    fn version(&self) -> String;
    fn run(&self, job: Job) -> JobFuture;

    /// Whether submissions must carry a signed token (advertised as `Secure`).
    fn secure(&self) -> bool {
        false
    }

    /// How to run this work type as a durable work unit with runtime `params`: the plan
    /// the unit's supervisor process executes, and the parameter string to show.
    fn unit_plan(&self, params: &str) -> Result<(UnitPlan, String), String>;
}

/// Everything a work unit's supervisor needs to rebuild and run its work type in a
/// separate process (stored in the unit's directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "plugin", rename_all = "snake_case")]
pub enum UnitPlan {
    Command(command::CommandWork),
    AnsibleRunner(ansible::AnsibleRunner),
}

impl UnitPlan {
    pub fn work_type(&self) -> Arc<dyn WorkType> {
        match self {
            UnitPlan::Command(c) => Arc::new(c.clone()),
            UnitPlan::AnsibleRunner(a) => Arc::new(a.clone()),
        }
    }
}

/// Why a job could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("node {node} has no work type {work_type:?} (it offers: {offers})")]
    Unknown { node: NodeId, work_type: String, offers: String },
    #[error("node {0} is shutting down and accepts no new work")]
    Draining(NodeId),
    #[error("bad work request: {0}")]
    BadRequest(String),
    #[error("node {node} does not allow {submitter} to run {work_type:?}")]
    NotAllowed { node: NodeId, submitter: String, work_type: String },
    #[error("node {node} has no {work_type} worker: {why}")]
    NoWorker { node: NodeId, work_type: String, why: String },
    #[error("{0}")]
    Signature(#[from] signing::SignatureError),
    #[error("node {0} is busy: all job slots are in use (work.max_jobs)")]
    Busy(NodeId),
    #[error(
        "node {requester} holds {held} work units on {node}, the most limits.units_per_node allows; \
         release some first"
    )]
    Quota { node: NodeId, requester: NodeId, held: usize },
}

/// Work types by name.
#[derive(Default, Clone)]
pub struct Registry {
    types: BTreeMap<String, Arc<dyn WorkType>>,
    /// Names a node deliberately explains (e.g. why `ansible_runner` is missing).
    absent: BTreeMap<String, String>,
}

/// Most bytes the advertised work types may take in a node's advertisement.
const MAX_WORK_TYPE_AD_BYTES: usize = 64 * 1024;

impl Registry {
    pub fn register(&mut self, name: impl Into<String>, work_type: Arc<dyn WorkType>) {
        let name = name.into();
        self.absent.remove(&name);
        self.types.insert(name, work_type);
    }

    /// Records why `name` is not offered, so requesters get that explanation.
    pub fn explain_absent(&mut self, name: impl Into<String>, why: impl Into<String>) {
        self.absent.insert(name.into(), why.into());
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn WorkType>> {
        self.types.get(name).cloned()
    }

    pub fn absent_reason(&self, name: &str) -> Option<&str> {
        self.absent.get(name).map(String::as_str)
    }

    pub fn names(&self) -> Vec<&str> {
        self.types.keys().map(String::as_str).collect()
    }

    /// Whether `name` requires signed submissions.
    pub fn secure(&self, name: &str) -> bool {
        self.types.get(name).is_some_and(|w| w.secure())
    }

    /// What this node advertises to the mesh.
    pub fn ads(&self) -> Vec<WorkTypeAd> {
        // Config validation keeps names and versions within the protocol's bounds; anything
        // that still does not fit is left out rather than making the advertisement invalid.
        // The list is also kept within a share of the frame (with the most neighbours a
        // node admits, the advertisement still fits `MAX_FRAME`).
        let mut bytes = 0;
        self.types
            .iter()
            .filter_map(|(name, wt)| {
                Some(WorkTypeAd {
                    name: Name::new(name.as_str()).ok()?,
                    version: Name::new(wt.version()).ok()?,
                })
            })
            .take(crate::wire::MAX_LSA_ITEMS)
            .take_while(|ad| {
                bytes += 4 + ad.name.len() + ad.version.len();
                bytes <= MAX_WORK_TYPE_AD_BYTES
            })
            .collect()
    }
}
