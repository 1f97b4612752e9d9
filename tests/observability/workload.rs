//! The scripted workload: steps applied to a `Metrics` registry and,
//! independently, to the series values a test expects; and the metrics
//! listener serving such a registry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use geogate::metrics::http::{self, HttpState, Readiness};
use geogate::metrics::{
    CacheResult, DecisionLabel, Metrics, Outcome, RejectReason, ScatterCause, StatementEvent,
};
use tokio::sync::oneshot;

use crate::exposition::{SeriesKey, key};

pub const TABLES: &[&str] = &["tenants", "users", "orders", "plans"];
pub const REGIONS: &[&str] = &["eu", "us", "apac"];

/// A metrics listener on a free loopback port, stopped on drop.
pub struct Listener {
    pub addr: SocketAddr,
    pub _stop: oneshot::Sender<()>,
}

pub async fn start_listener(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Listener {
    let bound = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = bound.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bound.serve(HttpState { metrics, readiness }, async move {
        let _ = stopped.await;
    }));
    Listener { addr, _stop: stop }
}

/// One thing the proxy can report; the test's own model says what each adds.
#[derive(Clone, Copy)]
pub enum Step {
    Statement(Outcome, Option<&'static str>, Option<&'static str>),
    Duration(DecisionLabel, &'static str, f64),
    CacheLookup(CacheResult),
    CacheEntries(usize),
    UpstreamUp(&'static str, bool),
    UpstreamConnections(&'static str, usize),
    Failover(&'static str, &'static str),
    CrossRegionTxn,
    ParseError,
    RegionMove(&'static str, &'static str, &'static str),
}

/// Applies steps to `Metrics` and, independently, to the expected series values.
#[derive(Default)]
pub struct Model {
    pub expected: HashMap<SeriesKey, f64>,
    pub durations: Vec<(DecisionLabel, &'static str, f64)>,
}

impl Model {
    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        *self.expected.entry(key(name, labels)).or_default() += v;
    }
    pub fn set(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.expected.insert(key(name, labels), v);
    }

    pub fn run(&mut self, metrics: &Metrics, steps: &[Step]) {
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Statement(outcome, table, region) => {
                    let fingerprint = format!("SELECT * FROM t WHERE id = $1 /* step {i} */");
                    metrics.record_statement(&StatementEvent {
                        outcome,
                        table,
                        region,
                        fingerprint: &fingerprint,
                    });
                    let t = table.unwrap_or("none");
                    let r = region.unwrap_or("none");
                    let d = outcome.decision().as_str();
                    self.add(
                        "geogate_statements_total",
                        &[("decision", d), ("table", t), ("region", r)],
                        1.0,
                    );
                    match outcome {
                        Outcome::Reject(reason) => self.add(
                            "geogate_rejections_total",
                            &[("reason", reason.as_str()), ("table", t)],
                            1.0,
                        ),
                        Outcome::Scatter(cause) => self.add(
                            "geogate_scatter_total",
                            &[("table", t), ("cause", cause.as_str())],
                            1.0,
                        ),
                        Outcome::Rewrite => self.add(
                            "geogate_rewrites_total",
                            &[("table", t), ("region", r)],
                            1.0,
                        ),
                        Outcome::Global | Outcome::Route => {}
                    }
                }
                Step::Duration(d, region, secs) => {
                    metrics.observe_duration(d, Some(region), Duration::from_secs_f64(secs));
                    self.durations.push((d, region, secs));
                }
                Step::CacheLookup(result) => {
                    metrics.tenant_cache_lookup(result);
                    self.add(
                        "geogate_tenant_cache_lookups_total",
                        &[("result", result.as_str())],
                        1.0,
                    );
                }
                Step::CacheEntries(n) => {
                    metrics.set_tenant_cache_entries(n);
                    self.set("geogate_tenant_cache_entries", &[], n as f64);
                }
                Step::UpstreamUp(region, up) => {
                    metrics.set_upstream_up(region, up);
                    self.set(
                        "geogate_upstream_up",
                        &[("region", region)],
                        if up { 1.0 } else { 0.0 },
                    );
                }
                Step::UpstreamConnections(region, n) => {
                    metrics.set_upstream_connections(region, n);
                    self.set(
                        "geogate_upstream_connections",
                        &[("region", region)],
                        n as f64,
                    );
                }
                Step::Failover(from, to) => {
                    metrics.failover(from, to);
                    self.add(
                        "geogate_failovers_total",
                        &[("from", from), ("to", to)],
                        1.0,
                    );
                }
                Step::CrossRegionTxn => {
                    metrics.cross_region_transaction();
                    self.add("geogate_cross_region_transactions_total", &[], 1.0);
                }
                Step::ParseError => {
                    metrics.parse_error();
                    self.add("geogate_parse_errors_total", &[], 1.0);
                }
                Step::RegionMove(table, from, to) => {
                    metrics.region_move(Some(table), Some(from), Some(to));
                    self.add(
                        "geogate_region_moves_total",
                        &[("table", table), ("from", from), ("to", to)],
                        1.0,
                    );
                }
            }
        }
    }

    /// Histogram series implied by the observed durations.
    pub fn histogram_expectations(&self) -> HashMap<SeriesKey, f64> {
        let mut out = HashMap::new();
        for &(d, region, secs) in &self.durations {
            let labels = [("decision", d.as_str()), ("region", region)];
            *out.entry(key("geogate_statement_duration_seconds_count", &labels))
                .or_default() += 1.0;
            *out.entry(key("geogate_statement_duration_seconds_sum", &labels))
                .or_default() += secs;
            for le in geogate::metrics::DURATION_BUCKETS {
                if secs <= *le {
                    let le = le.to_string();
                    let l = [("decision", d.as_str()), ("region", region), ("le", &le)];
                    *out.entry(key("geogate_statement_duration_seconds_bucket", &l))
                        .or_default() += 1.0;
                }
            }
        }
        out
    }
}

/// Every decision, every rejection reason, every scatter cause, a failover,
/// a region move: something for every contract metric.
pub fn workload() -> Vec<Step> {
    use Step::*;
    let mut steps = vec![
        Statement(Outcome::Global, None, Some("eu")),
        Statement(Outcome::Global, Some("plans"), Some("eu")),
        Statement(Outcome::Route, Some("users"), Some("us")),
        Statement(Outcome::Route, Some("users"), Some("us")),
        Statement(Outcome::Rewrite, Some("users"), Some("apac")),
        Statement(Outcome::Rewrite, Some("tenants"), Some("eu")),
        Statement(
            Outcome::Scatter(ScatterCause::MultiRegion),
            Some("orders"),
            Some("eu"),
        ),
        Statement(
            Outcome::Scatter(ScatterCause::Allowed),
            Some("users"),
            Some("eu"),
        ),
        Statement(
            Outcome::Scatter(ScatterCause::Observe),
            Some("orders"),
            Some("eu"),
        ),
        Duration(DecisionLabel::Route, "us", 0.003),
        Duration(DecisionLabel::Route, "us", 0.004),
        Duration(DecisionLabel::Scatter, "eu", 0.3),
        Duration(DecisionLabel::Rewrite, "apac", 0.0015),
        CacheLookup(CacheResult::Hit),
        CacheLookup(CacheResult::Miss),
        CacheLookup(CacheResult::Stale),
        CacheEntries(1234),
        UpstreamUp("eu", true),
        UpstreamUp("us", true),
        UpstreamUp("apac", false),
        UpstreamConnections("eu", 4),
        UpstreamConnections("us", 2),
        Failover("apac", "us"),
        CrossRegionTxn,
        ParseError,
        RegionMove("users", "eu", "us"),
    ];
    for reason in RejectReason::ALL {
        steps.push(Statement(Outcome::Reject(*reason), Some("users"), None));
    }
    steps
}

/// A burst after Prometheus has seen the first workload, large enough that
/// every alert rule's condition holds (and every `rate()` has an increase).
pub fn burst() -> Vec<Step> {
    use Step::*;
    let mut steps = Vec::new();
    for _ in 0..200 {
        steps.push(Statement(
            Outcome::Reject(RejectReason::NoRegion),
            Some("users"),
            None,
        ));
        steps.push(Statement(
            Outcome::Scatter(ScatterCause::MultiRegion),
            Some("orders"),
            Some("eu"),
        ));
        steps.push(Statement(Outcome::Route, Some("users"), Some("us")));
        steps.push(Statement(Outcome::Rewrite, Some("tenants"), Some("eu")));
        steps.push(Statement(Outcome::Global, None, Some("eu")));
        steps.push(Duration(DecisionLabel::Route, "us", 0.004));
        steps.push(Duration(DecisionLabel::Scatter, "eu", 0.25));
        steps.push(CacheLookup(CacheResult::Miss));
    }
    steps.extend([
        CacheLookup(CacheResult::Hit),
        Failover("apac", "us"),
        CrossRegionTxn,
        ParseError,
        RegionMove("users", "us", "eu"),
    ]);
    steps
}

pub fn new_metrics(capacity: usize) -> Arc<Metrics> {
    let m = Arc::new(Metrics::new(TABLES, REGIONS, capacity));
    m.set_info("enforce", "eu");
    m
}

/// Sum of `geogate_statements_total` as the registry has it now.
pub fn metrics_sum(metrics: &Metrics) -> f64 {
    metrics
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "geogate_statements_total")
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value())
        .sum()
}
