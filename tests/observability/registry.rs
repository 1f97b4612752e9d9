//! The metrics registry as served over real HTTP: every contract metric
//! with its type, labels and exact counts; labels outside the config.

use std::collections::BTreeSet;
use std::sync::Arc;

use geogate::metrics::http::Readiness;
use geogate::metrics::{Outcome, RejectReason, StatementEvent};

use crate::exposition::{CONTRACT, key, parse_exposition};
use crate::get;
use crate::workload::{Model, new_metrics, start_listener, workload};

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
