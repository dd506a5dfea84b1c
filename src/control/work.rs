//! The control protocol's `work` command: parses `submit`, `list`, `status`, `results`,
//! `cancel`, `release` and `force-release` in both request syntaxes, calls the unit store,
//! and writes the replies (and raw streams) exactly as receptorctl and AWX read them.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::io::{ByteRead, ByteWrite, LineReader};
use super::{Control, Flow, Request, reply_line};
use crate::config::parse_go_duration;
use crate::wire::NodeId;
use crate::work::payload::Arrival;
use crate::work::sink::FileSink;
use crate::work::units::{Origin, Outcome, Started, SubmitRequest, UnitStatus};

/// Keys of a JSON submit that are not work parameters.
/// `lease` is receptord's own (see `work::lease`); receptorctl and AWX never send it.
const SUBMIT_FIELDS: [&str; 9] =
    ["command", "subcommand", "node", "worktype", "tlsclient", "ttl", "signwork", "signature", "lease"];

pub(super) async fn handle<R: ByteRead, W: ByteWrite>(
    ctl: &Control,
    req: &Request,
    rd: &mut LineReader<R>,
    wr: &mut W,
    origin: &Origin,
) -> std::io::Result<Flow> {
    let (sub, tokens) = match subcommand(req) {
        Ok(parsed) => parsed,
        Err(e) => return reply(wr, Err(e)).await,
    };
    match sub.as_str() {
        "submit" => submit(ctl, req, &tokens, rd, wr, origin).await,
        "results" => results(ctl, req, &tokens, rd, wr, origin).await,
        "list" => reply(wr, list(ctl, req, &tokens, origin)).await,
        "status" => {
            let r = unit_id(req, &tokens, "status")
                .and_then(|id| ctl.units.status_for(origin, &id.0).map_err(|e| e.to_string()))
                .map(|st| status_json(&st));
            reply(wr, r).await
        }
        "cancel" | "release" | "force-release" => {
            let r = match unit_id(req, &tokens, &sub) {
                Ok((id, sig)) => operate(ctl, &sub, &id, sig.as_deref(), origin).await,
                Err(e) => Err(e),
            };
            reply(wr, r).await
        }
        _ => reply(wr, Err("bad command".into())).await,
    }
}

/// The subcommand of a `work` request and, for a text request, the words after it.
fn subcommand(req: &Request) -> Result<(String, Vec<String>), String> {
    match req {
        Request::Text(p) => {
            let mut t: Vec<String> = p.split(' ').map(str::to_owned).collect();
            let sub = t.remove(0).to_lowercase();
            Ok((sub, t))
        }
        Request::Json(m) => match m.get("subcommand") {
            None => Err("field subcommand missing".into()),
            Some(Value::String(s)) => Ok((s.to_lowercase(), Vec::new())),
            Some(_) => Err("field subcommand must be a string".into()),
        },
    }
}

/// Runs every parameter parser of a `work` request that needs no unit store (for fuzzing).
pub(crate) fn parse_request(req: &Request) {
    let Ok((sub, tokens)) = subcommand(req) else { return };
    match sub.as_str() {
        "submit" => {
            let me = NodeId::new("fuzz-me").expect("valid id");
            let _ = submit_request(&me, req, &tokens);
        }
        "status" | "cancel" | "release" | "force-release" => {
            let _ = unit_id(req, &tokens, &sub);
        }
        _ => {}
    }
}

async fn reply<W: ByteWrite>(wr: &mut W, r: Result<Value, String>) -> std::io::Result<Flow> {
    wr.write(Bytes::from(reply_line(r))).await?;
    Ok(Flow::Continue)
}

/// A unit's status as `work status` and `work list` show it (sorted keys).
pub fn status_json(st: &UnitStatus) -> Value {
    json!({
        "Detail": st.detail,
        "ExtraData": st.extra,
        "State": st.state as u8,
        "StateName": st.state.name(),
        "StdoutSize": st.stdout_size,
        "WorkType": st.work_type,
    })
}

