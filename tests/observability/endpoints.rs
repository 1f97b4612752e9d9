//! `/healthz`, `/readyz` and unknown paths; `/statements`, the metrics and
//! the decision logs bounded and never carrying a literal.

use std::sync::Arc;

use geogate::logging::{self, ClientInfo, DecisionLog, LogCapture, LogFormat};
use geogate::metrics::http::Readiness;
use geogate::metrics::{Outcome, RejectReason, ScatterCause, StatementEvent};

use crate::workload::{new_metrics, start_listener};
use crate::{get, get_with_header};

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
