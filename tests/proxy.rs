//! geogate as a pass-through proxy, end to end: real PostgreSQL clusters
//! (tests/common), real clients (tokio-postgres, psql, pgbench), geogate
//! in-process or as the built binary.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::connect;
use common::wire::{self, Raw};
use common::{Binary, Cluster, PASSWORD, Proxy, sqlstate};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Password of the geogate users the tests configure.
const APP_PASSWORD: &str = "app-secret";

/// geogate with `extra` TOML appended to a config whose local region `eu`
/// is `gateway`.
fn start_eu(gateway: &str, extra: &str) -> Proxy {
    Proxy::start(&config_text(gateway, extra))
}

fn config_text(gateway: &str, extra: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
local_region = "eu"
shutdown_grace = "5s"
{extra}

[regions.eu]
gateway = "{gateway}"

[[users]]
name = "app"
password = "{APP_PASSWORD}"

[[users]]
name = "app_md5"
password = "{APP_PASSWORD}"
auth = "md5"

[[users]]
name = "app_clear"
password = "{APP_PASSWORD}"
auth = "password"
"#
    )
}

/// The `eu` cluster's gateway URL, as the scram superuser, database from the client.
fn eu_gateway(c: &Cluster) -> String {
    format!("postgres://geogate:{PASSWORD}@127.0.0.1:{}", c.port())
}

