//! A Go control node in front of a fleet (issue 22): Go Receptor 1.4.0 `goctl` linked to a
//! hub with N leaves behind it (`NETCEPTOR_LEAVES`, default 300), every leaf running the
//! `cat` work type. Three fleets: a receptord hub with receptord leaves linked **natively**
//! (`[[peers]] url = "receptor://…"`, no netceptor settings: Go sees them through netceptor
//! packets carried over the native links, `[netceptor] native_links`, on by default); the
//! same with each leaf dialing the hub's `receptor://` listener with `netceptor://`; and the
//! all-Go fleet (Go hub, Go leaves, `--tcp-peer`). The hub and leaves start first, and
//! once the hub routes to every leaf `goctl` starts and links to the hub. Printed per
//! fleet: the time until `goctl`'s `status` (as `receptorctl status` reads it) routes to
//! the hub and every leaf; goctl's CPU seconds until then and over the following minute;
//! goctl's and the hub's RSS and the hub's CPU over that minute; all leaves' RSS together;
//! then the steady-state line: the hub's CPU-s and context switches per minute (issue 22:
//! with 300 leaves the hub relays 9,000 routing updates a second), goctl's and the
//! leaves' CPU-s per minute (together and the median leaf), and how many nodes goctl
//! still routes to after that minute (a flapping session shows there). Every wait is bounded (a wait that runs out is
//! printed as such), and the load average is printed before and after each fleet (the
//! machine may be shared). Figures only: nothing asserts on time. Run: `cargo bench --bench
//! netceptor_fleet` (`NETCEPTOR_LEAVES=100`; `NETCEPTOR_FLEETS=receptord` or `go`, both by
//! default; `NETCEPTOR_LEAF_LINKS=native` (the default), `netceptor`, or `native,netceptor`
//! for the receptord leaves' links, one receptord fleet each).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod harness;

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
/// The longest wait for any one condition.
const WAIT: Duration = Duration::from_secs(300);
/// How long the steady state is sampled after convergence.
const STEADY: Duration = Duration::from_secs(60);

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

fn go_receptor() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/go-receptor/receptor");
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// User + system CPU seconds of a process so far (0 once it is gone).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| f.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0 // USER_HZ
}

