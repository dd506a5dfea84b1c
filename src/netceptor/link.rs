//! One task per netceptor backend session: frames packets off the byte stream to the
//! driver and drains the link's outbound queue onto it, until either side closes, the
//! driver closes the link or the node stops. Stream backends (TCP, TLS) and WebSocket ones
//! (`crate::transport::ws` shows their messages in the stream framing); UDP is `udp`.
//! What a peer can make a link hold is bounded: frames longer than
//! `limits.netceptor.max_packet` close the link, packets queued towards it are bounded in
//! bytes (`link_queue_bytes`, excess dropped), and a peer that stops reading for
//! `limits.stall_timeout` loses its link.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::driver::Cmd;
use super::framing::{PacketCodec, frame};
use super::proto::LinkId;
use crate::transport::BoxedIo;

/// Queued packets are written together up to about this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

/// The bounds of one link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkLimits {
    pub max_packet: usize,
    pub queue_bytes: usize,
    pub stall: Duration,
}

/// Packets queued towards one link, bounded in bytes: a full queue drops what is offered.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl Outbox {
    /// A queue holding at most `cap` bytes, and its receiving end.
    pub(crate) fn new(cap: usize) -> (Outbox, OutboxRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (Outbox { tx, queued: queued.clone(), cap }, OutboxRx { rx, queued })
    }

    /// Queues `p`; false (and dropped) when the link already holds `cap` bytes.
    pub(crate) fn offer(&self, p: Bytes) -> bool {
        let len = p.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > self.cap {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self.tx.send(p).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// The receiving end of an [`Outbox`] (datagram backends).
pub(crate) struct OutboxRx {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl OutboxRx {
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        let p = self.rx.recv().await?;
        self.queued.fetch_sub(p.len(), Ordering::AcqRel);
        Some(p)
    }
}

/// A byte stream that will carry netceptor packets.
pub struct Session {
    pub io: BoxedIo,
    /// Bytes already read off `io` (the accept path reads a few to tell the protocols
    /// apart).
    pub prefix: Bytes,
    pub remote: String,
    pub cost: f64,
    pub dialed: bool,
    /// The node IDs the peer's TLS certificate names (`None`: plain TCP, or no
    /// certificate); the peer's node ID must then be one of them.
    pub cert: Option<Vec<String>>,
}

/// Runs one session to its end.
pub(crate) async fn run(
    link: LinkId,
    s: Session,
    cmds: mpsc::Sender<Cmd>,
    stop: CancellationToken,
    lim: LinkLimits,
) {
    let (tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
    let queued = Arc::new(AtomicUsize::new(0));
    let out = Outbox { tx, queued: queued.clone(), cap: lim.queue_bytes };
    let close = stop.child_token();
    let opened = Cmd::Opened {
        link,
        cost: s.cost,
        out,
        close: close.clone(),
        remote: s.remote,
        dialed: s.dialed,
        carried: false,
        cert: s.cert,
    };
    if cmds.send(opened).await.is_err() {
        return;
    }
    let (rd, mut wr) = tokio::io::split(s.io);
    let rd = std::io::Cursor::new(s.prefix).chain(rd);
    let mut reader = FramedRead::new(rd, PacketCodec::new(lim.max_packet));
    // Ends with the write error when one failed: the peer closed, perhaps right after a
    // reject.
    let writer = async {
        while let Some(p) = out_rx.recv().await {
            // What is queued already goes in the same write (a relay batch: one write,
            // one wake-up of the peer, rather than one per packet).
            let mut f = Vec::new();
            let mut next = Some(p);
            while let Some(p) = next.take() {
                queued.fetch_sub(p.len(), Ordering::AcqRel);
                if let Ok(framed) = frame(&p) {
                    f.extend_from_slice(&framed);
                }
                if f.len() < COALESCE_BYTES {
                    next = out_rx.try_recv().ok();
                }
            }
            if f.is_empty() {
                continue;
            }
            // A peer that stops reading holds this write: past the stall timeout the link goes.
            // The flush is free on TCP and hands a WebSocket link its message now.
            let write = async {
                wr.write_all(&f).await?;
                wr.flush().await
            };
            match tokio::time::timeout(lim.stall, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Some(format!("write failed: {e}")),
                Err(_) => {
                    tracing::info!(link, "netceptor peer stopped reading (limits.stall_timeout); closing");
                    return None;
                }
            }
        }
        None
    };
    let reader_loop = async {
        loop {
            match reader.next().await {
                Some(Ok(bytes)) => {
                    if cmds.send(Cmd::Packet { link, bytes }).await.is_err() {
                        return None;
                    }
                }
                Some(Err(e)) => return Some(format!("read failed: {e}")),
                None => return Some("closed by the peer".to_owned()),
            }
        }
    };
    tokio::pin!(reader_loop);
    let cause = tokio::select! {
        _ = close.cancelled() => None,
        failed = writer => match failed {
            // A peer that refuses a link (Go's allowedpeers, a duplicate) sends a reject
            // and closes (Go's own race sometimes loses the reject); our next write then
            // fails, but what it did send is still in the socket. Read it (for a second at
            // most) so the driver learns why, and tell the read's end over the write's.
            Some(write) => tokio::time::timeout(Duration::from_secs(1), &mut reader_loop)
                .await
                .ok()
                .flatten()
                .or(Some(write)),
            None => None,
        },
        ended = &mut reader_loop => ended,
    };
    // Let a reject queued just before the close reach the peer (within a second in all:
    // a peer that does not read gets nothing more).
    let flush = async {
        while let Ok(p) = out_rx.try_recv() {
            if let Ok(f) = frame(&p) {
                if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
            }
        }
        let _ = wr.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
    let _ = cmds.send(Cmd::Closed { link, cause }).await;
}
