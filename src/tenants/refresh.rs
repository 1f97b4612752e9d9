//! The cache's life in the background: a full reload every `refresh`, and
//! the change feeds (LISTEN, polling) that invalidate tenants in between.
//! Apart from the cache itself so that the cache does not depend on the
//! feeds that update it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::TenantCache;

impl TenantCache {
    /// Runs [`TenantCache::load`] every `refresh` until `shutdown` completes.
    /// Until the first load succeeds it retries every second (or `refresh`,
    /// if shorter), so a sidecar started before its gateway becomes ready soon
    /// after the gateway does. If the cache is not loaded yet the first
    /// attempt is made at once; if `main` already awaited `load`, the first
    /// reload comes one `refresh` later.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let cache = Arc::clone(self);
        // The change feeds (LISTEN, polling) live as long as the refresh loop.
        let feeds = super::feed::follow(Arc::clone(self));
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            tokio::pin!(feeds);
            let mut wait = if cache.is_loaded() {
                cache.config().refresh
            } else {
                Duration::ZERO
            };
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = &mut feeds => {}
                    () = tokio::time::sleep(wait) => {}
                }
                // Errors are logged and recorded by `load`.
                tokio::select! {
                    () = &mut shutdown => break,
                    () = &mut feeds => {}
                    _ = cache.load() => {}
                }
                wait = if cache.is_loaded() {
                    cache.config().refresh
                } else {
                    cache.config().refresh.min(Duration::from_secs(1))
                };
            }
        })
    }
}
