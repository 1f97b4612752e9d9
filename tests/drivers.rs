//! The driver matrix (issue 9): mainstream PostgreSQL drivers, unchanged,
//! through this build's `geogate` binary against three real PostgreSQL
//! regions (eu, us, apac) with routing on.
//!
//! Each driver's program (tests/drivers/) runs every scenario it can express
//! on connections of its own and prints one JSON line per scenario; this file
//! checks each value against the fixture, and checks on every cluster
//! directly where written rows landed. One test per driver; a failing test
//! names every failing scenario, so one run shows the whole matrix. The
//! scenarios that put two regions in one batch run again under
//! `on_cross_region_txn = "reject"`. tokio-postgres, the suite's own client,
//! is driven from Rust directly. The scenarios and the protocol between this
//! file and the programs: tests/drivers/README.md.
//!
//! The drivers come from Debian, PyPI and npm: `tests/drivers/setup.sh`
//! installs them (into `$GEOGATE_DRIVERS_CACHE`, default
//! `~/.cache/geogate/drivers`). A missing toolchain fails the test with that
//! instruction; it never skips.
//!
//! The regional databases have no foreign tables: a row sent to the wrong
//! region stays visible there, and a statement run on another region's
//! gateway sees only the rows that gateway holds.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Binary, Geo};
use serde_json::{Value, json};

const REGIONS: [&str; 3] = ["eu", "us", "apac"];

/// Tenants whose users the read scenarios list: (region, id, users).
/// Their rows never change, so every read has one right answer.
const READERS: [(&str, &str, usize); 3] = [
    ("eu", "11111111-1111-1111-1111-111111111111", 3),
    ("us", "22222222-2222-2222-2222-222222222222", 4),
    ("apac", "33333333-3333-3333-3333-333333333333", 5),
];

/// Tenants the write scenarios insert for, without users at first.
const WRITERS: [(&str, &str); 3] = [
    ("eu", "44444444-4444-4444-4444-444444444444"),
    ("us", "55555555-5555-5555-5555-555555555555"),
    ("apac", "66666666-6666-6666-6666-666666666666"),
];

/// How long one scenario may take before its program reports it as hung.
/// Not a performance bound: a scenario takes well under a second when it works.
const SCENARIO_TIMEOUT_SECS: u64 = 15;

/// The seed schema on one regional gateway. No CHECK on region: a row that
/// geogate sent to the wrong region must be visible to the tests.
const SCHEMA: &str = "
CREATE TYPE region AS ENUM ('eu', 'us', 'apac');
CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO plans VALUES (1, 'free'), (2, 'team');
CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL, region region NOT NULL, plan_id int);
CREATE TABLE users (id serial PRIMARY KEY, tenant_id uuid NOT NULL, email text NOT NULL, region region NOT NULL);
CREATE TABLE tenant_directory (id uuid PRIMARY KEY, region region NOT NULL);
GRANT ALL ON ALL TABLES IN SCHEMA public TO geogate;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO geogate;
";

// ---------------------------------------------------------------------------
// The three regions and the fixture

/// Three regional databases (one per shared cluster) with the seed schema,
/// each holding its own region's rows, and the directory on eu.
fn seeded(prefix: &str) -> Geo {
    let geo = Geo::new(prefix, |region| {
        let mut sql = SCHEMA.to_string();
        for (r, id, users) in READERS {
            if r == region {
                let _ = write!(
                    sql,
                    "INSERT INTO tenants VALUES ('{id}', 'reader {r}', '{r}', 1);
                     INSERT INTO users (tenant_id, email, region)
                       SELECT '{id}', 'u' || g || '@{r}', '{r}' FROM generate_series(1, {users}) g;"
                );
            }
        }
        for (r, id) in WRITERS {
            if r == region {
                let _ = write!(
                    sql,
                    "INSERT INTO tenants VALUES ('{id}', 'writer {r}', '{r}', 1);"
                );
            }
        }
        sql
    });
    // The directory geogate loads: on the local (eu) gateway only.
    geo.directory(
        READERS
            .iter()
            .map(|(r, id, _)| (*id, *r))
            .chain(WRITERS.iter().map(|(r, id)| (*id, *r))),
    );
    geo
}

/// Where rows with this email are, looked up on every cluster directly:
/// (cluster region, the row's region column), one entry per row.
fn placements(geo: &Geo, email: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for cluster in geo.regions() {
        let rows = geo.direct(
            cluster,
            &format!("SELECT region FROM users WHERE email = '{email}'"),
        );
        out.extend(
            rows.lines()
                .filter(|l| !l.is_empty())
                .map(|l| (cluster, l.to_string())),
        );
    }
    out
}

