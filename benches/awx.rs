//! The AWX path side by side with Go Receptor 1.4 (`make bench`, issue 26): a line of three
//! daemons on loopback (node1 <- node2 <- node3), each with a control socket; a 256 MiB file
//! is the payload of `work submit --node node3 cat -f` through node1's socket (upload, run,
//! download), once with receptord's own client (`receptor --socket`) over plain TCP links
//! and over TLS links with end-to-end protection, and once with the unmodified
//! `receptorctl` (the project venv) against receptord and against Go Receptor. For each it
//! prints MiB/s, the CPU-seconds of the three daemons (and per GiB) and of the client; then
//! the ping median node1 -> node3 through the control socket and the idle RSS, PSS and
//! private memory of each node, [`IDLE`] after the line is up (both implementations): past
//! receptord's second release of its start-up pages (`daemon::memory::SETTLE`, 10 s after
//! start-up), so the figure is what an idle daemon keeps mapped, not what start-up mapped.
//! `AWX_PING_ONLY=N` runs only the ping: N rounds alternating between receptord, Go and a
//! floor (the same four loopback crossings between three processes that only `read` and
//! `write`), with the load average (`AWX_PING_GO=0`: without the Go line).
//! `AWX_ONLY=own|tls|ctl` runs only that transfer, `AWX_ROUNDS` times (default 3) on one
//! line, printing the daemons' PIDs first (the mode to profile under: `perf record -a -g`
//! while it runs), each round, then the daemons' RSS right after and once idle.
//! `AWX_RECEPTORD=PATH` and `AWX_RECEPTOR=PATH` run those builds of the daemon and the
//! client (`make bench`: the shipped ones, whole-program optimised; `cargo bench` alone
//! builds them without LTO), also for an A/B comparison of two builds in one run.
//! Figures only: nothing here asserts on time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod harness;
use harness::Daemon;

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");
const GO: &str = "/work/shared/peers/go-receptor/receptor";
const SIZE: u64 = 256 << 20;
const PINGS: usize = 200;
/// How long a line idles before its memory is read.
const IDLE: Duration = Duration::from_secs(15);

/// A line of three daemons, whichever implementation, and node1's control socket.
struct Line {
    pids: Vec<u32>,
    _daemons: Vec<Daemon>,
    _go: Vec<GoChild>,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

/// The build named by `var` (`AWX_RECEPTORD`, `AWX_RECEPTOR`), else this bench's own.
fn build(var: &str, own: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| own.to_owned())
}

/// A Go Receptor process, killed on drop.
struct GoChild(Child);

