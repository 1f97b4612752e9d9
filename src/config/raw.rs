//! The file as written (lenient types, defaults applied later) and its
//! validation into [`Config`]. Kept apart so that validation can report
//! every problem instead of stopping at the first, as serde would.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::suggest::{did_you_mean, fields_of};
use super::*;

#[derive(Deserialize, Default)]
pub(super) struct RawConfig {
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    regions: BTreeMap<String, RawRegion>,
    tenants: Option<RawTenants>,
    #[serde(default)]
    tables: BTreeMap<String, RawTable>,
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Deserialize, Default)]
struct RawProxy {
    listen: Option<String>,
    local_region: Option<String>,
    metrics_listen: Option<String>,
    mode: Option<String>,
    unlisted_tables: Option<String>,
    on_parse_error: Option<String>,
    on_cross_region_txn: Option<String>,
    max_client_connections: Option<i64>,
    max_message_size: Option<i64>,
    startup_timeout: Option<String>,
    shutdown_grace: Option<String>,
    max_statement_length: Option<i64>,
    analysis_cache_size: Option<i64>,
    worker_threads: Option<i64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_mode: Option<String>,
    probe_interval: Option<String>,
    probe_timeout: Option<String>,
    probe_failures_down: Option<i64>,
    probe_successes_up: Option<i64>,
}

#[derive(Deserialize)]
struct RawRegion {
    gateway: Option<String>,
    #[serde(default)]
    fallback: Vec<String>,
}

#[derive(Deserialize)]
struct RawTenants {
    query: Option<String>,
    refresh: Option<String>,
    lookup_query: Option<String>,
    lookup_timeout: Option<String>,
    negative_ttl: Option<String>,
    table: Option<String>,
    id_column: Option<String>,
    region_column: Option<String>,
    guard: Option<String>,
    listen: Option<String>,
    changes_query: Option<String>,
    poll_interval: Option<String>,
}

#[derive(Deserialize)]
struct RawTable {
    locality: Option<String>,
    partition_column: Option<String>,
    tenant_column: Option<String>,
    on_missing_region: Option<String>,
}

#[derive(Deserialize)]
struct RawUser {
    name: Option<String>,
    password: Option<String>,
    auth: Option<String>,
    #[serde(default)]
    allow_scatter: bool,
}

/// Parses TOML; returns the raw config and the dotted paths of unknown keys.
pub(super) fn parse(text: &str) -> Result<(RawConfig, Vec<String>), String> {
    let de = toml::Deserializer::new(text);
    let mut unknown = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
        .map_err(|e| e.to_string())?;
    Ok((raw, unknown))
}

/// The issue for an unknown key, from serde_ignored's path (`proxy.colour`,
/// `tenants.?.refrsh`, `users.0.pasword`): the key written as validation
/// writes keys (`tenants.refrsh`, `users[0].pasword`) and, when a known key
/// of the same table is a few edits away, "did you mean `…`?".
pub(super) fn unknown_key(path: &str) -> ConfigIssue {
    // `?` marks an Option on the way down; it is not part of the key.
    let parts: Vec<&str> = path.split('.').filter(|p| *p != "?").collect();
    let (key, known) = match parts.as_slice() {
        [k] => (k.to_string(), fields_of::<RawConfig>()),
        ["proxy", k] => (format!("proxy.{k}"), fields_of::<RawProxy>()),
        ["tenants", k] => (format!("tenants.{k}"), fields_of::<RawTenants>()),
        ["regions", name, k] => (format!("regions.{name}.{k}"), fields_of::<RawRegion>()),
        ["tables", name, k] => (format!("tables.{name}.{k}"), fields_of::<RawTable>()),
        ["users", i, k] => (format!("users[{i}].{k}"), fields_of::<RawUser>()),
        _ => (parts.join("."), &[][..]),
    };
    let word = key.rsplit(['.', ']']).next().unwrap_or(&key);
    let message = match did_you_mean(word, known) {
        Some(k) => format!("unknown key; did you mean `{k}`?"),
        None => "unknown key".to_string(),
    };
    ConfigIssue { key, message }
}

/// Collects problems while reading values, so all of them are reported.
struct Checker<'a> {
    issues: &'a mut Vec<ConfigIssue>,
}

