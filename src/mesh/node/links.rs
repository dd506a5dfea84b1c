//! The links of a [`Node`]: the one accept loop of each listener (handshake gate, first-
//! bytes hand-over to the netceptor plane, TLS, the link task), the dial loop of each
//! configured peer (jittered redial, reset when the peer returns), and `join` for clients.
//! Kept apart from the node handle so the link life cycle reads in one place.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::logging::Throttle;
use crate::mesh::backoff::Backoff;
use crate::mesh::driver::Event;
use crate::mesh::foreign::{Foreign, Sniffed};
use crate::mesh::gate::{HandshakeGate, Slot};
use crate::mesh::link::{self, LinkError};
use crate::transport::{self, Listener, PeerUrl};
use crate::wire::NodeId;

impl Node {
    /// Serves incoming links on `listener` until the node stops or the handle is stopped.
    pub fn listen(&self, listener: Listener, cost: f64) -> LinkHandle {
        self.listen_with(listener, cost, true, None)
    }

    /// As [`Node::listen`]; `relays = false`: the peers accepted here are never relays.
    /// With `foreign`, connections whose first bytes are not this protocol's preface are
    /// handed to it (Go Receptor peers on the same port).
    pub fn listen_with(
        &self,
        listener: Listener,
        cost: f64,
        relays: bool,
        foreign: Option<Foreign>,
    ) -> LinkHandle {
        let node = self.clone();
        let stop = self.inner.cancel.child_token();
        let handle = LinkHandle { stop: stop.clone() };
        self.inner
            .tracker
            .spawn(async move { node.accept_loop(listener, cost, relays, stop, foreign).await });
        handle
    }

