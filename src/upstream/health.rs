//! The per-region up/down registry and the failover choice.
//!
//! A region's state changes on *health signals* only, never because a
//! gateway ended one session with an error of its own (a protocol violation,
//! `57P01` for one backend, one user's failed login): that is one client's
//! business, and one client must not move everybody's traffic. The signals:
//!
//! - [`Health::connect_failed`]: a new connection could not connect, do TLS,
//!   or log in with the gateway's own credentials (see
//!   `UpstreamError::is_health_signal` in `upstream`);
//! - [`Health::connection_lost`]: an established connection closed (EOF,
//!   reset, write failure) without the server sending an ErrorResponse;
//! - [`Health::probe_result`]: the prober's startup + `SELECT 1`.
//!
//! Session signals mark a region down at once: a client is waiting, and every
//! further attempt on a dead gateway costs it a connect timeout. Probes use
//! consecutive-result thresholds, so a single slow probe does not move traffic
//! and a gateway that answers once while restarting does not get it back.
//! And a failed probe of a gateway that answered sessions since the previous
//! probe is not counted ([`Liveness`]): under a load spike a new connection
//! and `SELECT 1` can take longer than `probe_timeout` on a database that is
//! serving; marking it down would turn its slowness into `GG004` for every
//! client. A dead gateway answers no session, so its probes count.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

// Keyed by configured region names (not client input); looked up for
// every statement.
use rustc_hash::FxHashMap as HashMap;

use crate::config::RegionConfig;
use crate::metrics::Metrics;
use crate::refusal::RejectReason;

/// Receives health events, for `geogate_upstream_up{region}` and
/// `geogate_failovers_total{from,to}`. Called on the request path: keep it
/// cheap and non-blocking.
pub trait HealthObserver: Send + Sync {
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

/// What marked a region down, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A new connection could not connect or authenticate.
    ConnectFailed,
    /// An established connection was lost without the server saying why.
    ConnectionLost,
    /// The prober's startup + `SELECT 1` failed `failures_down` times in a row.
    Probe,
    /// Marked by hand ([`Health::mark_down`]).
    Manual,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Signal::ConnectFailed => "connect failed",
            Signal::ConnectionLost => "connection lost",
            Signal::Probe => "probe failed",
            Signal::Manual => "marked down",
        }
    }
}

/// How many consecutive probe results flip a region (`[proxy]
/// probe_failures_down`, `probe_successes_up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failed probes in a row before an up region is marked down.
    pub failures_down: u32,
    /// Successful probes in a row before a down region is marked up.
    pub successes_up: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            failures_down: 2,
            successes_up: 2,
        }
    }
}

/// Consecutive probe results of one region.
#[derive(Debug, Default)]
struct Streak {
    failures: u32,
    successes: u32,
}

/// A region's mark that its gateway answered a session: sessions set it
/// when upstream bytes arrive (one relaxed load per read, a store only when
/// it was clear), each probe result clears it.
#[derive(Debug, Clone, Default)]
pub struct Liveness(Arc<AtomicBool>);

