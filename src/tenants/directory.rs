//! Where the cache's answers come from: the tenant directory on the local gateway.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::TenantsConfig;

/// A boxed, sendable future: the object-safe shape of an `async fn` in a trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One row of `[tenants] changes_query`: `(tenant_id, region, updated_at)`.
pub type Change = (String, String, String);

/// The tenant directory: the source of truth the cache mirrors.
///
/// The production implementation runs `[tenants] query` (and [`lookup_sql`])
/// on the local gateway. Implementations must not put tenant ids or other
/// row values into their errors: errors are logged.
pub trait Directory: Send + Sync {
    /// Every `(tenant_id, region)` pair (`[tenants] query`).
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, DirectoryError>>;

    /// One tenant's region, `None` when the directory does not know it.
    fn lookup<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, DirectoryError>>;

    /// `LISTEN channel`, calling `on_ready` once listening and `on_tenant`
    /// with each notification's payload (a moved tenant's id), until the
    /// connection fails. The default: no change feed.
    fn listen<'a>(
        &'a self,
        _channel: &'a str,
        _on_ready: &'a (dyn Fn() + Send + Sync),
        _on_tenant: &'a (dyn Fn(&str) + Send + Sync),
    ) -> BoxFuture<'a, Result<(), DirectoryError>> {
        Box::pin(std::future::pending())
    }

    /// `(tenant_id, region, updated_at)` rows of `sql` with `$1` = `since`
    /// (`[tenants] changes_query`). The default: nothing changes.
    fn changes_since<'a>(
        &'a self,
        _sql: &'a str,
        _since: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Change>, DirectoryError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Why the directory could not answer. Carries no tenant id.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    /// No connection to the gateway holding the directory.
    #[error("tenant directory unreachable: {0}")]
    Unreachable(String),
    /// The query ran and failed, or returned rows of the wrong shape.
    #[error("tenant directory query failed: {0}")]
    Query(String),
    /// No answer in time (set by the cache around each call).
    #[error("tenant directory did not answer within {0:?}")]
    Timeout(Duration),
}

/// The SQL for a one-tenant lookup, with the tenant id as `$1`.
///
/// `[tenants] lookup_query` when set; otherwise the full-load query wrapped
/// so that it returns one tenant's row: `(tenant_id, region)` are its first
/// two columns by contract, whatever they are called.
pub fn lookup_sql(cfg: &TenantsConfig) -> String {
    if let Some(q) = &cfg.lookup_query {
        return q.clone();
    }
    let inner = cfg.query.trim().trim_end_matches(';').trim_end();
    format!(
        "SELECT geogate_t.tenant_id, geogate_t.region FROM ({inner}) \
         AS geogate_t(tenant_id, region) WHERE geogate_t.tenant_id = $1"
    )
}