fn list(ctl: &Control, req: &Request, tokens: &[String], origin: &Origin) -> Result<Value, String> {
    let wanted: Option<String> = match req {
        Request::Text(_) if tokens.len() > 1 => return Err("work list only takes an optional unit ID".into()),
        Request::Text(_) => tokens.first().cloned(),
        Request::Json(m) => m.get("unitid").and_then(Value::as_str).map(str::to_owned),
    };
    let mut out = Map::new();
    match wanted {
        Some(id) => {
            let st = ctl.units.status_for(origin, &id).map_err(|e| e.to_string())?;
            out.insert(id, status_json(&st));
        }
        None => {
            for (id, st) in ctl.units.list_for(origin) {
                out.insert(id, status_json(&st));
            }
        }
    }
    Ok(Value::Object(out))
}

/// The unit ID (and signature) of `status`, `cancel`, `release`, `force-release`.
fn unit_id(req: &Request, tokens: &[String], sub: &str) -> Result<(String, Option<String>), String> {
    match req {
        Request::Text(_) => match tokens {
            [] => Err(format!("work {sub} requires a unit ID")),
            [id] => Ok((id.clone(), None)),
            _ => Err(format!("work {sub} does not take parameters after the unit ID")),
        },
        Request::Json(m) => {
            let id = match m.get("unitid") {
                None => return Err("field unitid missing".into()),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err("field unitid must be a string".into()),
            };
            let sig = m.get("signature").and_then(Value::as_str).map(str::to_owned);
            Ok((id, sig))
        }
    }
}

async fn operate(
    ctl: &Control,
    sub: &str,
    id: &str,
    sig: Option<&str>,
    origin: &Origin,
) -> Result<Value, String> {
    let (outcome, done, pending) = match sub {
        "cancel" => (ctl.units.cancel(origin, id, sig).await, "cancelled", "cancel pending"),
        "release" => (ctl.units.release(origin, id, false, sig).await, "released", "release pending"),
        _ => (ctl.units.release(origin, id, true, sig).await, "released", "release pending"),
    };
    match outcome.map_err(|e| e.to_string())? {
        Outcome::Done => Ok(json!({ done: id })),
        Outcome::Pending => Ok(json!({ pending: id })),
    }
}

/// Parses a submit request into the store's terms.
fn submit_request(me: &NodeId, req: &Request, tokens: &[String]) -> Result<SubmitRequest, String> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    match req {
        Request::Text(_) => {
            if tokens.len() < 2 {
                return Err("work submit requires a target node and work type".into());
            }
            fields.insert("node".into(), tokens[0].clone());
            fields.insert("worktype".into(), tokens[1].clone());
            if tokens.len() > 2 {
                fields.insert("params".into(), tokens[2..].join(" "));
            }
        }
        Request::Json(m) => {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        fields.insert(k.clone(), s.clone());
                    }
                    _ => return Err(format!("submit parameters must all be strings and {k} is not")),
                }
            }
        }
    }
    let node = fields.get("node").cloned().ok_or("field node missing")?;
    let work_type = fields.get("worktype").cloned().ok_or("field worktype missing")?;
    let local = node.eq_ignore_ascii_case("localhost") || node == me.as_str();
    let node = if local {
        None
    } else {
        Some(NodeId::new(&node).map_err(|e| format!("unknown node {node:?}: {e}"))?)
    };
    let ttl = match fields.get("ttl").filter(|t| !t.is_empty()) {
        Some(t) => Some(parse_go_duration(t)?),
        None => None,
    };
    let lease = match fields.get("lease").filter(|t| !t.is_empty()) {
        Some(t) => Some(parse_go_duration(t).and_then(crate::work::lease::check)?),
        None => None,
    };
    let params = fields
        .iter()
        .filter(|(k, _)| !SUBMIT_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(SubmitRequest {
        node,
        work_type,
        params,
        tls_client: fields.get("tlsclient").cloned(),
        ttl,
        sign_work: fields.get("signwork").is_some_and(|v| v == "true"),
        signature: fields.get("signature").cloned(),
        lease,
    })
}

