//! The I/O shell around the session core: sockets, the decision for each
//! statement (analysis, tenant lookups, policy: [`crate::plan::Planner`]),
//! opening upstream connections, verify-on-empty lookups. Everything the
//! protocol decides is the core's ([`super::core`]).
//!
//! Both directions run at once (a pipelining client and a gateway streaming
//! a large result must never wait on each other), with bounded buffers: a
//! direction stops reading while its output buffer is above [`HIGH_WATER`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::sync::watch;

use super::core::{Core, Flow, Loss, Need, Placement, Record, RegionMap, same_region};
use super::message::Frontend;
use super::{Phase, SessionError, Shared, upstream_error};
use crate::analyze::Params;
use crate::cancel::CancelGuard;
use crate::logging::ClientInfo;
use crate::plan::{Plan, Planner};
use crate::policy::Settings;
use crate::refusal::RejectReason;
use crate::shared::Live;
use crate::upstream::{
    Attempt, CancelTarget, Liveness, OpenError, StartupParams, Upstream, UpstreamError,
};
use crate::wire::stream::{PgReader, PgWriter};
use crate::wire::{ClientError, FrameError, peek_frame};

/// Output buffered beyond this stops reading the other side.
const HIGH_WATER: usize = 256 * 1024;

/// Gateway health as the core's placement.
struct Health<'a>(&'a crate::upstream::Health, &'a Shared);

impl Placement for Health<'_> {
    fn choose(&self, region: &str) -> Result<Arc<str>, ClientError> {
        // The common case, without building a choice: the region is up.
        if self.0.is_up(region)
            && let Some(name) = self.1.gateways.keys().find(|k| ***k == *region)
        {
            return Ok(name.clone());
        }
        match self.0.choose(region) {
            Ok(choice) => Ok(self.1.region_name(&choice.region_used)),
            // NoGateway's own text names the fallbacks only (the region
            // itself is not its own fallback), or "none configured".
            Err(e) => Err(ClientError::refused(RejectReason::NoGateway, e.to_string())),
        }
    }
}

impl Shared {
    /// The shared `Arc<str>` of a configured region name.
    fn region_name(&self, name: &str) -> Arc<str> {
        self.gateways
            .keys()
            .find(|k| ***k == *name)
            .cloned()
            .unwrap_or_else(|| name.into())
    }

    /// Opens an upstream connection to `region` for a client. A failure to
    /// connect or authenticate as the gateway URL says is a health signal
    /// (the region is marked down, placement then fails over); the gateway
    /// refusing this one client (an unknown database…) is not.
    async fn connect(
        &self,
        region: &Arc<str>,
        params: &StartupParams,
    ) -> Result<Upstream, UpstreamError> {
        let gw = self
            .gateways
            .get(region)
            .ok_or_else(|| UpstreamError::Protocol(format!("region {region} is not configured")))?;
        match crate::upstream::connect_attempt(gw, params).await {
            Ok(up) => {
                self.metrics.add_upstream_connections(region, 1);
                Ok(up)
            }
            Err(Attempt::Refused(e)) => Err(e),
            Err(Attempt::Unreachable(e)) => {
                self.health.connect_failed(region);
                Err(e)
            }
        }
    }
}

/// Opens a new session's first upstream: the local region, or a fallback
/// serving it while it is down (startup needs no local gateway).
pub(super) async fn open_first(
    shared: &Arc<Shared>,
    params: &StartupParams,
) -> Result<(Arc<str>, Upstream), SessionError> {
    let local = shared.local_region.clone();
    let opened = shared
        .health
        .open_with_failover(&local, |r| {
            let gw = shared.gateways.get(r.as_str()).cloned();
            async move {
                match gw {
                    Some(gw) => crate::upstream::connect_attempt(&gw, params).await,
                    None => Err(Attempt::Refused(UpstreamError::Protocol(format!(
                        "region {r} is not configured"
                    )))),
                }
            }
        })
        .await;
    match opened {
        Ok((choice, up)) => {
            let region = shared.region_name(&choice.region_used);
            shared.metrics.add_upstream_connections(&region, 1);
            Ok((region, up))
        }
        Err(OpenError::Session(e)) => Err(upstream_error(&local, e)),
        // A gateway's own answer (28P01 for geogate's pinned credentials,
        // 57P03 while starting) says more than GG004.
        Err(OpenError::NoGateway {
            last: Some(e @ UpstreamError::Server { .. }),
            ..
        }) => Err(upstream_error(&local, e)),
        Err(OpenError::NoGateway { error, .. }) => Err(SessionError::Client(ClientError::fatal(
            RejectReason::NoGateway.sqlstate(),
            error.to_string(),
        ))),
    }
}

