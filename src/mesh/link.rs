//! One link's life: preface and handshake, then a reader and a writer task.
//!
//! Garbage, an oversized frame or a silent peer ends this link only. Handshake results go
//! to the driver, which decides admission; routed frames go straight to the router.
//!
//! Liveness: any frame received proves the peer alive; a link that sends nothing else for
//! [`KEEPALIVE_FRACTION`] of the idle timeout sends a keepalive on its priority lane. A peer
//! is presumed dead only when nothing arrived for the idle timeout *and* this process was
//! not itself starved of CPU meanwhile (a late wake-up grants one more grace period).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::budget::{TokenBucket, WindowCount};
use super::driver::Event;
use super::lane::AdvertLane;
use super::origin::{OriginCheck, OriginError};
use super::router::{LinkTx, Router};
use super::state::{Admission, LinkId};
use crate::limits::Limits;
use crate::logging::Throttle;
use crate::transport::BoxedIo;
use crate::wire::{Frame, FrameCodec, Hello, PREFACE, PROTOCOL_VERSION, Reason, codec::CodecError};

const CTRL_QUEUE: usize = 1024;
/// Keepalives go out after this fraction of the idle timeout without other frames (2 s of
/// the default 5 s: three keepalives may be late or lost before the link is presumed dead).
pub const KEEPALIVE_FRACTION: (u32, u32) = (2, 5);
const DATA_QUEUE: usize = 64;

/// Everything a link task needs from its node.
pub(crate) struct LinkCtx {
    /// Node IDs allowed to link with us (empty: any).
    pub(crate) allowed_peers: Arc<Vec<crate::wire::NodeId>>,
    pub(crate) router: Arc<Router>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) hello: Hello,
    pub(crate) cancel: CancellationToken,
    pub(crate) limits: Arc<Limits>,
    /// What an advertisement must prove before it reaches the driver.
    pub(crate) origins: OriginCheck,
    /// `[mesh] relays`: which peers may relay on links with this node.
    pub(crate) relays: Arc<super::relay::RelayPolicy>,
    /// Encoded bytes of advertisements on their way to the driver, from all links
    /// ([`ADVERTS_IN_FLIGHT`]): a reader waits for room, so a flood queues on the
    /// sockets, not in memory.
    pub(crate) adverts_in_flight: Arc<tokio::sync::Semaphore>,
    /// The netceptor plane, when this node carries its packets (`super::carry`).
    pub(crate) carrier: Option<super::carry::Carrier>,
}

/// Most encoded bytes of advertisements decoded and waiting for the driver at once, over
/// all links (their decoded form takes about three times as much).
pub(crate) const ADVERTS_IN_FLIGHT: usize = 2 * 1024 * 1024;

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("not a receptord peer (bad preface)")]
    BadPreface,
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("peer refused the link: {0}")]
    Refused(String),
    #[error("refused the peer: {0}")]
    Refusing(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no traffic for {0:?}; peer presumed dead")]
    Idle(Duration),
    #[error("advertisement flood: {0} advertisements over limits.advert_rate dropped within a minute")]
    Flood(u32),
    #[error("forged advertisements: {0} within a minute (limits.forged_adverts_to_close)")]
    Forged(u32),
    #[error("node is shutting down")]
    Shutdown,
}

impl LinkError {
    /// The `reason` label this refusal is counted under in `receptord_handshake_refused_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            LinkError::BadPreface => "bad_preface",
            LinkError::HandshakeTimeout => "timeout",
            LinkError::Version(_) => "version",
            LinkError::Refused(_) => "refused_by_peer",
            LinkError::Refusing(_) => "refused",
            LinkError::Protocol(_) | LinkError::Codec(_) => "protocol",
            LinkError::Io(_) | LinkError::Idle(_) => "io",
            LinkError::Flood(_) => "flood",
            LinkError::Forged(_) => "forged",
            LinkError::Shutdown => "shutdown",
        }
    }
}

/// The outcome of a handshake: who the peer is, and where its frames come from.
pub(crate) struct Established {
    pub(crate) link: LinkId,
    pub(crate) peer: Hello,
    /// The cost this side assigns to the link.
    cost: f64,
    /// The link showed the peer is not a relay ([`super::relay::not_relay`]).
    not_relay: bool,
    reader: FramedRead<ReadHalf<BoxedIo>, FrameCodec>,
    writer: WriteHalf<BoxedIo>,
}

