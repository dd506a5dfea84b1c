//! End-to-end protected streams: the two ends of a stream run a TLS 1.3 handshake over it
//! (relays only forward its bytes), each proving its node ID with its node certificate,
//! then protect every byte with keys exported from that handshake (`mesh::seal`).
//!
//! The opener puts [`MARKER`] and its ClientHello in the `Open` header; the acceptor
//! answers with its flight, the opener with its certificate, its Finished and then the
//! real stream header as the first sealed record. The acceptor's side runs in a task of
//! its own (never on a link reader), at most `limits.stream_handshakes` at once, each
//! bounded by `limits.stream_handshake_timeout`. The exporter context binds the keys to
//! the stream number and both node IDs, so a stream's records cannot be spliced into
//! another stream.
//!
//! Between two nodes that completed such a handshake within `limits.stream_resumption`,
//! the next stream resumes it (`transport::stream_tls`): the opener offers the
//! acceptor's session ticket, both run a fresh ECDHE, no certificate is sent or signed
//! for, and the node IDs are checked against the certificates of the handshake the
//! ticket came from. An opener asks for tickets with [`RESUME_ALPN`]; an acceptor that
//! selects it sends its post-handshake flight (the ticket) as one unprotected chunk right
//! after the handshake, before any sealed record, and the opener reads it there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::Connection;
use tokio::sync::Semaphore;

use super::seal::{IV_LEN, IntegrityError, KEY_LEN, Kind, Sealer, Unsealer};
use super::stream::{Chunk, StreamError, StreamReader, StreamWriter};
use crate::transport::TlsContext;
use crate::transport::stream_tls::{RESUME_ALPN, server_name};
use crate::wire::NodeId;

/// Starts the header of an `Open` whose stream is protected end to end; the opener's
/// ClientHello follows. (No plain header starts with 0xFF: they are JSON or empty.)
pub(crate) const MARKER: &[u8] = b"\xffRCPT-E2E/1\n";

/// The exporter label of stream keys (RFC 8446 §7.5).
const LABEL: &[u8] = b"EXPORTER-receptord-stream-v1";

/// Why a protected stream could not be set up.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("end-to-end handshake failed: {0}")]
    Tls(String),
    #[error("end-to-end handshake did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the stream ended during the end-to-end handshake: {0}")]
    Stream(String),
    #[error("the peer's certificate names {found:?}, not node {expected}")]
    WrongNode { expected: NodeId, found: Vec<String> },
    #[error("the opener presented no certificate")]
    NoCertificate,
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error("the stream header was not the first protected record")]
    NoHeader,
    #[error("stream header of {0} bytes exceeds the protocol's {max} bytes", max = crate::wire::MAX_META)]
    HeaderTooLarge(usize),
    #[error("this node has no TLS material for end-to-end protected streams")]
    NoTls,
}

/// The stream a handshake protects: its number and both ends. The keys are bound to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub(crate) id: u64,
    pub(crate) opener: &'a NodeId,
    pub(crate) acceptor: &'a NodeId,
}

/// A node's end-to-end stream policy and budget.
#[derive(Clone)]
pub(crate) struct E2e {
    tls: TlsContext,
    /// Streams this node opens are protected, and unprotected `Open`s are refused
    /// (`[tls] e2e_streams`). When false, protected streams are still accepted.
    pub(crate) required: bool,
    pub(crate) timeout: Duration,
    /// Acceptor handshakes in progress (`limits.stream_handshakes`).
    pub(crate) slots: Arc<Semaphore>,
}

impl E2e {
    pub(crate) fn new(tls: TlsContext, required: bool, limits: &crate::limits::Limits) -> E2e {
        E2e {
            tls,
            required,
            timeout: limits.stream_handshake_timeout,
            slots: Arc::new(Semaphore::new(limits.stream_handshakes)),
        }
    }

    /// The opener's first flight to `dst`: the `Open` header ([`MARKER`] and the
    /// ClientHello, offering `dst`'s ticket if this node holds a current one) and the
    /// connection to continue with.
    pub(crate) fn client_hello(&self, dst: &NodeId) -> Result<(Bytes, Connection), HandshakeError> {
        let cfg = self.tls.stream_tls().map_err(|e| HandshakeError::Tls(e.to_string()))?.client.clone();
        // The acceptor's identity is its node ID, checked from its certificate after the
        // handshake; the name only files its tickets (never sent: SNI is off).
        let conn = rustls::ClientConnection::new(cfg, server_name(dst.as_str())).map_err(tls_err)?;
        let mut conn = Connection::Client(conn);
        let mut header = MARKER.to_vec();
        drain(&mut conn, &mut header)?;
        Ok((header.into(), conn))
    }

