//! Configuration: the TOML file of docs/design.md ("Configuration"),
//! validated as a whole.
//!
//! Loading happens in three steps: `${VAR}` substitution on the raw text,
//! TOML parsing into the lenient [`raw`] schema (unknown keys collected, not
//! fatal yet), then validation into [`Config`]. Every problem found is
//! reported at once, each with the key it concerns, so one edit fixes them all.

mod directory;
mod duration;
mod raw;
mod suggest;
mod url;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use directory::directory_table;
pub use duration::parse_duration;
pub use url::{GatewayUrl, SslMode, UrlError};

/// What geogate does with the decisions it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Reject what policy rejects.
    Enforce,
    /// Forward what `Enforce` would reject, with a WARNING notice.
    Warn,
    /// Forward every statement unchanged to the local gateway; only count.
    Observe,
}

/// What happens to a regional statement that names no region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnMissingRegion {
    /// Inject the region found from the tenant predicate.
    Rewrite,
    /// Refuse the statement (`GG001`).
    Reject,
    /// Let it scatter, counted.
    Allow,
}

/// How tables absent from `[tables]` are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnlistedTables {
    /// As global tables (the default).
    Global,
    /// Refuse statements that touch them.
    Reject,
}

/// What happens to a statement the SQL parser cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnParseError {
    /// Forward it to the local gateway, counted (the default).
    Forward,
    /// Refuse it (`GG006`).
    Reject,
}

/// What happens when a transaction touches a second region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnCrossRegionTxn {
    /// The pinned gateway serves it (slowly); counted.
    Allow,
    /// Refuse the statement (`GG005`).
    Reject,
}

/// How a client proves who it is to geogate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (the default).
    ScramSha256,
    /// MD5 password hash (legacy drivers).
    Md5,
    /// Cleartext password (only over TLS or loopback).
    Password,
}

/// Whether clients may connect without TLS (only meaningful with `tls_cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// TLS when the client asks for it, plain text otherwise (the default).
    Allow,
    /// Clients that do not negotiate TLS are refused (`28000`).
    Require,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from, for messages and reload.
    pub path: Option<PathBuf>,
    /// `[proxy]`.
    pub proxy: ProxyConfig,
    /// `[regions.*]`, by region name (the partition column's value).
    pub regions: BTreeMap<String, RegionConfig>,
    /// `[tenants]`, if tenant lookups are configured.
    pub tenants: Option<TenantsConfig>,
    /// `[tables.*]`, by normalised (lower-case, unqualified) table name.
    pub tables: HashMap<String, TableConfig>,
    /// `[[users]]`, by name.
    pub users: HashMap<String, UserConfig>,
}

/// `[proxy]`: the sidecar's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Client-facing listen address.
    pub listen: SocketAddr,
    /// The region this sidecar runs in; a key of `[regions]`.
    pub local_region: String,
    /// Listen address for `/metrics`, `/healthz`, `/readyz`, `/statements`.
    pub metrics_listen: Option<SocketAddr>,
    /// enforce | warn | observe.
    pub mode: Mode,
    /// Policy for tables not listed in `[tables]`.
    pub unlisted_tables: UnlistedTables,
    /// Policy for statements the parser cannot read.
    pub on_parse_error: OnParseError,
    /// Policy for transactions that touch a second region.
    pub on_cross_region_txn: OnCrossRegionTxn,
    /// Beyond this many clients, new ones get `53300`.
    pub max_client_connections: usize,
    /// A frontend message larger than this gets `08P01` and the connection closes.
    pub max_message_size: usize,
    /// A client that has not finished startup + auth by then is disconnected.
    pub startup_timeout: Duration,
    /// On SIGTERM, how long open transactions may run before connections are closed.
    pub shutdown_grace: Duration,
    /// Limit on statement text length the analyzer accepts.
    pub max_statement_length: usize,
    /// Entries in the analysis cache.
    pub analysis_cache_size: usize,
    /// Threads serving clients: 1 (the default) runs one event loop on one
    /// thread, as PgBouncer does (fastest on small machines); more spreads
    /// sessions over a multi-threaded runtime.
    pub worker_threads: usize,
    /// PEM certificate chain for client TLS (off when unset).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for client TLS.
    pub tls_key: Option<PathBuf>,
    /// `allow` (default) or `require`: whether plain-text clients are accepted.
    pub tls_mode: TlsMode,
    /// Time between rounds of the gateway prober (startup + `SELECT 1` on every region).
    pub probe_interval: Duration,
    /// A probe not done by then counts as failed.
    pub probe_timeout: Duration,
    /// Failed probes in a row before an up region is marked down.
    pub probe_failures_down: u32,
    /// Successful probes in a row before a down region is marked up again.
    pub probe_successes_up: u32,
}

