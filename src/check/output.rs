//! How `check` and `explain` print decisions.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Checked;
use crate::analyze::{Alt, Analysis, Val};
use crate::policy::{Decision, Outcome};

/// The `reason` field: the rejection reason or the scatter cause.
fn reason(d: &Decision) -> Option<&'static str> {
    match &d.outcome {
        Outcome::Reject(r) => Some(r.reason.label()),
        Outcome::Scatter { cause, .. } => Some(cause.label()),
        _ => None,
    }
}

/// One JSON object per statement (`--format jsonl`).
pub(super) fn jsonl(c: &Checked) -> String {
    let d = &c.decision;
    let (rewritten, sqlstate, message) = match &d.outcome {
        Outcome::Rewrite { sql, .. } => (Some(sql.clone()), None, None),
        Outcome::Reject(r) => (None, Some(r.sqlstate()), Some(r.message.clone())),
        _ => (None, None, None),
    };
    let moves: Vec<serde_json::Value> = d
        .moves
        .iter()
        .map(|m| serde_json::json!({"table": m.table, "from": m.from, "to": m.to}))
        .collect();
    serde_json::json!({
        "line": c.line,
        "sql": c.sql,
        "decision": d.label(),
        "regions": d.regions(),
        "tables": d.tables,
        "rewritten": rewritten,
        "reason": reason(d),
        "sqlstate": sqlstate,
        "message": message,
        "fingerprint": c.fingerprint,
        "parse_error": c.parse_error,
        "moves": moves,
    })
    .to_string()
}

fn one_line(sql: &str, max: usize) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max - 1).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The human-readable block for one statement.
pub(super) fn text(c: &Checked) -> String {
    let d = &c.decision;
    let mut s = String::new();
    let head = match &d.outcome {
        Outcome::Global => "GLOBAL".to_string(),
        Outcome::Route { region } => format!("ROUTE → {region}"),
        Outcome::Rewrite { region, .. } => format!("REWRITE → {region}"),
        Outcome::Scatter { regions, cause } => {
            format!("SCATTER → {} ({})", regions.join(", "), cause.label())
        }
        Outcome::Reject(r) => format!("REJECT {} ({})", r.sqlstate(), r.reason.label()),
    };
    let _ = writeln!(s, "line {:<5} {head}", c.line);
    let _ = writeln!(s, "    {}", one_line(&c.sql, 160));
    if !d.tables.is_empty() {
        let _ = writeln!(s, "    tables:    {}", d.tables.join(", "));
    }
    match &d.outcome {
        Outcome::Rewrite { sql, .. } => {
            let _ = writeln!(s, "    rewritten: {}", one_line(sql, 400));
        }
        Outcome::Reject(r) => {
            let _ = writeln!(s, "    {}", r.message);
        }
        Outcome::Scatter { cause, .. } => {
            let why = match cause {
                crate::policy::ScatterCause::MultiRegion => {
                    "names several regions: served by the local gateway, slow"
                }
                crate::policy::ScatterCause::Allowed => {
                    "no region, allowed to scatter: served by the local gateway, slow"
                }
            };
            let _ = writeln!(s, "    why:       {why}");
        }
        _ => {}
    }
    if let Some(e) = &c.parse_error {
        let _ = writeln!(s, "    parse:     {e} (forwarded as is)");
    }
    for m in &d.moves {
        let _ = writeln!(
            s,
            "    moves:     {} rows {} → {}",
            m.table,
            m.from.as_deref().unwrap_or("?"),
            m.to.as_deref().unwrap_or("?")
        );
    }
    s
}

/// The closing summary by decision.
pub(super) fn summary(name: &str, all: &[Checked]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for c in all {
        *by.entry(c.decision.label()).or_default() += 1;
    }
    let parts: Vec<String> = ["global", "route", "rewrite", "scatter", "reject"]
        .iter()
        .filter_map(|k| by.get(k).map(|n| format!("{n} {k}")))
        .collect();
    let parse = all.iter().filter(|c| c.parse_error.is_some()).count();
    let mut s = format!(
        "{name}: {} statement{}: {}",
        all.len(),
        if all.len() == 1 { "" } else { "s" },
        if parts.is_empty() {
            "nothing to check".to_string()
        } else {
            parts.join(", ")
        }
    );
    if parse > 0 {
        let _ = write!(s, " ({parse} not parsed)");
    }
    s.push('\n');
    s
}

fn show_val(a: &Analysis, i: usize, v: &Val) -> String {
    match v {
        Val::Param(n) => format!("${n}"),
        Val::Text(t) => format!("'{t}'"),
        Val::Lit(slot) => a.lit_text(i, *slot).unwrap_or("?").to_string(),
    }
}

/// `explain`: the decision and the facts behind it.
pub(super) fn explain(a: &Analysis, d: &Decision) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "decision:    {}", d.label());
    let regions = d.regions();
    if !regions.is_empty() {
        let _ = writeln!(s, "regions:     {}", regions.join(", "));
    }
    if let Some(r) = reason(d) {
        let _ = writeln!(s, "reason:      {r}");
    }
    if let Outcome::Reject(r) = &d.outcome {
        let _ = writeln!(s, "sqlstate:    {}", r.sqlstate());
        let _ = writeln!(s, "message:     {}", r.message);
    }
    let _ = writeln!(s, "tables:      {}", d.tables.join(", "));
    for (i, st) in a.statements.iter().enumerate() {
        let t = &st.template;
        let _ = writeln!(s, "statement {}: {}", i + 1, t.kind.label());
        let _ = writeln!(s, "  fingerprint: {}", t.fingerprint);
        if let Some(e) = &t.parse_error {
            let _ = writeln!(s, "  parse error: {e}");
        }
        for (ri, r) in t.facts.refs.iter().enumerate() {
            let mut conf: Vec<String> = r
                .confiners
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|x| match x {
                            Alt::Region(v) => {
                                format!("{} = {}", r.partition_column, show_val(a, i, v))
                            }
                            Alt::Tenant(v) => format!(
                                "{} = {}",
                                r.tenant_column.as_deref().unwrap_or("?"),
                                show_val(a, i, v)
                            ),
                        })
                        .collect::<Vec<_>>()
                        .join(" OR ")
                })
                .collect();
            for (from, to) in t.facts.region_equalities() {
                if to == ri {
                    let q = &t.facts.refs[from].qualifier;
                    conf.push(format!(
                        "{} = {q}.{} (carried)",
                        r.partition_column, t.facts.refs[from].partition_column
                    ));
                }
            }
            let policy = match r.on_missing_region {
                crate::config::OnMissingRegion::Rewrite => "rewrite",
                crate::config::OnMissingRegion::Reject => "reject",
                crate::config::OnMissingRegion::Allow => "allow",
            };
            let _ = writeln!(
                s,
                "  reference {} ({}, on_missing_region = {}): {}",
                r.qualifier,
                r.table,
                policy,
                if conf.is_empty() {
                    "unconstrained".to_string()
                } else {
                    conf.join("; ")
                }
            );
        }
    }
    if let Outcome::Rewrite {
        sql, parameterized, ..
    } = &d.outcome
    {
        let _ = writeln!(s, "rewritten:   {sql}");
        if let Some(p) = parameterized {
            let _ = writeln!(
                s,
                "prepared:    {}   (region bound as ${})",
                p.sql, p.region_param
            );
        }
    }
    for m in &d.moves {
        let _ = writeln!(
            s,
            "moves:       {} {} → {}",
            m.table,
            m.from.as_deref().unwrap_or("?"),
            m.to.as_deref().unwrap_or("?")
        );
    }
    s
}
