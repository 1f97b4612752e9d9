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

use crate::config::Config;
use crate::session::cancel::CancelRegistry;
use crate::session::route::{LocalRouter, Router};
use crate::session::{self, Phase, Shared};
use crate::upstream::Gateway;
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
    /// Installing the signal handler failed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// A bound, not yet running proxy (so tests can learn the port first).
pub struct Bound {
    listener: TcpListener,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
}

/// Binds `proxy.listen` and prepares gateways and users, with the default
/// (local-region) router.
pub async fn bind(config: Config) -> Result<Bound, ServerError> {
    bind_with_router(config, Arc::new(LocalRouter)).await
}

/// As [`bind`], with the per-statement decision point supplied by the caller.
pub async fn bind_with_router(
    config: Config,
    router: Arc<dyn Router>,
) -> Result<Bound, ServerError> {
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
    let shared = Arc::new(Shared {
        users: UserDirectory::new(&config.users),
        config: Arc::new(config),
        gateways,
        local_region,
        cancels: Arc::new(CancelRegistry::new()),
        router,
        phase: phase_rx,
    });
    Ok(Bound {
        listener,
        shared,
        phase,
    })
}

impl Bound {
    /// The address clients connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.shared.config.proxy.listen)
    }

    /// Serves until SIGTERM or SIGINT, then drains.
    pub async fn run(self) -> Result<(), ServerError> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ServerError::Signal)?;
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
        } = self;
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