/// Runs the handshake on a fresh connection and asks the driver to admit the peer.
/// `relays`: the listener (or peer entry) lets peers linked through it relay.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn handshake(
    ctx: &LinkCtx,
    link: LinkId,
    io: BoxedIo,
    cost: f64,
    relays: bool,
    dialed_by_me: bool,
    seen: &mut Option<crate::wire::NodeId>,
    identity: Option<&crate::transport::PeerIdentity>,
) -> Result<Established, LinkError> {
    let (mut rd, mut wr) = tokio::io::split(super::linkio::count_io(link, io));
    let deadline = Instant::now() + ctx.limits.handshake_timeout;
    let mut hello = ctx.hello.clone();
    hello.cost = cost;
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(&Frame::Hello(hello).encode());
    wr.write_all(&out).await?;
    let mut preface = [0u8; 4];
    within(deadline, rd.read_exact(&mut preface)).await??;
    if preface != PREFACE {
        return Err(LinkError::BadPreface);
    }
    let mut reader = FramedRead::new(rd, FrameCodec::default());
    let peer = match within(deadline, reader.next()).await? {
        Some(Ok(Frame::Hello(h))) => h,
        Some(Ok(other)) => return Err(LinkError::Protocol(format!("expected hello, got {}", other.kind()))),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(LinkError::Protocol("connection closed during handshake".into())),
    };
    *seen = Some(peer.node_id.clone());
    if dialed_by_me {
        crate::metrics::global().dialed(peer.node_id.as_str());
    }
    if peer.version != PROTOCOL_VERSION {
        let _ = wr.write_all(&Frame::Reject { reason: version_reason(peer.version).into() }.encode()).await;
        return Err(LinkError::Version(peer.version));
    }
    if let Some(reason) = vet_peer(ctx, &peer, identity) {
        let _ = wr.write_all(&Frame::Reject { reason: reason.as_str().into() }.encode()).await;
        return Err(LinkError::Refusing(reason));
    }
    let not_relay = super::relay::not_relay(&peer, identity, relays, &ctx.relays);
    let (reply, verdict) = oneshot::channel();
    let ev = Event::Admit { link, hello: peer.clone(), cost, dialed_by_me, not_relay, reply };
    ctx.events.send(ev).await.map_err(|_| LinkError::Shutdown)?;
    match verdict.await.map_err(|_| LinkError::Shutdown)? {
        Admission::Admit => wr.write_all(&Frame::Admit.encode()).await?,
        Admission::Reject(reason) => {
            let _ = wr.write_all(&Frame::Reject { reason: reason.as_str().into() }.encode()).await;
            return Err(LinkError::Refusing(reason));
        }
    }
    match within(deadline, reader.next()).await? {
        Some(Ok(Frame::Admit)) => Ok(Established { link, peer, cost, not_relay, reader, writer: wr }),
        Some(Ok(Frame::Reject { reason })) => Err(LinkError::Refused(reason.into_string())),
        Some(Ok(other)) => Err(LinkError::Protocol(format!("expected admit, got {}", other.kind()))),
        Some(Err(e)) => Err(e.into()),
        None => Err(LinkError::Protocol("connection closed during handshake".into())),
    }
}

/// Checks the announced node ID against the peer's certificate and `allowed_peers`.
fn vet_peer(
    ctx: &LinkCtx,
    peer: &Hello,
    identity: Option<&crate::transport::PeerIdentity>,
) -> Option<String> {
    let id = peer.node_id.as_str();
    // A client session (NODE~TAG) speaks for NODE: only a short-lived client may be one,
    // and its certificate must name NODE. Daemons keep unique IDs of their own.
    let named = peer.node_id.principal();
    if peer.node_id.is_session() && peer.caps & crate::wire::caps::EPHEMERAL == 0 {
        return Some(format!("node id {id} is a client session ID, but the peer is not a client"));
    }
    if identity.is_some_and(|i| !i.certified) {
        if !crate::identity::may_join_uncertified(&peer.node_id) {
            return Some(crate::identity::uncertified_refusal(&peer.node_id));
        }
    } else if let Some(identity) = identity {
        if !identity.node_ids.iter().any(|n| n == named.as_str()) {
            return Some(format!(
                "the peer announces node id {id} but its certificate names {:?}",
                identity.node_ids
            ));
        }
    }
    if !ctx.allowed_peers.is_empty() && !ctx.allowed_peers.contains(&named) {
        return Some(format!("node id {id} is not in allowed_peers of {}", ctx.hello.node_id));
    }
    None
}

