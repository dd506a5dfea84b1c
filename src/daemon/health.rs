//! The daemon side of the metrics listener: gauges read from live state at scrape time
//! (nodes, routes, work units by state, running work), `/healthz` and `/readyz`, and the
//! link round-trip sampler.
//!
//! Link RTT is a mesh ping to each linked peer (the keepalives are one-way, so they carry
//! no round trip): routed by the table, which for a direct peer is normally the direct
//! link, every `rtt_interval`. A failed ping sets the gauge to NaN.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::mesh::Node;
use crate::metrics::global;
use crate::metrics::http::{Check, Probe};
use crate::work::service::WorkService;
use crate::work::units::{Origin, State, Units};

/// Live state the daemon hands to the metrics listener.
pub struct DaemonProbe {
    pub node: Node,
    pub work: WorkService,
    pub units: Units,
    /// How many `[[peers]]` the config lists.
    pub peers_configured: usize,
    /// Set once every listener is bound and serving.
    pub listeners_bound: AtomicBool,
}

const STATES: [State; 5] = [State::Pending, State::Running, State::Succeeded, State::Failed, State::Canceled];

impl DaemonProbe {
    fn refresh_work(&self) {
        let m = global();
        let mut by_state: BTreeMap<&'static str, i64> = STATES.iter().map(|s| (s.name(), 0)).collect();
        let mut output = 0u64;
        let mut running_units = 0;
        for (_, st) in self.units.list_for(&Origin::Socket) {
            *by_state.entry(st.state.name()).or_default() += 1;
            output = output.saturating_add(st.stdout_size);
            running_units += i64::from(st.state == State::Running);
        }
        for (state, n) in by_state {
            m.units.get_or_create(&vec![("state", state.to_owned())]).set(n);
        }
        m.unit_output_bytes.set(i64::try_from(output).unwrap_or(i64::MAX));
        let jobs = i64::try_from(self.work.running()).unwrap_or(i64::MAX);
        m.jobs_running.get_or_create(&vec![("kind", "job".to_owned())]).set(jobs);
        m.jobs_running.get_or_create(&vec![("kind", "unit".to_owned())]).set(running_units);
    }

    async fn refresh_mesh(&self) {
        let m = global();
        let Some(st) = self.node.status().await else { return };
        m.nodes_known.set(st.nodes.len() as i64);
        m.routes.set(st.routes.len() as i64);
        let bytes: usize = st.nodes.iter().map(|l| crate::wire::Frame::Lsa(l.clone()).encode().len()).sum();
        m.routing_db_bytes.set(bytes as i64);
    }

    /// Configured peers that are linked now (known by the ID they announced when dialed).
    fn peers_linked(&self) -> Vec<String> {
        let m = global();
        let topo = self.node.topology();
        let linked: Vec<String> =
            topo.borrow().linked.iter().map(|n| n.to_string()).filter(|n| m.was_dialed(n)).collect();
        linked
    }
}

impl Probe for DaemonProbe {
    fn refresh(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.refresh_work();
            self.refresh_mesh().await;
        })
    }

    fn health(&self) -> Check {
        Check { ok: true, body: json!({"status": "ok", "node": self.node.id().as_str(), "config": "loaded"}) }
    }

    fn ready(&self) -> Check {
        let bound = self.listeners_bound.load(Ordering::SeqCst);
        let linked = self.peers_linked();
        let (ok, reason) = if !bound {
            (false, "listeners are not bound yet".to_owned())
        } else if self.peers_configured > 0 && linked.is_empty() {
            (false, format!("none of the {} configured peers is linked", self.peers_configured))
        } else if self.peers_configured == 0 {
            (true, "listeners bound; no peers configured".to_owned())
        } else {
            (true, format!("listeners bound; {} configured peer(s) linked", linked.len()))
        };
        let body = json!({
            "ready": ok,
            "reason": reason,
            "listeners_bound": bound,
            "peers_configured": self.peers_configured,
            "peers_linked": linked,
        });
        Check { ok, body }
    }
}

/// Pings every linked peer each `interval` and records the round trip, until the node stops.
pub fn spawn_rtt_sampler(node: &Node, interval: Duration) {
    let n = node.clone();
    let cancel = node.cancel_token();
    node.tracker().spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut measured: Vec<crate::metrics::Labels> = Vec::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let m = global();
            let linked: Vec<crate::wire::NodeId> = n.topology().borrow().linked.iter().cloned().collect();
            let mut now_measured = Vec::new();
            for peer in linked {
                let Some(labels) = m.known_peer(peer.as_str()) else { continue };
                let rtt = match n.ping(&peer, interval.min(Duration::from_secs(5))).await {
                    Ok(d) => d.as_secs_f64(),
                    Err(_) => f64::NAN,
                };
                m.link_rtt.get_or_create(&labels).set(rtt);
                now_measured.push(labels);
            }
            for gone in measured.iter().filter(|l| !now_measured.contains(l)) {
                m.link_rtt.get_or_create(gone).set(f64::NAN);
            }
            measured = now_measured;
        }
    });
}

/// Binds the metrics listener when `[metrics] listen` is set (with the other listeners,
/// before the node starts).
pub async fn bind(cfg: &crate::config::Config) -> Result<Option<tokio::net::TcpListener>, std::io::Error> {
    let Some(addr) = cfg.metrics.addr() else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
    tracing::info!(addr = %bound, "metrics endpoint ready (/metrics, /healthz, /readyz)");
    Ok(Some(listener))
}

/// Serves the metrics listener and samples link round trips. The daemon sets the probe's
/// `listeners_bound` once its listeners serve.
pub fn start(
    listener: tokio::net::TcpListener,
    cfg: &crate::config::Config,
    node: &Node,
    work: &WorkService,
    units: &Units,
) -> Arc<DaemonProbe> {
    let probe = Arc::new(DaemonProbe {
        node: node.clone(),
        work: work.clone(),
        units: units.clone(),
        peers_configured: cfg.peers.len(),
        listeners_bound: AtomicBool::new(false),
    });
    let limits = crate::metrics::http::HttpLimits {
        max_connections: cfg.metrics.max_connections,
        header_timeout: cfg.metrics.header_timeout,
        connection_timeout: cfg.metrics.connection_timeout,
    };
    crate::metrics::http::serve(listener, limits, probe.clone(), &node.tracker(), node.cancel_token());
    spawn_rtt_sampler(node, cfg.metrics.rtt_interval);
    probe
}
