//! Injecting region predicates into statements.
//!
//! A rewrite is printed once per statement shape as a *template*: the AST
//! gets `q.region = $99999` added where each candidate reference needs it
//! (WHERE, an outer join's ON, or a new INSERT column), and `Display`
//! prints it. Per execution, [`render`] replaces the region mark by the
//! region literal (simple protocol) or by a new parameter `$K`
//! (extended protocol), and the lifted-literal marks by the client's own
//! literal text. See docs/analysis.md.

pub(crate) mod guard;

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, Ident, ObjectName, Select, SetExpr, Statement, TableWithJoins,
    UpdateTableFromKind, Value, VisitMut, VisitorMut,
};

use crate::analyze::facts::{At, Facts, Scope};
use crate::analyze::lex::{self, REGION_MARK};

/// Injects `qualifier.column = $99999` for every candidate reference and
/// prints the statement.
pub(crate) fn inject(stmt: &mut Statement, facts: &Facts, candidates: &[usize]) -> String {
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

/// A printed rewrite, cut at its placeholders once (per shape) so that
/// each execution only concatenates: no lexing, no parsing.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, Copy)]
enum Piece {
    /// Template text `[start, end)`.
    Text(usize, usize),
    /// Lifted literal slot; its placeholder text `[start, end)` as fallback.
    Lit(usize, usize, usize),
    /// The region.
    Region,
}

impl Template {
    /// Cuts a printed template (region `$99999`, literals `$100000+i`).
    pub(crate) fn new(text: String) -> Template {
        let mut pieces = Vec::new();
        let mut plain = 0;
        for t in lex::Lexer::new(&text) {
            if t.kind != lex::Tok::Param {
                continue;
            }
            let n = text[t.start + 1..t.end].parse::<u32>().unwrap_or(0);
            let piece = if n == REGION_MARK {
                Piece::Region
            } else if n >= lex::LIFT_BASE {
                Piece::Lit((n - lex::LIFT_BASE) as usize, t.start, t.end)
            } else {
                continue;
            };
            if plain < t.start {
                pieces.push(Piece::Text(plain, t.start));
            }
            pieces.push(piece);
            plain = t.end;
        }
        if plain < text.len() {
            pieces.push(Piece::Text(plain, text.len()));
        }
        Template { text, pieces }
    }

    /// The template as printed, with its placeholders.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The statement: the region mark becomes `region` (already SQL:
    /// `'eu'` or `$3`), each lifted literal the client's own text.
    pub(crate) fn render<'a>(
        &'a self,
        lit: &dyn Fn(usize) -> Option<&'a str>,
        region: &str,
    ) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for p in &self.pieces {
            match *p {
                Piece::Text(a, b) => out.push_str(&self.text[a..b]),
                Piece::Region => out.push_str(region),
                Piece::Lit(slot, a, b) => out.push_str(lit(slot).unwrap_or(&self.text[a..b])),
            }
        }
        out
    }
}

/// A region name as a SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
