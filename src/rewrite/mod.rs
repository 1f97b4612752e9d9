//! Injecting region predicates into statements.
//!
//! A rewrite is printed once per statement shape: analysis hands over the
//! parse tree of a shape with rewrite candidates ([`Rewritable`]), and
//! [`template`] adds `q.region = $99999` where each candidate reference
//! needs it (WHERE, an outer join's ON, or a new INSERT column), prints it
//! and keeps the printed, cut [`Marked`] text with the shape. Per
//! execution the policy renders it: the region mark becomes the region
//! literal (simple protocol) or a new parameter `$K` (extended protocol),
//! and the lifted-literal marks the client's own literal text. See
//! docs/analysis.md.

pub(crate) mod guard;

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, Ident, ObjectName, Select, SetExpr, Statement, TableWithJoins,
    UpdateTableFromKind, Value, VisitMut, VisitorMut,
};

use crate::analyze::facts::{At, Facts, Scope};
use crate::analyze::lex::REGION_MARK;
use crate::analyze::{Marked, Rewritable, StatementTemplate};
use crate::config::TenantMoves;

/// The rewrite of a statement shape, printed on first use and kept with
/// the shape (`None`: the shape is never rewritten). `moves` is
/// `[tenants]`'s tenant-move settings: writes are guarded against a stale
/// tenant→region entry when it names the directory table.
pub fn template<'a>(t: &'a StatementTemplate, moves: Option<&TenantMoves>) -> Option<&'a Marked> {
    let r: &Rewritable = t.rewrite.as_deref()?;
    Some(r.printed.get_or_init(|| {
        let mut stmt = r.stmt.clone();
        let mut printed = inject(&mut stmt, &t.facts, &t.candidates);
        // Tenant moves: a write checks its injected region against the directory.
        if guard::guard(&mut stmt, &t.facts, &t.candidates, moves) {
            printed = stmt.to_string();
        }
        if r.upsert {
            printed = insert_as_upsert(&printed);
        }
        Marked::new(printed)
    }))
}

/// Puts the UPSERT back into a printed INSERT (analysis read CockroachDB's
/// `UPSERT INTO` as an INSERT).
fn insert_as_upsert(printed: &str) -> String {
    match printed.strip_prefix("INSERT") {
        Some(rest) => format!("UPSERT{rest}"),
        None => printed.to_string(),
    }
}

/// Injects `qualifier.column = $99999` for every candidate reference and
/// prints the statement.
fn inject(stmt: &mut Statement, facts: &Facts, candidates: &[usize]) -> String {
    let mut plan: Vec<(Scope, At, Expr)> = Vec::new();
    for &c in candidates {
        let r = &facts.refs[c];
        let Some((scope, at)) = r.inject else {
            continue;
        };
        let pred = Expr::BinaryOp {
            left: Box::new(Expr::CompoundIdentifier(vec![
                r.qualifier.clone(),
                ident(&r.partition_column),
            ])),
            op: BinaryOperator::Eq,
            right: Box::new(region_mark()),
        };
        let pred = if at == At::InsertRows {
            Expr::Identifier(ident(&r.partition_column))
        } else {
            pred
        };
        plan.push((scope, at, pred));
    }
    let mut inj = Injector {
        plan,
        selects: 0,
        stmts: 0,
    };
    let _ = VisitMut::visit(stmt, &mut inj);
    stmt.to_string()
}

fn region_mark() -> Expr {
    Expr::Value(Value::Placeholder(format!("${REGION_MARK}")).with_empty_span())
}

/// An identifier, quoted only when PostgreSQL needs it.
pub fn ident(name: &str) -> Ident {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    const RESERVED: &[&str] = &[
        "all",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "default",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "into",
        "leading",
        "limit",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "primary",
        "references",
        "select",
        "table",
        "then",
        "to",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "when",
        "where",
        "with",
    ];
    if plain && !RESERVED.contains(&name) {
        Ident::new(name)
    } else {
        Ident::with_quote('"', name)
    }
}

