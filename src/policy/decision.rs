//! The decision for a statement and the rejections (their reasons and
//! SQLSTATEs are the vocabulary of [`crate::refusal`]).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::analyze::TableRef;
use crate::refusal::RejectReason;

/// Defines a name a decision holds: an `Arc<str>` shared with the policy
/// [`Settings`](super::Settings) when the name is configured, so deciding
/// a statement copies no name. Reads like a `&str` (`as_str`, `Deref`,
/// `Borrow<str>`, `Display`); `Debug` and serde show the string.
macro_rules! shared_name {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name, shared.
            pub fn shared(&self) -> &Arc<str> {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl From<Arc<str>> for $name {
            fn from(name: Arc<str>) -> $name {
                $name(name)
            }
        }

        impl From<&str> for $name {
            fn from(name: &str) -> $name {
                $name(Arc::from(name))
            }
        }

        impl From<String> for $name {
            fn from(name: String) -> $name {
                $name(Arc::from(name))
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                *self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                *self.0 == **other
            }
        }
    };
}

shared_name! {
    /// A region as a decision names it (`eu`; offline also `$1`, `tenant($1)`).
    RegionName
}

shared_name! {
    /// A table as a decision names it (normalised, as in `[tables]`).
    TableName
}

/// The tables a decision names (sorted): reads as a slice of
/// [`TableName`]s. The usual single table is kept inline, so a decision
/// allocates (and frees) no list for it.
pub type Tables = crate::one_or_many::OneOrMany<TableName>;

/// What to do with a statement, plus what to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub outcome: Outcome,
    /// Tables named (sorted).
    pub tables: Tables,
    /// The statement's main table for the `table` metric label: the
    /// rejected table, else the first regional reference, else the first
    /// table named.
    pub table: Option<TableName>,
    /// UPDATEs that set the partition column (`geogate_region_moves_total`).
    pub moves: Vec<RegionMove>,
    /// A statement could not be parsed (`geogate_parse_errors_total`);
    /// with `on_parse_error = "forward"` the outcome is `Global`.
    pub parse_error: bool,
    /// A multi-statement text (one implicit transaction) whose statements
    /// are each confined to one region, not all the same: a cross-region
    /// transaction, run in the first statement's region.
    pub cross_region: bool,
}

/// The verdict of docs/design.md, "Decisions".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Touches no regional table: the local (or the transaction's) gateway.
    Global,
    /// Every regional reference confined to this one region.
    Route {
        /// The region.
        region: RegionName,
    },
    /// Confined to `region` once `sql` is forwarded instead of the original.
    Rewrite {
        /// The region.
        region: RegionName,
        /// The rewritten text with the region as a literal (simple protocol).
        sql: String,
        /// The rewritten text with the region as an added parameter
        /// (extended protocol); `None` for multi-statement texts.
        parameterized: Option<ParamRewrite>,
    },
    /// Several regions, or an unconstrained reference allowed to scatter.
    Scatter {
        /// Sorted region names (all configured regions for `Allowed`).
        regions: Vec<String>,
        /// Why (`geogate_scatter_total{cause}`).
        cause: ScatterCause,
    },
    /// Refused.
    Reject(Rejection),
}

/// The extended-protocol form of a rewrite: Parse `sql` once per prepared
/// statement; at every Bind append the region as text-format parameter
/// `$region_param` (and hide it from ParameterDescription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRewrite {
    /// The statement with `q.region = $K` injected.
    pub sql: String,
    /// K: one more than the highest parameter of the original.
    pub region_param: u32,
}

/// Why a statement scatters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScatterCause {
    /// It names several regions.
    MultiRegion,
    /// An unconstrained reference may scatter (table `allow`, user
    /// `allow_scatter`, or the hint comment).
    Allowed,
}

impl ScatterCause {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ScatterCause::MultiRegion => "multi_region",
            ScatterCause::Allowed => "allowed",
        }
    }
}

/// An UPDATE that moves rows to another region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionMove {
    /// The table.
    pub table: String,
    /// Where the rows are now, when the statement names one region.
    pub from: Option<String>,
    /// Where they go, when it is a literal or parameter naming a configured region.
    pub to: Option<String>,
}

/// A refusal: SQLSTATE, metric reason, table, and a message naming the
/// table, the column and what to add. Never holds a literal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// The table concerned, if one.
    pub table: Option<String>,
    /// The client-facing message.
    pub message: String,
}

