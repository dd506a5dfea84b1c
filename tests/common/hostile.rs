//! A hostile node for tests: it speaks the wire protocol from a plain socket (or over
//! TLS with a real CA-issued certificate, `FakePeer::join_tls`), so it can send what no
//! honest node would (floods, lies, forged sources, malformed streams) and then stall,
//! read, or vanish as the attack needs. `FakeRelay` sits between two real nodes as the
//! only path and forwards (or tampers with) everything between them.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use receptord::wire::{Frame, FrameCodec, Hello, Lsa, NodeId, PREFACE, PROTOCOL_VERSION, caps};
use tokio_util::codec::Decoder;

/// A byte stream a fake peer speaks over: a TCP socket or TLS over one.
pub trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

/// A connection to a daemon's listener, speaking as node `id`.
pub struct FakePeer {
    pub id: NodeId,
    stream: Box<dyn Duplex>,
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
        let stream = tcp(port)?;
        FakePeer::handshake_on(Box::new(stream), id, caps::STREAMS)
    }

    /// Connects and joins as a leaf (a short-lived client: the `ephemeral` capability).
    pub fn join_leaf(port: u16, id: &str) -> FakePeer {
        let stream = tcp(port).unwrap_or_else(|e| panic!("fake leaf {id}: {e}"));
        FakePeer::handshake_on(Box::new(stream), id, caps::STREAMS | caps::EPHEMERAL)
            .unwrap_or_else(|e| panic!("fake leaf {id}: {e}"))
    }

    /// Connects to a TLS listener presenting `cert`/`key` (PEM, issued by the mesh's CA
    /// in `ca`) and joins as `id`: an admitted member holding a real certificate.
    pub fn join_tls(port: u16, id: &str, cert: &Path, key: &Path, ca: &Path) -> FakePeer {
        let tls = tls_client(port, cert, key, ca).unwrap_or_else(|e| panic!("fake TLS peer {id}: {e}"));
        FakePeer::handshake_on(Box::new(tls), id, caps::STREAMS)
            .unwrap_or_else(|e| panic!("fake TLS peer {id}: {e}"))
    }

    pub fn handshake_on(stream: Box<dyn Duplex>, id: &str, caps: u32) -> Result<FakePeer, String> {
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

fn tcp(port: u16) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    Ok(stream)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_client(port: u16, cert: &Path, key: &Path, ca: &Path) -> Result<TlsStream, String> {
    let cfg = client_config(cert, key, ca)?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    Ok(rustls::StreamOwned::new(conn, tcp(port)?))
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
        neighbors: (0..n).map(|i| (node(&format!("ghost-{origin}-{i:05}")), 1.0)).collect(),
        work_types: Vec::new(),
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
