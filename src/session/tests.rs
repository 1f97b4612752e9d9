//! The session core driven by messages alone: client frames in, the
//! frames sent to each upstream and to the client out. Each driver pattern
//! that broke geogate is pinned here first (docs/session.md lists them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};

use super::core::{Core, Flow, Need, Placement, Record};
use super::message::Frontend;
use crate::config::{Config, OnCrossRegionTxn};
use crate::metrics::{Metrics, RejectReason};
use crate::plan::Planner;
use crate::tenants::{BoxFuture, Directory, DirectoryError, TenantCache};
use crate::wire::ClientError;
use crate::wire::frame::frame;

const EU_T: &str = "11111111-1111-1111-1111-111111111111";
const US_T: &str = "22222222-2222-2222-2222-222222222222";

struct AllUp;

impl Placement for AllUp {
    fn choose(&self, region: &str) -> Result<Arc<str>, ClientError> {
        Ok(region.into())
    }
}

/// An in-memory tenant directory.
struct Dir(Mutex<HashMap<String, String>>);

impl Directory for Dir {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, DirectoryError>> {
        let rows = self.0.lock().unwrap().clone().into_iter().collect();
        Box::pin(async move { Ok(rows) })
    }

    fn lookup<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, DirectoryError>> {
        let r = self.0.lock().unwrap().get(tenant).cloned();
        Box::pin(async move { Ok(r) })
    }
}

/// A core with a real planner (analysis, policy, tenant cache) and no sockets.
struct H {
    core: Core,
    planner: Planner,
    settings: crate::policy::Settings,
    records: Vec<Record>,
}

fn config(extra: &str) -> Arc<Config> {
    Arc::new(
        Config::parse(&format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
local_region = "eu"
{extra}
[regions.eu]
gateway = "postgres://g@127.0.0.1:1/app"
[regions.us]
gateway = "postgres://g@127.0.0.1:2/app"
[regions.apac]
gateway = "postgres://g@127.0.0.1:3/app"
[tenants]
query = "SELECT id, region FROM tenants"
[tables.users]
partition_column = "region"
tenant_column = "tenant_id"
on_missing_region = "rewrite"
[[users]]
name = "app"
password = "x"
"#
        ))
        .expect("test config"),
    )
}

impl H {
    async fn new(extra: &str) -> H {
        let cfg = config(extra);
        let dir = Arc::new(Dir(Mutex::new(
            [(EU_T, "eu"), (US_T, "us")]
                .into_iter()
                .map(|(t, r)| (t.to_string(), r.to_string()))
                .collect(),
        )));
        let cache = TenantCache::new(cfg.tenants.clone().expect("tenants"), dir, None);
        cache.load().await.expect("load");
        let metrics = Arc::new(Metrics::from_config(&cfg));
        let planner = Planner::new(cfg.clone(), Some(cache), metrics);
        let on_cross = cfg.proxy.on_cross_region_txn;
        H {
            core: Core::new("eu".into(), "eu".into(), on_cross),
            settings: planner.settings_for("app"),
            planner,
            records: Vec::new(),
        }
    }

    /// Sends client frames through the core (opening upstreams on demand).
    async fn client(&mut self, frames: &[Vec<u8>]) -> Option<Flow> {
        let mut flow = None;
        for f in frames {
            let msg = Frontend::read(f).expect("well-formed");
            let plan =
                super::relay::plan_message(&mut self.core, &self.planner, &self.settings, &msg)
                    .await;
            loop {
                match self.core.handle(&msg, f, plan.as_ref(), &AllUp) {
                    Ok(h) => {
                        flow = Some(h.flow);
                        self.records.push(h.record);
                        break;
                    }
                    Err(Need::Link(r)) => self.core.add_link(r),
                }
            }
        }
        flow
    }

    /// The tags of what the core sent to `region` since the last look.
    fn sent(&mut self, region: &str) -> String {
        let Some(l) = self.core.link_mut(region) else {
            return String::new();
        };
        front_tags(&std::mem::take(&mut l.tx))
    }

