//! The daemon gives back its executable's start-up pages (`alloc::executable_pages`,
//! `daemon::memory`) once ready, again once settled and after a reload: a line of three
//! keeps routing, answering pings and running work across a hop after each of these
//! releases. Figures (idle RSS, PSS) are printed by `benches/awx.rs`, never asserted here.

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
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = dir.path().join("payload");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
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
