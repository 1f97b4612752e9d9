//! Facts + tenant lookups + settings → decision. Pure.
//!
//! [`decide`] implements "Decisions" of docs/design.md for an
//! [`Analysis`]. It does no I/O: tenant regions come from a synchronous
//! [`TenantLookup`] (the session resolves [`Analysis::tenant_keys`] through
//! its async cache first). The mode (enforce / warn / observe) is applied by
//! the caller, with [`apply_mode`].

mod decision;
mod mode;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Why a statement is refused: the policy gives GG001–GG003, GG006, GG007.
pub use crate::refusal::RejectReason;
pub use decision::{
    Decision, Outcome, ParamRewrite, RegionMove, RegionName, Rejection, ScatterCause, TableName,
    Tables,
};
pub use mode::{Effect, apply_mode};

use crate::analyze::{
    Alt, Analysis, Exec, ParamText, Params, StatementAnalysis, TableRef, Val, canonical_tenant,
};
use crate::config::{Config, OnMissingRegion, OnParseError, TenantMoves, UnlistedTables};
use crate::metrics::name_word;
use crate::rewrite::{self, quote_literal};

/// The answer of the tenant directory for one tenant (the cache's type:
/// a plain value, so the policy stays free of I/O).
pub use crate::tenants::TenantAnswer;

/// Synchronous tenant → region lookup.
pub trait TenantLookup {
    /// The region of a tenant (its id as text).
    fn region_of(&self, tenant: &str) -> TenantAnswer;
}

/// A lookup that knows no tenant.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTenants;

impl TenantLookup for NoTenants {
    fn region_of(&self, _tenant: &str) -> TenantAnswer {
        TenantAnswer::NotFound
    }
}

impl TenantLookup for std::collections::HashMap<String, String> {
    fn region_of(&self, tenant: &str) -> TenantAnswer {
        match self.get(tenant) {
            Some(r) => TenantAnswer::Found(r.as_str().into()),
            None => TenantAnswer::NotFound,
        }
    }
}

/// Mode-independent policy knobs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `proxy.unlisted_tables`.
    pub unlisted_tables: UnlistedTables,
    /// `proxy.on_parse_error`.
    pub on_parse_error: OnParseError,
    /// The user's `allow_scatter`.
    pub allow_scatter: bool,
    /// Configured regions (sorted).
    pub regions: BTreeSet<String>,
    /// `proxy.local_region`.
    pub local_region: String,
    /// `[tenants]`' tenant-move settings, for the rewriter's write guard.
    pub moves: Option<Arc<TenantMoves>>,
    /// Whether a rewrite also renders its parameterised form
    /// ([`Outcome::Rewrite`]'s `parameterized`): `check` and `explain` show
    /// it; a live session forwards the literal form only, so it is not
    /// rendered for every statement ([`crate::plan::Planner::settings_for`]).
    pub parameterized_rewrites: bool,
    /// `regions` in the same (sorted) order, shared: the policy names a
    /// region by its index here and a decision shares the name.
    names: Names,
    /// `names` as SQL literals (`'eu'`), for the rewrites.
    quoted: Arc<[Box<str>]>,
    /// The `[tables]` names (normalised, sorted), shared by decisions.
    tables: Names,
}

/// Configured names, sorted and shared, with a lookup that needs no
/// `memcmp` call per name for the usual short names.
#[derive(Debug, Clone)]
struct Names {
    names: Arc<[Arc<str>]>,
    /// [`name_word`] of each name.
    words: Arc<[(usize, u64)]>,
}

impl Names {
    fn new<'a>(names: impl Iterator<Item = &'a String>) -> Names {
        let mut names: Vec<Arc<str>> = names.map(|n| Arc::from(n.as_str())).collect();
        names.sort();
        names.dedup();
        Names {
            words: names.iter().map(|n| name_word(n)).collect(),
            names: names.into(),
        }
    }

    /// The index of `name`.
    fn index(&self, name: &str) -> Option<usize> {
        if name.len() <= 8 && self.names.len() <= 16 {
            let w = name_word(name);
            self.words.iter().position(|&k| k == w)
        } else {
            self.names.binary_search_by(|n| (**n).cmp(name)).ok()
        }
    }
}

