//! The per-client session: startup and authentication, then the relay loop
//! between the client and its upstream connection(s).
//!
//! Layout: [`startup`] (SSL/cancel/startup/auth), [`frontend`] (client
//! messages: simple and extended protocol, held batches, switching
//! upstreams), [`route`] (applying each statement's decision: placement,
//! failover, rewrites, pinned transactions), `begin` (deferred BEGIN),
//! `verify` (verify on empty), [`relay`] (the I/O loop and the backend
//! byte stream), [`state`] (transaction status, prepared statements,
//! settings), [`cancel`] (cancel keys).

mod begin;
pub mod cancel;
mod frontend;
mod relay;
pub mod route;
mod startup;
pub mod state;
mod verify;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::reload::{Live, LiveHandle};
use crate::upstream::{Gateway, StartupParams, Upstream, UpstreamError};
use crate::wire::stream::PgStream;
use crate::wire::{BackendScanner, ClientError};
use cancel::{CancelGuard, CancelRegistry};
use state::{PreparedStatement, SessionState};

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
    /// What a reload can change (config, router, users, client TLS): read
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
    pub health: Arc<crate::route::Health>,
    /// Server phase.
    pub phase: watch::Receiver<Phase>,
}

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
    session.peer = peer;
    if let Some(peer) = peer {
        crate::logging::connection_opened(peer, &session.client_info());
    }
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
) -> Result<Option<Session>, SessionError> {
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
    let region = shared.local_region.clone();
    let gateway = &shared.gateways[&region];
    let upstream = Upstream::connect(gateway, &params)
        .await
        .map_err(|e| upstream_error(&region, e))?;
    let cancel = shared.cancels.register();
    cancel.set_target(upstream.cancel.clone());

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

    let mut upstreams = HashMap::new();
    let mut upstream = upstream;
    // Idle sessions keep no buffer memory: start with empty buffers unless
    // bytes are already waiting.
    let uin = keep_if_nonempty(std::mem::take(&mut upstream.leftover));
    let buf = keep_if_nonempty(buf);
    upstreams.insert(region.clone(), upstream);
    shared.metrics.add_upstream_connections(&region, 1);
    Ok(Some(Session {
        shared: shared.clone(),
        settings: live.router.settings_for(&params.user),
        live,
        startup: params,
        cancel,
        state: SessionState::default(),
        upstreams,
        active: region,
        cin: buf,
        uin,
        carry: BytesMut::new(),
        to_up: BytesMut::new(),
        to_client: BytesMut::new(),
        scanner: BackendScanner::new(),
        scan_events: Default::default(),
        z_seen: 0,
        z_expect: 0,
        unsynced: false,
        skip_until_sync: false,
        injections: VecDeque::new(),
        unnamed: None,
        held: BytesMut::new(),
        refused_forwarded: false,
        draining: false,
        pending_begin: None,
        hidden: VecDeque::new(),
        shadows: HashMap::new(),
        reload_tenants: false,
        timings: VecDeque::new(),
        held_describes: Vec::new(),
        held_parses: Vec::new(),
        cross_region_counted: false,
        statements: 0,
        peer: None,
        verify: None,
        verify_replay: false,
        begin_batch: None,
        describing: VecDeque::new(),
    }))
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

/// A session after startup.
pub struct Session {
    shared: Arc<Shared>,
    /// The live config this session's `settings` were computed from;
    /// replaced by the next statement after a reload.
    live: Arc<Live>,
    startup: StartupParams,
    cancel: CancelGuard,
    state: SessionState,
    /// Open upstream connections by region (opened lazily; the local one first).
    upstreams: HashMap<Arc<str>, Upstream>,
    /// The region whose connection serves the statements in flight.
    active: Arc<str>,
    /// Client bytes not yet processed (at most one partial message).
    cin: BytesMut,
    /// Backend bytes just read.
    uin: BytesMut,
    /// Backend bytes held back until their frame is complete (only while
    /// an injected error must go before an upcoming ReadyForQuery).
    carry: BytesMut,
    /// Bytes for the active upstream.
    to_up: BytesMut,
    /// Bytes for the client.
    to_client: BytesMut,
    /// Follows the active upstream's byte stream.
    scanner: BackendScanner,
    /// What the scanner found in the latest chunk (kept for its allocation).
    scan_events: crate::wire::ScanEvents,
    /// ReadyForQuery messages received from the active upstream.
    z_seen: u64,
    /// ReadyForQuery messages the requests sent so far will produce.
    z_expect: u64,
    /// Extended-protocol messages were forwarded since the last Sync.
    unsynced: bool,
    /// An extended-protocol message was refused: drop messages until Sync.
    skip_until_sync: bool,
    /// Messages geogate itself answers, ordered among the backend's.
    injections: VecDeque<Injection>,
    /// The latest unnamed Parse (what a Bind to "" binds).
    unnamed: Option<PreparedStatement>,
    /// Messages held until the batch's first Bind is routed.
    held: BytesMut,
    /// The refused batch had messages forwarded (its Sync must be too).
    refused_forwarded: bool,
    /// SIGTERM seen: close at the next idle point.
    draining: bool,
    /// Policy settings for this client's user.
    settings: crate::policy::Settings,
    /// A BEGIN geogate answered and has not sent yet (see `route.rs`).
    pending_begin: Option<BytesMut>,
    /// Requests (by ReadyForQuery count) whose answers geogate drops: a
    /// deferred BEGIN, a shadow statement's Parse.
    hidden: VecDeque<u64>,
    /// Shadow (rewritten) statements prepared, by upstream region.
    shadows: HashMap<Arc<str>, std::collections::HashSet<String>>,
    /// A statement moved a tenant: reload the directory once committed.
    reload_tenants: bool,
    /// A rewritten request whose answer is held until known non-empty.
    verify: Option<verify::Verify>,
    /// The next Bind is a verify-on-empty replay: it is not verified again.
    verify_replay: bool,
    /// A Bind of BEGIN was deferred: geogate answers its batch.
    begin_batch: Option<begin::BeginBatch>,
    /// Statements forwarded (for the connection-closed log line).
    statements: u64,
    /// The client's address (for connection log lines).
    peer: Option<std::net::SocketAddr>,
    /// This transaction was already counted as cross-region.
    cross_region_counted: bool,
    /// Named statements whose Parse is still held.
    held_parses: Vec<Arc<str>>,
    /// Statements named by Describe messages still held.
    held_describes: Vec<Arc<str>>,
    /// Statements described upstream, with the ReadyForQuery count of their
    /// batch: their ParameterDescription tells the parameter types, which
    /// binary Bind values are decoded by.
    describing: VecDeque<(u64, Arc<str>)>,
    /// Requests in flight to time: ReadyForQuery count, start, decision, region.
    timings: VecDeque<(
        u64,
        std::time::Instant,
        crate::metrics::DecisionLabel,
        Arc<str>,
    )>,
}

/// What geogate itself writes to the client among the gateway's answers.
#[derive(Debug)]
pub(super) enum Payload {
    /// An ErrorResponse.
    Error(ClientError),
    /// A NoticeResponse (warn mode).
    Notice(ClientError),
    /// Ready-made backend messages (e.g. CommandComplete of a deferred BEGIN).
    Raw(BytesMut),
}

/// A response geogate produces itself, placed relative to a ReadyForQuery
/// of the backend so the client sees responses in request order.
#[derive(Debug)]
struct Injection {
    /// Which ReadyForQuery (by count) it is placed against.
    at_z: u64,
    /// Insert just before that ReadyForQuery (the error belongs to the
    /// request it closes) rather than after it.
    before: bool,
    /// What to write (none: only a ReadyForQuery).
    message: Option<Payload>,
    /// Follow it with our own ReadyForQuery (current status).
    ready: bool,
}
