//! The daemon's netceptor plane (Go Receptor peers): started when the config dials a
//! `netceptor://` peer, has a `netceptor+udp://` listener, lets `receptor://` listeners
//! accept Go peers or carries netceptor over native links (`[netceptor] native_links`),
//! advertising the control service with this node's work types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::Config;
use crate::mesh::{Foreign, ForeignConn, Node};
use crate::netceptor::proto::LocalService;
use crate::netceptor::wire::{CONN_STREAM, CONN_STREAM_TLS, WorkCommand};
use crate::netceptor::{NetceptorNode, Session};
use crate::transport::{Protocol, TlsContext};
use crate::work::units::Units;

/// Whether this config takes part in Go meshes at all.
pub(super) fn wanted(cfg: &Config) -> bool {
    cfg.peers.iter().chain(&cfg.listeners).any(|p| p.url.protocol == Protocol::Netceptor)
        || (cfg.netceptor.accept && !cfg.listeners.is_empty())
        || cfg.netceptor.native_links
}

/// The hook by which native links carry the plane's sessions (`[netceptor] native_links`).
pub(super) fn carrier(net: &NetceptorNode) -> crate::mesh::Carrier {
    let open_net = net.clone();
    crate::mesh::Carrier {
        active: net.active(),
        open: Arc::new(move |l: crate::mesh::CarriedLink| {
            let (inbound, outbound) = open_net.carry(&l.peer, l.cost);
            crate::mesh::CarriedPorts { inbound, outbound: Box::pin(outbound) }
        }),
    }
}

/// Starts the plane under the mesh node's tracker and cancellation, with `[limits.netceptor]`,
/// and keeps it told which node IDs the native plane holds.
pub(super) fn start(cfg: &Config, node: &Node, tls: Option<TlsContext>) -> NetceptorNode {
    let mut nc = NetceptorNode::config(cfg.node.id.clone());
    nc.allowed_peers = cfg.mesh.allowed_peers.clone();
    nc.limits = cfg.limits.netceptor.clone();
    nc.stall_timeout = cfg.limits.stall_timeout;
    // A child token: the plane can be withdrawn on its own (see `withdraw`) while the
    // native plane runs on.
    let net = NetceptorNode::start(nc, tls, &node.tracker(), node.cancel_token().child_token());
    let record = cfg.node.data_dir.join(RESERVED_FILE);
    node.tracker().spawn(reserve_native_ids(net.clone(), node.clone(), cfg.limits.max_nodes, record));
    net
}

/// Where the reserved IDs are kept across restarts (under `node.data_dir`).
const RESERVED_FILE: &str = "netceptor-reserved-ids";

/// Tells the plane every node ID the native plane has linked with or routed to (they stay
/// reserved after they leave, so a Go-speaking peer cannot take over the ID of a native
/// node that is down). Client sessions (`NODE~TAG`) and temporary `receptor-client-…` IDs
/// are not reserved (they come and go; a session is its node's anyway). The set is kept in
/// `record`, so it holds from the first moment after a restart, before the native plane
/// has converged. At `2 × max_nodes` IDs it restarts from the current topology.
async fn reserve_native_ids(net: NetceptorNode, node: Node, max_nodes: usize, record: std::path::PathBuf) {
    let mut topo = node.topology();
    let cancel = node.cancel_token();
    let limit = 2 * max_nodes.max(1);
    let mut reserved: BTreeSet<String> = read_reserved(&record, limit);
    let mut first = true;
    loop {
        let (linked, reachable) = {
            let t = topo.borrow_and_update();
            (t.linked.clone(), t.reachable.clone())
        };
        let before = reserved.len();
        if reserved.len() >= limit {
            reserved.clear();
        }
        reserved.extend(
            linked
                .iter()
                .chain(reachable.iter())
                .filter(|n| !n.is_session() && !n.as_str().starts_with(crate::identity::UNCERTIFIED_PREFIX))
                .map(|n| n.as_str().to_owned()),
        );
        if reserved.len() != before || first {
            first = false;
            net.set_reserved(reserved.clone()).await;
            write_reserved(&record, &reserved);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = topo.changed() => if r.is_err() { return },
        }
    }
}

