//! The geo demo (`demo/geo-demo.sh`, the README's first command) run end to
//! end, non-interactively, with this build's `geogate` and `geogate-relay`
//! (issue 6): three PostgreSQL clusters with postgres_fdw partitions over
//! latency relays, an enforce and an observe sidecar. Its output is checked
//! step by step.
//!
//! The one latency check is a ratio: a rewritten query served inside one
//! region against a scatter that crosses 70 ms and 170 ms emulated links. It
//! measures the emulated network, not geogate's speed (benchmarks do that).
//!
//! The demo's container variant (`deploy/docker-compose.yml`) builds the
//! image from the Dockerfile; its build steps are replayed here without a
//! Docker engine, on exactly the files the Dockerfile copies.

use std::collections::HashMap;
use std::fs;
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
        "== 6. Moving a tenant under live writes",
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

    // A tenant moved by `geogate move-tenant` under live writes: nothing
    // left in the old region, no write failed, the sidecar heard of it.
    assert!(
        out.contains("tenant moved from eu to us in one transaction"),
        "move-tenant did not report the move\n{out}"
    );
    assert!(
        out.contains("after the move: 0 rows of the tenant in eu (old region)"),
        "rows left in the old region\n{out}"
    );
    assert!(
        out.contains(", 0 write errors"),
        "live writes failed during the move\n{out}"
    );
    assert!(
        out.contains(r#"geogate_tenant_invalidations_total{source="listen"} 1"#),
        "the sidecar did not hear of the move\n{out}"
    );
}

/// One instruction of the Dockerfile's build stage, as the replay needs it.
#[derive(Debug)]
enum Step {
    /// `WORKDIR dir`.
    Workdir(String),
    /// `COPY src… dest` from the build context.
    Copy(Vec<String>, String),
    /// `RUN` with its commands split at `&&`.
    Run(Vec<String>),
}

