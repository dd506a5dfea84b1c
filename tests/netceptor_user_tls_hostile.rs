//! Hostile clients of receptord's control service over user-TLS netceptor streams (Go's
//! ConnType 2): an in-process netceptor node (the library's own) linked to a receptord
//! daemon presents an oversized certificate chain, holds more connections than
//! `limits.netceptor.quic_connections_per_peer`, and stalls handshakes midway. Each costs
//! the attacker its connection; the service keeps serving.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::go::GoPki;
use common::{Daemon, Spec};
use receptord::netceptor::NetceptorNode;
use receptord::netceptor::quic::dial::{DialError, Dialed};
use receptord::transport::{TlsContext, TlsSettings};
use receptord::wire::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

const WITHIN: Duration = Duration::from_secs(60);

fn context(pki: &GoPki, name: &str) -> TlsContext {
    TlsContext::load(
        TlsSettings {
            cert: pki.path(&format!("{name}.crt")),
            key: pki.path(&format!("{name}.key")),
            ca: vec![pki.path("ca.crt")],
            require_client_cert: true,
            pinned: Vec::new(),
            min_tls13: false,
            skip_node_id_check: false,
        },
        name,
    )
    .expect("TLS material")
}

/// Accepts no server certificate: blocks its connection's thread until the gate opens (a
/// client that stops in the middle of the handshake, sending nothing meanwhile), after
/// counting that it got this far, i.e. that the server accepted the connection and sent
/// its certificate.
#[derive(Debug, Default)]
struct Stall {
    reached: AtomicUsize,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Stall {
    fn release(&self) {
        *self.open.lock().expect("gate") = true;
        self.opened.notify_all();
    }
}

impl ServerCertVerifier for Stall {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.reached.fetch_add(1, Ordering::SeqCst);
        let open = self.open.lock().expect("gate");
        let _ = self.opened.wait_timeout_while(open, 3 * WITHIN, |open| !*open);
        Err(rustls::Error::General("stalled".into()))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A QUIC client config with `chain` as the client certificate and `verifier` for the server.
fn client(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    tls.alpn_protocols = vec![b"netceptor".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    quinn::ClientConfig::new(Arc::new(quic))
}

/// A proper user-TLS dial as `evil` (its own, valid certificate), up to the greeting.
async fn good(net: &NetceptorNode) -> Result<Dialed, DialError> {
    let tls = net.user_tls().expect("[tls]");
    let (cfg, refusal) = tls.client("rnode").expect("client config");
    greeted(net.dial_with("rnode", "control", cfg, "rnode", Some(refusal)).await?).await
}

/// The stream once the control service's greeting arrived on it (a TLS 1.3 client's
/// handshake completes before the server has checked its certificate: a refusal shows
/// here).
async fn greeted(mut d: Dialed) -> Result<Dialed, DialError> {
    let mut greeting = [0u8; 64];
    let n = d.recv.read(&mut greeting).await.map_err(|e| DialError::Quic(e.to_string()))?.unwrap_or(0);
    let text = String::from_utf8_lossy(&greeting[..n]).into_owned();
    if text.starts_with("Receptor Control, node rnode") {
        Ok(d)
    } else {
        Err(DialError::Quic(format!("no greeting: {text:?}")))
    }
}

/// Polls `good` until it gives `want` (success or failure), within `WITHIN`.
async fn until_good(net: &NetceptorNode, want: bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        if good(net).await.is_ok() == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn hostile_tls_clients_cost_only_their_own_connections() {
    let pki = GoPki::new();
    pki.issue("rnode", "rnode");
    pki.issue("evil", "evil");
    let limits = "[limits.netceptor]\nquic_connections_per_peer = 2\n";
    let r = Daemon::start(Spec::new("rnode").extra(&pki.tls_toml("rnode")).extra(limits));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(6).enable_all().build().expect("rt");
    rt.block_on(async {
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = tokio_util::sync::CancellationToken::new();
        let cfg = NetceptorNode::config(NodeId::new("evil").expect("id"));
        let net = NetceptorNode::start(cfg, Some(context(&pki, "evil")), &tracker, cancel.clone());
        let url = format!("netceptor://127.0.0.1:{}", r.port).parse().expect("url");
        net.add_peer(url, 1.0, cancel.clone());
        assert!(net.wait_route("rnode", WITHIN).await, "evil links with rnode");
        until_good(&net, true, "a proper TLS session").await;

        // An oversized client certificate chain (the leaf, then ~160 KiB of copies of the
        // CA): refused in the handshake, never buffered whole.
        let leaf = CertificateDer::from_pem_file(pki.path("evil.crt")).expect("leaf");
        let ca = CertificateDer::from_pem_file(pki.path("ca.crt")).expect("ca");
        let key = PrivateKeyDer::from_pem_file(pki.path("evil.key")).expect("key");
        let mut chain = vec![leaf.clone()];
        while chain.iter().map(|c| c.len()).sum::<usize>() < 160 << 10 {
            chain.push(ca.clone());
        }
        let accept_any = Arc::new(AcceptAny(rustls::crypto::ring::default_provider()));
        let big = client(chain, key.clone_key(), accept_any.clone());
        let r1 = net.dial_with("rnode", "control", big, "rnode", Some(Default::default())).await;
        let r1 = match r1 {
            Ok(d) => greeted(d).await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(r1.is_err(), "the oversized chain is refused");
        eprintln!("oversized chain: {:?}", r1.err());

        // Connections beyond quic_connections_per_peer are refused; closing one frees its place.
        let a = good(&net).await.expect("first");
        let b = good(&net).await.expect("second");
        assert!(good(&net).await.is_err(), "a third connection from evil is refused");
        drop((a, b));
        until_good(&net, true, "places freed by closed connections").await;

        // Handshakes that stall midway hold their places only until the handshake bound.
        // Each stall runs on a thread of its own (its verifier blocks that thread, never
        // this runtime's workers) and is dialed again until the server accepted it: the
        // place a just-closed session held may not be free yet.
        let stall = Arc::new(Stall::default());
        for held in 1..=2 {
            let deadline = tokio::time::Instant::now() + WITHIN;
            loop {
                let (n, s) = (net.clone(), stall.clone());
                let (tx, mut rx) = tokio::sync::oneshot::channel();
                let cfg = client(vec![leaf.clone()], key.clone_key(), s);
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
                    let r = rt.block_on(n.dial_with("rnode", "control", cfg, "rnode", None)).map(|_| ());
                    let _ = tx.send(r);
                });
                let refused = loop {
                    if stall.reached.load(Ordering::SeqCst) == held {
                        break None;
                    }
                    if let Ok(r) = rx.try_recv() {
                        break Some(r);
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "stalled handshake {held}: not within {WITHIN:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                match refused {
                    None => break,
                    Some(r) => eprintln!("stalled handshake {held} dialed again after {r:?}"),
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "stalled handshake {held}: not within {WITHIN:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let stalled = std::time::Instant::now();
        let third = good(&net).await;
        eprintln!("while two handshakes stall: {:?}", third.as_ref().err());
        assert!(third.is_err(), "the stalled handshakes hold evil's places");
        until_good(&net, true, "the stalled handshakes dropped").await;
        eprintln!("places held by stalled handshakes freed after {:?}", stalled.elapsed());
        stall.release();
        cancel.cancel();
    });
    rt.shutdown_background();
}

/// Accepts any server certificate (its handshake signature still checked).
#[derive(Debug)]
struct AcceptAny(rustls::crypto::CryptoProvider);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
