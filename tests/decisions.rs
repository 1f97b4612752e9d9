//! The decision table (tests/fixtures/decision_cases.toml): every rule of
//! docs/design.md "Decisions" and its negative on the seed schema
//! (tests/fixtures/seed.toml), plus the rewrite property and the rewritten
//! SQL run on a real PostgreSQL.

mod common;

use std::collections::HashMap;

use common::cases::decision_cases;
use geogate::analyze::{Analyzer, Params};
use geogate::config::Config;
use geogate::policy::{Decision, Outcome, Settings, TenantAnswer, TenantLookup, decide};

const SEED: &str = include_str!("fixtures/seed.toml");

/// Tenants 1 and 4 live in eu, 2 in us, 3 in apac, 9 in an unconfigured
/// region; 666 makes the directory unavailable.
struct Directory(HashMap<String, String>);

impl Directory {
    fn seed() -> Directory {
        let mut m = HashMap::new();
        for (t, r) in [
            ("1", "eu"),
            ("4", "eu"),
            ("2", "us"),
            ("3", "apac"),
            ("9", "mars"),
        ] {
            m.insert(t.to_string(), r.to_string());
        }
        m.insert("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into(), "us".into());
        Directory(m)
    }
}

impl TenantLookup for Directory {
    fn region_of(&self, tenant: &str) -> TenantAnswer {
        if tenant == "666" {
            return TenantAnswer::Unavailable;
        }
        match self.0.get(tenant) {
            Some(r) => TenantAnswer::Found(r.as_str().into()),
            None => TenantAnswer::NotFound,
        }
    }
}

struct World {
    cfg: Config,
    analyzer: Analyzer,
    tenants: Directory,
}

impl World {
    fn new() -> World {
        let cfg = Config::parse(SEED).expect("seed config");
        World {
            analyzer: Analyzer::new(&cfg),
            cfg,
            tenants: Directory::seed(),
        }
    }

