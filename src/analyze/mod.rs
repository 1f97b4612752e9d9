//! SQL text + schema → facts (tables, region confinement, tenant keys). Pure.
//!
//! [`Analyzer::analyze`] splits a text into statements (as psql does), lifts
//! the literals out of each one (its *shape*), and looks the shape up in a
//! bounded cache of [`StatementTemplate`]s; only a miss parses. Statements
//! that name no regional table (a word scan, no parse) and control
//! statements (BEGIN, SET, DDL, …) are `global` without a parse. See
//! docs/analysis.md for the whole scheme.

mod cache;
mod context;
pub mod facts;
mod kind;
pub(crate) mod lex;
mod marked;
mod params;

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use context::SqlContext;
pub use facts::{Alt, At, Facts, Scope, TableRef, Val};
pub use kind::StatementKind;
pub use marked::Marked;
pub use params::{ParamText, Params, borrowed as borrowed_params};

use crate::config::{Config, OnMissingRegion, TableConfig, UnlistedTables};
use cache::{Cache, Entry};

/// Parser recursion limit: bounds nesting depth (subqueries, parentheses).
pub const MAX_NESTING: usize = 50;
/// A statement with more binary operators than this is not parsed: long
/// `a AND b AND …` chains build left-deep trees that recursive walks (and
/// drops) would follow to the bottom of the stack.
pub const MAX_OPERATORS: usize = 2_000;

/// A tenant value the policy will look up (`tenant_column = <v>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantKey(pub String);

/// The cached, literal-free analysis of one statement shape.
#[derive(Debug)]
pub struct StatementTemplate {
    /// What the statement does (from its leading keywords).
    pub kind: StatementKind,
    /// Normalised text: literals are `?`, parameters `$n`. Never holds a literal.
    pub fingerprint: String,
    /// Tables and regional references found by the walk.
    pub facts: Facts,
    /// Why the statement could not be analysed (no literal values in it).
    pub parse_error: Option<String>,
    /// References a rewrite injects a region predicate into.
    pub(crate) candidates: Vec<usize>,
    /// What the rewriter needs to inject into this shape (`None`: no
    /// candidate, or a statement that is never rewritten).
    pub(crate) rewrite: Option<Box<Rewritable>>,
    /// The highest `$n` of the statement (0: none).
    pub max_param: u32,
    /// For `EXECUTE name (args)`: the prepared statement's name and the
    /// arguments (decided with the session's [`SqlContext`]).
    pub(crate) execute: Option<ExecCall>,
}

/// A statement shape the rewriter may inject into: analysis hands over
/// the parse tree; the rewriter (`crate::rewrite::template`) prints the
/// rewrite from it once, on first use, and keeps it here with the shape.
#[derive(Debug)]
pub struct Rewritable {
    /// The statement as parsed (CockroachDB clauses read as PostgreSQL).
    pub(crate) stmt: sqlparser::ast::Statement,
    /// It was written `UPSERT`: the printed `INSERT` must say so again.
    pub(crate) upsert: bool,
    /// The printed rewrite: lifted literals are `$100000+slot`, the region
    /// `$99999`.
    pub(crate) printed: OnceLock<Marked>,
}

/// `EXECUTE name (args)` as written.
#[derive(Debug, Clone)]
pub(crate) struct ExecCall {
    /// The prepared statement's name (folded).
    pub name: String,
    /// One entry per argument.
    pub args: Vec<ExecArg>,
}

/// An argument of EXECUTE.
#[derive(Debug, Clone)]
pub(crate) enum ExecArg {
    /// A literal or a parameter.
    Val(Val),
    /// `NULL`.
    Null,
    /// An expression geogate does not evaluate.
    Unknown,
}

/// What an `EXECUTE` runs, found in the session's [`SqlContext`].
#[derive(Debug, Clone)]
pub enum Exec {
    /// No prepared statement of that name is known: refused.
    Unknown,
    /// The prepared statement's analysis and the values of its `$n`
    /// (`None`: NULL; values geogate cannot evaluate are a marker that is
    /// no region and no tenant).
    Known {
        /// The prepared statement's analysis.
        analysis: Arc<Analysis>,
        /// `$1`, `$2`, … as text.
        values: Vec<Option<bytes::Bytes>>,
    },
}

/// The value an EXECUTE argument geogate cannot evaluate stands for.
pub(crate) const UNKNOWN_ARG: &str = "\u{0}(an expression)";

/// One statement of an analysed text.
#[derive(Debug, Clone)]
pub struct StatementAnalysis {
    /// The shape's analysis (shared through the cache).
    pub template: Arc<StatementTemplate>,
    /// Byte range of the statement in [`Analysis::sql`].
    pub range: Range<usize>,
    /// Byte ranges of the lifted literals, by slot.
    lits: Lits,
    /// Whether this statement carries the hint comment
    /// `/*+ geogate:allow_scatter */` (it applies to this statement only).
    pub hint: bool,
    /// For EXECUTE: what it runs.
    pub exec: Option<Exec>,
}

