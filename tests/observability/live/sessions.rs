//! One geogate, one behaviour each: readiness while the local gateway is
//! down, and what each session counts and logs.

use std::time::Duration;

use tokio_postgres::NoTls;

use super::{config, connect_live, live_logs, seeded, start_live, unique_token};
use crate::common::{PASSWORD, Proxy};
use crate::exposition::{key, parse_exposition};
use crate::{get, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_local_gateway_is_down() {
    let dead = |db: &str| {
        format!(
            "postgres://geogate:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
            crate::common::free_port()
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
    let proxy = start_live(&config);
    let addr = proxy.metrics();
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
async fn live_sample(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (_, body) = get(proxy.metrics(), "/metrics").await;
    parse_exposition(&body)
        .samples
        .get(&key(name, labels))
        .copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_touching_other_regions_twice_counts_one_cross_region_transaction() {
    let geo = seeded("obs_txn");
    let proxy = start_live(&config(&geo, "", "tenant_directory"));
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
    let geo = seeded("obs_upconn");
    let proxy = start_live(&config(&geo, "", "tenant_directory"));
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
    let geo = seeded("obs_connlog");
    let proxy = start_live(&config(&geo, "", "tenant_directory"));
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
    let geo = seeded("obs_ext");
    let proxy = start_live(&config(&geo, "", "tenant_directory"));
    let c = connect_live(&proxy, &geo.db).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM users WHERE region = 'us'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let route_us = [("decision", "route"), ("region", "us")];
    let (_, body) = get(proxy.metrics(), "/metrics").await;
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
