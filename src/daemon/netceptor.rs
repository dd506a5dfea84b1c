//! The daemon's netceptor plane (Go Receptor peers): started when the config dials a
//! `netceptor://` peer or lets `receptor://` listeners accept Go peers, advertising the
//! control service with this node's work types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::Config;
use crate::mesh::{Foreign, ForeignConn, Node};
use crate::netceptor::proto::LocalService;
use crate::netceptor::wire::{CONN_STREAM, WorkCommand};
use crate::netceptor::{NetceptorNode, Session};
use crate::transport::{Protocol, TlsContext};
use crate::work::units::Units;

/// Whether this config takes part in Go meshes at all.
pub(super) fn wanted(cfg: &Config) -> bool {
    cfg.peers.iter().any(|p| p.url.protocol == Protocol::Netceptor)
        || (cfg.netceptor.accept && !cfg.listeners.is_empty())
}

/// Starts the plane under the mesh node's tracker and cancellation, with `[limits.netceptor]`,
/// and keeps it told which node IDs the native plane holds.
pub(super) fn start(cfg: &Config, node: &Node, tls: Option<TlsContext>) -> NetceptorNode {
    let mut nc = NetceptorNode::config(cfg.node.id.clone());
    nc.allowed_peers = cfg.mesh.allowed_peers.clone();
    nc.limits = cfg.limits.netceptor.clone();
    nc.stall_timeout = cfg.limits.stall_timeout;
    let net = NetceptorNode::start(nc, tls, &node.tracker(), node.cancel_token());
    node.tracker().spawn(reserve_native_ids(net.clone(), node.clone(), cfg.limits.max_nodes));
    net
}

/// Tells the plane every node ID the native plane has linked with or routed to since
/// start (they stay reserved after they leave, so a Go-speaking peer cannot take over
/// the ID of a native node that is down). At `2 × max_nodes` IDs the set restarts from
/// the current topology.
async fn reserve_native_ids(net: NetceptorNode, node: Node, max_nodes: usize) {
    let mut topo = node.topology();
    let cancel = node.cancel_token();
    let mut reserved: BTreeSet<String> = BTreeSet::new();
    loop {
        let (linked, reachable) = {
            let t = topo.borrow_and_update();
            (t.linked.clone(), t.reachable.clone())
        };
        let before = reserved.len();
        if reserved.len() >= 2 * max_nodes.max(1) {
            reserved.clear();
        }
        reserved.extend(linked.iter().chain(reachable.iter()).map(|n| n.as_str().to_owned()));
        if reserved.len() != before || before == 0 {
            net.set_reserved(reserved.clone()).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = topo.changed() => if r.is_err() { return },
        }
    }
}

/// How remote units reach other nodes: over the native mesh, and over netceptor streams
/// to nodes only the netceptor plane knows (Go nodes), when there is a plane.
pub(super) fn remote_control(
    mesh: Arc<dyn crate::work::remote::RemoteControl>,
    net: Option<&NetceptorNode>,
) -> Arc<dyn crate::work::remote::RemoteControl> {
    match net {
        Some(net) => Arc::new(crate::control::plane::PlaneControl { mesh, net: net.clone() }),
        None => mesh,
    }
}

/// The hook that hands Go peers on `receptor://` listeners to the plane.
pub(super) fn foreign(net: &NetceptorNode) -> Foreign {
    let net = net.clone();
    Foreign {
        claims: crate::netceptor::framing::opens_like_netceptor,
        take: Arc::new(move |c: ForeignConn| {
            net.accept(Session {
                io: c.io,
                prefix: bytes::Bytes::new(),
                remote: c.addr.to_string(),
                cost: c.cost,
                dialed: false,
                // On a TLS listener: the node IDs the peer's certificate names (a peer
                // without one, where the listener allows that, proves none).
                cert: c.identity.filter(|i| i.certified).map(|i| i.node_ids),
            })
        }),
    }
}

/// The services advertised to Go nodes: `control`, tagged as Go's control service, with
/// every work type (and whether it verifies signatures).
pub(super) fn services(cfg: &Config, names: &[&str], units: &Units) -> Vec<LocalService> {
    if !(cfg.netceptor.advertise_control && cfg.control.mesh_service) {
        return Vec::new();
    }
    let work: Vec<WorkCommand> = names
        .iter()
        .map(|n| WorkCommand { work_type: (*n).to_owned(), secure: units.is_secure(n) })
        .collect();
    vec![LocalService {
        name: crate::control::CONTROL_SERVICE.into(),
        conn_type: CONN_STREAM,
        tags: Some(BTreeMap::from([("type".to_owned(), "Control Service".to_owned())])),
        work_commands: if work.is_empty() { None } else { Some(work) },
    }]
}

/// Serves the control service to Go nodes over netceptor streams, through the control
/// service's own accept loop (session budget, admission).
pub(super) async fn serve_control(net: &NetceptorNode, control: &crate::control::Control, node: &Node) {
    match net.listen_stream(crate::control::CONTROL_SERVICE).await {
        Ok(listener) => control.clone().serve_on(listener, &node.tracker(), node.cancel_token()),
        Err(e) => tracing::error!(error = %e, "the control service is not served to Go nodes"),
    }
}

/// Resolves when the plane must stop the daemon (never without a plane).
pub(super) async fn fatal(rx: Option<&mut tokio::sync::watch::Receiver<Option<String>>>) -> String {
    let Some(rx) = rx else { return std::future::pending().await };
    match rx.wait_for(Option::is_some).await {
        Ok(m) => m.clone().unwrap_or_default(),
        Err(_) => "the netceptor plane stopped".into(),
    }
}
