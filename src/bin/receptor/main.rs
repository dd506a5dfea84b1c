//! `receptor`: the command-line client. Each invocation joins the mesh as a short-lived
//! node (`--receptor-peer`, `--receptor-node-id`), does one thing, and leaves cleanly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use receptord::certs::{self, Subject};
use receptord::cli::receptor::{
    CertCommand, Cli, Command, ConfigCommand, MeshArgs, RunArgs, SubjectArgs, WorkArgs, WorkCommand,
};
use receptord::client::{ClientOptions, MeshClient};
use receptord::wire::NodeId;

mod local;
mod status;
mod stream;
mod work;

fn main() -> ExitCode {
    let cli = receptord::cli::receptor::parse();
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
            eprintln!("receptor: error: {}", receptord::report::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `receptor config import`: exit 0 when complete, 3 when something was left out.
fn config(c: ConfigCommand) -> anyhow::Result<u8> {
    use receptord::config::import;
    let ConfigCommand::Import { file, output, native_peers } = c;
    let opts = import::ImportOptions { native_peers };
    let imported = import::import_file(&file, &opts).map_err(|e| match e {
        import::ImportError::Read { .. } => anyhow::anyhow!(e),
        e => anyhow::anyhow!("{}: {e}", file.display()),
    })?;
    match &output {
        Some(path) => {
            std::fs::write(path, &imported.toml).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().write_all(imported.toml.as_bytes()).context("writing stdout")?,
    }
    let mut err = std::io::stderr().lock();
    for l in &imported.left_out {
        let _ = writeln!(err, "left out: {l}");
    }
    Ok(if imported.left_out.is_empty() { 0 } else { 3 })
}

/// The control socket to use: --socket, or the packaged daemon's when it exists.
fn socket_path(mesh: &MeshArgs) -> anyhow::Result<PathBuf> {
    mesh.socket.clone().or_else(receptord::client::socket::default_socket).ok_or_else(|| {
        anyhow::anyhow!(
            "no control socket: pass --socket PATH (a daemon's [control] socket; default {} when it exists), \
             or --receptor-peer to run work over the mesh",
            receptord::client::socket::DEFAULT_SOCKET
        )
    })
}

/// Fills unset flags from the client config file, if any.
fn with_client_file(mut mesh: MeshArgs) -> anyhow::Result<MeshArgs> {
    let Some(path) = &mesh.client_config else { return Ok(mesh) };
    let file = receptord::client::ClientFile::load(path)?;
    mesh.receptor_peer = mesh.receptor_peer.or(file.peer);
    mesh.receptor_node_id = mesh.receptor_node_id.or(file.node_id);
    if let (None, Some(tls)) = (&mesh.tls_cert, file.tls) {
        mesh.tls_cert = Some(tls.cert);
        mesh.tls_key = Some(tls.key);
        if mesh.tls_ca.is_empty() {
            mesh.tls_ca = tls.ca;
        }
    }
    Ok(mesh)
}

fn client_options(mesh: &MeshArgs) -> anyhow::Result<ClientOptions> {
    Ok(ClientOptions {
        receptor_peer: mesh.receptor_peer.clone(),
        receptor_node_id: mesh.receptor_node_id.clone(),
        tls: tls_settings(mesh),
        signer: signer(mesh)?,
        ..ClientOptions::default()
    })
}

/// The work signer of `--signing-key`, if given.
fn signer(mesh: &MeshArgs) -> anyhow::Result<Option<receptord::work::signing::Signer>> {
    let Some(path) = &mesh.signing_key else { return Ok(None) };
    let signer = receptord::work::signing::Signer::load(path, mesh.token_lifetime())
        .map_err(|e| anyhow::anyhow!("--signing-key {e}"))?;
    Ok(Some(signer))
}

fn tls_settings(mesh: &MeshArgs) -> Option<receptord::transport::TlsSettings> {
    let (cert, key) = (mesh.tls_cert.clone()?, mesh.tls_key.clone()?);
    Some(receptord::transport::TlsSettings {
        cert,
        key,
        ca: mesh.tls_ca.clone(),
        require_client_cert: true,
        pinned: Vec::new(),
        min_tls13: false,
        skip_node_id_check: false,
    })
}

/// The mesh options given after the command (taken out of it).
fn take_mesh(c: &mut Command) -> MeshArgs {
    match c {
        Command::Ping { mesh, .. } | Command::Status { mesh, .. } | Command::Traceroute { mesh, .. } => {
            std::mem::take(mesh)
        }
        Command::Work(w) => std::mem::take(&mut w.mesh),
        Command::Run(r) => std::mem::take(&mut r.mesh),
        Command::Cert(_) | Command::Config(_) => MeshArgs::default(),
    }
}

async fn dispatch(mut cli: Cli) -> anyhow::Result<u8> {
    let after = take_mesh(&mut cli.command);
    let mesh = with_client_file(after.or(std::mem::take(&mut cli.mesh)))?;
    let command = match cli.command {
        Command::Run(args) => return run(&mesh, *args).await,
        Command::Cert(c) => return cert(c),
        Command::Config(c) => return config(c),
        Command::Work(w) if mesh.receptor_peer.is_none() => {
            return work::dispatch(w.command, socket_path(&mesh)?).await;
        }
        other => other,
    };
    // Without a peer, the local daemon's control socket, when there is one.
    let local = match &mesh.receptor_peer {
        None => mesh.socket.clone().or_else(receptord::client::socket::default_socket),
        Some(_) => None,
    };
    let command = match (local, command) {
        (Some(sock), Command::Status { json, graph, svg, .. }) => {
            return local::status(&sock, json, graph, svg).await;
        }
        (Some(sock), Command::Ping { node, count, interval, json, .. }) => {
            return local::ping(&sock, &node, count, interval, json).await;
        }
        (Some(sock), Command::Traceroute { node, json, .. }) => {
            return local::traceroute(&sock, &node, json).await;
        }
        (_, other) => other,
    };
    let opts = client_options(&mesh)?;
    let client = MeshClient::connect(&opts).await?;
    let result = match command {
        Command::Ping { node, count, timeout, interval, json, .. } => {
            ping(&client, &node, count, timeout, interval, json).await
        }
        Command::Status { json, graph, svg, .. } => status::run(&client, json, graph, svg).await,
        Command::Traceroute { node, timeout, json, .. } => traceroute(&client, &node, timeout, json).await,
        Command::Work(WorkArgs {
            command:
                WorkCommand::Submit {
                    work_type, node, payload, payload_literal, params, ttl, signwork, json, ..
                },
            ..
        }) => match (node, mesh_submit_refusal(ttl.is_some(), signwork, json)) {
            (_, Some(why)) => Err(anyhow::anyhow!(why)),
            (Some(node), None) => {
                let payload = match payload_literal {
                    Some(text) => Payload::Literal(format!("{text}\n")),
                    None => payload.map_or(Payload::Empty, Payload::File),
                };
                submit(&client, &node, &work_type, payload, &params).await
            }
            (None, None) => {
                Err(anyhow::anyhow!("--node is required to run work over the mesh (--receptor-peer)"))
            }
        },
        Command::Work(WorkArgs { command: WorkCommand::List { unit, quiet, node: Some(node) }, .. }) => {
            work::list_on(&client, &node, unit, quiet).await
        }
        Command::Work(_) => Err(anyhow::anyhow!(
            "work units live on a daemon: use its control socket (--socket) rather than --receptor-peer"
        )),
        Command::Run(_) | Command::Cert(_) | Command::Config(_) => unreachable!("handled above"),
    };
    client.close().await;
    result
}

async fn ping(
    client: &MeshClient,
    node: &NodeId,
    count: u32,
    timeout: Duration,
    interval: Duration,
    json: bool,
) -> anyhow::Result<u8> {
    let mut failures = 0;
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        match client.ping(node, timeout).await {
            Ok(rtt) if json => println!("{}", status::ping_json(node, i, Ok(rtt))),
            Ok(rtt) => println!("Reply from {node} in {:.3} ms", rtt.as_secs_f64() * 1000.0),
            Err(e @ receptord::client::ClientError::Ping(receptord::mesh::PingError::Unknown(_))) => {
                return Err(e.into());
            }
            Err(e) => {
                failures += 1;
                match json {
                    true => println!("{}", status::ping_json(node, i, Err(&e.to_string()))),
                    false => println!("{e}"),
                }
            }
        }
    }
    Ok(if failures == count { 1 } else { 0 })
}

async fn traceroute(client: &MeshClient, node: &NodeId, timeout: Duration, json: bool) -> anyhow::Result<u8> {
    let mut failed = false;
    for (hop, r) in client.node().traceroute(node, timeout).await {
        if json {
            failed |= r.is_err();
            println!("{}", status::hop_json(hop, &r));
            continue;
        }
        match r {
            Ok(reply) => println!("{hop}: {} in {:.3} ms", reply.from, reply.rtt.as_secs_f64() * 1000.0),
            Err(e) => {
                failed = true;
                println!("{hop}: {e}");
            }
        }
    }
    Ok(u8::from(failed))
}

/// What `work submit` over the mesh sends as the job's stdin.
enum Payload {
    Empty,
    /// A file, or `-` for this command's stdin.
    File(PathBuf),
    /// `--payload-literal`'s text and a newline.
    Literal(String),
}

/// Why a `work submit` option cannot apply over the mesh (`--receptor-peer`), where the
/// work runs as a job whose output is printed as it comes and nothing is kept: `--follow`
/// and `--rm` are what it does anyway; options about a stored unit are refused rather
/// than ignored.
fn mesh_submit_refusal(ttl: bool, signwork: bool, json: bool) -> Option<&'static str> {
    match (ttl, signwork, json) {
        (true, _, _) => {
            Some("--ttl applies to work units on a daemon (--socket); over the mesh the job starts at once")
        }
        (_, true, _) => {
            Some("--signwork signs with a daemon's key (--socket); over the mesh use --signing-key")
        }
        (_, _, true) => Some("--json prints a work unit's ID (--socket); over the mesh no unit is kept"),
        _ => None,
    }
}

async fn submit(
    client: &MeshClient,
    node: &NodeId,
    work_type: &str,
    payload: Payload,
    params: &[String],
) -> anyhow::Result<u8> {
    let mut map = serde_json::Map::new();
    for p in params {
        let Some((k, v)) = p.split_once('=') else { bail!("--param {p:?} is not KEY=VALUE") };
        map.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    }
    let payload: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match payload {
        Payload::Empty => Box::new(tokio::io::empty()),
        Payload::Literal(text) => Box::new(std::io::Cursor::new(text.into_bytes())),
        Payload::File(p) if p.as_os_str() == "-" => Box::new(tokio::io::stdin()),
        Payload::File(p) => Box::new(
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

async fn run(mesh: &MeshArgs, a: RunArgs) -> anyhow::Result<u8> {
    use receptord::client::run::{Callbacks, RunOptions, RunRequest};
    receptord::work::lease::check(a.lease).map_err(|e| anyhow::anyhow!("--lease: {e}"))?;
    let via_receptor = a.via_receptor.or_else(|| a.attach.as_ref().map(|at| at.node.clone()));
    // A detached run prints its ident; a streamed one announces it in its first line.
    let new_ident = (a.detach || a.events_stream) && a.ident.is_none();
    let detached_ident = new_ident.then(|| uuid::Uuid::new_v4().simple().to_string());
    let extravars = json_object("--extravars", a.extravars.as_deref())?;
    let envvars = json_object("--envvars", a.envvars.as_deref())?;
    // `--kwargs -`: from stdin, so passwords and keys never show in the process list.
    let kwargs_text = match a.kwargs.as_deref() {
        Some("-") => {
            use std::io::Read;
            let mut text = String::new();
            let n = std::io::stdin()
                .take(MAX_KWARGS + 1)
                .read_to_string(&mut text)
                .context("--kwargs -: reading stdin")?;
            if n as u64 > MAX_KWARGS {
                bail!("--kwargs -: more than {} MiB on stdin", MAX_KWARGS >> 20);
            }
            Some(text)
        }
        other => other.map(str::to_owned),
    };
    let kwargs = json_object("--kwargs", kwargs_text.as_deref())?;
    if let Some((k, _)) = envvars.iter().flatten().find(|(_, v)| !v.is_string()) {
        bail!("--envvars: the value of {k:?} is not a string");
    }
    let options = RunOptions {
        private_data_dir: a.private_data_dir,
        playbook: a.playbook,
        module: a.module,
        module_args: a.module_args,
        host_pattern: a.hosts,
        ident: a.ident.or(detached_ident),
        inventory: a.inventory,
        limit: a.limit,
        forks: a.forks,
        verbosity: (a.verbose > 0).then_some(a.verbose),
        cmdline: a.cmdline,
        json_mode: a.json,
        omit_event_data: a.omit_event_data,
        only_failed_event_data: a.only_failed_event_data,
        rotate_artifacts: a.rotate_artifacts,
        extravars,
        envvars,
        kwargs,
    };
    // Without a peer, a local daemon's control socket (if there is one) carries the job.
    let local = via_receptor.is_none() || via_receptor == mesh.receptor_node_id;
    let control_socket = match (&mesh.receptor_peer, local) {
        (None, false) => mesh.socket.clone().or_else(receptord::client::socket::default_socket),
        _ => None,
    };
    let mut node_id = mesh.receptor_node_id.clone();
    if a.detach && control_socket.is_none() && node_id.is_none() && mesh.tls_cert.is_none() {
        // Attaching over the mesh needs the submitter's node ID: make it one to print.
        node_id = Some(receptord::client::temporary_node_id());
    }
    let req = RunRequest {
        via_receptor,
        receptor_peer: mesh.receptor_peer.clone(),
        receptor_node_id: node_id.clone(),
        tls: tls_settings(mesh),
        control_socket,
        signer: signer(mesh)?,
        lease: Some(a.lease),
        timeout: a.timeout,
        options,
    };
    if a.detach {
        let at = receptord::client::durable::submit(&req).await?;
        println!("{at}");
        let ident = req.options.ident.as_deref().unwrap_or_default();
        let as_node = receptord::client::durable::attach_options(&req, node_id.as_ref());
        eprintln!(
            "receptor: submitted as work unit {at}; follow it within {} with: receptor run {} --attach {at} -i {ident}{as_node}",
            humantime::format_duration(a.lease),
            req.options.private_data_dir.display()
        );
        return Ok(0);
    }
    if a.events_stream {
        return Ok(streamed(&req, a.attach.as_ref()).await);
    }
    let output: Option<Box<dyn Write + Send>> = (!a.quiet).then(|| Box::new(std::io::stdout()) as _);
    let notice: Box<dyn FnMut(&str) + Send> = Box::new(|msg| eprintln!("receptor: {msg}"));
    let callbacks =
        Callbacks { output, progress: true, notice_handler: Some(notice), ..Callbacks::default() };
    let outcome = match &a.attach {
        Some(at) => receptord::client::durable::attach(&req, at, callbacks).await?,
        None => receptord::client::run::run(&req, callbacks).await?,
    };
    if outcome.status != "successful" {
        eprintln!("receptor: run {} ended with status {} (rc {})", outcome.ident, outcome.status, outcome.rc);
    }
    Ok(u8::try_from(outcome.rc).unwrap_or(1))
}

/// `--events-stream`: the run as JSON Lines; the exit status is the rc, or 1 on error.
async fn streamed(
    req: &receptord::client::run::RunRequest,
    attach: Option<&receptord::client::durable::UnitRef>,
) -> u8 {
    let out = stream::Stream::new();
    let ident = req.options.ident.clone().unwrap_or_default();
    let pdd =
        req.options.private_data_dir.canonicalize().unwrap_or_else(|_| req.options.private_data_dir.clone());
    out.emit(&serde_json::json!({
        "type": "start",
        "version": stream::STREAM_VERSION,
        "ident": ident,
        "artifact_dir": pdd.join("artifacts").join(&ident).display().to_string(),
        "via_receptor": req.via_receptor.as_ref().map(|n| n.as_str()),
    }));
    let result = match attach {
        Some(at) => receptord::client::durable::attach(req, at, out.callbacks()).await,
        None => receptord::client::run::run(req, out.callbacks()).await,
    };
    match result {
        Ok(outcome) => {
            out.finished(&outcome);
            u8::try_from(outcome.rc).unwrap_or(1)
        }
        Err(e) => {
            out.error(&e);
            1
        }
    }
}

/// Parses a flag's JSON object (`--extravars`, `--envvars`).
/// Largest `--kwargs -` document read from stdin.
const MAX_KWARGS: u64 = 64 << 20;

fn json_object(
    flag: &str,
    text: Option<&str>,
) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let Some(text) = text else { return Ok(None) };
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
        Ok(_) => bail!("{flag}: not a JSON object"),
        Err(e) => bail!("{flag}: invalid JSON: {e}"),
    }
}

fn subject(s: SubjectArgs) -> Subject {
    Subject { node_ids: s.node_ids, dns: s.dns, ips: s.ip }
}

fn cert(cmd: CertCommand) -> anyhow::Result<u8> {
    match cmd {
        CertCommand::Init { common_name, days, key_type, out_cert, out_key, force } => {
            let (cert, key) = certs::init_ca(&common_name, days, key_type)?;
            certs::write_new(&out_key, &key, 0o600, force)?;
            certs::write_new(&out_cert, &cert, 0o644, force)?;
            println!("CA certificate {} and key {} written", out_cert.display(), out_key.display());
        }
        CertCommand::Issue { subject: s, ca_cert, ca_key, days, out_cert, out_key, force } => {
            let name = s.node_ids.first().cloned().unwrap_or_default();
            let out_cert = out_cert.unwrap_or_else(|| PathBuf::from(format!("{name}.crt")));
            let out_key = out_key.unwrap_or_else(|| PathBuf::from(format!("{name}.key")));
            let (cert, key) = certs::issue(&ca_cert, &ca_key, &subject(s), days)?;
            certs::write_new(&out_key, &key, 0o600, force)?;
            certs::write_new(&out_cert, &cert, 0o644, force)?;
            println!("certificate {} and key {} written", out_cert.display(), out_key.display());
        }
        CertCommand::Makereq { subject: s, in_key, out_req, out_key, force } => {
            let name = s.node_ids.first().cloned().unwrap_or_default();
            let out_req = out_req.unwrap_or_else(|| PathBuf::from(format!("{name}.csr")));
            let key_pem = match &in_key {
                Some(p) => {
                    Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
                }
                None => None,
            };
            let (req, new_key) = certs::make_request(&subject(s), key_pem.as_deref())?;
            if let Some(key) = new_key {
                let out_key = out_key.unwrap_or_else(|| PathBuf::from(format!("{name}.key")));
                certs::write_new(&out_key, &key, 0o600, force)?;
                println!("key {} written", out_key.display());
            }
            certs::write_new(&out_req, &req, 0o644, force)?;
            println!("request {} written", out_req.display());
        }
        CertCommand::Signreq { req, ca_cert, ca_key, days, out_cert, force } => {
            let pem = std::fs::read_to_string(&req).with_context(|| format!("reading {}", req.display()))?;
            let cert = certs::sign_request(&pem, &ca_cert, &ca_key, days)?;
            certs::write_new(&out_cert, &cert, 0o644, force)?;
            println!("certificate {} written", out_cert.display());
        }
    }
    Ok(0)
}
