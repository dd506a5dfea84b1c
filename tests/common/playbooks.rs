//! Playbooks, private data dirs and artifact comparisons shared by the ansible-runner
//! tests: the same play run remotely and by the real local `ansible-runner run`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{path_with_venv, venv_bin};

pub const PLAY: &str = "---
- name: Two task play
  hosts: all
  gather_facts: false
  tasks:
    - name: first task
      ansible.builtin.debug:
        msg: \"hello {{ greeting }}\"
    - name: second task
      ansible.builtin.command: echo task-two
      changed_when: false
";

pub const FAILING: &str = "---
- hosts: all
  gather_facts: false
  tasks:
    - name: this fails
      ansible.builtin.fail:
        msg: deliberate failure
";

pub const PAUSING: &str = "---
- hosts: all
  gather_facts: false
  tasks:
    - name: before the pause
      ansible.builtin.debug:
        msg: early
    - name: pause
      ansible.builtin.pause:
        seconds: PAUSE_SECONDS
    - name: after the pause
      ansible.builtin.debug:
        msg: late
";

/// A private data dir with `playbook` as project/test.yml.
pub fn make_pdd(playbook: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    for d in ["project", "inventory", "env"] {
        std::fs::create_dir(p.join(d)).expect("mkdir");
    }
    std::fs::write(p.join("project/test.yml"), playbook).expect("playbook");
    std::fs::write(
        p.join("inventory/hosts"),
        "localhost ansible_connection=local ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n",
    )
    .expect("inventory");
    std::fs::write(p.join("env/extravars"), "{\"greeting\": \"hi\"}\n").expect("extravars");
    dir
}

/// Runs `playbook` with the real `ansible-runner run`; returns its private data dir and
/// the run's artifact dir.
pub fn local_run(playbook: &str, ident: &str) -> (tempfile::TempDir, PathBuf) {
    let pdd = make_pdd(playbook);
    let st = Command::new(venv_bin().join("ansible-runner"))
        .env("PATH", path_with_venv())
        .arg("run")
        .arg(pdd.path())
        .args(["-p", "test.yml", "-i", ident])
        .stdout(Stdio::null())
        .status()
        .expect("ansible-runner run");
    assert!(st.success());
    let art = pdd.path().join("artifacts").join(ident);
    (pdd, art)
}

/// (counter, event) pairs of an artifact dir's job_events, in counter order.
pub fn events(artifact_dir: &Path) -> Vec<String> {
    let mut evs: Vec<(u64, String)> = std::fs::read_dir(artifact_dir.join("job_events"))
        .expect("job_events")
        .map(|e| {
            let text = std::fs::read_to_string(e.expect("entry").path()).expect("event file");
            let v: serde_json::Value = serde_json::from_str(&text).expect("event json");
            (v["counter"].as_u64().expect("counter"), v["event"].as_str().expect("event").to_owned())
        })
        .collect();
    evs.sort();
    evs.into_iter().map(|(_, e)| e).collect()
}

/// Relative paths under `dir`, with job event files reduced to a count placeholder.
pub fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let rel = e.path().strip_prefix(dir).expect("prefix").to_string_lossy().into_owned();
            if rel.starts_with("job_events/") {
                continue;
            }
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            }
            out.insert(rel);
        }
    }
    out
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A short play that keeps running for a few seconds: output, several 1 s sleeps, output.
pub const SLEEPY: &str = "---
- hosts: all
  gather_facts: false
  tasks:
    - name: before the sleeps
      ansible.builtin.debug:
        msg: early
    - name: sleep 1
      ansible.builtin.command: sleep 1
      changed_when: false
    - name: sleep 2
      ansible.builtin.command: sleep 1
      changed_when: false
    - name: sleep 3
      ansible.builtin.command: sleep 1
      changed_when: false
    - name: sleep 4
      ansible.builtin.command: sleep 1
      changed_when: false
    - name: sleep 5
      ansible.builtin.command: sleep 1
      changed_when: false
    - name: after the sleeps
      ansible.builtin.debug:
        msg: late
";
