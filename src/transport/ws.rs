//! WebSocket links: the HTTP upgrade on either end and [`WsIo`], which turns a WebSocket
//! into the byte stream the rest of the node reads and writes, so neither the mesh nor the
//! netceptor plane knows the link is a WebSocket.
//!
//! Two ways of carrying a link in binary messages:
//! - receptord's own protocol: the byte stream, cut into messages of at most [`CHUNK`]
//!   bytes, read back as one stream whatever the message boundaries;
//! - Go Receptor's netceptor: one packet per message (`pkg/backends/websockets.go`),
//!   presented to the netceptor plane in its stream backends' framing (a u16-LE length and
//!   the packet, `crate::netceptor::framing`), so the plane runs WebSocket links exactly as
//!   TCP ones.
//!
//! A listener tells the two apart by its first message: receptord's opens with the native
//! preface, a Go peer's with a routing update. Everything a peer sends is bounded: the
//! upgrade request or response ([`WsLimits::max_http_header`]), every message
//! ([`WsLimits::max_message`], and 65535 bytes for a netceptor packet); the caller bounds the
//! time (`limits.handshake_timeout` on accept, `mesh.dial_timeout` on dial).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use super::{BoxedIo, Scheme, WsTarget};
use crate::limits::WsLimits;

/// Largest message receptord's own protocol is written in.
pub const CHUNK: usize = 64 * 1024;

/// Largest netceptor packet (its stream framing's u16 length).
const MAX_NETCEPTOR_PACKET: usize = 65535;

/// Why a WebSocket upgrade or its first message failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket handshake: {0}")]
    Handshake(Box<tungstenite::Error>),
    #[error("invalid extra header {0:?}")]
    Header(String),
    #[error("the peer closed before its first message")]
    NoMessage,
    #[error("WebSocket link: {0}")]
    Io(#[from] io::Error),
}

impl From<tungstenite::Error> for WsError {
    fn from(e: tungstenite::Error) -> WsError {
        WsError::Handshake(Box::new(e))
    }
}

/// How a [`WsIo`] maps messages to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// receptord's own protocol: messages are pieces of one byte stream.
    Stream,
    /// Go Receptor's netceptor: one packet per message, shown length-prefixed.
    Packets,
}

fn config(limits: &WsLimits) -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(limits.max_message),
        max_frame_size: Some(limits.max_message),
        ..Default::default()
    }
}

/// Upgrades an accepted connection for a listener on `target.path`, then waits for the
/// peer's first message to tell receptord's protocol from netceptor.
#[allow(clippy::result_large_err)] // the path check's type is tungstenite's callback
pub async fn accept(io: BoxedIo, target: &WsTarget) -> Result<BoxedIo, WsError> {
    let path = target.path.clone();
    let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        // Any Origin is accepted: the peers are daemons, and the link authenticates itself.
        if req.uri().path() == path {
            Ok(resp)
        } else {
            let mut not_found = ErrorResponse::new(None);
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            Err(not_found)
        }
    };
    let capped = Capped::new(io, target.limits.max_http_header);
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(capped, check, Some(config(&target.limits))).await?;
    ws.get_mut().lift();
    // The first message says which protocol this is.
    let first = loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Err(WsError::NoMessage),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Binary(b))) if !b.is_empty() => break b,
            Some(Ok(Message::Text(_))) => return Err(io::Error::from(Refused::Text).into()),
            Some(Ok(_)) => continue,
        }
    };
    let native = crate::wire::PREFACE;
    let mode =
        if first.starts_with(&native) || native.starts_with(&first) { Mode::Stream } else { Mode::Packets };
    let mut io = WsIo::new(ws, mode);
    io.rd = io.incoming(first)?;
    Ok(Box::new(io))
}

