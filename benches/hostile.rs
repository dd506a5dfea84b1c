//! Hostile-load figures (`make bench`): (1) ping round trips between two nodes while a third
//! party floods one of them with 46 MiB of advertisements, with every node's RSS before,
//! at its peak and a minute after, over plain TCP and mutual TLS;
//! (2) how long a restarted peer takes to relink while 10,000 idle connections are held
//! against its listener. Figures only: nothing here asserts on time. Run with a high
//! open-files limit (the Makefile raises it).

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod harness;
#[path = "../tests/common/hostile.rs"]
#[allow(dead_code)]
mod hostile;

use hostile::{FakePeer, connect_from, encode_all, fat_lsa};
use receptord::wire::Frame;

const RECEPTORD_BUILT: &str = env!("CARGO_BIN_EXE_receptord");

/// The daemon under test: this build's, or `RECEPTORD` (another build, to compare).
fn receptord() -> String {
    std::env::var("RECEPTORD").unwrap_or_else(|_| RECEPTORD_BUILT.to_owned())
}
const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");

fn start(dir: &Path, id: &str, peer: Option<u16>) -> harness::Daemon {
    harness::spawn(&receptord(), &harness::node_config(dir, id, peer, None, "", ""), None)
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

/// Peak RSS of each of `pids` (KiB), sampled every 50 ms until `done`.
fn sample_peaks(pids: Vec<u32>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut peak = vec![0; pids.len()];
        while !done.load(Ordering::Relaxed) {
            for (p, pid) in peak.iter_mut().zip(&pids) {
                *p = (*p).max(harness::rss_kib(*pid));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

/// The flood: 3,000 advertisements of 1,024 neighbours each (~46 MiB encoded), unsigned
/// and each from another made-up origin, sent as fast as n1 reads them over links that
/// n1 closes past its limits (the attacker reconnects, up to 200 times). n2 and n3 link
/// to n1. Over TLS the attacker holds a valid certificate; n1 drops the unsigned
/// advertisements at the link.
fn flood(tls: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = tls.then(|| {
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki).expect("pki dir");
        harness::issue_pki(RECEPTOR, &pki, &["n1", "n2", "n3", "attacker"]);
        pki
    });
    let start = |id: &str, peer: Option<u16>| {
        harness::spawn(
            &receptord(),
            &harness::node_config(dir.path(), id, peer, pki.as_deref(), "", ""),
            None,
        )
    };
    let n1 = start("n1", None);
    let n2 = start("n2", Some(n1.port));
    let n3 = start("n3", Some(n1.port));
    if !tls {
        wait_ping(n2.port, "n1", Duration::from_secs(30)).expect("mesh converges");
        wait_ping(n3.port, "n1", Duration::from_secs(30)).expect("mesh converges");
    } else {
        std::thread::sleep(Duration::from_secs(3));
    }
    let pids = vec![n1.child.id(), n2.child.id(), n3.child.id()];
    let before: Vec<u64> = pids.iter().map(|p| harness::rss_kib(*p)).collect();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_peaks(pids.clone(), done.clone());
    let port = n1.port;
    let fake_tls =
        pki.as_ref().map(|p| hostile::FakeTls::new(&p.join("attacker.crt"), &p.join("attacker.key")));
    let attacker = std::thread::spawn(move || {
        let (mut sent, mut links, t0) = (0usize, 0usize, Instant::now());
        while sent < 3000 && links < 200 && t0.elapsed() < Duration::from_secs(120) {
            links += 1;
            let joined = match &fake_tls {
                Some(t) => FakePeer::try_join_tls(port, "attacker", t),
                None => FakePeer::try_join(port, "attacker"),
            };
            let Ok(mut peer) = joined else { continue };
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
    while !attacker.is_finished() || (!tls && rtts.len() < 100) {
        if tls {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let got = ping(n2.port, "n1", 50, "2s");
        lost += 50 - got.len();
        rtts.extend(got);
    }
    let (sent, links, took) = attacker.join().expect("attacker");
    // What is left a minute after the flood (forged origins are unreachable: forgotten
    // within seconds).
    std::thread::sleep(Duration::from_secs(60));
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    let after: Vec<u64> = pids.iter().map(|p| harness::rss_kib(*p)).collect();
    let mib =
        |k: &[u64]| k.iter().map(|k| format!("{:.1}", *k as f64 / 1024.0)).collect::<Vec<_>>().join(" / ");
    let mode = if tls { "mutual TLS" } else { "plain TCP" };
    println!(
        "| {mode}: advertisement flood: {sent} adverts × 1,024 neighbours (~46 MiB) over {links} links in {:.1} s | | |",
        took.as_secs_f64()
    );
    if !tls {
        rtts.sort_by(f64::total_cmp);
        let p = |q: usize| rtts[(rtts.len() * q / 100).min(rtts.len() - 1)];
        println!(
            "| {mode}: ping n2→n1 during the flood, median / p99 of {} ({lost} lost) | {:.2} / {:.2} ms | answers throughout |",
            rtts.len(),
            p(50),
            p(99)
        );
    }
    let worst = peak.iter().max().copied().unwrap_or(0);
    println!(
        "| {mode}: RSS n1 (flooded) / n2 / n3: before / peak / a minute after | {} / {} / {} MiB | <= 64 MiB ({}) |",
        mib(&before),
        mib(&peak),
        mib(&after),
        if worst <= 64 * 1024 { "met" } else { "missed" }
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
    flood(false);
    flood(true);
    // HOSTILE_ONLY=flood skips the 10,000 connections.
    if std::env::var("HOSTILE_ONLY").as_deref() != Ok("flood") {
        idle_connections();
    }
}