    /// The opener's side after the `Open`: finishes the handshake, checks that the
    /// acceptor is `dst`, keys both halves and sends the real header.
    pub(crate) async fn open(
        &self,
        mut conn: Connection,
        stream: Binding<'_>,
        header: Bytes,
        writer: &mut StreamWriter,
        reader: &mut StreamReader,
    ) -> Result<(), HandshakeError> {
        drive(&mut conn, writer, reader).await?;
        check_names(&conn, stream.acceptor)?;
        let keys = derive(&conn, stream)?;
        writer.protect(Sealer::new(&keys.opener.0, &keys.opener.1));
        writer.send_header(header).await.map_err(|e| HandshakeError::Stream(e.to_string()))?;
        if conn.alpn_protocol() == Some(RESUME_ALPN) {
            // The acceptor's ticket for the next stream, before its first sealed record;
            // it is TLS-protected, so a relay that alters it fails the stream here.
            match reader.recv().await {
                Ok(Chunk::Data(data)) => feed(&mut conn, &data)?,
                Ok(Chunk::End(_)) => return Err(HandshakeError::Stream("end of stream".into())),
                Err(StreamError::Reset(why) | StreamError::Integrity(why) | StreamError::Sequence(why)) => {
                    return Err(HandshakeError::Stream(why));
                }
            }
        }
        reader.protect(Unsealer::new(&keys.acceptor.0, &keys.acceptor.1));
        Ok(())
    }

    /// The acceptor's side: `hello` is the `Open` header after [`MARKER`]. Returns the
    /// stream's real header once the opener proved it is `src`. `grant` (the opener's
    /// credit) is sent once the first flight is ready, right before it, so that both
    /// leave in one link write.
    pub(crate) async fn accept(
        &self,
        hello: &[u8],
        stream: Binding<'_>,
        grant: impl Future<Output = ()>,
        writer: &mut StreamWriter,
        reader: &mut StreamReader,
    ) -> Result<Bytes, HandshakeError> {
        let cfg = self.tls.stream_tls().map_err(|e| HandshakeError::Tls(e.to_string()))?.server.clone();
        let mut conn = Connection::Server(rustls::ServerConnection::new(cfg).map_err(tls_err)?);
        // A ticket issued after a resumption keeps the proof time of the one resumed.
        let ticket = crate::transport::stream_tls::proof_scope(async {
            let fed = feed(&mut conn, hello);
            grant.await;
            fed?;
            drive(&mut conn, writer, reader).await
        })
        .await?;
        check_names(&conn, stream.opener)?;
        let keys = derive(&conn, stream)?;
        crate::metrics::global().stream_handshake(if resumed(&conn) { "resumed" } else { "full" });
        // Only an opener that asked for it reads a ticket; older ones get none.
        if conn.alpn_protocol() == Some(RESUME_ALPN) {
            if ticket.is_empty() {
                return Err(HandshakeError::Tls("no session ticket to send".into()));
            }
            writer.write(ticket.into()).await.map_err(|e| HandshakeError::Stream(e.to_string()))?;
        }
        writer.protect(Sealer::new(&keys.acceptor.0, &keys.acceptor.1));
        reader.protect(Unsealer::new(&keys.opener.0, &keys.opener.1));
        reader.recv_header().await
    }
}

fn tls_err(e: rustls::Error) -> HandshakeError {
    HandshakeError::Tls(e.to_string())
}

/// Moves everything the connection wants to send into `out`.
fn drain(conn: &mut Connection, out: &mut Vec<u8>) -> Result<(), HandshakeError> {
    while conn.wants_write() {
        conn.write_tls(out).map_err(|e| HandshakeError::Tls(e.to_string()))?;
    }
    Ok(())
}

/// Hands received handshake bytes to the connection.
fn feed(conn: &mut Connection, mut data: &[u8]) -> Result<(), HandshakeError> {
    while !data.is_empty() {
        let n = conn.read_tls(&mut data).map_err(|e| HandshakeError::Tls(e.to_string()))?;
        conn.process_new_packets().map_err(tls_err)?;
        if n == 0 {
            return Err(HandshakeError::Tls("handshake message not taken".into()));
        }
    }
    Ok(())
}