    /// The gateway of `region` answers.
    fn reply(&mut self, region: &str, frames: &[Vec<u8>]) {
        let l = self.core.link_mut(region).expect("link");
        for f in frames {
            l.rx.extend_from_slice(f);
        }
        self.core.pump().expect("pump");
    }

    /// The tags the client read since the last look (`Z` with its status).
    fn read(&mut self) -> String {
        self.core.pump().expect("pump");
        tags(&std::mem::take(self.core.to_client()))
    }
}

/// Client message tags as a string.
fn front_tags(buf: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Ok(Some(h)) = crate::wire::peek_frame(&buf[pos..], usize::MAX) {
        out.push(h.tag as char);
        pos += h.total_len;
    }
    out
}

/// Backend frame tags as a string; a ReadyForQuery shows its status (`ZI`), an
/// error its SQLSTATE (`E[GG005]`).
fn tags(buf: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Ok(Some(h)) = crate::wire::peek_frame(&buf[pos..], usize::MAX) {
        let f = &buf[pos..pos + h.total_len];
        out.push(h.tag as char);
        match h.tag {
            b'Z' => out.push(f[5] as char),
            b'E' => {
                let code = super::answers::fields(&f[5..])
                    .find(|(k, _)| *k == b'C')
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                out.push_str(&format!("[{code}]"));
            }
            _ => {}
        }
        pos += h.total_len;
    }
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    frame(b'Q', &b)
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

fn bind(stmt: &str, params: &[&str]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(0); // unnamed portal
    b.put_slice(stmt.as_bytes());
    b.put_u8(0);
    b.put_i16(0);
    b.put_i16(params.len() as i16);
    for p in params {
        b.put_i32(p.len() as i32);
        b.put_slice(p.as_bytes());
    }
    b.put_i16(0);
    frame(b'B', &b)
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name);
    frame(b'D', &b)
}

fn describe_portal() -> Vec<u8> {
    frame(b'D', b"P\0")
}

fn execute() -> Vec<u8> {
    frame(b'E', b"\0\0\0\0\0")
}

fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

fn flush() -> Vec<u8> {
    frame(b'H', b"")
}

fn ready(status: u8) -> Vec<u8> {
    frame(b'Z', &[status])
}

fn complete(tag: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, tag);
    frame(b'C', &b)
}

fn row() -> Vec<u8> {
    frame(b'D', b"\0\x01\0\0\0\x011")
}

fn empty(tag: u8) -> Vec<u8> {
    frame(tag, b"")
}

fn error(code: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.push(b'S');
    cstr(&mut b, "ERROR");
    b.push(b'C');
    cstr(&mut b, code);
    b.push(0);
    frame(b'E', &b)
}

const BY_TENANT: &str = "SELECT email FROM users WHERE tenant_id = $1";
const INSERT: &str = "INSERT INTO users (tenant_id, email) VALUES ($1, $2)";

#[tokio::test]
async fn asyncpg_prepare_with_flush_then_bind_goes_to_the_tenants_region() {
    // asyncpg: Parse/Describe/Flush, waits for the answers, then Bind/Execute/Sync.
    let mut h = H::new("").await;
    h.client(&[
        parse("__asyncpg_stmt_1__", BY_TENANT),
        describe_statement("__asyncpg_stmt_1__"),
        flush(),
    ])
    .await;
    assert_eq!(h.sent("eu"), "PDH");
    h.reply(
        "eu",
        &[
            empty(b'1'),
            frame(b't', b"\0\x01\0\0\0\x19"),
            frame(b'T', b"\0\0"),
        ],
    );
    assert_eq!(h.read(), "1tT");
    h.client(&[bind("__asyncpg_stmt_1__", &[US_T]), execute(), sync()])
        .await;
    // eu's batch (Parse/Describe) is closed with its own Sync; us prepares
    // the rewritten statement, then binds it.
    assert_eq!(h.sent("eu"), "S");
    assert_eq!(h.sent("us"), "PBES");
    h.reply("eu", &[ready(b'I')]);
    assert_eq!(h.read(), "", "eu's own Sync is swallowed");
    h.reply(
        "us",
        &[
            empty(b'1'),
            empty(b'2'),
            row(),
            complete("SELECT 1"),
            ready(b'I'),
        ],
    );
    assert_eq!(h.read(), "2DCZI");
    assert!(h.core.answered());
}

