//! The per-client session: startup and authentication, then the relay
//! between the client and its upstream connection(s).
//!
//! Layout, in the order a message travels: [`startup`] (SSL/cancel/startup/
//! auth), [`message`] (client messages as a typed enum), [`core`] (the
//! sans-IO state machine: transaction, batch, placement, rewrites),
//! [`answers`] (the one queue of expected answers, and the walk of the
//! backend stream against it), [`client`] (what belongs to the client:
//! prepared statements, settings, transaction), [`relay`] (the I/O shell:
//! sockets, decisions, upstream connections), [`cancel`] (cancel keys).

pub mod answers;
pub mod client;
pub mod core;
pub mod message;
mod relay;
mod startup;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use crate::shared::{Phase, Shared};
use crate::upstream::UpstreamError;
use crate::wire::ClientError;
use crate::wire::stream::PgStream;

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// An error to report to the client before closing.
    #[error("{0}")]
    Client(ClientError),
    /// A gateway's ErrorResponse frame to relay before closing.
    #[error("gateway refused the connection")]
    Relay(bytes::Bytes),
    /// The client went away.
    #[error("client disconnected")]
    ClientGone,
}

/// Serves one client connection from its first byte to its end.
pub async fn serve_client(tcp: TcpStream, shared: Arc<Shared>) {
    let _connected = shared.metrics.client_connected();
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    // `None` only while a TLS handshake owns the socket: a handshake that
    // fails or times out leaves nothing to write an error to.
    let mut stream = Some(PgStream::Plain(tcp));
    let timeout = shared.config.proxy.startup_timeout;
    let opened = tokio::time::timeout(timeout, open(&mut stream, &shared)).await;
    let Some(stream) = stream else { return };
    let session = match opened {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) | Ok(Err(SessionError::ClientGone)) => return,
        Ok(Err(SessionError::Client(e))) => return reject(stream, &e).await,
        Ok(Err(SessionError::Relay(frame))) => return send_and_close(stream, &frame).await,
        Ok(Err(SessionError::Io(e))) => {
            tracing::debug!(error = %e, "client i/o error during startup");
            return;
        }
        Err(_) => {
            let e = ClientError::protocol_violation("geogate: startup timed out");
            return reject(stream, &e).await;
        }
    };
    let Ok((client_r, client_w)) = stream.split() else {
        return;
    };
    let mut session = session;
    session.set_peer(peer);
    session.finish(client_r, client_w).await;
}

/// Sends a FATAL error to a client and closes (also used for `53300`).
pub async fn reject(stream: PgStream, e: &ClientError) {
    let mut out = BytesMut::new();
    e.encode(&mut out);
    send_and_close(stream, &out).await;
}

async fn send_and_close(mut stream: PgStream, bytes: &[u8]) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Reads a startup packet on a connection refused with `err` (connection
/// limit), so that the client reads the error instead of a reset (over TLS
/// when it asks for TLS, as PostgreSQL does).
pub async fn refuse_after_startup(tcp: TcpStream, shared: Arc<Shared>, err: ClientError) {
    let mut stream = Some(PgStream::Plain(tcp));
    let mut buf = BytesMut::new();
    let timeout = shared.config.proxy.startup_timeout;
    let live = shared.live.load();
    let read = tokio::time::timeout(
        timeout,
        startup::negotiate(&mut stream, &mut buf, &live, &shared.cancels),
    )
    .await;
    if let (Ok(Ok(startup::Opening::Session(..))), Some(stream)) = (read, stream) {
        reject(stream, &err).await;
    }
}

/// Startup, authentication and the local upstream connection.
async fn open(
    slot: &mut Option<PgStream>,
    shared: &Arc<Shared>,
) -> Result<Option<relay::Session>, SessionError> {
    // The config in force when the client connected serves its startup.
    let live = shared.live.load();
    let mut buf = BytesMut::new();
    let (params, ctx) = match startup::negotiate(slot, &mut buf, &live, &shared.cancels).await? {
        startup::Opening::Session(p, ctx) => (p, ctx),
        startup::Opening::Done => return Ok(None),
    };
    let stream = slot.as_mut().ok_or(SessionError::ClientGone)?;
    startup::authenticate(stream, &mut buf, &ctx, &live.users, &params.user).await?;
    if *shared.phase.borrow() != Phase::Running {
        return Err(SessionError::Client(ClientError::shutting_down()));
    }
    // The first upstream opens through placement and failover, as every
    // statement's does: a sidecar whose local gateway is down serves new
    // sessions through its fallback.
    let (region, upstream) = relay::open_first(shared, &params).await?;
    let cancel = shared.cancels.register();
    cancel.set_target(&upstream.cancel);

    let mut out = BytesMut::with_capacity(512);
    let msgs = std::iter::once(PgWireBackendMessage::Authentication(Authentication::Ok))
        .chain(upstream.parameters.iter().map(|(k, v)| {
            PgWireBackendMessage::ParameterStatus(ParameterStatus::new(k.clone(), v.clone()))
        }))
        .chain([
            PgWireBackendMessage::BackendKeyData(BackendKeyData::new(
                cancel.pid,
                SecretKey::I32(cancel.secret),
            )),
            PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                pgwire::messages::response::TransactionStatus::Idle,
            )),
        ]);
    for m in msgs {
        m.encode(&mut out)
            .map_err(|e| SessionError::Client(ClientError::protocol_violation(e.to_string())))?;
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(Some(relay::Session::new(
        shared.clone(),
        live,
        params,
        cancel,
        region,
        upstream,
        keep_if_nonempty(buf),
    )))
}

fn keep_if_nonempty(b: BytesMut) -> BytesMut {
    if b.is_empty() { BytesMut::new() } else { b }
}

/// Maps an upstream connect failure to what the client sees.
fn upstream_error(region: &str, e: UpstreamError) -> SessionError {
    match e {
        // The gateway's own error (e.g. 3D000 unknown database): relay it
        // byte for byte, every field intact.
        UpstreamError::Server { frame, .. } => SessionError::Relay(frame),
        other => SessionError::Client(ClientError::no_gateway(region, other)),
    }
}