async fn submit<R: ByteRead, W: ByteWrite>(
    ctl: &Control,
    req: &Request,
    tokens: &[String],
    rd: &mut LineReader<R>,
    wr: &mut W,
    origin: &Origin,
) -> std::io::Result<Flow> {
    let unit = match submit_request(ctl.node.id(), req, tokens)
        .and_then(|r| ctl.units.create(origin, r).map_err(|e| e.to_string()))
    {
        Ok(u) => u,
        Err(e) => return reply(wr, Err(e)).await,
    };
    let created = format!("Work unit created with ID {}. Send stdin data and EOF.\n", unit.id);
    if let Err(e) = wr.write(Bytes::from(created)).await {
        ctl.units.input_failed(origin, &unit, &format!("the client went away: {e}")).await;
        return Err(e);
    }
    // The submitting client holds the lease while its payload arrives.
    let attached = unit.attach();
    let digest = unit.expects_payload_digest();
    // A remote unit's payload goes on to its node while it arrives (`work::payload`).
    let arrival = unit.forwards_while_arriving().then(|| {
        let (tx, rx) = crate::work::payload::arriving();
        ctl.units.forward_while_arriving(&unit, rx);
        std::sync::Arc::new(tx)
    });
    let received = receive_payload(
        rd,
        &unit.stdin_path(),
        ctl.units.max_payload(),
        ctl.idle_timeout(),
        digest,
        arrival.clone(),
    )
    .await;
    drop(attached);
    let (sha256, len) = match received {
        Ok(got) => got,
        Err(e) => {
            if let Some(a) = &arrival {
                a.send_replace(Arrival::Failed);
            }
            ctl.units.input_failed(origin, &unit, &e).await;
            // The rest of the client's input is payload, never commands: answer and close.
            reply(wr, Err(e)).await?;
            return Ok(Flow::End);
        }
    };
    let started = ctl.units.check_payload(&unit, &sha256).and_then(|()| ctl.units.start(&unit));
    if let Some(a) = &arrival {
        // Only now, with the payload synced and the unit recorded as starting, may the
        // remote node see the payload's end.
        a.send_replace(if started.is_ok() { Arrival::Complete(len) } else { Arrival::Failed });
    }
    let r = match started {
        Ok(Started::Started) => Ok(json!({"result": "Job Started", "unitid": unit.id})),
        Ok(Started::Submitted) => Ok(json!({"result": "Job Submitted", "unitid": unit.id})),
        Err(e) => Err(e.to_string()),
    };
    reply(wr, r).await
}

/// Copies the raw payload (everything up to the client's end of input) into `stdin`;
/// returns its SHA-256 (hex) when `hash` (a signed submission's payload binding), else
/// an empty string, and its length. Written by one thread (`work::sink`), which tells
/// `arrival` how far the file has got; synced before this returns.
async fn receive_payload<R: ByteRead>(
    rd: &mut LineReader<R>,
    path: &std::path::Path,
    max: u64,
    idle: std::time::Duration,
    hash: bool,
    arrival: Option<std::sync::Arc<crate::work::payload::ArrivalSender>>,
) -> Result<(String, u64), String> {
    let mut digest = hash.then(|| ring::digest::Context::new(&ring::digest::SHA256));
    let opened = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().append(true).open(path)).await
    };
    let file = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(format!("opening {}: {e}", path.display())),
        Err(e) => return Err(format!("opening {}: {e}", path.display())),
    };
    // The forwarder is told in steps of a read block or more: nothing waits on a payload
    // before it is complete, so fewer, larger reads cost less.
    let mut told = 0u64;
    let on_written: crate::work::sink::OnWritten = match arrival {
        Some(a) => Box::new(move |len| {
            if len - told >= crate::work::payload::READ_BLOCK as u64 {
                told = len;
                a.send_replace(Arrival::Arriving(len));
            }
        }),
        None => Box::new(|_| {}),
    };
    let mut file = FileSink::new(file, on_written);
    let mut total = 0u64;
    loop {
        let Ok(next) = tokio::time::timeout(idle, rd.raw()).await else {
            return Err(format!("no payload bytes for {idle:?} (limits.control_idle_timeout)"));
        };
        match next {
            Ok(Some(data)) => {
                total += data.len() as u64;
                if total > max {
                    return Err(format!("payload larger than {max} bytes (limits.max_payload)"));
                }
                if let Some(d) = digest.as_mut() {
                    d.update(&data);
                }
                // Nothing waits on a payload before it is whole: gather large batches.
                if file.write_more(data, true).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("the client went away: {e}")),
        }
    }
    let len = file.finish(true).await.map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok((digest.map(|d| crate::transport::tls::hex(d.finish().as_ref())).unwrap_or_default(), len))
}

