//! The background task that probes every region's gateway: it marks a
//! region down when its probes fail and brings it back when they succeed
//! (each after a run of consecutive results, see [`super::Thresholds`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use super::health::Health;

/// A boxed, sendable future: the object-safe shape of an `async fn` in a trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Checks whether a region's gateway would serve a session (the real one
/// logs in and runs `SELECT 1`; it lives in `upstream`).
pub trait Probe: Send + Sync {
    /// `true` when the gateway of `region` serves a session.
    fn probe<'a>(&'a self, region: &'a str) -> BoxFuture<'a, bool>;
}

/// How the prober runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProberConfig {
    /// Time between probing rounds (`[proxy] probe_interval`).
    pub interval: Duration,
    /// A probe that has not answered by then counts as failed
    /// (`[proxy] probe_timeout`).
    pub timeout: Duration,
}

impl ProberConfig {
    /// The prober settings of `[proxy]`.
    pub fn from_config(proxy: &crate::config::ProxyConfig) -> ProberConfig {
        ProberConfig {
            interval: proxy.probe_interval,
            timeout: proxy.probe_timeout,
        }
    }
}

impl Default for ProberConfig {
    fn default() -> Self {
        ProberConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Every `interval`, probes every region (concurrently, each bounded by
/// `timeout`) and reports each result to [`Health::probe_result`]. Up
/// regions are probed too: a gateway that dies while no session uses it is
/// seen within `failures_down` rounds, so `/readyz` and new sessions learn
/// of it without a client paying for it. Stops when `shutdown` completes,
/// abandoning probes in flight.
pub fn spawn_prober(
    health: Arc<Health>,
    probe: Arc<dyn Probe>,
    config: ProberConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(config.interval);
        // After a long stall, probe once, not in a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            let mut round = JoinSet::new();
            for region in health.regions() {
                let probe = Arc::clone(&probe);
                round.spawn(async move {
                    let ok = tokio::time::timeout(config.timeout, probe.probe(&region))
                        .await
                        .unwrap_or(false);
                    (region, ok)
                });
            }
            let finished = async {
                while let Some(res) = round.join_next().await {
                    if let Ok((region, ok)) = res {
                        health.probe_result(&region, ok);
                    }
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = finished => {}
            }
        }
    })
}
