//! Connections to regional gateways: connect, TLS, authentication, the
//! cancel path, and which gateway is up. Rows never pass through here
//! decoded: after startup an [`Upstream`] is a pair of byte halves the
//! session relays.
//!
//! A region's gateway may fail, and its statements then go to a fallback
//! region allowed to serve it. [`Health`] holds an up/down flag per
//! configured region, changed by health signals only: a session's new
//! connection that cannot connect or log in ([`Health::connect_failed`]),
//! an established connection lost without the server saying why
//! ([`Health::connection_lost`]), and the background prober's results
//! ([`spawn_prober`] over [`GatewayProbe`], [`Health::probe_result`]). A
//! gateway ending one session with its own error is not a signal.
//! [`Health::choose`] picks the first healthy region of a down region's
//! `fallback` list, and [`Health::open_with_failover`] opens a connection
//! that way. Recovery needs no operator.

mod connect;
mod directory;
mod health;
mod probe;
mod prober;
mod query;
pub mod tls;

use std::sync::Arc;

use bytes::BytesMut;
use rustls::ClientConfig;

use crate::config::{GatewayUrl, RegionConfig};
use crate::wire::stream::{PgReader, PgWriter};

pub use connect::{UpstreamError, connect_attempt, send_cancel};
pub use directory::GatewayDirectory;
pub use health::{
    Attempt, Choice, Health, HealthObserver, Liveness, NoGateway, OpenError, Signal, Thresholds,
};
pub use probe::{GatewayProbe, PROBE_APPLICATION_NAME, probe_gateway};
pub use prober::{BoxFuture, Probe, ProberConfig, spawn_prober};
pub use query::TextRow;

/// A region's gateway, ready to be connected to.
#[derive(Clone)]
pub struct Gateway {
    /// Region name.
    pub region: Arc<str>,
    /// Where and as whom.
    pub url: GatewayUrl,
    /// TLS settings per `sslmode`; `None` = plain TCP.
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gateway({} {})", self.region, self.url)
    }
}

impl Gateway {
    /// Prepares a region's gateway (reads `sslrootcert` once).
    pub fn new(region: &RegionConfig) -> Result<Self, tls::TlsSetupError> {
        Ok(Self {
            region: region.name.as_str().into(),
            url: region.gateway.clone(),
            tls: tls::client_config(&region.gateway)?,
        })
    }
}

/// What the client asked for at startup, to be forwarded.
#[derive(Debug, Clone, Default)]
pub struct StartupParams {
    /// The client's user name.
    pub user: String,
    /// The client's database.
    pub database: String,
    /// Every other startup parameter (application_name, options, DateStyle, …).
    pub params: Vec<(String, String)>,
}

/// Where to send a CancelRequest for the query an upstream connection runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    /// `host:port` of the gateway.
    pub addr: String,
    /// The gateway's backend pid.
    pub pid: i32,
    /// The gateway's secret key (4 bytes in protocol 3.0).
    pub secret: bytes::Bytes,
}

/// An authenticated connection to a gateway, ready for queries.
pub struct Upstream {
    /// Region it belongs to.
    pub region: Arc<str>,
    /// Backend → proxy.
    pub reader: PgReader,
    /// Proxy → backend.
    pub writer: PgWriter,
    /// ParameterStatus values the gateway sent at startup.
    pub parameters: Vec<(String, String)>,
    /// How to cancel what it runs.
    pub cancel: CancelTarget,
    /// Bytes the gateway sent after its first ReadyForQuery (normally none).
    pub leftover: BytesMut,
}

impl Upstream {
    /// Opens and authenticates a connection to `gateway` for a client.
    pub async fn connect(gateway: &Gateway, client: &StartupParams) -> Result<Self, UpstreamError> {
        connect::connect(gateway, client).await
    }

    /// Says goodbye (Terminate) and closes; PostgreSQL rolls back anything open.
    pub async fn terminate(self) {
        drop(self.reader);
        say_goodbye(self.writer).await;
    }
}

/// Sends Terminate on a gateway connection and closes it (bounded: a
/// gateway that does not read gets half a second).
pub async fn say_goodbye(mut writer: PgWriter) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        writer.write_all_flush(b"X\0\0\0\x04"),
    )
    .await;
    writer.shutdown().await;
}

impl Upstream {
    /// Runs `script` (simple Queries and/or extended messages ending in
    /// Sync) on this connection and discards the answers up to the
    /// `ready_count`-th ReadyForQuery. Used between client requests only, to
    /// bring a new connection to the session's state.
    pub async fn run_hidden(
        &mut self,
        script: &[u8],
        ready_count: usize,
    ) -> Result<(), UpstreamError> {
        self.writer.write_all_flush(script).await?;
        self.read_answers(ready_count, |_, _| Ok(())).await
    }

    /// Reads whole answer frames until the `ready_count`-th ReadyForQuery,
    /// handing every other frame to `on_frame`; the first ErrorResponse
    /// becomes the result. Bytes after that ReadyForQuery stay buffered.
    pub(crate) async fn read_answers(
        &mut self,
        ready_count: usize,
        mut on_frame: impl FnMut(u8, &[u8]) -> Result<(), UpstreamError>,
    ) -> Result<(), UpstreamError> {
        let mut left = ready_count;
        let mut buf = std::mem::take(&mut self.leftover);
        let mut error = None;
        loop {
            while let Some(h) = crate::wire::peek_frame(&buf, usize::MAX)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?
            {
                if buf.len() < h.total_len {
                    break;
                }
                let frame = buf.split_to(h.total_len);
                match h.tag {
                    b'E' if error.is_none() => {
                        error = Some(UpstreamError::Server {
                            code: query::sqlstate(&frame[5..]),
                            frame: frame.freeze(),
                        })
                    }
                    b'Z' => {
                        left = left.saturating_sub(1);
                        if left == 0 {
                            self.leftover = buf;
                            return error.map_or(Ok(()), Err);
                        }
                    }
                    tag => on_frame(tag, &frame[5..])?,
                }
            }
            if self.reader.read_into(&mut buf).await? == 0 {
                return Err(UpstreamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

#[cfg(test)]
mod health_tests;
