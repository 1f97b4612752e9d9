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
        let params = vec![(
            "application_name".to_string(),
            "geogate-tenants".to_string(),
        )];
        GatewayDirectory {
            gateway,
            startup: StartupParams {
                user,
                database,
                params,
            },
            load_sql: cfg.query.clone(),
            lookup_sql: lookup_sql(cfg),
            conn: Mutex::new(None),
        }
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<super::query::TextRow>, DirectoryError> {
        let mut slot = self.conn.lock().await;
        // Out of the slot while the query runs, back only once its answer
        // has been read to the end. A query abandoned half way (the cache's
        // `lookup_timeout` drops the future) leaves its answer on the
        // connection, and the next query would read that answer as its own:
        // another tenant's region, or a region from before a move. An
        // abandoned query's connection is dropped with it instead.
        let mut up = match slot.take() {
            Some(up) => up,
            None => Upstream::connect(&self.gateway, &self.startup)
                .await
                .map_err(|e| {
                    DirectoryError::Unreachable(format!(
                        "{} gateway: {}",
                        self.gateway.region,
                        describe(&e)
                    ))
                })?,
        };
        match up.query_text(sql, params).await {
            Ok(rows) => {
                *slot = Some(up);
                Ok(rows)
            }
            Err(e) => {
                // A server error leaves the connection usable; anything else does not.
                if matches!(e, UpstreamError::Server { .. }) {
                    *slot = Some(up);
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
                        "[tenants] query must return (tenant_id text, region text), both non-null"
                            .into(),
                    )),
                })
                .collect()
        })
    }

    fn lookup<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, DirectoryError>> {
        Box::pin(async move {
            let rows = self.query(&self.lookup_sql, &[tenant]).await?;
            // The lookup returns either (region) or (tenant_id, region): the region is the last column.
            Ok(rows
                .into_iter()
                .next()
                .and_then(|row| row.into_iter().last().flatten()))
        })
    }

    fn listen<'a>(
        &'a self,
        channel: &'a str,
        on_ready: &'a (dyn Fn() + Send + Sync),
        on_tenant: &'a (dyn Fn(&str) + Send + Sync),
    ) -> BoxFuture<'a, Result<(), DirectoryError>> {
        Box::pin(async move {
            // A connection of its own: it waits for notifications forever.
            let mut up = Upstream::connect(&self.gateway, &self.startup)
                .await
                .map_err(|e| DirectoryError::Unreachable(describe(&e)))?;
            let sql = format!("LISTEN {}", crate::rewrite::ident(channel));
            up.query_text(&sql, &[])
                .await
                .map_err(|e| DirectoryError::Query(describe(&e)))?;
            on_ready();
            let mut buf = std::mem::take(&mut up.leftover);
            loop {
                while let Some(h) = crate::wire::peek_frame(&buf, usize::MAX)
                    .map_err(|e| DirectoryError::Query(e.to_string()))?
                {
                    if buf.len() < h.total_len {
                        break;
                    }
                    let frame = buf.split_to(h.total_len);
                    if h.tag == b'A'
                        && let Some(payload) = notification_payload(&frame[5..])
                    {
                        on_tenant(payload);
                    }
                }
                let n = up
                    .reader
                    .read_into(&mut buf)
                    .await
                    .map_err(|e| DirectoryError::Unreachable(e.to_string()))?;
                if n == 0 {
                    return Err(DirectoryError::Unreachable(
                        "the gateway closed the listening connection".into(),
                    ));
                }
            }
        })
    }

    fn changes_since<'a>(
        &'a self,
        sql: &'a str,
        since: &'a str,
    ) -> BoxFuture<'a, Result<Vec<crate::tenants::Change>, DirectoryError>> {
        Box::pin(async move {
            let rows = self.query(sql, &[since]).await?;
            rows.into_iter()
                .map(|row| match row.as_slice() {
                    [Some(id), Some(region), Some(at), ..] => {
                        Ok((id.clone(), region.clone(), at.clone()))
                    }
                    _ => Err(DirectoryError::Query(
                        "[tenants] changes_query must return (tenant_id, region, updated_at), all non-null"
                            .into(),
                    )),
                })
                .collect()
        })
    }
}

/// A NotificationResponse body: int32 pid, channel, payload (C strings).
fn notification_payload(body: &[u8]) -> Option<&str> {
    let rest = body.get(4..)?;
    let channel_end = rest.iter().position(|&b| b == 0)?;
    let rest = &rest[channel_end + 1..];
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}
