//! Client side of `ansible-runner process`: turn a worker output stream into the same artifact
//! tree Python writes (spec §3), minus `daemon.log`.
//!
//! Events become `job_events/<counter>-<uuid>.json` (mode 0600, the wire line without its LF);
//! the worker's artifact zip (`command`, `rc`, `status`, `stdout`, `stderr`, `fact_cache/`) is
//! spooled and extracted into the artifact dir with the safe extractor, where the existing
//! `job_events/` directory survives because existing directories are skipped.
//!
//! What to print is not decided here: [`crate::runner::output::RunPrinter`] rebuilds what
//! `ansible-runner run` prints from the same events.

use crate::runner::decode::{Item, LineKind, kind};
use crate::runner::extract::{self, ExtractError, ExtractLimits, ExtractStats};
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest `uuid` accepted in an event file name.
const MAX_UUID: usize = 128;

/// Why artifacts could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("extracting the artifact zip: {0}")]
    Extract(#[from] ExtractError),
    #[error("zip data received outside a zip section")]
    NoZip,
    #[error("artifact zip ended after {got} of {expected} bytes")]
    ShortZip { expected: u64, got: u64 },
}

/// Writes job events and artifacts under one artifact directory.
#[derive(Debug)]
pub struct ArtifactWriter {
    artifact_dir: PathBuf,
    events_dir: PathBuf,
    limits: ExtractLimits,
    spool: Option<Spool>,
    status: Option<Value>,
}

#[derive(Debug)]
struct Spool {
    file: File,
    expected: u64,
    written: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ProcessError + '_ {
    move |source| ProcessError::Io { path: path.to_owned(), source }
}

impl ArtifactWriter {
    /// Creates `artifact_dir` (and parents, default mode) and `artifact_dir/job_events` (0700),
    /// like `Processor.run`. Existing directories are kept as they are.
    pub fn new(artifact_dir: PathBuf) -> Result<Self, ProcessError> {
        fs::create_dir_all(&artifact_dir).map_err(io_err(&artifact_dir))?;
        let events_dir = artifact_dir.join("job_events");
        if !events_dir.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(&events_dir).map_err(io_err(&events_dir))?;
        }
        Ok(ArtifactWriter {
            artifact_dir,
            events_dir,
            limits: ExtractLimits::artifacts(),
            spool: None,
            status: None,
        })
    }

    /// Replaces the limits used for artifact zips (default [`ExtractLimits::artifacts`]).
    pub fn with_limits(mut self, limits: ExtractLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The directory artifacts are written to.
    pub fn artifact_dir(&self) -> &Path {
        &self.artifact_dir
    }

    /// The last status line seen by [`ArtifactWriter::handle`] (e.g. `{"status": "successful",
    /// ...}`), which is all `ansible-runner process` keeps of the job's outcome.
    pub fn last_status(&self) -> Option<&Value> {
        self.status.as_ref()
    }

    /// Dispatches one decoded item like `Processor.run`: status lines are remembered, events
    /// written, zip sections extracted.
    pub fn handle(&mut self, item: &Item) -> Result<(), ProcessError> {
        match item {
            Item::Line { raw, value } => match kind(value) {
                LineKind::Status => {
                    self.status = Some(value.clone());
                    Ok(())
                }
                _ => self.event(raw, value),
            },
            Item::ZipStart { size } => self.zip_start(*size),
            Item::ZipData(data) => self.zip_data(data),
            Item::ZipEnd => self.zip_end().map(|_| ()),
            Item::Eof => Ok(()),
        }
    }

    /// Handles one event line (`raw` = the wire bytes without LF). Keepalives and events
    /// without truthy `counter`/`uuid` are ignored. Otherwise writes the event file.
    pub fn event(&mut self, raw: &[u8], value: &Value) -> Result<(), ProcessError> {
        if kind(value) != LineKind::Event {
            return Ok(());
        }
        match event_file_name(value) {
            Some(name) => self.write_event_file(&name, trim_line(raw))?,
            None => tracing::warn!("event with unusable counter/uuid not written to job_events"),
        }
        Ok(())
    }

    fn write_event_file(&self, name: &str, content: &[u8]) -> Result<(), ProcessError> {
        let path = self.events_dir.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(content).map_err(io_err(&path))?;
        f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err(&path))
    }

    /// Starts spooling a `{"zipfile": size}` section into an anonymous temp file.
    pub fn zip_start(&mut self, size: u64) -> Result<(), ProcessError> {
        let file = tempfile::tempfile().map_err(io_err(&self.artifact_dir))?;
        self.spool = Some(Spool { file, expected: size, written: 0 });
        Ok(())
    }

    /// Appends decoded zip bytes to the spool.
    pub fn zip_data(&mut self, data: &[u8]) -> Result<(), ProcessError> {
        let spool = self.spool.as_mut().ok_or(ProcessError::NoZip)?;
        spool.file.write_all(data).map_err(io_err(&self.artifact_dir))?;
        spool.written += data.len() as u64;
        Ok(())
    }

    /// Extracts the spooled zip into the artifact dir.
    pub fn zip_end(&mut self) -> Result<ExtractStats, ProcessError> {
        let mut spool = self.spool.take().ok_or(ProcessError::NoZip)?;
        if spool.written != spool.expected {
            return Err(ProcessError::ShortZip { expected: spool.expected, got: spool.written });
        }
        spool.file.seek(SeekFrom::Start(0)).map_err(io_err(&self.artifact_dir))?;
        self.extract_artifacts(spool.file)
    }

    /// Extracts an already spooled artifact zip into the artifact dir.
    pub fn extract_artifacts(&mut self, zip: File) -> Result<ExtractStats, ProcessError> {
        Ok(extract::extract_zip(zip, &self.artifact_dir, &self.limits)?)
    }
}

/// The line without trailing CR/whitespace (Python writes `json.dumps(event)`, which has none).
fn trim_line(raw: &[u8]) -> &[u8] {
    let end = raw.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    let start = raw[..end].iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(end);
    &raw[start..end]
}

/// `"{counter}-{uuid}.json"` when both are safe to use as a file name: an integer counter and a
/// string uuid that cannot name another directory. Python would accept anything.
fn event_file_name(value: &Value) -> Option<String> {
    let counter = value.get("counter")?.as_i64()?;
    let uuid = value.get("uuid")?.as_str()?;
    let safe = !uuid.is_empty()
        && uuid.len() <= MAX_UUID
        && !uuid.starts_with('.')
        && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    safe.then(|| format!("{counter}-{uuid}.json"))
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
