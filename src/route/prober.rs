//! The background task that brings down regions back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use super::health::Health;

/// A boxed, sendable future: the object-safe shape of an `async fn` in a trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Checks whether a region's gateway answers (the real one connects and
/// completes a startup; it lives in `upstream`).
pub trait Probe: Send + Sync {
    /// `true` when the gateway of `region` answers.
    fn probe<'a>(&'a self, region: &'a str) -> BoxFuture<'a, bool>;
}

/// How the prober runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProberConfig {
    /// Time between probing rounds over the regions that are down.
    pub interval: Duration,
    /// A probe that has not answered by then counts as failed.
    pub timeout: Duration,
}

impl Default for ProberConfig {
    fn default() -> Self {
        ProberConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Every `interval`, probes each region that is down (concurrently, each
/// bounded by `timeout`) and marks up those that answer. Up regions are not
/// probed: the session marks them down when they fail. Stops when
/// `shutdown` completes, abandoning probes in flight.
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
            let down = health.down_regions();
            if down.is_empty() {
                continue;
            }
            let mut round = JoinSet::new();
            for region in down {
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
                    if let Ok((region, true)) = res {
                        health.mark_up(&region);
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
