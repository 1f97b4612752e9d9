//! The session core: a sans-IO state machine. Client messages (typed, with
//! the decision for each statement) go in; bytes for each upstream and for
//! the client come out. No sockets, no async: the relay loop (`relay.rs`)
//! is the I/O shell around it, and tests drive it with messages alone.
//!
//! State is typed instead of flags: the client's transaction ([`Txn`]:
//! idle, BEGIN deferred, open in a region), the batch (the messages since
//! the last Sync and the region it is pinned to), and one queue of
//! expected answers ([`Answers`]). `docs/session.md` walks through it with
//! the message sequences of real drivers.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::extendedquery::{Close as CloseMsg, Parse as ParseMsg};
use pgwire::messages::simplequery::Query as QueryMsg;
// Fx hashing: these maps are looked up several times per message. Keys
// a client chooses (statement and portal names) can only slow its own
// session's maps.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::answers::{Answer, Answers, Expect, Fate, Own, Pumped, Timing};
use super::client::{ClientState, Txn};
use super::message::{Frontend, Target};
use crate::analyze::{Analysis, SqlContext, StatementKind};
use crate::config::OnCrossRegionTxn;
use crate::metrics::DecisionLabel;
use crate::plan::Plan;
use crate::policy::{Effect, Outcome};
use crate::refusal::{RejectReason, sqlstate};
use crate::wire::ClientError;
use crate::wire::validate::BindFrame;

/// Chooses the region whose gateway serves a region's statements (itself,
/// or a fallback while it is down).
pub trait Placement {
    /// The region to use for `region`, or the `GG004` refusal.
    fn choose(&self, region: &str) -> Result<Arc<str>, ClientError>;
}

/// One upstream connection as the core sees it: what it has prepared,
/// where its batch stands, and its bytes in each direction.
#[derive(Debug, Default)]
pub struct Link {
    /// Bytes to send to the gateway.
    pub tx: BytesMut,
    /// Bytes read from the gateway, not yet walked.
    pub rx: BytesMut,
    /// Named statements prepared here, by client name → generation.
    statements: HashMap<Arc<str>, u64>,
    /// Generation of the unnamed statement prepared here.
    unnamed: Option<u64>,
    /// Rewritten (shadow) statements prepared here.
    shadows: HashSet<String>,
    /// Extended-protocol messages were sent since its last Sync.
    open_batch: bool,
    /// Status byte of its last ReadyForQuery.
    status: u8,
    /// It sent a FATAL error: its close is explained, not a health signal.
    said_fatal: bool,
    /// COPY FROM STDIN data streams of an Execute the client ended here.
    copy_ends: u64,
}

/// A map keyed by region name. A session holds a link to a few regions at
/// most, looked up several times per message: a scan that compares the
/// shared name's pointer before its bytes costs less than hashing the name
/// each time. Iteration is in insertion order (a hash map's was arbitrary).
#[derive(Debug)]
pub struct RegionMap<V> {
    entries: Vec<(Arc<str>, V)>,
}

impl<V> Default for RegionMap<V> {
    fn default() -> Self {
        RegionMap {
            entries: Vec::new(),
        }
    }
}

/// `key` names `region`: nearly always the same shared name, else equal
/// text. (`Arc<str>`'s own `==` compares the bytes, never the pointer.)
#[inline]
pub(super) fn same_region(key: &Arc<str>, region: &str) -> bool {
    (std::ptr::eq(key.as_ptr(), region.as_ptr()) && key.len() == region.len()) || **key == *region
}

