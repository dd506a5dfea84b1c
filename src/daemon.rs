//! Assembles a persistent node from its [`Config`]: binds listeners, dials peers, builds the
//! work registry, serves work, and handles signals (SIGTERM/SIGINT: drain then stop).

mod health;
mod memory;
mod netceptor;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::mesh::state::Role;
use crate::mesh::{MeshConfig, Node, NodeOptions};
use crate::transport::{Listener, TlsContext, TlsError, TransportError};
use crate::work::admit::Policy;
use crate::work::authz::Authorization;
use crate::work::command::CommandWork;
use crate::work::service::WorkService;
use crate::work::signing::{Signer, Verifier};
use crate::work::units::{Units, UnitsConfig};
use crate::work::{Registry, ansible};

/// Why the daemon stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("listeners[{index}]: {source}")]
    Bind { index: usize, source: TransportError },
    #[error("data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("{0}")]
    Fatal(String),
    #[error("TLS: {0}")]
    Tls(TlsError),
    #[error(transparent)]
    Control(crate::control::ControlError),
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
    #[error("work.{key}: {source}")]
    Key { key: &'static str, source: crate::work::signing::KeyError },
    #[error("work units: {0}")]
    Units(crate::work::units::UnitError),
    #[error("work tokens: {0}")]
    TokenJournal(crate::work::replay::ReplayError),
    #[error("metrics.listen: {0}")]
    Metrics(std::io::Error),
}

/// Settings of the work-unit store (signing keys loaded: a bad key fails here, before
/// anything is bound).
pub fn units_config(cfg: &Config) -> Result<UnitsConfig, DaemonError> {
    let signer = match &cfg.work.signing {
        Some(s) => Some(
            Signer::load(&s.private_key, s.token_expiration)
                .map_err(|source| DaemonError::Key { key: "signing.private_key", source })?,
        ),
        None => None,
    };
    let retention = Some(cfg.work.unit_retention).filter(|d| !d.is_zero());
    Ok(UnitsConfig {
        node: cfg.node.id.clone(),
        root: cfg.node.data_dir.join("units"),
        supervisor_exe: supervisor_exe(),
        scope_runner: cfg.work.unit_scopes.then(crate::systemd::scope_runner).flatten(),
        retention,
        signer,
        cancel_wait: cfg.node.shutdown_grace.min(Duration::from_secs(10)),
        max_payload: cfg.limits.max_payload,
        integrity_attempts: cfg.limits.integrity_attempts,
    })
}

/// The admission policy: the verification key (loaded: a bad key fails here, before
/// anything is bound), Go-token acceptance and the quotas.
pub fn admission_policy(cfg: &Config) -> Result<Policy, DaemonError> {
    let verifier = match &cfg.work.verification {
        Some(v) => Some(
            Verifier::load(&v.public_key)
                .map_err(|source| DaemonError::Key { key: "verification.public_key", source })?,
        ),
        None => None,
    };
    Ok(Policy {
        verifier,
        accept_replayable_go_tokens: cfg
            .work
            .verification
            .as_ref()
            .is_some_and(|v| v.accept_replayable_go_tokens),
        units_per_node: cfg.limits.units_per_node,
        signed_tokens: cfg.limits.signed_tokens,
    })
}

/// This very binary, for work-unit supervisors: `/proc/self/exe` still runs it after a
/// package upgrade has replaced (deleted) the file, and keeps supervisor and daemon at the
/// same version.
fn supervisor_exe() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return proc_exe;
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("receptord"))
}

/// Whether every link this node makes or accepts is TLS.
fn tls_only(cfg: &Config) -> bool {
    cfg.listeners.iter().chain(&cfg.peers).all(|l| l.url.scheme == crate::transport::Scheme::Tls)
}

