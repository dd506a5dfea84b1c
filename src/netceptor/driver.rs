//! The task that owns the netceptor state machine: feeds it link events, commands and
//! timer ticks, and carries out its actions (packets onto link queues, links closed,
//! datagrams to local services). Nothing else touches [`Netceptor`].

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::Outbox;
use super::proto::data::SendError;
use super::proto::{Action, LinkId, LocalService, Netceptor};
use super::status::{LinkStatus, NetStatus};

/// A datagram handed to a local service.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from_node: String,
    pub from_service: String,
    pub payload: Bytes,
}

/// What link tasks and the node handle tell the driver.
pub(crate) enum Cmd {
    Opened {
        link: LinkId,
        cost: f64,
        out: Outbox,
        close: CancellationToken,
        remote: String,
        dialed: bool,
        cert: Option<Vec<String>>,
        /// Carried over a native link (`crate::mesh::carry`): its peer, proven by that
        /// link, may relay claims about reserved IDs.
        carried: bool,
    },
    Packet {
        link: LinkId,
        bytes: Bytes,
    },
    Closed {
        link: LinkId,
        /// What ended it, when the link task saw it (the peer closed, an I/O error); the
        /// driver's own closes are logged with their reason where they are decided.
        cause: Option<String>,
    },
    Services(Vec<LocalService>),
    Status(oneshot::Sender<NetStatus>),
    /// The advertised ConnType of `node:service`.
    ConnType {
        node: String,
        service: String,
        reply: oneshot::Sender<Option<u8>>,
    },
    Bind {
        service: String,
        tx: mpsc::Sender<Datagram>,
    },
    Unbind {
        service: String,
    },
    Send {
        from: String,
        node: String,
        service: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    /// A datagram to send without waiting for the outcome (QUIC packets).
    Datagram {
        from: String,
        node: String,
        service: String,
        payload: Bytes,
    },
    /// A traceroute probe (a ping starting with `hops` hops).
    Probe {
        from: String,
        node: String,
        hops: u8,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    /// The node IDs the native plane holds.
    Reserved(std::collections::BTreeSet<String>),
    /// Wait until `node` is reachable (or the reply is dropped at shutdown).
    Linked {
        peer: String,
        reply: oneshot::Sender<()>,
    },
}

struct LinkIo {
    out: Outbox,
    close: CancellationToken,
    remote: String,
    dialed: bool,
    peer: Option<String>,
    carried: bool,
}

pub(crate) struct Driver {
    pub state: Netceptor,
    pub cmds: mpsc::Receiver<Cmd>,
    pub cancel: CancellationToken,
    pub fatal: watch::Sender<Option<String>>,
    /// The nodes with a route from here, published when the routes change.
    pub routable: watch::Sender<std::sync::Arc<std::collections::BTreeSet<String>>>,
    /// Whether some link is up (native links then carry sessions unasked).
    pub active: watch::Sender<bool>,
}

impl Driver {
    pub async fn run(mut self) {
        let mut links: HashMap<LinkId, LinkIo> = HashMap::new();
        let mut bound: HashMap<String, mpsc::Sender<Datagram>> = HashMap::new();
        let mut waiting: Vec<(String, oneshot::Sender<()>)> = Vec::new();
        let mut published = 0u64;
        // The drop counters last added to the metrics.
        let mut counted = super::proto::Drops::default();
        loop {
            let deadline = self.state.next_deadline();
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => self.state.tick(Instant::now()),
                cmd = self.cmds.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd, &mut links, &mut bound, &mut waiting);
                }
            }
            while let Some(a) = self.state.poll_action() {
                self.act(a, &mut links, &mut bound);
            }
            let active = self.state.established().next().is_some();
            self.active.send_if_modified(|a| std::mem::replace(a, active) != active);
            if self.state.drops != counted {
                let m = crate::metrics::global();
                for ((reason, now), (_, then)) in
                    self.state.drops.by_reason().into_iter().zip(counted.by_reason())
                {
                    m.netceptor_dropped(reason, now.saturating_sub(then));
                }
                counted = self.state.drops.clone();
            }
            if self.state.routes_generation() != published {
                published = self.state.routes_generation();
                let set = self.state.routes().keys().cloned().collect();
                self.routable.send_replace(std::sync::Arc::new(set));
            }
            if !waiting.is_empty() {
                let st = &self.state;
                let (ready, rest): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut waiting).into_iter().partition(|(p, _)| st.next_hop(p).is_some());
                waiting = rest;
                for (_, tx) in ready {
                    let _ = tx.send(());
                }
            }
        }
        for l in links.values() {
            l.close.cancel();
        }
    }

    fn command(
        &mut self,
        cmd: Cmd,
        links: &mut HashMap<LinkId, LinkIo>,
        bound: &mut HashMap<String, mpsc::Sender<Datagram>>,
        waiting: &mut Vec<(String, oneshot::Sender<()>)>,
    ) {
        let now = Instant::now();
        match cmd {
            Cmd::Opened { link, cost, out, close, remote, dialed, cert, carried } => {
                links.insert(link, LinkIo { out, close, remote, dialed, peer: None, carried });
                self.state.link_opened_with(now, link, cost, cert);
                if carried {
                    self.state.mark_carried(link);
                }
            }
            Cmd::Reserved(ids) => self.state.set_reserved(now, ids),
            Cmd::Probe { from, node, hops, reply } => {
                let _ = reply.send(self.state.probe(now, &from, &node, hops));
            }
            Cmd::Packet { link, bytes } => self.state.link_packet(now, link, &bytes),
            Cmd::Closed { link, cause } => {
                if let Some(l) = links.remove(&link) {
                    match (l.peer, cause) {
                        (Some(peer), Some(cause)) => {
                            tracing::info!(%peer, remote = %l.remote, %cause, "netceptor link down")
                        }
                        (Some(peer), None) => {
                            tracing::info!(%peer, remote = %l.remote, "netceptor link down")
                        }
                        (None, _) => {}
                    }
                }
                self.state.link_closed(now, link);
            }
            Cmd::Services(s) => self.state.set_services(now, s),
            Cmd::Status(reply) => {
                let _ = reply.send(self.status(links));
            }
            Cmd::ConnType { node, service, reply } => {
                let _ = reply.send(self.state.conn_type(&node, &service));
            }
            Cmd::Bind { service, tx } => {
                self.state.bind(&service);
                bound.insert(service, tx);
            }
            Cmd::Unbind { service } => {
                self.state.unbind(&service);
                bound.remove(&service);
            }
            Cmd::Send { from, node, service, payload, reply } => {
                let _ = reply.send(self.state.send_datagram(now, &from, &node, &service, payload));
            }
            Cmd::Linked { peer, reply } => waiting.push((peer, reply)),
            Cmd::Datagram { from, node, service, payload } => {
                let _ = self.state.send_datagram(now, &from, &node, &service, payload);
            }
        }
    }

    fn act(
        &mut self,
        a: Action,
        links: &mut HashMap<LinkId, LinkIo>,
        bound: &mut HashMap<String, mpsc::Sender<Datagram>>,
    ) {
        match a {
            Action::Send { link, packet } => {
                if let Some(l) = links.get(&link) {
                    // Datagram semantics: a link whose queue is full loses the packet (QUIC
                    // retransmits; routing updates repeat every 10 s).
                    if !l.out.offer(packet) {
                        self.state.drops.link_queue += 1;
                    }
                }
            }
            Action::Close { link, reason } => {
                if let Some(l) = links.get(&link) {
                    tracing::info!(remote = %l.remote, peer = ?l.peer, %reason, "netceptor link closed");
                    l.close.cancel();
                }
            }
            Action::Up { link, peer } => {
                if let Some(l) = links.get_mut(&link) {
                    tracing::info!(%peer, remote = %l.remote, "netceptor link up");
                    l.peer = Some(peer.as_str().to_owned());
                }
            }
            Action::Deliver { service, from_node, from_service, payload } => {
                let target = if service == "unreach" {
                    // Go subscribers match on the failed packet's source service.
                    super::wire::decode_unreachable(&payload).ok().map(|m| m.from_service)
                } else {
                    Some(service)
                };
                if let Some(tx) = target.and_then(|s| bound.get(&s)) {
                    let _ = tx.try_send(Datagram { from_node, from_service, payload });
                }
            }
            Action::Duplicate { epoch } => {
                let msg = format!(
                    "another node with ID {} started after this one (epoch {epoch}) joined the netceptor mesh; \
                     this node stops, as Go Receptor does",
                    self.state.id()
                );
                tracing::error!("{msg}");
                let _ = self.fatal.send(Some(msg));
            }
        }
    }

    fn status(&self, links: &HashMap<LinkId, LinkIo>) -> NetStatus {
        let st = &self.state;
        let mut ls: Vec<LinkStatus> = st
            .established()
            .filter_map(|(id, peer, cost)| {
                links.get(&id).map(|l| LinkStatus {
                    peer: peer.as_str().to_owned(),
                    cost,
                    remote: l.remote.clone(),
                    dialed: l.dialed,
                    carried: l.carried,
                })
            })
            .collect();
        ls.sort_by(|a, b| a.peer.cmp(&b.peer));
        NetStatus {
            id: st.id().as_str().to_owned(),
            epoch: st.epoch(),
            links: ls,
            routes: st.routes().clone(),
            edges: st.edges().iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>(),
            ads: st.ads().cloned().collect(),
            local: st.local_services().to_vec(),
            drops: st.drops.clone(),
        }
    }
}