#[tokio::test]
async fn psycopg_pipeline_with_flush_gets_answers_and_a_cross_region_refusal_at_once() {
    // psycopg 3 pipeline(): P/B/D/E × n, then Flush, waiting before any Sync.
    let mut h = H::new("on_cross_region_txn = \"reject\"").await;
    h.client(&[
        parse("", BY_TENANT),
        bind("", &[EU_T]),
        describe_portal(),
        execute(),
        parse("", BY_TENANT),
        bind("", &[US_T]),
        describe_portal(),
        execute(),
        flush(),
    ])
    .await;
    // The second statement is refused; eu's transaction is aborted, its
    // answers and the refusal flushed now.
    // (The client's Parse, the rewritten statement's, its Bind…; the
    // second Parse is answered before the refusal.)
    assert_eq!(h.sent("eu"), "PPBDEPDHH");
    h.reply(
        "eu",
        &[
            empty(b'1'),
            empty(b'1'),
            empty(b'2'),
            frame(b'T', b"\0\0"),
            row(),
            complete("SELECT 1"),
            empty(b'1'),
            error("34000"),
        ],
    );
    assert_eq!(h.read(), "12TDC1E[GG005]");
    assert!(
        h.records
            .contains(&Record::Refused(RejectReason::CrossRegionTxn))
    );
    h.client(&[sync()]).await;
    assert_eq!(h.sent("eu"), "S");
    h.reply("eu", &[ready(b'I')]);
    assert_eq!(h.read(), "ZI");
}

#[tokio::test]
async fn executemany_across_regions_runs_on_the_pinned_region_when_allowed() {
    // psycopg executemany: P/B/D/E, B/D/E, Sync — one implicit transaction.
    let mut h = H::new("").await;
    h.client(&[
        parse("", INSERT),
        bind("", &[EU_T, "a@x"]),
        describe_portal(),
        execute(),
        bind("", &[US_T, "b@x"]),
        describe_portal(),
        execute(),
        sync(),
    ])
    .await;
    // Both rows go to eu (the batch's region), each with its own region
    // injected; nothing goes to us.
    assert_eq!(h.sent("eu"), "PPBDEPBDES");
    assert_eq!(h.sent("us"), "");
}

#[tokio::test]
async fn a_refusal_mid_batch_aborts_what_the_batch_already_ran() {
    // JDBC executeBatch under reject: row 1 must not commit when row 2 is refused.
    let mut h = H::new("on_cross_region_txn = \"reject\"").await;
    h.client(&[parse("S_1", INSERT), describe_statement("S_1"), sync()])
        .await;
    assert_eq!(h.sent("eu"), "PDS");
    h.reply(
        "eu",
        &[empty(b'1'), frame(b't', b"\0\0"), empty(b'n'), ready(b'I')],
    );
    assert_eq!(h.read(), "1tnZI");
    h.client(&[
        bind("S_1", &[EU_T, "a"]),
        describe_portal(),
        execute(),
        bind("S_1", &[US_T, "b"]),
        describe_portal(),
        execute(),
        sync(),
    ])
    .await;
    // Row 1 was sent; the refusal aborts eu's implicit transaction with an
    // error of geogate's own making, and the Sync rolls it back.
    assert_eq!(h.sent("eu"), "PBDEDHS");
    h.reply(
        "eu",
        &[
            empty(b'1'),
            empty(b'2'),
            empty(b'n'),
            complete("INSERT 0 1"),
            error("34000"),
            ready(b'I'),
        ],
    );
    assert_eq!(h.read(), "2nCE[GG005]ZI");
}

