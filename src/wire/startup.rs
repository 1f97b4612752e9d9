//! The first packet(s) of a client connection, decoded with `pgwire`'s codec:
//! SSLRequest, GSSENCRequest, CancelRequest or StartupMessage. Pure: fed a
//! buffer, never panics, `Ok(None)` means "read more".

use std::collections::BTreeMap;

use bytes::BytesMut;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{
    DecodeContext, PgWireFrontendMessage, ProtocolVersion, SslNegotiationMetaMessage,
};

/// What a client opened the connection with.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupRequest {
    /// SSLRequest: answer one byte, then the real startup follows.
    Ssl,
    /// GSSENCRequest: refuse with `N`, then the real startup follows.
    Gss,
    /// CancelRequest for the session holding this key.
    Cancel {
        /// Process id geogate issued.
        pid: i32,
        /// Secret geogate issued.
        secret: i32,
    },
    /// StartupMessage with its parameters (user, database, options, …).
    Startup {
        /// Major protocol version (3).
        major: u16,
        /// Minor protocol version.
        minor: u16,
        /// Parameters in the order of their names.
        params: BTreeMap<String, String>,
    },
}

/// The startup decoder's state between packets.
pub struct StartupDecoder {
    ctx: DecodeContext,
}

impl Default for StartupDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// A startup packet that cannot be understood.
#[derive(Debug, thiserror::Error)]
#[error("invalid startup packet: {0}")]
pub struct StartupError(pub String);

impl StartupDecoder {
    /// Expects SSLRequest, GSSENCRequest, CancelRequest or StartupMessage.
    pub fn new() -> Self {
        Self {
            ctx: DecodeContext::new(ProtocolVersion::PROTOCOL3_0),
        }
    }

    /// Decodes the next packet from `buf`, consuming it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<StartupRequest>, StartupError> {
        loop {
            let msg = PgWireFrontendMessage::decode(buf, &self.ctx)
                .map_err(|e| StartupError(e.to_string()))?;
            let Some(msg) = msg else { return Ok(None) };
            return Ok(Some(match msg {
                PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::None) => {
                    // Not an SSL/GSS request: decode the same bytes as
                    // startup or cancel (pgwire consumed nothing).
                    self.ctx.awaiting_frontend_ssl = false;
                    continue;
                }
                PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(
                    _,
                )) => StartupRequest::Ssl,
                PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresGss(
                    _,
                )) => StartupRequest::Gss,
                PgWireFrontendMessage::CancelRequest(c) => {
                    let secret = match c.secret_key {
                        SecretKey::I32(s) => s,
                        // geogate issues 4-byte keys; anything else matches nothing.
                        SecretKey::Bytes(b) if b.len() == 4 => {
                            i32::from_be_bytes([b[0], b[1], b[2], b[3]])
                        }
                        SecretKey::Bytes(_) => {
                            return Err(StartupError("cancel key length".into()));
                        }
                    };
                    StartupRequest::Cancel { pid: c.pid, secret }
                }
                PgWireFrontendMessage::Startup(s) => {
                    self.ctx.awaiting_frontend_startup = false;
                    StartupRequest::Startup {
                        major: s.protocol_number_major,
                        minor: s.protocol_number_minor,
                        params: s.parameters,
                    }
                }
                _ => return Err(StartupError("unexpected message".into())),
            }));
        }
    }

    /// The context for decoding the messages that follow startup (passwords).
    pub fn message_context(&self) -> DecodeContext {
        let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        ctx.awaiting_frontend_ssl = false;
        ctx.awaiting_frontend_startup = false;
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&((body.len() + 8) as i32).to_be_bytes());
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn decodes_ssl_request_then_startup_with_parameters() {
        let mut d = StartupDecoder::new();
        let mut buf = packet(80877103, b"");
        assert_eq!(d.decode(&mut buf).unwrap(), Some(StartupRequest::Ssl));
        assert!(buf.is_empty());
        let mut buf = packet(196608, b"user\0app\0database\0db\0application_name\0x\0\0");
        let Some(StartupRequest::Startup { major, params, .. }) = d.decode(&mut buf).unwrap()
        else {
            panic!("not a startup")
        };
        assert_eq!(major, 3);
        assert_eq!(params["user"], "app");
        assert_eq!(params["database"], "db");
    }

    #[test]
    fn decodes_gss_and_cancel_requests() {
        let mut d = StartupDecoder::new();
        assert_eq!(
            d.decode(&mut packet(80877104, b"")).unwrap(),
            Some(StartupRequest::Gss)
        );
        let mut body = 7i32.to_be_bytes().to_vec();
        body.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            d.decode(&mut packet(80877102, &body)).unwrap(),
            Some(StartupRequest::Cancel { pid: 7, secret: -9 })
        );
    }

    #[test]
    fn partial_packet_asks_for_more_and_garbage_is_an_error() {
        let mut d = StartupDecoder::new();
        let full = packet(196608, b"user\0app\0\0");
        let mut part = BytesMut::from(&full[..10]);
        assert_eq!(d.decode(&mut part).unwrap(), None);
        let mut junk = BytesMut::from(&b"\x7f\xff\xff\xff\0\0\0\0\0\0"[..]);
        assert!(StartupDecoder::new().decode(&mut junk).is_err());
    }
}
