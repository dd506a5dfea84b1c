//! `receptor status`, `ping` and `traceroute` through the local daemon's control socket,
//! used when no `--receptor-peer` is given and a socket is (`--socket`, `RECEPTOR_SOCKET`,
//! or the packaged daemon's): the daemon's own view of the mesh, with no TCP listener
//! needed. Output and exit status are those of the mesh-client path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use receptord::client::socket;
use receptord::control::STATUS_DOC_FIELD;
use receptord::status::StatusDoc;
use receptord::wire::NodeId;
use serde_json::{Value, json};

fn request_line(command: &str, fields: Value) -> String {
    let mut m = fields.as_object().cloned().unwrap_or_default();
    m.insert("command".into(), json!(command));
    Value::Object(m).to_string()
}

/// The daemon's status document.
pub async fn status(sock: &Path, json: bool, graph: bool, svg: Option<PathBuf>) -> anyhow::Result<u8> {
    let line = request_line("status", json!({ "requested_fields": [STATUS_DOC_FIELD] }));
    let reply = socket::request(sock, &line).await.context("reading mesh status")?;
    let doc: StatusDoc = serde_json::from_value(reply.get(STATUS_DOC_FIELD).cloned().unwrap_or(Value::Null))
        .with_context(|| format!("{}: no status document in the daemon's answer", sock.display()))?;
    super::status::show(&doc, json, graph, svg)
}

fn rtt(v: &Value) -> Duration {
    Duration::from_nanos(v.get("Time").and_then(Value::as_u64).unwrap_or(0))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `count` pings from the daemon (its own timeout applies per ping).
pub async fn ping(
    sock: &Path,
    node: &NodeId,
    count: u32,
    interval: Duration,
    json: bool,
) -> anyhow::Result<u8> {
    let mut failures = 0;
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let line = request_line("ping", json!({ "target": node.as_str() }));
        let reply = socket::request(sock, &line).await?;
        if reply.get("Success").and_then(Value::as_bool) == Some(true) {
            let t = rtt(&reply);
            match json {
                true => {
                    println!("{}", json!({"node": node.as_str(), "seq": i, "rtt_ms": ms(t), "error": null}))
                }
                false => println!("Reply from {node} in {:.3} ms", ms(t)),
            }
            continue;
        }
        let error = reply.get("Error").and_then(Value::as_str).unwrap_or("ping failed").to_owned();
        if error == "no route to node" {
            bail!("no route to node {node}");
        }
        failures += 1;
        match json {
            true => println!("{}", json!({"node": node.as_str(), "seq": i, "rtt_ms": null, "error": error})),
            false => println!("{error}"),
        }
    }
    Ok(if failures == count { 1 } else { 0 })
}

/// The daemon's traceroute, hop by hop.
pub async fn traceroute(sock: &Path, node: &NodeId, json: bool) -> anyhow::Result<u8> {
    let line = request_line("traceroute", json!({ "target": node.as_str() }));
    let reply = socket::request(sock, &line).await?;
    let Some(hops) = reply.as_object() else { bail!("{}: unexpected traceroute answer", sock.display()) };
    let mut hops: Vec<(u8, &Value)> = hops.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect();
    hops.sort_by_key(|(h, _)| *h);
    let mut failed = false;
    for (hop, v) in hops {
        let from = v.get("From").and_then(Value::as_str).unwrap_or("");
        match v.get("Error").and_then(Value::as_str) {
            None if json => {
                println!("{}", json!({"hop": hop, "node": from, "rtt_ms": ms(rtt(v)), "error": null}))
            }
            None => println!("{hop}: {from} in {:.3} ms", ms(rtt(v))),
            Some(e) => {
                failed = true;
                match json {
                    true => println!("{}", json!({"hop": hop, "node": null, "rtt_ms": null, "error": e})),
                    false => println!("{hop}: {e}"),
                }
            }
        }
    }
    Ok(u8::from(failed))
}
