//! A relay killed with kill -9 and back a few seconds later on the same address: the nodes
//! that dial it link again and traffic through it resumes. Prints how long after the
//! relay was ready that took (the goal, ≤ 3 s, is a figure to read, not an assertion:
//! docs/PROTOCOL.md §4.1 for the redial schedule).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A port free now, for a listener that must come back on the same address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn nodes_relink_to_a_restarted_relay_and_traffic_resumes() {
    let port = free_port();
    let listener = format!("[[listeners]]\nurl = \"receptor://127.0.0.1:{port}\"\n");
    let mut spec = Spec::new("hub").extra(&listener).extra(FAST_MESH);
    spec.listen = false;
    let mut hub = Daemon::start(spec);
    let alpha = Daemon::start(Spec::new("alpha").peer(port).extra(FAST_MESH));
    let _beta = Daemon::start(Spec::new("beta").peer(port).extra(FAST_MESH));
    wait_route(&alpha, "beta");
    let mut figures = Vec::new();
    for round in 1..=3 {
        hub.kill();
        // Down long enough for the dialers' backoff to reach its cap.
        wait_until("alpha sees beta gone", Duration::from_secs(20), || {
            !receptor(&alpha, &["ping", "beta", "-c", "1", "--timeout", "200ms"]).status.success()
        });
        std::thread::sleep(Duration::from_secs(5));
        hub.restart();
        let ready = Instant::now();
        let mut resumed = None;
        while ready.elapsed() < Duration::from_secs(30) {
            if receptor(&alpha, &["ping", "beta", "-c", "1", "--timeout", "200ms"]).status.success() {
                resumed = Some(ready.elapsed());
                break;
            }
        }
        let resumed =
            resumed.unwrap_or_else(|| panic!("round {round}: no traffic 30 s after the relay was back"));
        figures.push(resumed);
        println!(
            "round {round}: traffic through the restarted relay resumed {resumed:.2?} after it was ready"
        );
    }
    let worst = figures.iter().max().expect("rounds");
    println!("worst of {}: {worst:.2?} (goal ≤ 3 s)", figures.len());
}
