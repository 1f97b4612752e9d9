//! The accept loop: one task per client, connection limit, shutdown.

use crate::config::Config;

/// Runs the proxy until SIGTERM/SIGINT.
pub async fn serve(_config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Err("serve: not yet implemented".into())
}
