//! The oracle: PostgreSQL's own executor judges geogate's decisions.
//!
//! The seed schema (tests/fixtures/seed.toml) is LIST-partitioned by
//! region on a real PostgreSQL. Every statement — the decision table
//! (tests/fixtures/decision_cases.toml) and a seeded, deterministic,
//! grammar-based generator over every form the analyzer decides — is
//! decided by geogate, then run inside a transaction that is rolled back.
//! `pg_stat_xact_user_tables` then tells which partitions the executor
//! really scanned (after plan-time and run-time pruning) and where rows
//! were inserted, updated or deleted. This sees what `EXPLAIN` sees and
//! more: it follows PostgreSQL's own statement splitting and lexing, and
//! the rows a write really moves.
//!
//! A failure is: `route`/`rewrite` to R that scans or changes another
//! region's partition (rows may land in another region only for a
//! reported region move to it); `global` touching any regional
//! partition; a rewrite PostgreSQL refuses while it accepts the original.
//! `scatter` and `reject` are always safe.
//!
//! `GEOGATE_ORACLE_N` sets the number of generated statements (default
//! 20,000), `GEOGATE_ORACLE_SEED` the generator's seed.

mod common;

use std::collections::{BTreeSet, HashMap};

use geogate::analyze::{Analyzer, Params, SqlContext};
use geogate::config::Config;
use geogate::policy::{Decision, Outcome, Settings, TenantAnswer, TenantLookup, decide};

const SEED: &str = include_str!("fixtures/seed.toml");

const REGIONS: [&str; 3] = ["eu", "us", "apac"];

