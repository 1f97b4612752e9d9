//! Verify on empty: a rewritten statement that found nothing may have been
//! sent with a stale tenant→region entry (the tenant moved). Its answer is
//! held back until it is known to be non-empty; an empty one makes geogate
//! look the tenant up afresh and, when the tenant now lives elsewhere, run
//! the statement again there. Safe, as an empty answer read and wrote
//! nothing. Inside a transaction nothing is re-routed (the transaction is
//! pinned): the entry is refreshed so the next transaction is right.

use std::sync::Arc;

use bytes::BytesMut;

use super::Session;
use super::state::TxnStatus;
use crate::wire::peek_frame;

/// A request whose answer is held until it is known to be non-empty.
#[derive(Debug)]
pub(super) struct Verify {
    /// The ReadyForQuery count that ends the answer.
    pub z: u64,
    /// What to send again when the tenant moved.
    pub replay: Replay,
    /// Where it ran.
    pub region: Arc<str>,
    /// Tenants the rewrite looked up.
    pub tenants: Vec<String>,
    /// Outside a transaction: may run again elsewhere.
    pub rerun: bool,
    /// The answer so far.
    pub hold: BytesMut,
    /// The whole answer arrived and it is empty.
    pub empty: bool,
}

/// The client's request, kept to be sent again.
#[derive(Debug)]
pub(super) enum Replay {
    /// A simple Query: its frame and SQL text.
    Query {
        /// The client's Query message.
        frame: BytesMut,
        /// Its SQL text.
        sql: String,
    },
    /// An extended-protocol batch holding one Bind: the client's frames
    /// from the batch's (unnamed) Parse, or from its Bind, up to its Sync.
    Batch {
        /// The frames, as the client sent them.
        frames: BytesMut,
        /// The frames start at the Bind: what the batch's earlier messages
        /// (a named Parse, Describe) were answered stays valid and is kept;
        /// only the answer from BindComplete on is replaced.
        from_bind: bool,
        /// The portal the Bind creates.
        portal: Vec<u8>,
        /// The batch's Sync has not come yet: its messages are still
        /// collected, and client input is not paused.
        collecting: bool,
    },
}

impl Verify {
    /// The batch's frames are still being collected (input flows).
    pub fn collecting(&self) -> bool {
        matches!(
            self.replay,
            Replay::Batch {
                collecting: true,
                ..
            }
        )
    }
}

/// The name at the start of `body` (up to its NUL).
fn cstr(body: &[u8]) -> &[u8] {
    body.split(|&b| b == 0).next().unwrap_or(&[])
}

/// The answer held before the first BindComplete: what the batch's
/// messages before its Bind were answered (`None`: no BindComplete).
fn before_bind_complete(hold: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    while let Ok(Some(h)) = peek_frame(&hold[pos..], usize::MAX) {
        if h.tag == b'2' {
            return Some(&hold[..pos]);
        }
        pos += h.total_len;
    }
    None
}

/// What a (partial) answer held so far shows.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A row or an error: not empty, release it.
    NotEmpty,
    /// Nothing decisive yet.
    Undecided,
    /// Complete, and every command reported zero rows.
    Empty,
}

/// Reads the frames of a held answer (it starts at a frame boundary).
fn inspect(hold: &[u8]) -> Seen {
    let mut pos = 0;
    let mut any_complete = false;
    while let Ok(Some(h)) = peek_frame(&hold[pos..], usize::MAX) {
        let Some(frame) = hold.get(pos..pos + h.total_len) else {
            break;
        };
        match h.tag {
            b'D' | b'E' | b'G' | b'H' => return Seen::NotEmpty,
            b'C' => {
                let tag = frame[5..].split(|&b| b == 0).next().unwrap_or(&[]);
                if !tag.ends_with(b" 0") {
                    return Seen::NotEmpty;
                }
                any_complete = true;
            }
            b'Z' => {
                return if any_complete {
                    Seen::Empty
                } else {
                    Seen::NotEmpty
                };
            }
            _ => {}
        }
        pos += h.total_len;
    }
    Seen::Undecided
}

impl Session {
    /// Whether the bytes about to be placed belong to a held answer.
    pub(super) fn verifying_next(&self) -> bool {
        self.verify
            .as_ref()
            .is_some_and(|v| v.z == self.z_seen + 1 && !v.empty)
    }

    /// Adds bytes of the held answer; releases it as soon as it shows a row.
    pub(super) fn hold_for_verify(&mut self, bytes: &[u8]) {
        let Some(v) = self.verify.as_mut() else {
            return;
        };
        v.hold.extend_from_slice(bytes);
        match inspect(&v.hold) {
            Seen::Undecided => {}
            Seen::Empty => v.empty = true,
            Seen::NotEmpty => {
                let v = self.verify.take().expect("checked above");
                self.to_client.extend_from_slice(&v.hold);
            }
        }
    }

