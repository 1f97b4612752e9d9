//! The live configuration and its reload on SIGHUP.
//!
//! What a reload may change is gathered in one value, [`Live`]: the
//! validated config, the planner built from it (analyzer, policy settings,
//! mode, tenant cache), the client credentials and the client TLS acceptor.
//! Sessions read the current one once per statement through [`LiveHandle`]
//! (a read lock held for one `Arc` clone, never across `.await`), so a
//! reload applies to the next statement of every open connection and drops
//! none. A statement already decided finishes under the config it started
//! with.
//!
//! What is bound or sized at start cannot change live ([`RESTART_ONLY`]):
//! a reload that changes it logs "restart needed" for each such key and
//! keeps the running value. An invalid file (or an unreadable certificate)
//! changes nothing and every problem is logged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError, TenantsConfig};
use crate::metrics::http::Readiness;
use crate::metrics::{Metrics, mode_label};
use crate::plan::Planner;
use crate::shared::{Live, Phase, Shared};
use crate::tenants::TenantCache;
use crate::upstream::{Gateway, GatewayDirectory};
use crate::wire::auth::UserDirectory;
use crate::wire::tls::{ServerTlsError, acceptor};

/// Keys read only at start: sockets bound, gateways and their pools,
/// runtime and limits sized once.
pub const RESTART_ONLY: &[&str] = &[
    "proxy.listen",
    "proxy.metrics_listen",
    "proxy.local_region",
    "proxy.max_client_connections",
    "proxy.max_message_size",
    "proxy.startup_timeout",
    "proxy.shutdown_grace",
    "proxy.worker_threads",
    "proxy.probe_interval",
    "proxy.probe_timeout",
    "proxy.probe_failures_down",
    "proxy.probe_successes_up",
    "regions",
];

/// Puts the start values of the [`RESTART_ONLY`] keys back into `new` and
/// returns the keys whose value the file changed.
pub fn keep_restart_only(new: &mut Config, start: &Config) -> Vec<&'static str> {
    let (n, s) = (&mut new.proxy, &start.proxy);
    let mut changed = Vec::new();
    macro_rules! keep {
        ($field:ident, $key:literal) => {
            debug_assert!(RESTART_ONLY.contains(&$key));
            if n.$field != s.$field {
                changed.push($key);
                n.$field = s.$field.clone();
            }
        };
    }
    keep!(listen, "proxy.listen");
    keep!(metrics_listen, "proxy.metrics_listen");
    keep!(local_region, "proxy.local_region");
    keep!(max_client_connections, "proxy.max_client_connections");
    keep!(max_message_size, "proxy.max_message_size");
    keep!(startup_timeout, "proxy.startup_timeout");
    keep!(shutdown_grace, "proxy.shutdown_grace");
    keep!(worker_threads, "proxy.worker_threads");
    // The prober and the region health are built once, at start.
    keep!(probe_interval, "proxy.probe_interval");
    keep!(probe_timeout, "proxy.probe_timeout");
    keep!(probe_failures_down, "proxy.probe_failures_down");
    keep!(probe_successes_up, "proxy.probe_successes_up");
    if new.regions != start.regions {
        changed.push("regions");
        new.regions = start.regions.clone();
    }
    changed
}

/// What a reload changed that applies now (for the log line).
pub fn live_changes(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.proxy, &new.proxy);
    let mut changed = Vec::new();
    macro_rules! diff {
        ($field:ident, $key:literal) => {
            if o.$field != n.$field {
                changed.push($key.to_string());
            }
        };
    }
    diff!(mode, "proxy.mode");
    diff!(unlisted_tables, "proxy.unlisted_tables");
    diff!(on_parse_error, "proxy.on_parse_error");
    diff!(on_cross_region_txn, "proxy.on_cross_region_txn");
    diff!(max_statement_length, "proxy.max_statement_length");
    diff!(analysis_cache_size, "proxy.analysis_cache_size");
    diff!(tls_cert, "proxy.tls_cert");
    diff!(tls_key, "proxy.tls_key");
    diff!(tls_mode, "proxy.tls_mode");
    if old.tenants != new.tenants {
        changed.push("tenants".into());
    }
    let mut names: Vec<&String> = old.tables.keys().chain(new.tables.keys()).collect();
    names.sort();
    names.dedup();
    for t in names {
        if old.tables.get(t) != new.tables.get(t) {
            changed.push(format!("tables.{t}"));
        }
    }
    let mut users: Vec<&String> = old.users.keys().chain(new.users.keys()).collect();
    users.sort();
    users.dedup();
    if users.iter().any(|u| old.users.get(*u) != new.users.get(*u)) {
        changed.push("users".into());
    }
    changed
}