fn version_reason(theirs: u16) -> String {
    format!("protocol version {theirs} is not supported (this node speaks {PROTOCOL_VERSION})")
}

async fn within<F: std::future::Future>(deadline: Instant, f: F) -> Result<F::Output, LinkError> {
    tokio::time::timeout_at(deadline, f).await.map_err(|_| LinkError::HandshakeTimeout)
}

/// Runs an established link until it fails, the peer leaves, or the node stops.
pub(crate) async fn run(ctx: &LinkCtx, est: Established) -> Result<(), LinkError> {
    let Established { link, peer, cost, not_relay, mut reader, writer } = est;
    super::linkio::link_up(link, &peer);
    let idle = Duration::from_millis(u64::from(ctx.hello.idle_timeout_ms.max(peer.idle_timeout_ms)));
    let (ctrl_tx, ctrl_rx) = mpsc::channel(CTRL_QUEUE);
    let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
    let stop = ctx.cancel.child_token();
    let tx = LinkTx {
        peer: peer.node_id.clone(),
        ctrl: ctrl_tx,
        data: data_tx,
        adverts: Arc::new(AdvertLane::default()),
        stop: stop.clone(),
        stall: ctx.limits.stall_timeout,
        relay: !not_relay,
    };
    let up = Event::Up { link, tx: tx.clone(), peer: peer.clone(), stop: stop.clone() };
    ctx.events.send(up).await.map_err(|_| LinkError::Shutdown)?;
    let lanes = Lanes { ctrl: ctrl_rx, adverts: tx.adverts.clone(), data: data_rx };
    let keepalive = idle * KEEPALIVE_FRACTION.0 / KEEPALIVE_FRACTION.1;
    let write_task = tokio::spawn(write_loop(writer, lanes, keepalive, stop.clone()));
    // Netceptor packets, when both ends offered to carry them.
    let (carried, carry_task) = match &ctx.carrier {
        Some(c) if peer.caps & crate::wire::caps::NETCEPTOR != 0 => {
            let (in_tx, in_rx) = mpsc::channel(super::carry::INBOUND_QUEUE);
            // Both ends must agree on the cost (netceptor closes links whose ends do not).
            let cl = super::carry::CarriedLink { peer: peer.node_id.clone(), cost: cost.max(peer.cost) };
            let task = tokio::spawn(super::carry::run(c.clone(), cl, in_rx, tx.data.clone(), stop.clone()));
            (Some(in_tx), Some(task))
        }
        _ => (None, None),
    };
    let result = read_loop(ctx, link, &peer, &tx, carried.as_ref(), &mut reader, idle, &stop).await;
    if let Err(
        e @ (LinkError::Flood(_) | LinkError::Forged(_) | LinkError::Protocol(_) | LinkError::Codec(_)),
    ) = &result
    {
        // Tell the peer why, if its socket still takes bytes (the writer gives up quickly).
        let reason = Reason::new(e.to_string());
        let _ = tx.ctrl.try_send(Frame::Goodbye { reason }.encode());
    }
    stop.cancel();
    let _ = write_task.await;
    if let Some(t) = carry_task {
        let _ = t.await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    ctx: &LinkCtx,
    link: LinkId,
    peer: &Hello,
    tx: &LinkTx,
    carried: Option<&mpsc::Sender<Bytes>>,
    reader: &mut FramedRead<ReadHalf<BoxedIo>, FrameCodec>,
    idle: Duration,
    stop: &CancellationToken,
) -> Result<(), LinkError> {
    let l = &ctx.limits;
    let mut adverts = TokenBucket::new(l.advert_rate, l.advert_burst, l.advert_burst, Instant::now());
    let mut drops = WindowCount::new(Duration::from_secs(60), l.advert_drops_to_close);
    let mut forged = WindowCount::new(Duration::from_secs(60), l.forged_adverts_to_close);
    let mut last_rx = Instant::now();
    let mut graced = false;
    // One timer for the link's life, re-armed only when it fires (not at every frame).
    let silence = tokio::time::sleep(idle);
    tokio::pin!(silence);
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(LinkError::Shutdown),
            // A frame already waiting wins over the timer: it proves the peer alive.
            r = reader.next() => r,
            _ = &mut silence => {
                let now = Instant::now();
                match presumed_dead(last_rx, silence.deadline(), now, idle, &mut graced) {
                    Some(next) => {
                        silence.as_mut().reset(next);
                        continue;
                    }
                    None => return Err(LinkError::Idle(idle)),
                }
            }
        };
        last_rx = Instant::now();
        graced = false;
        let frame = match next {
            None => return Ok(()),
            Some(r) => r?,
        };
        if let Frame::Lsa(lsa) = &frame {
            let now = Instant::now();
            if !adverts.take(reader.decoder().last_len() as u64, now) {
                crate::metrics::global().advert_dropped("rate");
                if drops.record(now) {
                    return Err(LinkError::Flood(l.advert_drops_to_close));
                }
                static DROPPED: Throttle = Throttle::new(Duration::from_secs(10), 3);
                if let Some(suppressed) = DROPPED.allow() {
                    tracing::warn!(peer = %tx.peer, origin = %lsa.origin, suppressed,
                        "advertisement dropped: the link exceeds limits.advert_rate");
                }
                continue;
            }
            if let Err(e) = ctx.origins.check(peer, lsa) {
                crate::metrics::global().advert_dropped(e.label());
                static REFUSED: Throttle = Throttle::new(Duration::from_secs(10), 5);
                if let Some(suppressed) = REFUSED.allow() {
                    tracing::warn!(peer = %tx.peer, link, origin = %lsa.origin, suppressed,
                        "advertisement dropped: {e}");
                }
                if charged(&e, peer, lsa) && forged.record(now) {
                    return Err(LinkError::Forged(l.forged_adverts_to_close));
                }
                continue;
            }
        }
        // Every wait below (the driver, another link's queue) gives way when this link is
        // closed, so a link told to close never hangs on a full queue.
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(LinkError::Shutdown),
            r = handle(ctx, link, tx, carried, frame) => {
                if r? {
                    return Ok(());
                }
            }
        }
    }
}

