//! The one queue of expected answers.
//!
//! Every answer the client will read has an entry, in the order the client
//! asked: it says where the answer comes from (an upstream, or geogate
//! itself), what ends it (ParseComplete, ReadyForQuery, …) and what becomes
//! of it (forwarded, swallowed because geogate asked for it, or held for
//! verify-on-empty). Backend bytes are walked frame by frame against the
//! front entry; rows and everything else stream through as bytes, in runs,
//! without being decoded. Pure: no I/O.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};

use super::core::same_region;
use crate::metrics::DecisionLabel;
use crate::refusal::sqlstate;
use crate::wire::{ClientError, FrameError, peek_frame};

/// What ends an expected answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Parse → ParseComplete.
    Parse,
    /// Bind → BindComplete.
    Bind,
    /// Close → CloseComplete.
    Close,
    /// Describe → RowDescription or NoData (after ParameterDescription
    /// for a statement).
    Describe,
    /// Execute → CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Sync → ReadyForQuery.
    Ready,
    /// A simple Query or a FunctionCall: everything up to ReadyForQuery.
    Query,
}

impl Answer {
    /// Extended-protocol answers: an error ends them, and the upstream
    /// then skips everything up to its Sync.
    fn extended(self) -> bool {
        !matches!(self, Answer::Ready | Answer::Query)
    }

    fn ended_by(self, tag: u8) -> bool {
        match self {
            Answer::Parse => tag == b'1',
            Answer::Bind => tag == b'2',
            Answer::Close => tag == b'3',
            Answer::Describe => matches!(tag, b'T' | b'n'),
            Answer::Execute => matches!(tag, b'C' | b'I' | b's'),
            Answer::Ready | Answer::Query => tag == b'Z',
        }
    }
}

/// What becomes of an upstream's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// To the client.
    Forward,
    /// geogate asked for it (a statement prepared on a new upstream, a
    /// deferred BEGIN, replayed settings): dropped, but an error in it
    /// still reaches the client, in place of what its failure skips.
    Swallow,
    /// A deliberate error that aborts an upstream's transaction: dropped,
    /// error included.
    Abort,
    /// Held until known non-empty (verify-on-empty).
    Hold,
}

/// Where an answer comes from.
#[derive(Debug)]
pub enum Source {
    /// This region's upstream connection.
    Upstream(Arc<str>),
    /// geogate answers itself.
    Own(Own),
}

/// An answer geogate writes itself.
#[derive(Debug)]
pub enum Own {
    /// Ready-made messages (ParseComplete, CommandComplete of a deferred BEGIN…).
    Raw(BytesMut),
    /// An ErrorResponse.
    Error(ClientError),
    /// A NoticeResponse (warn mode).
    Notice(ClientError),
    /// ReadyForQuery with the client's transaction status at that point.
    Ready,
}

/// A duration to observe when an answer completes.
#[derive(Debug, Clone)]
pub struct Timing {
    /// When the request went out.
    pub started: Instant,
    /// Its decision.
    pub decision: DecisionLabel,
    /// The region that served it.
    pub region: Arc<str>,
}

/// One answer the client will read.
#[derive(Debug)]
pub struct Expect {
    /// Where it comes from.
    pub source: Source,
    /// What ends it.
    pub answer: Answer,
    /// What becomes of it.
    pub fate: Fate,
    /// geogate's own answer that an upstream error before it in the batch
    /// makes PostgreSQL skip (`false` for a refusal's own error).
    pub skippable: bool,
    /// For a Describe of a statement: which one (its ParameterDescription
    /// teaches the session the parameter types).
    pub describes: Option<(Arc<str>, u64)>,
    /// Observed when complete.
    pub timing: Option<Timing>,
    /// For an Execute and a Sync: how many COPY FROM STDIN data streams the
    /// client had ended on that upstream when it was sent. PostgreSQL
    /// ignores a Sync received in copy-in mode: the Syncs sent after an
    /// Execute that turns out to start a COPY, before its data ends, get
    /// no answer.
    pub copy_epoch: u64,
}

