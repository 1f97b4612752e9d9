//! Framing of regular (post-startup) protocol messages: a tag byte and a
//! big-endian length that counts itself. Pure functions over byte slices, so
//! they can be fuzzed and never panic on any input.

/// Bytes of a frame header: tag + 4-byte length.
pub const HEADER_LEN: usize = 5;

/// A frame's tag and its total size on the wire (tag included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message type byte.
    pub tag: u8,
    /// Tag + length field + payload.
    pub total_len: usize,
}

/// A frame that cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below its own size.
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// The message is larger than the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced total length.
        len: usize,
        /// `proxy.max_message_size`.
        max: usize,
    },
}

/// Reads the header at the start of `buf`. `Ok(None)`: fewer than five bytes
/// are buffered, read more. The frame itself may still be incomplete: compare
/// `total_len` with `buf.len()`.
pub fn peek_frame(buf: &[u8], max: usize) -> Result<Option<FrameHeader>, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len.into()));
    }
    let total_len = len as usize + 1;
    if total_len > max {
        return Err(FrameError::TooLarge {
            len: total_len,
            max,
        });
    }
    Ok(Some(FrameHeader {
        tag: head[0],
        total_len,
    }))
}

/// Follows the backend's byte stream chunk by chunk without copying or
/// buffering it, noting the `ReadyForQuery` messages (and their transaction
/// status) that end each request. Rows and everything else are skipped over.
#[derive(Debug, Default, Clone)]
pub struct BackendScanner {
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    body_left: usize,
    /// Payload length of the current frame.
    body_len: usize,
    /// The current frame is a ReadyForQuery whose status byte is next.
    want_status: bool,
}

/// What one chunk of backend bytes contained.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanEvents {
    /// End offsets (in the chunk) of each ReadyForQuery frame and its status byte.
    pub ready: Vec<(usize, u8)>,
    /// Start offsets (in the chunk) of ParameterDescription frames whose
    /// header lies wholly in the chunk (the session reads their type OIDs).
    pub param_descs: Vec<usize>,
}

impl BackendScanner {
    /// A scanner positioned at a frame boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the bytes fed so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.body_left == 0
    }

    /// How many bytes of the unfinished frame at the end of the stream have
    /// been fed (0 at a boundary).
    pub fn partial_len(&self) -> usize {
        if self.header_len > 0 {
            self.header_len
        } else if self.body_left > 0 {
            HEADER_LEN + self.body_len - self.body_left
        } else {
            0
        }
    }

    /// Feeds the next chunk of the stream and appends what it found to `ev`.
    pub fn feed(&mut self, chunk: &[u8], ev: &mut ScanEvents) -> Result<(), FrameError> {
        let mut pos = 0;
        while pos < chunk.len() {
            if self.body_left > 0 {
                if self.want_status {
                    self.want_status = false;
                    if self.body_left == 1 {
                        ev.ready.push((pos + 1, chunk[pos]));
                    }
                }
                let n = self.body_left.min(chunk.len() - pos);
                self.body_left -= n;
                pos += n;
                continue;
            }
            let header_start = (self.header_len == 0).then_some(pos);
            let n = (HEADER_LEN - self.header_len).min(chunk.len() - pos);
            self.header[self.header_len..self.header_len + n].copy_from_slice(&chunk[pos..pos + n]);
            self.header_len += n;
            pos += n;
            if self.header_len == HEADER_LEN {
                self.header_len = 0;
                // Backend messages are trusted more than client ones, but a
                // broken length must still not panic or wedge the scanner.
                let h = peek_frame(&self.header, usize::MAX)?.ok_or(FrameError::BadLength(0))?;
                self.body_left = h.total_len - HEADER_LEN;
                self.body_len = self.body_left;
                self.want_status = h.tag == b'Z';
                if let (b't', Some(start)) = (h.tag, header_start) {
                    ev.param_descs.push(start);
                }
            }
        }
        Ok(())
    }
}

/// A whole frame of `tag` with `body`, for tests of code that reads frames.
#[cfg(test)]
pub(crate) fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_frame_waits_for_a_full_header_and_checks_limits() {
        assert_eq!(peek_frame(b"Q\0\0", 100), Ok(None));
        let q = frame(b'Q', b"select 1\0");
        assert_eq!(
            peek_frame(&q, 100),
            Ok(Some(FrameHeader {
                tag: b'Q',
                total_len: q.len()
            }))
        );
        assert_eq!(
            peek_frame(&q, 5),
            Err(FrameError::TooLarge {
                len: q.len(),
                max: 5
            })
        );
        assert_eq!(
            peek_frame(b"Q\xff\xff\xff\xff", 100),
            Err(FrameError::BadLength(-1))
        );
        assert_eq!(
            peek_frame(b"Q\0\0\0\x03", 100),
            Err(FrameError::BadLength(3))
        );
    }

    #[test]
    fn scanner_finds_ready_for_query_across_any_chunking() {
        let mut stream = frame(b'D', &[7; 300]);
        stream.extend(frame(b'C', b"SELECT 1\0"));
        stream.extend(frame(b'Z', b"T"));
        stream.extend(frame(b'D', b""));
        stream.extend(frame(b'Z', b"I"));
        let z1 = 300 + 5 + 14 + 6;
        let z2 = stream.len();
        for chunk in 1..stream.len() {
            let mut s = BackendScanner::new();
            let mut found = Vec::new();
            for (i, c) in stream.chunks(chunk).enumerate() {
                let mut ev = ScanEvents::default();
                s.feed(c, &mut ev).unwrap();
                found.extend(ev.ready.iter().map(|(end, st)| (end + i * chunk, *st)));
            }
            assert_eq!(found, vec![(z1, b'T'), (z2, b'I')], "chunk size {chunk}");
            assert!(s.at_boundary());
            assert_eq!(s.partial_len(), 0);
        }
    }

    #[test]
    fn scanner_reports_how_much_of_an_unfinished_frame_it_has_seen() {
        let mut s = BackendScanner::new();
        let mut ev = ScanEvents::default();
        let mut stream = frame(b'D', &[1; 10]);
        stream.extend(frame(b'Z', b"I"));
        s.feed(&stream[..3], &mut ev).unwrap();
        assert_eq!(s.partial_len(), 3);
        s.feed(&stream[3..8], &mut ev).unwrap();
        assert_eq!(s.partial_len(), 8);
        s.feed(&stream[8..19], &mut ev).unwrap();
        assert_eq!(s.partial_len(), 4);
        s.feed(&stream[19..], &mut ev).unwrap();
        assert_eq!((s.partial_len(), ev.ready.len()), (0, 1));
    }

    #[test]
    fn scanner_rejects_a_negative_length_without_panicking() {
        let mut s = BackendScanner::new();
        let mut ev = ScanEvents::default();
        assert!(s.feed(b"D\x80\0\0\0", &mut ev).is_err());
    }
}
