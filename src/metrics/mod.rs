//! Prometheus metrics, statement fingerprints and the HTTP endpoints.
//!
//! [`Metrics`] holds every metric listed in docs/design.md ("Metrics") on
//! its own [`prometheus::Registry`]. One `Arc<Metrics>`
//! is shared by all sessions; the hot-path methods take label values from
//! small enums and configured names only, and resolve them to pre-built
//! handles, so recording a statement is a few atomic adds.
//!
//! [`http`] serves `/metrics`, `/healthz`, `/readyz` and `/statements`.
//!
//! Wiring (main and session):
//!
//! ```ignore
//! let metrics = Arc::new(Metrics::from_config(&config));
//! let readiness = Arc::new(http::Readiness::new(config.tenants.is_some()));
//! readiness.set_config_loaded(true);
//! if let Some(addr) = config.proxy.metrics_listen {
//!     let state = http::HttpState { metrics: metrics.clone(), readiness: readiness.clone() };
//!     tokio::spawn(http::serve(addr, state, shutdown.clone().cancelled_owned()));
//! }
//! // upstream::Health takes `Some(metrics.clone())` (it reports up/down and failovers),
//! // readiness.follow_gateways(…) asks it whether the local region is served,
//! // tenants::TenantCache takes `Some(metrics.clone())`; after its first load: readiness.set_tenants_loaded(true).
//!
//! // per client:
//! let _conn = metrics.client_connected();
//! // per statement:
//! let event = StatementEvent { outcome, table, region, fingerprint };
//! metrics.record_statement(&event);
//! decision_log.statement(&client_info, &event, mode == Mode::Enforce);
//! metrics.observe_duration(outcome.decision(), region, started.elapsed());
//! ```

pub mod http;
mod labels;
pub mod moves;
mod observers;
mod store;

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::config::{Config, Mode};

pub use crate::refusal::RejectReason;
use labels::NameSet;
pub(crate) use labels::word as name_word;
pub use labels::{CacheResult, DecisionLabel, NONE, OTHER, ScatterCause};
pub use store::{
    DEFAULT_CAPACITY, Detail, MAX_FINGERPRINT_LEN, StatementFilter, StatementRow, StatementStore,
    StatementsReport, rfc3339, sanitize_fingerprint,
};

/// Buckets of `geogate_statement_duration_seconds`: fine from 0.5 ms to
/// 50 ms for in-region statements, then coarse up to 10 s for scatters and
/// cross-region round trips.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric family name [`Metrics`] registers, for docs and tests.
pub const CONTRACT_METRICS: &[&str] = &[
    "geogate_statements_total",
    "geogate_rejections_total",
    "geogate_scatter_total",
    "geogate_rewrites_total",
    "geogate_tenant_cache_lookups_total",
    "geogate_tenant_cache_entries",
    "geogate_upstream_up",
    "geogate_failovers_total",
    "geogate_cross_region_transactions_total",
    "geogate_client_connections",
    "geogate_statement_duration_seconds",
    "geogate_parse_errors_total",
    "geogate_region_moves_total",
];

/// Metrics beyond the contract's table (docs/design.md, "Metrics";
/// README.md, "Operating geogate").
pub const EXTRA_METRICS: &[&str] = &[
    "geogate_info",
    "geogate_upstream_connections",
    // Tenant moves: src/metrics/moves.rs.
    "geogate_tenant_invalidations_total",
    "geogate_guarded_retries_total",
];

/// What happened to one statement, as the session records it.
///
/// The same value feeds [`Metrics::record_statement`] and
/// `logging::DecisionLog::statement`, so counts and log lines agree.
#[derive(Debug, Clone, Copy)]
pub struct StatementEvent<'a> {
    /// The policy's decision, with the reason or cause when there is one.
    pub outcome: Outcome,
    /// The statement's main table (the first regional reference, else the
    /// first table, else `None`), normalised or not.
    pub table: Option<&'a str>,
    /// The region whose gateway serves it (route/rewrite: the decided region;
    /// global/scatter: the gateway it was forwarded to; reject: `None`).
    pub region: Option<&'a str>,
    /// Literal-free fingerprint from the analyzer.
    pub fingerprint: &'a str,
}

/// A decision with its reason (rejections) or cause (scatters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No regional table.
    Global,
    /// Confined to one region.
    Route,
    /// Region injected from the tenant predicate.
    Rewrite,
    /// Several regions.
    Scatter(ScatterCause),
    /// Refused (or would be, in warn/observe mode).
    Reject(RejectReason),
}

