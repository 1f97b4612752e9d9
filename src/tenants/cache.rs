//! The cache itself: full loads, single-flight misses, negative entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::OnceCell;
use tokio::time::{Instant, timeout};

use super::directory::{Directory, DirectoryError};
use super::observer::{CacheObserver, FeedSource, LookupResult};
use crate::config::TenantsConfig;

/// Where a tenant lives, as far as the cache can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantAnswer {
    /// The tenant's region (a `[regions]` key, if the directory is right).
    Found(Arc<str>),
    /// The directory does not know this tenant (`GG002`).
    NotFound,
    /// The directory could not be read (`GG007`): fail closed, never guess.
    Unavailable,
}

/// The result of [`TenantCache::refresh_one`]: a fresh answer, and whether
/// the cache had been serving something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    /// What the directory says now.
    pub answer: TenantAnswer,
    /// The cached answer differed (a tenant moved, appeared or vanished
    /// since it was cached); counted as `stale`. Always `false` when the
    /// directory could not answer.
    pub stale: bool,
    /// The region the cache held before, if it held one.
    pub previous: Option<Arc<str>>,
}

impl Fresh {
    /// The region to run a statement again in, when the tenant now lives
    /// somewhere other than `used_region` (where the statement found
    /// nothing). Compares with the region used, not with the cache: another
    /// session may have refreshed the entry in between.
    pub fn rerun_in(&self, used_region: &str) -> Option<&Arc<str>> {
        match &self.answer {
            TenantAnswer::Found(r) if &**r != used_region => Some(r),
            _ => None,
        }
    }
}

/// Readiness and freshness, for `/readyz` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    /// A full load has succeeded at least once.
    pub loaded: bool,
    /// The last full load failed: the data served is older than `refresh`.
    pub stale: bool,
    /// Entries held (regions and remembered unknowns).
    pub entries: usize,
    /// When the last full load succeeded.
    pub last_load: Option<Instant>,
}

/// Counts since start, readable without an observer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Answers that needed the directory.
    pub misses: u64,
    /// Fresh re-checks that found the cache out of date.
    pub stale: u64,
}

/// What the cache holds for one tenant.
#[derive(Debug, Clone)]
enum Cached {
    Region(Arc<str>),
    /// "Not found", believed until `until`.
    Absent {
        until: Instant,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    value: Cached,
    /// When it was written, on the cache's own clock (see `TenantCache::clock`).
    version: u64,
}

/// One lookup in flight, shared by every caller that missed on the tenant.
type Flight = Arc<OnceCell<TenantAnswer>>;

/// Takes a finished (or abandoned) flight out of the in-flight map, so the
/// map holds only lookups someone is waiting for.
struct FlightGuard<'a> {
    inflight: &'a DashMap<String, Flight>,
    tenant: &'a str,
    flight: Flight,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        // Under the shard's write lock nobody can clone the flight out of the
        // map, so the count is exact: 2 = the map's and ours, no other waiter.
        // Only our flight is removed, never one a later invalidation started.
        self.inflight.remove_if(self.tenant, |_, f| {
            Arc::ptr_eq(f, &self.flight)
                && (self.flight.initialized() || Arc::strong_count(&self.flight) <= 2)
        });
    }
}

/// The tenant→region cache. Share it as `Arc<TenantCache>`.
pub struct TenantCache {
    config: TenantsConfig,
    directory: Arc<dyn Directory>,
    observer: Option<Arc<dyn CacheObserver>>,
    entries: DashMap<String, Entry>,
    pub(super) inflight: DashMap<String, Flight>,
    /// A logical clock stamped on every write. A lookup or full load that
    /// started at time `s` must not overwrite an entry written after `s`
    /// (an invalidation or `set` from a tenant move that passed through
    /// geogate while the directory was being read).
    clock: AtomicU64,
    /// Clock value of the latest `invalidate`: a lookup that started before
    /// it does not cache its (possibly pre-move) answer.
    last_invalidation: AtomicU64,
    loaded: AtomicBool,
    stale: AtomicBool,
    /// Held only for a copy in or out, never across `.await`.
    last_load: Mutex<Option<Instant>>,
    hits: AtomicU64,
    misses: AtomicU64,
    stale_hits: AtomicU64,
}

