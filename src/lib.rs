//! geogate: a PostgreSQL-wire sidecar that keeps every statement inside its
//! region on a geo-partitioned database.
//!
//! The modules follow the data flow: `config` → `wire` (client protocol) →
//! `session` → `analyze` (SQL → facts) → `policy` (facts → decision) →
//! `rewrite` → `upstream` (regional gateways).
#![forbid(unsafe_code)]

pub mod config;
