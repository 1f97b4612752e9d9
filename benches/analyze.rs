//! analyse + decide for typical OLTP statements: cold (cache bypassed),
//! cached (same text), and literal-varying (same shape, new literals each
//! time, as simple-protocol apps send them).
//!
//! `cargo bench --bench analyze`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use geogate::analyze::{Analyzer, Params};
use geogate::config::Config;
use geogate::policy::{Settings, decide};

const SEED: &str = include_str!("../tests/fixtures/seed.toml");

const STATEMENTS: &[(&str, &str)] = &[
    (
        "select_route",
        "SELECT id, name, email FROM users WHERE region = 'eu' AND id = 42",
    ),
    (
        "update_route",
        "UPDATE users SET name = 'x', updated_at = now() WHERE region = 'us' AND id = 7",
    ),
    (
        "select_rewrite",
        "SELECT id, name FROM users WHERE tenant_id = 1 AND active ORDER BY id LIMIT 20",
    ),
    (
        "insert_rewrite",
        "INSERT INTO documents (id, tenant_id, owner, title) VALUES (9, 2, 3, 'hello')",
    ),
    (
        "global_plans",
        "SELECT id, name, price FROM plans WHERE id = 3",
    ),
    (
        "join3_route",
        "SELECT u.id, d.title, n.body FROM users u JOIN documents d ON d.owner = u.id AND d.region = u.region \
         JOIN notifications n ON n.user_id = u.id AND n.region = u.region \
         WHERE u.region = 'eu' AND u.tenant_id = 1 AND d.created_at > now() - interval '1 day'",
    ),
];

fn setup() -> (Analyzer, Settings, HashMap<String, String>) {
    let cfg = Config::parse(SEED).expect("seed config");
    let tenants: HashMap<String, String> = [("1", "eu"), ("2", "us"), ("3", "apac")]
        .iter()
        .chain(
            (4..1100)
                .map(|i| (Box::leak(i.to_string().into_boxed_str()) as &str, "eu"))
                .collect::<Vec<_>>()
                .iter(),
        )
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    (
        Analyzer::new(&cfg),
        Settings::from_config(&cfg, Some("app")),
        tenants,
    )
}

fn bench(c: &mut Criterion) {
    let (z, settings, tenants) = setup();
    let mut cold = c.benchmark_group("cold");
    for (name, sql) in STATEMENTS {
        cold.bench_function(*name, |b| {
            b.iter(|| {
                let a = z.analyze_uncached(black_box(sql));
                black_box(decide(&a, &Params::NONE, &tenants, &settings))
            })
        });
    }
    cold.finish();
    let mut cached = c.benchmark_group("cached");
    for (name, sql) in STATEMENTS {
        cached.bench_function(*name, |b| {
            b.iter(|| {
                let a = z.analyze(black_box(sql));
                black_box(decide(&a, &Params::NONE, &tenants, &settings))
            })
        });
    }
    cached.finish();
    let mut varying = c.benchmark_group("literal_varying");
    for (name, sql) in STATEMENTS {
        // Same shape, a different literal each time (ids 4..1100 all live in eu).
        let texts: Vec<String> = (4..1100)
            .map(|i| {
                sql.replacen("= 42", &format!("= {i}"), 1)
                    .replacen("= 7", &format!("= {i}"), 1)
                    .replacen("tenant_id = 1 ", &format!("tenant_id = {i} "), 1)
            })
            .collect();
        let mut k = 0;
        varying.bench_function(*name, |b| {
            b.iter(|| {
                k = (k + 1) % texts.len();
                let a = z.analyze(black_box(&texts[k]));
                black_box(decide(&a, &Params::NONE, &tenants, &settings))
            })
        });
    }
    varying.finish();
    // Extended protocol: analysis cached by the session per prepared
    // statement, so only decide runs per execution.
    let mut decide_only = c.benchmark_group("decide_only");
    let a = z.analyze("SELECT id FROM users WHERE tenant_id = $1 AND id = $2");
    let vals = [Some(&b"2"[..]), Some(&b"9"[..])];
    let p = Params {
        values: &vals,
        formats: &[],
        types: &[],
    };
    decide_only.bench_function("prepared_rewrite", |b| {
        b.iter(|| black_box(decide(&a, &p, &tenants, &settings)))
    });
    decide_only.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
