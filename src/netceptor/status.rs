//! What a netceptor node knows, as data: its links (and which address each speaks over),
//! routes, every node's advertised links and the service advertisements it holds. The
//! control service renders it Go-style (`status`), `receptor status` as tables and graphs.

use std::collections::BTreeMap;

use serde::Serialize;

use super::proto::{Drops, LocalService};
use super::wire::ServiceAd;

/// One established netceptor link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkStatus {
    pub peer: String,
    pub cost: f64,
    /// The socket address at the other end.
    pub remote: String,
    /// This node dialed it (`[[peers]]`) rather than accepted it.
    pub dialed: bool,
    /// A session carried over the native link with `peer` (docs/PROTOCOL.md, "Netceptor
    /// over native links").
    pub carried: bool,
}

/// A snapshot of the netceptor plane.
#[derive(Debug, Clone)]
pub struct NetStatus {
    pub id: String,
    pub epoch: u64,
    pub links: Vec<LinkStatus>,
    /// Destination → next hop.
    pub routes: BTreeMap<String, String>,
    /// Node → the links it advertises (directed costs).
    pub edges: BTreeMap<String, BTreeMap<String, f64>>,
    pub ads: Vec<ServiceAd>,
    pub local: Vec<LocalService>,
    pub drops: Drops,
}

/// Adds the netceptor plane to a Go-style `status` document (the control service's):
/// its links in `Connections` (each entry saying which protocol it speaks), Go nodes'
/// links in `KnownConnectionCosts`, their routes in `RoutingTable` and their service
/// advertisements in `Advertisements`, and what it dropped, by reason, in
/// `NetceptorDropped`. Where both planes know a node, the native entries stay.
pub fn merge_go_style(doc: &mut serde_json::Map<String, serde_json::Value>, st: &NetStatus) {
    use serde_json::{Value, json};
    if let Some(Value::Array(conns)) = doc.get_mut("Connections") {
        for c in conns.iter_mut() {
            if let Value::Object(o) = c {
                o.entry("Protocol").or_insert_with(|| json!("receptor"));
                // A native link that carries a netceptor session says so (one entry).
                let peer = o.get("NodeID").and_then(Value::as_str).map(str::to_owned);
                if st.links.iter().any(|l| l.carried && peer.as_deref() == Some(l.peer.as_str())) {
                    o.insert("Carries".into(), json!("netceptor"));
                }
            }
        }
        for l in st.links.iter().filter(|l| !l.carried) {
            conns.push(json!({"NodeID": l.peer, "Cost": l.cost, "Protocol": "netceptor"}));
        }
    }
    // What the plane dropped, by reason (as in `receptor_netceptor_dropped_total`).
    let dropped: serde_json::Map<String, Value> =
        st.drops.by_reason().into_iter().map(|(reason, n)| (reason.to_owned(), json!(n))).collect();
    doc.insert("NetceptorDropped".into(), Value::Object(dropped));
    if let Some(Value::Object(costs)) = doc.get_mut("KnownConnectionCosts") {
        for (node, links) in &st.edges {
            if !links.is_empty() && !costs.contains_key(node) {
                costs.insert(node.clone(), json!(links));
            }
        }
    }
    if let Some(Value::Object(routes)) = doc.get_mut("RoutingTable") {
        for (dst, hop) in &st.routes {
            routes.entry(dst.clone()).or_insert_with(|| json!(hop));
        }
    }
    if let Some(Value::Array(ads)) = doc.get_mut("Advertisements") {
        let known: Vec<String> =
            ads.iter().filter_map(|a| a.get("NodeID").and_then(Value::as_str).map(str::to_owned)).collect();
        for ad in &st.ads {
            if !known.contains(&ad.node_id) {
                if let Ok(v) = serde_json::to_value(ad) {
                    ads.push(v);
                }
            }
        }
    }
}