/// `[regions.NAME]`: one regional gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    /// Region name (the key).
    pub name: String,
    /// Where the region's gateway listens.
    pub gateway: GatewayUrl,
    /// Regions to use, in order, while this gateway is down.
    pub fallback: Vec<String>,
}

/// `[tenants]`: the tenant→region directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantsConfig {
    /// Query returning `(tenant_id text, region text)` rows, run on the local gateway.
    pub query: String,
    /// How often the whole directory is reloaded.
    pub refresh: Duration,
    /// Query for one tenant on a cache miss, with `$1` = tenant id.
    pub lookup_query: Option<String>,
    /// Limit on one lookup.
    pub lookup_timeout: Duration,
    /// How long "tenant not found" is remembered.
    pub negative_ttl: Duration,
    /// Tenant moves: the directory table, guarded writes, change feeds
    /// (docs/tenant-moves.md).
    pub moves: TenantMoves,
}

/// `[tenants]` keys for tenant moves (docs/tenant-moves.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantMoves {
    /// The directory table (`[tenants] table`; inferred from `query` when it
    /// is a plain `SELECT id, region FROM table`). Without it writes are not
    /// guarded and `move-tenant` cannot run.
    pub table: Option<String>,
    /// Its tenant id column (`[tenants] id_column`).
    pub id_column: String,
    /// Its region column (`[tenants] region_column`).
    pub region_column: String,
    /// How a rewritten write checks its region against the directory
    /// (default `share` when `[tenants] table` is set, else `off`).
    pub guard: WriteGuard,
    /// `LISTEN` channel whose payloads are moved tenant ids (`None`: off).
    pub listen: Option<String>,
    /// Polling fallback: `(tenant_id, region, updated_at)` rows changed
    /// since `$1` (the greatest `updated_at` seen, as text).
    pub changes_query: Option<String>,
    /// How often `changes_query` runs.
    pub poll_interval: Duration,
}

impl Default for TenantMoves {
    fn default() -> TenantMoves {
        TenantMoves {
            table: None,
            id_column: "id".into(),
            region_column: "region".into(),
            guard: WriteGuard::Share,
            listen: Some("geogate_tenants".into()),
            changes_query: None,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// `[tenants] guard`: how a write whose region geogate injected is checked
/// against the directory in the same statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteGuard {
    /// `EXISTS (… FOR SHARE)`: also waits for a move in progress, so a
    /// write can never land in the old region after the move commits
    /// (needs UPDATE privilege on the directory table).
    Share,
    /// `EXISTS (…)` without a lock: a stale entry writes nothing, but a
    /// write racing the move's own commit may still land in the old region.
    Check,
    /// No guard.
    Off,
}

/// `[tables.NAME]`: a table's locality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableConfig {
    /// Replicated everywhere; statements on it need no region.
    Global,
    /// Partitioned by region.
    Regional(RegionalTable),
}

/// A regional table's columns and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionalTable {
    /// The partition column (lower case).
    pub partition_column: String,
    /// The column naming the tenant, if any (lower case).
    pub tenant_column: Option<String>,
    /// What to do when a statement names no region.
    pub on_missing_region: OnMissingRegion,
}

/// `[[users]]`: who may connect.
#[derive(Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// User name the client sends at startup.
    pub name: String,
    /// Cleartext password or a `SCRAM-SHA-256$…` verifier.
    pub password: String,
    /// How the client authenticates.
    pub auth: AuthMethod,
    /// Whether this user's unconstrained statements may scatter.
    pub allow_scatter: bool,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("allow_scatter", &self.allow_scatter)
            .finish_non_exhaustive()
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `regions.eu.gateway`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has the wrong types.
    #[error("{origin}: invalid TOML: {message}")]
    Syntax {
        /// File name or `<string>`.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but its values are wrong.
    #[error("{origin}: {} problem(s):\n{}", issues.len(), issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// File name or `<string>`.
        origin: String,
        /// Every problem found.
        issues: Vec<ConfigIssue>,
    },
}

