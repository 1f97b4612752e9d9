//! The geo demo (`demo/geo-demo.sh`, the README's first command) run end to
//! end, non-interactively, with this build's `geogate` and `geogate-relay`
//! (issue 6): three PostgreSQL clusters with postgres_fdw partitions over
//! latency relays, an enforce and an observe sidecar. Its output is checked
//! step by step.
//!
//! The one latency check is a ratio: a rewritten query served inside one
//! region against a scatter that crosses 70 ms and 170 ms emulated links. It
//! measures the emulated network, not geogate's speed (benchmarks do that).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Port offsets the demo uses from its `DEMO_PORT_BASE` (gateways, relays,
/// sidecars, metrics listeners).
const OFFSETS: &[u16] = &[
    1, 2, 3, 10, 11, 12, 13, 14, 15, 16, 17, 18, 100, 101, 200, 201,
];

/// Candidate port bases: all below Linux's ephemeral range (32768+), from
/// which the other tests' `free_port()` and the kernel take their ports, and
/// away from the demo's own default (15430), so a demo run by hand and this
/// test do not meet either.
const BASES: &[u16] = &[23430, 23730, 24030, 24330, 24630];

/// The whole demo may take this long before the test gives up.
const TIMEOUT: Duration = Duration::from_secs(240);

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first candidate base whose every port is free right now.
fn free_base() -> u16 {
    *BASES
        .iter()
        .find(|&&b| OFFSETS.iter().all(|&o| port_free(b + o)))
        .expect("no free port range for the demo (23430..25000)")
}

/// Runs the demo and returns its stdout and stderr, or panics with both.
fn run_demo() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = free_base();
    let child = Command::new("bash")
        .arg(root.join("demo/geo-demo.sh"))
        .env("DEMO_NONINTERACTIVE", "1")
        .env("DEMO_PORT_BASE", base.to_string())
        .env("GEOGATE_BIN", env!("CARGO_BIN_EXE_geogate"))
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_geogate-relay"))
        .env_remove("DEMO_DIR")
        .env_remove("DEMO_KEEP")
        .env_remove("DEMO_INFRA_ONLY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start demo/geo-demo.sh");
    let pid = child.id();
    // A watchdog: SIGTERM lets the script's trap stop what it started.
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
            std::thread::sleep(Duration::from_millis(200));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return false;
            }
        }
        let _ = Command::new("kill").arg(pid.to_string()).status();
        true
    });
    let out = child.wait_with_output().expect("wait for the demo");
    let timed_out = watchdog.join().unwrap_or(false);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !timed_out && out.status.success(),
        "demo failed ({:?}, timed out: {timed_out})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// Step lines of the form `   title   12.345 ms   (result: …)`, by title.
fn step_results(out: &str) -> HashMap<String, (f64, String)> {
    let mut steps = HashMap::new();
    for line in out.lines() {
        let Some((head, result)) = line.split_once("ms   (result: ") else {
            continue;
        };
        let mut words = head.trim_end().rsplitn(2, ' ');
        let (Some(ms), Some(title)) = (words.next(), words.next()) else {
            continue;
        };
        if let Ok(ms) = ms.parse::<f64>() {
            let result = result.strip_suffix(')').unwrap_or(result);
            steps.insert(title.trim().to_string(), (ms, result.to_string()));
        }
    }
    steps
}

fn step<'a>(
    steps: &'a HashMap<String, (f64, String)>,
    title: &str,
    out: &str,
) -> &'a (f64, String) {
    steps
        .get(title)
        .unwrap_or_else(|| panic!("demo output has no step {title:?}\n{out}"))
}

#[test]
fn geo_demo_routes_rewrites_scatters_rejects_and_follows_a_moved_tenant() {
    let out = run_demo();
    let steps = step_results(&out);

    for header in [
        "== 0. Today, without geogate",
        "== 1. A partition-aware query",
        "== 2. The same query without the region",
        "== 3. The same query through a sidecar in observe mode",
        "== 4. A query that names neither region nor tenant",
        "== 5. Moving a tenant from eu to us",
        "== Demo done",
    ] {
        assert!(out.contains(header), "missing {header:?}\n{out}");
    }

    // Every tenant has 400 users; each path must find all of them.
    let direct = step(
        &steps,
        "direct to the eu gateway (scans every region)",
        &out,
    );
    let route = step(&steps, "through geogate (route → eu)", &out);
    let rewrite = step(&steps, "through geogate (rewrite → eu)", &out);
    let rewrite_us = step(
        &steps,
        "a us tenant through the eu sidecar (rewrite → us)",
        &out,
    );
    let scatter = step(&steps, "through geogate in observe mode (scatters)", &out);
    for (name, s) in [
        ("direct", direct),
        ("route", route),
        ("rewrite", rewrite),
        ("rewrite_us", rewrite_us),
        ("scatter", scatter),
    ] {
        assert_eq!(s.1, "400", "{name} counted the wrong rows\n{out}");
    }
    assert!(
        out.contains("AND users.region = 'eu'"),
        "explain shows no injected region predicate\n{out}"
    );

    assert!(
        scatter.0 >= 10.0 * rewrite.0,
        "rewrite ({} ms) is not 10x faster than the scatter ({} ms)\n{out}",
        rewrite.0,
        scatter.0
    );

    assert!(
        out.contains("ERROR:  GG001: geogate: users has no predicate on region"),
        "the rejection does not show GG001\n{out}"
    );
    assert!(
        out.contains(r#"geogate_rejections_total{reason="no_region",table="users"} 1"#),
        "the rejection was not counted\n{out}"
    );

    // The moved tenant's rows are found in us, though the cache said eu.
    let moved = step(
        &steps,
        "the moved tenant's users through geogate (found in us)",
        &out,
    );
    assert!(
        moved.1.starts_with("us|"),
        "the moved tenant was not found in us: {:?}\n{out}",
        moved.1
    );
    assert!(
        out.contains(r#"geogate_tenant_cache_lookups_total{result="stale"} 1"#),
        "verify on empty did not count a stale entry\n{out}"
    );
}
