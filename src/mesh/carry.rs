//! Another plane's packets carried over native links: the one hook by which Go Receptor's
//! netceptor plane (`crate::netceptor`) runs sessions over `receptor://` links, so Go nodes
//! reach receptord nodes linked only natively (docs/PROTOCOL.md, "Netceptor over native
//! links"). The mesh knows nothing of those packets: a link whose peer offered
//! [`caps::NETCEPTOR`](crate::wire::caps::NETCEPTOR) hands them, as [`Frame::Netceptor`]
//! bodies, to a session the [`Carrier`] opens, and writes what the session sends as such
//! frames on its data lane. A session opens when the peer sends the first packet, or when
//! the other plane is active (it has another link up); so with no Go node anywhere none
//! ever opens and no packet is ever sent.
//!
//! [`Frame::Netceptor`]: crate::wire::Frame::Netceptor

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::wire::NodeId;

/// Packets from the peer waiting for the session, per link (beyond, they are dropped:
/// datagram semantics, as on any netceptor link).
pub(crate) const INBOUND_QUEUE: usize = 256;
/// A session the other plane closed is reopened after this long at first (growing to
/// [`REOPEN_MAX`] while sessions keep ending young); packets arriving meanwhile are dropped.
const REOPEN_FIRST: Duration = Duration::from_secs(5);
const REOPEN_MAX: Duration = Duration::from_secs(120);

/// The native link a session is carried over.
#[derive(Debug, Clone)]
pub struct CarriedLink {
    /// The peer, as the native link authenticated it.
    pub peer: NodeId,
    /// The link's cost, the same on both ends (the larger of the two hellos' costs).
    pub cost: f64,
}

/// The two ends of a carried session, from the link's side.
pub struct CarriedPorts {
    /// Packets from the peer, for the session; dropping it ends the session.
    pub inbound: mpsc::Sender<Bytes>,
    /// Packets for the peer; ends when the other plane closes the session.
    pub outbound: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
}

/// The other plane, as native links see it.
#[derive(Clone)]
pub struct Carrier {
    /// True while the plane has a link up (a Go peer, or a session on another native
    /// link): links then open sessions without waiting for their peers.
    pub active: watch::Receiver<bool>,
    pub open: Arc<dyn Fn(CarriedLink) -> CarriedPorts + Send + Sync>,
}

/// Carries sessions over one native link until it ends (`stop`, or `inbound` closed):
/// packets the link read arrive on `inbound`; what sessions send goes to `data` as
/// (frame head, packet).
pub(crate) async fn run(
    carrier: Carrier,
    link: CarriedLink,
    mut inbound: mpsc::Receiver<Bytes>,
    data: mpsc::Sender<(Bytes, Bytes)>,
    stop: CancellationToken,
) {
    let mut active = carrier.active.clone();
    let mut backoff = Backoff::new(REOPEN_FIRST, REOPEN_MAX);
    loop {
        // Idle: the first packet from the peer, or this plane turning active, opens one.
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            p = inbound.recv() => match p {
                Some(p) => Some(p),
                None => return,
            },
            r = async { active.wait_for(|a| *a).await.map(|_| ()) } => {
                if r.is_err() {
                    // The plane is gone: nothing will be carried again.
                    return drain(&mut inbound, &stop).await;
                }
                None
            }
        };
        let ports = (carrier.open)(link.clone());
        let opened = tokio::time::Instant::now();
        if let Some(p) = first {
            let _ = ports.inbound.try_send(p);
        }
        let CarriedPorts { inbound: to_plane, mut outbound } = ports;
        let up = async {
            while let Some(p) = inbound.recv().await {
                if to_plane.send(p).await.is_err() {
                    return false;
                }
            }
            true
        };
        let down = async {
            while let Some(p) = outbound.next().await {
                // What the session has queued already goes in one item (a relay batch:
                // one hand-off to the link's writer and one write, not one per packet).
                let mut batch = BytesMut::new();
                let mut next = Some(p);
                let mut ended = false;
                while let Some(p) = next.take() {
                    append_frame(&mut batch, &p);
                    if batch.len() < BATCH_BYTES {
                        match outbound.next().now_or_never() {
                            Some(Some(p)) => next = Some(p),
                            Some(None) => ended = true,
                            None => {}
                        }
                    }
                }
                if !batch.is_empty() && data.send((batch.freeze(), Bytes::new())).await.is_err() {
                    return true;
                }
                if ended {
                    return false;
                }
            }
            false
        };
        // true: the native link ended; false: the session did.
        let link_over = tokio::select! {
            _ = stop.cancelled() => true,
            over = up => over,
            over = down => over,
        };
        if link_over {
            return;
        }
        if opened.elapsed() > REOPEN_MAX {
            backoff.reset();
        }
        let pause = tokio::time::sleep(backoff.next_delay());
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut pause => break,
                p = inbound.recv() => if p.is_none() { return },
            }
        }
    }
}