/// [`same_region`] for optional names: both absent, or the same region.
fn same_region_opt(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_region(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

impl<V> RegionMap<V> {
    #[inline]
    fn position(&self, region: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(k, _)| same_region(k, region))
    }

    /// The entry of `region`.
    #[inline]
    pub fn get(&self, region: &str) -> Option<&V> {
        self.entries
            .iter()
            .find(|(k, _)| same_region(k, region))
            .map(|(_, v)| v)
    }

    /// The entry of `region`, mutable.
    #[inline]
    pub fn get_mut(&mut self, region: &str) -> Option<&mut V> {
        self.entries
            .iter_mut()
            .find(|(k, _)| same_region(k, region))
            .map(|(_, v)| v)
    }

    /// `region` has an entry.
    #[inline]
    pub fn contains_key(&self, region: &str) -> bool {
        self.position(region).is_some()
    }

    /// Sets `region`'s entry (its name kept if it had one), returning the
    /// one it replaces.
    pub fn insert(&mut self, region: Arc<str>, value: V) -> Option<V> {
        match self.position(&region) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.entries.push((region, value));
                None
            }
        }
    }

    /// Removes `region`'s entry.
    pub fn remove(&mut self, region: &str) -> Option<V> {
        let i = self.position(region)?;
        Some(self.entries.remove(i).1)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The entries, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The names.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The values, mutable.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

impl<V> IntoIterator for RegionMap<V> {
    type Item = (Arc<str>, V);
    type IntoIter = std::vec::IntoIter<(Arc<str>, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Where a portal's answers come from.
#[derive(Debug, Clone)]
enum Portal {
    /// Bound on this region's upstream; the statement's timing, observed
    /// at its first Execute's completion.
    Upstream(Arc<str>, Option<Timing>),
    /// A deferred BEGIN (or a COMMIT/ROLLBACK of one) bound through the
    /// extended protocol: geogate answers its Describe and Execute.
    Own(&'static str),
}

/// The client's portals. The unnamed one, which nearly every Bind
/// creates, has a slot of its own: no hashing or allocation per statement.
#[derive(Debug, Default)]
struct Portals {
    unnamed: Option<Portal>,
    named: HashMap<String, Portal>,
}

impl Portals {
    fn get(&self, name: &str) -> Option<&Portal> {
        match name {
            "" => self.unnamed.as_ref(),
            n => self.named.get(n),
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Portal> {
        match name {
            "" => self.unnamed.as_mut(),
            n => self.named.get_mut(n),
        }
    }

    fn insert(&mut self, name: String, portal: Portal) {
        match name.as_str() {
            "" => self.unnamed = Some(portal),
            _ => {
                self.named.insert(name, portal);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        match name {
            "" => self.unnamed = None,
            n => {
                self.named.remove(n);
            }
        }
    }

    fn clear(&mut self) {
        self.unnamed = None;
        self.named.clear();
    }
}

/// A client message held until its batch's region is known.
#[derive(Debug)]
enum Held {
    Parse {
        name: Arc<str>,
        generation: u64,
        frame: BytesMut,
    },
    DescribeStatement {
        name: Arc<str>,
        frame: BytesMut,
    },
    CloseStatement {
        name: Arc<str>,
        frame: BytesMut,
    },
}

/// A rewritten request whose answer is held until known non-empty: the
/// tenant may have moved, and an empty answer is safe to run again.
#[derive(Debug)]
struct Verify {
    tenants: Vec<String>,
    region: Arc<str>,
    /// The client's frames to send again (a Query; or Bind … Sync).
    replay: BytesMut,
    /// The portal of the verified Bind (extended protocol).
    portal: Option<String>,
    /// Still collecting the batch's frames (until its Sync).
    collecting: bool,
    /// The answer came back empty: waiting for the shell's fresh lookup.
    empty: bool,
}

/// What the shell must provide before the core can go on with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// An upstream connection to this region (open it, then call
    /// [`Core::add_link`], or [`Core::link_failed`]; then hand the same
    /// message again).
    Link(Arc<str>),
}

/// What the shell does after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// The client said Terminate.
    Close,
}

/// What to count for a statement the core handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// Nothing to count (not a statement, or skipped).
    Nothing,
    /// Forwarded to (or answered for) this region.
    Served(Arc<str>),
    /// Refused by the policy (its own reason).
    PolicyRefused,
    /// Refused by the session (cross-region transaction, no gateway…).
    Refused(RejectReason),
}

/// The outcome of one client message.
#[derive(Debug, PartialEq, Eq)]
pub struct Handled {
    /// Go on or close.
    pub flow: Flow,
    /// What to count.
    pub record: Record,
}

impl Handled {
    fn go(record: Record) -> Handled {
        Handled {
            flow: Flow::Continue,
            record,
        }
    }
}

/// How an upstream connection's loss ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Loss {
    /// It owed nothing and held no transaction: forgotten; the session goes on.
    Idle,
    /// The session ends; `error` (if any) is sent to the client first.
    Fatal(Option<ClientError>),
}

/// Where a statement goes.
struct Placed {
    region: Arc<str>,
    /// It reads or writes data: it pins its batch.
    data: bool,
    /// It strays from its transaction's (or batch's) region.
    cross: bool,
    rewritten: Option<String>,
    warning: Option<ClientError>,
}

/// A refusal: the error the client reads, and how it is counted.
struct Refusal {
    error: ClientError,
    record: Record,
}

impl Refusal {
    /// A cross-region transaction (or batch) refused: counted as one too.
    fn cross_region(error: ClientError) -> Refusal {
        Refusal {
            error,
            record: Record::Refused(RejectReason::CrossRegionTxn),
        }
    }
}

/// The portal name geogate describes to abort an upstream's transaction:
/// PostgreSQL answers `34000`, and the transaction (implicit or explicit)
/// fails, so nothing of it commits.
const ABORT_PORTAL: &str = "geogate_abort_transaction";

/// The session core.
#[derive(Debug)]
pub struct Core {
    local: Arc<str>,
    on_cross: OnCrossRegionTxn,
    /// What belongs to the client.
    pub client: ClientState,
    links: RegionMap<Link>,
    /// Where messages that name no region go (the last region used).
    current: Arc<str>,
    /// The region the current batch is pinned to (outside a transaction).
    batch_pin: Option<Arc<str>>,
    /// The current transaction or batch was counted as cross-region.
    cross_counted: bool,
    held: Vec<Held>,
    /// A geogate refusal inside a batch: skip to its Sync.
    skipping: bool,
    portals: Portals,
    verify: Option<Verify>,
    /// The next statement is a verify-on-empty run: not verified again.
    replaying: bool,
    /// A statement moved a tenant: reload the directory once committed.
    moved_tenant: bool,
    /// Tenants of the rewrites not verified on empty since the last
    /// ReadyForQuery `I` (those inside an explicit transaction).
    txn_tenants: Vec<String>,
    /// The transaction failed after such rewrites: their tenants are
    /// looked up afresh (a stale region fails the rest of the transaction;
    /// the next one must be right). See docs/tenant-moves.md.
    refresh_due: Vec<String>,
    /// A cross-region transaction (or batch) to count.
    pending_cross: bool,
    /// Answers expected by the client.
    answers: Answers,
    /// Statements forwarded.
    pub statements: u64,
    /// The unnamed statement's name, shared by the messages held for it.
    empty_name: Arc<str>,
}

impl Core {
    /// A core whose first upstream is `region` (already connected).
    pub fn new(local: Arc<str>, first: Arc<str>, on_cross: OnCrossRegionTxn) -> Core {
        let mut links = RegionMap::default();
        links.insert(
            first.clone(),
            Link {
                status: b'I',
                ..Link::default()
            },
        );
        Core {
            local,
            on_cross,
            client: ClientState::default(),
            links,
            current: first,
            batch_pin: None,
            cross_counted: false,
            held: Vec::new(),
            skipping: false,
            portals: Portals::default(),
            verify: None,
            replaying: false,
            moved_tenant: false,
            txn_tenants: Vec::new(),
            refresh_due: Vec::new(),
            pending_cross: false,
            answers: Answers::default(),
            statements: 0,
            empty_name: Arc::from(""),
        }
    }

    /// After a reload: the cross-region policy in force.
    pub fn set_cross_region_policy(&mut self, on_cross: OnCrossRegionTxn) {
        self.on_cross = on_cross;
    }

    // ---- what the shell reads --------------------------------------------

    /// Bytes for the client.
    pub fn to_client(&mut self) -> &mut BytesMut {
        &mut self.answers.out
    }

    /// Durations to observe, drained (the buffer is kept for the next).
    pub fn drain_timings(&mut self) -> std::vec::Drain<'_, Timing> {
        self.answers.timings.drain(..)
    }

    /// The open upstream links.
    pub fn links_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut Link)> {
        self.links.iter_mut()
    }

    /// One link.
    pub fn link_mut(&mut self, region: &str) -> Option<&mut Link> {
        self.links.get_mut(region)
    }

    /// The regions with a link.
    pub fn link_regions(&self) -> Vec<Arc<str>> {
        self.links.keys().cloned().collect()
    }

    /// The upstream to read from next: the one the front answer comes
    /// from, else the current one (notifications while idle).
    pub fn reading_from(&self) -> Option<Arc<str>> {
        match self.answers.front_upstream() {
            Some(r) => Some(r.clone()),
            None => self
                .links
                .contains_key(&self.current)
                .then(|| self.current.clone()),
        }
    }

    /// The region whose upstream runs the client's latest statement (the
    /// target of a cancel request).
    pub fn current(&self) -> &Arc<str> {
        &self.current
    }

    /// Client input may be handled now (not while an answer waits for a
    /// verify-on-empty decision: nothing may overtake it).
    pub fn accepts_input(&self) -> bool {
        self.verify.as_ref().is_none_or(|v| v.collecting)
    }

    /// Nothing in flight, no transaction, no batch: a safe point to close.
    pub fn is_idle(&self) -> bool {
        self.client.txn == Txn::Idle
            && self.answers.is_empty()
            && self.held.is_empty()
            && self.verify.is_none()
            && self
                .links
                .values()
                .all(|l| !l.open_batch && l.tx.is_empty())
            && self.answers.out.is_empty()
    }

    /// Every answer owed has been read.
    pub fn answered(&self) -> bool {
        self.answers.is_empty() && self.verify.is_none()
    }

    /// A transaction that moved a tenant has ended: reload the directory.
    pub fn take_tenant_reload(&mut self) -> bool {
        if self.moved_tenant && self.client.txn == Txn::Idle {
            self.moved_tenant = false;
            return true;
        }
        false
    }

    /// An empty held answer waits for a fresh lookup of these tenants
    /// (the region it ran in).
    pub fn verify_request(&self) -> Option<(&[String], &Arc<str>)> {
        self.verify
            .as_ref()
            .filter(|v| v.empty)
            .map(|v| (v.tenants.as_slice(), &v.region))
    }

    /// The analysis of a Query's text or of the prepared statement a Bind
    /// names (kept with the statement, see [`Memo`](super::client::Memo)),
    /// with the statement's parameter types; `None` when the message
    /// needs no decision now.
    pub fn analysis_of(
        &mut self,
        msg: &Frontend<'_>,
        analyzer: u64,
        analyze: impl FnOnce(&str, &SqlContext) -> Arc<Analysis>,
    ) -> Option<(Arc<Analysis>, &[u32])> {
        if self.skipping {
            return None;
        }
        match msg {
            Frontend::Query { sql } => Some((analyze(sql, &self.client.sql), &[])),
            Frontend::Bind(b) => {
                self.client
                    .prepared_analysis(b.statement_name(), analyzer, analyze)
            }
            _ => None,
        }
    }

    // ---- client messages ---------------------------------------------------

    /// Handles one client message. `plan` is the decision for a Query or a
    /// Bind of a known statement ([`Core::analysis_of`]).
    pub fn handle(
        &mut self,
        msg: &Frontend<'_>,
        frame: &[u8],
        plan: Option<&Plan>,
        placement: &dyn Placement,
    ) -> Result<Handled, Need> {
        if let Frontend::Terminate = msg {
            return Ok(Handled {
                flow: Flow::Close,
                record: Record::Nothing,
            });
        }
        self.collect_for_verify(msg, frame);
        if self.skipping {
            return self.while_skipping(msg, frame);
        }
        match msg {
            Frontend::Query { sql } => self.on_query(frame, sql, plan, placement),
            Frontend::Parse { name, sql, types } => {
                let generation = self.client.on_parse(name, sql, types);
                self.hold(Held::Parse {
                    name: self.held_name(name),
                    generation,
                    frame: frame.into(),
                });
                Ok(Handled::go(Record::Nothing))
            }
            Frontend::Describe {
                target: Target::Statement,
                name,
            } => {
                self.hold(Held::DescribeStatement {
                    name: self.held_name(name),
                    frame: frame.into(),
                });
                Ok(Handled::go(Record::Nothing))
            }
            Frontend::Close {
                target: Target::Statement,
                name,
            } => {
                self.client.on_close_statement(name);
                self.hold(Held::CloseStatement {
                    name: self.held_name(name),
                    frame: frame.into(),
                });
                Ok(Handled::go(Record::Nothing))
            }
            Frontend::Describe {
                target: Target::Portal,
                name,
            } => self.on_portal_message(frame, name, Answer::Describe, placement),
            Frontend::Execute { portal } => {
                self.on_portal_message(frame, portal, Answer::Execute, placement)
            }
            Frontend::Close {
                target: Target::Portal,
                name,
            } => {
                let r = self.on_portal_message(frame, name, Answer::Close, placement);
                if r.is_ok() {
                    self.portals.remove(name);
                }
                r
            }
            Frontend::Bind(bind) => self.on_bind(frame, bind, plan, placement),
            Frontend::Sync => self.on_sync(frame, placement),
            Frontend::Flush => self.on_flush(frame, placement),
            Frontend::Copy { end } => {
                // COPY data follows its statement to the upstream that runs
                // it; outside COPY, PostgreSQL ignores it, and so do we.
                let extended = *end && self.answers.executing(&self.current);
                if let Some(l) = self.links.get_mut(&self.current) {
                    l.tx.extend_from_slice(frame);
                    if extended {
                        // The end of an Execute's COPY data: its batch
                        // waits for the Sync that follows (the ones before
                        // were ignored in copy-in mode).
                        l.copy_ends += 1;
                        l.open_batch = true;
                    }
                }
                Ok(Handled::go(Record::Nothing))
            }
            Frontend::FunctionCall => {
                let region = self.home(placement)?;
                self.release_held(&region);
                self.send(&region, frame);
                self.answers
                    .push(Expect::upstream(&region, Answer::Query, Fate::Forward));
                Ok(Handled::go(Record::Served(region)))
            }
            Frontend::Terminate => unreachable!("handled above"),
        }
    }

    /// A statement name to hold: the unnamed one's is shared (drivers
    /// send it with nearly every statement).
    fn held_name(&self, name: &str) -> Arc<str> {
        if name.is_empty() {
            self.empty_name.clone()
        } else {
            name.into()
        }
    }

    /// Parse, Describe and Close of statements touch no data and pin
    /// nothing: they wait for the batch's first data statement to know
    /// where it goes (every path that sends a message sends what is held
    /// first, so answers keep the order asked). Once the batch or the
    /// transaction runs somewhere, they follow it at once.
    fn hold(&mut self, held: Held) {
        self.held.push(held);
        let destination = match &self.client.txn {
            Txn::Open(r) => Some(r.clone()),
            _ => self.batch_pin.clone(),
        };
        if let Some(region) = destination {
            self.release_held(&region);
        }
    }

    /// After a refusal inside a batch, PostgreSQL's rule: everything up to
    /// Sync is skipped; a Flush still delivers what is pending.
    fn while_skipping(&mut self, msg: &Frontend<'_>, frame: &[u8]) -> Result<Handled, Need> {
        match msg {
            Frontend::Sync => {
                self.skipping = false;
                self.finish_sync(frame);
            }
            Frontend::Flush => self.flush_links(frame),
            _ => {}
        }
        Ok(Handled::go(Record::Nothing))
    }

    fn on_sync(&mut self, frame: &[u8], placement: &dyn Placement) -> Result<Handled, Need> {
        if !self.held.is_empty() {
            let region = self.home(placement)?;
            self.release_held(&region);
        }
        self.finish_sync(frame);
        Ok(Handled::go(Record::Nothing))
    }

    /// The Sync goes to the upstream the batch ran on; a batch that reached
    /// no upstream is answered by geogate.
    fn finish_sync(&mut self, frame: &[u8]) {
        let fate = self.verify_fate();
        match self.links.iter_mut().find(|(_, l)| l.open_batch) {
            Some((region, l)) => {
                l.tx.extend_from_slice(frame);
                l.open_batch = false;
                let mut e = Expect::upstream(region, Answer::Ready, fate);
                e.copy_epoch = l.copy_ends;
                self.answers.push(e);
            }
            None => {
                let mut e = Expect::own(Own::Ready, Answer::Ready);
                e.skippable = false;
                e.fate = fate;
                self.answers.push(e);
            }
        }
        if let Some(v) = &mut self.verify {
            v.collecting = false;
        }
        self.batch_pin = None;
        if self.client.txn == Txn::Idle {
            self.cross_counted = false;
            // Unnamed portals end with their batch's implicit transaction.
            self.portals.clear();
        }
    }

    fn on_flush(&mut self, frame: &[u8], placement: &dyn Placement) -> Result<Handled, Need> {
        if !self.held.is_empty() {
            let region = self.home(placement)?;
            self.release_held(&region);
        }
        self.flush_links(frame);
        Ok(Handled::go(Record::Nothing))
    }

    /// Forwards a Flush to every upstream with a batch open; geogate's own
    /// answers need none (they are written as soon as they come due).
    fn flush_links(&mut self, frame: &[u8]) {
        for l in self.links.values_mut() {
            if l.open_batch {
                l.tx.extend_from_slice(frame);
            }
        }
    }

    /// Describe, Execute or Close of a portal: where its Bind went.
    fn on_portal_message(
        &mut self,
        frame: &[u8],
        portal: &str,
        answer: Answer,
        placement: &dyn Placement,
    ) -> Result<Handled, Need> {
        let home = match self.portals.get(portal) {
            Some(Portal::Own(tag)) => {
                let tag = *tag;
                // What is held is answered first, in order.
                if !self.held.is_empty() {
                    let region = self.home(placement)?;
                    self.release_held(&region);
                }
                let mut out = BytesMut::new();
                match answer {
                    Answer::Describe => put_empty(&mut out, b'n'),
                    Answer::Execute => out.extend_from_slice(&command_complete(tag)),
                    _ => put_empty(&mut out, b'3'),
                }
                self.answers.push(Expect::own(Own::Raw(out), answer));
                return Ok(Handled::go(Record::Nothing));
            }
            Some(Portal::Upstream(r, _)) if self.links.contains_key(r) => r.clone(),
            _ => self.home(placement)?,
        };
        self.release_held(&home);
        let fate = self.verify_fate();
        // One lookup of the link: the frame, and its COPY epoch.
        let link = self.links.get_mut(&home).expect("placed on an open link");
        link.tx.extend_from_slice(frame);
        link.open_batch = true;
        let mut e = Expect::upstream(&home, answer, fate);
        e.copy_epoch = link.copy_ends;
        if answer == Answer::Execute
            && let Some(Portal::Upstream(_, timing)) = self.portals.get_mut(portal)
        {
            e.timing = timing.take();
        }
        self.answers.push(e);
        Ok(Handled::go(Record::Nothing))
    }

    fn on_query(
        &mut self,
        frame: &[u8],
        sql: &str,
        plan: Option<&Plan>,
        placement: &dyn Placement,
    ) -> Result<Handled, Need> {
        let Some(plan) = plan else {
            // Cannot happen: the shell plans every Query.
            return Ok(Handled::go(Record::Nothing));
        };
        // A simple Query ends whatever extended batch was open: held
        // messages go first, where the session's statements go.
        if !self.held.is_empty() {
            let region = self.home(placement)?;
            self.release_held(&region);
        }
        if let Some(h) = self.own_transaction_answer(plan, None) {
            return Ok(h);
        }
        if let Txn::Deferred { failed: true, .. } = self.client.txn {
            self.refuse(in_failed_transaction(), true);
            return Ok(Handled::go(Record::Nothing));
        }
        let placed = match self.place(plan, placement) {
            Ok(p) => p,
            Err(r) => return self.refused(r, true, placement),
        };
        if !self.links.contains_key(&placed.region) {
            return Err(Need::Link(placed.region));
        }
        let region = placed.region.clone();
        self.start_statement(&placed, false);
        let verify = !std::mem::take(&mut self.replaying)
            && placed.rewritten.is_some()
            && !plan.tenants.is_empty()
            && plan.analysis.statements.len() == 1
            && self.client.txn == Txn::Idle
            && self.verify.is_none();
        if !verify && placed.rewritten.is_some() {
            self.txn_tenants.extend(plan.tenants.iter().cloned());
        }
        let link = self.links.get_mut(&region).expect("checked above");
        match &placed.rewritten {
            Some(text) => {
                let _ = QueryMsg::new(text.clone()).encode(&mut link.tx);
            }
            None => link.tx.extend_from_slice(frame),
        }
        // A simple Query destroys the unnamed statement.
        link.unnamed = None;
        self.client.set_unnamed(None);
        self.client.on_statement(sql);
        self.client.sql.record(&plan.analysis);
        let mut e = Expect::upstream(&region, Answer::Query, Fate::Forward);
        e.timing = Some(timing(plan, &region));
        if verify {
            e.fate = Fate::Hold;
            self.answers.start_hold();
            self.verify = Some(Verify {
                tenants: plan.tenants.clone(),
                region: region.clone(),
                replay: frame.into(),
                portal: None,
                collecting: false,
                empty: false,
            });
        }
        self.answers.push(e);
        self.note_statement(plan);
        Ok(Handled::go(Record::Served(region)))
    }

    fn on_bind(
        &mut self,
        frame: &[u8],
        bind: &BindFrame<'_>,
        plan: Option<&Plan>,
        placement: &dyn Placement,
    ) -> Result<Handled, Need> {
        let portal = bind_portal(frame);
        let (Some(plan), Some(stmt_sql)) = (
            plan,
            self.client
                .statement(bind.statement_name())
                .map(|s| s.sql.clone()),
        ) else {
            // An unknown statement: the gateway reports it (26000), in order.
            let region = self.home(placement)?;
            self.release_held(&region);
            self.send(&region, frame);
            self.answers
                .push(Expect::upstream(&region, Answer::Bind, Fate::Forward));
            self.portals
                .insert(portal, Portal::Upstream(region.clone(), None));
            return Ok(Handled::go(Record::Nothing));
        };
        // Held messages before the Bind are answered before it, wherever
        // the Bind goes; an own answer needs them sent somewhere first.
        // Only transaction control can be answered by geogate: decode the
        // Bind's values (a second decoding) for those alone.
        let control = plan.is_only(StatementKind::Begin)
            || plan.is_only(StatementKind::Commit)
            || plan.is_only(StatementKind::Rollback);
        if control
            && let Some(h) = self.own_transaction_answer(plan, Some((&portal, no_values(bind))))
        {
            if !self.held.is_empty() {
                let region = self.home(placement)?;
                // The own answer is already queued: put the held messages'
                // answers in front of it.
                let own = self.answers_tail_own();
                self.release_held(&region);
                self.answers.push(own);
            }
            return Ok(h);
        }
        if let Txn::Deferred { failed: true, .. } = self.client.txn {
            self.refuse(in_failed_transaction(), false);
            return Ok(Handled::go(Record::Nothing));
        }
        let placed = match self.place(plan, placement) {
            Ok(p) => p,
            Err(r) => return self.refused(r, false, placement),
        };
        if !self.links.contains_key(&placed.region) {
            return Err(Need::Link(placed.region));
        }
        let region = placed.region.clone();
        // Verify on empty: the batch's first data statement, a rewrite by
        // tenant, outside a transaction.
        let verify = !std::mem::take(&mut self.replaying)
            && placed.rewritten.is_some()
            && !plan.tenants.is_empty()
            && self.client.txn == Txn::Idle
            && self.batch_pin.is_none()
            && self.verify.is_none()
            && !self.links.values().any(|l| l.open_batch);
        self.start_statement(&placed, true);
        if !verify && placed.rewritten.is_some() {
            self.txn_tenants.extend(plan.tenants.iter().cloned());
        }
        self.release_held(&region);
        let shadow = placed.rewritten.as_ref().map(|text| {
            let shadow = shadow_name(text);
            let link = self.links.get_mut(&region).expect("checked above");
            if !link.shadows.contains(&shadow) {
                let types = self
                    .client
                    .statement(bind.statement_name())
                    .map(|s| s.types.clone())
                    .unwrap_or_default();
                let _ =
                    ParseMsg::new(Some(shadow.clone()), text.clone(), types).encode(&mut link.tx);
                link.shadows.insert(shadow.clone());
                link.open_batch = true;
                self.answers
                    .push(Expect::upstream(&region, Answer::Parse, Fate::Swallow));
            }
            shadow
        });
        if shadow.is_none() {
            self.ensure_prepared(&region, bind.statement_name());
        }
        let link = self.links.get_mut(&region).expect("checked above");
        match &shadow {
            Some(s) => rebind(frame, bind, s, &mut link.tx),
            None => link.tx.extend_from_slice(frame),
        }
        link.open_batch = true;
        if verify {
            self.answers.start_hold();
            self.verify = Some(Verify {
                tenants: plan.tenants.clone(),
                region: region.clone(),
                replay: frame.into(),
                portal: Some(portal.clone()),
                collecting: true,
                empty: false,
            });
        }
        self.answers
            .push(Expect::upstream(&region, Answer::Bind, self.verify_fate()));
        self.portals.insert(
            portal,
            Portal::Upstream(region.clone(), Some(timing(plan, &region))),
        );
        // A SET executed through Bind is replayed on new upstreams too.
        self.client.on_statement(&stmt_sql);
        self.client.sql.record(&plan.analysis);
        self.note_statement(plan);
        Ok(Handled::go(Record::Served(region)))
    }

    /// BEGIN outside a transaction, and COMMIT/ROLLBACK of a transaction
    /// that never reached a gateway, are answered by geogate: a transaction
    /// is pinned to the region of its first data statement, unknown when
    /// BEGIN arrives. `bound`: a Bind's portal, and whether it has no
    /// parameter values.
    fn own_transaction_answer(
        &mut self,
        plan: &Plan,
        bound: Option<(&String, bool)>,
    ) -> Option<Handled> {
        if bound.is_some_and(|(_, no_values)| !no_values) {
            return None;
        }
        let tag = if plan.is_only(StatementKind::Begin)
            && self.client.txn == Txn::Idle
            && self.batch_pin.is_none()
            && !self.links.values().any(|l| l.open_batch)
        {
            let sql = plan.analysis.sql().to_string();
            let tag = begin_tag(&sql);
            self.client.txn = Txn::Deferred { sql, failed: false };
            tag
        } else if let Txn::Deferred { failed, .. } = &self.client.txn {
            let commit = plan.is_only(StatementKind::Commit);
            let rollback = plan.is_only(StatementKind::Rollback);
            if !commit && !rollback {
                return None;
            }
            // COMMIT of a failed transaction rolls back, as in PostgreSQL.
            let tag = if rollback || *failed {
                "ROLLBACK"
            } else {
                "COMMIT"
            };
            self.client.txn = Txn::Idle;
            self.cross_counted = false;
            tag
        } else {
            return None;
        };
        match bound {
            None => {
                self.answers
                    .push(Expect::own(Own::Raw(command_complete(tag)), Answer::Query));
                self.answers.push(Expect::own(Own::Ready, Answer::Ready));
            }
            Some((portal, _)) => {
                let mut out = BytesMut::new();
                put_empty(&mut out, b'2');
                self.answers.push(Expect::own(Own::Raw(out), Answer::Bind));
                self.portals.insert(portal.clone(), Portal::Own(tag));
            }
        }
        self.statements += 1;
        Some(Handled::go(Record::Served(self.local.clone())))
    }

    /// Removes the own answer just queued (to queue held answers first).
    fn answers_tail_own(&mut self) -> Expect {
        self.answers
            .pop_back()
            .expect("an own answer was just queued")
    }

    /// Where a decided statement goes, or why it is refused. Pure: counts
    /// nothing, opens nothing.
    fn place(&self, plan: &Plan, placement: &dyn Placement) -> Result<Placed, Refusal> {
        let (wanted, rewritten, warning) = match &plan.effect {
            Effect::Refuse(r) => {
                return Err(Refusal {
                    error: ClientError::error(r.sqlstate(), r.message.clone()),
                    record: Record::PolicyRefused,
                });
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
        let data =
            !plan.decision.tables.is_empty() || !matches!(plan.decision.outcome, Outcome::Global);
        if plan.decision.cross_region && self.on_cross == OnCrossRegionTxn::Reject {
            return Err(Refusal::cross_region(ClientError::refused(
                RejectReason::CrossRegionTxn,
                "geogate: the statements of this query (one implicit transaction) are \
                 for different regions; on_cross_region_txn = \"reject\": send them \
                 separately or keep the transaction in one region",
            )));
        }
        let pinned = match &self.client.txn {
            Txn::Open(r) => Some(r.clone()),
            _ => self.batch_pin.clone(),
        };
        if let Some(pin) = pinned {
            let cross = wanted.as_deref().is_some_and(|w| *w != *pin);
            if cross && self.on_cross == OnCrossRegionTxn::Reject {
                let what = if matches!(self.client.txn, Txn::Open(_)) {
                    "transaction"
                } else {
                    "batch (one implicit transaction)"
                };
                return Err(Refusal::cross_region(ClientError::refused(
                    RejectReason::CrossRegionTxn,
                    format!(
                        "geogate: this {what} runs in region {pin}; a statement for region {} \
                         may not join it (on_cross_region_txn = \"reject\"); commit first or \
                         keep the transaction in one region",
                        wanted.as_deref().unwrap_or("?")
                    ),
                )));
            }
            return Ok(Placed {
                region: pin,
                data,
                cross,
                rewritten,
                warning,
            });
        }
        // Global statements run on the local gateway (the contract).
        let target: &str = wanted.as_deref().unwrap_or(&self.local);
        let region = placement.choose(target).map_err(|error| Refusal {
            error,
            record: Record::Refused(RejectReason::NoGateway),
        })?;
        Ok(Placed {
            region,
            data,
            cross: plan.decision.cross_region,
            rewritten,
            warning,
        })
    }

    /// What precedes a placed statement on its upstream: the end of a batch
    /// left open elsewhere, a deferred BEGIN, a warning notice.
    fn start_statement(&mut self, placed: &Placed, extended: bool) {
        let region = &placed.region;
        // An upstream left in the middle of a batch (messages that touch no
        // data) gets its own Sync: no gateway stays in an open implicit
        // transaction.
        let others: Vec<Arc<str>> = self
            .links
            .iter()
            .filter(|(r, l)| !same_region(r, region) && l.open_batch)
            .map(|(r, _)| r.clone())
            .collect();
        for r in others {
            let l = self.links.get_mut(&r).expect("listed above");
            put_sync(&mut l.tx);
            l.open_batch = false;
            self.answers
                .push(Expect::upstream(&r, Answer::Ready, Fate::Swallow));
        }
        if placed.cross && !std::mem::replace(&mut self.cross_counted, true) {
            self.pending_cross = true;
        }
        if let Txn::Deferred { sql, .. } = &self.client.txn {
            let sql = sql.clone();
            self.send_hidden_statement(region, &sql);
            self.client.txn = Txn::Open(region.clone());
        }
        // A batch (up to its Sync) is one implicit transaction; a simple
        // Query is one of its own.
        if extended && placed.data && !matches!(self.client.txn, Txn::Open(_)) {
            self.batch_pin = Some(region.clone());
        }
        if let Some(w) = &placed.warning {
            self.answers
                .push(Expect::own(Own::Notice(w.clone()), Answer::Query));
        }
        self.current = region.clone();
    }

    /// Runs `sql` on `region`'s upstream with its answer swallowed: as a
    /// simple Query between batches, else inside the open batch through
    /// the unnamed statement.
    fn send_hidden_statement(&mut self, region: &Arc<str>, sql: &str) {
        let link = self.links.get_mut(region).expect("placed on an open link");
        if link.open_batch {
            let _ = ParseMsg::new(None, sql.to_string(), Vec::new()).encode(&mut link.tx);
            put_bind_unnamed(&mut link.tx);
            put_execute_unnamed(&mut link.tx);
            link.unnamed = None;
            for answer in [Answer::Parse, Answer::Bind, Answer::Execute] {
                self.answers
                    .push(Expect::upstream(region, answer, Fate::Swallow));
            }
        } else {
            let _ = QueryMsg::new(sql.to_string()).encode(&mut link.tx);
            self.answers
                .push(Expect::upstream(region, Answer::Query, Fate::Swallow));
        }
    }

    /// Sends the held messages (Parse, Describe, Close of statements) to
    /// `region`, preparing there what they name.
    fn release_held(&mut self, region: &Arc<str>) {
        // Inside a batch being verified, their answers are held with it.
        let fate = self.verify_fate();
        for held in std::mem::take(&mut self.held) {
            match held {
                Held::Parse {
                    name,
                    generation,
                    frame,
                } => {
                    let link = self.links.get_mut(region).expect("placed on an open link");
                    if name.is_empty() {
                        link.unnamed = Some(generation);
                    } else if link.statements.insert(name.clone(), generation).is_some() {
                        // Another generation of the name is prepared there:
                        // close it first (PostgreSQL refuses a duplicate).
                        let _ = CloseMsg::new(b'S', Some(name.to_string())).encode(&mut link.tx);
                        self.answers
                            .push(Expect::upstream(region, Answer::Close, Fate::Swallow));
                    }
                    let link = self.links.get_mut(region).expect("placed on an open link");
                    link.tx.extend_from_slice(&frame);
                    link.open_batch = true;
                    self.answers
                        .push(Expect::upstream(region, Answer::Parse, fate));
                }
                Held::DescribeStatement { name, frame } => {
                    self.ensure_prepared(region, &name);
                    let generation = self.client.statement(&name).map(|s| s.generation);
                    self.send(region, &frame);
                    let mut e = Expect::upstream(region, Answer::Describe, fate);
                    e.describes = generation.map(|g| (name, g));
                    self.answers.push(e);
                }
                Held::CloseStatement { name, frame } => {
                    let link = self.links.get_mut(region).expect("placed on an open link");
                    if name.is_empty() {
                        link.unnamed = None;
                    } else {
                        link.statements.remove(&name);
                    }
                    self.send(region, &frame);
                    self.answers
                        .push(Expect::upstream(region, Answer::Close, fate));
                }
            }
        }
    }

    /// Prepares the client's statement `name` on `region`'s upstream when
    /// that upstream does not have this generation of it.
    fn ensure_prepared(&mut self, region: &Arc<str>, name: &str) {
        let Some(stmt) = self.client.statement(name) else {
            return;
        };
        let link = self.links.get_mut(region).expect("placed on an open link");
        let have = if name.is_empty() {
            link.unnamed
        } else {
            link.statements.get(name).copied()
        };
        if have == Some(stmt.generation) {
            return;
        }
        if have.is_some() && !name.is_empty() {
            let _ = CloseMsg::new(b'S', Some(name.to_string())).encode(&mut link.tx);
            self.answers
                .push(Expect::upstream(region, Answer::Close, Fate::Swallow));
        }
        let _ = ParseMsg::new(
            (!name.is_empty()).then(|| name.to_string()),
            stmt.sql.to_string(),
            stmt.types.clone(),
        )
        .encode(&mut link.tx);
        if name.is_empty() {
            link.unnamed = Some(stmt.generation);
        } else {
            link.statements.insert(name.into(), stmt.generation);
        }
        link.open_batch = true;
        self.answers
            .push(Expect::upstream(region, Answer::Parse, Fate::Swallow));
    }

    /// Appends a client frame for `region` (an extended message: opens its batch).
    fn send(&mut self, region: &Arc<str>, frame: &[u8]) {
        let link = self.links.get_mut(region).expect("placed on an open link");
        link.tx.extend_from_slice(frame);
        link.open_batch = true;
    }

    /// The region messages that name none go to: the transaction's, the
    /// batch's, the one with a batch open, else the current one (opened
    /// again through failover if it was lost).
    fn home(&self, placement: &dyn Placement) -> Result<Arc<str>, Need> {
        if let Txn::Open(r) = &self.client.txn {
            return Ok(r.clone());
        }
        if let Some(r) = &self.batch_pin {
            return Ok(r.clone());
        }
        if let Some((r, _)) = self.links.iter().find(|(_, l)| l.open_batch) {
            return Ok(r.clone());
        }
        if self.links.contains_key(&self.current) {
            return Ok(self.current.clone());
        }
        match placement.choose(&self.local) {
            Ok(r) if self.links.contains_key(&r) => Ok(r),
            Ok(r) => Err(Need::Link(r)),
            // No gateway at all: ask for the local one; its failure is
            // reported to the client by the shell.
            Err(_) => Err(Need::Link(self.local.clone())),
        }
    }

    fn refused(
        &mut self,
        refusal: Refusal,
        simple: bool,
        placement: &dyn Placement,
    ) -> Result<Handled, Need> {
        // Held messages before the refused statement get their answers.
        if !self.held.is_empty() {
            match self.home(placement) {
                Ok(region) => self.release_held(&region),
                // Nowhere to send them: the error stands for the batch.
                Err(_) => self.held.clear(),
            }
        }
        if refusal.record == Record::Refused(RejectReason::CrossRegionTxn)
            && !std::mem::replace(&mut self.cross_counted, true)
        {
            self.pending_cross = true;
        }
        self.refuse(refusal.error, simple);
        Ok(Handled::go(refusal.record))
    }

    /// Answers a statement with an error instead of forwarding it, with
    /// PostgreSQL's consequences: the transaction (explicit, or the
    /// batch's implicit one) fails, so nothing of it commits; in a batch,
    /// the rest up to Sync is skipped.
    fn refuse(&mut self, error: ClientError, simple: bool) {
        if let Txn::Deferred { failed, .. } = &mut self.client.txn {
            *failed = true;
        }
        let abort = match &self.client.txn {
            Txn::Open(r) => Some(r.clone()),
            _ => self
                .links
                .iter()
                .find(|(_, l)| l.open_batch)
                .map(|(r, _)| r.clone()),
        };
        if let Some(region) = abort {
            let link = self.links.get_mut(&region).expect("listed");
            put_describe_portal(&mut link.tx, ABORT_PORTAL);
            if simple || !link.open_batch {
                put_sync(&mut link.tx);
                link.open_batch = false;
                self.answers
                    .push(Expect::upstream(&region, Answer::Describe, Fate::Abort));
                self.answers
                    .push(Expect::upstream(&region, Answer::Ready, Fate::Swallow));
            } else {
                // The answers before the error arrive now, as PostgreSQL
                // sends an error at once.
                put_flush(&mut link.tx);
                self.answers
                    .push(Expect::upstream(&region, Answer::Describe, Fate::Abort));
            }
        }
        // In a batch, an upstream error before the refused statement
        // means PostgreSQL never reached it: the refusal is skipped too.
        let mut e = Expect::own(Own::Error(error), Answer::Query);
        e.skippable = !simple;
        self.answers.push(e);
        if simple {
            self.answers.push(Expect::own(Own::Ready, Answer::Ready));
        } else {
            self.skipping = true;
        }
        if self.verify.take().is_some() {
            self.answers.release_hold();
        }
    }

    /// Remembers what a statement means for the session's future.
    fn note_statement(&mut self, plan: &Plan) {
        self.statements += 1;
        if !plan.decision.moves.is_empty() {
            self.moved_tenant = true;
        }
        if matches!(
            plan.kind(),
            StatementKind::Discard | StatementKind::Deallocate
        ) && let Some(l) = self.links.get_mut(&self.current)
        {
            l.shadows.clear();
        }
    }

    /// Takes the cross-region count due (once per transaction or batch).
    pub fn take_cross_region(&mut self) -> bool {
        std::mem::take(&mut self.pending_cross)
    }

    // ---- verify on empty -------------------------------------------------

    /// The fate of the next answers of a batch being verified.
    fn verify_fate(&self) -> Fate {
        if self.verify.as_ref().is_some_and(|v| v.collecting) {
            Fate::Hold
        } else {
            Fate::Forward
        }
    }

    /// A message of the batch whose answer is held: kept for a replay when
    /// it belongs to the verified statement (Describe and Execute of its
    /// portal, the Sync); anything else gives verification up.
    fn collect_for_verify(&mut self, msg: &Frontend<'_>, frame: &[u8]) {
        let Some(v) = self.verify.as_mut().filter(|v| v.collecting) else {
            return;
        };
        let portal = v.portal.as_deref().unwrap_or("");
        let keep = match msg {
            Frontend::Execute { portal: p } => **p == *portal,
            Frontend::Describe {
                target: Target::Portal,
                name,
            } => **name == *portal,
            // A statement described after its Bind: described again where
            // the replay runs (prepared there first).
            Frontend::Describe {
                target: Target::Statement,
                ..
            } => true,
            Frontend::Sync => true,
            _ => false,
        };
        if keep {
            v.replay.extend_from_slice(frame);
        } else {
            self.verify = None;
            self.answers.release_hold();
        }
    }

    /// Tenants to look up afresh: a transaction failed after statements
    /// rewritten with their cached regions (taken once).
    pub fn take_refresh_due(&mut self) -> Vec<String> {
        let mut due = std::mem::take(&mut self.refresh_due);
        due.sort();
        due.dedup();
        due
    }

    /// The shell's fresh lookup of a verified statement's tenants: `moved`
    /// when one of them now lives in another region. Returns the client
    /// frames to handle again (the statement runs again in the new
    /// region), or releases the empty answer.
    pub fn finish_verify(&mut self, moved: bool) -> Option<BytesMut> {
        let v = self.verify.take_if(|v| v.empty)?;
        if moved && self.client.txn == Txn::Idle {
            self.answers.discard_hold();
            self.replaying = true;
            return Some(v.replay);
        }
        self.answers.release_hold();
        None
    }

    // ---- upstream side -----------------------------------------------------

    /// An upstream connection to `region` was opened for the session.
    pub fn add_link(&mut self, region: Arc<str>) {
        let mut link = Link {
            status: b'I',
            ..Link::default()
        };
        let replay = self.client.replay_script();
        if !replay.is_empty() {
            let _ = QueryMsg::new(replay).encode(&mut link.tx);
            self.answers
                .push(Expect::upstream(&region, Answer::Query, Fate::Swallow));
        }
        self.links.insert(region, link);
    }

    /// The client's transaction status byte as the client must see it.
    fn status(&self) -> u8 {
        match &self.client.txn {
            Txn::Idle => b'I',
            Txn::Deferred { failed: false, .. } => b'T',
            Txn::Deferred { failed: true, .. } => b'E',
            Txn::Open(r) => match self.links.get(r).map(|l| l.status) {
                Some(b'E') => b'E',
                _ => b'T',
            },
        }
    }

    /// Walks what the upstreams sent against the expected answers, writing
    /// the client's bytes. Errors are the session's end (`08P01`).
    pub fn pump(&mut self) -> Result<(), ClientError> {
        // Nothing owed and nothing read (after an answer's last byte):
        // nothing to walk.
        if self.answers.is_empty() && self.links.values().all(|l| l.rx.is_empty()) {
            return Ok(());
        }
        loop {
            let status = self.status();
            let front = self.answers.front_upstream().cloned();
            let pumped = match &front {
                None => self.answers.pump(None, &mut BytesMut::new(), status),
                Some(r) => match self.links.get_mut(r) {
                    Some(l) => self.answers.pump(Some(r), &mut l.rx, status),
                    None => return Err(ClientError::upstream_lost(r)),
                },
            }
            .map_err(|e| {
                ClientError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("geogate: invalid message from a gateway: {e}"),
                )
            })?;
            match pumped {
                Pumped::Empty => break,
                Pumped::NeedBytes(r) => {
                    if r.is_none() || same_region_opt(r.as_ref(), front.as_ref()) {
                        break;
                    }
                }
                Pumped::Ready {
                    region,
                    status,
                    to_client,
                } => {
                    self.on_ready(&region, status);
                    if let Some(held) = to_client {
                        let s = self.status();
                        self.answers.put_status(held, s);
                    }
                    if let Some(empty) = self.answers.take_held_done() {
                        match self.verify.as_mut() {
                            Some(v) if empty => v.empty = true,
                            _ => {
                                self.verify = None;
                                self.answers.release_hold();
                            }
                        }
                    }
                }
                Pumped::ParamTypes {
                    name,
                    generation,
                    types,
                } => self.client.learn_types(&name, generation, types),
                Pumped::StandardStrings(on) => self.client.sql.set_standard_conforming_strings(on),
                Pumped::Fatal(region) => {
                    if let Some(l) = self.links.get_mut(&region) {
                        l.said_fatal = true;
                    }
                }
            }
        }
        // Upstreams that owe nothing: notifications, or a gateway saying
        // it ends the connection.
        let idle: Vec<Arc<str>> = self
            .links
            .iter()
            .filter(|(r, l)| !l.rx.is_empty() && !self.answers.owed_by(r))
            .map(|(r, _)| r.clone())
            .collect();
        for r in idle {
            let link = self.links.get_mut(&r).expect("listed");
            let fatal = self.answers.unsolicited(&mut link.rx).map_err(|e| {
                ClientError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("geogate: invalid message from a gateway: {e}"),
                )
            })?;
            link.said_fatal |= fatal;
        }
        Ok(())
    }

    /// A ReadyForQuery from `region`: its transaction status.
    fn on_ready(&mut self, region: &Arc<str>, status: u8) {
        if let Some(l) = self.links.get_mut(region) {
            l.status = status;
        }
        match status {
            b'E' => self.refresh_due.append(&mut self.txn_tenants),
            b'I' => self.txn_tenants.clear(),
            _ => {}
        }
        match &self.client.txn {
            Txn::Open(r) if same_region(r, region) && status == b'I' => {
                self.client.txn = Txn::Idle;
                self.cross_counted = false;
                self.portals.clear();
            }
            Txn::Idle if status != b'I' => self.client.txn = Txn::Open(region.clone()),
            _ => {}
        }
    }

    /// The connection to `region` ended (EOF or an error). Returns whether
    /// the session goes on, and whether the loss is a health signal: a
    /// connection lost in the middle of a request without the server
    /// saying why. An idle one lost is not: the next connection to it
    /// tells (a restarted gateway is up again; a dead one refuses).
    pub fn link_lost(&mut self, region: &Arc<str>) -> (Loss, bool) {
        let Some(link) = self.links.get(region) else {
            return (Loss::Idle, false);
        };
        let in_txn = matches!(&self.client.txn, Txn::Open(r) if same_region(r, region))
            || self
                .batch_pin
                .as_ref()
                .is_some_and(|p| same_region(p, region));
        let busy = in_txn || self.answers.owed_by(region) && !self.answers.answer_for_lost(region);
        if busy {
            let signal = !link.said_fatal;
            let error = signal.then(|| ClientError::upstream_lost(region));
            return (Loss::Fatal(error), signal);
        }
        self.links.remove(region);
        (Loss::Idle, false)
    }

    /// `region`'s upstream owes nothing and holds no batch or transaction.
    pub fn idle_link(&self, region: &Arc<str>) -> bool {
        self.links.get(region).is_some_and(|l| {
            !l.open_batch
                && l.tx.is_empty()
                && !self.answers.owed_by(region)
                && !matches!(&self.client.txn, Txn::Open(r) if same_region(r, region))
        })
    }

    /// Opening `region`'s upstream failed: nothing to undo (the shell marks
    /// it down and hands the message again; placement then fails over).
    pub fn link_failed(&mut self, _region: &Arc<str>) {}
}

/// The extended-protocol answers' answer for a statement in a failed
/// transaction, as PostgreSQL words it.
fn in_failed_transaction() -> ClientError {
    ClientError::error(
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// The decision label and start time of a statement.
fn timing(plan: &Plan, region: &Arc<str>) -> Timing {
    let decision = match &plan.decision.outcome {
        Outcome::Global => DecisionLabel::Global,
        Outcome::Route { .. } => DecisionLabel::Route,
        Outcome::Rewrite { .. } => DecisionLabel::Rewrite,
        Outcome::Scatter { .. } => DecisionLabel::Scatter,
        Outcome::Reject(_) => DecisionLabel::Reject,
    };
    Timing {
        started: Instant::now(),
        decision,
        region: region.clone(),
    }
}

/// The portal a Bind frame creates.
fn bind_portal(frame: &[u8]) -> String {
    let body = frame.get(5..).unwrap_or(&[]);
    // The unnamed portal, nearly always.
    if body.first().is_none_or(|&b| b == 0) {
        return String::new();
    }
    let end = body.iter().position(|&b| b == 0).unwrap_or(0);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// A Bind with no parameter values (a BEGIN bound as JDBC does).
fn no_values(bind: &BindFrame<'_>) -> bool {
    bind.params().is_some_and(|b| b.values.is_empty())
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

/// A message with no body (ParseComplete, BindComplete, NoData…).
fn put_empty(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_i32(4);
}

fn put_sync(out: &mut BytesMut) {
    put_empty(out, b'S');
}

fn put_flush(out: &mut BytesMut) {
    put_empty(out, b'H');
}

fn put_describe_portal(out: &mut BytesMut, name: &str) {
    out.put_u8(b'D');
    out.put_i32((4 + 1 + name.len() + 1) as i32);
    out.put_u8(b'P');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}

/// Bind of the unnamed statement into the unnamed portal, no parameters.
fn put_bind_unnamed(out: &mut BytesMut) {
    out.put_slice(&[b'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]);
}

/// Execute of the unnamed portal, all rows.
fn put_execute_unnamed(out: &mut BytesMut) {
    out.put_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
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
pub fn command_complete(tag: &str) -> BytesMut {
    let mut b = BytesMut::with_capacity(tag.len() + 6);
    b.put_u8(b'C');
    b.put_i32((tag.len() + 5) as i32);
    b.put_slice(tag.as_bytes());
    b.put_u8(0);
    b
}
