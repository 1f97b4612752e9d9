//! Bounded label values: the enums behind `decision`, `cause` and `result`
//! (`reason` is [`crate::refusal::RejectReason`], with its SQLSTATE), and the configured table/region names behind `table`, `region`,
//! `from` and `to`.
//!
//! Every label value a metric can carry comes from here, so the number of
//! series is fixed by the config, never by client input.

use std::collections::HashMap;

use crate::config::normalize_table_name;

/// Label value for a name that is not in the config (an unlisted table, a
/// region value the config does not know).
pub const OTHER: &str = "other";
/// Label value when there is no table or region (`SELECT 1`, a rejection).
pub const NONE: &str = "none";

macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value as it appears in `/metrics`, logs and `/statements`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            /// Parses a label value back (for `/statements?decision=…`).
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($label => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Position in [`Self::ALL`], for handle tables.
            pub(crate) fn idx(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// The `decision` label: what the policy decided for a statement.
    DecisionLabel {
        /// Touches no regional table.
        Global => "global",
        /// Confined to one region.
        Route => "route",
        /// Region injected from the tenant predicate.
        Rewrite => "rewrite",
        /// Runs over several regions.
        Scatter => "scatter",
        /// Refused (or, in warn/observe mode, would have been).
        Reject => "reject",
    }
}

label_enum! {
    /// The `cause` label of `geogate_scatter_total`.
    ScatterCause {
        /// The statement names several regions (IN list, UNION, cross-region join).
        MultiRegion => "multi_region",
        /// Unconstrained but allowed: `on_missing_region = "allow"`, a user
        /// with `allow_scatter`, or the `/*+ geogate:allow_scatter */` hint.
        Allowed => "allowed",
        /// Forwarded unchanged to the local gateway because of `mode = "observe"`.
        Observe => "observe",
    }
}

label_enum! {
    /// The `result` label of `geogate_tenant_cache_lookups_total`.
    CacheResult {
        /// Found and fresh.
        Hit => "hit",
        /// Not in the cache.
        Miss => "miss",
        /// Found, but older than the refresh period (served anyway or re-looked-up).
        Stale => "stale",
    }
}

/// Up to this many label values, [`NameSet::index_of`] compares names in
/// turn instead of hashing (SipHash of the name costs more than a few
/// length-checked comparisons).
const LINEAR_SCAN_MAX: usize = 16;

/// A fixed set of configured names plus [`OTHER`] and [`NONE`]; maps any
/// name to an index into per-label handle tables.
#[derive(Debug, Clone)]
pub(crate) struct NameSet {
    /// Configured names, then `other`, then `none`.
    names: Vec<String>,
    /// [`word`] of each name: a name of up to 8 bytes is matched by one
    /// integer comparison, without a `memcmp` call per name.
    words: Vec<(usize, u64)>,
    index: HashMap<String, usize>,
    /// Whether lookups normalise like table names (case, schema qualifier).
    tables: bool,
}

impl NameSet {
    /// A set of table names (normalised like `Config::table`).
    pub(crate) fn tables<I, S>(names: I) -> NameSet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        NameSet::build(
            names.into_iter().map(|n| normalize_table_name(n.as_ref())),
            true,
        )
    }

    /// A set of region names (exact match: they are partition column values).
    pub(crate) fn regions<I, S>(names: I) -> NameSet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        NameSet::build(names.into_iter().map(|n| n.as_ref().to_owned()), false)
    }

    fn build(names: impl Iterator<Item = String>, tables: bool) -> NameSet {
        let mut sorted: Vec<String> = names.filter(|n| n != OTHER && n != NONE).collect();
        sorted.sort();
        sorted.dedup();
        sorted.push(OTHER.to_owned());
        sorted.push(NONE.to_owned());
        let index = sorted
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        NameSet {
            words: sorted.iter().map(|n| word(n)).collect(),
            names: sorted,
            index,
            tables,
        }
    }

    /// Number of distinct label values (configured + other + none).
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Index of the label value for `name`: its own if configured, else `other`;
    /// `None` maps to `none`.
    pub(crate) fn index_of(&self, name: Option<&str>) -> usize {
        let Some(name) = name else {
            return self.names.len() - 1;
        };
        // Callers usually pass the normalised name already: try without
        // allocating. A few configured names (the usual case, looked up twice
        // per statement) are found faster by comparing them than by hashing.
        let found = if self.names.len() <= LINEAR_SCAN_MAX {
            if name.len() <= 8 {
                let w = word(name);
                self.words.iter().position(|&k| k == w)
            } else {
                self.names.iter().position(|n| n == name)
            }
        } else {
            self.index.get(name).copied()
        };
        if let Some(i) = found {
            return i;
        }
        if self.tables {
            if let Some(&i) = self.index.get(&normalize_table_name(name)) {
                return i;
            }
        }
        self.names.len() - 2
    }

    /// The label value at `index`.
    pub(crate) fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// The label value for `name` (configured name, `other` or `none`).
    pub(crate) fn label<'a>(&'a self, name: Option<&str>) -> &'a str {
        self.name(self.index_of(name))
    }
}

/// A name's length and its first 8 bytes (zero-padded) as an integer:
/// equal for two names of up to 8 bytes exactly when the names are equal.
pub(crate) fn word(name: &str) -> (usize, u64) {
    let mut w = [0u8; 8];
    for (d, s) in w.iter_mut().zip(name.as_bytes()) {
        *d = *s;
    }
    (name.len(), u64::from_le_bytes(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_map_to_other_and_absent_to_none() {
        let set = NameSet::tables(["users", "Tenants"]);
        assert_eq!(set.label(Some("users")), "users");
        assert_eq!(set.label(Some("public.USERS")), "users");
        assert_eq!(set.label(Some("tenants")), "tenants");
        assert_eq!(set.label(Some("secret_table")), OTHER);
        assert_eq!(set.label(None), NONE);
    }

    #[test]
    fn short_and_long_names_match_exactly() {
        let set = NameSet::regions(["eu", "eu-west", "eu-west-1", "europe-west-2"]);
        for n in ["eu", "eu-west", "eu-west-1", "europe-west-2"] {
            assert_eq!(set.label(Some(n)), n);
        }
        for n in ["e", "eu\0", "eu-wes", "eu-west-2", "europe-west-1", ""] {
            assert_eq!(set.label(Some(n)), OTHER, "{n:?}");
        }
    }

    #[test]
    fn region_names_match_exactly() {
        let set = NameSet::regions(["eu", "us"]);
        assert_eq!(set.label(Some("eu")), "eu");
        assert_eq!(set.label(Some("EU")), OTHER);
    }

    #[test]
    fn enum_labels_round_trip() {
        for d in DecisionLabel::ALL {
            assert_eq!(DecisionLabel::parse(d.as_str()), Some(*d));
        }
    }
}
