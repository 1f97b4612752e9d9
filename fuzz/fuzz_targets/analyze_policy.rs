//! analyze + policy on arbitrary text: nothing may panic.
//!
//! `cargo +nightly fuzz run analyze_policy fuzz/corpus/analyze_policy`
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use geogate::analyze::{Analyzer, Params};
use geogate::config::Config;
use geogate::policy::{Settings, decide};
use libfuzzer_sys::fuzz_target;

const SEED: &str = include_str!("../../tests/fixtures/seed.toml");

struct World {
    analyzer: Analyzer,
    settings: [Settings; 2],
    tenants: HashMap<String, String>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let cfg = Config::parse(SEED).expect("seed config");
        World {
            analyzer: Analyzer::new(&cfg),
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
    let a = if flags & 1 == 0 {
        w.analyzer.analyze(&sql)
    } else {
        std::sync::Arc::new(w.analyzer.analyze_uncached(&sql))
    };
    let vals = [
        Some(Bytes::from_static(b"eu")),
        None,
        Some(Bytes::from_static(&[0, 0, 0, 2])),
        Some(Bytes::copy_from_slice(rest.get(..4).unwrap_or(b"x"))),
    ];
    let params = Params {
        values: &vals,
        formats: &[0, 0, 1, (flags >> 2 & 1) as i16],
    };
    let p = if flags & 2 == 0 { params } else { Params::NONE };
    let settings = &w.settings[(flags >> 3 & 1) as usize];
    let _ = a.tenant_keys(&p);
    let _ = a.fingerprint();
    let _ = a.tables();
    let _ = decide(&a, &p, &w.tenants, settings);
});
