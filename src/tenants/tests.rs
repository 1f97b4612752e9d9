//! Unit tests of the cache logic over an in-memory directory that can be
//! told to fail, to be slow, or to change its answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use super::*;
use crate::config::TenantsConfig;

#[derive(Default)]
struct TestDirectory {
    data: Mutex<HashMap<String, String>>,
    fail: AtomicBool,
    delay: Mutex<Duration>,
    loads: AtomicUsize,
    lookups: AtomicUsize,
}

impl TestDirectory {
    fn with(rows: &[(&str, &str)]) -> Arc<TestDirectory> {
        let d = TestDirectory::default();
        for (t, r) in rows {
            d.put(t, r);
        }
        Arc::new(d)
    }
    fn put(&self, tenant: &str, region: &str) {
        self.data
            .lock()
            .unwrap()
            .insert(tenant.into(), region.into());
    }
    fn remove(&self, tenant: &str) {
        self.data.lock().unwrap().remove(tenant);
    }
    fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
    fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
    async fn pause(&self) -> Result<(), DirectoryError> {
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(DirectoryError::Unreachable("test directory is down".into()));
        }
        Ok(())
    }
}

impl Directory for TestDirectory {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, DirectoryError>> {
        Box::pin(async move {
            self.loads.fetch_add(1, Ordering::SeqCst);
            self.pause().await?;
            let data = self.data.lock().unwrap();
            Ok(data.iter().map(|(t, r)| (t.clone(), r.clone())).collect())
        })
    }

    fn lookup<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, DirectoryError>> {
        Box::pin(async move {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            self.pause().await?;
            Ok(self.data.lock().unwrap().get(tenant).cloned())
        })
    }
}

#[derive(Default)]
struct Recorder {
    lookups: Mutex<Vec<LookupResult>>,
    entries: Mutex<Vec<usize>>,
}

impl CacheObserver for Recorder {
    fn on_lookup(&self, result: LookupResult) {
        self.lookups.lock().unwrap().push(result);
    }
    fn on_entries(&self, entries: usize) {
        self.entries.lock().unwrap().push(entries);
    }
}

fn config() -> TenantsConfig {
    TenantsConfig {
        query: "SELECT id::text, region::text FROM tenants".into(),
        refresh: Duration::from_secs(30),
        lookup_query: None,
        lookup_timeout: Duration::from_secs(2),
        negative_ttl: Duration::from_secs(5),
        moves: Default::default(),
    }
}

fn cache(dir: &Arc<TestDirectory>) -> Arc<TenantCache> {
    TenantCache::new(config(), dir.clone(), None)
}

fn found(region: &str) -> TenantAnswer {
    TenantAnswer::Found(Arc::from(region))
}

