//! A byte stream with a few bytes already read off it put back in front, for listeners
//! that look at a connection's first bytes to tell protocols apart (native links and Go
//! Receptor's netceptor share `receptor://` ports).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::BoxedIo;

/// `io` whose reads start with `prefix`.
pub struct Prefixed {
    prefix: Bytes,
    io: BoxedIo,
}

impl Prefixed {
    pub fn new(prefix: Bytes, io: BoxedIo) -> Prefixed {
        Prefixed { prefix, io }
    }
}

/// Reads the first `n` bytes of `io` within `timeout`; returns them and the stream with
/// them put back. `None` if the peer closed or stayed silent.
pub async fn peek(mut io: BoxedIo, n: usize, timeout: Duration) -> Option<(Bytes, BoxedIo)> {
    let mut buf = vec![0u8; n];
    match tokio::time::timeout(timeout, io.read_exact(&mut buf)).await {
        Ok(Ok(_)) => {
            let first = Bytes::from(buf);
            Some((first.clone(), Box::new(Prefixed::new(first, io))))
        }
        _ => None,
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn peeked_bytes_are_read_again() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b"RCPT and the rest").await.expect("write");
        drop(b);
        let (first, mut io) = peek(Box::new(a), 4, Duration::from_secs(1)).await.expect("peeked");
        assert_eq!(&first[..], b"RCPT");
        let mut all = String::new();
        io.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "RCPT and the rest");
    }

    #[tokio::test]
    async fn silent_peer_gives_nothing() {
        let (a, _b) = tokio::io::duplex(64);
        assert!(peek(Box::new(a), 4, Duration::from_millis(50)).await.is_none());
    }
}