impl std::fmt::Debug for TenantCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No entries: tenant ids stay out of debug output.
        f.debug_struct("TenantCache")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl TenantCache {
    /// An empty, not yet loaded cache. Call [`TenantCache::load`] (or spawn
    /// [`TenantCache::spawn_refresh`]) to fill it.
    pub fn new(
        config: TenantsConfig,
        directory: Arc<dyn Directory>,
        observer: Option<Arc<dyn CacheObserver>>,
    ) -> Arc<TenantCache> {
        Arc::new(TenantCache {
            config,
            directory,
            observer,
            entries: DashMap::new(),
            inflight: DashMap::new(),
            clock: AtomicU64::new(0),
            last_invalidation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            last_load: Mutex::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale_hits: AtomicU64::new(0),
        })
    }

    /// The region of `tenant`: a map read on a hit; on a miss one directory
    /// lookup shared by all concurrent callers for that tenant, bounded by
    /// `lookup_timeout`. `Unavailable` is never cached, so the next call
    /// tries again.
    pub async fn get(&self, tenant: &str) -> TenantAnswer {
        if let Some(answer) = self.cached(tenant) {
            self.count(LookupResult::Hit);
            return answer;
        }
        self.count(LookupResult::Miss);
        let guard = FlightGuard {
            inflight: &self.inflight,
            tenant,
            flight: self.inflight.entry(tenant.to_owned()).or_default().clone(),
        };
        // If the caller running the lookup is cancelled, the next waiter
        // runs it (tokio's `OnceCell` hands initialisation on).
        guard
            .flight
            .get_or_init(|| self.lookup_and_store(tenant))
            .await
            .clone()
    }

    /// The cached answer, without asking the directory (`None`: a miss,
    /// including an expired "not found"). For `geogate check` and tests.
    pub fn peek(&self, tenant: &str) -> Option<TenantAnswer> {
        self.cached(tenant)
    }

    /// Records that `tenant` now lives in `region` (an UPDATE moving it
    /// passed through geogate and committed).
    pub fn set(&self, tenant: &str, region: &str) {
        let version = self.tick();
        self.entries.insert(
            tenant.to_owned(),
            Entry {
                value: Cached::Region(Arc::from(region)),
                version,
            },
        );
        self.inflight.remove(tenant);
        self.report_entries();
    }

    /// Forgets `tenant`: the next `get` asks the directory. Lookups already
    /// in flight finish for their callers but do not refill the cache.
    pub fn invalidate(&self, tenant: &str) {
        let version = self.tick();
        // Before the removal, so that a lookup storing concurrently sees it.
        self.last_invalidation.fetch_max(version, Ordering::SeqCst);
        self.entries.remove(tenant);
        self.inflight.remove(tenant);
        self.report_entries();
    }

    /// A change feed says `tenant` moved: forgets it for the whole process
    /// (every session's next statement for it asks the directory).
    pub fn invalidate_from(&self, tenant: &str, source: FeedSource) {
        self.invalidate(tenant);
        if let Some(o) = &self.observer {
            o.on_invalidation(source);
        }
    }

    /// A change feed says `tenant` now lives in `region`: recorded for the
    /// whole process and counted as an invalidation received.
    pub fn set_from(&self, tenant: &str, region: &str, source: FeedSource) {
        self.set(tenant, region);
        if let Some(o) = &self.observer {
            o.on_invalidation(source);
        }
    }

    /// The directory the cache reads.
    pub(super) fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// Asks the directory about `tenant` now, bypassing the cache, and
    /// updates the cache with the answer. For verify-on-empty: a rewritten
    /// statement that matched nothing re-checks its tenant and, when
    /// [`Fresh::rerun_in`] names a region, runs again there. Each call is one
    /// directory query (fresh by definition, so never shared with a lookup
    /// that began earlier).
    pub async fn refresh_one(&self, tenant: &str) -> Fresh {
        let previous = self.entries.get(tenant).and_then(|e| match &e.value {
            Cached::Region(r) => Some(r.clone()),
            Cached::Absent { .. } => None,
        });
        let before = self.cached(tenant);
        let answer = self.ask_directory(tenant).await;
        let stale = match (&answer, &before) {
            (TenantAnswer::Unavailable, _) => false,
            (fresh, Some(old)) => fresh != old,
            // Nothing cached: nothing was served wrongly.
            (_, None) => false,
        };
        if stale {
            self.count(LookupResult::Stale);
        }
        Fresh {
            answer,
            stale,
            previous,
        }
    }

    /// Loads the whole directory once (at start; the refresh task calls it
    /// again every `refresh`). On failure the data already held stays in
    /// service and the cache is marked stale. Returns the rows loaded.
    pub async fn load(&self) -> Result<usize, DirectoryError> {
        let started = self.clock.load(Ordering::SeqCst);
        let limit = self.load_timeout();
        let rows = match timeout(limit, self.directory.load_all()).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(self.load_failed(e)),
            Err(_) => return Err(self.load_failed(DirectoryError::Timeout(limit))),
        };
        let version = self.tick();
        let count = rows.len();
        // Few regions, many tenants: share one allocation per region.
        let mut regions: HashMap<String, Arc<str>> = HashMap::new();
        for (tenant, region) in rows {
            let region = regions
                .entry(region)
                .or_insert_with_key(|r| Arc::from(r.as_str()))
                .clone();
            let entry = Entry {
                value: Cached::Region(region),
                version,
            };
            match self.entries.entry(tenant) {
                // Written (set/lookup) after this load began: newer than the load.
                dashmap::Entry::Occupied(mut e) => {
                    if e.get().version <= started {
                        e.insert(entry);
                    }
                }
                // An invalidation since the load began may have removed this
                // very tenant, and the load's rows may predate its move: the
                // old region must not come back. Which tenant it was is not
                // kept, so while a feed invalidates during a load, tenants
                // not cached yet are left to their first lookup. Checked
                // under the shard lock, as in `store_if_newest`.
                dashmap::Entry::Vacant(v) => {
                    if self.last_invalidation.load(Ordering::SeqCst) <= started {
                        v.insert(entry);
                    }
                }
            }
        }
        // Drop tenants the directory no longer lists; keep what was written
        // during the load and "not found" entries still within their TTL.
        let now = Instant::now();
        self.entries.retain(|_, e| {
            e.version > started || matches!(e.value, Cached::Absent { until } if until > now)
        });
        self.stale.store(false, Ordering::SeqCst);
        *self.last_load.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let entries = self.report_entries();
        let first = !self.loaded.swap(true, Ordering::SeqCst);
        if first {
            tracing::info!(
                rows = count,
                entries,
                regions = regions.len(),
                "tenant directory loaded"
            );
        } else {
            tracing::debug!(
                rows = count,
                entries,
                regions = regions.len(),
                "tenant directory reloaded"
            );
        }
        Ok(count)
    }

    /// Whether a full load has ever succeeded (readiness).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Readiness and freshness.
    pub fn status(&self) -> CacheStatus {
        CacheStatus {
            loaded: self.is_loaded(),
            stale: self.stale.load(Ordering::SeqCst),
            entries: self.entries.len(),
            last_load: *self.last_load.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Hit/miss/stale counts since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale_hits.load(Ordering::Relaxed),
        }
    }

    /// The `[tenants]` settings this cache runs with.
    pub fn config(&self) -> &TenantsConfig {
        &self.config
    }

    fn cached(&self, tenant: &str) -> Option<TenantAnswer> {
        let entry = self.entries.get(tenant)?;
        match &entry.value {
            Cached::Region(r) => Some(TenantAnswer::Found(r.clone())),
            Cached::Absent { until } if *until > Instant::now() => Some(TenantAnswer::NotFound),
            Cached::Absent { .. } => None,
        }
    }

    /// The body of a flight: one directory lookup, its answer cached.
    async fn lookup_and_store(&self, tenant: &str) -> TenantAnswer {
        // A flight that ended just before ours was created may have filled it.
        if let Some(answer) = self.cached(tenant) {
            return answer;
        }
        self.ask_directory(tenant).await
    }

    /// Asks the directory (bounded by `lookup_timeout`) and caches a definite
    /// answer unless a newer write or an invalidation happened meanwhile.
    async fn ask_directory(&self, tenant: &str) -> TenantAnswer {
        let started = self.clock.load(Ordering::SeqCst);
        let limit = self.config.lookup_timeout;
        let (answer, value) = match timeout(limit, self.directory.lookup(tenant)).await {
            Ok(Ok(Some(region))) => {
                let region: Arc<str> = Arc::from(region);
                (TenantAnswer::Found(region.clone()), Cached::Region(region))
            }
            Ok(Ok(None)) => (
                TenantAnswer::NotFound,
                Cached::Absent {
                    until: Instant::now() + self.config.negative_ttl,
                },
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "tenant lookup failed; answering unavailable");
                return TenantAnswer::Unavailable;
            }
            Err(_) => {
                tracing::warn!(timeout = ?limit, "tenant lookup timed out; answering unavailable");
                return TenantAnswer::Unavailable;
            }
        };
        self.store_if_newest(tenant, value, started);
        answer
    }

    fn store_if_newest(&self, tenant: &str, value: Cached, started: u64) {
        let version = self.tick();
        {
            // The check and the write happen under the entry's shard lock.
            let mut slot = self.entries.entry(tenant.to_owned());
            if self.last_invalidation.load(Ordering::SeqCst) > started {
                return;
            }
            match &mut slot {
                dashmap::Entry::Occupied(e) if e.get().version > started => return,
                _ => {}
            }
            slot.insert(Entry { value, version });
        }
        self.report_entries();
    }

    fn load_failed(&self, e: DirectoryError) -> DirectoryError {
        self.stale.store(true, Ordering::SeqCst);
        // Two different situations: before any load succeeded there is no
        // "last good data" to serve (the sidecar is not ready); after one,
        // the loaded tenants keep serving.
        if self.is_loaded() {
            tracing::warn!(
                error = %e,
                entries = self.entries.len(),
                "tenant directory reload failed; serving the last loaded data until a reload succeeds"
            );
        } else {
            tracing::warn!(
                error = %e,
                "tenant directory not loaded yet: its initial load failed; not ready, retrying"
            );
        }
        e
    }

    /// A full load may take longer than one lookup, but not longer than the
    /// period between loads.
    fn load_timeout(&self) -> Duration {
        self.config.refresh.max(self.config.lookup_timeout)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn count(&self, result: LookupResult) {
        let counter = match result {
            LookupResult::Hit => &self.hits,
            LookupResult::Miss => &self.misses,
            LookupResult::Stale => &self.stale_hits,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.on_lookup(result);
        }
    }

    fn report_entries(&self) -> usize {
        let n = self.entries.len();
        if let Some(o) = &self.observer {
            o.on_entries(n);
        }
        n
    }
}