/// Why a reload left the running config in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server was started from text, not a file.
    #[error("no config file to reload")]
    NoFile,
    /// The file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The client TLS certificate or key is unusable.
    #[error("{0}")]
    Tls(#[from] ServerTlsError),
    /// The reload task failed unexpectedly.
    #[error("reload task failed")]
    Task,
}

impl ReloadError {
    /// Logs the failure, one line per problem in the file.
    pub fn log(&self) {
        match self {
            ReloadError::Config(ConfigError::Invalid { origin, issues }) => {
                tracing::error!(
                    file = %origin,
                    problems = issues.len(),
                    "reload failed: the running configuration stays in force"
                );
                for issue in issues {
                    tracing::error!(file = %origin, key = %issue.key, "config problem: {}", issue.message);
                }
            }
            other => {
                tracing::error!(error = %other, "reload failed: the running configuration stays in force");
            }
        }
    }
}

/// What a successful reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// Keys that apply now.
    pub applied: Vec<String>,
    /// Keys changed in the file that need a restart (kept as they were).
    pub restart_needed: Vec<&'static str>,
}

/// Re-reads the config file and swaps the [`Live`] config; shared by the
/// SIGHUP handler and tests.
pub struct Reloader {
    path: Option<PathBuf>,
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    /// Dropping it stops the current tenant cache's refresh task. A std
    /// Mutex: held for a swap only.
    tenants_retire: Mutex<Option<oneshot::Sender<()>>>,
    /// One reload at a time (held across the reload's awaits on purpose).
    serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        readiness: Arc<Readiness>,
        tenants_retire: Option<oneshot::Sender<()>>,
    ) -> Reloader {
        Reloader {
            path: shared.config.path.clone(),
            shared,
            readiness,
            tenants_retire: Mutex::new(tenants_retire),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the file again and, if it is valid, makes it the live config.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one = self.serial.lock().await;
        let path = self.path.clone().ok_or(ReloadError::NoFile)?;
        let running = self.shared.live.load();
        let start = self.shared.config.clone();
        let fake_key = running.users.fake_key;
        // File I/O and one PBKDF2 per cleartext password: off the event loop.
        let (new, restart_needed, tls, users) = tokio::task::spawn_blocking(move || {
            let mut new = Config::load(&path)?;
            let restart = keep_restart_only(&mut new, &start);
            let tls = client_tls(&new)?;
            let users = UserDirectory::with_fake_key(&new.users, fake_key);
            Ok::<_, ReloadError>((new, restart, tls, users))
        })
        .await
        .map_err(|_| ReloadError::Task)??;

        let metrics = running.planner.metrics().clone();
        let mut retire = None;
        let tenants = if new.tenants == running.config.tenants {
            running.planner.tenant_cache().cloned()
        } else {
            match &new.tenants {
                None => {
                    retire = Some(None);
                    None
                }
                Some(t) => {
                    let (cache, stop) = spawn_tenant_cache(
                        t,
                        &self.shared.gateways[&self.shared.local_region],
                        &metrics,
                        &self.readiness,
                        self.shared.phase.clone(),
                    );
                    // Let the new directory load before statements need it.
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        while !cache.is_loaded() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    })
                    .await;
                    retire = Some(Some(stop));
                    Some(cache)
                }
            }
        };
        let applied = live_changes(&running.config, &new);
        metrics.set_info(mode_label(new.proxy.mode), &new.proxy.local_region);
        let config = Arc::new(new);
        let live = Live {
            generation: running.generation + 1,
            planner: Arc::new(Planner::new(config.clone(), tenants, metrics)),
            config,
            users,
            tls,
        };
        let generation = live.generation;
        self.shared.live.store(Arc::new(live));
        if let Some(stop) = retire {
            // The old cache's refresh task ends; sessions still holding the
            // old config finish their statement with it.
            *self
                .tenants_retire
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = stop;
        }
        Ok(Reloaded {
            generation,
            applied,
            restart_needed,
        })
    }

    /// [`Reloader::reload`], logged.
    pub async fn reload_and_log(&self) {
        match self.reload().await {
            Ok(r) => {
                for key in &r.restart_needed {
                    tracing::warn!(
                        key,
                        "config reload: {key} changed; restart needed (the running value stays in force)"
                    );
                }
                tracing::info!(
                    generation = r.generation,
                    changed = %r.applied.join(","),
                    "configuration reloaded"
                );
            }
            Err(e) => e.log(),
        }
    }
}

