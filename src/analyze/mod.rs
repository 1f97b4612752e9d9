//! SQL text + schema → facts (tables, region confinement, tenant keys). Pure.
//!
//! [`Analyzer::analyze`] splits a text into statements (as psql does), lifts
//! the literals out of each one (its *shape*), and looks the shape up in a
//! bounded cache of [`StatementTemplate`]s; only a miss parses. Statements
//! that name no regional table (a word scan, no parse) and control
//! statements (BEGIN, SET, DDL, …) are `global` without a parse. See
//! docs/analysis.md for the whole scheme.

mod cache;
mod facts;
mod kind;
pub(crate) mod lex;
mod params;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use facts::{Alt, At, Facts, Scope, TableRef, Val};
pub use kind::StatementKind;
pub use params::{ParamText, Params};

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
    /// The statement printed with the predicates injected: lifted literals
    /// are `$100000+slot`, the region `$99999` (see `lex::render`).
    pub(crate) rewrite: Option<crate::rewrite::Template>,
    /// The highest `$n` of the statement (0: none).
    pub max_param: u32,
}

/// One statement of an analysed text.
#[derive(Debug, Clone)]
pub struct StatementAnalysis {
    /// The shape's analysis (shared through the cache).
    pub template: Arc<StatementTemplate>,
    /// Byte range of the statement in [`Analysis::sql`].
    pub range: Range<usize>,
    /// Byte ranges of the lifted literals, by slot.
    lits: Vec<Range<usize>>,
}

/// The analysis of a query text (one or several statements).
#[derive(Debug)]
pub struct Analysis {
    sql: Box<str>,
    /// The statements, in order; empty for an empty query.
    pub statements: Vec<StatementAnalysis>,
    /// Whether a comment holds `/*+ geogate:allow_scatter */`.
    pub allow_scatter_hint: bool,
}

impl Analysis {
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
        if let [one] = self.statements.as_slice() {
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
        self.sql.get(r.clone())
    }

    /// A value's text: lifted literals decoded, parameters from the Bind
    /// (read as an id: see [`Params::text`]).
    pub(crate) fn value(&self, i: usize, v: &Val, params: &Params<'_>) -> ParamText {
        match v {
            Val::Param(n) => params.text(*n),
            _ => self.label(i, v, params),
        }
    }

