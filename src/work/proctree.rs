//! A job's processes as the kernel sees them (/proc): the process groups of its tree, the
//! processes carrying its marker (descendants that left its group: ansible-runner starts
//! ansible-playbook in a new session, `async` tasks and `setsid` daemonize), and the job
//! TMPDIRs kept for processes a finished job deliberately left running.
//!
//! Stopping a job (cancel, `--timeout`, lease expiry, release, daemon shutdown) signals all
//! of these. A job that ends by itself signals nothing: what it left running (`async: N,
//! poll: 0`, `nohup … &`, `setsid -f`) keeps running, as under a local `ansible-runner run`.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How old a kept TMPDIR must be before a sweep may remove it.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(60);

/// The environment variable carrying a job's marker.
pub const JOB_MARKER: &str = "RECEPTOR_JOB_MARKER";

/// Every marker carried by a live process (one pass over /proc).
fn live_markers() -> HashSet<String> {
    let prefix = format!("{JOB_MARKER}=");
    pids()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
        .filter_map(|env| {
            env.split(|b| *b == 0).find_map(|e| {
                e.strip_prefix(prefix.as_bytes()).map(|m| String::from_utf8_lossy(m).into_owned())
            })
        })
        .collect()
}

fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// The processes whose environment carries `marker`.
pub(super) fn marked(marker: &str) -> Vec<i32> {
    let needle = format!("{JOB_MARKER}={marker}");
    pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|entry| entry == needle.as_bytes()))
        })
        .collect()
}

/// Signals every process whose environment carries `marker`.
pub(super) fn kill_marked(marker: &str, sig: Signal) {
    for pid in marked(marker) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// Whether any process is still in process group `pgid`.
pub(super) fn group_alive(pgid: Pid) -> bool {
    killpg(pgid, None).is_ok()
}

pub(super) fn signal_groups(groups: &BTreeSet<i32>, sig: Signal) {
    for g in groups {
        let _ = killpg(Pid::from_raw(*g), sig);
    }
}

/// The process groups of `root` and all its descendants, from /proc. Never includes the
/// daemon's own group.
pub(super) fn tree_groups(root: Pid) -> BTreeSet<i32> {
    let own = nix::unistd::getpgrp().as_raw();
    let procs = proc_table();
    let mut groups = BTreeSet::from([root.as_raw()]);
    let mut frontier = vec![root.as_raw()];
    while let Some(pid) = frontier.pop() {
        for &(child, ppid, pgrp) in &procs {
            if ppid == pid {
                frontier.push(child);
                groups.insert(pgrp);
            }
        }
    }
    groups.remove(&own);
    groups
}

/// (pid, ppid, pgrp) of every process, read from /proc/PID/stat.
fn proc_table() -> Vec<(i32, i32, i32)> {
    pids()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces and parentheses).
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut f = rest.split_whitespace().skip(1);
            let ppid = f.next()?.parse().ok()?;
            let pgrp = f.next()?.parse().ok()?;
            Some((pid, ppid, pgrp))
        })
        .collect()
}

/// Removes the job TMPDIRs under `root` (each named by its job's marker) whose processes
/// are all gone: those kept because a finished job left processes running. Directories
/// changed in the last minute are left alone (a job creates its TMPDIR just before its
/// first process exists).
pub(super) fn sweep_tmpdirs(root: &Path) {
    let Ok(dir) = std::fs::read_dir(root) else { return };
    let settled = |e: &std::fs::DirEntry| {
        e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a > SETTLED))
    };
    let entries: Vec<_> = dir.flatten().filter(settled).collect();
    if entries.is_empty() {
        return;
    }
    let live = live_markers();
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::debug!(dir = %e.path().display(), error = %err, "cannot remove a kept TMPDIR");
            }
        }
    }
}
