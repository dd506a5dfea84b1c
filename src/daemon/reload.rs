//! `systemctl reload` (SIGHUP) and the control `reload` command: re-read the config and
//! apply what can change on a running node — listeners and peers (added and removed one by
//! one, every other link left alone), TLS material, work types, signing keys and
//! authorization rules — and name the keys that only a restart applies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{admission_policy, build_registry, units_config};
use crate::config::{Config, LinkSection};
use crate::mesh::{LinkHandle, Node};
use crate::netceptor::NetceptorNode;
use crate::transport::{Listener, PeerUrl, Protocol, Scheme, TlsContext};
use crate::work::authz::Authorization;
use crate::work::service::WorkService;
use crate::work::units::Units;
use tokio::net::UdpSocket;

/// How long a listener whose cost changed may take to release its port before the new one
/// binds it (the old accept loop ends asynchronously).
const REBIND_WAIT: Duration = Duration::from_secs(2);

/// A running listener or peer, keyed by its URL.
struct Running {
    handle: Handle,
    cost: f64,
    /// `relays` of the listener (peers: always true).
    relays: bool,
}

/// Stops a listener, a native peer's dial loop or a Go peer's.
enum Handle {
    Native(LinkHandle),
    Netceptor(tokio_util::sync::CancellationToken),
}

impl Handle {
    fn stop(&self) {
        match self {
            Handle::Native(h) => h.stop(),
            Handle::Netceptor(t) => t.cancel(),
        }
    }
}

/// What the node runs now: the config last applied, and its listeners and peers.
pub(super) struct State {
    cfg: Config,
    /// The netceptor plane, and whether listeners hand it Go peers.
    net: Option<(NetceptorNode, bool)>,
    listeners: BTreeMap<String, Running>,
    peers: BTreeMap<String, Running>,
}

impl State {
    pub(super) fn new(cfg: Config, net: Option<(NetceptorNode, bool)>) -> State {
        State { cfg, net, listeners: BTreeMap::new(), peers: BTreeMap::new() }
    }

    pub(super) fn add_listener(&mut self, node: &Node, listener: Listener, cost: f64, relays: bool) {
        let key = listener.url().to_string();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(url = %key, %addr, "listener bound");
        }
        let foreign = match &self.net {
            Some((net, true)) => Some(super::netceptor::foreign(net)),
            _ => None,
        };
        let handle = Handle::Native(node.listen_with(listener, cost, relays, foreign));
        self.listeners.insert(key, Running { handle, cost, relays });
    }

    /// Serves Go's UDP peers on `sock` (a `netceptor+udp://` listener).
    pub(super) fn add_udp_listener(&mut self, node: &Node, url: &PeerUrl, sock: UdpSocket, cost: f64) {
        let key = url.to_string();
        let Some((net, _)) = &self.net else {
            tracing::warn!(%url, "UDP listener added by a reload: restart receptord to serve Go peers");
            return;
        };
        if let Ok(addr) = sock.local_addr() {
            tracing::info!(url = %key, %addr, "netceptor UDP listener ready");
        }
        let stop = node.cancel_token().child_token();
        net.serve_udp(sock, url, cost, stop.clone());
        self.listeners.insert(key, Running { handle: Handle::Netceptor(stop), cost, relays: true });
    }

    pub(super) fn add_peer(&mut self, node: &Node, peer: &LinkSection) {
        let handle = match (&self.net, peer.url.protocol) {
            (Some((net, _)), Protocol::Netceptor) => {
                let stop = node.cancel_token().child_token();
                net.add_peer(peer.url.clone(), peer.cost, stop.clone());
                Handle::Netceptor(stop)
            }
            (None, Protocol::Netceptor) => {
                tracing::warn!(url = %peer.url, "netceptor peer added by a reload: restart receptord to dial Go peers");
                return;
            }
            (_, Protocol::Native) => Handle::Native(node.add_peer(peer.url.clone(), peer.cost)),
        };
        self.peers.insert(peer.url.to_string(), Running { handle, cost: peer.cost, relays: true });
    }
}

