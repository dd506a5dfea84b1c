//! Hostile-load figures (`make bench`): (1) ping round trips between two nodes while a third
//! party floods one of them with 46 MiB of advertisements, with every node's peak RSS;
//! (2) how long a restarted peer takes to relink while 10,000 idle connections are held
//! against its listener. Figures only: nothing here asserts on time. Run with a high
//! open-files limit (the Makefile raises it).

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod harness;
#[path = "../tests/common/hostile.rs"]
#[allow(dead_code)]
mod hostile;

use hostile::{FakePeer, connect_from, encode_all, fat_lsa};
use receptord::wire::Frame;

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");

fn start(dir: &Path, id: &str, peer: Option<u16>) -> harness::Daemon {
    harness::spawn(RECEPTORD, &harness::node_config(dir, id, peer, None, "", ""), None)
}

fn ping(via: u16, node: &str, count: usize, timeout: &str) -> Vec<f64> {
    let out = Command::new(RECEPTOR)
        .args(["--receptor-peer", &format!("receptor://127.0.0.1:{via}")])
        .args(["ping", node, "-c", &count.to_string(), "--interval", "20ms", "--timeout", timeout])
        .output()
        .expect("ping");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(" in ").nth(1)?.strip_suffix(" ms")?.parse().ok())
        .collect()
}

fn wait_ping(via: u16, node: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if ping(via, node, 1, "500ms").len() == 1 {
            return Some(t0.elapsed());
        }
    }
    None
}

fn flood() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = start(dir.path(), "n1", None);
    let n2 = start(dir.path(), "n2", Some(n1.port));
    wait_ping(n2.port, "n1", Duration::from_secs(30)).expect("mesh converges");
    let pids = [n1.child.id(), n2.child.id()];
    let peak = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    peak[i].fetch_max(harness::rss_kib(*pid), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let port = n1.port;
    let attacker = std::thread::spawn(move || {
        let (mut sent, mut links, t0) = (0usize, 0usize, Instant::now());
        while sent < 3000 && links < 200 && t0.elapsed() < Duration::from_secs(120) {
            links += 1;
            let Ok(mut peer) = FakePeer::try_join(port, "attacker") else { continue };
            while sent < 3000 {
                let batch = (sent..sent + 10).map(|i| Frame::Lsa(fat_lsa(&format!("forged{i}"), 1, 1024)));
                if peer.send_raw(&encode_all(batch)).is_err() {
                    break;
                }
                sent += 10;
            }
        }
        (sent, links, t0.elapsed())
    });
    let mut rtts = Vec::new();
    let mut lost = 0;
    while !attacker.is_finished() || rtts.len() < 100 {
        let got = ping(n2.port, "n1", 50, "2s");
        lost += 50 - got.len();
        rtts.extend(got);
    }
    let (sent, links, took) = attacker.join().expect("attacker");
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    rtts.sort_by(f64::total_cmp);
    let p = |q: usize| rtts[(rtts.len() * q / 100).min(rtts.len() - 1)];
    let (r1, r2) = (peak[0].load(Ordering::Relaxed), peak[1].load(Ordering::Relaxed));
    println!(
        "| advertisement flood: {sent} adverts × 1,024 neighbours (~46 MiB) over {links} links in {:.1} s | | |",
        took.as_secs_f64()
    );
    println!(
        "| ping n2→n1 during the flood, median / p99 of {} ({lost} lost) | {:.2} / {:.2} ms | answers throughout |",
        rtts.len(),
        p(50),
        p(99)
    );
    println!(
        "| peak RSS during the flood, n1 (flooded) / n2 | {:.1} / {:.1} MiB | <= 64 MiB ({}) |",
        r1 as f64 / 1024.0,
        r2 as f64 / 1024.0,
        if r1.max(r2) <= 64 * 1024 { "met" } else { "missed" }
    );
}

fn idle_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = start(dir.path(), "n1", None);
    let mut n2 = start(dir.path(), "n2", Some(n1.port));
    wait_ping(n1.port, "n2", Duration::from_secs(30)).expect("mesh converges");
    drop(n2);
    let (port, stop) = (n1.port, Arc::new(AtomicBool::new(false)));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let addr = |i: usize| IpAddr::from([127, 0, 1 + (i / 250) as u8, 2 + (i % 250) as u8]);
            let mut conns: Vec<Option<std::net::TcpStream>> = (0..10_000).map(|_| None).collect();
            let mut held = 0;
            while !stop.load(Ordering::Relaxed) {
                held = 0;
                for (i, c) in conns.iter_mut().enumerate() {
                    let open = c.as_ref().is_some_and(|s| {
                        s.set_nonblocking(true).ok();
                        matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                    });
                    if !open {
                        *c = connect_from(addr(i), port).ok();
                    }
                    held += usize::from(c.is_some());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            held
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    n2 = start(dir.path(), "n2", Some(n1.port));
    let relinked = wait_ping(n1.port, "n2", Duration::from_secs(60)).map(|_| t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    let held = attacker.join().expect("attacker");
    drop(n2);
    match relinked {
        Some(t) => println!(
            "| restarted peer relinks while {held} idle connections are held (incl. the CLI's ping) | {:.2} s | <= 1 s ({}) |",
            t.as_secs_f64(),
            if t <= Duration::from_secs(1) { "met" } else { "missed" }
        ),
        None => println!(
            "| restarted peer relinks while {held} idle connections are held | not within 60 s | <= 1 s (missed) |"
        ),
    }
}

fn main() {
    println!("| hostile load (loopback) | value | target |");
    println!("|---|---|---|");
    flood();
    idle_connections();
}