impl Drop for GoChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn receptord_line(pki: Option<&Path>) -> Line {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemons: Vec<Daemon> = Vec::new();
    for id in ["node1", "node2", "node3"] {
        let extra = format!(
            "[control]\nsocket = \"{}\"\n[[work.command]]\nname = \"cat\"\nprogram = \"cat\"\n",
            dir.path().join(format!("{id}.sock")).display()
        );
        let peer = daemons.last().map(|d| d.port);
        let cfg = harness::node_config(dir.path(), id, peer, pki, &extra, "");
        daemons.push(harness::spawn(&build("AWX_RECEPTORD", RECEPTORD), &cfg, None));
    }
    let sock = dir.path().join("node1.sock");
    let pids = daemons.iter().map(|d| d.child.id()).collect();
    let line = Line { pids, _daemons: daemons, _go: Vec::new(), sock, _dir: dir };
    line.wait_route();
    line
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn go_line() -> Option<Line> {
    if !Path::new(GO).exists() {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2) = (free_port(), free_port());
    let d = |s: &str| dir.path().join(s).display().to_string();
    let spawn = |id: &str, args: Vec<String>| {
        let mut cmd = Command::new(GO);
        cmd.args(["--node".into(), format!("id={id}"), format!("datadir={}", d(id))])
            .args(["--log-level", "level=warning"])
            .args([
                "--control-service".into(),
                "service=control".into(),
                format!("filename={}", d(&format!("{id}.sock"))),
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        GoChild(cmd.spawn().expect("go receptor"))
    };
    let listen =
        |p: u16| vec!["--tcp-listener".to_string(), format!("port={p}"), "bindaddr=127.0.0.1".into()];
    let peer = |p: u16| vec!["--tcp-peer".to_string(), format!("address=127.0.0.1:{p}")];
    let n1 = spawn("node1", listen(p1));
    let n2 = spawn("node2", [peer(p1), listen(p2)].concat());
    let n3 = spawn(
        "node3",
        [peer(p2), vec!["--work-command".into(), "worktype=cat".into(), "command=cat".into()]].concat(),
    );
    let go = vec![n1, n2, n3];
    let pids = go.iter().map(|c| c.0.id()).collect();
    let sock = dir.path().join("node1.sock");
    let line = Line { pids, _daemons: Vec::new(), _go: go, sock, _dir: dir };
    line.wait_route();
    Some(line)
}

/// One `ping NODE` through a fresh control session: the round trip the daemon reports, in ms.
fn control_ping(sock: &Path, node: &str) -> Option<f64> {
    let s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut w = s.try_clone().ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    writeln!(w, "ping {node}").ok()?;
    line.clear();
    r.read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    if v.get("Success")?.as_bool()? {
        // Go's time.Duration: nanoseconds.
        Some(v.get("Time")?.as_f64()? / 1e6)
    } else {
        None
    }
}

/// CPU-seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // After "pid (comm)": state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU-seconds of this process's waited-for children (cutime + cstime).
fn children_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(13) + ticks(14)) / 100.0
}

/// One transfer: MiB/s, daemons' CPU-s, client's CPU-s.
#[derive(Clone, Copy)]
struct Transfer {
    mib_s: f64,
    daemons: f64,
    client: f64,
}

impl Transfer {
    fn per_gib(&self) -> f64 {
        self.daemons * (1u64 << 30) as f64 / SIZE as f64
    }

