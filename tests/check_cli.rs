//! `geogate check` / `geogate explain` run as the built binary: the CLI
//! contract of docs/design.md (field names, exit codes, psql-style splitting).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/seed.toml");

fn tmp(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geogate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn geogate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_geogate"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run geogate");
    if let Some(s) = stdin {
        // The child may exit before reading (bad arguments): a broken
        // pipe here is not the test's concern, its exit status is.
        let _ = child.stdin.take().unwrap().write_all(s.as_bytes());
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn jsonl(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const MIGRATION: &str = r#"-- a migration with everything psql accepts
\set ON_ERROR_STOP on
BEGIN;
CREATE FUNCTION touch() RETURNS trigger AS $body$
BEGIN
  NEW.updated_at := now(); -- a ; inside a dollar-quoted body
  RETURN NEW;
END;
$body$ LANGUAGE plpgsql;
/* block comment; with a semicolon */
SELECT * FROM users WHERE tenant_id = 7;
SELECT 'a;b' AS s, "odd;name" FROM plans;
SELECT * FROM users WHERE region IN ('eu', 'us');
SELECT * FROM notifications;
UPDATE users SET region = 'us' WHERE region = 'eu' AND id = 3;
INSERT INTO users (id, tenant_id) VALUES (1, 8);
SELEC broken;
COMMIT;
"#;

const TENANTS: &str = "tenant_id,region\n7,eu\n8,apac\n";

#[test]
fn jsonl_has_contract_fields_and_statements_split_as_psql_does() {
    let f = tmp("m.sql", MIGRATION);
    let t = tmp("t.csv", TENANTS);
    let out = geogate(
        &[
            "check",
            "--config",
            SEED,
            "--tenants",
            t.to_str().unwrap(),
            "--format",
            "jsonl",
            f.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = jsonl(&out);
    let decisions: Vec<&str> = rows
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        [
            "global", "global", "rewrite", "global", "scatter", "reject", "route", "rewrite",
            "global", "global"
        ]
    );
    for r in &rows {
        for key in [
            "sql",
            "decision",
            "regions",
            "tables",
            "rewritten",
            "reason",
        ] {
            assert!(r.get(key).is_some(), "missing {key} in {r}");
        }
    }
    assert_eq!(rows[2]["regions"], serde_json::json!(["eu"]));
    assert_eq!(
        rows[2]["rewritten"],
        "SELECT * FROM users WHERE (tenant_id = 7) AND users.region = 'eu'"
    );
    assert_eq!(rows[2]["line"], 11);
    assert_eq!(rows[4]["regions"], serde_json::json!(["eu", "us"]));
    assert_eq!(rows[4]["reason"], "multi_region");
    assert_eq!(rows[5]["reason"], "no_region");
    assert_eq!(rows[5]["sqlstate"], "GG001");
    assert_eq!(rows[5]["regions"], serde_json::json!([]));
    assert_eq!(rows[6]["moves"][0]["to"], "us");
    assert_eq!(
        rows[7]["rewritten"],
        "INSERT INTO users (id, tenant_id, region) VALUES (1, 8, 'apac')"
    );
    // `SELEC broken` names no regional table: global, as in the proxy
    // (which does not parse such statements at all).
    assert_eq!(rows[8]["decision"], "global");
    assert!(rows[3]["sql"].as_str().unwrap().starts_with("SELECT 'a;b'"));
    assert!(rows[1]["sql"].as_str().unwrap().contains("RETURN NEW;"));
}

#[test]
fn fail_on_sets_exit_status_only_for_listed_decisions() {
    let f = tmp(
        "f.sql",
        "SELECT * FROM users WHERE region IN ('eu','us');\nSELECT 1;\n",
    );
    let path = f.to_str().unwrap();
    let ok = geogate(
        &["check", "--config", SEED, "--fail-on", "reject", path],
        None,
    );
    assert_eq!(ok.status.code(), Some(0));
    let fail = geogate(
        &[
            "check",
            "--config",
            SEED,
            "--fail-on",
            "reject,scatter",
            path,
        ],
        None,
    );
    assert_eq!(fail.status.code(), Some(1));
    let bad = geogate(
        &["check", "--config", SEED, "--fail-on", "explode", path],
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--fail-on explode"));
}

#[test]
fn stdin_text_output_ends_with_a_summary_by_decision() {
    let out = geogate(
        &["check", "--config", SEED, "-"],
        Some("SELECT * FROM users WHERE region = 'eu'; SELECT * FROM users; SELECT 1"),
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ROUTE → eu"), "{text}");
    assert!(
        text.contains("add \"region = …\" or filter by tenant_id"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("<stdin>: 3 statements: 1 global, 1 route, 1 reject"),
        "{text}"
    );
}

#[test]
fn bad_input_gives_clear_errors_and_exit_status_2() {
    let missing = geogate(&["check", "--config", SEED, "/nonexistent/q.sql"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/q.sql"));

    let badcfg = tmp("bad.toml", "[proxy]\nlisten = 3\n");
    let out = geogate(
        &["check", "--config", badcfg.to_str().unwrap(), "-"],
        Some("SELECT 1"),
    );
    assert_eq!(out.status.code(), Some(2));

    let csv = tmp("bad.csv", "tenant_id,region\n1\n");
    let out = geogate(
        &[
            "check",
            "--config",
            SEED,
            "--tenants",
            csv.to_str().unwrap(),
            "-",
        ],
        Some("SELECT 1"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    let fmt = geogate(
        &["check", "--config", SEED, "--format", "xml", "-"],
        Some("SELECT 1"),
    );
    assert_eq!(fmt.status.code(), Some(2));

    let binary = tmp("bin.sql", "");
    std::fs::write(&binary, [0xffu8, 0xfe, b';']).unwrap();
    let out = geogate(&["check", "--config", SEED, binary.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
}

#[test]
fn garbage_sql_is_reported_per_statement_not_fatal() {
    let out = geogate(
        &["check", "--config", SEED, "--format", "jsonl", "-"],
        Some("'unterminated; SELECT ((((; $$ never closed"),
    );
    assert_eq!(out.status.code(), Some(0));
    let rows = jsonl(&out);
    assert!(!rows.is_empty());
}

#[test]
fn explain_shows_decision_references_and_both_rewrite_forms() {
    let t = tmp("e.csv", TENANTS);
    let out = geogate(
        &[
            "explain",
            "--config",
            SEED,
            "--tenants",
            t.to_str().unwrap(),
            "SELECT * FROM users u WHERE u.tenant_id = 8 AND u.id = $1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decision:    rewrite"), "{text}");
    assert!(text.contains("regions:     apac"), "{text}");
    assert!(text.contains("reference u (users"), "{text}");
    assert!(
        text.contains("rewritten:   SELECT * FROM users u WHERE (u.tenant_id = 8 AND u.id = $1) AND u.region = 'apac'"),
        "{text}"
    );
    assert!(
        text.contains("AND u.region = $2   (region bound as $2)"),
        "{text}"
    );
}

/// `check` splits exactly as the proxy does: a line starting with a
/// backslash inside a string literal is part of the statement (a psql
/// meta-command only between statements).
#[test]
fn backslash_lines_inside_literals_are_statement_text_as_the_proxy_sees_it() {
    let sql = "\\set x 1\nSELECT * FROM users WHERE region = 'eu' AND name = '\n\\' OR true OR name = '\n';\n\\echo done\nSELECT 1;\n";
    let f = tmp("bs.sql", sql);
    let out = geogate(
        &[
            "check",
            "--config",
            SEED,
            "--format",
            "jsonl",
            f.to_str().unwrap(),
        ],
        None,
    );
    let rows = jsonl(&out);
    let decisions: Vec<&str> = rows
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["reject", "global"], "{rows:?}");
    assert_eq!(rows[0]["line"], 2);
    // The proxy's analyzer on the statement's text decides the same.
    let stmt = "SELECT * FROM users WHERE region = 'eu' AND name = '\n\\' OR true OR name = '\n'";
    let out = geogate(&["explain", "--config", SEED, stmt], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reject"), "{text}");
}
