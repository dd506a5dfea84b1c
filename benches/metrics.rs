//! Metrics benchmark (`make bench`): three daemons in a line, the middle one (two links)
//! with `[metrics] listen` on. Prints its idle RSS before and after scraping, the CPU time
//! of one scrape (a burst of 1000), and its CPU use over 20 s idle versus 20 s scraped
//! once a second. Figures only: nothing here asserts on time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");

struct Node {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn start(id: &str, port: u16, peer: Option<u16>, metrics: Option<u16>) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = format!(
        "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:{port}\"\n\
         [control]\nenabled = false\n[[work.command]]\nname = \"cat\"\nprogram = \"cat\"\n",
        dir.path().join("data").display()
    );
    if let Some(p) = peer {
        cfg.push_str(&format!("[[peers]]\nurl = \"receptor://127.0.0.1:{p}\"\n"));
    }
    if let Some(m) = metrics {
        cfg.push_str(&format!("[metrics]\nlisten = \"127.0.0.1:{m}\"\n"));
    }
    let path = dir.path().join("receptor.toml");
    std::fs::write(&path, cfg).expect("config");
    let mut child =
        Command::new(RECEPTORD).arg("-c").arg(&path).stderr(Stdio::piped()).spawn().expect("receptord");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready = lines.by_ref().map_while(Result::ok).any(|l| l.contains("receptord ready"));
    assert!(ready, "{id} did not start");
    std::thread::spawn(move || for _ in lines {});
    Node { child, _dir: dir }
}

/// One `GET /metrics` on a fresh connection; returns the body size.
fn scrape(port: u16) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").expect("request");
    let mut body = Vec::new();
    s.read_to_end(&mut body).expect("response");
    assert!(body.starts_with(b"HTTP/1.1 200"), "scrape failed");
    body.len()
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    ticks as f64 / hz
}

/// CPU share of a core used by `pid` over `window`, scraping `port` every `every` if given.
fn cpu_share(pid: u32, window: Duration, scrape_every: Option<(u16, Duration)>) -> f64 {
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    while t0.elapsed() < window {
        match scrape_every {
            Some((port, every)) => {
                let next = Instant::now() + every;
                scrape(port);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
}

fn main() {
    let (p1, p2, p3, m2) = (free_port(), free_port(), free_port(), free_port());
    let _n1 = start("bench1", p1, None, None);
    let n2 = start("bench2", p2, Some(p1), Some(m2));
    let _n3 = start("bench3", p3, Some(p2), None);
    std::thread::sleep(Duration::from_secs(3));
    let pid = n2.child.id();
    let rss_idle = proc_status(pid, "VmRSS:");
    let size = scrape(m2);
    let idle_cpu = cpu_share(pid, Duration::from_secs(20), None);
    let scraped_cpu = cpu_share(pid, Duration::from_secs(20), Some((m2, Duration::from_secs(1))));
    let burst = 1000;
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    for _ in 0..burst {
        scrape(m2);
    }
    let per_scrape = (cpu_seconds(pid) - c0) / f64::from(burst);
    let burst_wall = t0.elapsed().as_secs_f64() / f64::from(burst);
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = proc_status(pid, "VmRSS:");
    let rss_peak = proc_status(pid, "VmHWM:");
    let mib = |k: u64| k as f64 / 1024.0;
    let mark = |ok: bool| if ok { "met" } else { "missed" };
    println!("| metrics figure (daemon with two links, [metrics] on) | value | target |");
    println!("|---|---|---|");
    println!(
        "| idle RSS, before any scrape | {:.1} MiB | ≤ 9 MiB — {} |",
        mib(rss_idle),
        mark(mib(rss_idle) <= 9.0)
    );
    println!(
        "| idle RSS after {} scrapes (peak) | {:.1} MiB ({:.1} MiB) | ≤ 9 MiB — {} |",
        burst + 21,
        mib(rss_after),
        mib(rss_peak),
        mark(mib(rss_after) <= 9.0)
    );
    println!("| /metrics response size | {size} bytes | |");
    println!(
        "| CPU per scrape (burst of {burst}; wall {:.2} ms each) | {:.3} ms | |",
        burst_wall * 1000.0,
        per_scrape * 1000.0
    );
    println!("| CPU over 20 s idle | {:.3} % of a core | |", idle_cpu * 100.0);
    let extra = (scraped_cpu - idle_cpu).max(0.0) * 100.0;
    println!(
        "| CPU over 20 s scraped every second | {:.3} % of a core (+{extra:.3} %; per-scrape figure: {:.3} %) | ≤ 1 % — {} |",
        scraped_cpu * 100.0,
        per_scrape * 100.0,
        mark(scraped_cpu * 100.0 <= 1.0)
    );
}
