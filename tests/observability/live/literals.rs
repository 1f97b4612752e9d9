//! Literals of rejected, scattered and rewritten statements reach no error
//! message, log line, metric or `/statements` row.

use std::collections::BTreeSet;

use super::{
    LIVE_TENANTS, config, connect_live, live_logs, seeded, start_live, unique_token, wait_ready,
};
use crate::common::sqlstate;
use crate::get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_of_rejected_scattered_and_rewritten_statements_reach_no_log_metric_or_statements_page()
 {
    let geo = seeded("obs_leak");
    let proxy = start_live(&config(&geo, "", "tenant_directory"));
    let strict = start_live(&config(
        &geo,
        "on_parse_error = \"reject\"",
        "tenant_directory",
    ));
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
            let (status, body) = get(p.metrics(), path).await;
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