impl std::ops::Index<usize> for Names {
    type Output = Arc<str>;
    fn index(&self, i: usize) -> &Arc<str> {
        &self.names[i]
    }
}

impl Settings {
    /// Settings for a user (`None`: no user, e.g. `check`).
    pub fn from_config(cfg: &Config, user: Option<&str>) -> Settings {
        let regions: BTreeSet<String> = cfg.regions.keys().cloned().collect();
        Settings {
            unlisted_tables: cfg.proxy.unlisted_tables,
            on_parse_error: cfg.proxy.on_parse_error,
            allow_scatter: user
                .and_then(|u| cfg.users.get(u))
                .is_some_and(|u| u.allow_scatter),
            regions: regions.clone(),
            local_region: cfg.proxy.local_region.clone(),
            moves: cfg.tenants.as_ref().map(|t| Arc::new(t.moves.clone())),
            parameterized_rewrites: true,
            names: Names::new(regions.iter()),
            quoted: regions.iter().map(|r| quote_literal(r).into()).collect(),
            tables: Names::new(cfg.tables.keys()),
        }
    }

    /// A table name as a decision holds it: shared when it is a `[tables]` name.
    fn table_name(&self, name: &str) -> TableName {
        match self.tables.index(name) {
            Some(i) => TableName::from(self.tables[i].clone()),
            None => TableName::from(name),
        }
    }

    /// The index of a configured region in `regions` (sorted).
    fn region_index(&self, name: &str) -> Option<u32> {
        self.names.index(name).and_then(|i| u32::try_from(i).ok())
    }

    /// `name` as a decision names it: shared when it is a configured region.
    fn region_name(&self, name: &str) -> RegionName {
        match self.region_index(name) {
            Some(i) => RegionName::from(self.names[i as usize].clone()),
            None => RegionName::from(name),
        }
    }
}

/// Decides a whole query text: each statement is decided, then combined
/// (any reject rejects; all global is global; one region routes there;
/// several regions scatter).
pub fn decide(
    analysis: &Analysis,
    params: &Params<'_>,
    tenants: &dyn TenantLookup,
    settings: &Settings,
) -> Decision {
    match analysis.statements.len() {
        0 => Decision::global(),
        1 => decide_statement(analysis, 0, params, tenants, settings),
        n => {
            let per = (0..n)
                .map(|i| decide_statement(analysis, i, params, tenants, settings))
                .collect();
            combine(analysis, per)
        }
    }
}

fn combine(analysis: &Analysis, per: Vec<Decision>) -> Decision {
    let mut tables: Vec<TableName> = Vec::new();
    let mut moves = Vec::new();
    let mut parse_error = false;
    let mut regions = BTreeSet::new();
    let mut reject = None;
    let mut any_scatter_allowed = false;
    let mut any_rewrite = false;
    for d in &per {
        tables.extend(d.tables.iter().cloned());
        moves.extend(d.moves.iter().cloned());
        parse_error |= d.parse_error;
        match &d.outcome {
            Outcome::Reject(r) if reject.is_none() => reject = Some(r.clone()),
            Outcome::Route { region } => {
                regions.insert(region.to_string());
            }
            Outcome::Rewrite { region, .. } => {
                any_rewrite = true;
                regions.insert(region.to_string());
            }
            Outcome::Scatter { regions: rs, cause } => {
                regions.extend(rs.iter().cloned());
                any_scatter_allowed |= *cause == ScatterCause::Allowed;
            }
            _ => {}
        }
    }
    tables.sort();
    tables.dedup();
    // PostgreSQL runs a multi-statement text as one implicit transaction:
    // statements each confined to one region, not all the same, are a
    // cross-region transaction. It runs in the first statement's region,
    // each statement with its own rewrite (every row keeps its region).
    let first_region = per.iter().find_map(|d| match &d.outcome {
        Outcome::Route { region } | Outcome::Rewrite { region, .. } => Some(region.clone()),
        _ => None,
    });
    let all_confined = per.iter().all(|d| {
        matches!(
            d.outcome,
            Outcome::Global | Outcome::Route { .. } | Outcome::Rewrite { .. }
        )
    });
    let cross_region = reject.is_none() && all_confined && regions.len() > 1;
    let outcome = if let Some(r) = reject {
        Outcome::Reject(r)
    } else if any_scatter_allowed {
        Outcome::Scatter {
            regions: regions.into_iter().collect(),
            cause: ScatterCause::Allowed,
        }
    } else if regions.len() > 1 && !cross_region {
        Outcome::Scatter {
            regions: regions.into_iter().collect(),
            cause: ScatterCause::MultiRegion,
        }
    } else if let Some(region) =
        first_region.or_else(|| regions.into_iter().next().map(RegionName::from))
    {
        if any_rewrite {
            let parts: Vec<String> = per
                .iter()
                .enumerate()
                .map(|(i, d)| match &d.outcome {
                    Outcome::Rewrite { sql, .. } => sql.clone(),
                    _ => {
                        // A trailing `--` comment would swallow the `;`
                        // that joins the next statement: end its line.
                        let text = analysis.statement_text(i).trim();
                        if text.contains("--") {
                            format!("{text}\n")
                        } else {
                            text.to_string()
                        }
                    }
                })
                .collect();
            Outcome::Rewrite {
                region,
                sql: parts.join(";\n"),
                parameterized: None,
            }
        } else {
            Outcome::Route { region }
        }
    } else {
        Outcome::Global
    };
    let table = match &outcome {
        Outcome::Reject(r) => r.table.as_deref().map(TableName::from),
        _ => None,
    }
    .or_else(|| per.iter().find_map(|d| d.table.clone()));
    Decision {
        outcome,
        tables: tables.into(),
        table,
        moves,
        parse_error,
        cross_region,
    }
}

