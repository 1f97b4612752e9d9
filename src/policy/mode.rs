//! Applying the mode (enforce / warn / observe) to a decision: the one
//! helper the session needs to act on a [`Decision`].

use std::sync::Arc;

use super::{Decision, Outcome, Rejection};
use crate::config::Mode;

/// What the session does with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Forward the statement.
    Forward {
        /// The region whose gateway serves it; `None`: the local gateway
        /// (or the transaction's pinned one). Shared with the decision's
        /// [`RegionName`](super::RegionName): no copy per statement.
        region: Option<Arc<str>>,
        /// Forward the rewritten text (`Outcome::Rewrite`) instead of the original.
        rewritten: bool,
        /// `warn` mode: send this as a WARNING notice first.
        warning: Option<Rejection>,
    },
    /// Answer with this error; forward nothing.
    Refuse(Rejection),
}

/// The effect of a decision under a mode. `observe` forwards every
/// statement unchanged to the local gateway (metrics count the decision
/// anyway, scatter with cause `observe`); `warn` forwards what `enforce`
/// would reject, unchanged to the local gateway, with a warning.
pub fn apply_mode(mode: Mode, decision: &Decision) -> Effect {
    let local = Effect::Forward {
        region: None,
        rewritten: false,
        warning: None,
    };
    match (mode, &decision.outcome) {
        (Mode::Observe, _) => local,
        (_, Outcome::Global) | (_, Outcome::Scatter { .. }) => local,
        (_, Outcome::Route { region }) => Effect::Forward {
            region: Some(region.shared().clone()),
            rewritten: false,
            warning: None,
        },
        (_, Outcome::Rewrite { region, .. }) => Effect::Forward {
            region: Some(region.shared().clone()),
            rewritten: true,
            warning: None,
        },
        (Mode::Warn, Outcome::Reject(r)) => Effect::Forward {
            region: None,
            rewritten: false,
            warning: Some(r.clone()),
        },
        (Mode::Enforce, Outcome::Reject(r)) => Effect::Refuse(r.clone()),
    }
}
