//! `geogate move-tenant`: moves one tenant to another region in one
//! transaction on the local region's gateway — the directory row first
//! (locked, so guarded writes and composite foreign keys wait for the move
//! and then see it), then every regional table with a tenant column, each
//! statement with the region predicate, and a final check that no row of
//! the tenant is left in the old region. See docs/tenant-moves.md.

use std::fmt::Write as _;

use crate::config::{Config, TableConfig};
use crate::rewrite::ident;
use crate::upstream::{Gateway, StartupParams, Upstream, UpstreamError};

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveReport {
    /// The region the tenant left (equal to the target when it was already there).
    pub from: String,
    /// The region it lives in now.
    pub to: String,
    /// Rows moved, per table (the directory table first).
    pub tables: Vec<(String, u64)>,
}

impl MoveReport {
    /// The report printed by the command.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.from == self.to {
            let _ = writeln!(out, "tenant already in {}: nothing moved", self.to);
            return out;
        }
        let _ = writeln!(
            out,
            "tenant moved from {} to {} in one transaction",
            self.from, self.to
        );
        let width = self.tables.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        for (t, n) in &self.tables {
            let _ = writeln!(out, "  {t:<width$}  {n} rows moved");
        }
        out
    }
}

/// Why a move did not happen. Carries no tenant id.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// `[tenants]` with a directory table is needed.
    #[error(
        "move-tenant needs [tenants] with a directory table (`[tenants] table`, or a `query` of the form SELECT id, region FROM table)"
    )]
    NoDirectory,
    /// The target is not a `[regions]` key.
    #[error("region {0:?} is not configured under [regions]")]
    UnknownRegion(String),
    /// The directory does not list the tenant.
    #[error("the tenant directory does not list this tenant")]
    UnknownTenant,
    /// The local gateway could not be set up or reached.
    #[error("local gateway: {0}")]
    Gateway(String),
    /// A statement failed; the transaction was rolled back.
    #[error("{table}: {error}; the move was rolled back")]
    Statement {
        /// The table the statement was on.
        table: String,
        /// What the gateway said (SQLSTATE only for server errors).
        error: String,
    },
    /// Rows of the tenant were still in the old region before COMMIT.
    #[error("{table}: {left} rows still in the old region; the move was rolled back")]
    Leftover {
        /// The table.
        table: String,
        /// How many rows.
        left: u64,
    },
}

/// Moves `tenant` to `to`, through the local region's gateway.
pub async fn move_tenant(cfg: &Config, tenant: &str, to: &str) -> Result<MoveReport, MoveError> {
    let t = cfg.tenants.as_ref().ok_or(MoveError::NoDirectory)?;
    let dir = t.moves.table.clone().ok_or(MoveError::NoDirectory)?;
    if !cfg.regions.contains_key(to) {
        return Err(MoveError::UnknownRegion(to.to_string()));
    }
    let local = cfg
        .regions
        .get(&cfg.proxy.local_region)
        .ok_or_else(|| MoveError::Gateway("proxy.local_region has no [regions] entry".into()))?;
    let gateway = Gateway::new(local).map_err(|e| MoveError::Gateway(e.to_string()))?;
    let user = gateway.url.user.clone().unwrap_or_else(|| "geogate".into());
    let database = gateway.url.database.clone().unwrap_or_else(|| user.clone());
    let startup = StartupParams {
        user,
        database,
        params: vec![("application_name".into(), "geogate-move-tenant".into())],
    };
    let mut up = Upstream::connect(&gateway, &startup)
        .await
        .map_err(|e| MoveError::Gateway(describe(&e)))?;
    // Regional tables with a tenant column, in a stable order; the
    // directory itself is moved first, on its own.
    let mut tables: Vec<(&String, &str, &str)> = cfg
        .tables
        .iter()
        .filter_map(|(name, tc)| match tc {
            TableConfig::Regional(r) => r
                .tenant_column
                .as_deref()
                .map(|tcol| (name, tcol, r.partition_column.as_str())),
            TableConfig::Global => None,
        })
        .filter(|(name, _, _)| !name.eq_ignore_ascii_case(unqualified(&dir)))
        .collect();
    tables.sort();
    let d = Dir {
        table: &dir,
        id_column: &t.moves.id_column,
        region_column: &t.moves.region_column,
        listen: t.moves.listen.as_deref(),
    };
    let result = run(&mut up, &d, &tables, tenant, to).await;
    if result.is_err() {
        // A failed statement leaves the transaction aborted; say so plainly.
        let _ = up.query_text("ROLLBACK", &[]).await;
    }
    up.terminate().await;
    result
}

