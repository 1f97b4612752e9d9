//! The session's I/O loop: client bytes in, backend bytes out, in batches.
//!
//! Both directions run at once (a pipelining client and a gateway streaming
//! a large result must never wait on each other), with bounded buffers:
//! a direction stops reading while its output buffer is above
//! [`HIGH_WATER`]. Backend bytes are never decoded: the [`BackendScanner`]
//! only notes where each ReadyForQuery ends, and whole chunks go to the
//! client as they were read.

use std::io;

use bytes::{Buf, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};

use super::frontend::Flow;
use super::state::TxnStatus;
use super::{Phase, Session, SessionError};
use crate::wire::stream::{PgReader, PgWriter};
use crate::wire::{ClientError, ScanEvents};

/// Output buffered beyond this stops reading the other side.
const HIGH_WATER: usize = 256 * 1024;

enum Event {
    ClientRead(io::Result<usize>),
    UpRead(io::Result<usize>),
    UpWrote(io::Result<usize>),
    ClientWrote(io::Result<usize>),
    /// The server's phase changed (`true`: the server is gone).
    Phase(bool),
}

/// How a session ended.
enum End {
    /// Client said Terminate or closed its socket.
    ClientLeft,
    /// Tell the client this, then close.
    Fatal(ClientError),
    /// Socket error on the client side.
    ClientBroken,
}