/// Context switches of a process so far, voluntary and not, over all its threads (each a
/// wake-up or a preemption; 0 once it is gone).
fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// A Go node: `listen` on a TCP port, `peer` dialed, control socket `sock` if given.
fn go(dir: &Path, id: &str, listen: Option<u16>, peer: Option<u16>, sock: Option<&Path>) -> Proc {
    let mut args = vec![
        "--node".to_owned(),
        format!("id={id}"),
        format!("datadir={}", dir.join(id).display()),
        "--log-level".into(),
        "level=error".into(),
        "--control-service".into(),
        "service=control".into(),
    ];
    if let Some(s) = sock {
        args.push(format!("filename={}", s.display()));
    }
    args.extend(["--work-command".into(), "worktype=cat".into(), "command=cat".into()]);
    if let Some(p) = listen {
        args.extend(["--tcp-listener".into(), format!("port={p}"), "bindaddr=127.0.0.1".into()]);
    }
    if let Some(p) = peer {
        args.extend(["--tcp-peer".into(), format!("address=127.0.0.1:{p}")]);
    }
    let child = Command::new(go_receptor().expect("go"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn Go");
    Proc(child)
}

/// A receptord leaf: no listener, `cat`, a link to the hub's `receptor://` port dialed with
/// `scheme` (`receptor`: native; `netceptor`: a netceptor link).
fn receptord_leaf(dir: &Path, id: &str, hub: u16, scheme: &str) -> Proc {
    let cfg = dir.join(format!("{id}.toml"));
    let text = format!(
        "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\n[log]\nlevel = \"error\"\n\
         [control]\nsocket = \"{}\"\n[[work.command]]\nname = \"cat\"\nprogram = \"cat\"\n\
         [[peers]]\nurl = \"{scheme}://127.0.0.1:{hub}\"\n",
        dir.join(id).display(),
        dir.join(format!("{id}.sock")).display()
    );
    std::fs::write(&cfg, text).expect("config");
    let child = Command::new(RECEPTORD)
        .arg("-c")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("receptord");
    Proc(child)
}

/// The node IDs `sock`'s `status` routes to, itself excluded (None: no answer).
fn routed(sock: &Path) -> Option<Vec<String>> {
    let s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut w = s.try_clone().ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    w.write_all(b"status\n").ok()?;
    line.clear();
    r.read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    Some(v["RoutingTable"].as_object()?.keys().cloned().collect())
}

/// Polls until `sock` routes to `want` nodes named `hub` or `leaf…`; the time it took.
fn wait_routes(sock: &Path, want: usize, since: Instant) -> Option<Duration> {
    loop {
        let n = routed(sock)
            .map(|r| r.iter().filter(|n| *n == "hub" || n.starts_with("leaf")).count())
            .unwrap_or(0);
        if n >= want {
            return Some(since.elapsed());
        }
        if since.elapsed() > WAIT {
            println!("  only {n} of {want} nodes routed after {WAIT:?}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The median of `v` (0 if empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs one fleet: `hub` and `leaf` start the hub (given its port and control socket) and
/// a leaf (given its index and the hub's port).
fn fleet(
    name: &str,
    dir: &Path,
    leaves: usize,
    hub: impl Fn(u16, &Path) -> Proc,
    leaf: impl Fn(usize, u16) -> Proc,
) {
    println!("{name}: load average {} before", loadavg());
    let port = free_port();
    let hub_sock = dir.join("hub.sock");
    let h = hub(port, &hub_sock);
    let started = Instant::now();
    while UnixStream::connect(&hub_sock).is_err() {
        assert!(started.elapsed() < WAIT, "{name}: the hub did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let spawn = Instant::now();
    let fleet: Vec<Proc> = (0..leaves).map(|i| leaf(i, port)).collect();
    let spawned = spawn.elapsed();
    let hub_ready = wait_routes(&hub_sock, leaves, spawn);
    println!(
        "{name}: {leaves} leaves spawned in {:.1} s; the hub routes to all {}",
        spawned.as_secs_f64(),
        hub_ready.map_or("— not within the wait".into(), |d| format!(
            "{:.1} s after the first spawn",
            d.as_secs_f64()
        ))
    );
    let ctl_sock = dir.join("goctl.sock");
    let t0 = Instant::now();
    let ctl = go(dir, "goctl", None, Some(port), Some(&ctl_sock));
    let conv = wait_routes(&ctl_sock, leaves + 1, t0);
    let cpu_conv = cpu_secs(ctl.pid());
    let (ctl_cpu0, hub_cpu0, hub_cs0) = (cpu_secs(ctl.pid()), cpu_secs(h.pid()), ctx_switches(h.pid()));
    let leaves_cpu0: Vec<f64> = fleet.iter().map(|p| cpu_secs(p.pid())).collect();
    std::thread::sleep(STEADY);
    let ctl_steady = cpu_secs(ctl.pid()) - ctl_cpu0;
    let hub_steady = cpu_secs(h.pid()) - hub_cpu0;
    let hub_cs = ctx_switches(h.pid()).saturating_sub(hub_cs0);
    let leaves_cpu: Vec<f64> =
        fleet.iter().zip(&leaves_cpu0).map(|(p, c0)| (cpu_secs(p.pid()) - c0).max(0.0)).collect();
    let leaves_cpu_sum: f64 = leaves_cpu.iter().sum();
    // goctl's view after the minute: a leaf lost meanwhile (a flapping session) shows here.
    let ctl_routes = routed(&ctl_sock)
        .map(|r| r.iter().filter(|n| *n == "hub" || n.starts_with("leaf")).count().to_string())
        .unwrap_or_else(|| "no answer".into());
    let leaves_rss: u64 = fleet.iter().map(|p| harness::rss_kib(p.pid())).sum();
    let alive = fleet.iter().filter(|p| harness::rss_kib(p.pid()) > 0).count();
    println!(
        "{name}: goctl routes to the hub and all {leaves} leaves {} after it started; goctl CPU {:.2} s to converge, \
         {:.2} s over the next {} s; goctl RSS {:.1} MiB; hub RSS {:.1} MiB, hub CPU {:.2} s over those {} s; \
         leaves RSS {:.0} MiB together ({alive} alive, {:.1} MiB each)",
        conv.map_or("— not within the wait".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        cpu_conv,
        ctl_steady,
        STEADY.as_secs(),
        mib(harness::rss_kib(ctl.pid())),
        mib(harness::rss_kib(h.pid())),
        hub_steady,
        STEADY.as_secs(),
        mib(leaves_rss),
        mib(leaves_rss) / alive.max(1) as f64,
    );
    // The steady-state line (issue 22): the hub's CPU per minute with N leaves; the
    // context switches show its wake-ups (a write per relayed packet was one each).
    let per_min = 60.0 / STEADY.as_secs_f64();
    println!(
        "{name}: steady state with {leaves} leaves: hub {:.2} CPU-s per minute, {:.0} context switches per minute; \
         goctl {:.2} CPU-s per minute; leaves {:.2} CPU-s per minute together (median leaf {:.3}); \
         goctl routes to {ctl_routes} of {} nodes after the minute; load average {} after",
        hub_steady * per_min,
        hub_cs as f64 * per_min,
        ctl_steady * per_min,
        leaves_cpu_sum * per_min,
        median(leaves_cpu) * per_min,
        leaves + 1,
        loadavg(),
    );
    drop(ctl);
    drop(fleet);
    drop(h);
}

fn main() {
    if go_receptor().is_none() {
        println!("netceptor_fleet bench skipped: no Go Receptor at ../shared/peers/go-receptor/receptor");
        return;
    }
    let leaves: usize = std::env::var("NETCEPTOR_LEAVES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let only = std::env::var("NETCEPTOR_FLEETS").unwrap_or_else(|_| "receptord,go".into());
    let links = std::env::var("NETCEPTOR_LEAF_LINKS").unwrap_or_else(|_| "native".into());
    println!("netceptor fleet: Go control node → hub → {leaves} leaves, on loopback");

    for mode in links.split(',').map(str::trim).filter(|m| only.contains("receptord") && !m.is_empty()) {
        let scheme = match mode {
            "native" => "receptor",
            "netceptor" => "netceptor",
            other => panic!("NETCEPTOR_LEAF_LINKS: {other:?} is neither native nor netceptor"),
        };
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path().to_owned();
        fleet(
            &format!("receptord hub + receptord leaves ({mode} leaf links)"),
            &d,
            leaves,
            |port, sock| {
                let extra = format!(
                    "[log]\nlevel = \"error\"\n[control]\nsocket = \"{}\"\n[[work.command]]\nname = \"cat\"\nprogram = \"cat\"\n",
                    sock.display()
                );
                let cfg = d.join("hub.toml");
                std::fs::write(
                    &cfg,
                    format!(
                        "[node]\nid = \"hub\"\ndata_dir = \"{}\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:{port}\"\n{extra}",
                        d.join("hub").display()
                    ),
                )
                .expect("config");
                let child = Command::new(RECEPTORD)
                    .arg("-c")
                    .arg(&cfg)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("receptord");
                Proc(child)
            },
            |i, port| receptord_leaf(&d, &format!("leaf{i:03}"), port, scheme),
        );
    }
    if only.contains("go") {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path().to_owned();
        fleet(
            "all Go (Go hub + Go leaves)",
            &d,
            leaves,
            |port, sock| go(&d, "hub", Some(port), None, Some(sock)),
            |i, port| go(&d, &format!("leaf{i:03}"), None, Some(port), None),
        );
    }
}