impl Expect {
    /// An answer from `region`'s upstream.
    pub fn upstream(region: &Arc<str>, answer: Answer, fate: Fate) -> Expect {
        Expect {
            source: Source::Upstream(region.clone()),
            answer,
            fate,
            skippable: true,
            describes: None,
            timing: None,
            copy_epoch: 0,
        }
    }

    /// An answer of geogate's own.
    pub fn own(own: Own, answer: Answer) -> Expect {
        Expect {
            source: Source::Own(own),
            answer,
            fate: Fate::Forward,
            skippable: true,
            describes: None,
            timing: None,
            copy_epoch: 0,
        }
    }
}

/// What walking backend bytes stopped at (the session applies it, then
/// walks on).
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// Everything buffered is processed, or the front entry needs bytes
    /// from this region's upstream.
    NeedBytes(Option<Arc<str>>),
    /// The queue is empty.
    Empty,
    /// A ReadyForQuery from `region` with this status byte.
    Ready {
        /// The upstream.
        region: Arc<str>,
        /// `I`, `T` or `E`.
        status: u8,
        /// It reaches the client (`Some(true)`: into the held answer), and
        /// its status byte is left for the session to write.
        to_client: Option<bool>,
    },
    /// A ParameterDescription for a described statement.
    ParamTypes {
        /// Statement name.
        name: Arc<str>,
        /// Its generation.
        generation: u64,
        /// Type OIDs.
        types: Vec<u32>,
    },
    /// `standard_conforming_strings` reported by a gateway.
    StandardStrings(bool),
    /// A FATAL error from `region`: it ends that backend, for a reason it said.
    Fatal(Arc<str>),
}

/// A frame whose body is still arriving.
#[derive(Debug, Clone, Copy)]
struct Partial {
    left: usize,
    sink: Sink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Client,
    Hold,
    Drop,
}

/// The queue and the walk of the backend stream against it.
#[derive(Debug, Default)]
pub struct Answers {
    queue: VecDeque<Expect>,
    /// Bytes for the client.
    pub out: BytesMut,
    /// An answer held for verify-on-empty.
    hold: Option<BytesMut>,
    partial: Option<Partial>,
    /// Durations to observe (drained by the session's shell).
    pub timings: Vec<Timing>,
    /// The held answer is complete: whether it was empty.
    held_done: Option<bool>,
}

/// Frames read whole before deciding (small, and each may end an answer
/// or carry something the session reads).
fn whole_frame(tag: u8) -> bool {
    matches!(
        tag,
        b'Z' | b't' | b'S' | b'E' | b'C' | b'T' | b'1' | b'2' | b'3' | b'n' | b'I' | b's'
    )
}

impl Answers {
    /// Queues an expected answer.
    pub fn push(&mut self, e: Expect) {
        self.queue.push_back(e);
    }

    /// Takes back the entry queued last.
    pub fn pop_back(&mut self) -> Option<Expect> {
        self.queue.pop_back()
    }

    /// Nothing expected.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Entries still expected from `region`'s upstream.
    pub fn owed_by(&self, region: &str) -> bool {
        self.queue
            .iter()
            .any(|e| matches!(&e.source, Source::Upstream(r) if same_region(r, region)))
    }

    /// An Execute for `region` is still unanswered (a COPY it started may
    /// be running).
    pub fn executing(&self, region: &str) -> bool {
        self.queue.iter().any(|e| {
            e.answer == Answer::Execute
                && matches!(&e.source, Source::Upstream(r) if same_region(r, region))
        })
    }

    /// An Execute started COPY FROM STDIN: the Syncs sent to `region` after
    /// it and before its data ended are ignored by PostgreSQL.
    fn drop_syncs_ignored_by_copy(&mut self, region: &Arc<str>, epoch: u64) {
        self.queue.retain(|e| {
            !(e.answer == Answer::Ready
                && e.copy_epoch == epoch
                && e.fate != Fate::Abort
                && matches!(&e.source, Source::Upstream(r) if same_region(r, region)))
        });
    }

