//! Fleet-scale figures (`make bench-fleet`, issue 12). Real daemons on loopback in the fleet
//! shape (3 fully meshed hubs, every other node a leaf linked to two hubs), for 103, 303
//! and 1,000 nodes (`FLEET_SIZES=103,303` to choose): idle CPU of all daemons together; the
//! time until every hub lists every node after the last daemon started; the time until every
//! hub has forgotten a crashed (SIGKILLed) leaf and lists a new one; the largest hub and
//! leaf RSS. "Lists" is read from each hub's control socket `status`, as receptorctl does.
//! receptord runs twice per size: from the default config (no role key anywhere: the leaves
//! have no listeners, so they are leaves) and with `role = "leaf"` written on every leaf.
//! Go Receptor 1.4 at 103 nodes side by side when `../shared/peers/go-receptor/receptor`
//! exists. Then the deterministic simulation (`mesh::fleet_sim`) at 1,000 and 10,000 nodes:
//! advertisements and bytes per node per minute at steady state, and what it takes to
//! reconverge after a hub fails. Figures only: nothing here asserts on time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod harness;

use receptord::mesh::fleet_sim::{FleetSim, Shape};
use receptord::mesh::state::MeshConfig;

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const HUBS: usize = 3;
/// How long the idle CPU of the fleet is sampled.
const IDLE_WINDOW: Duration = Duration::from_secs(20);
/// The longest wait for any one condition; longer is reported as "not within".
const WAIT: Duration = Duration::from_secs(120);

/// One process of the fleet, killed on drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which implementation runs the fleet, and how it is configured.
#[derive(Clone, Copy, PartialEq)]
enum Impl {
    /// receptord, every leaf with `[mesh] role = "leaf"`.
    Receptord,
    /// receptord from the default config: no role key anywhere (listener-less nodes are
    /// leaves by default), as anyone migrating from Go Receptor writes it.
    ReceptordDefault,
    Go,
}

struct Fleet {
    imp: Impl,
    dir: tempfile::TempDir,
    hub_ports: Vec<u16>,
    hubs: Vec<Proc>,
    leaves: Vec<(String, Proc)>,
}

fn go_receptor() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/go-receptor/receptor");
    let p = if p.exists() { p } else { PathBuf::from("/work/shared/peers/go-receptor/receptor") };
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a port")
}

