//! The `ansible_runner` work type: a job's input is an ansible-runner transmit stream
//! (kwargs line, zip section, eof). The node unpacks the zip itself, safely and within
//! limits, into a per-job directory, then runs `ansible-runner worker` on it and streams
//! the worker's output (status, events, artifact zip, eof) back as it is written.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::process::{ChildSpec, run_child};
use super::{Job, JobFuture, JobOutput, JobResult, Registry, UnitPlan, WorkType};
use crate::config::AnsibleRunnerSection;
use crate::runner::{
    DecodeLimits, ExtractLimits, Item, LineKind, StreamDecoder, decode, extract_zip_path, pyjson,
};

/// The name the work type is registered under.
pub const WORK_TYPE: &str = "ansible_runner";
/// The name AWX submits ansible-runner work under (same streams).
pub const AWX_WORK_TYPE: &str = "ansible-runner";

/// A detected ansible-runner installation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AnsibleRunner {
    pub program: PathBuf,
    pub version: String,
    pub keep_job_dirs: bool,
    pub limits: ExtractLimits,
    pub grace: Duration,
    /// Run `ansible-runner worker --worker-info` (AWX's health check) instead of a job.
    #[serde(default)]
    pub worker_info: bool,
    /// Further `worker` options a work unit asked for (from an allow-list).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Submissions from outside the Unix control socket must be signed.
    #[serde(default)]
    pub verify_signature: bool,
}

/// Looks for ansible-runner as configured: an explicit path, a virtualenv, or `PATH`.
/// Returns it with its version, or why it is unavailable.
pub fn detect(cfg: &AnsibleRunnerSection) -> Result<(PathBuf, String), String> {
    let (candidate, place) = match (&cfg.path, &cfg.virtualenv) {
        (Some(p), _) => (Some(p.clone()), format!("at {}", p.display())),
        (None, Some(venv)) => {
            let p = venv.join("bin/ansible-runner");
            (Some(p.clone()), format!("in virtualenv {}", venv.display()))
        }
        (None, None) => (None, "on PATH".to_owned()),
    };
    let program = match candidate {
        Some(p) => super::command::resolve_program(&p),
        None => super::command::resolve_program(Path::new("ansible-runner")),
    }
    .ok_or_else(|| format!("ansible-runner not found {place}"))?;
    let version = super::process::program_version(&program, &path_with_bin_dir(&program))
        .map_err(|e| format!("ansible-runner {place} does not run: {e}"))?;
    Ok((program, version))
}

/// Registers the worker (under both names) when ansible-runner is found; otherwise records
/// why, so that anyone sending a playbook gets a specific answer.
pub fn register(reg: &mut Registry, cfg: &AnsibleRunnerSection, grace: Duration) {
    if !cfg.enabled {
        for name in [WORK_TYPE, AWX_WORK_TYPE] {
            reg.explain_absent(name, "the ansible_runner worker is disabled in the configuration");
        }
        return;
    }
    match detect(cfg) {
        Ok((program, version)) => {
            tracing::info!(program = %program.display(), %version, "ansible-runner found");
            let worker = Arc::new(AnsibleRunner {
                program,
                version,
                keep_job_dirs: cfg.keep_job_dirs,
                limits: ExtractLimits {
                    max_total_bytes: cfg.max_archive_bytes,
                    max_entries: cfg.max_archive_entries,
                    max_ratio: cfg.max_compression_ratio,
                    ..ExtractLimits::default()
                },
                grace,
                worker_info: false,
                extra_args: Vec::new(),
                verify_signature: cfg.verify_signature,
            });
            reg.register(WORK_TYPE, worker.clone());
            reg.register(AWX_WORK_TYPE, worker);
        }
        Err(why) => {
            tracing::info!("no ansible_runner worker: {why}");
            for name in [WORK_TYPE, AWX_WORK_TYPE] {
                reg.explain_absent(name, why.clone());
            }
        }
    }
}

