//! The AST walk: every table reference with its scope, and for each
//! regional reference the predicates that confine it.
//!
//! One `Visitor` (one monomorphised walk, see notes/crates.md) visits every
//! `Select` (a scope: its FROM, joins and WHERE) and every INSERT, UPDATE
//! and DELETE (a scope: target, FROM/USING, WHERE). Subqueries, CTEs and
//! set operations are reached by the walk itself, each analysed on its own.
//! The rewrite walk (`crate::rewrite`) counts scopes in the same order.

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, CopySource, Delete, Expr, FromTable, Ident, InTarget, Insert,
    JoinConstraint, JoinOperator, ObjectName, Query, Select, SelectItem, SetExpr, Statement,
    TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind, Value, Visit, Visitor,
};

use super::lex::LIFT_BASE;
use crate::config::{Config, OnMissingRegion, TableConfig};

/// Where a value in a predicate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// A lifted literal: its slot in the statement's literal list.
    Lit(usize),
    /// A literal left in the shape (already decoded).
    Text(String),
    /// A bind parameter `$n` (1-based).
    Param(u32),
}

/// One alternative of a confining predicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alt {
    /// `region = v`.
    Region(Val),
    /// `tenant_column = v`.
    Tenant(Val),
}

/// A scope, numbered in walk order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The n-th `Select` visited.
    Select(usize),
    /// The n-th INSERT/UPDATE/DELETE visited.
    Stmt(usize),
}

/// Where a region predicate for a reference can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// `WHERE (old) AND q.col = r`.
    Where,
    /// The ON clause of join `join` of FROM item `from` (outer join's nullable side).
    JoinOn { from: usize, join: usize },
    /// INSERT … VALUES: add the column and a value per row.
    InsertRows,
}

/// A regional table reference.
#[derive(Debug, Clone)]
pub struct TableRef {
    /// Normalised table name (as in `[tables]`).
    pub table: String,
    /// The partition column.
    pub partition_column: String,
    /// The tenant column, if configured.
    pub tenant_column: Option<String>,
    /// The table's policy.
    pub on_missing_region: OnMissingRegion,
    /// Conjunction of disjunctions: every entry confines the reference.
    pub(crate) confiners: Vec<Vec<Alt>>,
    /// Where a predicate could be injected, if anywhere.
    pub(crate) inject: Option<(Scope, At)>,
    /// The name to qualify an injected column with (alias or table name).
    pub(crate) qualifier: Ident,
    /// Key the qualifier matches (folded).
    key: String,
}

impl TableRef {
    /// Whether some predicate names the region explicitly.
    pub(crate) fn has_region_confiner(&self) -> bool {
        self.confiners
            .iter()
            .any(|c| c.iter().all(|a| matches!(a, Alt::Region(_))))
    }

    /// Whether some predicate names a tenant (and none names the region).
    pub(crate) fn has_tenant_confiner(&self) -> bool {
        !self.has_region_confiner()
            && self
                .confiners
                .iter()
                .any(|c| c.iter().any(|a| matches!(a, Alt::Tenant(_))))
    }
}

/// An UPDATE that sets the partition column.
#[derive(Debug, Clone)]
pub struct MoveFact {
    /// Index of the reference in `Facts::refs`.
    pub(crate) target: usize,
    /// The new value, if it is a literal or parameter.
    pub(crate) to: Option<Val>,
}

/// Everything the walk found in one statement.
#[derive(Debug, Default)]
pub struct Facts {
    /// Regional references, in walk order.
    pub refs: Vec<TableRef>,
    /// Region-column equalities `(from, to)`: `to` is confined wherever
    /// `from` is.
    pub(crate) edges: Vec<(usize, usize)>,
    /// Every table named (normalised), CTE names excluded.
    pub tables: BTreeSet<String>,
    /// Tables not listed in the config.
    pub unlisted: BTreeSet<String>,
    /// Partition-column updates.
    pub(crate) moves: Vec<MoveFact>,
}

impl Facts {
    /// Region-column equalities `(from, to)` between references: `to` is
    /// confined wherever `from` is.
    pub fn region_equalities(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.edges.iter().copied()
    }
}

