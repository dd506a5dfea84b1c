//! Mesh benchmarks (`make bench`): in one run on loopback, prints (1) throughput of a
//! command job's output (1 GiB) across three hops, plain and TLS, each against a raw
//! loopback TCP copy of the same size measured in the same run; (2) ping round trips across
//! three hops, plain and TLS; (3) idle RSS of a daemon with two links. Figures only: nothing
//! here asserts on time.

use std::path::Path;
use std::process::{Command, Stdio};

#[path = "common/mod.rs"]
mod harness;
use harness::Daemon;
use std::time::{Duration, Instant};

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");
const SIZE: u64 = 1 << 30;
const RUNS: usize = 3;

/// A line of three daemons; `tls` holds the PKI directory when the links are TLS.
struct Line {
    nodes: Vec<Daemon>,
    tls: Option<tempfile::TempDir>,
    _dir: tempfile::TempDir,
}

const GEN: &str =
    "[[work.command]]\nname = \"gen\"\nprogram = \"head\"\nargs = [\"-c\", \"1073741824\", \"/dev/zero\"]\n";

fn start(dir: &Path, id: &str, peer: Option<u16>, tls: Option<&Path>) -> Daemon {
    harness::spawn(RECEPTORD, &harness::node_config(dir, id, peer, tls, GEN, ""), None)
}

impl Line {
    fn new(tls: bool) -> Line {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = tls.then(|| {
            let pki = tempfile::tempdir().expect("tempdir");
            harness::issue_pki(RECEPTOR, pki.path(), &["node1", "node2", "node3", "bench"]);
            pki
        });
        let p = pki.as_ref().map(|d| d.path());
        let n1 = start(dir.path(), "node1", None, p);
        let n2 = start(dir.path(), "node2", Some(n1.port), p);
        let n3 = start(dir.path(), "node3", Some(n2.port), p);
        let line = Line { nodes: vec![n1, n2, n3], tls: pki, _dir: dir };
        let t0 = Instant::now();
        while !line
            .cli()
            .args(["ping", "node3", "-c", "1", "--timeout", "1s"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(t0.elapsed() < Duration::from_secs(30), "mesh did not converge");
            std::thread::sleep(Duration::from_millis(100));
        }
        line
    }

    fn cli(&self) -> Command {
        let mut cmd = Command::new(RECEPTOR);
        match &self.tls {
            None => cmd.arg("--receptor-peer").arg(format!("receptor://127.0.0.1:{}", self.nodes[0].port)),
            Some(pki) => {
                let p = |f: &str| pki.path().join(f);
                cmd.arg("--receptor-peer")
                    .arg(format!("receptors://127.0.0.1:{}", self.nodes[0].port))
                    .arg("--tls-cert")
                    .arg(p("bench.crt"))
                    .arg("--tls-key")
                    .arg(p("bench.key"))
                    .arg("--tls-ca")
                    .arg(p("ca.crt"))
            }
        };
        cmd
    }

    /// Seconds to stream 1 GiB of job output from node3 to a client entering at node1.
    fn throughput_run(&self) -> f64 {
        let start = Instant::now();
        let mut child = self
            .cli()
            .args(["work", "submit", "gen", "--node", "node3"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let n = harness::drain(child.stdout.take().expect("stdout"));
        let secs = start.elapsed().as_secs_f64();
        assert!(child.wait().expect("wait").success());
        assert_eq!(n, SIZE, "every byte arrived");
        secs
    }

    /// (median, p99) round trip to node3 in milliseconds; every ping must be answered.
    fn pings(&self, count: usize) -> (f64, f64) {
        let out = self
            .cli()
            .args(["ping", "node3", "-c", &count.to_string(), "--interval", "0s"])
            .output()
            .expect("ping");
        let mut ms: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" in ").nth(1)?.strip_suffix(" ms")?.parse().ok())
            .collect();
        assert_eq!(ms.len(), count, "ping replies: {}", String::from_utf8_lossy(&out.stderr));
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], ms[(ms.len() * 99 / 100).min(ms.len() - 1)])
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

fn main() {
    let gib = SIZE as f64 / (1u64 << 30) as f64;
    let raw = median((0..RUNS).map(|_| harness::raw_tcp_run(SIZE)).collect());
    let plain = Line::new(false);
    std::thread::sleep(Duration::from_secs(3));
    let idle: Vec<u64> = plain.nodes.iter().map(|d| harness::rss_kib(d.child.id())).collect();
    let (p50, p99) = plain.pings(1000);
    let mesh = median((0..RUNS).map(|_| plain.throughput_run()).collect());
    drop(plain);
    let tls = Line::new(true);
    let (t50, t99) = tls.pings(1000);
    let tls_tp = median((0..RUNS).map(|_| tls.throughput_run()).collect());
    let raw_tls = median((0..RUNS).map(|_| harness::raw_tcp_run(SIZE)).collect());
    drop(tls);
    let (r1, r2) = (raw / mesh, raw_tls / tls_tp);
    println!("| figure (loopback, median of {RUNS} unless noted) | value | target |");
    println!("|---|---|---|");
    println!("| raw loopback TCP copy, 1 GiB | {:.0} MiB/s | |", 1024.0 * gib / raw);
    println!("| command job output, 1 GiB across 3 hops | {:.0} MiB/s | |", 1024.0 * gib / mesh);
    println!("| ratio 3 hops / raw TCP | {r1:.3} | >= 0.30 ({}) |", mark(r1 >= 0.30));
    println!(
        "| ping RTT across 3 hops, median / p99 of 1000 | {p50:.3} / {p99:.3} ms | < 1 ms median ({}) |",
        mark(p50 < 1.0)
    );
    println!(
        "| idle RSS, node2 (two links) | {:.1} MiB | <= 10 MB ({}) |",
        idle[1] as f64 / 1024.0,
        mark(idle[1] * 1024 <= 10_000_000)
    );
    println!(
        "| idle RSS, node1 / node3 (one link) | {:.1} / {:.1} MiB | |",
        idle[0] as f64 / 1024.0,
        idle[2] as f64 / 1024.0
    );
    println!("| TLS: command job output, 1 GiB across 3 TLS hops | {:.0} MiB/s | |", 1024.0 * gib / tls_tp);
    println!("| TLS: ratio 3 TLS hops / raw TCP | {r2:.3} | >= 0.15 ({}) |", mark(r2 >= 0.15));
    println!("| TLS: ping RTT across 3 hops, median / p99 of 1000 | {t50:.3} / {t99:.3} ms | |");
}
