//! The one vocabulary of refusals: every reason geogate refuses a statement
//! or a session, with its SQLSTATE (docs/design.md, "Errors"), its `reason`
//! label of `geogate_rejections_total` and a hint, and the PostgreSQL
//! SQLSTATEs geogate sends or reads ([`sqlstate`]). Policy, session, region
//! health, metrics, logs and the client errors all take their codes from
//! here. It imports nothing, so every room may use it.

/// Why a statement (or a session) is refused: one SQLSTATE and one metric
/// label each. Both are contracts (docs/design.md): never change a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// GG001: names no region and may not scatter (also a table not in
    /// `[tables]` with `unlisted_tables = "reject"`).
    NoRegion,
    /// GG002: tenant not in the tenant directory.
    UnknownTenant,
    /// GG003: region value not configured (or NULL).
    UnknownRegion,
    /// GG004: the region and its fallbacks are down.
    NoGateway,
    /// GG005: cross-region transaction refused.
    CrossRegionTxn,
    /// GG006: unparsable and `on_parse_error = "reject"`.
    ParseError,
    /// GG007: tenant directory unavailable.
    TenantDirectory,
}

impl RejectReason {
    /// Every reason, in SQLSTATE order (the metric's closed label set).
    pub const ALL: &'static [RejectReason] = &[
        RejectReason::NoRegion,
        RejectReason::UnknownTenant,
        RejectReason::UnknownRegion,
        RejectReason::NoGateway,
        RejectReason::CrossRegionTxn,
        RejectReason::ParseError,
        RejectReason::TenantDirectory,
    ];

    /// The SQLSTATE the client receives.
    pub const fn sqlstate(self) -> &'static str {
        match self {
            RejectReason::NoRegion => "GG001",
            RejectReason::UnknownTenant => "GG002",
            RejectReason::UnknownRegion => "GG003",
            RejectReason::NoGateway => "GG004",
            RejectReason::CrossRegionTxn => "GG005",
            RejectReason::ParseError => "GG006",
            RejectReason::TenantDirectory => "GG007",
        }
    }

    /// The `reason` label of `geogate_rejections_total` (also in logs and
    /// `/statements`).
    pub const fn label(self) -> &'static str {
        match self {
            RejectReason::NoRegion => "no_region",
            RejectReason::UnknownTenant => "unknown_tenant",
            RejectReason::UnknownRegion => "unknown_region",
            RejectReason::NoGateway => "no_gateway",
            RejectReason::CrossRegionTxn => "cross_region_txn",
            RejectReason::ParseError => "parse_error",
            RejectReason::TenantDirectory => "tenant_directory",
        }
    }

    /// The label value, like the other label enums of `metrics`.
    pub const fn as_str(self) -> &'static str {
        self.label()
    }

    /// What the client can do about it, in general terms (the message of
    /// each refusal names the table and column concerned).
    pub const fn hint(self) -> &'static str {
        match self {
            RejectReason::NoRegion => {
                "add a predicate on the partition column, or on the tenant column"
            }
            RejectReason::UnknownTenant => "check the tenant id, or name the region",
            RejectReason::UnknownRegion => "use one of the configured [regions] names",
            RejectReason::NoGateway => "retry once the region's gateway is back",
            RejectReason::CrossRegionTxn => {
                "keep a transaction in one region, or send its statements separately"
            }
            RejectReason::ParseError => "simplify the statement, or name its region",
            RejectReason::TenantDirectory => "retry, or name the region",
        }
    }

    /// Parses a label value back (the inverse of [`label`](Self::label)).
    pub fn parse(s: &str) -> Option<RejectReason> {
        RejectReason::ALL.iter().copied().find(|r| r.label() == s)
    }

    /// Position in [`Self::ALL`], for the metrics' handle tables.
    pub(crate) fn idx(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// PostgreSQL SQLSTATEs geogate sends to clients or reads from gateways,
/// named as in PostgreSQL's errcodes table.
pub mod sqlstate {
    /// `08006`: the gateway connection broke under the session.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// `08P01`: a peer broke the protocol.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// `0A000`: something geogate does not support.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `25P02`: a statement in a failed transaction.
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    /// Class `28`: invalid authorization specification (any refused login).
    pub const CLASS_INVALID_AUTHORIZATION: &str = "28";
    /// `28000`: the startup is refused (no user, TLS required).
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    /// `23502`: a NOT NULL column got NULL (a guarded INSERT whose
    /// tenant moved: its region subquery found no row).
    pub const NOT_NULL_VIOLATION: &str = "23502";
    /// `23503`: a foreign key found no row (a write for a moved tenant).
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    /// `28P01`: authentication failed.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// `3D000`: the database does not exist.
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    /// `40001`: a serialization failure (a write that raced a move).
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// `53300`: too many connections.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// `57P01`: the server is shutting down.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// `57P03`: the server is starting up.
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_codes_are_the_contract() {
        let codes: Vec<&str> = RejectReason::ALL.iter().map(|r| r.sqlstate()).collect();
        assert_eq!(
            codes,
            [
                "GG001", "GG002", "GG003", "GG004", "GG005", "GG006", "GG007"
            ]
        );
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(RejectReason::parse(r.label()), Some(*r));
            assert_eq!(r.idx(), i);
        }
    }
}
