//! Region selection: which gateway serves a statement for a region, given
//! which gateways are up: a region's gateway may fail, and its statements
//! then go to a fallback region allowed to serve it.
//!
//! [`Health`] holds an up/down flag per configured region, changed by health
//! signals only: a session's new connection that cannot connect or log in
//! ([`Health::connect_failed`]), an established connection lost without the
//! server saying why ([`Health::connection_lost`]), and the background
//! prober's results ([`spawn_prober`], [`Health::probe_result`]). A gateway
//! ending one session with its own error is not a signal. [`Health::choose`]
//! picks the first healthy region of a down region's `fallback` list, and
//! [`Health::open_with_failover`] opens a connection that way. Recovery
//! needs no operator. No sockets here: the probe's I/O belongs to `upstream`.

mod health;
mod prober;
mod router;

pub use health::{
    Attempt, Choice, Health, NoGateway, OpenError, RouteObserver, Signal, Thresholds,
};
pub use prober::{BoxFuture, Probe, ProberConfig, spawn_prober};
pub use router::{Plan, Router};

#[cfg(test)]
mod tests;
