//! Byte transports for control sessions: a Unix socket, or a stream across the mesh (the
//! `control` service, `connect`, remote work units). Sessions and clients are written once
//! against [`ByteRead`]/[`ByteWrite`]; [`LineReader`] reads request lines and hands every
//! byte it read ahead to whoever takes the raw payload next (`work submit`, `connect`).

use std::future::Future;
use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::mesh::{Chunk, StreamReader, StreamWriter};

const READ_CHUNK: usize = 64 * 1024;

/// A source of bytes; `None` at end of input.
pub trait ByteRead: Send {
    fn read(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;

    /// Probes the path to the other end, for transports whose breakage a silent reader
    /// would not notice (a mesh stream across relays); `None` for sockets.
    fn prober(&self) -> Option<crate::mesh::Prober> {
        None
    }
}

/// A sink of bytes that can end its direction.
pub trait ByteWrite: Send {
    fn write(&mut self, data: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends this direction (after flushing); further writes fail.
    fn close(&mut self) -> impl Future<Output = ()> + Send;

    /// Ends this direction because what it relays failed, so that the other end does not
    /// take it for a complete end: a mesh or QUIC stream is reset; a socket can only be
    /// closed (its peer cannot tell).
    fn abort(&mut self, why: &str) -> impl Future<Output = ()> + Send;

    /// Resolves once the transport is reset under a writer that is not writing (a mesh
    /// stream's reset or lost path); `None` for sockets, whose writes report it.
    fn close_watch(&self) -> Option<crate::mesh::CloseWatch> {
        None
    }
}

/// Reads from any tokio reader (a socket half).
pub struct IoRead<R>(pub R);

impl<R: AsyncRead + Unpin + Send> ByteRead for IoRead<R> {
    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match self.0.read_buf(&mut buf).await {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(buf.freeze())),
            // A TLS client's half-close (Python's shutdown(SHUT_WR) on an SSL socket) is a
            // bare TCP FIN without close_notify: for this protocol it is the end of input.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl ByteRead for crate::work::payload::PayloadReader {
    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        crate::work::payload::PayloadReader::read(self).await
    }
}

/// Writes to any tokio writer (a socket half).
pub struct IoWrite<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> ByteWrite for IoWrite<W> {
    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        self.0.write_all(&data).await
    }

    async fn close(&mut self) {
        let _ = self.0.flush().await;
        let _ = self.0.shutdown().await;
    }

    async fn abort(&mut self, _why: &str) {
        self.close().await;
    }
}

impl ByteRead for StreamReader {
    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        match self.recv().await {
            Ok(Chunk::Data(b)) => Ok(Some(b)),
            Ok(Chunk::End(_)) => Ok(None),
            // The stream error stays inside: an integrity failure is told apart from a
            // lost connection (`control::client`).
            Err(e) => Err(io::Error::new(io::ErrorKind::ConnectionReset, e)),
        }
    }

    fn prober(&self) -> Option<crate::mesh::Prober> {
        Some(StreamReader::prober(self))
    }
}

/// The writing half of a mesh stream.
pub struct MeshWrite(pub Option<StreamWriter>);

impl ByteWrite for MeshWrite {
    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        let Some(w) = self.0.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream already closed"));
        };
        w.write(data).await.map_err(|e| io::Error::new(io::ErrorKind::ConnectionReset, e.to_string()))
    }

    async fn close(&mut self) {
        if let Some(w) = self.0.take() {
            w.finish(Bytes::new()).await;
        }
    }

    async fn abort(&mut self, why: &str) {
        if let Some(w) = self.0.take() {
            w.reset(why).await;
        }
    }

    fn close_watch(&self) -> Option<crate::mesh::CloseWatch> {
        self.0.as_ref().map(StreamWriter::close_watch)
    }
}

/// One request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line without `\r` (anywhere) and without its `\n`; never empty.
    Text(String),
    Eof,
    /// Longer than the limit: the session cannot continue.
    TooLong,
}

