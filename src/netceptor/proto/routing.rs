//! Link establishment, routing updates (flooding, epochs, duplicate IDs, relay batches)
//! and route computation of the netceptor state machine (Go `runProtocol`,
//! `handleRoutingUpdate`, `updateRoutingTable`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use tokio::time::Instant;

use super::{
    Action, CloseReason, FLOOD_DELAY, Known, LinkId, Netceptor, RELAY_BATCH, Relay, SEEN_UPDATE_TTL,
};
use crate::netceptor::wire::{Packet, RoutingUpdate, ServiceAd};
use crate::wire::NodeId;

impl Netceptor {
    /// The first routing update on a link: its `ForwardingNode` is the peer.
    pub(super) fn establish(&mut self, now: Instant, link: LinkId, u: &RoutingUpdate) {
        let peer = match NodeId::new(&u.forwarding_node) {
            Ok(p) => p,
            Err(_) => return self.close(link, CloseReason::BadId(u.forwarding_node.clone()), true),
        };
        let (certified, cert_given) = match self.links.get(&link).and_then(|l| l.cert.as_ref()) {
            Some(names) => (names.iter().any(|n| n == peer.as_str()), true),
            None => (false, false),
        };
        let refusal = if peer == self.cfg.id {
            Some(CloseReason::SelfId)
        } else if cert_given && !certified {
            Some(CloseReason::NotCertified(peer.clone()))
        } else if self.reserved.contains(peer.as_str()) && !certified {
            Some(CloseReason::Reserved(peer.clone()))
        } else if !self.cfg.allowed_peers.is_empty() && !self.cfg.allowed_peers.contains(&peer) {
            Some(CloseReason::NotAllowed(peer.clone()))
        } else if self.link_to(peer.as_str()).is_some() {
            Some(CloseReason::Duplicate(peer.clone()))
        } else if !self.known.contains_key(peer.as_str()) && self.known.len() >= self.cfg.limits.max_nodes {
            Some(CloseReason::Full)
        } else {
            None
        };
        if let Some(r) = refusal {
            return self.close(link, r, true);
        }
        let Some(l) = self.links.get_mut(&link) else { return };
        l.peer = Some(peer.clone());
        let cost = l.cost;
        let me = self.cfg.id.as_str().to_owned();
        self.edges.entry(me.clone()).or_default().insert(peer.as_str().to_owned(), cost);
        self.edges.entry(peer.as_str().to_owned()).or_default().insert(me, cost);
        self.names.learn(peer.as_str());
        self.actions.push_back(Action::Up { link, peer });
        self.flood_due.get_or_insert(now + FLOOD_DELAY);
        self.routes_due.get_or_insert(now + FLOOD_DELAY);
        // Go replays nothing to a new neighbour; sending our own advertisements (fresh
        // times) and the ones we hold lets it see services without waiting a minute.
        self.send_local_ads(now, Some(link));
        let held: Vec<ServiceAd> = self.ads.values().cloned().collect();
        for ad in held {
            self.send(link, &Packet::Service(ad));
        }
    }

    /// A routing update on an established link: Go's consistency checks, then processing.
    pub(super) fn routing_on_link(&mut self, now: Instant, link: LinkId, u: RoutingUpdate) {
        let Some(l) = self.links.get_mut(&link) else { return };
        let Some(peer) = l.peer.clone() else { return };
        if u.forwarding_node != peer.as_str() {
            return self.close(link, CloseReason::IdChanged(u.forwarding_node), true);
        }
        if u.node_id == peer.as_str() {
            match u.connections.get(self.cfg.id.as_str()) {
                None if l.listed_us => return self.close(link, CloseReason::Unlisted, true),
                None => return,
                Some(c) if *c != l.cost => return self.close(link, CloseReason::CostMismatch, true),
                Some(_) => l.listed_us = true,
            }
        }
        self.routing_update(now, link, u);
    }

