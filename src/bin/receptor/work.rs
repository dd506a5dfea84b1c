//! `receptor work …` against a daemon's control socket: the same operations receptorctl
//! offers (submit, list, status, results, cancel, release), with plain output.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use receptord::cli::receptor::WorkCommand;
use receptord::client::socket;
use receptord::control::io::{ByteRead, IoRead};

pub async fn dispatch(cmd: WorkCommand, sock: PathBuf) -> anyhow::Result<u8> {
    match cmd {
        WorkCommand::Submit {
            work_type,
            node,
            payload,
            payload_literal,
            params,
            ttl,
            signwork,
            follow,
            rm,
            json,
        } => {
            let mut pairs = Vec::new();
            for p in &params {
                let Some((k, v)) = p.split_once('=') else { bail!("--param {p:?} is not KEY=VALUE") };
                pairs.push((k.to_owned(), v.to_owned()));
            }
            if let Some(t) = ttl {
                pairs.push(("ttl".into(), t));
            }
            if signwork {
                pairs.push(("signwork".into(), "true".into()));
            }
            let node = node.map_or_else(|| "localhost".to_owned(), |n| n.to_string());
            let fields = socket::submit_fields(&node, &work_type, &pairs);
            let mut c = socket::connect(&sock).await?;
            let payload: Box<dyn PayloadSource> = match (payload, payload_literal) {
                (_, Some(text)) => Box::new(Once(Some(Bytes::from(format!("{text}\n"))))),
                (Some(p), None) if p.as_os_str() == "-" => Box::new(IoRead(tokio::io::stdin())),
                (Some(p), None) => Box::new(IoRead(
                    tokio::fs::File::open(&p)
                        .await
                        .with_context(|| format!("cannot open payload {}", p.display()))?,
                )),
                (None, None) => Box::new(Once(None)),
            };
            let (unit, reply) = c
                .submit(fields, Boxed(payload))
                .await
                .map_err(|e| socket::ctl(&sock, e))
                .context("work submit")?;
            let result = reply["result"].as_str().unwrap_or("?");
            if json {
                println!("{}", serde_json::json!({"unit_id": unit, "result": result}));
                return Ok(0);
            }
            if !follow {
                println!("Result: {result}\nUnit ID: {unit}");
                return Ok(0);
            }
            eprintln!("receptor: unit {unit}: {result}");
            let code = results(&sock, &unit, 0).await?;
            if rm {
                socket::request(&sock, &format!("work release {unit}")).await?;
            }
            Ok(code)
        }
        WorkCommand::List { node: Some(_), .. } => {
            bail!("work list --node lists units on another node over the mesh: give --receptor-peer")
        }
        WorkCommand::List { unit, quiet, node: None } => {
            let v = socket::request(&sock, &list_line(unit)).await?;
            print_list(&v, quiet)
        }
        WorkCommand::Status { unit } => {
            let v = socket::request(&sock, &format!("work status {unit}")).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(0)
        }
        WorkCommand::Results { unit, start } => results(&sock, &unit, start).await,
        WorkCommand::Cancel { units, json } => each(&sock, "cancel", &units, json).await,
        WorkCommand::Release { mut units, force, all, state, json } => {
            if all || state.is_some() {
                let v = socket::request(&sock, "work list").await?;
                let wanted = |st: &serde_json::Value| {
                    state
                        .as_ref()
                        .is_none_or(|s| st["StateName"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(s)))
                };
                let found = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, st)| wanted(st))
                    .map(|(id, _)| id.clone());
                units.extend(found.collect::<Vec<_>>());
                if units.is_empty() {
                    if json {
                        println!("{{}}");
                    }
                    return Ok(0);
                }
            }
            if units.is_empty() {
                bail!("no unit IDs given (or --all, --state)");
            }
            each(&sock, if force { "force-release" } else { "release" }, &units, json).await
        }
    }
}

/// Runs `work VERB ID` for each unit, stopping at the first error; with `json`, prints
/// one object mapping each unit to its result at the end.
async fn each(sock: &Path, verb: &str, units: &[String], json: bool) -> anyhow::Result<u8> {
    let mut done = serde_json::Map::new();
    for unit in units {
        let v = socket::request(sock, &format!("work {verb} {unit}"))
            .await
            .with_context(|| format!("unit {unit}"))?;
        let what = v.as_object().and_then(|m| m.keys().next().cloned()).unwrap_or_default();
        match json {
            true => drop(done.insert(unit.clone(), serde_json::Value::String(what))),
            false => println!("{unit}: {what}"),
        }
    }
    if json {
        println!("{}", serde_json::Value::Object(done));
    }
    Ok(0)
}

/// Streams a unit's output to stdout; returns the unit's exit status once complete.
async fn results(sock: &Path, unit: &str, start: u64) -> anyhow::Result<u8> {
    let mut rd = socket::connect(sock)
        .await?
        .results(unit, start)
        .await
        .map_err(|e| socket::ctl(sock, e))
        .with_context(|| format!("results of {unit}"))?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = rd.raw().await.context("reading results")? {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    drop(out);
    let st = socket::unit_status(sock, unit).await?;
    let r = socket::job_result(&st);
    if let Some(e) = &r.error {
        eprintln!("receptor: unit {unit} {}: {e}", st.state.name());
    }
    Ok(u8::try_from(r.exit_status()).unwrap_or(1))
}

/// A payload of at most one chunk.
struct Once(Option<Bytes>);

/// Object-safe view of a payload source.
trait PayloadSource: Send {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Option<Bytes>>> + Send + '_>>;
}

impl PayloadSource for Once {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Option<Bytes>>> + Send + '_>>
    {
        let item = self.0.take();
        Box::pin(async move { Ok(item) })
    }
}

impl<R: tokio::io::AsyncRead + Unpin + Send> PayloadSource for IoRead<R> {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Option<Bytes>>> + Send + '_>>
    {
        Box::pin(self.read())
    }
}

struct Boxed(Box<dyn PayloadSource>);

impl ByteRead for Boxed {
    async fn read(&mut self) -> std::io::Result<Option<Bytes>> {
        self.0.next().await
    }
}

fn list_line(unit: Option<String>) -> String {
    unit.map_or_else(|| "work list".to_owned(), |u| format!("work list {u}"))
}

fn print_list(v: &serde_json::Value, quiet: bool) -> anyhow::Result<u8> {
    match (quiet, v.as_object()) {
        (true, Some(m)) => m.keys().for_each(|k| println!("{k}")),
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(0)
}

/// `work list --node NODE` over the mesh: the units this client's node submitted there.
pub async fn list_on(
    client: &receptord::client::MeshClient,
    node: &receptord::wire::NodeId,
    unit: Option<String>,
    quiet: bool,
) -> anyhow::Result<u8> {
    let ctl = receptord::control::client::MeshControl {
        node: client.node().clone(),
        tls_only: false,
        streams: receptord::control::client::StreamAuth::NoTls,
    };
    let v = ctl.request(node, &list_line(unit)).await.with_context(|| format!("work list on {node}"))?;
    print_list(&v, quiet)
}
