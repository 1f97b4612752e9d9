//! Observability: the metrics registry as served over real HTTP, the
//! `/healthz`, `/readyz`, `/statements` endpoints, the Grafana dashboard and
//! alert rules validated against the registry, and every PromQL expression
//! evaluated by a real Prometheus scraping the listener; and the same
//! endpoints on a live geogate serving a scripted workload over three real
//! PostgreSQL clusters (eu, us, apac), scraped by a real Prometheus.
//!
//! Needs Debian's `prometheus` package (`apt-get install prometheus`, which
//! also ships `promtool`); the Prometheus test fails, never skips, without it.
//! The live tests run PostgreSQL clusters through `tests/common`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, PASSWORD};
use geogate::logging::{self, ClientInfo, DecisionLog, LogCapture, LogFormat};
use geogate::metrics::http::{self, HttpState, Readiness};
use geogate::metrics::{
    CONTRACT_METRICS, CacheResult, DecisionLabel, EXTRA_METRICS, Metrics, Outcome, RejectReason,
    ScatterCause, StatementEvent,
};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls};

// ---------------------------------------------------------------- harness

const TABLES: &[&str] = &["tenants", "users", "orders", "plans"];
const REGIONS: &[&str] = &["eu", "us", "apac"];

/// A metrics listener on a free loopback port, stopped on drop.
struct Listener {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_listener(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Listener {
    let bound = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = bound.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bound.serve(HttpState { metrics, readiness }, async move {
        let _ = stopped.await;
    }));
    Listener { addr, _stop: stop }
}

/// GET over a real HTTP/1.1 client connection: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_with_header(addr, path, None).await
}

async fn get_with_header(
    addr: SocketAddr,
    path: &str,
    header: Option<(&str, String)>,
) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", addr.to_string());
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ------------------------------------------------------- scripted workload

/// One thing the proxy can report; the test's own model says what each adds.
#[derive(Clone, Copy)]
enum Step {
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

type SeriesKey = (String, BTreeMap<String, String>);

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// Applies steps to `Metrics` and, independently, to the expected series values.
#[derive(Default)]
struct Model {
    expected: HashMap<SeriesKey, f64>,
    durations: Vec<(DecisionLabel, &'static str, f64)>,
}

impl Model {
    fn add(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        *self.expected.entry(key(name, labels)).or_default() += v;
    }
    fn set(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.expected.insert(key(name, labels), v);
    }

