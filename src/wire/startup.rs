//! The first packet(s) of a client connection, decoded with `pgwire`'s codec:
//! SSLRequest, GSSENCRequest, CancelRequest or StartupMessage. Pure: fed a
//! buffer, never panics, `Ok(None)` means "read more".
//!
//! Protocol versions are negotiated as PostgreSQL does
//! (`ProcessStartupPacket`): a StartupMessage of any major version is
//! decoded, so that [`check_version`] can refuse a major other than 3 with
//! `0A000` (not `08P01`: the packet is well formed, the version is not
//! supported); a 3.x with a minor above ours, or with `_pq_.` protocol
//! options, is answered by [`negotiation`] with NegotiateProtocolVersion
//! before authentication, and the session goes on in 3.0.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, BytesMut};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{
    DecodeContext, PgWireFrontendMessage, ProtocolVersion, SslNegotiationMetaMessage,
};

use super::ClientError;

/// The protocol geogate speaks: 3.0 (4-byte cancel keys).
pub const PROTOCOL_MAJOR: u16 = 3;
/// The newest minor version geogate speaks for major 3.
pub const NEWEST_MINOR: u16 = 0;
/// Request codes that share the StartupMessage layout (major 1234):
/// CancelRequest (5678), SSLRequest (5679), GSSENCRequest (5680). pgwire
/// decodes those; any other 1234.x is an unsupported version, as in PostgreSQL.
const SPECIAL_MAJOR: u16 = 1234;
const SPECIAL_MINORS: [u16; 3] = [5678, 5679, 5680];
/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
const MAX_STARTUP_PACKET: usize = 10_000;

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
        if let Some(other) = decode_other_major(buf)? {
            self.ctx.awaiting_frontend_ssl = false;
            self.ctx.awaiting_frontend_startup = false;
            return Ok(Some(other));
        }
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

/// A StartupMessage whose major version is neither 3 nor a special request
/// code (pgwire refuses those as malformed). Its parameters are not read:
/// the version alone decides the answer, as in PostgreSQL. `Ok(None)` when
/// the packet is something else or not complete yet.
fn decode_other_major(buf: &mut BytesMut) -> Result<Option<StartupRequest>, StartupError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let major = u16::from_be_bytes([buf[4], buf[5]]);
    let minor = u16::from_be_bytes([buf[6], buf[7]]);
    if major == PROTOCOL_MAJOR || (major == SPECIAL_MAJOR && SPECIAL_MINORS.contains(&minor)) {
        return Ok(None);
    }
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(StartupError(format!(
            "invalid length of startup packet: {len}"
        )));
    }
    if buf.len() < len {
        return Ok(None);
    }
    buf.advance(len);
    Ok(Some(StartupRequest::Startup {
        major,
        minor,
        params: BTreeMap::new(),
    }))
}

/// Refuses a protocol version geogate cannot speak, as PostgreSQL does:
/// `FATAL 0A000 unsupported frontend protocol M.m: server supports 3.0 to
/// 3.0`. Any 3.x is accepted (a newer minor is negotiated down, see
/// [`negotiation`]).
pub fn check_version(major: u16, minor: u16) -> Result<(), ClientError> {
    if major == PROTOCOL_MAJOR {
        return Ok(());
    }
    Err(ClientError::not_supported(format!(
        "unsupported frontend protocol {major}.{minor}: server supports {PROTOCOL_MAJOR}.0 to {PROTOCOL_MAJOR}.{NEWEST_MINOR}"
    )))
}

