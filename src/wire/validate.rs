//! Structural checks run before handing a client message to `pgwire`'s
//! decoder, whose `decode_body` reads fixed-size fields without bounds
//! checks (a truncated Parse or Bind would panic inside the `bytes` crate),
//! and zero-copy views of the few fields the session reads on every
//! message (statement names, the SQL of a Parse, a Bind's values), so the
//! hot path needs no copy; full decoding (`pgwire`) is for the rest.
//! Pure and total: any byte slice gives an answer, never a panic.

use std::borrow::Cow;

/// A bounds-checked reader over a message body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn cstring(&mut self) -> Option<()> {
        self.str().map(|_| ())
    }

    /// A NUL-terminated string; bytes that are not UTF-8 (a client in
    /// another `client_encoding`) are replaced, not refused: only geogate's
    /// own view is affected, the frame is forwarded untouched.
    fn str(&mut self) -> Option<Cow<'a, str>> {
        let nul = self.0.iter().position(|b| *b == 0)?;
        let s = String::from_utf8_lossy(&self.0[..nul]);
        self.0 = &self.0[nul + 1..];
        Some(s)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.i16()?).ok()
    }
}

/// True when `frame` (tag + length + body) has the layout its tag requires,
/// for the client message types geogate decodes; other tags are not checked.
pub fn client_message_well_formed(frame: &[u8]) -> bool {
    let (Some(&tag), Some(body)) = (frame.first(), frame.get(5..)) else {
        return false;
    };
    let mut c = Cursor(body);
    let ok = match tag {
        b'Q' => c.cstring(),
        b'P' => (|| {
            c.cstring()?;
            c.cstring()?;
            let n = c.count()?;
            c.take(n.checked_mul(4)?).map(|_| ())
        })(),
        b'B' => (|| {
            c.cstring()?;
            c.cstring()?;
            let n = c.count()?;
            c.take(n * 2)?;
            for _ in 0..c.count()? {
                let len = c.i32()?;
                if len >= 0 {
                    c.take(len as usize)?;
                } else if len != -1 {
                    return None;
                }
            }
            let n = c.count()?;
            c.take(n * 2).map(|_| ())
        })(),
        b'C' | b'D' => c.take(1).and_then(|_| c.cstring()),
        b'E' => c.cstring().and_then(|_| c.i32()).map(|_| ()),
        _ => Some(()),
    };
    ok.is_some()
}

/// True when a SASLInitialResponse body (after tag and length) is complete.
pub fn sasl_initial_well_formed(body: &[u8]) -> bool {
    let mut c = Cursor(body);
    (|| {
        c.cstring()?;
        let len = c.i32()?;
        if len >= 0 {
            c.take(len as usize)?;
        } else if len != -1 {
            return None;
        }
        Some(())
    })()
    .is_some()
}

/// A Bind's parameter format codes and values, borrowed from the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct BindParams<'a> {
    /// Format codes as sent (none: all text; one: for every value).
    pub formats: Vec<i16>,
    /// `$1`, `$2`, …; `None` is SQL NULL.
    pub values: Vec<Option<&'a [u8]>>,
}

/// The fields of a well-formed Parse, borrowed from the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseView<'a> {
    /// Statement name ("" = unnamed).
    pub name: Cow<'a, str>,
    /// The SQL text.
    pub query: Cow<'a, str>,
    /// Parameter type OIDs.
    pub param_types: Vec<u32>,
}

/// Reads a Parse frame without copying its text; `None` if malformed.
pub fn parse_view(frame: &[u8]) -> Option<ParseView<'_>> {
    if frame.first() != Some(&b'P') {
        return None;
    }
    let mut c = Cursor(frame.get(5..)?);
    let name = c.str()?;
    let query = c.str()?;
    let n = c.count()?;
    let param_types = c
        .take(n.checked_mul(4)?)?
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some(ParseView {
        name,
        query,
        param_types,
    })
}

/// A Bind message as the client sent it: the statement name is read in
/// place, the parameter values read (in place too) only when asked for.
#[derive(Debug, Clone)]
pub struct BindFrame<'a> {
    frame: &'a [u8],
    statement: Cow<'a, str>,
}

impl<'a> BindFrame<'a> {
    /// Checks the frame's layout; `None` if it is not a well-formed Bind.
    pub fn new(frame: &'a [u8]) -> Option<Self> {
        if frame.first() != Some(&b'B') || !client_message_well_formed(frame) {
            return None;
        }
        let mut c = Cursor(frame.get(5..)?);
        c.str()?;
        let statement = c.str()?;
        Some(Self { frame, statement })
    }

    /// The prepared statement it binds ("" = unnamed).
    pub fn statement_name(&self) -> &str {
        &self.statement
    }