/// Whether a refused advertisement counts towards closing its link: it speaks for
/// another node. A leaf relaying (a client syncing what it learned) and a peer's own
/// advertisement that fails (a client without `[tls]` on a TLS node's plain-TCP listener,
/// a node whose certificate does not name it) are only dropped: they harm no one else.
fn charged(e: &OriginError, peer: &Hello, lsa: &crate::wire::Lsa) -> bool {
    !matches!(e, OriginError::NotPeer { .. }) && lsa.origin != peer.node_id
}

/// The silence timer fired at `now` (it was due at `due`): `None` when the peer is
/// presumed dead, else when to look again. Frames since the timer was armed push the
/// deadline out; a wake-up late by more than a quarter of `idle` means this process was
/// starved (a loaded machine), which is no evidence against the peer: half of `idle` more,
/// once per silence.
fn presumed_dead(
    last_rx: Instant,
    due: Instant,
    now: Instant,
    idle: Duration,
    graced: &mut bool,
) -> Option<Instant> {
    if last_rx + idle > now {
        return Some(last_rx + idle);
    }
    if !*graced && now.duration_since(due) > idle / 4 {
        *graced = true;
        return Some(now + idle / 2);
    }
    None
}

/// Handles one frame after the handshake; true when the peer said goodbye.
async fn handle(
    ctx: &LinkCtx,
    link: LinkId,
    tx: &LinkTx,
    carried: Option<&mpsc::Sender<Bytes>>,
    frame: Frame,
) -> Result<bool, LinkError> {
    match frame {
        Frame::Keepalive => {}
        // Only where both hellos offered it (otherwise unexpected, below); a full queue
        // drops the packet, as a netceptor link does.
        Frame::Netceptor(p) if carried.is_some() => {
            if let Some(c) = carried {
                let _ = c.try_send(p);
            }
        }
        Frame::Routed(r) => ctx.router.route_from(r, tx).await,
        Frame::Lsa(lsa) => {
            let len = u32::try_from(lsa.encoded_len()).unwrap_or(u32::MAX).min(ADVERTS_IN_FLIGHT as u32);
            let held = ctx
                .adverts_in_flight
                .clone()
                .acquire_many_owned(len)
                .await
                .map_err(|_| LinkError::Shutdown)?;
            send(ctx, Event::Lsa { link, lsa, held }).await?
        }
        Frame::SyncDone => send(ctx, Event::SyncDone { link }).await?,
        Frame::Goodbye { reason } => {
            tracing::debug!(%reason, "peer said goodbye");
            return Ok(true);
        }
        other => return Err(LinkError::Protocol(format!("unexpected {} after handshake", other.kind()))),
    }
    Ok(false)
}