impl Liveness {
    /// The gateway just answered a session.
    pub fn saw_answer(&self) {
        // A load first: the flag's cache line stays shared while it is set.
        if !self.0.load(Ordering::Relaxed) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Whether it answered since the last call; clears the mark.
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct RegionHealth {
    up: AtomicBool,
    /// Answers seen by sessions since the last probe result.
    answered: Liveness,
    fallback: Vec<String>,
    /// A std mutex: held for a count and a flag change (and the observer's
    /// non-blocking call), never across an `.await`.
    streak: Mutex<Streak>,
}

/// Up/down state of every configured region. Share it as `Arc<Health>`.
///
/// The map is fixed at construction; only the flags change, so reads take
/// no lock.
pub struct Health {
    regions: HashMap<String, RegionHealth>,
    thresholds: Thresholds,
    observer: Option<Arc<dyn HealthObserver>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("regions", &self.snapshot())
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

/// Why [`Health::open_with_failover`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError<E> {
    /// The region and every fallback are down (or failed as they were tried).
    #[error("{error}")]
    NoGateway {
        /// What the client is told (`GG004`) unless `last` says more.
        error: NoGateway,
        /// The last attempt's failure, if one was made: a gateway's own
        /// ErrorResponse (`28P01` for geogate's pinned credentials, `57P03`)
        /// is worth relaying as is instead of `GG004`.
        last: Option<E>,
    },
    /// The attempt failed for a reason that is not a health signal (one
    /// user's failed login, a database that does not exist): it ends this
    /// session's attempt and changes no region's state.
    #[error("{0}")]
    Session(E),
}

/// How one connection attempt of [`Health::open_with_failover`] failed.
#[derive(Debug)]
pub enum Attempt<E> {
    /// A health signal: the region is marked down and the next candidate tried.
    Unreachable(E),
    /// Not a health signal: returned to the caller as [`OpenError::Session`].
    Refused(E),
}

impl Health {
    /// Every configured region, initially up, with the default thresholds.
    pub fn new(
        regions: &BTreeMap<String, RegionConfig>,
        observer: Option<Arc<dyn HealthObserver>>,
    ) -> Arc<Health> {
        Health::with_thresholds(regions, Thresholds::default(), observer)
    }

    /// Every configured region, initially up (on trust: the first failed
    /// probe or connection marks it down).
    pub fn with_thresholds(
        regions: &BTreeMap<String, RegionConfig>,
        thresholds: Thresholds,
        observer: Option<Arc<dyn HealthObserver>>,
    ) -> Arc<Health> {
        let health = Health {
            regions: regions
                .iter()
                .map(|(name, r)| {
                    (
                        name.clone(),
                        RegionHealth {
                            up: AtomicBool::new(true),
                            answered: Liveness::default(),
                            fallback: r.fallback.clone(),
                            streak: Mutex::new(Streak::default()),
                        },
                    )
                })
                .collect(),
            thresholds: Thresholds {
                failures_down: thresholds.failures_down.max(1),
                successes_up: thresholds.successes_up.max(1),
            },
            observer,
        };
        if let Some(o) = &health.observer {
            for name in regions.keys() {
                o.on_upstream_up(name, true);
            }
        }
        Arc::new(health)
    }

    /// Health signal: a new connection to `region`'s gateway could not
    /// connect, negotiate TLS, or log in with the gateway's own credentials.
    /// Marks the region down at once. Returns whether it was up.
    ///
    /// Not for an ErrorResponse a client's own login or database earned:
    /// that ends the session's attempt only.
    pub fn connect_failed(&self, region: &str) -> bool {
        self.down(region, Signal::ConnectFailed)
    }

    /// Health signal: an established connection to `region`'s gateway ended
    /// (EOF, reset, failed write) without the server sending an
    /// ErrorResponse first. Marks the region down at once. Returns whether
    /// it was up.
    ///
    /// Not for a connection the gateway closed after a FATAL of its own
    /// (`08P01` for one client's bad message, `57P01` for one backend):
    /// that ends that session's upstream and nothing else.
    pub fn connection_lost(&self, region: &str) -> bool {
        self.down(region, Signal::ConnectionLost)
    }

    /// The mark sessions set when `region`'s gateway answers them (`None`
    /// for an unknown region).
    pub fn liveness(&self, region: &str) -> Option<Liveness> {
        self.regions.get(region).map(|r| r.answered.clone())
    }

    /// Health signal from the prober: `ok` when a startup and `SELECT 1`
    /// succeeded. Flips the region after `failures_down` failures or
    /// `successes_up` successes in a row, also before its first answer: a
    /// probe slowed by a busy machine must not take a healthy region down
    /// (its statements would get `GG004`). A failure is not counted while
    /// the region is up and its gateway answered a session since the
    /// previous result: it is serving, only slow. Returns whether the
    /// region changed state.
    pub fn probe_result(&self, region: &str, ok: bool) -> bool {
        let Some(r) = self.regions.get(region) else {
            return false;
        };
        // Held while the flag changes, so that a session's signal cannot
        // slip between the count and the flip (a region brought back just
        // after a session saw it fail).
        let mut s = r.streak.lock().unwrap_or_else(|e| e.into_inner());
        let up = r.up.load(Ordering::SeqCst);
        let served = r.answered.take();
        if !ok && up && served {
            return false;
        }
        let flip = if ok {
            s.failures = 0;
            s.successes = s.successes.saturating_add(1);
            !up && s.successes >= self.thresholds.successes_up
        } else {
            s.successes = 0;
            s.failures = s.failures.saturating_add(1);
            up && s.failures >= self.thresholds.failures_down
        };
        flip && self.set(region, ok, Signal::Probe)
    }

    /// Marks a region's gateway down (tests, operators). Prefer the signal
    /// that applies: [`Health::connect_failed`], [`Health::connection_lost`].
    /// Returns whether it was up. Unknown regions are ignored.
    pub fn mark_down(&self, region: &str) -> bool {
        self.down(region, Signal::Manual)
    }

    /// Marks a region's gateway up. Returns whether it was down.
    pub fn mark_up(&self, region: &str) -> bool {
        self.set(region, true, Signal::Manual)
    }

    /// Whether a region's gateway is up (`false` for an unknown region).
    pub fn is_up(&self, region: &str) -> bool {
        self.regions
            .get(region)
            .is_some_and(|r| r.up.load(Ordering::SeqCst))
    }

    /// Whether statements for `region` can be served now: its gateway or one
    /// of its fallbacks is up. What `/readyz` asks about the local region.
    pub fn serves(&self, region: &str) -> bool {
        self.regions.get(region).is_some_and(|r| {
            r.up.load(Ordering::SeqCst) || r.fallback.iter().any(|f| self.is_up(f))
        })
    }

    /// Whether `region` has a `fallback` list (`false` for an unknown region).
    pub fn has_fallback(&self, region: &str) -> bool {
        self.regions
            .get(region)
            .is_some_and(|r| !r.fallback.is_empty())
    }

    /// The region that serves statements for `region`: itself if up, else
    /// the first up region of its `fallback` list, in order. Fallback lists
    /// are not followed transitively: a region's list names every region
    /// allowed to serve it (data residency), nothing more.
    pub fn choose(&self, region: &str) -> Result<Choice, NoGateway> {
        self.choose_except(region, &[])
    }

    /// Opens a connection for `region` with failover: tries the region
    /// chosen by [`Health::choose`] with `open`; when that attempt fails
    /// with a health signal ([`Attempt::Unreachable`]) marks the region down
    /// ([`Health::connect_failed`]) and tries the next candidate. Each
    /// region is tried at most once. A session opens its first upstream at
    /// startup through this, so startup works while its local gateway is
    /// down and a fallback is up.
    ///
    /// When the region and all its fallbacks are already marked down, the
    /// region itself is tried once anyway: the marks may be older than the
    /// gateway's recovery (the prober has not confirmed it yet), and if it
    /// is still down the client gets the gateway's own answer (`last`).
    pub async fn open_with_failover<T, E, F, Fut>(
        &self,
        region: &str,
        mut open: F,
    ) -> Result<(Choice, T), OpenError<E>>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, Attempt<E>>>,
    {
        let mut tried: Vec<String> = Vec::new();
        let mut last = None;
        loop {
            let choice = match self.choose_except(region, &tried) {
                Ok(choice) => choice,
                Err(_) if tried.is_empty() && self.regions.contains_key(region) => Choice {
                    region_used: region.to_string(),
                    failed_over_from: None,
                },
                Err(error) => return Err(OpenError::NoGateway { error, last }),
            };
            match open(choice.region_used.clone()).await {
                Ok(t) => return Ok((choice, t)),
                Err(Attempt::Refused(e)) => return Err(OpenError::Session(e)),
                Err(Attempt::Unreachable(e)) => {
                    self.connect_failed(&choice.region_used);
                    tried.push(choice.region_used);
                    last = Some(e);
                }
            }
        }
    }

    /// As [`Health::choose`], skipping regions in `skip` (already tried).
    fn choose_except(&self, region: &str, skip: &[String]) -> Result<Choice, NoGateway> {
        let Some(home) = self.regions.get(region) else {
            return Err(NoGateway {
                region: region.to_string(),
                tried: Vec::new(),
            });
        };
        let usable = |r: &str| self.is_up(r) && !skip.iter().any(|s| s == r);
        if usable(region) {
            return Ok(Choice {
                region_used: region.to_string(),
                failed_over_from: None,
            });
        }
        if let Some(to) = home.fallback.iter().find(|f| usable(f)) {
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

    /// Every configured region, sorted (what the prober probes).
    pub fn regions(&self) -> Vec<String> {
        let mut all: Vec<String> = self.regions.keys().cloned().collect();
        all.sort();
        all
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

    fn down(&self, region: &str, signal: Signal) -> bool {
        let Some(r) = self.regions.get(region) else {
            return false;
        };
        // A region marked down must earn `successes_up` probes to return.
        let mut s = r.streak.lock().unwrap_or_else(|e| e.into_inner());
        s.successes = 0;
        self.set(region, false, signal)
    }

    fn set(&self, region: &str, up: bool, signal: Signal) -> bool {
        let Some(r) = self.regions.get(region) else {
            return false;
        };
        let changed = r.up.swap(up, Ordering::SeqCst) != up;
        if changed {
            let reason = match (up, signal) {
                (true, Signal::Probe) => "probe succeeded",
                _ => signal.as_str(),
            };
            if up {
                tracing::info!(region, reason, "gateway is up again");
            } else if r.fallback.is_empty() {
                tracing::warn!(
                    region,
                    reason,
                    "gateway marked down; no fallback configured: its statements get {}",
                    RejectReason::NoGateway.sqlstate()
                );
            } else {
                let fallback = r.fallback.join(",");
                tracing::warn!(region, reason, fallback = %fallback, "gateway marked down; failing over");
            }
            if let Some(o) = &self.observer {
                o.on_upstream_up(region, up);
            }
        }
        changed
    }
}

/// The metrics are told of every health event.
impl HealthObserver for Metrics {
    fn on_upstream_up(&self, region: &str, up: bool) {
        self.set_upstream_up(region, up);
    }

    fn on_failover(&self, from: &str, to: &str) {
        self.failover(from, to);
    }
}
