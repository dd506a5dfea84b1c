//! The on-disk layout's small pieces: unit IDs, supervisor liveness and PIDs, and JSON
//! files written atomically (fsynced) with a full-disk fallback.

use super::*;

pub(super) fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> UnitError {
    let msg = format!("{what} {}", path.display());
    move |e| UnitError::Io(format!("{msg}: {e}"))
}

/// A fresh unit ID: 8 letters and digits from the OS's random source.
pub(super) fn new_id() -> String {
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
pub(crate) fn supervisor_pid(dir: &Path, st: &UnitStatus) -> Option<nix::unistd::Pid> {
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

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Reads a unit's `status` file (bounded; `None` if missing or malformed).
pub fn read_status(dir: &Path) -> Option<UnitStatus> {
    read_json(&dir.join("status"))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let file = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(MAX_META_FILE).read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

/// Writes JSON (plus a newline) atomically: a temporary file, synced, renamed over the old
/// one. When the disk is full the temporary file cannot be written; the small file is then
/// rewritten in place, in the blocks it frees, so a status still tells the truth (a crash
/// during that rewrite can leave it unreadable, which readers treat as missing).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), UnitError> {
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
