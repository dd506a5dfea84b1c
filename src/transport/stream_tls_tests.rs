//! End-to-end stream resumption at the TLS level (`stream_tls`), with real certificates
//! and in-memory handshakes: a second handshake between the same two nodes resumes and
//! still carries both certificates; a ticket is refused by another node, after a key
//! change (reload), and after its lifetime; without resumption nothing is resumed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, Connection, HandshakeKind, ServerConnection};

use super::stream_tls::{BoundedTickets, RESUME_ALPN, StreamTls, server_name};
use super::{TlsContext, TlsSettings};
use crate::certs::{self, KeyType, Subject};
use rustls::server::ProducesTickets;

fn pki(dir: &Path, nodes: &[&str]) {
    let (crt, key) = certs::init_ca("test CA", 30, KeyType::EcdsaP256).expect("ca");
    std::fs::write(dir.join("ca.crt"), crt).expect("write");
    std::fs::write(dir.join("ca.key"), key).expect("write");
    for n in nodes {
        let subject = Subject { node_ids: vec![(*n).into()], ..Subject::default() };
        let (crt, key) = certs::issue(&dir.join("ca.crt"), &dir.join("ca.key"), &subject, 30).expect("issue");
        std::fs::write(dir.join(format!("{n}.crt")), crt).expect("write");
        std::fs::write(dir.join(format!("{n}.key")), key).expect("write");
    }
}

fn context(dir: &Path, node: &str, resumption: Duration) -> TlsContext {
    let settings = TlsSettings {
        cert: dir.join(format!("{node}.crt")),
        key: dir.join(format!("{node}.key")),
        ca: vec![dir.join("ca.crt")],
        require_client_cert: true,
        pinned: Vec::new(),
        min_tls13: false,
        skip_node_id_check: false,
    };
    TlsContext::load_with(settings, node, resumption).expect("tls material")
}

fn tls(ctx: &TlsContext) -> Arc<StreamTls> {
    ctx.stream_tls().expect("stream tls")
}

/// Moves everything `from` wants to send into `to`.
fn pump(from: &mut Connection, to: &mut Connection) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).expect("write_tls");
    }
    let mut data = &buf[..];
    while !data.is_empty() {
        to.read_tls(&mut data).expect("read_tls");
        to.process_new_packets().expect("handshake");
    }
}

/// A handshake from `opener` to `acceptor`, which the opener files under node `dst`,
/// including the acceptor's ticket: how it went, and the certificates each end saw.
fn handshake(
    opener: &StreamTls,
    acceptor: &StreamTls,
    dst: &str,
) -> (HandshakeKind, Vec<String>, Vec<String>) {
    let mut c =
        Connection::Client(ClientConnection::new(opener.client.clone(), server_name(dst)).expect("client"));
    let mut s = Connection::Server(ServerConnection::new(acceptor.server.clone()).expect("server"));
    for _ in 0..4 {
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
    }
    assert!(!c.is_handshaking() && !s.is_handshaking(), "handshake done");
    let ids = |conn: &Connection| {
        let leaf = conn.peer_certificates().and_then(|c| c.first()).expect("peer certificate");
        super::tls::node_ids_in_der(leaf).unwrap_or_default()
    };
    assert_eq!(c.handshake_kind(), s.handshake_kind());
    // The SHA-256 suite is the opener's first choice, on full and resumed handshakes.
    let suite = |conn: &Connection| conn.negotiated_cipher_suite().map(|s| s.suite());
    assert_eq!(suite(&c), Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    assert_eq!(suite(&s), suite(&c));
    (c.handshake_kind().expect("kind"), ids(&c), ids(&s))
}

const TEN_MINUTES: Duration = Duration::from_secs(600);

#[test]
fn a_second_handshake_resumes_and_keeps_both_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    pki(dir.path(), &["alpha", "beta"]);
    let (alpha, beta) = (context(dir.path(), "alpha", TEN_MINUTES), context(dir.path(), "beta", TEN_MINUTES));
    let (a, b) = (tls(&alpha), tls(&beta));
    let first = handshake(&a, &b, "beta");
    assert_eq!(first, (HandshakeKind::Full, vec!["beta".to_string()], vec!["alpha".to_string()]));
    let second = handshake(&a, &b, "beta");
    assert_eq!(second, (HandshakeKind::Resumed, vec!["beta".to_string()], vec!["alpha".to_string()]));
    // Each resumed handshake hands out the next ticket.
    assert_eq!(handshake(&a, &b, "beta").0, HandshakeKind::Resumed);
}

