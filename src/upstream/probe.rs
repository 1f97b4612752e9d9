//! Would a session work? The probe behind region health: a full startup
//! (TCP, TLS per `sslmode`, authentication) with the gateway's credentials
//! and a `SELECT 1`, through the same connect code as sessions. A server
//! that answers an SSLRequest but still refuses sessions (`57P03` while it
//! starts up or recovers) is not up.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BoxFuture, Gateway, Probe, StartupParams, Upstream, UpstreamError};
use crate::refusal::sqlstate;

/// Startup parameter naming the probe's connections in `pg_stat_activity`.
pub const PROBE_APPLICATION_NAME: &str = "geogate-probe";

/// Probes gateways by region name.
pub struct GatewayProbe {
    gateways: BTreeMap<Arc<str>, Gateway>,
}

impl GatewayProbe {
    /// A probe for these gateways.
    pub fn new(gateways: BTreeMap<Arc<str>, Gateway>) -> GatewayProbe {
        GatewayProbe { gateways }
    }
}

/// Who the probe logs in as: the URL's user (or `geogate`) and database (or
/// one named like the user, as libpq does), like the tenant directory.
fn probe_startup(gw: &Gateway) -> StartupParams {
    let user = gw.url.user.clone().unwrap_or_else(|| "geogate".into());
    let database = gw.url.database.clone().unwrap_or_else(|| user.clone());
    StartupParams {
        user,
        database,
        params: vec![(
            "application_name".to_string(),
            PROBE_APPLICATION_NAME.to_string(),
        )],
    }
}

/// Whether a failed probe still shows a server that serves sessions.
///
/// With credentials pinned in the URL, every session logs in as the probe
/// does, so a refused login is an outage for all of them. Without them the
/// probe has no real session's credentials: a server that gets as far as
/// refusing `geogate` (`28xxx`) or its database (`3D000`) has finished
/// starting up and runs authentication, which is what "up" can mean then.
fn refusal_means_up(gw: &Gateway, err: &UpstreamError) -> bool {
    let UpstreamError::Server { code, .. } = err else {
        return false;
    };
    let login = code.starts_with(sqlstate::CLASS_INVALID_AUTHORIZATION) && gw.url.user.is_none();
    let database = code == sqlstate::INVALID_CATALOG_NAME && gw.url.database.is_none();
    login || database
}

/// One probe: startup, `SELECT 1`, Terminate.
pub async fn probe_gateway(gw: &Gateway) -> Result<(), UpstreamError> {
    let mut up = match Upstream::connect(gw, &probe_startup(gw)).await {
        Ok(up) => up,
        Err(e) if refusal_means_up(gw, &e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let ran = up.run_hidden(b"Q\0\0\0\x0dSELECT 1\0", 1).await;
    up.terminate().await;
    ran
}

impl Probe for GatewayProbe {
    fn probe<'a>(&'a self, region: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(gw) = self.gateways.get(region) else {
                return false;
            };
            match probe_gateway(gw).await {
                Ok(()) => true,
                Err(e) => {
                    // Server errors by SQLSTATE only: no text from the server.
                    let why = match &e {
                        UpstreamError::Server { code, .. } => format!("SQLSTATE {code}"),
                        other => other.to_string(),
                    };
                    tracing::debug!(region, error = %why, "gateway probe failed");
                    false
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn gateway(url: &str) -> Gateway {
        let config = Config::parse(&format!(
            r#"
            [proxy]
            listen = "127.0.0.1:6432"
            local_region = "eu"
            [regions.eu]
            gateway = "{url}"
            [[users]]
            name = "app"
            password = "x"
            "#
        ))
        .expect("test config is valid");
        Gateway::new(&config.regions["eu"]).expect("no TLS")
    }

    fn server(code: &str) -> UpstreamError {
        UpstreamError::Server {
            code: code.into(),
            frame: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_refused_login_is_an_outage_only_when_the_url_pins_the_credentials() {
        let pinned = gateway("postgres://geogate:pw@127.0.0.1:5433/app?sslmode=disable");
        let open = gateway("postgres://127.0.0.1:5433?sslmode=disable");
        assert!(!refusal_means_up(&pinned, &server("28P01")));
        assert!(refusal_means_up(&open, &server("28P01")));
        assert!(!refusal_means_up(&pinned, &server("3D000")));
        assert!(refusal_means_up(&open, &server("3D000")));
        // A server starting up refuses everyone: never up.
        assert!(!refusal_means_up(&open, &server("57P03")));
        assert!(!refusal_means_up(&open, &UpstreamError::Timeout));
    }

    #[test]
    fn the_probe_logs_in_as_the_url_user_or_geogate() {
        let pinned = probe_startup(&gateway("postgres://ops@127.0.0.1:5433/app"));
        assert_eq!(
            (pinned.user.as_str(), pinned.database.as_str()),
            ("ops", "app")
        );
        let open = probe_startup(&gateway("postgres://127.0.0.1:5433"));
        assert_eq!(
            (open.user.as_str(), open.database.as_str()),
            ("geogate", "geogate")
        );
    }

    #[test]
    fn a_session_connect_failure_is_a_health_signal_unless_it_is_the_clients_own() {
        let pinned = gateway("postgres://geogate:pw@127.0.0.1:5433/app?sslmode=disable");
        let open = gateway("postgres://127.0.0.1:5433?sslmode=disable");
        let refused = UpstreamError::Io(std::io::ErrorKind::ConnectionRefused.into());
        for gw in [&pinned, &open] {
            assert!(refused.is_health_signal(gw));
            assert!(UpstreamError::Timeout.is_health_signal(gw));
            assert!(server("57P03").is_health_signal(gw), "starting up");
            assert!(!server("53300").is_health_signal(gw), "full, not down");
            assert!(!server("42501").is_health_signal(gw));
        }
        assert!(
            server("28P01").is_health_signal(&pinned),
            "geogate's own login"
        );
        assert!(!server("28P01").is_health_signal(&open), "one user's login");
        assert!(server("3D000").is_health_signal(&pinned));
        assert!(
            !server("3D000").is_health_signal(&open),
            "the client's database"
        );
    }
}