/// The Dockerfile's instructions (continuation lines joined, comments
/// dropped), each as (keyword, arguments).
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (current.is_empty() && line.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The instructions of the stage named `build` (`FROM … AS build`).
fn build_stage(instructions: &[(String, String)]) -> Vec<Step> {
    let start = instructions
        .iter()
        .position(|(k, a)| k == "FROM" && a.to_lowercase().ends_with(" as build"))
        .expect("the Dockerfile has a stage `FROM … AS build`");
    instructions[start + 1..]
        .iter()
        .take_while(|(k, _)| k != "FROM")
        .filter_map(|(k, a)| match k.as_str() {
            "WORKDIR" => Some(Step::Workdir(a.clone())),
            "COPY" => {
                assert!(!a.starts_with("--"), "COPY flags are not replayed: {a}");
                let mut words: Vec<String> = a.split_whitespace().map(String::from).collect();
                let dest = words.pop().expect("COPY has a destination");
                Some(Step::Copy(words, dest))
            }
            "RUN" => Some(Step::Run(
                a.split("&&").map(|c| c.trim().to_string()).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// Runs the build stage's steps in `ctx` (standing for its WORKDIR) and
/// returns the WORKDIR and the last `--bin` built. `COPY` copies from the
/// repository exactly the paths it names; `RUN`'s file commands (mkdir,
/// echo, touch, rm) run as written; each `cargo build` runs as `cargo check`
/// with the same arguments plus `--offline`: the same manifest, lock file,
/// target and sources, so a file the build needs and the Dockerfile does
/// not copy fails here, without compiling a release binary on every test
/// run. Any other command fails the test: it would not be replayed.
fn replay_build_stage(steps: &[&Step], ctx: &Path, target_dir: &Path) -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut workdir = String::from("/");
    let mut bin = None;
    for step in steps {
        match step {
            Step::Workdir(dir) => workdir = dir.clone(),
            Step::Copy(sources, dest) => {
                let dest = ctx.join(dest.trim_start_matches("./"));
                for src in sources {
                    let from = root.join(src);
                    assert!(from.exists(), "COPY {src}: not in the repository");
                    let to = if from.is_dir() || sources.len() > 1 || dest.is_dir() {
                        fs::create_dir_all(&dest).unwrap();
                        if from.is_dir() {
                            dest.clone()
                        } else {
                            dest.join(from.file_name().unwrap())
                        }
                    } else {
                        dest.clone()
                    };
                    copy_tree(&from, &to);
                }
            }
            Step::Run(commands) => {
                for command in commands {
                    let words: Vec<&str> = command.split_whitespace().collect();
                    match words.first().copied() {
                        Some("cargo") => {
                            assert!(
                                !command.contains(['"', '\'', '$']),
                                "quoted or expanded cargo arguments are not replayed: {command}"
                            );
                            let mut args: Vec<&str> = words[1..].to_vec();
                            if args.first() == Some(&"build") {
                                args[0] = "check";
                            }
                            if let Some(i) = args.iter().position(|a| *a == "--bin") {
                                bin = args.get(i + 1).map(|b| b.to_string());
                            }
                            let out = Command::new(env!("CARGO"))
                                .args(&args)
                                .arg("--offline")
                                .current_dir(ctx)
                                .env("CARGO_TARGET_DIR", target_dir)
                                .output()
                                .expect("run cargo");
                            assert!(
                                out.status.success(),
                                "`{command}` (replayed as `cargo {} --offline`) fails on the files the Dockerfile copies:\n{}",
                                args.join(" "),
                                String::from_utf8_lossy(&out.stderr)
                            );
                        }
                        Some("mkdir" | "echo" | "touch" | "rm") => {
                            assert!(
                                !words[1..].iter().any(|w| w.starts_with('/')),
                                "an absolute path is outside the replayed WORKDIR: {command}"
                            );
                            let status = Command::new("sh")
                                .args(["-c", command])
                                .current_dir(ctx)
                                .status()
                                .unwrap();
                            assert!(status.success(), "`{command}` failed");
                        }
                        _ => panic!("the replay does not know `{command}`: teach it or drop it"),
                    }
                }
            }
        }
    }
    (
        workdir,
        bin.expect("the build stage runs `cargo build … --bin NAME`"),
    )
}

/// An empty build context outside the repository: inside it, cargo would
/// find the repository's own Cargo.toml in a parent directory.
fn empty_context(name: &str) -> std::path::PathBuf {
    let ctx =
        std::env::temp_dir().join(format!("geogate-dockerfile-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&ctx);
    fs::create_dir_all(&ctx).unwrap();
    ctx
}

/// Kept between runs under target/, so that only the first run compiles
/// the dependencies.
fn replay_target_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dockerfile-replay/target")
}

#[test]
fn dockerfile_build_steps_pass_on_exactly_the_files_the_dockerfile_copies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = fs::read_to_string(root.join("Dockerfile")).unwrap();
    let instructions = dockerfile_instructions(&dockerfile);
    let steps = build_stage(&instructions);
    assert!(
        steps.iter().any(|s| matches!(s, Step::Run(_))),
        "no RUN in the build stage: {steps:?}"
    );

    let ctx = empty_context("all");
    let steps_ref: Vec<&Step> = steps.iter().collect();
    let (workdir, bin) = replay_build_stage(&steps_ref, &ctx, &replay_target_dir());
    let _ = fs::remove_dir_all(&ctx);

    // The run stage copies the binary those steps build.
    let binary = format!("{}/target/release/{bin}", workdir.trim_end_matches('/'));
    assert!(
        instructions
            .iter()
            .any(|(k, a)| k == "COPY" && a.starts_with(&format!("--from=build {binary} "))),
        "the run stage does not COPY --from=build {binary}"
    );
    assert!(
        steps.iter().any(|s| matches!(s, Step::Run(c) if c.iter().any(|c| c.starts_with("cargo build") && c.contains("--release")))),
        "{binary} is only built by `cargo build --release`"
    );

    // docker compose builds the same image: this Dockerfile, from the root.
    let compose = fs::read_to_string(root.join("deploy/docker-compose.yml")).unwrap();
    assert!(
        compose.contains("context: ..\n    dockerfile: Dockerfile\n"),
        "deploy/docker-compose.yml no longer builds the repository's Dockerfile"
    );
}

#[test]
fn dockerfile_replay_fails_without_any_one_of_the_files_the_dockerfile_copies() {
    // The replay must notice a missing file (the image once failed for want
    // of benches/, which the manifest declares): leaving out any one COPY
    // of the build stage fails it. This also keeps the COPYs to what the
    // build needs.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = fs::read_to_string(root.join("Dockerfile")).unwrap();
    let steps = build_stage(&dockerfile_instructions(&dockerfile));
    let copies: Vec<usize> = (0..steps.len())
        .filter(|&i| matches!(steps[i], Step::Copy(..)))
        .collect();
    assert!(copies.len() >= 2, "{steps:?}");
    for skip in copies {
        let Step::Copy(sources, _) = &steps[skip] else {
            unreachable!()
        };
        let without: Vec<&Step> = steps
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != skip)
            .map(|(_, s)| s)
            .collect();
        let ctx = empty_context("without");
        let target = replay_target_dir();
        let replayed = std::panic::catch_unwind(|| replay_build_stage(&without, &ctx, &target));
        let _ = fs::remove_dir_all(&ctx);
        assert!(
            replayed.is_err(),
            "the build stage passed without COPY {}",
            sources.join(" ")
        );
    }
}