/// Walks one parsed statement.
pub(crate) fn collect(stmt: &Statement, cfg: &Config) -> Facts {
    let mut c = Collector {
        cfg,
        ctes: HashSet::new(),
        facts: Facts::default(),
        selects: 0,
        stmts: 0,
    };
    let _ = stmt.visit(&mut c);
    c.facts
}

struct Collector<'c> {
    cfg: &'c Config,
    ctes: HashSet<String>,
    facts: Facts,
    selects: usize,
    stmts: usize,
}

/// Folds an identifier as PostgreSQL does: unquoted → lower case.
pub(crate) fn fold(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

fn last_ident(name: &ObjectName) -> Option<&Ident> {
    name.0.last().and_then(|p| p.as_ident())
}

impl Visitor for Collector<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(w) = &q.with {
            for cte in &w.cte_tables {
                self.ctes.insert(fold(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        let scope = Scope::Select(self.selects);
        self.selects += 1;
        let mut members = Vec::new();
        let mut pending = Vec::new();
        for (fi, twj) in s.from.iter().enumerate() {
            self.add_twj(twj, Some((scope, fi)), &mut members, &mut pending);
        }
        self.apply_pending(pending, &members);
        if let Some(w) = &s.selection {
            self.apply(w, &members);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        match st {
            Statement::Insert(i) => {
                let scope = Scope::Stmt(self.stmts);
                self.stmts += 1;
                self.insert(i, scope);
            }
            Statement::Update(u) => {
                let scope = Scope::Stmt(self.stmts);
                self.stmts += 1;
                self.update(u, scope);
            }
            Statement::Delete(d) => {
                let scope = Scope::Stmt(self.stmts);
                self.stmts += 1;
                self.delete(d, scope);
            }
            Statement::Copy {
                source: CopySource::Table { table_name, .. },
                ..
            } => {
                // COPY reads or writes a whole table: never confined.
                let _ = self.add_table(table_name, None, None);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// ON clauses to apply once every reference of the scope is known:
/// (expression, references it may confine).
type PendingOn<'a> = Vec<(&'a Expr, Vec<usize>)>;

impl<'c> Collector<'c> {
    /// Records a table; returns the index of its regional reference.
    fn add_table(
        &mut self,
        name: &ObjectName,
        alias: Option<&Ident>,
        inject: Option<(Scope, At)>,
    ) -> Option<usize> {
        let last = last_ident(name)?;
        let norm = fold(last);
        if name.0.len() == 1 && self.ctes.contains(&norm) {
            return None;
        }
        self.facts.tables.insert(norm.to_lowercase());
        match self.cfg.table(&norm) {
            None => {
                self.facts.unlisted.insert(norm.to_lowercase());
                None
            }
            Some(TableConfig::Global) => None,
            Some(TableConfig::Regional(rt)) => {
                let qualifier = alias.unwrap_or(last).clone();
                self.facts.refs.push(TableRef {
                    table: norm.to_lowercase(),
                    partition_column: rt.partition_column.clone(),
                    tenant_column: rt.tenant_column.clone(),
                    on_missing_region: rt.on_missing_region,
                    confiners: Vec::new(),
                    inject,
                    key: fold(&qualifier),
                    qualifier,
                });
                Some(self.facts.refs.len() - 1)
            }
        }
    }

    fn add_factor<'a>(
        &mut self,
        f: &'a TableFactor,
        inject: Option<(Scope, At)>,
        members: &mut Vec<usize>,
        pending: &mut PendingOn<'a>,
    ) -> Vec<usize> {
        match f {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let r = self.add_table(name, alias.as_ref().map(|a| &a.name), inject);
                members.extend(r);
                r.into_iter().collect()
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                // References inside parentheses are analysed but never
                // injected into (the right place is not obvious).
                let before = members.len();
                self.add_twj(table_with_joins, None, members, pending);
                members[before..].to_vec()
            }
            _ => Vec::new(),
        }
    }

    /// Adds a FROM item and its joins. `ctx` is `None` when nothing in it
    /// may be injected into.
    fn add_twj<'a>(
        &mut self,
        twj: &'a TableWithJoins,
        ctx: Option<(Scope, usize)>,
        members: &mut Vec<usize>,
        pending: &mut PendingOn<'a>,
    ) {
        let start = members.len();
        let where_inject = ctx.map(|(s, _)| (s, At::Where));
        self.add_factor(&twj.relation, where_inject, members, pending);
        // ON clauses that confine the whole scope are applied at the end
        // with every member known; collect them as "scope-wide" markers.
        for (ji, join) in twj.joins.iter().enumerate() {
            use JoinOperator as J;
            match &join.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::CrossJoin(c)
                | J::StraightJoin(c)
                | J::Semi(c)
                | J::LeftSemi(c)
                | J::RightSemi(c) => {
                    self.add_factor(&join.relation, where_inject, members, pending);
                    if let JoinConstraint::On(e) = c {
                        pending.push((e, Vec::from([usize::MAX])));
                    }
                }
                J::Left(c) | J::LeftOuter(c) => {
                    let inject = match (ctx, c) {
                        (Some((s, fi)), JoinConstraint::On(_)) => {
                            Some((s, At::JoinOn { from: fi, join: ji }))
                        }
                        _ => None,
                    };
                    let rs = self.add_factor(&join.relation, inject, members, pending);
                    if let JoinConstraint::On(e) = c {
                        pending.push((e, rs));
                    }
                }
                J::Right(_) | J::RightOuter(_) => {
                    // Everything to the left becomes nullable.
                    for &m in &members[start..] {
                        self.facts.refs[m].inject = None;
                    }
                    self.add_factor(&join.relation, where_inject, members, pending);
                }
                J::FullOuter(_) => {
                    for &m in &members[start..] {
                        self.facts.refs[m].inject = None;
                    }
                    self.add_factor(&join.relation, None, members, pending);
                }
                _ => {
                    self.add_factor(&join.relation, None, members, pending);
                }
            }
        }
    }

    /// Applies pending ON clauses (scope-wide ones marked `[usize::MAX]`).
    fn apply_pending(&mut self, pending: PendingOn<'_>, members: &[usize]) {
        for (e, rs) in pending {
            if rs.first() == Some(&usize::MAX) {
                self.apply(e, members);
            } else {
                self.apply_restricted(e, members, &rs);
            }
        }
    }

    fn update(&mut self, u: &Update, scope: Scope) {
        let mut members = Vec::new();
        let mut pending = Vec::new();
        self.add_twj(&u.table, Some((scope, 0)), &mut members, &mut pending);
        let target = members.first().copied();
        if let Some(from) = &u.from {
            let (UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = from;
            for (i, twj) in f.iter().enumerate() {
                self.add_twj(twj, Some((scope, i + 1)), &mut members, &mut pending);
            }
        }
        self.apply_pending(pending, &members);
        if let Some(w) = &u.selection {
            self.apply(w, &members);
        }
        if let Some(t) = target {
            let col = self.facts.refs[t].partition_column.clone();
            for a in &u.assignments {
                let AssignmentTarget::ColumnName(n) = &a.target else {
                    continue;
                };
                if last_ident(n).map(fold).as_deref() == Some(col.as_str()) {
                    self.facts.moves.push(MoveFact {
                        target: t,
                        to: val(&a.value),
                    });
                }
            }
        }
    }

    fn delete(&mut self, d: &Delete, scope: Scope) {
        let mut members = Vec::new();
        let mut pending = Vec::new();
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
        let mut n = 0;
        for twj in from {
            self.add_twj(twj, Some((scope, n)), &mut members, &mut pending);
            n += 1;
        }
        if let Some(using) = &d.using {
            for twj in using {
                self.add_twj(twj, Some((scope, n)), &mut members, &mut pending);
                n += 1;
            }
        }
        self.apply_pending(pending, &members);
        if let Some(w) = &d.selection {
            self.apply(w, &members);
        }
    }

    fn insert(&mut self, i: &Insert, scope: Scope) {
        let TableObject::TableName(name) = &i.table else {
            return;
        };
        let alias = i.table_alias.as_ref().map(|a| &a.alias);
        let Some(r) = self.add_table(name, alias, None) else {
            return;
        };
        let cols: Vec<String> = i
            .columns
            .iter()
            .filter_map(|c| last_ident(c).map(fold))
            .collect();
        let (pcol, tcol) = {
            let t = &self.facts.refs[r];
            (t.partition_column.clone(), t.tenant_column.clone())
        };
        let pidx = cols.iter().position(|c| *c == pcol);
        let tidx = tcol.and_then(|t| cols.iter().position(|c| *c == t));
        let Some(src) = &i.source else { return };
        match src.body.as_ref() {
            SetExpr::Values(v) => {
                let pick = |idx: usize, tenant: bool| -> Option<Vec<Alt>> {
                    v.rows
                        .iter()
                        .map(|row| {
                            row.content.get(idx).and_then(val).map(|x| {
                                if tenant {
                                    Alt::Tenant(x)
                                } else {
                                    Alt::Region(x)
                                }
                            })
                        })
                        .collect()
                };
                if let Some(p) = pidx {
                    if let Some(alts) = pick(p, false) {
                        self.facts.refs[r].confiners.push(alts);
                    }
                } else if let Some(t) = tidx {
                    if let Some(alts) = pick(t, true) {
                        self.facts.refs[r].confiners.push(alts);
                    }
                    self.facts.refs[r].inject = Some((scope, At::InsertRows));
                }
            }
            SetExpr::Select(s) => {
                // INSERT … SELECT: the region comes from the matching
                // projection item when it is a literal or parameter.
                if let Some(p) = pidx {
                    let item = s.projection.get(p);
                    let e = match item {
                        Some(SelectItem::UnnamedExpr(e)) => Some(e),
                        Some(SelectItem::ExprWithAlias { expr, .. }) => Some(expr),
                        _ => None,
                    };
                    if let Some(x) = e.and_then(val) {
                        self.facts.refs[r].confiners.push(vec![Alt::Region(x)]);
                    }
                }
            }
            _ => {}
        }
    }

    /// Applies an expression's confining facts to the scope's references.
    fn apply(&mut self, e: &Expr, members: &[usize]) {
        let pf = self.pred(e, members);
        for (r, alts) in pf.per {
            self.facts.refs[r].confiners.push(alts);
        }
        for (a, b) in pf.edges {
            self.facts.edges.push((a, b));
            self.facts.edges.push((b, a));
        }
    }

    /// Like `apply`, but only `targets` may be confined (an outer join's
    /// ON clause filters only its nullable side); an equality carries a
    /// confinement only towards a target.
    fn apply_restricted(&mut self, e: &Expr, members: &[usize], targets: &[usize]) {
        let pf = self.pred(e, members);
        for (r, alts) in pf.per {
            if targets.contains(&r) {
                self.facts.refs[r].confiners.push(alts);
            }
        }
        for (a, b) in pf.edges {
            if targets.contains(&b) {
                self.facts.edges.push((a, b));
            }
            if targets.contains(&a) {
                self.facts.edges.push((b, a));
            }
        }
    }

    /// Resolves a column expression to (reference, is_partition_column).
    fn column(&self, e: &Expr, members: &[usize]) -> Option<(usize, bool)> {
        let refs = &self.facts.refs;
        match e {
            Expr::Nested(x) => self.column(x, members),
            Expr::Identifier(id) => {
                let col = fold(id);
                let mut hit = members.iter().filter(|&&m| refs[m].partition_column == col);
                if let (Some(&m), None) = (hit.next(), hit.next()) {
                    return Some((m, true));
                }
                let mut hit = members
                    .iter()
                    .filter(|&&m| refs[m].tenant_column.as_deref() == Some(col.as_str()));
                match (hit.next(), hit.next()) {
                    (Some(&m), None) => Some((m, false)),
                    _ => None,
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let q = fold(&parts[parts.len() - 2]);
                let col = fold(&parts[parts.len() - 1]);
                let m = *members.iter().find(|&&m| refs[m].key == q)?;
                if refs[m].partition_column == col {
                    Some((m, true))
                } else if refs[m].tenant_column.as_deref() == Some(col.as_str()) {
                    Some((m, false))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn pred(&self, e: &Expr, members: &[usize]) -> Pf {
        let mut out = Pf::default();
        match e {
            Expr::Nested(x) => return self.pred(x, members),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                // Iterate down the left spine: long AND chains are left-deep.
                let mut stack = vec![right.as_ref()];
                let mut cur = left.as_ref();
                loop {
                    match cur {
                        Expr::BinaryOp {
                            left,
                            op: BinaryOperator::And,
                            right,
                        } => {
                            stack.push(right);
                            cur = left;
                        }
                        other => {
                            stack.push(other);
                            break;
                        }
                    }
                }
                for part in stack.into_iter().rev() {
                    let p = self.pred(part, members);
                    out.per.extend(p.per);
                    out.edges.extend(p.edges);
                }
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => {
                let l = self.pred(left, members);
                let r = self.pred(right, members);
                for (m, alts) in l.best() {
                    if let Some(ralts) = r.best().into_iter().find(|(x, _)| *x == m).map(|x| x.1) {
                        let mut all = alts;
                        all.extend(ralts);
                        out.per.push((m, all));
                    }
                }
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let lc = self.column(left, members);
                let rc = self.column(right, members);
                match (lc, rc) {
                    (Some((a, true)), Some((b, true))) if a != b => out.edges.push((a, b)),
                    (Some((m, part)), None) => {
                        if let Some(v) = val(right) {
                            out.per.push((m, vec![alt(part, v)]));
                        }
                    }
                    (None, Some((m, part))) => {
                        if let Some(v) = val(left) {
                            out.per.push((m, vec![alt(part, v)]));
                        }
                    }
                    _ => {}
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated: false,
                ..
            } => {
                if let Some((m, part)) = self.column(expr, members) {
                    let vals: Option<Vec<Alt>> =
                        list.iter().map(|x| val(x).map(|v| alt(part, v))).collect();
                    if let Some(alts) = vals.filter(|a| !a.is_empty()) {
                        out.per.push((m, alts));
                    }
                }
            }
            _ => {}
        }
        out
    }
}

fn alt(partition: bool, v: Val) -> Alt {
    if partition {
        Alt::Region(v)
    } else {
        Alt::Tenant(v)
    }
}

/// Predicate facts of one expression.
#[derive(Default)]
struct Pf {
    per: Vec<(usize, Vec<Alt>)>,
    edges: Vec<(usize, usize)>,
}

impl Pf {
    /// One confiner per reference, a region one preferred.
    fn best(&self) -> Vec<(usize, Vec<Alt>)> {
        let mut out: Vec<(usize, Vec<Alt>)> = Vec::new();
        for (m, alts) in &self.per {
            let region = alts.iter().all(|a| matches!(a, Alt::Region(_)));
            match out.iter_mut().find(|(x, _)| x == m) {
                Some(slot) => {
                    if region && !slot.1.iter().all(|a| matches!(a, Alt::Region(_))) {
                        slot.1 = alts.clone();
                    }
                }
                None => out.push((*m, alts.clone())),
            }
        }
        out
    }
}

/// A literal, a parameter, or a cast of one.
pub(crate) fn val(e: &Expr) -> Option<Val> {
    match e {
        Expr::Nested(x) => val(x),
        Expr::Cast { expr, .. } => val(expr),
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => {
                let n: u32 = p.strip_prefix('$')?.parse().ok()?;
                if n >= LIFT_BASE {
                    Some(Val::Lit((n - LIFT_BASE) as usize))
                } else {
                    Some(Val::Param(n))
                }
            }
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::UnicodeStringLiteral(s)
            | Value::NationalStringLiteral(s) => Some(Val::Text(s.clone())),
            Value::DollarQuotedString(d) => Some(Val::Text(d.value.clone())),
            Value::Number(n, _) => Some(Val::Text(n.to_string())),
            _ => None,
        },
        _ => None,
    }
}
