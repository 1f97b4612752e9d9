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
}
