//! `receptor status` (table, `--json`, `--graph`, `--svg FILE`) and the JSON Lines of
//! `ping --json` and `traceroute --json`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use receptord::client::MeshClient;
use receptord::mesh::{MeshStatus, PingError, PingReply};
use receptord::status::{StatusDoc, dot, svg};
use receptord::wire::NodeId;
use serde_json::json;

pub async fn run(
    client: &MeshClient,
    json: bool,
    graph: bool,
    svg_file: Option<PathBuf>,
) -> anyhow::Result<u8> {
    let st = client.status().await.context("reading mesh status")?;
    let mut doc = StatusDoc::from_mesh(&st);
    let go = go_nodes(client, &st).await;
    for daemon in &go {
        receptord::status::netceptor::merge(&mut doc, daemon);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if graph {
        print!("{}", dot::to_dot(&doc));
    } else if let Some(file) = svg_file {
        let drawing = svg::render(&dot::to_dot(&doc))?;
        if file.as_os_str() == "-" {
            print!("{drawing}");
        } else {
            std::fs::write(&file, drawing).with_context(|| format!("writing {}", file.display()))?;
        }
    } else {
        return table(&st, &doc);
    }
    Ok(0)
}

/// The control `status` of each daemon this client is linked to that runs a netceptor
/// plane (its `Connections` then say which protocol each link speaks).
async fn go_nodes(client: &MeshClient, st: &MeshStatus) -> Vec<serde_json::Value> {
    let me = client.node().id().clone();
    let peers: Vec<NodeId> = st
        .nodes
        .iter()
        .filter(|n| n.origin == me)
        .flat_map(|n| n.neighbors.iter().map(|(p, _)| p.clone()))
        .collect();
    let ctl = receptord::control::client::MeshControl { node: client.node().clone(), tls_only: false };
    let mut out = Vec::new();
    for p in peers {
        let asked = tokio::time::timeout(Duration::from_secs(5), ctl.request(&p, "status")).await;
        if let Ok(Ok(v)) = asked {
            let speaks_netceptor =
                v["Connections"].as_array().is_some_and(|c| c.iter().any(|c| c.get("Protocol").is_some()));
            if speaks_netceptor {
                out.push(v);
            }
        }
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line of `ping --json`.
pub fn ping_json(node: &NodeId, seq: u32, r: Result<Duration, &str>) -> serde_json::Value {
    match r {
        Ok(rtt) => json!({"node": node.as_str(), "seq": seq, "rtt_ms": ms(rtt), "error": null}),
        Err(e) => json!({"node": node.as_str(), "seq": seq, "rtt_ms": null, "error": e}),
    }
}

/// One line of `traceroute --json`.
pub fn hop_json(hop: u8, r: &Result<PingReply, PingError>) -> serde_json::Value {
    match r {
        Ok(p) => json!({"hop": hop, "node": p.from.as_str(), "rtt_ms": ms(p.rtt), "error": null}),
        Err(e) => json!({"hop": hop, "node": null, "rtt_ms": null, "error": e.to_string()}),
    }
}

/// The human table.
fn table(st: &MeshStatus, doc: &StatusDoc) -> anyhow::Result<u8> {
    let names: Vec<String> = st
        .nodes
        .iter()
        .map(|n| if n.ephemeral { format!("{} (client)", n.origin) } else { n.origin.to_string() })
        .collect();
    let w = names.iter().map(String::len).max().unwrap_or(4).max(8) + 2;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Node ID: {}", st.node_id)?;
    writeln!(out, "\n{:<w$}{:<w$}Work types", "Node", "Links (cost)")?;
    for (n, name) in st.nodes.iter().zip(&names) {
        let links: Vec<String> = n.neighbors.iter().map(|(id, c)| format!("{id} ({c})")).collect();
        let wts: Vec<String> = n.work_types.iter().map(|w| format!("{} {}", w.name, w.version)).collect();
        let links = links.join(", ");
        let pad = if links.len() + 1 >= w { format!("{links} ") } else { format!("{links:<w$}") };
        writeln!(out, "{name:<w$}{pad}{}", wts.join(", "))?;
    }
    let go: Vec<&receptord::status::NodeDoc> =
        doc.nodes.iter().filter(|n| n.protocol == "netceptor").collect();
    if !go.is_empty() {
        writeln!(out, "\nGo Receptor nodes (netceptor links)")?;
        for n in go {
            let links: Vec<String> = doc
                .links
                .iter()
                .filter(|l| l.protocol == "netceptor" && (l.a == n.id || l.b == n.id))
                .map(|l| {
                    let (other, c) = if l.a == n.id { (&l.b, l.cost_a) } else { (&l.a, l.cost_b) };
                    format!("{other} ({})", c.map_or("?".into(), |c| c.to_string()))
                })
                .collect();
            let wts: Vec<&str> = n.work_types.iter().map(|w| w.name.as_str()).collect();
            let links = links.join(", ");
            let pad = if links.len() + 1 >= w { format!("{links} ") } else { format!("{links:<w$}") };
            writeln!(out, "{:<w$}{pad}{}", n.id, wts.join(", "))?;
        }
    }
    writeln!(out, "\n{:<w$}{:<w$}{:>6} {:>5}", "Route to", "Via", "Cost", "Hops")?;
    for r in &st.routes {
        writeln!(out, "{:<w$}{:<w$}{:>6} {:>5}", r.dst, r.next_hop, r.cost, r.hops)?;
    }
    Ok(0)
}
