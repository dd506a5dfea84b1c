//! The daemon's Prometheus metrics: one process-wide registry of counters and gauges, no
//! I/O. Other modules only bump counters through the small typed methods below (a relaxed
//! atomic add each); [`http`] serves them, with `/healthz` and `/readyz`; `probe` fills
//! the gauges that are read from live state at scrape time and samples link round trips.
//!
//! One registry per process: a `receptord` process is one mesh node. (A client process
//! counts too, but nothing serves its registry.)

pub mod expo;
pub mod http;
pub mod process;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Label sets: a few fixed keys with owned values.
pub type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// At most this many distinct `peer` label values; further peers count as `_other`.
/// Short-lived clients (the `receptor` CLI, each with a fresh node ID) always count as
/// `_client`, so they never grow the series count.
pub const MAX_PEER_SERIES: usize = 256;
/// The `peer` label of short-lived client links.
pub const CLIENT_PEER: &str = "_client";
/// The `peer` label of peers past [`MAX_PEER_SERIES`].
pub const OTHER_PEER: &str = "_other";

/// Job duration buckets, seconds: 10 ms to 3 hours (longer runs count in `+Inf` only).
pub const DURATION_BUCKETS: [f64; 15] =
    [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 10800.0];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub(crate) link_up: Family<Labels, Gauge>,
    pub(crate) link_established: Family<Labels, Counter>,
    pub(crate) link_reconnects: Family<Labels, Counter>,
    pub(crate) link_bytes_in: Family<Labels, Counter>,
    pub(crate) link_bytes_out: Family<Labels, Counter>,
    pub(crate) link_frames_in: Family<Labels, Counter>,
    pub(crate) link_frames_out: Family<Labels, Counter>,
    pub(crate) link_rtt: Family<Labels, Gauge<f64, AtomicU64>>,
    handshakes_refused: Family<Labels, Counter>,
    pub(crate) nodes_known: Gauge,
    pub(crate) routing_db_bytes: Gauge,
    pub(crate) routes: Gauge,
    adverts_in: Counter,
    adverts_out: Counter,
    adverts_dropped: Family<Labels, Counter>,
    links_stalled: Counter,
    streams_refused: Counter,
    routed_dropped: Family<Labels, Counter>,
    stream_auth_failed: Family<Labels, Counter>,
    stream_handshakes: Family<Labels, Counter>,
    route_computations: Counter,
    netceptor_dropped: Family<Labels, Counter>,
    streams_open: Gauge,
    control_sessions: Gauge,
    control_sessions_total: Counter,
    pub(crate) units: Family<Labels, Gauge>,
    pub(crate) jobs_running: Family<Labels, Gauge>,
    jobs_started: Family<Labels, Counter>,
    jobs_finished: Family<Labels, Counter>,
    job_duration: HistogramFamily,
    output_bytes: Family<Labels, Counter>,
    pub(crate) unit_output_bytes: Gauge,
    /// `peer` label values handed out so far (bounded by [`MAX_PEER_SERIES`]).
    peers_seen: Mutex<HashSet<String>>,
    /// Node IDs this node reached by dialing (its configured peers), for `/readyz`.
    dialed: Mutex<HashSet<String>>,
    /// `/metrics` requests served.
    pub(crate) scrapes: AtomicU64,
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn global() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::new)
}

fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}

/// How a work run ended, for the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Canceled,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Canceled => "canceled",
        }
    }
}

/// What kind of work: a mesh job (`receptor run`, `work submit --receptor-peer`) or a
/// durable work unit (control socket, receptorctl, AWX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    Job,
    Unit,
}

impl WorkKind {
    fn name(self) -> &'static str {
        match self {
            WorkKind::Job => "job",
            WorkKind::Unit => "unit",
        }
    }
}

