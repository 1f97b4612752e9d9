//! Logging: the `tracing` subscriber (text or JSON) and the decision log
//! lines — one per rejection and per scatter, rate-limited per (kind, table),
//! carrying user, application_name, table, reason and fingerprint, never SQL
//! text or literal values.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::metrics::{Outcome, StatementEvent, sanitize_fingerprint};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format must be text or json, not {other:?}")),
        }
    }
}

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` (or the given filter) does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The filter text.
        filter: String,
        /// The parser's complaint.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already set.
    #[error("a global tracing subscriber is already installed")]
    AlreadySet,
}

/// Default filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber writing to stderr, filtered by `RUST_LOG`
/// (default `info`).
pub fn init(format: LogFormat) -> Result<(), LoggingError> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    init_with(format, &filter, std::io::stderr)
}

/// Installs the global subscriber with an explicit filter and writer (tests:
/// pass a [`LogCapture`]).
pub fn init_with<W>(format: LogFormat, filter: &str, writer: W) -> Result<(), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let dispatch = dispatch(format, filter, writer)?;
    tracing::dispatcher::set_global_default(dispatch).map_err(|_| LoggingError::AlreadySet)
}

/// Builds a subscriber without installing it (for
/// `tracing::dispatcher::with_default` / `set_default` in tests).
pub fn dispatch<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<tracing::Dispatch, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(writer)
        .with_target(true);
    Ok(match format {
        LogFormat::Text => tracing::Dispatch::new(builder.with_ansi(false).finish()),
        LogFormat::Json => tracing::Dispatch::new(builder.json().flatten_event(true).finish()),
    })
}

/// An in-memory log sink: clone it into [`init_with`]/[`dispatch`], read
/// everything written with [`LogCapture::contents`].
#[derive(Debug, Clone, Default)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl LogCapture {
    /// An empty capture.
    pub fn new() -> LogCapture {
        LogCapture::default()
    }

    /// Everything logged so far.
    pub fn contents(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// The writer handed out per event by [`LogCapture`].
#[derive(Debug)]
pub struct CaptureWriter {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Held for one memcpy, never across an await.
        self.buf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> CaptureWriter {
        CaptureWriter {
            buf: self.buf.clone(),
        }
    }
}

/// Which decision log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// A rejected statement.
    Rejection,
    /// A scattered statement.
    Scatter,
}

/// Longest user / application_name / table name logged (client-chosen strings).
pub const MAX_FIELD_LEN: usize = 64;
/// Keys tracked by the rate limiter before it starts over (bounds memory when
/// clients name many unlisted tables).
const MAX_KEYS: usize = 1024;

#[derive(Debug)]
struct Window {
    started: Instant,
    emitted: u32,
    suppressed: u64,
}

/// Allows `per_second` lines per second per (kind, table); counts the rest.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    windows: Mutex<HashMap<(LineKind, String), Window>>,
}

impl RateLimiter {
    /// A limiter allowing `per_second` lines per key and second.
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` if a line may be written now, `n` being how many lines for
    /// this key were suppressed since the last one written; `None` to suppress.
    pub fn allow(&self, kind: LineKind, table: &str) -> Option<u64> {
        self.allow_at(kind, table, Instant::now())
    }

    fn allow_at(&self, kind: LineKind, table: &str, now: Instant) -> Option<u64> {
        // A std Mutex: held for a map update only, never across an await.
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= MAX_KEYS && !windows.contains_key(&(kind, table.to_owned())) {
            windows.clear();
        }
        let w = windows
            .entry((kind, table.to_owned()))
            .or_insert_with(|| Window {
                started: now,
                emitted: 0,
                suppressed: 0,
            });
        if now.duration_since(w.started).as_secs() >= 1 {
            w.started = now;
            w.emitted = 0;
        }
        if w.emitted < self.per_second {
            w.emitted += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// Who sent a statement, as logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientInfo<'a> {
    /// The user name the client sent at startup.
    pub user: &'a str,
    /// The client's `application_name` (may be empty).
    pub application_name: &'a str,
}

/// Default lines per second per (kind, table).
pub const DEFAULT_LINES_PER_SECOND: u32 = 10;

/// Writes the rejection and scatter lines, rate-limited. Shared by all
/// sessions (`Arc<DecisionLog>`).
#[derive(Debug)]
pub struct DecisionLog {
    limiter: RateLimiter,
}

impl Default for DecisionLog {
    fn default() -> Self {
        DecisionLog::new(DEFAULT_LINES_PER_SECOND)
    }
}

impl DecisionLog {
    /// A log allowing `per_second` lines per second per (kind, table).
    pub fn new(per_second: u32) -> DecisionLog {
        DecisionLog {
            limiter: RateLimiter::new(per_second),
        }
    }

    /// Logs `event` if it is a rejection or a scatter (other decisions are
    /// not logged per statement). `enforced` is false in warn/observe mode,
    /// when the statement was forwarded anyway.
    pub fn statement(&self, client: &ClientInfo<'_>, event: &StatementEvent<'_>, enforced: bool) {
        match event.outcome {
            Outcome::Reject(reason) => {
                let table = cap(event.table.unwrap_or(crate::metrics::NONE));
                let Some(suppressed) = self.limiter.allow(LineKind::Rejection, table) else {
                    return;
                };
                tracing::warn!(
                    target: "geogate::decision",
                    event = "rejection",
                    user = cap(client.user),
                    application_name = cap(client.application_name),
                    table,
                    reason = reason.as_str(),
                    sqlstate = reason.sqlstate(),
                    enforced,
                    fingerprint = %sanitize_fingerprint(event.fingerprint),
                    suppressed,
                    "statement rejected"
                );
            }
            Outcome::Scatter(cause) => {
                let table = cap(event.table.unwrap_or(crate::metrics::NONE));
                let Some(suppressed) = self.limiter.allow(LineKind::Scatter, table) else {
                    return;
                };
                tracing::info!(
                    target: "geogate::decision",
                    event = "scatter",
                    user = cap(client.user),
                    application_name = cap(client.application_name),
                    table,
                    reason = cause.as_str(),
                    fingerprint = %sanitize_fingerprint(event.fingerprint),
                    suppressed,
                    "statement scattered"
                );
            }
            Outcome::Global | Outcome::Route | Outcome::Rewrite => {}
        }
    }
}

/// Debug line when a client connection opens.
pub fn connection_opened(peer: std::net::SocketAddr, client: &ClientInfo<'_>) {
    tracing::debug!(
        target: "geogate::connection",
        %peer,
        user = cap(client.user),
        application_name = cap(client.application_name),
        "client connected"
    );
}

/// Debug line when a client connection closes.
pub fn connection_closed(peer: std::net::SocketAddr, client: &ClientInfo<'_>, statements: u64) {
    tracing::debug!(
        target: "geogate::connection",
        %peer,
        user = cap(client.user),
        application_name = cap(client.application_name),
        statements,
        "client disconnected"
    );
}

/// Cuts a client-chosen string to [`MAX_FIELD_LEN`] bytes at a char boundary.
fn cap(s: &str) -> &str {
    if s.len() <= MAX_FIELD_LEN {
        return s;
    }
    let mut end = MAX_FIELD_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{RejectReason, ScatterCause};

    #[test]
    fn rate_limiter_allows_n_per_second_per_key_and_reports_suppressed() {
        let l = RateLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(l.allow_at(LineKind::Rejection, "users", t0), Some(0));
        assert_eq!(l.allow_at(LineKind::Rejection, "users", t0), Some(0));
        assert_eq!(l.allow_at(LineKind::Rejection, "users", t0), None);
        assert_eq!(l.allow_at(LineKind::Rejection, "users", t0), None);
        // Other keys have their own budget.
        assert_eq!(l.allow_at(LineKind::Scatter, "users", t0), Some(0));
        assert_eq!(l.allow_at(LineKind::Rejection, "orders", t0), Some(0));
        let t1 = t0 + Duration::from_millis(1001);
        assert_eq!(l.allow_at(LineKind::Rejection, "users", t1), Some(2));
    }

    #[test]
    fn decision_lines_carry_fields_but_no_literals() {
        let capture = LogCapture::new();
        let d = dispatch(LogFormat::Json, "info", capture.clone()).unwrap();
        let log = DecisionLog::new(1);
        let client = ClientInfo {
            user: "app",
            application_name: "billing",
        };
        tracing::dispatcher::with_default(&d, || {
            for outcome in [
                Outcome::Reject(RejectReason::NoRegion),
                Outcome::Reject(RejectReason::NoRegion),
                Outcome::Scatter(ScatterCause::MultiRegion),
                Outcome::Route,
            ] {
                let ev = StatementEvent {
                    outcome,
                    table: Some("users"),
                    region: None,
                    fingerprint: "SELECT * FROM users WHERE email = 'alice@example.org'",
                };
                log.statement(&client, &ev, true);
            }
        });
        let out = capture.contents();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["event"], "rejection");
        assert_eq!(lines[0]["reason"], "no_region");
        assert_eq!(lines[0]["sqlstate"], "GG001");
        assert_eq!(lines[0]["user"], "app");
        assert_eq!(lines[0]["application_name"], "billing");
        assert_eq!(lines[1]["event"], "scatter");
        assert!(!out.contains("alice"), "{out}");
    }
}
