//! Data packets (delivery, forwarding, `ping`, `unreach`) and service advertisements of
//! the netceptor state machine (Go `handleMessageData`, `handleServiceAdvertisement`).

use bytes::Bytes;
use tokio::time::Instant;

use super::{Action, LinkId, Netceptor, Relay};
use crate::netceptor::names::name_hash;
use crate::netceptor::wire::{
    DataPacket, MAX_HOPS, MAX_SERVICE, Packet, ServiceAd, Unreachable, encode_unreachable,
};
use crate::wire::NodeId;

/// The problems an `unreach` message reports (Go's wording; Go peers match on it).
pub const SERVICE_UNKNOWN: &str = "service unknown";
pub const EXPIRED: &str = "message expired";

/// Why a datagram could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no route to node {0}")]
    NoRoute(String),
    #[error("service name {0:?} is longer than {MAX_SERVICE} bytes")]
    Service(String),
    #[error("payload of {0} bytes is too large for a packet")]
    TooLarge(usize),
}

impl Netceptor {
    /// A service advertisement: stored when newer than the one held, then flooded on.
    pub(super) fn service_ad(&mut self, now: Instant, from: Option<LinkId>, ad: ServiceAd) {
        if ad.node_id == self.cfg.id.as_str() || NodeId::new(&ad.node_id).is_err() {
            return;
        }
        if self.reserved_claim(from, &ad.node_id) {
            self.drops.reserved += 1;
            return;
        }
        let key = (ad.node_id.clone(), ad.service.clone());
        let held = self.ads.get(&key);
        if held.is_some_and(|held| ad.time <= held.time) {
            return;
        }
        // The periodic renewal of an advertisement held as it is: relayed in the next batch.
        let renewal = !ad.cancel && held.is_some_and(|h| ServiceAd { time: ad.time, ..h.clone() } == ad);
        if ad.cancel {
            self.ads.remove(&key);
        } else {
            if !self.ads.contains_key(&key) && self.ads.len() >= self.cfg.limits.max_ads {
                self.drops.over_limits += 1;
                return;
            }
            self.ads.insert(key, ad.clone());
        }
        let relay = Relay::Ad(ad.node_id.clone(), ad.service.clone());
        match from {
            Some(link) if renewal => self.relay_later(now, link, relay, &Packet::Service(ad)),
            _ => {
                self.relays.remove(&relay);
                self.flood_packet(from, &Packet::Service(ad));
            }
        }
    }

    /// Advertisements held from other nodes.
    pub fn ads(&self) -> impl Iterator<Item = &ServiceAd> {
        self.ads.values()
    }

    /// How `node` advertises `service` (Go's `ConnType`), if it does.
    pub fn conn_type(&self, node: &str, service: &str) -> Option<u8> {
        self.ads.get(&(node.to_owned(), service.to_owned())).map(|a| a.conn_type)
    }

    /// The services this node advertises.
    pub fn local_services(&self) -> &[super::LocalService] {
        &self.local
    }

    /// A data packet from a link: delivered here, or forwarded.
    pub(super) fn data(&mut self, now: Instant, d: DataPacket) {
        if d.to_hash == self.id_hash {
            return self.deliver(now, d);
        }
        if d.hops == 0 {
            self.drops.expired += 1;
            if d.from_service != "unreach" {
                self.unreachable(&d, EXPIRED);
            }
            return;
        }
        let Some(to) = self.names.name(d.to_hash).map(str::to_owned) else {
            self.drops.unknown_hash += 1;
            return;
        };
        self.forward(to.as_str(), DataPacket { hops: d.hops - 1, ..d });
    }

    fn forward(&mut self, to: &str, d: DataPacket) {
        let Some(link) = self.next_hop(to).and_then(|hop| self.link_to(hop)) else {
            self.drops.no_route += 1;
            return;
        };
        match d.encode() {
            Ok(packet) => self.actions.push_back(Action::Send { link, packet }),
            Err(_) => self.drops.over_limits += 1,
        }
    }

