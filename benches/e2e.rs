//! End-to-end stream protection figures (`make bench`): a line of three TLS daemons, once
//! with `[tls] e2e_streams` on (the default) and once off, and an in-process client node
//! entering at node1 (the library, so both runs differ only in protection). Prints, for
//! each: job output throughput from node3 (512 MiB), the mesh ping to node3, the round
//! trip of one byte over an already-open stream to a `cat` job on node3, and the cost of
//! setting a stream up (open + first round trip; the difference is the handshake's cost):
//! to a `cat` job (a process started per stream) and to node3's `control` service (open
//! and read its greeting: the stream alone). Protected streams are measured between nodes
//! that talked recently (resumed, issue 26) and, with a client whose resumption is off,
//! as first contacts. Figures only: nothing here asserts on time.
//!
//! `E2E_SETUP_ONLY=1` prints the protected set-up figures alone (no transfers, no
//! unprotected line) and `E2E_SETUP_N` sets how many `control` set-ups each median takes
//! (200): set-up is a few hundred microseconds, so on a shared machine a larger sample
//! steadies it.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use receptord::mesh::{Chunk, Node, NodeOptions, StreamReader, StreamWriter};
use receptord::transport::{PeerUrl, TlsContext, TlsSettings};
use receptord::wire::NodeId;

#[path = "common/mod.rs"]
mod harness;
use harness::Daemon;

const RECEPTORD: &str = env!("CARGO_BIN_EXE_receptord");
const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");
const SIZE: u64 = 512 << 20;
const RUNS: usize = 3;
const WORK: &str = "[[work.command]]\nname = \"gen\"\nprogram = \"head\"\nargs = [\"-c\", \"536870912\", \"/dev/zero\"]\n\
                    [[work.command]]\nname = \"cat\"\nprogram = \"cat\"\n";

fn start(dir: &Path, pki: &Path, id: &str, peer: Option<u16>, protect: bool) -> Daemon {
    let tls = format!("e2e_streams = {protect}\n");
    harness::spawn(RECEPTORD, &harness::node_config(dir, id, peer, Some(pki), WORK, &tls), None)
}

#[derive(Default)]
struct Figures {
    mib_s: f64,
    ping: f64,
    echo: (f64, f64),
    setup: f64,
    /// Open a stream to node3's `control` service and read its greeting, median of 200.
    setup_control: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

async fn open_work(node: &Node, dst: &NodeId, work_type: &str) -> (StreamWriter, StreamReader) {
    let header = format!("{{\"work_type\":\"{work_type}\"}}");
    node.open(dst, "work", Bytes::from(header)).await.expect("open")
}

async fn echo(w: &mut StreamWriter, r: &mut StreamReader) -> f64 {
    let t = Instant::now();
    w.write(Bytes::from_static(b"x")).await.expect("write");
    match r.recv().await.expect("echo") {
        Chunk::Data(d) => assert_eq!(&d[..], b"x"),
        Chunk::End(_) => panic!("job ended"),
    }
    t.elapsed().as_secs_f64() * 1e3
}

/// Milliseconds to open a stream to node3's `control` service and read its greeting.
async fn control_setup(node: &Node, dst: &NodeId) -> f64 {
    let t = Instant::now();
    let (w, mut r) = node.open(dst, "control", Bytes::new()).await.expect("open control");
    match r.recv().await.expect("greeting") {
        Chunk::Data(d) => assert!(d.starts_with(b"Receptor Control"), "{d:?}"),
        Chunk::End(_) => panic!("control stream ended"),
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    w.finish(Bytes::new()).await;
    while r.recv().await.is_ok_and(|c| matches!(c, Chunk::Data(_))) {}
    ms
}

/// `resume`: the client keeps session tickets (limits.stream_resumption); without it every
/// protected stream is a first contact. `all`: every figure, else only the set-ups.
async fn measure(pki: &Path, port: u16, protect: bool, resume: bool, all: bool) -> Figures {
    let p = |f: &str| pki.join(f);
    let settings = TlsSettings {
        cert: p("bench.crt"),
        key: p("bench.key"),
        ca: vec![p("ca.crt")],
        require_client_cert: true,
        pinned: Vec::new(),
        min_tls13: false,
        skip_node_id_check: false,
    };
    let mut opts = NodeOptions::new(NodeId::new("bench").expect("id"));
    opts.ephemeral = true;
    let resumption = if resume { Duration::from_secs(600) } else { Duration::ZERO };
    opts.tls = Some(TlsContext::load_with(settings, "bench", resumption).expect("tls"));
    opts.e2e_streams = protect;
    let node = Node::start(opts);
    let url: PeerUrl = format!("receptors://127.0.0.1:{port}").parse().expect("url");
    node.join(&url, Duration::from_secs(10)).await.expect("join");
    let node3 = NodeId::new("node3").expect("id");
    let t0 = Instant::now();
    while node.ping(&node3, Duration::from_secs(1)).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no route to node3");
    }

    let mut control = Vec::new();
    for _ in 0..setup_samples() {
        control.push(control_setup(&node, &node3).await);
    }
    let setup_control = median(control);
    if !all {
        let mut setups = Vec::new();
        for _ in 0..100 {
            setups.push(cat_setup(&node, &node3).await);
        }
        node.shutdown(Duration::from_secs(1)).await;
        return Figures { setup: median(setups), setup_control, ..Figures::default() };
    }

    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let (w, mut r) = open_work(&node, &node3, "gen").await;
        w.finish(Bytes::new()).await;
        let mut n = 0u64;
        while let Chunk::Data(d) = r.recv().await.expect("output") {
            n += d.len() as u64;
        }
        assert_eq!(n, SIZE, "every byte arrived");
        runs.push(t.elapsed().as_secs_f64());
    }
    let mib_s = SIZE as f64 / (1 << 20) as f64 / median(runs);

