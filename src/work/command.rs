//! The `command` work type: a program and argument list declared in the config (no
//! shell), the payload on its stdin, its stdout streamed back, its exit code reported.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{ChildSpec, run_child};
use super::{Job, JobFuture, WorkType};

/// A configured command.
#[derive(Debug, Clone)]
pub struct CommandWork {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub version: String,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub grace: Duration,
}

impl WorkType for CommandWork {
    fn version(&self) -> String {
        self.version.clone()
    }

    fn run(&self, job: Job) -> JobFuture {
        let spec = ChildSpec {
            program: self.program.clone(),
            args: self.args.iter().map(OsString::from).collect(),
            cwd: self.cwd.clone(),
            env: self.env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            grace: self.grace,
        };
        Box::pin(async move { run_child(&spec, None, Some(job.input), job.output, job.cancel).await })
    }
}

/// Finds `program` the way exec would: a path as given, or a bare name on `PATH`.
pub fn resolve_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| executable(p))
}