    fn run(&mut self, metrics: &Metrics, steps: &[Step]) {
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
    fn histogram_expectations(&self) -> HashMap<SeriesKey, f64> {
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
fn workload() -> Vec<Step> {
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
fn burst() -> Vec<Step> {
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

// ------------------------------------------------------ text format parser

#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: HashMap<SeriesKey, f64>,
}

/// Parses the Prometheus text format 0.0.4 as a scraper would.
fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            out.types.insert(name.to_owned(), ty.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap();
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        out.samples.insert((name.to_owned(), labels), value);
    }
    out
}

/// The metrics table of docs/design.md ("Metrics"): name, type, label names.
const CONTRACT: &[(&str, &str, &[&str])] = &[
    (
        "geogate_statements_total",
        "counter",
        &["decision", "table", "region"],
    ),
    ("geogate_rejections_total", "counter", &["reason", "table"]),
    ("geogate_scatter_total", "counter", &["table", "cause"]),
    ("geogate_rewrites_total", "counter", &["table", "region"]),
    ("geogate_tenant_cache_lookups_total", "counter", &["result"]),
    ("geogate_tenant_cache_entries", "gauge", &[]),
    ("geogate_upstream_up", "gauge", &["region"]),
    ("geogate_failovers_total", "counter", &["from", "to"]),
    ("geogate_cross_region_transactions_total", "counter", &[]),
    ("geogate_client_connections", "gauge", &[]),
    (
        "geogate_statement_duration_seconds",
        "histogram",
        &["decision", "region"],
    ),
    ("geogate_parse_errors_total", "counter", &[]),
    (
        "geogate_region_moves_total",
        "counter",
        &["table", "from", "to"],
    ),
];

fn new_metrics(capacity: usize) -> Arc<Metrics> {
    let m = Arc::new(Metrics::new(TABLES, REGIONS, capacity));
    m.set_info("enforce", "eu");
    m
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_every_contract_metric_with_its_type_labels_and_exact_counts() {
    let metrics = new_metrics(1000);
    let mut model = Model::default();
    model.run(&metrics, &workload());
    let _clients = [metrics.client_connected(), metrics.client_connected()];
    let closed = metrics.client_connected();
    drop(closed);
    model.set("geogate_client_connections", &[], 2.0);

    let listener = start_listener(metrics.clone(), Arc::new(Readiness::new(false))).await;
    let (status, body) = get(listener.addr, "/metrics").await;
    assert_eq!(status, 200);
    let expo = parse_exposition(&body);

    for (name, ty, labels) in CONTRACT {
        assert_eq!(
            expo.types.get(*name).map(String::as_str),
            Some(*ty),
            "TYPE of {name}"
        );
        let sample_names: Vec<String> = if *ty == "histogram" {
            ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect()
        } else {
            vec![(*name).to_owned()]
        };
        let mut seen = 0;
        for (sname, slabels) in expo.samples.keys() {
            if !sample_names.contains(sname) {
                continue;
            }
            seen += 1;
            let mut want: BTreeSet<&str> = labels.iter().copied().collect();
            if sname.ends_with("_bucket") {
                want.insert("le");
            }
            let got: BTreeSet<&str> = slabels.keys().map(String::as_str).collect();
            assert_eq!(got, want, "labels of {sname}");
        }
        assert!(seen > 0, "{name} has no samples");
    }

    // Every recorded series has exactly the recorded value...
    let mut expected = model.expected.clone();
    expected.extend(model.histogram_expectations());
    for (k, v) in &expected {
        let got = expo.samples.get(k).copied();
        let ok = got.is_some_and(|g| (g - v).abs() < 1e-9);
        assert!(ok, "{k:?}: expected {v}, got {got:?}");
    }
    // ...and no contract counter has a series the workload did not cause.
    for ((name, labels), v) in &expo.samples {
        if CONTRACT
            .iter()
            .any(|(n, t, _)| n == name && *t == "counter")
        {
            assert!(
                expected.contains_key(&(name.clone(), labels.clone())),
                "unexpected series {name}{labels:?} = {v}"
            );
        }
    }
    assert_eq!(
        expo.samples.get(&key(
            "geogate_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("mode", "enforce"),
                ("local_region", "eu")
            ]
        )),
        Some(&1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_outside_the_config_collapse_to_other_and_none() {
    let metrics = new_metrics(100);
    metrics.record_statement(&StatementEvent {
        outcome: Outcome::Reject(RejectReason::UnknownRegion),
        table: Some("customer_secrets_2024"),
        region: Some("mars"),
        fingerprint: "SELECT 1",
    });
    let listener = start_listener(metrics, Arc::new(Readiness::new(false))).await;
    let (_, body) = get(listener.addr, "/metrics").await;
    let expo = parse_exposition(&body);
    let k = key(
        "geogate_statements_total",
        &[
            ("decision", "reject"),
            ("table", "other"),
            ("region", "other"),
        ],
    );
    assert_eq!(expo.samples.get(&k), Some(&1.0));
    assert!(!body.contains("customer_secrets") && !body.contains("mars"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unknown_paths_answer_as_documented() {
    let metrics = new_metrics(100);
    let readiness = Arc::new(Readiness::new(true));
    let listener = start_listener(metrics, readiness.clone()).await;
    let addr = listener.addr;

    assert_eq!(get(addr, "/healthz").await.0, 200);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: config not loaded\n")
    );
    readiness.set_config_loaded(true);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: tenant cache not loaded\n")
    );
    readiness.set_tenants_loaded(true);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    readiness.set_local_gateway_up(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    readiness.set_local_gateway_up(false);
    assert_eq!(get(addr, "/readyz").await.0, 503);

    assert_eq!(get(addr, "/nope").await.0, 404);
    assert_eq!(get(addr, "/statements?decision=bogus").await.0, 400);
    // Oversized request headers are refused, not buffered.
    let huge = "x".repeat(64 * 1024);
    let (status, _) = get_with_header(addr, "/metrics", Some(("x-junk", huge))).await;
    assert_eq!(status, 431);
    // The listener still serves afterwards.
    assert_eq!(get(addr, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_metrics_and_logs_are_bounded_and_never_carry_a_literal() {
    const CAP: usize = 50;
    let metrics = new_metrics(CAP);
    // A fingerprint that (wrongly) still carries a literal: the store must scrub it.
    let leaky = "SELECT * FROM users WHERE email = 'alice.unique-7731@example.org' AND age = 4242";
    let capture = LogCapture::new();
    let dispatch = logging::dispatch(LogFormat::Json, "info", capture.clone()).unwrap();
    let decision_log = DecisionLog::default();
    let client = ClientInfo {
        user: "app",
        application_name: "billing",
    };
    tracing::dispatcher::with_default(&dispatch, || {
        for outcome in [
            Outcome::Reject(RejectReason::NoRegion),
            Outcome::Reject(RejectReason::NoRegion),
            Outcome::Reject(RejectReason::NoRegion),
            Outcome::Scatter(ScatterCause::MultiRegion),
        ] {
            let event = StatementEvent {
                outcome,
                table: Some("users"),
                region: None,
                fingerprint: leaky,
            };
            metrics.record_statement(&event);
            decision_log.statement(&client, &event, true);
        }
    });
    let logs = capture.contents();
    assert_eq!(logs.lines().count(), 4, "{logs}");
    assert!(
        !logs.contains("alice") && !logs.contains("4242"),
        "logs leak a literal: {logs}"
    );
    for i in 0..(CAP * 5) {
        let fp = format!("SELECT col_{i} FROM orders WHERE region = $1");
        metrics.record_statement(&StatementEvent {
            outcome: Outcome::Route,
            table: Some("orders"),
            region: Some("eu"),
            fingerprint: &fp,
        });
    }
    let listener = start_listener(metrics, Arc::new(Readiness::new(false))).await;

    let (status, body) = get(listener.addr, "/statements").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = doc["statements"].as_array().unwrap();
    assert!(rows.len() <= CAP, "{} rows", rows.len());
    assert!(doc["entries"].as_u64().unwrap() <= CAP as u64);
    assert!(doc["evicted"].as_u64().unwrap() > 0);
    let counts: Vec<u64> = rows.iter().map(|r| r["count"].as_u64().unwrap()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "sorted by count: {counts:?}"
    );
    assert_eq!(doc["entries"].as_u64().unwrap() as usize, rows.len());
    assert_eq!(rows[0]["decision"], "reject");
    assert_eq!(rows[0]["reason"], "no_region");
    assert_eq!(rows[0]["count"], 3);
    assert!(rows[0]["last_seen"].as_str().unwrap().ends_with('Z'));

    let (_, body) = get(listener.addr, "/statements?decision=route&limit=5").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = doc["statements"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r["decision"] == "route"));

    for path in ["/statements", "/metrics"] {
        let (_, body) = get(listener.addr, path).await;
        assert!(!body.contains("alice"), "{path} leaks a literal");
        assert!(!body.contains("4242"), "{path} leaks a literal");
    }
}

// ----------------------------------------------- dashboard and alert rules

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

const DATASOURCE_UID: &str = "geogate-prometheus";

/// The provisioned datasource uid, read from the provisioning file.
fn provisioned_datasource_uid() -> String {
    let text =
        std::fs::read_to_string(repo_path("grafana/provisioning/datasources/prometheus.yml"))
            .unwrap();
    let uids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("uid:"))
        .map(str::trim)
        .collect();
    assert_eq!(uids.len(), 1, "one provisioned datasource");
    uids[0].to_owned()
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_path("grafana/dashboards/geogate.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every PromQL expression of the dashboard's panels (not the variable queries).
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// Replaces Grafana's variables by values Prometheus accepts.
fn substitute_grafana_vars(expr: &str) -> String {
    let vars = [
        ("$__rate_interval", "1m"),
        ("$__interval", "1m"),
        ("$__range", "1m"),
        ("$instance", ".*"),
    ];
    let mut out = expr.to_owned();
    for (var, value) in vars {
        out = out.replace(&format!("${{{}}}", &var[1..]), value);
        out = out.replace(var, value);
    }
    assert!(!out.contains('$'), "unknown Grafana variable in {expr}");
    out
}

/// Metric names `Metrics` exposes once every metric has a series: family
/// names, plus `_bucket`/`_sum`/`_count` for histograms.
fn registry_metric_names() -> BTreeSet<String> {
    let metrics = new_metrics(10);
    Model::default().run(&metrics, &workload());
    let _c = metrics.client_connected();
    let mut names = BTreeSet::new();
    for fam in metrics.registry().gather() {
        let name = fam.name().to_owned();
        if fam.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{s}"));
            }
        }
        names.insert(name);
    }
    let families: BTreeSet<&str> = CONTRACT_METRICS
        .iter()
        .chain(EXTRA_METRICS)
        .copied()
        .collect();
    assert!(
        families.iter().all(|f| names.contains(*f)),
        "registry lacks some of {families:?}"
    );
    names
}

/// The `geogate_…` identifiers an expression uses.
fn metric_names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("geogate_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.push(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

#[test]
fn dashboard_panels_use_the_provisioned_datasource_and_only_registry_metrics() {
    let uid = provisioned_datasource_uid();
    assert_eq!(uid, DATASOURCE_UID);
    let dash = dashboard();
    assert_eq!(dash["title"], "geogate");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let known = registry_metric_names();

    let mut panels = 0;
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        panels += 1;
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "panel {title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], uid.as_str(), "target of {title}");
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names_in(expr);
            assert!(!names.is_empty(), "{title}: {expr} uses no geogate metric");
            for n in names {
                assert!(known.contains(&n), "{title}: unknown metric {n} in {expr}");
            }
        }
    }
    assert!(panels >= 10, "{panels} panels");
    for var in dash["templating"]["list"].as_array().unwrap() {
        assert_eq!(var["datasource"]["uid"], uid.as_str());
        for n in metric_names_in(var["definition"].as_str().unwrap()) {
            assert!(known.contains(&n), "variable uses unknown metric {n}");
        }
    }
    // The dashboard provider points Grafana at the folder the JSON lives in.
    let provider =
        std::fs::read_to_string(repo_path("grafana/provisioning/dashboards/geogate.yml")).unwrap();
    assert!(provider.contains("type: file"));
}

// ------------------------------------------------------- real Prometheus

fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: run `apt-get install prometheus` (Debian's package ships prometheus and promtool)")
        })
}

/// A Prometheus server started by the test; killed and cleaned up on drop
/// (also when the test panics).
struct PrometheusGuard {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for PrometheusGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "prometheus files kept in {}; last log lines:\n{}",
                self.dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: SocketAddr, rules: &Path) -> PrometheusGuard {
    let binary = find_binary("prometheus");
    let dir = std::env::temp_dir().join(format!(
        "geogate-prometheus-{}-{}",
        std::process::id(),
        target.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: geogate\n    static_configs:\n      - targets: ['{target}']\n",
        rules = rules.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    PrometheusGuard { child, dir, addr }
}

async fn prom_api(prom: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(prom, path).await;
    let doc: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: HTTP {status}: {body}"));
    doc
}

async fn query(prom: SocketAddr, expr: &str) -> serde_json::Value {
    prom_api(
        prom,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )
    .await
}

/// Polls `check` every 250 ms until it returns true, for at most `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
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

async fn scraped_statements_total(prom: SocketAddr) -> Option<f64> {
    let doc = query(prom, "sum(geogate_statements_total)").await;
    doc["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let promtool = find_binary("promtool");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(repo_path("config/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_listener_and_every_dashboard_and_alert_expression_returns_data() {
    let metrics = new_metrics(1000);
    let listener = start_listener(metrics.clone(), Arc::new(Readiness::new(false))).await;
    let _clients = [metrics.client_connected(), metrics.client_connected()];
    let mut model = Model::default();
    model.run(&metrics, &workload());
    let phase1 = metrics_sum(&metrics);

    let rules = repo_path("config/alerts.yml");
    let prom = start_prometheus(listener.addr, &rules);
    let p = prom.addr;
    wait_for("prometheus ready", Duration::from_secs(60), || async move {
        match TcpStream::connect(p).await {
            Ok(_) => get(p, "/-/ready").await.0 == 200,
            Err(_) => false,
        }
    })
    .await;

    // Phase 1 scraped, then the burst, then scraped again: every rate() has an increase.
    wait_for("first scrape", Duration::from_secs(30), || async move {
        scraped_statements_total(p).await == Some(phase1)
    })
    .await;
    model.run(&metrics, &burst());
    let phase2 = metrics_sum(&metrics);
    wait_for(
        "scrape after the burst",
        Duration::from_secs(30),
        || async move { scraped_statements_total(p).await == Some(phase2) },
    )
    .await;

    // The alert rules Prometheus loaded, with their expressions.
    let rules_doc = prom_api(p, "/api/v1/rules").await;
    let mut alert_exprs = Vec::new();
    for group in rules_doc["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            alert_exprs.push((
                rule["name"].as_str().unwrap().to_owned(),
                rule["query"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(alert_exprs.len() >= 4, "rules loaded: {alert_exprs:?}");
    let known = registry_metric_names();
    for (name, expr) in &alert_exprs {
        for n in metric_names_in(expr) {
            assert!(known.contains(&n), "alert {name}: unknown metric {n}");
        }
    }

    let mut exprs: Vec<(String, String)> = dashboard_exprs(&dashboard())
        .into_iter()
        .map(|e| (format!("dashboard: {e}"), substitute_grafana_vars(&e)))
        .collect();
    exprs.extend(
        alert_exprs
            .iter()
            .map(|(n, e)| (format!("alert {n}"), e.clone())),
    );
    let mut failures = Vec::new();
    for (what, expr) in &exprs {
        let doc = query(p, expr).await;
        if doc["status"] != "success" {
            failures.push(format!("{what}: {}", doc["error"]));
        } else if doc["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            failures.push(format!("{what}: no data"));
        }
    }
    assert!(
        failures.is_empty(),
        "expressions failing:\n{}",
        failures.join("\n")
    );

    // The workload is built to trip every alert: each must be pending or firing.
    let names: BTreeSet<String> = alert_exprs.iter().map(|(n, _)| n.clone()).collect();
    let mut active = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while active != names {
        assert!(
            Instant::now() < deadline,
            "alerts active: {active:?}, expected {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let doc = prom_api(p, "/api/v1/alerts").await;
        active = doc["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_owned())
            .collect();
    }
    drop(prom);
}

/// Sum of `geogate_statements_total` as the registry has it now.
fn metrics_sum(metrics: &Metrics) -> f64 {
    metrics
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "geogate_statements_total")
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value())
        .sum()
}

// ------------------------------------- live geogate over real PostgreSQL

/// The regions with a real cluster behind their gateway.
const LIVE_REGIONS: [&str; 3] = ["eu", "us", "apac"];

/// The live fixture's tenant directory: (id, region).
const LIVE_TENANTS: [(&str, &str); 3] = [
    ("11111111-1111-1111-1111-111111111111", "eu"),
    ("22222222-2222-2222-2222-222222222222", "us"),
    ("33333333-3333-3333-3333-333333333333", "apac"),
];

/// A tenant id the directory does not have.
const GHOST_TENANT: &str = "99999999-9999-9999-9999-999999999999";

/// The seed schema on each regional gateway. The enum also names sa and af,
/// the two regions whose gateways are down, so that a statement for sa
/// failed over to us is valid SQL there.
const LIVE_SCHEMA: &str = "
CREATE TYPE region AS ENUM ('eu', 'us', 'apac', 'sa', 'af');
CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO plans VALUES (1, 'free'), (2, 'team');
CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL, region region NOT NULL);
CREATE TABLE users (id serial PRIMARY KEY, tenant_id uuid NOT NULL, email text NOT NULL, region region NOT NULL);
CREATE TABLE documents (id serial PRIMARY KEY, tenant_id uuid NOT NULL, title text, region region NOT NULL);
CREATE TABLE tenant_directory (id uuid PRIMARY KEY, region region NOT NULL);
GRANT ALL ON ALL TABLES IN SCHEMA public TO geogate;
";

/// One database per test on each of the three shared clusters, seeded.
struct LiveGeo {
    db: String,
}

impl LiveGeo {
    fn new(prefix: &str) -> LiveGeo {
        let eu = Cluster::shared("eu");
        let db = eu.create_db(prefix);
        for region in LIVE_REGIONS {
            let c = Cluster::shared(region);
            if region != "eu" {
                c.psql("postgres", &format!("CREATE DATABASE {db}"));
            }
            c.psql(&db, LIVE_SCHEMA);
            for (id, _) in LIVE_TENANTS.iter().filter(|(_, r)| *r == region) {
                c.psql(
                    &db,
                    &format!(
                        "INSERT INTO users (tenant_id, email, region) \
                         SELECT '{id}', 'u' || g || '@{region}', '{region}' FROM generate_series(1, 3) g"
                    ),
                );
            }
        }
        let dir: Vec<String> = LIVE_TENANTS
            .iter()
            .map(|(id, r)| format!("('{id}', '{r}')"))
            .collect();
        eu.psql(
            &db,
            &format!("INSERT INTO tenant_directory VALUES {}", dir.join(",")),
        );
        LiveGeo { db }
    }

    fn gateway(&self, region: &str) -> String {
        Cluster::shared(region).url("geogate", Some(PASSWORD), &self.db) + "?sslmode=disable"
    }

    /// A gateway URL on a port nobody listens on.
    fn dead_gateway(&self) -> String {
        format!(
            "postgres://geogate:{PASSWORD}@127.0.0.1:{}/{}?sslmode=disable",
            common::free_port(),
            self.db
        )
    }

    /// A geogate local to eu, its `[tenants]` queries reading `directory`.
    /// Regions sa (fallback us) and af (no fallback) have dead gateways.
    fn config(&self, extra_proxy: &str, directory: &str) -> String {
        format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
local_region = "eu"
{extra_proxy}

[regions.eu]
gateway = "{eu}"
fallback = ["us"]
[regions.us]
gateway = "{us}"
fallback = ["eu"]
[regions.apac]
gateway = "{apac}"
fallback = ["eu"]
[regions.sa]
gateway = "{sa}"
fallback = ["us"]
[regions.af]
gateway = "{af}"

[tenants]
query = "SELECT id::text, region::text FROM {directory}"
lookup_query = "SELECT region::text FROM {directory} WHERE id = $1::uuid"
refresh = "1h"

[tables.tenants]
partition_column = "region"
tenant_column = "id"
on_missing_region = "rewrite"
[tables.users]
partition_column = "region"
tenant_column = "tenant_id"
on_missing_region = "rewrite"
[tables.documents]
partition_column = "region"
tenant_column = "tenant_id"
on_missing_region = "allow"
[tables.plans]
locality = "global"

[[users]]
name = "app"
password = "app-secret"
"#,
            eu = self.gateway("eu"),
            us = self.gateway("us"),
            apac = self.gateway("apac"),
            sa = self.dead_gateway(),
            af = self.dead_gateway(),
        )
    }
}

/// Every log line of every live geogate of this test binary, as JSON (the
/// global subscriber; the other tests use scoped ones).
fn live_logs() -> &'static LogCapture {
    static LOGS: OnceLock<LogCapture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = LogCapture::new();
        logging::init_with(LogFormat::Json, "geogate=debug,warn", capture.clone())
            .expect("the only global subscriber of this test binary");
        capture
    })
}

/// geogate running in-process, with its metrics listener.
struct LiveProxy {
    port: u16,
    metrics: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_live(config: &str) -> LiveProxy {
    live_logs();
    let config = geogate::config::Config::parse(config).expect("test config is valid");
    let bound = geogate::server::bind(config).await.expect("bind");
    let port = bound.local_addr().port();
    let metrics = bound.metrics_addr().expect("metrics_listen is set");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bound.run_until(async move {
        let _ = stopped.await;
    }));
    LiveProxy {
        port,
        metrics,
        _stop: stop,
    }
}

async fn connect_live(proxy: &LiveProxy, db: &str) -> Client {
    let conn = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname={db} application_name=obs-test",
        proxy.port
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls)
        .await
        .expect("connect through geogate");
    tokio::spawn(connection);
    client
}

async fn wait_ready(proxy: &LiveProxy) {
    let addr = proxy.metrics;
    wait_for("/readyz 200", Duration::from_secs(20), || async move {
        get(addr, "/readyz").await.0 == 200
    })
    .await;
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_else(|| format!("not a db error: {e}"))
}

/// What one statement of the script does, by the decision table of
/// docs/design.md ("Decisions").
#[derive(Clone, Copy)]
enum Expect {
    /// Forwarded, timed at its ReadyForQuery: `decision` on `table`,
    /// served by `region`'s gateway.
    Served(DecisionLabel, Option<&'static str>, &'static str),
    /// Scattered: forwarded to the local (eu) gateway.
    Scatter(ScatterCause, &'static str),
    /// Refused with the reason's SQLSTATE; not timed.
    Reject(RejectReason, Option<&'static str>),
    /// Answered by geogate itself (a deferred BEGIN): global, not timed.
    Answered,
    /// `mode = "observe"`: what enforce would refuse, forwarded unchanged
    /// to the local gateway (counted as a rejection, timed as one).
    WouldReject(RejectReason, &'static str),
}

const LOCAL: &str = "eu";

/// The series a live workload should leave on `/metrics`, built from the
/// script as it runs.
struct LiveModel {
    expected: HashMap<SeriesKey, f64>,
    /// Statements timed per (decision, region).
    timed: HashMap<(String, String), f64>,
}

impl LiveModel {
    fn new() -> LiveModel {
        let mut m = LiveModel {
            expected: HashMap::new(),
            timed: HashMap::new(),
        };
        // Unlabelled counters and the cache results exist from the start.
        m.add("geogate_cross_region_transactions_total", &[], 0.0);
        m.add("geogate_parse_errors_total", &[], 0.0);
        for r in CacheResult::ALL {
            m.add(
                "geogate_tenant_cache_lookups_total",
                &[("result", r.as_str())],
                0.0,
            );
        }
        m
    }

    fn add(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        *self.expected.entry(key(name, labels)).or_default() += v;
    }

    fn set(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.expected.insert(key(name, labels), v);
    }

    fn statement(&mut self, d: DecisionLabel, table: Option<&str>, region: Option<&str>) {
        self.add(
            "geogate_statements_total",
            &[
                ("decision", d.as_str()),
                ("table", table.unwrap_or("none")),
                ("region", region.unwrap_or("none")),
            ],
            1.0,
        );
    }

    fn timed(&mut self, d: DecisionLabel, region: &str) {
        *self
            .timed
            .entry((d.as_str().to_owned(), region.to_owned()))
            .or_default() += 1.0;
    }

    fn lookup(&mut self, r: CacheResult) {
        self.add(
            "geogate_tenant_cache_lookups_total",
            &[("result", r.as_str())],
            1.0,
        );
    }

    fn failover(&mut self, from: &str, to: &str) {
        self.add(
            "geogate_failovers_total",
            &[("from", from), ("to", to)],
            1.0,
        );
    }

    fn cross_region_txn(&mut self) {
        self.add("geogate_cross_region_transactions_total", &[], 1.0);
    }

    fn parse_error(&mut self) {
        self.add("geogate_parse_errors_total", &[], 1.0);
    }

    fn region_move(&mut self, table: &str, from: &str, to: &str) {
        self.add(
            "geogate_region_moves_total",
            &[("table", table), ("from", from), ("to", to)],
            1.0,
        );
    }

    /// Sends `sql` as a simple query, checks it succeeded (or was refused
    /// with the reason's SQLSTATE), and adds what `expect` counts.
    async fn run(&mut self, c: &Client, sql: &str, expect: Expect) {
        let code = c.simple_query(sql).await.err().map(|e| sqlstate(&e));
        let want = match expect {
            Expect::Reject(reason, _) => Some(reason.sqlstate().to_owned()),
            _ => None,
        };
        assert_eq!(code, want, "{sql}");
        self.count(expect);
    }

    /// Like [`LiveModel::run`] for a statement forwarded to a gateway that
    /// answers it with an error (`code`).
    async fn run_failing_upstream(&mut self, c: &Client, sql: &str, expect: Expect, code: &str) {
        let got = c.simple_query(sql).await.err().map(|e| sqlstate(&e));
        assert_eq!(got.as_deref(), Some(code), "{sql}");
        self.count(expect);
    }

    fn count(&mut self, expect: Expect) {
        match expect {
            Expect::Served(d, table, region) => {
                self.statement(d, table, Some(region));
                if d == DecisionLabel::Rewrite {
                    let t = table.unwrap_or("none");
                    self.add(
                        "geogate_rewrites_total",
                        &[("table", t), ("region", region)],
                        1.0,
                    );
                }
                self.timed(d, region);
            }
            Expect::Scatter(cause, table) => {
                self.statement(DecisionLabel::Scatter, Some(table), Some(LOCAL));
                self.add(
                    "geogate_scatter_total",
                    &[("table", table), ("cause", cause.as_str())],
                    1.0,
                );
                self.timed(DecisionLabel::Scatter, LOCAL);
            }
            Expect::Reject(reason, table) => {
                self.statement(DecisionLabel::Reject, table, None);
                self.add(
                    "geogate_rejections_total",
                    &[
                        ("reason", reason.as_str()),
                        ("table", table.unwrap_or("none")),
                    ],
                    1.0,
                );
            }
            Expect::Answered => self.statement(DecisionLabel::Global, None, Some(LOCAL)),
            Expect::WouldReject(reason, table) => {
                self.count(Expect::Reject(reason, Some(table)));
                self.timed(DecisionLabel::Reject, LOCAL);
            }
        }
    }

    fn statements_total(&self) -> f64 {
        self.expected
            .iter()
            .filter(|((n, _), _)| n == "geogate_statements_total")
            .map(|(_, v)| v)
            .sum()
    }

    /// Checks a live `/metrics` body: every contract metric with its type
    /// (with `all_families`; else those present); every expected series with
    /// exactly its value; no counter series or histogram the workload did
    /// not cause.
    fn assert_matches(&self, body: &str, who: &str, all_families: bool) {
        let expo = parse_exposition(body);
        for (name, ty, _) in CONTRACT {
            let got = expo.types.get(*name).map(String::as_str);
            if all_families || got.is_some() {
                assert_eq!(got, Some(*ty), "{who}: TYPE of {name}");
            }
        }
        let mut mismatches = Vec::new();
        for (k, v) in &self.expected {
            let got = expo.samples.get(k).copied();
            if got != Some(*v) {
                mismatches.push(format!("{k:?}: expected {v}, got {got:?}"));
            }
        }
        for ((name, labels), v) in &expo.samples {
            let counter = CONTRACT
                .iter()
                .any(|(n, t, _)| n == name && *t == "counter");
            if counter && !self.expected.contains_key(&(name.clone(), labels.clone())) {
                mismatches.push(format!("unexpected series {name}{labels:?} = {v}"));
            }
        }
        let count_name = "geogate_statement_duration_seconds_count";
        for ((d, r), n) in &self.timed {
            let labels = [("decision", d.as_str()), ("region", r.as_str())];
            let got = expo.samples.get(&key(count_name, &labels)).copied();
            if got != Some(*n) {
                mismatches.push(format!("{count_name}{labels:?}: expected {n}, got {got:?}"));
            }
            let inf = [
                ("decision", d.as_str()),
                ("region", r.as_str()),
                ("le", "+Inf"),
            ];
            let bucket = expo
                .samples
                .get(&key("geogate_statement_duration_seconds_bucket", &inf));
            assert_eq!(bucket, got.as_ref(), "{who}: +Inf bucket of {labels:?}");
        }
        for ((name, labels), v) in &expo.samples {
            if name == count_name {
                let k = (labels["decision"].clone(), labels["region"].clone());
                if !self.timed.contains_key(&k) {
                    mismatches.push(format!("unexpected timing {labels:?} = {v}"));
                }
            }
        }
        assert!(
            mismatches.is_empty(),
            "{who}: /metrics differs from the workload:\n{}",
            mismatches.join("\n")
        );
    }
}

/// Sets the gauges a live geogate of [`LiveGeo::config`] should show.
fn expect_gauges(m: &mut LiveModel, down: &[&str], entries: f64, clients: f64) {
    for r in ["eu", "us", "apac", "sa", "af"] {
        let up = if down.contains(&r) { 0.0 } else { 1.0 };
        m.set("geogate_upstream_up", &[("region", r)], up);
    }
    m.set("geogate_tenant_cache_entries", &[], entries);
    m.set("geogate_client_connections", &[], clients);
}

/// The value of a one-series PromQL result, if any.
async fn prom_scalar(prom: SocketAddr, expr: &str) -> Option<f64> {
    let doc = query(prom, expr).await;
    doc["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_workload_is_counted_exactly_on_metrics_and_scraped_by_prometheus() {
    let geo = LiveGeo::new("obs_live");
    // The main geogate opts into forwarding what cannot be parsed (the
    // default refuses it), to count both paths.
    let main = start_live(&geo.config("on_parse_error = \"forward\"", "tenant_directory")).await;
    let strict = start_live(&geo.config(
        "on_cross_region_txn = \"reject\"\non_parse_error = \"reject\"",
        "no_such_directory",
    ))
    .await;
    let observe = start_live(&geo.config("mode = \"observe\"", "tenant_directory")).await;
    let prom = start_prometheus(main.metrics, &repo_path("config/alerts.yml"));
    let p = prom.addr;

    // Ready once the directory has loaded and the local gateway is up; the
    // geogate whose directory cannot load never is.
    wait_ready(&main).await;
    assert_eq!(get(main.metrics, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(
        get(strict.metrics, "/readyz").await,
        (503, "not ready: tenant cache not loaded\n".into())
    );

    // Prometheus scrapes geogate before the workload starts.
    wait_for(
        "prometheus scraping",
        Duration::from_secs(30),
        || async move {
            TcpStream::connect(p).await.is_ok()
                && prom_scalar(p, "up{job=\"geogate\"}").await == Some(1.0)
        },
    )
    .await;

    use DecisionLabel::{Global, Rewrite, Route};
    let users = Some("users");
    let mut m = LiveModel::new();
    let c = connect_live(&main, &geo.db).await;
    // A statement naming no regional table is not parsed (the analyzer's
    // prescan), so its table label is `none`, not `plans`.
    m.run(
        &c,
        "SELECT count(*) FROM plans",
        Expect::Served(Global, None, "eu"),
    )
    .await;
    m.run(&c, "SELECT 1", Expect::Served(Global, None, "eu"))
        .await;
    // Explicit region: routed.
    for region in ["us", "apac", "us"] {
        let sql = format!("SELECT count(*) FROM users WHERE region = '{region}'");
        m.run(&c, &sql, Expect::Served(Route, users, region)).await;
    }
    // Tenant predicate: rewritten to the tenant's region, found in the
    // loaded directory.
    for (tenant, region) in LIVE_TENANTS {
        let sql = format!("SELECT count(*) FROM users WHERE tenant_id = '{tenant}'");
        m.run(&c, &sql, Expect::Served(Rewrite, users, region))
            .await;
        m.lookup(CacheResult::Hit);
    }
    // The apac tenant moves to us behind geogate's back: the cached region
    // finds nothing, the directory says us (a stale entry), and the read
    // runs again there.
    let (mover, from, to) = (LIVE_TENANTS[2].0, "apac", "us");
    Cluster::shared(to).psql(
        &geo.db,
        &format!(
            "INSERT INTO users (tenant_id, email, region) \
             SELECT '{mover}', 'u' || g || '@{from}', '{to}' FROM generate_series(1, 3) g"
        ),
    );
    Cluster::shared(from).psql(
        &geo.db,
        &format!("DELETE FROM users WHERE tenant_id = '{mover}'"),
    );
    Cluster::shared("eu").psql(
        &geo.db,
        &format!("UPDATE tenant_directory SET region = '{to}' WHERE id = '{mover}'"),
    );
    let sql = format!("SELECT email FROM users WHERE tenant_id = '{mover}'");
    let rows = c.simple_query(&sql).await.unwrap();
    let found = rows
        .iter()
        .filter(|r| matches!(r, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(found, 3, "rows of the moved tenant");
    m.count(Expect::Served(Rewrite, users, from));
    m.lookup(CacheResult::Hit);
    m.lookup(CacheResult::Stale);
    m.count(Expect::Served(Rewrite, users, to));
    m.lookup(CacheResult::Hit);
    // Scatters: several regions named, the hint, a table that allows it.
    m.run(
        &c,
        "SELECT count(*) FROM users WHERE region IN ('eu', 'us')",
        Expect::Scatter(ScatterCause::MultiRegion, "users"),
    )
    .await;
    m.run(
        &c,
        "/*+ geogate:allow_scatter */ SELECT count(*) FROM users WHERE email LIKE 'u1%'",
        Expect::Scatter(ScatterCause::Allowed, "users"),
    )
    .await;
    m.run(
        &c,
        "SELECT count(*) FROM documents",
        Expect::Scatter(ScatterCause::Allowed, "documents"),
    )
    .await;
    // Rejections this geogate's policy can produce.
    m.run(
        &c,
        "SELECT count(*) FROM users WHERE email LIKE 'u1%'",
        Expect::Reject(RejectReason::NoRegion, users),
    )
    .await;
    let ghost = format!("SELECT count(*) FROM users WHERE tenant_id = '{GHOST_TENANT}'");
    m.run(
        &c,
        &ghost,
        Expect::Reject(RejectReason::UnknownTenant, users),
    )
    .await;
    m.lookup(CacheResult::Miss);
    m.run(
        &c,
        "SELECT count(*) FROM users WHERE region = 'mars'",
        Expect::Reject(RejectReason::UnknownRegion, users),
    )
    .await;
    // af's gateway is down and it has no fallback.
    m.run(
        &c,
        "SELECT count(*) FROM users WHERE region = 'af'",
        Expect::Reject(RejectReason::NoGateway, users),
    )
    .await;
    // sa's gateway is down: its statements are served by its fallback, us,
    // and each one counts a failover.
    for _ in 0..2 {
        m.run(
            &c,
            "SELECT count(*) FROM users WHERE region = 'sa'",
            Expect::Served(Route, users, "us"),
        )
        .await;
        m.failover("sa", "us");
    }
    // Unparseable, on_parse_error = "forward": global, to the local gateway.
    m.run_failing_upstream(
        &c,
        "SELEC count(*) FROM users",
        Expect::Served(Global, None, "eu"),
        "42601",
    )
    .await;
    m.parse_error();
    // A transaction pinned to us that also reads eu: allowed, counted once.
    m.run(&c, "BEGIN", Expect::Answered).await;
    m.run(
        &c,
        "SELECT count(*) FROM users WHERE region = 'us'",
        Expect::Served(Route, users, "us"),
    )
    .await;
    m.run(
        &c,
        "SELECT count(*) FROM users WHERE region = 'eu'",
        Expect::Served(Route, users, "us"),
    )
    .await;
    m.cross_region_txn();
    m.run(&c, "COMMIT", Expect::Served(Global, None, "us"))
        .await;
    // A second client, open while /metrics is read.
    let c2 = connect_live(&main, &geo.db).await;
    m.run(
        &c2,
        "SELECT count(*) FROM users WHERE region = 'apac'",
        Expect::Served(Route, users, "apac"),
    )
    .await;
    // A region move, routed by its WHERE (where the rows are now). Last on
    // its session: the tenant reload it triggers comes with the next statement.
    m.run(
        &c,
        "UPDATE users SET region = 'us' WHERE region = 'eu' AND email = 'nobody@eu'",
        Expect::Served(Route, users, "eu"),
    )
    .await;
    m.region_move("users", "eu", "us");
    // The three directory tenants plus the remembered "not found".
    expect_gauges(&mut m, &["sa", "af"], 4.0, 2.0);

    // The geogate with the stricter policy and an unreadable directory.
    let mut s = LiveModel::new();
    let sc = connect_live(&strict, &geo.db).await;
    s.run(
        &sc,
        "SELEC count(*) FROM users",
        Expect::Reject(RejectReason::ParseError, None),
    )
    .await;
    s.parse_error();
    let rewrite = format!(
        "SELECT count(*) FROM users WHERE tenant_id = '{}'",
        LIVE_TENANTS[0].0
    );
    s.run(
        &sc,
        &rewrite,
        Expect::Reject(RejectReason::TenantDirectory, users),
    )
    .await;
    s.lookup(CacheResult::Miss);
    s.run(&sc, "BEGIN", Expect::Answered).await;
    s.run(
        &sc,
        "SELECT count(*) FROM users WHERE region = 'us'",
        Expect::Served(Route, users, "us"),
    )
    .await;
    s.run(
        &sc,
        "SELECT count(*) FROM users WHERE region = 'eu'",
        Expect::Reject(RejectReason::CrossRegionTxn, users),
    )
    .await;
    s.cross_region_txn();
    s.run(&sc, "ROLLBACK", Expect::Served(Global, None, "us"))
        .await;
    // The prober logs in to every region: sa's and af's dead gateways are
    // down on every sidecar, whether or not a statement went there.
    expect_gauges(&mut s, &["sa", "af"], 0.0, 1.0);

    // mode = "observe": everything goes unchanged to the local gateway and
    // is counted as enforce would decide it, scatters with cause `observe`.
    let mut o = LiveModel::new();
    wait_ready(&observe).await;
    let oc = connect_live(&observe, &geo.db).await;
    o.run(
        &oc,
        "SELECT count(*) FROM users WHERE region = 'us'",
        Expect::Served(Route, users, LOCAL),
    )
    .await;
    o.run(
        &oc,
        "SELECT count(*) FROM users WHERE region IN ('eu', 'us')",
        Expect::Scatter(ScatterCause::Observe, "users"),
    )
    .await;
    o.run(
        &oc,
        "SELECT count(*) FROM users WHERE email LIKE 'u1%'",
        Expect::WouldReject(RejectReason::NoRegion, "users"),
    )
    .await;
    expect_gauges(&mut o, &["sa", "af"], 3.0, 1.0);
    for proxy in [&main, &observe, &strict] {
        let addr = proxy.metrics;
        wait_for(
            "sa and af probed down",
            Duration::from_secs(30),
            || async move {
                let expo = parse_exposition(&get(addr, "/metrics").await.1);
                ["sa", "af"].iter().all(|r| {
                    expo.samples
                        .get(&key("geogate_upstream_up", &[("region", r)]))
                        == Some(&0.0)
                })
            },
        )
        .await;
    }

    let (status, body) = get(main.metrics, "/metrics").await;
    assert_eq!(status, 200);
    m.assert_matches(&body, "main", true);
    let (_, body) = get(observe.metrics, "/metrics").await;
    o.assert_matches(&body, "observe", false);
    let (_, body) = get(strict.metrics, "/metrics").await;
    s.assert_matches(&body, "strict", false);

    // One JSON log line per rejection and scatter, with who, what and why.
    let lines: Vec<serde_json::Value> = live_logs()
        .contents()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    for (model, enforced) in [(&m, true), (&s, true), (&o, false)] {
        for (name, labels) in model.expected.keys() {
            let (event, reason) = match name.as_str() {
                "geogate_rejections_total" => ("rejection", &labels["reason"]),
                "geogate_scatter_total" => ("scatter", &labels["cause"]),
                _ => continue,
            };
            let logged = lines.iter().any(|l| {
                l["target"] == "geogate::decision"
                    && l["event"] == event
                    && l["reason"] == reason.as_str()
                    && l["table"] == labels["table"].as_str()
                    && l["user"] == "app"
                    && l["application_name"] == "obs-test"
                    && l["fingerprint"].as_str().is_some_and(|f| !f.is_empty())
                    && (event == "scatter"
                        || (l["enforced"] == enforced
                            && RejectReason::parse(reason)
                                .is_some_and(|r| l["sqlstate"] == r.sqlstate())))
            });
            assert!(logged, "no {event} log line for {labels:?}");
        }
    }

    // Prometheus has scraped the whole workload...
    let total = m.statements_total();
    wait_for(
        "the workload scraped",
        Duration::from_secs(30),
        || async move { prom_scalar(p, "sum(geogate_statements_total)").await == Some(total) },
    )
    .await;
    // ...twice at least for every series, so rate() has two samples.
    wait_for(
        "two samples per series",
        Duration::from_secs(30),
        || async move {
            prom_scalar(p, "min(count_over_time(geogate_statements_total[1m]))")
                .await
                .is_some_and(|n| n >= 2.0)
        },
    )
    .await;
    // The live series, as PromQL sees them.
    assert_eq!(
        prom_scalar(p, "geogate_upstream_up{region=\"sa\"}").await,
        Some(0.0)
    );
    assert_eq!(
        prom_scalar(p, "sum(geogate_failovers_total{from=\"sa\",to=\"us\"})").await,
        Some(2.0)
    );
    let doc = query(p, "sum by (reason) (geogate_rejections_total)").await;
    let reasons: BTreeSet<&str> = doc["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["reason"].as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = m
        .expected
        .keys()
        .filter(|(n, _)| n == "geogate_rejections_total")
        .map(|(_, l)| l["reason"].as_str())
        .collect();
    assert_eq!(reasons, want);
    // Every dashboard expression parses and returns data for the live series
    // (but the upstream connections gauge, see the ignored test below).
    let mut failures = Vec::new();
    for expr in dashboard_exprs(&dashboard()) {
        if expr.contains("geogate_upstream_connections") {
            continue;
        }
        let doc = query(p, &substitute_grafana_vars(&expr)).await;
        if doc["status"] != "success" {
            failures.push(format!("{expr}: {}", doc["error"]));
        } else if doc["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            failures.push(format!("{expr}: no data"));
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard expressions failing on live data:\n{}",
        failures.join("\n")
    );
    drop(prom);
}

/// A value no test writes twice: literals the leak test looks for.
fn unique_token() -> String {
    use std::hash::BuildHasher;
    let h = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    format!("{h:016x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_of_rejected_scattered_and_rewritten_statements_reach_no_log_metric_or_statements_page()
 {
    let geo = LiveGeo::new("obs_leak");
    let proxy = start_live(&geo.config("", "tenant_directory")).await;
    let strict = start_live(&geo.config("on_parse_error = \"reject\"", "tenant_directory")).await;
    wait_ready(&proxy).await;
    let token = unique_token();
    let email = format!("leak-{token}@example.com");
    // A tenant id and a region value are literals too.
    let ghost = format!("{}-0000-4000-8000-{}", &token[..8], &token[4..16]);
    let region = format!("r{token}");
    let eu_tenant = LIVE_TENANTS[0].0;

    let c = connect_live(&proxy, &geo.db).await;
    let mut messages = Vec::new();
    let refused = |sql: String, code: &'static str| {
        let c = &c;
        async move {
            let e = c.simple_query(&sql).await.unwrap_err();
            assert_eq!(sqlstate(&e), code, "{sql}");
            e.as_db_error().unwrap().message().to_owned()
        }
    };
    messages.push(
        refused(
            format!("SELECT * FROM users WHERE email = '{email}'"),
            "GG001",
        )
        .await,
    );
    messages.push(
        refused(
            format!("SELECT * FROM users WHERE tenant_id = '{ghost}' AND email = '{email}'"),
            "GG002",
        )
        .await,
    );
    messages.push(
        refused(
            format!("SELECT * FROM users WHERE region = '{region}' AND email = '{email}'"),
            "GG003",
        )
        .await,
    );
    // A tenant id the directory's lookup query cannot even cast: the
    // directory is "unavailable" for it (fail closed).
    messages.push(
        refused(
            format!("SELECT * FROM users WHERE tenant_id = '{email}'"),
            "GG007",
        )
        .await,
    );
    for sql in [
        // Scattered: several regions, and the hint.
        format!("SELECT count(*) FROM users WHERE region IN ('eu', 'us') AND email = '{email}'"),
        format!("/*+ geogate:allow_scatter */ SELECT count(*) FROM users WHERE email = '{email}'"),
        // Rewritten (and, finding nothing, verified against the directory).
        format!("SELECT email FROM users WHERE tenant_id = '{eu_tenant}' AND email = '{email}'"),
    ] {
        c.simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let s = connect_live(&strict, &geo.db).await;
    let e = s
        .simple_query(&format!("SELEC * FROM users WHERE email = '{email}'"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG006");
    messages.push(e.as_db_error().unwrap().message().to_owned());

    let secrets = [email.as_str(), ghost.as_str(), region.as_str(), &token];
    for m in &messages {
        for secret in secrets {
            assert!(!m.contains(secret), "error message leaks {secret}: {m}");
        }
    }
    let mut pages = Vec::new();
    for p in [&proxy, &strict] {
        for path in ["/metrics", "/statements"] {
            let (status, body) = get(p.metrics, path).await;
            assert_eq!(status, 200);
            pages.push((path, body));
        }
    }
    // The pages do show these statements, by fingerprint.
    let doc: serde_json::Value = serde_json::from_str(&pages[1].1).unwrap();
    let shown: BTreeSet<(String, String)> = doc["statements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["fingerprint"].as_str().unwrap().contains("email"))
        .map(|r| {
            (
                r["decision"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("reject", "no_region"),
        ("reject", "unknown_tenant"),
        ("reject", "unknown_region"),
        ("scatter", "multi_region"),
        ("scatter", "allowed"),
        ("rewrite", ""),
    ] {
        assert!(
            shown.contains(&(want.0.to_owned(), want.1.to_owned())),
            "/statements lacks {want:?}: {shown:?}"
        );
    }
    // And the logs have their lines, by the same fingerprints.
    let fingerprints = |decision: &str| -> BTreeSet<String> {
        doc["statements"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["decision"] == decision)
            .map(|r| r["fingerprint"].as_str().unwrap().to_owned())
            .filter(|f| f.contains("email"))
            .collect()
    };
    let logs = live_logs().contents();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    for (event, decision) in [("rejection", "reject"), ("scatter", "scatter")] {
        let fps = fingerprints(decision);
        let logged = lines
            .iter()
            .filter(|l| l["event"] == event && l["application_name"] == "obs-test")
            .filter(|l| l["fingerprint"].as_str().is_some_and(|f| fps.contains(f)))
            .count();
        assert_eq!(logged, fps.len(), "{event} lines for {fps:?}");
    }
    for secret in secrets {
        for (path, body) in &pages {
            assert!(!body.contains(secret), "{path} leaks {secret}");
        }
        assert!(!logs.contains(secret), "logs leak {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_local_gateway_is_down() {
    let dead = |db: &str| {
        format!(
            "postgres://geogate:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
            common::free_port()
        )
    };
    let config = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
local_region = "eu"
[regions.eu]
gateway = "{eu}"
[regions.us]
gateway = "{us}"
[tables.users]
partition_column = "region"
[[users]]
name = "app"
password = "app-secret"
"#,
        eu = dead("eu"),
        us = dead("us"),
    );
    let proxy = start_live(&config).await;
    let addr = proxy.metrics;
    wait_for("/readyz 503", Duration::from_secs(10), || async move {
        get(addr, "/readyz").await == (503, "not ready: local gateway unreachable\n".to_owned())
    })
    .await;
    // Alive all the same, and the gauge says why.
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let (_, body) = get(addr, "/metrics").await;
    let expo = parse_exposition(&body);
    assert_eq!(
        expo.samples
            .get(&key("geogate_upstream_up", &[("region", "eu")])),
        Some(&0.0)
    );
}

// ------------------------------------------- session accounting

/// The value of an unlabelled or one-labelled series on a live `/metrics`.
async fn live_sample(proxy: &LiveProxy, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (_, body) = get(proxy.metrics, "/metrics").await;
    parse_exposition(&body)
        .samples
        .get(&key(name, labels))
        .copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_touching_other_regions_twice_counts_one_cross_region_transaction() {
    let geo = LiveGeo::new("obs_txn");
    let proxy = start_live(&geo.config("", "tenant_directory")).await;
    let c = connect_live(&proxy, &geo.db).await;
    for sql in [
        "BEGIN",
        "SELECT count(*) FROM users WHERE region = 'us'",
        "SELECT count(*) FROM users WHERE region = 'eu'",
        "SELECT count(*) FROM users WHERE region = 'apac'",
        "COMMIT",
    ] {
        c.simple_query(sql).await.unwrap();
    }
    assert_eq!(
        live_sample(&proxy, "geogate_cross_region_transactions_total", &[]).await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_gauge_counts_the_open_gateway_connections() {
    let geo = LiveGeo::new("obs_upconn");
    let proxy = start_live(&geo.config("", "tenant_directory")).await;
    let c = connect_live(&proxy, &geo.db).await;
    c.simple_query("SELECT count(*) FROM users WHERE region = 'us'")
        .await
        .unwrap();
    let n = live_sample(&proxy, "geogate_upstream_connections", &[("region", "us")]).await;
    assert!(
        n.is_some_and(|n| n >= 1.0),
        "upstream connections to us: {n:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connect_and_disconnect_are_logged_at_debug() {
    let geo = LiveGeo::new("obs_connlog");
    let proxy = start_live(&geo.config("", "tenant_directory")).await;
    let app = format!("conn-{}", unique_token());
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=app password=app-secret dbname={} application_name={app}",
            proxy.port, geo.db
        ),
        NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(connection);
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    let _ = conn.await;
    let logged = |message: &'static str| {
        let app = app.clone();
        async move {
            live_logs().contents().lines().any(|l| {
                let l: serde_json::Value = serde_json::from_str(l).unwrap();
                l["target"] == "geogate::connection"
                    && l["level"] == "DEBUG"
                    && l["message"] == message
                    && l["user"] == "app"
                    && l["application_name"] == app.as_str()
            })
        }
    };
    wait_for("connection lines", Duration::from_secs(5), || async {
        logged("client connected").await && logged("client disconnected").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_statements_are_counted_and_timed_once() {
    let geo = LiveGeo::new("obs_ext");
    let proxy = start_live(&geo.config("", "tenant_directory")).await;
    let c = connect_live(&proxy, &geo.db).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM users WHERE region = 'us'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let route_us = [("decision", "route"), ("region", "us")];
    let (_, body) = get(proxy.metrics, "/metrics").await;
    let expo = parse_exposition(&body);
    assert_eq!(
        expo.samples.get(&key(
            "geogate_statements_total",
            &[("decision", "route"), ("table", "users"), ("region", "us")]
        )),
        Some(&1.0)
    );
    assert_eq!(
        expo.samples
            .get(&key("geogate_statement_duration_seconds_count", &route_us)),
        Some(&1.0)
    );
}
