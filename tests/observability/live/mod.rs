//! A live geogate, in-process, serving scripted statements over three real
//! PostgreSQL clusters (eu, us, apac): its `/metrics`, `/readyz`,
//! `/statements` and logs, scraped by a real Prometheus.

mod literals;
mod model;
mod sessions;
mod workload;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use geogate::logging::{self, LogCapture, LogFormat};
use tokio_postgres::Client;

use crate::common::{Geo, Proxy};
use crate::{get, wait_for};

/// The live fixture's tenant directory: (id, region).
pub const LIVE_TENANTS: [(&str, &str); 3] = [
    ("11111111-1111-1111-1111-111111111111", "eu"),
    ("22222222-2222-2222-2222-222222222222", "us"),
    ("33333333-3333-3333-3333-333333333333", "apac"),
];

/// A tenant id the directory does not have.
pub const GHOST_TENANT: &str = "99999999-9999-9999-9999-999999999999";

/// The seed schema on each regional gateway. The enum also names sa and af,
/// the two regions whose gateways are down, so that a statement for sa
/// failed over to us is valid SQL there.
pub const LIVE_SCHEMA: &str = "
CREATE TYPE region AS ENUM ('eu', 'us', 'apac', 'sa', 'af');
CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO plans VALUES (1, 'free'), (2, 'team');
CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL, region region NOT NULL);
CREATE TABLE users (id serial PRIMARY KEY, tenant_id uuid NOT NULL, email text NOT NULL, region region NOT NULL);
CREATE TABLE documents (id serial PRIMARY KEY, tenant_id uuid NOT NULL, title text, region region NOT NULL);
CREATE TABLE tenant_directory (id uuid PRIMARY KEY, region region NOT NULL);
GRANT ALL ON ALL TABLES IN SCHEMA public TO geogate;
";

/// One database per test on each of the three shared clusters, seeded,
/// with the tenant directory on eu.
pub fn seeded(prefix: &str) -> Geo {
    let geo = Geo::new(prefix, |region| {
        let mut sql = LIVE_SCHEMA.to_string();
        for (id, _) in LIVE_TENANTS.iter().filter(|(_, r)| *r == region) {
            sql += &format!(
                "INSERT INTO users (tenant_id, email, region) \
                 SELECT '{id}', 'u' || g || '@{region}', '{region}' FROM generate_series(1, 3) g;"
            );
        }
        sql
    });
    geo.directory(LIVE_TENANTS);
    geo
}

/// A geogate local to eu, its `[tenants]` queries reading `directory`.
/// Regions sa (fallback us) and af (no fallback) have dead gateways.
pub fn config(geo: &Geo, extra_proxy: &str, directory: &str) -> String {
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
        eu = geo.gateway("eu"),
        us = geo.gateway("us"),
        apac = geo.gateway("apac"),
        sa = geo.dead_gateway(),
        af = geo.dead_gateway(),
    )
}

/// Every log line of every live geogate of this test binary, as JSON (the
/// global subscriber; the other tests use scoped ones).
pub fn live_logs() -> &'static LogCapture {
    static LOGS: OnceLock<LogCapture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = LogCapture::new();
        logging::init_with(LogFormat::Json, "geogate=debug,warn", capture.clone())
            .expect("the only global subscriber of this test binary");
        capture
    })
}

/// geogate in-process on `config`, logging to [`live_logs`].
pub fn start_live(config: &str) -> Proxy {
    live_logs();
    Proxy::start(config)
}

/// A client through `proxy` as `app`, application_name `obs-test`.
pub async fn connect_live(proxy: &Proxy, db: &str) -> Client {
    let conn = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname={db} application_name=obs-test",
        proxy.port
    );
    crate::common::proxy::connect(&conn)
        .await
        .expect("connect through geogate")
}

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(proxy: &Proxy) {
    let addr = proxy.metrics();
    wait_for("/readyz 200", Duration::from_secs(20), || async move {
        get(addr, "/readyz").await.0 == 200
    })
    .await;
}

/// A value no test writes twice: literals the leak test looks for.
pub fn unique_token() -> String {
    use std::hash::BuildHasher;
    let h = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    format!("{h:016x}")
}
