//! Opening a gateway connection: TCP, SSL negotiation, StartupMessage,
//! authentication (trust, cleartext, md5, SCRAM-SHA-256) up to the first
//! ReadyForQuery.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::startup::{
    Authentication, Password, SASLInitialResponse, SASLResponse, SecretKey, Startup,
};
use pgwire::messages::{DecodeContext, Message, PgWireBackendMessage, ProtocolVersion};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Attempt;
use super::{CancelTarget, Gateway, StartupParams, Upstream, tls};
use crate::config::SslMode;
use crate::refusal::sqlstate;
use crate::wire::stream::PgStream;

/// Default limit on connect + TLS + auth when the URL sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Startup-phase backend messages are small; anything bigger is a broken server.
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

/// Why a gateway connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP or TLS failure.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Timed out connecting or authenticating.
    #[error("timed out connecting")]
    Timeout,
    /// The gateway refused TLS while `sslmode` requires it.
    #[error("server does not support SSL, but sslmode requires it")]
    TlsRefused,
    /// The gateway sent an ErrorResponse; relay it to the client as is.
    #[error("gateway error {code}")]
    Server {
        /// SQLSTATE.
        code: String,
        /// The raw ErrorResponse frame.
        frame: Bytes,
    },
    /// The gateway asked for something geogate cannot do or broke the protocol.
    #[error("{0}")]
    Protocol(String),
}

impl UpstreamError {
    /// Whether this failure to open a connection to `gateway` says the region
    /// is unusable for every session (a health signal, see
    /// `Health::connect_failed`), rather than refusing this one client.
    ///
    /// Signals: no TCP or TLS, a timeout, a broken handshake, `57P03` (the
    /// server is starting up, shutting down or in recovery), and a refused
    /// login (`28xxx`) or missing database (`3D000`) when the URL pins the
    /// user or database, so that every session would get the same answer.
    /// Not signals: a client's own user or database refused (URL pins
    /// neither), `53300` (the gateway is full: this session waits its turn,
    /// the probe sees it if it lasts), any other ErrorResponse.
    pub fn is_health_signal(&self, gateway: &super::Gateway) -> bool {
        match self {
            UpstreamError::Io(_)
            | UpstreamError::Timeout
            | UpstreamError::TlsRefused
            | UpstreamError::Protocol(_) => true,
            UpstreamError::Server { code, .. } => {
                code == sqlstate::CANNOT_CONNECT_NOW
                    || (code.starts_with(sqlstate::CLASS_INVALID_AUTHORIZATION)
                        && gateway.url.user.is_some())
                    || (code == sqlstate::INVALID_CATALOG_NAME && gateway.url.database.is_some())
            }
        }
    }
}

/// Opens a connection as [`super::Upstream::connect`] does, sorting a
/// failure for `Health::open_with_failover`: a health signal is
/// [`Attempt::Unreachable`] (the region is marked down, the next candidate
/// tried), anything else [`Attempt::Refused`] (this client's own problem).
pub async fn connect_attempt(
    gw: &Gateway,
    client: &StartupParams,
) -> Result<Upstream, Attempt<UpstreamError>> {
    connect(gw, client).await.map_err(|e| {
        if e.is_health_signal(gw) {
            Attempt::Unreachable(e)
        } else {
            Attempt::Refused(e)
        }
    })
}

pub(super) async fn connect(
    gw: &Gateway,
    client: &StartupParams,
) -> Result<Upstream, UpstreamError> {
    let limit = gw.url.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    tokio::time::timeout(limit, connect_inner(gw, client))
        .await
        .map_err(|_| UpstreamError::Timeout)?
}