/// Upgrades a connection to `url` (already through TCP, a proxy and TLS): the request for
/// its path, with `Origin` as Go's dialer sends it and the configured extra headers.
pub async fn connect(
    io: BoxedIo,
    host: &str,
    port: u16,
    scheme: Scheme,
    target: &WsTarget,
    mode: Mode,
) -> Result<BoxedIo, WsError> {
    let (ws_scheme, http_scheme) = match scheme {
        Scheme::Tcp | Scheme::Udp => ("ws", "http"),
        Scheme::Tls => ("wss", "https"),
    };
    let authority = super::url::authority(host, port);
    let mut req = format!("{ws_scheme}://{authority}{}", target.path).into_client_request()?;
    let origin = HeaderValue::from_str(&format!("{http_scheme}://{authority}"))
        .map_err(|_| WsError::Header("Origin".into()))?;
    req.headers_mut().insert("Origin", origin);
    for (name, value) in &target.headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| WsError::Header(name.clone()))?;
        let v = HeaderValue::from_str(value).map_err(|_| WsError::Header(name.clone()))?;
        req.headers_mut().insert(n, v);
    }
    let capped = Capped::new(io, target.limits.max_http_header);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(req, capped, Some(config(&target.limits))).await?;
    ws.get_mut().lift();
    Ok(Box::new(WsIo::new(ws, mode)))
}

/// What a WebSocket peer may not send.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("text message on a binary link")]
    Text,
    #[error("empty or oversize netceptor packet ({0} bytes)")]
    Packet(usize),
    #[error("HTTP header longer than limits.websocket.max_http_header")]
    Header,
}

impl From<Refused> for io::Error {
    fn from(r: Refused) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, r)
    }
}

/// A WebSocket as a byte stream (see the module doc).
pub struct WsIo {
    ws: WebSocketStream<Capped>,
    mode: Mode,
    /// Received bytes not read yet.
    rd: Bytes,
    /// Netceptor mode: framed bytes written and not yet sent as whole packets.
    wr: BytesMut,
    eof: bool,
}

impl WsIo {
    fn new(ws: WebSocketStream<Capped>, mode: Mode) -> WsIo {
        WsIo { ws, mode, rd: Bytes::new(), wr: BytesMut::new(), eof: false }
    }

    /// The bytes a received message stands for.
    fn incoming(&self, msg: Vec<u8>) -> io::Result<Bytes> {
        match self.mode {
            Mode::Stream => Ok(Bytes::from(msg)),
            Mode::Packets => {
                let len =
                    u16::try_from(msg.len()).ok().filter(|l| *l > 0).ok_or(Refused::Packet(msg.len()))?;
                let mut out = Vec::with_capacity(2 + msg.len());
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&msg);
                Ok(Bytes::from(out))
            }
        }
    }

    /// Writes what is buffered as far as the socket takes it now, as a TCP or TLS stream
    /// does on every write: callers (the mesh handshake) need not flush for the peer to see
    /// their bytes. What the socket does not take goes with the next write or flush; an
    /// error shows there too.
    fn push(&mut self, cx: &mut Context<'_>) {
        let _ = Pin::new(&mut self.ws).poll_flush(cx);
    }

    /// Netceptor mode: sends every whole packet written so far, one message each.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wr.len() >= 2 {
            let len = usize::from(u16::from_le_bytes([self.wr[0], self.wr[1]]));
            if len == 0 {
                return Poll::Ready(Err(Refused::Packet(0).into()));
            }
            if self.wr.len() < 2 + len {
                break;
            }
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
            self.wr.advance(2);
            let packet = self.wr.split_to(len);
            Pin::new(&mut self.ws).start_send(Message::Binary(packet.to_vec())).map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.rd.is_empty() {
                let n = self.rd.len().min(buf.remaining());
                buf.put_slice(&self.rd[..n]);
                self.rd.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
                Some(Ok(Message::Binary(b))) => {
                    let bytes = self.incoming(b)?;
                    self.rd = bytes;
                }
                Some(Ok(Message::Text(_))) => return Poll::Ready(Err(Refused::Text.into())),
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.mode {
            Mode::Stream => {
                ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
                let n = buf.len().min(CHUNK);
                Pin::new(&mut self.ws)
                    .start_send(Message::Binary(buf[..n].to_vec()))
                    .map_err(io::Error::other)?;
                self.push(cx);
                Poll::Ready(Ok(n))
            }
            Mode::Packets => {
                ready!(self.drain(cx))?;
                // At most one packet's worth waits here.
                let room = (2 + MAX_NETCEPTOR_PACKET).saturating_sub(self.wr.len());
                let n = buf.len().min(room);
                self.wr.extend_from_slice(&buf[..n]);
                let _ = self.drain(cx)?;
                self.push(cx);
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(io::Error::other(e))),
        }
    }
}