#[tokio::test(start_paused = true)]
async fn loaded_tenant_is_a_hit_without_asking_the_directory() {
    let dir = TestDirectory::with(&[("t1", "eu"), ("t2", "us")]);
    let c = cache(&dir);
    assert_eq!(c.load().await.unwrap(), 2);
    assert!(c.is_loaded());
    assert_eq!(c.get("t1").await, found("eu"));
    assert_eq!(c.get("t2").await, found("us"));
    assert_eq!(dir.lookups(), 0);
    assert_eq!(
        c.stats(),
        CacheStats {
            hits: 2,
            misses: 0,
            stale: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn miss_is_looked_up_once_then_served_from_the_cache() {
    let dir = TestDirectory::with(&[]);
    let c = cache(&dir);
    c.load().await.unwrap();
    dir.put("new", "apac");
    assert_eq!(c.get("new").await, found("apac"));
    assert_eq!(c.get("new").await, found("apac"));
    assert_eq!(dir.lookups(), 1);
    assert_eq!(c.stats().misses, 1);
    assert_eq!(c.stats().hits, 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_for_one_tenant_share_one_lookup() {
    let dir = TestDirectory::with(&[("t1", "eu"), ("t2", "us")]);
    dir.set_delay(Duration::from_millis(100));
    let c = cache(&dir);
    let mut set = JoinSet::new();
    for i in 0..50 {
        let c = c.clone();
        let tenant = if i % 2 == 0 { "t1" } else { "t2" };
        set.spawn(async move { (tenant, c.get(tenant).await) });
    }
    while let Some(res) = set.join_next().await {
        let (tenant, answer) = res.unwrap();
        let want = if tenant == "t1" { "eu" } else { "us" };
        assert_eq!(answer, found(want));
    }
    // One lookup per distinct tenant, not per caller.
    assert_eq!(dir.lookups(), 2);
}

#[tokio::test(start_paused = true)]
async fn lookup_timeout_answers_unavailable_and_the_next_call_retries() {
    let dir = TestDirectory::with(&[("t1", "eu")]);
    dir.set_delay(Duration::from_secs(10));
    let c = cache(&dir);
    let started = tokio::time::Instant::now();
    assert_eq!(c.get("t1").await, TenantAnswer::Unavailable);
    assert_eq!(started.elapsed(), config().lookup_timeout);
    assert!(c.peek("t1").is_none(), "a timeout is not cached");
    dir.set_delay(Duration::ZERO);
    assert_eq!(c.get("t1").await, found("eu"));
    assert_eq!(dir.lookups(), 2);
}

#[tokio::test(start_paused = true)]
async fn unknown_tenant_is_remembered_for_negative_ttl_only() {
    let dir = TestDirectory::with(&[]);
    let c = cache(&dir);
    c.load().await.unwrap();
    assert_eq!(c.get("ghost").await, TenantAnswer::NotFound);
    assert_eq!(c.get("ghost").await, TenantAnswer::NotFound);
    assert_eq!(
        dir.lookups(),
        1,
        "second answer came from the negative entry"
    );

    dir.put("ghost", "eu");
    tokio::time::advance(config().negative_ttl - Duration::from_millis(1)).await;
    assert_eq!(c.get("ghost").await, TenantAnswer::NotFound);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(c.get("ghost").await, found("eu"));
    assert_eq!(dir.lookups(), 2);
}

#[tokio::test(start_paused = true)]
async fn set_and_invalidate_take_effect_at_once() {
    let dir = TestDirectory::with(&[("t1", "us")]);
    let c = cache(&dir);
    c.load().await.unwrap();

    c.set("t1", "eu");
    assert_eq!(c.get("t1").await, found("eu"));
    assert_eq!(dir.lookups(), 0);

    dir.put("t1", "apac");
    c.invalidate("t1");
    assert!(c.peek("t1").is_none());
    assert_eq!(c.get("t1").await, found("apac"));
    assert_eq!(dir.lookups(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalidation_during_a_lookup_keeps_its_old_answer_out_of_the_cache() {
    let dir = TestDirectory::with(&[("t1", "us")]);
    dir.set_delay(Duration::from_millis(100));
    let c = cache(&dir);
    let early = {
        let c = c.clone();
        tokio::spawn(async move { c.get("t1").await })
    };
    tokio::time::advance(Duration::from_millis(50)).await;
    c.invalidate("t1");
    // The early caller gets what the directory said when it asked...
    assert_eq!(early.await.unwrap(), found("us"));
    // ...but the cache does not keep it past the invalidation.
    assert!(c.peek("t1").is_none());
}

#[tokio::test(start_paused = true)]
async fn invalidation_during_a_full_load_is_not_undone_by_the_load() {
    // A change feed invalidates a tenant while a full load is under way:
    // the load's rows may predate the move; they must not put the tenant's
    // old region back into the cache (a listener's reload after a
    // reconnect, or the periodic `refresh`, racing with a move).
    let dir = TestDirectory::with(&[("t1", "us"), ("t2", "apac")]);
    let c = cache(&dir);
    c.load().await.unwrap();
    dir.set_delay(Duration::from_millis(100));
    let load = {
        let c = c.clone();
        tokio::spawn(async move { c.load().await })
    };
    tokio::time::advance(Duration::from_millis(50)).await;
    c.invalidate("t1");
    load.await.unwrap().unwrap();
    assert!(c.peek("t1").is_none(), "the next get asks the directory");
    assert_eq!(c.peek("t2"), Some(found("apac")), "the others are loaded");
}

#[tokio::test(start_paused = true)]
async fn set_during_a_full_load_is_not_overwritten_by_the_load() {
    let dir = TestDirectory::with(&[("t1", "us")]);
    dir.set_delay(Duration::from_millis(100));
    let c = cache(&dir);
    let load = {
        let c = c.clone();
        tokio::spawn(async move { c.load().await })
    };
    tokio::time::advance(Duration::from_millis(50)).await;
    c.set("t1", "eu");
    load.await.unwrap().unwrap();
    assert_eq!(c.peek("t1"), Some(found("eu")));
}

#[tokio::test(start_paused = true)]
async fn refresh_replaces_the_data_and_a_failed_refresh_keeps_it() {
    let dir = TestDirectory::with(&[("t1", "us"), ("t2", "eu")]);
    let c = cache(&dir);
    c.load().await.unwrap();

    dir.put("t1", "eu");
    dir.remove("t2");
    dir.put("t3", "apac");
    c.load().await.unwrap();
    assert_eq!(c.peek("t1"), Some(found("eu")));
    assert_eq!(c.peek("t2"), None, "dropped from the directory");
    assert_eq!(c.peek("t3"), Some(found("apac")));
    assert!(!c.status().stale);

    dir.put("t1", "us");
    dir.set_failing(true);
    assert!(c.load().await.is_err());
    let status = c.status();
    assert!(status.loaded && status.stale);
    assert_eq!(status.entries, 2);
    assert_eq!(
        c.get("t1").await,
        found("eu"),
        "last good data still served"
    );

    dir.set_failing(false);
    c.load().await.unwrap();
    assert!(!c.status().stale);
    assert_eq!(c.get("t1").await, found("us"));
}

#[tokio::test(start_paused = true)]
async fn never_loaded_and_unreadable_directory_answers_unavailable() {
    let dir = TestDirectory::with(&[("t1", "eu")]);
    dir.set_failing(true);
    let c = cache(&dir);
    assert!(c.load().await.is_err());
    assert!(!c.is_loaded());
    assert_eq!(c.get("t1").await, TenantAnswer::Unavailable);
    assert_eq!(c.get("t1").await, TenantAnswer::Unavailable);
    assert_eq!(dir.lookups(), 2, "unavailable is never cached");
}

#[tokio::test(start_paused = true)]
async fn refresh_one_detects_a_tenant_that_moved() {
    let dir = TestDirectory::with(&[("t1", "us"), ("t2", "eu")]);
    let c = cache(&dir);
    c.load().await.unwrap();

    dir.put("t1", "eu");
    let fresh = c.refresh_one("t1").await;
    assert_eq!(fresh.answer, found("eu"));
    assert!(fresh.stale);
    assert_eq!(fresh.previous.as_deref(), Some("us"));
    assert_eq!(c.get("t1").await, found("eu"), "cache updated");
    assert_eq!(fresh.rerun_in("us").map(|r| &**r), Some("eu"));
    assert_eq!(fresh.rerun_in("eu"), None);

    // A second session that also ran in "us" after the cache was already
    // updated is not stale against the cache, but must still run again.
    let second = c.refresh_one("t1").await;
    assert!(!second.stale);
    assert_eq!(second.rerun_in("us").map(|r| &**r), Some("eu"));

    let unchanged = c.refresh_one("t2").await;
    assert_eq!(unchanged.answer, found("eu"));
    assert!(!unchanged.stale);
    assert_eq!(c.stats().stale, 1);

    dir.set_failing(true);
    let down = c.refresh_one("t2").await;
    assert_eq!(down.answer, TenantAnswer::Unavailable);
    assert!(!down.stale);
    assert_eq!(
        c.peek("t2"),
        Some(found("eu")),
        "a failed re-check keeps the entry"
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_task_reloads_every_period_and_stops_on_shutdown() {
    let dir = TestDirectory::with(&[("t1", "us")]);
    let c = cache(&dir);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = c.spawn_refresh(async move {
        let _ = stopped.await;
    });
    // The first load happens at once.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(c.is_loaded());
    assert_eq!(dir.loads.load(Ordering::SeqCst), 1);

    dir.put("t1", "eu");
    tokio::time::sleep(config().refresh).await;
    assert_eq!(dir.loads.load(Ordering::SeqCst), 2);
    assert_eq!(c.peek("t1"), Some(found("eu")));

    stop.send(()).unwrap();
    task.await.unwrap();
    tokio::time::sleep(config().refresh * 3).await;
    assert_eq!(dir.loads.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn refresh_task_retries_quickly_until_the_first_load() {
    let dir = TestDirectory::with(&[("t1", "us")]);
    dir.set_failing(true);
    let c = cache(&dir);
    let task = c.spawn_refresh(std::future::pending());
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!c.is_loaded());
    dir.set_failing(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        c.is_loaded(),
        "retried within a second, not after `refresh`"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn observer_sees_hits_misses_stale_and_entry_counts() {
    let dir = TestDirectory::with(&[("t1", "us")]);
    let rec = Arc::new(Recorder::default());
    let c = TenantCache::new(config(), dir.clone(), Some(rec.clone()));
    c.load().await.unwrap();
    c.get("t1").await;
    dir.put("t2", "eu");
    c.get("t2").await;
    dir.put("t1", "eu");
    c.refresh_one("t1").await;
    assert_eq!(
        *rec.lookups.lock().unwrap(),
        vec![LookupResult::Hit, LookupResult::Miss, LookupResult::Stale]
    );
    assert_eq!(rec.entries.lock().unwrap().last(), Some(&2));
}

#[test]
fn lookup_sql_prefers_the_configured_query_else_wraps_the_load_query() {
    let mut cfg = config();
    cfg.query = "SELECT id::text, region::text FROM tenants;".into();
    assert_eq!(
        lookup_sql(&cfg),
        "SELECT geogate_t.tenant_id, geogate_t.region FROM \
         (SELECT id::text, region::text FROM tenants) AS geogate_t(tenant_id, region) \
         WHERE geogate_t.tenant_id = $1"
    );
    cfg.lookup_query = Some("SELECT id::text, region::text FROM tenants WHERE id = $1".into());
    assert_eq!(
        lookup_sql(&cfg),
        "SELECT id::text, region::text FROM tenants WHERE id = $1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_lookup_hands_over_to_a_waiter_and_leaves_no_flight_behind() {
    let dir = TestDirectory::with(&[("t1", "eu")]);
    dir.set_delay(Duration::from_millis(100));
    let c = cache(&dir);
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.get("t1").await })
    };
    tokio::task::yield_now().await;
    let second = {
        let c = c.clone();
        tokio::spawn(async move { c.get("t1").await })
    };
    tokio::task::yield_now().await;
    first.abort();
    assert_eq!(second.await.unwrap(), found("eu"));
    assert_eq!(dir.lookups(), 2, "the waiter ran its own lookup");
    assert!(c.inflight.is_empty());

    // A lookup abandoned with no waiter does not linger either.
    c.invalidate("t1");
    let lone = {
        let c = c.clone();
        tokio::spawn(async move { c.get("t1").await })
    };
    tokio::task::yield_now().await;
    lone.abort();
    let _ = lone.await;
    assert!(c.inflight.is_empty());
}

#[tokio::test(start_paused = true)]
async fn refresh_task_after_an_awaited_load_waits_one_period() {
    let dir = TestDirectory::with(&[("t1", "us")]);
    let c = cache(&dir);
    c.load().await.unwrap();
    let task = c.spawn_refresh(std::future::pending());
    tokio::time::sleep(config().refresh - Duration::from_millis(1)).await;
    assert_eq!(
        dir.loads.load(Ordering::SeqCst),
        1,
        "no duplicate load at start"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(dir.loads.load(Ordering::SeqCst), 2);
    task.abort();
}

#[test]
fn the_directory_table_is_inferred_from_a_plain_two_column_query() {
    use super::directory_table;
    let t = |q: &str| directory_table(q);
    assert_eq!(
        t("SELECT id::text, region::text FROM tenants"),
        Some(("tenants".into(), "id".into(), "region".into()))
    );
    assert_eq!(
        t("SELECT d.tenant AS tenant_id, d.home FROM app.directory d"),
        Some(("app.directory".into(), "tenant".into(), "home".into()))
    );
    // Joins, computed columns, several statements: no guess.
    assert_eq!(
        t("SELECT t.id, r.name FROM tenants t JOIN regions r ON r.id = t.r"),
        None
    );
    assert_eq!(t("SELECT id, lower(region) FROM tenants"), None);
    assert_eq!(t("SELECT 1; SELECT 2"), None);
}
