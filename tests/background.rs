//! What a job leaves running, against real daemons and the real ansible-runner: a job that
//! ends by itself keeps its `async: N, poll: 0` tasks, `nohup … &`, `setsid -f` and
//! `become` background processes running (as a local `ansible-runner run` does); a
//! cancelled job loses its whole tree, background processes included.

mod common;

use std::path::Path;
use std::time::Duration;

use common::playbooks::*;
use common::*;

/// Kills the processes mentioning any of `tags` when dropped (a failed test leaves nothing).
struct Reaper(Vec<String>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for tag in &self.0 {
            for pid in processes_mentioning(tag) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
    }
}

/// `sleep` arguments unique to this test process (other runs may share the host).
fn tags(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("900.{}{k}", std::process::id())).collect()
}

/// The start of a play whose first two tasks leave `sleep {a}` (async, poll 0) and
/// `sleep {b}` (nohup &) running.
fn play_leaving_two(a: &str, b: &str) -> String {
    format!(
        "---
- hosts: all
  gather_facts: false
  tasks:
    - name: async, poll 0
      ansible.builtin.command: sleep {a}
      async: 600
      poll: 0
    - name: nohup in the background
      ansible.builtin.shell: nohup sleep {b} >/dev/null 2>&1 &
"
    )
}

/// A play that leaves four processes running in four ways, then ends.
fn leaving_play(t: &[String]) -> String {
    format!(
        "{}    - name: setsid -f
      ansible.builtin.shell: setsid -f sleep {} >/dev/null 2>&1
    - name: become, in the background
      ansible.builtin.shell: nohup sleep {} >/dev/null 2>&1 &
      become: true
      become_method: ansible.builtin.su
    - name: done
      ansible.builtin.debug:
        msg: all started
",
        play_leaving_two(&t[0], &t[1]),
        t[2],
        t[3]
    )
}

fn alive(tag: &str) -> bool {
    !processes_mentioning(tag).is_empty()
}

fn node3_with_socket(dir: &Path) -> (Daemon, Daemon, std::path::PathBuf) {
    let (ctl, sock) = with_socket("node3", dir);
    let n1 = Daemon::start(Spec::new("node1"));
    let n3 = Daemon::start(Spec::new("node3").peer(n1.port).with_ansible().extra(&ctl));
    wait_route(&n1, "node3");
    (n1, n3, sock)
}

#[test]
fn a_finished_remote_run_leaves_its_background_processes_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, n3, sock) = node3_with_socket(dir.path());
    let t = tags(4);
    let _reaper = Reaper(t.clone());
    let pdd = make_pdd(&leaving_play(&t));
    let out = receptor_cmd(&n1)
        .env("PATH", path_without_venv())
        .arg("run")
        .arg(pdd.path())
        .args(["-p", "test.yml", "--via-receptor", "node3", "-i", "bg1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("all started"), "{}", stdout(&out));
    let listed = stdout(&receptorctl(&sock, &["work", "list"]));
    assert_eq!(listed.trim(), "{}", "the unit is released at the end");
    for tag in &t {
        assert!(alive(tag), "`sleep {tag}` outlives the job: {}", n3.log());
    }
    // Their TMPDIR is kept while they run (only a later job's start removes it, once they are gone).
    let kept: Vec<_> = std::fs::read_dir(n3.data_dir().join("tmp")).expect("tmp root").flatten().collect();
    assert_eq!(kept.len(), 1, "the job's TMPDIR is kept for what it left running");
}

#[test]
fn a_finished_local_run_leaves_its_background_processes_running() {
    // No --via-receptor: the job runs through the client's own node (a job stream).
    let t = tags(4);
    let _reaper = Reaper(t.clone());
    let pdd = make_pdd(&leaving_play(&t));
    let out = std::process::Command::new(RECEPTOR)
        .env("PATH", path_with_venv())
        .arg("run")
        .arg(pdd.path())
        .args(["-p", "test.yml", "-i", "bg2"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    for tag in &t {
        assert!(alive(tag), "`sleep {tag}` outlives the job");
    }
}

#[test]
fn a_command_whose_background_child_holds_stdout_still_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let t = tags(1);
    let _reaper = Reaper(t.clone());
    let work = format!(
        "{ctl}[[work.command]]\nname = \"bg\"\nprogram = \"sh\"\nargs = [\"-c\", \"sleep {} & echo started\"]\n",
        t[0]
    );
    let _n1 = Daemon::start(Spec::new("node1").extra(&work));
    let out = receptorctl(&sock, &["work", "submit", "bg", "--no-payload", "-f"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "started\n");
    assert!(alive(&t[0]), "the background child (which held stdout open) keeps running");
}

#[test]
fn a_cancelled_run_stops_its_background_processes_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, _n3, sock) = node3_with_socket(dir.path());
    let t = tags(2);
    let _reaper = Reaper(t.clone());
    let play = format!(
        "{}    - name: before the pause
      ansible.builtin.debug:
        msg: early
    - name: pause
      ansible.builtin.pause:
        seconds: 300
",
        play_leaving_two(&t[0], &t[1])
    );
    let pdd = make_pdd(&play);
    let mut cmd = receptor_cmd(&n1);
    cmd.env("PATH", path_without_venv())
        .arg("run")
        .arg(pdd.path())
        .args(["-p", "test.yml", "--via-receptor", "node3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut client = cmd.spawn().expect("run");
    wait_until("both background processes", Duration::from_secs(60), || t.iter().all(|t| alive(t)));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(client.id() as i32), nix::sys::signal::SIGINT)
        .expect("SIGINT");
    wait_until("the client to exit", Duration::from_secs(30), || client.try_wait().expect("wait").is_some());
    wait_until("background processes stopped with the job", Duration::from_secs(20), || {
        t.iter().all(|t| !alive(t))
    });
    assert_eq!(stdout(&receptorctl(&sock, &["work", "list"])).trim(), "{}");
}
