//! Applying a decision to the session: which upstream serves a statement
//! (transaction pinning, the local gateway for global statements and
//! scatters, failover to a fallback region), the text it is sent as
//! (rewrites), and geogate's own answers (rejections; a deferred BEGIN is
//! in `begin.rs`).
//!
//! The decision itself comes from [`crate::route::Router`] (analysis,
//! tenant cache, policy, mode); this file only acts on it.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::extendedquery::{Parse, Sync as SyncMsg};
use pgwire::messages::simplequery::Query;

use super::frontend::Flow;
use super::state::TxnStatus;
use super::verify::{Replay, Verify};
use super::{Payload, Session, SessionError};
use crate::analyze::{Params, StatementKind};
use crate::config::OnCrossRegionTxn;
use crate::logging::ClientInfo;
use crate::metrics::RejectReason;
use crate::policy::{Effect, Outcome};
use crate::route::Plan;
use crate::wire::ClientError;
use crate::wire::validate::BindFrame;

/// Where and as what one statement goes.
struct Target {
    /// The region whose upstream serves it (after failover).
    region: Arc<str>,
    /// The rewritten text, when the decision is a rewrite.
    rewritten: Option<String>,
    /// `mode = "warn"`: sent as a WARNING notice before the answer.
    warning: Option<ClientError>,
}

/// The outcome of placing a statement on an upstream.
enum Placement {
    /// Its upstream is active; `region` is the one used (after failover).
    Ready(Target),
    /// Another region's upstream still owes answers: route it later.
    Wait,
    /// Refused (by policy, or no gateway).
    Refused(Refusal),
}

/// Why a statement is answered by geogate instead of a gateway.
struct Refusal {
    error: ClientError,
    /// Counted as this rejection reason when the policy did not refuse it
    /// itself (cross-region transaction, no gateway).
    extra: Option<RejectReason>,
}

impl Session {
    /// The router in force now. After a reload the session's policy
    /// settings are computed again for its user, so the new config applies
    /// from this statement on (a read lock for one `Arc` clone otherwise).
    fn current_router(&mut self) -> Arc<crate::route::Router> {
        let live = self.shared.live.load();
        if !Arc::ptr_eq(&live, &self.live) {
            self.settings = live.router.settings_for(&self.startup.user);
            self.live = live;
        }
        self.live.router.clone()
    }