impl Checker<'_> {
    fn bad(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: Option<&str>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(v) = value else { return default };
        match options.iter().find(|(name, _)| *name == v) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<_> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.bad(
                    key,
                    format!("must be one of {}, not {v:?}", names.join(", ")),
                );
                default
            }
        }
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        let Some(v) = value else { return default };
        match parse_duration(v) {
            Some(d) if !d.is_zero() => d,
            _ => {
                self.bad(
                    key,
                    format!(
                        "must be a positive duration such as \"500ms\", \"30s\", \"5m\", not {v:?}"
                    ),
                );
                default
            }
        }
    }

    fn positive(&mut self, key: &str, value: Option<i64>, default: usize) -> usize {
        match value {
            None => default,
            Some(n) if n > 0 => n as usize,
            Some(n) => {
                self.bad(key, format!("must be a positive integer, not {n}"));
                default
            }
        }
    }

    fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(
                    key,
                    format!("must be an address such as \"127.0.0.1:6432\", not {value:?}"),
                );
                None
            }
        }
    }
}

/// Turns the raw file into a [`Config`], pushing every problem into `issues`.
/// Returns `None` only when a value needed to build the config is missing.
pub(super) fn validate(raw: RawConfig, issues: &mut Vec<ConfigIssue>) -> Option<Config> {
    let mut c = Checker { issues };
    let p = raw.proxy;

    let listen = c.addr(
        "proxy.listen",
        p.listen.as_deref().unwrap_or("127.0.0.1:6432"),
    );
    let metrics_listen = p
        .metrics_listen
        .as_deref()
        .and_then(|m| c.addr("proxy.metrics_listen", m));
    let mode = c.choice(
        "proxy.mode",
        p.mode.as_deref(),
        &[
            ("enforce", Mode::Enforce),
            ("warn", Mode::Warn),
            ("observe", Mode::Observe),
        ],
        Mode::Enforce,
    );
    let unlisted_tables = c.choice(
        "proxy.unlisted_tables",
        p.unlisted_tables.as_deref(),
        &[
            ("global", UnlistedTables::Global),
            ("reject", UnlistedTables::Reject),
        ],
        UnlistedTables::Global,
    );
    let on_parse_error = c.choice(
        "proxy.on_parse_error",
        p.on_parse_error.as_deref(),
        &[
            ("forward", OnParseError::Forward),
            ("reject", OnParseError::Reject),
        ],
        // Fail closed: a statement naming a regional table that cannot be
        // analysed is refused unless forwarding is chosen.
        OnParseError::Reject,
    );
    let on_cross_region_txn = c.choice(
        "proxy.on_cross_region_txn",
        p.on_cross_region_txn.as_deref(),
        &[
            ("allow", OnCrossRegionTxn::Allow),
            ("reject", OnCrossRegionTxn::Reject),
        ],
        OnCrossRegionTxn::Allow,
    );
    let max_client_connections = c.positive(
        "proxy.max_client_connections",
        p.max_client_connections,
        5_000,
    );
    let max_message_size = c.positive("proxy.max_message_size", p.max_message_size, 64 << 20);
    let max_statement_length = c.positive(
        "proxy.max_statement_length",
        p.max_statement_length,
        1 << 20,
    );
    let analysis_cache_size =
        c.positive("proxy.analysis_cache_size", p.analysis_cache_size, 10_000);
    let worker_threads = c.positive("proxy.worker_threads", p.worker_threads, 1);
    let startup_timeout = c.duration(
        "proxy.startup_timeout",
        p.startup_timeout.as_deref(),
        Duration::from_secs(10),
    );
    let shutdown_grace = c.duration(
        "proxy.shutdown_grace",
        p.shutdown_grace.as_deref(),
        Duration::from_secs(30),
    );
    let probe_interval = c.duration(
        "proxy.probe_interval",
        p.probe_interval.as_deref(),
        Duration::from_secs(1),
    );
    let probe_timeout = c.duration(
        "proxy.probe_timeout",
        p.probe_timeout.as_deref(),
        Duration::from_secs(2),
    );
    let probe_failures_down = c.positive("proxy.probe_failures_down", p.probe_failures_down, 2);
    let probe_successes_up = c.positive("proxy.probe_successes_up", p.probe_successes_up, 2);
    if p.tls_cert.is_some() != p.tls_key.is_some() {
        c.bad(
            "proxy.tls_cert",
            "tls_cert and tls_key must be set together",
        );
    }
    let tls_mode = c.choice(
        "proxy.tls_mode",
        p.tls_mode.as_deref(),
        &[("allow", TlsMode::Allow), ("require", TlsMode::Require)],
        TlsMode::Allow,
    );
    if tls_mode == TlsMode::Require && p.tls_cert.is_none() {
        c.bad(
            "proxy.tls_mode",
            "\"require\" needs tls_cert and tls_key (client TLS is off without them)",
        );
    }

    // Regions.
    if raw.regions.is_empty() {
        c.bad(
            "regions",
            "at least one [regions.NAME] table with a gateway is required",
        );
    }
    let mut regions = BTreeMap::new();
    for (name, r) in &raw.regions {
        let key = format!("regions.{name}");
        if name.is_empty() {
            c.bad(&key, "region name must not be empty");
        }
        let gateway = match r.gateway.as_deref() {
            None => {
                c.bad(format!("{key}.gateway"), "is required (a postgres:// URL)");
                None
            }
            Some(g) => match GatewayUrl::parse(g) {
                Ok(u) => Some(u),
                Err(e) => {
                    c.bad(format!("{key}.gateway"), format!("gateway URL {e}"));
                    None
                }
            },
        };
        for (i, f) in r.fallback.iter().enumerate() {
            if f == name {
                c.bad(
                    format!("{key}.fallback[{i}]"),
                    "a region cannot fall back to itself",
                );
            } else if !raw.regions.contains_key(f) {
                c.bad(
                    format!("{key}.fallback[{i}]"),
                    format!("names region {f:?}, which is not configured"),
                );
            }
        }
        if let Some(gateway) = gateway {
            regions.insert(
                name.clone(),
                RegionConfig {
                    name: name.clone(),
                    gateway,
                    fallback: r.fallback.clone(),
                },
            );
        }
    }
    let local_region = match p.local_region {
        None => {
            c.bad(
                "proxy.local_region",
                "is required (the region this sidecar runs in)",
            );
            String::new()
        }
        Some(l) => {
            if !raw.regions.contains_key(&l) {
                let known: Vec<_> = raw.regions.keys().map(|k| format!("{k:?}")).collect();
                c.bad(
                    "proxy.local_region",
                    format!(
                        "{l:?} is not a configured region (known: {})",
                        known.join(", ")
                    ),
                );
            }
            l
        }
    };

    // Tenants directory.
    let tenants = raw.tenants.map(|t| {
        if t.query.as_deref().is_none_or(|q| q.trim().is_empty()) {
            c.bad(
                "tenants.query",
                "is required: a query returning (tenant_id text, region text)",
            );
        }
        let moves = tenant_moves(&mut c, &t);
        TenantsConfig {
            query: t.query.unwrap_or_default(),
            refresh: c.duration(
                "tenants.refresh",
                t.refresh.as_deref(),
                Duration::from_secs(30),
            ),
            lookup_query: t.lookup_query,
            lookup_timeout: c.duration(
                "tenants.lookup_timeout",
                t.lookup_timeout.as_deref(),
                Duration::from_secs(2),
            ),
            negative_ttl: c.duration(
                "tenants.negative_ttl",
                t.negative_ttl.as_deref(),
                Duration::from_secs(5),
            ),
            moves,
        }
    });

    // Tables.
    let mut tables = HashMap::new();
    for (name, t) in raw.tables {
        let key = format!("tables.{name}");
        let locality = c.choice(
            &format!("{key}.locality"),
            t.locality.as_deref(),
            &[("regional", true), ("global", false)],
            t.partition_column.is_some() || t.locality.is_none(),
        );
        let table = if !locality {
            for (k, set) in [
                ("partition_column", t.partition_column.is_some()),
                ("tenant_column", t.tenant_column.is_some()),
                ("on_missing_region", t.on_missing_region.is_some()),
            ] {
                if set {
                    c.bad(
                        format!("{key}.{k}"),
                        "does not apply to a table with locality = \"global\"",
                    );
                }
            }
            TableConfig::Global
        } else {
            let on_missing_region = c.choice(
                &format!("{key}.on_missing_region"),
                t.on_missing_region.as_deref(),
                &[
                    ("rewrite", OnMissingRegion::Rewrite),
                    ("reject", OnMissingRegion::Reject),
                    ("allow", OnMissingRegion::Allow),
                ],
                OnMissingRegion::Reject,
            );
            if t.partition_column.is_none() {
                c.bad(
                    format!("{key}.partition_column"),
                    "is required for a regional table (or set locality = \"global\")",
                );
            }
            if on_missing_region == OnMissingRegion::Rewrite {
                if t.tenant_column.is_none() {
                    c.bad(
                        format!("{key}.on_missing_region"),
                        "\"rewrite\" needs tenant_column to find the region from",
                    );
                }
                if tenants.is_none() {
                    c.bad(
                        format!("{key}.on_missing_region"),
                        "\"rewrite\" needs a [tenants] directory",
                    );
                }
            }
            TableConfig::Regional(RegionalTable {
                partition_column: t.partition_column.unwrap_or_default().to_lowercase(),
                tenant_column: t.tenant_column.map(|s| s.to_lowercase()),
                on_missing_region,
            })
        };
        let norm = normalize_table_name(&name);
        if tables.insert(norm.clone(), table).is_some() {
            c.bad(key, format!("names table {norm:?} a second time"));
        }
    }

    // Users.
    let mut users = HashMap::new();
    for (i, u) in raw.users.into_iter().enumerate() {
        let key = format!("users[{i}]");
        let Some(name) = u.name.filter(|n| !n.is_empty()) else {
            c.bad(format!("{key}.name"), "is required");
            continue;
        };
        let Some(password) = u.password.filter(|p| !p.is_empty()) else {
            c.bad(
                format!("{key}.password"),
                format!("is required for user {name:?}"),
            );
            continue;
        };
        let auth = c.choice(
            &format!("{key}.auth"),
            u.auth.as_deref(),
            &[
                ("scram-sha-256", AuthMethod::ScramSha256),
                ("md5", AuthMethod::Md5),
                ("password", AuthMethod::Password),
            ],
            AuthMethod::ScramSha256,
        );
        if auth != AuthMethod::ScramSha256 && password.starts_with("SCRAM-SHA-256$") {
            c.bad(format!("{key}.password"), "a SCRAM verifier only works with auth = \"scram-sha-256\"; give the cleartext password");
        }
        if users.contains_key(&name) {
            c.bad(
                format!("{key}.name"),
                format!("user {name:?} is listed twice"),
            );
        }
        users.insert(
            name.clone(),
            UserConfig {
                name,
                password,
                auth,
                allow_scatter: u.allow_scatter,
            },
        );
    }

    Some(Config {
        path: None,
        proxy: ProxyConfig {
            listen: listen?,
            local_region,
            metrics_listen,
            mode,
            unlisted_tables,
            on_parse_error,
            on_cross_region_txn,
            max_client_connections,
            max_message_size,
            startup_timeout,
            shutdown_grace,
            max_statement_length,
            analysis_cache_size,
            worker_threads,
            tls_cert: p.tls_cert,
            tls_key: p.tls_key,
            tls_mode,
            probe_interval,
            probe_timeout,
            probe_failures_down: u32::try_from(probe_failures_down).unwrap_or(u32::MAX),
            probe_successes_up: u32::try_from(probe_successes_up).unwrap_or(u32::MAX),
        },
        regions,
        tenants,
        tables,
        users,
    })
}

