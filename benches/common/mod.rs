//! Shared by the benchmarks: a test PKI, node configs, start a real receptord and learn
//! the port it bound; the raw loopback TCP reference figure.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A daemon killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a node certificate for each of `nodes` in `dir`, issued by `receptor cert`.
pub fn issue_pki(receptor: &str, dir: &Path, nodes: &[&str]) {
    let cli = |args: &[&str]| {
        let st = Command::new(receptor).current_dir(dir).args(args).stdout(Stdio::null()).status();
        assert!(st.expect("receptor cert").success(), "receptor {args:?}");
    };
    cli(&["cert", "init"]);
    for n in nodes {
        cli(&["cert", "issue", "--node-id", n]);
    }
}

/// Writes `<dir>/<id>.toml`: node `id` listening on 127.0.0.1:0 and dialing `peer`, with
/// `extra` appended (work types); with `pki` (from [`issue_pki`]) over TLS with its
/// certificate, `tls_extra` added to its `[tls]` table.
pub fn node_config(
    dir: &Path,
    id: &str,
    peer: Option<u16>,
    pki: Option<&Path>,
    extra: &str,
    tls_extra: &str,
) -> PathBuf {
    let scheme = if pki.is_some() { "receptors" } else { "receptor" };
    let mut cfg = format!(
        "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\n[[listeners]]\nurl = \"{scheme}://127.0.0.1:0\"\n{extra}",
        dir.join(id).display()
    );
    if let Some(port) = peer {
        cfg.push_str(&format!("[[peers]]\nurl = \"{scheme}://127.0.0.1:{port}\"\n"));
    }
    if let Some(pki) = pki {
        let p = |f: &str| pki.join(f).display().to_string();
        cfg.push_str(&format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n{tls_extra}",
            p(&format!("{id}.crt")),
            p(&format!("{id}.key")),
            p("ca.crt")
        ));
    }
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, cfg).expect("config");
    path
}

/// Starts `receptord -c config` (with `path` as PATH when given) and waits for its
/// "listener bound" line; its remaining stderr is drained in the background.
pub fn spawn(receptord: &str, config: &Path, path: Option<&str>) -> Daemon {
    let mut cmd = Command::new(receptord);
    cmd.arg("-c").arg(config).stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().expect("receptord");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let port = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("addr=127.0.0.1:").nth(1).and_then(|p| p.split_whitespace().next()?.parse().ok())
        })
        .expect("listener port");
    std::thread::spawn(move || for _ in lines {});
    Daemon { child, port }
}

/// Reads to the end; returns the byte count.
pub fn drain(mut r: impl Read) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return n,
            Ok(k) => n += k as u64,
        }
    }
}

/// Seconds for a raw loopback TCP copy of `size` bytes in 64 KiB writes.
pub fn raw_tcp_run(size: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..size / chunk.len() as u64 {
            s.write_all(&chunk).expect("write");
        }
    });
    let (s, _) = listener.accept().expect("accept");
    assert_eq!(drain(s), size);
    writer.join().expect("writer");
    start.elapsed().as_secs_f64()
}

/// Resident memory of a process, in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CPU-seconds the calling thread has run (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu_s() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    text.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
}

/// What writing `size` bytes to a file in `dir` costs this machine in CPU-seconds: into
/// page-cache pages never used before (a new file, the previous one kept), and into pages
/// just freed (after deleting a file as large). On a virtual machine that gives free
/// memory back to its host (free page reporting, DAMON), the first touch of a page is a
/// fault on the host, which every byte a daemon stores pays.
pub fn page_cache_cost(dir: &Path, size: u64) -> (f64, f64) {
    let block = vec![7u8; 1 << 20];
    let write = |name: &str| {
        let start = thread_cpu_s();
        let mut f = std::fs::File::create(dir.join(name)).expect("calibration file");
        for _ in 0..size >> 20 {
            f.write_all(&block).expect("calibration write");
        }
        thread_cpu_s() - start
    };
    let _ = write("calibrate-0");
    let fresh = write("calibrate-1");
    std::fs::remove_file(dir.join("calibrate-0")).expect("remove");
    let recycled = write("calibrate-2");
    for f in ["calibrate-1", "calibrate-2"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    (fresh, recycled)
}
