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
use crate::wire::peek_frame;

/// A request whose answer is held until it is known to be non-empty.
#[derive(Debug)]
pub(super) struct Verify {
    /// The ReadyForQuery count that ends the answer.
    pub z: u64,
    /// The client's Query message, to send again.
    pub frame: BytesMut,
    /// Its SQL text.
    pub sql: String,
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
        if moved && v.rerun && self.upstream_quiet() {
            tracing::info!(region = %v.region, "tenant moved: running the statement again in its new region");
            if self.route_query_once(&v.frame, &v.sql).await.is_ok() {
                return;
            }
        }
        self.to_client.extend_from_slice(&v.hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

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
}