/// The sockets of one upstream connection.
struct Conn {
    reader: PgReader,
    writer: PgWriter,
    cancel: CancelTarget,
    /// Bytes waiting to be written.
    out: BytesMut,
    /// Marked when the gateway answers (the prober does not count a slow
    /// probe of a gateway that is serving sessions).
    liveness: Option<Liveness>,
}

impl Conn {
    /// The sockets of an opened upstream, and the bytes it sent past its
    /// startup (the core's link reads them first).
    fn open(up: Upstream, liveness: Option<Liveness>) -> (Conn, BytesMut) {
        let Upstream {
            reader,
            writer,
            cancel,
            leftover,
            ..
        } = up;
        let conn = Conn {
            reader,
            writer,
            cancel,
            out: BytesMut::new(),
            liveness,
        };
        (conn, leftover)
    }
}

enum Event {
    ClientRead(io::Result<usize>),
    UpRead(Arc<str>, io::Result<usize>),
    UpWrote(Arc<str>, io::Result<usize>),
    ClientWrote(io::Result<usize>),
    /// The server's phase changed to this (`None`: the server is gone),
    /// and the receiver to wait on for the next change.
    Phase(Option<Phase>, watch::Receiver<Phase>),
}

/// Waits for the server's phase to change. Awaited across the relay
/// loop's turns: a waiter registered once per change, not once per event.
async fn next_phase(mut rx: watch::Receiver<Phase>) -> (Option<Phase>, watch::Receiver<Phase>) {
    match rx.changed().await {
        Ok(()) => {
            let p = *rx.borrow_and_update();
            (Some(p), rx)
        }
        Err(_) => (None, rx),
    }
}

type PhaseFuture = Pin<Box<dyn Future<Output = (Option<Phase>, watch::Receiver<Phase>)> + Send>>;

/// The relay loop's wait for the server's phase. Its waiter, once
/// registered, stays registered (this task's waker) until the phase
/// changes; so after the first poll it is polled again only when a copy of
/// the receiver says the phase moved: one version check per turn of the
/// loop instead of a poll of the watch's future.
struct PhaseWait {
    next: PhaseFuture,
    peek: watch::Receiver<Phase>,
    armed: bool,
}

impl PhaseWait {
    fn new(rx: watch::Receiver<Phase>) -> PhaseWait {
        PhaseWait {
            peek: rx.clone(),
            next: Box::pin(next_phase(rx)),
            armed: false,
        }
    }
}