/// Whether the last handshake was a resumption (no certificates exchanged).
pub(crate) fn resumed(conn: &Connection) -> bool {
    conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// Exchanges handshake flights over the (still unprotected) stream until done. The
/// opener's last flight is sent; what the acceptor has to send once the handshake is
/// done (its session ticket) is returned instead, for [`E2e::accept`] to decide.
async fn drive(
    conn: &mut Connection,
    writer: &mut StreamWriter,
    reader: &mut StreamReader,
) -> Result<Vec<u8>, HandshakeError> {
    loop {
        let mut out = Vec::new();
        drain(conn, &mut out)?;
        let done = !conn.is_handshaking();
        if done && matches!(conn, Connection::Server(_)) {
            return Ok(out);
        }
        if !out.is_empty() {
            writer.write(out.into()).await.map_err(|e| HandshakeError::Stream(e.to_string()))?;
        }
        if done {
            return Ok(Vec::new());
        }
        match reader.recv().await {
            Ok(Chunk::Data(data)) => feed(conn, &data)?,
            Ok(Chunk::End(_)) => return Err(HandshakeError::Stream("end of stream".into())),
            Err(StreamError::Reset(why) | StreamError::Integrity(why) | StreamError::Sequence(why)) => {
                return Err(HandshakeError::Stream(why));
            }
        }
    }
}

/// The peer's leaf certificate must name `expected` (chain already verified by rustls).
fn check_names(conn: &Connection, expected: &NodeId) -> Result<(), HandshakeError> {
    let leaf = conn.peer_certificates().and_then(|c| c.first()).ok_or(HandshakeError::NoCertificate)?;
    let found = crate::transport::tls::node_ids_in_der(leaf).unwrap_or_default();
    // A client session (NODE~TAG) proves NODE.
    if found.iter().any(|n| n == expected.principal().as_str()) {
        return Ok(());
    }
    Err(HandshakeError::WrongNode { expected: expected.clone(), found })
}

type KeyIv = ([u8; KEY_LEN], [u8; IV_LEN]);

struct Keys {
    /// Protects what the opener sends.
    opener: KeyIv,
    /// Protects what the acceptor sends.
    acceptor: KeyIv,
}

fn derive(conn: &Connection, stream: Binding<'_>) -> Result<Keys, HandshakeError> {
    let mut context = stream.id.to_be_bytes().to_vec();
    for n in [stream.opener, stream.acceptor] {
        context.push(n.as_str().len() as u8);
        context.extend_from_slice(n.as_str().as_bytes());
    }
    let mut okm = [0u8; 2 * (KEY_LEN + IV_LEN)];
    conn.export_keying_material(&mut okm[..], LABEL, Some(&context)).map_err(tls_err)?;
    let split = |at: usize| {
        let mut key = [0u8; KEY_LEN];
        let mut iv = [0u8; IV_LEN];
        key.copy_from_slice(&okm[at..at + KEY_LEN]);
        iv.copy_from_slice(&okm[at + KEY_LEN..at + KEY_LEN + IV_LEN]);
        (key, iv)
    };
    Ok(Keys { opener: split(0), acceptor: split(KEY_LEN + IV_LEN) })
}

/// Sealed header records: `HeaderMore` for every part but the last, which is `Header`.
pub(crate) fn header_records(header: &[u8]) -> impl Iterator<Item = (Kind, &[u8])> {
    let parts: Vec<&[u8]> =
        if header.is_empty() { vec![&[][..]] } else { header.chunks(super::seal::MAX_PAYLOAD).collect() };
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(move |(i, p)| (if i == last { Kind::Header } else { Kind::HeaderMore }, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_into_parts_ending_with_a_final_one() {
        let kinds = |h: &[u8]| header_records(h).map(|(k, p)| (k, p.len())).collect::<Vec<_>>();
        assert_eq!(kinds(b""), vec![(Kind::Header, 0)]);
        assert_eq!(kinds(b"{}"), vec![(Kind::Header, 2)]);
        let max = crate::wire::MAX_META;
        let parts = kinds(&vec![0u8; max]);
        assert_eq!(parts.iter().map(|(_, n)| n).sum::<usize>(), max);
        assert!(parts[..parts.len() - 1].iter().all(|(k, _)| *k == Kind::HeaderMore));
        assert_eq!(parts.last().map(|(k, _)| *k), Some(Kind::Header));
    }
}