async fn send(ctx: &LinkCtx, ev: Event) -> Result<(), LinkError> {
    ctx.events.send(ev).await.map_err(|_| LinkError::Shutdown)
}

/// Frames are gathered in this buffer so one write carries several of them (on loopback
/// and fast links the number of syscalls, not copying, limits throughput).
const WRITE_BUFFER: usize = 256 * 1024;
/// Advertisements written per flush at most, so a database dump is paced in batches
/// between stream data.
const ADVERTS_PER_BATCH: usize = 64;
/// How long a closing link may spend telling its peer why.
const FAREWELL: Duration = Duration::from_secs(1);

/// What a link's writer drains, by priority: control frames, advertisements, stream data.
struct Lanes {
    ctrl: mpsc::Receiver<Bytes>,
    adverts: Arc<AdvertLane>,
    data: mpsc::Receiver<(Bytes, Bytes)>,
}

async fn write_loop(
    wr: WriteHalf<BoxedIo>,
    mut lanes: Lanes,
    keepalive: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut wr = BufWriter::with_capacity(WRITE_BUFFER, wr);
    // A peer that stopped reading blocks our writes: closing the link must not wait for it.
    let result = tokio::select! {
        r = pump(&mut wr, &mut lanes, keepalive) => r,
        _ = stop.cancelled() => Ok(()),
    };
    // Drain control frames (a final goodbye, resets) so the peer learns why we left.
    let farewell = async {
        while let Ok(f) = lanes.ctrl.try_recv() {
            wr.write_all(&f).await?;
        }
        wr.flush().await?;
        wr.shutdown().await
    };
    let _ = tokio::time::timeout(FAREWELL, farewell).await;
    result
}

async fn pump(
    wr: &mut BufWriter<WriteHalf<BoxedIo>>,
    lanes: &mut Lanes,
    keepalive: Duration,
) -> std::io::Result<()> {
    let ka = Frame::Keepalive.encode();
    let mut ticker = tokio::time::interval(keepalive.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (head, body) = tokio::select! {
            biased;
            Some(f) = lanes.ctrl.recv() => (f, Bytes::new()),
            f = lanes.adverts.next() => (f, Bytes::new()),
            Some(f) = lanes.data.recv() => f,
            _ = ticker.tick() => (ka.clone(), Bytes::new()),
            else => return Ok(()),
        };
        let goodbye = is_goodbye(&head);
        wr.write_all(&head).await?;
        wr.write_all(&body).await?;
        // Batch whatever else is queued before paying for a flush.
        let mut adverts = 0;
        loop {
            if let Ok(f) = lanes.ctrl.try_recv() {
                wr.write_all(&f).await?;
            } else if let Some(f) = (adverts < ADVERTS_PER_BATCH).then(|| lanes.adverts.pop()).flatten() {
                adverts += 1;
                wr.write_all(&f).await?;
            } else if let Ok((h, b)) = lanes.data.try_recv() {
                wr.write_all(&h).await?;
                wr.write_all(&b).await?;
            } else {
                break;
            }
        }
        wr.flush().await?;
        ticker.reset();
        if goodbye {
            return Ok(());
        }
    }
}

fn is_goodbye(frame: &Bytes) -> bool {
    frame.len() > 4 && frame[4] == 0x07
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_death_only_when_this_process_was_awake_to_see_it() {
        let idle = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut graced = false;
        // A frame arrived after the timer was armed: look again later.
        let rx = t0 + Duration::from_secs(3);
        assert_eq!(presumed_dead(rx, t0 + idle, t0 + idle, idle, &mut graced), Some(rx + idle));
        // Silent for the whole idle timeout, timer on time: dead.
        assert_eq!(presumed_dead(t0, t0 + idle, t0 + idle, idle, &mut graced), None);
        // Timer 3 s late (this process was starved): one grace period, then dead.
        let late = t0 + idle + Duration::from_secs(3);
        assert_eq!(presumed_dead(t0, t0 + idle, late, idle, &mut graced), Some(late + idle / 2));
        let later = late + idle;
        assert_eq!(presumed_dead(t0, late + idle / 2, later, idle, &mut graced), None);
    }
}