impl Rejection {
    /// The SQLSTATE.
    pub fn sqlstate(&self) -> &'static str {
        self.reason.sqlstate()
    }

    fn new(reason: RejectReason, table: Option<&str>, message: String) -> Rejection {
        Rejection {
            reason,
            table: table.map(str::to_string),
            message,
        }
    }

    pub(crate) fn no_region(r: &TableRef) -> Rejection {
        let tenant = match &r.tenant_column {
            Some(t) => format!(" or filter by {t}"),
            None => String::new(),
        };
        Rejection::new(
            RejectReason::NoRegion,
            Some(&r.table),
            format!(
                "geogate: {} has no predicate on {}; add \"{} = …\"{}",
                r.table, r.partition_column, r.partition_column, tenant
            ),
        )
    }

    /// No region for `r`; in a join, the predicate that carries the
    /// region of `partner` to it.
    pub(crate) fn no_region_in_join(r: &TableRef, partner: Option<&TableRef>) -> Rejection {
        let (Some(p), false) = (partner, r.qualifier_name().is_empty()) else {
            return Rejection::no_region(r);
        };
        let tenant = match &r.tenant_column {
            Some(t) => format!(" or filter {}.{t}", r.qualifier_name()),
            None => String::new(),
        };
        Rejection::new(
            RejectReason::NoRegion,
            Some(&r.table),
            format!(
                "geogate: {} ({}) has no predicate on {}; add \"{}.{} = {}.{}\"{}",
                r.table,
                r.qualifier_name(),
                r.partition_column,
                r.qualifier_name(),
                r.partition_column,
                p.qualifier_name(),
                p.partition_column,
                tenant
            ),
        )
    }

    /// COPY FROM (IMPORT INTO) a regional table without its partition
    /// column: the rows would land wherever the default puts them.
    pub(crate) fn copy_without_region(r: &TableRef) -> Rejection {
        Rejection::new(
            RejectReason::NoRegion,
            Some(&r.table),
            format!(
                "geogate: COPY into {} without the {} column; list {} in the column list so every row carries its region",
                r.table, r.partition_column, r.partition_column
            ),
        )
    }

    pub(crate) fn unknown_region(r: &TableRef) -> Rejection {
        Rejection::new(
            RejectReason::UnknownRegion,
            Some(&r.table),
            format!(
                "geogate: {} is filtered on {} by a value that is not a configured region; use one of the [regions] names",
                r.table, r.partition_column
            ),
        )
    }

    pub(crate) fn tenant_region_unknown(r: &TableRef) -> Rejection {
        Rejection::new(
            RejectReason::UnknownRegion,
            Some(&r.table),
            format!(
                "geogate: the tenant named by {}.{} lives in a region that is not configured; add it to [regions]",
                r.table,
                r.tenant_column.as_deref().unwrap_or("?")
            ),
        )
    }

    pub(crate) fn unknown_tenant(r: &TableRef) -> Rejection {
        Rejection::new(
            RejectReason::UnknownTenant,
            Some(&r.table),
            format!(
                "geogate: the tenant named by {}.{} is not in the tenant directory; add \"{} = …\" or check the tenant id",
                r.table,
                r.tenant_column.as_deref().unwrap_or("?"),
                r.partition_column
            ),
        )
    }

    pub(crate) fn directory(r: &TableRef) -> Rejection {
        Rejection::new(
            RejectReason::TenantDirectory,
            Some(&r.table),
            format!(
                "geogate: tenant directory unavailable, cannot find the region of {}; add \"{} = …\" or retry",
                r.table, r.partition_column
            ),
        )
    }

    /// A statement geogate could not parse or fully analyse; `why` never
    /// holds a literal value.
    pub(crate) fn not_analysed(fingerprint: &str, why: &str) -> Rejection {
        let fp: String = fingerprint.chars().take(80).collect();
        Rejection::new(
            RejectReason::ParseError,
            None,
            format!(
                "geogate: statement could not be parsed or analysed ({why}) and proxy.on_parse_error = \"reject\" ({fp})"
            ),
        )
    }

    #[allow(dead_code)]
    pub(crate) fn parse_error(fingerprint: &str) -> Rejection {
        let fp: String = fingerprint.chars().take(80).collect();
        Rejection::new(
            RejectReason::ParseError,
            None,
            format!(
                "geogate: statement could not be parsed and proxy.on_parse_error = \"reject\" ({fp})"
            ),
        )
    }

    pub(crate) fn unlisted(table: &str) -> Rejection {
        Rejection::new(
            RejectReason::NoRegion,
            Some(table),
            format!(
                "geogate: {table} is not listed in [tables] and proxy.unlisted_tables = \"reject\"; add [tables.{table}]"
            ),
        )
    }
}

impl Decision {
    /// A `global` decision touching nothing.
    pub fn global() -> Decision {
        Decision {
            outcome: Outcome::Global,
            tables: Tables::default(),
            table: None,
            moves: Vec::new(),
            parse_error: false,
            cross_region: false,
        }
    }

    /// The decision label: `global`, `route`, `rewrite`, `scatter`, `reject`.
    pub fn label(&self) -> &'static str {
        match self.outcome {
            Outcome::Global => "global",
            Outcome::Route { .. } => "route",
            Outcome::Rewrite { .. } => "rewrite",
            Outcome::Scatter { .. } => "scatter",
            Outcome::Reject(_) => "reject",
        }
    }

    /// Sorted regions (empty for global and reject).
    pub fn regions(&self) -> Vec<String> {
        match &self.outcome {
            Outcome::Route { region } | Outcome::Rewrite { region, .. } => vec![region.to_string()],
            Outcome::Scatter { regions, .. } => regions.clone(),
            _ => Vec::new(),
        }
    }
}
