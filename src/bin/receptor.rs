//! `receptor`: the command-line client. Each invocation joins the mesh as a short-lived
//! node (`--receptor-peer`, `--receptor-node-id`), does one thing, and leaves cleanly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};
use receptord::client::{ClientOptions, MeshClient};
use receptord::transport::PeerUrl;
use receptord::wire::NodeId;

#[derive(Parser, Debug)]
#[command(version, about = "Client for the receptor mesh: ping, status, work, run playbooks remotely")]
struct Cli {
    #[command(flatten)]
    mesh: MeshArgs,
    /// Log level for the client's own diagnostics (stderr).
    #[arg(long, global = true, default_value = "warn", env = "RECEPTOR_LOG_LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(ClapArgs, Debug, Clone)]
struct MeshArgs {
    /// Where to enter the mesh [default: receptor://localhost:8888].
    #[arg(long, global = true, value_name = "URL")]
    receptor_peer: Option<PeerUrl>,
    /// This client's node ID [default: a unique temporary ID].
    #[arg(long, global = true, value_name = "ID")]
    receptor_node_id: Option<NodeId>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the round trip to a node.
    Ping {
        node: NodeId,
        #[arg(short, long, default_value_t = 4)]
        count: u32,
        /// Give up on one ping after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Show the mesh: nodes, their links, routes and work types.
    Status,
    /// Run work on a node.
    #[command(subcommand)]
    Work(WorkCommand),
}

#[derive(Subcommand, Debug)]
enum WorkCommand {
    /// Run WORK_TYPE on --node with the payload on its stdin; its output is printed.
    Submit {
        work_type: String,
        #[arg(long)]
        node: NodeId,
        /// File whose bytes are the job's input; `-` for stdin. Default: no input.
        #[arg(short, long)]
        payload: Option<PathBuf>,
        /// A parameter passed to the work type, as KEY=VALUE (repeatable).
        #[arg(short = 'a', long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("receptor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("receptor: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client_options(mesh: &MeshArgs) -> ClientOptions {
    ClientOptions {
        receptor_peer: mesh.receptor_peer.clone(),
        receptor_node_id: mesh.receptor_node_id.clone(),
        ..ClientOptions::default()
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let opts = client_options(&cli.mesh);
    let client = MeshClient::connect(&opts).await?;
    let result = match cli.command {
        Command::Ping { node, count, timeout } => ping(&client, &node, count, timeout).await,
        Command::Status => status(&client).await,
        Command::Work(WorkCommand::Submit { work_type, node, payload, params }) => {
            submit(&client, &node, &work_type, payload, &params).await
        }
    };
    client.close().await;
    result
}

async fn ping(client: &MeshClient, node: &NodeId, count: u32, timeout: Duration) -> anyhow::Result<u8> {
    let mut failures = 0;
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match client.ping(node, timeout).await {
            Ok(rtt) => println!("Reply from {node} in {:.3} ms", rtt.as_secs_f64() * 1000.0),
            Err(e @ receptord::client::ClientError::Ping(receptord::mesh::PingError::Unknown(_))) => {
                return Err(e.into());
            }
            Err(e) => {
                failures += 1;
                println!("{e}");
            }
        }
    }
    Ok(if failures == count { 1 } else { 0 })
}

async fn status(client: &MeshClient) -> anyhow::Result<u8> {
    let st = client.status().await.context("reading mesh status")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Node ID: {}", st.node_id)?;
    writeln!(out, "\n{:<24} {:<32} {}", "Node", "Links (cost)", "Work types")?;
    for n in &st.nodes {
        let links: Vec<String> = n.neighbors.iter().map(|(id, c)| format!("{id} ({c})")).collect();
        let wts: Vec<String> = n.work_types.iter().map(|w| format!("{} {}", w.name, w.version)).collect();
        let name = if n.ephemeral { format!("{} (client)", n.origin) } else { n.origin.to_string() };
        writeln!(out, "{:<24} {:<32} {}", name, links.join(", "), wts.join(", "))?;
    }
    writeln!(out, "\n{:<24} {:<24} {:>6} {:>5}", "Route to", "Via", "Cost", "Hops")?;
    for r in &st.routes {
        writeln!(out, "{:<24} {:<24} {:>6} {:>5}", r.dst, r.next_hop, r.cost, r.hops)?;
    }
    Ok(0)
}

async fn submit(
    client: &MeshClient,
    node: &NodeId,
    work_type: &str,
    payload: Option<PathBuf>,
    params: &[String],
) -> anyhow::Result<u8> {
    let mut map = serde_json::Map::new();
    for p in params {
        let Some((k, v)) = p.split_once('=') else { bail!("--param {p:?} is not KEY=VALUE") };
        map.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    }
    let payload: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match payload {
        None => Box::new(tokio::io::empty()),
        Some(p) if p.as_os_str() == "-" => Box::new(tokio::io::stdin()),
        Some(p) => Box::new(
            tokio::fs::File::open(&p)
                .await
                .with_context(|| format!("cannot open payload {}", p.display()))?,
        ),
    };
    let mut stdout = tokio::io::stdout();
    let result = client.submit(node, work_type, map, payload, &mut stdout).await?;
    if !result.stderr_tail.is_empty() {
        eprint!("{}", result.stderr_tail);
    }
    if let Some(err) = &result.error {
        eprintln!("receptor: job on {node}: {err}");
    }
    Ok(u8::try_from(result.exit_status()).unwrap_or(1))
}