    /// An upstream that owes only CloseComplete and ReadyForQuery answers
    /// (a statement closed, a batch that ran nothing) was lost: geogate
    /// gives those answers itself, as nothing of the client's data was at
    /// stake (a closed statement is gone with its connection anyway).
    /// `false`, changing nothing, when it owed anything else.
    pub fn answer_for_lost(&mut self, region: &str) -> bool {
        let owed = |e: &Expect| matches!(&e.source, Source::Upstream(r) if same_region(r, region));
        if self.partial.is_some()
            && self
                .front_upstream()
                .is_some_and(|r| same_region(r, region))
        {
            return false;
        }
        if !self
            .queue
            .iter()
            .filter(|e| owed(e))
            .all(|e| matches!(e.answer, Answer::Close | Answer::Ready))
        {
            return false;
        }
        for e in self.queue.iter_mut().filter(|e| owed(e)) {
            let own = match (e.answer, e.fate) {
                (_, Fate::Swallow | Fate::Abort) => Own::Raw(BytesMut::new()),
                (Answer::Close, _) => Own::Raw(BytesMut::from(&b"3\0\0\0\x04"[..])),
                _ => Own::Ready,
            };
            e.source = Source::Own(own);
        }
        true
    }

    /// The upstream the front answer comes from (what the shell reads next).
    pub fn front_upstream(&self) -> Option<&Arc<str>> {
        match self.queue.front().map(|e| &e.source) {
            Some(Source::Upstream(r)) => Some(r),
            _ => None,
        }
    }

    /// An answer is being held for verify-on-empty.
    pub fn holding(&self) -> bool {
        self.hold.is_some()
    }

    /// Starts holding answers (entries with [`Fate::Hold`]).
    pub fn start_hold(&mut self) {
        self.hold = Some(BytesMut::new());
    }

    /// Gives verification up: what is held goes to the client, and the rest
    /// of the answer follows unheld.
    pub fn release_hold(&mut self) {
        if let Some(h) = self.hold.take() {
            self.out.extend_from_slice(&h);
        }
        for e in self.queue.iter_mut() {
            if e.fate == Fate::Hold {
                e.fate = Fate::Forward;
            }
        }
    }

    /// The held answer just completed: `Some(empty)`, once.
    pub fn take_held_done(&mut self) -> Option<bool> {
        self.held_done.take()
    }

    /// Drops the held answer: the statement runs again elsewhere.
    pub fn discard_hold(&mut self) {
        self.hold = None;
    }

    /// Walks what `rx` (bytes from `region`'s upstream) holds against the
    /// queue, and writes geogate's own answers as they come due. Stops at
    /// the first event the session must apply; `status` is the client's
    /// transaction status byte now (for geogate's own ReadyForQuery).
    pub fn pump(
        &mut self,
        region: Option<&Arc<str>>,
        rx: &mut BytesMut,
        status: u8,
    ) -> Result<Pumped, FrameError> {
        loop {
            let Some(front) = self.queue.front() else {
                return Ok(Pumped::Empty);
            };
            match &front.source {
                Source::Own(_) => {
                    let e = self.queue.pop_front().expect("front exists");
                    self.emit(e, status);
                    continue;
                }
                Source::Upstream(r) if region.is_none_or(|reg| !same_region(reg, r)) => {
                    return Ok(Pumped::NeedBytes(Some(r.clone())));
                }
                // Nothing read yet (the client's messages just went out):
                // nothing to walk.
                Source::Upstream(r) if rx.is_empty() => {
                    return Ok(Pumped::NeedBytes(Some(r.clone())));
                }
                Source::Upstream(_) => {}
            }
            let region = region.expect("matched above").clone();
            let (consumed, event) = self.walk(&region, rx)?;
            rx.advance(consumed);
            match event {
                Some(ev) => return Ok(ev),
                None if rx.is_empty() || self.partial.is_some() => {
                    return Ok(Pumped::NeedBytes(Some(region)));
                }
                // The front changed to another source: go on with it.
                None if !self
                    .front_upstream()
                    .is_some_and(|r| same_region(r, &region)) =>
                {
                    continue;
                }
                None => return Ok(Pumped::NeedBytes(Some(region))),
            }
        }
    }