/// `PATH` with the program's own directory first, so a virtualenv's `ansible-playbook`
/// is found next to its `ansible-runner`.
fn path_with_bin_dir(program: &Path) -> OsString {
    let mut dirs: Vec<PathBuf> = program.parent().map(Path::to_path_buf).into_iter().collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

impl WorkType for AnsibleRunner {
    fn version(&self) -> String {
        self.version.clone()
    }

    fn run(&self, job: Job) -> JobFuture {
        let me = self.clone();
        Box::pin(async move { me.run_job(job).await })
    }

    fn secure(&self) -> bool {
        self.verify_signature
    }

    /// Accepts the `worker` options AWX sends. The private data directory is always one
    /// the node makes inside the unit (the payload is unpacked there safely), so
    /// `--private-data-dir` is accepted and ignored, as is `--delete` (job directories are
    /// always removed unless `keep_job_dirs`).
    fn unit_plan(&self, params: &str) -> Result<(UnitPlan, String), String> {
        let mut plan = self.clone();
        let words = shlex::split(params)
            .ok_or_else(|| format!("cannot split params {params:?}: unbalanced quotes"))?;
        let mut words = words.into_iter();
        while let Some(w) = words.next() {
            match w.as_str() {
                "worker" | "--delete" => {}
                "--worker-info" => plan.worker_info = true,
                "--private-data-dir" => {
                    words.next();
                }
                w if w.starts_with("--private-data-dir=") => {}
                w if w.starts_with("--keepalive-seconds=") => plan.extra_args.push(w.to_owned()),
                "--keepalive-seconds" => {
                    let n = words.next().unwrap_or_default();
                    plan.extra_args.push(format!("--keepalive-seconds={n}"));
                }
                other => return Err(format!("extra params provided but not allowed: {other}")),
            }
        }
        let shown = if params.is_empty() { "worker".to_owned() } else { format!("worker {params}") };
        Ok((UnitPlan::AnsibleRunner(plan), shown))
    }
}

/// Why a transmit stream could not be turned into a private data directory.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("reading the job: {0}")]
    Input(String),
    #[error("invalid transmit stream: {0}")]
    Decode(#[from] crate::runner::DecodeError),
    #[error("the transmit stream has no kwargs line")]
    NoKwargs,
    #[error("archive refused: {0}")]
    Archive(#[from] crate::runner::ExtractError),
    #[error("job directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl AnsibleRunner {
    async fn run_job(self, mut job: Job) -> JobResult {
        if self.worker_info {
            return self.run_worker_info(job).await;
        }
        let dir = job.job_dir.clone();
        let result = match self.prepare(&mut job).await {
            Ok(kwargs_line) => self.run_worker(job, kwargs_line).await,
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!("{msg}");
                report_error(&mut job.output, &msg).await;
                JobResult::failed(msg)
            }
        };
        if self.keep_job_dirs {
            tracing::info!(dir = %dir.display(), "keeping job directory");
        } else if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove job directory");
            }
        }
        result
    }

    /// Reads the transmit stream, spooling and then safely extracting the zip section into
    /// `job_dir/pdd`. Returns the kwargs line to hand to the worker.
    async fn prepare(&self, job: &mut Job) -> Result<Bytes, PrepareError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| PrepareError::Io { path, source }
        };
        let pdd = job.job_dir.join("pdd");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&pdd).map_err(io(&pdd))?;
        let limits = DecodeLimits { max_zip: self.limits.max_total_bytes, ..DecodeLimits::default() };
        let mut decoder = StreamDecoder::new(limits);
        let mut kwargs: Option<Bytes> = None;
        let mut spool: Option<(BufWriter<File>, PathBuf)> = None;
        let mut zips = 0u32;
        'read: loop {
            let chunk = job.input.read().await.map_err(|e| PrepareError::Input(e.to_string()))?;
            match &chunk {
                Some(data) => decoder.feed(data),
                None => break,
            }
            while let Some(item) = decoder.next_item()? {
                match item {
                    Item::Line { raw, value } if decode::kind(&value) == LineKind::Kwargs => {
                        kwargs = Some(raw)
                    }
                    Item::Line { .. } => {}
                    Item::ZipStart { .. } => {
                        zips += 1;
                        let path = job.job_dir.join(format!("transmit-{zips}.zip"));
                        let file = File::create(&path).map_err(io(&path))?;
                        spool = Some((BufWriter::new(file), path));
                    }
                    Item::ZipData(data) => {
                        if let Some((w, path)) = spool.as_mut() {
                            w.write_all(&data).map_err(io(path))?;
                        }
                    }
                    Item::ZipEnd => {
                        if let Some((w, path)) = spool.take() {
                            w.into_inner().map_err(|e| io(&path)(e.into_error()))?;
                            self.extract(&path, &pdd).await?;
                        }
                    }
                    Item::Eof => break 'read,
                }
            }
        }
        if !decoder.is_done() {
            decoder.finish()?;
        }
        kwargs.ok_or(PrepareError::NoKwargs)
    }

    async fn extract(&self, zip: &Path, pdd: &Path) -> Result<(), PrepareError> {
        let (zip, pdd, limits) = (zip.to_path_buf(), pdd.to_path_buf(), self.limits);
        let stats = tokio::task::spawn_blocking(move || {
            let r = extract_zip_path(&zip, &pdd, &limits);
            let _ = fs::remove_file(&zip);
            r
        })
        .await
        .map_err(|e| PrepareError::Input(format!("extraction task failed: {e}")))??;
        tracing::debug!(?stats, "private data dir extracted");
        Ok(())
    }

    async fn run_worker_info(&self, job: Job) -> JobResult {
        let spec = ChildSpec {
            program: self.program.clone(),
            args: vec!["worker".into(), "--worker-info".into()],
            cwd: None,
            env: vec![("PATH".into(), path_with_bin_dir(&self.program))],
            grace: self.grace,
            merge_stderr: false,
            tmp_root: None,
        };
        run_child(&spec, None, None, job.output, job.cancel).await
    }

    async fn run_worker(&self, job: Job, kwargs_line: Bytes) -> JobResult {
        let pdd = job.job_dir.join("pdd");
        let mut prelude = kwargs_line.to_vec();
        prelude.push(b'\n');
        prelude.extend_from_slice(crate::runner::EOF_LINE);
        let spec = ChildSpec {
            program: self.program.clone(),
            args: ["worker".into(), "--private-data-dir".into(), pdd.into_os_string()]
                .into_iter()
                .chain(self.extra_args.iter().map(OsString::from))
                .collect(),
            cwd: Some(job.job_dir.clone()),
            env: vec![("PATH".into(), path_with_bin_dir(&self.program))],
            grace: self.grace,
            merge_stderr: false,
            tmp_root: Some(job.tmp_root.clone()),
        };
        run_child(&spec, Some(Bytes::from(prelude)), None, job.output, job.cancel).await
    }
}

/// Sends a worker-format error, as `ansible-runner worker` does for bad input, so any
/// consumer (receptor run, ansible-runner process, AWX) sees why the job failed.
async fn report_error(output: &mut JobOutput, msg: &str) {
    let mut out = pyjson::line(&json!({ "status": "error", "job_explanation": msg }));
    out.extend_from_slice(crate::runner::EOF_LINE);
    let _ = output.write(Bytes::from(out)).await;
}
