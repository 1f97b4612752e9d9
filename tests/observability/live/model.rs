//! What a live workload should leave on `/metrics`, built from the script
//! as it runs.

use std::collections::HashMap;

use geogate::metrics::{CacheResult, DecisionLabel, RejectReason, ScatterCause};
use tokio_postgres::Client;

use crate::common::sqlstate;
use crate::exposition::{CONTRACT, SeriesKey, key, parse_exposition};

/// What one statement of the script does, by the decision table of
/// docs/design.md ("Decisions").
#[derive(Clone, Copy)]
pub enum Expect {
    /// Forwarded, timed at its ReadyForQuery: `decision` on `table`,
    /// served by `region`'s gateway.
    Served(DecisionLabel, Option<&'static str>, &'static str),
    /// Scattered: forwarded to the local (eu) gateway.
    Scatter(ScatterCause, &'static str),
    /// Refused with the reason's SQLSTATE; not timed.
    Reject(RejectReason, Option<&'static str>),
    /// Answered by geogate itself (a deferred BEGIN): global, not timed.
    Answered,
    /// `mode = "observe"`: what enforce would refuse, forwarded unchanged
    /// to the local gateway (counted as a rejection, timed as one).
    WouldReject(RejectReason, &'static str),
}

pub const LOCAL: &str = "eu";

/// The series a live workload should leave on `/metrics`, built from the
/// script as it runs.
pub struct LiveModel {
    pub expected: HashMap<SeriesKey, f64>,
    /// Statements timed per (decision, region).
    pub timed: HashMap<(String, String), f64>,
}

impl LiveModel {
    pub fn new() -> LiveModel {
        let mut m = LiveModel {
            expected: HashMap::new(),
            timed: HashMap::new(),
        };
        // Unlabelled counters and the cache results exist from the start.
        m.add("geogate_cross_region_transactions_total", &[], 0.0);
        m.add("geogate_parse_errors_total", &[], 0.0);
        for r in CacheResult::ALL {
            m.add(
                "geogate_tenant_cache_lookups_total",
                &[("result", r.as_str())],
                0.0,
            );
        }
        m
    }

    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        *self.expected.entry(key(name, labels)).or_default() += v;
    }

    pub fn set(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.expected.insert(key(name, labels), v);
    }

    pub fn statement(&mut self, d: DecisionLabel, table: Option<&str>, region: Option<&str>) {
        self.add(
            "geogate_statements_total",
            &[
                ("decision", d.as_str()),
                ("table", table.unwrap_or("none")),
                ("region", region.unwrap_or("none")),
            ],
            1.0,
        );
    }

    pub fn timed(&mut self, d: DecisionLabel, region: &str) {
        *self
            .timed
            .entry((d.as_str().to_owned(), region.to_owned()))
            .or_default() += 1.0;
    }

    pub fn lookup(&mut self, r: CacheResult) {
        self.add(
            "geogate_tenant_cache_lookups_total",
            &[("result", r.as_str())],
            1.0,
        );
    }

    pub fn failover(&mut self, from: &str, to: &str) {
        self.add(
            "geogate_failovers_total",
            &[("from", from), ("to", to)],
            1.0,
        );
    }

    pub fn cross_region_txn(&mut self) {
        self.add("geogate_cross_region_transactions_total", &[], 1.0);
    }

    pub fn parse_error(&mut self) {
        self.add("geogate_parse_errors_total", &[], 1.0);
    }

    pub fn region_move(&mut self, table: &str, from: &str, to: &str) {
        self.add(
            "geogate_region_moves_total",
            &[("table", table), ("from", from), ("to", to)],
            1.0,
        );
    }

    /// Sends `sql` as a simple query, checks it succeeded (or was refused
    /// with the reason's SQLSTATE), and adds what `expect` counts.
    pub async fn run(&mut self, c: &Client, sql: &str, expect: Expect) {
        let code = c.simple_query(sql).await.err().map(|e| sqlstate(&e));
        let want = match expect {
            Expect::Reject(reason, _) => Some(reason.sqlstate().to_owned()),
            _ => None,
        };
        assert_eq!(code, want, "{sql}");
        self.count(expect);
    }

    /// Like [`LiveModel::run`] for a statement forwarded to a gateway that
    /// answers it with an error (`code`).
    pub async fn run_failing_upstream(
        &mut self,
        c: &Client,
        sql: &str,
        expect: Expect,
        code: &str,
    ) {
        let got = c.simple_query(sql).await.err().map(|e| sqlstate(&e));
        assert_eq!(got.as_deref(), Some(code), "{sql}");
        self.count(expect);
    }

    pub fn count(&mut self, expect: Expect) {
        match expect {
            Expect::Served(d, table, region) => {
                self.statement(d, table, Some(region));
                if d == DecisionLabel::Rewrite {
                    let t = table.unwrap_or("none");
                    self.add(
                        "geogate_rewrites_total",
                        &[("table", t), ("region", region)],
                        1.0,
                    );
                }
                self.timed(d, region);
            }
            Expect::Scatter(cause, table) => {
                self.statement(DecisionLabel::Scatter, Some(table), Some(LOCAL));
                self.add(
                    "geogate_scatter_total",
                    &[("table", table), ("cause", cause.as_str())],
                    1.0,
                );
                self.timed(DecisionLabel::Scatter, LOCAL);
            }
            Expect::Reject(reason, table) => {
                self.statement(DecisionLabel::Reject, table, None);
                self.add(
                    "geogate_rejections_total",
                    &[
                        ("reason", reason.as_str()),
                        ("table", table.unwrap_or("none")),
                    ],
                    1.0,
                );
            }
            Expect::Answered => self.statement(DecisionLabel::Global, None, Some(LOCAL)),
            Expect::WouldReject(reason, table) => {
                self.count(Expect::Reject(reason, Some(table)));
                self.timed(DecisionLabel::Reject, LOCAL);
            }
        }
    }

    pub fn statements_total(&self) -> f64 {
        self.expected
            .iter()
            .filter(|((n, _), _)| n == "geogate_statements_total")
            .map(|(_, v)| v)
            .sum()
    }

    /// Checks a live `/metrics` body: every contract metric with its type
    /// (with `all_families`; else those present); every expected series with
    /// exactly its value; no counter series or histogram the workload did
    /// not cause.
    pub fn assert_matches(&self, body: &str, who: &str, all_families: bool) {
        let expo = parse_exposition(body);
        for (name, ty, _) in CONTRACT {
            let got = expo.types.get(*name).map(String::as_str);
            if all_families || got.is_some() {
                assert_eq!(got, Some(*ty), "{who}: TYPE of {name}");
            }
        }
        let mut mismatches = Vec::new();
        for (k, v) in &self.expected {
            let got = expo.samples.get(k).copied();
            if got != Some(*v) {
                mismatches.push(format!("{k:?}: expected {v}, got {got:?}"));
            }
        }
        for ((name, labels), v) in &expo.samples {
            let counter = CONTRACT
                .iter()
                .any(|(n, t, _)| n == name && *t == "counter");
            if counter && !self.expected.contains_key(&(name.clone(), labels.clone())) {
                mismatches.push(format!("unexpected series {name}{labels:?} = {v}"));
            }
        }
        let count_name = "geogate_statement_duration_seconds_count";
        for ((d, r), n) in &self.timed {
            let labels = [("decision", d.as_str()), ("region", r.as_str())];
            let got = expo.samples.get(&key(count_name, &labels)).copied();
            if got != Some(*n) {
                mismatches.push(format!("{count_name}{labels:?}: expected {n}, got {got:?}"));
            }
            let inf = [
                ("decision", d.as_str()),
                ("region", r.as_str()),
                ("le", "+Inf"),
            ];
            let bucket = expo
                .samples
                .get(&key("geogate_statement_duration_seconds_bucket", &inf));
            assert_eq!(bucket, got.as_ref(), "{who}: +Inf bucket of {labels:?}");
        }
        for ((name, labels), v) in &expo.samples {
            if name == count_name {
                let k = (labels["decision"].clone(), labels["region"].clone());
                if !self.timed.contains_key(&k) {
                    mismatches.push(format!("unexpected timing {labels:?} = {v}"));
                }
            }
        }
        assert!(
            mismatches.is_empty(),
            "{who}: /metrics differs from the workload:\n{}",
            mismatches.join("\n")
        );
    }
}

/// Sets the gauges a live geogate of `config` should show.
pub fn expect_gauges(m: &mut LiveModel, down: &[&str], entries: f64, clients: f64) {
    for r in ["eu", "us", "apac", "sa", "af"] {
        let up = if down.contains(&r) { 0.0 } else { 1.0 };
        m.set("geogate_upstream_up", &[("region", r)], up);
    }
    m.set("geogate_tenant_cache_entries", &[], entries);
    m.set("geogate_client_connections", &[], clients);
}
