//! The live workload: every decision, rejection and scatter counted exactly
//! on three geogates' `/metrics`, logged, and scraped by Prometheus.

use std::collections::BTreeSet;
use std::time::Duration;

use geogate::metrics::{CacheResult, DecisionLabel, RejectReason, ScatterCause};
use tokio::net::TcpStream;

use super::model::{Expect, LOCAL, LiveModel, expect_gauges};
use super::{
    GHOST_TENANT, LIVE_TENANTS, config, connect_live, live_logs, seeded, start_live, wait_ready,
};
use crate::common::Cluster;
use crate::dashboard::{dashboard, dashboard_exprs, substitute_grafana_vars};
use crate::exposition::{key, parse_exposition};
use crate::prometheus::{prom_scalar, query, start_prometheus};
use crate::{get, repo_path, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_workload_is_counted_exactly_on_metrics_and_scraped_by_prometheus() {
    let geo = seeded("obs_live");
    // The main geogate opts into forwarding what cannot be parsed (the
    // default refuses it), to count both paths.
    let main = start_live(&config(
        &geo,
        "on_parse_error = \"forward\"",
        "tenant_directory",
    ));
    let strict = start_live(&config(
        &geo,
        "on_cross_region_txn = \"reject\"\non_parse_error = \"reject\"",
        "no_such_directory",
    ));
    let observe = start_live(&config(&geo, "mode = \"observe\"", "tenant_directory"));
    let prom = start_prometheus(main.metrics(), &repo_path("config/alerts.yml"));
    let p = prom.addr;

    // Ready once the directory has loaded and the local gateway is up; the
    // geogate whose directory cannot load never is.
    wait_ready(&main).await;
    assert_eq!(
        get(main.metrics(), "/readyz").await,
        (200, "ready\n".into())
    );
    assert_eq!(
        get(strict.metrics(), "/readyz").await,
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
        let addr = proxy.metrics();
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

    let (status, body) = get(main.metrics(), "/metrics").await;
    assert_eq!(status, 200);
    m.assert_matches(&body, "main", true);
    let (_, body) = get(observe.metrics(), "/metrics").await;
    o.assert_matches(&body, "observe", false);
    let (_, body) = get(strict.metrics(), "/metrics").await;
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