impl Outcome {
    /// The `decision` label.
    pub fn decision(self) -> DecisionLabel {
        match self {
            Outcome::Global => DecisionLabel::Global,
            Outcome::Route => DecisionLabel::Route,
            Outcome::Rewrite => DecisionLabel::Rewrite,
            Outcome::Scatter(_) => DecisionLabel::Scatter,
            Outcome::Reject(_) => DecisionLabel::Reject,
        }
    }

    fn detail(self) -> Detail {
        match self {
            Outcome::Scatter(c) => Detail::Scatter(c),
            Outcome::Reject(r) => Detail::Reject(r),
            _ => Detail::None,
        }
    }
}

/// A handle resolved on first use: the hot path pays the label hash lookup once.
type Lazy<T> = OnceLock<T>;

/// All of geogate's metrics, on their own registry.
pub struct Metrics {
    registry: Registry,
    tables: NameSet,
    regions: NameSet,
    statements_store: StatementStore,

    statements: IntCounterVec,
    statements_h: Vec<Lazy<IntCounter>>,
    rejections: IntCounterVec,
    rejections_h: Vec<Lazy<IntCounter>>,
    scatter: IntCounterVec,
    scatter_h: Vec<Lazy<IntCounter>>,
    rewrites: IntCounterVec,
    rewrites_h: Vec<Lazy<IntCounter>>,
    cache_lookups_h: Vec<IntCounter>,
    cache_entries: IntGauge,
    moves: moves::MoveMetrics,
    upstream_up: IntGaugeVec,
    upstream_connections: IntGaugeVec,
    failovers: IntCounterVec,
    failovers_h: Vec<Lazy<IntCounter>>,
    cross_region_txns: IntCounter,
    client_connections: IntGauge,
    duration: HistogramVec,
    duration_h: Vec<Lazy<Histogram>>,
    parse_errors: IntCounter,
    region_moves: IntCounterVec,
    info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("tables", &self.tables)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(v.clone()))
        .expect("metric names are unique");
    v
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(v.clone()))
        .expect("metric names are unique");
    v
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

fn lazies<T>(n: usize) -> Vec<Lazy<T>> {
    (0..n).map(|_| OnceLock::new()).collect()
}

impl Metrics {
    /// Metrics for the tables and regions of `config`, with the default
    /// `/statements` capacity.
    pub fn from_config(config: &Config) -> Metrics {
        let m = Metrics::new(
            config.tables.keys(),
            config.regions.keys(),
            DEFAULT_CAPACITY,
        );
        m.set_info(mode_label(config.proxy.mode), &config.proxy.local_region);
        m
    }

