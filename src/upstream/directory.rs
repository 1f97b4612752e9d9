//! The tenant directory on the local gateway: the production
//! [`Directory`] behind the tenant→region cache.

use tokio::sync::Mutex;

use super::{Gateway, StartupParams, Upstream, UpstreamError};
use crate::config::TenantsConfig;
use crate::tenants::{BoxFuture, Directory, DirectoryError, lookup_sql};

/// Runs `[tenants] query` and the one-tenant lookup on a gateway, over one
/// connection of its own that is reopened after any failure.
pub struct GatewayDirectory {
    gateway: Gateway,
    startup: StartupParams,
    load_sql: String,
    lookup_sql: String,
    /// A tokio mutex: it is held across the query's awaits on purpose, as the
    /// connection serves one query at a time (the cache already merges
    /// concurrent lookups of one tenant).
    conn: Mutex<Option<Upstream>>,
}

impl GatewayDirectory {
    /// A directory on `gateway`, connecting as the URL's user (or `geogate`)
    /// to the URL's database (or one named like the user, as libpq does).
    pub fn new(gateway: Gateway, cfg: &TenantsConfig) -> GatewayDirectory {
        let user = gateway.url.user.clone().unwrap_or_else(|| "geogate".into());
        let database = gateway.url.database.clone().unwrap_or_else(|| user.clone());
        let params = vec![("application_name".to_string(), "geogate-tenants".to_string())];
        GatewayDirectory {
            gateway,
            startup: StartupParams { user, database, params },
            load_sql: cfg.query.clone(),
            lookup_sql: lookup_sql(cfg),
            conn: Mutex::new(None),
        }
    }

    async fn query(&self, sql: &str, params: &[&str]) -> Result<Vec<super::query::TextRow>, DirectoryError> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            let up = Upstream::connect(&self.gateway, &self.startup)
                .await
                .map_err(|e| DirectoryError::Unreachable(format!("{} gateway: {}", self.gateway.region, describe(&e))))?;
            *slot = Some(up);
        }
        let up = slot.as_mut().expect("connected above");
        match up.query_text(sql, params).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // A server error leaves the connection usable; anything else does not.
                if !matches!(e, UpstreamError::Server { .. }) {
                    *slot = None;
                }
                Err(DirectoryError::Query(describe(&e)))
            }
        }
    }
}

/// An error's description without row values (a server error by SQLSTATE only).
fn describe(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Server { code, .. } => format!("the gateway answered SQLSTATE {code}"),
        other => other.to_string(),
    }
}

impl Directory for GatewayDirectory {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, DirectoryError>> {
        Box::pin(async move {
            let rows = self.query(&self.load_sql, &[]).await?;
            rows.into_iter()
                .map(|row| match row.as_slice() {
                    [Some(id), Some(region), ..] => Ok((id.clone(), region.clone())),
                    _ => Err(DirectoryError::Query(
                        "[tenants] query must return (tenant_id text, region text), both non-null".into(),
                    )),
                })
                .collect()
        })
    }

    fn lookup<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Option<String>, DirectoryError>> {
        Box::pin(async move {
            let rows = self.query(&self.lookup_sql, &[tenant]).await?;
            // The lookup returns either (region) or (tenant_id, region): the region is the last column.
            Ok(rows.into_iter().next().and_then(|row| row.into_iter().last().flatten()))
        })
    }
}
