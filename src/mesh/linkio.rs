//! Per-link byte and frame counters without touching the link's code paths: the link's
//! byte stream (after TLS) is wrapped in [`CountingIo`], which counts bytes both ways and
//! finds frame boundaries from the length prefixes as the bytes pass (after the 4-byte
//! preface). The peer is only known after the handshake: until [`link_up`] names it,
//! counts wait in the wrapper and are then added to that peer's series.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::global;
use crate::transport::BoxedIo;
use crate::wire::{Hello, PREFACE, caps};

/// The series one link feeds.
struct PeerCounters {
    bytes_in: Counter,
    bytes_out: Counter,
    frames_in: Counter,
    frames_out: Counter,
    up: Gauge,
}

/// Shared between the wrapper and the registry of links waiting for their peer's name.
#[derive(Default)]
struct LinkState {
    peer: OnceLock<PeerCounters>,
}

impl Drop for LinkState {
    fn drop(&mut self) {
        if let Some(p) = self.peer.get() {
            p.up.dec();
        }
    }
}

/// Links whose handshake is running, by link ID (dead entries are swept on insert).
fn pending() -> &'static Mutex<HashMap<u64, Weak<LinkState>>> {
    static PENDING: OnceLock<Mutex<HashMap<u64, Weak<LinkState>>>> = OnceLock::new();
    PENDING.get_or_init(Mutex::default)
}

/// Counts one direction's frames from the length prefixes.
#[derive(Debug, Clone)]
pub(crate) struct FrameCounter {
    skip: usize,
    header: [u8; 4],
    header_len: usize,
    remaining: u64,
}

impl FrameCounter {
    pub(crate) fn new() -> FrameCounter {
        FrameCounter { skip: PREFACE.len(), header: [0; 4], header_len: 0, remaining: 0 }
    }

    /// Feeds bytes that passed; returns how many frames they completed.
    pub(crate) fn feed(&mut self, mut buf: &[u8]) -> u64 {
        let mut frames = 0;
        while !buf.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                self.skip -= n;
                buf = &buf[n..];
            } else if self.remaining > 0 {
                let n = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(buf.len());
                self.remaining -= n as u64;
                buf = &buf[n..];
                if self.remaining == 0 {
                    frames += 1;
                }
            } else {
                self.header[self.header_len] = buf[0];
                self.header_len += 1;
                buf = &buf[1..];
                if self.header_len == 4 {
                    self.header_len = 0;
                    self.remaining = u64::from(u32::from_be_bytes(self.header));
                    if self.remaining == 0 {
                        frames += 1;
                    }
                }
            }
        }
        frames
    }
}

/// A link's byte stream, counted.
pub struct CountingIo {
    inner: BoxedIo,
    state: Arc<LinkState>,
    rd: FrameCounter,
    wr: FrameCounter,
    /// Counts from before the peer was known: bytes in, frames in, bytes out, frames out.
    held: [u64; 4],
}

/// Wraps a fresh connection (link `link`) so its traffic is counted.
pub fn count_io(link: u64, io: BoxedIo) -> BoxedIo {
    let state = Arc::new(LinkState::default());
    if let Ok(mut p) = pending().lock() {
        if p.len() >= 64 {
            p.retain(|_, w| w.strong_count() > 0);
        }
        p.insert(link, Arc::downgrade(&state));
    }
    Box::new(CountingIo { inner: io, state, rd: FrameCounter::new(), wr: FrameCounter::new(), held: [0; 4] })
}

/// Link `link` is up with `peer`: its traffic now counts under the peer's label.
pub fn link_up(link: u64, peer: &Hello) {
    let m = global();
    let (labels, first) = m.peer_label(peer.node_id.as_str(), peer.caps & caps::EPHEMERAL != 0);
    m.link_established.get_or_create(&labels).inc();
    if !first && labels[0].1 != crate::metrics::CLIENT_PEER {
        m.link_reconnects.get_or_create(&labels).inc();
    }
    let state = pending().lock().ok().and_then(|mut p| p.remove(&link)).and_then(|w| w.upgrade());
    let Some(state) = state else { return };
    let counters = PeerCounters {
        bytes_in: m.link_bytes_in.get_or_create_owned(&labels),
        bytes_out: m.link_bytes_out.get_or_create_owned(&labels),
        frames_in: m.link_frames_in.get_or_create_owned(&labels),
        frames_out: m.link_frames_out.get_or_create_owned(&labels),
        up: m.link_up.get_or_create_owned(&labels),
    };
    counters.up.inc();
    let _ = state.peer.set(counters);
}

impl CountingIo {
    /// Adds counts to the peer's series once it is known; holds them until then.
    fn count(&mut self, bytes_in: u64, frames_in: u64, bytes_out: u64, frames_out: u64) {
        let add = [bytes_in, frames_in, bytes_out, frames_out];
        let Some(p) = self.state.peer.get() else {
            for (h, a) in self.held.iter_mut().zip(add) {
                *h += a;
            }
            return;
        };
        let [bi, fi, bo, fo] = std::mem::take(&mut self.held);
        let all = [bi + add[0], fi + add[1], bo + add[2], fo + add[3]];
        for (c, v) in [&p.bytes_in, &p.frames_in, &p.bytes_out, &p.frames_out].into_iter().zip(all) {
            if v > 0 {
                c.inc_by(v);
            }
        }
    }
}

impl AsyncRead for CountingIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                crate::alloc::TRAFFIC.note(new.len() as u64);
                let frames = this.rd.feed(new);
                this.count(new.len() as u64, frames, 0, 0);
            }
        }
        r
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if let Some(written) = buf.get(..n).filter(|w| !w.is_empty()) {
                crate::alloc::TRAFFIC.note(n as u64);
                let frames = this.wr.feed(written);
                this.count(0, 0, n as u64, frames);
            }
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut f = len.to_be_bytes().to_vec();
        f.extend(std::iter::repeat_n(7u8, len as usize));
        f
    }

    #[test]
    fn frames_are_counted_across_any_split() {
        let mut stream = PREFACE.to_vec();
        for len in [1u32, 300, 70_000, 5] {
            stream.extend(frame(len));
        }
        for chunk in [1usize, 3, 4, 7, 1000, stream.len()] {
            let mut c = FrameCounter::new();
            let total: u64 = stream.chunks(chunk).map(|b| c.feed(b)).sum();
            assert_eq!(total, 4, "chunk size {chunk}");
        }
    }

    #[test]
    fn a_partial_frame_is_not_counted() {
        let mut c = FrameCounter::new();
        let mut stream = PREFACE.to_vec();
        stream.extend(&frame(10)[..8]);
        assert_eq!(c.feed(&stream), 0);
        assert_eq!(c.feed(&[7, 7, 7, 7, 7, 7]), 1);
    }
}