const SCHEMA: &str = "
CREATE TYPE region AS ENUM ('eu', 'us', 'apac');
CREATE TABLE plans (id int PRIMARY KEY, name text);
CREATE TABLE tenants (id int, region region NOT NULL, name text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE users (id int, tenant_id int, region region NOT NULL DEFAULT 'apac', name text, active bool DEFAULT true,
  plan_id int, email text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE documents (id int, owner int, tenant_id int, region region NOT NULL, title text, user_id int,
  PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE notifications (id int, tenant_id int, region region NOT NULL DEFAULT 'us', body text,
  PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE audit_log (id int, region region NOT NULL, msg text) PARTITION BY LIST (region);
CREATE FUNCTION touch_users() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM plans';
";

const REGIONAL: [&str; 5] = [
    "tenants",
    "users",
    "documents",
    "notifications",
    "audit_log",
];

fn seed_sql() -> String {
    let mut s = String::from(SCHEMA);
    for t in REGIONAL {
        for r in REGIONS {
            s.push_str(&format!(
                "CREATE TABLE {t}_{r} PARTITION OF {t} FOR VALUES IN ('{r}');\n"
            ));
        }
    }
    s.push_str(
        "INSERT INTO plans VALUES (1, 'free'), (2, 'pro');
         INSERT INTO tenants VALUES (1, 'eu', 'a'), (4, 'eu', 'd'), (2, 'us', 'b'), (3, 'apac', 'c');
         INSERT INTO users (id, tenant_id, region, name, plan_id) VALUES
           (1, 1, 'eu', 'x', 1), (2, 1, 'eu', 'y', 2), (3, 2, 'us', 'z', 1), (4, 3, 'apac', 'w', 1),
           (5, 4, 'eu', 'v', 2), (6, 1, 'us', 'stray', 1), (7, 2, 'apac', 'stray', 2);
         INSERT INTO documents (id, owner, tenant_id, region, title, user_id) VALUES
           (1, 1, 1, 'eu', 'a', 1), (2, 3, 2, 'us', 'b', 3), (3, 3, 2, 'eu', 'stray', 3), (4, 4, 3, 'apac', 'c', 4);
         INSERT INTO notifications VALUES (1, 1, 'eu', 'n'), (2, 2, 'us', 'n'), (3, 3, 'apac', 'n');
         INSERT INTO audit_log VALUES (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'apac', 'c');
         ANALYZE;",
    );
    s
}

/// Tenants 1 and 4 live in eu, 2 in us, 3 in apac.
struct Directory(HashMap<String, String>);

impl TenantLookup for Directory {
    fn region_of(&self, tenant: &str) -> TenantAnswer {
        match self.0.get(tenant) {
            Some(r) => TenantAnswer::Found(r.as_str().into()),
            None => TenantAnswer::NotFound,
        }
    }
}

fn directory() -> Directory {
    Directory(
        [("1", "eu"), ("4", "eu"), ("2", "us"), ("3", "apac")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

/// What PostgreSQL did to one partition.
#[derive(Debug)]
struct Touch {
    table: String,
    region: String,
    scans: i64,
    inserted: i64,
    changed: i64,
}

/// The backend's counters; they hold everything not yet flushed (also
/// earlier transactions'), so the oracle compares two readings taken in
/// the same transaction, where no flush happens.
const STATS: &str =
    "SELECT relname::text, seq_scan + coalesce(idx_scan, 0), n_tup_ins, n_tup_upd + n_tup_del
  FROM pg_stat_xact_user_tables";

struct Db {
    client: tokio_postgres::Client,
}

impl Db {
    /// Runs `text` (simple protocol: PostgreSQL splits it) in a
    /// transaction that is rolled back; `Err` when PostgreSQL refused it.
    /// The partitions touched are reported even when a later statement of
    /// the text failed (the savepoint keeps the counters readable).
    async fn run(&self, text: &str, scs: bool) -> (Result<(), String>, Vec<Touch>) {
        if !scs {
            self.client
                .batch_execute("SET standard_conforming_strings = off")
                .await
                .expect("scs off");
        }
        self.client
            .batch_execute("BEGIN; SAVEPOINT oracle")
            .await
            .expect("begin");
        let before: HashMap<String, (i64, i64, i64)> = self
            .client
            .query(STATS, &[])
            .await
            .expect("stats")
            .into_iter()
            .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
        let res = self
            .client
            .simple_query(text)
            .await
            .map(|_| ())
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("{} {}", db.code().code(), db.message()),
                None => e.to_string(),
            });
        self.client
            .batch_execute("ROLLBACK TO SAVEPOINT oracle")
            .await
            .expect("rollback to savepoint");
        let rows = self.client.query(STATS, &[]).await.expect("stats");
        self.client
            .batch_execute("ROLLBACK")
            .await
            .expect("rollback");
        if !scs {
            self.client
                .batch_execute("SET standard_conforming_strings = on")
                .await
                .expect("scs on");
        }
        let mut touched = Vec::new();
        for row in rows {
            let rel: String = row.get(0);
            let Some((table, region)) = rel.rsplit_once('_') else {
                continue;
            };
            if !REGIONS.contains(&region) || !REGIONAL.contains(&table) {
                continue;
            }
            let (s0, i0, c0) = before.get(&rel).copied().unwrap_or_default();
            let t = Touch {
                table: table.to_string(),
                region: region.to_string(),
                scans: row.get::<_, i64>(1) - s0,
                inserted: row.get::<_, i64>(2) - i0,
                changed: row.get::<_, i64>(3) - c0,
            };
            if t.scans + t.inserted + t.changed > 0 {
                touched.push(t);
            }
        }
        (res, touched)
    }
}

/// Texts of the decision table the oracle cannot run inside its own
/// transaction (transaction control, session state, COPY, bind
/// parameters offline).
fn runnable(text: &str) -> bool {
    const SKIP: &[&str] = &[
        "begin",
        "start",
        "commit",
        "rollback",
        "abort",
        "end",
        "savepoint",
        "release",
        "set",
        "reset",
        "prepare",
        "execute",
        "deallocate",
        "discard",
        "copy",
        "vacuum",
        "cluster",
        "import",
        "show",
        "listen",
        "unlisten",
        "notify",
        "upsert",
    ];
    let b = text.as_bytes();
    let param = b.windows(2).any(|w| w[0] == b'$' && w[1].is_ascii_digit());
    let first = text
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_lowercase();
    !param && !text.contains(';') && !SKIP.contains(&first.as_str())
}

struct Oracle {
    analyzer: Analyzer,
    settings: Settings,
    tenants: Directory,
    db: Db,
    checked: usize,
    by_outcome: HashMap<&'static str, usize>,
    failures: Vec<String>,
}

impl Oracle {
    fn decide(&self, text: &str, scs: bool) -> Decision {
        let ctx = SqlContext::with_scs(scs);
        let a = self.analyzer.analyze_in(text, &ctx);
        decide(&a, &Params::NONE, &self.tenants, &self.settings)
    }

    async fn check(&mut self, text: &str, scs: bool) {
        let d = self.decide(text, scs);
        let label = d.label();
        *self.by_outcome.entry(label).or_default() += 1;
        self.checked += 1;
        // A multi-statement text whose statements are each confined to a
        // different region is a cross-region transaction: counted, run in
        // its first statement's region, several regions touched by design
        // (each statement's own confinement is what single statements check).
        if d.cross_region {
            *self.by_outcome.entry("cross_region").or_default() += 1;
            return;
        }
        let (region, run): (Option<&str>, &str) = match &d.outcome {
            Outcome::Reject(_) | Outcome::Scatter { .. } => return,
            Outcome::Global => (None, text),
            Outcome::Route { region } => (Some(region.as_str()), text),
            Outcome::Rewrite { region, sql, .. } => (Some(region.as_str()), sql.as_str()),
        };
        let (res, touched) = self.db.run(run, scs).await;
        // Integrity violations (class 23) depend on the data, not on the
        // rewrite: the rewritten row meets a key the original did not.
        if let (Outcome::Rewrite { .. }, Err(e)) = (&d.outcome, &res)
            && !e.starts_with("23")
        {
            let (orig, _) = self.db.run(text, scs).await;
            if orig.is_ok() {
                self.failures.push(format!(
                    "rewrite refused by PostgreSQL ({e}):\n    {text}\n    → {run}"
                ));
            }
        }
        // DDL reads rows to build indexes and such; it is global by
        // contract (docs/analysis.md).
        let first: Vec<String> = text
            .split_whitespace()
            .take(3)
            .map(str::to_ascii_lowercase)
            .collect();
        let ddl = matches!(
            first.first().map(String::as_str),
            Some("alter" | "analyze" | "reindex")
        ) || (first.first().map(String::as_str) == Some("create")
            && first.iter().any(|w| w == "index"));
        for t in &touched {
            let bad = match region {
                None => !ddl,
                Some(r) => {
                    t.region != r
                        && (t.scans > 0
                            || t.changed > 0
                            || (t.inserted > 0
                                && !d.moves.iter().any(|m| {
                                    m.table == t.table
                                        && m.to.as_deref().is_none_or(|to| to == t.region)
                                })))
                }
            };
            if bad {
                self.failures.push(format!(
                    "{label} {} touched {}_{} (scans {}, inserted {}, changed {}){}:\n    {text}{}",
                    region.unwrap_or("-"),
                    t.table,
                    t.region,
                    t.scans,
                    t.inserted,
                    t.changed,
                    if scs { "" } else { " [scs off]" },
                    if run != text {
                        format!("\n    → {run}")
                    } else {
                        String::new()
                    }
                ));
                break;
            }
        }
    }
}

/// A tiny deterministic PRNG (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// A table of the seed schema: name, tenant column, other columns.
struct Table {
    name: &'static str,
    tenant: Option<&'static str>,
    cols: &'static [&'static str],
}

const TABLES: &[Table] = &[
    Table {
        name: "users",
        tenant: Some("tenant_id"),
        cols: &[
            "id",
            "tenant_id",
            "region",
            "name",
            "active",
            "plan_id",
            "email",
        ],
    },
    Table {
        name: "documents",
        tenant: Some("tenant_id"),
        cols: &["id", "owner", "tenant_id", "region", "title", "user_id"],
    },
    Table {
        name: "tenants",
        tenant: Some("id"),
        cols: &["id", "region", "name"],
    },
    Table {
        name: "notifications",
        tenant: Some("tenant_id"),
        cols: &["id", "tenant_id", "region", "body"],
    },
    Table {
        name: "audit_log",
        tenant: None,
        cols: &["id", "region", "msg"],
    },
];

/// A FROM item in scope: its alias (what columns are qualified with) and
/// table (`None`: a derived table with `id` and `region` columns).
#[derive(Clone)]
struct Item {
    alias: String,
    table: Option<&'static Table>,
}

/// The grammar-based generator.
struct Gen {
    rng: Rng,
    aliases: usize,
    /// `standard_conforming_strings` of the statement being generated.
    scs: bool,
}

impl Gen {
    fn table(&mut self) -> &'static Table {
        &TABLES[self.rng.below(TABLES.len())]
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("t{}", self.aliases)
    }

    /// A region value in one of the many forms SQL allows.
    fn region(&mut self) -> String {
        let r = self.rng.pick(&REGIONS);
        match self.rng.below(16) {
            0 => format!("'{r}'::region"),
            1 => {
                // E'' with octal escapes for some characters.
                let body: String = r
                    .chars()
                    .map(|c| {
                        if self.rng.chance(50) {
                            format!("\\{:o}", c as u32)
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                format!("E'{body}'")
            }
            2 => format!("$${r}$$"),
            3 => format!("$q${r}$q$"),
            4 => format!("CAST('{r}' AS region)"),
            5 => format!("lower('{}')", r.to_uppercase()),
            6 => format!("'{}' || '{}'", &r[..1], &r[1..]),
            7 => format!("U&'\\00{:x}{}'", r.as_bytes()[0], &r[1..]),
            8 => format!("region '{r}'"),
            9 => "'mars'".to_string(),
            _ => format!("'{r}'"),
        }
    }

    fn tenant(&mut self) -> String {
        let t = 1 + self.rng.below(4);
        match self.rng.below(8) {
            0 => format!("'{t}'"),
            1 => format!("'0{t}'"),
            2 => format!("{t}::int"),
            3 => "9".to_string(),
            _ => t.to_string(),
        }
    }

    fn col(&mut self, it: &Item, col: &str) -> String {
        match self.rng.below(10) {
            0 => format!("\"{}\".\"{col}\"", it.alias),
            1 => format!("{}.\"{col}\"", it.alias),
            _ => format!("{}.{col}", it.alias),
        }
    }

    /// A comment, sometimes one that hides or reveals code.
    fn comment(&mut self) -> String {
        match self.rng.below(8) {
            0 => " /* c */ ".into(),
            1 => " /* a /* nested */ OR true */ ".into(),
            2 => " -- c\n".into(),
            3 => " --x\r".into(),
            4 => " /* geogate:allow_scatter */ ".into(),
            _ => " ".into(),
        }
    }

    /// A predicate over the items in scope (`outer`: enclosing scopes).
    fn pred(&mut self, scope: &[Item], outer: &[Item], depth: usize) -> String {
        if scope.is_empty() {
            return "true".into();
        }
        let it = scope[self.rng.below(scope.len())].clone();
        let tenant_col = it.table.and_then(|t| t.tenant);
        let k = self.rng.below(if depth > 2 { 12 } else { 22 });
        match k {
            0..=3 => {
                let c = self.col(&it, "region");
                let v = self.region();
                if self.rng.chance(20) {
                    format!("{v} = {c}")
                } else {
                    format!("{c} = {v}")
                }
            }
            4 => {
                let c = self.col(&it, "region");
                format!("{c} IN ({}, {})", self.region(), self.region())
            }
            5 | 6 => match tenant_col {
                Some(tc) => {
                    let c = self.col(&it, tc);
                    if self.rng.chance(25) {
                        format!("{c} IN ({}, {})", self.tenant(), self.tenant())
                    } else {
                        format!("{c} = {}", self.tenant())
                    }
                }
                None => format!("{}.id = 1", it.alias),
            },
            7 => format!("{}.id = {}", it.alias, self.rng.below(8)),
            8 => {
                let c = self.col(&it, "region");
                format!("{c} <> {}", self.region())
            }
            9 => format!(
                "({}, {}.id) = ({}, {})",
                self.col(&it, "region"),
                it.alias,
                self.region(),
                self.rng.below(8)
            ),
            10 => format!(
                "{} = ANY (ARRAY[{}, {}])",
                self.col(&it, "region"),
                self.region(),
                self.region()
            ),
            11 => {
                // Region equality with another item in scope or outside.
                let others: Vec<&Item> = scope.iter().chain(outer).collect();
                let o = others[self.rng.below(others.len())].clone();
                format!("{} = {}", self.col(&it, "region"), self.col(&o, "region"))
            }
            12 | 13 => format!(
                "({} OR {})",
                self.pred(scope, outer, depth + 1),
                self.pred(scope, outer, depth + 1)
            ),
            14 | 15 => format!(
                "{} AND{}{}",
                self.pred(scope, outer, depth + 1),
                self.comment(),
                self.pred(scope, outer, depth + 1)
            ),
            16 => format!("NOT ({})", self.pred(scope, outer, depth + 1)),
            17 | 18 => {
                // A (correlated) subquery.
                let t = self.table();
                let a = self.alias();
                let inner = Item {
                    alias: a.clone(),
                    table: Some(t),
                };
                let mut out: Vec<Item> = outer.to_vec();
                out.extend(scope.iter().cloned());
                let p = self.pred(std::slice::from_ref(&inner), &out, depth + 1);
                if self.rng.chance(50) {
                    format!("EXISTS (SELECT 1 FROM {} {a} WHERE {p})", t.name)
                } else {
                    format!(
                        "{}.id IN (SELECT {a}.id FROM {} {a} WHERE {p})",
                        it.alias, t.name
                    )
                }
            }
            19 => {
                if self.scs {
                    format!(
                        "{}.id::text = 'x\\' AND {} = $$eu$$ AND {}.id::text = ' OR true --'",
                        it.alias,
                        self.col(&it, "region"),
                        it.alias
                    )
                } else {
                    format!(
                        "{}.id::text = 'x\\' OR true OR {}.id::text = ' AND {} = ''eu'''",
                        it.alias,
                        it.alias,
                        self.col(&it, "region"),
                    )
                }
            }
            20 => format!("{}.region IS NOT NULL", it.alias),
            _ => format!("{}.region::text = {}", it.alias, self.region()),
        }
    }

    /// A FROM item; pushes what it brings into scope.
    fn item(&mut self, scope: &mut Vec<Item>, depth: usize) -> String {
        let t = self.table();
        let a = self.alias();
        let k = self.rng.below(if depth > 1 { 8 } else { 11 });
        let name = match self.rng.below(10) {
            0 => format!("public.{}", t.name),
            1 => format!("\"{}\"", t.name),
            2 => format!("ONLY {}", t.name),
            _ => t.name.to_string(),
        };
        match k {
            0 => {
                // A column alias list renaming the columns.
                let mut cols: Vec<&str> = t.cols.to_vec();
                let n = cols.len();
                cols.swap(0, n - 1);
                scope.push(Item {
                    alias: a.clone(),
                    table: Some(t),
                });
                format!("{name} AS {a}({})", cols.join(", "))
            }
            8 | 9 => {
                // A derived table.
                let mut inner = Vec::new();
                let from = self.item(&mut inner, depth + 1);
                let p = self.pred(&inner, &[], depth + 1);
                let first = inner.first().map(|i| i.alias.clone()).unwrap_or_default();
                scope.push(Item {
                    alias: a.clone(),
                    table: None,
                });
                format!("(SELECT {first}.id, {first}.region FROM {from} WHERE {p}) {a}")
            }
            10 => {
                let t2 = self.table();
                scope.push(Item {
                    alias: a.clone(),
                    table: Some(t2),
                });
                format!("(TABLE {}) {a}", t2.name)
            }
            _ => {
                scope.push(Item {
                    alias: a.clone(),
                    table: Some(t),
                });
                if self.rng.chance(10) {
                    // No alias: columns are qualified by the table name.
                    scope.last_mut().expect("pushed").alias = t.name.to_string();
                    name
                } else {
                    format!("{name} {a}")
                }
            }
        }
    }

    /// FROM with joins; returns the text and the items in scope.
    fn from(&mut self, depth: usize, outer: &[Item]) -> (String, Vec<Item>) {
        let mut scope = Vec::new();
        let mut s = self.item(&mut scope, depth);
        for _ in 0..self.rng.below(3) {
            let before = scope.len();
            let item = self.item(&mut scope, depth);
            let new: Vec<Item> = scope[before..].to_vec();
            match self.rng.below(10) {
                7 => s.push_str(&format!(" NATURAL JOIN {item}")),
                8 => {
                    let p = self.pred(&scope, outer, depth + 1);
                    s.push_str(&format!(" RIGHT JOIN {item} ON {p}"));
                }
                9 => {
                    let p = self.pred(&scope, outer, depth + 1);
                    s.push_str(&format!(" FULL JOIN {item} ON {p}"));
                }
                0 => s.push_str(&format!(", {item}")),
                1 => s.push_str(&format!(" JOIN {item} USING (region)")),
                2 => {
                    let p = self.pred(&scope, outer, depth + 1);
                    s.push_str(&format!(" LEFT JOIN {item} ON {p}"));
                }
                3 => s.push_str(&format!(" CROSS JOIN {item}")),
                4 => {
                    // LATERAL subquery seeing the items so far.
                    let t = self.table();
                    let a = self.alias();
                    scope.truncate(before);
                    let inner = Item {
                        alias: a.clone(),
                        table: Some(t),
                    };
                    let p = self.pred(std::slice::from_ref(&inner), &scope, depth + 1);
                    let l = self.alias();
                    scope.push(Item {
                        alias: l.clone(),
                        table: None,
                    });
                    s.push_str(&format!(
                        " CROSS JOIN LATERAL (SELECT {a}.id, {a}.region FROM {} {a} WHERE {p}) {l}",
                        t.name
                    ));
                }
                _ => {
                    let p = self.pred(&scope, outer, depth + 1);
                    let _ = new;
                    s.push_str(&format!(" JOIN {item} ON {p}"));
                }
            }
        }
        (s, scope)
    }

    fn select(&mut self, depth: usize) -> String {
        let (from, scope) = self.from(depth, &[]);
        let proj = match self.rng.below(6) {
            0 => "count(*)".to_string(),
            1 => format!("{}.id", scope[0].alias),
            2 => {
                // A scalar subquery in the select list (correlated).
                let t = self.table();
                let a = self.alias();
                let inner = Item {
                    alias: a.clone(),
                    table: Some(t),
                };
                let p = self.pred(std::slice::from_ref(&inner), &scope, depth + 1);
                format!(
                    "{}.id, (SELECT count(*) FROM {} {a} WHERE {p}) AS n",
                    scope[0].alias, t.name
                )
            }
            _ => "*".to_string(),
        };
        let mut s = format!("SELECT {proj} FROM {from}");
        if self.rng.chance(85) {
            let p = self.pred(&scope, &[], depth);
            s.push_str(&format!(" WHERE{}{p}", self.comment()));
        }
        if self.rng.chance(5) && proj != "count(*)" {
            s.push_str(
                self.rng
                    .pick(&[" FOR UPDATE", " FOR NO KEY UPDATE", " FOR SHARE"]),
            );
        }
        s
    }

    /// A query: a SELECT, a set operation, TABLE, or one with CTEs.
    fn query(&mut self, depth: usize) -> String {
        match self.rng.below(if depth > 1 { 6 } else { 12 }) {
            6 => format!("{} UNION ALL {}", self.select1(depth), self.select1(depth)),
            7 => format!("{} EXCEPT {}", self.select1(depth), self.select1(depth)),
            8 => format!(
                "{} UNION ALL TABLE {}",
                self.select1(depth),
                self.table().name
            ),
            9 | 10 => {
                // CTEs: named like a regional table or not; later siblings
                // and the main query see them.
                let name = if self.rng.chance(30) {
                    self.table().name.to_string()
                } else {
                    "c".to_string()
                };
                let body = self.select1(depth + 1);
                let main = if self.rng.chance(50) {
                    format!("SELECT * FROM {name}")
                } else {
                    self.select1(depth + 1)
                };
                format!("WITH {name} AS ({body}) {main}")
            }
            11 => format!("TABLE {}", self.table().name),
            5 => {
                // WITH RECURSIVE over a regional table.
                let t = self.table();
                let a = self.alias();
                let it = Item {
                    alias: a.clone(),
                    table: Some(t),
                };
                let p = self.pred(std::slice::from_ref(&it), &[], depth + 1);
                format!(
                    "WITH RECURSIVE r(id, n) AS (SELECT {a}.id, 0 FROM {} {a} WHERE {p} UNION ALL SELECT r.id, r.n + 1 FROM r WHERE r.n < 2) SELECT * FROM r",
                    t.name
                )
            }
            _ => self.select(depth),
        }
    }

    fn select1(&mut self, depth: usize) -> String {
        // Set-operation branches must return the same columns.
        let (from, scope) = self.from(depth + 1, &[]);
        let p = self.pred(&scope, &[], depth + 1);
        let a = &scope[0].alias;
        format!("SELECT {a}.id, {a}.region::text FROM {from} WHERE {p}")
    }

    fn values_row(&mut self, t: &Table, with_region: bool) -> (String, String) {
        let mut cols = vec!["id"];
        let id = 1000 + self.rng.below(100_000);
        let mut vals = vec![id.to_string()];
        if with_region {
            cols.push("region");
            let r = self.region();
            vals.push(r);
        }
        if let Some(tc) = t.tenant
            && tc != "id"
        {
            cols.push(tc);
            vals.push(self.tenant());
        }
        (cols.join(", "), vals.join(", "))
    }

    fn insert(&mut self) -> String {
        let t = self.table();
        let with_region = self.rng.chance(60);
        let (cols, vals) = self.values_row(t, with_region);
        match self.rng.below(6) {
            0 => {
                // INSERT … SELECT, sometimes with `*` shifting columns.
                let r = self.region();
                if self.rng.chance(50) {
                    format!(
                        "INSERT INTO {} (id, region) SELECT s.*, {r} FROM (SELECT 5000 + {}) s",
                        t.name,
                        self.rng.below(100)
                    )
                } else {
                    let (from, scope) = self.from(1, &[]);
                    let p = self.pred(&scope, &[], 1);
                    format!(
                        "INSERT INTO {} (id, region) SELECT 6000 + {}.id, {r} FROM {from} WHERE {p} LIMIT 1",
                        t.name, scope[0].alias
                    )
                }
            }
            1 => {
                let r = self.region();
                format!(
                    "INSERT INTO {} ({cols}) VALUES ({vals}) ON CONFLICT (id, region) DO UPDATE SET region = {r}",
                    t.name
                )
                .replace(" ON CONFLICT (id, region)", if t.name == "audit_log" { " ON CONFLICT" } else { " ON CONFLICT (id, region)" })
            }
            2 => {
                let (c2, v2) = self.values_row(t, with_region);
                if c2 == cols {
                    format!("INSERT INTO {} ({cols}) VALUES ({vals}), ({v2})", t.name)
                } else {
                    format!("INSERT INTO {} ({cols}) VALUES ({vals})", t.name)
                }
            }
            3 => format!("UPSERT INTO {} ({cols}) VALUES ({vals})", t.name),
            _ => format!(
                "INSERT INTO {} ({cols}) VALUES ({vals}) RETURNING id",
                t.name
            ),
        }
    }

    fn update(&mut self) -> String {
        let t = self.table();
        let a = self.alias();
        let it = Item {
            alias: a.clone(),
            table: Some(t),
        };
        let set = match self.rng.below(5) {
            0 => format!("region = {}", self.region()),
            1 => format!("(region, id) = ({}, {a}.id)", self.region()),
            _ => "id = id".to_string(),
        };
        let mut scope = vec![it];
        let from = if self.rng.chance(25) {
            let mut extra = Vec::new();
            let f = self.item(&mut extra, 1);
            scope.extend(extra);
            format!(" FROM {f}")
        } else {
            String::new()
        };
        let p = self.pred(&scope, &[], 0);
        format!("UPDATE {} {a} SET {set}{from} WHERE {p}", t.name)
    }

    fn delete(&mut self) -> String {
        let t = self.table();
        let a = self.alias();
        let mut scope = vec![Item {
            alias: a.clone(),
            table: Some(t),
        }];
        let using = if self.rng.chance(25) {
            let mut extra = Vec::new();
            let f = self.item(&mut extra, 1);
            scope.extend(extra);
            format!(" USING {f}")
        } else {
            String::new()
        };
        let p = self.pred(&scope, &[], 0);
        format!("DELETE FROM {} {a}{using} WHERE {p}", t.name)
    }

    fn merge(&mut self) -> String {
        let t = self.table();
        let a = self.alias();
        let s = self.alias();
        let src = self.table();
        let scope = vec![
            Item {
                alias: a.clone(),
                table: Some(t),
            },
            Item {
                alias: s.clone(),
                table: Some(src),
            },
        ];
        let p = self.pred(&scope, &[], 1);
        let action = match self.rng.below(4) {
            0 => "WHEN MATCHED THEN DELETE".to_string(),
            1 => format!("WHEN MATCHED THEN UPDATE SET region = {}", self.region()),
            2 => format!(
                "WHEN NOT MATCHED THEN INSERT (id, region) VALUES ({s}.id + 7000, {})",
                self.region()
            ),
            _ => "WHEN MATCHED THEN UPDATE SET id = id".to_string(),
        };
        format!(
            "MERGE INTO {} {a} USING {} {s} ON {a}.id = {s}.id AND {p} {action}",
            t.name, src.name
        )
    }

    /// One statement of any kind.
    fn statement(&mut self) -> String {
        match self.rng.below(40) {
            0..=15 => self.query(0),
            16..=20 => self.insert(),
            21..=24 => self.update(),
            25..=28 => self.delete(),
            29..=30 => self.merge(),
            31 => format!("EXPLAIN ANALYZE {}", self.query(1)),
            32 => format!("CREATE TABLE x AS {}", self.query(1)),
            33 => format!("CREATE MATERIALIZED VIEW mv AS {}", self.query(1)),
            34 => format!("TRUNCATE {}", self.table().name),
            35 => format!("LOCK TABLE {} IN SHARE MODE", self.table().name),
            36 => format!(
                "DO $$ BEGIN PERFORM count(*) FROM {}; END $$",
                self.table().name
            ),
            37 => "SELECT touch_users()".to_string(),
            38 => {
                let q = self.select(1);
                q.replacen(" FROM ", " INTO TEMP y FROM ", 1)
            }
            _ => {
                let del = self.delete();
                format!("WITH d AS ({del} RETURNING *) SELECT * FROM d")
            }
        }
    }

    /// A text: one statement, sometimes two, with comments and hints.
    fn text(&mut self) -> (String, bool) {
        self.aliases = 0;
        self.scs = !self.rng.chance(5);
        let mut s = self.statement();
        if self.rng.chance(5) {
            s = format!("/*+ geogate:allow_scatter */ {s}");
        }
        if self.rng.chance(8) {
            let sep = self.rng.pick(&["; ", " --x\r; ", ";\n", " /* ; */ ; "]);
            let second = self.statement();
            s = format!("{s}{sep}{second}");
        }
        if self.rng.chance(10) {
            s = s.to_uppercase().replace("$Q$", "$q$");
        }
        (s, self.scs)
    }
}

/// The bounded run of the test suite (~20,000 statements).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn postgres_executor_confirms_every_route_rewrite_and_global() {
    let n: usize = std::env::var("GEOGATE_ORACLE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("GEOGATE_ORACLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x05EE_D0F0_AC1E);
    let c = common::Cluster::shared("oracle");
    let db = c.create_db("oracle");
    c.psql(&db, &seed_sql());
    let (client, conn) =
        tokio_postgres::connect(&c.url("postgres", None, &db), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute("SET statement_timeout = '5s'")
        .await
        .expect("timeout");
    let cfg = Config::parse(SEED).expect("seed config");
    let mut o = Oracle {
        analyzer: Analyzer::new(&cfg),
        settings: Settings::from_config(&cfg, None),
        tenants: directory(),
        db: Db { client },
        checked: 0,
        by_outcome: HashMap::new(),
        failures: Vec::new(),
    };
    // The decision table, with PostgreSQL as the judge.
    for c in common::cases::decision_cases() {
        if c.user.is_none() && c.params.is_empty() && runnable(&c.sql) {
            o.check(&c.sql, true).await;
        }
    }
    let table_checked = o.checked;
    // The generator.
    let mut g = Gen {
        rng: Rng(seed | 1),
        aliases: 0,
        scs: true,
    };
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let (text, scs) = g.text();
        seen.insert(text.len() % 7);
        o.check(&text, scs).await;
    }
    eprintln!(
        "oracle: {} decision-table texts and {} generated statements checked; decisions {:?}",
        table_checked,
        o.checked - table_checked,
        o.by_outcome
    );
    assert!(
        o.failures.is_empty(),
        "{} unsafe decisions, the first ones:\n{}",
        o.failures.len(),
        o.failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The generator must reach every decision (else it tests little).
    for label in ["global", "route", "rewrite", "scatter", "reject"] {
        assert!(
            o.by_outcome.get(label).copied().unwrap_or(0) > 0 || n < 1000,
            "no {label} decision generated: {:?}",
            o.by_outcome
        );
    }
}