/// The `[tenants]` keys of tenant moves (docs/tenant-moves.md).
fn tenant_moves(c: &mut Checker<'_>, t: &RawTenants) -> crate::config::TenantMoves {
    use crate::config::{TenantMoves, WriteGuard};
    let d = TenantMoves::default();
    let inferred = super::directory_table(t.query.as_deref().unwrap_or(""));
    let (table, id_column, region_column) = match (&t.table, inferred) {
        (Some(table), _) => (
            Some(table.clone()),
            t.id_column.clone().unwrap_or(d.id_column),
            t.region_column.clone().unwrap_or(d.region_column),
        ),
        (None, Some((table, id, region))) => (
            Some(table),
            t.id_column.clone().unwrap_or(id),
            t.region_column.clone().unwrap_or(region),
        ),
        (None, None) => (
            None,
            t.id_column.clone().unwrap_or(d.id_column),
            t.region_column.clone().unwrap_or(d.region_column),
        ),
    };
    // The guard runs on whichever gateway the write goes to: on by default
    // only when the operator named the directory table (readable on every
    // gateway, as a global table is), not when it was guessed from `query`.
    let default_guard = if t.table.is_some() {
        d.guard
    } else {
        WriteGuard::Off
    };
    let guard = c.choice(
        "tenants.guard",
        t.guard.as_deref(),
        &[
            ("share", WriteGuard::Share),
            ("check", WriteGuard::Check),
            ("off", WriteGuard::Off),
        ],
        default_guard,
    );
    let listen = match t.listen.as_deref() {
        None => d.listen,
        Some("") => None,
        Some(ch) => Some(ch.to_string()),
    };
    TenantMoves {
        table,
        id_column,
        region_column,
        guard,
        listen,
        changes_query: t.changes_query.clone().filter(|q| !q.trim().is_empty()),
        poll_interval: c.duration(
            "tenants.poll_interval",
            t.poll_interval.as_deref(),
            d.poll_interval,
        ),
    }
}