/// Mesh options derived from the config.
pub fn node_options(cfg: &Config) -> NodeOptions {
    let mut opts = NodeOptions::new(cfg.node.id.clone());
    opts.mesh = MeshConfig {
        refresh: cfg.mesh.route_refresh,
        node_timeout: cfg.mesh.node_timeout,
        max_hops: cfg.mesh.max_hops,
        max_nodes: cfg.limits.max_nodes,
        max_db_bytes: cfg.limits.max_db_bytes,
        role: if cfg.is_leaf() { Role::Leaf } else { Role::Hub },
        ..MeshConfig::default()
    };
    opts.limits = cfg.limits.clone();
    opts.idle_timeout = cfg.mesh.idle_timeout;
    opts.window = cfg.mesh.stream_window;
    opts.dial_timeout = cfg.mesh.dial_timeout;
    opts.allowed_peers = cfg.mesh.allowed_peers.clone();
    // Validated at load (`Config::validate`).
    opts.relays = match &cfg.mesh.relays {
        Some(p) => crate::mesh::relay::RelayPolicy::only(p).unwrap_or_default(),
        None => crate::mesh::relay::RelayPolicy::any(),
    };
    opts
}

/// The work types the config declares, plus the detected ansible-runner worker.
pub fn build_registry(cfg: &Config) -> Registry {
    let mut reg = Registry::default();
    for c in &cfg.work.command {
        let program = crate::work::command::resolve_program(&c.program).unwrap_or_else(|| c.program.clone());
        let work = CommandWork {
            program,
            args: c.args.clone(),
            version: c.version.clone(),
            env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cwd: c.cwd.clone(),
            grace: cfg.node.shutdown_grace.min(Duration::from_secs(10)),
            allow_runtime_params: c.allow_runtime_params,
            verify_signature: c.verify_signature,
            merge_stderr: false,
        };
        reg.register(c.name.clone(), Arc::new(work));
    }
    ansible::register(
        &mut reg,
        &cfg.work.ansible_runner,
        cfg.node.shutdown_grace.min(Duration::from_secs(10)),
    );
    reg
}

/// Loads the TLS material the config names (before anything is bound).
pub fn load_tls(cfg: &Config) -> Result<Option<TlsContext>, DaemonError> {
    let Some(tls) = &cfg.tls else { return Ok(None) };
    TlsContext::load_with(tls.settings(), cfg.node.id.as_str(), cfg.limits.stream_resumption)
        .map(Some)
        .map_err(DaemonError::Tls)
}