impl Future for PhaseWait {
    type Output = (Option<Phase>, watch::Receiver<Phase>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.armed && matches!(self.peek.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        let r = self.next.as_mut().poll(cx);
        self.armed = r.is_pending();
        r
    }
}

/// How a session ended.
enum End {
    /// Client said Terminate or closed its socket.
    ClientLeft,
    /// Tell the client this, then close.
    Fatal(ClientError),
    /// The client's socket broke, or a gateway's FATAL was already relayed.
    Quiet,
}

/// A session after startup: the core, and the sockets around it.
pub struct Session {
    shared: Arc<Shared>,
    /// The live config this session's `settings` were computed from;
    /// replaced by the next statement after a reload.
    live: Arc<Live>,
    settings: Settings,
    startup: StartupParams,
    cancel: CancelGuard,
    core: Core,
    conns: RegionMap<Conn>,
    /// Client bytes not yet handled.
    cin: BytesMut,
    /// Bytes for the client.
    to_client: BytesMut,
    /// Bytes just read from an upstream.
    uin: BytesMut,
    peer: Option<std::net::SocketAddr>,
    draining: bool,
}

impl Session {
    /// A session whose first upstream (`region`) is open.
    pub(super) fn new(
        shared: Arc<Shared>,
        live: Arc<Live>,
        startup: StartupParams,
        cancel: CancelGuard,
        region: Arc<str>,
        upstream: Upstream,
        cin: BytesMut,
    ) -> Session {
        let on_cross = live.config.proxy.on_cross_region_txn;
        let mut core = Core::new(shared.local_region.clone(), region.clone(), on_cross);
        for (k, v) in &upstream.parameters {
            core.client.sql.observe_parameter(k, v);
        }
        let mut conns = RegionMap::default();
        let (conn, leftover) = Conn::open(upstream, shared.health.liveness(&region));
        if let Some(l) = core.link_mut(&region) {
            l.rx = leftover;
        }
        conns.insert(region, conn);
        Session {
            settings: live.planner.settings_for(&startup.user),
            shared,
            live,
            startup,
            cancel,
            core,
            conns,
            cin,
            to_client: BytesMut::new(),
            uin: BytesMut::new(),
            peer: None,
            draining: false,
        }
    }

    /// Notes the client's address (for connection log lines).
    pub(super) fn set_peer(&mut self, peer: Option<std::net::SocketAddr>) {
        self.peer = peer;
        if let Some(peer) = peer {
            crate::logging::connection_opened(peer, &self.client_info());
        }
    }

    fn client_info(&self) -> ClientInfo<'_> {
        ClientInfo {
            user: &self.startup.user,
            application_name: self
                .startup
                .params
                .iter()
                .find(|(k, _)| k == "application_name")
                .map(|(_, v)| v.as_str())
                .unwrap_or(""),
        }
    }

