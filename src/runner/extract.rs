//! Safe extraction of a runner zip section into a directory (SECURITY-CRITICAL).
//!
//! The daemon unpacks zips sent by remote clients and the client unpacks artifact zips sent by
//! workers, so every archive is hostile input. Semantics follow Python's `unstream_dir`
//! (spec §0.4): existing directories are skipped, existing regular files are replaced, missing
//! parents are created, modes and (UTC) mtimes are restored and symlink entries become
//! symlinks. On top of that, extraction refuses — and stops at once — on absolute names, `..`
//! components, symlinks that could lead outside the destination, any path that passes through
//! a symlink, device/FIFO/socket entries, and size, entry-count and compression-ratio limits.
//! Symlinks are never followed: parents are checked with `symlink_metadata`, files are created
//! with `O_CREAT|O_EXCL|O_NOFOLLOW`, and modes/times are set on open handles. Setuid and setgid
//! bits are dropped. Content already written stays inside `dest`; the caller removes it.

use crate::runner::dostime::{self, Civil};
use crate::runner::guard;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use zip::ZipArchive;
use zip::read::ZipFile;

/// Limits applied to one archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtractLimits {
    /// Total uncompressed bytes (declared and actually written).
    pub max_total_bytes: u64,
    /// Number of entries in the central directory.
    pub max_entries: u64,
    /// Largest uncompressed:compressed ratio, per entry and for the whole archive.
    pub max_ratio: u64,
    /// Entries (and archives) smaller than this are exempt from the ratio check, so that small,
    /// highly repetitive files do not trip it.
    pub ratio_min_size: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_total_bytes: 1 << 30,
            max_entries: 100_000,
            max_ratio: 200,
            ratio_min_size: 1 << 20,
        }
    }
}

impl ExtractLimits {
    /// Looser limits for artifact zips coming back from a worker we asked to run a job (large
    /// `stdout` files and fact caches for many hosts are normal there).
    pub fn artifacts() -> Self {
        ExtractLimits {
            max_total_bytes: 16 << 30,
            max_entries: 1_000_000,
            max_ratio: 1100,
            ratio_min_size: 1 << 20,
        }
    }
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Entries left alone because the path already existed as a directory (or was a FIFO).
    pub skipped: u64,
    /// Uncompressed bytes written.
    pub bytes: u64,
}

