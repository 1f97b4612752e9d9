//! The cancel registry: geogate issues its own BackendKeyData per client and
//! maps a CancelRequest carrying it to the upstream connection that is
//! currently serving that client.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use ring::rand::SecureRandom;

use crate::upstream::{CancelTarget, send_cancel};

/// The upstream a session currently uses, shared with the registry.
/// A std Mutex is fine: it is held only to clone or replace the value,
/// never across an `.await`.
pub type CancelSlot = Arc<Mutex<Option<CancelTarget>>>;

/// Every live session's key, by geogate-issued pid.
#[derive(Debug)]
pub struct CancelRegistry {
    sessions: DashMap<i32, (i32, CancelSlot)>,
    next_pid: AtomicI32,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            sessions: DashMap::new(),
            next_pid: AtomicI32::new(random_i32().rem_euclid(1 << 20) + 1),
        }
    }

    /// Issues a (pid, secret) for a new session; the guard unregisters it.
    pub fn register(self: &Arc<Self>) -> CancelGuard {
        let pid = loop {
            let p = self.next_pid.fetch_add(1, Ordering::Relaxed) & i32::MAX;
            if p != 0 && !self.sessions.contains_key(&p) {
                break p;
            }
        };
        let secret = random_i32();
        let slot: CancelSlot = Arc::new(Mutex::new(None));
        self.sessions.insert(pid, (secret, slot.clone()));
        CancelGuard {
            registry: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// Forwards a client's CancelRequest. Unknown keys are ignored silently,
    /// as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = self.sessions.get(&pid).and_then(|e| {
            let (s, slot) = e.value();
            // Compare without early exit on the secret.
            ((s ^ secret) == 0)
                .then(|| slot.lock().ok().and_then(|g| g.clone()))
                .flatten()
        });
        if let Some(t) = target {
            if let Err(e) = send_cancel(&t).await {
                tracing::warn!(error = %e, "forwarding a cancel request failed");
            }
        }
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is registered.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// A session's registration; dropping it unregisters the key.
#[derive(Debug)]
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    /// The pid geogate issued.
    pub pid: i32,
    /// The secret geogate issued.
    pub secret: i32,
    /// Where cancels for this session go.
    pub slot: CancelSlot,
}

impl CancelGuard {
    /// Points cancels at the upstream connection now in use. Called after
    /// every statement: the target is copied only when the connection
    /// changed.
    pub fn set_target(&self, target: &CancelTarget) {
        if let Ok(mut g) = self.slot.lock()
            && g.as_ref() != Some(target)
        {
            *g = Some(target.clone());
        }
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.pid);
    }
}

fn random_i32() -> i32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    i32::from_be_bytes(b)
}