    /// Runs the relay until the session ends, then closes every upstream.
    pub(super) async fn finish(mut self, mut client_r: PgReader, mut client_w: PgWriter) {
        let end = self.relay(&mut client_r, &mut client_w).await;
        drop(client_r);
        if let End::Fatal(e) = &end {
            e.encode(&mut self.to_client);
        }
        if !self.to_client.is_empty() && !matches!(end, End::ClientLeft) {
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
        for (region, conn) in std::mem::take(&mut self.conns) {
            self.shared.metrics.add_upstream_connections(&region, -1);
            terminate(conn).await;
        }
        if let Some(peer) = self.peer {
            crate::logging::connection_closed(peer, &self.client_info(), self.core.statements);
        }
    }

    async fn relay(&mut self, client_r: &mut PgReader, client_w: &mut PgWriter) -> End {
        let mut phase = self.shared.phase.clone();
        if *phase.borrow_and_update() != Phase::Running {
            self.draining = true;
        }
        let mut phase_change = PhaseWait::new(phase);
        let mut terminating = false;
        if let Err(e) = self.step(&mut terminating).await {
            return e;
        }
        loop {
            if terminating && self.core.answered() && self.to_client.is_empty() {
                return End::ClientLeft;
            }
            if self.draining && self.core.is_idle() && self.to_client.is_empty() {
                return End::Fatal(ClientError::shutting_down());
            }
            if self.core.verify_request().is_some() {
                self.finish_verify().await;
                if let Err(e) = self.step(&mut terminating).await {
                    return e;
                }
                continue;
            }
            let read_from = self.core.reading_from();
            let write_to = self
                .conns
                .iter()
                .find(|(_, c)| !c.out.is_empty())
                .map(|(r, _)| r.clone());
            let backlog = self.conns.values().map(|c| c.out.len()).max().unwrap_or(0);
            let read_client = !terminating && self.core.accepts_input() && backlog < HIGH_WATER;
            let read_up = self.to_client.len() < HIGH_WATER;
            // Two different upstreams may be read and written at once.
            let (up_r, up_w) = borrow_two(&mut self.conns, read_from.as_ref(), write_to.as_ref());
            let (cin, uin, to_client) = (&mut self.cin, &mut self.uin, &self.to_client);
            // `biased`: polled in this order, without a random start per
            // event: answers before new client input; the server's phase
            // last (it is polled whenever the session waits, i.e. between
            // any two statements).
            let event = tokio::select! {
                biased;
                r = async { match up_r { Some((reg, c)) => (reg, c.read_into(uin).await), None => std::future::pending().await } }, if read_up => Event::UpRead(r.0, r.1),
                r = async { match up_w { Some((reg, w, out)) => (reg, w.write_some(out).await), None => std::future::pending().await } } => Event::UpWrote(r.0, r.1),
                r = client_w.write_some(to_client), if !to_client.is_empty() => Event::ClientWrote(r),
                r = client_r.read_into(cin), if read_client => Event::ClientRead(r),
                (p, rx) = &mut phase_change => Event::Phase(p, rx),
            };
            match event {
                Event::ClientRead(Ok(0)) | Event::ClientRead(Err(_)) => return End::ClientLeft,
                Event::ClientRead(Ok(_)) => {
                    if let Err(e) = self.step(&mut terminating).await {
                        return e;
                    }
                    release_if_empty(&mut self.cin);
                }
                Event::UpRead(region, Ok(n)) if n > 0 => {
                    if let Some(l) = self.conns.get(&region).and_then(|c| c.liveness.as_ref()) {
                        l.saw_answer();
                    }
                    if let Some(l) = self.core.link_mut(&region) {
                        if l.rx.is_empty() {
                            std::mem::swap(&mut l.rx, &mut self.uin);
                        } else {
                            l.rx.extend_from_slice(&self.uin);
                            self.uin.clear();
                        }
                    }
                    if let Err(e) = self.after_backend() {
                        return e;
                    }
                    if self.write_client_now(client_w).is_err() {
                        return End::Quiet;
                    }
                    self.refresh_failed_tenants().await;
                    // Answers may unblock client input (verify decided,
                    // room in buffers): handle what is waiting.
                    if let Err(e) = self.step(&mut terminating).await {
                        return e;
                    }
                }
                Event::UpRead(region, _) => {
                    if let Some(end) = self.lose_upstream(&region) {
                        return end;
                    }
                }
                Event::UpWrote(region, Ok(n)) => {
                    if let Some(c) = self.conns.get_mut(&region) {
                        c.out.advance(n);
                        release_if_empty(&mut c.out);
                    }
                }
                Event::UpWrote(region, Err(_)) => {
                    if let Some(end) = self.lose_upstream(&region) {
                        return end;
                    }
                }
                Event::ClientWrote(Ok(n)) => {
                    self.to_client.advance(n);
                    release_if_empty(&mut self.to_client);
                }
                Event::ClientWrote(Err(_)) => return End::Quiet,
                // The server is gone: nothing will ever drain us gracefully.
                Event::Phase(None, _) => return End::Fatal(ClientError::shutting_down()),
                Event::Phase(Some(p), rx) => {
                    phase_change = PhaseWait::new(rx);
                    match p {
                        Phase::Running => {}
                        Phase::Draining => self.draining = true,
                        Phase::Closing => return End::Fatal(ClientError::shutting_down()),
                    }
                }
            }
        }
    }

    /// Handles every complete client message the core accepts now, then
    /// moves the core's output to the sockets' buffers.
    async fn step(&mut self, terminating: &mut bool) -> Result<(), End> {
        let max = self.shared.config.proxy.max_message_size;
        while !*terminating && self.core.accepts_input() {
            let h = match peek_frame(&self.cin, max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max }) => {
                    return Err(End::Fatal(ClientError::protocol_violation(format!(
                        "geogate: message of {len} bytes exceeds proxy.max_message_size ({max})"
                    ))));
                }
                Err(e) => {
                    return Err(End::Fatal(ClientError::protocol_violation(format!(
                        "geogate: {e}"
                    ))));
                }
            };
            if self.cin.len() < h.total_len {
                // Make room for the rest of this message in one go.
                self.cin.reserve(h.total_len - self.cin.len());
                break;
            }
            let frame = self.cin.split_to(h.total_len);
            if self.on_message(&frame).await? == Flow::Close {
                *terminating = true;
            }
        }
        self.after_backend()
    }

    /// One client message: its decision (for a statement), then the core.
    async fn on_message(&mut self, frame: &[u8]) -> Result<Flow, End> {
        let msg = Frontend::read(frame).map_err(End::Fatal)?;
        self.refresh_live();
        let statement = matches!(msg, Frontend::Query { .. } | Frontend::Bind(_));
        if statement {
            self.forget_closed_idle_links()?;
        }
        // Only a statement is decided (no decision future for the others).
        let plan = if statement {
            plan_message(&mut self.core, &self.live.planner, &self.settings, &msg).await
        } else {
            None
        };
        let mut tries = 0;
        let handled = loop {
            let placement = Health(&self.shared.health, &self.shared);
            match self.core.handle(&msg, frame, plan.as_ref(), &placement) {
                Ok(h) => break h,
                Err(Need::Link(region)) => {
                    tries += 1;
                    if tries > self.shared.gateways.len() + 1 {
                        return Err(End::Fatal(ClientError::no_gateway(
                            &region,
                            "every gateway that could serve it failed",
                        )));
                    }
                    match self.shared.connect(&region, &self.startup).await {
                        Ok(up) => self.add_conn(region, up),
                        Err(e @ UpstreamError::Server { .. }) => {
                            // The gateway refused this client: it says why.
                            let text = e.to_string();
                            return Err(End::Fatal(ClientError::no_gateway(&region, text)));
                        }
                        Err(_) => self.core.link_failed(&region),
                    }
                }
            }
        };
        let planner = &self.live.planner;
        if let Some(plan) = &plan {
            match &handled.record {
                Record::Nothing => {}
                Record::Served(region) => planner.record(plan, &self.client_info(), Some(region)),
                Record::PolicyRefused => planner.record(plan, &self.client_info(), None),
                Record::Refused(reason) => {
                    planner.record_refusal(plan, &self.client_info(), *reason)
                }
            }
        }
        if self.core.take_cross_region() {
            self.shared.metrics.cross_region_transaction();
        }
        // Only a statement moves the session to another upstream.
        if statement && let Some(c) = self.conns.get(self.core.current()) {
            self.cancel.set_target(&c.cancel);
        }
        Ok(handled.flow)
    }

    /// After a reload the session's policy settings are computed again for
    /// its user, so the new config applies from this statement on.
    fn refresh_live(&mut self) {
        let live = self.shared.live.load();
        if !Arc::ptr_eq(&live, &self.live) {
            self.settings = live.planner.settings_for(&self.startup.user);
            self.core
                .set_cross_region_policy(live.config.proxy.on_cross_region_txn);
            self.live = live;
        }
    }

    /// An idle connection to another region may have died since its last
    /// use (a gateway restart): look before the core reuses it. (The
    /// current one is read whenever the session is idle.)
    fn forget_closed_idle_links(&mut self) -> Result<(), End> {
        if self.conns.len() < 2 {
            return Ok(());
        }
        // Runs before every statement of a multi-region session: look at
        // each idle link in place and allocate only when one has closed.
        let mut closed_links: Vec<Arc<str>> = Vec::new();
        let (core, conns) = (&mut self.core, &mut self.conns);
        for (region, c) in conns.iter_mut() {
            // Cheapest first: an idle link usually has no news. (The current
            // link is the relay loop's to read.)
            if same_region(region, core.current())
                || !has_news(&c.reader)
                || !core.idle_link(region)
            {
                continue;
            }
            let mut probe = BytesMut::new();
            // Polled once: ready only if the socket has news.
            let closed = match poll_once(c.reader.read_into(&mut probe)) {
                None => false,
                Some(Ok(n)) if n > 0 => {
                    // Unasked bytes from an idle gateway: it is ending the
                    // connection (with a reason, usually).
                    if let Some(l) = core.link_mut(region) {
                        l.rx.extend_from_slice(&probe);
                    }
                    core.pump().map_err(End::Fatal)?;
                    true
                }
                Some(_) => true,
            };
            if closed {
                closed_links.push(region.clone());
            }
        }
        for region in closed_links {
            if let Some(end) = self.lose_upstream(&region) {
                return Err(end);
            }
        }
        Ok(())
    }

    fn add_conn(&mut self, region: Arc<str>, up: Upstream) {
        let (conn, leftover) = Conn::open(up, self.shared.health.liveness(&region));
        self.core.add_link(region.clone());
        if let Some(l) = self.core.link_mut(&region) {
            l.rx = leftover;
        }
        self.conns.insert(region, conn);
    }

    /// Walks the answers, moves the core's output to the sockets' buffers
    /// and writes what can be written at once.
    fn after_backend(&mut self) -> Result<(), End> {
        self.core.pump().map_err(End::Fatal)?;
        let out = self.core.to_client();
        if !out.is_empty() {
            if self.to_client.is_empty() {
                std::mem::swap(&mut self.to_client, out);
            } else {
                self.to_client.extend_from_slice(out);
                out.clear();
            }
        }
        for (region, link) in self.core.links_mut() {
            if link.tx.is_empty() {
                continue;
            }
            let Some(c) = self.conns.get_mut(region) else {
                link.tx.clear();
                continue;
            };
            if c.out.is_empty() {
                std::mem::swap(&mut c.out, &mut link.tx);
            } else {
                c.out.extend_from_slice(&link.tx);
                link.tx.clear();
            }
        }
        let mut lost = None;
        for (region, c) in self.conns.iter_mut() {
            if c.out.is_empty() {
                continue;
            }
            match c.writer.try_write_now(&c.out) {
                Ok(n) => {
                    c.out.advance(n);
                    release_if_empty(&mut c.out);
                }
                Err(_) => lost = Some(region.clone()),
            }
        }
        if let Some(region) = lost
            && let Some(end) = self.lose_upstream(&region)
        {
            return Err(end);
        }
        for t in self.core.drain_timings() {
            self.shared
                .metrics
                .observe_duration(t.decision, Some(&t.region), t.started.elapsed());
        }
        if self.core.take_tenant_reload()
            && let Some(cache) = self.live.planner.tenant_cache().cloned()
        {
            tokio::spawn(async move {
                if let Err(e) = cache.load().await {
                    tracing::warn!(error = %e, "tenant directory reload after a region move failed");
                }
            });
        }
        Ok(())
    }

    /// An upstream connection closed or broke. `None`: it was idle, the
    /// session goes on (its next statement opens one, with failover).
    fn lose_upstream(&mut self, region: &Arc<str>) -> Option<End> {
        let (loss, signal) = self.core.link_lost(region);
        if signal {
            self.shared.health.connection_lost(region);
        }
        match loss {
            Loss::Idle => {
                if self.conns.remove(region).is_some() {
                    self.shared.metrics.add_upstream_connections(region, -1);
                }
                None
            }
            Loss::Fatal(Some(e)) => Some(End::Fatal(e)),
            Loss::Fatal(None) => {
                // The gateway's FATAL was relayed: close as PostgreSQL does.
                let _ = self.after_backend();
                Some(End::Quiet)
            }
        }
    }

    /// A transaction failed after statements rewritten by tenant: the
    /// error has reached the client (nothing is retried inside a
    /// transaction); refresh those tenants so the next transaction runs in
    /// their current region.
    async fn refresh_failed_tenants(&mut self) {
        let due = self.core.take_refresh_due();
        if due.is_empty() {
            return;
        }
        if let Some(cache) = self.live.planner.tenant_cache().cloned() {
            for t in &due {
                cache.refresh_one(t).await;
            }
        }
    }

    /// An empty answer held for verify-on-empty: look its tenants up
    /// afresh; run the statement again where they live now, or release it.
    async fn finish_verify(&mut self) {
        let Some((tenants, region)) = self.core.verify_request() else {
            return;
        };
        let (tenants, region) = (tenants.to_vec(), region.clone());
        let mut moved = false;
        if let Some(cache) = self.live.planner.tenant_cache().cloned() {
            for t in &tenants {
                moved |= cache.refresh_one(t).await.rerun_in(&region).is_some();
            }
        }
        if let Some(frames) = self.core.finish_verify(moved) {
            tracing::info!(region = %region, "tenant moved: running the statement again in its new region");
            self.shared.metrics.moves().guarded_retry();
            let mut cin = BytesMut::with_capacity(frames.len() + self.cin.len());
            cin.extend_from_slice(&frames);
            cin.extend_from_slice(&self.cin);
            self.cin = cin;
        }
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
}