/// The NegotiateProtocolVersion message to send right after a 3.x
/// StartupMessage and before authentication, or `None` when the client
/// asked for nothing geogate lacks. Sent when the minor version is above
/// [`NEWEST_MINOR`] or any `_pq_.` protocol option is present (geogate
/// supports none; they are listed, sorted, as unrecognized). The version
/// field carries the full 3.0 protocol number (196608), as PostgreSQL
/// sends `PG_PROTOCOL_LATEST` and libpq 18 expects.
pub fn negotiation(minor: u16, params: &BTreeMap<String, String>) -> Option<BytesMut> {
    let unsupported: Vec<&str> = params
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .map(String::as_str)
        .collect();
    // A comparison, not `minor == 0`: NEWEST_MINOR may grow.
    if minor.cmp(&NEWEST_MINOR).is_le() && unsupported.is_empty() {
        return None;
    }
    let body_len: usize = 4 + 4 + 4 + unsupported.iter().map(|o| o.len() + 1).sum::<usize>();
    let mut out = BytesMut::with_capacity(1 + body_len);
    out.put_u8(b'v');
    out.put_u32(body_len as u32);
    out.put_u32((u32::from(PROTOCOL_MAJOR) << 16) | u32::from(NEWEST_MINOR));
    out.put_u32(unsupported.len() as u32);
    for o in unsupported {
        out.put_slice(o.as_bytes());
        out.put_u8(0);
    }
    Some(out)
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

    fn version(major: u16, minor: u16, body: &[u8]) -> BytesMut {
        packet((i32::from(major) << 16) | i32::from(minor), body)
    }

    #[test]
    fn a_major_version_other_than_3_is_decoded_and_refused_with_0a000() {
        for (major, minor) in [(4, 0), (2, 0), (1, 0), (0, 0), (1234, 5681), (65535, 65535)] {
            let mut buf = version(major, minor, b"user\0app\0\0");
            let got = StartupDecoder::new().decode(&mut buf).unwrap();
            assert_eq!(
                got,
                Some(StartupRequest::Startup {
                    major,
                    minor,
                    params: BTreeMap::new()
                })
            );
            assert!(buf.is_empty(), "{major}.{minor}: packet consumed");
            let err = check_version(major, minor).unwrap_err();
            assert_eq!(err.code, "0A000");
            assert_eq!(err.severity, "FATAL");
        }
        assert!(check_version(3, 0).is_ok());
        assert!(check_version(3, 2).is_ok());
    }

    #[test]
    fn another_major_version_waits_for_its_whole_packet_and_bounds_its_length() {
        let full = version(4, 0, b"user\0app\0\0");
        let mut part = BytesMut::from(&full[..9]);
        assert_eq!(StartupDecoder::new().decode(&mut part).unwrap(), None);
        let mut huge = BytesMut::new();
        huge.put_u32(1 << 20);
        huge.put_u32(4 << 16);
        assert!(StartupDecoder::new().decode(&mut huge).is_err());
    }

    #[test]
    fn minor_versions_above_3_0_are_decoded_with_their_parameters() {
        let mut buf = version(3, 2, b"user\0app\0_pq_.test\0x\0\0");
        let Some(StartupRequest::Startup {
            major,
            minor,
            params,
        }) = StartupDecoder::new().decode(&mut buf).unwrap()
        else {
            panic!("not a startup")
        };
        assert_eq!((major, minor), (3, 2));
        assert_eq!(params["_pq_.test"], "x");
    }

    /// (newest version, unsupported options) of a NegotiateProtocolVersion.
    fn parse_negotiation(mut m: BytesMut) -> (u32, Vec<String>) {
        assert_eq!(m.get_u8(), b'v');
        let len = m.get_u32() as usize;
        assert_eq!(len, m.len() + 4, "length field covers the body");
        let version = m.get_u32();
        let n = m.get_u32();
        let options: Vec<String> = m[..]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        assert_eq!(options.len(), n as usize);
        (version, options)
    }

    #[test]
    fn a_newer_minor_or_a_pq_option_is_answered_with_negotiate_protocol_version_3_0() {
        let none = BTreeMap::new();
        assert!(
            negotiation(0, &none).is_none(),
            "3.0 without options: nothing to say"
        );
        assert_eq!(
            parse_negotiation(negotiation(2, &none).unwrap()),
            (196608, vec![])
        );
        let params: BTreeMap<String, String> = [
            ("user", "app"),
            ("_pq_.b", "1"),
            ("_pq_.a", "2"),
            ("application_name", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            parse_negotiation(negotiation(0, &params).unwrap()),
            (196608, vec!["_pq_.a".to_string(), "_pq_.b".to_string()]),
            "3.0 with options: listed, sorted"
        );
        assert_eq!(
            parse_negotiation(negotiation(9999, &params).unwrap())
                .1
                .len(),
            2
        );
    }
}
