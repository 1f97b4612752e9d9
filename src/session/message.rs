//! Client messages after startup, as a typed enum read in place from the
//! frame the client sent (the frame itself is what gets forwarded).
//!
//! Every message is checked before anything else looks at it: a frame whose
//! layout does not match its type, or a type the protocol does not have,
//! ends that client's session with `08P01` and never reaches a gateway (a
//! gateway that received it would end its backend, and that must not look
//! like a gateway failure to anyone else).

use std::borrow::Cow;

use crate::wire::ClientError;
use crate::wire::validate::{BindFrame, client_message_well_formed, parse_view};

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A prepared statement (`S`).
    Statement,
    /// A portal (`P`).
    Portal,
}

/// One client message.
#[derive(Debug)]
pub enum Frontend<'a> {
    /// Simple-protocol query (`Q`).
    Query {
        /// The SQL text.
        sql: Cow<'a, str>,
    },
    /// `P`: prepare `sql` as statement `name` ("" = unnamed).
    Parse {
        /// Statement name.
        name: Cow<'a, str>,
        /// SQL text.
        sql: Cow<'a, str>,
        /// Parameter type OIDs the client gave (0 = unspecified).
        types: Vec<u32>,
    },
    /// `B`: bind a statement into a portal.
    Bind(BindFrame<'a>),
    /// `D`: describe a statement or portal.
    Describe {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: Cow<'a, str>,
    },
    /// `E`: run a portal.
    Execute {
        /// The portal.
        portal: Cow<'a, str>,
    },
    /// `C`: close a statement or portal.
    Close {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: Cow<'a, str>,
    },
    /// `S`: end of a batch.
    Sync,
    /// `H`: send what is pending.
    Flush,
    /// `d`, `c`, `f`: COPY FROM STDIN data, done, fail.
    Copy {
        /// CopyDone or CopyFail: the end of the data.
        end: bool,
    },
    /// `F`: the legacy function-call sub-protocol.
    FunctionCall,
    /// `X`: goodbye.
    Terminate,
}

impl<'a> Frontend<'a> {
    /// Reads a whole frame (tag, length, body). Errors are `08P01` FATALs.
    pub fn read(frame: &'a [u8]) -> Result<Frontend<'a>, ClientError> {
        let malformed = |what: &str| {
            ClientError::protocol_violation(format!("geogate: malformed {what} message"))
        };
        let tag = *frame.first().ok_or_else(|| malformed("empty"))?;
        let body = frame.get(5..).unwrap_or(&[]);
        let msg = match tag {
            b'Q' => {
                let text = body
                    .strip_suffix(&[0])
                    .filter(|t| !t.contains(&0))
                    .ok_or_else(|| malformed("Query"))?;
                Frontend::Query { sql: utf8(text) }
            }
            b'P' => {
                let p = parse_view(frame).ok_or_else(|| malformed("Parse"))?;
                Frontend::Parse {
                    name: p.name,
                    sql: p.query,
                    types: p.param_types,
                }
            }
            b'B' => Frontend::Bind(BindFrame::new(frame).ok_or_else(|| malformed("Bind"))?),
            b'D' | b'C' => {
                if !client_message_well_formed(frame) || body.len() < 2 {
                    return Err(malformed(if tag == b'D' { "Describe" } else { "Close" }));
                }
                let target = match body[0] {
                    b'S' => Target::Statement,
                    b'P' => Target::Portal,
                    _ => {
                        return Err(ClientError::protocol_violation(format!(
                            "geogate: invalid {} target type {}",
                            if tag == b'D' { "DESCRIBE" } else { "CLOSE" },
                            body[0]
                        )));
                    }
                };
                let name = cstr(&body[1..]);
                if tag == b'D' {
                    Frontend::Describe { target, name }
                } else {
                    Frontend::Close { target, name }
                }
            }
            b'E' => {
                if !client_message_well_formed(frame) {
                    return Err(malformed("Execute"));
                }
                Frontend::Execute { portal: cstr(body) }
            }
            b'S' | b'H' | b'X' | b'c' if body.is_empty() => match tag {
                b'S' => Frontend::Sync,
                b'H' => Frontend::Flush,
                b'X' => Frontend::Terminate,
                _ => Frontend::Copy { end: true },
            },
            b'S' | b'H' | b'X' | b'c' => return Err(malformed("fixed-length")),
            b'd' => Frontend::Copy { end: false },
            b'f' => {
                if body.last() != Some(&0) {
                    return Err(malformed("CopyFail"));
                }
                Frontend::Copy { end: true }
            }
            b'F' => Frontend::FunctionCall,
            other => {
                return Err(ClientError::protocol_violation(format!(
                    "geogate: invalid frontend message type {other}"
                )));
            }
        };
        Ok(msg)
    }

    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frontend::Query { .. } => "Query",
            Frontend::Parse { .. } => "Parse",
            Frontend::Bind(_) => "Bind",
            Frontend::Describe { .. } => "Describe",
            Frontend::Execute { .. } => "Execute",
            Frontend::Close { .. } => "Close",
            Frontend::Sync => "Sync",
            Frontend::Flush => "Flush",
            Frontend::Copy { .. } => "Copy",
            Frontend::FunctionCall => "FunctionCall",
            Frontend::Terminate => "Terminate",
        }
    }
}

/// The NUL-terminated string at the start of `body` (lossy UTF-8).
fn cstr(body: &[u8]) -> Cow<'_, str> {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    utf8(&body[..end])
}

/// Text as UTF-8, borrowed when it is valid (the hot path: the standard
/// library's validation is several times faster than the lossy decoder's).
fn utf8(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::frame;

    #[test]
    fn unknown_types_and_bad_layouts_are_protocol_violations() {
        for bad in [
            frame(b'z', b""),
            frame(b'Q', b"select 1"),
            frame(b'S', b"x"),
            frame(b'D', b"Xname\0"),
            frame(b'P', b"s\0select 1\0\x00\x01"),
        ] {
            let e = Frontend::read(&bad).unwrap_err();
            assert_eq!((e.code, e.severity), ("08P01", "FATAL"), "{bad:?}");
        }
    }

    #[test]
    fn messages_are_read_in_place() {
        let d = frame(b'D', b"Sst1\0");
        assert!(matches!(
            Frontend::read(&d).unwrap(),
            Frontend::Describe { target: Target::Statement, name } if name == "st1"
        ));
        let q = frame(b'Q', b"select 1\0");
        assert!(
            matches!(Frontend::read(&q).unwrap(), Frontend::Query { sql } if sql == "select 1")
        );
        assert!(matches!(
            Frontend::read(&frame(b'S', b"")).unwrap(),
            Frontend::Sync
        ));
    }
}