#[tokio::test]
async fn verify_on_empty_runs_a_simple_query_again_where_the_tenant_moved() {
    let mut h = H::new("").await;
    let q = format!("SELECT email FROM users WHERE tenant_id = '{US_T}'");
    h.client(&[query(&q)]).await;
    assert_eq!(h.sent("us"), "Q");
    assert!(!h.core.accepts_input(), "nothing overtakes a held answer");
    h.reply(
        "us",
        &[frame(b'T', b"\0\0"), complete("SELECT 0"), ready(b'I')],
    );
    assert_eq!(h.read(), "", "the empty answer is held");
    assert!(h.core.verify_request().is_some());
    let again = h.core.finish_verify(true).expect("runs again");
    assert_eq!(front_tags(&again), "Q");
    assert!(h.core.accepts_input());
}

#[tokio::test]
async fn verify_on_empty_releases_an_answer_with_rows() {
    let mut h = H::new("").await;
    let q = format!("SELECT email FROM users WHERE tenant_id = '{US_T}'");
    h.client(&[query(&q)]).await;
    h.reply(
        "us",
        &[
            frame(b'T', b"\0\0"),
            row(),
            complete("SELECT 1"),
            ready(b'I'),
        ],
    );
    assert_eq!(h.read(), "TDCZI");
    assert!(h.core.verify_request().is_none());
}

#[tokio::test]
async fn a_deferred_begin_goes_with_the_first_statement_to_its_region() {
    let mut h = H::new("").await;
    h.client(&[query("BEGIN")]).await;
    assert_eq!(h.read(), "CZT", "answered by geogate");
    assert_eq!(h.sent("eu"), "");
    let q = format!("SELECT email FROM users WHERE tenant_id = '{US_T}' AND region = 'us'");
    h.client(&[query(&q)]).await;
    assert_eq!(h.sent("us"), "QQ", "BEGIN, then the statement");
    h.reply("us", &[complete("BEGIN"), ready(b'T')]);
    h.reply(
        "us",
        &[frame(b'T', b"\0\0"), complete("SELECT 0"), ready(b'T')],
    );
    assert_eq!(h.read(), "TCZT");
    h.client(&[query("COMMIT")]).await;
    assert_eq!(h.sent("us"), "Q");
    h.reply("us", &[complete("COMMIT"), ready(b'I')]);
    assert_eq!(h.read(), "CZI");
    assert!(h.core.is_idle());
}

#[tokio::test]
async fn a_refusal_inside_a_transaction_fails_it_as_postgresql_would() {
    let mut h = H::new("").await;
    h.client(&[query("BEGIN")]).await;
    let q = format!("INSERT INTO users (tenant_id, email, region) VALUES ('{EU_T}', 'a', 'eu')");
    h.client(&[query(&q)]).await;
    h.reply("eu", &[complete("BEGIN"), ready(b'T')]);
    h.reply("eu", &[complete("INSERT 0 1"), ready(b'T')]);
    assert_eq!(h.read(), "CZTCZT");
    // No region, no tenant: refused; the transaction on eu is aborted.
    h.client(&[query("DELETE FROM users")]).await;
    assert_eq!(h.sent("eu"), "QQDS");
    h.reply("eu", &[error("34000"), ready(b'E')]);
    assert_eq!(h.read(), "E[GG001]ZE");
    h.client(&[query("COMMIT")]).await;
    h.reply("eu", &[complete("ROLLBACK"), ready(b'I')]);
    assert_eq!(h.read(), "CZI");
}

