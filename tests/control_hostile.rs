//! Hostile control clients cannot lock the local operator out: one origin gets at most
//! `limits.control_sessions_per_origin` sessions, remote clients together never take the
//! `limits.control_local_reserved` slots of the Unix socket, and a client that stops
//! reading is closed after `limits.control_write_timeout`, giving its slot back.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use common::hostile::connect_from;
use common::units::{submit, wait_state};
use common::*;

const TCP: &str = "tcp_listen = \"127.0.0.1:0\"\ninsecure_plaintext_control = true\n";

/// The first line the daemon says on `s` (empty if it closed without a word).
fn first_line(s: &TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut line = String::new();
    let _ = BufReader::new(s.try_clone().expect("clone")).read_line(&mut line);
    line
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

#[test]
fn a_crowd_of_idle_tcp_clients_cannot_lock_out_the_local_operator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("n1", dir.path());
    let mut spec = Spec::new("n1").extra(&ctl).extra(TCP);
    spec.listen = false;
    let d = Daemon::start(spec);
    let port = control_port(&d);

    // One origin: 32 sessions (limits.control_sessions_per_origin), the rest told why.
    let one: Vec<TcpStream> = (0..40).map(|_| connect_from(loopback(9), port).expect("connect")).collect();
    let said: Vec<String> = one.iter().map(first_line).collect();
    let served = said.iter().filter(|l| l.starts_with("Receptor Control")).count();
    let capped = said.iter().filter(|l| l.contains("control_sessions_per_origin")).count();
    assert_eq!((served, capped), (32, 8), "{said:?}");
    drop(one);

    // 140 idle clients from five addresses: remote clients share 120 of the 128 sessions;
    // the 8 kept for the Unix socket stay free.
    let crowd: Vec<TcpStream> =
        (0..140).map(|i| connect_from(loopback(2 + (i % 5) as u8), port).expect("connect")).collect();
    let said: Vec<String> = crowd.iter().map(first_line).collect();
    let served = said.iter().filter(|l| l.starts_with("Receptor Control")).count();
    assert!(served <= 120, "remote clients never take the local reserve: {served} served");
    assert!(said.iter().any(|l| l.contains("too many control sessions")), "the rest are told why");
    for round in 0..3 {
        let out = receptorctl(&sock, &["status"]);
        assert!(out.status.success(), "round {round}: the local operator gets in: {}", stderr(&out));
    }
    drop(crowd);
}

#[test]
fn a_client_that_never_reads_is_closed_and_its_slot_given_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("n1", dir.path());
    let big = "[[work.command]]\nname = \"big\"\nprogram = \"sh\"\nargs = [\"-c\", \"head -c 64000000 /dev/zero\"]\n";
    let limits =
        "[limits]\ncontrol_sessions = 3\ncontrol_local_reserved = 1\ncontrol_write_timeout = \"2s\"\n";
    let mut spec = Spec::new("n1").extra(&ctl).extra(TCP).extra(big).extra(limits);
    spec.listen = false;
    let d = Daemon::start(spec);
    let port = control_port(&d);
    let id = submit(&sock, &["big", "--no-payload"]);
    wait_state(&sock, &id, "Succeeded");
    // Two remote clients ask for 64 MB of output each and never read it.
    let request =
        format!("{{\"command\":\"work\",\"subcommand\":\"results\",\"unitid\":\"{id}\",\"startpos\":0}}\n");
    let stuck: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            assert!(first_line(&s).starts_with("Receptor Control"));
            s.write_all(request.as_bytes()).expect("request");
            s
        })
        .collect();
    // The remote share (3 - 1 reserved) is taken while they are stuck…
    let third = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    assert!(first_line(&third).contains("too many control sessions"), "remote slots are held");
    // …and comes back once the write deadline closes them.
    wait_until("a stuck client's slot is given back", Duration::from_secs(30), || {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        first_line(&s).starts_with("Receptor Control")
    });
    // What a stuck client got ends short of the output: it was cut off, not served.
    let mut got = Vec::new();
    let mut s = stuck.into_iter().next().expect("stuck");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let _ = s.read_to_end(&mut got);
    assert!(got.len() < 64_000_000, "cut off after limits.control_write_timeout ({} bytes)", got.len());
}