#[test]
fn a_ticket_is_refused_by_another_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    pki(dir.path(), &["alpha", "beta", "gamma"]);
    let ctx = |n| tls(&context(dir.path(), n, TEN_MINUTES));
    let (a, b, g) = (ctx("alpha"), ctx("beta"), ctx("gamma"));
    assert_eq!(handshake(&a, &b, "beta").0, HandshakeKind::Full);
    // alpha offers beta's ticket to gamma (as a misrouted Open would): gamma cannot open
    // it, the handshake is a full one, and gamma's certificate names gamma (so the node-ID
    // check after it refuses gamma as beta).
    let (kind, acceptor, _) = handshake(&a, &g, "beta");
    assert_eq!((kind, acceptor), (HandshakeKind::Full, vec!["gamma".to_string()]));
}

#[test]
fn a_ticket_is_refused_after_a_key_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    pki(dir.path(), &["alpha", "beta"]);
    let alpha = context(dir.path(), "alpha", TEN_MINUTES);
    let beta = context(dir.path(), "beta", TEN_MINUTES);
    let a = tls(&alpha);
    assert_eq!(handshake(&a, &tls(&beta), "beta").0, HandshakeKind::Full);
    // beta reloads (same files, new material): new ticket keys.
    beta.reload("beta").expect("reload");
    assert_eq!(handshake(&a, &tls(&beta), "beta").0, HandshakeKind::Full);
    // alpha reloads: its ticket cache is gone too.
    alpha.reload("alpha").expect("reload");
    assert_eq!(handshake(&tls(&alpha), &tls(&beta), "beta").0, HandshakeKind::Full);
    assert_eq!(handshake(&tls(&alpha), &tls(&beta), "beta").0, HandshakeKind::Resumed);
}

#[test]
fn tickets_expire_on_the_acceptor_clock() {
    let mut t = BoundedTickets::new(Duration::from_secs(60)).expect("ticketer");
    assert_eq!(t.lifetime(), 60);
    let ticket = t.encrypt(b"session").expect("sealed");
    assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
    assert_eq!(t.decrypt(&ticket[1..]), None, "altered tickets are refused");
    // 61 seconds later on the acceptor's clock.
    t.age_for_test(Duration::from_secs(61));
    assert_eq!(t.decrypt(&ticket), None, "expired tickets are refused");
    let fresh = t.encrypt(b"session").expect("sealed");
    assert_eq!(t.decrypt(&fresh).as_deref(), Some(&b"session"[..]));
}

#[test]
fn without_resumption_every_handshake_is_full_and_no_ticket_is_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    pki(dir.path(), &["alpha", "beta"]);
    let a = tls(&context(dir.path(), "alpha", Duration::ZERO));
    let b = tls(&context(dir.path(), "beta", TEN_MINUTES));
    assert!(a.client.alpn_protocols.is_empty());
    assert_eq!(b.server.alpn_protocols, vec![RESUME_ALPN.to_vec()]);
    for _ in 0..2 {
        assert_eq!(handshake(&a, &b, "beta").0, HandshakeKind::Full);
    }
    // An acceptor with resumption off never resumes an opener that has it on.
    let a = tls(&context(dir.path(), "alpha", TEN_MINUTES));
    let b = tls(&context(dir.path(), "beta", Duration::ZERO));
    for _ in 0..2 {
        assert_eq!(handshake(&a, &b, "beta").0, HandshakeKind::Full);
    }
}

#[test]
fn a_chain_of_resumptions_ends_a_lifetime_after_its_full_handshake() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut t = BoundedTickets::new(Duration::from_secs(60)).expect("ticketer");
    // A full handshake's ticket, stamped now (0 s).
    let first = t.encrypt(b"session").expect("sealed");
    t.age_for_test(Duration::from_secs(40));
    // 40 s later a resumption of it issues the next ticket, within the handshake's scope.
    let next = rt.block_on(super::stream_tls::proof_scope(async {
        assert!(t.decrypt(&first).is_some(), "still good");
        t.encrypt(b"session").expect("sealed")
    }));
    // Outside a scope (how it would be stamped if the chain restarted the clock).
    let restamped = t.encrypt(b"session").expect("sealed");
    t.age_for_test(Duration::from_secs(30));
    assert_eq!(t.decrypt(&next), None, "70 s after the certificates were proven: full handshake");
    assert!(t.decrypt(&restamped).is_some(), "a ticket from a full handshake 30 s ago is good");
}
