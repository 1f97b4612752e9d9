//! Guarded writes: a write whose region geogate injected from a cached
//! tenant→region entry checks that region against the tenant directory in
//! the same statement, so a stale entry (the tenant moved since it was
//! cached) makes the write affect no row instead of writing into the old
//! region. The session then runs it again in the tenant's new region
//! (verify-on-empty). See docs/tenant-moves.md.
//!
//! - `UPDATE`/`DELETE`: `… AND EXISTS (SELECT 1 FROM <directory> AS
//!   geogate_dir WHERE geogate_dir.<id> = q.<tenant column> AND
//!   geogate_dir.<region> = <region> FOR SHARE)`.
//! - `INSERT … VALUES`: each row's injected region becomes `(SELECT
//!   geogate_dir.<region> FROM <directory> AS geogate_dir WHERE
//!   geogate_dir.<id> = <the row's tenant> AND geogate_dir.<region> =
//!   <region> FOR SHARE)`: NULL when the entry is stale, which the region
//!   column's NOT NULL refuses (`23502`): the row is written nowhere.
//!
//! `FOR SHARE` (`[tenants] guard = "share"`) makes the guard wait for a move
//! that holds the directory row and re-check it once the move commits: a
//! write can then land in the old region only before the move's first
//! statement, where the move's own UPDATE carries it along. Plain
//! PostgreSQL and CockroachDB both accept the form, and both plan it as one
//! primary-key probe of the directory.

