//! Client-side TLS: the rustls server configuration built from
//! `proxy.tls_cert` / `proxy.tls_key` (PEM files), with the ring provider.
//! Built at start and again on every reload, so a renewed certificate is
//! picked up by SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the client TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{key} {path}: {why}")]
    File {
        /// `proxy.tls_cert` or `proxy.tls_key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("proxy.tls_cert/tls_key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The acceptor for `cert` (PEM chain, leaf first) and `key` (PEM private key).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServerTlsError> {
    let chain = load_chain(cert)?;
    let key = load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // PostgreSQL 17 clients offer ALPN "postgresql"; older ones offer none.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    let err = |why: String| ServerTlsError::File {
        key: "proxy.tls_cert",
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let chain = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if chain.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ServerTlsError> {
    let err = |why: String| ServerTlsError::File {
        key: "proxy.tls_key",
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    rustls_pemfile::private_key(&mut std::io::BufReader::new(file))
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err("no PEM private key found".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_their_key() {
        let dir = std::env::temp_dir().join(format!("geogate-wire-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let Err(e) = acceptor(&dir.join("nope.pem"), &empty) else {
            panic!("a missing file must fail")
        };
        assert!(e.to_string().starts_with("proxy.tls_cert "), "{e}");
        let Err(e) = acceptor(&empty, &empty) else {
            panic!("a file without PEM must fail")
        };
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
