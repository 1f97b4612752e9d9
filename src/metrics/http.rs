//! The metrics listener: `/metrics`, `/healthz`, `/readyz`, `/statements`.
//!
//! HTTP/1.1 via hyper (no hand-written parser). Requests are GET/HEAD only,
//! headers are capped at [`MAX_HEADER_BYTES`], bodies are never read, idle
//! and slow clients are cut after [`HEADER_READ_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] are served at once: a scraper or a prober cannot make
//! the sidecar use unbounded memory.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{DecisionLabel, Metrics, StatementFilter};

/// Most concurrent connections to the metrics listener.
pub const MAX_CONNECTIONS: usize = 64;
/// Read buffer cap: request line + headers beyond this get a 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A client must send a request's headers within this time (also the keep-alive idle limit).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows `/statements` returns when no `limit` is given.
pub const DEFAULT_STATEMENTS_LIMIT: usize = 500;

/// What `/readyz` checks. The rest of the program flips these; all start false.
///
/// Ready when the config is loaded, the tenant cache has loaded once (only
/// if `[tenants]` is configured), the local region is served (its gateway
/// or a fallback that serves it is up), and the process is not draining
/// for shutdown.
#[derive(Debug)]
pub struct Readiness {
    config_loaded: AtomicBool,
    tenants_required: bool,
    tenants_loaded: AtomicBool,
    local_gateway_up: AtomicBool,
    draining: AtomicBool,
    /// Once set, what answers "is the local region served?" (local
    /// gateway or a fallback), instead of the local gateway's flag alone:
    /// a sidecar whose fallback serves new sessions must stay in load
    /// balancing.
    served: OnceLock<Served>,
}

/// The gateway condition of `/readyz`, asked of the gateway health (which
/// lives above this module, so it is handed down as a closure).
struct Served {
    /// Whether the local region is served (its gateway or a fallback up).
    check: Box<dyn Fn() -> bool + Send + Sync>,
    /// Whether the local region has fallbacks (names the unmet condition).
    fallbacks: bool,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("fallbacks", &self.fallbacks)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// A readiness handle; `tenants_required` is whether `[tenants]` is configured.
    pub fn new(tenants_required: bool) -> Readiness {
        Readiness {
            config_loaded: AtomicBool::new(false),
            tenants_required,
            tenants_loaded: AtomicBool::new(false),
            local_gateway_up: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            served: OnceLock::new(),
        }
    }

    /// Answers the gateway condition from `served` (whether the local
    /// region's gateway or one of its fallbacks is up; `fallbacks`: whether
    /// it has any). Set once (later calls are ignored).
    pub fn follow_gateways(
        &self,
        served: impl Fn() -> bool + Send + Sync + 'static,
        fallbacks: bool,
    ) {
        let _ = self.served.set(Served {
            check: Box::new(served),
            fallbacks,
        });
    }

    /// Config parsed and validated.
    pub fn set_config_loaded(&self, v: bool) {
        self.config_loaded.store(v, Ordering::Relaxed);
    }

    /// Tenant directory loaded (at least once; stays true across failed refreshes
    /// unless the caller decides the cache is unusable).
    pub fn set_tenants_loaded(&self, v: bool) {
        self.tenants_loaded.store(v, Ordering::Relaxed);
    }

    /// Local region's gateway reachable (or a fallback serving it).
    pub fn set_local_gateway_up(&self, v: bool) {
        self.local_gateway_up.store(v, Ordering::Relaxed);
    }

    /// Shutting down: take the pod out of load balancing before connections close.
    pub fn set_draining(&self, v: bool) {
        self.draining.store(v, Ordering::Relaxed);
    }

    /// `Ok` when ready, else the first unmet condition as a short reason.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining");
        }
        if !self.config_loaded.load(Ordering::Relaxed) {
            return Err("config not loaded");
        }
        if self.tenants_required && !self.tenants_loaded.load(Ordering::Relaxed) {
            return Err("tenant cache not loaded");
        }
        match self.served.get() {
            Some(served) if !(served.check)() => {
                return Err(if served.fallbacks {
                    "local gateway and its fallbacks unreachable"
                } else {
                    "local gateway unreachable"
                });
            }
            Some(_) => {}
            None if !self.local_gateway_up.load(Ordering::Relaxed) => {
                return Err("local gateway unreachable");
            }
            None => {}
        }
        Ok(())
    }
}

