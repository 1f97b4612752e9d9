//! lexer + analyzer + rewriter + policy on arbitrary text, in both
//! `standard_conforming_strings` settings and with SQL prepared
//! statements: nothing may panic.
//!
//! `cargo +nightly fuzz run analyze_policy fuzz/corpus/analyze_policy`
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use geogate::analyze::{Analyzer, Params, SqlContext};
use geogate::config::Config;
use geogate::policy::{Settings, decide};
use libfuzzer_sys::fuzz_target;

const SEED: &str = include_str!("../../tests/fixtures/seed.toml");

struct World {
    analyzer: Analyzer,
    contexts: [SqlContext; 2],
    settings: [Settings; 2],
    tenants: HashMap<String, String>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let cfg = Config::parse(SEED).expect("seed config");
        let analyzer = Analyzer::new(&cfg);
        let mut on = SqlContext::default();
        on.record(&analyzer.analyze(
            "PREPARE p(text) AS SELECT * FROM users WHERE region = $1; PREPARE t AS DELETE FROM users WHERE tenant_id = $1",
        ));
        let mut off = on.clone();
        off.set_standard_conforming_strings(false);
        World {
            contexts: [on, off],
            analyzer,
            settings: [
                Settings::from_config(&cfg, Some("app")),
                Settings::from_config(&cfg, Some("ops")),
            ],
            tenants: [("1", "eu"), ("2", "us"), ("3", "apac"), ("9", "mars")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let sql = String::from_utf8_lossy(rest);
    let ctx = &w.contexts[(flags >> 4 & 1) as usize];
    let a = if flags & 1 == 0 {
        w.analyzer.analyze_in(&sql, ctx)
    } else {
        std::sync::Arc::new(w.analyzer.analyze_uncached(&sql))
    };
    ctx.clone().record(&a);
    let vals = [
        Some(&b"eu"[..]),
        None,
        Some(&[0, 0, 0, 2][..]),
        Some(rest.get(..4).unwrap_or(b"x")),
    ];
    let params = Params {
        values: &vals,
        formats: &[0, 0, 1, (flags >> 2 & 1) as i16],
        types: &[],
    };
    let p = if flags & 2 == 0 { params } else { Params::NONE };
    let settings = &w.settings[(flags >> 3 & 1) as usize];
    let _ = a.tenant_keys(&p);
    let _ = a.fingerprint();
    let _ = a.tables();
    let _ = decide(&a, &p, &w.tenants, settings);
});