struct Injector {
    plan: Vec<(Scope, At, Expr)>,
    selects: usize,
    stmts: usize,
}

impl Injector {
    fn take(&mut self, scope: Scope) -> Vec<(At, Expr)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.plan.len() {
            if self.plan[i].0 == scope {
                let (_, at, e) = self.plan.remove(i);
                out.push((at, e));
            } else {
                i += 1;
            }
        }
        out
    }
}

fn and_where(selection: &mut Option<Expr>, preds: Vec<Expr>) {
    if preds.is_empty() {
        return;
    }
    let mut acc = selection.take().map(|e| Expr::Nested(Box::new(e)));
    for p in preds {
        acc = Some(match acc {
            Some(a) => Expr::BinaryOp {
                left: Box::new(a),
                op: BinaryOperator::And,
                right: Box::new(p),
            },
            None => p,
        });
    }
    *selection = acc;
}

fn and_on(twjs: &mut [&mut TableWithJoins], from: usize, join: usize, pred: Expr) {
    use sqlparser::ast::{JoinConstraint, JoinOperator as J};
    let Some(twj) = twjs.get_mut(from) else {
        return;
    };
    let Some(j) = twj.joins.get_mut(join) else {
        return;
    };
    if let J::Left(JoinConstraint::On(e)) | J::LeftOuter(JoinConstraint::On(e)) =
        &mut j.join_operator
    {
        let old = std::mem::replace(e, Expr::Value(Value::Null.with_empty_span()));
        *e = Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(old))),
            op: BinaryOperator::And,
            right: Box::new(pred),
        };
    }
}

/// Applies a scope's injections to its WHERE and FROM items.
fn apply(selection: &mut Option<Expr>, mut twjs: Vec<&mut TableWithJoins>, items: Vec<(At, Expr)>) {
    let mut wh = Vec::new();
    for (at, e) in items {
        match at {
            At::Where => wh.push(e),
            At::JoinOn { from, join } => and_on(&mut twjs, from, join, e),
            At::InsertRows => {}
        }
    }
    and_where(selection, wh);
}

impl VisitorMut for Injector {
    type Break = ();

    fn pre_visit_select(&mut self, s: &mut Select) -> ControlFlow<()> {
        let scope = Scope::Select(self.selects);
        self.selects += 1;
        let items = self.take(scope);
        if !items.is_empty() {
            let twjs: Vec<&mut TableWithJoins> = s.from.iter_mut().collect();
            apply(&mut s.selection, twjs, items);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, st: &mut Statement) -> ControlFlow<()> {
        let scope = match st {
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let s = Scope::Stmt(self.stmts);
                self.stmts += 1;
                s
            }
            _ => return ControlFlow::Continue(()),
        };
        let items = self.take(scope);
        if items.is_empty() {
            return ControlFlow::Continue(());
        }
        match st {
            Statement::Update(u) => {
                let mut twjs: Vec<&mut TableWithJoins> = vec![&mut u.table];
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) =
                    &mut u.from
                {
                    twjs.extend(f.iter_mut());
                }
                apply(&mut u.selection, twjs, items);
            }
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &mut d.from;
                let mut twjs: Vec<&mut TableWithJoins> = f.iter_mut().collect();
                if let Some(u) = &mut d.using {
                    twjs.extend(u.iter_mut());
                }
                apply(&mut d.selection, twjs, items);
            }
            Statement::Insert(i) => {
                for (at, col) in items {
                    if at != At::InsertRows {
                        continue;
                    }
                    let Expr::Identifier(col) = col else { continue };
                    if let Some(src) = &mut i.source
                        && let SetExpr::Values(v) = src.body.as_mut()
                    {
                        i.columns.push(ObjectName::from(vec![col]));
                        for row in &mut v.rows {
                            row.content.push(region_mark());
                        }
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// A region name as a SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
