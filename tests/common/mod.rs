//! The one test harness every suite builds on (`mod common;`, or
//! `#[path = "../common/mod.rs"] mod common;` from a directory target):
//!
//! - [`cluster`]: real PostgreSQL clusters ([`Cluster`]), no mock database;
//! - [`geo`]: one database on several regions' clusters ([`Geo`]);
//! - [`proxy`]: geogate in-process ([`Proxy`]) or as the built binary
//!   ([`Binary`]), and reading its metrics listener ([`http_get`], [`scrape`]);
//! - [`wire`]: a client speaking the wire protocol by hand ([`Raw`]);
//! - [`cases`]: the decision table, read from `tests/fixtures/decision_cases.toml`;
//! - here: [`free_port`] and [`sqlstate`].
#![allow(dead_code, unused_imports)]

pub mod cases;
pub mod cluster;
pub mod geo;
pub mod proxy;
pub mod wire;

use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

pub use cluster::{Cluster, PASSWORD, pg_bindir};
pub use geo::Geo;
pub use proxy::{Binary, Proxy, http_get, scrape};
pub use wire::Raw;

/// A free TCP port on 127.0.0.1 (bound then released; ports are also kept
/// apart per process so parallel tests do not collide).
pub fn free_port() -> u16 {
    static TAKEN: OnceLock<Mutex<Vec<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(Default::default);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut t = taken.lock().unwrap_or_else(|e| e.into_inner());
        if !t.contains(&port) {
            t.push(port);
            return port;
        }
    }
}

/// The SQLSTATE of a client error, or `not a db error: …` when the server
/// sent none (so an assertion on a code fails naming what happened).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a db error: {e}"))
}
