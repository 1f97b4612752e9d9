//! The per-client session state machine: simple and extended protocol,
//! transaction status, the per-statement decision point.
