//! Following the directory's changes between full loads: `LISTEN` on a
//! channel a trigger notifies with each moved tenant's id, and polling
//! `changes_query` by `updated_at` as a fallback. Each change invalidates
//! (or sets) that tenant in the process-wide cache, so every session of the
//! sidecar sees a move within one notification's latency, not one `refresh`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::cache::TenantCache;
use super::observer::FeedSource;

/// Runs the change feeds configured under `[tenants]` until dropped: the
/// listener when `listen` is set, the poller when `changes_query` is set.
pub(super) async fn follow(cache: Arc<TenantCache>) {
    let moves = cache.config().moves.clone();
    let listen = async {
        let Some(channel) = moves.listen.as_deref() else {
            return std::future::pending().await;
        };
        listen_forever(&cache, channel).await
    };
    let poll = async {
        let Some(sql) = moves.changes_query.as_deref() else {
            return std::future::pending().await;
        };
        poll_forever(&cache, sql, moves.poll_interval).await
    };
    tokio::join!(listen, poll);
}

async fn listen_forever(cache: &Arc<TenantCache>, channel: &str) {
    let listened_before = AtomicBool::new(false);
    let mut backoff = Duration::from_secs(1);
    loop {
        let listening = AtomicBool::new(false);
        let on_ready = || {
            listening.store(true, Ordering::SeqCst);
            // Notifications sent while no listener was connected are lost:
            // reload the whole directory after reconnecting.
            if listened_before.swap(true, Ordering::SeqCst) {
                let c = cache.clone();
                tokio::spawn(async move {
                    let _ = c.load().await;
                });
            }
        };
        let on_tenant = |tenant: &str| cache.invalidate_from(tenant, FeedSource::Listen);
        let result = cache
            .directory()
            .listen(channel, &on_ready, &on_tenant)
            .await;
        if listening.load(Ordering::SeqCst) {
            backoff = Duration::from_secs(1);
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_in = ?backoff, "tenant directory listener stopped; reconnecting");
        }
        tokio::time::sleep(backoff).await;
        // A gateway without LISTEN (CockroachDB) is not retried every second.
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn poll_forever(cache: &Arc<TenantCache>, sql: &str, every: Duration) {
    // The first poll reads every tenant changed since the beginning of time
    // (as a full load would); later ones only what changed since.
    let mut watermark = String::from("-infinity");
    let mut first = true;
    loop {
        match cache.directory().changes_since(sql, &watermark).await {
            Ok(rows) => {
                // `changes_query` orders by `updated_at`: the last row's is
                // the newest seen.
                if let Some((_, _, last)) = rows.last() {
                    watermark = last.clone();
                }
                for (tenant, region, _) in &rows {
                    if first {
                        // The initial sweep reports no move, only the state.
                        cache.set(tenant, region);
                    } else {
                        cache.set_from(tenant, region, FeedSource::Poll);
                    }
                }
                first = false;
            }
            Err(e) => tracing::warn!(error = %e, "tenant directory poll failed"),
        }
        tokio::time::sleep(every).await;
    }
}