macro_rules! reg {
    ($r:expr, $name:expr, $help:expr, $m:expr) => {{
        let m = $m;
        $r.register($name, $help, m.clone());
        m
    }};
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("receptor");
        let features = if cfg!(debug_assertions) { "debug" } else { "release" };
        r.register(
            "build",
            "Build information",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("protocol", crate::wire::PROTOCOL_VERSION.to_string()),
                ("features", format!("tls,control,work-units,ansible-runner,{features}")),
            ]),
        );
        let hist: HistogramFamily = Family::new_with_constructor(duration_histogram);
        Metrics {
            link_up: reg!(r, "link_up", "Links up to this peer", Family::default()),
            link_established: reg!(r, "link_established", "Links established", Family::default()),
            link_reconnects: reg!(r, "link_reconnects", "Links re-established", Family::default()),
            link_bytes_in: reg!(r, "link_received_bytes", "Protocol bytes received", Family::default()),
            link_bytes_out: reg!(r, "link_sent_bytes", "Protocol bytes sent", Family::default()),
            link_frames_in: reg!(r, "link_received_frames", "Frames received", Family::default()),
            link_frames_out: reg!(r, "link_sent_frames", "Frames sent", Family::default()),
            link_rtt: reg!(r, "link_rtt_seconds", "Mesh ping round trip to the peer", Family::default()),
            handshakes_refused: reg!(
                r,
                "handshakes_refused",
                "Connections that did not become links",
                Family::default()
            ),
            nodes_known: reg!(r, "routing_nodes", "Nodes in the link-state database", Gauge::default()),
            routing_db_bytes: reg!(
                r,
                "routing_database_bytes",
                "Encoded size of the link-state database",
                Gauge::default()
            ),
            routes: reg!(r, "routing_routes", "Nodes with a route from here", Gauge::default()),
            adverts_in: reg!(r, "routing_adverts_received", "Advertisements received", Counter::default()),
            adverts_out: reg!(r, "routing_adverts_sent", "Advertisements sent", Counter::default()),
            adverts_dropped: reg!(
                r,
                "routing_adverts_dropped",
                "Advertisements not taken, by reason: stale (not newer), rate (limits.advert_rate), \
                 db_full (limits.max_nodes / max_db_bytes)",
                Family::default()
            ),
            links_stalled: reg!(
                r,
                "links_stalled",
                "Links closed because their peer stopped reading",
                Counter::default()
            ),
            streams_refused: reg!(
                r,
                "streams_refused",
                "Streams refused at limits.streams_per_peer",
                Counter::default()
            ),
            routed_dropped: reg!(
                r,
                "routed_frames_dropped",
                "Routed frames dropped at the edge, by reason: foreign_src (a leaf link sent a frame \
                 naming another node as its source), own_src (a link brought a frame naming this node), error_reply_budget (an error answer \
                 over limits.error_reply_rate was not sent)",
                Family::default()
            ),
            stream_auth_failed: reg!(
                r,
                "stream_auth_failures",
                "End-to-end stream handshakes or records that failed, by side: opener, acceptor, \
                 integrity (a record failed its check, or a frame was repeated), sequence (a protected \
                 stream's frames missing, reordered or cut short: tampering or a reroute)",
                Family::default()
            ),
            stream_handshakes: reg!(
                r,
                "stream_handshakes",
                "End-to-end stream handshakes this node accepted, by kind: full (certificates \
                 proven) or resumed (a ticket from a full one within limits.stream_resumption)",
                Family::default()
            ),
            route_computations: reg!(
                r,
                "routing_computations",
                "Shortest-path computations",
                Counter::default()
            ),
            netceptor_dropped: reg!(
                r,
                "netceptor_dropped",
                "Netceptor (Go Receptor) packets and datagrams dropped, by reason (docs/METRICS.md)",
                Family::default()
            ),
            streams_open: reg!(r, "streams_open", "Stream ends open at this node", Gauge::default()),
            control_sessions: reg!(r, "control_sessions_open", "Control sessions open", Gauge::default()),
            control_sessions_total: reg!(
                r,
                "control_sessions",
                "Control sessions served",
                Counter::default()
            ),
            units: reg!(r, "work_units", "Work units held, by state", Family::default()),
            jobs_running: reg!(r, "work_running", "Jobs and work units running", Family::default()),
            jobs_started: reg!(r, "work_started", "Jobs and work units started", Family::default()),
            jobs_finished: reg!(r, "work_finished", "Jobs and work units finished", Family::default()),
            job_duration: reg!(r, "work_duration_seconds", "Run time of finished work", hist),
            output_bytes: reg!(
                r,
                "work_output_bytes",
                "Output bytes written by jobs and local work units",
                Family::default()
            ),
            unit_output_bytes: reg!(
                r,
                "work_unit_output_bytes",
                "Output bytes held by work units",
                Gauge::default()
            ),
            registry: r,
            peers_seen: Mutex::new(HashSet::new()),
            dialed: Mutex::new(HashSet::new()),
            scrapes: AtomicU64::new(0),
        }
    }

    /// The exposition text in `format`, with the `process_*` families read now.
    pub fn encode(&self, format: expo::Format) -> String {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        if let Some(s) = process::sample() {
            process::encode(&mut out, &s);
        }
        match format {
            expo::Format::OpenMetrics => {
                let _ = prometheus_client::encoding::text::encode_eof(&mut out);
                out
            }
            expo::Format::Prometheus => expo::to_prometheus_text(&out),
        }
    }

    /// The `peer` label for a link to `node` (ephemeral clients pooled, count bounded).
    /// `first` says whether this label was never handed out before.
    pub(crate) fn peer_label(&self, node: &str, ephemeral: bool) -> (Labels, bool) {
        if ephemeral {
            return (label("peer", CLIENT_PEER), false);
        }
        let mut seen = self.peers_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(node) {
            return (label("peer", node), false);
        }
        if seen.len() >= MAX_PEER_SERIES {
            return (label("peer", OTHER_PEER), false);
        }
        seen.insert(node.to_owned());
        (label("peer", node), true)
    }

    /// Labels of a peer that already has series (for the RTT sampler), if any.
    pub(crate) fn known_peer(&self, node: &str) -> Option<Labels> {
        let seen = self.peers_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.contains(node).then(|| label("peer", node))
    }

    /// The handshake of a connection failed or was refused; `reason` is a short fixed
    /// word (`bad_preface`, `timeout`, `version`, `refused`, `refused_by_peer`, `protocol`,
    /// `tls`, `overload`, `io`).
    pub fn handshake_refused(&self, reason: &'static str) {
        self.handshakes_refused.get_or_create(&label("reason", reason)).inc();
    }

    /// This node dialed a connection and the peer announced `node`.
    pub fn dialed(&self, node: &str) {
        let mut d = self.dialed.lock().unwrap_or_else(|p| p.into_inner());
        if d.len() < MAX_PEER_SERIES {
            d.insert(node.to_owned());
        }
    }

    /// Whether `node` was ever reached by dialing (a configured peer).
    pub fn was_dialed(&self, node: &str) -> bool {
        self.dialed.lock().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    pub fn advert_in(&self) {
        self.adverts_in.inc();
    }
    pub fn advert_out(&self) {
        self.adverts_out.inc();
    }
    /// An advertisement was not taken; `reason` is `stale`, `rate`, `db_full`, or (before
    /// the state machine, `mesh::origin`) `unsigned`, `forged` or `not_origin`.
    pub fn advert_dropped(&self, reason: &'static str) {
        self.adverts_dropped.get_or_create(&label("reason", reason)).inc();
    }
    pub fn link_stalled(&self) {
        self.links_stalled.inc();
    }
    pub fn stream_refused(&self) {
        self.streams_refused.inc();
    }
    /// A routed frame was dropped where it entered the mesh; `reason` is `foreign_src`,
    /// `own_src` or `error_reply_budget` (an error answer not sent).
    pub fn routed_dropped(&self, reason: &'static str) {
        self.routed_dropped.get_or_create(&label("reason", reason)).inc();
    }
    /// An end-to-end stream failed authentication; `side` is `opener`, `acceptor` or
    /// `integrity`.
    pub fn stream_auth_failed(&self, side: &'static str) {
        self.stream_auth_failed.get_or_create(&label("side", side)).inc();
    }
    /// This node accepted an end-to-end stream handshake; `kind` is `full` or `resumed`.
    pub fn stream_handshake(&self, kind: &'static str) {
        self.stream_handshakes.get_or_create(&label("kind", kind)).inc();
    }
    pub fn route_computation(&self) {
        self.route_computations.inc();
    }
    /// `n` netceptor packets or datagrams dropped; `reason` is one of the fixed names of
    /// `netceptor::proto::Drops::by_reason` (a bounded set).
    pub fn netceptor_dropped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.netceptor_dropped.get_or_create(&label("reason", reason)).inc_by(n);
        }
    }

    /// A stream end opened; it counts as open while the guard lives.
    pub fn stream_opened(&self) -> OpenGuard {
        self.streams_open.inc();
        OpenGuard(self.streams_open.clone())
    }

    /// A control session started; it counts as open while the guard lives.
    pub fn control_session(&self) -> OpenGuard {
        self.control_sessions_total.inc();
        self.control_sessions.inc();
        OpenGuard(self.control_sessions.clone())
    }

    /// Work of `kind` started.
    pub fn work_started(&self, kind: WorkKind) {
        self.jobs_started.get_or_create(&label("kind", kind.name())).inc();
    }

    /// Work of `kind` ended after `took` (unknown for a unit reattached after a restart).
    pub fn work_finished(&self, kind: WorkKind, outcome: Outcome, took: Option<Duration>) {
        let labels = vec![("kind", kind.name().to_owned()), ("outcome", outcome.name().to_owned())];
        self.jobs_finished.get_or_create(&labels).inc();
        if let Some(t) = took {
            self.job_duration.get_or_create(&label("kind", kind.name())).observe(t.as_secs_f64());
        }
    }

    /// A mesh job wrote `n` bytes of output.
    pub fn job_output(&self, n: usize) {
        self.output_bytes.get_or_create(&label("kind", WorkKind::Job.name())).inc_by(n as u64);
    }

    /// A local work unit's output grew by `n` bytes (seen by the daemon watching it).
    pub fn unit_output(&self, n: u64) {
        self.output_bytes.get_or_create(&label("kind", WorkKind::Unit.name())).inc_by(n);
    }

    /// How many times `/metrics` was served.
    pub fn scrape_count(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }
}