/// Everything a reload touches; cloned into the control socket's reload command.
#[derive(Clone)]
pub(super) struct Reloader {
    pub(super) path: PathBuf,
    pub(super) state: Arc<Mutex<State>>,
    pub(super) tls: Option<TlsContext>,
    pub(super) node: Node,
    pub(super) work: WorkService,
    pub(super) units: Units,
    /// `[[control.allow]]`, shared with the control listeners.
    pub(super) control_allow: Arc<std::sync::RwLock<Vec<crate::control::allow::ControlAllow>>>,
}

impl Reloader {
    /// Re-reads the config file and applies it. An invalid file keeps the running state;
    /// a listener that cannot be bound is reported and skipped, the rest still applies.
    pub(super) async fn reload(&self) -> Result<(), String> {
        crate::systemd::reloading();
        let r = self.apply().await;
        crate::systemd::reload_done(&r);
        r
    }

    async fn apply(&self) -> Result<(), String> {
        let cfg = match Config::load(&self.path) {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::error!("reload: keeping the running configuration: {e}");
                return Err(e.to_string());
            }
        };
        let mut state = self.state.lock().await;
        let mut errors = Vec::new();
        let restart = restart_only_changes(&state.cfg, &cfg);
        if !restart.is_empty() {
            tracing::warn!(
                "reload: {} changed; these keys take effect only on restart (systemctl restart receptord)",
                restart.join(", ")
            );
        }
        if let Some(ctx) = &self.tls {
            match ctx.reload(state.cfg.node.id.as_str()) {
                Ok(()) => tracing::info!("reload: TLS material reloaded"),
                Err(e) => {
                    tracing::error!("reload: keeping the old TLS material: {e}");
                    errors.push(format!("TLS material not reloaded: {e}"));
                }
            }
        }
        self.apply_listeners(&mut state, &cfg, &mut errors).await;
        self.apply_peers(&mut state, &cfg);
        match (units_config(&cfg), admission_policy(&cfg)) {
            (Ok(mut ucfg), Ok(policy)) => {
                ucfg.node = state.cfg.node.id.clone();
                ucfg.root = state.cfg.node.data_dir.join("units");
                self.units.reconfigure(ucfg);
                self.work.admission().set_policy(policy);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("reload: keeping the old work signing keys: {e}");
                errors.push(e.to_string());
            }
        }
        self.work.set_authorization(Authorization::new(cfg.work.allow.clone()));
        if let Ok(mut rules) = self.control_allow.write() {
            *rules = cfg.control.allow.clone();
        }
        self.work.set_registry(build_registry(&cfg)).await;
        tracing::info!(
            work_types = ?self.work.registry().names(),
            listeners = ?state.listeners.keys().collect::<Vec<_>>(),
            peers = ?state.peers.keys().collect::<Vec<_>>(),
            "reload: done"
        );
        // What a restart would apply stays pending: the next reload compares with what runs.
        let pending = std::mem::replace(&mut state.cfg, cfg);
        keep_restart_only(&mut state.cfg, pending);
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    async fn apply_listeners(&self, state: &mut State, cfg: &Config, errors: &mut Vec<String>) {
        let wanted: BTreeMap<String, &LinkSection> =
            cfg.listeners.iter().map(|l| (l.url.to_string(), l)).collect();
        let stale: Vec<String> = state
            .listeners
            .iter()
            .filter(|(url, r)| wanted.get(*url).is_none_or(|l| l.cost != r.cost || l.relays != r.relays))
            .map(|(url, _)| url.clone())
            .collect();
        for url in &stale {
            if let Some(r) = state.listeners.remove(url) {
                r.handle.stop();
                tracing::info!(%url, "reload: listener stopped");
            }
        }
        for (index, l) in cfg.listeners.iter().enumerate() {
            let url = l.url.to_string();
            if state.listeners.contains_key(&url) {
                continue;
            }
            if l.url.scheme == Scheme::Udp {
                match bind_udp_retrying(l, stale.contains(&url)).await {
                    Ok(sock) => state.add_udp_listener(&self.node, &l.url, sock, l.cost),
                    Err(e) => {
                        tracing::error!("reload: listeners[{index}] ({url}) not started: {e}");
                        errors.push(format!("listeners[{index}] ({url}): {e}"));
                    }
                }
                continue;
            }
            match bind_retrying(l, self.tls.clone(), stale.contains(&url)).await {
                Ok(listener) => state.add_listener(&self.node, listener, l.cost, l.relays),
                Err(e) => {
                    tracing::error!("reload: listeners[{index}] ({url}) not started: {e}");
                    errors.push(format!("listeners[{index}] ({url}): {e}"));
                }
            }
        }
    }

