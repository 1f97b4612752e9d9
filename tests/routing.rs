//! Live routing against three real PostgreSQL clusters acting as the
//! regional gateways eu, us and apac (issue 4). geogate runs in-process with
//! the eu region as its local region; clients are tokio-postgres and psql.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, Geo, Proxy, sqlstate};
use tokio_postgres::{Client, NoTls};

const REGIONS: [&str; 3] = ["eu", "us", "apac"];

/// Tenants of the fixture: (id, region).
const TENANTS: [(&str, &str); 4] = [
    ("11111111-1111-1111-1111-111111111111", "eu"),
    ("22222222-2222-2222-2222-222222222222", "us"),
    ("33333333-3333-3333-3333-333333333333", "apac"),
    ("44444444-4444-4444-4444-444444444444", "eu"),
];

/// The seed schema on one regional gateway. No CHECK on region: a row that
/// geogate sent to the wrong region must be visible to the tests.
const SCHEMA: &str = "
CREATE TYPE region AS ENUM ('eu', 'us', 'apac');
CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO plans VALUES (1, 'free'), (2, 'team');
CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL, region region NOT NULL, plan_id int);
CREATE TABLE users (id serial PRIMARY KEY, tenant_id uuid NOT NULL, email text NOT NULL, region region NOT NULL);
CREATE TABLE documents (id serial PRIMARY KEY, tenant_id uuid NOT NULL, author_id int, title text, region region NOT NULL);
CREATE TABLE tenant_directory (id uuid PRIMARY KEY, region region NOT NULL);
GRANT ALL ON ALL TABLES IN SCHEMA public TO geogate;
";

/// The three regions (eu, us, apac) with the seed schema and each region's
/// rows, and the tenant directory on the local (eu) gateway.
fn seeded(prefix: &str) -> Geo {
    let clusters = REGIONS.iter().map(|r| (*r, Cluster::shared(r))).collect();
    seeded_on(prefix, clusters)
}

/// As [`seeded`], with the clusters given (eu first).
fn seeded_on(prefix: &str, clusters: Vec<(&'static str, &'static Cluster)>) -> Geo {
    let geo = Geo::with_clusters(prefix, clusters, |region| {
        let mut sql = SCHEMA.to_string();
        for (i, (id, r)) in TENANTS.iter().enumerate() {
            if *r == region {
                sql += &format!(
                    "INSERT INTO tenants VALUES ('{id}', 'tenant {i}', '{r}', 1);
                     INSERT INTO users (tenant_id, email, region) SELECT '{id}', 'u' || g || '@t{i}', '{r}' FROM generate_series(1, {n}) g;",
                    n = 3 + i
                );
            }
        }
        sql
    });
    geo.directory(TENANTS);
    geo
}