impl Config {
    /// Reads and validates a file, substituting `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse_with_env(&text, &path.display().to_string(), |k| {
            std::env::var(k).ok()
        })?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates TOML text with no environment (for tests and `check`).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, "<string>", |_| None)
    }

    /// Reads and validates a file for the commands that connect nowhere
    /// (`geogate check`, `geogate explain`). A `${VAR}` whose variable is
    /// unset is read as the word `unset` instead of failing the load: those
    /// commands need the tables and regions, not the gateway passwords. The
    /// unset variables come back as warnings (one per variable), to print.
    /// If the file still fails (e.g. `local_region = "${REGION}"`), the
    /// unset variables are reported with the other problems.
    pub fn load_offline(path: &Path) -> Result<(Config, Vec<ConfigIssue>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (mut cfg, warnings) = Config::parse_offline(&text, &path.display().to_string(), |k| {
            std::env::var(k).ok()
        })?;
        cfg.path = Some(path.to_path_buf());
        Ok((cfg, warnings))
    }

    /// [`Config::load_offline`] on text, resolving `${VAR}` through `env`.
    pub fn parse_offline(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Config, Vec<ConfigIssue>), ConfigError> {
        let (text, unset) = substitute_env(text, &env, UNSET_OFFLINE);
        let mut warnings: Vec<ConfigIssue> = Vec::new();
        for var in unset {
            let key = format!("${{{var}}}");
            if !warnings.iter().any(|w| w.key == key) {
                warnings.push(ConfigIssue {
                    key,
                    message: format!(
                        "environment variable is not set; read as \"{UNSET_OFFLINE}\" (this command connects nowhere)"
                    ),
                });
            }
        }
        match Config::validate_text(&text, origin, Vec::new()) {
            Ok(cfg) => Ok((cfg, warnings)),
            Err(ConfigError::Invalid { origin, issues }) => Err(ConfigError::Invalid {
                origin,
                issues: warnings.into_iter().chain(issues).collect(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Parses and validates TOML text, resolving `${VAR}` through `env`.
    pub fn parse_with_env(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (text, unset) = substitute_env(text, &env, "");
        let issues = unset
            .into_iter()
            .map(|var| ConfigIssue {
                key: format!("${{{var}}}"),
                message: "environment variable is not set".into(),
            })
            .collect();
        Config::validate_text(&text, origin, issues)
    }

    /// TOML parsing and validation of substituted text; `issues` holds the
    /// problems found so far (unset variables).
    fn validate_text(
        text: &str,
        origin: &str,
        mut issues: Vec<ConfigIssue>,
    ) -> Result<Config, ConfigError> {
        let (raw, unknown) = raw::parse(text).map_err(|message| ConfigError::Syntax {
            origin: origin.to_string(),
            message,
        })?;
        issues.extend(unknown.iter().map(|path| raw::unknown_key(path)));
        let cfg = raw::validate(raw, &mut issues);
        match cfg {
            Some(cfg) if issues.is_empty() => Ok(cfg),
            _ => Err(ConfigError::Invalid {
                origin: origin.to_string(),
                issues,
            }),
        }
    }

    /// The policy for a table, matched case-insensitively and with or
    /// without a schema qualifier. `None`: not listed.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.get(&normalize_table_name(name))
    }

    /// The local region's configuration.
    pub fn local_region(&self) -> &RegionConfig {
        &self.regions[&self.proxy.local_region]
    }
}

/// Lower-cases a table name and drops its schema qualifier (`Public.Users` → `users`).
pub fn normalize_table_name(name: &str) -> String {
    name.rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches('"')
        .to_lowercase()
}

/// What an unset `${VAR}` becomes for the offline commands: a word that
/// is valid where secrets go (a password, a URL's user info), and plainly
/// not a real value in their output.
const UNSET_OFFLINE: &str = "unset";

/// Replaces `${VAR}` with the variable's value; `$${` escapes a literal `${`.
/// An unset variable is replaced by `unset_as`; the names of the unset
/// variables are returned, once per occurrence, in order.
fn substitute_env(
    text: &str,
    env: &impl Fn(&str) -> Option<String>,
    unset_as: &str,
) -> (String, Vec<String>) {
    let mut unset = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i]);
            out.push('{');
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(end) => {
                let var = &after[..end];
                match env(var) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push_str(unset_as);
                        unset.push(var.to_string());
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    (out, unset)
}

#[cfg(test)]
mod tests;
