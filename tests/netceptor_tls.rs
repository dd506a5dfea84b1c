//! TLS between receptord and Go Receptor 1.4.0 (`netceptors://` peers, Go's `--tcp-peer
//! tls=` on receptord's `receptors://` listeners), with certificates issued by Go's own
//! `--cert-init`/`--cert-makereq`/`--cert-signreq`. receptord checks more than Go does on
//! backend links: the node ID a peer gives in its first routing update must be one its
//! certificate names (Go's Receptor otherName SAN), or the link is rejected.

mod common;

use std::time::Duration;

use common::go::{GoNode, GoPki, connections, ctl, free_port};
use common::{Daemon, Spec, wait_until, with_socket};
use serde_json::Value;

/// Go learns distant nodes only from their periodic updates (every 10 s).
const CONVERGE: Duration = Duration::from_secs(40);

fn linked(st: &Value, peer: &str) -> bool {
    connections(st).iter().any(|(id, cost, _)| id == peer && *cost == 1.0)
}

fn ping_ok(reply: &str) -> bool {
    serde_json::from_str::<Value>(reply).is_ok_and(|v| v["Success"] == true)
}

#[test]
fn tls_links_with_go_both_ways_with_go_issued_certificates() {
    let pki = GoPki::new();
    for (name, id) in [("gosrv", "gosrv"), ("gocli", "gocli"), ("rnode", "rnode")] {
        pki.issue(name, id);
    }
    // gosrv: a TLS listener requiring client certificates; receptord dials it.
    let go_port = free_port();
    let mut srv_args = pki.go_args("gosrv");
    srv_args.extend([
        "--tcp-listener".into(),
        format!("port={go_port}"),
        "bindaddr=127.0.0.1".into(),
        "tls=srv".into(),
    ]);
    let gosrv = GoNode::start("gosrv", false, &srv_args);
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let peer = format!("[[peers]]\nurl = \"netceptors://127.0.0.1:{go_port}\"\n");
    let mut spec = Spec::new("rnode").extra(&control).extra(&pki.tls_toml("rnode")).extra(&peer);
    spec.tls = true;
    let r = Daemon::start(spec);
    wait_until("gosrv lists rnode over TLS", CONVERGE, || linked(&gosrv.status(), "rnode"));
    wait_until("gosrv pings rnode", CONVERGE, || ping_ok(&gosrv.ctl("ping rnode")));

    // gocli dials receptord's receptors:// listener with Go's TLS client.
    let mut cli_args = pki.go_args("gocli");
    cli_args.extend(["--tcp-peer".into(), format!("address=127.0.0.1:{} tls=cli", r.port)]);
    let cli_args: Vec<String> =
        cli_args.iter().flat_map(|a| a.split(' ').map(str::to_owned).collect::<Vec<_>>()).collect();
    let gocli = GoNode::start("gocli", false, &cli_args);
    wait_until("rnode lists gocli over netceptor", CONVERGE, || {
        let st: Value = serde_json::from_str(&ctl(&sock, "status")).expect("status");
        connections(&st).iter().any(|(n, _, p)| n == "gocli" && p.as_deref() == Some("netceptor"))
    });
    wait_until("gocli pings rnode", CONVERGE, || ping_ok(&gocli.ctl("ping rnode")));
    // And across receptord: gocli → rnode → gosrv.
    wait_until("gocli pings gosrv through rnode", CONVERGE, || ping_ok(&gocli.ctl("ping gosrv")));
}

/// A peer presenting a valid, CA-signed certificate for one node while giving another
/// node ID in its first routing update is rejected (type 3) and closed.
#[test]
fn a_certificate_for_another_node_id_is_refused() {
    let pki = GoPki::new();
    pki.issue("rnode", "rnode");
    pki.issue("honest", "honest");
    let tmp = tempfile::tempdir().expect("tmp");
    let (control, sock) = with_socket("rnode", tmp.path());
    let mut spec = Spec::new("rnode").extra(&control).extra(&pki.tls_toml("rnode"));
    spec.tls = true;
    let r = Daemon::start(spec);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let settings = |name: &str| receptord::transport::TlsSettings {
        cert: pki.path(&format!("{name}.crt")),
        key: pki.path(&format!("{name}.key")),
        ca: vec![pki.path("ca.crt")],
        require_client_cert: true,
        pinned: Vec::new(),
        min_tls13: false,
        skip_node_id_check: false,
    };
    let ctx = receptord::transport::TlsContext::load(settings("honest"), "honest").expect("tls");
    let types = |claim: &'static str| {
        let ctx = ctx.clone();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", r.port)).await.expect("connect");
            let (mut io, _) = ctx.connect(tcp, "127.0.0.1").await.expect("TLS");
            let first = common::fakego::FakeGo::update_packet(claim, claim, 1, "");
            let second = common::fakego::FakeGo::update_packet(claim, claim, 2, r#""rnode":1"#);
            for p in [first, second] {
                let mut f = (p.len() as u16).to_le_bytes().to_vec();
                f.extend_from_slice(&p);
                io.write_all(&f).await.expect("write");
            }
            let mut all = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut all)).await;
            let mut types = Vec::new();
            let mut i = 0;
            while i + 2 < all.len() {
                types.push(all[i + 2]);
                i += 2 + usize::from(u16::from_le_bytes([all[i], all[i + 1]]));
            }
            (read.is_ok(), types)
        })
    };
    let (closed, got) = types("mallory");
    assert!(closed, "the link was closed");
    assert_eq!(got.last(), Some(&3), "a reject before the close: {got:?}");
    // The same certificate with its own node ID links.
    let (closed, got) = types("honest");
    assert!(!closed, "the honest peer keeps its link: {got:?}");
    let st: Value = serde_json::from_str(&ctl(&sock, "status")).expect("status");
    assert!(connections(&st).iter().all(|(n, _, _)| n != "mallory"), "{st}");
}