/// Byte ranges of a statement's lifted literals, by slot: a few inline
/// (statements rarely lift more), all of them on the heap otherwise, so
/// the usual statement allocates nothing for them.
#[derive(Debug, Clone, Default)]
struct Lits {
    len: usize,
    inline: [(usize, usize); Lits::INLINE],
    heap: Vec<Range<usize>>,
}

impl Lits {
    const INLINE: usize = 4;

    /// The ranges of `lits` (relative to a statement) moved by `offset`.
    fn shifted(lits: &[Range<usize>], offset: usize) -> Lits {
        let mut out = Lits {
            len: lits.len(),
            ..Lits::default()
        };
        if lits.len() <= Lits::INLINE {
            for (slot, r) in out.inline.iter_mut().zip(lits) {
                *slot = (r.start + offset, r.end + offset);
            }
        } else {
            out.heap = lits
                .iter()
                .map(|r| r.start + offset..r.end + offset)
                .collect();
        }
        out
    }

    fn get(&self, slot: usize) -> Option<Range<usize>> {
        if self.len <= Lits::INLINE {
            self.inline[..self.len].get(slot).map(|&(a, b)| a..b)
        } else {
            self.heap.get(slot).cloned()
        }
    }
}

/// The statements of an analysed text, in order: reads as a slice. The
/// usual single statement is kept inline, so an analysis allocates (and
/// frees) no list for it.
pub type Statements = crate::one_or_many::OneOrMany<StatementAnalysis>;

/// The analysis of a query text (one or several statements).
#[derive(Debug)]
pub struct Analysis {
    sql: Box<str>,
    /// The statements, in order; empty for an empty query.
    pub statements: Statements,
    /// Whether some statement carries `/*+ geogate:allow_scatter */`
    /// (the policy reads each statement's own [`StatementAnalysis::hint`]).
    pub allow_scatter_hint: bool,
    /// The `standard_conforming_strings` the text was read with.
    pub(crate) scs: bool,
}

impl Analysis {
    /// Whether the analysis read the session's SQL-level prepared
    /// statements (an `EXECUTE`): then it must not outlive them.
    pub fn reads_session_statements(&self) -> bool {
        self.statements.iter().any(|s| s.exec.is_some())
    }

    /// The analysed text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The text of statement `i` (without its `;`).
    pub fn statement_text(&self, i: usize) -> &str {
        self.statements
            .get(i)
            .and_then(|s| self.sql.get(s.range.clone()))
            .unwrap_or("")
    }

    /// The kind of the first statement (`Other` for an empty query).
    pub fn kind(&self) -> StatementKind {
        self.statements
            .first()
            .map(|s| s.template.kind)
            .unwrap_or(StatementKind::Other)
    }

