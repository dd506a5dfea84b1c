//! Go Receptor 1.4.0 nodes for interop tests: the reference binary at
//! `../shared/peers/go-receptor/receptor` (beside the repository), started on loopback with
//! explicit ports and a control socket in a temporary directory, killed on drop. Driven
//! through its control socket with the line protocol (no receptorctl needed).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::wait_until;

/// The Go binary; a missing binary fails the test (CI has it).
pub fn go_binary() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/go-receptor/receptor");
    assert!(p.is_file(), "the Go Receptor reference binary is missing at {}", p.display());
    p
}

/// A free loopback TCP port (bound and released; Go needs a port number up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running Go node.
pub struct GoNode {
    pub id: String,
    /// Its `--tcp-listener` port, if it has one.
    pub port: Option<u16>,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl GoNode {
    /// Starts `id` with a control socket; `listen` adds a TCP listener on a free port;
    /// `extra` are further command-line options (`--tcp-peer address=…`, `--work-command …`).
    pub fn start(id: &str, listen: bool, extra: &[String]) -> GoNode {
        GoNode::start_control(id, listen, None, extra)
    }

    /// [`GoNode::start`] with the control service served to the mesh with user TLS
    /// (`tls=<tls_server>`, Go's ConnType 2), as AWX's execution nodes serve it.
    pub fn start_control(id: &str, listen: bool, tls_server: Option<&str>, extra: &[String]) -> GoNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("ctl.sock");
        let port = listen.then(free_port);
        let mut args = vec![
            "--node".into(),
            format!("id={id}"),
            format!("datadir={}", dir.path().join("data").display()),
            "--log-level".into(),
            "level=info".into(),
            "--control-service".into(),
            "service=control".into(),
            format!("filename={}", sock.display()),
        ];
        if let Some(t) = tls_server {
            args.push(format!("tls={t}"));
        }
        if let Some(p) = port {
            args.extend(["--tcp-listener".into(), format!("port={p}"), "bindaddr=127.0.0.1".into()]);
        }
        args.extend(extra.iter().cloned());
        let mut n = GoNode { id: id.into(), port, sock, dir, args, child: None, log: Arc::default() };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let mut child = Command::new(go_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the Go receptor");
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if std::env::var_os("RECEPTOR_TEST_ECHO").is_some() {
                        eprintln!("[go] {line}");
                    }
                    let mut l = sink.lock().expect("log");
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        self.child = Some(child);
        self.log = log;
        let sock = self.sock.clone();
        wait_until("the Go node's control socket", Duration::from_secs(10), || {
            UnixStream::connect(&sock).is_ok()
        });
    }

    /// Kills the node and starts it again with the same options (same ports).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Whether the process has exited on its own (reaping it if so).
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// One control command; the first reply line.
    pub fn ctl(&self, line: &str) -> String {
        ctl(&self.sock, line)
    }

    /// `status` as JSON.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ctl("status")).expect("status JSON")
    }
}

impl Drop for GoNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One control command on a fresh session of the control socket at `sock` (Go's or
/// receptord's); the first reply line.
pub fn ctl(sock: &Path, line: &str) -> String {
    let s = UnixStream::connect(sock).expect("connect to the control socket");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).expect("greeting");
    assert!(greeting.starts_with("Receptor Control, node "), "{greeting}");
    w.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut reply = String::new();
    r.read_line(&mut reply).expect("reply");
    reply
}

/// The node IDs in a Go-style status's `Connections`.
pub fn connections(status: &Value) -> Vec<(String, f64, Option<String>)> {
    status["Connections"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["NodeID"].as_str().unwrap_or_default().to_owned(),
                        c["Cost"].as_f64().unwrap_or_default(),
                        c.get("Protocol").and_then(Value::as_str).map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The work types a Go-style status advertises for `node`'s control service.
pub fn work_types(status: &Value, node: &str) -> Vec<String> {
    status["Advertisements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["NodeID"] == node && a["Service"] == "control")
        .flat_map(|a| a["WorkCommands"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w["WorkType"].as_str().map(str::to_owned))
        .collect()
}

/// A PKI made the way Go Receptor sites make theirs: `--cert-init` for the CA, then
/// `--cert-makereq` (node ID in the Receptor otherName SAN, `localhost`/127.0.0.1 as DNS/IP
/// names) and `--cert-signreq` per node, all by the Go binary.
pub struct GoPki {
    pub dir: tempfile::TempDir,
}

impl GoPki {
    pub fn new() -> GoPki {
        let pki = GoPki { dir: tempfile::tempdir().expect("tempdir") };
        pki.run(&[
            "--cert-init",
            "commonname=Go test CA",
            "bits=2048",
            &format!("outcert={}", pki.path("ca.crt").display()),
            &format!("outkey={}", pki.path("ca.key").display()),
        ]);
        pki
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new(go_binary()).args(args).output().expect("run the Go receptor");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues `name.crt`/`name.key` naming node `id`.
    pub fn issue(&self, name: &str, id: &str) {
        let (csr, key, crt) = (
            self.path(&format!("{name}.csr")),
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.crt")),
        );
        self.run(&[
            "--cert-makereq",
            "bits=2048",
            &format!("commonname={id}"),
            "dnsname=localhost",
            "ipaddress=127.0.0.1",
            &format!("nodeid={id}"),
            &format!("outreq={}", csr.display()),
            &format!("outkey={}", key.display()),
        ]);
        self.run(&[
            "--cert-signreq",
            &format!("req={}", csr.display()),
            &format!("cacert={}", self.path("ca.crt").display()),
            &format!("cakey={}", self.path("ca.key").display()),
            &format!("outcert={}", crt.display()),
            "verify=yes",
        ]);
    }

    /// Go's `--tls-server srv` and `--tls-client cli` with `name`'s certificate (client
    /// certificates required).
    pub fn go_args(&self, name: &str) -> Vec<String> {
        let (crt, key, ca) =
            (self.path(&format!("{name}.crt")), self.path(&format!("{name}.key")), self.path("ca.crt"));
        vec![
            "--tls-server".into(),
            "name=srv".into(),
            format!("cert={}", crt.display()),
            format!("key={}", key.display()),
            "requireclientcert=true".into(),
            format!("clientcas={}", ca.display()),
            "--tls-client".into(),
            "name=cli".into(),
            format!("cert={}", crt.display()),
            format!("key={}", key.display()),
            format!("rootcas={}", ca.display()),
        ]
    }

    /// receptord's `[tls]` with `name`'s certificate.
    pub fn tls_toml(&self, name: &str) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n",
            self.path(&format!("{name}.crt")).display(),
            self.path(&format!("{name}.key")).display(),
            self.path("ca.crt").display()
        )
    }
}
