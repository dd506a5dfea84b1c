//! Go Receptor nodes in `receptor status`: a daemon's Go-style control `status` (which
//! lists its netceptor plane, docs/CONTROL.md) merged into the [`StatusDoc`] — Go nodes
//! with their work types, and netceptor links marked with their protocol.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{LinkDoc, NodeDoc, StatusDoc, WorkTypeDoc};

const NETCEPTOR: &str = "netceptor";

/// Adds what `daemon_status` (a daemon's control `status` reply) says about its netceptor
/// plane: its netceptor links, the Go nodes it knows and their links and work types, and
/// what it dropped.
/// Nodes already in the document keep their native entries.
pub fn merge(doc: &mut StatusDoc, daemon_status: &Value) {
    let Some(daemon) = daemon_status["NodeID"].as_str() else { return };
    if let Some(dropped) = daemon_status["NetceptorDropped"].as_object() {
        let counts = dropped.iter().filter_map(|(reason, n)| Some((reason.clone(), n.as_u64()?))).collect();
        doc.netceptor_dropped.insert(daemon.to_owned(), counts);
    }
    let mut costs: BTreeMap<(String, String), (Option<f64>, Option<f64>)> = BTreeMap::new();
    let mut put = |from: &str, to: &str, cost: f64| {
        if from < to {
            costs.entry((from.to_owned(), to.to_owned())).or_default().0 = Some(cost);
        } else {
            costs.entry((to.to_owned(), from.to_owned())).or_default().1 = Some(cost);
        }
    };
    let mut go_nodes: Vec<String> = Vec::new();
    for c in daemon_status["Connections"].as_array().into_iter().flatten() {
        if let (true, Some(peer)) = (c.get("Carries").is_some_and(|v| v == NETCEPTOR), c["NodeID"].as_str()) {
            let (a, b) = if daemon < peer { (daemon, peer) } else { (peer, daemon) };
            if let Some(l) = doc.links.iter_mut().find(|l| l.a == a && l.b == b) {
                l.carries = Some(NETCEPTOR.into());
            }
        }
        if c["Protocol"] == NETCEPTOR {
            if let (Some(peer), Some(cost)) = (c["NodeID"].as_str(), c["Cost"].as_f64()) {
                put(daemon, peer, cost);
                go_nodes.push(peer.to_owned());
            }
        }
    }
    let native: Vec<String> = doc.nodes.iter().map(|n| n.id.clone()).collect();
    for (node, links) in daemon_status["KnownConnectionCosts"].as_object().into_iter().flatten() {
        if native.contains(node) {
            continue;
        }
        go_nodes.push(node.clone());
        for (peer, cost) in links.as_object().into_iter().flatten() {
            if let Some(c) = cost.as_f64() {
                put(node, peer, c);
            }
        }
    }
    go_nodes.sort();
    go_nodes.dedup();
    for id in go_nodes.iter().filter(|id| !native.contains(id)) {
        let work_types = daemon_status["Advertisements"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["NodeID"] == id.as_str() && a["Service"] == "control")
            .flat_map(|a| a["WorkCommands"].as_array().cloned().unwrap_or_default())
            .filter_map(|w| {
                w["WorkType"].as_str().map(|n| WorkTypeDoc { name: n.to_owned(), version: String::new() })
            })
            .collect();
        doc.nodes.push(NodeDoc {
            id: id.clone(),
            ephemeral: false,
            epoch: 0,
            seq: 0,
            work_types,
            // In the routing table of the daemon that reported it.
            reachable: true,
            protocol: NETCEPTOR.into(),
        });
    }
    doc.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    for ((a, b), (cost_a, cost_b)) in costs {
        if doc.links.iter().any(|l| l.a == a && l.b == b) {
            continue;
        }
        doc.links.push(LinkDoc {
            a,
            b,
            cost_a,
            cost_b,
            confirmed: cost_a.is_some() && cost_b.is_some(),
            protocol: NETCEPTOR.into(),
            carries: None,
        });
    }
    doc.links.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::sample;

    #[test]
    fn go_nodes_and_netceptor_links_join_the_document() {
        let mut doc = StatusDoc::from_mesh(&sample());
        let go: Value = serde_json::from_str(
            r#"{"NodeID":"n1","Connections":[{"NodeID":"n2","Cost":1,"Protocol":"receptor","Carries":"netceptor"},{"NodeID":"go1","Cost":1,"Protocol":"netceptor"}],
               "KnownConnectionCosts":{"n1":{"go1":1},"go1":{"n1":1,"go2":2},"go2":{"go1":2}},
               "Advertisements":[{"NodeID":"go1","Service":"control","WorkCommands":[{"WorkType":"cat","Secure":false}]}]}"#,
        )
        .expect("json");
        merge(&mut doc, &go);
        let go1 = doc.nodes.iter().find(|n| n.id == "go1").expect("go1");
        assert_eq!((go1.protocol.as_str(), go1.work_types[0].name.as_str()), ("netceptor", "cat"));
        assert!(doc.nodes.iter().any(|n| n.id == "go2" && n.protocol == "netceptor"));
        let l = doc.links.iter().find(|l| l.a == "go1" && l.b == "n1").expect("n1-go1");
        assert!(l.confirmed && l.protocol == "netceptor", "{l:?}");
        assert!(doc.links.iter().any(|l| l.a == "go1" && l.b == "go2" && l.confirmed));
        let native = doc.links.iter().find(|l| l.a == "n1" && l.b == "n2").expect("n1-n2");
        assert_eq!((native.protocol.as_str(), native.carries.as_deref()), ("receptor", Some("netceptor")));
        assert_eq!(doc.nodes.iter().filter(|n| n.id == "n1").count(), 1, "native entries kept");
    }
}
