//! Mixed meshes against the all-Go line, in one run (`make bench`): three-node lines
//! (controller – hop – executor) where the controller submits a `cat` unit with a
//! payload and reads its results back through its control socket, as receptorctl and AWX
//! do, and pings the executor. Lines: all Go Receptor 1.4.0; Go controller → receptord
//! executor (the AWX path to a receptord node); receptord controller → Go executor.
//! Figures only: nothing here asserts on time. Needs the Go binary at
//! `../shared/peers/go-receptor/receptor` (skipped with a note otherwise).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod harness;

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const PAYLOAD: usize = 32 << 20;
const RUNS: usize = 3;
const PINGS: usize = 20;

fn go_receptor() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/go-receptor/receptor");
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A Go node killed on drop.
struct Go(Child);

impl Drop for Go {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node of a line (Go or receptord), kept until the line is dropped.
type Node = Box<dyn std::any::Any>;

fn go(dir: &Path, id: &str, listen: Option<u16>, peer: Option<u16>) -> (Node, PathBuf) {
    let sock = dir.join(format!("{id}.sock"));
    let mut args = vec![
        "--node".to_owned(),
        format!("id={id}"),
        format!("datadir={}", dir.join(id).display()),
        "--log-level".into(),
        "level=error".into(),
        "--control-service".into(),
        "service=control".into(),
        format!("filename={}", sock.display()),
        "--work-command".into(),
        "worktype=cat".into(),
        "command=cat".into(),
    ];
    if let Some(p) = listen {
        args.extend(["--tcp-listener".into(), format!("port={p}"), "bindaddr=127.0.0.1".into()]);
    }
    if let Some(p) = peer {
        args.extend(["--tcp-peer".into(), format!("address=127.0.0.1:{p}")]);
    }
    let child = Command::new(go_receptor().expect("go"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn Go");
    wait(|| UnixStream::connect(&sock).is_ok());
    (Box::new(Go(child)), sock)
}

fn receptord(dir: &Path, id: &str, peer: u16) -> (Node, PathBuf) {
    let sock = dir.join(format!("{id}.sock"));
    let extra = format!(
        "[control]\nsocket = \"{}\"\n[[work.command]]\nname = \"cat\"\nprogram = \"cat\"\n\
         [[peers]]\nurl = \"netceptor://127.0.0.1:{peer}\"\n",
        sock.display()
    );
    let cfg = harness::node_config(dir, id, None, None, &extra, "");
    (Box::new(harness::spawn(RECEPTORD, &cfg, None)), sock)
}

fn wait(mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < end, "timed out setting up the line");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn session(sock: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let s = UnixStream::connect(sock).expect("connect");
    let w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).expect("greeting");
    (r, w)
}

fn one_line(sock: &Path, line: &str) -> String {
    let (mut r, mut w) = session(sock);
    writeln!(w, "{line}").expect("write");
    let mut reply = String::new();
    let _ = r.read_line(&mut reply);
    reply
}

/// Submits `cat` on `node` with the payload, reads all results; the elapsed time.
fn round_trip(sock: &Path, node: &str, payload: &[u8]) -> Duration {
    let started = Instant::now();
    let (mut r, mut w) = session(sock);
    writeln!(
        w,
        "{{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"{node}\",\"worktype\":\"cat\"}}"
    )
    .expect("write");
    let mut line = String::new();
    r.read_line(&mut line).expect("created");
    let id = line.split("with ID ").nth(1).and_then(|s| s.split('.').next()).expect("unit id").to_owned();
    w.write_all(payload).expect("payload");
    w.shutdown(std::net::Shutdown::Write).expect("shutdown");
    line.clear();
    r.read_line(&mut line).expect("reply");
    assert!(line.contains("Job"), "{line}");
    let (mut r, mut w) = session(sock);
    writeln!(w, "work results {id} 0").expect("write");
    line.clear();
    r.read_line(&mut line).expect("header");
    assert!(line.contains("Streaming results"), "{line}");
    let got = harness::drain(r.by_ref());
    assert_eq!(got, payload.len() as u64, "results of {node}");
    let elapsed = started.elapsed();
    one_line(sock, &format!("work release {id}"));
    elapsed
}

fn ping_p50(sock: &Path, node: &str) -> f64 {
    let mut t: Vec<f64> = (0..PINGS)
        .filter_map(|_| {
            let v: serde_json::Value = serde_json::from_str(&one_line(sock, &format!("ping {node}"))).ok()?;
            v["Time"].as_u64().map(|ns| ns as f64 / 1e6)
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Line {
    name: &'static str,
    _nodes: Vec<Node>,
    ctl: PathBuf,
    target: &'static str,
}

fn measure(line: &Line, payload: &[u8]) {
    wait(|| one_line(&line.ctl, &format!("ping {}", line.target)).contains("\"Success\":true"));
    let mut secs: Vec<f64> =
        (0..RUNS).map(|_| round_trip(&line.ctl, line.target, payload).as_secs_f64()).collect();
    secs.sort_by(f64::total_cmp);
    let best = secs[0];
    let mib = payload.len() as f64 / (1 << 20) as f64;
    println!(
        "{:<40} {:>3.0} MiB out and back: best {:>6.2} s ({:>5.1} MiB/s of payload), median {:>6.2} s; ping p50 {:>5.2} ms",
        line.name,
        mib,
        best,
        mib / best,
        secs[secs.len() / 2],
        ping_p50(&line.ctl, line.target)
    );
}

fn main() {
    if go_receptor().is_none() {
        println!("netceptor bench skipped: no Go Receptor at ../shared/peers/go-receptor/receptor");
        return;
    }
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let tmp = tempfile::tempdir().expect("tmp");
    println!("netceptor: 3-node lines on loopback, controller – hop – executor ({RUNS} runs, {PINGS} pings)");

    // All Go.
    let d = tmp.path().join("allgo");
    std::fs::create_dir_all(&d).expect("dir");
    let (p1, p2) = (free_port(), free_port());
    let (c, ctl) = go(&d, "goctl", Some(p1), None);
    let (h, _) = go(&d, "gohop", Some(p2), Some(p1));
    let (e, _) = go(&d, "goexec", None, Some(p2));
    measure(
        &Line { name: "all Go (goctl – gohop – goexec)", _nodes: vec![c, h, e], ctl, target: "goexec" },
        &payload,
    );

    // Go controller → receptord executor (AWX's path to a receptord node).
    let d = tmp.path().join("awx");
    std::fs::create_dir_all(&d).expect("dir");
    let (p1, p2) = (free_port(), free_port());
    let (c, ctl) = go(&d, "goctl", Some(p1), None);
    let (h, _) = go(&d, "gohop", Some(p2), Some(p1));
    let (e, _) = receptord(&d, "rexec", p2);
    let line =
        Line {
            name: "Go → receptord (goctl – gohop – rexec)", _nodes: vec![c, h, e], ctl, target: "rexec"
        };
    measure(&line, &payload);

    // receptord controller → Go executor.
    let d = tmp.path().join("rctl");
    std::fs::create_dir_all(&d).expect("dir");
    let p2 = free_port();
    let (h, _) = go(&d, "gohop", Some(p2), None);
    let (e, _) = go(&d, "goexec", None, Some(p2));
    let (c, ctl) = receptord(&d, "rctl", p2);
    let line =
        Line {
            name: "receptord → Go (rctl – gohop – goexec)", _nodes: vec![h, e, c], ctl, target: "goexec"
        };
    measure(&line, &payload);
}