    /// Its parameter format codes and values, read in place: no copy of a
    /// value (the decision reads one or two of them per statement).
    /// `None` if the frame is not a well-formed Bind.
    pub fn params(&self) -> Option<BindParams<'a>> {
        let mut c = Cursor(self.frame.get(5..)?);
        c.cstring()?;
        c.cstring()?;
        let n = c.count()?;
        let formats = c
            .take(n.checked_mul(2)?)?
            .chunks_exact(2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .collect();
        let n = c.count()?;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            let len = c.i32()?;
            values.push(match usize::try_from(len) {
                Ok(len) => Some(c.take(len)?),
                Err(_) if len == -1 => None,
                Err(_) => return None,
            });
        }
        Some(BindParams { formats, values })
    }

    /// The raw frame (tag and length included).
    pub fn raw(&self) -> &'a [u8] {
        self.frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::frame;

    #[test]
    fn accepts_real_messages_and_refuses_truncated_ones() {
        let parse = frame(b'P', b"s1\0select $1\0\0\x01\0\0\0\x17");
        assert!(client_message_well_formed(&parse));
        assert!(!client_message_well_formed(&parse[..parse.len() - 1]));
        let bind = frame(b'B', b"\0s1\0\0\x01\0\x01\0\x01\0\0\0\x041234\0\0");
        assert!(client_message_well_formed(&bind));
        assert!(!client_message_well_formed(&frame(
            b'B',
            b"\0s1\0\0\x01\0\x01\0\x01\0\0\0\x091234\0\0"
        )));
        assert!(!client_message_well_formed(&frame(b'Q', b"select 1")));
        assert!(client_message_well_formed(&frame(b'Q', b"select 1\0")));
        assert!(!client_message_well_formed(&frame(b'C', b"")));
        assert!(sasl_initial_well_formed(b"SCRAM-SHA-256\0\0\0\0\x03abc"));
        let v = parse_view(&parse).unwrap();
        assert_eq!(
            (&*v.name, &*v.query, v.param_types),
            ("s1", "select $1", vec![23])
        );
        let b = BindFrame::new(&bind).unwrap();
        assert_eq!(b.statement_name(), "s1");
        let p = b.params().unwrap();
        assert_eq!((p.formats, p.values), (vec![1], vec![Some(&b"1234"[..])]));
        let null = frame(b'B', b"p\0s1\0\0\0\0\x02\xff\xff\xff\xff\0\0\0\0\0\0");
        let p = BindFrame::new(&null).unwrap().params().unwrap();
        assert_eq!((p.formats, p.values), (vec![], vec![None, Some(&b""[..])]));
        assert!(!sasl_initial_well_formed(b"SCRAM-SHA-256\0\0\0\0\x09abc"));
    }

    /// Well-formed Binds of every shape (formats 0, 1 or n; NULLs, empty
    /// and long values): the in-place reading agrees with pgwire's decoder.
    #[test]
    fn bind_params_read_in_place_agree_with_pgwire() {
        use pgwire::messages::Message;
        let mut seed = 7u64;
        let mut next = move |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 33) % m
        };
        let mut ctx =
            pgwire::messages::DecodeContext::new(pgwire::messages::ProtocolVersion::PROTOCOL3_0);
        ctx.awaiting_frontend_ssl = false;
        ctx.awaiting_frontend_startup = false;
        for _ in 0..2_000 {
            let n = next(6) as usize;
            let mut body = b"portal\0stmt\0".to_vec();
            let nf = [0, 1, n][next(3) as usize];
            body.extend_from_slice(&(nf as i16).to_be_bytes());
            for _ in 0..nf {
                body.extend_from_slice(&(next(2) as i16).to_be_bytes());
            }
            body.extend_from_slice(&(n as i16).to_be_bytes());
            for _ in 0..n {
                if next(4) == 0 {
                    body.extend_from_slice(&(-1i32).to_be_bytes());
                } else {
                    let len = next(40) as usize;
                    body.extend_from_slice(&(len as i32).to_be_bytes());
                    body.extend((0..len).map(|_| next(256) as u8));
                }
            }
            body.extend_from_slice(&1i16.to_be_bytes());
            body.extend_from_slice(&1i16.to_be_bytes());
            let f = frame(b'B', &body);
            let mine = BindFrame::new(&f).and_then(|b| b.params()).unwrap();
            let theirs = pgwire::messages::extendedquery::Bind::decode(
                &mut bytes::BytesMut::from(&f[..]),
                &ctx,
            )
            .unwrap()
            .unwrap();
            assert_eq!(mine.formats, theirs.parameter_format_codes);
            let values: Vec<Option<&[u8]>> =
                theirs.parameters.iter().map(|v| v.as_deref()).collect();
            assert_eq!(mine.values, values);
        }
    }
}