async fn connect_inner(gw: &Gateway, client: &StartupParams) -> Result<Upstream, UpstreamError> {
    let addr = gw.url.address();
    let tcp = TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let mut stream = negotiate_tls(gw, tcp).await?;

    let url = &gw.url;
    let user = url.user.clone().unwrap_or_else(|| client.user.clone());
    let mut startup = Startup::new();
    // Client parameters first, then what the URL pins (user, database);
    // options from the URL come before the client's, so the client's win.
    for (k, v) in &client.params {
        startup.parameters.insert(k.clone(), v.clone());
    }
    if let Some(app) = &url.application_name {
        startup
            .parameters
            .entry("application_name".into())
            .or_insert_with(|| app.clone());
    }
    if let Some(opts) = &url.options {
        let merged = match client.params.iter().find(|(k, _)| k == "options") {
            Some((_, c)) => format!("{opts} {c}"),
            None => opts.clone(),
        };
        startup.parameters.insert("options".into(), merged);
    }
    startup.parameters.insert("user".into(), user.clone());
    startup.parameters.insert(
        "database".into(),
        url.database
            .clone()
            .unwrap_or_else(|| client.database.clone()),
    );
    let mut out = BytesMut::new();
    encode(&startup, &mut out)?;
    stream.write_all(&out).await?;
    stream.flush().await?;

    let password = url.password.clone().unwrap_or_default();
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let mut buf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramSha256> = None;
    let mut parameters = Vec::new();
    let mut key: Option<(i32, Bytes)> = None;
    loop {
        let msg = next_message(&mut stream, &mut buf, &ctx).await?;
        let mut reply = BytesMut::new();
        match msg {
            (PgWireBackendMessage::Authentication(auth), _) => match auth {
                Authentication::Ok => {}
                Authentication::CleartextPassword => {
                    encode(&Password::new(password.clone()), &mut reply)?;
                }
                Authentication::MD5Password(salt) => {
                    let salt: [u8; 4] = salt
                        .try_into()
                        .map_err(|_| UpstreamError::Protocol("bad md5 salt".into()))?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password.as_bytes(),
                        salt,
                    );
                    encode(&Password::new(hash), &mut reply)?;
                }
                Authentication::SASL(mechs) => {
                    if !mechs.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(UpstreamError::Protocol(format!(
                            "unsupported SASL mechanisms {mechs:?}"
                        )));
                    }
                    // No channel binding: gs2 flag "n" is accepted even when
                    // the server offers SCRAM-SHA-256-PLUS.
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    let first = Bytes::copy_from_slice(s.message());
                    encode(
                        &SASLInitialResponse::new("SCRAM-SHA-256".into(), Some(first)),
                        &mut reply,
                    )?;
                    scram = Some(s);
                }
                Authentication::SASLContinue(data) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| UpstreamError::Protocol("unexpected SASLContinue".into()))?;
                    s.update(&data)?;
                    encode(
                        &SASLResponse::new(Bytes::copy_from_slice(s.message())),
                        &mut reply,
                    )?;
                }
                Authentication::SASLFinal(data) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| UpstreamError::Protocol("unexpected SASLFinal".into()))?;
                    s.finish(&data)?;
                }
                other => {
                    return Err(UpstreamError::Protocol(format!(
                        "unsupported authentication request {other:?}"
                    )));
                }
            },
            (PgWireBackendMessage::ParameterStatus(p), _) => parameters.push((p.name, p.value)),
            (PgWireBackendMessage::BackendKeyData(k), _) => {
                let secret = match k.secret_key {
                    SecretKey::I32(s) => Bytes::copy_from_slice(&s.to_be_bytes()),
                    SecretKey::Bytes(b) => b,
                };
                key = Some((k.pid, secret));
            }
            (PgWireBackendMessage::ReadyForQuery(ReadyForQuery { .. }), _) => break,
            (PgWireBackendMessage::ErrorResponse(e), frame) => {
                let code = e
                    .fields
                    .iter()
                    .find(|(t, _)| *t == b'C')
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                return Err(UpstreamError::Server { code, frame });
            }
            // Notices and protocol-version negotiation need no answer.
            _ => {}
        }
        if !reply.is_empty() {
            stream.write_all(&reply).await?;
            stream.flush().await?;
        }
    }
    let (pid, secret) = key.unwrap_or((0, Bytes::from_static(&[0; 4])));
    let (reader, writer) = stream.split()?;
    Ok(Upstream {
        region: gw.region.clone(),
        reader,
        writer,
        parameters,
        cancel: CancelTarget { addr, pid, secret },
        leftover: buf,
    })
}

async fn negotiate_tls(gw: &Gateway, mut tcp: TcpStream) -> Result<PgStream, UpstreamError> {
    let Some(config) = &gw.tls else {
        return Ok(PgStream::Plain(tcp));
    };
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let name = tls::server_name(&gw.url.host)
                .ok_or_else(|| UpstreamError::Protocol("invalid host name for TLS".into()))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await?;
            Ok(PgStream::Tls(Box::new(tls.into())))
        }
        b'N' if gw.url.sslmode == SslMode::Prefer => Ok(PgStream::Plain(tcp)),
        b'N' => Err(UpstreamError::TlsRefused),
        _ => Err(UpstreamError::Protocol("bad answer to SSLRequest".into())),
    }
}

fn encode<M: Message>(m: &M, buf: &mut BytesMut) -> Result<(), UpstreamError> {
    m.encode(buf)
        .map_err(|e| UpstreamError::Protocol(e.to_string()))
}

/// Reads one backend message; also returns its raw frame (for relaying errors).
async fn next_message(
    stream: &mut PgStream,
    buf: &mut BytesMut,
    ctx: &DecodeContext,
) -> Result<(PgWireBackendMessage, Bytes), UpstreamError> {
    loop {
        if let Some(h) = crate::wire::peek_frame(buf, MAX_STARTUP_MESSAGE)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            if buf.len() >= h.total_len {
                let raw = Bytes::copy_from_slice(&buf[..h.total_len]);
                let msg = PgWireBackendMessage::decode(buf, ctx)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?
                    .ok_or_else(|| UpstreamError::Protocol("truncated message".into()))?;
                return Ok((msg, raw));
            }
        }
        if stream.read_into(buf).await? == 0 {
            return Err(UpstreamError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Sends a CancelRequest for `target` on a new connection, as libpq does.
pub async fn send_cancel(target: &super::CancelTarget) -> io::Result<()> {
    let mut tcp = tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, TcpStream::connect(&target.addr))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let mut msg = Vec::with_capacity(16);
    msg.extend_from_slice(&((12 + target.secret.len()) as i32).to_be_bytes());
    msg.extend_from_slice(&80877102i32.to_be_bytes());
    msg.extend_from_slice(&target.pid.to_be_bytes());
    msg.extend_from_slice(&target.secret);
    tcp.write_all(&msg).await?;
    // The server closes the connection once it has read the request.
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut sink)).await;
    Ok(())
}