/// A region a predicate names, as the policy resolved it. Offline (no
/// Bind: `check`, `explain`) a parameter has no value yet: the region is
/// then the parameter's, or the region of the tenant the parameter names.
///
/// `Copy`, with configured regions by index: sets of them are bitmasks,
/// so deciding a statement builds no tree and copies no name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Region {
    /// A configured region: its index in [`Settings::regions`] (sorted, so
    /// the order is the names' order).
    Name(u32),
    /// `region = $n`, unbound.
    Param(u32),
    /// `tenant_id = $n`, unbound: the tenant's region.
    TenantParam(u32),
}

impl Region {
    /// The region as a decision names it: `eu`, or offline `$1` and
    /// `tenant($1)`.
    fn into_name(self, settings: &Settings) -> RegionName {
        match self {
            Region::Name(i) => RegionName::from(settings.names[i as usize].clone()),
            Region::Param(n) => RegionName::from(format!("${n}")),
            Region::TenantParam(n) => RegionName::from(format!("tenant(${n})")),
        }
    }
}

/// A set of [`Region`]s. The first 64 configured regions are bits; more
/// regions and offline parameters go to a sorted `Vec` (empty, hence not
/// allocated, when a proxy decides with a usual config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RegionSet {
    bits: u64,
    rest: Vec<Region>,
}