    async fn accept_loop(
        self,
        listener: Listener,
        cost: f64,
        relays: bool,
        stop: CancellationToken,
        foreign: Option<Foreign>,
    ) {
        let gate = HandshakeGate::new(&self.inner.limits);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => r,
            };
            let (io, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    sleep_or_stop(backoff.next_delay(), &stop).await;
                    continue;
                }
            };
            backoff.reset();
            let permit = match gate.enter(addr.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    crate::metrics::global().handshake_refused(why.label());
                    static REFUSED: Throttle = Throttle::new(Duration::from_secs(10), 3);
                    if let Some(suppressed) = REFUSED.allow() {
                        tracing::warn!(%addr, suppressed, "connection closed before its handshake: {why}");
                    }
                    continue;
                }
            };
            let (node, stop, foreign) = (self.clone(), stop.clone(), foreign.clone());
            self.inner.tracker.spawn(async move {
                let secured = tokio::time::timeout(node.inner.limits.handshake_timeout, io.secure()).await;
                if !matches!(secured, Ok(Ok(_))) {
                    crate::metrics::global().handshake_refused("tls");
                }
                let (io, identity) = match secured {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return log_dropped(&addr, &e),
                    Err(_) => return log_dropped(&addr, &"TLS handshake timed out"),
                };
                // Another protocol on this port: its peers are told apart by their first bytes.
                let io = match &foreign {
                    None => io,
                    Some(f) => match f
                        .sniff(io, addr, cost, identity.clone(), node.inner.limits.handshake_timeout)
                        .await
                    {
                        Sniffed::Native(io) => io,
                        Sniffed::Taken => return,
                        Sniffed::Silent => return log_dropped(&addr, &"no preface"),
                    },
                };
                let mut seen = None;
                let r = node
                    .connection(
                        Conn { io, identity, cost, relays, dialed_by_me: false, stop },
                        &mut seen,
                        Some(permit),
                        None,
                    )
                    .await;
                log_link_end(&addr.to_string(), seen.as_ref(), r);
            });
        }
    }

    /// Keeps a link to `url` up, redialing with jittered exponential backoff, until the
    /// node stops or the handle is stopped.
    pub fn add_peer(&self, url: PeerUrl, cost: f64) -> LinkHandle {
        let node = self.clone();
        let stop = self.inner.cancel.child_token();
        let handle = LinkHandle { stop: stop.clone() };
        self.inner.tracker.spawn(async move { node.dial_loop(url, cost, stop).await });
        handle
    }

    async fn dial_loop(self, url: PeerUrl, cost: f64, stop: CancellationToken) {
        let mut backoff = Backoff::new(REDIAL_BASE, REDIAL_MAX);
        let mut peer: Option<NodeId> = None;
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            if let Some(p) = &peer {
                self.wait_unlinked(p, &stop).await;
            }
            let dialed = tokio::select! {
                _ = stop.cancelled() => break,
                r = transport::dial(&url, self.inner.opts.dial_timeout, self.inner.opts.tls.as_ref()) => r,
            };
            match dialed {
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures % 10 == 0 {
                        tracing::warn!(peer = %url, error = %e, attempts = failures, "cannot reach peer");
                    }
                }
                Ok((io, identity)) => {
                    let started = Instant::now();
                    let r = self
                        .connection(
                            Conn { io, identity, cost, relays: true, dialed_by_me: true, stop: stop.clone() },
                            &mut peer,
                            None,
                            None,
                        )
                        .await;
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff.reset();
                    }
                    failures = 0;
                    log_link_end(&url.to_string(), peer.as_ref(), r);
                }
            }
            let delay = backoff.next_delay();
            if self.peer_returns(peer.as_ref(), delay, &stop).await {
                backoff.reset();
            }
        }
    }

    /// Sleeps `delay` before a redial, cut short when `peer` (not reachable now) becomes
    /// reachable through another path: it is back, so redial within [`REDIAL_BASE`]
    /// (jittered). Whether it did.
    async fn peer_returns(&self, peer: Option<&NodeId>, delay: Duration, stop: &CancellationToken) -> bool {
        let mut topo = self.topology();
        let gone = peer.filter(|p| !topo.borrow().reachable.contains(*p));
        let Some(p) = gone else {
            sleep_or_stop(delay, stop).await;
            return false;
        };
        let back = tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => false,
            r = topo.wait_for(|t| t.reachable.contains(p)) => r.is_ok(),
        };
        if back {
            // Every node that lost the same peer learns of its return at the same moment:
            // spread their redials over [0, REDIAL_BASE] so they do not arrive in lockstep.
            let spread = rand::Rng::gen_range(&mut rand::thread_rng(), Duration::ZERO..=REDIAL_BASE);
            sleep_or_stop(spread, stop).await;
        }
        back
    }

    async fn wait_unlinked(&self, peer: &NodeId, stop: &CancellationToken) {
        let mut topo = self.topology();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = topo.wait_for(|t| !t.linked.contains(peer)) => {}
        }
    }

    /// Handshakes and runs one connection; reports the peer ID once the link is up.
    async fn connection(
        &self,
        conn: Conn,
        seen: &mut Option<NodeId>,
        permit: Option<Slot>,
        on_up: Option<oneshot::Sender<Result<NodeId, LinkError>>>,
    ) -> Result<(), LinkError> {
        let Conn { io, identity, cost, relays, dialed_by_me, stop } = conn;
        let ctx = self.ctx(stop);
        let id = self.inner.next_link.fetch_add(1, Ordering::Relaxed);
        let est = link::handshake(&ctx, id, io, cost, relays, dialed_by_me, seen, identity.as_ref()).await;
        if let (Some(slot), Ok(_)) = (permit, &est) {
            slot.admitted();
        }
        let est = match est {
            Ok(est) => est,
            Err(e) => {
                crate::metrics::global().handshake_refused(e.metric_reason());
                let _ = self.inner.events.send(Event::Down { link: id }).await;
                if let Some(tx) = on_up {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
                return Err(e);
            }
        };
        if let Some(tx) = on_up {
            let _ = tx.send(Ok(est.peer.node_id.clone()));
        }
        let r = link::run(&ctx, est).await;
        let _ = self.inner.events.send(Event::Down { link: id }).await;
        r
    }

    /// Joins the mesh through `url` once (client nodes): returns when the peer has sent
    /// its whole routing database. The link then lives until the node stops.
    pub async fn join(&self, url: &PeerUrl, timeout: Duration) -> Result<NodeId, JoinError> {
        let (io, identity) = transport::dial(url, self.inner.opts.dial_timeout, self.inner.opts.tls.as_ref())
            .await
            .map_err(JoinError::Transport)?;
        let (tx, rx) = oneshot::channel();
        let node = self.clone();
        self.inner.tracker.spawn(async move {
            let mut seen = None;
            let r = node
                .connection(
                    Conn {
                        io,
                        identity,
                        cost: 1.0,
                        relays: true,
                        dialed_by_me: true,
                        stop: node.cancel_token(),
                    },
                    &mut seen,
                    None,
                    Some(tx),
                )
                .await;
            log_link_end("client link", seen.as_ref(), r);
        });
        let peer = match rx.await {
            Ok(Ok(peer)) => peer,
            Ok(Err(source)) => return Err(JoinError::Link { url: url.clone(), source }),
            Err(_) => return Err(JoinError::Link { url: url.clone(), source: LinkError::Shutdown }),
        };
        let mut topo = self.topology();
        let synced = tokio::time::timeout(timeout, topo.wait_for(|t| t.synced.contains(&peer))).await;
        match synced {
            Ok(Ok(_)) => Ok(peer),
            _ => Err(JoinError::SyncTimeout { url: url.clone(), timeout }),
        }
    }
}

/// Connection-level failures of strangers are frequent under attack: throttled.
fn log_dropped(addr: &std::net::SocketAddr, e: &dyn std::fmt::Display) {
    static DROPPED: Throttle = Throttle::new(Duration::from_secs(10), 5);
    if let Some(suppressed) = DROPPED.allow() {
        tracing::warn!(%addr, suppressed, "dropped connection: {e}");
    }
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

fn log_link_end(addr: &str, peer: Option<&NodeId>, r: Result<(), LinkError>) {
    static WARNED: Throttle = Throttle::new(Duration::from_secs(10), 10);
    let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        if let Some(suppressed) = WARNED.allow() {
            tracing::warn!(%addr, %peer, suppressed, "{what}: {e}");
        }
    };
    match r {
        Ok(()) | Err(LinkError::Shutdown) => tracing::debug!(%addr, %peer, "link closed"),
        Err(e @ (LinkError::Refused(_) | LinkError::Refusing(_))) => warn("link refused", &e),
        Err(
            e @ (LinkError::BadPreface
            | LinkError::Codec(_)
            | LinkError::Protocol(_)
            | LinkError::Flood(_)
            | LinkError::Forged(_)),
        ) => warn("dropped connection", &e),
        Err(LinkError::Io(e)) if is_tls_alert(&e) => warn("peer refused TLS", &e),
        Err(e) => tracing::info!(%addr, %peer, "link ended: {e}"),
    }
}

/// Whether an I/O error is the peer's TLS alert (it refused our certificate).
fn is_tls_alert(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::AlertReceived(_)))
}