/// Runs the daemon until a signal or a fatal condition. `config_path` is re-read on SIGHUP.
pub async fn run(cfg: Config, config_path: PathBuf) -> Result<(), DaemonError> {
    let data_dir = cfg.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|source| DaemonError::DataDir { path: data_dir.display().to_string(), source })?;
    let tls = load_tls(&cfg)?;
    let units_cfg = units_config(&cfg)?;
    let policy = admission_policy(&cfg)?;
    let mut listeners = Vec::new();
    let mut udp_listeners = Vec::new();
    for (index, l) in cfg.listeners.iter().enumerate() {
        if l.url.scheme == crate::transport::Scheme::Udp {
            let sock = crate::netceptor::udp::bind(&l.url.host, l.url.port).await.map_err(|source| {
                DaemonError::Bind { index, source: TransportError::Bind { url: l.url.to_string(), source } }
            })?;
            udp_listeners.push((l.url.clone(), sock, l.cost));
            continue;
        }
        let bound = Listener::bind(&l.url, tls.clone())
            .await
            .map_err(|source| DaemonError::Bind { index, source })?;
        listeners.push((bound, l.cost, l.relays));
    }
    let control_listener = bind_control(&cfg)?;
    let control_tcp = match cfg.control.tcp_addr().filter(|_| cfg.control.enabled) {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
                DaemonError::Control(crate::control::ControlError {
                    path: addr.clone(),
                    reason: e.to_string(),
                })
            })?;
            let bound = l.local_addr().map(|a| a.to_string()).unwrap_or(addr);
            let kind = if cfg.control.tcp_tls { "TLS" } else { "plain TCP" };
            tracing::info!(addr = %bound, "control TCP socket ready ({kind})");
            if !cfg.control.tcp_tls && !l.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
                tracing::warn!(addr = %bound, "the plain TCP control listener is reachable from the network: anyone who connects controls this node");
            }
            Some(l)
        }
        None => None,
    };
    let metrics_listener = health::bind(&cfg).await.map_err(DaemonError::Metrics)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut opts = node_options(&cfg);
    opts.tls = tls.clone();
    opts.e2e_streams = cfg.tls.as_ref().is_none_or(|t| t.e2e_streams);
    let e2e_streams = opts.e2e_streams;
    let node = Node::start(opts);
    // Work is served before any link exists, so nothing reaches a node without its service.
    let work = WorkService::new(node.clone(), build_registry(&cfg), data_dir.clone())
        .with_max_jobs(cfg.work.max_jobs);
    work.set_authorization(Authorization::new(cfg.work.allow.clone()));
    work.admission().set_policy(policy);
    let live = work.admission().open_token_journal(&data_dir.join("tokens.journal"));
    tracing::debug!(live = ?live.as_ref().ok(), "used work tokens loaded");
    live.map_err(DaemonError::TokenJournal)?;
    work.start();
    let net = netceptor::wanted(&cfg).then(|| netceptor::start(&cfg, &node, tls.clone()));
    if let Some(net) = net.as_ref().filter(|_| cfg.netceptor.native_links) {
        // Before any link exists: every native link offers to carry the plane's packets.
        node.set_carrier(netceptor::carrier(net));
    }
    let remote = netceptor::remote_control(
        Arc::new(crate::control::client::MeshControl {
            node: node.clone(),
            tls_only: tls_only(&cfg),
            streams: crate::control::client::StreamAuth::of(tls.is_some(), e2e_streams),
        }),
        net.as_ref(),
    );
    let units = Units::open(units_cfg, work.admission(), remote, node.tracker(), node.cancel_token())
        .map_err(DaemonError::Units)?;
    if let Some(net) = &net {
        net.set_services(netceptor::services(&cfg, &work.registry().names(), &units)).await;
    }
    let probe = metrics_listener.map(|l| health::start(l, &cfg, &node, &work, &units));
    let control_allow = Arc::new(std::sync::RwLock::new(cfg.control.allow.clone()));
    let reloader = reload::Reloader {
        path: config_path.clone(),
        state: Arc::new(tokio::sync::Mutex::new(reload::State::new(
            cfg.clone(),
            net.as_ref().map(|n| (n.clone(), cfg.netceptor.accept)),
        ))),
        tls: tls.clone(),
        node: node.clone(),
        work: work.clone(),
        units: units.clone(),
        control_allow: control_allow.clone(),
    };
    let r = reloader.clone();
    let reload_fn: crate::control::ReloadFn = Arc::new(move || {
        let r = r.clone();
        Box::pin(async move { r.reload().await })
    });
    let control = crate::control::Control {
        node: node.clone(),
        reload: reload_fn,
        units: units.clone(),
        sessions: crate::control::SessionBudget::new(&cfg.limits),
        allow: control_allow.clone(),
        netceptor: net.clone(),
        idle_timeout: cfg.limits.control_idle_timeout,
        handshake_timeout: cfg.limits.control_handshake_timeout,
        write_timeout: cfg.limits.control_write_timeout,
    };
    if cfg.control.mesh_service {
        control.clone().serve_mesh(&node.tracker(), node.cancel_token());
        if let Some(net) = net.as_ref().filter(|_| cfg.netceptor.advertise_control) {
            netceptor::serve_control(&cfg, net, &control, &node).await;
        }
    }
    if let Some(listener) = control_tcp {
        let ctx = if cfg.control.tcp_tls { tls.clone() } else { None };
        control.clone().serve_tcp(listener, ctx, &node.tracker(), node.cancel_token());
    }
    if let Some(listener) = control_listener {
        control.serve(listener, &node.tracker(), node.cancel_token());
    }
    {
        let mut state = reloader.state.lock().await;
        for (listener, cost, relays) in listeners {
            state.add_listener(&node, listener, cost, relays);
        }
        for (url, sock, cost) in udp_listeners {
            state.add_udp_listener(&node, &url, sock, cost);
        }
        for p in &cfg.peers {
            state.add_peer(&node, p);
        }
    }
    if let Some(p) = &probe {
        p.listeners_bound.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    tracing::info!(node = %node.id(), work_types = ?work.registry().names(), "receptord ready");
    warn_if_open(&cfg, &work);
    let (topo, jobs, us) = (node.topology(), work.clone(), units.clone());
    crate::systemd::spawn_heartbeat(&node.tracker(), node.cancel_token(), move || {
        let t = topo.borrow();
        format!(
            "links: {}, reachable nodes: {}, running jobs: {}, active work units: {}",
            t.linked.len(),
            t.reachable.len(),
            jobs.running(),
            us.active()
        )
    });
    crate::systemd::ready();
    memory::after_start_up(&node.tracker(), node.cancel_token());
    let mut fatal = node.fatal();
    let mut net_fatal = net.as_ref().map(|n| n.fatal());
    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break Ok(()) }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break Ok(()) }
            _ = sighup.recv() => {
                let _ = reloader.reload().await;
                memory::release("reload");
            }
            r = fatal.wait_for(Option::is_some) => {
                let msg = r.ok().and_then(|m| m.clone()).unwrap_or_default();
                break Err(DaemonError::Fatal(msg));
            }
            msg = netceptor::fatal(net_fatal.as_mut()) => {
                if let Some(n) = net.as_ref() {
                    netceptor::withdraw(n, &msg);
                }
                net_fatal = None;
            }
        }
    };
    crate::systemd::stopping();
    crate::systemd::status("stopping: draining jobs");
    let grace = cfg.node.shutdown_grace;
    if work.running() > 0 {
        tracing::info!(jobs = work.running(), ?grace, "waiting for running jobs");
    }
    work.drain(grace).await;
    node.shutdown(Duration::from_secs(5)).await;
    tracing::info!("receptord stopped");
    outcome
}

