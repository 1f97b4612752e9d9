//! geogate: a PostgreSQL-wire sidecar that keeps every statement inside its
//! region on a geo-partitioned database.
//!
//! The modules follow the data flow: `config` → `server` (accept) → `wire`
//! (client protocol) → `session` → `plan` (per statement: `analyze`, SQL →
//! facts; `tenants`, the tenant→region cache; `policy`, facts → decision,
//! with `rewrite`) → `upstream` (regional gateways and their health), with
//! `metrics` beside them and `refusal` (the SQLSTATE vocabulary) below all.
//! docs/architecture.md draws the rooms.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod cancel;
pub mod check;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod movetenant;
pub mod one_or_many;
pub mod plan;
pub mod policy;
pub mod prehashed;
pub mod refusal;
pub mod reload;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod shared;
pub mod tenants;
pub mod upstream;
pub mod wire;