    pub(super) fn client_info(&self) -> ClientInfo<'_> {
        ClientInfo {
            user: &self.startup.user,
            application_name: self.application_name(),
        }
    }

    fn application_name(&self) -> &str {
        self.startup
            .params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// A simple-protocol Query: decide, then forward (possibly rewritten),
    /// answer it ourselves, or wait until the current upstream is quiet.
    pub(super) async fn route_query(
        &mut self,
        frame: &[u8],
        sql: &str,
    ) -> Result<Flow, SessionError> {
        self.route_query_with(frame, sql, true).await
    }

    /// Sends a statement again after verify-on-empty (never verified twice).
    pub(super) async fn route_query_once(
        &mut self,
        frame: &[u8],
        sql: &str,
    ) -> Result<Flow, SessionError> {
        self.route_query_with(frame, sql, false).await
    }

    async fn route_query_with(
        &mut self,
        frame: &[u8],
        sql: &str,
        verify: bool,
    ) -> Result<Flow, SessionError> {
        self.reload_tenants_after_commit();
        let router = self.current_router();
        let plan = router.plan(sql, &Params::NONE, &self.settings).await;

        if self.defer_begin(&plan, frame, sql) || self.answer_deferred_end(&plan) {
            router.record(&plan, &self.client_info(), Some(&self.shared.local_region));
            return Ok(Flow::Continue);
        }
        let mut target = match self.place(&plan).await {
            Placement::Ready(t) => t,
            Placement::Wait => return Ok(Flow::WaitForIdle),
            Placement::Refused(refusal) => {
                self.refuse(&plan, refusal);
                return Ok(Flow::Continue);
            }
        };
        let region = target.region.clone();
        let rerun = self.upstream_quiet()
            && self.pending_begin.is_none()
            && self.state.txn == TxnStatus::Idle;
        self.start_forwarding(&mut target);
        match &target.rewritten {
            Some(text) => {
                let _ = Query::new(text.clone()).encode(&mut self.to_up);
            }
            None => self.to_up.extend_from_slice(frame),
        }
        self.state.on_statement(sql);
        self.note_statement(&plan);
        self.z_expect += 1;
        let single = plan.analysis.statements.len() == 1;
        if verify
            && single
            && target.rewritten.is_some()
            && !plan.tenants.is_empty()
            && self.verify.is_none()
        {
            self.verify = Some(Verify {
                z: self.z_expect,
                replay: Replay::Query {
                    frame: BytesMut::from(frame),
                    sql: sql.to_string(),
                },
                region: region.clone(),
                tenants: plan.tenants.clone(),
                rerun,
                hold: BytesMut::new(),
                empty: false,
            });
        }
        self.time_request(&plan, &region, self.z_expect);
        router.record(&plan, &self.client_info(), Some(&region));
        Ok(Flow::Continue)
    }

    /// A Bind: decided with its parameter values. A rewrite binds a shadow
    /// statement (the client's statement with the region predicate added,
    /// prepared once per upstream) instead of the client's statement.
    pub(super) async fn route_bind(&mut self, frame: &[u8]) -> Result<Flow, SessionError> {
        let Some(bind) = BindFrame::new(frame) else {
            return Err(SessionError::Client(ClientError::protocol_violation(
                "geogate: malformed Bind message",
            )));
        };
        let Some(stmt) = self.statement_for(&bind).cloned() else {
            // Unknown statement: the gateway reports it (26000) in order.
            self.release_held();
            self.to_up.extend_from_slice(frame);
            self.unsynced = true;
            return Ok(Flow::Continue);
        };
        self.reload_tenants_after_commit();
        let decoded = bind.decode();
        let (values, formats) = match &decoded {
            Some(b) => (b.parameters.as_slice(), b.parameter_format_codes.as_slice()),
            None => (&[][..], &[][..]),
        };
        let params = Params {
            values,
            formats,
            types: &stmt.param_types,
        };
        let router = self.current_router();
        let plan = router.plan(&stmt.sql, &params, &self.settings).await;
        if self.defer_bound_begin(&plan, &stmt, &bind, values.is_empty()) {
            router.record(&plan, &self.client_info(), Some(&self.shared.local_region));
            return Ok(Flow::Continue);
        }
        let replayed = std::mem::take(&mut self.verify_replay);
        let mut target = match self.place(&plan).await {
            Placement::Ready(t) => t,
            Placement::Wait => {
                self.verify_replay = replayed;
                return Ok(Flow::WaitForIdle);
            }
            Placement::Refused(refusal) => {
                self.refuse_batch_with(&plan, refusal);
                return Ok(Flow::Continue);
            }
        };
        let region = target.region.clone();
        // Verify on empty: the batch's first Bind, of a rewrite by tenant.
        let verify = (!replayed
            && !self.unsynced
            && self.verify.is_none()
            && target.rewritten.is_some()
            && !plan.tenants.is_empty())
        .then(|| self.replay_batch(frame));
        self.start_forwarding(&mut target);
        match &target.rewritten {
            None => {
                self.release_held();
                self.to_up.extend_from_slice(frame);
            }
            Some(text) => {
                let shadow = shadow_name(text);
                let prepared = self
                    .shadows
                    .get(&region)
                    .is_some_and(|s| s.contains(&shadow));
                if !prepared {
                    if self.unsynced {
                        let e = ClientError::error(
                            "GG001",
                            "geogate: a statement that needs its region added cannot be the second \
                             statement of a pipelined batch the first time it runs; add the region \
                             predicate or send a Sync before it",
                        );
                        self.refuse_batch_with(
                            &plan,
                            Refusal {
                                error: e,
                                extra: Some(RejectReason::NoRegion),
                            },
                        );
                        return Ok(Flow::Continue);
                    }
                    // Prepared as a request of its own, answered in secret.
                    let _ =
                        Parse::new(Some(shadow.clone()), text.clone(), stmt.param_types.clone())
                            .encode(&mut self.to_up);
                    let _ = SyncMsg::new().encode(&mut self.to_up);
                    self.z_expect += 1;
                    self.hidden.push_back(self.z_expect);
                    self.shadows
                        .entry(region.clone())
                        .or_default()
                        .insert(shadow.clone());
                }
                self.release_held();
                rebind(frame, &bind, &shadow, &mut self.to_up);
            }
        }
        // A SET executed through Bind is replayed on new upstreams too.
        self.state.on_statement(&stmt.sql);
        self.note_statement(&plan);
        self.unsynced = true;
        if let Some(replay) = verify {
            // Outside a transaction (a deferred BEGIN just sent opens one).
            let rerun = self.state.txn == TxnStatus::Idle && self.pending_begin.is_none();
            self.verify = Some(Verify {
                z: self.z_expect + 1,
                replay,
                region: region.clone(),
                tenants: plan.tenants.clone(),
                rerun,
                hold: BytesMut::new(),
                empty: false,
            });
        }
        // Answered with the batch's ReadyForQuery, after its Sync.
        self.time_request(&plan, &region, self.z_expect + 1);
        router.record(&plan, &self.client_info(), Some(&region));
        Ok(Flow::Continue)
    }

    /// The client's frames to send again if the batch of this Bind comes
    /// back empty (the rest, up to Sync, is added as it arrives). Replayed
    /// from the batch's Parse when its Parses are all of the unnamed
    /// statement (parsing it again is harmless); otherwise from the Bind,
    /// as a named statement is prepared in the new region when the session
    /// switches there, and must not be parsed twice.
    fn replay_batch(&self, frame: &[u8]) -> Replay {
        let has_parse = frames_of(&self.held).any(|tag| tag == b'P');
        let from_bind = !has_parse || !self.held_parses.is_empty();
        let mut frames = BytesMut::new();
        if !from_bind {
            frames.extend_from_slice(&self.held);
        }
        frames.extend_from_slice(frame);
        let body = frame.get(5..).unwrap_or(&[]);
        let portal = body.split(|&b| b == 0).next().unwrap_or(&[]).to_vec();
        Replay::Batch {
            frames,
            from_bind,
            portal,
            collecting: true,
        }
    }

    /// Chooses and opens the upstream a decided statement goes to.
    async fn place(&mut self, plan: &Plan) -> Placement {
        let mut target = match self.target_for(plan) {
            Ok(t) => t,
            Err(refusal) => return Placement::Refused(refusal),
        };
        if self.must_wait_for_region(&target.region) {
            return Placement::Wait;
        }
        match self.activate_with_failover(target.region.clone()).await {
            Ok(used) => {
                target.region = used;
                Placement::Ready(target)
            }
            Err(refusal) => Placement::Refused(refusal),
        }
    }

    /// What precedes a placed statement on its upstream: a deferred BEGIN,
    /// and in warn mode the notice of what enforce would have refused.
    fn start_forwarding(&mut self, target: &mut Target) {
        self.send_deferred_begin();
        if let Some(w) = target.warning.take() {
            self.inject_after_pending(Some(Payload::Notice(w)), false);
        }
    }

    /// Where a decided statement goes, or why it is refused.
    fn target_for(&mut self, plan: &Plan) -> Result<Target, Refusal> {
        let (region, rewritten, warning) = match &plan.effect {
            Effect::Refuse(r) => {
                let error = ClientError::error(r.sqlstate(), r.message.clone());
                return Err(Refusal { error, extra: None });
            }
            Effect::Forward {
                region,
                rewritten,
                warning,
            } => (region, *rewritten, warning),
        };
        let rewritten = match (&plan.decision.outcome, rewritten) {
            (Outcome::Rewrite { sql, .. }, true) => Some(sql.clone()),
            _ => None,
        };
        let warning = warning
            .as_ref()
            .map(|r| ClientError::warning(r.sqlstate(), r.message.clone()));
        let in_txn = self.state.txn != TxnStatus::Idle && self.pending_begin.is_none();
        if in_txn {
            // A transaction stays on the connection it started on.
            if let Some(r) = region
                && **r != *self.active
            {
                // Counted once per transaction, however many statements stray.
                if !std::mem::replace(&mut self.cross_region_counted, true) {
                    self.shared.metrics.cross_region_transaction();
                }
                if self.live.config.proxy.on_cross_region_txn == OnCrossRegionTxn::Reject {
                    let error = ClientError::error(
                        "GG005",
                        format!(
                            "geogate: this transaction runs in region {}; a statement for region {r} \
                             may not join it (on_cross_region_txn = \"reject\"); commit first or \
                             keep the transaction in one region",
                            self.active
                        ),
                    );
                    return Err(Refusal {
                        error,
                        extra: Some(RejectReason::CrossRegionTxn),
                    });
                }
            }
            return Ok(Target {
                region: self.active.clone(),
                rewritten,
                warning,
            });
        }
        self.cross_region_counted = false;
        let region = match region {
            Some(r) => self.intern_region(r),
            None => self.shared.local_region.clone(),
        };
        Ok(Target {
            region,
            rewritten,
            warning,
        })
    }

    /// The shared `Arc<str>` of a configured region name.
    fn intern_region(&self, name: &str) -> Arc<str> {
        self.shared
            .gateways
            .keys()
            .find(|k| ***k == *name)
            .cloned()
            .unwrap_or_else(|| name.into())
    }

    /// Opens a connection to the local region (or its fallback) after the
    /// active one was lost, for messages that carry no statement to route.
    pub(super) async fn reopen_default_upstream(&mut self) -> Result<(), SessionError> {
        let local = self.shared.local_region.clone();
        match self.activate_with_failover(local).await {
            Ok(_) => Ok(()),
            Err(refusal) => Err(SessionError::Client(ClientError {
                severity: "FATAL",
                ..refusal.error
            })),
        }
    }

    /// Makes `region` (or, when its gateway is down, the first healthy
    /// region of its fallback list) the active upstream.
    async fn activate_with_failover(&mut self, region: Arc<str>) -> Result<Arc<str>, Refusal> {
        let pinned = self.state.txn != TxnStatus::Idle && self.pending_begin.is_none();
        if pinned || region == self.active && self.upstreams.contains_key(&region) {
            return Ok(self.active.clone());
        }
        let health = self.shared.health.clone();
        // Each failed connect marks a region down, so this ends.
        for _ in 0..=self.shared.gateways.len() {
            let used = match health.choose(&region) {
                Ok(choice) => self.intern_region(&choice.region_used),
                Err(e) => {
                    let error = ClientError::error(
                        "GG004",
                        format!(
                            "geogate: no gateway available for region {}: it and its fallbacks ({}) are down",
                            e.region,
                            e.tried.join(", ")
                        ),
                    );
                    return Err(Refusal {
                        error,
                        extra: Some(RejectReason::NoGateway),
                    });
                }
            };
            match self.ensure_active(&used).await {
                Ok(()) => return Ok(used),
                Err(e) if e.code == "GG004" => {
                    tracing::warn!(region = %used, "gateway unreachable; marked down");
                    health.mark_down(&used);
                }
                Err(e) => {
                    return Err(Refusal {
                        error: e,
                        extra: None,
                    });
                }
            }
        }
        Err(Refusal {
            error: ClientError::error(
                "GG004",
                format!("geogate: no gateway available for region {region}"),
            ),
            extra: Some(RejectReason::NoGateway),
        })
    }

    /// Counts a refusal of a simple Query and queues its error and a
    /// ReadyForQuery after everything in flight.
    fn refuse(&mut self, plan: &Plan, refusal: Refusal) {
        self.count_refusal(plan, &refusal);
        self.inject_after_pending(Some(Payload::Error(refusal.error)), true);
    }

    fn refuse_batch_with(&mut self, plan: &Plan, refusal: Refusal) {
        self.count_refusal(plan, &refusal);
        self.refuse_batch(refusal.error);
    }

    fn count_refusal(&self, plan: &Plan, refusal: &Refusal) {
        let router = &self.live.router;
        match refusal.extra {
            Some(reason) => router.record_refusal(plan, &self.client_info(), reason),
            None => router.record(plan, &self.client_info(), None),
        }
    }

    /// Remembers what a statement means for the session's future: a region
    /// move invalidates the tenant cache once its transaction commits;
    /// DISCARD/DEALLOCATE ALL drop the shadow statements upstream.
    pub(super) fn note_statement(&mut self, plan: &Plan) {
        self.statements += 1;
        if !plan.decision.moves.is_empty() {
            self.reload_tenants = true;
        }
        if matches!(
            plan.kind(),
            StatementKind::Discard | StatementKind::Deallocate
        ) {
            if let Some(s) = self.shadows.get_mut(&self.active) {
                s.clear();
            }
        }
    }

    /// After a transaction that moved a tenant has ended, reload the
    /// directory so the next statements see the new region at once.
    fn reload_tenants_after_commit(&mut self) {
        if self.reload_tenants && self.state.txn == TxnStatus::Idle && self.pending_begin.is_none()
        {
            self.reload_tenants = false;
            if let Some(cache) = self.live.router.tenant_cache().cloned() {
                tokio::spawn(async move {
                    if let Err(e) = cache.load().await {
                        tracing::warn!(error = %e, "tenant directory reload after a region move failed");
                    }
                });
            }
        }
    }

    /// Notes when a request was sent, to time it at its ReadyForQuery.
    fn time_request(&mut self, plan: &Plan, region: &Arc<str>, at_z: u64) {
        let decision = match &plan.decision.outcome {
            Outcome::Global => crate::metrics::DecisionLabel::Global,
            Outcome::Route { .. } => crate::metrics::DecisionLabel::Route,
            Outcome::Rewrite { .. } => crate::metrics::DecisionLabel::Rewrite,
            Outcome::Scatter { .. } => crate::metrics::DecisionLabel::Scatter,
            Outcome::Reject(_) => crate::metrics::DecisionLabel::Reject,
        };
        self.timings
            .push_back((at_z, Instant::now(), decision, region.clone()));
    }

    /// A statement for another region than the active one, while the active
    /// one owes answers, waits (unless mid-batch, where it cannot).
    fn must_wait_for_region(&self, region: &Arc<str>) -> bool {
        let pinned = self.state.txn != TxnStatus::Idle && self.pending_begin.is_none();
        !pinned && *region != self.active && !self.unsynced && !self.upstream_quiet()
    }
}

