//! The `geogate` command: thin, everything lives in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use geogate::check::{self, CheckArgs, ExplainArgs};
use geogate::config::Config;
use geogate::logging::LogFormat;

/// A PostgreSQL-wire sidecar that keeps every statement inside its region.
#[derive(Parser)]
#[command(name = "geogate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The geogate config file (re-read on SIGHUP).
        #[arg(long)]
        config: PathBuf,
        /// Log line format on stderr: `text` or `json` (filter with RUST_LOG).
        #[arg(long, default_value = "text")]
        log_format: LogFormat,
    },
    /// Analyse statements offline and print one decision per statement.
    Check(CheckArgs),
    /// Analyse one statement and explain the decision.
    Explain(ExplainArgs),
    /// Move a tenant to another region in one transaction (docs/tenant-moves.md).
    MoveTenant {
        /// The geogate config file (its local region's gateway runs the move).
        #[arg(long)]
        config: PathBuf,
        /// The tenant id.
        tenant: String,
        /// The region to move it to.
        #[arg(long)]
        to: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => serve(&config, log_format),
        Command::Check(args) => ExitCode::from(check::run_check(&args) as u8),
        Command::Explain(args) => ExitCode::from(check::run_explain(&args) as u8),
        Command::MoveTenant { config, tenant, to } => {
            ExitCode::from(geogate::movetenant::run_command(&config, &tenant, &to))
        }
    }
}

fn serve(path: &std::path::Path, log_format: LogFormat) -> ExitCode {
    if let Err(e) = geogate::logging::init(log_format) {
        eprintln!("geogate: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("geogate: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread (the default) is a single event loop, as PgBouncer: no
    // cross-thread wake-ups, the fastest on small machines (BENCHMARKS.md).
    let runtime = match config.proxy.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    match runtime.block_on(geogate::server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geogate: {e}");
            ExitCode::FAILURE
        }
    }
}
