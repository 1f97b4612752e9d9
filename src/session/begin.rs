//! A transaction is pinned to one upstream from its start: a BEGIN outside a
//! transaction is answered by geogate and sent later, with the
//! transaction's first statement, to the region that statement needs.
//! Sent as a simple query or through Bind (as JDBC does), and a COMMIT or
//! ROLLBACK of a transaction that never ran a statement is answered here.

use bytes::{BufMut, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::extendedquery::Sync as SyncMsg;
use pgwire::messages::simplequery::Query;

use super::state::{PreparedStatement, TxnStatus};
use super::{Payload, Session};
use crate::analyze::StatementKind;
use crate::route::Plan;
use crate::wire::validate::BindFrame;

impl Session {
    /// `BEGIN` outside a transaction is answered by geogate and sent later,
    /// with the transaction's first statement, to the region that statement
    /// needs: a transaction is pinned to one upstream from its start.
    pub(super) fn defer_begin(&mut self, plan: &Plan, frame: &[u8], sql: &str) -> bool {
        if !plan.is_only(StatementKind::Begin)
            || self.state.txn != TxnStatus::Idle
            || self.pending_begin.is_some()
        {
            return false;
        }
        self.pending_begin = Some(BytesMut::from(frame));
        self.state.txn = TxnStatus::InTransaction;
        let tag = begin_tag(sql);
        self.inject_after_pending(Some(Payload::Raw(command_complete(tag))), true);
        true
    }

    /// A BEGIN executed through Bind, outside a transaction, is deferred as
    /// a simple-protocol one is: geogate answers its messages and sends the
    /// BEGIN (as a simple query of its text) ahead of the transaction's
    /// first statement, to that statement's region. Only when the batch
    /// holds nothing but this statement's Parse and Describe before the
    /// Bind, which are prepared on the current upstream as a hidden request
    /// (so later Binds of the statement find it) while geogate answers them.
    /// The Bind's Describe/Execute are answered by [`Session::on_begin_batch`].
    pub(super) fn defer_bound_begin(
        &mut self,
        plan: &Plan,
        stmt: &PreparedStatement,
        bind: &BindFrame<'_>,
        no_values: bool,
    ) -> bool {
        if !plan.is_only(StatementKind::Begin)
            || self.state.txn != TxnStatus::Idle
            || self.pending_begin.is_some()
            || self.unsynced
            || !no_values
            || !stmt.param_types.is_empty()
            // Held messages are prepared on the current upstream: it must
            // be there (an idle one lost is reopened by normal routing).
            || !self.held.is_empty() && !self.upstreams.contains_key(&self.active)
        {
            return false;
        }
        // Answers to the held messages, as the gateway would give them.
        let name = bind.statement_name().as_bytes();
        let mut answers = BytesMut::new();
        let mut pos = 0;
        while let Ok(Some(h)) = crate::wire::peek_frame(&self.held[pos..], usize::MAX) {
            let Some(f) = self.held.get(pos..pos + h.total_len) else {
                return false;
            };
            let body = &f[5..];
            match (h.tag, body) {
                (b'P', _) if cstr(body) == name => put_empty(&mut answers, b'1'),
                (b'D', [b'S', n @ ..]) if cstr(n) == name => put_no_params_no_data(&mut answers),
                _ => return false,
            }
            pos += h.total_len;
        }
        if !self.held.is_empty() {
            self.release_held();
            let _ = SyncMsg::new().encode(&mut self.to_up);
            self.z_expect += 1;
            self.hidden.push_back(self.z_expect);
            self.unsynced = false;
        }
        put_empty(&mut answers, b'2');
        let mut begin = BytesMut::new();
        let _ = Query::new(stmt.sql.to_string()).encode(&mut begin);
        self.pending_begin = Some(begin);
        self.state.txn = TxnStatus::InTransaction;
        let body = bind.raw().get(5..).unwrap_or(&[]);
        self.begin_batch = Some(BeginBatch {
            answers,
            portal: cstr(body).to_vec(),
            statement: name.to_vec(),
            tag: begin_tag(&stmt.sql),
        });
        self.note_statement(plan);
        true
    }

    /// A message after a deferred Bind of BEGIN, in its batch: Describe and
    /// Execute of its portal are answered here, and the Sync ends the batch
    /// with geogate's ReadyForQuery. Anything else (JDBC sends the
    /// transaction's first statement in the same batch) gets the answers so
    /// far, then goes its normal way: `false`. (When nothing in the rest
    /// of the batch is routed — a Close or Flush only — its Sync is answered
    /// by the gateway, whose status byte does not know of the deferred
    /// transaction yet.)
    pub(super) fn on_begin_batch(&mut self, tag: u8, frame: &[u8]) -> bool {
        let Some(b) = self.begin_batch.as_mut() else {
            return false;
        };
        let body = frame.get(5..).unwrap_or(&[]);
        match (tag, body) {
            (b'D', [b'P', name @ ..]) if cstr(name) == b.portal.as_slice() => {
                put_empty(&mut b.answers, b'n');
                true
            }
            (b'E', _) if cstr(body) == b.portal.as_slice() => {
                b.answers.extend_from_slice(&command_complete(b.tag));
                true
            }
            (b'D', [b'S', name @ ..]) if cstr(name) == b.statement.as_slice() => {
                put_no_params_no_data(&mut b.answers);
                true
            }
            (b'S', _) => {
                let b = self.begin_batch.take().expect("checked above");
                self.inject_after_pending(Some(Payload::Raw(b.answers)), true);
                true
            }
            _ => {
                let b = self.begin_batch.take().expect("checked above");
                self.inject_after_pending(Some(Payload::Raw(b.answers)), false);
                false
            }
        }
    }

    /// COMMIT or ROLLBACK of a transaction that never sent a statement:
    /// nothing reached a gateway, so geogate answers.
    pub(super) fn answer_deferred_end(&mut self, plan: &Plan) -> bool {
        let tag = if plan.is_only(StatementKind::Commit) {
            "COMMIT"
        } else if plan.is_only(StatementKind::Rollback) {
            "ROLLBACK"
        } else {
            return false;
        };
        if self.pending_begin.take().is_none() {
            return false;
        }
        self.state.txn = TxnStatus::Idle;
        self.inject_after_pending(Some(Payload::Raw(command_complete(tag))), true);
        true
    }

    /// Sends a deferred BEGIN ahead of the statement about to be forwarded;
    /// its answer (already given by geogate) is dropped.
    pub(super) fn send_deferred_begin(&mut self) {
        if let Some(begin) = self.pending_begin.take() {
            self.to_up.extend_from_slice(&begin);
            self.z_expect += 1;
            self.hidden.push_back(self.z_expect);
        }
    }
}

/// The answers geogate owes for a deferred Bind of BEGIN, until its Sync.
#[derive(Debug)]
pub(super) struct BeginBatch {
    /// Answers so far (ParseComplete, BindComplete, CommandComplete …).
    answers: BytesMut,
    /// The portal the Bind created.
    portal: Vec<u8>,
    /// The statement it bound.
    statement: Vec<u8>,
    /// The command tag of its Execute.
    tag: &'static str,
}

/// The name at the start of `body` (up to its NUL).
fn cstr(body: &[u8]) -> &[u8] {
    body.split(|&b| b == 0).next().unwrap_or(&[])
}

/// A message with no body (ParseComplete, BindComplete, NoData).
fn put_empty(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_i32(4);
}

/// A Describe of a statement without parameters (checked) or rows:
/// ParameterDescription with none, then NoData.
fn put_no_params_no_data(out: &mut BytesMut) {
    out.put_u8(b't');
    out.put_i32(6);
    out.put_i16(0);
    put_empty(out, b'n');
}

/// The command tag PostgreSQL answers a BEGIN / START TRANSACTION with.
fn begin_tag(sql: &str) -> &'static str {
    let start = sql.trim_start().get(..5).unwrap_or("");
    if start.eq_ignore_ascii_case("start") {
        "START TRANSACTION"
    } else {
        "BEGIN"
    }
}

/// CommandComplete with `tag`, as the gateway would have sent it.
pub(super) fn command_complete(tag: &str) -> BytesMut {
    let mut b = BytesMut::with_capacity(tag.len() + 6);
    b.put_u8(b'C');
    b.put_i32((tag.len() + 5) as i32);
    b.put_slice(tag.as_bytes());
    b.put_u8(0);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_complete_is_a_well_formed_frame() {
        let c = command_complete("BEGIN");
        assert_eq!(&c[..], b"C\0\0\0\x0aBEGIN\0");
    }
}