#[tokio::test]
async fn an_upstream_error_mid_batch_skips_the_rest_and_the_session_goes_on() {
    let mut h = H::new("").await;
    h.client(&[
        parse("", "SELECT 1/0"),
        bind("", &[]),
        execute(),
        parse("", "SELECT 2"),
        bind("", &[]),
        execute(),
        sync(),
    ])
    .await;
    assert_eq!(h.sent("eu"), "PBEPBES");
    h.reply(
        "eu",
        &[empty(b'1'), empty(b'2'), error("22012"), ready(b'I')],
    );
    assert_eq!(h.read(), "12E[22012]ZI");
    assert!(h.core.answered());
}

#[tokio::test]
async fn unknown_message_types_never_reach_a_gateway() {
    let e = Frontend::read(&frame(b'z', b"")).unwrap_err();
    assert_eq!(e.code, "08P01");
}

#[tokio::test]
async fn a_prepared_statement_alternating_regions_is_prepared_once_per_region() {
    let mut h = H::new("").await;
    h.client(&[parse("s", BY_TENANT), describe_statement("s"), sync()])
        .await;
    h.reply(
        "eu",
        &[
            empty(b'1'),
            frame(b't', b"\0\x01\0\0\0\x19"),
            frame(b'T', b"\0\0"),
            ready(b'I'),
        ],
    );
    h.read();
    h.sent("eu");
    for (i, t) in [US_T, EU_T, US_T, EU_T, US_T, EU_T].iter().enumerate() {
        h.client(&[bind("s", &[t]), execute(), sync()]).await;
        let region = if i % 2 == 0 { "us" } else { "eu" };
        let sent = h.sent(region);
        // A rewrite binds a shadow statement, parsed once per region.
        let first = i < 2;
        assert_eq!(sent, if first { "PBES" } else { "BES" }, "round {i}");
        let mut answer = vec![];
        if first {
            answer.push(empty(b'1'));
        }
        answer.extend([empty(b'2'), row(), complete("SELECT 1"), ready(b'I')]);
        h.reply(region, &answer);
        assert_eq!(h.read(), "2DCZI");
    }
    let _ = OnCrossRegionTxn::Allow;
}

#[tokio::test]
async fn an_upstream_error_mid_pipeline_reaches_the_client_at_the_flush() {
    let mut h = H::new("").await;
    h.client(&[
        parse("", "SELECT 1/0"),
        bind("", &[]),
        execute(),
        parse("", "SELECT 2"),
        bind("", &[]),
        execute(),
        flush(),
    ])
    .await;
    assert_eq!(h.sent("eu"), "PBEPBEH");
    // The error ends the batch upstream: what follows is skipped there, and
    // nothing waits for a Sync to reach the client.
    h.reply("eu", &[empty(b'1'), empty(b'2'), error("22012")]);
    assert_eq!(h.read(), "12E[22012]");
    h.client(&[sync()]).await;
    h.reply("eu", &[ready(b'I')]);
    assert_eq!(h.read(), "ZI");
    assert!(h.core.answered());
}

#[tokio::test]
async fn close_and_describe_after_a_bind_follow_the_batch_in_order() {
    let mut h = H::new("").await;
    h.client(&[
        parse("s", BY_TENANT),
        bind("s", &[US_T]),
        describe_statement("s"),
        frame(b'C', b"Ss\0"),
        execute(),
        sync(),
    ])
    .await;
    // Held Parse goes with the Bind; the Describe and Close after it go
    // straight to the batch's region, so answers keep their order.
    assert_eq!(h.sent("us"), "PPBDCES");
    assert_eq!(h.sent("eu"), "");
    h.reply(
        "us",
        &[
            empty(b'1'),
            empty(b'1'),
            empty(b'2'),
            frame(b't', b"\0\x01\0\0\0\x19"),
            frame(b'T', b"\0\0"),
            empty(b'3'),
            row(),
            complete("SELECT 1"),
            ready(b'I'),
        ],
    );
    assert_eq!(h.read(), "12tT3DCZI");
}