use sqlparser::ast::{Delete, Expr, SetExpr, Statement, Update, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::ident;
use crate::analyze::facts::{At, Facts, Scope};
use crate::analyze::lex::REGION_MARK;
use crate::config::{TenantMoves, WriteGuard};

/// Adds the directory check to the top-level write of `stmt`, after
/// [`super::inject`] added its region predicates. Returns whether the
/// statement changed (the caller prints it again).
///
/// The stale outcomes — an UPDATE/DELETE affecting no row, an INSERT failing
/// with `23502` — are what the session retries outside a transaction.
pub(crate) fn guard(
    stmt: &mut Statement,
    facts: &Facts,
    candidates: &[usize],
    moves: Option<&TenantMoves>,
) -> bool {
    let Some(m) = moves else { return false };
    let Some(table) = m.table.as_deref() else {
        return false;
    };
    if m.guard == WriteGuard::Off {
        return false;
    }
    let lock = if m.guard == WriteGuard::Share {
        " FOR SHARE"
    } else {
        ""
    };
    let exists = |tenant: &Expr| -> Option<Expr> {
        let text = format!(
            "EXISTS (SELECT 1 FROM {table} AS geogate_dir WHERE geogate_dir.{id} = {tenant} \
             AND geogate_dir.{region} = ${REGION_MARK}{lock})",
            id = ident(&m.id_column),
            region = ident(&m.region_column),
        );
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
            .ok()
    };
    // INSERT: the region value itself, read from the directory row that
    // must still say this region; NULL (a NOT NULL violation, 23502) when
    // the entry was stale. VALUES keeps each value typed by its column.
    let region_of = |tenant: &Expr| -> Option<Expr> {
        let text = format!(
            "(SELECT geogate_dir.{region} FROM {table} AS geogate_dir WHERE geogate_dir.{id} = {tenant} \
             AND geogate_dir.{region} = ${REGION_MARK}{lock})",
            id = ident(&m.id_column),
            region = ident(&m.region_column),
        );
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
            .ok()
    };
    // The write's own target: the references injected at the top-level
    // statement (scope `Stmt(0)`, visited first).
    let targets = candidates.iter().filter_map(|&c| {
        // An UPDATE setting the region is itself a move (or part of one,
        // after the directory row changed in the same transaction): it must
        // reach the rows in the old region, so it is never guarded.
        if facts.moves.iter().any(|m| m.target == c) {
            return None;
        }
        let r = &facts.refs[c];
        let (scope, at) = r.inject?;
        (scope == Scope::Stmt(0)).then_some((r, at))
    });
    let mut changed = false;
    match stmt {
        Statement::Update(Update { selection, .. })
        | Statement::Delete(Delete { selection, .. }) => {
            for (r, at) in targets {
                let (At::Where, Some(col)) = (at, &r.tenant_column) else {
                    continue;
                };
                let tenant = Expr::CompoundIdentifier(vec![r.qualifier.clone(), ident(col)]);
                if let Some(e) = exists(&tenant) {
                    and(selection, e);
                    changed = true;
                }
            }
        }
        Statement::Insert(i) => {
            let Some((r, _)) = targets.into_iter().find(|(_, at)| *at == At::InsertRows) else {
                return false;
            };
            let Some(col) = &r.tenant_column else {
                return false;
            };
            let position = |name: &str| {
                i.columns.iter().position(|c| {
                    c.0.last()
                        .and_then(|p| p.as_ident())
                        .is_some_and(|id| id.value.eq_ignore_ascii_case(name))
                })
            };
            let (Some(tpos), Some(rpos)) = (position(col), position(&r.partition_column)) else {
                return false;
            };
            let Some(src) = &mut i.source else {
                return false;
            };
            let SetExpr::Values(v) = src.body.as_mut() else {
                return false;
            };
            for row in &mut v.rows {
                let mark = format!("${REGION_MARK}");
                let is_mark = matches!(row.content.get(rpos), Some(Expr::Value(vs)) if vs.value == Value::Placeholder(mark.clone()));
                let Some(tenant) = row.content.get(tpos).cloned() else {
                    continue;
                };
                if !is_mark {
                    continue;
                }
                if let Some(e) = region_of(&tenant) {
                    row.content[rpos] = e;
                    changed = true;
                }
            }
        }
        _ => {}
    }
    changed
}

fn and(selection: &mut Option<Expr>, pred: Expr) {
    *selection = Some(match selection.take() {
        Some(e) => Expr::BinaryOp {
            left: Box::new(e),
            op: sqlparser::ast::BinaryOperator::And,
            right: Box::new(pred),
        },
        None => pred,
    });
}

#[cfg(test)]
mod tests {
    use crate::analyze::Analyzer;
    use crate::config::Config;

    fn config(tenants_extra: &str) -> Config {
        Config::parse(&format!(
            r#"
[proxy]
listen = "127.0.0.1:6432"
local_region = "eu"
[regions.eu]
gateway = "postgres://g@127.0.0.1:1/app"
[regions.us]
gateway = "postgres://g@127.0.0.1:2/app"
[tenants]
query = "SELECT id::text, region::text FROM tenants"
{tenants_extra}
[tables.users]
partition_column = "region"
tenant_column = "tenant_id"
on_missing_region = "rewrite"
[[users]]
name = "app"
password = "x"
"#
        ))
        .expect("valid test config")
    }

    /// The rewrite template of a one-statement text.
    fn rewritten(cfg: &Config, sql: &str) -> String {
        let a = Analyzer::new(cfg).analyze_uncached(sql);
        let moves = cfg.tenants.as_ref().map(|t| &t.moves);
        super::super::template(&a.statements[0].template, moves)
            .expect("a rewrite")
            .as_str()
            .to_string()
    }

    #[test]
    fn a_guarded_insert_reads_each_rows_region_from_the_directory_row() {
        let cfg = config("table = \"tenants\"");
        let sql = rewritten(
            &cfg,
            "INSERT INTO users (tenant_id, email) VALUES ($1, $2), ($3, $4)",
        );
        assert_eq!(
            sql,
            "INSERT INTO users (tenant_id, email, region) VALUES \
             ($1, $2, (SELECT geogate_dir.region FROM tenants AS geogate_dir WHERE geogate_dir.id = $1 AND geogate_dir.region = $99999 FOR SHARE)), \
             ($3, $4, (SELECT geogate_dir.region FROM tenants AS geogate_dir WHERE geogate_dir.id = $3 AND geogate_dir.region = $99999 FOR SHARE))"
        );
    }

    #[test]
    fn a_guarded_update_or_delete_checks_the_directory_row_of_each_target_row() {
        let cfg = config("table = \"tenants\"\nguard = \"check\"");
        let sql = rewritten(&cfg, "DELETE FROM users u WHERE u.tenant_id = $1");
        assert!(
            sql.ends_with(
                "AND EXISTS (SELECT 1 FROM tenants AS geogate_dir WHERE geogate_dir.id = u.tenant_id AND geogate_dir.region = $99999)"
            ),
            "{sql}"
        );
        let sql = rewritten(&cfg, "UPDATE users SET email = $2 WHERE tenant_id = $1");
        assert!(sql.contains("AND EXISTS (SELECT 1 FROM tenants"), "{sql}");
    }

    #[test]
    fn reads_region_moves_and_unguarded_configs_are_left_alone() {
        let cfg = config("table = \"tenants\"");
        for sql in [
            "SELECT * FROM users WHERE tenant_id = $1",
            "UPDATE users SET region = 'us' WHERE tenant_id = $1",
        ] {
            assert!(!rewritten(&cfg, sql).contains("geogate_dir"), "{sql}");
        }
        // The table only guessed from `query`: the guard stays off.
        let cfg = config("");
        assert!(
            !rewritten(&cfg, "INSERT INTO users (tenant_id, email) VALUES ($1, $2)")
                .contains("geogate_dir")
        );
        let cfg = config("table = \"tenants\"\nguard = \"off\"");
        assert!(!rewritten(&cfg, "DELETE FROM users WHERE tenant_id = $1").contains("geogate_dir"));
    }
}