    /// Bytes from an upstream that owes nothing (notifications, notices,
    /// or a gateway announcing that it ends the connection). Async
    /// messages go to the client; an error is kept from it (its session
    /// goes on elsewhere): `true` when it was a FATAL.
    pub fn unsolicited(&mut self, rx: &mut BytesMut) -> Result<bool, FrameError> {
        let mut fatal = false;
        while let Some(h) = peek_frame(rx, usize::MAX)? {
            if rx.len() < h.total_len {
                break;
            }
            let frame = rx.split_to(h.total_len);
            match h.tag {
                b'A' | b'N' | b'S' => self.out.extend_from_slice(&frame),
                b'E' => fatal |= is_fatal(&frame[5..]),
                _ => {}
            }
        }
        Ok(fatal)
    }

    /// Walks frames of `rx` for the front entry (an upstream's). Returns
    /// the bytes consumed and the event met, if any.
    fn walk(
        &mut self,
        region: &Arc<str>,
        rx: &BytesMut,
    ) -> Result<(usize, Option<Pumped>), FrameError> {
        let mut pos = 0;
        // A run of bytes with one sink, copied in one go.
        let mut run: Option<(usize, Sink)> = None;
        macro_rules! flush_run {
            ($end:expr) => {
                if let Some((start, sink)) = run.take() {
                    self.put(sink, &rx[start..$end]);
                }
            };
        }
        loop {
            if let Some(p) = self.partial {
                let n = p.left.min(rx.len() - pos);
                match run {
                    Some((_, s)) if s == p.sink => {}
                    _ => {
                        flush_run!(pos);
                        run = Some((pos, p.sink));
                    }
                }
                pos += n;
                if n == p.left {
                    self.partial = None;
                } else {
                    self.partial = Some(Partial {
                        left: p.left - n,
                        sink: p.sink,
                    });
                    break;
                }
            }
            let Some(h) = peek_frame(&rx[pos..], usize::MAX)? else {
                break;
            };
            let whole = whole_frame(h.tag);
            if whole && rx.len() - pos < h.total_len {
                break;
            }
            let Some(front) = self.queue.front() else {
                break;
            };
            if !matches!(&front.source, Source::Upstream(r) if same_region(r, region)) {
                break;
            }
            if h.tag == b'G' && front.answer == Answer::Execute && self.partial.is_none() {
                // Copy-in mode starts: the Syncs sent since are ignored.
                let epoch = front.copy_epoch;
                let front = self.queue.pop_front().expect("checked above");
                self.drop_syncs_ignored_by_copy(region, epoch);
                self.queue.push_front(front);
            }
            let front = self.queue.front().expect("checked above");
            let sink = match (front.fate, h.tag) {
                // Notifications and settings reports are the client's,
                // whoever asked for the answer around them.
                (_, b'A' | b'S') => Sink::Client,
                (Fate::Forward, _) => Sink::Client,
                (Fate::Hold, _) => Sink::Hold,
                (Fate::Swallow, b'E') => Sink::Client,
                (Fate::Swallow | Fate::Abort, _) => Sink::Drop,
            };
            let sink = if sink == Sink::Hold && self.hold.is_none() {
                Sink::Client
            } else {
                sink
            };
            if !whole {
                // Streamed: rows, copy data, notices…
                match run {
                    Some((_, s)) if s == sink => {}
                    _ => {
                        flush_run!(pos);
                        run = Some((pos, sink));
                    }
                }
                let avail = rx.len() - pos;
                if avail < h.total_len {
                    self.partial = Some(Partial {
                        left: h.total_len - avail,
                        sink,
                    });
                    pos = rx.len();
                    break;
                }
                pos += h.total_len;
                continue;
            }
            let frame = &rx[pos..pos + h.total_len];
            let body = &frame[5..];
            let front = self.queue.front().expect("checked above");
            let answer = front.answer;

            let ends = answer.ended_by(h.tag) || (h.tag == b'E' && answer.extended());
            // What this frame tells the session, besides the bytes.
            let mut event = match h.tag {
                b'Z' if ends => Some(Pumped::Ready {
                    region: region.clone(),
                    status: body.first().copied().unwrap_or(b'I'),
                    to_client: None,
                }),
                b't' => front.describes.as_ref().and_then(|(name, g)| {
                    param_types(body).map(|types| Pumped::ParamTypes {
                        name: name.clone(),
                        generation: *g,
                        types,
                    })
                }),
                b'S' => standard_strings(body).map(Pumped::StandardStrings),
                b'E' if is_fatal(body) => Some(Pumped::Fatal(region.clone())),
                _ => None,
            };
            // The status byte of a ReadyForQuery that reaches the client is
            // the session's to write: the client's transaction may differ
            // from the gateway's (a deferred BEGIN is unknown to it).
            let patch = h.tag == b'Z' && ends && sink != Sink::Drop;
            if let Some(Pumped::Ready { to_client, .. }) = &mut event {
                *to_client = patch.then_some(sink == Sink::Hold);
            }
            match run {
                Some((_, s)) if s == sink => {}
                _ => {
                    flush_run!(pos);
                    run = Some((pos, sink));
                }
            }
            pos += h.total_len;
            if patch {
                flush_run!(pos - 1);
            }
            if ends {
                let done = self.queue.pop_front().expect("checked above");
                if let Some(t) = done.timing {
                    self.timings.push(t);
                }
                // geogate's own abort error skips nothing: the client's
                // messages after it were never sent.
                if h.tag == b'E' && answer.extended() && done.fate != Fate::Abort {
                    self.skip_after_error(region);
                }
                if done.fate == Fate::Hold && matches!(answer, Answer::Ready | Answer::Query) {
                    flush_run!(pos);
                    self.held_done = Some(self.hold.as_deref().is_some_and(held_answer_is_empty));
                }
            }
            if let Some(ev) = event {
                flush_run!(pos);
                return Ok((pos, Some(ev)));
            }
            if ends
                && !self
                    .front_upstream()
                    .is_some_and(|r| same_region(r, region))
            {
                break;
            }
        }
        flush_run!(pos);
        Ok((pos, None))
    }

