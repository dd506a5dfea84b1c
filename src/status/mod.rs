//! `receptor status` as data: the documented JSON document ([`StatusDoc`], schema in
//! docs/STATUS.md), the mesh as Graphviz DOT ([`dot`]), and SVG rendering ([`svg`]).
//! Pure functions of a [`MeshStatus`]; the CLI prints them.

pub mod dot;
pub mod netceptor;
pub mod svg;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mesh::MeshStatus;

/// Bumped only on incompatible changes; fields may be added within a version.
pub const SCHEMA_VERSION: u32 = 1;

/// The mesh as one node sees it (`receptor status --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub schema_version: u32,
    /// The node whose view this is (the `receptor` client's own short-lived node).
    pub node_id: String,
    /// Every node in the link-state database, sorted by ID.
    pub nodes: Vec<NodeDoc>,
    /// Links, one per pair of nodes, sorted.
    pub links: Vec<LinkDoc>,
    /// Routes from `node_id`, sorted by destination.
    pub routes: Vec<RouteDoc>,
    /// What the netceptor plane of each daemon this view came through dropped, by reason
    /// (`receptor_netceptor_dropped_total`'s reasons): daemon → reason → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub netceptor_dropped: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDoc {
    pub id: String,
    /// A short-lived client (e.g. a `receptor` command), never a relay.
    pub ephemeral: bool,
    /// Start time of this incarnation (nanoseconds since the Unix epoch) and advertisement
    /// sequence number.
    pub epoch: u64,
    pub seq: u64,
    pub work_types: Vec<WorkTypeDoc>,
    /// The viewing node has a route to it (or it is the viewing node). A node known only
    /// because a neighbour still lists it, or whose links are gone, is not: it is down or
    /// cut off (pictures draw it as down).
    #[serde(default = "yes")]
    pub reachable: bool,
    /// `receptor` for nodes of this mesh, `netceptor` for Go Receptor nodes seen through
    /// a daemon's netceptor plane (their `epoch` and `seq` are 0).
    #[serde(default = "native")]
    pub protocol: String,
}

fn yes() -> bool {
    true
}