/// Keeps a gauge raised while alive.
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for OpenGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenGuard")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_labels_are_bounded_and_clients_pooled() {
        let m = Metrics::new();
        assert_eq!(m.peer_label("c1", true).0[0].1, CLIENT_PEER);
        for i in 0..MAX_PEER_SERIES {
            assert!(m.peer_label(&format!("n{i}"), false).1);
        }
        assert!(!m.peer_label("n0", false).1, "a known peer is not new");
        assert_eq!(m.peer_label("late", false).0[0].1, OTHER_PEER);
    }

    #[test]
    fn the_grafana_dashboard_only_queries_exported_metrics() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/grafana/receptord-dashboard.json");
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("valid JSON");
        // Families without series yet are not in the exposition: compare with the names
        // registered above.
        let source = include_str!("mod.rs");
        let mut queried = 0;
        for panel in dash["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if let Some(name) = word.strip_prefix("receptor_") {
                        let base = name.trim_end_matches("_bucket").trim_end_matches("_total");
                        let registered = format!("reg!(r, \"{base}\"");
                        let registered_wrapped = format!("\n                r,\n                \"{base}\"");
                        assert!(
                            source.contains(&registered) || source.contains(&registered_wrapped),
                            "{word} is not exported"
                        );
                        queried += 1;
                    }
                }
            }
        }
        assert!(queried >= 20, "{queried}");
    }

    #[test]
    fn the_exposition_names_every_family() {
        let m = Metrics::new();
        m.work_started(WorkKind::Job);
        m.work_finished(WorkKind::Job, Outcome::Succeeded, Some(Duration::from_millis(20)));
        m.handshake_refused("bad_preface");
        let text = m.encode(expo::Format::OpenMetrics);
        for name in [
            "receptor_build_info{",
            "receptor_work_started_total{kind=\"job\"} 1",
            "receptor_work_finished_total{kind=\"job\",outcome=\"succeeded\"} 1",
            "receptor_work_duration_seconds_bucket{",
            "receptor_handshakes_refused_total{reason=\"bad_preface\"} 1",
            "receptor_routing_adverts_received_total 0",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        let text = m.encode(expo::Format::Prometheus);
        assert!(text.contains("# TYPE receptor_build_info gauge\n"), "{text}");
        assert!(text.contains("# TYPE receptor_work_started_total counter\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains(" info\n"), "{text}");
        assert!(
            text.contains("receptor_work_duration_seconds_bucket{le=\"10800.0\",kind=\"job\"} 1"),
            "{text}"
        );
    }
}