/// The tags of the whole frames in `buf`.
fn frames_of(buf: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let h = crate::wire::peek_frame(buf.get(pos..)?, usize::MAX).ok()??;
        pos += h.total_len;
        Some(h.tag)
    })
}

/// The upstream name of a rewritten statement: stable for a text, so each
/// upstream prepares it once.
fn shadow_name(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("geogate_rw_{:016x}", h.finish())
}

/// The client's Bind with its statement name replaced by `shadow`.
fn rebind(frame: &[u8], bind: &BindFrame<'_>, shadow: &str, out: &mut BytesMut) {
    // Layout: 'B', int32 length, portal\0, statement\0, the rest.
    let body = &frame[5..];
    let portal_end = body.iter().position(|&b| b == 0).unwrap_or(0);
    let rest_start = portal_end + 1 + bind.statement_name().len() + 1;
    let portal = &body[..=portal_end];
    let rest = body.get(rest_start..).unwrap_or(&[]);
    let len = 4 + portal.len() + shadow.len() + 1 + rest.len();
    out.put_u8(b'B');
    out.put_i32(len as i32);
    out.put_slice(portal);
    out.put_slice(shadow.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebind_swaps_only_the_statement_name() {
        let mut f = BytesMut::new();
        let body: &[u8] = b"p1\0client_stmt\0\0\0\0\x01\0\0\0\x02ab\0\0";
        f.put_u8(b'B');
        f.put_i32((body.len() + 4) as i32);
        f.put_slice(body);
        let bind = BindFrame::new(&f).unwrap();
        let mut out = BytesMut::new();
        rebind(&f, &bind, "shadow", &mut out);
        let expected: &[u8] = b"p1\0shadow\0\0\0\0\x01\0\0\0\x02ab\0\0";
        assert_eq!(&out[5..], expected);
        assert_eq!(
            i32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
        assert_eq!(BindFrame::new(&out).unwrap().statement_name(), "shadow");
    }
}
