//! The metrics HTTP listener: `GET /metrics` (Prometheus text, or OpenMetrics when the
//! `Accept` header prefers it: [`super::expo`]), `GET /healthz`,
//! `GET /readyz`, served by hyper (HTTP/1.1). It is a hostile entry point like any other:
//! connections are bounded in number and lifetime, the request head must arrive within
//! `header_timeout` and fit in 8 KiB, bodies are refused, and only those three paths and
//! `GET`/`HEAD` answer anything but an error.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING, VARY};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head accepted (hyper's smallest buffer).
pub const MAX_HEAD_BYTES: usize = 8192;
/// Most header lines in a request.
pub const MAX_HEADERS: usize = 32;
/// How long a scrape waits for live state (mesh status) before answering with what it has.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer of a health or readiness check.
#[derive(Debug, Clone)]
pub struct Check {
    pub ok: bool,
    /// A short JSON object saying why.
    pub body: serde_json::Value,
}

/// What the listener asks the daemon at request time.
pub trait Probe: Send + Sync + 'static {
    /// Updates the gauges read from live state (nodes, units, jobs...).
    fn refresh(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// `/healthz`: the process is alive with its configuration loaded.
    fn health(&self) -> Check;
    /// `/readyz`: listeners bound, and a configured peer linked when there are any.
    fn ready(&self) -> Check;
}

/// The bounds of the HTTP listener (from `[metrics]`).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most connections open at once; more are closed at once.
    pub max_connections: usize,
    /// A client must send its whole request head within this long.
    pub header_timeout: Duration,
    /// A connection is closed after this long, whatever it is doing.
    pub connection_timeout: Duration,
}

/// Serves `listener` until `cancel`; each connection is a task on `tracker`.
pub fn serve(
    listener: TcpListener,
    cfg: HttpLimits,
    probe: Arc<dyn Probe>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    let (header_timeout, lifetime) = (cfg.header_timeout, cfg.connection_timeout);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let conns = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%addr, "metrics: too many connections; closing");
                continue;
            };
            let (probe, cancel) = (probe.clone(), cancel.clone());
            conns.spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let probe = probe.clone();
                    async move { Ok::<_, Infallible>(answer(probe.as_ref(), req).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .max_headers(MAX_HEADERS);
                let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = &mut conn => if let Err(e) = r { tracing::debug!(%addr, "metrics connection: {e}") },
                    _ = tokio::time::sleep(lifetime) => tracing::debug!(%addr, "metrics connection: lifetime over"),
                    _ = cancel.cancelled() => {}
                }
            });
        }
    });
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn check_reply(c: Check) -> Response<Full<Bytes>> {
    let status = if c.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    reply(status, "application/json", format!("{}\n", c.body))
}

fn error(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    let mut r = reply(status, "text/plain; charset=utf-8", format!("{why}\n"));
    r.headers_mut().insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
    r
}

async fn answer(probe: &dyn Probe, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "only GET");
        r.headers_mut().insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let h = req.headers();
    let has_body = h.contains_key(TRANSFER_ENCODING)
        || h.get(CONTENT_LENGTH).is_some_and(|v| v.to_str().map_or(true, |s| s.trim() != "0"));
    if has_body {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request bodies are not accepted");
    }
    let mut r = match req.uri().path() {
        "/metrics" => {
            let format = super::expo::Format::negotiate(h.get(ACCEPT).and_then(|v| v.to_str().ok()));
            let _ = tokio::time::timeout(REFRESH_TIMEOUT, probe.refresh()).await;
            let mut r = reply(StatusCode::OK, format.content_type(), super::global().encode(format));
            r.headers_mut().insert(VARY, hyper::header::HeaderValue::from_static("Accept"));
            r
        }
        "/healthz" => check_reply(probe.health()),
        "/readyz" => check_reply(probe.ready()),
        _ => return error(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz"),
    };
    if head {
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}
