//! The decision point of a live session: analysis (cached), the tenant
//! lookups it needs (through the async tenant cache), the pure policy, and
//! the mode. The session applies the resulting [`Plan`] (transaction
//! pinning, failover, forwarding) and reports what it did with
//! [`Planner::record`].

use std::sync::Arc;

use crate::analyze::{Analysis, Analyzer, Params, SqlContext, StatementKind};
use crate::config::{Config, Mode};
use crate::logging::{ClientInfo, DecisionLog};
use crate::metrics::{self, Metrics, StatementEvent};
use crate::policy::{self, Decision, Effect, Outcome, Settings, TenantAnswer, TenantLookup};
use crate::tenants::TenantCache;

/// Everything a session needs to decide statements; shared by all sessions.
pub struct Planner {
    config: Arc<Config>,
    analyzer: Analyzer,
    tenants: Option<Arc<TenantCache>>,
    metrics: Arc<Metrics>,
    log: DecisionLog,
}

/// What to do with one statement (a Query text or one Bind).
#[derive(Debug)]
pub struct Plan {
    /// The analysis (cached by shape).
    pub analysis: Arc<Analysis>,
    /// The policy's decision, before the mode.
    pub decision: Decision,
    /// The decision under the mode.
    pub effect: Effect,
    /// Tenant ids a rewrite used (for verify-on-empty).
    pub tenants: Vec<String>,
}

impl Plan {
    /// The kind of the (first) statement.
    pub fn kind(&self) -> StatementKind {
        self.analysis.kind()
    }

    /// A single statement of kind `kind`.
    pub fn is_only(&self, kind: StatementKind) -> bool {
        self.analysis.statements.len() == 1 && self.kind() == kind
    }
}

/// Tenant answers resolved before the (synchronous) policy runs: the
/// tenant ids and their answers, in the same order. Borrowed, so that the
/// ids can move into the plan afterwards without a copy.
struct Resolved<'a>(&'a [String], &'a [TenantAnswer]);

impl TenantLookup for Resolved<'_> {
    fn region_of(&self, tenant: &str) -> TenantAnswer {
        self.0
            .iter()
            .zip(self.1)
            .find(|(t, _)| *t == tenant)
            .map(|(_, a)| a.clone())
            .unwrap_or(TenantAnswer::Unavailable)
    }
}

/// Up to this many tenant answers are kept on the stack.
const INLINE_ANSWERS: usize = 2;

impl Planner {
    /// A planner for `config`, with its tenant cache (if `[tenants]` is set) and metrics.
    pub fn new(
        config: Arc<Config>,
        tenants: Option<Arc<TenantCache>>,
        metrics: Arc<Metrics>,
    ) -> Planner {
        Planner {
            analyzer: Analyzer::new(&config),
            config,
            tenants,
            metrics,
            log: DecisionLog::new(10),
        }
    }

    /// The configuration decisions are taken under.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The metrics decisions are counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The tenant cache, when configured.
    pub fn tenant_cache(&self) -> Option<&Arc<TenantCache>> {
        self.tenants.as_ref()
    }

    /// Policy settings for one user (computed once per session).
    pub fn settings_for(&self, user: &str) -> Settings {
        let mut s = Settings::from_config(&self.config, Some(user));
        // The session forwards the literal form of a rewrite only.
        s.parameterized_rewrites = false;
        s
    }

    /// Decides one statement text with its Bind parameters (none for a
    /// simple query). Awaits tenant lookups on cache misses only.
    pub async fn plan(&self, sql: &str, params: &Params<'_>, settings: &Settings) -> Plan {
        self.plan_in(sql, params, settings, &SqlContext::default())
            .await
    }

    /// Like [`plan`](Self::plan), in a session's SQL context: its
    /// `standard_conforming_strings` and its SQL-level prepared statements
    /// (EXECUTE is decided as the statement it runs). The session keeps
    /// the context up to date with [`SqlContext::record`] (after a text
    /// ran) and [`SqlContext::observe_parameter`] (ParameterStatus).
    pub async fn plan_in(
        &self,
        sql: &str,
        params: &Params<'_>,
        settings: &Settings,
        ctx: &SqlContext,
    ) -> Plan {
        let analysis = self.analyze(sql, ctx);
        self.plan_analysis(analysis, params, settings).await
    }