/// geogate local to eu over [`seeded`] regions, `extra_proxy` added to `[proxy]`.
fn config(geo: &Geo, extra_proxy: &str) -> String {
    let gw = |r: &str| geo.gateway(r);
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
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

[tenants]
query = "SELECT id::text, region::text FROM tenant_directory"
lookup_query = "SELECT region::text FROM tenant_directory WHERE id = $1::uuid"
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
on_missing_region = "reject"
[tables.plans]
locality = "global"

[[users]]
name = "app"
password = "app-secret"

[[users]]
name = "report"
password = "report-secret"
allow_scatter = true
"#,
        eu = gw("eu"),
        us = gw("us"),
        apac = gw("apac"),
    )
}

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_only_in_their_region_and_reads_find_them() {
    let geo = seeded("route_writes");
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    let (us_tenant, apac_tenant) = (TENANTS[1].0, TENANTS[2].0);

    // Explicit region: routed.
    c.execute(
        &format!(
            "INSERT INTO users (tenant_id, email, region) VALUES ('{us_tenant}', 'new@us', 'us')"
        ),
        &[],
    )
    .await
    .unwrap();
    // No region, tenant named: rewritten (the region column is added).
    c.execute(
        &format!("INSERT INTO users (tenant_id, email) VALUES ('{apac_tenant}', 'new@apac')"),
        &[],
    )
    .await
    .unwrap();
    for (email, region) in [("new@us", "us"), ("new@apac", "apac")] {
        for r in REGIONS {
            let n = geo.direct(
                r,
                &format!("SELECT count(*) FROM users WHERE email = '{email}'"),
            );
            assert_eq!(n, if r == region { "1" } else { "0" }, "{email} in {r}");
        }
    }
    assert_eq!(
        geo.direct("apac", "SELECT region FROM users WHERE email = 'new@apac'"),
        "apac"
    );

    // Tenant-scoped reads without a region predicate return that tenant's rows.
    let n = count(
        &c,
        &format!("SELECT count(*) FROM users WHERE tenant_id = '{us_tenant}'"),
    )
    .await;
    assert_eq!(n, 4 + 1); // the fixture's 4 rows of tenant 1, plus the insert
    let n = count(
        &c,
        &format!("SELECT count(*) FROM users u WHERE u.tenant_id = '{apac_tenant}'"),
    )
    .await;
    assert_eq!(n, 5 + 1);
    // With an explicit region: routed there.
    let n = count(&c, "SELECT count(*) FROM users WHERE region = 'apac'").await;
    assert_eq!(n, 6);
    // Global tables are served locally.
    assert_eq!(count(&c, "SELECT count(*) FROM plans").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_carry_their_sqlstate_and_leave_the_session_usable() {
    let geo = seeded("route_reject");
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;

    let e = c
        .simple_query("SELECT email FROM users WHERE email LIKE 'u1%'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG001");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("users") && msg.contains("region"), "{msg}");
    assert!(
        !msg.contains("u1%"),
        "rejection must not echo literals: {msg}"
    );

    let e = c
        .simple_query(
            "SELECT * FROM users WHERE tenant_id = '99999999-9999-9999-9999-999999999999'",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG002");
    let e = c
        .simple_query("SELECT * FROM users WHERE region = 'mars'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG003");
    // on_missing_region = "reject" refuses even with a tenant predicate.
    let e = c
        .simple_query(&format!(
            "SELECT * FROM documents WHERE tenant_id = '{}'",
            TENANTS[0].0
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG001");
    // Extended protocol too, and the session goes on.
    let e = c
        .query("SELECT email FROM users WHERE email = $1", &[&"x"])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG001");
    assert_eq!(
        count(&c, "SELECT count(*) FROM users WHERE region = 'eu'").await,
        3 + 6
    );

    // A user with allow_scatter may run it: served by the local gateway.
    let r = proxy.connect("report", "report-secret", &geo.db).await;
    assert_eq!(
        count(&r, "SELECT count(*) FROM users WHERE email LIKE 'u1%'").await,
        2
    );
    // So may anyone with the hint comment.
    let n = count(
        &c,
        "/*+ geogate:allow_scatter */ SELECT count(*) FROM users WHERE email LIKE 'u1%'",
    )
    .await;
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prepared_statement_runs_in_every_region() {
    let geo = seeded("route_prepared");
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    let stmt = c
        .prepare("SELECT count(*) FROM users WHERE tenant_id = $1::uuid")
        .await
        .unwrap();
    // The client sees the parameters it wrote, not the one geogate adds.
    assert_eq!(stmt.params().len(), 1);
    for (i, (tenant, region)) in TENANTS.iter().enumerate() {
        let id: uuid_text::Uuid = uuid_text::Uuid(tenant.to_string());
        let n: i64 = c.query_one(&stmt, &[&id]).await.unwrap().get(0);
        assert_eq!(n, 3 + i as i64, "tenant of {region}");
    }
    // And with an explicit region parameter.
    let stmt = c
        .prepare("SELECT count(*) FROM users WHERE region = $1::text::region")
        .await
        .unwrap();
    for (i, (_, region)) in TENANTS.iter().take(3).enumerate() {
        let n: i64 = c.query_one(&stmt, &[region]).await.unwrap().get(0);
        assert_eq!(
            n,
            3 + i as i64 + if *region == "eu" { 6 } else { 0 },
            "{region}"
        );
    }
}

/// Sends a uuid parameter as text, so the test needs no uuid crate.
mod uuid_text {
    use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

    #[derive(Debug)]
    pub struct Uuid(pub String);

    impl ToSql for Uuid {
        fn to_sql(
            &self,
            _: &Type,
            out: &mut bytes::BytesMut,
        ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
            let hex: String = self.0.chars().filter(|c| *c != '-').collect();
            for i in 0..16 {
                out.extend_from_slice(&[u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?]);
            }
            Ok(IsNull::No)
        }
        fn accepts(ty: &Type) -> bool {
            *ty == Type::UUID
        }
        to_sql_checked!();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_pinned_and_cross_region_ones_counted_or_refused() {
    let geo = seeded("route_txn");
    let proxy = Proxy::start(&config(&geo, ""));
    let mut c = proxy.connect("app", "app-secret", &geo.db).await;
    let us = TENANTS[1].0;

    let t = c.transaction().await.unwrap();
    t.execute(
        &format!("INSERT INTO users (tenant_id, email, region) VALUES ('{us}', 'txn@us', 'us')"),
        &[],
    )
    .await
    .unwrap();
    // Same transaction, no region: still the pinned connection, sees its own write.
    let n: i64 = t
        .query_one(
            "SELECT count(*) FROM users WHERE email = 'txn@us' AND region = 'us'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    t.commit().await.unwrap();
    assert_eq!(
        geo.direct("us", "SELECT count(*) FROM users WHERE email = 'txn@us'"),
        "1"
    );

    let t = c.transaction().await.unwrap();
    t.execute(
        &format!("INSERT INTO users (tenant_id, email, region) VALUES ('{us}', 'rolled@us', 'us')"),
        &[],
    )
    .await
    .unwrap();
    t.rollback().await.unwrap();
    assert_eq!(
        geo.direct("us", "SELECT count(*) FROM users WHERE email = 'rolled@us'"),
        "0"
    );

    // Cross-region with the default policy: allowed (served by the pinned gateway).
    c.batch_execute("BEGIN; SELECT count(*) FROM users WHERE region = 'us'; SELECT count(*) FROM users WHERE region = 'eu'; COMMIT")
        .await
        .unwrap();

    // Refused by policy.
    let proxy = Proxy::start(&config(&geo, "on_cross_region_txn = \"reject\""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.simple_query("SELECT count(*) FROM users WHERE region = 'us'")
        .await
        .unwrap();
    let e = c
        .simple_query("SELECT count(*) FROM users WHERE region = 'eu'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG005");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM users WHERE region = 'eu'").await,
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tenant_is_found_in_its_new_region() {
    let geo = seeded("route_move");
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    let (tenant, from, to) = (TENANTS[3].0, "eu", "apac");
    let before = count(
        &c,
        &format!("SELECT count(*) FROM users WHERE tenant_id = '{tenant}'"),
    )
    .await;
    assert_eq!(before, 6);

    // A migration moves the tenant's rows directly on the gateways.
    move_tenant(&geo, tenant, from, to);

    // The cache still says eu: the rewritten read finds nothing there, geogate
    // looks the tenant up again and runs it in apac (verify on empty).
    let rows = c
        .simple_query(&format!(
            "SELECT email FROM users WHERE tenant_id = '{tenant}'"
        ))
        .await
        .unwrap();
    let emails = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(
        emails, 6,
        "verify on empty runs the read again in the new region"
    );
    // Updates follow too, and land in apac.
    let n = c
        .execute(
            &format!("UPDATE users SET email = email || '.moved' WHERE tenant_id = '{tenant}'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(
        geo.direct(to, "SELECT count(*) FROM users WHERE email LIKE '%.moved'"),
        "6"
    );
    assert_eq!(
        geo.direct(
            from,
            "SELECT count(*) FROM users WHERE email LIKE '%.moved'"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_and_observe_forward_what_enforce_rejects() {
    let geo = seeded("route_modes");
    let unconstrained = "SELECT count(*) FROM users WHERE email LIKE 'u1%'";

    let proxy = Proxy::start(&config(&geo, "mode = \"warn\""));
    let (client, mut connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=app password=app-secret dbname={}",
            proxy.port, geo.db
        ),
        NoTls,
    )
    .await
    .unwrap();
    let notices = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = notices.clone();
    tokio::spawn(async move {
        let mut stream = futures_poll::messages(&mut connection);
        while let Some(m) = stream.next().await {
            if let Ok(tokio_postgres::AsyncMessage::Notice(n)) = m {
                sink.lock()
                    .unwrap()
                    .push((n.code().code().to_string(), n.message().to_string()));
            }
        }
    });
    assert_eq!(count(&client, unconstrained).await, 2); // local gateway only: eu's rows
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = notices.lock().unwrap().clone();
    assert!(
        got.iter()
            .any(|(code, m)| code == "GG001" && m.contains("users")),
        "{got:?}"
    );

    let proxy = Proxy::start(&config(&geo, "mode = \"observe\""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    assert_eq!(count(&c, unconstrained).await, 2);
    // Observe forwards unchanged to the local gateway: a us tenant's rows are not there.
    let n = count(
        &c,
        &format!(
            "SELECT count(*) FROM users WHERE tenant_id = '{}'",
            TENANTS[1].0
        ),
    )
    .await;
    assert_eq!(n, 0);
}

/// The first column of the first row of a simple query, as a port number.
async fn simple_port(c: &Client, sql: &str) -> i32 {
    c.simple_query(sql)
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .expect("one row")
}

/// Drives a connection's message stream without the futures crate.
mod futures_poll {
    use std::future::poll_fn;
    use std::pin::Pin;

    pub struct Messages<'a, S, T>(&'a mut tokio_postgres::Connection<S, T>);

    pub fn messages<S, T>(c: &mut tokio_postgres::Connection<S, T>) -> Messages<'_, S, T> {
        Messages(c)
    }

    impl<S, T> Messages<'_, S, T>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        pub async fn next(
            &mut self,
        ) -> Option<Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>> {
            poll_fn(|cx| Pin::new(&mut *self.0).poll_message(cx)).await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_gateway_fails_over_to_its_fallback_and_traffic_returns() {
    // us runs on a cluster of this test's own, so that it can be stopped.
    let us: &'static Cluster = Box::leak(Box::new(Cluster::start_owned("us_failover")));
    let geo = seeded_on(
        "route_failover",
        vec![
            ("eu", Cluster::shared("eu")),
            ("us", us),
            ("apac", Cluster::shared("apac")),
        ],
    );
    let proxy = Proxy::start(&config(&geo, r#"metrics_listen = "127.0.0.1:0""#));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    let us_tenant = TENANTS[1].0;
    let insert = |email: &str| {
        format!(
            "INSERT INTO users (tenant_id, email, region) VALUES ('{us_tenant}', '{email}', 'us')"
        )
    };
    let served_by = "SELECT inet_server_port() FROM users WHERE region = 'us' LIMIT 1";
    // Simple queries before the stop: a prepared statement's Close + Sync,
    // sent by tokio-postgres when the statement drops, could still be on its
    // way to us when it dies, and a session owed an answer by a dead gateway
    // is lost with it (what this test pins is an idle session failing over).
    c.simple_query(&insert("before@us")).await.unwrap();
    let port = simple_port(&c, served_by).await;
    assert_eq!(port, i32::from(us.port()));

    us.stop();
    // Wait until geogate knows: the session's idle us connection closing or
    // the prober's failed startups mark us down (no fixed sleep: either
    // may take a while on a loaded machine).
    proxy.wait_upstream_up("us", false).await;
    // The same session goes on: us statements are served by us's fallback (eu).
    c.execute(&insert("during@us"), &[]).await.unwrap();
    assert_eq!(
        geo.direct("eu", "SELECT count(*) FROM users WHERE email = 'during@us'"),
        "1"
    );
    let port: i32 = c.query_one(served_by, &[]).await.unwrap().get(0);
    assert_eq!(port, i32::from(geo.cluster("eu").port()));
    // Other regions are untouched.
    assert_eq!(
        count(&c, "SELECT count(*) FROM users WHERE region = 'apac'").await,
        5
    );

    us.start();
    // The prober logs in to us again (twice in a row, a second apart);
    // then traffic returns.
    proxy.wait_upstream_up("us", true).await;
    let port: i32 = c.query_one(served_by, &[]).await.unwrap().get(0);
    assert_eq!(port, i32::from(us.port()), "traffic returned to us");
    c.execute(&insert("after@us"), &[]).await.unwrap();
    // No committed write was lost: both us writes are in us.
    let emails = geo.direct(
        "us",
        "SELECT string_agg(email, ',' ORDER BY email) FROM users WHERE email LIKE '%@us'",
    );
    assert_eq!(emails, "after@us,before@us");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_sent_through_bind_is_replayed_on_a_region_opened_later() {
    let geo = seeded("route_ext_set");
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    // tokio-postgres `execute` with a string: Parse/Describe/Sync, then Bind/Execute/Sync.
    c.execute("SET statement_timeout = '4321ms'", &[])
        .await
        .unwrap();
    let setting = "SELECT current_setting('statement_timeout'), inet_server_port() FROM users WHERE region = 'us' LIMIT 1";
    let row = c.query_one(setting, &[]).await.unwrap();
    let port: i32 = row.get(1);
    assert_eq!(port, i32::from(geo.cluster("us").port()), "served by us");
    let value: String = row.get(0);
    assert_eq!(value, "4321ms");
}

/// Moves a tenant's users from one region to another directly on the
/// gateways and in the directory, as a migration would (geogate's cache
/// still holds the old region).
fn move_tenant(geo: &Geo, tenant: &str, from: &str, to: &str) {
    let rows = geo.direct(
        from,
        &format!("SELECT email FROM users WHERE tenant_id = '{tenant}' ORDER BY email"),
    );
    let values: Vec<String> = rows
        .lines()
        .map(|e| format!("('{tenant}', '{e}', '{to}')"))
        .collect();
    geo.direct(
        to,
        &format!(
            "INSERT INTO users (tenant_id, email, region) VALUES {}",
            values.join(",")
        ),
    );
    geo.direct(
        from,
        &format!("DELETE FROM users WHERE tenant_id = '{tenant}'"),
    );
    geo.direct(
        "eu",
        &format!("UPDATE tenant_directory SET region = '{to}' WHERE id = '{tenant}'"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_find_a_moved_tenant_in_its_new_region() {
    use tokio_postgres::types::Type;
    let geo = seeded("route_ext_move");
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    let tenant = |i: usize| uuid_text::Uuid(TENANTS[i].0.to_string());
    let read = c
        .prepare("SELECT email FROM users WHERE tenant_id = $1::uuid")
        .await
        .unwrap();
    let update = c
        .prepare("UPDATE users SET email = email || '.moved' WHERE tenant_id = $1::uuid")
        .await
        .unwrap();
    // Before the moves: each tenant's rows where the cache says.
    assert_eq!(c.query(&read, &[&tenant(0)]).await.unwrap().len(), 3);

    move_tenant(&geo, TENANTS[0].0, "eu", "us");
    move_tenant(&geo, TENANTS[3].0, "eu", "apac");
    move_tenant(&geo, TENANTS[1].0, "us", "apac");

    // Bind/Execute/Sync of a statement prepared earlier: the empty answer
    // from eu is held, the tenant looked up again, the batch run in us.
    let rows = c.query(&read, &[&tenant(0)]).await.unwrap();
    assert_eq!(rows.len(), 3, "read of the tenant moved to us");
    // Parse/Bind/Describe/Execute/Sync of the unnamed statement in one batch.
    let rows = c
        .query_typed(
            "SELECT email FROM users WHERE tenant_id = $1",
            &[(&tenant(3), Type::UUID)],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 6, "read of the tenant moved to apac");
    // An update that affects no row in the old region runs again in the new one.
    let n = c.execute(&update, &[&tenant(1)]).await.unwrap();
    assert_eq!(n, 4, "update of the tenant moved from us to apac");
    assert_eq!(
        geo.direct(
            "apac",
            &format!(
                "SELECT count(*) FROM users WHERE email LIKE '%.moved' AND tenant_id = '{}'",
                TENANTS[1].0
            )
        ),
        "4"
    );
    // The session goes on in sync.
    assert_eq!(c.query(&read, &[&tenant(3)]).await.unwrap().len(), 6);
    assert_eq!(count(&c, "SELECT count(*) FROM plans").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_sent_through_bind_pins_the_transaction_to_its_first_statements_region() {
    let geo = seeded("route_ext_begin");
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    let us = TENANTS[1].0;
    let us_port = i32::from(geo.cluster("us").port());
    let served_by = "SELECT inet_server_port()";
    let insert = |email: &str| {
        format!("INSERT INTO users (tenant_id, email, region) VALUES ('{us}', '{email}', 'us')")
    };

    // `query` with a string: Parse/Describe/Sync, then Bind/Execute/Sync of BEGIN.
    c.query("BEGIN", &[]).await.unwrap();
    c.execute(&insert("ext1@us"), &[]).await.unwrap();
    // A global statement of the transaction runs on its pinned connection.
    let port: i32 = c.query_one(served_by, &[]).await.unwrap().get(0);
    assert_eq!(port, us_port, "the transaction runs in us");
    // Not committed yet: the insert is invisible from outside.
    assert_eq!(
        geo.direct("us", "SELECT count(*) FROM users WHERE email = 'ext1@us'"),
        "0"
    );
    c.query("COMMIT", &[]).await.unwrap();
    assert_eq!(
        geo.direct("us", "SELECT count(*) FROM users WHERE email = 'ext1@us'"),
        "1"
    );

    // Parse/Bind/Describe/Execute/Sync of the unnamed statement in one batch.
    c.query_typed("START TRANSACTION", &[]).await.unwrap();
    c.execute(&insert("ext2@us"), &[]).await.unwrap();
    let port: i32 = c.query_one(served_by, &[]).await.unwrap().get(0);
    assert_eq!(port, us_port, "the transaction runs in us");
    c.query_typed("ROLLBACK", &[]).await.unwrap();
    assert_eq!(
        geo.direct("us", "SELECT count(*) FROM users WHERE email = 'ext2@us'"),
        "0"
    );
    // The session is out of the transaction: a global statement is local again.
    let port: i32 = c.query_one(served_by, &[]).await.unwrap().get(0);
    assert_eq!(port, i32::from(geo.cluster("eu").port()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_begin_in_the_batch_of_the_first_statement_goes_to_its_region() {
    use common::wire::{self, Got, Raw};
    let geo = seeded("route_ext_begin_batch");
    let config = config(&geo, "")
        + "\n[[users]]\nname = \"raw\"\npassword = \"raw-secret\"\nauth = \"password\"\n";
    let proxy = Proxy::start(&config);
    let mut c = Raw::login(proxy.port, "raw", "raw-secret", &geo.db).await;
    let us = TENANTS[1].0;
    let insert =
        format!("INSERT INTO users (tenant_id, email, region) VALUES ('{us}', 'jdbc@us', 'us')");
    // As JDBC sends it: BEGIN, the first statement and a read in one batch.
    c.send_with(|out| {
        wire::statement("BEGIN", false, out);
        wire::statement(&insert, false, out);
        wire::statement("SELECT inet_server_port()::text", true, out);
        postgres_protocol::message::frontend::sync(out);
    })
    .await;
    let us_port = geo.cluster("us").port().to_string();
    assert_eq!(
        c.answer().await,
        vec![
            Got::ParseComplete,
            Got::BindComplete,
            Got::Complete("BEGIN".into()),
            Got::ParseComplete,
            Got::BindComplete,
            Got::Complete("INSERT 0 1".into()),
            Got::ParseComplete,
            Got::BindComplete,
            Got::RowDescription,
            Got::Row(Some(us_port)),
            Got::Complete("SELECT 1".into()),
            Got::Ready(b'T'),
        ]
    );
    assert_eq!(
        geo.direct("us", "SELECT count(*) FROM users WHERE email = 'jdbc@us'"),
        "0",
        "not committed yet"
    );
    c.send_with(|out| {
        wire::statement("COMMIT", false, out);
        postgres_protocol::message::frontend::sync(out);
    })
    .await;
    assert_eq!(
        c.answer().await,
        vec![
            Got::ParseComplete,
            Got::BindComplete,
            Got::Complete("COMMIT".into()),
            Got::Ready(b'I'),
        ]
    );
    assert_eq!(
        geo.direct("us", "SELECT count(*) FROM users WHERE email = 'jdbc@us'"),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_its_own_parse_reads_one_answer_when_verify_runs_it_again() {
    use common::wire::{self, Got, Raw};
    let geo = seeded("route_ext_verify_batch");
    let config = config(&geo, "")
        + "\n[[users]]\nname = \"raw\"\npassword = \"raw-secret\"\nauth = \"password\"\n";
    let proxy = Proxy::start(&config);
    let mut c = Raw::login(proxy.port, "raw", "raw-secret", &geo.db).await;
    move_tenant(&geo, TENANTS[0].0, "eu", "us");
    move_tenant(&geo, TENANTS[3].0, "eu", "apac");
    let read = |i: usize| {
        format!(
            "SELECT email FROM users WHERE tenant_id = '{}'",
            TENANTS[i].0
        )
    };
    let rows = |n: usize| (0..n).map(|_| Got::Row(None)).collect::<Vec<_>>();
    let emails_only = |got: Vec<Got>| -> Vec<Got> {
        got.into_iter()
            .map(|g| match g {
                Got::Row(_) => Got::Row(None),
                g => g,
            })
            .collect()
    };

    // A named Parse and Describe before the Bind: their answers come from
    // the first run (eu), the statement's from the second (us).
    c.send_with(|out| {
        wire::named_statement("s1", &read(0), true, true, out);
        postgres_protocol::message::frontend::sync(out);
    })
    .await;
    let expected = [
        vec![
            Got::ParseComplete,
            Got::ParameterDescription,
            Got::RowDescription,
            Got::BindComplete,
            Got::RowDescription,
        ],
        rows(3),
        vec![Got::Complete("SELECT 3".into()), Got::Ready(b'I')],
    ]
    .concat();
    assert_eq!(emails_only(c.answer().await), expected);

    // The unnamed statement parsed in the batch: the whole batch runs again.
    c.send_with(|out| {
        wire::named_statement("", &read(3), true, false, out);
        postgres_protocol::message::frontend::sync(out);
    })
    .await;
    let expected = [
        vec![
            Got::ParseComplete,
            Got::ParameterDescription,
            Got::RowDescription,
            Got::BindComplete,
        ],
        rows(6),
        vec![Got::Complete("SELECT 6".into()), Got::Ready(b'I')],
    ]
    .concat();
    assert_eq!(emails_only(c.answer().await), expected);

    // The named statement runs again, now in us directly.
    c.send_with(|out| {
        out.extend_from_slice(&[b'B', 0, 0, 0, 14, 0, b's', b'1', 0, 0, 0, 0, 0, 0, 0]);
        postgres_protocol::message::frontend::execute("", 0, out).unwrap();
        postgres_protocol::message::frontend::sync(out);
    })
    .await;
    let expected = [
        vec![Got::BindComplete],
        rows(3),
        vec![Got::Complete("SELECT 3".into()), Got::Ready(b'I')],
    ]
    .concat();
    assert_eq!(emails_only(c.answer().await), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_to_a_restarted_gateway_is_replaced_not_reused() {
    // us restarts while the session works in eu: its us connection is dead
    // but us is up again, so no failover happens; the next us statement
    // must open a new connection instead of writing to the dead one.
    let us: &'static Cluster = Box::leak(Box::new(Cluster::start_owned("us_restart")));
    let geo = seeded_on(
        "route_restart",
        vec![
            ("eu", Cluster::shared("eu")),
            ("us", us),
            ("apac", Cluster::shared("apac")),
        ],
    );
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    let served_by = "SELECT inet_server_port() FROM users WHERE region = 'us' LIMIT 1";
    let port: i32 = c.query_one(served_by, &[]).await.unwrap().get(0);
    assert_eq!(port, i32::from(us.port()));
    // The session moves to eu; its us connection stays open, idle.
    assert_eq!(
        count(&c, "SELECT count(*) FROM users WHERE region = 'eu'").await,
        9
    );
    us.stop();
    us.start();
    let port: i32 = c.query_one(served_by, &[]).await.unwrap().get(0);
    assert_eq!(port, i32::from(us.port()));
}

/// A CancelRequest reaches the gateway that runs the session's statement
/// now, after the session moved between regions (simple Query and Bind):
/// cancelling at another region's gateway would leave the sleep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_region_the_statement_runs_in() {
    let geo = seeded("route_cancel");
    let proxy = Proxy::start(&config(&geo, ""));
    let c = proxy.connect("app", "app-secret", &geo.db).await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM users WHERE region = 'eu'").await,
        3 + 6
    );
    let sleep_us = "SELECT count(*) FROM users WHERE region = 'us' AND pg_sleep(10) IS NOT NULL";
    let sleep_apac =
        "SELECT count(*) FROM users WHERE region = 'apac' AND pg_sleep(10) IS NOT NULL";
    for (i, extended) in [false, true].into_iter().enumerate() {
        let token = c.cancel_token();
        let started = std::time::Instant::now();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            token.cancel_query(NoTls).await
        });
        let e = if extended {
            c.query(sleep_apac, &[]).await.map(|_| ()).unwrap_err()
        } else {
            c.simple_query(sleep_us).await.map(|_| ()).unwrap_err()
        };
        canceller.await.unwrap().unwrap();
        assert_eq!(sqlstate(&e), "57014", "round {i}: {e}");
        // Each sleep would last 10 s per row (not a timing assertion on geogate).
        assert!(started.elapsed() < Duration::from_secs(9), "round {i}");
    }
    // The session goes on, back in eu.
    assert_eq!(
        count(&c, "SELECT count(*) FROM users WHERE region = 'eu'").await,
        3 + 6
    );
}
