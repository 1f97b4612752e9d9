//! `Metrics` as the observer the tenant modules report to, so wiring is
//! one `Some(metrics.clone())` at construction. (Gateway health reports to
//! `Metrics` too: that observer is declared, and implemented, with the
//! health registry in `upstream`, above this room.)

use crate::tenants::{CacheObserver, FeedSource, LookupResult};

use super::{CacheResult, Metrics};

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

    fn on_invalidation(&self, source: FeedSource) {
        self.moves().invalidation(source);
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
