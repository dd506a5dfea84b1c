//! Work units through the real receptorctl: submit, list, wait for a state, read results.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{receptorctl, stderr, stdout, wait_until};

/// The unit directories in a node's `units/` (its `.released/`, where released units wait
/// for their deletion, is not one).
pub fn unit_dirs(units: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(units).into_iter().flatten().flatten();
    entries.filter(|e| !e.file_name().to_string_lossy().starts_with('.')).map(|e| e.path()).collect()
}

pub fn list(sock: &Path) -> Value {
    let out = receptorctl(sock, &["work", "list"]);
    assert!(out.status.success(), "work list: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("work list is JSON")
}

pub fn unit_status(sock: &Path, id: &str) -> Value {
    list(sock)[id].clone()
}

/// Submits without following; returns the unit ID.
pub fn submit(sock: &Path, args: &[&str]) -> String {
    let mut all = vec!["work", "submit"];
    all.extend_from_slice(args);
    let out = receptorctl(sock, &all);
    assert!(out.status.success(), "submit {args:?}: {}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    text.lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .unwrap_or_else(|| panic!("no unit ID in {text}"))
        .trim()
        .to_owned()
}

pub fn wait_state(sock: &Path, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("unit {id} {state}"), Duration::from_secs(30), || {
        last = unit_status(sock, id);
        last["StateName"] == state
    });
    last
}

pub fn results(sock: &Path, id: &str) -> String {
    let out = receptorctl(sock, &["work", "results", id]);
    stdout(&out)
}

/// Work types for the tests: `echo` prints its payload then `done`; `sh` runs what the
/// submitter passes in `params`.
pub const UNIT_WORK: &str = r#"
[[work.command]]
name = "echo"
program = "/bin/sh"
args = ["-c", "cat; echo done"]
[[work.command]]
name = "sh"
program = "/bin/sh"
allow_runtime_params = true
"#;

/// Reads one line from a raw session.
pub fn read_reply(r: &mut BufReader<UnixStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("reply");
    l
}