impl RegionSet {
    fn insert(&mut self, r: Region) {
        match r {
            Region::Name(i) if i < 64 => self.bits |= 1 << i,
            _ => {
                if let Err(at) = self.rest.binary_search(&r) {
                    self.rest.insert(at, r);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.bits.count_ones() as usize + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.bits == 0 && self.rest.is_empty()
    }

    fn intersection(&self, other: &RegionSet) -> RegionSet {
        RegionSet {
            bits: self.bits & other.bits,
            rest: self
                .rest
                .iter()
                .filter(|r| other.rest.binary_search(r).is_ok())
                .copied()
                .collect(),
        }
    }

    fn union_with(&mut self, other: &RegionSet) {
        self.bits |= other.bits;
        for &r in &other.rest {
            self.insert(r);
        }
    }

    /// The smallest region (the set's only one when `len() == 1`).
    fn first(&self) -> Option<Region> {
        if self.bits != 0 {
            Some(Region::Name(self.bits.trailing_zeros()))
        } else {
            self.rest.first().copied()
        }
    }

    /// In order.
    fn iter(&self) -> impl Iterator<Item = Region> + '_ {
        let bits = self.bits;
        (0..64u32)
            .take_while(move |i| bits >> i != 0)
            .filter(move |i| bits & (1 << i) != 0)
            .map(Region::Name)
            .chain(self.rest.iter().copied())
    }
}

/// A reference's resolved region set: `None` = unconstrained.
type Set = Option<RegionSet>;

/// Per-reference scratch space without a heap allocation for the usual
/// few references (a `Vec` beyond `N`).
enum Scratch<T, const N: usize> {
    Inline([T; N]),
    Heap(Vec<T>),
}

impl<T: Default, const N: usize> Scratch<T, N> {
    fn new(len: usize) -> Scratch<T, N> {
        if len <= N {
            Scratch::Inline(std::array::from_fn(|_| T::default()))
        } else {
            Scratch::Heap((0..len).map(|_| T::default()).collect())
        }
    }

    fn slice(&mut self, len: usize) -> &mut [T] {
        match self {
            Scratch::Inline(a) => &mut a[..len],
            Scratch::Heap(v) => &mut v[..len],
        }
    }
}

/// What went wrong resolving a value.
enum Bad {
    UnknownRegion,
    UnknownTenant,
    Directory,
}

/// Decides statement `i` of an analysis.
pub fn decide_statement(
    analysis: &Analysis,
    i: usize,
    params: &Params<'_>,
    tenants: &dyn TenantLookup,
    settings: &Settings,
) -> Decision {
    let mut d = decide_one(analysis, i, params, tenants, settings);
    if let Outcome::Reject(r) = &d.outcome
        && r.table.is_some()
    {
        d.table = r.table.as_deref().map(|t| settings.table_name(t));
    }
    d
}

fn decide_one(
    analysis: &Analysis,
    i: usize,
    params: &Params<'_>,
    tenants: &dyn TenantLookup,
    settings: &Settings,
) -> Decision {
    let Some(st) = analysis.statements.get(i) else {
        return Decision::global();
    };
    if let Some(exec) = &st.exec {
        return decide_execute(exec, &st.template.fingerprint, tenants, settings);
    }
    let t = &st.template;
    let names = &t.facts.tables;
    let tables = match names.first() {
        Some(one) if names.len() == 1 => Tables::One(settings.table_name(one)),
        _ => Tables::Many(names.iter().map(|n| settings.table_name(n)).collect()),
    };
    // The first reference's table is one of `tables` (names are looked up
    // once).
    let table = match t.facts.refs.first() {
        Some(r) => Some(
            tables
                .iter()
                .find(|n| n.as_str() == r.table)
                .cloned()
                .unwrap_or_else(|| settings.table_name(&r.table)),
        ),
        None => tables.first().cloned(),
    };
    let mut d = Decision {
        outcome: Outcome::Global,
        tables,
        table,
        moves: Vec::new(),
        parse_error: t.parse_error.is_some(),
        cross_region: false,
    };
    if let Some(why) = &t.parse_error {
        if settings.on_parse_error == OnParseError::Reject {
            d.outcome = Outcome::Reject(Rejection::not_analysed(&t.fingerprint, why));
        }
        return d;
    }
    if settings.unlisted_tables == UnlistedTables::Reject
        && let Some(u) = t.facts.unlisted.iter().next()
    {
        d.outcome = Outcome::Reject(Rejection::unlisted(u));
        return d;
    }
    let refs = &t.facts.refs;
    if refs.is_empty() {
        return d;
    }
    // The hint applies to the statement it belongs to only.
    let hint = st.hint;
    // COPY FROM / IMPORT INTO a regional table: the rows carry their
    // region when the column list holds the partition column.
    if let Some((r, has_region)) = t.facts.copy_in {
        d.outcome = if has_region {
            Outcome::Scatter {
                regions: settings.regions.iter().cloned().collect(),
                cause: ScatterCause::MultiRegion,
            }
        } else {
            Outcome::Reject(Rejection::copy_without_region(&refs[r]))
        };
        return d;
    }

    // 1. Explicit region predicates.
    let mut sets_buf = Scratch::<Set, 8>::new(refs.len());
    let sets = sets_buf.slice(refs.len());
    for (ri, r) in refs.iter().enumerate() {
        match region_set(analysis, i, r, params, settings) {
            Ok(s) => sets[ri] = s,
            Err(_) => {
                d.outcome = Outcome::Reject(Rejection::unknown_region(&refs[ri]));
                return d;
            }
        }
    }
    // 2. Tenant predicates of rewrite candidates.
    let mut rewrite_regions = RegionSet::default();
    let mut cand_buf = Scratch::<RegionSet, 4>::new(t.candidates.len());
    let cand_sets = cand_buf.slice(t.candidates.len());
    for (k, &c) in t.candidates.iter().enumerate() {
        match tenant_set(analysis, i, &refs[c], params, tenants, settings) {
            Ok(s) => {
                rewrite_regions.union_with(&s);
                cand_sets[k] = s;
            }
            Err(Bad::UnknownTenant) => {
                d.outcome = Outcome::Reject(Rejection::unknown_tenant(&refs[c]));
                return d;
            }
            Err(Bad::Directory) => {
                d.outcome = Outcome::Reject(Rejection::directory(&refs[c]));
                return d;
            }
            Err(Bad::UnknownRegion) => {
                d.outcome = Outcome::Reject(Rejection::tenant_region_unknown(&refs[c]));
                return d;
            }
        }
    }
    // Tenants in several regions cannot be served by one injected region:
    // the statement scatters over those regions (multi_region).
    let rewriting = rewrite_regions.len() == 1;
    for (&c, s) in t.candidates.iter().zip(cand_sets.iter_mut()) {
        // Rows an INSERT adds carry no region unless one is injected: an
        // INSERT for tenants of several regions stays unconstrained.
        let inserting = matches!(refs[c].inject, Some((_, crate::analyze::At::InsertRows)));
        if !s.is_empty() && (rewriting || !inserting) {
            sets[c] = Some(std::mem::take(s));
        }
    }
    // 3. Carry along region equalities.
    let mut carriable_buf = Scratch::<bool, 16>::new(refs.len());
    let carriable = carriable_buf.slice(refs.len());
    for (c, r) in carriable.iter_mut().zip(refs) {
        *c = r.eq_region;
    }
    if rewriting {
        // The rewrite injects `q.region = r`: an equality.
        for &c in &t.candidates {
            carriable[c] = true;
        }
    }
    carry(sets, carriable, &t.facts.edges, &t.facts.corr);

    // 4. Unconstrained references: scatter if allowed, else reject.
    let mut scatter_allowed = false;
    for (ri, r) in refs.iter().enumerate() {
        if sets[ri].is_some() {
            continue;
        }
        if r.on_missing_region == OnMissingRegion::Allow || settings.allow_scatter || hint {
            scatter_allowed = true;
        } else {
            // In a join, name the confined reference whose region would
            // carry over (`u.region = d.region`).
            let partner = refs
                .iter()
                .enumerate()
                .find(|(k, o)| {
                    *k != ri && sets[*k].is_some() && o.partition_column == r.partition_column
                })
                .map(|(_, o)| o);
            d.outcome = Outcome::Reject(Rejection::no_region_in_join(r, partner));
            return d;
        }
    }
    let mut regions = RegionSet::default();
    for s in sets.iter().flatten() {
        regions.union_with(s);
    }
    let decided = if regions.len() == 1 {
        regions.first()
    } else {
        None
    };
    // Region moves: where the row is now → where it goes.
    for m in &t.facts.moves {
        let to =
            m.to.as_ref()
                .and_then(|v| match analysis.label(i, v, params) {
                    ParamText::Text(s) => Some(s),
                    _ => None,
                });
        d.moves.push(RegionMove {
            table: refs[m.target].table.clone(),
            from: sets[m.target]
                .as_ref()
                .filter(|s| s.len() == 1)
                .and_then(RegionSet::first)
                .map(|r| r.into_name(settings).to_string()),
            to: to
                .filter(|r| settings.regions.contains(r.as_ref()))
                .map(Cow::into_owned),
        });
    }
    d.outcome = if scatter_allowed {
        Outcome::Scatter {
            regions: settings.regions.iter().cloned().collect(),
            cause: ScatterCause::Allowed,
        }
    } else if regions.len() > 1 {
        // Sorted by name, as the decision shows them.
        let mut names: Vec<String> = regions
            .iter()
            .map(|r| r.into_name(settings).to_string())
            .collect();
        names.sort();
        Outcome::Scatter {
            regions: names,
            cause: ScatterCause::MultiRegion,
        }
    } else if let Some(region) = decided {
        if rewriting && t.rewrite.is_some() {
            rewrite_outcome(analysis, i, st, region, params, settings)
        } else {
            Outcome::Route {
                region: region.into_name(settings),
            }
        }
    } else {
        // Contradictory predicates (region = 'eu' AND region = 'us'):
        // no rows anywhere; the local gateway answers.
        Outcome::Route {
            region: settings.region_name(&settings.local_region),
        }
    };
    d
}

/// EXECUTE of a SQL prepared statement: decided as the prepared statement
/// with the arguments as its parameters. Its text cannot be rewritten (it
/// lives on the server), so a statement that would need a rewrite is
/// refused like one naming no region.
fn decide_execute(
    exec: &Exec,
    fingerprint: &str,
    tenants: &dyn TenantLookup,
    settings: &Settings,
) -> Decision {
    match exec {
        Exec::Unknown => {
            let mut d = Decision::global();
            d.parse_error = true;
            d.outcome = Outcome::Reject(Rejection::not_analysed(
                fingerprint,
                "EXECUTE of a prepared statement this session has not prepared through geogate",
            ));
            d
        }
        Exec::Known { analysis, values } => {
            let values = crate::analyze::borrowed_params(values);
            let p = Params {
                values: &values,
                formats: &[],
                types: &[],
            };
            let mut d = decide(analysis, &p, tenants, settings);
            if let Outcome::Rewrite { .. } = d.outcome {
                let st = analysis.statements.first();
                let r = st.and_then(|s| {
                    s.template
                        .candidates
                        .first()
                        .map(|&c| &s.template.facts.refs[c])
                });
                d.outcome = match r {
                    Some(r) => Outcome::Reject(Rejection::no_region(r)),
                    None => Outcome::Reject(Rejection::not_analysed(
                        fingerprint,
                        "EXECUTE needs a rewrite",
                    )),
                };
            }
            d
        }
    }
}

fn rewrite_outcome(
    analysis: &Analysis,
    i: usize,
    st: &StatementAnalysis,
    region: Region,
    params: &Params<'_>,
    settings: &Settings,
) -> Outcome {
    // Offline, a tenant bound at execution has no region yet: show the
    // parameterised form.
    let unbound_tenant = !params.is_bound() && matches!(region, Region::TenantParam(_));
    let id = region;
    let region = region.into_name(settings);
    let Some(tpl) = rewrite::template(&st.template, settings.moves.as_deref()) else {
        return Outcome::Route { region };
    };
    let lit = |slot: usize| analysis.lit_text(i, slot);
    let max = analysis.max_param();
    if max >= 65_535 {
        // No parameter number is left for the region (PostgreSQL allows
        // 65535): refuse rather than print an invalid `$n`.
        return Outcome::Reject(Rejection::not_analysed(
            &st.template.fingerprint,
            "parameter number above 65535",
        ));
    }
    let k = max + 1;
    let mut buf = [0u8; 21];
    let parameterized = (settings.parameterized_rewrites || unbound_tenant).then(|| ParamRewrite {
        sql: tpl.render(&lit, crate::analyze::lex::dollar(k.into(), &mut buf)),
        region_param: k,
    });
    let sql = match (&parameterized, id) {
        (Some(p), _) if unbound_tenant => p.sql.clone(),
        (_, Region::Name(r)) => tpl.render(&lit, &settings.quoted[r as usize]),
        _ => tpl.render(&lit, &quote_literal(&region)),
    };
    Outcome::Rewrite {
        region,
        sql,
        parameterized,
    }
}

/// Sets `to` to the intersection with `from`'s set: along equality edges
/// from references confined by an equality (the planner derives the
/// equality and prunes `to`), and along correlations (pruned at run time).
fn carry(
    sets: &mut [Set],
    carriable: &mut [bool],
    edges: &[(usize, usize)],
    corr: &[(usize, usize)],
) {
    // Iterate to a fixpoint on the sets themselves (small n).
    for _ in 0..sets.len().max(1) + 1 {
        let mut changed = false;
        let all = edges
            .iter()
            .map(|e| (*e, true))
            .chain(corr.iter().map(|e| (*e, false)));
        for ((a, b), equality) in all {
            if equality && !carriable[a] {
                continue;
            }
            let Some(sa) = sets[a].clone() else { continue };
            let next = match &sets[b] {
                None => Some(sa),
                Some(sb) => {
                    let x = sb.intersection(&sa);
                    if x.len() == sb.len() { None } else { Some(x) }
                }
            };
            if equality && !carriable[b] {
                carriable[b] = true;
                changed = true;
            }
            if let Some(n) = next {
                sets[b] = Some(n);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

fn resolve_region(
    analysis: &Analysis,
    i: usize,
    v: &Val,
    params: &Params<'_>,
    settings: &Settings,
) -> Result<Option<Region>, ()> {
    match analysis.label(i, v, params) {
        ParamText::Text(s) => match settings.region_index(&s) {
            Some(i) => Ok(Some(Region::Name(i))),
            None => Err(()),
        },
        ParamText::Null => Err(()),
        // Without a Bind (offline check): the region is the parameter's.
        ParamText::Unbound => match v {
            Val::Param(n) if !params.is_bound() => Ok(Some(Region::Param(*n))),
            _ => Err(()),
        },
    }
}

/// The intersection of a reference's explicit region predicates.
fn region_set(
    analysis: &Analysis,
    i: usize,
    r: &TableRef,
    params: &Params<'_>,
    settings: &Settings,
) -> Result<Set, usize> {
    let mut out: Set = None;
    for (ci, conf) in r.confiners.iter().enumerate() {
        if !conf.iter().all(|a| matches!(a, Alt::Region(_))) {
            continue;
        }
        let mut s = RegionSet::default();
        for a in conf {
            if let Alt::Region(v) = a {
                match resolve_region(analysis, i, v, params, settings) {
                    Ok(Some(x)) => {
                        s.insert(x);
                    }
                    Ok(None) => {}
                    Err(()) => return Err(ci),
                }
            }
        }
        out = Some(match out {
            None => s,
            Some(o) => o.intersection(&s),
        });
    }
    Ok(out)
}

/// Regions named by a candidate's tenant predicates (union per
/// predicate, intersection across predicates).
fn tenant_set(
    analysis: &Analysis,
    i: usize,
    r: &TableRef,
    params: &Params<'_>,
    tenants: &dyn TenantLookup,
    settings: &Settings,
) -> Result<RegionSet, Bad> {
    let mut out: Option<RegionSet> = None;
    for conf in &r.confiners {
        if !conf.iter().any(|a| matches!(a, Alt::Tenant(_))) {
            continue;
        }
        let mut s = RegionSet::default();
        for a in conf {
            match a {
                Alt::Region(v) => match resolve_region(analysis, i, v, params, settings) {
                    Ok(Some(x)) => {
                        s.insert(x);
                    }
                    Ok(None) => {}
                    Err(()) => return Err(Bad::UnknownRegion),
                },
                Alt::Tenant(v) => match analysis.value(i, v, params) {
                    ParamText::Text(t) => match tenants.region_of(&canonical_tenant(&t)) {
                        TenantAnswer::Found(reg) => match settings.region_index(&reg) {
                            Some(i) => s.insert(Region::Name(i)),
                            None => return Err(Bad::UnknownRegion),
                        },
                        TenantAnswer::NotFound => return Err(Bad::UnknownTenant),
                        TenantAnswer::Unavailable => return Err(Bad::Directory),
                    },
                    ParamText::Null => return Err(Bad::UnknownTenant),
                    ParamText::Unbound => match v {
                        Val::Param(n) if !params.is_bound() => {
                            s.insert(Region::TenantParam(*n));
                        }
                        _ => return Err(Bad::UnknownTenant),
                    },
                },
            }
        }
        out = Some(match out {
            None => s,
            Some(o) => o.intersection(&s),
        });
    }
    Ok(out.unwrap_or_default())
}

#[cfg(test)]
mod tests;