/// Why extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("refused zip entry {entry:?}: {rule}")]
    Refused { entry: String, rule: &'static str },
    #[error("zip entry {entry:?} conflicts with an existing path: {what}")]
    Conflict { entry: String, what: &'static str },
    #[error("bad zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Rule names used in [`ExtractError::Refused`].
pub mod rule {
    pub const ABSOLUTE: &str = "absolute path";
    pub const PARENT: &str = "parent directory (..) component";
    pub const BAD_NAME: &str = "NUL byte in name";
    pub const BACKSLASH: &str = "backslash in name (a Windows path separator)";
    pub const SYMLINK_OUT: &str = "symlink pointing outside the directory";
    pub const SYMLINK_TARGET: &str = "invalid symlink target";
    pub const THROUGH_SYMLINK: &str = "path through a symlink";
    pub const SPECIAL: &str = "special file (device/FIFO/socket)";
    pub const TOTAL: &str = "total size limit";
    pub const COUNT: &str = "entry count limit";
    pub const RATIO: &str = "compression ratio limit";
    pub const OVERSIZE: &str = "entry larger than its declared size";
}

/// Longest symlink target accepted (Linux `PATH_MAX` minus the NUL).
const MAX_LINK: u64 = 4095;
const COPY_BUF: usize = 64 * 1024;
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// One validated entry.
#[derive(Debug)]
struct Plan {
    index: usize,
    name: String,
    parts: Vec<String>,
    kind: Kind,
    mode: u32,
    size: u64,
    mtime: Option<i64>,
}

fn refused(entry: &str, rule: &'static str) -> ExtractError {
    ExtractError::Refused { entry: entry.to_owned(), rule }
}

fn io_zip(e: io::Error) -> ExtractError {
    ExtractError::Zip(e.into())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io { path: path.to_owned(), source }
}

/// Opens the spooled zip at `zip_path` and extracts it into `dest` (see [`extract_zip`]).
pub fn extract_zip_path(
    zip_path: &Path,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    let f = File::open(zip_path).map_err(io_err(zip_path))?;
    extract_zip(f, dest, limits)
}

/// Extracts the archive read from `zip` into `dest` (created if missing), enforcing the rules
/// in the module docs. Every entry is validated before anything is written.
pub fn extract_zip<R: Read + Seek>(
    mut zip: R,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    let bound = guard::bound_entry_count(&mut zip, limits.max_entries).map_err(io_zip)?;
    bound.map_err(|r| refused("(central directory)", r))?;
    let mut archive = ZipArchive::new(zip)?;
    let plans = plan_all(&mut archive, limits)?;
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    let mut stats = ExtractStats::default();
    for plan in &plans {
        let mut file = archive.by_index(plan.index)?;
        extract_one(&mut file, plan, dest, limits, &mut stats)?;
    }
    Ok(stats)
}

/// Validates every entry from the central directory: names, types, declared sizes, ratios and
/// paths that would pass through a symlink entry of the same archive.
fn plan_all<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    limits: &ExtractLimits,
) -> Result<Vec<Plan>, ExtractError> {
    let count = archive.len();
    if count as u64 > limits.max_entries {
        let idx = usize::try_from(limits.max_entries).unwrap_or(usize::MAX);
        let name = archive.name_for_index(idx).unwrap_or_default().to_owned();
        return Err(refused(&name, rule::COUNT));
    }
    let (mut plans, mut total, mut packed) = (Vec::with_capacity(count), 0u64, 0u64);
    for index in 0..count {
        let file = archive.by_index_raw(index)?;
        let Some(plan) = plan_entry(&file, index, limits)? else {
            continue;
        };
        total = total.saturating_add(plan.size);
        packed = packed.saturating_add(file.compressed_size());
        if total > limits.max_total_bytes {
            return Err(refused(&plan.name, rule::TOTAL));
        }
        plans.push(plan);
    }
    if total >= limits.ratio_min_size && total / packed.max(1) > limits.max_ratio {
        let last = plans.last().map(|p| p.name.as_str()).unwrap_or_default();
        return Err(refused(last, rule::RATIO));
    }
    let links: HashSet<&[String]> =
        plans.iter().filter(|p| p.kind == Kind::Symlink).map(|p| p.parts.as_slice()).collect();
    for p in &plans {
        if (1..p.parts.len()).any(|n| links.contains(&p.parts[..n])) {
            return Err(refused(&p.name, rule::THROUGH_SYMLINK));
        }
    }
    Ok(plans)
}

/// Validates one entry. `None` for names that normalise to the destination itself.
fn plan_entry<R: Read>(
    file: &ZipFile<'_, R>,
    index: usize,
    limits: &ExtractLimits,
) -> Result<Option<Plan>, ExtractError> {
    let name = file.name().to_owned();
    let parts = guard::split_name(&name).map_err(|r| refused(&name, r))?;
    if parts.is_empty() {
        return Ok(None);
    }
    let raw_mode = file.unix_mode();
    let ftype = raw_mode.unwrap_or(0) & S_IFMT;
    let kind = match ftype {
        0o020_000 | 0o060_000 | 0o010_000 | 0o140_000 => return Err(refused(&name, rule::SPECIAL)),
        S_IFLNK => Kind::Symlink,
        _ if name.ends_with('/') => Kind::Dir,
        _ => Kind::File,
    };
    let default = if kind == Kind::Dir { 0o755 } else { 0o644 };
    let mut mode = raw_mode.map_or(default, |m| m & 0o1777);
    if kind == Kind::Dir {
        mode |= 0o700;
    }
    let size = file.size();
    if size >= limits.ratio_min_size && size / file.compressed_size().max(1) > limits.max_ratio {
        return Err(refused(&name, rule::RATIO));
    }
    if kind == Kind::Symlink && size > MAX_LINK {
        return Err(refused(&name, rule::SYMLINK_TARGET));
    }
    let mtime = file.last_modified().and_then(dos_to_unix);
    Ok(Some(Plan { index, name, parts, kind, mode, size, mtime }))
}

/// The entry's DOS timestamp (read as UTC) in Unix seconds; `None` if the fields are invalid.
fn dos_to_unix(t: zip::DateTime) -> Option<i64> {
    dostime::unix_from_civil(&Civil {
        year: i64::from(t.year()),
        month: t.month(),
        day: t.day(),
        hour: t.hour(),
        minute: t.minute(),
        second: t.second(),
    })
}

fn conflict(plan: &Plan, what: &'static str) -> ExtractError {
    ExtractError::Conflict { entry: plan.name.clone(), what }
}

/// Creates the missing parents of `plan` under `dest`, refusing to pass through symlinks.
fn ensure_parents(dest: &Path, plan: &Plan) -> Result<PathBuf, ExtractError> {
    let mut cur = dest.to_path_buf();
    for part in &plan.parts[..plan.parts.len() - 1] {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(&plan.name, rule::THROUGH_SYMLINK));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(conflict(plan, "a parent path is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io_err(&cur))?;
            }
            Err(e) => {
                return Err(ExtractError::Io { path: cur, source: e });
            }
        }
    }
    Ok(cur.join(&plan.parts[plan.parts.len() - 1]))
}

/// What is at the target path right now (never following a symlink).
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Nothing,
    Dir,
    Fifo,
    Symlink,
    Other,
}

