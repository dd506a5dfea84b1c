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

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
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
                let head = crate::wire::netceptor_head(p.len());
                if data.send((head, p)).await.is_err() {
                    return true;
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

/// Drops what the peer sends until the link ends.
async fn drain(inbound: &mut mpsc::Receiver<Bytes>, stop: &CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            p = inbound.recv() => if p.is_none() { return },
        }
    }
}