/// The IDs kept by an earlier run (one per line; bounded; anything unreadable is skipped).
fn read_reserved(path: &std::path::Path, limit: usize) -> BTreeSet<String> {
    use std::io::Read;
    // At most `limit` IDs of at most 64 bytes and a newline each are read.
    let mut text = String::new();
    let cap = (limit as u64).saturating_mul(crate::wire::MAX_NODE_ID_LEN as u64 + 1);
    let Ok(file) = std::fs::File::open(path) else { return BTreeSet::new() };
    if file.take(cap).read_to_string(&mut text).is_err() {
        return BTreeSet::new();
    }
    text.lines()
        .filter_map(|l| crate::wire::NodeId::new(l.trim()).ok())
        .filter(|n| !n.is_session())
        .map(|n| n.as_str().to_owned())
        .take(limit)
        .collect()
}

fn write_reserved(path: &std::path::Path, ids: &BTreeSet<String>) {
    let mut text = String::new();
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
        tracing::warn!(error = %e, path = %path.display(), "cannot record the reserved node IDs");
    }
}

/// How remote units reach other nodes: over the native mesh, and over netceptor streams
/// to nodes only the netceptor plane knows (Go nodes), when there is a plane.
pub(super) fn remote_control(
    mesh: Arc<dyn crate::work::remote::RemoteControl>,
    net: Option<&NetceptorNode>,
) -> Arc<dyn crate::work::remote::RemoteControl> {
    match net {
        Some(net) => {
            Arc::new(crate::control::plane::PlaneControl { mesh, net: net.clone(), user_tls: false })
        }
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
    // The ConnType AWX reads (`Advertisements`) to decide whether to submit with its
    // TLS client.
    let conn_type = if cfg.netceptor.control_tls(cfg.tls.is_some()) { CONN_STREAM_TLS } else { CONN_STREAM };
    vec![LocalService {
        name: crate::control::CONTROL_SERVICE.into(),
        conn_type,
        tags: Some(BTreeMap::from([("type".to_owned(), "Control Service".to_owned())])),
        work_commands: if work.is_empty() { None } else { Some(work) },
    }]
}

/// Serves the control service to Go nodes over netceptor streams (user TLS when
/// `netceptor.control_tls`), through the control service's own accept loop (session
/// budget, admission).
pub(super) async fn serve_control(
    cfg: &Config,
    net: &NetceptorNode,
    control: &crate::control::Control,
    node: &Node,
) {
    let tls = cfg.netceptor.control_tls(cfg.tls.is_some());
    match net.listen_stream(crate::control::CONTROL_SERVICE, tls).await {
        Ok(listener) => control.clone().serve_on(listener, &node.tracker(), node.cancel_token()),
        Err(e) => tracing::error!(error = %e, "the control service is not served to Go nodes"),
    }
}

/// Resolves when the plane must stop (never without a plane): another node with this
/// node's ID started after it, or someone says so in its routing updates.
pub(super) async fn fatal(rx: Option<&mut tokio::sync::watch::Receiver<Option<String>>>) -> String {
    let Some(rx) = rx else { return std::future::pending().await };
    match rx.wait_for(Option::is_some).await {
        Ok(m) => m.clone().unwrap_or_default(),
        Err(_) => "the netceptor plane stopped".into(),
    }
}

/// Takes this node off the netceptor plane for good (until restart or reload) and says
/// why, loudly. Go Receptor exits in this case; receptord keeps its native plane and its
/// running work, because the accusation is an unauthenticated routing update: a
/// netceptor peer that forges one must not be able to stop the whole daemon.
pub(super) fn withdraw(net: &NetceptorNode, why: &str) {
    tracing::error!(
        "{why}; this node leaves the Go Receptor (netceptor) mesh until it is restarted with another \
         node ID or the other node is gone; its native links and work go on"
    );
    crate::systemd::status(&format!("netceptor plane withdrawn: {why}"));
    net.withdraw();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ids_survive_a_restart_without_sessions_or_junk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(RESERVED_FILE);
        let ids: BTreeSet<String> = ["hub-a", "node7"].iter().map(|s| s.to_string()).collect();
        write_reserved(&path, &ids);
        assert_eq!(read_reserved(&path, 10), ids);
        std::fs::write(&path, "hub-a\nctl~tag\nbad id\n\nnode7\nnode8\n").expect("write");
        assert_eq!(read_reserved(&path, 10), ids.iter().cloned().chain(["node8".to_owned()]).collect());
        assert_eq!(read_reserved(&path, 1).len(), 1, "bounded");
        assert!(read_reserved(&dir.path().join("none"), 10).is_empty());
        // A huge file is read only as far as `limit` IDs can reach.
        std::fs::write(&path, format!("node9\n{}", "x".repeat(8 << 20))).expect("write");
        assert_eq!(read_reserved(&path, 2), ["node9".to_owned()].into_iter().collect());
    }
}