    /// Metrics whose `table` labels are `tables` (plus `other`, `none`) and
    /// whose region labels are `regions` (plus `other`, `none`);
    /// `/statements` keeps at most `statements_capacity` entries.
    pub fn new<T, R>(
        tables: impl IntoIterator<Item = T>,
        regions: impl IntoIterator<Item = R>,
        statements_capacity: usize,
    ) -> Metrics
    where
        T: AsRef<str>,
        R: AsRef<str>,
    {
        let tables = NameSet::tables(tables);
        let regions = NameSet::regions(regions);
        let registry = Registry::new();
        let r = &registry;
        let (nt, nr) = (tables.len(), regions.len());
        let nd = DecisionLabel::ALL.len();

        let statements = counter_vec(
            r,
            "geogate_statements_total",
            "Statements by decision, main table and serving region.",
            &["decision", "table", "region"],
        );
        let rejections = counter_vec(
            r,
            "geogate_rejections_total",
            "Rejected statements (or would-be rejections in warn/observe mode) by reason and table.",
            &["reason", "table"],
        );
        let scatter = counter_vec(
            r,
            "geogate_scatter_total",
            "Statements that ran over several regions, by table and cause.",
            &["table", "cause"],
        );
        let rewrites = counter_vec(
            r,
            "geogate_rewrites_total",
            "Statements rewritten to name their region, by table and injected region.",
            &["table", "region"],
        );
        let cache_lookups = counter_vec(
            r,
            "geogate_tenant_cache_lookups_total",
            "Tenant to region cache lookups by result.",
            &["result"],
        );
        // Bounded by a three-value enum: create them all now so hit ratios
        // have every series from the first scrape.
        let cache_lookups_h = CacheResult::ALL
            .iter()
            .map(|c| cache_lookups.with_label_values(&[c.as_str()]))
            .collect();
        let cache_entries = gauge(
            r,
            "geogate_tenant_cache_entries",
            "Entries in the tenant to region cache: tenants with their region, and tenants remembered as not found.",
        );
        let upstream_up = gauge_vec(
            r,
            "geogate_upstream_up",
            "1 while the region's gateway is reachable, 0 while it is down.",
            &["region"],
        );
        let upstream_connections = gauge_vec(
            r,
            "geogate_upstream_connections",
            "Open connections to the region's gateway (pooled and in use).",
            &["region"],
        );
        let failovers = counter_vec(
            r,
            "geogate_failovers_total",
            "Statements or transactions served by a fallback region because the region's gateway was down.",
            &["from", "to"],
        );
        let cross_region_txns = counter(
            r,
            "geogate_cross_region_transactions_total",
            "Transactions that touched a second region.",
        );
        let client_connections = gauge(
            r,
            "geogate_client_connections",
            "Client connections open now.",
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "geogate_statement_duration_seconds",
                "Time from receiving a statement to the end of its response, by decision and serving region.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["decision", "region"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(duration.clone()))
            .expect("metric names are unique");
        let parse_errors = counter(
            r,
            "geogate_parse_errors_total",
            "Statements the SQL parser could not read (forwarded or rejected per on_parse_error).",
        );
        let region_moves = counter_vec(
            r,
            "geogate_region_moves_total",
            "UPDATEs that set the partition column to another region (a tenant moving), by table.",
            &["table", "from", "to"],
        );
        let info = gauge_vec(
            r,
            "geogate_info",
            "Always 1; labels carry the version, mode and local region of this sidecar.",
            &["version", "mode", "local_region"],
        );

        let moves = moves::MoveMetrics::register(r);
        Metrics {
            statements_store: StatementStore::new(statements_capacity),
            statements,
            statements_h: lazies(nd * nt * nr),
            rejections,
            rejections_h: lazies(RejectReason::ALL.len() * nt),
            scatter,
            scatter_h: lazies(nt * ScatterCause::ALL.len()),
            rewrites,
            rewrites_h: lazies(nt * nr),
            cache_lookups_h,
            cache_entries,
            moves,
            upstream_up,
            upstream_connections,
            failovers,
            failovers_h: lazies(nr * nr),
            cross_region_txns,
            client_connections,
            duration,
            duration_h: lazies(nd * nr),
            parse_errors,
            region_moves,
            info,
            registry,
            tables,
            regions,
        }
    }

    /// The registry to gather from (the HTTP endpoint does).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The `/statements` store.
    pub fn statements(&self) -> &StatementStore {
        &self.statements_store
    }

    /// The `table` label value `name` maps to (configured name, `other` or `none`).
    pub fn table_label(&self, name: Option<&str>) -> &str {
        self.tables.label(name)
    }

    /// The `region` label value `name` maps to (configured name, `other` or `none`).
    pub fn region_label(&self, name: Option<&str>) -> &str {
        self.regions.label(name)
    }

    /// Renders every metric in the Prometheus text format 0.0.4.
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        // Encoding only fails on malformed families, which our fixed
        // definitions cannot produce; an empty body is the safe fallback.
        if prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }

