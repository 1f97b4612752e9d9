//! A client speaking the PostgreSQL wire protocol by hand ([`Raw`]), for
//! what no driver sends: malformed or cut frames, batches of a given shape,
//! startup packets of any version, bytes before a TLS handshake.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The protocol version 3.0 of a startup packet.
pub const PROTOCOL_3_0: u32 = 196608;
/// The SSLRequest code.
pub const SSL_REQUEST: u32 = 80877103;
/// The GSSENCRequest code.
pub const GSSENC_REQUEST: u32 = 80877104;
/// A Sync message.
pub const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

/// One raw client connection.
pub struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

/// What a backend message was, for comparing answer sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    ParseComplete,
    BindComplete,
    ParameterDescription,
    RowDescription,
    NoData,
    /// A DataRow: its first column (`None` for NULL).
    Row(Option<String>),
    /// A CommandComplete: its tag.
    Complete(String),
    Error,
    /// ReadyForQuery: the transaction status.
    Ready(u8),
}

impl Raw {
    /// A TCP connection to geogate on `port`, nothing sent yet.
    pub async fn open(port: u16) -> Raw {
        Raw {
            s: TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
            buf: BytesMut::new(),
        }
    }

    /// As [`Raw::open`], `None` if the connection is refused.
    pub async fn try_open(port: u16) -> Option<Raw> {
        Some(Raw {
            s: TcpStream::connect(("127.0.0.1", port)).await.ok()?,
            buf: BytesMut::new(),
        })
    }

    /// Logs in as `user` (answering a cleartext password request, which it
    /// asserts is the first answer) to `db`; panics unless it gets
    /// ReadyForQuery.
    pub async fn login(port: u16, user: &str, password: &str, db: &str) -> Raw {
        let mut raw = Raw::open(port).await;
        raw.send(&startup_packet(
            PROTOCOL_3_0,
            &[("user", user), ("database", db)],
        ))
        .await;
        let (tag, body) = raw.next().await.expect("auth request");
        assert_eq!(
            (tag, &body[..]),
            (b'R', &3u32.to_be_bytes()[..]),
            "cleartext asked"
        );
        let mut pw = password.as_bytes().to_vec();
        pw.push(0);
        raw.send(&message(b'p', &pw)).await;
        let got = raw.until_ready().await;
        assert_eq!(got.last().map(|m| m.0), Some(b'Z'), "logged in: {got:?}");
        raw
    }

    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Sends bytes as they are; the error if the connection is gone.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await
    }

    /// Sends what `build` writes (the `postgres_protocol` frontend builders
    /// or [`statement`]).
    pub async fn send_with(&mut self, build: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        build(&mut out);
        self.send(&out).await;
    }

    /// Closes the write half (the peer reads EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = self.s.shutdown().await;
    }

    /// The next backend message, `None` at EOF (or after 10 s of silence).
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        self.next_within(Duration::from_secs(10)).await
    }

    /// The next backend message, `None` at EOF or after `silence` without one.
    pub async fn next_within(&mut self, silence: Duration) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    let body = self.buf.split_to(total - 5).to_vec();
                    return Some((tag, body));
                }
            }
            let read = tokio::time::timeout(silence, self.s.read_buf(&mut self.buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Messages up to ReadyForQuery or EOF.
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        while let Some(m) = self.next().await {
            let ready = m.0 == b'Z';
            got.push(m);
            if ready {
                break;
            }
        }
        got
    }

    /// The tags of the messages up to ReadyForQuery, as a string; panics
    /// if the connection ends before it.
    pub async fn tags_until_ready(&mut self) -> String {
        let got = self.until_ready().await;
        let tags: String = got.iter().map(|m| m.0 as char).collect();
        assert!(tags.ends_with('Z'), "closed after {tags:?}");
        tags
    }

    /// The messages of one answer, up to its ReadyForQuery, by what they
    /// are (other messages left out); panics if the connection ends first.
    pub async fn answer(&mut self) -> Vec<Got> {
        let mut got = Vec::new();
        loop {
            let (tag, body) = self
                .next_within(Duration::from_secs(60))
                .await
                .expect("geogate closed the connection");
            got.push(match tag {
                b'1' => Got::ParseComplete,
                b'2' => Got::BindComplete,
                b'T' => Got::RowDescription,
                b'n' => Got::NoData,
                b't' => Got::ParameterDescription,
                b'D' => {
                    // The column count, then the first column: its length, then its text.
                    let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
                    Got::Row(
                        (len >= 0)
                            .then(|| String::from_utf8_lossy(&body[6..6 + len as usize]).into()),
                    )
                }
                b'C' => Got::Complete(cstr(&body)),
                b'E' => Got::Error,
                b'Z' => {
                    got.push(Got::Ready(body[0]));
                    return got;
                }
                _ => continue,
            });
        }
    }

    /// Everything until the peer closes, `None` if it has not closed within
    /// `limit`.
    pub async fn read_to_end(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let mut out = std::mem::take(&mut self.buf).to_vec();
        let read = tokio::time::timeout(limit, self.s.read_to_end(&mut out));
        match read.await {
            Ok(Ok(_)) => Some(out),
            _ => None,
        }
    }

    /// Exactly `n` bytes (e.g. the one-byte answer to an SSLRequest).
    pub async fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let read = self.s.read_buf(&mut self.buf).await.unwrap();
            assert!(read > 0, "closed before {n} bytes");
        }
        self.buf.split_to(n).to_vec()
    }
}

/// A startup packet (or an SSLRequest/CancelRequest-shaped one) of
/// `version` with `params`.
pub fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u32(version);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(&body);
    out.to_vec()
}

/// A request of 8 bytes: its length and `code` (SSLRequest, GSSENCRequest).
pub fn request(code: u32) -> Vec<u8> {
    let mut v = 8u32.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v
}

/// One frontend message: its tag, its length, its body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The SQLSTATE field of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

/// A NUL-terminated string at the start of `body`.
fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Parse/Bind/Execute of the unnamed statement, no parameters, text
/// results (`describe`: a Describe of the portal before Execute).
pub fn statement(sql: &str, describe: bool, out: &mut BytesMut) {
    named_statement("", sql, false, describe, out);
}

/// Parse of statement `name` (then Describe of it when `describe_stmt`),
/// Bind of it to the unnamed portal, Execute (after a Describe of the
/// portal when `describe_portal`).
pub fn named_statement(
    name: &str,
    sql: &str,
    describe_stmt: bool,
    describe_portal: bool,
    out: &mut BytesMut,
) {
    frontend::parse(name, sql, std::iter::empty(), out).unwrap();
    if describe_stmt {
        frontend::describe(b'S', name, out).unwrap();
    }
    // Bind: unnamed portal, no parameters, text results.
    let len = 4 + 1 + name.len() + 1 + 6;
    out.extend_from_slice(b"B");
    out.extend_from_slice(&(len as i32).to_be_bytes());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    if describe_portal {
        frontend::describe(b'P', "", out).unwrap();
    }
    frontend::execute("", 0, out).unwrap();
}