async fn results<R: ByteRead, W: ByteWrite>(
    ctl: &Control,
    req: &Request,
    tokens: &[String],
    rd: &mut LineReader<R>,
    wr: &mut W,
    origin: &Origin,
) -> std::io::Result<Flow> {
    let parsed: Result<(String, u64, Option<String>), String> = match req {
        Request::Text(_) => match tokens {
            [] => Err("work results requires a unit ID".into()),
            [_, _, _, ..] => Err("work results only takes a unit ID and optional start position".into()),
            [id, rest @ ..] => match rest.first() {
                None => Ok((id.clone(), 0, None)),
                Some(p) => p.parse::<u64>().map(|n| (id.clone(), n, None)).map_err(|_| {
                    format!("error converting start position to integer: strconv.ParseInt: parsing {p:?}: invalid syntax")
                }),
            },
        },
        Request::Json(m) => (|| {
            let id = match m.get("unitid") {
                None => return Err("field unitid missing".to_owned()),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err("field unitid must be a string".to_owned()),
            };
            let pos = match m.get("startpos") {
                None => return Err("field startpos missing".to_owned()),
                Some(Value::Number(n)) => n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64),
                Some(Value::String(s)) => s.parse::<u64>().ok(),
                Some(_) => None,
            }
            .ok_or_else(|| format!("field startpos value {} is not convertible to an int", m["startpos"]))?;
            Ok((id, pos, m.get("signature").and_then(Value::as_str).map(str::to_owned)))
        })(),
    };
    let follow = parsed.and_then(|(id, pos, sig)| {
        ctl.units.follow(origin, &id, pos, sig.as_deref()).map(|f| (id, f)).map_err(|e| e.to_string())
    });
    let (id, mut follow) = match follow {
        Ok(f) => f,
        Err(e) => return reply(wr, Err(e)).await,
    };
    wr.write(Bytes::from(format!("Streaming results for work unit {id}\n"))).await?;
    // A client whose connection breaks (a mesh stream reset) is gone at once, not at the
    // next write: it no longer holds the unit's lease. While the unit prints nothing, the
    // stream's path is probed, so a client that died (or a path that broke) across the mesh
    // is noticed within seconds, whatever the job prints, and the lease clock starts.
    let (prober, closed) = (rd.prober(), wr.close_watch());
    let probing = async {
        match (&prober, &closed) {
            // Our reading half has ended (the client half-closed after its request): a
            // failed probe shows as our writing half being reset.
            (Some(p), Some(c)) => {
                tokio::select! {
                    () = p.run() => {}
                    _ = c.closed() => {}
                }
            }
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(probing);
    let gone = async {
        loop {
            match rd.raw().await {
                Ok(Some(_)) => continue,
                Ok(None) => std::future::pending::<()>().await,
                Err(_) => return,
            }
        }
    };
    tokio::pin!(gone);
    loop {
        let next = tokio::select! {
            () = &mut gone => break,
            () = &mut probing => break,
            n = follow.next() => n,
        };
        match next {
            Ok(Some(data)) => {
                if wr.write(data).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(unit = %id, "reading results: {e}");
                break;
            }
        }
    }
    Ok(Flow::End)
}

#[cfg(test)]
mod tests {
    use super::super::gojson;
    use super::*;

    #[test]
    fn status_object_has_sorted_keys() {
        let st = UnitStatus {
            state: crate::work::units::State::Running,
            detail: "Running: PID 5".into(),
            stdout_size: 3,
            work_type: "local".into(),
            extra: json!({"Pid": 5, "Params": "worker"}),
        };
        assert_eq!(
            gojson::to_string(&status_json(&st)),
            r#"{"Detail":"Running: PID 5","ExtraData":{"Pid":5,"Params":"worker"},"State":1,"StateName":"Running","StdoutSize":3,"WorkType":"local"}"#
        );
    }
}
