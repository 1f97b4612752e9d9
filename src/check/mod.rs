//! `geogate check` and `geogate explain`: offline analysis of SQL.
//!
//! Both load the config, optionally a tenants CSV, and run the same
//! analyzer and policy the proxy runs, without connecting anywhere.
//! Exit status: 0 done; 1 `--fail-on` matched; 2 bad usage or input
//! (config, CSV, unreadable file).

mod output;
mod tenants_csv;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;

use crate::analyze::{Analyzer, Params};
use crate::config::Config;
use crate::policy::{Decision, Settings, decide};

/// Arguments of `geogate check` (docs/design.md, "Commands").
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The geogate config file.
    #[arg(long)]
    pub config: PathBuf,
    /// CSV of `tenant_id,region` with a header.
    #[arg(long)]
    pub tenants: Option<PathBuf>,
    /// Output format: text or jsonl.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Exit 1 when a statement got one of these decisions (e.g. `reject,scatter`).
    #[arg(long)]
    pub fail_on: Option<String>,
    /// Decide as this `[[users]]` entry (its `allow_scatter`).
    #[arg(long)]
    pub user: Option<String>,
    /// SQL file to read, or `-` for standard input (the default).
    pub file: Option<PathBuf>,
}

/// Arguments of `geogate explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The geogate config file.
    #[arg(long)]
    pub config: PathBuf,
    /// CSV of `tenant_id,region` with a header.
    #[arg(long)]
    pub tenants: Option<PathBuf>,
    /// Decide as this `[[users]]` entry (its `allow_scatter`).
    #[arg(long)]
    pub user: Option<String>,
    /// The statement.
    pub sql: String,
}

/// One analysed statement of a checked file.
pub(crate) struct Checked {
    /// 1-based line where the statement starts.
    pub line: usize,
    /// The statement text (trimmed).
    pub sql: String,
    /// Its decision.
    pub decision: Decision,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The parse error, if any.
    pub parse_error: Option<String>,
}

/// Why `check` or `explain` cannot run (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The config does not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `--user` names no `[[users]]` entry.
    #[error("--user {user}: no such [[users]] entry in {config}")]
    UnknownUser {
        /// The name given.
        user: String,
        /// The config file.
        config: String,
    },
    /// The tenants CSV is unreadable or malformed.
    #[error("{0}")]
    Tenants(String),
    /// The SQL input cannot be read.
    #[error("cannot read {name}: {source}")]
    Read {
        /// File name or `standard input`.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SQL input is not UTF-8.
    #[error("{name} is not UTF-8 (byte {at})")]
    NotUtf8 {
        /// File name.
        name: String,
        /// Offset of the first invalid byte.
        at: usize,
    },
}

/// Everything `check` and `explain` need, loaded.
struct Env {
    analyzer: Analyzer,
    settings: Settings,
    tenants: HashMap<String, String>,
}

fn load(
    config: &std::path::Path,
    tenants: Option<&PathBuf>,
    user: Option<&str>,
) -> Result<Env, CheckError> {
    // Unset secrets do not matter here: nothing is connected to.
    let (cfg, warnings) = Config::load_offline(config)?;
    for w in warnings {
        eprintln!("geogate: warning: {}: {w}", config.display());
    }
    if let Some(u) = user
        && !cfg.users.contains_key(u)
    {
        return Err(CheckError::UnknownUser {
            user: u.to_string(),
            config: config.display().to_string(),
        });
    }
    let tenants = match tenants {
        Some(p) => tenants_csv::load(p).map_err(CheckError::Tenants)?,
        None => HashMap::new(),
    };
    Ok(Env {
        analyzer: Analyzer::new(&cfg).with_prescan(false),
        settings: Settings::from_config(&cfg, user),
        tenants,
    })
}

const DECISIONS: &[&str] = &["global", "route", "rewrite", "scatter", "reject"];

/// Runs `geogate check`; returns the process exit code.
pub fn run_check(args: &CheckArgs) -> i32 {
    let json = match args.format.as_str() {
        "text" => false,
        "jsonl" => true,
        other => {
            eprintln!("geogate check: --format {other}: expected text or jsonl");
            return 2;
        }
    };
    let fail_on: BTreeSet<String> = match &args.fail_on {
        None => BTreeSet::new(),
        Some(list) => {
            let set: BTreeSet<String> = list
                .split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(bad) = set.iter().find(|s| !DECISIONS.contains(&s.as_str())) {
                eprintln!(
                    "geogate check: --fail-on {bad}: expected a list of {}",
                    DECISIONS.join(", ")
                );
                return 2;
            }
            set
        }
    };
    let env = match load(&args.config, args.tenants.as_ref(), args.user.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("geogate check: {e}");
            return 2;
        }
    };
    let (name, text) = match read_input(args.file.as_ref()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("geogate check: {e}");
            return 2;
        }
    };
    let checked = check_text(&env, &text);
    let mut out = String::new();
    for c in &checked {
        if json {
            out.push_str(&output::jsonl(c));
        } else {
            out.push_str(&output::text(c));
        }
        out.push('\n');
    }
    if !json {
        out.push_str(&output::summary(&name, &checked));
    }
    print!("{out}");
    let failed = checked.iter().any(|c| fail_on.contains(c.decision.label()));
    i32::from(failed)
}

