//! `geogate check` and `geogate explain`: offline analysis of SQL.

use std::path::PathBuf;

/// Arguments of `geogate check` (DESIGN.md, "Commands — contract").
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
    /// The statement.
    pub sql: String,
}

/// Runs `geogate check`; returns the process exit code.
pub fn run_check(_args: &CheckArgs) -> i32 {
    eprintln!("geogate check: not yet implemented");
    2
}

/// Runs `geogate explain`; returns the process exit code.
pub fn run_explain(_args: &ExplainArgs) -> i32 {
    eprintln!("geogate explain: not yet implemented");
    2
}