/// The reader of one upstream and the writer (with its pending bytes) of
/// another, or of the same one.
#[allow(clippy::type_complexity)]
fn borrow_two<'a>(
    conns: &'a mut RegionMap<Conn>,
    read: Option<&Arc<str>>,
    write: Option<&Arc<str>>,
) -> (
    Option<(Arc<str>, &'a mut PgReader)>,
    Option<(Arc<str>, &'a mut PgWriter, &'a BytesMut)>,
) {
    let mut reader = None;
    let mut writer = None;
    // One pass: each entry is borrowed once, its two halves apart.
    for (region, c) in conns.iter_mut() {
        if read.is_some_and(|r| same_region(r, region)) {
            reader = Some((region.clone(), &mut c.reader));
        }
        if write.is_some_and(|r| same_region(r, region)) {
            writer = Some((region.clone(), &mut c.writer, &c.out));
        }
    }
    (reader, writer)
}

/// Says goodbye (Terminate) and closes; PostgreSQL rolls back anything open.
async fn terminate(conn: Conn) {
    drop(conn.reader);
    crate::upstream::say_goodbye(conn.writer).await;
}

/// The decision for a client message that runs a statement (a Query, or a
/// Bind of a known statement): the statement's analysis (kept with a
/// prepared statement), its Bind parameters, the plan. `None` for other
/// messages.
pub(super) async fn plan_message(
    core: &mut Core,
    planner: &Planner,
    settings: &Settings,
    msg: &Frontend<'_>,
) -> Option<Plan> {
    let (analysis, types) = core.analysis_of(msg, planner.analyzer_id(), |sql, ctx| {
        planner.analyze(sql, ctx)
    })?;
    // A Bind's values are read in place, and only when the decision reads them.
    let bind = match msg {
        Frontend::Bind(b) if analysis.reads_params() => b.params(),
        _ => None,
    };
    let (values, formats) = match &bind {
        Some(b) => (b.values.as_slice(), b.formats.as_slice()),
        None => (&[][..], &[][..]),
    };
    let params = Params {
        values,
        formats,
        types,
    };
    Some(planner.plan_analysis(analysis, &params, settings).await)
}

/// Whether a socket may have something to read (or has closed), without
/// reading it: a look at tokio's readiness flag, cheaper than setting up a
/// read (it runs for each idle link before every statement). Its no-op
/// waker takes the socket's read-waker slot; the relay loop's next poll of
/// that link puts its own back (nothing waits on an idle link meanwhile).
fn has_news(r: &PgReader) -> bool {
    match r {
        PgReader::Plain(fd) => {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            fd.poll_read_ready(&mut cx).is_ready()
        }
        PgReader::Tls(_) => true,
    }
}

/// Polls a future once: its output if it is ready now.
fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// A drained buffer up to this size is kept for the next message (freeing
/// and allocating it again for every statement costs more than the
/// statement's own handling); a larger one (a big result) is freed, so an
/// idle session holds at most this much per buffer.
const KEEP_BUFFER: usize = 1024;

/// Frees a drained buffer's memory when it is larger than [`KEEP_BUFFER`].
fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
        *buf = BytesMut::new();
    }
}