    /// After an upstream's error in a batch, PostgreSQL skips the batch's
    /// messages up to its Sync: their answers never come.
    fn skip_after_error(&mut self, region: &Arc<str>) {
        while let Some(e) = self.queue.front() {
            let skip = match &e.source {
                Source::Upstream(r) => same_region(r, region) && e.answer.extended(),
                Source::Own(_) => e.skippable,
            };
            if !skip {
                break;
            }
            self.queue.pop_front();
        }
    }

    fn put(&mut self, sink: Sink, bytes: &[u8]) {
        match sink {
            Sink::Client => self.out.extend_from_slice(bytes),
            Sink::Hold => match &mut self.hold {
                Some(h) => h.extend_from_slice(bytes),
                None => self.out.extend_from_slice(bytes),
            },
            Sink::Drop => {}
        }
    }

    /// Writes the status byte of a forwarded ReadyForQuery: called right
    /// after [`Pumped::Ready`] for an answer that reaches the client.
    pub fn put_status(&mut self, held: bool, status: u8) {
        match (&mut self.hold, held) {
            (Some(h), true) => h.put_u8(status),
            _ => self.out.put_u8(status),
        }
    }

    fn emit(&mut self, e: Expect, status: u8) {
        let Source::Own(own) = e.source else { return };
        let out = match (&mut self.hold, e.fate) {
            (Some(h), Fate::Hold) => h,
            _ => &mut self.out,
        };
        match own {
            Own::Raw(b) => out.extend_from_slice(&b),
            Own::Error(err) => err.encode(out),
            Own::Notice(err) => err.encode_notice(out),
            Own::Ready => put_ready(out, status),
        }
    }
}