/// What the endpoints serve.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Metrics and the statement store.
    pub metrics: Arc<Metrics>,
    /// `/readyz` conditions.
    pub readiness: Arc<Readiness>,
}

/// A bound metrics listener, not yet serving.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
}

/// Binds `addr` (port 0 picks a free port; see [`MetricsListener::local_addr`]).
pub async fn bind(addr: SocketAddr) -> std::io::Result<MetricsListener> {
    Ok(MetricsListener {
        listener: TcpListener::bind(addr).await?,
    })
}

/// Binds `addr` and serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    bind(addr).await?.serve(state, shutdown).await;
    Ok(())
}

impl MetricsListener {
    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` completes; connections already
    /// accepted finish on their own (each request is short).
    pub async fn serve(self, state: HttpState, shutdown: impl Future<Output = ()>) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                a = self.listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, &req)) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics listener: connection ended with an error");
                }
            });
        }
    }
}

/// Routes one request. Pure apart from reading the state: never panics.
pub fn handle(state: &HttpState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    route(state, req.method(), req.uri().path(), req.uri().query())
}

fn route(
    state: &HttpState,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match path {
        "/metrics" => {
            let body = state.metrics.encode_text();
            respond(StatusCode::OK, prometheus::TEXT_FORMAT, body.into())
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {reason}\n"),
            ),
        },
        "/statements" => match parse_filter(query) {
            Ok(filter) => {
                let report = state.metrics.statements().report(&filter);
                match serde_json::to_vec(&report) {
                    Ok(body) => respond(StatusCode::OK, "application/json", body.into()),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
                }
            }
            Err(msg) => text(StatusCode::BAD_REQUEST, &msg),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz, /readyz, /statements\n",
        ),
    }
}

/// `/statements?decision=reject&table=users&limit=50`.
fn parse_filter(query: Option<&str>) -> Result<StatementFilter, String> {
    let mut filter = StatementFilter {
        limit: Some(DEFAULT_STATEMENTS_LIMIT),
        ..Default::default()
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "decision" => {
                filter.decision = Some(DecisionLabel::parse(value).ok_or_else(|| {
                    "decision must be one of global, route, rewrite, scatter, reject\n".to_owned()
                })?);
            }
            // Table labels are identifiers: no percent-decoding needed.
            "table" => filter.table = Some(value.to_owned()),
            "limit" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| "limit must be a non-negative integer\n".to_owned())?;
                filter.limit = Some(n);
            }
            _ => return Err("known parameters: decision, table, limit\n".to_owned()),
        }
    }
    Ok(filter)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_condition_and_names_the_missing_one() {
        let r = Readiness::new(true);
        assert_eq!(r.check(), Err("config not loaded"));
        r.set_config_loaded(true);
        assert_eq!(r.check(), Err("tenant cache not loaded"));
        r.set_tenants_loaded(true);
        assert_eq!(r.check(), Err("local gateway unreachable"));
        r.set_local_gateway_up(true);
        assert_eq!(r.check(), Ok(()));
        r.set_draining(true);
        assert_eq!(r.check(), Err("draining"));
    }

    #[test]
    fn readiness_following_the_gateways_asks_them_and_names_the_fallbacks() {
        let up = Arc::new(AtomicBool::new(true));
        let r = Readiness::new(false);
        r.set_config_loaded(true);
        let served = up.clone();
        r.follow_gateways(move || served.load(Ordering::Relaxed), true);
        assert_eq!(r.check(), Ok(()), "the local flag is not asked");
        up.store(false, Ordering::Relaxed);
        assert_eq!(
            r.check(),
            Err("local gateway and its fallbacks unreachable")
        );
        up.store(true, Ordering::Relaxed);
        assert_eq!(r.check(), Ok(()));
    }

    #[test]
    fn readiness_without_tenants_ignores_the_tenant_cache() {
        let r = Readiness::new(false);
        r.set_config_loaded(true);
        r.set_local_gateway_up(true);
        assert_eq!(r.check(), Ok(()));
    }

    #[test]
    fn statements_filter_rejects_unknown_values() {
        assert!(parse_filter(Some("decision=nope")).is_err());
        assert!(parse_filter(Some("limit=-1")).is_err());
        assert!(parse_filter(Some("foo=1")).is_err());
        let f = parse_filter(Some("decision=reject&table=users&limit=3")).unwrap();
        assert_eq!(f.decision, Some(DecisionLabel::Reject));
        assert_eq!(f.table.as_deref(), Some("users"));
        assert_eq!(f.limit, Some(3));
    }
}
