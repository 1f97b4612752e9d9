//! Connections to regional gateways: connect, TLS, authentication, and the
//! byte-level relay of backend messages.
