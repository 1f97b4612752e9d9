//! The tenant directory's table, read from `[tenants] query`: the default
//! of `[tenants] table`, `id_column` and `region_column`.

use sqlparser::ast::{Expr, SelectItem, SetExpr, Statement, TableFactor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The directory table and its `(id, region)` columns, when `query` is a
/// plain `SELECT id, region FROM table` (casts such as `id::text` allowed).
/// Used as the default of `[tenants] table`, `id_column`, `region_column`.
pub fn directory_table(query: &str) -> Option<(String, String, String)> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    let [Statement::Query(q)] = stmts.as_slice() else {
        return None;
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [from] = s.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Table { name, .. } = &from.relation else {
        return None;
    };
    fn column(item: &SelectItem) -> Option<String> {
        let mut e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return None,
        };
        while let Expr::Cast { expr, .. } | Expr::Nested(expr) = e {
            e = expr;
        }
        match e {
            Expr::Identifier(i) => Some(i.value.clone()),
            Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.clone()),
            _ => None,
        }
    }
    let [id, region, ..] = s.projection.as_slice() else {
        return None;
    };
    Some((name.to_string(), column(id)?, column(region)?))
}
