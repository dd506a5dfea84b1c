//! WebSocket links (`ws://`, `wss://`, `netceptor+ws://`, `netceptor+wss://`): receptord
//! and the real Go Receptor 1.4.0 in both directions (Go's `--ws-peer` on receptord's
//! `ws://` listener unchanged, receptord dialing Go's `--ws-listener`), receptord to
//! receptord over ws and wss, through a real CONNECT proxy on loopback, and hostile peers:
//! an oversize message, a slowloris upgrade request, a proxy that never answers.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::go::{GoNode, GoPki, connections, ctl, free_port};
use common::{CAT, Daemon, Spec, wait_until, with_socket};
use serde_json::Value;

/// Go learns distant nodes only from their periodic updates (every 10 s).
const CONVERGE: Duration = Duration::from_secs(40);

/// No proxy from the test's own environment.
const NO_PROXY_ENV: [(&str, &str); 6] = [
    ("HTTP_PROXY", ""),
    ("http_proxy", ""),
    ("HTTPS_PROXY", ""),
    ("https_proxy", ""),
    ("ALL_PROXY", ""),
    ("all_proxy", ""),
];

/// As `wait_until`, with the daemons' logs in the failure message.
fn wait_logged(what: &str, logs: &[&Daemon], timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let all: Vec<String> = logs.iter().map(|d| d.log()).collect();
    panic!("timed out after {timeout:?} waiting for {what}; logs:\n{}", all.join("\n----\n"));
}

fn ping_ok(reply: &str) -> bool {
    serde_json::from_str::<Value>(reply).is_ok_and(|v| v["Success"] == true)
}

fn status(sock: &std::path::Path) -> Value {
    serde_json::from_str(&ctl(sock, "status")).expect("status JSON")
}

fn has_link(sock: &std::path::Path, id: &str, proto: &str) -> bool {
    connections(&status(sock)).iter().any(|(n, _, p)| n == id && p.as_deref() == Some(proto))
}

fn go_lists(g: &GoNode, id: &str) -> bool {
    connections(&g.status()).iter().any(|(n, _, _)| n == id)
}

fn spec<'a>(id: &'a str, extra: &str) -> Spec<'a> {
    let mut s = Spec::new(id).extra(extra);
    s.listen = false;
    s.env = NO_PROXY_ENV.to_vec();
    s
}

