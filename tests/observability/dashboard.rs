//! The Grafana dashboard and the alert rules, validated against the
//! registry; promtool; every dashboard and alert expression evaluated by a
//! real Prometheus scraping the listener.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use geogate::metrics::http::Readiness;
use geogate::metrics::{CONTRACT_METRICS, EXTRA_METRICS};

use crate::prometheus::{find_binary, prom_api, query, start_prometheus};
use crate::workload::{Model, burst, metrics_sum, new_metrics, start_listener, workload};
use crate::{get, repo_path, wait_for};

pub const DATASOURCE_UID: &str = "geogate-prometheus";

/// The provisioned datasource uid, read from the provisioning file.
pub fn provisioned_datasource_uid() -> String {
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

pub fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_path("grafana/dashboards/geogate.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every PromQL expression of the dashboard's panels (not the variable queries).
pub fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// Replaces Grafana's variables by values Prometheus accepts.
pub fn substitute_grafana_vars(expr: &str) -> String {
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
pub fn registry_metric_names() -> BTreeSet<String> {
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
pub fn metric_names_in(expr: &str) -> Vec<String> {
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

pub async fn scraped_statements_total(prom: SocketAddr) -> Option<f64> {
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