/// Runs `geogate explain`; returns the process exit code.
pub fn run_explain(args: &ExplainArgs) -> i32 {
    let env = match load(&args.config, args.tenants.as_ref(), args.user.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("geogate explain: {e}");
            return 2;
        }
    };
    let a = env.analyzer.analyze(&args.sql);
    if a.statements.is_empty() {
        eprintln!("geogate explain: no statement given");
        return 2;
    }
    let d = decide(&a, &Params::NONE, &env.tenants, &env.settings);
    print!("{}", output::explain(&a, &d));
    0
}

fn read_input(file: Option<&PathBuf>) -> Result<(String, String), CheckError> {
    match file {
        Some(p) if p.as_os_str() != "-" => {
            let name = p.display().to_string();
            let bytes = std::fs::read(p).map_err(|source| CheckError::Read {
                name: name.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes).map_err(|e| CheckError::NotUtf8 {
                name: name.clone(),
                at: e.utf8_error().valid_up_to(),
            })?;
            Ok((name, text))
        }
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| CheckError::Read {
                    name: "standard input".into(),
                    source,
                })?;
            Ok(("<stdin>".into(), text))
        }
    }
}

/// Analyses every statement of a text, split as psql splits it. psql
/// meta-commands (lines starting with a backslash) are skipped.
fn check_text(env: &Env, text: &str) -> Vec<Checked> {
    let cleaned = blank_meta_commands(text);
    let mut out = Vec::new();
    for range in crate::analyze::lex::split_statements(&cleaned, true) {
        let stmt = &cleaned[range.clone()];
        // Number and show the statement from its first token, after any
        // leading comments (they are still analysed: hints live there).
        let lead = crate::analyze::lex::Lexer::new(stmt)
            .find(|t| {
                !matches!(
                    t.kind,
                    crate::analyze::lex::Tok::Space | crate::analyze::lex::Tok::Comment
                )
            })
            .map(|t| t.start)
            .unwrap_or(0);
        let line = 1 + cleaned[..range.start + lead].matches('\n').count();
        let a = env.analyzer.analyze(stmt);
        let d = decide(&a, &Params::NONE, &env.tenants, &env.settings);
        out.push(Checked {
            line,
            sql: stmt[lead..].trim().to_string(),
            fingerprint: a.fingerprint().into_owned(),
            parse_error: a
                .statements
                .iter()
                .find_map(|s| s.template.parse_error.clone()),
            decision: d,
        });
    }
    out
}

/// Replaces psql meta-command lines (`\set`, `\i`, …) with blank lines,
/// keeping line numbers. A line counts as a meta-command only where the
/// proxy's lexer is between statements (no statement text since the last
/// `;`, not inside a string, identifier or comment), so the statements
/// `check` decides are exactly those the proxy would see.
fn blank_meta_commands(text: &str) -> String {
    use crate::analyze::lex::{Lexer, Tok};
    if !text.contains('\\') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut base = 0;
    let mut in_statement = false;
    let mut depth = 0usize;
    'restart: while base < text.len() {
        let rest = &text[base..];
        for t in Lexer::new(rest) {
            let (start, end) = (base + t.start, base + t.end);
            let tok = &text[start..end];
            if t.kind == Tok::Punct && tok == "\\" && !in_statement {
                let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                if text[line_start..start].trim().is_empty() {
                    // A psql meta-command: psql reads it to the end of
                    // the line; the proxy never sees it.
                    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
                    base = line_end;
                    continue 'restart;
                }
            }
            match t.kind {
                Tok::Space | Tok::Comment => {}
                Tok::Open => {
                    depth += 1;
                    in_statement = true;
                }
                Tok::Close => depth = depth.saturating_sub(1),
                Tok::Semicolon if depth == 0 => in_statement = false,
                _ => in_statement = true,
            }
            out.push_str(tok);
        }
        break;
    }
    out
}
