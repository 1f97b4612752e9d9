//! Client side of the PostgreSQL wire protocol: framing on top of
//! `pgwire::messages`, startup (SSL/GSS/cancel), client authentication.