#[tokio::test(flavor = "multi_thread")]
async fn select_params_and_prepared_statements_work_through_geogate() {
    let c = Cluster::shared("eu");
    let db = c.create_db("basic");
    let p = start_eu(&eu_gateway(c), "");
    let client = connect(&p.conn_str("app", APP_PASSWORD, &db))
        .await
        .unwrap();

    let row = client
        .query_one("SELECT 1::int4 + $1::int4", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // A named statement, reused many times.
    let stmt = client.prepare("SELECT $1::text || '!'").await.unwrap();
    for i in 0..20 {
        let s: String = client
            .query_one(&stmt, &[&format!("v{i}")])
            .await
            .unwrap()
            .get(0);
        assert_eq!(s, format!("v{i}!"));
    }
    // Simple protocol, several statements in one string.
    let msgs = client
        .simple_query("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT count(*) FROM t")
        .await
        .unwrap();
    let count = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("2"));
    // The upstream connection is the gateway's user on the client's database.
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("geogate".into(), db)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_commit_and_roll_back() {
    let c = Cluster::shared("eu");
    let db = c.create_db("txn");
    c.psql(&db, "CREATE TABLE t (x int)");
    let p = start_eu(&eu_gateway(c), "");
    let mut client = connect(&p.conn_str("app", APP_PASSWORD, &db))
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (3); ROLLBACK")
        .await
        .unwrap();
    assert_eq!(c.psql(&db, "SELECT string_agg(x::text, ',') FROM t"), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_keep_sqlstate_and_fields_and_the_session_goes_on() {
    let c = Cluster::shared("eu");
    let db = c.create_db("errors");
    c.psql(&db, "CREATE TABLE u (id int CONSTRAINT u_pk PRIMARY KEY)");
    let p = start_eu(&eu_gateway(c), "");
    let client = connect(&p.conn_str("app", APP_PASSWORD, &db))
        .await
        .unwrap();

    let e = client.query("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
    client
        .execute("INSERT INTO u VALUES (1)", &[])
        .await
        .unwrap();
    let e = client
        .execute("INSERT INTO u VALUES (1)", &[])
        .await
        .unwrap_err();
    let d = e.as_db_error().unwrap();
    assert_eq!(d.code(), &SqlState::UNIQUE_VIOLATION);
    assert_eq!(d.constraint(), Some("u_pk"));
    assert_eq!(d.table(), Some("u"));
    assert!(d.detail().is_some_and(|s| s.contains("already exists")));
    // Simple protocol error, then the session is still usable.
    let e = client
        .simple_query("SELECT * FROM missing_table")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE));
    assert!(e.as_db_error().unwrap().position().is_some());
    let n: i64 = client
        .query_one("SELECT count(*) FROM u", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_from_stdin_and_to_stdout_pass_through() {
    let c = Cluster::shared("eu");
    let db = c.create_db("copy");
    c.psql(&db, "CREATE TABLE c (id int, v text)");
    let p = start_eu(&eu_gateway(c), "");
    let client = connect(&p.conn_str("app", APP_PASSWORD, &db))
        .await
        .unwrap();

    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let data: String = (0..1000).map(|i| format!("{i}\tvalue {i}\n")).collect();
    sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 1000);

    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<_> = stream.collect().await;
    let mut out = Vec::new();
    for ch in chunks {
        out.extend_from_slice(&ch.unwrap());
    }
    assert_eq!(String::from_utf8(out).unwrap(), data);
}

#[test]
fn notices_reach_psql_and_errors_print_their_sqlstate() {
    let c = Cluster::shared("eu");
    let db = c.create_db("notice");
    let p = start_eu(&eu_gateway(c), "");
    let out = Command::new("psql")
        .args(["-X", "-t", "-A", "-v", "VERBOSITY=verbose", "-c"])
        .arg("DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END $$; SELECT 7")
        .arg(p.url("app", APP_PASSWORD, &db))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("NOTICE:  00000: hello from plpgsql"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "DO\n7");
    let out = Command::new("psql")
        .args([
            "-X",
            "-t",
            "-A",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "SELECT 1/0",
        ])
        .arg(p.url("app", APP_PASSWORD, &db))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR:  22012: division by zero"),
        "{stderr}"
    );
    assert!(
        stderr.contains("LOCATION:"),
        "every field is relayed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notification_reaches_an_idle_listener() {
    let c = Cluster::shared("eu");
    let p = start_eu(&eu_gateway(c), "");
    let (listener, mut connection) =
        tokio_postgres::connect(&p.conn_str("app", APP_PASSWORD, "postgres"), NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("LISTEN geo_events").await.unwrap();
    // The listener now sends nothing; the notification must still be pushed to it.
    let other = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    other
        .batch_execute("NOTIFY geo_events, 'moved'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notification relayed");
    assert_eq!(got, Some(("geo_events".to_string(), "moved".to_string())));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_request_stops_pg_sleep_with_57014() {
    let c = Cluster::shared("eu");
    let db = c.create_db("cancel");
    let p = start_eu(&eu_gateway(c), "");
    let client = connect(&p.conn_str("app", APP_PASSWORD, &db))
        .await
        .unwrap();
    let token = client.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await
    });
    let e = client
        .simple_query("SELECT pg_sleep(10)")
        .await
        .unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED));
    // Well before the 10 s sleep would have ended (not a timing assertion on geogate).
    assert!(started.elapsed() < Duration::from_secs(9));
    // The session survives a cancel.
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_extended_queries_return_in_order() {
    let c = Cluster::shared("eu");
    let db = c.create_db("pipeline");
    let p = start_eu(&eu_gateway(c), "");
    let client = connect(&p.conn_str("app", APP_PASSWORD, &db))
        .await
        .unwrap();
    let stmt = client
        .prepare("SELECT $1::int4 * 2, pg_backend_pid()")
        .await
        .unwrap();
    // tokio-postgres pipelines concurrent queries on one connection: many
    // Parse/Bind/Execute/Sync before the first answer is read.
    let futs = (0..200).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            client
                .query_one(stmt, &[&i])
                .await
                .map(|r| (i, r.get::<_, i32>(0)))
        }
    });
    let results = futures_util::future::join_all(futs).await;
    for r in results {
        let (i, doubled) = r.unwrap();
        assert_eq!(doubled, i * 2);
    }
    // An error inside the pipeline fails only its own query.
    let (a, b, d) = tokio::join!(
        client.query_one("SELECT 1::int4", &[]),
        client.query_one("SELECT 1/0", &[]),
        client.query_one("SELECT 3::int4", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(b.unwrap_err().code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(d.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_are_refused_alike() {
    let c = Cluster::shared("eu");
    let p = start_eu(&eu_gateway(c), "");
    let wrong = connect(&p.conn_str("app", "not-it", "postgres"))
        .await
        .unwrap_err();
    let unknown = connect(&p.conn_str("ghost", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&wrong), "28P01");
    // The same SQLSTATE and the same message shape: a client cannot tell
    // whether the user exists (PostgreSQL's own behaviour for SCRAM).
    assert_eq!(sqlstate(&unknown), "28P01");
    assert_eq!(
        wrong.as_db_error().unwrap().message().replace("app", "X"),
        unknown
            .as_db_error()
            .unwrap()
            .message()
            .replace("ghost", "X")
    );
    // md5 and cleartext users: right password in, wrong password out.
    for user in ["app_md5", "app_clear"] {
        let ok = connect(&p.conn_str(user, APP_PASSWORD, "postgres"))
            .await
            .unwrap();
        assert_eq!(
            ok.query_one("SELECT 1", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            1
        );
        let e = connect(&p.conn_str(user, "nope", "postgres"))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "28P01", "{user}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_scram_verifier_authenticates_a_client() {
    let c = Cluster::shared("eu");
    let verifier = postgres_protocol::password::scram_sha_256(b"from-a-verifier");
    let text = format!(
        "{}\n[[users]]\nname = \"vuser\"\npassword = \"{verifier}\"\n",
        config_text(&eu_gateway(c), "")
    );
    let p = Proxy::start(&text);
    let client = connect(&p.conn_str("vuser", "from-a-verifier", "postgres"))
        .await
        .unwrap();
    assert_eq!(
        client
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    let e = connect(&p.conn_str("vuser", "wrong", "postgres"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_killed_mid_transaction_leaves_no_open_transaction_upstream() {
    let c = Cluster::shared("eu");
    let db = c.create_db("killed");
    c.psql(&db, "CREATE TABLE k (x int)");
    let p = start_eu(&eu_gateway(c), "");
    let conn = format!(
        "{} application_name=killed_client",
        p.conn_str("app", APP_PASSWORD, &db)
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
    let task = tokio::spawn(connection);
    client
        .batch_execute("BEGIN; INSERT INTO k VALUES (1)")
        .await
        .unwrap();
    let open = |state: &str| {
        c.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'killed_client' AND state = '{state}'"),
        )
    };
    assert_eq!(open("idle in transaction"), "1");
    // The client vanishes: its socket closes without a Terminate.
    task.abort();
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(20);
    while open("idle in transaction") != "0" {
        assert!(Instant::now() < deadline, "upstream transaction still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.psql(&db, "SELECT count(*) FROM k"), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_result_streams_through_with_bounded_proxy_memory() {
    // geogate as its own process, so its peak RSS (VmHWM) is its own.
    let c = Cluster::shared("eu");
    let db = c.create_db("large");
    let dir = tempdir("large");
    let g = Binary::start(&dir, &config_text(&eu_gateway(c), ""));
    let client = connect(&format!(
        "host=127.0.0.1 port={} user=app password={APP_PASSWORD} dbname={db}",
        g.port
    ))
    .await
    .unwrap();
    // 100,000 rows of ~1 KiB: about 100 MiB through the proxy.
    let rows = client
        .query_raw(
            "SELECT i, repeat('x', 1000) FROM generate_series(1, 100000) i",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(rows);
    let (mut n, mut bytes) = (0usize, 0usize);
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        n += 1;
        bytes += row.get::<_, &str>(1).len();
    }
    assert_eq!(n, 100_000);
    assert!(bytes >= 100_000_000);
    let peak_kib = vm_hwm_kib(g.pid());
    drop(g);
    // The whole result is ~100 MiB; a proxy that buffered it could not stay under 40 MiB.
    assert!(peak_kib < 40 * 1024, "geogate peak RSS {peak_kib} KiB");
}

#[test]
fn pgbench_runs_in_simple_extended_and_prepared_modes_without_failures() {
    let c = Cluster::shared("eu");
    let db = c.create_db("pgbench");
    let p = start_eu(&eu_gateway(c), "");
    let url = p.url("app", APP_PASSWORD, &db);
    // Initialisation through geogate too (COPY, DDL, VACUUM).
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for mode in ["simple", "extended", "prepared"] {
        let out = Command::new("pgbench")
            .args(["-n", "-c", "4", "-j", "2", "-T", "3", "-M", mode])
            .arg(&url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let processed: u64 = field(&stdout, "number of transactions actually processed:")
            .and_then(|s| s.split('/').next().and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0);
        assert!(processed > 0, "{mode}: {stdout}");
        let failed = field(&stdout, "number of failed transactions:").unwrap_or_default();
        assert!(failed.starts_with("0 "), "{mode}: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_and_gssenc_requests_are_answered_n() {
    let c = Cluster::shared("eu");
    let p = start_eu(&eu_gateway(c), "");
    for code in [wire::SSL_REQUEST, wire::GSSENC_REQUEST] {
        let mut s = Raw::open(p.port).await;
        s.send(&wire::request(code)).await;
        assert_eq!(s.read_bytes(1).await, b"N");
    }
    // libpq falls back to plain text with sslmode=prefer and refuses with require.
    let prefer = psql_url(
        &format!("{}?sslmode=prefer", p.url("app", APP_PASSWORD, "postgres")),
        "SELECT 5",
    );
    assert_eq!(prefer.unwrap(), "5");
    let require = psql_url(
        &format!("{}?sslmode=require", p.url("app", APP_PASSWORD, "postgres")),
        "SELECT 5",
    );
    assert!(require.unwrap_err().contains("does not support SSL"));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_authenticates_with_trust_cleartext_md5_and_scram() {
    let c = Cluster::shared("eu");
    for (user, password) in [
        ("trust_user", None),
        ("clear_user", Some(PASSWORD)),
        ("md5_user", Some(PASSWORD)),
        ("geogate", Some(PASSWORD)),
    ] {
        let gw = c.url(user, password, "postgres");
        let p = start_eu(&gw, "");
        let client = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
            .await
            .unwrap();
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
    // A wrong gateway password is a clear error for the client, not a hang.
    let p = start_eu(&c.url("geogate", Some("wrong"), "postgres"), "");
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_verify_full_checks_the_gateway_certificate() {
    let dir = tempdir("tls");
    make_certs(&dir);
    let c = Cluster::init_owned("tls");
    for f in ["server.crt", "server.key"] {
        std::fs::copy(dir.join(f), c.data_dir().join(f)).unwrap();
    }
    let _ = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(c.data_dir().join("server.crt"))
        .arg(c.data_dir().join("server.key"))
        .status();
    let _ = Command::new("chmod")
        .arg("600")
        .arg(c.data_dir().join("server.key"))
        .status();
    c.append_conf("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    c.prepend_hba(
        "hostssl all geogate 127.0.0.1/32 scram-sha-256\nhostnossl all geogate 127.0.0.1/32 reject",
    );
    c.start();
    let ca = dir.join("ca.pem");
    let base = format!(
        "postgres://geogate:{PASSWORD}@127.0.0.1:{}/postgres",
        c.port()
    );

    for mode in ["require", "verify-ca", "verify-full"] {
        let gw = format!("{base}?sslmode={mode}&sslrootcert={}", ca.display());
        let p = start_eu(&gw, "");
        let client = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
            .await
            .unwrap();
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{mode}");
    }
    // A certificate from another CA is refused: the client gets GG004.
    let gw = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        dir.join("other.pem").display()
    );
    let p = start_eu(&gw, "");
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG004");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_message_gets_08p01_and_the_connection_closes() {
    let c = Cluster::shared("eu");
    let p = start_eu(&eu_gateway(c), "max_message_size = 1024");
    let client = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    let small = "SELECT 1";
    client.simple_query(small).await.unwrap();
    let big = format!("SELECT '{}'", "x".repeat(2000));
    let e = client.simple_query(&big).await.unwrap_err();
    assert_eq!(sqlstate(&e), "08P01");
    assert!(client.simple_query(small).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_beyond_max_client_connections_get_53300() {
    let c = Cluster::shared("eu");
    let p = start_eu(&eu_gateway(c), "max_client_connections = 2");
    let a = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    let b = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53300");
    drop(a);
    // A freed slot is usable again (the close is asynchronous: retry briefly).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect(&p.conn_str("app", APP_PASSWORD, "postgres")).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(sqlstate(&e), "53300");
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    b.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_startup_is_closed_after_the_timeout() {
    let c = Cluster::shared("eu");
    let p = start_eu(&eu_gateway(c), "startup_timeout = \"300ms\"");
    let mut s = Raw::open(p.port).await;
    // Half a startup packet, then nothing.
    s.send(&[0, 0, 0, 40, 0, 3]).await;
    // geogate answers with a FATAL error and closes: read_to_end returns.
    let buf = s
        .read_to_end(Duration::from_secs(10))
        .await
        .expect("closed by geogate, not by the read timeout");
    assert_eq!(buf.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&buf).contains("08P01"));
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_going_down_gives_the_client_an_error_not_a_hang() {
    let c = Cluster::start_owned("down");
    let p = start_eu(&eu_gateway(&c), "");
    let client = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    c.stop();
    let e = tokio::time::timeout(Duration::from_secs(20), client.simple_query("SELECT 1"))
        .await
        .expect("no hang")
        .unwrap_err();
    let lost = sqlstate(&e);
    // geogate notices its idle gateway connection closing and answers the
    // next statement with GG004 (no gateway, no fallback); a statement
    // already in flight would get 08006 or PostgreSQL's own goodbye.
    assert!(
        matches!(
            lost.as_str(),
            "GG004" | "08006" | "57P01" | "57P02" | "57P03"
        ) || e.is_closed(),
        "{e:?}"
    );
    // New clients get GG004 (no gateway) right away.
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "GG004");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_open_transactions_finish_then_closes() {
    let c = Cluster::shared("eu");
    let db = c.create_db("drain");
    c.psql(&db, "CREATE TABLE d (x int)");
    let p = start_eu(&eu_gateway(c), "");
    let port = p.port;
    let client = connect(&p.conn_str("app", APP_PASSWORD, &db))
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO d VALUES (1)")
        .await
        .unwrap();
    let stopper = std::thread::spawn(move || p.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new clients once draining.
    let refused = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=app password={APP_PASSWORD} dbname={db} connect_timeout=2"),
        NoTls,
    )
    .await;
    assert!(refused.is_err());
    // The open transaction can still commit...
    client
        .batch_execute("INSERT INTO d VALUES (2); COMMIT")
        .await
        .unwrap();
    assert_eq!(c.psql(&db, "SELECT count(*) FROM d"), "2");
    // ...and then the session is closed.
    stopper.join().unwrap();
    assert!(client.simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn decision_point_moves_statements_to_another_region_with_session_state() {
    let (eu, us) = (Cluster::shared("eu"), Cluster::shared("us"));
    // A regional table: its rows name the region whose gateway holds them.
    let db = eu.create_db("seam");
    us.psql("postgres", &format!("CREATE DATABASE {db}"));
    for (c, r) in [(eu, "eu"), (us, "us")] {
        c.psql(
            &db,
            &format!("CREATE TABLE here (region text); INSERT INTO here VALUES ('{r}')"),
        );
    }
    let text = format!(
        "{}\n[regions.us]\ngateway = \"{}\"\n[tables.here]\npartition_column = \"region\"\n",
        config_text(&eu_gateway(eu), ""),
        eu_gateway(us)
    );
    let p = Proxy::start(&text);
    let client = connect(&p.conn_str("app", APP_PASSWORD, &db))
        .await
        .unwrap();
    client
        .batch_execute("SET statement_timeout = '4321ms'")
        .await
        .unwrap();
    // Prepared on eu (Parse/Describe/Sync carry no Bind)...
    let stmt = client
        .prepare("SELECT inet_server_port(), current_setting('statement_timeout'), $1::int4 FROM here WHERE region = 'us'")
        .await
        .unwrap();
    // ...executed on us: re-prepared there under the same name, settings replayed.
    let row = client.query_one(&stmt, &[&7i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), i32::from(us.port()));
    assert_eq!(row.get::<_, String>(1), "4321ms");
    assert_eq!(row.get::<_, i32>(2), 7);
    let row = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), i32::from(eu.port()));
    let msgs = client
        .simple_query("SELECT inet_server_port() FROM here WHERE region = 'us'")
        .await
        .unwrap();
    let port = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(port, Some(us.port().to_string()));

    // Pipelined statements for alternating regions: each move waits until the
    // previous region has answered, and answers stay in request order.
    let here = client.prepare("SELECT inet_server_port()").await.unwrap();
    let (x, y, z) = tokio::join!(
        client.query_one(&stmt, &[&1i32]),
        client.query_one(&here, &[]),
        client.query_one(&stmt, &[&2i32]),
    );
    let (x, y, z) = (x.unwrap(), y.unwrap(), z.unwrap());
    assert_eq!(
        (x.get::<_, i32>(0), x.get::<_, i32>(2)),
        (i32::from(us.port()), 1)
    );
    assert_eq!(y.get::<_, i32>(0), i32::from(eu.port()));
    assert_eq!(
        (z.get::<_, i32>(0), z.get::<_, i32>(2)),
        (i32::from(us.port()), 2)
    );

    // Refusals come back in request order, in both protocols, and the session goes on.
    let e = client.simple_query("SELECT 1 FROM here").await.unwrap_err();
    assert_eq!(sqlstate(&e), "GG001");
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1::int4", &[]),
        client.query_one("SELECT 2::int4 FROM here", &[]),
        client.query_one("SELECT 3::int4", &[]),
    );
    assert_eq!(a.expect("first of the pipeline").get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&b.unwrap_err()), "GG001");
    assert_eq!(c.expect("last of the pipeline").get::<_, i32>(0), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusal_inside_a_batch_comes_after_the_answers_before_it() {
    // One Sync for two statements, the second refused: the client must see
    // the first statement's answers, then the error, then ReadyForQuery,
    // exactly as PostgreSQL orders an error inside a batch.
    let (eu, us) = (Cluster::shared("eu"), Cluster::shared("us"));
    let text = format!(
        "{}\n[regions.us]\ngateway = \"{}\"\n[tables.here]\npartition_column = \"region\"\n",
        config_text(&eu_gateway(eu), ""),
        eu_gateway(us)
    );
    let p = Proxy::start(&text);
    // The refused statement must parse upstream: only geogate refuses it.
    let db = eu.create_db("batch");
    eu.psql(&db, "CREATE TABLE here (region text)");
    let mut s = Raw::login(p.port, "app_clear", APP_PASSWORD, &db).await;
    let mut batch = Vec::new();
    for sql in ["SELECT 1", "SELECT 2 FROM here"] {
        batch.extend(wire::message(
            b'P',
            &[b"\0", sql.as_bytes(), b"\0", b"\0\0"].concat(),
        ));
        batch.extend(wire::message(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(wire::message(b'E', b"\0\0\0\0\0"));
    }
    batch.extend(wire::message(b'S', b""));
    s.send(&batch).await;
    assert_eq!(s.tags_until_ready().await, "12DC1EZ");
    // The session goes on.
    let mut q = wire::message(b'Q', b"SELECT 3\0");
    q.extend(wire::message(b'X', b""));
    s.send(&q).await;
    assert_eq!(s.tags_until_ready().await, "TDCZ");
}

// ---- client TLS and reload ----

/// geogate's client TLS settings for the certificates of [`make_certs`].
fn tls_keys(dir: &std::path::Path) -> String {
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    )
}

/// A tokio-postgres TLS connector trusting `ca` only (so verifying the
/// chain and the host name, as verify-full).
fn rustls_connector(ca: &std::path::Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_tls_serves_psql_verify_full_tokio_postgres_and_cancel() {
    let c = Cluster::shared("eu");
    let dir = tempdir("client-tls");
    make_certs(&dir);
    let p = start_eu(&eu_gateway(c), &tls_keys(&dir));

    // The SSLRequest is answered 'S'.
    let mut s = Raw::open(p.port).await;
    s.send(&wire::request(wire::SSL_REQUEST)).await;
    assert_eq!(s.read_bytes(1).await, b"S");
    // Plain-text bytes sent behind the SSLRequest, before the handshake, are
    // refused (they would otherwise be read as if they came over TLS).
    let mut s = Raw::open(p.port).await;
    let mut stuffed = wire::request(wire::SSL_REQUEST);
    stuffed.extend_from_slice(&[
        0, 0, 0, 17, 0, 3, 0, 0, b'u', b's', b'e', b'r', 0, b'a', 0, 0, 0,
    ]);
    s.send(&stuffed).await;
    let answer = s
        .read_to_end(Duration::from_secs(10))
        .await
        .expect("closed by geogate, not by the read timeout");
    assert_eq!(answer.first(), Some(&b'S'));
    assert_eq!(answer.get(1), Some(&b'E'));
    assert!(String::from_utf8_lossy(&answer).contains("08P01"));

    // psql with verify-full: the chain leads to the test CA and the name matches.
    let conninfo = |root: &str| {
        format!(
            "host=localhost port={} user=app password={APP_PASSWORD} dbname=postgres \
             sslmode=verify-full sslrootcert={}",
            p.port,
            dir.join(root).display()
        )
    };
    assert_eq!(psql_url(&conninfo("ca.pem"), "SELECT 7").unwrap(), "7");
    // Another CA is refused by the client: TLS really is what served it.
    let e = psql_url(&conninfo("other.pem"), "SELECT 7").unwrap_err();
    assert!(e.contains("certificate verify failed"), "{e}");

    // tokio-postgres over rustls, verifying against the test CA.
    let tls = rustls_connector(&dir.join("ca.pem"));
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=localhost port={} user=app password={APP_PASSWORD} dbname=postgres sslmode=require",
            p.port
        ),
        tls.clone(),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    // A cancel request over TLS reaches the statement.
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tls).await
    });
    let e = client
        .simple_query("SELECT pg_sleep(10)")
        .await
        .unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED));
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_mode_require_refuses_plain_text_clients_with_28000() {
    let c = Cluster::shared("eu");
    let dir = tempdir("tls-require");
    make_certs(&dir);
    let extra = format!("{}tls_mode = \"require\"\n", tls_keys(&dir));
    let p = start_eu(&eu_gateway(c), &extra);
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28000");
    let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
    assert!(message.starts_with("geogate requires TLS"), "{e:?}");
    let plain = psql_url(
        &format!("{}?sslmode=disable", p.url("app", APP_PASSWORD, "postgres")),
        "SELECT 1",
    );
    assert!(plain.unwrap_err().contains("geogate requires TLS"));
    // The same client with TLS gets in.
    let tls = psql_url(
        &format!("{}?sslmode=require", p.url("app", APP_PASSWORD, "postgres")),
        "SELECT 8",
    );
    assert_eq!(tls.unwrap(), "8");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_new_table_policy_to_an_open_session_and_an_invalid_file_changes_nothing()
{
    let c = Cluster::shared("eu");
    let db = c.create_db("reload");
    c.psql(&db, "CREATE TABLE docs (region text, body text)");
    let dir = tempdir("reload");
    let policy = |on_missing: &str, extra_proxy: &str| {
        config_text(&eu_gateway(c), extra_proxy)
            + &format!(
                "\n[tables.docs]\npartition_column = \"region\"\non_missing_region = \"{on_missing}\"\n"
            )
    };
    let mut g = Binary::start(&dir, &policy("allow", ""));
    let client = connect(&format!(
        "host=127.0.0.1 port={} user=app password={APP_PASSWORD} dbname={db}",
        g.port
    ))
    .await
    .unwrap();
    let unconstrained = "SELECT count(*) FROM docs";
    client.simple_query(unconstrained).await.unwrap();
    let late_user = format!(
        "host=127.0.0.1 port={} user=late password=late-secret dbname={db}",
        g.port
    );
    let e = connect(&late_user).await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    let tls_url = format!(
        "postgres://app:{APP_PASSWORD}@127.0.0.1:{}/{db}?sslmode=require",
        g.port
    );
    assert!(psql_url(&tls_url, "SELECT 1").is_err());

    // A valid file: the table now rejects statements without a region, a
    // user is added, client TLS is switched on; a changed limit needs a
    // restart and is only reported.
    make_certs(&dir);
    let valid = policy(
        "reject",
        &format!("max_client_connections = 7\n{}", tls_keys(&dir)),
    ) + "\n[[users]]\nname = \"late\"\npassword = \"late-secret\"\n";
    g.reload_with(&dir, &valid);
    let lines = g.wait_for("configuration reloaded", 1);
    assert!(
        lines
            .iter()
            .any(|l| l["key"] == "proxy.max_client_connections"
                && l["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("restart needed")),
        "{lines:?}"
    );
    let e = client.simple_query(unconstrained).await.unwrap_err();
    assert_eq!(sqlstate(&e), "GG001");
    // Same session, not reconnected: a statement naming its region still runs.
    client
        .simple_query("SELECT count(*) FROM docs WHERE region = 'eu'")
        .await
        .unwrap();
    connect(&late_user).await.unwrap();
    assert_eq!(psql_url(&tls_url, "SELECT 1").unwrap(), "1");

    // An invalid file (three problems, and the table back to "allow"):
    // nothing changes, every problem is logged, geogate keeps running.
    let invalid = policy("allow", "mode = \"yolo\"\ncolour = \"blue\"")
        .replace("auth = \"md5\"", "auth = \"kerberos\"");
    g.reload_with(&dir, &invalid);
    let lines = g.wait_for("reload failed: the running configuration stays in force", 1);
    let keys: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config problem"))
        })
        .filter_map(|l| l["key"].as_str())
        .collect();
    for key in ["proxy.mode", "proxy.colour", "users[1].auth"] {
        assert!(keys.contains(&key), "{key} not logged: {keys:?}");
    }
    assert!(g.alive());
    let e = client.simple_query(unconstrained).await.unwrap_err();
    assert_eq!(sqlstate(&e), "GG001");
    // New connections work too, under the config still in force.
    let other = connect(&format!(
        "host=127.0.0.1 port={} user=app password={APP_PASSWORD} dbname={db}",
        g.port
    ))
    .await
    .unwrap();
    let e = other.simple_query(unconstrained).await.unwrap_err();
    assert_eq!(sqlstate(&e), "GG001");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_new_tenants_settings_switches_the_tenant_directory_under_an_open_session() {
    let c = Cluster::shared("eu");
    let db = c.create_db("reload_tenants");
    c.psql(
        &db,
        "CREATE TABLE dir_a (id text, region text); INSERT INTO dir_a VALUES ('t1', 'eu'); \
         CREATE TABLE dir_b (id text, region text); INSERT INTO dir_b VALUES ('t2', 'eu'); \
         CREATE TABLE users (region text, tenant_id text, name text)",
    );
    let dir = tempdir("reload-tenants");
    let gateway = format!("postgres://geogate:{PASSWORD}@127.0.0.1:{}/{db}", c.port());
    let config = |directory: &str| {
        config_text(&gateway, "")
            + &format!(
                "\n[tenants]\nquery = \"SELECT id, region FROM {directory}\"\n\
                 [tables.users]\npartition_column = \"region\"\ntenant_column = \"tenant_id\"\n\
                 on_missing_region = \"rewrite\"\n"
            )
    };
    let g = Binary::start(&dir, &config("dir_a"));
    g.wait_for("tenant directory loaded", 1);
    let client = connect(&format!(
        "host=127.0.0.1 port={} user=app password={APP_PASSWORD} dbname={db}",
        g.port
    ))
    .await
    .unwrap();
    let by_tenant = "SELECT count(*) FROM users WHERE tenant_id = 't1'";
    client.simple_query(by_tenant).await.unwrap();

    // The new directory does not know t1: the same session now gets GG002.
    g.reload_with(&dir, &config("dir_b"));
    let lines = g.wait_for("configuration reloaded", 1);
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "configuration reloaded" && l["changed"] == "tenants"),
        "{lines:?}"
    );
    let e = client.simple_query(by_tenant).await.unwrap_err();
    assert_eq!(sqlstate(&e), "GG002");
    client
        .simple_query("SELECT count(*) FROM users WHERE tenant_id = 't2'")
        .await
        .unwrap();
}

// ---- helpers ----

/// A test CA (`ca.pem`), a server certificate for 127.0.0.1 and localhost
/// signed by it (`server.crt`, `server.key`) and an unrelated CA (`other.pem`).
fn make_certs(dir: &std::path::Path) {
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null",
    );
    sh(
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && \
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.crt 2>/dev/null",
    );
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other.key -out other.pem 2>/dev/null",
    );
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("geogate-proxy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

fn psql_url(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-t", "-A", "-c", sql])
        .arg(url)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}