fn native() -> String {
    "receptor".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkTypeDoc {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkDoc {
    /// The two ends, `a` < `b`.
    pub a: String,
    pub b: String,
    /// The cost each end advertises (`null`: that end does not list the link — it is not
    /// confirmed, and routing does not use it).
    pub cost_a: Option<f64>,
    pub cost_b: Option<f64>,
    /// Both ends list the link.
    pub confirmed: bool,
    /// The wire protocol the link speaks: `receptor` or `netceptor` (Go Receptor).
    #[serde(default = "native")]
    pub protocol: String,
    /// A native link that also carries a netceptor session (`"netceptor"`), as the
    /// daemon at one end reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carries: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDoc {
    pub destination: String,
    pub next_hop: String,
    pub cost: f64,
    pub hops: u8,
}

impl StatusDoc {
    pub fn from_mesh(st: &MeshStatus) -> StatusDoc {
        let routed: std::collections::BTreeSet<&crate::wire::NodeId> =
            st.routes.iter().map(|r| &r.dst).collect();
        let reachable = |id: &crate::wire::NodeId| *id == st.node_id || routed.contains(id);
        let mut nodes: Vec<NodeDoc> = st
            .nodes
            .iter()
            .map(|l| NodeDoc {
                id: l.origin.to_string(),
                ephemeral: l.ephemeral,
                epoch: l.epoch,
                seq: l.seq,
                work_types: l
                    .work_types
                    .iter()
                    .map(|w| WorkTypeDoc { name: w.name.to_string(), version: w.version.to_string() })
                    .collect(),
                reachable: reachable(&l.origin),
                protocol: native(),
            })
            .collect();
        // Nodes that only a neighbour still names (their own advertisement is gone).
        let known: std::collections::BTreeSet<&crate::wire::NodeId> =
            st.nodes.iter().map(|l| &l.origin).collect();
        let named: std::collections::BTreeSet<&crate::wire::NodeId> = st
            .nodes
            .iter()
            .flat_map(|l| l.neighbors.iter().map(|(n, _)| n))
            .filter(|n| !known.contains(n))
            .collect();
        for n in named {
            nodes.push(NodeDoc {
                id: n.to_string(),
                ephemeral: false,
                epoch: 0,
                seq: 0,
                work_types: Vec::new(),
                reachable: reachable(n),
                protocol: native(),
            });
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut pairs: std::collections::BTreeMap<(String, String), (Option<f64>, Option<f64>)> =
            std::collections::BTreeMap::new();
        for l in &st.nodes {
            for (peer, cost) in &l.neighbors {
                let (me, other) = (l.origin.to_string(), peer.to_string());
                if me < other {
                    pairs.entry((me, other)).or_default().0 = Some(*cost);
                } else {
                    pairs.entry((other, me)).or_default().1 = Some(*cost);
                }
            }
        }
        let links = pairs
            .into_iter()
            .map(|((a, b), (cost_a, cost_b))| LinkDoc {
                a,
                b,
                cost_a,
                cost_b,
                confirmed: cost_a.is_some() && cost_b.is_some(),
                protocol: native(),
                carries: None,
            })
            .collect();
        let mut routes: Vec<RouteDoc> = st
            .routes
            .iter()
            .map(|r| RouteDoc {
                destination: r.dst.to_string(),
                next_hop: r.next_hop.to_string(),
                cost: r.cost,
                hops: r.hops,
            })
            .collect();
        routes.sort_by(|a, b| a.destination.cmp(&b.destination));
        StatusDoc {
            schema_version: SCHEMA_VERSION,
            node_id: st.node_id.to_string(),
            nodes,
            links,
            routes,
            netceptor_dropped: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::{Lsa, Name, NodeId, WorkTypeAd};

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }

    pub(crate) fn sample() -> MeshStatus {
        let lsa = |o: &str, eph: bool, n: &[(&str, f64)], wt: &[&str]| Lsa {
            origin: id(o),
            epoch: 7,
            seq: 1,
            leaving: false,
            ephemeral: eph,
            leaf: false,
            neighbors: n.iter().map(|(p, c)| (id(p), *c)).collect(),
            relay_marks: false,
            work_types: wt
                .iter()
                .map(|w| WorkTypeAd {
                    name: Name::new(*w).expect("name"),
                    version: Name::new("1").expect("version"),
                })
                .collect(),
            sig: None,
        };
        MeshStatus {
            node_id: id("cli-1"),
            nodes: vec![
                lsa("n1", false, &[("n2", 1.0), ("cli-1", 1.0)], &["cat"]),
                lsa("n2", false, &[("n1", 2.5), ("n3", 1.0)], &["ansible_runner"]),
                lsa("n3", false, &[], &["we\"ird\\"]),
                lsa("cli-1", true, &[("n1", 1.0)], &[]),
            ],
            routes: vec![crate::mesh::RouteInfo { dst: id("n1"), next_hop: id("n1"), cost: 1.0, hops: 1 }],
        }
    }

    #[test]
    fn links_are_paired_and_unconfirmed_ones_marked() {
        let doc = StatusDoc::from_mesh(&sample());
        assert_eq!(doc.schema_version, 1);
        assert_eq!(doc.nodes[0].id, "cli-1");
        let n1n2 = doc.links.iter().find(|l| l.a == "n1" && l.b == "n2").expect("n1-n2");
        assert_eq!((n1n2.cost_a, n1n2.cost_b, n1n2.confirmed), (Some(1.0), Some(2.5), true));
        let n2n3 = doc.links.iter().find(|l| l.a == "n2" && l.b == "n3").expect("n2-n3");
        assert!(!n2n3.confirmed);
        let reach: Vec<(&str, bool)> = doc.nodes.iter().map(|n| (n.id.as_str(), n.reachable)).collect();
        assert_eq!(reach, [("cli-1", true), ("n1", true), ("n2", false), ("n3", false)]);
        let back: StatusDoc =
            serde_json::from_str(&serde_json::to_string(&doc).expect("json")).expect("parse");
        assert_eq!(back, doc);
    }
}
