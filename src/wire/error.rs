//! Errors geogate itself sends to clients, each built by a named constructor
//! that carries its SQLSTATE (from the vocabulary of [`crate::refusal`]).

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, NoticeResponse};

use crate::refusal::{RejectReason, sqlstate};

/// An error (or notice) geogate reports to a client in an `ErrorResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// `ERROR` or `FATAL` (`WARNING` for notices).
    pub severity: &'static str,
    /// The SQLSTATE.
    pub code: &'static str,
    /// Primary message; never contains literal values from SQL.
    pub message: String,
    /// Optional hint.
    pub hint: Option<String>,
}

impl ClientError {
    /// An `ERROR`: the statement fails, the session goes on.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "ERROR",
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// A `FATAL`: the connection closes after it.
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "FATAL",
            ..Self::error(code, message)
        }
    }

    /// A `WARNING` notice (mode = "warn": what enforce would have refused).
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "WARNING",
            ..Self::error(code, message)
        }
    }

    /// An `ERROR` for a refusal: the statement fails with the reason's
    /// SQLSTATE, the session goes on.
    pub fn refused(reason: RejectReason, message: impl Into<String>) -> Self {
        Self::error(reason.sqlstate(), message)
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `28P01`: authentication failed. Same text whether the user exists or
    /// not, so a client cannot probe for user names.
    pub fn auth_failed(user: &str) -> Self {
        Self::fatal(
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    }

    /// `08P01`: the client broke the protocol.
    pub fn protocol_violation(message: impl Into<String>) -> Self {
        Self::fatal(sqlstate::PROTOCOL_VIOLATION, message)
    }

    /// `53300`: `proxy.max_client_connections` reached.
    pub fn too_many_connections() -> Self {
        Self::fatal(
            sqlstate::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
        )
    }

    /// `08006`: the gateway connection broke under the session.
    pub fn upstream_lost(region: &str) -> Self {
        Self::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("geogate: connection to the {region} gateway was lost"),
        )
    }

    /// `GG004`: the region's gateway cannot be reached.
    pub fn no_gateway(region: &str, why: impl std::fmt::Display) -> Self {
        Self::fatal(
            RejectReason::NoGateway.sqlstate(),
            format!("geogate: no gateway available for region {region}: {why}"),
        )
    }

    /// `57P01`: geogate is shutting down.
    pub fn shutting_down() -> Self {
        Self::fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        )
    }

    /// `0A000`: something geogate does not support.
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::fatal(sqlstate::FEATURE_NOT_SUPPORTED, message)
    }

    fn fields(&self) -> Vec<(u8, String)> {
        let mut f = vec![
            (b'S', self.severity.to_string()),
            (b'V', self.severity.to_string()),
            (b'C', self.code.to_string()),
            (b'M', self.message.clone()),
        ];
        if let Some(h) = &self.hint {
            f.push((b'H', h.clone()));
        }
        f
    }

    /// Appends the `ErrorResponse` frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        // Encoding a fields list into a growable buffer cannot fail.
        let _ = ErrorResponse::new(self.fields()).encode(buf);
    }

    /// Appends it as a `NoticeResponse` frame (for `mode = "warn"`).
    pub fn encode_notice(&self, buf: &mut BytesMut) {
        let _ = NoticeResponse::new(self.fields()).encode(buf);
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}
