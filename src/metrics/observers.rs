//! `Metrics` as the observer the route and tenant modules report to, so
//! wiring is one `Some(metrics.clone())` at construction.

use std::sync::Arc;

use crate::route::RouteObserver;
use crate::tenants::{CacheObserver, FeedSource, LookupResult};

use super::http::Readiness;
use super::{CacheResult, Metrics};

/// Route observer that updates the metrics and flips `/readyz`'s "local
/// gateway reachable" with the local region's health.
#[derive(Debug, Clone)]
pub struct HealthObserver {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    local_region: String,
}

impl HealthObserver {
    /// Reports to `metrics`, and to `readiness` for `local_region`.
    pub fn new(metrics: Arc<Metrics>, readiness: Arc<Readiness>, local_region: &str) -> Self {
        HealthObserver {
            metrics,
            readiness,
            local_region: local_region.to_owned(),
        }
    }
}

impl RouteObserver for HealthObserver {
    fn on_upstream_up(&self, region: &str, up: bool) {
        self.metrics.set_upstream_up(region, up);
        if region == self.local_region {
            self.readiness.set_local_gateway_up(up);
        }
    }

    fn on_failover(&self, from: &str, to: &str) {
        self.metrics.failover(from, to);
    }
}

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

    fn on_invalidation(&self, source: FeedSource) {
        self.moves().invalidation(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_observer_tracks_the_local_gateway_for_readiness() {
        let metrics = Arc::new(Metrics::new(["t"], ["eu", "us"], 10));
        let readiness = Arc::new(Readiness::new(false));
        readiness.set_config_loaded(true);
        let obs = HealthObserver::new(metrics, readiness.clone(), "eu");
        obs.on_upstream_up("us", true);
        assert!(readiness.check().is_err());
        obs.on_upstream_up("eu", true);
        assert_eq!(readiness.check(), Ok(()));
        obs.on_upstream_up("eu", false);
        assert_eq!(readiness.check(), Err("local gateway unreachable"));
    }

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
