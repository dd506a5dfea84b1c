//! The daemon gives back its executable's start-up pages (`alloc::executable_pages`,
//! `daemon::memory`) once ready, again once settled and after a reload: a line of three
//! keeps routing, answering pings and running work across a hop after each of these
//! releases; a work unit's supervisor does the same while its job runs, and still records
//! the job's output and outcome. After a burst of traffic each node gives back the heap
//! it freed once its links are quiet (`alloc::TRAFFIC`). Figures (idle RSS, PSS, and RSS
//! after transfers) are printed by `benches/awx.rs`, never asserted here.

mod common;

use std::time::Duration;

use common::*;

const RELEASED: &str = "releasing the executable's start-up pages";

/// The release the log reports `after` this moment, which must have found the executable.
fn wait_release(d: &Daemon, after: &str) {
    let needle = format!("after=\"{after}\"");
    wait_until(&format!("{} releasing after {after}", d.id), Duration::from_secs(30), || {
        d.log().lines().any(|l| l.contains(RELEASED) && l.contains(&needle))
    });
    let log = d.log();
    let line = log.lines().find(|l| l.contains(RELEASED) && l.contains(&needle)).expect("line");
    assert!(!line.contains("mappings=0 "), "{}: nothing of the executable was found: {line}", d.id);
    assert!(!log.contains("could not release"), "{}: {log}", d.id);
}

/// node1 reaches node3 and runs `cat` there, its payload coming back whole.
fn serves(n1: &Daemon, round: &str) {
    let out = receptor(n1, &["ping", "node3", "-c", "3"]);
    assert!(out.status.success(), "{round}: ping: {}", stderr(&out));
    cat_on_node3(n1, 1_000_000, round);
}

/// `bytes` of payload through `cat` on node3 and back, compared.
fn cat_on_node3(n1: &Daemon, bytes: u32, round: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = dir.path().join("payload");
    let data: Vec<u8> = (0..bytes).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&payload, &data).expect("write payload");
    let p = payload.to_str().expect("utf8 path");
    let out = receptor(n1, &["work", "submit", "cat", "--node", "node3", "--payload", p]);
    assert!(out.status.success(), "{round}: work: {}", stderr(&out));
    assert!(out.stdout == data, "{round}: {} of {} bytes came back", out.stdout.len(), data.len());
}

#[test]
fn a_line_keeps_serving_after_its_nodes_give_back_their_start_up_pages() {
    let (n1, n2, n3) = line3(CAT);
    for d in [&n1, &n2, &n3] {
        wait_release(d, "start-up");
    }
    serves(&n1, "start-up");
    for d in [&n1, &n2, &n3] {
        wait_release(d, "settling");
    }
    serves(&n1, "settling");
    for d in [&n2, &n3] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::SIGHUP)
            .expect("SIGHUP");
        wait_release(d, "reload");
    }
    serves(&n1, "reload");
}

/// A unit's supervisor gives back its start-up pages once the job has run a while, then
/// still writes what the job prints and records how it ended.
#[test]
fn a_units_supervisor_gives_back_its_start_up_pages_and_still_records_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("node1", dir.path());
    let n1 = Daemon::start(Spec::new("node1").extra(&format!("{ctl}{}", common::units::UNIT_WORK)));
    let script = "params=-c 'echo before; sleep 12; seq 1 5000; echo after'";
    let id = common::units::submit(&sock, &["sh", "-n", "-a", script]);
    let log = n1.data_dir().join("units").join(&id).join("supervisor.log");
    wait_until("the supervisor releases", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(RELEASED))
    });
    common::units::wait_state(&sock, &id, "Succeeded");
    let expected: String =
        ["before\n".to_owned(), (1..=5000).map(|i| format!("{i}\n")).collect(), "after\n".into()].concat();
    assert_eq!(common::units::results(&sock, &id), expected);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log.contains("could not release") && !log.contains("panicked"), "{log}");
}

/// A transfer through the line is a burst on every node's links; a few seconds after it
/// each node gives its freed heap back (and says so at debug level), and the line still
/// serves.
#[test]
fn every_node_gives_back_its_freed_heap_once_a_burst_of_traffic_is_over() {
    const QUIET_TRIM: &str = "the links went quiet: freed heap given back";
    let (n1, n2, n3) = line3(&format!("{CAT}[log]\nlevel = \"debug\"\n"));
    cat_on_node3(&n1, 8_000_000, "the burst");
    for d in [&n1, &n2, &n3] {
        wait_until(&format!("{} giving back its heap", d.id), Duration::from_secs(30), || {
            d.log().contains(QUIET_TRIM)
        });
    }
    serves(&n1, "after the heap was given back");
}