/// Most bytes of netceptor frames handed to the link's writer as one item.
const BATCH_BYTES: usize = 64 * 1024;

/// Appends `p` as a netceptor frame, unless the peer would take it for a malformed frame
/// (over the wire's ceiling) and close the link: such a packet is dropped.
fn append_frame(batch: &mut BytesMut, p: &Bytes) {
    if p.len() <= crate::wire::MAX_NETCEPTOR_PACKET {
        batch.extend_from_slice(&crate::wire::netceptor_head(p.len()));
        batch.extend_from_slice(p);
    }
}

/// Drops what the peer sends until the link ends.
async fn drain(inbound: &mut mpsc::Receiver<Bytes>, stop: &CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            p = inbound.recv() => if p.is_none() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A carrier whose sessions echo nothing; counts the sessions opened and hands their
    /// ends to the test.
    fn carrier(
        active: watch::Receiver<bool>,
    ) -> (Carrier, Arc<AtomicUsize>, mpsc::Receiver<mpsc::Receiver<Bytes>>) {
        let opened = Arc::new(AtomicUsize::new(0));
        let (ends_tx, ends) = mpsc::channel(8);
        let count = opened.clone();
        let open = Arc::new(move |_l: CarriedLink| {
            count.fetch_add(1, Ordering::SeqCst);
            let (inbound, rx) = mpsc::channel(8);
            let _ = ends_tx.try_send(rx);
            let out = futures_util::stream::iter(vec![Bytes::from_static(b"\x01{}"); 3])
                .chain(futures_util::stream::pending());
            CarriedPorts { inbound, outbound: Box::pin(out) }
        });
        (Carrier { active, open }, opened, ends)
    }

    fn link() -> CarriedLink {
        CarriedLink { peer: NodeId::new("peer").expect("id"), cost: 1.0 }
    }

    #[tokio::test]
    async fn an_inactive_plane_sends_nothing_until_the_peer_does() {
        let (_active_tx, active) = watch::channel(false);
        let (c, opened, mut ends) = carrier(active);
        let (in_tx, in_rx) = mpsc::channel(4);
        let (data_tx, mut data) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(c, link(), in_rx, data_tx, stop.clone()));
        // The link stays idle: nothing is opened, nothing written, until the task ends.
        tokio::task::yield_now().await;
        assert_eq!(opened.load(Ordering::SeqCst), 0);
        assert!(data.try_recv().is_err());
        // The peer's first packet opens a session and reaches it; the session's packet is
        // written as a netceptor frame.
        in_tx.send(Bytes::from_static(b"first")).await.expect("send");
        let mut session = ends.recv().await.expect("a session opened");
        assert_eq!(session.recv().await.as_deref(), Some(&b"first"[..]));
        // The session's three queued packets go to the writer as one item of three frames.
        let (frames, rest) = data.recv().await.expect("frames");
        assert!(rest.is_empty());
        let one = [&crate::wire::netceptor_head(3)[..], b"\x01{}"].concat();
        assert_eq!(&frames[..], &one.repeat(3)[..]);
        assert!(data.try_recv().is_err(), "one hand-off for the batch");
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        stop.cancel();
        task.await.expect("ends");
    }

    #[tokio::test]
    async fn an_active_plane_opens_without_waiting_for_the_peer() {
        let (active_tx, active) = watch::channel(false);
        let (c, opened, mut ends) = carrier(active);
        let (_in_tx, in_rx) = mpsc::channel::<Bytes>(4);
        let (data_tx, mut data) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(c, link(), in_rx, data_tx, stop.clone()));
        active_tx.send_replace(true);
        ends.recv().await.expect("a session opened");
        assert!(data.recv().await.is_some(), "the session's packets go out");
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        stop.cancel();
        task.await.expect("ends");
    }
}