    /// A value's text where it is a label (a region name): binary
    /// parameters are read as UTF-8 (see [`Params::label`]).
    pub(crate) fn label(&self, i: usize, v: &Val, params: &Params<'_>) -> ParamText {
        match v {
            Val::Text(s) => ParamText::Text(s.clone()),
            Val::Lit(slot) => match self.lit_text(i, *slot).and_then(lex::literal_value) {
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
            for &c in &s.template.candidates {
                for conf in &s.template.facts.refs[c].confiners {
                    for a in conf {
                        if let Alt::Tenant(v) = a
                            && let ParamText::Text(t) = self.value(i, v, params)
                        {
                            out.push(TenantKey(t));
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
        Analyzer {
            config: config.clone(),
            regional,
            // With unlisted tables rejected, every statement must be parsed
            // to find its tables.
            prescan: config.proxy.unlisted_tables == UnlistedTables::Global,
            max_len: config.proxy.max_statement_length,
            cache: Cache::new(config.proxy.analysis_cache_size),
        }
    }

    /// Turns the no-parse shortcut for statements naming no regional table
    /// off (so `check` lists every table) or on.
    pub fn with_prescan(mut self, on: bool) -> Analyzer {
        self.prescan = on && self.config.proxy.unlisted_tables == UnlistedTables::Global;
        self
    }

    /// Analyses a query text. Never panics, whatever the input.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        Arc::new(self.analyze_inner(sql, true))
    }

    /// Like [`analyze`](Self::analyze) but never reads or fills the cache
    /// (for benchmarks of the cold path).
    pub fn analyze_uncached(&self, sql: &str) -> Analysis {
        self.analyze_inner(sql, false)
    }

    fn analyze_inner(&self, sql: &str, use_cache: bool) -> Analysis {
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
                statements: vec![StatementAnalysis {
                    template: Arc::new(tpl),
                    range: 0..sql.len(),
                    lits: Vec::new(),
                }],
                allow_scatter_hint: false,
            };
        }
        let mut statements = Vec::new();
        let mut hint = false;
        for range in lex::split_statements(sql) {
            let text = &sql[range.clone()];
            let sc = lex::scan(text, 0);
            hint |= sc.hint;
            if sc.shape.is_empty() {
                continue; // only comments
            }
            let (template, lifted) = self.template(text, &sc, use_cache);
            let lits = if lifted {
                sc.lits
                    .iter()
                    .map(|r| r.start + range.start..r.end + range.start)
                    .collect()
            } else {
                Vec::new()
            };
            statements.push(StatementAnalysis {
                template,
                range,
                lits,
            });
        }
        Analysis {
            sql: sql.into(),
            statements,
            allow_scatter_hint: hint,
        }
    }

    /// The template for a statement; `true` when it was built from the
    /// shape (lifted literals apply), `false` from the raw text.
    fn template(
        &self,
        text: &str,
        sc: &lex::Scan,
        use_cache: bool,
    ) -> (Arc<StatementTemplate>, bool) {
        if use_cache {
            match self.cache.get(&sc.shape) {
                Some(Entry::Template(t)) => return (t, true),
                Some(Entry::Raw) => {
                    if let Some(Entry::Template(t)) = self.cache.get(&raw_key(text)) {
                        return (t, false);
                    }
                }
                None => {}
            }
        }
        let lifted = !sc.lits.is_empty() && !sc.huge_param;
        let (tpl, from_shape) = match self.build(&sc.shape, sc) {
            Ok(t) => (t, true),
            Err(e) if lifted => match self.build(text, sc) {
                // The shape did not parse (a literal where the grammar
                // wants a constant, e.g. varchar(10)): use the raw text.
                Ok(t) => (t, false),
                Err(_) => (e, true),
            },
            Err(e) => (e, true),
        };
        let tpl = Arc::new(tpl);
        if use_cache {
            if from_shape {
                self.cache
                    .put(sc.shape.clone(), Entry::Template(tpl.clone()));
            } else {
                self.cache.put(sc.shape.clone(), Entry::Raw);
                self.cache.put(raw_key(text), Entry::Template(tpl.clone()));
            }
        }
        (tpl, from_shape && !sc.huge_param)
    }

    /// Builds a template from a text; `Err` holds a parse-error template.
    #[allow(clippy::result_large_err)] // both arms are templates, built once per shape
    fn build(&self, text: &str, sc: &lex::Scan) -> Result<StatementTemplate, StatementTemplate> {
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
        };
        if kind.is_control() || (self.prescan && !lex::mentions_any(text, &self.regional)) {
            return Ok(global(fingerprint));
        }
        if sc.huge_param {
            return Err(StatementTemplate::failed(
                kind,
                fingerprint,
                "parameter number above 65535".into(),
            ));
        }
        if sc.operators > MAX_OPERATORS {
            return Err(StatementTemplate::failed(
                kind,
                fingerprint,
                format!("statement has more than {MAX_OPERATORS} operators"),
            ));
        }
        // CockroachDB syntax the parser does not know, recognised cheaply.
        let (text, upsert) = crdb::upsert_as_insert(text);
        let (text, aost) = crdb::strip_as_of_system_time(&text);
        let dialect = PostgreSqlDialect {};
        let parsed = Parser::new(&dialect)
            .with_recursion_limit(MAX_NESTING)
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_statements());
        let mut stmts = match parsed {
            Ok(s) => s,
            Err(e) => {
                return Err(StatementTemplate::failed(
                    kind,
                    fingerprint,
                    redact_parse_error(&e.to_string()),
                ));
            }
        };
        let Some(stmt) = stmts.first_mut() else {
            return Ok(global(fingerprint));
        };
        let mut facts = facts::collect(stmt, &self.config);
        let candidates = if aost {
            // The rewrite would print the statement without its AS OF
            // SYSTEM TIME clause: never rewrite such statements.
            for r in &mut facts.refs {
                r.inject = None;
            }
            Vec::new()
        } else {
            rewrite_candidates(&facts)
        };
        let rewrite = if candidates.is_empty() {
            None
        } else {
            let mut printed = crate::rewrite::inject(stmt, &facts, &candidates);
            // Tenant moves: a write checks its injected region against the directory.
            if crate::rewrite::guard::guard(stmt, &facts, &candidates, self.config.tenants.as_ref())
            {
                printed = stmt.to_string();
            }
            Some(crate::rewrite::Template::new(if upsert {
                crdb::insert_as_upsert(&printed)
            } else {
                printed
            }))
        };
        Ok(StatementTemplate {
            kind,
            fingerprint,
            facts,
            parse_error: None,
            candidates,
            rewrite,
            max_param: sc.max_param,
        })
    }
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
/// through region equalities.
pub(crate) fn statically_confined(facts: &Facts) -> Vec<bool> {
    let mut c: Vec<bool> = facts.refs.iter().map(|r| r.has_region_confiner()).collect();
    propagate(&mut c, &facts.edges);
    c
}

/// Sets `to` wherever `from` is set, along edges, to a fixpoint.
pub(crate) fn propagate(c: &mut [bool], edges: &[(usize, usize)]) {
    let mut changed = true;
    while changed {
        changed = false;
        for &(a, b) in edges {
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

    /// Puts the UPSERT back into a printed INSERT.
    pub fn insert_as_upsert(printed: &str) -> String {
        match printed.strip_prefix("INSERT") {
            Some(rest) => format!("UPSERT{rest}"),
            None => printed.to_string(),
        }
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