    fn share(&self) -> f64 {
        self.daemons / (self.daemons + self.client)
    }
}

impl Line {
    fn wait_route(&self) {
        let t0 = Instant::now();
        while control_ping(&self.sock, "node3").is_none() {
            assert!(t0.elapsed() < Duration::from_secs(60), "no route to node3");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn daemons_cpu(&self) -> f64 {
        self.pids.iter().map(|p| cpu_secs(*p)).sum()
    }

    /// Runs `cmd` (a client following the job's output on stdout) and measures it.
    fn transfer(&self, mut cmd: Command) -> Transfer {
        let (d0, c0) = (self.daemons_cpu(), children_cpu_secs());
        let start = Instant::now();
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("client");
        let n = harness::drain(child.stdout.take().expect("stdout"));
        let secs = start.elapsed().as_secs_f64();
        assert!(child.wait().expect("wait").success(), "client failed");
        assert!(n >= SIZE, "only {n} of {SIZE} bytes arrived");
        let daemons = self.daemons_cpu() - d0;
        Transfer { mib_s: SIZE as f64 / (1 << 20) as f64 / secs, daemons, client: children_cpu_secs() - c0 }
    }

    /// `receptor --socket node1.sock work submit --node node3 cat -p FILE -f --rm`.
    fn own_client(&self, payload: &Path) -> Transfer {
        let mut cmd = Command::new(build("AWX_RECEPTOR", RECEPTOR));
        cmd.arg("--socket")
            .arg(&self.sock)
            .args(["work", "submit", "--node", "node3", "cat", "-f", "--rm", "-p"]);
        cmd.arg(payload);
        self.transfer(cmd)
    }

    /// `receptorctl --socket node1.sock work submit --node node3 cat --payload FILE -f`.
    fn receptorctl(&self, payload: &Path) -> Transfer {
        let mut cmd = Command::new(venv_bin().join("receptorctl"));
        cmd.arg("--socket").arg(&self.sock).args([
            "work",
            "submit",
            "--node",
            "node3",
            "cat",
            "-f",
            "--payload",
        ]);
        cmd.arg(payload);
        self.transfer(cmd)
    }

    fn ping_median(&self) -> f64 {
        let mut ms: Vec<f64> = (0..PINGS)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(5));
                control_ping(&self.sock, "node3").expect("ping")
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    }

    /// (RSS, PSS, private) of each node in MiB. RSS counts every page of the shared
    /// executable and libraries a node has mapped in full; PSS splits shared pages among
    /// the processes mapping them; private is what no other process maps (heap, stacks,
    /// relocated data, pages of the executable only this node ran).
    fn idle_rss_mib(&self) -> Vec<(f64, f64, f64)> {
        let mib = |kib: u64| kib as f64 / 1024.0;
        self.pids
            .iter()
            .map(|p| {
                let private = rollup_kib(*p, "Private_Clean:") + rollup_kib(*p, "Private_Dirty:");
                (mib(harness::rss_kib(*p)), mib(rollup_kib(*p, "Pss:")), mib(private))
            })
            .collect()
    }
}

/// One `KEY: N kB` figure of a process's `/proc/PID/smaps_rollup`, in KiB (0 if it is gone).
fn rollup_kib(pid: u32, key: &str) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn venv_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    assert!(bin.join("receptorctl").exists(), "run `make venv` first");
    bin
}

fn row(name: &str, ours: &str, go: &str) {
    println!("| {name} | {ours} | {go} |");
}

fn cpu_cell(t: &Transfer) -> String {
    format!("{:.2} CPU-s ({:.1} per GiB)", t.daemons, t.per_gib())
}

/// Frame size of the floor's ping: a routed ping frame's size on the wire.
const FLOOR_FRAME: usize = 29;

/// The floor under any daemon's ping on this machine: the same four loopback crossings
/// between three processes (this one -> relay -> echo -> relay -> this one, 29-byte frames,
/// `TCP_NODELAY`), each side a thread blocked in `read`, nothing else; median of `PINGS`
/// round trips in ms, 5 ms apart like the daemons' pings. The relay and the echo are this
/// executable again ([`floor_role`]).
fn floor_ping() -> f64 {
    use std::io::Read;
    let spawn = |role: &str, to: Option<u16>| {
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.env("AWX_FLOOR", role).stdout(Stdio::piped()).stderr(Stdio::null());
        if let Some(p) = to {
            cmd.env("AWX_FLOOR_TO", p.to_string());
        }
        let mut child = cmd.spawn().expect("floor process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port");
        (GoChild(child), line.trim().parse::<u16>().expect("port"))
    };
    let (_echo, echo_port) = spawn("echo", None);
    let (_relay, relay_port) = spawn("relay", Some(echo_port));
    let mut client = std::net::TcpStream::connect(("127.0.0.1", relay_port)).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    let mut ms: Vec<f64> = (0..PINGS)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            let t = Instant::now();
            client.write_all(&[7u8; FLOOR_FRAME]).expect("write");
            client.read_exact(&mut [0u8; FLOOR_FRAME]).expect("read");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// `AWX_FLOOR=echo|relay` (with `AWX_FLOOR_TO=PORT`): this process is one of the floor's
/// processes; it prints its port, serves one connection and exits with it.
fn floor_role() -> bool {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    fn pass(mut from: TcpStream, mut to: TcpStream) {
        let mut b = [0u8; FLOOR_FRAME];
        while from.read_exact(&mut b).is_ok() && to.write_all(&b).is_ok() {}
    }
    let Ok(role) = std::env::var("AWX_FLOOR") else { return false };
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", l.local_addr().expect("addr").port());
    std::io::stdout().flush().expect("flush");
    let up = l.accept().expect("accept").0;
    up.set_nodelay(true).expect("nodelay");
    if role == "echo" {
        pass(up.try_clone().expect("clone"), up);
        return true;
    }
    let to: u16 = std::env::var("AWX_FLOOR_TO").ok().and_then(|p| p.parse().ok()).expect("AWX_FLOOR_TO");
    let down = TcpStream::connect(("127.0.0.1", to)).expect("connect");
    down.set_nodelay(true).expect("nodelay");
    let (up2, down2) = (up.try_clone().expect("clone"), down.try_clone().expect("clone"));
    std::thread::spawn(move || pass(down2, up2));
    pass(up, down);
    true
}

/// `AWX_PING_ONLY=N`: only the ping, N rounds of 200 alternating between the receptord and
/// the Go line (both up at once), with the load average; for working on the ping alone.
fn ping_only(rounds: usize) {
    let ours = receptord_line(None);
    // `AWX_PING_GO=0`: the receptord line alone (to count a daemon's work per ping).
    let go = if std::env::var("AWX_PING_GO").is_ok_and(|v| v == "0") { None } else { go_line() };
    std::thread::sleep(Duration::from_secs(3));
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load().trim());
    let (mut all_ours, mut all_go, mut all_floor) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let f = floor_ping();
        all_floor.push(f);
        let a = ours.ping_median();
        let g = go.as_ref().map(Line::ping_median);
        all_ours.push(a);
        let ratio = g.map_or(String::new(), |g| {
            all_go.push(g);
            format!(" | Go {g:.3} ms | {:.2} ×", a / g)
        });
        println!("round {r}: receptord {a:.3} ms{ratio} | floor {f:.3} ms");
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (a, g) = (med(&mut all_ours), med(&mut all_go));
    let f = med(&mut all_floor);
    println!(
        "median of round medians: receptord {a:.3} ms, Go {g:.3} ms, {:.2} × Go's; floor {f:.3} ms ({:.2} × Go's)",
        a / g,
        f / g
    );
    println!("load average after: {}", load().trim());
}

fn write_payload(path: &Path) {
    let mut f = std::fs::File::create(path).expect("payload");
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    for _ in 0..SIZE >> 20 {
        f.write_all(&block).expect("write payload");
    }
}

/// `AWX_ONLY`: one kind of transfer, round after round on one line, for a profiler.
fn only(which: &str, payload: &Path, pki: &Path) {
    let rounds: usize = std::env::var("AWX_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let line = receptord_line((which == "tls").then_some(pki));
    println!("daemons' PIDs: {:?}", line.pids);
    for round in 1..=rounds {
        let t = match which {
            "own" | "tls" => line.own_client(payload),
            "ctl" => line.receptorctl(payload),
            other => panic!("AWX_ONLY={other}: expected own, tls or ctl"),
        };
        println!("round {round}: {:.0} MiB/s, {}, client {:.2} CPU-s", t.mib_s, cpu_cell(&t), t.client);
    }
    let rss = |m: &[(f64, f64, f64)]| m.iter().map(|m| format!("{:.1}", m.0)).collect::<Vec<_>>().join(" / ");
    println!("RSS right after: {} MiB", rss(&line.idle_rss_mib()));
    std::thread::sleep(IDLE);
    println!("RSS {} s later: {} MiB", IDLE.as_secs(), rss(&line.idle_rss_mib()));
}

fn main() {
    if floor_role() {
        return;
    }
    if let Some(n) = std::env::var("AWX_PING_ONLY").ok().and_then(|v| v.parse().ok()) {
        ping_only(n);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = dir.path().join("payload");
    write_payload(&payload);
    let pki = tempfile::tempdir().expect("tempdir");
    harness::issue_pki(RECEPTOR, pki.path(), &["node1", "node2", "node3"]);
    if let Ok(which) = std::env::var("AWX_ONLY") {
        only(&which, &payload, pki.path());
        return;
    }
    let (fresh, recycled) = harness::page_cache_cost(dir.path(), SIZE);

    let plain = receptord_line(None);
    std::thread::sleep(IDLE);
    let idle = plain.idle_rss_mib();
    let ping = plain.ping_median();
    let floor = floor_ping();
    let own = plain.own_client(&payload);
    let ctl = plain.receptorctl(&payload);
    drop(plain);

    let tls = receptord_line(Some(pki.path()));
    let own_tls = tls.own_client(&payload);
    drop(tls);

    let go = go_line().map(|g| {
        std::thread::sleep(IDLE);
        let idle = g.idle_rss_mib();
        let ping = g.ping_median();
        let ctl = g.receptorctl(&payload);
        (idle, ping, ctl)
    });

    let mib = |t: &Transfer| format!("{:.0} MiB/s", t.mib_s);
    let none = "—".to_string();
    let which = if build("AWX_RECEPTORD", RECEPTORD) == RECEPTORD {
        "bench profile, no LTO"
    } else {
        "the given build"
    };
    println!(
        "| figure (3-node line on loopback, 256 MiB, one run; receptord: {which}) | receptord | Go Receptor 1.4 (same run) |"
    );
    println!("|---|---|---|");
    row("`receptor --socket work submit --node node3 cat -p FILE -f`, plain TCP", &mib(&own), &none);
    row("daemons' CPU for it (all three)", &cpu_cell(&own), &none);
    row("the same over TLS links, end-to-end protection on", &mib(&own_tls), &none);
    row("daemons' CPU for it (all three)", &cpu_cell(&own_tls), &none);
    let go_ctl = go.as_ref().map(|g| g.2);
    row(
        "the same through the unmodified `receptorctl` (AWX's path), plain TCP",
        &mib(&ctl),
        &go_ctl.as_ref().map_or(none.clone(), mib),
    );
    row("daemons' CPU for it (all three)", &cpu_cell(&ctl), &go_ctl.as_ref().map_or(none.clone(), cpu_cell));
    let share = |t: &Transfer| format!("{:.0} % (receptorctl {:.2} CPU-s)", 100.0 * t.share(), t.client);
    row("daemons' share of the transfer's CPU", &share(&ctl), &go_ctl.as_ref().map_or(none.clone(), share));
    let go_ping = go.as_ref().map(|g| g.1);
    row(
        &format!("ping median node1 -> node3 (control socket, {PINGS})"),
        &format!("{ping:.3} ms{}", go_ping.map_or(String::new(), |g| format!(" ({:.2} × Go's)", ping / g))),
        &go_ping.map_or(none.clone(), |g| format!("{g:.3} ms")),
    );
    row(
        "the floor: the same four crossings between processes that only read and write",
        &format!("{floor:.3} ms{}", go_ping.map_or(String::new(), |g| format!(" ({:.2} × Go's)", floor / g))),
        &none,
    );
    let fig = |v: &[(f64, f64, f64)], pick: fn(&(f64, f64, f64)) -> f64| {
        v.iter().map(|m| format!("{:.1}", pick(m))).collect::<Vec<_>>().join(" / ") + " MiB"
    };
    let idle_row = |name: String, pick: fn(&(f64, f64, f64)) -> f64| {
        row(&name, &fig(&idle, pick), &go.as_ref().map_or(none.clone(), |g| fig(&g.0, pick)));
    };
    let after = IDLE.as_secs();
    idle_row(format!("idle RSS node1 / node2 / node3 ({after} s idle)"), |m| m.0);
    idle_row("idle PSS node1 / node2 / node3 (shared pages split)".into(), |m| m.1);
    idle_row("idle private memory node1 / node2 / node3".into(), |m| m.2);
    println!(
        "\nThis machine (the bench process itself): writing 256 MiB into new page-cache pages costs \
         {fresh:.2} CPU-s ({:.1} per GiB), into pages just freed {recycled:.2} CPU-s ({:.1} per GiB); \
         each transfer above stores 768 MiB in the daemons (node1's stdin and mirrored output, node3's stdin).",
        fresh * 4.0,
        recycled * 4.0
    );
}
