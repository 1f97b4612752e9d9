//! Client → gateway: every message the client sends, in order. Queries and
//! Binds go through the decision point (`route.rs`); everything
//! else is forwarded as the bytes the client sent.
//!
//! Extended-protocol messages that precede a batch's first Bind (Parse,
//! Describe, Close) are held back until that Bind has been routed, so the
//! whole batch lands on the upstream that will execute it.

use std::sync::Arc;

use bytes::BytesMut;
use pgwire::messages::extendedquery::{Close, Parse};
use pgwire::messages::simplequery::Query;
use pgwire::messages::{Message, PgWireFrontendMessage};

use super::state::PreparedStatement;
use super::{Injection, Payload, Session, SessionError};
use crate::wire::validate::{BindFrame, ParseView, parse_view};
use crate::wire::{ClientError, FrameError, peek_frame};

/// What the session loop does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    /// Keep relaying.
    Continue,
    /// The client said goodbye (Terminate).
    Close,
    /// The next message needs another region's upstream while this one
    /// still has requests in flight: it stays buffered, and client input
    /// pauses until the current upstream has answered everything.
    WaitForIdle,
}

impl Session {
    /// Handles every complete message buffered from the client.
    pub(super) async fn on_client_bytes(&mut self) -> Result<Flow, SessionError> {
        let max = self.shared.config.proxy.max_message_size;
        loop {
            if self.verify.as_ref().is_some_and(|v| !v.collecting()) {
                // An answer is held for verify-on-empty: nothing may overtake it.
                return Ok(Flow::WaitForIdle);
            }
            let h = match peek_frame(&self.cin, max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max }) => {
                    return Err(SessionError::Client(ClientError::protocol_violation(
                        format!(
                            "geogate: message of {len} bytes exceeds proxy.max_message_size ({max})"
                        ),
                    )));
                }
                Err(e) => {
                    return Err(SessionError::Client(ClientError::protocol_violation(
                        format!("geogate: {e}"),
                    )));
                }
            };
            if self.cin.len() < h.total_len {
                // Make room for the rest of this message in one go.
                self.cin.reserve(h.total_len - self.cin.len());
                break;
            }
            let mut frame = self.cin.split_to(h.total_len);
            match self.on_message(h.tag, &frame).await? {
                Flow::Continue => {}
                Flow::Close => return Ok(Flow::Close),
                Flow::WaitForIdle => {
                    // Put the message back in front; it is routed again later.
                    frame.unsplit(std::mem::take(&mut self.cin));
                    self.cin = frame;
                    return Ok(Flow::WaitForIdle);
                }
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_message(&mut self, tag: u8, frame: &[u8]) -> Result<Flow, SessionError> {
        if self.verify.as_ref().is_some_and(|v| v.collecting()) {
            self.collect_for_verify(tag, frame);
        }
        if self.begin_batch.is_some() && self.on_begin_batch(tag, frame) {
            return Ok(Flow::Continue);
        }
        if self.skip_until_sync {
            match tag {
                b'S' => self.end_refused_batch(frame),
                b'X' => return Ok(Flow::Close),
                _ => {}
            }
            return Ok(Flow::Continue);
        }
        if !matches!(tag, b'Q' | b'B' | b'X' | b'P' | b'D' | b'C')
            && !self.upstreams.contains_key(&self.active)
        {
            // The idle connection was lost and this message is not routed
            // by itself (Sync, Flush, COPY data…): open one where the
            // session's statements go by default.
            self.reopen_default_upstream().await?;
        }
        match tag {
            b'Q' => return self.on_query(frame).await,
            b'P' => {
                let Some(p) = parse_view(frame) else {
                    return Err(SessionError::Client(ClientError::protocol_violation(
                        "geogate: malformed Parse message",
                    )));
                };
                self.on_parse(&p);
                self.hold(frame);
            }
            b'D' => {
                if let [b'S', name @ ..] = frame.get(5..).unwrap_or(&[]) {
                    let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
                    self.held_describes
                        .push(String::from_utf8_lossy(name).into());
                }
                self.hold(frame);
            }
            b'C' => {
                if let Some(PgWireFrontendMessage::Close(c)) = decode(frame)? {
                    self.on_close(&c);
                }
                self.hold(frame);
            }
            b'B' => return self.on_bind(frame).await,
            b'S' => {
                self.release_held();
                self.to_up.extend_from_slice(frame);
                self.z_expect += 1;
                self.unsynced = false;
            }
            b'H' | b'E' => {
                self.release_held();
                self.to_up.extend_from_slice(frame);
                self.unsynced = true;
            }
            // FunctionCall ends with its own ReadyForQuery.
            b'F' => {
                self.to_up.extend_from_slice(frame);
                self.z_expect += 1;
            }
            b'X' => return Ok(Flow::Close),
            // CopyData / CopyDone / CopyFail and anything else: the gateway
            // knows what to do with it (or reports the protocol error).
            _ => self.to_up.extend_from_slice(frame),
        }
        Ok(Flow::Continue)
    }

    async fn on_query(&mut self, frame: &[u8]) -> Result<Flow, SessionError> {
        // 'Q', length, text, NUL: the text is read in place when it is
        // UTF-8 (always, in practice), else decoded lossily like pgwire does.
        let text = frame
            .get(5..frame.len().saturating_sub(1))
            .filter(|_| frame.last() == Some(&0));
        let Some(text) = text.filter(|t| !t.contains(&0)) else {
            return Err(SessionError::Client(ClientError::protocol_violation(
                "invalid Query message",
            )));
        };
        match std::str::from_utf8(text) {
            Ok(sql) => self.route_query(frame, sql).await,
            Err(_) => {
                let sql = String::from_utf8_lossy(text).into_owned();
                self.route_query(frame, &sql).await
            }
        }
    }

    /// Nothing in flight on the current upstream.
    pub(super) fn upstream_quiet(&self) -> bool {
        self.z_seen == self.z_expect && self.to_up.is_empty()
    }

    fn on_parse(&mut self, p: &ParseView<'_>) {
        if !p.name.is_empty() {
            self.state
                .on_parse(&p.name, &p.query, &p.param_types, &self.active);
            // Prepared nowhere until the held Parse is sent, wherever its
            // batch goes (see `release_held`).
            if let Some(stmt) = self.state.prepared.get_mut(&*p.name) {
                stmt.prepared_on.clear();
                self.held_parses.push(stmt.name.clone());
            }
            return;
        }
        // Drivers re-parse the same unnamed statement over and over: keep
        // the existing copy when the text and types are unchanged.
        let same = self
            .unnamed
            .as_ref()
            .is_some_and(|u| *u.sql == *p.query && u.param_types == p.param_types);
        if !same {
            self.unnamed = Some(PreparedStatement {
                name: "".into(),
                sql: p.query.as_ref().into(),
                param_types: p.param_types.clone(),
                prepared_on: vec![self.active.clone()],
            });
        }
    }

    fn on_close(&mut self, c: &Close) {
        if c.target_type == b'S' {
            match c.name.as_deref().unwrap_or("") {
                "" => self.unnamed = None,
                name => self.state.on_close_statement(name),
            }
        }
    }

    async fn on_bind(&mut self, frame: &[u8]) -> Result<Flow, SessionError> {
        self.route_bind(frame).await
    }

    pub(super) fn statement_for(&self, bind: &BindFrame<'_>) -> Option<&PreparedStatement> {
        match bind.statement_name() {
            "" => self.unnamed.as_ref(),
            name => self.state.prepared.get(name),
        }
    }

    /// Queues a message until the batch's routing is known.
    fn hold(&mut self, frame: &[u8]) {
        self.held.extend_from_slice(frame);
    }

    /// Sends held messages to the current upstream.
    pub(super) fn release_held(&mut self) {
        for name in self.held_parses.drain(..) {
            if let Some(stmt) = self.state.prepared.get_mut(&name) {
                stmt.prepared_on.push(self.active.clone());
            }
        }
        let batch = self.z_expect + 1;
        for name in self.held_describes.drain(..) {
            self.describing.push_back((batch, name));
        }
        if !self.held.is_empty() {
            self.to_up.extend_from_slice(&self.held);
            self.held.clear();
            self.unsynced = true;
        }
    }

    /// An extended-protocol statement is refused: report `e` where the
    /// gateway would have, then ignore messages until Sync, as PostgreSQL does.
    pub(super) fn refuse_batch(&mut self, e: ClientError) {
        // Messages before the refused Bind (Parse, Describe) get their answers.
        self.release_held();
        if self.unsynced {
            // Forwarded messages are awaiting a Sync: the error goes just
            // before the ReadyForQuery that Sync will produce.
            self.injections.push_back(Injection {
                at_z: self.z_expect + 1,
                before: true,
                message: Some(Payload::Error(e)),
                ready: false,
            });
            self.refused_forwarded = true;
        } else {
            self.inject_after_pending(Some(Payload::Error(e)), false);
            self.refused_forwarded = false;
        }
        self.skip_until_sync = true;
    }

    /// The Sync that ends a refused batch.
    fn end_refused_batch(&mut self, sync: &[u8]) {
        self.skip_until_sync = false;
        if self.refused_forwarded {
            self.to_up.extend_from_slice(sync);
            self.z_expect += 1;
            self.unsynced = false;
        } else {
            self.inject_after_pending(None, true);
        }
    }

    /// Places our own message after everything already requested from the
    /// gateway (immediately when nothing is in flight).
    pub(super) fn inject_after_pending(&mut self, message: Option<Payload>, ready: bool) {
        self.injections.push_back(Injection {
            at_z: self.z_expect,
            before: false,
            message,
            ready,
        });
        self.flush_due_injections();
    }

    /// Switches the session's statements to `region`'s upstream, opening it
    /// if needed and bringing it to the session's state (settings, named
    /// prepared statements). Only possible between requests.
    pub(super) async fn ensure_active(&mut self, region: &Arc<str>) -> Result<(), ClientError> {
        if *region == self.active && self.upstreams.contains_key(region) {
            return Ok(());
        }
        // Held messages are not in flight: they follow the batch's first
        // Bind (or its Sync) to whichever upstream that goes to.
        if self.unsynced || self.z_seen != self.z_expect || !self.to_up.is_empty() {
            return Err(ClientError::error(
                "GG005",
                format!(
                    "geogate: cannot move to region {region} while requests to region {} are in flight",
                    self.active
                ),
            ));
        }
        // An idle connection may have died since its last use (gateway
        // restart): look before reusing it.
        if let Some(up) = self.upstreams.get_mut(region)
            && !up.still_open()
        {
            self.upstreams.remove(region);
            self.upstream_closed(region);
        }
        if !self.upstreams.contains_key(region) {
            let gw = self.shared.gateways.get(region).ok_or_else(|| {
                ClientError::error(
                    "GG003",
                    format!("geogate: region {region} is not configured"),
                )
            })?;
            let up = crate::upstream::Upstream::connect(gw, &self.startup)
                .await
                .map_err(|e| {
                    ClientError::error(
                        "GG004",
                        format!("geogate: no gateway available for region {region}: {e}"),
                    )
                })?;
            self.upstreams.insert(region.clone(), up);
            self.upstream_opened(region);
        }
        let mut script = BytesMut::new();
        let mut ready_count = 0;
        let replay = self.state.replay_script();
        if !replay.is_empty() {
            let _ = Query::new(replay).encode(&mut script);
            ready_count += 1;
        }
        let mut parses = false;
        for stmt in self.state.prepared.values_mut() {
            if !stmt.prepared_on.contains(region) && !self.held_parses.contains(&stmt.name) {
                let parse = Parse::new(
                    Some(stmt.name.to_string()),
                    stmt.sql.to_string(),
                    stmt.param_types.clone(),
                );
                let _ = parse.encode(&mut script);
                stmt.prepared_on.push(region.clone());
                parses = true;
            }
        }
        if parses {
            let _ = pgwire::messages::extendedquery::Sync::new().encode(&mut script);
            ready_count += 1;
        }
        let up = self.upstreams.get_mut(region).expect("inserted above");
        if ready_count > 0 {
            up.run_hidden(&script, ready_count).await.map_err(|e| {
                ClientError::error(
                    "GG004",
                    format!("geogate: preparing the {region} connection failed: {e}"),
                )
            })?;
        }
        self.cancel.set_target(up.cancel.clone());
        self.describing.clear();
        self.active = region.clone();
        self.scanner = crate::wire::BackendScanner::new();
        self.z_seen = 0;
        self.z_expect = 0;
        Ok(())
    }
}

/// Decodes one client frame with pgwire's codec (a copy: the frame itself is
/// forwarded untouched).
fn decode(frame: &[u8]) -> Result<Option<PgWireFrontendMessage>, SessionError> {
    if !crate::wire::validate::client_message_well_formed(frame) {
        return Err(SessionError::Client(ClientError::protocol_violation(
            "geogate: malformed message",
        )));
    }
    let mut ctx =
        pgwire::messages::DecodeContext::new(pgwire::messages::ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    let mut buf = BytesMut::from(frame);
    PgWireFrontendMessage::decode(&mut buf, &ctx).map_err(|e| {
        SessionError::Client(ClientError::protocol_violation(format!(
            "geogate: invalid message: {e}"
        )))
    })
}
