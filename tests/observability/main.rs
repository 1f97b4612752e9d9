//! Observability, by what it tests:
//!
//! - [`registry`]: the metrics registry as served over real HTTP, every
//!   contract metric with its type, labels and exact counts;
//! - [`endpoints`]: `/healthz`, `/readyz`, `/statements`, and the decision
//!   logs, bounded and free of literals;
//! - [`dashboard`]: the Grafana dashboard and the alert rules validated
//!   against the registry, and every PromQL expression evaluated by a real
//!   Prometheus scraping the listener;
//! - [`live`]: the same endpoints on a live geogate serving a scripted
//!   workload over three real PostgreSQL clusters (eu, us, apac), scraped by
//!   a real Prometheus.
//!
//! Support: [`workload`] (the scripted workload and the listener serving a
//! registry), [`exposition`] (the text format as a scraper reads it, and
//! the metrics contract), [`prometheus`] (a real Prometheus server).
//!
//! Needs Debian's `prometheus` package (`apt-get install prometheus`, which
//! also ships `promtool`); the Prometheus tests fail, never skip, without it.
//! The live tests run PostgreSQL clusters through `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod dashboard;
mod endpoints;
mod exposition;
mod live;
mod prometheus;
mod registry;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// GET over a real HTTP/1.1 client connection: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_with_header(addr, path, None).await
}

/// [`get`] with one more request header.
pub async fn get_with_header(
    addr: SocketAddr,
    path: &str,
    header: Option<(&str, String)>,
) -> (u16, String) {
    common::http_get(addr, path, header)
        .await
        .unwrap_or_else(|| panic!("GET {path} from {addr} failed"))
}

/// A file of this repository.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Polls `check` every 250 ms until it returns true, for at most `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
