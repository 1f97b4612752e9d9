//! The AST walk: every table reference with its scope, and for each
//! regional reference the predicates that confine it.
//!
//! One `Visitor` (one monomorphised walk, see docs/crates.md) visits every
//! `Select` (a scope: its FROM, joins and WHERE) and every INSERT, UPDATE
//! and DELETE (a scope: target, FROM/USING, WHERE). Subqueries, CTEs and
//! set operations are reached by the walk itself, each analysed on its own.
//! The rewrite walk (`crate::rewrite`) counts scopes in the same order.

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, CopySource, Delete, Expr, FromTable, Ident,
    InTarget, Insert, JoinConstraint, JoinOperator, Merge, MergeAction, MergeClauseKind,
    MergeInsertKind, ObjectName, OnConflictAction, OnInsert, Query, Select, SelectItem, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind, Value, Visit,
    Visitor,
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
    /// The reference renames its columns (`users AS u(a, b, c)`) or stands
    /// for rows no predicate can name (MERGE's inserted rows): no column
    /// expression resolves to it, so only its own facts confine it.
    opaque: bool,
    /// Some confiner is a plain equality `region = <one value>`: the
    /// planner derives the same equality for the references its region
    /// column equals (and prunes their partitions); an IN list, `= ANY`
    /// or an OR confines the reference but is not carried over.
    pub(crate) eq_region: bool,
}

impl TableRef {
    /// The name the statement qualifies this reference's columns with
    /// (its alias or table name).
    pub fn qualifier_name(&self) -> &str {
        &self.qualifier.value
    }

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
    /// Region-column equalities `(from, to)` of one scope: `to` is
    /// confined wherever `from` is confined by an equality.
    pub(crate) edges: Vec<(usize, usize)>,
    /// Correlations `(outer, inner)`: a subquery's reference equated with
    /// an enclosing reference's region column is pruned at run time to
    /// the outer rows' regions.
    pub(crate) corr: Vec<(usize, usize)>,
    /// Every table named (normalised), CTE names excluded.
    pub tables: BTreeSet<String>,
    /// Tables not listed in the config.
    pub unlisted: BTreeSet<String>,
    /// Partition-column updates.
    pub(crate) moves: Vec<MoveFact>,
    /// COPY FROM (or IMPORT INTO) a regional table: the reference and
    /// whether the column list holds the partition column.
    pub(crate) copy_in: Option<(usize, bool)>,
    /// Why the statement is not fully analysed (a regional table in a
    /// place the walk does not understand); no literal values in it.
    pub(crate) unhandled: Option<String>,
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
        frames: Vec::new(),
        seen: Vec::new(),
        handled: HashSet::new(),
    };
    let _ = stmt.visit(&mut c);
    if c.facts.unhandled.is_none() {
        let missed = c.seen.iter().any(|p| !c.handled.contains(p));
        if missed {
            c.facts.unhandled =
                Some("a regional table is referenced where geogate does not analyse it".into());
        }
    }
    c.facts
}

/// Whether a statement's rows are analysed by [`collect`] (its kind has a
/// decision); other statements naming a regional table are refused.
pub(crate) fn is_analysed_statement(stmt: &Statement) -> bool {
    match stmt {
        Statement::Query(_)
        | Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Truncate(_)
        | Statement::Copy { .. }
        | Statement::CreateTable(_)
        | Statement::CreateView(_) => true,
        Statement::Explain { statement, .. } => is_analysed_statement(statement),
        _ => false,
    }
}

/// Whether a (rewritable) statement is plain DML or a query: the only
/// statements a rewrite prints back.
pub(crate) fn is_rewritable_statement(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    )
}

/// One scope on the walk's stack: its regional references and the names
/// (aliases or table names, folded) of all its FROM items.
struct Frame {
    members: Vec<usize>,
    names: Vec<String>,
}

struct Collector<'c> {
    cfg: &'c Config,
    ctes: HashSet<String>,
    facts: Facts,
    selects: usize,
    stmts: usize,
    /// Enclosing scopes (for correlated references).
    frames: Vec<Frame>,
    /// Regional relations the generic walk met (by AST address).
    seen: Vec<*const ObjectName>,
    /// Regional relations the analysis recorded.
    handled: HashSet<*const ObjectName>,
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