/// The directory table as the move sees it.
struct Dir<'a> {
    table: &'a str,
    id_column: &'a str,
    region_column: &'a str,
    /// The channel to notify at COMMIT.
    listen: Option<&'a str>,
}

async fn run(
    up: &mut Upstream,
    d: &Dir<'_>,
    tables: &[(&String, &str, &str)],
    tenant: &str,
    to: &str,
) -> Result<MoveReport, MoveError> {
    let (dir, listen) = (d.table, d.listen);
    let (id, reg) = (ident(d.id_column), ident(d.region_column));
    let stmt = |table: &str| {
        let table = table.to_string();
        move |e: UpstreamError| MoveError::Statement {
            table: table.clone(),
            error: describe(&e),
        }
    };
    up.query_text("BEGIN", &[]).await.map_err(stmt("BEGIN"))?;
    // Lock the directory row: guarded writes (FOR SHARE) and composite
    // foreign keys (FOR KEY SHARE) wait for this transaction, then see it.
    let rows = up
        .query_text(
            &format!("SELECT {reg}::text FROM {dir} WHERE {id} = $1 FOR UPDATE"),
            &[tenant],
        )
        .await
        .map_err(stmt(dir))?;
    let from = rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .ok_or(MoveError::UnknownTenant)?;
    if from == to {
        up.query_text("COMMIT", &[]).await.map_err(stmt("COMMIT"))?;
        return Ok(MoveReport {
            from,
            to: to.to_string(),
            tables: Vec::new(),
        });
    }
    // What is in the old region now (a composite foreign key with ON UPDATE
    // CASCADE moves these rows with the directory row).
    let mut before = Vec::new();
    for (t, tcol, pcol) in tables {
        let sql = format!(
            "SELECT count(*)::text FROM {t} WHERE {tc} = $1 AND {pc} = $2",
            tc = ident(tcol),
            pc = ident(pcol),
        );
        before.push(count(up, &sql, &[tenant, &from]).await.map_err(stmt(t))?);
    }
    let sql = format!(
        "WITH m AS (UPDATE {dir} SET {reg} = $2 WHERE {id} = $1 AND {reg} = $3 RETURNING 1) \
         SELECT count(*)::text FROM m"
    );
    let dir_moved = count(up, &sql, &[tenant, to, &from])
        .await
        .map_err(stmt(dir))?;
    if let Some(channel) = listen {
        // Delivered at COMMIT to every sidecar listening, trigger or not.
        up.query_text("SELECT pg_notify($1, $2)", &[channel, tenant])
            .await
            .map_err(stmt("pg_notify"))?;
    }
    let mut report = vec![(dir.to_string(), dir_moved)];
    for ((t, tcol, pcol), before) in tables.iter().zip(before) {
        let (tc, pc) = (ident(tcol), ident(pcol));
        let sql = format!(
            "WITH m AS (UPDATE {t} SET {pc} = $2 WHERE {tc} = $1 AND {pc} = $3 RETURNING 1) \
             SELECT count(*)::text FROM m"
        );
        let moved = count(up, &sql, &[tenant, to, &from])
            .await
            .map_err(stmt(t))?;
        let sql = format!("SELECT count(*)::text FROM {t} WHERE {tc} = $1 AND {pc} = $2");
        let left = count(up, &sql, &[tenant, &from]).await.map_err(stmt(t))?;
        if left > 0 {
            return Err(MoveError::Leftover {
                table: t.to_string(),
                left,
            });
        }
        report.push((t.to_string(), before.max(moved)));
    }
    up.query_text("COMMIT", &[]).await.map_err(stmt("COMMIT"))?;
    Ok(MoveReport {
        from,
        to: to.to_string(),
        tables: report,
    })
}

async fn count(up: &mut Upstream, sql: &str, params: &[&str]) -> Result<u64, UpstreamError> {
    let rows = up.query_text(sql, params).await?;
    Ok(rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

fn unqualified(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// An error's description without row values (a server error by SQLSTATE only).
fn describe(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Server { code, .. } => format!("the gateway answered SQLSTATE {code}"),
        other => other.to_string(),
    }
}

/// `geogate move-tenant`: loads the config, moves, prints the report.
/// Returns the process exit code (0 moved or already there, 1 failed, 2 config).
pub fn run_command(config: &std::path::Path, tenant: &str, to: &str) -> u8 {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("geogate: {e}");
            return 2;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(move_tenant(&cfg, tenant, to)) {
        Ok(report) => {
            print!("{}", report.render());
            0
        }
        Err(e) => {
            eprintln!("geogate move-tenant: {e}");
            1
        }
    }
}