    let mut pings = Vec::new();
    for _ in 0..1000 {
        pings.push(node.ping(&node3, Duration::from_secs(2)).await.expect("ping").as_secs_f64() * 1e3);
    }

    let (mut w, mut r) = open_work(&node, &node3, "cat").await;
    let mut rtts = Vec::new();
    for _ in 0..1000 {
        rtts.push(echo(&mut w, &mut r).await);
    }
    w.finish(Bytes::new()).await;

    let mut setups = Vec::new();
    for _ in 0..100 {
        setups.push(cat_setup(&node, &node3).await);
    }
    node.shutdown(Duration::from_secs(1)).await;
    Figures {
        mib_s,
        ping: median(pings),
        echo: (median(rtts.clone()), p99(rtts)),
        setup: median(setups),
        setup_control,
    }
}

fn setup_only() -> bool {
    std::env::var_os("E2E_SETUP_ONLY").is_some()
}

fn setup_samples() -> usize {
    std::env::var("E2E_SETUP_N").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(200)
}

/// Milliseconds to open a stream to a `cat` job and get one byte back through it.
async fn cat_setup(node: &Node, node3: &NodeId) -> f64 {
    let t = Instant::now();
    let (mut w, mut r) = open_work(node, node3, "cat").await;
    echo(&mut w, &mut r).await;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    w.finish(Bytes::new()).await;
    while r.recv().await.is_ok_and(|c| matches!(c, Chunk::Data(_))) {}
    ms
}

fn line(pki: &Path, protect: bool) -> (Figures, Option<Figures>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = start(dir.path(), pki, "node1", None, protect);
    let n2 = start(dir.path(), pki, "node2", Some(n1.port), protect);
    let _n3 = start(dir.path(), pki, "node3", Some(n2.port), protect);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The client runs on a runtime worker, as a stream opened inside a daemon does, not on
    // the thread of `block_on` (which adds a hand-off between threads at every step).
    let run = |resume: bool, all: bool| {
        let pki = pki.to_path_buf();
        let port = n1.port;
        rt.block_on(async move {
            tokio::spawn(async move { measure(&pki, port, protect, resume, all).await })
                .await
                .expect("measure")
        })
    };
    let figures = run(true, !setup_only());
    let first = protect.then(|| run(false, false));
    drop(n2);
    (figures, first)
}

fn main() {
    let pki = tempfile::tempdir().expect("tempdir");
    harness::issue_pki(RECEPTOR, pki.path(), &["node1", "node2", "node3", "bench"]);
    let (on, first) = line(pki.path(), true);
    let first = first.expect("first-contact figures");
    if setup_only() {
        println!(
            "| protected stream set-up, median of {} | `control` greeting | `cat` job + 1-byte round trip |",
            setup_samples()
        );
        println!("|---|---|---|");
        println!("| talked recently (resumed) | {:.3} ms | {:.3} ms |", on.setup_control, on.setup);
        println!("| first contact | {:.3} ms | {:.3} ms |", first.setup_control, first.setup);
        return;
    }
    let (off, _) = line(pki.path(), false);
    let ratio = on.mib_s / off.mib_s;
    let mark = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "| end-to-end streams, 3 TLS hops (loopback; in-process client) | protected | unprotected | target |"
    );
    println!("|---|---|---|---|");
    println!(
        "| job output, 512 MiB, median of {RUNS} | {:.0} MiB/s | {:.0} MiB/s | ratio {ratio:.2} >= 0.5 ({}) |",
        on.mib_s,
        off.mib_s,
        mark(ratio >= 0.5)
    );
    println!(
        "| mesh ping to node3, median of 1000 | {:.3} ms | {:.3} ms | <= 1 ms ({}) |",
        on.ping,
        off.ping,
        mark(on.ping <= 1.0)
    );
    println!(
        "| 1-byte round trip over an open stream (cat job), median / p99 of 1000 | {:.3} / {:.3} ms | {:.3} / {:.3} ms | |",
        on.echo.0, on.echo.1, off.echo.0, off.echo.1
    );
    println!(
        "| stream setup to a `cat` job (open + first round trip), median of 100, talked recently (resumed) | {:.3} ms | {:.3} ms | |",
        on.setup, off.setup
    );
    println!(
        "| the same, first contact (client without tickets: full handshake) | {:.3} ms | | handshake ≈ {:.3} ms full, {:.3} ms resumed |",
        first.setup,
        first.setup - off.setup,
        on.setup - off.setup
    );
    println!(
        "| stream setup alone (open node3's `control` service, read its greeting), median of 200, resumed | {:.3} ms | {:.3} ms | <= 0.5 ms ({}) |",
        on.setup_control,
        off.setup_control,
        mark(on.setup_control <= 0.5)
    );
    println!(
        "| the same, first contact | {:.3} ms | | <= 2.5 ms ({}) |",
        first.setup_control,
        mark(first.setup_control <= 2.5)
    );
}