    /// The analysis of a text in a session's SQL context (cached by shape).
    pub fn analyze(&self, sql: &str, ctx: &SqlContext) -> Arc<Analysis> {
        self.analyzer.analyze_in(sql, ctx)
    }

    /// The identity of the analyzer [`analyze`](Self::analyze) uses: a
    /// session may keep an analysis under it (a prepared statement's).
    pub fn analyzer_id(&self) -> u64 {
        self.analyzer.id()
    }

    /// Decides an analysed statement with its Bind parameters.
    pub async fn plan_analysis(
        &self,
        analysis: Arc<Analysis>,
        params: &Params<'_>,
        settings: &Settings,
    ) -> Plan {
        // `TenantKey` is a `String`: this reuses the keys' allocation.
        let ids: Vec<String> = analysis
            .tenant_keys(params)
            .into_iter()
            .map(|k| k.0)
            .collect();
        // The usual one or two answers need no heap allocation.
        let mut inline: [TenantAnswer; INLINE_ANSWERS] =
            std::array::from_fn(|_| TenantAnswer::Unavailable);
        let mut heap = Vec::new();
        let answers: &mut [TenantAnswer] = if ids.len() <= INLINE_ANSWERS {
            &mut inline[..ids.len()]
        } else {
            heap.resize(ids.len(), TenantAnswer::Unavailable);
            &mut heap
        };
        if let Some(cache) = &self.tenants {
            for (id, answer) in ids.iter().zip(answers.iter_mut()) {
                *answer = cache.get(id).await;
            }
        }
        let decision = policy::decide(&analysis, params, &Resolved(&ids, answers), settings);
        let effect = policy::apply_mode(self.config.proxy.mode, &decision);
        let tenants = match &decision.outcome {
            Outcome::Rewrite { .. } => ids,
            _ => Vec::new(),
        };
        Plan {
            analysis,
            decision,
            effect,
            tenants,
        }
    }

    /// Counts and logs a statement once the session knows where it went
    /// (`region`: the gateway that serves it; `None` when refused). Its
    /// duration is observed by the session when the answer is complete.
    pub fn record(&self, plan: &Plan, client: &ClientInfo<'_>, region: Option<&str>) {
        let observe = self.config.proxy.mode == Mode::Observe;
        let outcome = match &plan.decision.outcome {
            Outcome::Global => metrics::Outcome::Global,
            Outcome::Route { .. } => metrics::Outcome::Route,
            Outcome::Rewrite { .. } => metrics::Outcome::Rewrite,
            Outcome::Scatter { .. } if observe => {
                metrics::Outcome::Scatter(metrics::ScatterCause::Observe)
            }
            Outcome::Scatter { cause, .. } => metrics::Outcome::Scatter(scatter_label(*cause)),
            Outcome::Reject(r) => metrics::Outcome::Reject(r.reason),
        };
        let fingerprint = plan.analysis.fingerprint();
        let event = StatementEvent {
            outcome,
            table: plan.decision.table.as_deref(),
            region: match outcome {
                metrics::Outcome::Reject(_) => None,
                _ => region,
            },
            fingerprint: &fingerprint,
        };
        self.metrics.record_statement(&event);
        if matches!(
            outcome,
            metrics::Outcome::Reject(_) | metrics::Outcome::Scatter(_)
        ) {
            self.log
                .statement(client, &event, self.config.proxy.mode == Mode::Enforce);
        }
        if plan.decision.parse_error {
            self.metrics.parse_error();
        }
        for m in &plan.decision.moves {
            self.metrics
                .region_move(Some(&m.table), m.from.as_deref(), m.to.as_deref());
        }
    }

    /// A refused cross-region transaction statement or a gateway that could
    /// not be reached: counted as a rejection with that reason.
    pub fn record_refusal(
        &self,
        plan: &Plan,
        client: &ClientInfo<'_>,
        reason: metrics::RejectReason,
    ) {
        let fingerprint = plan.analysis.fingerprint();
        let event = StatementEvent {
            outcome: metrics::Outcome::Reject(reason),
            table: plan.decision.table.as_deref(),
            region: None,
            fingerprint: &fingerprint,
        };
        self.metrics.record_statement(&event);
        self.log.statement(client, &event, true);
    }
}

fn scatter_label(c: policy::ScatterCause) -> metrics::ScatterCause {
    match c {
        policy::ScatterCause::MultiRegion => metrics::ScatterCause::MultiRegion,
        policy::ScatterCause::Allowed => metrics::ScatterCause::Allowed,
    }
}