    fn decide(&self, sql: &str, user: Option<&str>, params: &[Option<&str>]) -> Decision {
        let values: Vec<Option<&[u8]>> = params.iter().map(|p| p.map(str::as_bytes)).collect();
        let p = Params {
            values: &values,
            formats: &[],
            types: &[],
        };
        let a = self.analyzer.analyze(sql);
        decide(
            &a,
            &p,
            &self.tenants,
            &Settings::from_config(&self.cfg, user),
        )
    }
}

/// A decision in one line: `route eu`, `rewrite eu: SQL`,
/// `scatter eu,us multi_region`, `reject GG001 no_region users`.
fn show(d: &Decision) -> String {
    let mut s = match &d.outcome {
        Outcome::Global => "global".to_string(),
        Outcome::Route { region } => format!("route {region}"),
        Outcome::Rewrite { region, sql, .. } => format!("rewrite {region}: {sql}"),
        Outcome::Scatter { regions, cause } => {
            format!("scatter {} {}", regions.join(","), cause.label())
        }
        Outcome::Reject(r) => format!(
            "reject {} {} {}",
            r.sqlstate(),
            r.reason.label(),
            r.table.as_deref().unwrap_or("-")
        ),
    };
    for m in &d.moves {
        s.push_str(&format!(
            " | move {} {}->{}",
            m.table,
            m.from.as_deref().unwrap_or("?"),
            m.to.as_deref().unwrap_or("?")
        ));
    }
    s
}

#[test]
fn decision_table_on_seed_schema() {
    let w = World::new();
    let cases = decision_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let (sql, want) = (&c.sql, &c.expect);
        let got = show(&w.decide(sql, c.user.as_deref(), &c.params()));
        if got != *want {
            failures.push(format!("  {sql}\n    want: {want}\n    got:  {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 150, "{} cases", cases.len());
}

#[test]
fn every_rewrite_of_the_corpus_analyses_as_route_to_the_same_region() {
    let w = World::new();
    let mut checked = 0;
    for c in decision_cases() {
        let (sql, user, params) = (c.sql.as_str(), c.user.as_deref(), c.params());
        let d = w.decide(sql, user, &params);
        let Outcome::Rewrite {
            region,
            sql: rewritten,
            parameterized,
        } = &d.outcome
        else {
            continue;
        };
        let again = w.decide(rewritten, user, &params);
        assert_eq!(
            again.outcome,
            Outcome::Route {
                region: region.clone()
            },
            "literal rewrite of {sql}: {rewritten}"
        );
        if let Some(p) = parameterized {
            // The extended-protocol form: the region is appended as $K.
            let mut with_region: Vec<Option<&str>> = params.clone();
            assert_eq!(
                p.region_param as usize,
                with_region.len().max(max_param(sql)) + 1
            );
            while with_region.len() + 1 < p.region_param as usize {
                with_region.push(None);
            }
            with_region.push(Some(region.as_str()));
            let again = w.decide(&p.sql, user, &with_region);
            assert_eq!(
                again.outcome,
                Outcome::Route {
                    region: region.clone()
                },
                "parameterised rewrite of {sql}: {}",
                p.sql
            );
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} rewrites in the corpus");
}

fn max_param(sql: &str) -> usize {
    (1..100)
        .rev()
        .find(|n| sql.contains(&format!("${n}")))
        .unwrap_or(0)
}

/// A tiny deterministic PRNG (xorshift) so the mutation test needs no crate.
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
}

/// The in-suite stand-in for the cargo-fuzz target (fuzz/): many random
/// byte-level mutations and splices of the corpus through analyze +
/// decide; none may panic.
#[test]
fn random_mutations_of_the_corpus_never_panic() {
    let w = World::new();
    let pieces: &[&str] = &[
        "'",
        "\"",
        "$$",
        "$1",
        "$99999",
        "$100000",
        "(",
        ")",
        ";",
        "/*",
        "*/",
        "--",
        "\n",
        " AND ",
        " OR ",
        "region",
        "tenant_id",
        " = ",
        "::region",
        "users",
        "E'\\'",
        "U&\"",
        "AS OF SYSTEM TIME",
        "UPSERT",
        " IN (",
        ",",
        "SELECT",
        "WITH",
        "é",
        "\u{0}",
        "DO $",
        "$é$",
        "\u{fffd}",
        "\r",
        "--",
        "\\",
        "E'\\",
        "U&'",
        " UESCAPE '!'",
        "TRUNCATE ",
        "LOCK TABLE ",
        "EXECUTE p(",
        "MERGE INTO users USING plans ON ",
        "@",
        "@{",
        " FOR NO KEY UPDATE",
        "IMPORT INTO ",
        "REFRESH MATERIALIZED VIEW ",
        " AS u(a, b)",
    ];
    let cases = decision_cases();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let mut ctx_off = geogate::analyze::SqlContext::with_scs(false);
    ctx_off.prepare("p", "SELECT * FROM users WHERE region = $1");
    let tenants = Directory::seed();
    let settings = Settings::from_config(&w.cfg, Some("app"));
    for round in 0..20_000 {
        let base = cases[rng.below(cases.len())].sql.as_str();
        let mut s: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(s.len() + 1);
            match rng.below(3) {
                0 if !s.is_empty() => {
                    let end = (at + rng.below(6)).min(s.len());
                    s.drain(at.min(s.len())..end);
                }
                1 => {
                    let p = pieces[rng.below(pieces.len())];
                    for (k, c) in p.chars().enumerate() {
                        s.insert((at + k).min(s.len()), c);
                    }
                }
                _ => {
                    let other = cases[rng.below(cases.len())].sql.as_str();
                    let cut = rng.below(other.len());
                    let tail: String = other.chars().skip(cut).collect();
                    s.truncate(at.min(s.len()));
                    s.extend(tail.chars());
                }
            }
        }
        let sql: String = s.into_iter().collect();
        let a = match round % 3 {
            0 => w.analyzer.analyze(&sql),
            1 => std::sync::Arc::new(w.analyzer.analyze_uncached(&sql)),
            // standard_conforming_strings off, with prepared statements.
            _ => w.analyzer.analyze_in(&sql, &ctx_off),
        };
        ctx_off.clone().record(&a);
        let vals = [Some(&b"eu"[..]), None, Some(&[0, 0, 0, 1][..])];
        let p = Params {
            values: &vals,
            formats: &[0, 0, 1],
            types: &[],
        };
        let _ = a.tenant_keys(&p);
        let _ = a.fingerprint();
        let _ = decide(&a, &p, &tenants, &settings);
        let _ = decide(&a, &Params::NONE, &tenants, &settings);
    }
}

const SCHEMA: &str = "
CREATE TYPE region AS ENUM ('eu', 'us', 'apac');
CREATE TABLE plans (id int PRIMARY KEY, name text);
CREATE TABLE tenants (id int, region region NOT NULL, name text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE users (id int, tenant_id int, region region NOT NULL, name text, active bool DEFAULT true,
  plan_id int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE documents (id int, owner int, tenant_id int, region region NOT NULL, title text, user_id int,
  PRIMARY KEY (id, region)) PARTITION BY LIST (region);
";

fn seed_database(c: &common::Cluster, db: &str) {
    c.psql(db, SCHEMA);
    for t in ["tenants", "users", "documents"] {
        for r in ["eu", "us", "apac"] {
            c.psql(
                db,
                &format!("CREATE TABLE {t}_{r} PARTITION OF {t} FOR VALUES IN ('{r}')"),
            );
        }
    }
    c.psql(
        db,
        "INSERT INTO tenants VALUES (1, 'eu', 'a'), (4, 'eu', 'd'), (2, 'us', 'b'), (3, 'apac', 'c');
         INSERT INTO users (id, tenant_id, region, name) VALUES
           (1, 1, 'eu', 'x'), (2, 1, 'eu', 'y'), (3, 2, 'us', 'z'), (4, 3, 'apac', 'w'), (5, 4, 'eu', 'v'),
           (6, 1, 'us', 'stray: tenant 1 row in the wrong region'), (7, 2, 'apac', 'stray');
         INSERT INTO documents (id, owner, tenant_id, region, title) VALUES
           (1, 1, 1, 'eu', 'a'), (2, 3, 2, 'us', 'b'), (3, 3, 2, 'eu', 'stray'), (4, 4, 3, 'apac', 'c');",
    );
}

/// The rewritten SQL runs on PostgreSQL and returns exactly the rows of
/// the tenant's region; the oracle reads the region's partition directly.
#[test]
fn rewritten_sql_runs_on_postgres_and_returns_the_rows_of_that_region() {
    let c = common::Cluster::shared("eu");
    let db = c.create_db("rewrite");
    seed_database(c, &db);
    let w = World::new();
    let checks: &[(&str, &str)] = &[
        (
            "SELECT id, region FROM users WHERE tenant_id = 1 ORDER BY id",
            "SELECT id, region FROM users_eu WHERE tenant_id = 1 ORDER BY id",
        ),
        (
            "SELECT u.id, d.id FROM users u JOIN documents d ON d.owner = u.id AND d.region = u.region WHERE u.tenant_id = 2 ORDER BY 1, 2",
            "SELECT u.id, d.id FROM users_us u JOIN documents_us d ON d.owner = u.id WHERE u.tenant_id = 2 ORDER BY 1, 2",
        ),
        (
            "SELECT u.id, d.id FROM users u LEFT JOIN documents d ON d.owner = u.id AND d.tenant_id = 2 WHERE u.region = 'us' ORDER BY 1, 2",
            "SELECT u.id, d.id FROM users_us u LEFT JOIN documents_us d ON d.owner = u.id AND d.tenant_id = 2 ORDER BY 1, 2",
        ),
        (
            "SELECT id FROM users WHERE tenant_id = 1 OR tenant_id = 4 ORDER BY id",
            "SELECT id FROM users_eu WHERE tenant_id IN (1, 4) ORDER BY id",
        ),
        (
            "WITH d AS (SELECT * FROM documents WHERE tenant_id = 2) SELECT id FROM d ORDER BY id",
            "SELECT id FROM documents_us WHERE tenant_id = 2 ORDER BY id",
        ),
        (
            "SELECT name FROM tenants WHERE id = 3",
            "SELECT name FROM tenants_apac WHERE id = 3",
        ),
        (
            "UPDATE users SET name = name WHERE tenant_id = 2 RETURNING id, region",
            "SELECT id, region FROM users_us WHERE tenant_id = 2",
        ),
        (
            "DELETE FROM documents WHERE tenant_id = 2 RETURNING id",
            "SELECT id FROM documents_us WHERE tenant_id = 2",
        ),
    ];
    for (sql, oracle) in checks {
        let d = w.decide(sql, None, &[]);
        let Outcome::Rewrite {
            region,
            sql: rewritten,
            parameterized,
        } = &d.outcome
        else {
            panic!("{sql}: expected a rewrite, got {}", show(&d));
        };
        let got = c.psql(&db, &format!("BEGIN; {rewritten}; ROLLBACK"));
        let want = c.psql(&db, oracle);
        assert_eq!(got, want, "{sql}\nrewritten: {rewritten}");
        // The prepared form: the region is one more parameter.
        let p = parameterized.as_ref().expect("parameterised form");
        let got = c.psql(
            &db,
            &format!(
                "BEGIN; PREPARE q AS {}; EXECUTE q('{region}'); ROLLBACK",
                p.sql
            ),
        );
        assert_eq!(got, want, "{sql}\nprepared: {}", p.sql);
    }
    // INSERT: the rows land in the tenant's partition.
    let d = w.decide(
        "INSERT INTO users (id, tenant_id, name) VALUES (100, 3, 'n'), (101, 3, 'm')",
        None,
        &[],
    );
    let Outcome::Rewrite { sql: rewritten, .. } = &d.outcome else {
        panic!("insert: {}", show(&d));
    };
    c.psql(&db, rewritten);
    assert_eq!(
        c.psql(
            &db,
            "SELECT count(*) FROM users_apac WHERE id IN (100, 101)"
        ),
        "2"
    );
    // Every rewrite of the decision table is syntactically valid PostgreSQL.
    for case in decision_cases() {
        if !case.params.is_empty() {
            continue;
        }
        let d = w.decide(&case.sql, case.user.as_deref(), &[]);
        if let Outcome::Rewrite { sql: rewritten, .. } = &d.outcome {
            let ddl_free = rewritten.replace("UPSERT", "INSERT");
            let out = c.psql_output(
                &db,
                &format!(
                    "BEGIN; EXPLAIN {}; ROLLBACK",
                    ddl_free
                        .trim_start_matches("BEGIN;\n")
                        .trim_end_matches(";\nCOMMIT")
                ),
            );
            assert!(
                // Semantic errors (the corpus is not typed for this schema)
                // are fine; the SQL must be syntactically PostgreSQL's.
                !String::from_utf8_lossy(&out.stderr).contains("syntax error"),
                "{rewritten}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Issue 10: what depends on the session (standard_conforming_strings,
/// SQL-level prepared statements) and what bounds the parser.
#[test]
fn session_context_and_limits_are_decided_safely() {
    use geogate::analyze::SqlContext;
    let w = World::new();
    let settings = Settings::from_config(&w.cfg, None);
    let decide_in = |sql: &str, ctx: &SqlContext| {
        let a = w.analyzer.analyze_in(sql, ctx);
        show(&decide(&a, &Params::NONE, &w.tenants, &settings))
    };
    // standard_conforming_strings = off: the backslash escapes the quote,
    // so `OR true` is code and `$$eu$$` is inside a string.
    let trick =
        "SELECT * FROM users WHERE name = 'x\\' AND region = $$eu$$ AND name = ' OR true --'";
    let on = SqlContext::default();
    let mut off = SqlContext::default();
    assert!(off.observe_parameter("standard_conforming_strings", "off"));
    assert_eq!(decide_in(trick, &on), "route eu");
    assert_eq!(decide_in(trick, &off), "reject GG001 no_region users");
    assert_eq!(
        decide_in("SELECT * FROM users WHERE region = U&'\\0065u'", &off),
        "reject GG006 parse_error -"
    );
    // SET / RESET standard_conforming_strings are recorded.
    let mut ctx = SqlContext::default();
    ctx.record(&w.analyzer.analyze("SET standard_conforming_strings = off"));
    assert!(!ctx.standard_conforming_strings());
    ctx.record(&w.analyzer.analyze("RESET ALL"));
    assert!(ctx.standard_conforming_strings());

    // SQL-level PREPARE / EXECUTE / DEALLOCATE.
    let mut ctx = SqlContext::default();
    let prep = "PREPARE p(text) AS SELECT * FROM users WHERE region = $1";
    assert_eq!(decide_in(prep, &ctx), "global");
    ctx.record(&w.analyzer.analyze(prep));
    assert_eq!(decide_in("EXECUTE p('us')", &ctx), "route us");
    assert_eq!(
        decide_in("EXECUTE p('mars')", &ctx),
        "reject GG003 unknown_region users"
    );
    assert_eq!(
        decide_in("EXECUTE p(lower('US'))", &ctx),
        "reject GG003 unknown_region users"
    );
    assert_eq!(
        decide_in("EXECUTE q('us')", &ctx),
        "reject GG006 parse_error -"
    );
    ctx.record(&w.analyzer.analyze(
        "PREPARE t(int) AS SELECT * FROM users WHERE tenant_id = $1; PREPARE \"Del\" AS DELETE FROM users",
    ));
    assert_eq!(
        decide_in("EXECUTE t(2)", &ctx),
        "reject GG001 no_region users"
    );
    assert_eq!(
        decide_in("EXECUTE \"Del\"", &ctx),
        "reject GG001 no_region users"
    );
    assert_eq!(
        decide_in("EXPLAIN ANALYZE EXECUTE p('us')", &ctx),
        "reject GG006 parse_error -"
    );
    ctx.record(&w.analyzer.analyze("DEALLOCATE p"));
    assert_eq!(
        decide_in("EXECUTE p('us')", &ctx),
        "reject GG006 parse_error -"
    );
    ctx.record(&w.analyzer.analyze("DISCARD ALL"));
    assert_eq!(ctx.prepared_len(), 0);

    // Deep nesting and huge OR lists never fall through to forwarding.
    let mut nested = String::from("SELECT * FROM users WHERE region = 'eu'");
    for _ in 0..25 {
        nested = format!("SELECT * FROM ({nested}) s");
    }
    let d = w.decide(&nested, None, &[]);
    assert_ne!(show(&d), "global", "{nested}");
    for n in [500, 1000, 5000] {
        let mut sql = String::from("DELETE FROM users WHERE region = 'eu' AND id = 0");
        for i in 0..n {
            sql.push_str(&format!(" OR id = {i}"));
        }
        let got = show(&w.decide(&sql, None, &[]));
        assert!(got.starts_with("reject"), "{n} ORs: {got}");
    }
    // The same in a long AND list confined to one region stays routed.
    let mut sql = String::from("SELECT * FROM users WHERE region = 'eu'");
    for i in 0..500 {
        sql.push_str(&format!(" AND id <> {i}"));
    }
    assert_eq!(show(&w.decide(&sql, None, &[])), "route eu");

    // A join rejection names the alias and the predicate that fixes it.
    let d = w.decide(
        "SELECT * FROM users u JOIN documents d ON d.owner = u.id WHERE u.region = 'eu'",
        None,
        &[],
    );
    let Outcome::Reject(r) = &d.outcome else {
        panic!("{}", show(&d))
    };
    assert!(r.message.contains("d.region = u.region"), "{}", r.message);
}

/// A prepared statement keeps the string rules it was prepared under.
#[test]
fn execute_reads_the_prepared_text_as_it_was_prepared() {
    use geogate::analyze::SqlContext;
    let w = World::new();
    let settings = Settings::from_config(&w.cfg, None);
    let mut ctx = SqlContext::default();
    ctx.record(&w.analyzer.analyze("SET standard_conforming_strings = off"));
    let prep = "PREPARE x AS SELECT * FROM users WHERE name = 'a\\' AND region = $$eu$$ AND name = ' OR true --'";
    ctx.record(&w.analyzer.analyze_in(prep, &ctx));
    ctx.record(&w.analyzer.analyze("SET standard_conforming_strings = on"));
    let a = w.analyzer.analyze_in("EXECUTE x", &ctx);
    let d = decide(&a, &Params::NONE, &w.tenants, &settings);
    assert_eq!(show(&d), "reject GG001 no_region users");
}

/// A text whose parameter numbers leave none for the region is refused,
/// never printed with an invalid `$n` (found by the fuzzer).
#[test]
fn huge_parameter_numbers_never_overflow_the_rewrite() {
    let w = World::new();
    let d = w.decide(
        "SELECT * FROM users WHERE tenant_id = 2; SELECT $5555555555",
        None,
        &[],
    );
    assert!(show(&d).starts_with("reject"), "{}", show(&d));
}