/// Says so loudly when anyone who can reach a plaintext listener may run this node's work.
fn warn_if_open(cfg: &Config, work: &WorkService) {
    let names = work.registry().names().join(", ");
    let plain: Vec<String> = cfg
        .listeners
        .iter()
        .filter(|l| l.url.scheme != crate::transport::Scheme::Tls)
        .map(|l| l.url.to_string())
        .collect();
    if cfg.work.allow.is_empty() && !plain.is_empty() && !names.is_empty() {
        tracing::warn!(
            "any host that can reach {} may run work here ({names}): use TLS listeners or [[work.allow]] rules",
            plain.join(", ")
        );
    }
}

/// Binds the control socket the config asks for; the default path only when its
/// directory exists (under systemd, RuntimeDirectory creates it).
fn bind_control(cfg: &Config) -> Result<Option<tokio::net::UnixListener>, DaemonError> {
    let c = &cfg.control;
    if !c.enabled {
        return Ok(None);
    }
    let path = match &c.socket {
        Some(p) => p.clone(),
        None => {
            let p = crate::control::default_socket();
            if !p.parent().is_some_and(Path::is_dir) {
                tracing::info!(path = %p.display(), "control socket not started: its directory does not exist");
                return Ok(None);
            }
            p
        }
    };
    let listener =
        crate::control::bind(&path, c.mode_bits(), c.group.as_deref()).map_err(DaemonError::Control)?;
    tracing::info!(path = %path.display(), "control socket bound");
    Ok(Some(listener))
}
