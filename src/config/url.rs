//! Gateway URLs in libpq's connection URI syntax.
//!
//! Only the parts geogate uses are understood: user, password, host, port,
//! database and the query parameters `sslmode`, `sslrootcert`,
//! `application_name`, `connect_timeout` and `options`. Anything else is an
//! error, so a typo in a gateway URL is caught at load time, not at 3 a.m.

use std::fmt;
use std::time::Duration;

use super::suggest::did_you_mean;

/// How the proxy protects its connection to a gateway, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying the certificate.
    Prefer,
    /// Require TLS, without verifying the certificate (unless a root cert is given, as libpq).
    Require,
    /// Require TLS and a certificate signed by `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" | "allow" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// A parsed gateway URL. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewayUrl {
    /// Upstream user; `None` means "the client's user name".
    pub user: Option<String>,
    /// Upstream password, if the URL carries one.
    pub password: Option<String>,
    /// Host name or IP address.
    pub host: String,
    /// TCP port (default 5432).
    pub port: u16,
    /// Upstream database; `None` means "the database the client names".
    pub database: Option<String>,
    /// TLS policy towards the gateway.
    pub sslmode: SslMode,
    /// PEM file with the CA certificates trusted for `verify-ca`/`verify-full`.
    pub sslrootcert: Option<String>,
    /// `application_name` sent to the gateway when the client sends none.
    pub application_name: Option<String>,
    /// Limit on TCP connect + TLS + authentication.
    pub connect_timeout: Option<Duration>,
    /// Command-line options (`-c key=value …`) sent in the startup packet.
    pub options: Option<String>,
}

impl fmt::Debug for GatewayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatewayUrl({self})")
    }
}

impl fmt::Display for GatewayUrl {
    /// The URL with its password masked, fit for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        write!(f, "{}:{}", self.host, self.port)?;
        if let Some(db) = &self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

/// Why a gateway URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("must start with postgres:// or postgresql://")]
    Scheme,
    #[error("has an invalid port {0:?}")]
    Port(String),
    #[error("has no host")]
    NoHost,
    #[error("names several hosts; geogate connects to one gateway per region")]
    MultiHost,
    #[error("has an unknown parameter {name:?}{}", did_you_mean_suffix(*.suggestion))]
    UnknownParam {
        /// The parameter as written.
        name: String,
        /// A known parameter a few edits away, if any.
        suggestion: Option<&'static str>,
    },
    #[error("has an invalid {param} {value:?} (expected {expected})")]
    BadValue {
        /// The parameter.
        param: &'static str,
        /// The value as written (never a password: only sslmode and
        /// connect_timeout are checked this way).
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    #[error("has a bad percent-encoding")]
    Encoding,
}

impl GatewayUrl {
    /// Parses `postgres://[user[:password]@]host[:port][/database][?k=v&…]`.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let rest = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
            .ok_or(UrlError::Scheme)?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        // The password may itself contain '@' only percent-encoded, as in libpq.
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(decode(u)?), Some(decode(p)?)),
                None => (Some(decode(ui)?), None),
            },
            None => (None, None),
        };
        if hostport.contains(',') {
            return Err(UrlError::MultiHost);
        }
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let database = match path {
            Some(p) if !p.is_empty() => Some(decode(p)?),
            _ => None,
        };
        let mut url = GatewayUrl {
            user: user.filter(|u| !u.is_empty()),
            password,
            host,
            port,
            database,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: None,
            connect_timeout: None,
            options: None,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v)?;
            match k {
                "sslmode" => {
                    url.sslmode = SslMode::parse(&v).ok_or_else(|| UrlError::BadValue {
                        param: "sslmode",
                        value: v.clone(),
                        expected: "disable, allow, prefer, require, verify-ca or verify-full",
                    })?
                }
                "sslrootcert" => url.sslrootcert = Some(v),
                "application_name" => url.application_name = Some(v),
                "connect_timeout" => {
                    let secs: u64 = v.parse().map_err(|_| UrlError::BadValue {
                        param: "connect_timeout",
                        value: v.clone(),
                        expected: "whole seconds",
                    })?;
                    // libpq treats 0 as "wait forever"; a sidecar never should.
                    url.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
                }
                "options" => url.options = Some(v),
                "user" => url.user = Some(v),
                "password" => url.password = Some(v),
                "dbname" => url.database = Some(v),
                "host" => url.host = v,
                "port" => url.port = v.parse().map_err(|_| UrlError::Port(v.clone()))?,
                other => {
                    return Err(UrlError::UnknownParam {
                        name: other.to_string(),
                        suggestion: did_you_mean(other, PARAMS),
                    });
                }
            }
        }
        Ok(url)
    }

    /// `host:port`, bracketing IPv6 literals, for connecting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The query parameters [`GatewayUrl::parse`] understands.
const PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "application_name",
    "connect_timeout",
    "options",
    "user",
    "password",
    "dbname",
    "host",
    "port",
];

fn did_you_mean_suffix(suggestion: Option<&str>) -> String {
    suggestion.map_or(String::new(), |s| format!("; did you mean `{s}`?"))
}

fn split_host_port(hp: &str) -> Result<(String, u16), UrlError> {
    if let Some(rest) = hp.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(UrlError::NoHost)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| UrlError::Port(p.to_string()))?,
            None => 5432,
        };
        return Ok((host.to_string(), port));
    }
    match hp.rsplit_once(':') {
        Some((h, p)) => Ok((
            decode(h)?,
            p.parse().map_err(|_| UrlError::Port(p.to_string()))?,
        )),
        None => Ok((decode(hp)?, 5432)),
    }
}

fn decode(s: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(UrlError::Encoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::Encoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url_and_masks_password() {
        let u = GatewayUrl::parse(
            "postgres://geo%40gate:s%3Acret@db.eu:5433/app?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=5&application_name=gg",
        )
        .unwrap();
        assert_eq!(u.user.as_deref(), Some("geo@gate"));
        assert_eq!(u.password.as_deref(), Some("s:cret"));
        assert_eq!((u.host.as_str(), u.port), ("db.eu", 5433));
        assert_eq!(u.database.as_deref(), Some("app"));
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert_eq!(u.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(u.connect_timeout, Some(Duration::from_secs(5)));
        assert!(!format!("{u:?}").contains("cret"));
    }

    #[test]
    fn defaults_follow_libpq() {
        let u = GatewayUrl::parse("postgresql://localhost").unwrap();
        assert_eq!(u.port, 5432);
        assert_eq!(u.sslmode, SslMode::Prefer);
        assert_eq!(u.user, None);
        assert_eq!(u.database, None);
        assert_eq!(
            GatewayUrl::parse("postgres://[::1]:6000/x")
                .unwrap()
                .address(),
            "[::1]:6000"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        assert_eq!(GatewayUrl::parse("mysql://x"), Err(UrlError::Scheme));
        assert_eq!(
            GatewayUrl::parse("postgres://h:99999"),
            Err(UrlError::Port("99999".into()))
        );
        assert_eq!(
            GatewayUrl::parse("postgres://a,b/x"),
            Err(UrlError::MultiHost)
        );
        assert_eq!(
            GatewayUrl::parse("postgres://h/x?foo=1"),
            Err(UrlError::UnknownParam {
                name: "foo".into(),
                suggestion: None
            })
        );
        assert!(matches!(
            GatewayUrl::parse("postgres://h/x?sslmode=maybe"),
            Err(UrlError::BadValue {
                param: "sslmode",
                ..
            })
        ));
        assert_eq!(
            GatewayUrl::parse("postgres://h/%zz"),
            Err(UrlError::Encoding)
        );
    }

    #[test]
    fn errors_show_the_bad_value_and_suggest_the_parameter_meant() {
        let e = GatewayUrl::parse("postgres://h/x?sslmode=verify_full").unwrap_err();
        assert_eq!(
            e.to_string(),
            "has an invalid sslmode \"verify_full\" (expected disable, allow, prefer, require, verify-ca or verify-full)"
        );
        let e = GatewayUrl::parse("postgres://h/x?connect_timeout=5s").unwrap_err();
        assert!(e.to_string().contains("\"5s\""), "{e}");
        let e = GatewayUrl::parse("postgres://h/x?sslmod=require").unwrap_err();
        assert_eq!(
            e.to_string(),
            "has an unknown parameter \"sslmod\"; did you mean `sslmode`?"
        );
    }
}