#[tokio::test]
async fn a_begin_bound_with_parameter_values_is_forwarded_as_it_is() {
    let mut h = H::new("").await;
    h.client(&[parse("", "BEGIN"), bind("", &["x"]), execute(), sync()])
        .await;
    assert_eq!(h.sent("eu"), "PBES", "not deferred: PostgreSQL answers it");
    h.reply(
        "eu",
        &[empty(b'1'), empty(b'2'), complete("BEGIN"), ready(b'T')],
    );
    assert_eq!(h.read(), "12CZT");
}

#[tokio::test]
async fn jdbc_autocommit_off_sends_begin_with_the_first_statement_to_its_region() {
    let mut h = H::new("").await;
    let q = "SELECT email FROM users WHERE tenant_id = $1 AND region = 'us'";
    h.client(&[
        parse("", "BEGIN"),
        bind("", &[]),
        execute(),
        parse("", q),
        bind("", &[US_T]),
        describe_portal(),
        execute(),
        sync(),
    ])
    .await;
    // BEGIN's Parse is answered by eu (where the session was); its Bind and
    // Execute by geogate. eu's open batch gets its own Sync; us gets the
    // BEGIN as a simple query, then the statement.
    assert_eq!(h.sent("eu"), "PS");
    assert_eq!(h.sent("us"), "QPBDES");
    h.reply("eu", &[empty(b'1'), ready(b'I')]);
    h.reply("us", &[complete("BEGIN"), ready(b'T')]);
    h.reply(
        "us",
        &[
            empty(b'1'),
            empty(b'2'),
            frame(b'T', b"\0\0"),
            complete("SELECT 0"),
            ready(b'T'),
        ],
    );
    assert_eq!(h.read(), "12C12TCZT");
}

#[tokio::test]
async fn a_multi_statement_query_over_two_regions_is_refused_whole_under_reject() {
    let mut h = H::new("on_cross_region_txn = \"reject\"").await;
    let q = format!(
        "INSERT INTO users (tenant_id, email) VALUES ('{EU_T}', 'a'); \
         INSERT INTO users (tenant_id, email) VALUES ('{US_T}', 'b')"
    );
    h.client(&[query(&q)]).await;
    assert_eq!(
        h.sent("eu") + &h.sent("us"),
        "",
        "nothing reaches a gateway"
    );
    assert_eq!(h.read(), "E[GG005]ZI");
    assert_eq!(
        h.records.last(),
        Some(&Record::Refused(RejectReason::CrossRegionTxn))
    );
    assert!(h.core.take_cross_region(), "counted once");
}

#[tokio::test]
async fn a_client_gone_mid_batch_leaves_the_session_not_idle_so_its_upstreams_are_terminated() {
    let mut h = H::new("").await;
    h.client(&[parse("", INSERT), bind("", &[EU_T, "a"]), execute()])
        .await;
    assert_eq!(h.sent("eu"), "PPBE");
    // No Sync came: the shell must not reuse this upstream (it terminates
    // it, and PostgreSQL rolls the implicit transaction back).
    assert!(!h.core.is_idle());
    let (loss, signal) = h.core.link_lost(&"eu".into());
    assert_eq!(
        (loss, signal),
        (
            super::core::Loss::Fatal(Some(ClientError::upstream_lost("eu"))),
            true
        )
    );
}

#[tokio::test]
async fn a_begin_with_its_describe_in_one_batch_is_answered_in_order() {
    // tokio-postgres query_typed("START TRANSACTION"): P/B/D/E/S at once.
    let mut h = H::new("").await;
    h.client(&[
        parse("", "START TRANSACTION"),
        bind("", &[]),
        frame(b'D', b"P\0"),
        execute(),
        sync(),
    ])
    .await;
    assert_eq!(h.sent("eu"), "PS");
    h.reply("eu", &[empty(b'1'), ready(b'I')]);
    assert_eq!(
        h.read(),
        "12nCZT",
        "the gateway's ParseComplete, then geogate's answers"
    );
}

