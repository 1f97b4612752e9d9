//! `Metrics` as the observer the route and tenant modules report to, so
//! wiring is one `Some(metrics.clone())` at construction.

use crate::route::RouteObserver;
use crate::tenants::{CacheObserver, LookupResult};

use super::{CacheResult, Metrics};

impl RouteObserver for Metrics {
    fn on_upstream_up(&self, region: &str, up: bool) {
        self.set_upstream_up(region, up);
    }

    fn on_failover(&self, from: &str, to: &str) {
        self.failover(from, to);
    }
}

impl CacheObserver for Metrics {
    fn on_lookup(&self, result: LookupResult) {
        self.tenant_cache_lookup(match result {
            LookupResult::Hit => CacheResult::Hit,
            LookupResult::Miss => CacheResult::Miss,
            LookupResult::Stale => CacheResult::Stale,
        });
    }

    fn on_entries(&self, entries: usize) {
        self.set_tenant_cache_entries(entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_observer_labels_match_the_tenant_modules_names() {
        // Both modules name the label values; they must agree.
        for (lookup, ours) in [
            (LookupResult::Hit, CacheResult::Hit),
            (LookupResult::Miss, CacheResult::Miss),
            (LookupResult::Stale, CacheResult::Stale),
        ] {
            assert_eq!(lookup.as_label(), ours.as_str());
        }
    }
}