/// ReadyForQuery with `status`.
pub fn put_ready(out: &mut BytesMut, status: u8) {
    out.put_slice(&[b'Z', 0, 0, 0, 5, status]);
}

/// A FATAL or PANIC ErrorResponse body.
fn is_fatal(body: &[u8]) -> bool {
    fields(body).any(|(k, v)| k == b'S' && (v == b"FATAL" || v == b"PANIC"))
}

/// The fields of an ErrorResponse/NoticeResponse body.
pub fn fields(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&k, tail) = rest.split_first()?;
        if k == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        let v = &tail[..end];
        rest = &tail[end + 1..];
        Some((k, v))
    })
}

/// The type OIDs of a ParameterDescription body.
fn param_types(body: &[u8]) -> Option<Vec<u32>> {
    let n = i16::from_be_bytes(body.get(..2)?.try_into().ok()?).max(0) as usize;
    (0..n)
        .map(|i| {
            let b = body.get(2 + 4 * i..6 + 4 * i)?;
            Some(u32::from_be_bytes(b.try_into().ok()?))
        })
        .collect()
}

/// `standard_conforming_strings` from a ParameterStatus body.
fn standard_strings(body: &[u8]) -> Option<bool> {
    let rest = body.strip_prefix(b"standard_conforming_strings\0")?;
    Some(rest.starts_with(b"on"))
}

/// A complete held answer read nothing and wrote nothing: no row, no
/// error, no COPY, and every command reported zero rows.
fn held_answer_is_empty(hold: &[u8]) -> bool {
    let mut pos = 0;
    while let Ok(Some(h)) = peek_frame(&hold[pos..], usize::MAX) {
        // (The closing ReadyForQuery lacks its status byte: it is written
        // when the answer is released.)
        let Some(frame) = hold.get(pos..pos + h.total_len) else {
            break;
        };
        match h.tag {
            // Tenant moves: a guarded INSERT's NULL region (23502), a
            // foreign-key violation (the composite `(tenant, region)` key no
            // longer matches the directory) or a serialization failure (the
            // directory row moved under the guard's lock) wrote nothing; outside a transaction the
            // statement may run again once the tenant's region is re-read.
            b'E' if retryable_error(&frame[5..]) => {}
            b'D' | b'E' | b'G' | b'H' | b'W' | b's' => return false,
            b'C' => {
                let tag = frame[5..].split(|&b| b == 0).next().unwrap_or(&[]);
                if !tag.ends_with(b" 0") {
                    return false;
                }
            }
            _ => {}
        }
        pos += h.total_len;
    }
    true
}