/// geogate local to eu over [`seeded`] regions.
fn config(geo: &Geo, policy: Policy) -> String {
    let gw = |r: &str| geo.gateway(r);
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
local_region = "eu"
on_cross_region_txn = "{policy}"

[regions.eu]
gateway = "{eu}"
[regions.us]
gateway = "{us}"
[regions.apac]
gateway = "{apac}"

[tenants]
query = "SELECT id::text, region::text FROM tenant_directory"
lookup_query = "SELECT region::text FROM tenant_directory WHERE id = $1::uuid"
refresh = "1h"

[tables.tenants]
partition_column = "region"
tenant_column = "id"
on_missing_region = "rewrite"
[tables.users]
partition_column = "region"
tenant_column = "tenant_id"
on_missing_region = "rewrite"
[tables.plans]
locality = "global"

[[users]]
name = "app"
password = "app-secret"
"#,
        eu = gw("eu"),
        us = gw("us"),
        apac = gw("apac"),
        policy = policy.name(),
    )
}

/// geogate's `on_cross_region_txn`: each driver runs every scenario under the
/// default (`allow`), then its cross-region batches again under `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Allow,
    Reject,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Allow => "allow",
            Policy::Reject => "reject",
        }
    }
}

/// The scenarios that run statements for two regions in one batch or
/// implicit transaction: under `reject` each must be refused whole with GG005.
const CROSS_REGION: [&str; 3] = [
    "pipeline_three_regions",
    "batch_two_regions",
    "multi_statement_two_regions",
];

/// The emails of a reader tenant's users, as the fixture made them.
fn reader_emails(region: &str) -> Vec<String> {
    let (_, _, n) = READERS.iter().find(|(r, _, _)| *r == region).unwrap();
    let mut v: Vec<String> = (1..=*n).map(|g| format!("u{g}@{region}")).collect();
    v.sort();
    v
}

fn reader(region: &str) -> &'static str {
    READERS.iter().find(|(r, _, _)| *r == region).unwrap().1
}

fn writer(region: &str) -> &'static str {
    WRITERS.iter().find(|(r, _)| *r == region).unwrap().1
}

fn tail(s: &str, n: usize) -> String {
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// A scratch directory of this process for one driver, removed on Drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("geogate-drivers-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The driver toolchains

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// Where setup.sh installs the venv and node_modules (the same rule as there).
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GEOGATE_DRIVERS_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME is set");
    base.join("geogate/drivers")
}

