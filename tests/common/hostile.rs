//! A hostile node for tests: it speaks the wire protocol from a plain socket, so it can
//! send what no honest node would (floods, lies, malformed streams) and then stall,
//! read, or vanish as the attack needs.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use receptord::wire::{Frame, FrameCodec, Hello, Lsa, NodeId, PREFACE, PROTOCOL_VERSION, caps};
use tokio_util::codec::Decoder;

/// A connection to a daemon's listener, speaking as node `id`.
pub struct FakePeer {
    pub id: NodeId,
    pub stream: TcpStream,
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
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let mut peer = FakePeer { id: node(id), stream, codec: FrameCodec::default(), buf: BytesMut::new() };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node_id: peer.id.clone(),
            epoch: 1,
            caps: caps::STREAMS,
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
