//! geogate as a pass-through proxy, end to end: real PostgreSQL clusters
//! (tests/common), real clients (tokio-postgres, psql, pgbench), geogate
//! in-process or as the built binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, PASSWORD};
use futures_util::{SinkExt, StreamExt};
use geogate::config::Config;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Password of the geogate users the tests configure.
const APP_PASSWORD: &str = "app-secret";

/// A geogate running in-process on its own runtime, on a free port.
struct Proxy {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts geogate with `extra` TOML appended to a config whose local
    /// region `eu` is `gateway`.
    fn start(gateway: &str, extra: &str) -> Proxy {
        Self::start_with(&config_text(gateway, extra))
    }

    fn start_with(text: &str) -> Proxy {
        let config = Config::parse(text).expect("test config is valid");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Its own runtime on its own thread: usable from sync and async tests alike.
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let bound = geogate::server::bind(config).await.expect("bind");
                port_tx.send(bound.local_addr().port()).unwrap();
                bound
                    .run_until(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        let port = port_rx.recv().expect("geogate started");
        Proxy {
            port,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.port
        )
    }

    /// Asks for a graceful shutdown and waits until the server returns.
    fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
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

async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn select_params_and_prepared_statements_work_through_geogate() {
    let c = Cluster::shared("eu");
    let db = c.create_db("basic");
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start(&eu_gateway(c), "");
    let wrong = connect(&p.conn_str("app", "not-it", "postgres"))
        .await
        .unwrap_err();
    let unknown = connect(&p.conn_str("ghost", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(code(&wrong).as_deref(), Some("28P01"));
    // The same SQLSTATE and the same message shape: a client cannot tell
    // whether the user exists (PostgreSQL's own behaviour for SCRAM).
    assert_eq!(code(&unknown).as_deref(), Some("28P01"));
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
        assert_eq!(code(&e).as_deref(), Some("28P01"), "{user}");
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
    let p = Proxy::start_with(&text);
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
    assert_eq!(code(&e).as_deref(), Some("28P01"));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_killed_mid_transaction_leaves_no_open_transaction_upstream() {
    let c = Cluster::shared("eu");
    let db = c.create_db("killed");
    c.psql(&db, "CREATE TABLE k (x int)");
    let p = Proxy::start(&eu_gateway(c), "");
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
    let cfg = dir.join("geogate.toml");
    let port = common::free_port();
    std::fs::write(
        &cfg,
        config_text(&eu_gateway(c), "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_geogate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id());
    wait_port(port);
    let client = connect(&format!(
        "host=127.0.0.1 port={port} user=app password={APP_PASSWORD} dbname={db}"
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
    let peak_kib = vm_hwm_kib(child.id());
    drop(guard);
    let _ = child.wait();
    // The whole result is ~100 MiB; a proxy that buffered it could not stay under 40 MiB.
    assert!(peak_kib < 40 * 1024, "geogate peak RSS {peak_kib} KiB");
}

#[test]
fn pgbench_runs_in_simple_extended_and_prepared_modes_without_failures() {
    let c = Cluster::shared("eu");
    let db = c.create_db("pgbench");
    let p = Proxy::start(&eu_gateway(c), "");
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

#[test]
fn ssl_and_gssenc_requests_are_answered_n() {
    let c = Cluster::shared("eu");
    let p = Proxy::start(&eu_gateway(c), "");
    for code in [80877103u32, 80877104] {
        let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        s.write_all(&8u32.to_be_bytes()).unwrap();
        s.write_all(&code.to_be_bytes()).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"N");
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
        let p = Proxy::start(&gw, "");
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
    let p = Proxy::start(&c.url("geogate", Some("wrong"), "postgres"), "");
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28P01"));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_verify_full_checks_the_gateway_certificate() {
    let dir = tempdir("tls");
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&dir)
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
        let p = Proxy::start(&gw, "");
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
    let p = Proxy::start(&gw, "");
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("GG004"));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_message_gets_08p01_and_the_connection_closes() {
    let c = Cluster::shared("eu");
    let p = Proxy::start(&eu_gateway(c), "max_message_size = 1024");
    let client = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    let small = "SELECT 1";
    client.simple_query(small).await.unwrap();
    let big = format!("SELECT '{}'", "x".repeat(2000));
    let e = client.simple_query(&big).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("08P01"));
    assert!(client.simple_query(small).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_beyond_max_client_connections_get_53300() {
    let c = Cluster::shared("eu");
    let p = Proxy::start(&eu_gateway(c), "max_client_connections = 2");
    let a = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    let b = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("53300"));
    drop(a);
    // A freed slot is usable again (the close is asynchronous: retry briefly).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect(&p.conn_str("app", APP_PASSWORD, "postgres")).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(code(&e).as_deref(), Some("53300"));
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    b.simple_query("SELECT 1").await.unwrap();
}

#[test]
fn stalled_startup_is_closed_after_the_timeout() {
    let c = Cluster::shared("eu");
    let p = Proxy::start(&eu_gateway(c), "startup_timeout = \"300ms\"");
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Half a startup packet, then nothing.
    s.write_all(&[0, 0, 0, 40, 0, 3]).unwrap();
    let mut buf = Vec::new();
    // geogate answers with a FATAL error and closes: read_to_end returns.
    s.read_to_end(&mut buf)
        .expect("closed by geogate, not by the read timeout");
    assert_eq!(buf.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&buf).contains("08P01"));
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_going_down_gives_the_client_an_error_not_a_hang() {
    let c = Cluster::start_owned("down");
    let p = Proxy::start(&eu_gateway(&c), "");
    let client = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    c.stop();
    let e = tokio::time::timeout(Duration::from_secs(20), client.simple_query("SELECT 1"))
        .await
        .expect("no hang")
        .unwrap_err();
    let lost = code(&e);
    // geogate notices its idle gateway connection closing and answers the
    // next statement with GG004 (no gateway, no fallback); a statement
    // already in flight would get 08006 or PostgreSQL's own goodbye.
    assert!(
        matches!(
            lost.as_deref(),
            Some("GG004" | "08006" | "57P01" | "57P02" | "57P03")
        ) || e.is_closed(),
        "{e:?}"
    );
    // New clients get GG004 (no gateway) right away.
    let e = connect(&p.conn_str("app", APP_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("GG004"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_open_transactions_finish_then_closes() {
    let c = Cluster::shared("eu");
    let db = c.create_db("drain");
    c.psql(&db, "CREATE TABLE d (x int)");
    let p = Proxy::start(&eu_gateway(c), "");
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
    let p = Proxy::start_with(&text);
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
    assert_eq!(code(&e).as_deref(), Some("GG001"));
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1::int4", &[]),
        client.query_one("SELECT 2::int4 FROM here", &[]),
        client.query_one("SELECT 3::int4", &[]),
    );
    assert_eq!(a.expect("first of the pipeline").get::<_, i32>(0), 1);
    assert_eq!(code(&b.unwrap_err()).as_deref(), Some("GG001"));
    assert_eq!(c.expect("last of the pipeline").get::<_, i32>(0), 3);
}

#[test]
fn refusal_inside_a_batch_comes_after_the_answers_before_it() {
    // One Sync for two statements, the second refused: the client must see
    // the first statement's answers, then the error, then ReadyForQuery,
    // exactly as PostgreSQL orders an error inside a batch.
    let (eu, us) = (Cluster::shared("eu"), Cluster::shared("us"));
    let text = format!(
        "{}\n[regions.us]\ngateway = \"{}\"\n[tables.here]\npartition_column = \"region\"\n",
        config_text(&eu_gateway(eu), ""),
        eu_gateway(us)
    );
    let p = Proxy::start_with(&text);
    // The refused statement must parse upstream: only geogate refuses it.
    let db = eu.create_db("batch");
    eu.psql(&db, "CREATE TABLE here (region text)");
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut startup = Vec::new();
    for kv in ["user", "app_clear", "database", &db] {
        startup.extend_from_slice(kv.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut pkt = ((startup.len() + 8) as u32).to_be_bytes().to_vec();
    pkt.extend_from_slice(&196608u32.to_be_bytes());
    pkt.extend_from_slice(&startup);
    s.write_all(&pkt).unwrap();
    assert_eq!(read_tags_until_ready(&mut s, Some(APP_PASSWORD))[0], b'R');
    let mut batch = Vec::new();
    for sql in ["SELECT 1", "SELECT 2 FROM here"] {
        batch.extend(msg(b'P', &[b"\0", sql.as_bytes(), b"\0", b"\0\0"].concat()));
        batch.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(msg(b'E', b"\0\0\0\0\0"));
    }
    batch.extend(msg(b'S', b""));
    s.write_all(&batch).unwrap();
    let tags = read_tags_until_ready(&mut s, None);
    assert_eq!(String::from_utf8(tags).unwrap(), "12DC1EZ");
    // The session goes on.
    let mut q = msg(b'Q', b"SELECT 3\0");
    q.extend(msg(b'X', b""));
    s.write_all(&q).unwrap();
    assert_eq!(
        String::from_utf8(read_tags_until_ready(&mut s, None)).unwrap(),
        "TDCZ"
    );
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Reads backend messages up to ReadyForQuery and returns their tags,
/// answering a cleartext password request with `password`.
fn read_tags_until_ready(s: &mut TcpStream, password: Option<&str>) -> Vec<u8> {
    let mut tags = Vec::new();
    loop {
        let mut head = [0u8; 5];
        if let Err(e) = s.read_exact(&mut head) {
            panic!("after {:?}: {e}", String::from_utf8_lossy(&tags));
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        tags.push(head[0]);
        if head[0] == b'R' && body[..4] == [0, 0, 0, 3] {
            let pw = format!("{}\0", password.expect("password asked"));
            s.write_all(&msg(b'p', pw.as_bytes())).unwrap();
        }
        if head[0] == b'Z' {
            return tags;
        }
    }
}

// ---- helpers ----

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("geogate-proxy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "geogate did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