/// The names of a FROM item as columns are qualified with.
fn factor_names(f: &TableFactor, out: &mut Vec<String>) {
    match f {
        TableFactor::Table { name, alias, .. } => match alias {
            Some(a) => out.push(fold(&a.name)),
            None => out.extend(last_ident(name).map(fold)),
        },
        TableFactor::NestedJoin {
            table_with_joins,
            alias,
        } => {
            if let Some(a) = alias {
                out.push(fold(&a.name));
            }
            twj_names(table_with_joins, out);
        }
        other => {
            // Derived tables, functions, UNNEST, …: their alias, if any.
            let alias = match other {
                TableFactor::Derived { alias, .. }
                | TableFactor::TableFunction { alias, .. }
                | TableFactor::Function { alias, .. }
                | TableFactor::UNNEST { alias, .. } => alias.as_ref(),
                _ => None,
            };
            if let Some(a) = alias {
                out.push(fold(&a.name));
            } else {
                // An unknown item: it could be named anything.
                out.push(String::from("\u{0}*"));
            }
        }
    }
}

fn twj_names(twj: &TableWithJoins, out: &mut Vec<String>) {
    factor_names(&twj.relation, out);
    for j in &twj.joins {
        factor_names(&j.relation, out);
    }
}

/// A column resolved to a regional reference.
#[derive(Clone, Copy)]
struct Col {
    r: usize,
    partition: bool,
    /// The reference belongs to an enclosing scope (a correlated column).
    outer: bool,
}

impl Visitor for Collector<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(w) = &q.with {
            for cte in &w.cte_tables {
                let name = fold(&cte.alias.name);
                if matches!(self.cfg.table(&name), Some(TableConfig::Regional(_))) {
                    // A CTE named like a regional table hides it only
                    // where the CTE is in scope: refuse rather than guess.
                    self.facts.unhandled = Some(format!(
                        "a WITH query is named like the regional table {}",
                        name.to_lowercase()
                    ));
                }
                self.ctes.insert(name);
            }
        }
        self.table_commands(&q.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        if let Some(last) = last_ident(name) {
            let norm = fold(last);
            let cte = name.0.len() == 1 && self.ctes.contains(&norm);
            if !cte && matches!(self.cfg.table(&norm), Some(TableConfig::Regional(_))) {
                self.seen.push(name as *const ObjectName);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        let scope = Scope::Select(self.selects);
        self.selects += 1;
        let mut members = Vec::new();
        let mut pending = Vec::new();
        let mut names = Vec::new();
        for (fi, twj) in s.from.iter().enumerate() {
            self.add_twj(twj, Some((scope, fi)), &mut members, &mut pending);
            twj_names(twj, &mut names);
        }
        self.apply_pending(pending, &members, &names);
        if let Some(w) = &s.selection {
            self.apply(w, &members, &names);
        }
        self.frames.push(Frame { members, names });
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, _s: &Select) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        let frame = match st {
            Statement::Insert(i) => {
                let scope = Scope::Stmt(self.stmts);
                self.stmts += 1;
                self.insert(i, scope)
            }
            Statement::Update(u) => {
                let scope = Scope::Stmt(self.stmts);
                self.stmts += 1;
                self.update(u, scope)
            }
            Statement::Delete(d) => {
                let scope = Scope::Stmt(self.stmts);
                self.stmts += 1;
                self.delete(d, scope)
            }
            Statement::Merge(m) => self.merge(m),
            Statement::Truncate(t) => {
                // TRUNCATE empties the table in every region: never confined.
                for target in &t.table_names {
                    let _ = self.add_table(&target.name, None, None, false);
                }
                Frame {
                    members: Vec::new(),
                    names: Vec::new(),
                }
            }
            Statement::Copy {
                source:
                    CopySource::Table {
                        table_name,
                        columns,
                    },
                to,
                ..
            } => {
                // COPY TO reads the whole table: never confined. COPY
                // FROM writes rows that carry their own region only when
                // the column list holds the partition column.
                if let Some(r) = self.add_table(table_name, None, None, false)
                    && !*to
                {
                    let pcol = self.facts.refs[r].partition_column.clone();
                    let has = columns.iter().any(|c| fold(c) == pcol);
                    self.facts.copy_in = Some((r, has));
                }
                Frame {
                    members: Vec::new(),
                    names: Vec::new(),
                }
            }
            _ => Frame {
                members: Vec::new(),
                names: Vec::new(),
            },
        };
        self.frames.push(frame);
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _st: &Statement) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }
}

