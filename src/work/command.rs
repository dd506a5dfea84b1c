//! The `command` work type: a program and argument list declared in the config (no
//! shell), the payload on its stdin, its stdout streamed back, its exit code reported.
//! As a work unit it may take runtime parameters (`allow_runtime_params`), split with
//! shell-like quoting but never run through a shell.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::config::resolve_program;

use super::process::{ChildSpec, run_child};
use super::{Job, JobFuture, UnitPlan, WorkType};

/// A configured command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandWork {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub version: String,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub grace: Duration,
    /// Whether a work unit may append its own `params` to `args`.
    #[serde(default)]
    pub allow_runtime_params: bool,
    /// Whether submissions from outside the Unix control socket must carry a signed token.
    #[serde(default)]
    pub verify_signature: bool,
    /// Send stderr into the output too (work units, as Go Receptor does).
    #[serde(default)]
    pub merge_stderr: bool,
}

impl WorkType for CommandWork {
    fn version(&self) -> String {
        self.version.clone()
    }

    fn secure(&self) -> bool {
        self.verify_signature
    }

    fn run(&self, job: Job) -> JobFuture {
        let spec = ChildSpec {
            program: self.program.clone(),
            args: self.args.iter().map(OsString::from).collect(),
            cwd: self.cwd.clone(),
            env: self.env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            grace: self.grace,
            merge_stderr: self.merge_stderr,
            tmp_root: Some(job.tmp_root.clone()),
        };
        Box::pin(async move { run_child(&spec, None, Some(job.input), job.output, job.cancel).await })
    }

    fn unit_plan(&self, params: &str) -> Result<(UnitPlan, String), String> {
        let mut plan = self.clone();
        plan.merge_stderr = true;
        let base = shlex::try_join(self.args.iter().map(String::as_str)).unwrap_or_default();
        if params.is_empty() {
            return Ok((UnitPlan::Command(plan), base));
        }
        if !self.allow_runtime_params {
            return Err("extra params provided but not allowed".into());
        }
        let extra = shlex::split(params)
            .ok_or_else(|| format!("cannot split params {params:?}: unbalanced quotes"))?;
        plan.args.extend(extra);
        let shown = if base.is_empty() { params.to_owned() } else { format!("{base} {params}") };
        Ok((UnitPlan::Command(plan), shown))
    }
}
