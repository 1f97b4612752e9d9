//! A client's first moments: SSL/GSS negotiation, StartupMessage or
//! CancelRequest, then authentication against `[[users]]`.

use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{DecodeContext, PgWireBackendMessage, PgWireFrontendMessage};
use ring::rand::SecureRandom;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsStream;

use super::SessionError;
use crate::cancel::CancelRegistry;
use crate::config::{AuthMethod, TlsMode};
use crate::refusal::sqlstate;
use crate::shared::Live;
use crate::upstream::StartupParams;
use crate::wire::auth::{UserDirectory, md5_expected};
use crate::wire::scram::{MECHANISM, ScramError, ScramServer};
use crate::wire::startup::{StartupDecoder, StartupRequest};
use crate::wire::stream::PgStream;
use crate::wire::validate::sasl_initial_well_formed;
use crate::wire::{ClientError, peek_frame};

/// Startup and password messages are small; PostgreSQL caps them at 10,000 bytes.
const MAX_STARTUP_MESSAGE: usize = 10_000;

/// How a connection opened.
pub enum Opening {
    /// A client that wants a session.
    Session(StartupParams, DecodeContext),
    /// A CancelRequest (already handled) or a client that left.
    Done,
}

/// One round of [`read_startup`].
enum Step {
    Open(Opening),
    /// SSLRequest answered `S`: the TLS handshake comes next.
    StartTls,
}

/// The whole opening of a connection: SSL negotiation (a TLS handshake when
/// client TLS is configured), then StartupMessage or CancelRequest.
/// `proxy.tls_mode = "require"` refuses a startup over plain text with
/// `28000`; cancel requests are served either way, as PostgreSQL does.
///
/// `slot` is `None` afterwards only when a TLS handshake failed.
pub async fn negotiate(
    slot: &mut Option<PgStream>,
    buf: &mut BytesMut,
    live: &Live,
    cancels: &CancelRegistry,
) -> Result<Opening, SessionError> {
    let mut encrypted = false;
    loop {
        let stream = slot.as_mut().ok_or(SessionError::ClientGone)?;
        let offer = live.tls.is_some() && !encrypted;
        match read_startup(stream, buf, cancels, offer, encrypted).await? {
            Step::StartTls => {
                let (Some(acceptor), Some(PgStream::Plain(tcp))) = (live.tls.clone(), slot.take())
                else {
                    return Err(SessionError::ClientGone);
                };
                let tls = acceptor.accept(tcp).await.map_err(|e| {
                    tracing::debug!(error = %e, "client TLS handshake failed");
                    SessionError::ClientGone
                })?;
                *slot = Some(PgStream::Tls(Box::new(TlsStream::Server(tls))));
                encrypted = true;
            }
            Step::Open(Opening::Session(..))
                if !encrypted
                    && live.tls.is_some()
                    && live.config.proxy.tls_mode == TlsMode::Require =>
            {
                return Err(SessionError::Client(ClientError::fatal(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "geogate requires TLS: connect with sslmode=require or verify-full",
                )));
            }
            Step::Open(opening) => return Ok(opening),
        }
    }
}

/// Reads SSLRequest/GSSENCRequest/CancelRequest/StartupMessage. `offer_tls`:
/// answer an SSLRequest with `S`; `encrypted`: TLS is already on, so a
/// second SSL or GSS request is a protocol violation.
async fn read_startup(
    stream: &mut PgStream,
    buf: &mut BytesMut,
    cancels: &CancelRegistry,
    offer_tls: bool,
    encrypted: bool,
) -> Result<Step, SessionError> {
    let mut decoder = StartupDecoder::new();
    loop {
        let req = decoder
            .decode(buf)
            .map_err(|e| SessionError::Client(ClientError::protocol_violation(e.to_string())))?;
        let Some(req) = req else {
            if stream.read_into(buf).await? == 0 {
                return Ok(Step::Open(Opening::Done));
            }
            continue;
        };
        match req {
            StartupRequest::Ssl | StartupRequest::Gss if encrypted => {
                return Err(SessionError::Client(ClientError::protocol_violation(
                    "geogate: SSL or GSS negotiation inside an encrypted connection",
                )));
            }
            StartupRequest::Ssl if offer_tls => {
                stream.write_all(b"S").await?;
                stream.flush().await?;
                // Bytes sent before the handshake would be read as if they
                // came over TLS (PostgreSQL's CVE-2021-23214): refuse them.
                if !buf.is_empty() {
                    return Err(SessionError::Client(ClientError::protocol_violation(
                        "geogate: unencrypted data after SSL request",
                    )));
                }
                return Ok(Step::StartTls);
            }
            // Client TLS is not configured: refuse and carry on in plain text.
            StartupRequest::Ssl | StartupRequest::Gss => {
                stream.write_all(b"N").await?;
                stream.flush().await?;
            }
            StartupRequest::Cancel { pid, secret } => {
                cancels.cancel(pid, secret).await;
                return Ok(Step::Open(Opening::Done));
            }
            StartupRequest::Startup {
                major,
                minor,
                params,
            } => {
                // Major 3 only; a newer minor or `_pq_.` options are
                // answered with NegotiateProtocolVersion, as PostgreSQL does.
                crate::wire::startup::check_version(major, minor).map_err(SessionError::Client)?;
                if let Some(m) = crate::wire::startup::negotiation(minor, &params) {
                    stream.write_all(&m).await?;
                    stream.flush().await?;
                }
                let Some(user) = params.get("user").cloned().filter(|u| !u.is_empty()) else {
                    return Err(SessionError::Client(ClientError::fatal(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        "no PostgreSQL user name specified in startup packet",
                    )));
                };
                if params
                    .get("replication")
                    .is_some_and(|r| r != "false" && r != "0")
                {
                    return Err(SessionError::Client(ClientError::not_supported(
                        "geogate does not proxy replication connections",
                    )));
                }
                let database = params
                    .get("database")
                    .cloned()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| user.clone());
                let params = params
                    .into_iter()
                    // `_pq_.*` are protocol options for geogate itself, not the gateway.
                    .filter(|(k, _)| k != "user" && k != "database" && !k.starts_with("_pq_."))
                    .collect();
                return Ok(Step::Open(Opening::Session(
                    StartupParams {
                        user,
                        database,
                        params,
                    },
                    decoder.message_context(),
                )));
            }
        }
    }
}

