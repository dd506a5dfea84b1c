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
    for daemon in &go_nodes(client, &st).await {
        receptord::status::netceptor::merge(&mut doc, daemon);
    }
    show(&doc, json, graph, svg_file)
}

/// Prints the status document as asked (the table by default). A reader that goes away
/// early (`| head`, `| grep -q`) is not an error.
pub fn show(doc: &StatusDoc, json: bool, graph: bool, svg_file: Option<PathBuf>) -> anyhow::Result<u8> {
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&doc)?)
    } else if graph {
        dot::to_dot(doc)
    } else if let Some(file) = svg_file {
        let drawing = svg::render(&dot::to_dot(doc))?;
        if file.as_os_str() != "-" {
            std::fs::write(&file, drawing).with_context(|| format!("writing {}", file.display()))?;
            return Ok(0);
        }
        drawing
    } else {
        return match table(doc) {
            Err(e) if broken_pipe(&e) => Ok(0),
            r => r,
        };
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
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
    let ctl = receptord::control::client::MeshControl {
        node: client.node().clone(),
        tls_only: false,
        streams: receptord::control::client::StreamAuth::NoTls,
    };
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
fn table(doc: &StatusDoc) -> anyhow::Result<u8> {
    let names: Vec<String> = doc
        .nodes
        .iter()
        .map(|n| if n.ephemeral { format!("{} (client)", n.id) } else { n.id.clone() })
        .collect();
    let w = names.iter().map(String::len).max().unwrap_or(4).max(8) + 2;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Node ID: {}", doc.node_id)?;
    writeln!(out, "\n{:<w$}{:<w$}Work types", "Node", "Links (cost)")?;
    for (n, name) in doc.nodes.iter().zip(&names).filter(|(n, _)| n.protocol != "netceptor") {
        // The links this node advertises, with its own cost.
        let mut links: Vec<(&str, f64)> = doc
            .links
            .iter()
            .filter_map(|l| match (l.a == n.id, l.b == n.id) {
                (true, _) => l.cost_a.map(|c| (l.b.as_str(), c)),
                (_, true) => l.cost_b.map(|c| (l.a.as_str(), c)),
                _ => None,
            })
            .collect();
        links.sort_by(|x, y| x.0.cmp(y.0));
        let links: Vec<String> = links.iter().map(|(id, c)| format!("{id} ({c})")).collect();
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
    for r in &doc.routes {
        writeln!(out, "{:<w$}{:<w$}{:>6} {:>5}", r.destination, r.next_hop, r.cost, r.hops)?;
    }
    for (daemon, counts) in &doc.netceptor_dropped {
        let nonzero: Vec<String> =
            counts.iter().filter(|(_, n)| **n > 0).map(|(reason, n)| format!("{reason} {n}")).collect();
        if !nonzero.is_empty() {
            writeln!(out, "\nNetceptor packets {daemon} dropped: {}", nonzero.join(", "))?;
        }
    }
    Ok(0)
}
