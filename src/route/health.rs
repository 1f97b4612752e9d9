//! The per-region up/down registry and the failover choice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::RegionConfig;

/// Receives health events, for `geogate_upstream_up{region}` and
/// `geogate_failovers_total{from,to}`. Called on the request path: keep it
/// cheap and non-blocking.
pub trait RouteObserver: Send + Sync {
    /// A region's gateway went up (`true`) or down (`false`); also called
    /// once per region at construction with its initial state (up).
    fn on_upstream_up(&self, region: &str, up: bool);
    /// A statement for `from` was sent to `to` because `from` is down.
    fn on_failover(&self, from: &str, to: &str);
}

/// Where a statement for a region goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The region whose gateway serves it.
    pub region_used: String,
    /// The region asked for, when it was down and a fallback was used.
    pub failed_over_from: Option<String>,
}

/// No gateway can serve the region: it and every region of its `fallback`
/// list are down (`GG004`). Also returned for a region that is not
/// configured, which the policy rejects earlier with `GG003`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("geogate: no gateway available for region {region}: it and its fallbacks ({}) are down", if tried.len() > 1 { tried[1..].join(", ") } else { "none configured".to_string() })]
pub struct NoGateway {
    /// The region asked for.
    pub region: String,
    /// The regions considered, in order (the region first, then its fallbacks).
    pub tried: Vec<String>,
}

impl NoGateway {
    /// The SQLSTATE a client sees.
    pub const SQLSTATE: &'static str = "GG004";
}

#[derive(Debug)]
struct RegionHealth {
    up: AtomicBool,
    fallback: Vec<String>,
}

/// Up/down state of every configured region. Share it as `Arc<Health>`.
///
/// The map is fixed at construction; only the flags change, so reads take
/// no lock.
pub struct Health {
    regions: HashMap<String, RegionHealth>,
    observer: Option<Arc<dyn RouteObserver>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("regions", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Every configured region, initially up (the first failed connection
    /// marks a region down; there is no reason to distrust it before).
    pub fn new(
        regions: &BTreeMap<String, RegionConfig>,
        observer: Option<Arc<dyn RouteObserver>>,
    ) -> Arc<Health> {
        let health = Health {
            regions: regions
                .iter()
                .map(|(name, r)| {
                    (
                        name.clone(),
                        RegionHealth {
                            up: AtomicBool::new(true),
                            fallback: r.fallback.clone(),
                        },
                    )
                })
                .collect(),
            observer,
        };
        if let Some(o) = &health.observer {
            for name in regions.keys() {
                o.on_upstream_up(name, true);
            }
        }
        Arc::new(health)
    }

    /// Marks a region's gateway down. Returns whether it was up (the caller
    /// may log the transition once). Unknown regions are ignored.
    pub fn mark_down(&self, region: &str) -> bool {
        self.set(region, false)
    }

    /// Marks a region's gateway up. Returns whether it was down.
    pub fn mark_up(&self, region: &str) -> bool {
        self.set(region, true)
    }

    /// Whether a region's gateway is up (`false` for an unknown region).
    pub fn is_up(&self, region: &str) -> bool {
        self.regions
            .get(region)
            .is_some_and(|r| r.up.load(Ordering::SeqCst))
    }

    /// The region that serves statements for `region`: itself if up, else
    /// the first up region of its `fallback` list, in order. Fallback lists
    /// are not followed transitively: a region's list names every region
    /// allowed to serve it (data residency), nothing more.
    pub fn choose(&self, region: &str) -> Result<Choice, NoGateway> {
        let Some(home) = self.regions.get(region) else {
            return Err(NoGateway {
                region: region.to_string(),
                tried: Vec::new(),
            });
        };
        if home.up.load(Ordering::SeqCst) {
            return Ok(Choice {
                region_used: region.to_string(),
                failed_over_from: None,
            });
        }
        if let Some(to) = home.fallback.iter().find(|f| self.is_up(f)) {
            if let Some(o) = &self.observer {
                o.on_failover(region, to);
            }
            return Ok(Choice {
                region_used: to.clone(),
                failed_over_from: Some(region.to_string()),
            });
        }
        let mut tried = vec![region.to_string()];
        tried.extend(home.fallback.iter().cloned());
        Err(NoGateway {
            region: region.to_string(),
            tried,
        })
    }

    /// The regions currently down, sorted.
    pub fn down_regions(&self) -> Vec<String> {
        let mut down: Vec<String> = self
            .regions
            .iter()
            .filter(|(_, r)| !r.up.load(Ordering::SeqCst))
            .map(|(n, _)| n.clone())
            .collect();
        down.sort();
        down
    }

    /// Every region with its state, sorted by name (for `/readyz`, logs).
    pub fn snapshot(&self) -> Vec<(String, bool)> {
        let mut all: Vec<(String, bool)> = self
            .regions
            .iter()
            .map(|(n, r)| (n.clone(), r.up.load(Ordering::SeqCst)))
            .collect();
        all.sort();
        all
    }

    fn set(&self, region: &str, up: bool) -> bool {
        let Some(r) = self.regions.get(region) else {
            return false;
        };
        let changed = r.up.swap(up, Ordering::SeqCst) != up;
        if changed {
            if up {
                tracing::info!(region, "gateway is up again");
            } else {
                tracing::warn!(region, "gateway marked down; failing over");
            }
            if let Some(o) = &self.observer {
                o.on_upstream_up(region, up);
            }
        }
        changed
    }
}