#[test]
fn receptord_and_go_link_over_websockets_both_ways() {
    // gows1 listens on a WebSocket path; receptord dials it with netceptor+ws://.
    let go_port = free_port();
    let gows1 = GoNode::start(
        "gows1",
        false,
        &[
            "--ws-listener".into(),
            format!("port={go_port}"),
            "bindaddr=127.0.0.1".into(),
            "path=/mesh".into(),
            "--work-command".into(),
            "worktype=gocat".into(),
            "command=cat".into(),
        ],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let r_port = free_port();
    let links = format!(
        "[[listeners]]\nurl = \"ws://127.0.0.1:{r_port}/mesh\"\n[[peers]]\nurl = \"netceptor+ws://127.0.0.1:{go_port}/mesh\"\n"
    );
    let r = Daemon::start(spec("rnode", &format!("{CAT}{control}{links}")));
    // gows2 dials receptord's ws:// listener with its unchanged --ws-peer; a native node
    // dials the same listener with ws://.
    let gows2 =
        GoNode::start("gows2", false, &["--ws-peer".into(), format!("address=ws://127.0.0.1:{r_port}/mesh")]);
    let native =
        Daemon::start(spec("rnative", &format!("[[peers]]\nurl = \"ws://127.0.0.1:{r_port}/mesh\"\n")));

    wait_until("gows1 lists rnode", CONVERGE, || go_lists(&gows1, "rnode"));
    wait_until("gows2 lists rnode", CONVERGE, || go_lists(&gows2, "rnode"));
    wait_logged("rnode lists both Go links and the native one", &[&r, &native], CONVERGE, || {
        has_link(&sock, "gows1", "netceptor")
            && has_link(&sock, "gows2", "netceptor")
            && has_link(&sock, "rnative", "receptor")
    });
    // Go's view lists receptord's work types; pings both ways and Go → Go through receptord.
    wait_until("rnode's work types on gows2", CONVERGE, || {
        common::go::work_types(&gows2.status(), "rnode") == ["cat"]
    });
    wait_until("gows2 pings rnode", CONVERGE, || ping_ok(&gows2.ctl("ping rnode")));
    wait_until("gows2 pings gows1 through rnode", CONVERGE, || ping_ok(&gows2.ctl("ping gows1")));
    assert!(ping_ok(&ctl(&sock, "ping gows1")), "receptord pings the Go node it dialed");
    assert!(ping_ok(&ctl(&sock, "ping rnative")), "receptord pings its native ws peer");

    // AWX's path over the WebSocket link: receptorctl on gows2 runs work on rnode,
    // results byte-identical (1 MiB: many messages each way).
    let data: Vec<u8> = (0..1usize << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let file = tmp.path().join("payload.bin");
    std::fs::write(&file, &data).expect("payload");
    let out = std::process::Command::new(common::venv_bin().join("receptorctl"))
        .env("PATH", common::path_with_venv())
        .arg("--socket")
        .arg(&gows2.sock)
        .args(["work", "submit", "--node", "rnode", "cat", "-f", "--payload"])
        .arg(&file)
        .output()
        .expect("receptorctl");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(out.stdout == data, "results differ: {} bytes back of {}", out.stdout.len(), data.len());
}

#[test]
fn wss_with_go_issued_certificates_both_ways_and_between_receptords() {
    let pki = GoPki::new();
    for id in ["gosrv", "gocli", "rnode", "rnode2"] {
        pki.issue(id, id);
    }
    let go_port = free_port();
    let mut srv_args = pki.go_args("gosrv");
    srv_args.extend([
        "--ws-listener".into(),
        format!("port={go_port}"),
        "bindaddr=127.0.0.1".into(),
        "path=/mesh".into(),
        "tls=srv".into(),
    ]);
    let gosrv = GoNode::start("gosrv", false, &srv_args);
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let r_port = free_port();
    let links = format!(
        "[[listeners]]\nurl = \"wss://127.0.0.1:{r_port}/mesh\"\n[[peers]]\nurl = \"netceptor+wss://127.0.0.1:{go_port}/mesh\"\n"
    );
    let _r = Daemon::start(spec("rnode", &format!("{control}{}{links}", pki.tls_toml("rnode"))));
    let mut cli_args = pki.go_args("gocli");
    cli_args.extend(["--ws-peer".into(), format!("address=wss://127.0.0.1:{r_port}/mesh"), "tls=cli".into()]);
    let gocli = GoNode::start("gocli", false, &cli_args);
    let _r2 = Daemon::start(spec(
        "rnode2",
        &format!("{}[[peers]]\nurl = \"wss://127.0.0.1:{r_port}/mesh\"\n", pki.tls_toml("rnode2")),
    ));

    wait_until("gosrv lists rnode over wss", CONVERGE, || go_lists(&gosrv, "rnode"));
    wait_until("rnode lists gosrv, gocli and rnode2", CONVERGE, || {
        has_link(&sock, "gosrv", "netceptor")
            && has_link(&sock, "gocli", "netceptor")
            && has_link(&sock, "rnode2", "receptor")
    });
    wait_until("gocli pings gosrv through rnode", CONVERGE, || ping_ok(&gocli.ctl("ping gosrv")));
    assert!(ping_ok(&ctl(&sock, "ping rnode2")), "receptord pings its native wss peer");
}

/// A Go node whose certificate names another node ID is refused on a wss listener.
#[test]
fn wss_refuses_a_go_node_whose_certificate_names_another_id() {
    let pki = GoPki::new();
    pki.issue("rnode", "rnode");
    pki.issue("honest", "honest");
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let r_port = free_port();
    let r = Daemon::start(spec(
        "rnode",
        &format!("{control}{}[[listeners]]\nurl = \"wss://127.0.0.1:{r_port}/\"\n", pki.tls_toml("rnode")),
    ));
    // Go itself refuses to start with a certificate for another ID unless told not to check.
    let args: Vec<String> = vec![
        "--tls-client".into(),
        "name=cli".into(),
        format!("cert={}", pki.path("honest.crt").display()),
        format!("key={}", pki.path("honest.key").display()),
        format!("rootcas={}", pki.path("ca.crt").display()),
        "skipreceptornamescheck=true".into(),
        "--ws-peer".into(),
        format!("address=wss://127.0.0.1:{r_port}/"),
        "tls=cli".into(),
    ];
    let mut liar = GoNode::start("liar", false, &args);
    wait_logged("rnode refuses liar", &[&r], CONVERGE, || r.log().contains("does not name liar"));
    assert!(!has_link(&sock, "liar", "netceptor"), "{}", r.log());
    // The same certificate under its own node ID links.
    liar.kill();
    let _honest = GoNode::start("honest", false, &args);
    wait_logged("rnode links honest", &[&r], CONVERGE, || has_link(&sock, "honest", "netceptor"));
}

/// A CONNECT proxy on loopback that really tunnels, recording each request head.
struct Proxy {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// `answer = false`: accepts and reads the request, then never answers.
    fn start(answer: bool) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().map_while(Result::ok) {
                let seen = seen.clone();
                std::thread::spawn(move || tunnel(conn, answer, &seen));
            }
        });
        Proxy { port, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

fn tunnel(client: TcpStream, answer: bool, seen: &Mutex<Vec<String>>) {
    let mut rd = BufReader::new(client.try_clone().expect("clone"));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    seen.lock().expect("heads").push(head.clone());
    if !answer {
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let target = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let Ok(upstream) = TcpStream::connect(&target) else { return };
    let mut w = client.try_clone().expect("clone");
    w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").expect("reply");
    let mut up_w = upstream.try_clone().expect("clone");
    let mut up_r = upstream;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut w);
    });
    // Whatever the reader buffered past the head, then the rest.
    let buffered = rd.buffer().to_vec();
    let _ = up_w.write_all(&buffered);
    let mut rest = rd.into_inner();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = rest.read(&mut buf) {
        if n == 0 || up_w.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

#[test]
fn links_go_through_an_http_connect_proxy_with_basic_auth() {
    let proxy = Proxy::start(true);
    let go_port = free_port();
    let gows = GoNode::start(
        "gows",
        false,
        &["--ws-listener".into(), format!("port={go_port}"), "bindaddr=127.0.0.1".into()],
    );
    let hub_port = free_port();
    let _hub = Daemon::start(spec("hub", &format!("[[listeners]]\nurl = \"ws://127.0.0.1:{hub_port}/\"\n")));
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("behind", tmp.path());
    let proxy_url = format!("http://user%21:s3cret@127.0.0.1:{}", proxy.port);
    let mut s = spec(
        "behind",
        &format!(
            "{control}[[peers]]\nurl = \"ws://127.0.0.1:{hub_port}/\"\nheaders = {{ X-Site = \"edge-7\" }}\n\
             [[peers]]\nurl = \"netceptor+ws://127.0.0.1:{go_port}/\"\n"
        ),
    );
    s.env.retain(|(k, _)| *k != "HTTP_PROXY");
    s.env.push(("HTTP_PROXY", &proxy_url));
    let _behind = Daemon::start(s);
    wait_until("behind links with hub and gows through the proxy", CONVERGE, || {
        has_link(&sock, "hub", "receptor") && has_link(&sock, "gows", "netceptor")
    });
    wait_until("gows lists behind", CONVERGE, || go_lists(&gows, "behind"));
    let heads = proxy.heads();
    let auth = "Proxy-Authorization: Basic dXNlciE6czNjcmV0"; // base64("user!:s3cret")
    assert!(
        heads.iter().any(|h| h.starts_with(&format!("CONNECT 127.0.0.1:{hub_port} ")) && h.contains(auth)),
        "{heads:?}"
    );
    assert!(heads.iter().any(|h| h.starts_with(&format!("CONNECT 127.0.0.1:{go_port} "))), "{heads:?}");
}

#[test]
fn a_proxy_that_never_answers_costs_a_bounded_wait() {
    let proxy = Proxy::start(false);
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("behind", tmp.path());
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let mut s = spec(
        "behind",
        &format!(
            "{control}[[peers]]\nurl = \"ws://127.0.0.1:9/\"\n[limits.websocket]\nproxy_reply_timeout = \"1s\"\n"
        ),
    );
    s.env.retain(|(k, _)| *k != "HTTP_PROXY");
    s.env.push(("HTTP_PROXY", &proxy_url));
    let d = Daemon::start(s);
    wait_until("the silent proxy is given up on", Duration::from_secs(20), || {
        d.log().contains("no answer within 1s")
    });
    assert!(!proxy.heads().is_empty());
    // The node is healthy: its control service answers.
    assert_eq!(status(&sock)["NodeID"], "behind");
}

fn read_closed(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_slowloris_upgrade_request_is_cut_off_and_the_node_stays_healthy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let r_port = free_port();
    let _r = Daemon::start(spec(
        "rnode",
        &format!(
            "{control}[[listeners]]\nurl = \"ws://127.0.0.1:{r_port}/\"\n[limits]\nhandshake_timeout = \"2s\"\n\
             [limits.websocket]\nmax_message = 100000\n"
        ),
    ));
    // Slowloris: an upgrade request dripped a byte at a time never completes; the
    // connection is closed at the handshake timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", r_port)).expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").expect("write");
    let dripper = {
        let mut s = slow.try_clone().expect("clone");
        std::thread::spawn(move || {
            for _ in 0..40 {
                if s.write_all(b"X").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    assert!(read_closed(&mut slow, Duration::from_secs(8)), "the slow upgrade request was not cut off");
    let _ = dripper.join();

    // The node stays healthy: it answers and takes a well-behaved ws peer.
    assert_eq!(status(&sock)["NodeID"], "rnode");
    let _good = Daemon::start(spec("good", &format!("[[peers]]\nurl = \"ws://127.0.0.1:{r_port}/\"\n")));
    wait_until("a good ws peer links after the slow one", CONVERGE, || has_link(&sock, "good", "receptor"));
}

#[test]
fn an_oversize_message_is_refused_on_its_header() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let r_port = free_port();
    // A long handshake timeout: only the message bound can end the connection soon.
    let _r = Daemon::start(spec(
        "rnode",
        &format!(
            "{control}[[listeners]]\nurl = \"ws://127.0.0.1:{r_port}/\"\n[limits]\nhandshake_timeout = \"60s\"\n\
             [limits.websocket]\nmax_message = 100000\n"
        ),
    ));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let closed = rt.block_on(async {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", r_port)).await.expect("connect");
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://127.0.0.1:{r_port}/"), tcp).await.expect("upgrade");
        // A masked binary frame announcing 50 MB, then a few bytes of it and silence.
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&50_000_000u64.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(b"RCPT");
        ws.get_mut().write_all(&frame).await.expect("write");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => {
                        return;
                    }
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .is_ok()
    });
    assert!(closed, "an oversize message did not close the connection");
    assert_eq!(status(&sock)["NodeID"], "rnode");
    let _good = Daemon::start(spec("good", &format!("[[peers]]\nurl = \"ws://127.0.0.1:{r_port}/\"\n")));
    wait_until("a good ws peer links after the hostile ones", CONVERGE, || {
        has_link(&sock, "good", "receptor")
    });
}
