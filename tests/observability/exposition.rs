//! The Prometheus text format as a scraper reads it, and the metrics
//! contract of docs/design.md.

use std::collections::{BTreeMap, HashMap};

pub type SeriesKey = (String, BTreeMap<String, String>);

pub fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: HashMap<SeriesKey, f64>,
}

/// Parses the Prometheus text format 0.0.4 as a scraper would.
pub fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            out.types.insert(name.to_owned(), ty.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap();
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        out.samples.insert((name.to_owned(), labels), value);
    }
    out
}

/// The metrics table of docs/design.md ("Metrics"): name, type, label names.
pub const CONTRACT: &[(&str, &str, &[&str])] = &[
    (
        "geogate_statements_total",
        "counter",
        &["decision", "table", "region"],
    ),
    ("geogate_rejections_total", "counter", &["reason", "table"]),
    ("geogate_scatter_total", "counter", &["table", "cause"]),
    ("geogate_rewrites_total", "counter", &["table", "region"]),
    ("geogate_tenant_cache_lookups_total", "counter", &["result"]),
    ("geogate_tenant_cache_entries", "gauge", &[]),
    ("geogate_upstream_up", "gauge", &["region"]),
    ("geogate_failovers_total", "counter", &["from", "to"]),
    ("geogate_cross_region_transactions_total", "counter", &[]),
    ("geogate_client_connections", "gauge", &[]),
    (
        "geogate_statement_duration_seconds",
        "histogram",
        &["decision", "region"],
    ),
    ("geogate_parse_errors_total", "counter", &[]),
    (
        "geogate_region_moves_total",
        "counter",
        &["table", "from", "to"],
    ),
];