/// ON clauses to apply once every reference of the scope is known:
/// (expression, references it may confine).
type PendingOn<'a> = Vec<(&'a Expr, Vec<usize>)>;

impl<'c> Collector<'c> {
    /// `TABLE t` (a query body of its own, also inside set operations).
    fn table_commands(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(t) => {
                if let Some(name) = &t.table_name {
                    let mut parts = Vec::new();
                    if let Some(schema) = &t.schema_name {
                        parts.push(sqlparser::ast::ObjectNamePart::Identifier(schema.clone()));
                    }
                    parts.push(sqlparser::ast::ObjectNamePart::Identifier(name.clone()));
                    let on = ObjectName(parts);
                    let _ = self.add_table(&on, None, None, false);
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.table_commands(left);
                self.table_commands(right);
            }
            _ => {}
        }
    }

    /// Records a table; returns the index of its regional reference.
    /// `opaque`: its columns cannot be named (see [`TableRef`]).
    fn add_table(
        &mut self,
        name: &ObjectName,
        alias: Option<&Ident>,
        inject: Option<(Scope, At)>,
        opaque: bool,
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
                self.handled.insert(name as *const ObjectName);
                let qualifier = alias.unwrap_or(last).clone();
                self.facts.refs.push(TableRef {
                    table: norm.to_lowercase(),
                    partition_column: rt.partition_column.clone(),
                    tenant_column: rt.tenant_column.clone(),
                    on_missing_region: rt.on_missing_region,
                    confiners: Vec::new(),
                    inject: if opaque { None } else { inject },
                    key: if opaque {
                        String::from("\u{0}opaque")
                    } else {
                        fold(&qualifier)
                    },
                    qualifier,
                    opaque,
                    eq_region: false,
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
                with_hints,
                version: None,
                partitions,
                with_ordinality: false,
                json_path: None,
                sample: None,
                ..
            } if with_hints.is_empty() && partitions.is_empty() => {
                // A column alias list renames the columns: `u.region`
                // may then be any column.
                let renamed = alias.as_ref().is_some_and(|a| !a.columns.is_empty());
                let r = self.add_table(name, alias.as_ref().map(|a| &a.name), inject, renamed);
                members.extend(r);
                r.into_iter().collect()
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
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
        // Whether every join so far is inner (USING equalities then hold
        // between every member).
        let mut all_inner = true;
        for (ji, join) in twj.joins.iter().enumerate() {
            use JoinOperator as J;
            match &join.join_operator {
                J::Join(c) | J::Inner(c) | J::CrossJoin(c) | J::StraightJoin(c) => {
                    let left: Vec<usize> = members[start..].to_vec();
                    let rs = self.add_factor(&join.relation, where_inject, members, pending);
                    match c {
                        JoinConstraint::On(e) => pending.push((e, Vec::from([usize::MAX]))),
                        JoinConstraint::Using(cols) if all_inner => {
                            self.using_edges(cols, &left, &rs);
                        }
                        _ => {}
                    }
                }
                J::Left(c) | J::LeftOuter(c) => {
                    all_inner = false;
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
                    all_inner = false;
                    // Everything to the left becomes nullable.
                    for &m in &members[start..] {
                        self.facts.refs[m].inject = None;
                    }
                    self.add_factor(&join.relation, where_inject, members, pending);
                }
                J::FullOuter(_) => {
                    all_inner = false;
                    for &m in &members[start..] {
                        self.facts.refs[m].inject = None;
                    }
                    self.add_factor(&join.relation, None, members, pending);
                }
                _ => {
                    all_inner = false;
                    self.add_factor(&join.relation, None, members, pending);
                }
            }
        }
    }

    /// `a JOIN b USING (region)` of inner joins: the regional members on
    /// both sides share the partition column's value.
    fn using_edges(&mut self, cols: &[ObjectName], left: &[usize], right: &[usize]) {
        for &r in right {
            let pcol = self.facts.refs[r].partition_column.clone();
            if !cols
                .iter()
                .any(|c| last_ident(c).map(fold).as_deref() == Some(pcol.as_str()))
            {
                continue;
            }
            for &l in left {
                if self.facts.refs[l].partition_column == pcol && !self.facts.refs[l].opaque {
                    self.facts.edges.push((l, r));
                    self.facts.edges.push((r, l));
                }
            }
        }
    }

    /// Applies pending ON clauses (scope-wide ones marked `[usize::MAX]`).
    fn apply_pending(&mut self, pending: PendingOn<'_>, members: &[usize], names: &[String]) {
        for (e, rs) in pending {
            if rs.first() == Some(&usize::MAX) {
                self.apply(e, members, names);
            } else {
                self.apply_restricted(e, members, names, &rs);
            }
        }
    }

    /// Records partition-column assignments of `target` as region moves.
    fn assignments(&mut self, target: usize, assignments: &[Assignment]) {
        let col = self.facts.refs[target].partition_column.clone();
        let is_col = |n: &ObjectName| last_ident(n).map(fold).as_deref() == Some(col.as_str());
        for a in assignments {
            match &a.target {
                AssignmentTarget::ColumnName(n) if is_col(n) => {
                    self.facts.moves.push(MoveFact {
                        target,
                        to: val(&a.value),
                    });
                }
                AssignmentTarget::Tuple(names) => {
                    if let Some(k) = names.iter().position(is_col) {
                        // `SET (region, name) = ('us', …)`: the value at
                        // the same place, when the right side is a row.
                        let to = match &a.value {
                            Expr::Tuple(items) if items.len() == names.len() => val(&items[k]),
                            _ => None,
                        };
                        self.facts.moves.push(MoveFact { target, to });
                    }
                }
                _ => {}
            }
        }
    }

    fn update(&mut self, u: &Update, scope: Scope) -> Frame {
        let mut members = Vec::new();
        let mut pending = Vec::new();
        let mut names = Vec::new();
        self.add_twj(&u.table, Some((scope, 0)), &mut members, &mut pending);
        twj_names(&u.table, &mut names);
        let target = if u.table.joins.is_empty() {
            members.first().copied()
        } else {
            None
        };
        if let Some(from) = &u.from {
            let (UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = from;
            for (i, twj) in f.iter().enumerate() {
                self.add_twj(twj, Some((scope, i + 1)), &mut members, &mut pending);
                twj_names(twj, &mut names);
            }
        }
        self.apply_pending(pending, &members, &names);
        if let Some(w) = &u.selection {
            self.apply(w, &members, &names);
        }
        if let Some(t) = target {
            self.assignments(t, &u.assignments);
        }
        Frame { members, names }
    }

    fn delete(&mut self, d: &Delete, scope: Scope) -> Frame {
        let mut members = Vec::new();
        let mut pending = Vec::new();
        let mut names = Vec::new();
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
        let mut n = 0;
        for twj in from {
            self.add_twj(twj, Some((scope, n)), &mut members, &mut pending);
            twj_names(twj, &mut names);
            n += 1;
        }
        if let Some(using) = &d.using {
            for twj in using {
                self.add_twj(twj, Some((scope, n)), &mut members, &mut pending);
                twj_names(twj, &mut names);
                n += 1;
            }
        }
        self.apply_pending(pending, &members, &names);
        if let Some(w) = &d.selection {
            self.apply(w, &members, &names);
        }
        Frame { members, names }
    }

    /// MERGE: the target is confined by the ON clause (with the source, as
    /// an inner join) unless a `WHEN NOT MATCHED BY SOURCE` clause acts on
    /// target rows the ON clause does not match; each INSERT action is a
    /// reference of its own, confined by the partition column's value;
    /// UPDATE actions that set the partition column are moves.
    fn merge(&mut self, m: &Merge) -> Frame {
        let mut members = Vec::new();
        let mut pending = Vec::new();
        let mut names = Vec::new();
        let target = self.add_factor(&m.table, None, &mut members, &mut pending);
        factor_names(&m.table, &mut names);
        let source = self.add_factor(&m.source, None, &mut members, &mut pending);
        factor_names(&m.source, &mut names);
        // MERGE joins target and source: an inner join with only WHEN
        // MATCHED clauses; `WHEN NOT MATCHED [BY TARGET]` keeps every
        // source row (the ON clause does not filter the source), `WHEN NOT
        // MATCHED BY SOURCE` every target row (it does not filter the
        // target). The ON clause confines only the sides it filters.
        let by_source = m
            .clauses
            .iter()
            .any(|c| c.clause_kind == MergeClauseKind::NotMatchedBySource);
        let by_target = m.clauses.iter().any(|c| {
            matches!(
                c.clause_kind,
                MergeClauseKind::NotMatched | MergeClauseKind::NotMatchedByTarget
            )
        });
        let mut filtered = Vec::new();
        if !by_source {
            filtered.extend(target.iter().copied());
        }
        if !by_target {
            filtered.extend(source.iter().copied());
        }
        self.apply_restricted(&m.on, &members, &names, &filtered);
        let Some(&t) = target.first() else {
            return Frame { members, names };
        };
        for clause in &m.clauses {
            match &clause.action {
                MergeAction::Update(u) => {
                    if let sqlparser::ast::MergeUpdateKind::Set(a) = &u.kind {
                        self.assignments(t, a);
                    }
                }
                MergeAction::Insert(ins) => {
                    let TableFactor::Table { name, .. } = &m.table else {
                        continue;
                    };
                    let Some(r) = self.add_table(name, None, None, true) else {
                        continue;
                    };
                    let pcol = self.facts.refs[r].partition_column.clone();
                    let idx = ins
                        .columns
                        .iter()
                        .position(|c| last_ident(c).map(fold).as_deref() == Some(pcol.as_str()));
                    if let (Some(idx), MergeInsertKind::Values(v)) = (idx, &ins.kind) {
                        let alts: Option<Vec<Alt>> = v
                            .rows
                            .iter()
                            .map(|row| row.content.get(idx).and_then(val).map(Alt::Region))
                            .collect();
                        if let Some(alts) = alts.filter(|a| !a.is_empty()) {
                            self.facts.refs[r].confiners.push(alts);
                        }
                    }
                }
                _ => {}
            }
        }
        Frame { members, names }
    }

    fn insert(&mut self, i: &Insert, scope: Scope) -> Frame {
        let empty = Frame {
            members: Vec::new(),
            names: Vec::new(),
        };
        let TableObject::TableName(name) = &i.table else {
            return empty;
        };
        let alias = i.table_alias.as_ref().map(|a| &a.alias);
        let Some(r) = self.add_table(name, alias, None, false) else {
            return empty;
        };
        if let Some(OnInsert::OnConflict(oc)) = &i.on
            && let OnConflictAction::DoUpdate(du) = &oc.action
        {
            self.assignments(r, &du.assignments);
        }
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
        let Some(src) = &i.source else { return empty };
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
                    if let Some(alts) = pick(p, false).filter(|a| !a.is_empty()) {
                        self.facts.refs[r].confiners.push(alts);
                    }
                } else if let Some(t) = tidx {
                    if let Some(alts) = pick(t, true).filter(|a| !a.is_empty()) {
                        self.facts.refs[r].confiners.push(alts);
                    }
                    self.facts.refs[r].inject = Some((scope, At::InsertRows));
                }
            }
            SetExpr::Select(s) => {
                // INSERT … SELECT: the region comes from the matching
                // projection item when it is a literal or parameter and
                // no `*` before it shifts the columns.
                if let Some(p) = pidx {
                    let shifted = s.projection.iter().take(p + 1).any(|it| {
                        matches!(
                            it,
                            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                        )
                    });
                    let item = if shifted { None } else { s.projection.get(p) };
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
        empty
    }

    /// Applies an expression's confining facts to the scope's references.
    fn apply(&mut self, e: &Expr, members: &[usize], names: &[String]) {
        let pf = self.pred(e, members, names);
        for (r, alts) in pf.per {
            self.facts.refs[r].confiners.push(alts);
        }
        for (a, b) in pf.edges {
            self.facts.edges.push((a, b));
            self.facts.edges.push((b, a));
        }
        self.facts.corr.extend(pf.directed);
        for r in pf.eq {
            self.facts.refs[r].eq_region = true;
        }
    }

    /// Like `apply`, but only `targets` may be confined (an outer join's
    /// ON clause filters only its nullable side); an equality carries a
    /// confinement only towards a target.
    fn apply_restricted(
        &mut self,
        e: &Expr,
        members: &[usize],
        names: &[String],
        targets: &[usize],
    ) {
        let pf = self.pred(e, members, names);
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
        for (a, b) in pf.directed {
            if targets.contains(&b) {
                self.facts.corr.push((a, b));
            }
        }
        for r in pf.eq {
            if targets.contains(&r) {
                self.facts.refs[r].eq_region = true;
            }
        }
    }

    /// Resolves a column expression to a regional reference of the scope
    /// (`members`, whose FROM items are `names`) or, for a qualified name
    /// no FROM item of the scope has, of an enclosing scope.
    fn column(&self, e: &Expr, members: &[usize], names: &[String]) -> Option<Col> {
        let refs = &self.facts.refs;
        let kind = |m: usize, col: &str| {
            if refs[m].partition_column == col {
                Some(true)
            } else if refs[m].tenant_column.as_deref() == Some(col) {
                Some(false)
            } else {
                None
            }
        };
        match e {
            Expr::Nested(x) => self.column(x, members, names),
            Expr::Identifier(id) => {
                let col = fold(id);
                let mut hit = members
                    .iter()
                    .filter(|&&m| !refs[m].opaque && refs[m].partition_column == col);
                if let (Some(&m), None) = (hit.next(), hit.next()) {
                    return Some(Col {
                        r: m,
                        partition: true,
                        outer: false,
                    });
                }
                let mut hit = members.iter().filter(|&&m| {
                    !refs[m].opaque && refs[m].tenant_column.as_deref() == Some(col.as_str())
                });
                match (hit.next(), hit.next()) {
                    (Some(&m), None) => Some(Col {
                        r: m,
                        partition: false,
                        outer: false,
                    }),
                    _ => None,
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let q = fold(&parts[parts.len() - 2]);
                let col = fold(&parts[parts.len() - 1]);
                let find = |ms: &[usize]| {
                    let mut hit = ms.iter().filter(|&&m| !refs[m].opaque && refs[m].key == q);
                    match (hit.next(), hit.next()) {
                        (Some(&m), None) => Some(Ok(m)),
                        (Some(_), Some(_)) => Some(Err(())),
                        _ => None,
                    }
                };
                if let Some(found) = find(members) {
                    let m = found.ok()?;
                    return kind(m, &col).map(|partition| Col {
                        r: m,
                        partition,
                        outer: false,
                    });
                }
                if names.iter().any(|n| *n == q || n == "\u{0}*") {
                    return None;
                }
                for f in self.frames.iter().rev() {
                    if let Some(found) = find(&f.members) {
                        let m = found.ok()?;
                        return kind(m, &col).map(|partition| Col {
                            r: m,
                            partition,
                            outer: true,
                        });
                    }
                    if f.names.iter().any(|n| *n == q || n == "\u{0}*") {
                        return None;
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn pred(&self, e: &Expr, members: &[usize], names: &[String]) -> Pf {
        let mut out = Pf::default();
        match e {
            Expr::Nested(x) => return self.pred(x, members, names),
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
                    let p = self.pred(part, members, names);
                    out.per.extend(p.per);
                    out.edges.extend(p.edges);
                    out.directed.extend(p.directed);
                    out.eq.extend(p.eq);
                }
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => {
                // Iterate down the left spine too (long OR lists).
                let mut branches = vec![right.as_ref()];
                let mut cur = left.as_ref();
                loop {
                    match cur {
                        Expr::BinaryOp {
                            left,
                            op: BinaryOperator::Or,
                            right,
                        } => {
                            branches.push(right);
                            cur = left;
                        }
                        other => {
                            branches.push(other);
                            break;
                        }
                    }
                }
                // A reference is confined by the OR only if every branch
                // confines it (union of the alternatives).
                let mut acc: Option<Vec<(usize, Vec<Alt>)>> = None;
                for b in branches {
                    let p = self.pred(b, members, names).best();
                    acc = Some(match acc {
                        None => p,
                        Some(prev) => prev
                            .into_iter()
                            .filter_map(|(m, mut alts)| {
                                let other = p.iter().find(|(x, _)| *x == m)?;
                                alts.extend(other.1.iter().cloned());
                                Some((m, alts))
                            })
                            .collect(),
                    });
                }
                out.per = acc.unwrap_or_default();
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                if let (Expr::Tuple(ls), Expr::Tuple(rs)) = (strip(left), strip(right))
                    && ls.len() == rs.len()
                {
                    // `(region, id) = ('eu', 5)`: pairwise equalities.
                    for (l, r) in ls.iter().zip(rs) {
                        let p = self.eq(l, r, members, names);
                        out.per.extend(p.per);
                        out.edges.extend(p.edges);
                        out.directed.extend(p.directed);
                        out.eq.extend(p.eq);
                    }
                } else {
                    out = self.eq(left, right, members, names);
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated: false,
                ..
            } => {
                if let Some(c) = self.column(expr, members, names).filter(|c| !c.outer) {
                    let vals: Option<Vec<Alt>> = list
                        .iter()
                        .map(|x| val(x).map(|v| alt(c.partition, v)))
                        .collect();
                    if let Some(alts) = vals.filter(|a| !a.is_empty()) {
                        // PostgreSQL reads a one-element IN as `=`.
                        if alts.len() == 1 && c.partition {
                            out.eq.push(c.r);
                        }
                        out.per.push((c.r, alts));
                    }
                }
            }
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => {
                // `col = ANY (ARRAY[…])`.
                if let Some(c) = self.column(left, members, names).filter(|c| !c.outer)
                    && let Expr::Array(arr) = strip(right)
                {
                    let vals: Option<Vec<Alt>> = arr
                        .elem
                        .iter()
                        .map(|x| val(x).map(|v| alt(c.partition, v)))
                        .collect();
                    if let Some(alts) = vals.filter(|a| !a.is_empty()) {
                        out.per.push((c.r, alts));
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// `left = right`: a value predicate on a column of the scope, or an
    /// equality of partition columns (an enclosing scope's column carries
    /// its confinement inwards only).
    fn eq(&self, left: &Expr, right: &Expr, members: &[usize], names: &[String]) -> Pf {
        let mut out = Pf::default();
        let lc = self.column(left, members, names);
        let rc = self.column(right, members, names);
        match (lc, rc) {
            (Some(a), Some(b)) if a.partition && b.partition && a.r != b.r => {
                match (a.outer, b.outer) {
                    (false, false) => out.edges.push((a.r, b.r)),
                    (true, false) => out.directed.push((a.r, b.r)),
                    (false, true) => out.directed.push((b.r, a.r)),
                    (true, true) => {}
                }
            }
            (Some(c), None) if !c.outer => {
                if let Some(v) = val(right) {
                    if c.partition {
                        out.eq.push(c.r);
                    }
                    out.per.push((c.r, vec![alt(c.partition, v)]));
                }
            }
            (None, Some(c)) if !c.outer => {
                if let Some(v) = val(left) {
                    if c.partition {
                        out.eq.push(c.r);
                    }
                    out.per.push((c.r, vec![alt(c.partition, v)]));
                }
            }
            _ => {}
        }
        out
    }
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(x) => strip(x),
        other => other,
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
    /// Equalities between references of one scope (both ways).
    edges: Vec<(usize, usize)>,
    /// Equalities from an enclosing scope's reference inwards.
    directed: Vec<(usize, usize)>,
    /// References with a plain `region = <one value>` conjunct.
    eq: Vec<usize>,
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

/// A literal, a parameter, or a cast of one. Escape and Unicode strings
/// the parser decoded are not trusted (the lexer decodes lifted ones).
pub(crate) fn val(e: &Expr) -> Option<Val> {
    match e {
        Expr::Nested(x) => val(x),
        Expr::Cast { expr, .. } => val(expr),
        Expr::TypedString(ts) => value(&ts.value.value),
        Expr::Value(v) => value(&v.value),
        _ => None,
    }
}

fn value(v: &Value) -> Option<Val> {
    match v {
        Value::Placeholder(p) => {
            let n: u32 = p.strip_prefix('$')?.parse().ok()?;
            if n >= LIFT_BASE {
                Some(Val::Lit((n - LIFT_BASE) as usize))
            } else {
                Some(Val::Param(n))
            }
        }
        Value::SingleQuotedString(s) => Some(Val::Text(s.clone())),
        Value::DollarQuotedString(d) => Some(Val::Text(d.value.clone())),
        Value::Number(n, _) => Some(Val::Text(n.to_string())),
        _ => None,
    }
}

/// An unconstrained reference to a regional table (TRUNCATE-like
/// statements decided from their words).
pub(crate) fn unconstrained_ref(name: &str, rt: &crate::config::RegionalTable) -> TableRef {
    let qualifier = Ident::new(name);
    TableRef {
        table: name.to_lowercase(),
        partition_column: rt.partition_column.clone(),
        tenant_column: rt.tenant_column.clone(),
        on_missing_region: rt.on_missing_region,
        confiners: Vec::new(),
        inject: None,
        key: String::from("\u{0}opaque"),
        qualifier,
        opaque: true,
        eq_region: false,
    }
}