#[tokio::test]
async fn a_lost_upstream_that_owed_only_a_close_is_answered_by_geogate() {
    // tokio-postgres drops a statement: Close + Sync, while the gateway dies.
    let mut h = H::new("").await;
    h.client(&[parse("s", "SELECT 1"), describe_statement("s"), sync()])
        .await;
    h.reply(
        "eu",
        &[empty(b'1'), frame(b't', b"\0\0"), empty(b'n'), ready(b'I')],
    );
    h.read();
    h.sent("eu");
    h.client(&[frame(b'C', b"Ss\0"), sync()]).await;
    assert_eq!(h.sent("eu"), "CS");
    let (loss, signal) = h.core.link_lost(&"eu".into());
    assert_eq!(loss, super::core::Loss::Idle);
    assert!(!signal, "an idle loss is told by the next connection");
    assert_eq!(h.read(), "3ZI");
}

/// A small deterministic generator (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

#[tokio::test]
async fn random_client_messages_and_gateway_answers_never_panic_the_core() {
    let names = ["", "s1", "s2"];
    let sqls = [
        BY_TENANT.to_string(),
        INSERT.to_string(),
        "BEGIN".to_string(),
        "COMMIT".to_string(),
        "ROLLBACK".to_string(),
        "SELECT 1".to_string(),
        "DELETE FROM users".to_string(),
        format!("SELECT email FROM users WHERE tenant_id = '{US_T}'"),
    ];
    let backend = [
        empty(b'1'),
        empty(b'2'),
        empty(b'3'),
        empty(b'n'),
        frame(b't', b"\0\x01\0\0\0\x19"),
        frame(b'T', b"\0\0"),
        row(),
        complete("SELECT 0"),
        complete("INSERT 0 1"),
        error("22012"),
        ready(b'I'),
        ready(b'T'),
        ready(b'E'),
        frame(b'G', b"\0\0\0"),
        frame(b'N', b"SNOTICE\0\0"),
    ];
    for seed in 0..1000u64 {
        let extra = if seed % 2 == 0 {
            ""
        } else {
            "on_cross_region_txn = \"reject\""
        };
        let mut h = H::new(extra).await;
        let mut rng = Lcg(seed);
        for _ in 0..40 {
            let name = names[rng.next(names.len())];
            let sql = &sqls[rng.next(sqls.len())];
            let t = [EU_T, US_T][rng.next(2)];
            let f = match rng.next(10) {
                0 => query(sql),
                1 => parse(name, sql),
                2 => bind(name, &[t, "x"][..rng.next(3)]),
                3 => describe_statement(name),
                4 => describe_portal(),
                5 => execute(),
                6 => frame(b'C', format!("S{name}\0").as_bytes()),
                7 => flush(),
                8 => frame(b'd', b"1\t2\n"),
                9 if rng.next(2) == 0 => frame(b'c', b""),
                _ => sync(),
            };
            h.client(&[f]).await;
            for region in ["eu", "us", "apac"] {
                if h.core.link_mut(region).is_none() {
                    continue;
                }
                h.sent(region);
                let n = rng.next(4);
                let answers: Vec<Vec<u8>> = (0..n)
                    .map(|_| backend[rng.next(backend.len())].clone())
                    .collect();
                let l = h.core.link_mut(region).expect("checked");
                for a in &answers {
                    l.rx.extend_from_slice(a);
                }
                // Nonsense answers may be refused (a session error), never a panic.
                let _ = h.core.pump();
            }
            h.core.to_client().clear();
            if h.core.verify_request().is_some() {
                h.core.finish_verify(rng.next(2) == 0);
            }
        }
    }
}

