//! The state the server shares with every session and with the reloader:
//! its phase (running, draining, closing), the gateways and health, and
//! the live configuration a reload swaps. Below the server, the reloader
//! and the sessions, so that none of them imports another for it.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plan::Planner;
use crate::upstream::Gateway;
use crate::wire::auth::UserDirectory;

/// Where the server is in its life; sessions watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// SIGTERM: finish open transactions, then close.
    Draining,
    /// Grace period over: close now.
    Closing,
}

/// What every session shares.
pub struct Shared {
    /// What a reload can change (config, planner, users, client TLS): read
    /// once per statement, see [`crate::reload`].
    pub live: LiveHandle,
    /// The configuration the server started with: the keys that need a
    /// restart (listen addresses, regions, limits) are read from here.
    pub config: Arc<Config>,
    /// Metrics (one registry for the process's life).
    pub metrics: Arc<Metrics>,
    /// Gateways by region.
    pub gateways: BTreeMap<Arc<str>, Gateway>,
    /// The local region's name.
    pub local_region: Arc<str>,
    /// Cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Gateway health, for failover.
    pub health: Arc<crate::upstream::Health>,
    /// Server phase.
    pub phase: watch::Receiver<Phase>,
}

/// Everything a reload swaps, as one value.
pub struct Live {
    /// Counts reloads: 0 at start.
    pub generation: u64,
    /// The config in force (restart-only keys keep their start values).
    pub config: Arc<Config>,
    /// The per-statement decision point built from `config`.
    pub planner: Arc<Planner>,
    /// Client credentials (`[[users]]`), for new connections.
    pub users: UserDirectory,
    /// Client TLS, when `proxy.tls_cert`/`tls_key` are set.
    pub tls: Option<TlsAcceptor>,
}

/// The current [`Live`], swappable while sessions read it.
pub struct LiveHandle {
    // A std RwLock: readers hold it for one Arc clone, never across an
    // await, and it is written once per reload.
    current: RwLock<Arc<Live>>,
}

impl LiveHandle {
    /// A handle holding `live`.
    pub fn new(live: Live) -> LiveHandle {
        LiveHandle {
            current: RwLock::new(Arc::new(live)),
        }
    }

    /// The config in force now.
    pub fn load(&self) -> Arc<Live> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swaps in a new config (the reloader's job).
    pub(crate) fn store(&self, live: Arc<Live>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = live;
    }
}

/// Resolves once the server leaves [`Phase::Running`] (or is gone).
pub(crate) async fn stopped(mut phase: watch::Receiver<Phase>) {
    while *phase.borrow_and_update() == Phase::Running {
        if phase.changed().await.is_err() {
            return;
        }
    }
}