/// An ErrorResponse (its body) a stale tenant region can cause: `23502`,
/// `23503` or `40001` (docs/tenant-moves.md).
fn retryable_error(mut body: &[u8]) -> bool {
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if field == b'C' {
            return [
                sqlstate::NOT_NULL_VIOLATION,
                sqlstate::FOREIGN_KEY_VIOLATION,
                sqlstate::SERIALIZATION_FAILURE,
            ]
            .iter()
            .any(|code| rest[..end] == *code.as_bytes());
        }
        body = rest.get(end + 1..).unwrap_or(&[]);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::frame;

    fn eu() -> Arc<str> {
        "eu".into()
    }

    #[test]
    fn rows_stream_and_ready_is_reported_with_its_status_written_by_the_session() {
        let mut a = Answers::default();
        a.push(Expect::upstream(&eu(), Answer::Query, Fate::Forward));
        let t = frame(b'T', b"\0\0");
        let d = frame(b'D', b"\0\0");
        let c = frame(b'C', b"SELECT 1\0");
        let z = frame(b'Z', b"I");
        let mut rx = BytesMut::from(&[t.clone(), d.clone(), c.clone(), z][..].concat()[..]);
        let p = a.pump(Some(&eu()), &mut rx, b'I').unwrap();
        assert_eq!(
            p,
            Pumped::Ready {
                region: eu(),
                status: b'I',
                to_client: Some(false),
            }
        );
        a.put_status(false, b'T');
        assert_eq!(&a.out[..], &[t, d, c, frame(b'Z', b"T")].concat()[..]);
        assert!(rx.is_empty());
        assert_eq!(a.pump(Some(&eu()), &mut rx, b'I').unwrap(), Pumped::Empty);
    }

    #[test]
    fn a_large_row_split_over_reads_streams_without_waiting_for_its_end() {
        let mut a = Answers::default();
        a.push(Expect::upstream(&eu(), Answer::Execute, Fate::Forward));
        let d = frame(b'D', &[7u8; 1000]);
        let mut rx = BytesMut::from(&d[..300]);
        assert!(matches!(
            a.pump(Some(&eu()), &mut rx, b'I').unwrap(),
            Pumped::NeedBytes(_)
        ));
        assert_eq!(a.out.len(), 300);
        let mut rx = BytesMut::from(&d[300..]);
        a.pump(Some(&eu()), &mut rx, b'I').unwrap();
        assert_eq!(&a.out[..], &d[..]);
    }

    #[test]
    fn an_error_skips_the_batch_up_to_its_sync_but_not_a_refusal() {
        let mut a = Answers::default();
        a.push(Expect::upstream(&eu(), Answer::Bind, Fate::Forward));
        a.push(Expect::upstream(&eu(), Answer::Execute, Fate::Forward));
        a.push(Expect::own(
            Own::Raw(BytesMut::from(&frame(b'2', b"")[..])),
            Answer::Bind,
        ));
        a.push(Expect::upstream(&eu(), Answer::Ready, Fate::Forward));
        let err = frame(b'E', b"SERROR\0C22012\0\0");
        let mut rx = BytesMut::from(&[err.clone(), frame(b'Z', b"I")].concat()[..]);
        let p = a.pump(Some(&eu()), &mut rx, b'I').unwrap();
        assert!(matches!(p, Pumped::Ready { .. }));
        a.put_status(false, b'I');
        assert_eq!(&a.out[..], &[err, frame(b'Z', b"I")].concat()[..]);
        assert!(a.is_empty());
    }

    #[test]
    fn swallowed_answers_are_dropped_and_own_answers_come_in_order() {
        let mut a = Answers::default();
        a.push(Expect::upstream(&eu(), Answer::Parse, Fate::Swallow));
        a.push(Expect::own(
            Own::Raw(BytesMut::from(&frame(b'1', b"")[..])),
            Answer::Parse,
        ));
        a.push(Expect::upstream(&eu(), Answer::Bind, Fate::Forward));
        let mut rx = BytesMut::from(&[frame(b'1', b""), frame(b'2', b"")].concat()[..]);
        a.pump(Some(&eu()), &mut rx, b'I').unwrap();
        assert_eq!(
            &a.out[..],
            &[frame(b'1', b""), frame(b'2', b"")].concat()[..]
        );
    }

    #[test]
    fn empty_answers_are_told_from_answers_with_rows() {
        let c0 = frame(b'C', b"UPDATE 0\0");
        let c3 = frame(b'C', b"UPDATE 3\0");
        assert!(held_answer_is_empty(
            &[frame(b'2', b""), c0.clone()].concat()
        ));
        assert!(!held_answer_is_empty(&c3));
        assert!(!held_answer_is_empty(&frame(b'D', b"\0\0")));
        assert!(!held_answer_is_empty(&frame(b'E', b"SERROR\0\0")));
        // Stale-region errors write nothing: the statement may run again.
        assert!(held_answer_is_empty(&frame(b'E', b"SERROR\0C23503\0\0")));
        assert!(held_answer_is_empty(&frame(b'E', b"SERROR\0C40001\0\0")));
        assert!(!held_answer_is_empty(&frame(b'E', b"SERROR\0C23505\0\0")));
    }
}