impl Fleet {
    fn new(imp: Impl) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        Fleet { imp, dir, hub_ports: Vec::new(), hubs: Vec::new(), leaves: Vec::new() }
    }

    fn sock(&self, hub: usize) -> PathBuf {
        self.dir.path().join(format!("hub-{hub}.sock"))
    }

    fn start_hubs(&mut self) {
        for h in 0..HUBS {
            let port = free_port();
            let id = format!("hub-{h}");
            let child = match self.imp {
                Impl::Receptord | Impl::ReceptordDefault => {
                    let mut cfg = format!(
                        "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\n[log]\nlevel = \"error\"\n\
                         [control]\nsocket = \"{}\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:{port}\"\n",
                        self.dir.path().join(&id).display(),
                        self.sock(h).display()
                    );
                    for p in &self.hub_ports {
                        cfg.push_str(&format!("[[peers]]\nurl = \"receptor://127.0.0.1:{p}\"\n"));
                    }
                    self.spawn_receptord(&id, &cfg)
                }
                Impl::Go => {
                    let mut args = self.go_args(&id);
                    args.extend([
                        "--tcp-listener".into(),
                        format!("port={port}"),
                        "bindaddr=127.0.0.1".into(),
                    ]);
                    args.extend([
                        "--control-service".into(),
                        "service=control".into(),
                        format!("filename={}", self.sock(h).display()),
                    ]);
                    for p in &self.hub_ports {
                        args.extend(["--tcp-peer".into(), format!("address=127.0.0.1:{p}")]);
                    }
                    self.spawn_go(&args)
                }
            };
            self.hubs.push(Proc { child });
            self.hub_ports.push(port);
            wait_for(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), Duration::from_secs(10));
        }
    }

    fn go_args(&self, id: &str) -> Vec<String> {
        vec![
            "--node".into(),
            format!("id={id}"),
            format!("datadir={}", self.dir.path().join(id).display()),
            "--log-level".into(),
            "level=error".into(),
        ]
    }

    fn spawn_receptord(&self, id: &str, cfg: &str) -> Child {
        let path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, cfg).expect("config");
        Command::new(RECEPTORD)
            .arg("-c")
            .arg(&path)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("receptord")
    }

    fn spawn_go(&self, args: &[String]) -> Child {
        Command::new(go_receptor().expect("go receptor"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("go receptor")
    }

    /// Starts leaf `id` linked to two hubs (chosen by `n`).
    fn start_leaf(&mut self, n: usize, id: String) {
        let (a, b) = (n % HUBS, (n + 1 + (n / HUBS) % (HUBS - 1)) % HUBS);
        let (pa, pb) = (self.hub_ports[a], self.hub_ports[b]);
        let child = match self.imp {
            Impl::Receptord | Impl::ReceptordDefault => {
                let role = if self.imp == Impl::Receptord { "[mesh]\nrole = \"leaf\"\n" } else { "" };
                let cfg = format!(
                    "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\n[log]\nlevel = \"error\"\n[control]\nenabled = false\n\
                     {role}[[peers]]\nurl = \"receptor://127.0.0.1:{pa}\"\n\
                     [[peers]]\nurl = \"receptor://127.0.0.1:{pb}\"\n\
                     [[work.command]]\nname = \"echo\"\nprogram = \"cat\"\n",
                    self.dir.path().join(&id).display()
                );
                self.spawn_receptord(&id, &cfg)
            }
            Impl::Go => {
                let mut args = self.go_args(&id);
                for p in [pa, pb] {
                    args.extend(["--tcp-peer".into(), format!("address=127.0.0.1:{p}")]);
                }
                args.extend(["--work-command".into(), "worktype=echo".into(), "command=cat".into()]);
                self.spawn_go(&args)
            }
        };
        self.leaves.push((id, Proc { child }));
    }

    /// The node IDs hub `h` lists in its `status` (None: no answer).
    fn listed(&self, h: usize) -> Option<Vec<String>> {
        let mut s = UnixStream::connect(self.sock(h)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut rd = BufReader::new(s.try_clone().ok()?);
        let mut line = String::new();
        rd.read_line(&mut line).ok()?;
        s.write_all(b"{\"command\": \"status\"}\n").ok()?;
        line.clear();
        rd.read_line(&mut line).ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        // Go lists only nodes offering a service under Advertisements: count its routing
        // table too (for receptord both hold the same nodes).
        let ads = v.get("Advertisements")?.as_array()?;
        let mut ids: Vec<String> =
            ads.iter().filter_map(|a| a.get("NodeID")?.as_str().map(str::to_owned)).collect();
        ids.extend(v.get("RoutingTable")?.as_object()?.keys().cloned());
        ids.extend(v.get("NodeID")?.as_str().map(str::to_owned));
        ids.sort();
        ids.dedup();
        Some(ids)
    }

    /// Seconds until every hub satisfies `ok` on the IDs it lists (None: not within WAIT).
    fn until_hubs(&self, ok: impl Fn(&[String]) -> bool) -> Option<f64> {
        let start = Instant::now();
        let met = wait_for(|| (0..HUBS).all(|h| self.listed(h).is_some_and(|ids| ok(&ids))), WAIT);
        met.then(|| start.elapsed().as_secs_f64())
    }

    fn pids(&self) -> Vec<u32> {
        self.hubs.iter().chain(self.leaves.iter().map(|(_, p)| p)).map(|p| p.child.id()).collect()
    }
}

/// Polls `cond` every 20 ms for at most `limit`; whether it held.
fn wait_for(mut cond: impl FnMut() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/PID/stat (utime, stime); `after` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map_or(format!("not within {}s", WAIT.as_secs()), |s| format!("{s:.2} s"))
}

/// Runs one fleet of `nodes` daemons and prints its row.
fn fleet_row(imp: Impl, nodes: usize) {
    let mut f = Fleet::new(imp);
    f.start_hubs();
    let leaves = nodes - HUBS;
    for n in 0..leaves {
        f.start_leaf(n, format!("leaf-{n:04}"));
    }
    let everyone = |f: &Fleet| {
        let mut ids: Vec<String> = (0..HUBS).map(|h| format!("hub-{h}")).collect();
        ids.extend(f.leaves.iter().map(|(id, _)| id.clone()));
        ids.sort();
        ids
    };
    let want = everyone(&f);
    let known = f.until_hubs(|ids| want.iter().all(|w| ids.binary_search(w).is_ok()));
    // Idle: the fleet settled, nobody polls it.
    std::thread::sleep(Duration::from_secs(5));
    let pids = f.pids();
    let before: f64 = pids.iter().map(|&p| cpu_secs(p)).sum();
    let t0 = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let after: f64 = pids.iter().map(|&p| cpu_secs(p)).sum();
    let idle_cores = (after - before) / t0.elapsed().as_secs_f64();
    let hub_rss = f.hubs.iter().map(|p| harness::rss_kib(p.child.id())).max().unwrap_or(0);
    let leaf_rss = f.leaves.iter().map(|(_, p)| harness::rss_kib(p.child.id())).max().unwrap_or(0);
    // A leaf crashes (SIGKILL: the kernel closes its sockets).
    let (victim, mut proc_) = f.leaves.remove(leaves / 2);
    let _ = proc_.child.kill();
    let _ = proc_.child.wait();
    let forgotten = f.until_hubs(|ids| ids.binary_search(&victim).is_err());
    // A new leaf starts.
    let fresh = "leaf-new".to_owned();
    f.start_leaf(leaves, fresh.clone());
    let new_known = f.until_hubs(|ids| ids.binary_search(&fresh).is_ok());
    let name = match imp {
        Impl::Receptord => "receptord, roles",
        Impl::ReceptordDefault => "receptord, default",
        Impl::Go => "Go Receptor 1.4",
    };
    println!(
        "  {name:<18} {nodes:>5} nodes: idle CPU {idle_cores:.3} cores | hubs list all {} after the last start | \
         crashed leaf forgotten {} | new leaf listed {} | RSS hub {:.1} MiB, leaf {:.1} MiB",
        fmt_secs(known),
        fmt_secs(forgotten),
        fmt_secs(new_known),
        hub_rss as f64 / 1024.0,
        leaf_rss as f64 / 1024.0
    );
}

/// The simulation's figures for a fleet of `nodes`.
fn sim_row(nodes: usize) {
    let shape = Shape::for_nodes(nodes);
    let cfg = MeshConfig::default();
    let t = Instant::now();
    let mut s = FleetSim::start(shape, &cfg, 1_000);
    let start_rounds = s.rounds;
    let started = t.elapsed().as_secs_f64();
    let hour = Duration::from_secs(3600);
    s.advance(Duration::from_secs(600), Duration::from_secs(10));
    s.reset_counters();
    s.advance(hour, Duration::from_secs(10));
    let [h_avg, h_max, l_avg, l_max] = s.per_minute(hour);
    let ok = s.check().is_ok();
    // Keepalives on an idle link, per direction: one each 2/5 of the idle timeout.
    let ka_per_min = 60.0 / (5.0 * 2.0 / 5.0);
    let ka_bytes = receptord::wire::Frame::Keepalive.encode().len() as f64;
    let leaf_links = 2.0;
    let hub_links = (2 * shape.leaves / shape.hubs + shape.hubs - 1) as f64;
    println!(
        "  sim {nodes:>6} nodes ({} hubs, {} leaves; started in {start_rounds} rounds, {started:.1} s; \
         an hour simulated in {:.1} s; converged: {ok}):",
        shape.hubs,
        shape.leaves,
        t.elapsed().as_secs_f64() - started
    );
    println!(
        "    steady state, advertisements per node per minute: leaf avg {:.2} ({:.0} B), max {:.2} ({:.0} B); \
         hub avg {:.1} ({:.0} B), max {:.1} ({:.0} B)",
        l_avg.0, l_avg.1, l_max.0, l_max.1, h_avg.0, h_avg.1, h_max.0, h_max.1
    );
    println!(
        "    plus keepalives on idle links: leaf {:.0}/min ({:.0} B), hub {:.0}/min ({:.0} B)",
        leaf_links * ka_per_min,
        leaf_links * ka_per_min * ka_bytes,
        hub_links * ka_per_min,
        hub_links * ka_per_min * ka_bytes
    );
    s.reset_counters();
    s.crash(0);
    let rounds = s.settle();
    let frames: u64 = s.sent.iter().map(|x| x.frames).sum();
    let bytes: u64 = s.sent.iter().map(|x| x.bytes).sum();
    let ok = s.check().is_ok();
    println!(
        "    a hub fails: reconverged in {rounds} rounds (message waves), {frames} advertisements, {:.1} KiB in all; \
         every view correct: {ok}",
        bytes as f64 / 1024.0
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::var("FLEET_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![103, 303, 1_000]);
    println!("fleet of real daemons on loopback (3 fully meshed hubs, each leaf linked to two hubs):");
    for &n in &sizes {
        fleet_row(Impl::ReceptordDefault, n);
        fleet_row(Impl::Receptord, n);
        if n == 103 && go_receptor().is_some() {
            fleet_row(Impl::Go, n);
        }
    }
    println!("deterministic simulation (mesh::fleet_sim, default [mesh] timers):");
    let sim_sizes: Vec<usize> = std::env::var("FLEET_SIM_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    for n in sim_sizes {
        sim_row(n);
    }
}
