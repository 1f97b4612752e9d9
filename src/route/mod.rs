//! Region selection: which gateway serves a statement for a region, given
//! which gateways are up (the seed's "Regional Outages").
//!
//! [`Health`] holds an up/down flag per configured region. The session marks
//! a region down when its gateway fails to connect or stops answering;
//! [`Health::choose`] then picks the first healthy region of that region's
//! `fallback` list, and a background prober ([`spawn_prober`]) probes down
//! regions through the [`Probe`] trait until they answer, so recovery needs
//! no operator. No sockets here: the probe's I/O belongs to `upstream`.

mod health;
mod prober;
mod router;

pub use health::{Choice, Health, NoGateway, RouteObserver};
pub use prober::{BoxFuture, Probe, ProberConfig, spawn_prober};
pub use router::{Plan, Router};

#[cfg(test)]
mod tests;