/// The client TLS acceptor a config asks for.
pub fn client_tls(config: &Config) -> Result<Option<TlsAcceptor>, ServerTlsError> {
    match (&config.proxy.tls_cert, &config.proxy.tls_key) {
        (Some(cert), Some(key)) => acceptor(cert, key).map(Some),
        _ => Ok(None),
    }
}

/// Starts a tenant cache on the local gateway: its refresh task and the
/// readiness flag once loaded. Both stop when the server stops or when the
/// returned sender is dropped (a reload replaced the cache).
pub(crate) fn spawn_tenant_cache(
    cfg: &TenantsConfig,
    local: &Gateway,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
    phase: watch::Receiver<Phase>,
) -> (Arc<TenantCache>, oneshot::Sender<()>) {
    let directory = GatewayDirectory::new(local.clone(), cfg);
    let cache = TenantCache::new(cfg.clone(), Arc::new(directory), Some(metrics.clone()));
    let (retire_tx, retire_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = watch::channel(false);
    let stop = {
        let phase = phase.clone();
        async move {
            tokio::select! {
                _ = crate::shared::stopped(phase) => {}
                _ = retire_rx => {}
            }
            let _ = done_tx.send(true);
        }
    };
    cache.spawn_refresh(stop);
    let (c, r) = (cache.clone(), readiness.clone());
    let mut done = done_rx;
    tokio::spawn(async move {
        // Readiness waits for the first directory load.
        while !c.is_loaded() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = done.changed() => return,
            }
        }
        r.set_tenants_loaded(true);
    });
    (cache, retire_tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[proxy]
local_region = "eu"
mode = "enforce"
[regions.eu]
gateway = "postgres://h:5432/db"
[tables.users]
partition_column = "region"
on_missing_region = "allow"
[[users]]
name = "app"
password = "x"
"#;

    #[test]
    fn restart_only_keys_keep_their_start_values_and_are_reported() {
        let start = Config::parse(BASE).unwrap();
        let text = BASE
            .replace(
                "mode = \"enforce\"",
                "mode = \"observe\"\nlisten = \"0.0.0.0:7000\"",
            )
            .replace("h:5432", "other:5432")
            .replace("\"allow\"", "\"reject\"");
        let mut new = Config::parse(&text).unwrap();
        let restart = keep_restart_only(&mut new, &start);
        assert_eq!(restart, vec!["proxy.listen", "regions"]);
        assert_eq!(new.proxy.listen, start.proxy.listen);
        assert_eq!(new.regions, start.regions);
        let applied = live_changes(&start, &new);
        assert_eq!(applied, vec!["proxy.mode", "tables.users"]);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let start = Config::parse(BASE).unwrap();
        let mut new = Config::parse(BASE).unwrap();
        assert!(keep_restart_only(&mut new, &start).is_empty());
        assert!(live_changes(&start, &new).is_empty());
    }
}