    /// Sets `geogate_info{version, mode, local_region} 1` (replacing a previous value).
    pub fn set_info(&self, mode: &str, local_region: &str) {
        self.info.reset();
        self.info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), mode, local_region])
            .set(1);
    }

    // ---- per statement -------------------------------------------------

    /// Records one statement's decision: `geogate_statements_total`, plus
    /// `geogate_rejections_total` / `geogate_scatter_total` /
    /// `geogate_rewrites_total` as the outcome implies, plus the
    /// `/statements` store. Call once per statement, in every mode (in
    /// warn/observe, with what enforce would have decided).
    pub fn record_statement(&self, event: &StatementEvent<'_>) {
        let t = self.tables.index_of(event.table);
        let r = self.regions.index_of(event.region);
        let decision = event.outcome.decision();
        self.statement_counter(decision, t, r).inc();
        match event.outcome {
            Outcome::Reject(reason) => self.rejection_counter(reason, t).inc(),
            Outcome::Scatter(cause) => self.scatter_counter(t, cause).inc(),
            Outcome::Rewrite => self.rewrite_counter(t, r).inc(),
            Outcome::Global | Outcome::Route => {}
        }
        self.statements_store.record(
            event.fingerprint,
            decision,
            self.tables.name(t),
            event.outcome.detail(),
        );
    }

    /// Observes a statement's duration, from receiving it to the end of its
    /// response (rejections: until the error was sent).
    pub fn observe_duration(&self, decision: DecisionLabel, region: Option<&str>, d: Duration) {
        let r = self.regions.index_of(region);
        let i = decision.idx() * self.regions.len() + r;
        self.duration_h[i]
            .get_or_init(|| {
                self.duration
                    .with_label_values(&[decision.as_str(), self.regions.name(r)])
            })
            .observe(d.as_secs_f64());
    }

    /// Counts a statement the SQL parser could not read.
    pub fn parse_error(&self) {
        self.parse_errors.inc();
    }

    // Lower-level counters, for callers that do not go through `record_statement`.

    /// `geogate_statements_total{decision, table, region}` += 1 only.
    pub fn count_statement(
        &self,
        decision: DecisionLabel,
        table: Option<&str>,
        region: Option<&str>,
    ) {
        let (t, r) = (self.tables.index_of(table), self.regions.index_of(region));
        self.statement_counter(decision, t, r).inc();
    }

    /// `geogate_rejections_total{reason, table}` += 1 only.
    pub fn count_rejection(&self, reason: RejectReason, table: Option<&str>) {
        self.rejection_counter(reason, self.tables.index_of(table))
            .inc();
    }

    /// `geogate_scatter_total{table, cause}` += 1 only.
    pub fn count_scatter(&self, table: Option<&str>, cause: ScatterCause) {
        self.scatter_counter(self.tables.index_of(table), cause)
            .inc();
    }

    /// `geogate_rewrites_total{table, region}` += 1 only.
    pub fn count_rewrite(&self, table: Option<&str>, region: Option<&str>) {
        let (t, r) = (self.tables.index_of(table), self.regions.index_of(region));
        self.rewrite_counter(t, r).inc();
    }

    fn statement_counter(&self, d: DecisionLabel, t: usize, r: usize) -> &IntCounter {
        let (nt, nr) = (self.tables.len(), self.regions.len());
        self.statements_h[(d.idx() * nt + t) * nr + r].get_or_init(|| {
            self.statements.with_label_values(&[
                d.as_str(),
                self.tables.name(t),
                self.regions.name(r),
            ])
        })
    }

    fn rejection_counter(&self, reason: RejectReason, t: usize) -> &IntCounter {
        self.rejections_h[reason.idx() * self.tables.len() + t].get_or_init(|| {
            self.rejections
                .with_label_values(&[reason.as_str(), self.tables.name(t)])
        })
    }

    fn scatter_counter(&self, t: usize, cause: ScatterCause) -> &IntCounter {
        self.scatter_h[t * ScatterCause::ALL.len() + cause.idx()].get_or_init(|| {
            self.scatter
                .with_label_values(&[self.tables.name(t), cause.as_str()])
        })
    }

    fn rewrite_counter(&self, t: usize, r: usize) -> &IntCounter {
        self.rewrites_h[t * self.regions.len() + r].get_or_init(|| {
            self.rewrites
                .with_label_values(&[self.tables.name(t), self.regions.name(r)])
        })
    }

    // ---- transactions and moves -----------------------------------------

    /// Counts a transaction that touched a second region (once per transaction).
    pub fn cross_region_transaction(&self) {
        self.cross_region_txns.inc();
    }

    /// Counts an UPDATE moving rows of `table` from region `from` to `to`.
    pub fn region_move(&self, table: Option<&str>, from: Option<&str>, to: Option<&str>) {
        self.region_moves
            .with_label_values(&[
                self.tables.label(table),
                self.regions.label(from),
                self.regions.label(to),
            ])
            .inc();
    }

    // ---- tenant cache ----------------------------------------------------

    /// Counts one tenant→region cache lookup.
    pub fn tenant_cache_lookup(&self, result: CacheResult) {
        self.cache_lookups_h[result.idx()].inc();
    }

    /// Tenant-move counters (src/metrics/moves.rs).
    pub fn moves(&self) -> &moves::MoveMetrics {
        &self.moves
    }

    /// Sets the number of tenants in the cache.
    pub fn set_tenant_cache_entries(&self, n: usize) {
        self.cache_entries.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    // ---- upstreams -------------------------------------------------------

    /// Sets whether `region`'s gateway is reachable.
    pub fn set_upstream_up(&self, region: &str, up: bool) {
        self.upstream_up
            .with_label_values(&[self.regions.label(Some(region))])
            .set(i64::from(up));
    }

    /// Sets the number of open connections to `region`'s gateway.
    pub fn set_upstream_connections(&self, region: &str, n: usize) {
        self.upstream_connections
            .with_label_values(&[self.regions.label(Some(region))])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Adds `delta` (may be negative) to `region`'s open upstream connections.
    pub fn add_upstream_connections(&self, region: &str, delta: i64) {
        self.upstream_connections
            .with_label_values(&[self.regions.label(Some(region))])
            .add(delta);
    }

    /// Counts a failover from `from`'s gateway to `to`'s (called per
    /// statement while a region is down, hence the pre-resolved handles).
    pub fn failover(&self, from: &str, to: &str) {
        let (f, t) = (
            self.regions.index_of(Some(from)),
            self.regions.index_of(Some(to)),
        );
        self.failovers_h[f * self.regions.len() + t]
            .get_or_init(|| {
                self.failovers
                    .with_label_values(&[self.regions.name(f), self.regions.name(t)])
            })
            .inc();
    }

    // ---- clients ---------------------------------------------------------

    /// Counts a client connection as open until the guard is dropped.
    pub fn client_connected(&self) -> ClientConnectionGuard {
        self.client_connections.inc();
        ClientConnectionGuard {
            gauge: self.client_connections.clone(),
        }
    }

    /// Current value of `geogate_client_connections`.
    pub fn client_connections(&self) -> i64 {
        self.client_connections.get()
    }
}

/// Keeps `geogate_client_connections` incremented while alive (RAII: the
/// count is right even when a session task panics or is cancelled).
#[derive(Debug)]
pub struct ClientConnectionGuard {
    gauge: IntGauge,
}

impl Drop for ClientConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The `mode` label value of `geogate_info`.
pub fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Warn => "warn",
        Mode::Observe => "observe",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let fam = metrics
            .registry()
            .gather()
            .into_iter()
            .find(|f| f.name() == name)?;
        let is_counter = fam.get_field_type() == prometheus::proto::MetricType::COUNTER;
        fam.get_metric()
            .iter()
            .find(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map(|m| {
                if is_counter {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                }
            })
    }

    #[test]
    fn record_statement_feeds_the_matching_counters_with_bounded_labels() {
        let m = Metrics::new(["users"], ["eu", "us"], 100);
        let ev = |outcome, table| StatementEvent {
            outcome,
            table,
            region: Some("eu"),
            fingerprint: "SELECT $1",
        };
        m.record_statement(&ev(Outcome::Rewrite, Some("public.Users")));
        m.record_statement(&ev(
            Outcome::Reject(RejectReason::NoRegion),
            Some("audit_log"),
        ));
        m.record_statement(&ev(Outcome::Scatter(ScatterCause::Allowed), None));
        let st = "geogate_statements_total";
        assert_eq!(
            sample(
                &m,
                st,
                &[
                    ("decision", "rewrite"),
                    ("table", "users"),
                    ("region", "eu")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "geogate_rejections_total",
                &[("reason", "no_region"), ("table", OTHER)]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "geogate_scatter_total",
                &[("table", NONE), ("cause", "allowed")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "geogate_rewrites_total",
                &[("table", "users"), ("region", "eu")]
            ),
            Some(1.0)
        );
        assert_eq!(m.statements().len(), 3);
    }

    #[test]
    fn from_config_labels_the_configured_tables_and_regions() {
        let text = include_str!("../../config/example.toml");
        let config = Config::parse(text).expect("example config is valid");
        let m = Metrics::from_config(&config);
        assert_eq!(m.table_label(Some("Public.Users")), "users");
        assert_eq!(m.table_label(Some("plans")), "plans");
        assert_eq!(m.table_label(Some("unlisted")), OTHER);
        assert_eq!(m.region_label(Some("apac")), "apac");
        assert_eq!(m.region_label(Some("mars")), OTHER);
        assert_eq!(
            sample(
                &m,
                "geogate_info",
                &[("mode", "enforce"), ("local_region", "eu")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn client_connection_guard_decrements_on_drop() {
        let m = std::sync::Arc::new(Metrics::new(["t"], ["eu"], 10));
        let a = m.client_connected();
        let b = m.client_connected();
        assert_eq!(m.client_connections(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.client_connections(), 0);
    }
}