/// Splits a byte source into lines without losing what follows them.
pub struct LineReader<R> {
    inner: R,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline (so it is not searched again).
    scanned: usize,
    eof: bool,
}

impl<R: ByteRead> LineReader<R> {
    pub fn new(inner: R) -> LineReader<R> {
        LineReader { inner, buf: BytesMut::new(), scanned: 0, eof: false }
    }

    /// The transport's path prober, if it has one ([`ByteRead::prober`]).
    pub fn prober(&self) -> Option<crate::mesh::Prober> {
        self.inner.prober()
    }

    /// The next non-empty line. A partial line before end of input still counts (as in
    /// Go Receptor).
    pub async fn line(&mut self, max: usize) -> io::Result<Line> {
        loop {
            let found = self.buf[self.scanned..].iter().position(|b| *b == b'\n');
            if let Some(pos) = found.map(|p| p + self.scanned) {
                self.scanned = 0;
                if pos > max {
                    return Ok(Line::TooLong);
                }
                let raw = self.buf.split_to(pos + 1);
                match clean(&raw) {
                    Some(text) => return Ok(Line::Text(text)),
                    None => continue,
                }
            }
            self.scanned = self.buf.len();
            if self.buf.len() > max {
                return Ok(Line::TooLong);
            }
            if self.eof {
                let raw = self.buf.split();
                self.scanned = 0;
                return Ok(clean(&raw).map_or(Line::Eof, Line::Text));
            }
            match self.inner.read().await? {
                Some(data) => self.buf.extend_from_slice(&data),
                None => self.eof = true,
            }
        }
    }

    /// The next raw bytes (first whatever was read past the last line); `None` at end.
    pub async fn raw(&mut self) -> io::Result<Option<Bytes>> {
        if self.buf.has_remaining() {
            self.scanned = 0;
            return Ok(Some(self.buf.split().freeze()));
        }
        if self.eof {
            return Ok(None);
        }
        match self.inner.read().await? {
            Some(data) => Ok(Some(data)),
            None => {
                self.eof = true;
                Ok(None)
            }
        }
    }
}

/// Drops `\r` and `\n`; `None` when nothing else is left.
fn clean(raw: &[u8]) -> Option<String> {
    let kept: Vec<u8> = raw.iter().copied().filter(|b| *b != b'\r' && *b != b'\n').collect();
    (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds fixed chunks.
    struct Chunks(Vec<&'static [u8]>);

    impl ByteRead for Chunks {
        async fn read(&mut self) -> io::Result<Option<Bytes>> {
            if self.0.is_empty() {
                return Ok(None);
            }
            Ok(Some(Bytes::from_static(self.0.remove(0))))
        }
    }

    #[tokio::test]
    async fn lines_then_raw_bytes_lose_nothing() {
        let mut r = LineReader::new(Chunks(vec![b"st\r", b"atus\n\n\r\nwork submit\npay", b"load"]));
        assert_eq!(r.line(100).await.ok(), Some(Line::Text("status".into())));
        assert_eq!(r.line(100).await.ok(), Some(Line::Text("work submit".into())));
        let mut payload = Vec::new();
        while let Ok(Some(b)) = r.raw().await {
            payload.extend_from_slice(&b);
        }
        assert_eq!(payload, b"payload");
        assert_eq!(r.line(100).await.ok(), Some(Line::Eof));
    }

    #[tokio::test]
    async fn partial_last_line_counts_and_long_lines_stop() {
        let mut r = LineReader::new(Chunks(vec![b"ping x"]));
        assert_eq!(r.line(100).await.ok(), Some(Line::Text("ping x".into())));
        assert_eq!(r.line(100).await.ok(), Some(Line::Eof));
        let mut r = LineReader::new(Chunks(vec![b"0123456789", b"0123456789\n"]));
        assert_eq!(r.line(15).await.ok(), Some(Line::TooLong));
    }
}
