//! Prometheus metrics, statement fingerprints and the HTTP endpoints.