#[tokio::test]
async fn standard_conforming_strings_reported_by_the_gateway_changes_how_statements_are_read() {
    let mut h = H::new("").await;
    h.client(&[query("SET standard_conforming_strings = off")])
        .await;
    assert_eq!(h.sent("eu"), "Q");
    h.reply(
        "eu",
        &[
            complete("SET"),
            frame(b'S', b"standard_conforming_strings\0off\0"),
            ready(b'I'),
        ],
    );
    assert_eq!(h.read(), "CSZI");
    assert!(!h.core.client.sql.standard_conforming_strings());
    // With backslash escapes on, PostgreSQL reads this as one string
    // literal then `OR true`: every region. geogate must not route it to eu.
    let trick =
        r"SELECT * FROM users WHERE email = 'x\' AND region = $$eu$$ AND email = ' OR true --'";
    h.client(&[query(trick)]).await;
    let out = h.read();
    assert!(h.sent("eu").is_empty() || out.contains("E[GG"), "{out}");
    assert!(out.starts_with("E[GG"), "refused, not routed: {out}");
}

#[tokio::test]
async fn an_extended_copy_from_stdin_gets_one_ready_for_query_after_its_data() {
    // tokio-postgres copy_in: Bind/Execute/Sync, then the data, CopyDone, Sync.
    let mut h = H::new("").await;
    let copy = "COPY users (tenant_id, email, region) FROM STDIN";
    h.client(&[parse("c", copy), describe_statement("c"), sync()])
        .await;
    h.reply(
        "eu",
        &[empty(b'1'), frame(b't', b"\0\0"), empty(b'n'), ready(b'I')],
    );
    assert_eq!(h.read(), "1tnZI");
    h.sent("eu");
    h.client(&[bind("c", &[]), execute(), sync()]).await;
    let region = if h.sent("eu").is_empty() { "us" } else { "eu" };
    // PostgreSQL ignores the Sync it reads in copy-in mode.
    h.reply(region, &[empty(b'2'), frame(b'G', b"\0\0\0")]);
    assert_eq!(h.read(), "2G");
    h.client(&[frame(b'd', b"x\ty\tus\n"), frame(b'c', b""), sync()])
        .await;
    assert_eq!(h.sent(region), "dcS");
    h.reply(region, &[complete("COPY 1"), ready(b'I')]);
    assert_eq!(
        h.read(),
        "CZI",
        "one ReadyForQuery, for the Sync after the data"
    );
    assert!(h.core.answered());
}

#[tokio::test]
async fn a_stale_region_error_outside_a_transaction_is_held_and_run_again() {
    // Tenant moves (docs/tenant-moves.md): the guarded INSERT's 23502, or
    // the composite key's 23503, wrote nothing.
    for code in ["23502", "23503"] {
        let mut h = H::new("").await;
        let q = format!("INSERT INTO users (tenant_id, email) VALUES ('{US_T}', 'a')");
        h.client(&[query(&q)]).await;
        assert_eq!(h.sent("us"), "Q");
        h.reply("us", &[error(code), ready(b'I')]);
        assert_eq!(h.read(), "", "{code}: the error is held");
        let again = h.core.finish_verify(true).expect("runs again");
        assert_eq!(front_tags(&again), "Q");
    }
    // Any other error is the client's at once.
    let mut h = H::new("").await;
    let q = format!("INSERT INTO users (tenant_id, email) VALUES ('{US_T}', 'a')");
    h.client(&[query(&q)]).await;
    h.reply("us", &[error("23505"), ready(b'I')]);
    assert_eq!(h.read(), "E[23505]ZI");
}

#[tokio::test]
async fn a_transaction_failing_after_a_rewrite_asks_for_its_tenants_afresh() {
    let mut h = H::new("").await;
    h.client(&[query("BEGIN")]).await;
    let _ = h.read();
    let q = format!("INSERT INTO users (tenant_id, email) VALUES ('{US_T}', 'a')");
    h.client(&[query(&q)]).await;
    assert_eq!(h.sent("us"), "QQ", "BEGIN, then the statement");
    h.reply(
        "us",
        &[complete("BEGIN"), ready(b'T'), error("23502"), ready(b'E')],
    );
    assert_eq!(
        h.read(),
        "E[23502]ZE",
        "inside a transaction the error is not held"
    );
    assert_eq!(h.core.take_refresh_due(), vec![US_T.to_string()]);
    assert!(h.core.take_refresh_due().is_empty(), "taken once");
}