    fn apply_peers(&self, state: &mut State, cfg: &Config) {
        let wanted: BTreeMap<String, &LinkSection> =
            cfg.peers.iter().map(|p| (p.url.to_string(), p)).collect();
        let stale: Vec<String> = state
            .peers
            .iter()
            .filter(|(url, r)| wanted.get(*url).is_none_or(|p| p.cost != r.cost))
            .map(|(url, _)| url.clone())
            .collect();
        for url in stale {
            if let Some(r) = state.peers.remove(&url) {
                r.handle.stop();
                tracing::info!(%url, "reload: peer removed");
            }
        }
        for p in &cfg.peers {
            if !state.peers.contains_key(&p.url.to_string()) {
                tracing::info!(url = %p.url, "reload: peer added");
                state.add_peer(&self.node, p);
            }
        }
    }
}

/// Binds a listener; when it replaces one just stopped (a cost change), waits a bounded
/// time for the old one to release the port.
async fn bind_retrying(
    l: &LinkSection,
    tls: Option<TlsContext>,
    replacing: bool,
) -> Result<Listener, crate::transport::TransportError> {
    let deadline = tokio::time::Instant::now() + REBIND_WAIT;
    loop {
        match Listener::bind(&l.url, tls.clone()).await {
            Ok(listener) => return Ok(listener),
            Err(e) if !replacing || tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// [`bind_retrying`] for a `netceptor+udp://` listener.
async fn bind_udp_retrying(l: &LinkSection, replacing: bool) -> std::io::Result<UdpSocket> {
    let deadline = tokio::time::Instant::now() + REBIND_WAIT;
    loop {
        match crate::netceptor::udp::bind(&l.url.host, l.url.port).await {
            Ok(sock) => return Ok(sock),
            Err(e) if !replacing || tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The keys a reload cannot apply, where `new` differs from what runs.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut keys = Vec::new();
    if running.node.id != new.node.id {
        keys.push("node.id");
    }
    if running.node.data_dir != new.node.data_dir {
        keys.push("node.data_dir");
    }
    if running.node.shutdown_grace != new.node.shutdown_grace {
        keys.push("node.shutdown_grace");
    }
    if !same(&running.mesh, &new.mesh) {
        keys.push("[mesh]");
    } else if running.is_leaf() != new.is_leaf() {
        keys.push("mesh.role (without a role key, a node with [[listeners]] is a hub, one without a leaf)");
    }
    if !same(&running.log, &new.log) {
        keys.push("[log]");
    }
    // `[[control.allow]]` is applied on reload; the rest of [control] needs a restart.
    let (mut running_control, mut new_control) = (running.control.clone(), new.control.clone());
    running_control.allow.clear();
    new_control.allow.clear();
    if !same(&running_control, &new_control) {
        keys.push("[control]");
    }
    if !same(&running.tls, &new.tls) {
        keys.push("[tls] (its files are re-read; their paths and settings are not)");
    }
    if running.work.max_jobs != new.work.max_jobs {
        keys.push("work.max_jobs");
    }
    if running.limits != new.limits {
        keys.push("[limits]");
    }
    if !same(&running.metrics, &new.metrics) {
        keys.push("[metrics]");
    }
    if running.netceptor != new.netceptor {
        keys.push("[netceptor]");
    }
    keys
}

/// Keeps in `applied` the running values of the keys only a restart changes.
fn keep_restart_only(applied: &mut Config, running: Config) {
    applied.node = running.node;
    applied.mesh = running.mesh;
    applied.log = running.log;
    let allow = std::mem::take(&mut applied.control.allow);
    applied.control = running.control;
    applied.control.allow = allow;
    applied.tls = running.tls;
    applied.work.max_jobs = running.work.max_jobs;
    applied.limits = running.limits;
    applied.metrics = running.metrics;
    applied.netceptor = running.netceptor;
}