    fn routing_update(&mut self, now: Instant, from: LinkId, mut u: RoutingUpdate) {
        if u.node_id.is_empty() {
            return;
        }
        if u.node_id == self.cfg.id.as_str() {
            if u.epoch == self.cfg.epoch {
                return;
            }
            if u.suspected_duplicate == self.cfg.epoch {
                self.actions.push_back(Action::Duplicate { epoch: self.cfg.epoch });
            } else if u.epoch > self.cfg.epoch {
                // We are older: accuse the newer one in our next updates, starting now.
                self.accuse = Some(u.epoch);
                self.flood_due = Some(now);
            }
            return;
        }
        if self.seen.contains_key(&u.update_id) {
            return;
        }
        let Ok(node) = NodeId::new(&u.node_id) else {
            self.drops.over_limits += 1;
            return;
        };
        if self.reserved_claim(Some(from), node.as_str()) {
            // A node the native plane holds, claimed by a peer that did not prove to be it:
            // neither believed nor relayed (Go nodes behind this one are not misled either).
            self.drops.reserved += 1;
            return;
        }
        self.note_source(from, node.as_str());
        let first_sight = !self.known.contains_key(node.as_str());
        if first_sight && self.known.len() >= self.cfg.limits.max_nodes {
            self.drops.over_limits += 1;
            return;
        }
        self.remember(now, &u.update_id);
        // Whether the update tells the others anything new; a known node's periodic
        // refresh (same connections) does not, and is relayed in the next batch.
        let mut news = true;
        if u.suspected_duplicate != 0 {
            if let Some(k) = self.known.get_mut(node.as_str()) {
                if k.epoch == u.suspected_duplicate {
                    *k = Known { epoch: u.epoch, sequence: u.sequence };
                }
            }
        } else {
            if let Some(k) = self.known.get(node.as_str()) {
                if u.epoch < k.epoch || (u.epoch == k.epoch && u.sequence <= k.sequence) {
                    return;
                }
            }
            if first_sight {
                self.names.learn(node.as_str());
                self.flood_due.get_or_insert(now + FLOOD_DELAY);
            }
            self.known.insert(node.as_str().to_owned(), Known { epoch: u.epoch, sequence: u.sequence });
            let conns: BTreeMap<String, f64> = u
                .connections
                .iter()
                .filter(|(k, c)| NodeId::new(k.as_str()).is_ok() && c.is_finite() && **c > 0.0)
                .filter(|(k, _)| self.reserved_edge(node.as_str(), k))
                .map(|(k, c)| (k.clone(), *c))
                .collect();
            news = first_sight;
            if self.edges.get(node.as_str()) != Some(&conns) {
                news = true;
                let me = self.cfg.id.as_str();
                for (x, e) in self.edges.iter_mut() {
                    if x != me && x != node.as_str() && !conns.contains_key(x) {
                        e.remove(node.as_str());
                    }
                }
                self.edges.insert(node.as_str().to_owned(), conns);
                self.routes_due.get_or_insert(now + FLOOD_DELAY);
            }
        }
        u.forwarding_node = self.cfg.id.as_str().to_owned();
        let key = Relay::Update(u.node_id.clone());
        if news {
            self.relays.remove(&key);
            self.flood_packet(Some(from), &Packet::Routing(u));
        } else {
            self.relay_later(now, from, key, &Packet::Routing(u));
        }
    }

    /// Holds `p` (from link `from`) for the next relay batch, in place of an older one
    /// about the same thing.
    pub(super) fn relay_later(&mut self, now: Instant, from: LinkId, key: Relay, p: &Packet) {
        let Ok(packet) = p.encode() else {
            self.drops.over_limits += 1;
            return;
        };
        self.relays.insert(key, (from, packet));
        self.relay_due.get_or_insert(now + RELAY_BATCH);
    }