impl Session {
    /// Runs the relay until the session ends, then closes every upstream.
    pub(super) async fn finish(mut self, mut client_r: PgReader, mut client_w: PgWriter) {
        let end = self.relay(&mut client_r, &mut client_w).await;
        drop(client_r);
        if let End::Fatal(e) = &end {
            e.encode(&mut self.to_client);
            let out = std::mem::take(&mut self.to_client);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                client_w.write_all_flush(&out),
            )
            .await;
        }
        client_w.shutdown().await;
        // Never reuse a connection that may be mid-transaction: terminate
        // them all; PostgreSQL rolls back whatever was open.
        let peer = self.peer;
        for (region, up) in std::mem::take(&mut self.upstreams) {
            self.upstream_closed(&region);
            up.terminate().await;
        }
        if let Some(peer) = peer {
            crate::logging::connection_closed(peer, &self.client_info(), self.statements);
        }
    }

    /// Counts an upstream connection opened for this session.
    pub(super) fn upstream_opened(&self, region: &str) {
        self.shared.metrics.add_upstream_connections(region, 1);
    }

    /// Counts an upstream connection of this session gone.
    pub(super) fn upstream_closed(&self, region: &str) {
        self.shared.metrics.add_upstream_connections(region, -1);
    }

    async fn relay(&mut self, client_r: &mut PgReader, client_w: &mut PgWriter) -> End {
        let mut phase = self.shared.phase.clone();
        if *phase.borrow_and_update() != Phase::Running {
            self.draining = true;
        }
        // Backend bytes that arrived with the startup answer.
        if !self.uin.is_empty() {
            if let Err(e) = self.on_backend_bytes() {
                return End::Fatal(e);
            }
        }
        let mut paused = false;
        let mut terminating = false;
        if !self.cin.is_empty() {
            match self.on_client_bytes().await {
                Ok(Flow::Continue) => {}
                Ok(Flow::WaitForIdle) => paused = true,
                Ok(Flow::Close) => terminating = true,
                Err(e) => return self.end_for(e),
            }
        }
        loop {
            if terminating && self.upstream_quiet() && self.to_client.is_empty() {
                return End::ClientLeft;
            }
            if self.draining && self.is_idle() {
                return End::Fatal(ClientError::shutting_down());
            }
            if paused && self.upstream_quiet() {
                // The upstream has answered everything: route what waited.
                paused = false;
                match self.on_client_bytes().await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::WaitForIdle) => paused = true,
                    Ok(Flow::Close) => terminating = true,
                    Err(e) => return self.end_for(e),
                }
                if let Err(e) = self.write_up_now() {
                    tracing::debug!(error = %e, "gateway write failed");
                    return End::Fatal(ClientError::upstream_lost(&self.active));
                }
                continue;
            }
            // No active upstream after an idle one was lost: the next
            // statement opens one (with failover).
            let (up_r, up_w) = match self.upstreams.get_mut(&self.active) {
                Some(up) => (Some(&mut up.reader), Some(&mut up.writer)),
                None => (None, None),
            };
            let read_client = !paused && !terminating && self.to_up.len() < HIGH_WATER;
            let read_up = up_r.is_some() && self.to_client.len() < HIGH_WATER;
            let write_up = up_w.is_some() && !self.to_up.is_empty();
            let (cin, uin, to_up, to_client) =
                (&mut self.cin, &mut self.uin, &self.to_up, &self.to_client);
            let event = tokio::select! {
                r = client_r.read_into(cin), if read_client => Event::ClientRead(r),
                r = async { match up_r { Some(r) => r.read_into(uin).await, None => std::future::pending().await } }, if read_up => Event::UpRead(r),
                r = async { match up_w { Some(w) => w.write_some(to_up).await, None => std::future::pending().await } }, if write_up => Event::UpWrote(r),
                r = client_w.write_some(to_client), if !to_client.is_empty() => Event::ClientWrote(r),
                r = phase.changed() => Event::Phase(r.is_err()),
            };
            match event {
                Event::ClientRead(Ok(0)) | Event::ClientRead(Err(_)) => return End::ClientLeft,
                Event::ClientRead(Ok(_)) => {
                    match self.on_client_bytes().await {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::WaitForIdle) => paused = true,
                        // Terminate: answer what came before it, then close.
                        Ok(Flow::Close) => terminating = true,
                        Err(e) => return self.end_for(e),
                    }
                    release_if_empty(&mut self.cin);
                    if let Err(e) = self.write_up_now() {
                        tracing::debug!(error = %e, "gateway write failed");
                        return End::Fatal(ClientError::upstream_lost(&self.active));
                    }
                }
                Event::UpRead(Ok(0)) | Event::UpRead(Err(_)) => {
                    if !self.lose_idle_upstream() {
                        self.shared.health.mark_down(&self.active);
                        return End::Fatal(ClientError::upstream_lost(&self.active));
                    }
                }
                Event::UpRead(Ok(_)) => {
                    if let Err(e) = self.on_backend_bytes() {
                        return End::Fatal(e);
                    }
                    if self.verify.as_ref().is_some_and(|v| v.empty) {
                        self.finish_verify().await;
                        if self.write_up_now().is_err() {
                            return End::Fatal(ClientError::upstream_lost(&self.active));
                        }
                    }
                    if self.write_client_now(client_w).is_err() {
                        return End::ClientBroken;
                    }
                }
                Event::UpWrote(Ok(n)) => {
                    self.to_up.advance(n);
                    release_if_empty(&mut self.to_up);
                }
                Event::UpWrote(Err(_)) => {
                    self.shared.health.mark_down(&self.active);
                    return End::Fatal(ClientError::upstream_lost(&self.active));
                }
                Event::ClientWrote(Ok(n)) => {
                    self.to_client.advance(n);
                    release_if_empty(&mut self.to_client);
                }
                Event::ClientWrote(Err(_)) => return End::ClientBroken,
                // The server is gone: nothing will ever drain us gracefully.
                Event::Phase(true) => return End::Fatal(ClientError::shutting_down()),
                Event::Phase(false) => match *phase.borrow_and_update() {
                    Phase::Running => {}
                    Phase::Draining => self.draining = true,
                    Phase::Closing => return End::Fatal(ClientError::shutting_down()),
                },
            }
        }
    }

    fn end_for(&self, e: SessionError) -> End {
        match e {
            SessionError::Client(e) => End::Fatal(e),
            SessionError::Relay(_) | SessionError::Io(_) | SessionError::ClientGone => {
                End::ClientBroken
            }
        }
    }

    /// The active gateway closed while the session owed it nothing and had
    /// no transaction there (a restart, an outage): forget the connection
    /// and mark the region down, so the next statement fails over instead
    /// of the client losing its session. `false`: it was busy, the loss is
    /// the client's to see.
    fn lose_idle_upstream(&mut self) -> bool {
        let idle = self.upstream_quiet()
            && self.state.txn == TxnStatus::Idle
            && self.pending_begin.is_none()
            && !self.unsynced
            && self.held.is_empty();
        if !idle {
            return false;
        }
        tracing::warn!(region = %self.active, "idle gateway connection lost; region marked down");
        self.upstreams.remove(&self.active);
        self.upstream_closed(&self.active);
        self.shared.health.mark_down(&self.active);
        self.scanner = crate::wire::BackendScanner::new();
        self.uin.clear();
        self.carry.clear();
        true
    }

    /// Nothing in flight, no transaction open: a safe point to close.
    fn is_idle(&self) -> bool {
        self.state.txn == TxnStatus::Idle
            && self.z_seen == self.z_expect
            && !self.unsynced
            && self.to_up.is_empty()
            && self.to_client.is_empty()
            && self.held.is_empty()
            && self.carry.is_empty()
    }

    /// Tries to send client requests right away, saving a trip through the
    /// event loop in the common request/response case.
    fn write_up_now(&mut self) -> io::Result<()> {
        if self.to_up.is_empty() {
            return Ok(());
        }
        if let Some(up) = self.upstreams.get_mut(&self.active) {
            let n = up.writer.try_write_now(&self.to_up)?;
            self.to_up.advance(n);
            release_if_empty(&mut self.to_up);
        }
        Ok(())
    }

    fn write_client_now(&mut self, client_w: &mut PgWriter) -> io::Result<()> {
        if self.to_client.is_empty() {
            return Ok(());
        }
        let n = client_w.try_write_now(&self.to_client)?;
        self.to_client.advance(n);
        release_if_empty(&mut self.to_client);
        Ok(())
    }

    /// Moves the bytes just read from the gateway to the client's buffer,
    /// noting ReadyForQuery and placing our own injected messages.
    pub(super) fn on_backend_bytes(&mut self) -> Result<(), ClientError> {
        if self.upstream_quiet() && self.scanner.at_boundary() && self.uin.first() == Some(&b'E') {
            // An error nobody asked for: the gateway is closing the
            // connection (shutdown, crash). Keep it from the client, whose
            // session goes on elsewhere; the close follows.
            tracing::debug!(region = %self.active, "unsolicited error from an idle gateway");
            self.uin.clear();
            return Ok(());
        }
        let mut ev = std::mem::take(&mut self.scan_events);
        ev.ready.clear();
        ev.param_descs.clear();
        let fed = self.scanner.feed(&self.uin, &mut ev);
        if fed.is_ok() && !ev.param_descs.is_empty() {
            self.learn_param_types(&ev);
        }
        let result = self.place_backend_bytes(&ev, fed);
        // Reuse the events' allocation for the next chunk.
        self.scan_events = ev;
        result
    }

    fn place_backend_bytes(
        &mut self,
        ev: &ScanEvents,
        fed: Result<(), crate::wire::FrameError>,
    ) -> Result<(), ClientError> {
        fed.map_err(|e| {
            ClientError::fatal(
                "08P01",
                format!(
                    "geogate: invalid message from the {} gateway: {e}",
                    self.active
                ),
            )
        })?;
        if self.injections.is_empty()
            && self.carry.is_empty()
            && self.hidden.is_empty()
            && self.verify.is_none()
        {
            // The common case: nothing of ours to place, the chunk goes as is.
            if let Some((_, status)) = ev.ready.last() {
                self.z_seen += ev.ready.len() as u64;
                self.note_status(*status);
                self.observe_timings();
            }
            self.append_backend_chunk();
            return Ok(());
        }
        // Bytes held back from the previous chunk come first; event offsets
        // are relative to the new bytes, so shift them.
        let shift = self.carry.len();
        let mut chunk = std::mem::take(&mut self.carry);
        chunk.extend_from_slice(&self.uin);
        self.uin = BytesMut::new();
        self.to_client.reserve(chunk.len() + 256);
        let mut start = 0;
        for &(end, status) in &ev.ready {
            let end = end + shift;
            let z_start = end.saturating_sub(6).max(start);
            if self.hidden.front() == Some(&(self.z_seen + 1)) {
                // An answer geogate asked for itself: the client never sees it.
                self.hidden.pop_front();
                self.z_seen += 1;
                self.note_status(status);
                start = end;
                self.flush_due_injections();
                continue;
            }
            if self.verifying_next() {
                // The end of an answer held for verify-on-empty.
                self.hold_for_verify(&chunk[start..end]);
                self.z_seen += 1;
                self.note_status(status);
                self.observe_timings();
                start = end;
                self.flush_due_injections();
                continue;
            }
            self.z_seen += 1;
            self.note_status(status);
            self.observe_timings();
            let before = self
                .injections
                .front()
                .is_some_and(|i| i.before && i.at_z == self.z_seen);
            if before {
                self.to_client.extend_from_slice(&chunk[start..z_start]);
                let inj = self.injections.pop_front().expect("checked above");
                self.emit(inj);
                self.to_client.extend_from_slice(&chunk[z_start..end]);
            } else {
                self.to_client.extend_from_slice(&chunk[start..end]);
            }
            start = end;
            self.flush_due_injections();
        }
        if self.verifying_next() {
            // The start of an answer held for verify-on-empty.
            self.hold_for_verify(&chunk[start..]);
            return Ok(());
        }
        if self.hidden.front() == Some(&(self.z_seen + 1)) {
            // The start of an answer geogate asked for itself.
            return Ok(());
        }
        // An error that must precede a ReadyForQuery whose first bytes are
        // already here: hold back the unfinished frame until it is whole.
        let waiting_before = self.injections.front().is_some_and(|i| i.before);
        let keep = if waiting_before {
            self.scanner.partial_len().min(chunk.len() - start)
        } else {
            0
        };
        let split = chunk.len() - keep;
        self.to_client.extend_from_slice(&chunk[start..split]);
        self.carry = BytesMut::from(&chunk[split..]);
        Ok(())
    }

    /// The transaction status a gateway's ReadyForQuery reports. While a
    /// BEGIN is deferred the gateway knows nothing of the transaction the
    /// client opened: the session stays in it.
    fn note_status(&mut self, status: u8) {
        self.state.txn = if self.pending_begin.is_some() {
            TxnStatus::InTransaction
        } else {
            TxnStatus::from_byte(status)
        };
    }

    /// Reads the parameter types of described statements from the
    /// ParameterDescription frames of this chunk, matching each to its
    /// Describe by batch (a batch cut short by an error describes fewer).
    fn learn_param_types(&mut self, ev: &ScanEvents) {
        let mut z = self.z_seen;
        let mut readies = ev.ready.iter().map(|(end, _)| *end).peekable();
        for &start in &ev.param_descs {
            while readies.next_if(|end| *end <= start).is_some() {
                z += 1;
            }
            let batch = z + 1;
            while self.describing.front().is_some_and(|(b, _)| *b < batch) {
                self.describing.pop_front();
            }
            if self.describing.front().is_none_or(|(b, _)| *b != batch) {
                continue;
            }
            let (_, name) = self.describing.pop_front().expect("checked above");
            let Some(types) = param_description(self.uin.get(start..).unwrap_or(&[])) else {
                continue;
            };
            let stmt = match &*name {
                "" => self.unnamed.as_mut(),
                n => self.state.prepared.get_mut(n),
            };
            if let Some(stmt) = stmt {
                stmt.param_types = types;
            }
        }
    }

    /// Observes the duration of every timed request answered so far.
    fn observe_timings(&mut self) {
        while let Some((at_z, _, _, _)) = self.timings.front() {
            if *at_z > self.z_seen {
                break;
            }
            let (_, started, decision, region) = self.timings.pop_front().expect("checked above");
            self.shared
                .metrics
                .observe_duration(decision, Some(&region), started.elapsed());
        }
    }

    /// The fast path: no ReadyForQuery in the chunk.
    fn append_backend_chunk(&mut self) {
        if self.to_client.is_empty() {
            std::mem::swap(&mut self.to_client, &mut self.uin);
        } else {
            self.to_client.extend_from_slice(&self.uin);
            self.uin = BytesMut::new();
        }
    }

    /// Emits injections whose place has come (all responses before them seen).
    pub(super) fn flush_due_injections(&mut self) {
        while let Some(front) = self.injections.front() {
            if front.before || front.at_z > self.z_seen {
                break;
            }
            let inj = self.injections.pop_front().expect("checked above");
            self.emit(inj);
        }
    }

    fn emit(&mut self, inj: super::Injection) {
        match inj.message {
            Some(super::Payload::Error(e)) => e.encode(&mut self.to_client),
            Some(super::Payload::Notice(e)) => e.encode_notice(&mut self.to_client),
            Some(super::Payload::Raw(b)) => self.to_client.extend_from_slice(&b),
            None => {}
        }
        if inj.ready {
            let status = match self.state.txn {
                TxnStatus::Idle => TransactionStatus::Idle,
                TxnStatus::InTransaction => TransactionStatus::Transaction,
                TxnStatus::Failed => TransactionStatus::Error,
            };
            let _ = ReadyForQuery::new(status).encode(&mut self.to_client);
        }
    }
}

/// The type OIDs of a ParameterDescription frame at the start of `frame`
/// (`None` when it is not wholly in the slice).
fn param_description(frame: &[u8]) -> Option<Vec<u32>> {
    let len = i32::from_be_bytes(frame.get(1..5)?.try_into().ok()?) as usize;
    let body = frame.get(5..1 + len)?;
    let n = i16::from_be_bytes(body.get(..2)?.try_into().ok()?).max(0) as usize;
    (0..n)
        .map(|i| {
            let b = body.get(2 + 4 * i..6 + 4 * i)?;
            Some(u32::from_be_bytes(b.try_into().ok()?))
        })
        .collect()
}

/// Frees a drained buffer's memory: idle sessions should hold none.
fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}