/// Authenticates `user` per its configured method; unknown users go through
/// a full fake exchange and fail exactly like a wrong password.
pub async fn authenticate(
    stream: &mut PgStream,
    buf: &mut BytesMut,
    ctx: &DecodeContext,
    users: &UserDirectory,
    user: &str,
) -> Result<(), SessionError> {
    let creds = users.get(user);
    let method = creds.map(|c| c.method).unwrap_or(AuthMethod::ScramSha256);
    let failed = || SessionError::Client(ClientError::auth_failed(user));
    match method {
        AuthMethod::ScramSha256 => {
            send_auth(stream, Authentication::SASL(vec![MECHANISM.into()])).await?;
            let initial = match read_password(stream, buf, ctx).await? {
                PasswordMessageFamily::Raw(body) if !sasl_initial_well_formed(&body) => {
                    return Err(SessionError::Client(ClientError::protocol_violation(
                        "malformed SASLInitialResponse",
                    )));
                }
                p => p.into_sasl_initial_response().map_err(protocol)?,
            };
            if initial.auth_method != MECHANISM {
                return Err(SessionError::Client(ClientError::protocol_violation(
                    "unsupported SASL mechanism",
                )));
            }
            let mut server = match creds.and_then(|c| c.verifier.clone()) {
                Some(v) => ScramServer::new(v),
                None => ScramServer::fake(user, &users.fake_key),
            };
            let first = server
                .server_first(initial.data.as_deref().unwrap_or_default())
                .map_err(scram_error)?;
            send_auth(stream, Authentication::SASLContinue(Bytes::from(first))).await?;
            let response = read_password(stream, buf, ctx)
                .await?
                .into_sasl_response()
                .map_err(protocol)?;
            match server.server_final(&response.data) {
                Ok(fin) => send_auth(stream, Authentication::SASLFinal(Bytes::from(fin))).await,
                Err(ScramError::Failed) => Err(failed()),
                Err(e) => Err(scram_error(e)),
            }
        }
        AuthMethod::Md5 => {
            let mut salt = [0u8; 4];
            let _ = ring::rand::SystemRandom::new().fill(&mut salt);
            send_auth(stream, Authentication::MD5Password(salt.to_vec())).await?;
            let given = read_password(stream, buf, ctx)
                .await?
                .into_password()
                .map_err(protocol)?;
            let expected = creds
                .and_then(|c| c.cleartext.as_deref())
                .map(|p| md5_expected(user, p, salt));
            match expected {
                Some(e) if ct_eq(e.as_bytes(), given.password.as_bytes()) => Ok(()),
                _ => Err(failed()),
            }
        }
        AuthMethod::Password => {
            send_auth(stream, Authentication::CleartextPassword).await?;
            let given = read_password(stream, buf, ctx)
                .await?
                .into_password()
                .map_err(protocol)?;
            let ok = match creds {
                Some(c) => match (&c.cleartext, &c.verifier) {
                    (Some(p), _) => ct_eq(p.as_bytes(), given.password.as_bytes()),
                    (None, Some(v)) => v.check_password(&given.password),
                    (None, None) => false,
                },
                None => false,
            };
            if ok { Ok(()) } else { Err(failed()) }
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn protocol(e: pgwire::error::PgWireError) -> SessionError {
    SessionError::Client(ClientError::protocol_violation(format!(
        "invalid authentication message: {e}"
    )))
}

fn scram_error(e: ScramError) -> SessionError {
    SessionError::Client(ClientError::protocol_violation(e.to_string()))
}

async fn send_auth(stream: &mut PgStream, auth: Authentication) -> Result<(), SessionError> {
    let mut out = BytesMut::new();
    PgWireBackendMessage::Authentication(auth)
        .encode(&mut out)
        .map_err(|e| SessionError::Client(ClientError::protocol_violation(e.to_string())))?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_password(
    stream: &mut PgStream,
    buf: &mut BytesMut,
    ctx: &DecodeContext,
) -> Result<PasswordMessageFamily, SessionError> {
    loop {
        let header = peek_frame(buf, MAX_STARTUP_MESSAGE)
            .map_err(|e| SessionError::Client(ClientError::protocol_violation(e.to_string())))?;
        if let Some(h) = header
            && buf.len() >= h.total_len
        {
            if h.tag != b'p' {
                return Err(SessionError::Client(ClientError::protocol_violation(
                    "expected a password message",
                )));
            }
            return match PgWireFrontendMessage::decode(buf, ctx) {
                Ok(Some(PgWireFrontendMessage::PasswordMessageFamily(p))) => Ok(p),
                _ => Err(SessionError::Client(ClientError::protocol_violation(
                    "invalid password message",
                ))),
            };
        }
        if stream.read_into(buf).await? == 0 {
            return Err(SessionError::ClientGone);
        }
    }
}