fn existing(path: &Path) -> Result<Existing, ExtractError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(Existing::Dir),
        Ok(m) if m.file_type().is_fifo() => Ok(Existing::Fifo),
        Ok(m) if m.file_type().is_symlink() => Ok(Existing::Symlink),
        Ok(_) => Ok(Existing::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(e) => Err(ExtractError::Io { path: path.to_owned(), source: e }),
    }
}

fn extract_one<R: Read>(
    file: &mut ZipFile<'_, R>,
    plan: &Plan,
    dest: &Path,
    limits: &ExtractLimits,
    stats: &mut ExtractStats,
) -> Result<(), ExtractError> {
    let path = ensure_parents(dest, plan)?;
    let now = existing(&path)?;
    let remove = |p: &Path| fs::remove_file(p).map_err(io_err(p));
    match (plan.kind, now) {
        // Python: an existing directory (or a FIFO, which is removed) means "skip this entry".
        (Kind::Dir | Kind::File, Existing::Dir) => stats.skipped += 1,
        (Kind::Dir | Kind::File, Existing::Fifo) => {
            remove(&path)?;
            stats.skipped += 1;
        }
        // A symlink (possibly to a directory) is left alone: nothing is written through it,
        // and later entries below it are refused.
        (Kind::Dir, Existing::Symlink) => stats.skipped += 1,
        (Kind::Dir, Existing::Other) => {
            return Err(conflict(plan, "a file exists where a directory is expected"));
        }
        (Kind::Dir, Existing::Nothing) => make_dir(&path, plan, stats)?,
        (Kind::Symlink, Existing::Dir) => {
            return Err(conflict(plan, "a directory exists where a symlink is expected"));
        }
        (Kind::File | Kind::Symlink, ex) => {
            if ex != Existing::Nothing {
                remove(&path)?;
            }
            if plan.kind == Kind::File {
                write_file(file, &path, plan, limits, stats)?;
            } else {
                make_symlink(file, &path, plan, limits, stats)?;
            }
        }
    }
    Ok(())
}

fn make_dir(path: &Path, plan: &Plan, stats: &mut ExtractStats) -> Result<(), ExtractError> {
    fs::DirBuilder::new().mode(0o700).create(path).map_err(io_err(path))?;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_DIRECTORY;
    let dir = OpenOptions::new().read(true).custom_flags(flags.bits()).open(path).map_err(io_err(path))?;
    finish_handle(&dir, path, plan)?;
    stats.dirs += 1;
    Ok(())
}

/// Sets mode and mtime on an open handle, so no symlink can redirect the change.
fn finish_handle(f: &File, path: &Path, plan: &Plan) -> Result<(), ExtractError> {
    f.set_permissions(fs::Permissions::from_mode(plan.mode)).map_err(io_err(path))?;
    if let Some(secs) = plan.mtime {
        let t = if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        let times = fs::FileTimes::new().set_accessed(t).set_modified(t);
        f.set_times(times).map_err(io_err(path))?;
    }
    Ok(())
}

fn write_file<R: Read>(
    file: &mut ZipFile<'_, R>,
    path: &Path,
    plan: &Plan,
    limits: &ExtractLimits,
    stats: &mut ExtractStats,
) -> Result<(), ExtractError> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(io_err(path))?;
    let mut buf = vec![0u8; COPY_BUF];
    let mut written = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_zip(e)),
        };
        written += n as u64;
        stats.bytes += n as u64;
        if written > plan.size {
            return Err(refused(&plan.name, rule::OVERSIZE));
        }
        if stats.bytes > limits.max_total_bytes {
            return Err(refused(&plan.name, rule::TOTAL));
        }
        io::Write::write_all(&mut out, &buf[..n]).map_err(io_err(path))?;
    }
    finish_handle(&out, path, plan)?;
    stats.files += 1;
    Ok(())
}

fn make_symlink<R: Read>(
    file: &mut ZipFile<'_, R>,
    path: &Path,
    plan: &Plan,
    limits: &ExtractLimits,
    stats: &mut ExtractStats,
) -> Result<(), ExtractError> {
    let mut target = Vec::new();
    file.take(MAX_LINK + 1).read_to_end(&mut target).map_err(io_zip)?;
    if target.len() as u64 > plan.size {
        return Err(refused(&plan.name, rule::OVERSIZE));
    }
    stats.bytes += target.len() as u64;
    if stats.bytes > limits.max_total_bytes {
        return Err(refused(&plan.name, rule::TOTAL));
    }
    guard::check_link_target(plan.parts.len() - 1, &target).map_err(|r| refused(&plan.name, r))?;
    let target = std::ffi::OsStr::from_bytes(&target);
    std::os::unix::fs::symlink(target, path).map_err(io_err(path))?;
    stats.symlinks += 1;
    Ok(())
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
