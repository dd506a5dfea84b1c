//! A hostile node for tests: it speaks the wire protocol from a plain socket, so it can
//! send what no honest node would (floods, lies, forged sources, malformed streams) and
//! then stall, read, or vanish as the attack needs. Over TLS it holds a real certificate
//! from the mesh's CA ([`FakeTls`]): a compromised member. `relay::FakeRelay` sits
//! between two real nodes as the only path and forwards (or tampers with) their frames.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use receptord::wire::{Frame, FrameCodec, Hello, Lsa, NodeId, PREFACE, PROTOCOL_VERSION, caps};
use tokio_util::codec::Decoder;

/// The byte stream under a fake peer: plain TCP or TLS.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// A connection to a daemon's listener, speaking as node `id`.
pub struct FakePeer {
    pub id: NodeId,
    pub stream: Box<dyn Conn>,
    codec: FrameCodec,
    buf: BytesMut,
}

/// Opens a TCP connection to `port` from source address `from` (any 127.x address works
/// on Linux loopback), without saying anything.
pub fn connect_from(from: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let sock = socket2_bind(from)?;
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(sock.into())
}

fn socket2_bind(from: IpAddr) -> std::io::Result<socket2::Socket> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    Ok(sock)
}

pub fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node id")
}

impl FakePeer {
    /// Connects and completes the handshake as `id`; panics if the daemon refuses.
    pub fn join(port: u16, id: &str) -> FakePeer {
        FakePeer::try_join(port, id).unwrap_or_else(|e| panic!("fake peer {id}: {e}"))
    }

    /// Connects and completes the handshake as `id`.
    pub fn try_join(port: u16, id: &str) -> Result<FakePeer, String> {
        FakePeer::try_join_caps(port, id, caps::STREAMS)
    }

    /// Connects and completes the handshake as `id` announcing `caps` (e.g. a leaf client
    /// with `caps::EPHEMERAL`).
    pub fn try_join_caps(port: u16, id: &str, caps: u32) -> Result<FakePeer, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        FakePeer::handshake_on(Box::new(stream), id, caps)
    }

    /// Connects and joins as a leaf (a short-lived client: the `ephemeral` capability).
    pub fn join_leaf(port: u16, id: &str) -> FakePeer {
        FakePeer::try_join_caps(port, id, caps::STREAMS | caps::EPHEMERAL)
            .unwrap_or_else(|e| panic!("fake leaf {id}: {e}"))
    }

    /// Connects over TLS with `tls`'s certificate and completes the handshake as `id`.
    pub fn try_join_tls(port: u16, id: &str, tls: &FakeTls) -> Result<FakePeer, String> {
        FakePeer::try_join_tls_caps(port, id, tls, caps::STREAMS)
    }

    /// Connects over TLS with `tls` and completes the handshake as `id` announcing `caps`.
    pub fn try_join_tls_caps(port: u16, id: &str, tls: &FakeTls, caps: u32) -> Result<FakePeer, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(tls.config.clone(), name).map_err(|e| e.to_string())?;
        FakePeer::handshake_on(Box::new(rustls::StreamOwned::new(conn, tcp)), id, caps)
    }

    /// Completes the mesh handshake over an open connection, as `id` announcing `caps`.
    pub fn handshake_on(stream: Box<dyn Conn>, id: &str, caps: u32) -> Result<FakePeer, String> {
        let mut peer = FakePeer { id: node(id), stream, codec: FrameCodec::default(), buf: BytesMut::new() };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node_id: peer.id.clone(),
            epoch: 1,
            caps,
            idle_timeout_ms: 60_000,
            cost: 1.0,
        };
        let mut out = PREFACE.to_vec();
        out.extend_from_slice(&Frame::Hello(hello).encode());
        peer.stream.write_all(&out).map_err(|e| format!("send hello: {e}"))?;
        let mut preface = [0u8; 4];
        peer.stream.read_exact(&mut preface).map_err(|e| format!("preface: {e}"))?;
        if preface != PREFACE {
            return Err("bad preface".into());
        }
        match peer.recv() {
            Some(Frame::Hello(_)) => {}
            other => return Err(format!("expected hello, got {other:?}")),
        }
        peer.send(&Frame::Admit).map_err(|e| format!("admit: {e}"))?;
        match peer.recv() {
            Some(Frame::Admit) => Ok(peer),
            other => Err(format!("daemon did not admit the fake peer: {other:?}")),
        }
    }

    pub fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.stream.write_all(&frame.encode())
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next frame, or `None` when the connection ends or stays silent past the read
    /// timeout.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => panic!("daemon sent an undecodable frame: {e}"),
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until `pick` returns something, for at most `timeout`.
    pub fn recv_until<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(Frame) -> Option<T>,
    ) -> Option<T> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(t) = pick(self.recv()?) {
                return Some(t);
            }
        }
        None
    }
}

fn client_config(cert: &Path, key: &Path, ca: &Path) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// A TLS client presenting `cert` (verifying the other end as 127.0.0.1, which the test
/// PKI's certificates name), for forging an end-to-end stream's opener with a real
/// certificate: its first flight is what goes into the `Open`.
pub fn stream_client(cert: &Path, key: &Path, ca: &Path) -> rustls::ClientConnection {
    let cfg = client_config(cert, key, ca).expect("client config");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    rustls::ClientConnection::new(Arc::new(cfg), name).expect("client")
}

/// Everything `conn` wants to send.
pub fn tls_output(conn: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write");
    }
    out
}

/// An advertisement of `origin` listing `n` made-up neighbours (about 30 bytes each).
pub fn fat_lsa(origin: &str, seq: u64, n: usize) -> Lsa {
    Lsa {
        origin: node(origin),
        epoch: 1,
        seq,
        leaving: false,
        ephemeral: false,
        leaf: false,
        neighbors: (0..n).map(|i| (node(&format!("ghost-{origin}-{i:05}")), 1.0)).collect(),
        relay_marks: false,
        work_types: Vec::new(),
        sig: None,
    }
}

/// Encodes many frames into one buffer (one write per batch).
pub fn encode_all(frames: impl IntoIterator<Item = Frame>) -> Bytes {
    let mut buf = BytesMut::new();
    for f in frames {
        f.encode_into(&mut buf);
    }
    buf.freeze()
}

/// TLS for a fake peer: a client certificate (a real one, from the mesh's CA) and no
/// interest in who the server is.
pub struct FakeTls {
    config: Arc<rustls::ClientConfig>,
}

impl FakeTls {
    /// Presents the PEM certificate chain `cert` with the private key `key`.
    pub fn new(cert: &Path, key: &Path) -> FakeTls {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert).expect("cert file").map(|c| c.expect("cert")).collect();
        let key = PrivateKeyDer::from_pem_file(key).expect("key file");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_client_auth_cert(chain, key)
            .expect("client certificate");
        FakeTls { config: Arc::new(config) }
    }

    /// Presents no certificate at all (a listener with `require_client_cert = false`).
    pub fn anonymous() -> FakeTls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth();
        FakeTls { config: Arc::new(config) }
    }
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