/// Fails (never skips) when a toolchain is missing or older than the
/// manifests in tests/drivers/.
fn require(what: &str, ok: bool) {
    assert!(
        ok,
        "driver matrix: {what} is missing or out of date; run tests/drivers/setup.sh \
         (as root; it installs from Debian, PyPI and npm) and run the tests again"
    );
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

fn runs(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn python() -> PathBuf {
    let venv = cache_dir().join("venv");
    let py = venv.join("bin/python");
    require(
        "the Python venv with psycopg and asyncpg",
        same_file(
            &drivers_dir().join("requirements.txt"),
            &venv.join(".requirements.txt"),
        ) && runs(Command::new(&py).args(["-c", "import psycopg, asyncpg"])),
    );
    py
}

fn node_modules() -> PathBuf {
    let node = cache_dir().join("node");
    require(
        "Node.js with pg and postgres (npm ci)",
        same_file(
            &drivers_dir().join("package-lock.json"),
            &node.join("package-lock.json"),
        ) && node.join("node_modules/pg").is_dir()
            && node.join("node_modules/postgres").is_dir()
            && runs(Command::new("node").arg("--version")),
    );
    node.join("node_modules")
}

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// Compiles JdbcMatrix.java into `dir`; the class path to run it with.
fn jdbc_classpath(dir: &Path) -> String {
    require(
        "a JDK (javac) and pgJDBC (libpostgresql-jdbc-java)",
        Path::new(JDBC_JAR).exists() && runs(Command::new("javac").arg("-version")),
    );
    let out = Command::new("javac")
        .args(["-d"])
        .arg(dir)
        .args(["-cp", JDBC_JAR])
        .arg(drivers_dir().join("JdbcMatrix.java"))
        .output()
        .expect("run javac");
    assert!(
        out.status.success(),
        "javac JdbcMatrix.java: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}:{JDBC_JAR}", dir.display())
}

// ---------------------------------------------------------------------------
// Running a driver program

/// What a driver program printed for one scenario.
#[derive(Debug)]
enum Outcome {
    Result(Value),
    /// `at`: where the program was (the end of its stack trace), if it said.
    Error {
        code: String,
        message: String,
        at: String,
    },
    Timeout,
}

/// The argument every driver program gets.
fn program_arg(port: u16, db: &str, scenarios: &[&str]) -> String {
    let map = |xs: Vec<(&str, &str)>| -> Value {
        xs.into_iter()
            .map(|(r, id)| (r.to_string(), Value::from(id)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "host": "127.0.0.1",
        "port": port,
        "user": "app",
        "password": "app-secret",
        "db": db,
        "timeout": SCENARIO_TIMEOUT_SECS,
        "scenarios": scenarios,
        "readers": map(READERS.iter().map(|(r, id, _)| (*r, *id)).collect()),
        "writers": map(WRITERS.to_vec()),
    })
    .to_string()
}

/// Runs a driver program to its end and reads its scenario lines. Each
/// scenario has its own timeout in the program; this bound only catches a
/// program that hangs outside any scenario.
fn run_program(
    mut cmd: Command,
    scenarios: usize,
    dir: &Path,
) -> (BTreeMap<String, Outcome>, String) {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let limit = Duration::from_secs(60 + scenarios as u64 * SCENARIO_TIMEOUT_SECS);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break format!("killed: still running after {}s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let mut outcomes = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("driver printed bad JSON ({e}): {line}"));
        let name = v["scenario"].as_str().expect("scenario name").to_string();
        let outcome = if let Some(r) = v.get("result") {
            Outcome::Result(r.clone())
        } else if let Some(e) = v.get("error") {
            Outcome::Error {
                code: e["code"].as_str().unwrap_or("?").to_string(),
                message: e["message"].as_str().unwrap_or("").to_string(),
                at: e["trace"]
                    .as_str()
                    .map(|t| tail(t, 300))
                    .unwrap_or_default(),
            }
        } else {
            Outcome::Timeout
        };
        outcomes.insert(name, outcome);
    }
    (
        outcomes,
        format!("exit {status}; stderr: {}", tail(&stderr, 1500)),
    )
}

// ---------------------------------------------------------------------------
// The checks: one per scenario, shared by every driver

/// The scenarios and what each checks (the driver programs name them the same).
fn check(scenario: &str, v: &Value, geo: &Geo) -> Result<(), String> {
    match scenario {
        // Reads of three tenants of three regions on one connection return
        // exactly each tenant's rows.
        "tenant_reads" => {
            for r in REGIONS {
                expect_emails(&v[r], r, &format!("tenant of {r}"))?;
            }
            Ok(())
        }
        // `region = $1`: routed by the parameter's value.
        "explicit_region" => {
            for r in REGIONS {
                let want = reader_emails(r).len() as u64;
                if v[r].as_u64() != Some(want) {
                    return Err(format!("{r}: {} rows, want {want}", v[r]));
                }
            }
            Ok(())
        }
        "gg001_then_works" => {
            expect_code(v, "GG001")?;
            expect_emails(&v["after"], "eu", "the read after it")
        }
        "server_error_then_works" => {
            expect_code(v, "22012")?;
            expect_emails(&v["after"], "apac", "the read after it")
        }
        // One statement, prepared once, run alternately in every region.
        "prepared_alternating" | "prepare_threshold_1" => {
            let runs = v.as_array().ok_or(format!("not a list: {v}"))?;
            if runs.len() < 6 {
                return Err(format!("only {} runs", runs.len()));
            }
            for (i, run) in runs.iter().enumerate() {
                let r = run[0]
                    .as_str()
                    .filter(|r| REGIONS.contains(r))
                    .ok_or(format!("run {}: no region in {run}", i + 1))?;
                let want = reader_emails(r).len() as u64;
                if run[1].as_u64() != Some(want) {
                    return Err(format!("run {} ({r}): {} rows, want {want}", i + 1, run[1]));
                }
                if i > 0 && runs[i - 1][0] == run[0] {
                    return Err(format!("runs {i} and {} in one region", i + 1));
                }
            }
            Ok(())
        }
        // Concurrent queries, each with its own Sync: each its own region.
        "concurrent_three_regions" => {
            if !v["code"].is_null() {
                return Err(format!("failed with {}", v["code"]));
            }
            for r in REGIONS {
                expect_emails(&v["results"][r], r, &format!("tenant of {r}"))?;
            }
            expect_emails(&v["after"], "eu", "the read after them")
        }
        // One batch (no Sync in between), pinned to its first statement's
        // region (us). A later statement for another region runs on the
        // pinned gateway, which holds none of that tenant's rows here, or is
        // refused: either way no row of another tenant may come back, and the
        // batch must not hang.
        "pipeline_three_regions" => {
            if !v["code"].is_null() && !is_refusal(&v["code"]) {
                return Err(format!("failed with {}, not a geogate refusal", v["code"]));
            }
            let results = &v["results"];
            // The first statement's answer, when there is one, is exact.
            if v["code"].is_null() || !results["us"].is_null() {
                expect_emails(&results["us"], "us", "the first statement (tenant of us)")?;
            }
            for r in ["eu", "apac"] {
                if results[r].is_null() {
                    continue;
                }
                let got = emails(&results[r]).ok_or(format!("{r}: {}", results[r]))?;
                let all = reader_emails(r);
                if let Some(x) = got.iter().find(|e| !all.contains(e)) {
                    return Err(format!("tenant of {r} got another tenant's row {x}"));
                }
            }
            expect_emails(&v["after"], "eu", "the read after it")
        }
        // No region in the statement: the row lands in its tenant's region only.
        "insert_without_region" => expect_landed(geo, "insert@us", &[("us", "us")]),
        "commit_rollback" => {
            if v["seen_in_txn"].as_u64() != Some(1) {
                return Err(format!(
                    "the transaction saw {} of its own rows, want 1",
                    v["seen_in_txn"]
                ));
            }
            expect_emails(&v["after"], "eu", "the read after it")?;
            expect_landed(geo, "commit@us", &[("us", "us")])?;
            expect_landed(geo, "rollback@apac", &[])
        }
        // Rows for two regions (us first) in one batch or transaction:
        // applied whole on the gateway it is pinned to, each row carrying its
        // own region; or refused with nothing applied anywhere.
        "batch_two_regions" => {
            let rows = [("batch-1@us", "us"), ("batch-2@eu", "eu")];
            all_or_nothing(v, geo, &rows, Some("us"))
        }
        // The same as one simple Query of two statements, which PostgreSQL
        // runs as one implicit transaction. The contract pins batches and
        // transactions, not this case, to the first statement's region: any
        // one gateway may run it whole.
        "multi_statement_two_regions" => {
            let rows = [("multi-1@us", "us"), ("multi-2@eu", "eu")];
            all_or_nothing(v, geo, &rows, None)
        }
        // COPY into a regional table whose column list holds the partition
        // column is decided global (docs/analysis.md): the rows carry their
        // region, and the gateway that runs it (the local one) places each
        // in its partition. In this test's topology, one database per
        // region, they stay on the gateway that ran the COPY: whole, each
        // row with its own region, or refused with nothing applied.
        "copy_in" => {
            let rows = [("copy-1@us", "us"), ("copy-2@us", "us")];
            all_or_nothing(v, geo, &rows, None)
        }
        other => Err(format!("no check for scenario {other}")),
    }
}

fn emails(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|e| e.as_str().map(String::from))
        .collect()
}

fn expect_emails(v: &Value, region: &str, what: &str) -> Result<(), String> {
    if let Some(e) = v.get("error") {
        return Err(format!("{what} failed: {}: {}", e["code"], e["message"]));
    }
    let mut got = emails(v).ok_or(format!("{what}: {v}"))?;
    got.sort();
    let want = reader_emails(region);
    if got != want {
        return Err(format!("{what}: got {got:?}, want {want:?}"));
    }
    Ok(())
}

fn expect_code(v: &Value, code: &str) -> Result<(), String> {
    if v["code"].as_str() != Some(code) {
        return Err(format!("error code {}, want {code}", v["code"]));
    }
    Ok(())
}

/// A geogate refusal: its own SQLSTATE class.
fn is_refusal(code: &Value) -> bool {
    code.as_str().is_some_and(|c| c.starts_with("GG"))
}

/// Rows with `email` are exactly at `want`: (cluster, region column) pairs.
fn expect_landed(geo: &Geo, email: &str, want: &[(&str, &str)]) -> Result<(), String> {
    let got = placements(geo, email);
    let want: Vec<(&str, String)> = want.iter().map(|(c, r)| (*c, r.to_string())).collect();
    if got != want {
        return Err(format!(
            "{email}: rows at {got:?} (cluster, region), want {want:?}"
        ));
    }
    Ok(())
}

/// Rows written by one statement, batch or transaction: if the driver saw
/// success, each row exactly once, carrying its own region, all on one
/// cluster (`pinned` if given); if it saw an error, a geogate refusal and no
/// row anywhere.
fn all_or_nothing(
    v: &Value,
    geo: &Geo,
    rows: &[(&str, &str)],
    pinned: Option<&str>,
) -> Result<(), String> {
    if v["code"].is_null() {
        let pinned = match pinned {
            Some(p) => p,
            None => placements(geo, rows[0].0)
                .first()
                .map(|(cluster, _)| *cluster)
                .ok_or(format!("{} is nowhere", rows[0].0))?,
        };
        for (email, region) in rows {
            expect_landed(geo, email, &[(pinned, region)])?;
        }
    } else {
        let landed: Vec<_> = rows
            .iter()
            .map(|(e, _)| (*e, placements(geo, e)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        if !landed.is_empty() {
            return Err(format!(
                "the client got {} yet rows were applied: {landed:?}",
                v["code"]
            ));
        }
        if !is_refusal(&v["code"]) {
            return Err(format!("failed with {}, not a geogate refusal", v["code"]));
        }
    }
    expect_emails(&v["after"], "eu", "the read after it")
}

/// For a write scenario that raised or hung where the driver should have
/// answered: the rows it applied anyway (a half-applied batch is the worst
/// failure, so it is named).
fn applied_anyway(scenario: &str, geo: &Geo) -> String {
    let emails: &[&str] = match scenario {
        "insert_without_region" => &["insert@us"],
        "commit_rollback" => &["commit@us", "rollback@apac"],
        "batch_two_regions" => &["batch-1@us", "batch-2@eu"],
        "multi_statement_two_regions" => &["multi-1@us", "multi-2@eu"],
        "copy_in" => &["copy-1@us", "copy-2@us"],
        _ => return String::new(),
    };
    let landed: Vec<_> = emails
        .iter()
        .map(|e| (*e, placements(geo, e)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if landed.is_empty() {
        String::new()
    } else {
        format!("; rows applied all the same: {landed:?}")
    }
}

/// Checks every scenario a driver had to run; one line per failure.
fn verdict(
    driver: &str,
    policy: Policy,
    scenarios: &[&str],
    outcomes: &BTreeMap<String, Outcome>,
    geo: &Geo,
) -> Vec<String> {
    let mut failures = Vec::new();
    let label = |s: &str| match policy {
        Policy::Allow => s.to_string(),
        Policy::Reject => format!("{s} [reject]"),
    };
    for s in scenarios {
        let res = match outcomes.get(*s) {
            None => Err("no output (the program stopped before it)".to_string()),
            Some(Outcome::Timeout) => Err(format!(
                "no answer within {SCENARIO_TIMEOUT_SECS}s{}",
                applied_anyway(s, geo)
            )),
            Some(Outcome::Error { code, message, at }) => Err(format!(
                "{code}: {message}{}{}",
                applied_anyway(s, geo),
                if at.is_empty() {
                    String::new()
                } else {
                    format!("\n    at: {at}")
                }
            )),
            Some(Outcome::Result(v)) => match policy {
                Policy::Allow => check(s, v, geo),
                Policy::Reject => check_refused(s, v, geo),
            }
            .map_err(|e| {
                // What the driver saw, for the one reading the failure.
                format!("{e}\n    driver saw: {}", tail(&v.to_string(), 600))
            }),
        };
        // The whole row of the matrix, passes included (visible with --nocapture).
        match &res {
            Ok(()) => println!("{driver} × {}: pass", label(s)),
            Err(e) => println!("{driver} × {}: FAIL {e}", label(s)),
        }
        if let Err(e) = res {
            failures.push(format!("  {}: {e}", label(s)));
        }
    }
    for s in outcomes.keys() {
        if !scenarios.contains(&s.as_str()) {
            failures.push(format!("  {}: printed, but not asked for", label(s)));
        }
    }
    failures
}

/// Under `on_cross_region_txn = "reject"`: refused with GG005, no row of it
/// anywhere, and the connection still works.
fn check_refused(scenario: &str, v: &Value, geo: &Geo) -> Result<(), String> {
    let landed = applied_anyway(scenario, geo);
    if !landed.is_empty() {
        return Err(format!("the client got {}{landed}", v["code"]));
    }
    expect_code(v, "GG005")?;
    expect_emails(&v["after"], "eu", "the read after it")
}

/// Runs a driver's scenarios against a fresh geogate and fresh regional
/// databases, under each policy, and fails once naming every failing
/// scenario. `run` gets a scratch directory, geogate's port, the database
/// and the scenarios to run, and returns what the driver printed and a
/// description of the run for failure messages.
fn matrix(
    driver: &str,
    scenarios: &[&str],
    mut run: impl FnMut(&Path, u16, &str, &[&str]) -> (BTreeMap<String, Outcome>, String),
) {
    let scratch = Scratch::new(driver);
    let db_prefix: String = driver
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let (mut failures, mut contexts) = (Vec::new(), Vec::new());
    for policy in [Policy::Allow, Policy::Reject] {
        let wanted: Vec<&str> = match policy {
            Policy::Allow => scenarios.to_vec(),
            Policy::Reject => scenarios
                .iter()
                .copied()
                .filter(|s| CROSS_REGION.contains(s))
                .collect(),
        };
        if wanted.is_empty() {
            continue;
        }
        let dir = scratch.0.join(policy.name());
        std::fs::create_dir_all(&dir).unwrap();
        let geo = seeded(&format!("drv_{db_prefix}_{}", policy.name()));
        let gg = Binary::start(&dir, &config(&geo, policy));
        let (outcomes, context) = run(&dir, gg.port, &geo.db, &wanted);
        let failed = verdict(driver, policy, &wanted, &outcomes, &geo);
        if !failed.is_empty() {
            contexts.push(format!(
                "{}: {context}\ngeogate log: {}",
                policy.name(),
                gg.log_tail()
            ));
        }
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{driver}: {} scenarios failed:\n{}\n\n{}",
        failures.len(),
        failures.join("\n"),
        contexts.join("\n\n")
    );
}

/// `matrix` for a driver program run as a subprocess.
fn program(driver: &str, scenarios: &[&str], command: impl Fn(&Path, String) -> Command) {
    matrix(driver, scenarios, |dir, port, db, wanted| {
        let cmd = command(dir, program_arg(port, db, wanted));
        let (outcomes, status) = run_program(cmd, wanted.len(), dir);
        (outcomes, format!("program {status}"))
    });
}

// ---------------------------------------------------------------------------
// The drivers

#[test]
fn psycopg3_runs_every_scenario_through_geogate() {
    let py = python();
    program(
        "psycopg",
        &[
            "tenant_reads",
            "explicit_region",
            "gg001_then_works",
            "server_error_then_works",
            "prepared_alternating",
            "pipeline_three_regions",
            "insert_without_region",
            "commit_rollback",
            "batch_two_regions",
            "copy_in",
        ],
        |_, arg| {
            let mut c = Command::new(&py);
            // -B: no __pycache__ written into the source tree.
            c.arg("-B")
                .arg(drivers_dir().join("psycopg_matrix.py"))
                .arg(arg);
            c
        },
    );
}

#[test]
fn asyncpg_runs_every_scenario_through_geogate() {
    let py = python();
    program(
        "asyncpg",
        &[
            "tenant_reads",
            "explicit_region",
            "gg001_then_works",
            "server_error_then_works",
            "prepared_alternating",
            "insert_without_region",
            "commit_rollback",
            "batch_two_regions",
            "copy_in",
        ],
        |_, arg| {
            let mut c = Command::new(&py);
            // -B: no __pycache__ written into the source tree.
            c.arg("-B")
                .arg(drivers_dir().join("asyncpg_matrix.py"))
                .arg(arg);
            c
        },
    );
}

#[test]
fn node_postgres_runs_every_scenario_through_geogate() {
    let modules = node_modules();
    program(
        "node-postgres",
        &[
            "tenant_reads",
            "explicit_region",
            "gg001_then_works",
            "server_error_then_works",
            "prepared_alternating",
            "insert_without_region",
            "commit_rollback",
            "multi_statement_two_regions",
        ],
        |_, arg| {
            let mut c = Command::new("node");
            c.arg(drivers_dir().join("pg_matrix.js"))
                .arg(arg)
                .env("NODE_PATH", &modules);
            c
        },
    );
}

#[test]
fn postgres_js_runs_every_scenario_through_geogate() {
    let modules = node_modules();
    program(
        "postgres.js",
        &[
            "tenant_reads",
            "explicit_region",
            "gg001_then_works",
            "server_error_then_works",
            "prepared_alternating",
            "concurrent_three_regions",
            "insert_without_region",
            "commit_rollback",
            "batch_two_regions",
            "copy_in",
        ],
        |_, arg| {
            let mut c = Command::new("node");
            c.arg(drivers_dir().join("postgres_matrix.js"))
                .arg(arg)
                .env("NODE_PATH", &modules);
            c
        },
    );
}

#[test]
fn pgjdbc_runs_every_scenario_through_geogate() {
    let classes = Scratch::new("pgjdbc-classes");
    let cp = jdbc_classpath(&classes.0);
    program(
        "pgjdbc",
        &[
            "tenant_reads",
            "explicit_region",
            "gg001_then_works",
            "server_error_then_works",
            "prepared_alternating",
            "prepare_threshold_1",
            "insert_without_region",
            "commit_rollback",
            "batch_two_regions",
            "copy_in",
        ],
        |_, arg| {
            let mut c = Command::new("java");
            c.args(["-cp", &cp, "JdbcMatrix"]).arg(arg);
            c
        },
    );
}

#[test]
fn tokio_postgres_runs_every_scenario_through_geogate() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    matrix(
        "tokio-postgres",
        tokio_driver::SCENARIOS,
        |_, port, db, wanted| {
            let outcomes = rt.block_on(tokio_driver::run(port, db, wanted));
            (outcomes, "tokio-postgres in this process".to_string())
        },
    );
}

/// The same scenarios with tokio-postgres, in Rust: each on a connection of
/// its own, under the same per-scenario timeout, producing the same values.
mod tokio_driver {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::time::Duration;

    use futures_util::SinkExt;
    use serde_json::{Value, json};
    use tokio_postgres::{Client, NoTls};

    use super::{Outcome, SCENARIO_TIMEOUT_SECS, reader, writer};

    /// The non-local regions first, as the other programs do.
    const ORDER: [&str; 3] = ["us", "eu", "apac"];
    const READ: &str = "SELECT email FROM users WHERE tenant_id = $1::uuid ORDER BY email";
    const COUNT: &str = "SELECT count(*) FROM users WHERE tenant_id = $1::uuid";
    const INSERT: &str = "INSERT INTO users (tenant_id, email) VALUES ($1::uuid, $2)";

    pub const SCENARIOS: &[&str] = &[
        "tenant_reads",
        "explicit_region",
        "gg001_then_works",
        "server_error_then_works",
        "prepared_alternating",
        "concurrent_three_regions",
        "insert_without_region",
        "commit_rollback",
        "batch_two_regions",
        "multi_statement_two_regions",
        "copy_in",
    ];

    type R = Result<Value, tokio_postgres::Error>;

    pub async fn run(port: u16, db: &str, wanted: &[&str]) -> BTreeMap<String, Outcome> {
        let mut out = BTreeMap::new();
        for name in wanted {
            let c = match connect(port, db).await {
                Ok(c) => c,
                Err(e) => {
                    out.insert(name.to_string(), error(e));
                    continue;
                }
            };
            let outcome = match *name {
                "tenant_reads" => timed(tenant_reads(c)).await,
                "explicit_region" => timed(explicit_region(c)).await,
                "gg001_then_works" => timed(gg001_then_works(c)).await,
                "server_error_then_works" => timed(server_error_then_works(c)).await,
                "prepared_alternating" => timed(prepared_alternating(c)).await,
                "concurrent_three_regions" => timed(concurrent_three_regions(c)).await,
                "insert_without_region" => timed(insert_without_region(c)).await,
                "commit_rollback" => timed(commit_rollback(c)).await,
                "batch_two_regions" => timed(batch_two_regions(c)).await,
                "multi_statement_two_regions" => timed(multi_statement_two_regions(c)).await,
                "copy_in" => timed(copy_in(c, port, db)).await,
                other => unreachable!("{other}"),
            };
            out.insert(name.to_string(), outcome);
        }
        out
    }

    async fn connect(port: u16, db: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=app password=app-secret dbname={db}"),
            NoTls,
        )
        .await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// A scenario that hangs becomes a timeout; its connection is dropped
    /// with it.
    async fn timed(f: impl Future<Output = R>) -> Outcome {
        match tokio::time::timeout(Duration::from_secs(SCENARIO_TIMEOUT_SECS), f).await {
            Err(_) => Outcome::Timeout,
            Ok(Ok(v)) => Outcome::Result(v),
            Ok(Err(e)) => error(e),
        }
    }

    fn error(e: tokio_postgres::Error) -> Outcome {
        Outcome::Error {
            code: code(&e).unwrap_or_else(|| "client".into()),
            message: e.to_string(),
            at: String::new(),
        }
    }

    /// The SQLSTATE, `None` for an error the server did not send.
    fn code(e: &tokio_postgres::Error) -> Option<String> {
        e.as_db_error().map(|_| crate::common::sqlstate(e))
    }

    /// The SQLSTATE of a statement expected to fail (null if it succeeded).
    fn code_of<T>(r: Result<T, tokio_postgres::Error>) -> Value {
        match r {
            Ok(_) => Value::Null,
            Err(e) => code(&e).unwrap_or_else(|| e.to_string()).into(),
        }
    }

    async fn emails(c: &Client, tenant: &str) -> R {
        let rows = c.query(READ, &[&uuid_text::Uuid(tenant)]).await?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// The reader's emails, or the error the read raised: the read after an
    /// error says whether the connection still works, and what broke if not.
    async fn after(c: &Client, region: &str) -> Value {
        match emails(c, reader(region)).await {
            Ok(v) => v,
            Err(e) => json!({"error": {"code": code(&e), "message": e.to_string()}}),
        }
    }

    async fn tenant_reads(c: Client) -> R {
        let mut out = serde_json::Map::new();
        for r in ORDER {
            out.insert(r.into(), emails(&c, reader(r)).await?);
        }
        Ok(out.into())
    }

    async fn explicit_region(c: Client) -> R {
        let sql = "SELECT count(*) FROM users WHERE region = $1::text::region AND email LIKE 'u%'";
        let mut out = serde_json::Map::new();
        for r in ORDER {
            let n: i64 = c.query_one(sql, &[&r]).await?.get(0);
            out.insert(r.into(), n.into());
        }
        Ok(out.into())
    }

    async fn gg001_then_works(c: Client) -> R {
        let code = code_of(
            c.query("SELECT email FROM users WHERE email = $1", &[&"x"])
                .await,
        );
        Ok(json!({"code": code, "after": after(&c, "eu").await}))
    }

    async fn server_error_then_works(c: Client) -> R {
        let sql = "SELECT count(*) / 0 FROM users WHERE tenant_id = $1::uuid";
        let code = code_of(c.query(sql, &[&uuid_text::Uuid(reader("us"))]).await);
        Ok(json!({"code": code, "after": after(&c, "apac").await}))
    }

    async fn prepared_alternating(c: Client) -> R {
        let stmt = c.prepare(COUNT).await?;
        let mut out = Vec::new();
        for r in ORDER.iter().cycle().take(9) {
            let n: i64 = c
                .query_one(&stmt, &[&uuid_text::Uuid(reader(r))])
                .await?
                .get(0);
            out.push(json!([r, n]));
        }
        Ok(out.into())
    }

    async fn concurrent_three_regions(c: Client) -> R {
        // Three futures polled together: tokio-postgres pipelines their
        // messages on the one connection, each query with its own Sync.
        let (a, b, d) = futures_util::future::join3(
            emails(&c, reader(ORDER[0])),
            emails(&c, reader(ORDER[1])),
            emails(&c, reader(ORDER[2])),
        )
        .await;
        let mut results = serde_json::Map::new();
        for (r, v) in ORDER.iter().zip([a?, b?, d?]) {
            results.insert(r.to_string(), v);
        }
        Ok(json!({"results": results, "code": null, "after": after(&c, "eu").await}))
    }

    async fn insert_without_region(c: Client) -> R {
        let n = c
            .execute(INSERT, &[&uuid_text::Uuid(writer("us")), &"insert@us"])
            .await?;
        Ok(n.into())
    }

    async fn commit_rollback(mut c: Client) -> R {
        let t = c.transaction().await?;
        t.execute(INSERT, &[&uuid_text::Uuid(writer("us")), &"commit@us"])
            .await?;
        let seen: i64 = t
            .query_one(
                "SELECT count(*) FROM users WHERE tenant_id = $1::uuid AND email = 'commit@us'",
                &[&uuid_text::Uuid(writer("us"))],
            )
            .await?
            .get(0);
        t.commit().await?;
        let t = c.transaction().await?;
        t.execute(
            INSERT,
            &[&uuid_text::Uuid(writer("apac")), &"rollback@apac"],
        )
        .await?;
        t.rollback().await?;
        Ok(json!({"seen_in_txn": seen, "after": after(&c, "eu").await}))
    }

    async fn batch_two_regions(mut c: Client) -> R {
        // Two inserts in flight at once in one transaction: pipelined.
        let (us, eu) = (uuid_text::Uuid(writer("us")), uuid_text::Uuid(writer("eu")));
        let res = {
            let t = c.transaction().await?;
            let (a, b) = futures_util::future::join(
                t.execute(INSERT, &[&us, &"batch-1@us"]),
                t.execute(INSERT, &[&eu, &"batch-2@eu"]),
            )
            .await;
            // On an error the transaction is dropped: a ROLLBACK.
            match a.and(b) {
                Ok(_) => t.commit().await,
                Err(e) => Err(e),
            }
        };
        Ok(json!({"code": code_of(res), "after": after(&c, "eu").await}))
    }

    async fn multi_statement_two_regions(c: Client) -> R {
        // One simple Query of two statements: one implicit transaction.
        let sql = format!(
            "INSERT INTO users (tenant_id, email) VALUES ('{}', 'multi-1@us');
             INSERT INTO users (tenant_id, email) VALUES ('{}', 'multi-2@eu')",
            writer("us"),
            writer("eu")
        );
        let code = code_of(c.batch_execute(&sql).await);
        Ok(json!({"code": code, "after": after(&c, "eu").await}))
    }

    async fn copy_in(c: Client, port: u16, db: &str) -> R {
        let w = writer("us");
        let rows = format!("{w}\tcopy-1@us\tus\n{w}\tcopy-2@us\tus\n");
        let copy = async {
            let sink = c
                .copy_in::<_, bytes::Bytes>("COPY users (tenant_id, email, region) FROM STDIN")
                .await?;
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::from(rows)).await?;
            sink.finish().await
        };
        let code = code_of(copy.await);
        if code.is_null() {
            return Ok(json!({"code": code, "after": after(&c, "eu").await}));
        }
        // tokio-postgres cannot go on after a COPY that fails at Bind or
        // Execute, against PostgreSQL itself too: it then sends CopyFail and
        // Sync, and takes the extra ReadyForQuery for the next request's
        // answer ("unexpected message from server"). So the read after a
        // refused COPY uses a new connection.
        let c = connect(port, db).await?;
        Ok(json!({"code": code, "after": after(&c, "eu").await}))
    }

    /// Sends a uuid parameter as its 16 bytes, so the test needs no uuid crate.
    mod uuid_text {
        use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

        #[derive(Debug)]
        pub struct Uuid<'a>(pub &'a str);

        impl ToSql for Uuid<'_> {
            fn to_sql(
                &self,
                _: &Type,
                out: &mut bytes::BytesMut,
            ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                let hex: String = self.0.chars().filter(|c| *c != '-').collect();
                for i in 0..16 {
                    out.extend_from_slice(&[u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?]);
                }
                Ok(IsNull::No)
            }
            fn accepts(ty: &Type) -> bool {
                *ty == Type::UUID
            }
            to_sql_checked!();
        }
    }
}