    /// The fingerprints of all statements, joined by `; `.
    pub fn fingerprint(&self) -> std::borrow::Cow<'_, str> {
        // One statement (the usual case): its template's, without a copy.
        if let [one] = &*self.statements {
            return std::borrow::Cow::Borrowed(&one.template.fingerprint);
        }
        let fps: Vec<&str> = self
            .statements
            .iter()
            .map(|s| s.template.fingerprint.as_str())
            .collect();
        std::borrow::Cow::Owned(fps.join("; "))
    }

    /// Every table named (sorted, deduplicated). Statements that name no
    /// regional table are not parsed, so their tables are not listed.
    pub fn tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .statements
            .iter()
            .flat_map(|s| s.template.facts.tables.iter().cloned())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// Whether some statement could not be parsed.
    pub fn has_parse_error(&self) -> bool {
        self.statements
            .iter()
            .any(|s| s.template.parse_error.is_some())
    }

    /// Whether a decision may read Bind parameters: some statement has a
    /// `$n` and a regional reference or a partition-column update (only
    /// their predicates and values hold parameters the policy reads). When
    /// not, a Bind's values need not be decoded.
    pub fn reads_params(&self) -> bool {
        self.statements.iter().any(|s| {
            let t = &s.template;
            t.max_param > 0 && (!t.facts.refs.is_empty() || !t.facts.moves.is_empty())
        })
    }

    /// The highest `$n` in the text (0: none).
    pub fn max_param(&self) -> u32 {
        self.statements
            .iter()
            .map(|s| s.template.max_param)
            .max()
            .unwrap_or(0)
    }

    /// The raw text of a lifted literal of statement `i`.
    pub(crate) fn lit_text(&self, i: usize, slot: usize) -> Option<&str> {
        let r = self.statements.get(i)?.lits.get(slot)?;
        self.sql.get(r)
    }

    /// A value's text: lifted literals decoded, parameters from the Bind
    /// (read as an id: see [`Params::text`]).
    pub(crate) fn value<'a>(&'a self, i: usize, v: &'a Val, params: &Params<'a>) -> ParamText<'a> {
        match v {
            Val::Param(n) => params.text(*n),
            _ => self.label(i, v, params),
        }
    }

    /// A value's text where it is a label (a region name): binary
    /// parameters are read as UTF-8 (see [`Params::label`]). Borrowed from
    /// the text, the template or the Bind unless it has escapes to decode.
    pub(crate) fn label<'a>(&'a self, i: usize, v: &'a Val, params: &Params<'a>) -> ParamText<'a> {
        match v {
            Val::Text(s) => ParamText::Text(Cow::Borrowed(s)),
            Val::Lit(slot) => match self
                .lit_text(i, *slot)
                .and_then(|t| lex::literal_value(t, self.scs))
            {
                Some(s) => ParamText::Text(s),
                None => ParamText::Unbound,
            },
            Val::Param(n) => params.label(*n),
        }
    }

    /// The tenant values a decision will need looked up, so an async
    /// caller can resolve them before calling the (sync) policy.
    pub fn tenant_keys(&self, params: &Params<'_>) -> Vec<TenantKey> {
        let mut out = Vec::new();
        for (i, s) in self.statements.iter().enumerate() {
            if let Some(Exec::Known { analysis, values }) = &s.exec {
                let values = params::borrowed(values);
                let p = Params {
                    values: &values,
                    formats: &[],
                    types: &[],
                };
                out.extend(analysis.tenant_keys(&p));
                continue;
            }
            for &c in &s.template.candidates {
                for conf in &s.template.facts.refs[c].confiners {
                    for a in conf {
                        if let Alt::Tenant(v) = a
                            && let ParamText::Text(t) = self.value(i, v, params)
                        {
                            out.push(TenantKey(canonical_tenant(&t).into_owned()));
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Analyses statements against the schema config; cheap to share
/// (`Arc<Analyzer>`), thread-safe, and caches by statement shape.
pub struct Analyzer {
    /// Unique per analyzer (a reload makes a new one): what a session's
    /// memo of a prepared statement's analysis is keyed by.
    id: u64,
    config: Config,
    regional: HashSet<String>,
    prescan: bool,
    max_len: usize,
    cache: Cache,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("regional", &self.regional)
            .field("prescan", &self.prescan)
            .finish_non_exhaustive()
    }
}

impl Analyzer {
    /// An analyzer for a config (`[tables]`, `proxy.max_statement_length`,
    /// `proxy.analysis_cache_size`).
    pub fn new(config: &Config) -> Analyzer {
        let regional = config
            .tables
            .iter()
            .filter(|(_, t)| matches!(t, TableConfig::Regional(_)))
            .map(|(n, _)| n.to_lowercase())
            .collect();
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Analyzer {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            config: config.clone(),
            regional,
            // With unlisted tables rejected, every statement must be parsed
            // to find its tables.
            prescan: config.proxy.unlisted_tables == UnlistedTables::Global,
            max_len: config.proxy.max_statement_length,
            cache: Cache::new(config.proxy.analysis_cache_size),
        }
    }

    /// This analyzer's identity: analyses it made stay valid for as long
    /// as it is the one in use (a reload replaces it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Turns the no-parse shortcut for statements naming no regional table
    /// off (so `check` lists every table) or on.
    pub fn with_prescan(mut self, on: bool) -> Analyzer {
        self.prescan = on && self.config.proxy.unlisted_tables == UnlistedTables::Global;
        self
    }

    /// Analyses a query text with the default session context
    /// (`standard_conforming_strings = on`, no SQL prepared statements).
    /// Never panics, whatever the input.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        Arc::new(self.analyze_inner(sql, true, &SqlContext::default()))
    }

    /// Analyses a query text in a session's context: its
    /// `standard_conforming_strings` and its SQL-level prepared statements
    /// (for EXECUTE). Never panics, whatever the input.
    pub fn analyze_in(&self, sql: &str, ctx: &SqlContext) -> Arc<Analysis> {
        Arc::new(self.analyze_inner(sql, true, ctx))
    }

    /// Like [`analyze`](Self::analyze) but never reads or fills the cache
    /// (for benchmarks of the cold path).
    pub fn analyze_uncached(&self, sql: &str) -> Analysis {
        self.analyze_inner(sql, false, &SqlContext::default())
    }

    fn analyze_inner(&self, sql: &str, use_cache: bool, ctx: &SqlContext) -> Analysis {
        let scs = ctx.standard_conforming_strings();
        if sql.len() > self.max_len {
            let tpl = StatementTemplate::failed(
                StatementKind::of(&sql[..floor_char(sql, 200)]),
                String::from("(statement too long)"),
                format!(
                    "statement is {} bytes, longer than proxy.max_statement_length ({})",
                    sql.len(),
                    self.max_len
                ),
            );
            return Analysis {
                sql: sql.into(),
                statements: Statements::One(StatementAnalysis {
                    template: Arc::new(tpl),
                    range: 0..sql.len(),
                    lits: Lits::default(),
                    hint: false,
                    exec: None,
                }),
                allow_scatter_hint: false,
                scs,
            };
        }
        let mut statements = Statements::default();
        let mut any_hint = false;
        lex::scan_statements(sql, scs, |range, sc| {
            let text = &sql[range.clone()];
            any_hint |= sc.hint;
            let (template, lifted) = self.template(text, sc, use_cache, scs);
            let lits = if lifted {
                Lits::shifted(&sc.lits, range.start)
            } else {
                Lits::default()
            };
            let exec = template.execute.as_ref().map(|call| {
                match ctx.prepared(&call.name) {
                    None => Exec::Unknown,
                    Some(body) => {
                        // A prepared statement cannot itself be an EXECUTE:
                        // its analysis sees no prepared statements.
                        let inner_ctx =
                            SqlContext::with_scs(ctx.prepared_scs(&call.name).unwrap_or(scs));
                        let analysis = Arc::new(self.analyze_inner(body, use_cache, &inner_ctx));
                        let values = call
                            .args
                            .iter()
                            .map(|a| exec_value(a, sql, &lits, scs))
                            .collect();
                        Exec::Known { analysis, values }
                    }
                }
            });
            statements.push(StatementAnalysis {
                template,
                range,
                lits,
                hint: sc.hint,
                exec,
            });
        });
        Analysis {
            sql: sql.into(),
            statements,
            allow_scatter_hint: any_hint,
            scs,
        }
    }

    /// The template for a statement; `true` when it was built from the
    /// shape (lifted literals apply), `false` from the plain text.
    fn template(
        &self,
        text: &str,
        sc: &lex::Scan,
        use_cache: bool,
        scs: bool,
    ) -> (Arc<StatementTemplate>, bool) {
        // The same shape may read differently under the other setting.
        let key = |k: &str| {
            if scs {
                k.to_string()
            } else {
                format!("\u{1}{k}")
            }
        };
        if use_cache {
            // The common lookup borrows the shape (no copy per statement).
            let hit = if scs {
                self.cache.get(&sc.shape)
            } else {
                self.cache.get(&key(&sc.shape))
            };
            match hit {
                Some(Entry::Template(t)) => return (t, true),
                Some(Entry::Raw) => {
                    if let Some(Entry::Template(t)) = self.cache.get(&key(&raw_key(text))) {
                        return (t, false);
                    }
                }
                None => {}
            }
        }
        let lifted = !sc.lits.is_empty() && !sc.huge_param;
        let (tpl, from_shape) = match self.build(text, &sc.shape, sc, scs) {
            Ok(t) => (t, true),
            Err(e) if lifted => match self.build(text, &lex::plain(text, scs), sc, scs) {
                // The shape did not parse (a literal where the grammar
                // wants a constant, e.g. varchar(10)): use the plain text.
                Ok(t) => (t, false),
                Err(_) => (e, true),
            },
            Err(e) => (e, true),
        };
        let tpl = Arc::new(tpl);
        if use_cache {
            if from_shape {
                self.cache.put(key(&sc.shape), Entry::Template(tpl.clone()));
            } else {
                self.cache.put(key(&sc.shape), Entry::Raw);
                self.cache
                    .put(key(&raw_key(text)), Entry::Template(tpl.clone()));
            }
        }
        (tpl, from_shape && !sc.huge_param)
    }

    /// Builds a template for one statement: `raw` is its text (for the
    /// lexical decisions), `text` the shape or plain text parsed. `Err`
    /// holds a template that refuses the statement (GG006).
    #[allow(clippy::result_large_err)] // both arms are templates, built once per shape
    fn build(
        &self,
        raw: &str,
        text: &str,
        sc: &lex::Scan,
        scs: bool,
    ) -> Result<StatementTemplate, StatementTemplate> {
        let kind = StatementKind::of(text);
        let fingerprint = lex::fingerprint(text);
        let global = |fp: String| StatementTemplate {
            kind,
            fingerprint: fp,
            facts: Facts::default(),
            parse_error: None,
            candidates: Vec::new(),
            rewrite: None,
            max_param: sc.max_param,
            execute: None,
        };
        let fail = |fp: String, why: String| Err(StatementTemplate::failed(kind, fp, why));
        let mentions = lex::mentions_any(raw, &self.regional, scs);
        if let Some(why) = sc.undecidable
            && mentions
        {
            return fail(fingerprint, why.to_string());
        }
        let words = lex::leading_words(text, 3);
        let w0 = words.first().map(String::as_str).unwrap_or("");
        match w0 {
            // Statement kinds decided from their words alone.
            "do" => {
                return if lex::strings_mention_any(raw, &self.regional, scs) || mentions {
                    fail(
                        fingerprint,
                        "a DO block names a regional table; geogate cannot analyse procedural code"
                            .into(),
                    )
                } else {
                    Ok(global(fingerprint))
                };
            }
            "refresh" | "lock" | "import" => {
                return self.by_words(w0, text, scs, kind, fingerprint, sc.max_param);
            }
            "prepare" if kind == StatementKind::Prepare => {
                // PREPARE touches no rows; EXECUTE is decided with the
                // session's prepared statements.
                return Ok(global(fingerprint));
            }
            "explain" if lex::has_word(text, "execute", scs) => {
                return fail(
                    fingerprint,
                    "EXPLAIN EXECUTE is not analysed; EXPLAIN the statement itself".into(),
                );
            }
            "create" if lex::has_words(text, "as", "execute", scs) => {
                return fail(
                    fingerprint,
                    "CREATE … AS EXECUTE is not analysed; use the statement itself".into(),
                );
            }
            _ => {}
        }
        let parse_ddl = matches!(w0, "truncate" | "create");
        if kind.is_control() && !parse_ddl {
            return Ok(global(fingerprint));
        }
        let is_execute = kind == StatementKind::Execute;
        if !is_execute && !mentions && (self.prescan || parse_ddl) {
            return Ok(global(fingerprint));
        }
        if sc.huge_param {
            return fail(fingerprint, "parameter number above 65535".into());
        }
        if sc.operators > MAX_OPERATORS {
            return fail(
                fingerprint,
                format!("statement has more than {MAX_OPERATORS} operators"),
            );
        }
        // CockroachDB syntax the parser does not know, recognised cheaply.
        let (text, upsert) = crdb::upsert_as_insert(text);
        let (text, aost) = crdb::strip_as_of_system_time(&text);
        let (text, index_hint) = crdb::strip_index_hints(&text);
        let (text, lock_strength) = crdb::weaken_lock_clauses(&text);
        let index_hint = index_hint || lock_strength;
        let dialect = PostgreSqlDialect {};
        let parsed = Parser::new(&dialect)
            .with_recursion_limit(MAX_NESTING)
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_statements());
        let mut stmts = match parsed {
            Ok(s) => s,
            Err(e) => {
                if !mentions && self.config.proxy.unlisted_tables == UnlistedTables::Global {
                    // Names no regional table: global whether or not the
                    // prescan skipped the parse (`check` parses it).
                    return Ok(global(fingerprint));
                }
                if kind == StatementKind::Ddl && !lex::looks_like_query(&text, scs) {
                    // DDL the parser does not know (CockroachDB zone
                    // configs, …) reads no rows.
                    return Ok(global(fingerprint));
                }
                return fail(fingerprint, redact_parse_error(&e.to_string()));
            }
        };
        if stmts.len() > 1 {
            return fail(fingerprint, "several statements in one".into());
        }
        let Some(stmt) = stmts.first_mut() else {
            return Ok(global(fingerprint));
        };
        if let sqlparser::ast::Statement::Execute {
            name: Some(name),
            parameters,
            using,
            into,
            immediate: false,
            ..
        } = &*stmt
            && using.is_empty()
            && into.is_empty()
            && name.0.len() == 1
            && let Some(id) = name.0[0].as_ident()
        {
            let args = parameters
                .iter()
                .map(|e| match e {
                    sqlparser::ast::Expr::Value(v) if v.value == sqlparser::ast::Value::Null => {
                        ExecArg::Null
                    }
                    e => facts::val(e).map_or(ExecArg::Unknown, ExecArg::Val),
                })
                .collect();
            let mut t = global(fingerprint);
            t.execute = Some(ExecCall {
                name: facts::fold(id),
                args,
            });
            return Ok(t);
        }
        if is_execute {
            return fail(fingerprint, "EXECUTE form not analysed".into());
        }
        if !facts::is_analysed_statement(stmt) {
            return if kind == StatementKind::Ddl || !mentions {
                Ok(global(fingerprint))
            } else {
                fail(
                    fingerprint,
                    "statement kind not analysed by geogate names a regional table".into(),
                )
            };
        }
        if kind == StatementKind::Ddl
            && !matches!(
                stmt,
                sqlparser::ast::Statement::Truncate(_)
                    | sqlparser::ast::Statement::CreateTable(sqlparser::ast::CreateTable {
                        query: Some(_),
                        ..
                    })
                    | sqlparser::ast::Statement::CreateView(sqlparser::ast::CreateView {
                        materialized: true,
                        ..
                    })
            )
        {
            // Plain DDL (CREATE TABLE …, a view's definition) reads no rows.
            return Ok(global(fingerprint));
        }
        let mut facts = facts::collect(stmt, &self.config);
        if let Some(why) = facts.unhandled.take() {
            return fail(fingerprint, why);
        }
        let rewritable = facts::is_rewritable_statement(stmt) && !aost && !index_hint;
        let candidates = if rewritable {
            rewrite_candidates(&facts)
        } else {
            // The rewrite would print the statement without its
            // CockroachDB clauses, or the statement is not plain DML:
            // never rewrite such statements.
            for r in &mut facts.refs {
                r.inject = None;
            }
            Vec::new()
        };
        // The rewriter prints from the tree, once per shape, on first use.
        let rewrite = if candidates.is_empty() {
            None
        } else {
            stmts.pop().map(|stmt| {
                Box::new(Rewritable {
                    stmt,
                    upsert,
                    printed: OnceLock::new(),
                })
            })
        };
        Ok(StatementTemplate {
            kind,
            fingerprint,
            facts,
            parse_error: None,
            candidates,
            rewrite,
            max_param: sc.max_param,
            execute: None,
        })
    }

    /// REFRESH MATERIALIZED VIEW, LOCK and IMPORT INTO, decided from their
    /// words (the parser does not know all of them).
    #[allow(clippy::result_large_err)]
    fn by_words(
        &self,
        w0: &str,
        text: &str,
        scs: bool,
        kind: StatementKind,
        fingerprint: String,
        max_param: u32,
    ) -> Result<StatementTemplate, StatementTemplate> {
        let names = lex::table_names_after(text, w0, scs);
        let mut facts = Facts::default();
        let mut copy_cols: Option<Vec<String>> = None;
        if w0 == "import" {
            copy_cols = Some(lex::column_list_after_table(text, scs));
        }
        for n in &names {
            match self.config.table(n) {
                Some(TableConfig::Regional(rt)) => {
                    facts.tables.insert(n.to_lowercase());
                    let r = facts::unconstrained_ref(n, rt);
                    facts.refs.push(r);
                    if let Some(cols) = &copy_cols {
                        let has = cols.contains(&rt.partition_column);
                        facts.copy_in = Some((facts.refs.len() - 1, has));
                    }
                }
                Some(TableConfig::Global) => {
                    facts.tables.insert(n.to_lowercase());
                }
                None => {
                    facts.tables.insert(n.to_lowercase());
                    facts.unlisted.insert(n.to_lowercase());
                    if w0 == "refresh" {
                        // What a materialized view reads is not in the
                        // statement: list the view in [tables] to decide it.
                        return Err(StatementTemplate::failed(
                            kind,
                            fingerprint,
                            format!(
                                "REFRESH of a materialized view not listed in [tables] ({}); list it as global or regional",
                                n.to_lowercase()
                            ),
                        ));
                    }
                }
            }
        }
        if names.is_empty() && lex::mentions_any(text, &self.regional, scs) {
            return Err(StatementTemplate::failed(
                kind,
                fingerprint,
                format!("{} statement not understood", w0.to_uppercase()),
            ));
        }
        Ok(StatementTemplate {
            kind,
            fingerprint,
            facts,
            parse_error: None,
            candidates: Vec::new(),
            rewrite: None,
            max_param,
            execute: None,
        })
    }
}

/// The Bind value of an EXECUTE argument.
fn exec_value(a: &ExecArg, sql: &str, lits: &Lits, scs: bool) -> Option<bytes::Bytes> {
    let unknown = || Some(bytes::Bytes::from_static(UNKNOWN_ARG.as_bytes()));
    match a {
        ExecArg::Null => None,
        ExecArg::Unknown | ExecArg::Val(Val::Param(_)) => unknown(),
        ExecArg::Val(Val::Text(t)) => Some(bytes::Bytes::from(t.clone())),
        ExecArg::Val(Val::Lit(slot)) => match lits
            .get(*slot)
            .and_then(|r| sql.get(r))
            .and_then(|t| lex::literal_value(t, scs))
        {
            Some(v) => Some(bytes::Bytes::from(v.into_owned())),
            None => unknown(),
        },
    }
}

/// A tenant id as the tenant directory writes it (`id::text`): a UUID in
/// its canonical form (lower case, hyphenated; PostgreSQL accepts upper
/// case, no hyphens and braces), an integer without sign or leading zeros.
/// Anything else is kept as written. Borrowed when `t` is already
/// canonical (no copy per lookup).
pub fn canonical_tenant(t: &str) -> Cow<'_, str> {
    let s = t.trim();
    let inner = s
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(s);
    // Every byte but hyphens a hex digit, 32 of them: a UUID (one
    // allocation, on every statement naming a tenant).
    let mut hex = [0u8; 32];
    let mut n = 0;
    let mut uuid = inner.len() <= 39;
    for b in inner.bytes().filter(|&b| b != b'-') {
        if n == 32 || !b.is_ascii_hexdigit() {
            uuid = false;
            break;
        }
        hex[n] = b.to_ascii_lowercase();
        n += 1;
    }
    if uuid && n == 32 {
        let mut out = String::with_capacity(36);
        for (i, &c) in hex.iter().enumerate() {
            if matches!(i, 8 | 12 | 16 | 20) {
                out.push('-');
            }
            out.push(c as char);
        }
        return Cow::Owned(out);
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        let d = digits.trim_start_matches('0');
        let d = if d.is_empty() { "0" } else { d };
        return if neg && d != "0" {
            if s.len() == d.len() + 1 && s.len() == t.len() {
                // `-<d>` as written.
                Cow::Borrowed(t)
            } else {
                Cow::Owned(format!("-{d}"))
            }
        } else if d.len() == t.len() {
            // `<d>` as written (no sign, zeros or blanks).
            Cow::Borrowed(t)
        } else {
            Cow::Owned(d.to_string())
        };
    }
    Cow::Borrowed(t)
}

impl StatementTemplate {
    fn failed(kind: StatementKind, fingerprint: String, error: String) -> StatementTemplate {
        StatementTemplate {
            kind,
            fingerprint,
            facts: Facts::default(),
            parse_error: Some(error),
            candidates: Vec::new(),
            rewrite: None,
            max_param: 0,
            execute: None,
        }
    }

    /// Whether a rewrite may inject predicates into this statement.
    pub fn rewritable(&self) -> bool {
        self.rewrite.is_some()
    }
}

fn raw_key(text: &str) -> String {
    let mut k = String::with_capacity(text.len() + 1);
    k.push('\0');
    k.push_str(text);
    k
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Keeps a parser message's description and position, drops the token it
/// found (which may be a literal value).
fn redact_parse_error(msg: &str) -> String {
    let msg = msg.strip_prefix("sql parser error: ").unwrap_or(msg);
    let head = msg.split(", found:").next().unwrap_or(msg);
    let pos = msg.rfind(" at Line:").map(|i| &msg[i..]).unwrap_or("");
    if head.len() == msg.len() {
        // No "found" part: the message may still quote input; keep only
        // its first words.
        let short: String = head
            .chars()
            .take_while(|c| *c != '\'' && *c != '"')
            .collect();
        format!(
            "{}{}",
            short.trim_end(),
            if short.len() < head.len() { " …" } else { "" }
        )
    } else {
        format!("{head}{pos}")
    }
}

/// References statically confined by an explicit region predicate, also
/// through region equalities (from equality-confined references only, as
/// the planner derives them) and correlations.
pub(crate) fn statically_confined(facts: &Facts) -> Vec<bool> {
    let mut c: Vec<bool> = facts.refs.iter().map(|r| r.has_region_confiner()).collect();
    let mut carriable: Vec<bool> = facts.refs.iter().map(|r| r.eq_region).collect();
    propagate(&mut c, &mut carriable, &facts.edges, &facts.corr);
    c
}

/// Sets `to` wherever `from` is set, along equality edges from carriable
/// references (the target becomes carriable) and along correlations, to
/// a fixpoint.
pub(crate) fn propagate(
    c: &mut [bool],
    carriable: &mut [bool],
    edges: &[(usize, usize)],
    corr: &[(usize, usize)],
) {
    let mut changed = true;
    while changed {
        changed = false;
        for &(a, b) in edges {
            if c[a] && carriable[a] && !(c[b] && carriable[b]) {
                c[b] = true;
                carriable[b] = true;
                changed = true;
            }
        }
        for &(a, b) in corr {
            if c[a] && !c[b] {
                c[b] = true;
                changed = true;
            }
        }
    }
}

/// References a rewrite would inject into: not confined by a region
/// predicate, table policy `rewrite`, a tenant predicate, and a place to
/// put the new predicate.
fn rewrite_candidates(facts: &Facts) -> Vec<usize> {
    let confined = statically_confined(facts);
    facts
        .refs
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            !confined[*i]
                && r.on_missing_region == OnMissingRegion::Rewrite
                && r.has_tenant_confiner()
                && r.inject.is_some()
        })
        .map(|(i, _)| i)
        .collect()
}

/// CockroachDB-only syntax recognised without the parser's help.
mod crdb {
    use super::lex::{Lexer, Tok};

    /// `UPSERT INTO …` → `INSERT INTO …` (analysed as an INSERT).
    pub fn upsert_as_insert(text: &str) -> (String, bool) {
        let t = text.trim_start();
        let word_ends = !t
            .as_bytes()
            .get(6)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if word_ends && t.get(..6).is_some_and(|w| w.eq_ignore_ascii_case("upsert")) {
            let off = text.len() - t.len();
            (
                format!("{}INSERT{}", &text[..off], t.get(6..).unwrap_or("")),
                true,
            )
        } else {
            (text.to_string(), false)
        }
    }

    /// Removes CockroachDB index hints `table@index` / `table@{…}` where
    /// a table name stands (after FROM, JOIN, UPDATE, INTO, USING, ONLY or
    /// a comma, with no space around the `@`), for analysis only.
    pub fn strip_index_hints(text: &str) -> (String, bool) {
        if !text.contains('@') {
            return (text.to_string(), false);
        }
        let toks: Vec<_> = Lexer::new(text).collect();
        let sig = |t: &super::lex::Token| !matches!(t.kind, Tok::Space | Tok::Comment);
        let mut cut: Vec<(usize, usize)> = Vec::new();
        for i in 0..toks.len() {
            let t = toks[i];
            if t.kind != Tok::Punct || &text[t.start..t.end] != "@" || i == 0 {
                continue;
            }
            let name = toks[i - 1];
            if !matches!(name.kind, Tok::Word | Tok::QuotedIdent) || name.end != t.start {
                continue;
            }
            // Walk back over a dotted name to the token before it.
            let mut j = i - 1;
            while j >= 2
                && &text[toks[j - 1].start..toks[j - 1].end] == "."
                && matches!(toks[j - 2].kind, Tok::Word | Tok::QuotedIdent)
            {
                j -= 2;
            }
            let before = toks[..j].iter().rev().find(|t| sig(t));
            let table_position = before.is_some_and(|b| {
                let w = &text[b.start..b.end];
                [",", "from", "join", "update", "into", "using", "only"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
            });
            if !table_position {
                continue;
            }
            let Some(next) = toks.get(i + 1) else {
                continue;
            };
            if next.start != t.end {
                continue;
            }
            let end = match next.kind {
                Tok::Word | Tok::QuotedIdent => next.end,
                Tok::Punct if &text[next.start..next.end] == "{" => {
                    match toks[i + 1..].iter().find(|x| &text[x.start..x.end] == "}") {
                        Some(close) => close.end,
                        None => continue,
                    }
                }
                _ => continue,
            };
            cut.push((t.start, end));
        }
        splice_out(text, &cut)
    }

    /// `FOR NO KEY UPDATE` / `FOR KEY SHARE` (PostgreSQL row locks the
    /// parser does not know) read as `FOR UPDATE` / `FOR SHARE` for
    /// analysis only: they lock the same rows.
    pub fn weaken_lock_clauses(text: &str) -> (String, bool) {
        let toks: Vec<_> = Lexer::new(text)
            .filter(|t| !matches!(t.kind, Tok::Space | Tok::Comment))
            .collect();
        let word = |i: usize, w: &str| {
            toks.get(i).is_some_and(|t| {
                t.kind == Tok::Word && text[t.start..t.end].eq_ignore_ascii_case(w)
            })
        };
        let mut cut = Vec::new();
        for i in 0..toks.len() {
            if word(i, "for") && word(i + 1, "no") && word(i + 2, "key") && word(i + 3, "update") {
                cut.push((toks[i + 1].start, toks[i + 2].end));
            } else if word(i, "for") && word(i + 1, "key") && word(i + 2, "share") {
                cut.push((toks[i + 1].start, toks[i + 1].end));
            }
        }
        splice_out(text, &cut)
    }

    /// `text` with each byte range of `cut` (in order) replaced by a space;
    /// `true` when something was cut. A range overlapping the previous one
    /// is skipped.
    fn splice_out(text: &str, cut: &[(usize, usize)]) -> (String, bool) {
        if cut.is_empty() {
            return (text.to_string(), false);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for &(a, b) in cut {
            if a < at {
                continue;
            }
            out.push_str(&text[at..a]);
            out.push(' ');
            at = b;
        }
        out.push_str(&text[at..]);
        (out, true)
    }

    /// Removes `AS OF SYSTEM TIME <expr>` (a literal, parameter or a
    /// function call) for analysis.
    pub fn strip_as_of_system_time(text: &str) -> (String, bool) {
        let toks: Vec<_> = Lexer::new(text)
            .filter(|t| !matches!(t.kind, Tok::Space | Tok::Comment))
            .collect();
        let word = |i: usize, w: &str| {
            toks.get(i).is_some_and(|t| {
                t.kind == Tok::Word && text[t.start..t.end].eq_ignore_ascii_case(w)
            })
        };
        for i in 0..toks.len() {
            if word(i, "as") && word(i + 1, "of") && word(i + 2, "system") && word(i + 3, "time") {
                let Some(first) = toks.get(i + 4) else { break };
                let mut end = first.end;
                let mut j = i + 5;
                if first.kind == Tok::Word && toks.get(j).is_some_and(|t| t.kind == Tok::Open) {
                    let mut depth = 0usize;
                    while let Some(t) = toks.get(j) {
                        match t.kind {
                            Tok::Open => depth += 1,
                            Tok::Close => depth = depth.saturating_sub(1),
                            _ => {}
                        }
                        end = t.end;
                        j += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                }
                // A trailing cast: '-10s'::interval.
                if toks.get(j).is_some_and(|t| &text[t.start..t.end] == "::")
                    && let Some(t) = toks.get(j + 1)
                {
                    end = t.end;
                }
                let start = toks[i].start;
                let mut out = String::with_capacity(text.len());
                out.push_str(&text[..start]);
                out.push(' ');
                out.push_str(&text[end..]);
                let (rest, _) = strip_as_of_system_time(&out);
                return (rest, true);
            }
        }
        (text.to_string(), false)
    }
}

#[cfg(test)]
mod tests;
