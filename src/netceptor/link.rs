//! One task per netceptor backend session: frames packets off the byte stream to the
//! driver and drains the link's outbound queue onto it, until either side closes, the
//! driver closes the link or the node stops. Stream backends (TCP, TLS) only for now.

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

/// Packets queued towards one link before further ones are dropped.
pub const LINK_QUEUE: usize = 512;

/// A byte stream that will carry netceptor packets.
pub struct Session {
    pub io: BoxedIo,
    /// Bytes already read off `io` (the accept path reads a few to tell the protocols
    /// apart).
    pub prefix: Bytes,
    pub remote: String,
    pub cost: f64,
    pub dialed: bool,
}

/// Runs one session to its end.
pub(crate) async fn run(link: LinkId, s: Session, cmds: mpsc::Sender<Cmd>, stop: CancellationToken) {
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(LINK_QUEUE);
    let close = stop.child_token();
    let opened = Cmd::Opened {
        link,
        cost: s.cost,
        out: out_tx,
        close: close.clone(),
        remote: s.remote,
        dialed: s.dialed,
    };
    if cmds.send(opened).await.is_err() {
        return;
    }
    let (rd, mut wr) = tokio::io::split(s.io);
    let rd = std::io::Cursor::new(s.prefix).chain(rd);
    let mut reader = FramedRead::new(rd, PacketCodec);
    let writer = async {
        while let Some(p) = out_rx.recv().await {
            let Ok(f) = frame(&p) else { continue };
            if wr.write_all(&f).await.is_err() {
                break;
            }
        }
    };
    let reader_loop = async {
        while let Some(Ok(bytes)) = reader.next().await {
            if cmds.send(Cmd::Packet { link, bytes }).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = close.cancelled() => {}
        _ = writer => {}
        _ = reader_loop => {}
    }
    // Let a reject queued just before the close reach the peer.
    while let Ok(p) = out_rx.try_recv() {
        if let Ok(f) = frame(&p) {
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&f)).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    let _ = cmds.send(Cmd::Closed { link }).await;
}
