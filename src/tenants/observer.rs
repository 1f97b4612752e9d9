//! A hook through which the metrics module sees the cache's activity.

/// How a `get` (or a fresh re-check) was answered, for
/// `geogate_tenant_cache_lookups_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupResult {
    /// Answered from the cache (a known region or a remembered "not found").
    Hit,
    /// Not in the cache: the directory was asked.
    Miss,
    /// A fresh re-check found the cached region out of date (a tenant move).
    Stale,
}

impl LookupResult {
    /// The metric label value.
    pub fn as_label(self) -> &'static str {
        match self {
            LookupResult::Hit => "hit",
            LookupResult::Miss => "miss",
            LookupResult::Stale => "stale",
        }
    }
}

/// Receives cache events. Called on the request path: implementations must
/// be cheap and must not block (increment a counter, set a gauge).
pub trait CacheObserver: Send + Sync {
    /// One lookup was answered this way.
    fn on_lookup(&self, result: LookupResult);
    /// The number of cached entries (regions and remembered unknowns) changed.
    fn on_entries(&self, entries: usize);
    /// A change feed reported a tenant move (`geogate_tenant_invalidations_total`).
    fn on_invalidation(&self, _source: FeedSource) {}
}

/// Where a tenant invalidation came from, for
/// `geogate_tenant_invalidations_total{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedSource {
    /// A `NOTIFY` on the `[tenants] listen` channel.
    Listen,
    /// A row of `[tenants] changes_query` with a new region.
    Poll,
}

impl FeedSource {
    /// The metric label value.
    pub fn as_label(self) -> &'static str {
        match self {
            FeedSource::Listen => "listen",
            FeedSource::Poll => "poll",
        }
    }
}