    fn deliver(&mut self, now: Instant, d: DataPacket) {
        let Some(from) = self.names.name(d.from_hash).map(str::to_owned) else {
            self.drops.unknown_hash += 1;
            return;
        };
        if d.to_service == "ping" {
            let _ = self.send_datagram(now, "ping", &from, &d.from_service, Bytes::new());
            return;
        }
        if self.bound.contains(&d.to_service) || d.to_service == "unreach" {
            self.actions.push_back(Action::Deliver {
                service: d.to_service,
                from_node: from,
                from_service: d.from_service,
                payload: d.payload,
            });
            return;
        }
        self.drops.service_unknown += 1;
        if d.from_service != "unreach" {
            self.unreachable(&d, SERVICE_UNKNOWN);
        }
    }

    /// Tells the source of `d` it could not be delivered (from `unreach` to `unreach`).
    fn unreachable(&mut self, d: &DataPacket, problem: &str) {
        let (Some(from), Some(to)) =
            (self.names.name(d.from_hash).map(str::to_owned), self.names.name(d.to_hash).map(str::to_owned))
        else {
            return;
        };
        let msg = Unreachable {
            from_node: from.clone(),
            to_node: to,
            from_service: d.from_service.clone(),
            to_service: d.to_service.clone(),
            problem: problem.to_owned(),
        };
        let me = self.cfg.id.as_str().to_owned();
        let p = DataPacket {
            hops: MAX_HOPS - 1,
            from_hash: name_hash(&me),
            to_hash: name_hash(&from),
            from_service: "unreach".into(),
            to_service: "unreach".into(),
            payload: encode_unreachable(&msg),
        };
        if from == me {
            self.actions.push_back(Action::Deliver {
                service: "unreach".into(),
                from_node: me,
                from_service: "unreach".into(),
                payload: p.payload,
            });
        } else {
            self.forward(&from, p);
        }
    }

    /// A traceroute probe: a ping from local `service` to `node` that starts with `hops`
    /// hops, handled as if it had just arrived here (so with 0 hops this node itself
    /// reports it expired, as Go's traceroute shows the origin as hop 0).
    pub fn probe(&mut self, now: Instant, service: &str, node: &str, hops: u8) -> Result<(), SendError> {
        if service.len() > MAX_SERVICE {
            return Err(SendError::Service(service.to_owned()));
        }
        let to_hash = if node == self.cfg.id.as_str() || node.eq_ignore_ascii_case("localhost") {
            self.id_hash
        } else {
            if self.next_hop(node).and_then(|hop| self.link_to(hop)).is_none() {
                return Err(SendError::NoRoute(node.to_owned()));
            }
            self.names.learn(node)
        };
        let d = DataPacket {
            hops,
            from_hash: self.id_hash,
            to_hash,
            from_service: service.to_owned(),
            to_service: "ping".into(),
            payload: Bytes::new(),
        };
        self.data(now, d);
        Ok(())
    }

    /// Sends a datagram from local `service` to `node:to_service`.
    pub fn send_datagram(
        &mut self,
        now: Instant,
        service: &str,
        node: &str,
        to_service: &str,
        payload: Bytes,
    ) -> Result<(), SendError> {
        for s in [service, to_service] {
            if s.len() > MAX_SERVICE {
                return Err(SendError::Service(s.to_owned()));
            }
        }
        if payload.len() + crate::netceptor::wire::DATA_HEADER > crate::netceptor::wire::MAX_PACKET {
            return Err(SendError::TooLarge(payload.len()));
        }
        let to_hash = if node == self.cfg.id.as_str() || node.eq_ignore_ascii_case("localhost") {
            self.id_hash
        } else {
            self.names.learn(node)
        };
        let d = DataPacket {
            hops: MAX_HOPS - 1,
            from_hash: self.id_hash,
            to_hash,
            from_service: service.to_owned(),
            to_service: to_service.to_owned(),
            payload,
        };
        if to_hash == self.id_hash {
            self.deliver(now, d);
            return Ok(());
        }
        if self.next_hop(node).and_then(|hop| self.link_to(hop)).is_none() {
            return Err(SendError::NoRoute(node.to_owned()));
        }
        self.forward(node, d);
        Ok(())
    }
}
