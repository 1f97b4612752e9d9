//! The accept loop: one task per client, the connection limit, graceful
//! shutdown (stop accepting, let open transactions finish within
//! `proxy.shutdown_grace`, then close).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics::http::{HttpState, Readiness};
use crate::metrics::{self, Metrics};
use crate::plan::Planner;
use crate::reload::{Reloader, spawn_tenant_cache};
use crate::session;
use crate::shared::{Live, LiveHandle, stopped};
use crate::shared::{Phase, Shared};
use crate::upstream::{Gateway, GatewayProbe};
use crate::upstream::{Health, ProberConfig, Thresholds, spawn_prober};
use crate::wire::ClientError;
use crate::wire::auth::UserDirectory;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `proxy.listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A gateway's TLS settings are unusable.
    #[error("regions.{region}.gateway: {source}")]
    Tls {
        /// The region.
        region: String,
        /// What is wrong.
        source: crate::upstream::tls::TlsSetupError,
    },
    /// The client TLS certificate or key is unusable.
    #[error("{0}")]
    ClientTls(crate::wire::tls::ServerTlsError),
    /// Installing the signal handler failed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// A bound, not yet running proxy (so tests can learn the ports first).
pub struct Bound {
    listener: TcpListener,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    metrics_addr: Option<SocketAddr>,
    readiness: Arc<Readiness>,
    reloader: Arc<Reloader>,
}

/// Binds `proxy.listen` (and `proxy.metrics_listen`), prepares gateways and
/// users, and starts the background work: tenant directory refresh, the
/// prober of down gateways, the metrics endpoints.
pub async fn bind(config: Config) -> Result<Bound, ServerError> {
    let addr = config.proxy.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let mut gateways = BTreeMap::new();
    for (name, region) in &config.regions {
        let gw = Gateway::new(region).map_err(|source| ServerError::Tls {
            region: name.clone(),
            source,
        })?;
        gateways.insert(gw.region.clone(), gw);
    }
    let local_region = gateways
        .keys()
        .find(|k| ***k == *config.proxy.local_region)
        .cloned()
        .unwrap_or_else(|| config.proxy.local_region.as_str().into());
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let tls = crate::reload::client_tls(&config).map_err(ServerError::ClientTls)?;
    let config = Arc::new(config);

    let metrics = Arc::new(Metrics::from_config(&config));
    let readiness = Arc::new(Readiness::new(config.tenants.is_some()));
    readiness.set_config_loaded(true);
    let thresholds = Thresholds {
        failures_down: config.proxy.probe_failures_down,
        successes_up: config.proxy.probe_successes_up,
    };
    let health = Health::with_thresholds(&config.regions, thresholds, Some(metrics.clone()));
    // `/readyz` asks the health whether the local region is served.
    readiness.follow_gateways(
        {
            let (health, local) = (health.clone(), local_region.clone());
            move || health.serves(&local)
        },
        health.has_fallback(&local_region),
    );
    // The first round runs at once; an unconfirmed region goes down on its
    // first failed probe, so `/readyz` tells the truth within a probe.
    spawn_prober(
        health.clone(),
        Arc::new(GatewayProbe::new(gateways.clone())),
        ProberConfig::from_config(&config.proxy),
        stopped(phase_rx.clone()),
    );

    let (tenants, tenants_retire) = match &config.tenants {
        None => (None, None),
        Some(t) => {
            let (cache, retire) = spawn_tenant_cache(
                t,
                &gateways[&local_region],
                &metrics,
                &readiness,
                phase_rx.clone(),
            );
            (Some(cache), Some(retire))
        }
    };
    let metrics_addr = match config.proxy.metrics_listen {
        None => None,
        Some(addr) => {
            let l = metrics::http::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let bound = l.local_addr().ok();
            let state = HttpState {
                metrics: metrics.clone(),
                readiness: readiness.clone(),
            };
            tokio::spawn(l.serve(state, stopped(phase_rx.clone())));
            bound
        }
    };
    let planner = Arc::new(Planner::new(config.clone(), tenants, metrics.clone()));
    let live = Live {
        generation: 0,
        config: config.clone(),
        planner,
        users: UserDirectory::new(&config.users),
        tls,
    };
    let shared = Arc::new(Shared {
        live: LiveHandle::new(live),
        config,
        metrics,
        gateways,
        local_region,
        cancels: Arc::new(CancelRegistry::new()),
        health,
        phase: phase_rx,
    });
    let reloader = Arc::new(Reloader::new(
        shared.clone(),
        readiness.clone(),
        tenants_retire,
    ));
    Ok(Bound {
        listener,
        shared,
        phase,
        metrics_addr,
        readiness,
        reloader,
    })
}

impl Bound {
    /// The metrics listener's address, when `proxy.metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address clients connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.shared.config.proxy.listen)
    }

    /// Reloads the config file on demand (what SIGHUP does).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Serves until SIGTERM or SIGINT, then drains; SIGHUP reloads the
    /// config file.
    pub async fn run(self) -> Result<(), ServerError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
        let mut hup = signal(SignalKind::hangup()).map_err(ServerError::Signal)?;
        let reloader = self.reloader.clone();
        let running = stopped(self.shared.phase.clone());
        tokio::spawn(async move {
            tokio::pin!(running);
            loop {
                tokio::select! {
                    _ = &mut running => return,
                    got = hup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        tracing::info!("SIGHUP: reloading the configuration");
                        reloader.reload_and_log().await;
                    }
                }
            }
        });
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        self.run_until(stop).await;
        Ok(())
    }

    /// Serves until `stop` completes, then stops accepting, lets sessions
    /// finish their transactions for `proxy.shutdown_grace`, and closes the rest.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        let Bound {
            listener,
            shared,
            phase,
            readiness,
            reloader,
            ..
        } = self;
        // Holds the tenant cache's refresh task until the server returns.
        let _reloader = reloader;
        let limit = Arc::new(Semaphore::new(shared.config.proxy.max_client_connections));
        // Every session holds a clone; when all are dropped, `recv` returns None.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        tokio::pin!(stop);
        tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "geogate listening");
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = &mut stop => break,
                a = listener.accept() => a,
            };
            let (tcp, _peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let shared = shared.clone();
            let alive = alive_tx.clone();
            match limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        session::serve_client(tcp, shared).await;
                        drop(permit);
                        drop(alive);
                    });
                }
                Err(_) => {
                    tokio::spawn(async move {
                        session::refuse_after_startup(
                            tcp,
                            shared,
                            ClientError::too_many_connections(),
                        )
                        .await;
                        drop(alive);
                    });
                }
            }
        }
        drop(listener);
        drop(alive_tx);
        tracing::info!("shutting down: waiting for open transactions");
        readiness.set_draining(true);
        let _ = phase.send(Phase::Draining);
        let grace = shared.config.proxy.shutdown_grace;
        if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
            tracing::info!("shutdown grace period over: closing remaining sessions");
            let _ = phase.send(Phase::Closing);
            let _ = tokio::time::timeout(Duration::from_secs(5), alive_rx.recv()).await;
        }
    }
}

/// Runs the proxy until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    bind(config).await?.run().await?;
    Ok(())
}