    /// A message of the batch whose answer will be held: kept for a replay
    /// when it belongs to the verified statement (Describe, Execute of its
    /// portal, the Sync); anything else (another statement, a Flush that
    /// wants answers before the Sync) gives verification up for this batch.
    pub(super) fn collect_for_verify(&mut self, tag: u8, frame: &[u8]) {
        let Some(Verify {
            replay:
                Replay::Batch {
                    frames,
                    from_bind,
                    portal,
                    collecting: collecting @ true,
                },
            ..
        }) = self.verify.as_mut()
        else {
            return;
        };
        let body = frame.get(5..).unwrap_or(&[]);
        let keep = match (tag, body) {
            (b'E', _) => cstr(body) == portal.as_slice(),
            (b'D', [b'P', name @ ..]) => cstr(name) == portal.as_slice(),
            // The unnamed statement exists in the new region only when
            // the replay parses it there.
            (b'D', [b'S', name @ ..]) => !cstr(name).is_empty() || !*from_bind,
            (b'S', _) => {
                *collecting = false;
                true
            }
            _ => false,
        };
        if keep {
            frames.extend_from_slice(frame);
        } else {
            self.cancel_verify();
        }
    }

    /// Gives up verifying: what is held so far goes to the client, and the
    /// rest of the answer follows it unheld.
    fn cancel_verify(&mut self) {
        if let Some(v) = self.verify.take() {
            self.to_client.extend_from_slice(&v.hold);
        }
    }

    /// The held answer was empty: look its tenants up afresh; run it again
    /// where they live now, or release the empty answer.
    pub(super) async fn finish_verify(&mut self) {
        let Some(v) = self.verify.take_if(|v| v.empty) else {
            return;
        };
        let Some(cache) = self.live.router.tenant_cache().cloned() else {
            self.to_client.extend_from_slice(&v.hold);
            return;
        };
        let mut moved = false;
        for t in &v.tenants {
            let fresh = cache.refresh_one(t).await;
            moved |= fresh.rerun_in(&v.region).is_some();
        }
        // The answer's own ReadyForQuery tells whether a transaction is
        // open now (a pipelined BEGIN may have run before it).
        let outside_txn = self.state.txn == TxnStatus::Idle && self.pending_begin.is_none();
        if moved && v.rerun && outside_txn && self.upstream_quiet() {
            tracing::info!(region = %v.region, "tenant moved: running the statement again in its new region");
            match &v.replay {
                Replay::Query { frame, sql } => {
                    if self.route_query_once(frame, sql).await.is_ok() {
                        return;
                    }
                }
                Replay::Batch {
                    frames, from_bind, ..
                } => {
                    let prefix = if *from_bind {
                        before_bind_complete(&v.hold)
                    } else {
                        Some(&[][..])
                    };
                    if let Some(prefix) = prefix {
                        // The client reads one answer: the first messages'
                        // answers from here, the statement's from the new
                        // region. The frames go back in front of the
                        // client's input, through the normal routing path
                        // (the session is paused until now).
                        self.to_client.extend_from_slice(prefix);
                        let mut cin = BytesMut::with_capacity(frames.len() + self.cin.len());
                        cin.extend_from_slice(frames);
                        cin.extend_from_slice(&self.cin);
                        self.cin = cin;
                        self.verify_replay = true;
                        return;
                    }
                }
            }
        }
        self.to_client.extend_from_slice(&v.hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::frame;

    #[test]
    fn answers_are_empty_only_when_complete_without_rows() {
        let t = frame(b'T', b"\0\0");
        let c0 = frame(b'C', b"SELECT 0\0");
        let u0 = frame(b'C', b"UPDATE 0\0");
        let c3 = frame(b'C', b"UPDATE 3\0");
        let d = frame(b'D', b"\0\0");
        let z = frame(b'Z', b"I");
        assert_eq!(
            inspect(&[t.clone(), c0.clone(), z.clone()].concat()),
            Seen::Empty
        );
        assert_eq!(inspect(&[u0.clone(), z.clone()].concat()), Seen::Empty);
        assert_eq!(inspect(&[t.clone(), c0.clone()].concat()), Seen::Undecided);
        assert_eq!(inspect(&[t.clone(), d].concat()), Seen::NotEmpty);
        assert_eq!(inspect(&[c3, z.clone()].concat()), Seen::NotEmpty);
        assert_eq!(
            inspect(&[frame(b'E', b"SERROR\0\0"), z].concat()),
            Seen::NotEmpty
        );
        // A frame cut in the middle waits for more.
        assert_eq!(inspect(&t[..3]), Seen::Undecided);
    }

    #[test]
    fn the_answers_before_bind_complete_are_kept_for_a_replay_from_the_bind() {
        let parse_complete = frame(b'1', b"");
        let no_data = frame(b'n', b"");
        let bind_complete = frame(b'2', b"");
        let c0 = frame(b'C', b"SELECT 0\0");
        let hold = [
            parse_complete.clone(),
            no_data.clone(),
            bind_complete.clone(),
            c0.clone(),
        ]
        .concat();
        assert_eq!(
            before_bind_complete(&hold),
            Some(&[parse_complete, no_data].concat()[..])
        );
        assert_eq!(
            before_bind_complete(&[bind_complete, c0.clone()].concat()),
            Some(&[][..])
        );
        assert_eq!(before_bind_complete(&c0), None);
    }
}