    /// Sends the held relays: every link gets its whole batch at once (one write on a
    /// stream link), each packet encoded once, none back where it came from.
    pub(super) fn flush_relays(&mut self) {
        self.relay_due = None;
        let held = std::mem::take(&mut self.relays);
        if held.is_empty() {
            return;
        }
        self.relay_batches += 1;
        for (id, l) in &self.links {
            if l.peer.is_none() {
                continue;
            }
            for (from, packet) in held.values() {
                if from != id {
                    self.actions.push_back(Action::Send { link: *id, packet: packet.clone() });
                }
            }
        }
    }

    fn remember(&mut self, now: Instant, id: &str) {
        while self.seen.len() >= self.cfg.limits.max_seen_updates {
            match self.seen_order.pop_front() {
                Some((_, old)) => {
                    self.seen.remove(&old);
                }
                None => break,
            }
        }
        self.seen.insert(id.to_owned(), now);
        self.seen_order.push_back((now, id.to_owned()));
    }

    pub(super) fn expire_seen(&mut self, now: Instant) {
        while let Some((t, _)) = self.seen_order.front() {
            if now.duration_since(*t) < SEEN_UPDATE_TTL {
                break;
            }
            if let Some((t, id)) = self.seen_order.pop_front() {
                if self.seen.get(&id) == Some(&t) {
                    self.seen.remove(&id);
                }
            }
        }
    }

    /// Dijkstra from this node over the advertised directed edges; the next hop of each
    /// reachable node.
    pub(super) fn compute_routes(&mut self) {
        let mut routes = shortest_paths(self.cfg.id.as_str(), &self.edges);
        routes.retain(|dst, _| !self.reserved_unproven(dst));
        self.routes = routes;
        self.routes_generation += 1;
    }

    /// Changes whenever the routes may have changed.
    pub fn routes_generation(&self) -> u64 {
        self.routes_generation
    }

    /// The next hop towards `node`.
    pub fn next_hop(&self, node: &str) -> Option<&str> {
        self.routes.get(node).map(String::as_str)
    }

    /// Destination → next hop.
    pub fn routes(&self) -> &BTreeMap<String, String> {
        &self.routes
    }

    /// Every node's advertised links (this node's included).
    pub fn edges(&self) -> &HashMap<String, BTreeMap<String, f64>> {
        &self.edges
    }

    /// Nodes whose routing updates this node has seen.
    pub fn known_nodes(&self) -> impl Iterator<Item = &str> {
        self.known.keys().map(String::as_str)
    }
}

#[derive(PartialEq)]
struct Entry {
    cost: f64,
    node: String,
}

impl Eq for Entry {}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.cost.total_cmp(&self.cost).then_with(|| other.node.cmp(&self.node))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Destination → next hop by the cheapest path from `me` (ties broken by name, so the
/// result is deterministic; Go's depend on map order).
pub fn shortest_paths<'a>(
    me: &'a str,
    edges: &'a HashMap<String, BTreeMap<String, f64>>,
) -> BTreeMap<String, String> {
    let mut dist: HashMap<&'a str, f64> = HashMap::new();
    let mut first: HashMap<&'a str, &'a str> = HashMap::new();
    let mut heap = BinaryHeap::new();
    dist.insert(me, 0.0);
    heap.push(Entry { cost: 0.0, node: me.to_owned() });
    while let Some(Entry { cost, node }) = heap.pop() {
        if dist.get(node.as_str()).is_some_and(|d| cost > *d) {
            continue;
        }
        let Some((node_key, out)) = edges.get_key_value(node.as_str()) else { continue };
        for (next, c) in out {
            let (nd, next) = (cost + c, next.as_str());
            if dist.get(next).is_none_or(|d| nd < *d) {
                let hop = if node_key == me {
                    next
                } else {
                    match first.get(node_key.as_str()) {
                        Some(h) => *h,
                        None => continue,
                    }
                };
                dist.insert(next, nd);
                first.insert(next, hop);
                heap.push(Entry { cost: nd, node: next.to_owned() });
            }
        }
    }
    first.into_iter().filter(|(d, _)| *d != me).map(|(d, h)| (d.to_owned(), h.to_owned())).collect()
}