/// A stream that refuses to read more than a budget until `Capped::lift`: the HTTP
/// exchange of an upgrade may not grow without end (tungstenite bounds the number of
/// headers, not their bytes).
pub struct Capped {
    io: BoxedIo,
    left: Option<usize>,
}

impl Capped {
    fn new(io: BoxedIo, budget: usize) -> Capped {
        Capped { io, left: Some(budget) }
    }

    fn lift(&mut self) {
        self.left = None;
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(left) = self.left else {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        };
        if left == 0 {
            return Poll::Ready(Err(Refused::Header.into()));
        }
        let max = left.min(buf.remaining());
        let mut sub = ReadBuf::new(buf.initialize_unfilled_to(max));
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut sub))?;
        let n = sub.filled().len();
        buf.advance(n);
        self.left = Some(left - n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Capped {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn target(path: &str) -> WsTarget {
        WsTarget {
            path: path.into(),
            headers: vec![("X-Test".into(), "1".into())],
            limits: WsLimits::default(),
        }
    }

    async fn pair(mode: Mode, first: &[u8]) -> (BoxedIo, BoxedIo) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let t = target("/mesh");
        let server = tokio::spawn(async move { accept(Box::new(b), &target("/mesh")).await });
        let mut client = connect(Box::new(a), "h", 1, Scheme::Tcp, &t, mode).await.expect("connect");
        client.write_all(first).await.expect("write");
        client.flush().await.expect("flush");
        let server = server.await.expect("join").expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn native_bytes_flow_as_a_stream() {
        let (mut c, mut s) = pair(Mode::Stream, b"RCPT hello").await;
        let mut got = [0u8; 10];
        s.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"RCPT hello");
        let big = vec![7u8; 3 * CHUNK + 5];
        s.write_all(&big).await.expect("write");
        s.flush().await.expect("flush");
        let mut back = vec![0u8; big.len()];
        c.read_exact(&mut back).await.expect("read");
        assert_eq!(back, big);
    }

    #[tokio::test]
    async fn netceptor_packets_are_one_message_each_framed_for_the_plane() {
        // The dialer writes framed packets; the listener reads them framed again.
        let (mut c, mut s) = pair(Mode::Packets, &[3, 0, 1, b'{', b'}', 2, 0, 9, 9]).await;
        let mut got = [0u8; 9];
        s.read_exact(&mut got).await.expect("read");
        assert_eq!(got, [3, 0, 1, b'{', b'}', 2, 0, 9, 9]);
        s.write_all(&[1, 0, 5]).await.expect("write");
        s.flush().await.expect("flush");
        let mut back = [0u8; 3];
        c.read_exact(&mut back).await.expect("read");
        assert_eq!(back, [1, 0, 5]);
    }

    #[tokio::test]
    async fn a_wrong_path_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move { accept(Box::new(b), &target("/mesh")).await });
        let r = connect(Box::new(a), "h", 1, Scheme::Tcp, &target("/other"), Mode::Stream).await;
        assert!(matches!(r, Err(WsError::Handshake(_))));
        assert!(server.await.expect("join").is_err());
    }

    #[tokio::test]
    async fn an_endless_upgrade_request_is_cut_at_the_header_budget() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move { accept(Box::new(b), &target("/")).await });
        let mut line = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        // Past the 16 KiB budget, short of tungstenite's own 64 KiB.
        line.extend(std::iter::repeat_n(b'a', 32 * 1024));
        let _ = a.write_all(&line).await;
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
        assert!(matches!(r, Ok(Ok(Err(_)))), "a 32 KiB header must be refused at once");
    }
}
