//! Work-unit benchmarks (`make bench`), on loopback through the control socket as
//! receptorctl drives it: `work results` throughput of a 1 GiB unit, on the local node
//! (following it while it runs, and reading it back once complete) and mirrored from a
//! node three hops away; and submit-to-first-byte latency, local and remote. A raw
//! loopback TCP copy of the same size is measured in the same run for reference.
//! Figures only: nothing here asserts on time.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "common/mod.rs"]
mod harness;
use harness::Daemon;

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const SIZE: u64 = 1 << 30;
const RUNS: usize = 3;
const LATENCY_RUNS: usize = 20;

const WORK: &str = "[[work.command]]\nname = \"gen\"\nprogram = \"head\"\nargs = [\"-c\", \"1073741824\", \"/dev/zero\"]\n\
[[work.command]]\nname = \"hello\"\nprogram = \"echo\"\nargs = [\"hello\"]\n[work]\nunit_retention = \"0s\"\n";

fn start(dir: &Path, id: &str, peer: Option<u16>) -> Daemon {
    let extra = format!("[control]\nsocket = \"{}\"\n{WORK}", dir.join(format!("{id}.sock")).display());
    harness::spawn(RECEPTORD, &harness::node_config(dir, id, peer, None, &extra, ""), None)
}

/// A control session: the greeting read.
fn session(sock: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let s = UnixStream::connect(sock).expect("connect");
    let w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).expect("greeting");
    (r, w)
}

/// `work submit` with an empty payload; returns the unit ID.
fn submit(sock: &Path, node: &str, work_type: &str) -> String {
    let (mut r, mut w) = session(sock);
    writeln!(
        w,
        "{{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"{node}\",\"worktype\":\"{work_type}\"}}"
    )
    .expect("write");
    let mut line = String::new();
    r.read_line(&mut line).expect("created");
    let id = line.split("with ID ").nth(1).and_then(|s| s.split('.').next()).expect("unit id").to_owned();
    w.shutdown(std::net::Shutdown::Write).expect("shutdown");
    line.clear();
    r.read_line(&mut line).expect("reply");
    assert!(line.contains("Job"), "{line}");
    id
}

/// `work results ID 0`: the stream, opened; the header read.
fn results(sock: &Path, id: &str) -> BufReader<UnixStream> {
    let (mut r, mut w) = session(sock);
    writeln!(w, "work results {id} 0").expect("write");
    let mut header = String::new();
    r.read_line(&mut header).expect("header");
    assert!(header.starts_with("Streaming results"), "{header}");
    w.shutdown(std::net::Shutdown::Write).expect("shutdown");
    r
}

fn release(sock: &Path, id: &str) {
    let (mut r, mut w) = session(sock);
    writeln!(w, "work release {id}").expect("write");
    let mut line = String::new();
    r.read_line(&mut line).expect("reply");
}

/// Seconds to submit `gen` on `node` and follow its results to the end; then seconds to
/// read the complete unit again from node1.
fn unit_run(sock: &Path, node: &str) -> (f64, f64) {
    let start = Instant::now();
    let id = submit(sock, node, "gen");
    let n = harness::drain(results(sock, &id));
    let follow = start.elapsed().as_secs_f64();
    assert_eq!(n, SIZE, "every byte arrived");
    let start = Instant::now();
    let n = harness::drain(results(sock, &id));
    let reread = start.elapsed().as_secs_f64();
    assert_eq!(n, SIZE);
    release(sock, &id);
    (follow, reread)
}

/// Milliseconds from sending `work submit` to the first byte of `work results`.
fn first_byte_ms(sock: &Path, node: &str) -> f64 {
    let start = Instant::now();
    let id = submit(sock, node, "hello");
    let mut r = results(sock, &id);
    let mut byte = [0u8; 1];
    r.read_exact(&mut byte).expect("first byte");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    harness::drain(r);
    release(sock, &id);
    ms
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn wait_route(sock: &Path, node: &str) {
    for _ in 0..200 {
        let (mut r, mut w) = session(sock);
        writeln!(w, "ping {node}").expect("write");
        let mut line = String::new();
        r.read_line(&mut line).expect("reply");
        if line.contains("\"Success\":true") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no route to {node}");
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = start(dir.path(), "node1", None);
    let n2 = start(dir.path(), "node2", Some(n1.port));
    let n3 = start(dir.path(), "node3", Some(n2.port));
    let sock: PathBuf = dir.path().join("node1.sock");
    wait_route(&sock, "node3");

    let raw = median((0..RUNS).map(|_| harness::raw_tcp_run(SIZE)).collect());
    let local: Vec<(f64, f64)> = (0..RUNS).map(|_| unit_run(&sock, "localhost")).collect();
    let remote: Vec<(f64, f64)> = (0..RUNS).map(|_| unit_run(&sock, "node3")).collect();
    let fb_local = median((0..LATENCY_RUNS).map(|_| first_byte_ms(&sock, "localhost")).collect());
    let fb_remote = median((0..LATENCY_RUNS).map(|_| first_byte_ms(&sock, "node3")).collect());
    drop((n3, n2, n1));

    let mib = |secs: f64| SIZE as f64 / (1 << 20) as f64 / secs;
    let follow_local = median(local.iter().map(|r| r.0).collect());
    let reread_local = median(local.iter().map(|r| r.1).collect());
    let follow_remote = median(remote.iter().map(|r| r.0).collect());
    println!("| figure (loopback, median of {RUNS} unless noted) | value |");
    println!("|---|---|");
    println!("| raw loopback TCP copy, 1 GiB | {:.0} MiB/s |", mib(raw));
    println!(
        "| local unit, 1 GiB: submit and follow `work results` to the end | {:.0} MiB/s |",
        mib(follow_local)
    );
    println!("| local unit, 1 GiB: `work results` of the completed unit | {:.0} MiB/s |", mib(reread_local));
    println!(
        "| remote unit 3 hops away, 1 GiB: submit, mirror and follow to the end | {:.0} MiB/s (ratio to raw TCP {:.3}) |",
        mib(follow_remote),
        raw / follow_remote
    );
    println!("| submit to first result byte, local, median of {LATENCY_RUNS} | {fb_local:.1} ms |");
    println!("| submit to first result byte, 3 hops, median of {LATENCY_RUNS} | {fb_remote:.1} ms |");
}
