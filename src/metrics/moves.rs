//! Tenant-move metrics (docs/tenant-moves.md): invalidations received from
//! the directory's change feeds, and statements run again in a tenant's
//! new region. Stale hits are `geogate_tenant_cache_lookups_total{result="stale"}`.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::tenants::FeedSource;

/// The families this module registers.
pub const MOVE_METRICS: &[&str] = &[
    "geogate_tenant_invalidations_total",
    "geogate_guarded_retries_total",
];

/// Counters of tenant moves seen by this sidecar.
pub struct MoveMetrics {
    listen: IntCounter,
    poll: IntCounter,
    retries: IntCounter,
}

impl MoveMetrics {
    pub(super) fn register(r: &Registry) -> MoveMetrics {
        let inv = IntCounterVec::new(
            Opts::new(
                "geogate_tenant_invalidations_total",
                "Tenant moves reported by the directory's change feeds, by source (listen, poll).",
            ),
            &["source"],
        )
        .expect("valid metric definition");
        r.register(Box::new(inv.clone()))
            .expect("metric names are unique");
        let retries = IntCounter::new(
            "geogate_guarded_retries_total",
            "Statements run again in their tenant's new region: an empty or guarded answer, or a foreign-key violation, from a stale region.",
        )
        .expect("valid metric definition");
        r.register(Box::new(retries.clone()))
            .expect("metric names are unique");
        MoveMetrics {
            listen: inv.with_label_values(&[FeedSource::Listen.as_label()]),
            poll: inv.with_label_values(&[FeedSource::Poll.as_label()]),
            retries,
        }
    }

    /// A change feed reported a move.
    pub fn invalidation(&self, source: FeedSource) {
        match source {
            FeedSource::Listen => self.listen.inc(),
            FeedSource::Poll => self.poll.inc(),
        }
    }

    /// A statement ran again in its tenant's new region.
    pub fn guarded_retry(&self) {
        self.retries.inc();
    }
}
