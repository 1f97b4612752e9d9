//! Per-session SQL state the analysis depends on: the session's
//! `standard_conforming_strings` (how `'…'` strings end) and its SQL-level
//! prepared statements (what `EXECUTE name (…)` runs). A pure value the
//! session owns and updates; the analyzer only reads it.

use std::collections::HashMap;
use std::sync::Arc;

use super::lex::{self, Tok};
use super::{Analysis, StatementKind};

/// At most this many SQL prepared statements are remembered per session;
/// an EXECUTE of a forgotten one is refused (GG006), never guessed.
pub const MAX_PREPARED: usize = 1_000;

/// A session's SQL context. The default is PostgreSQL's: strings conform
/// to the standard, no prepared statements.
#[derive(Debug, Clone)]
pub struct SqlContext {
    scs: bool,
    /// name → (body, the `standard_conforming_strings` it was prepared
    /// under: PostgreSQL read its literals then).
    prepared: HashMap<String, (Arc<str>, bool)>,
}

impl Default for SqlContext {
    fn default() -> Self {
        SqlContext::with_scs(true)
    }
}

impl SqlContext {
    /// The default context.
    pub fn new() -> SqlContext {
        SqlContext::default()
    }

    /// A context with `standard_conforming_strings` set as given.
    pub fn with_scs(on: bool) -> SqlContext {
        SqlContext {
            scs: on,
            prepared: HashMap::new(),
        }
    }

    /// The session's `standard_conforming_strings`.
    pub fn standard_conforming_strings(&self) -> bool {
        self.scs
    }

    /// Sets `standard_conforming_strings` (from the server's
    /// ParameterStatus, a startup parameter, or a SET).
    pub fn set_standard_conforming_strings(&mut self, on: bool) {
        self.scs = on;
    }

    /// Applies a ParameterStatus (or startup parameter) `name = value`;
    /// only `standard_conforming_strings` matters here. Returns whether it
    /// was understood (unknown values leave the setting unchanged).
    pub fn observe_parameter(&mut self, name: &str, value: &str) -> bool {
        if !name.eq_ignore_ascii_case("standard_conforming_strings") {
            return false;
        }
        match parse_bool(value) {
            Some(on) => {
                self.scs = on;
                true
            }
            None => false,
        }
    }

    /// The text of a SQL prepared statement (name folded as PostgreSQL
    /// folds it: unquoted names in lower case).
    pub fn prepared(&self, name: &str) -> Option<&str> {
        self.prepared.get(name).map(|(s, _)| &**s)
    }

    /// The `standard_conforming_strings` a prepared statement was
    /// prepared under.
    pub fn prepared_scs(&self, name: &str) -> Option<bool> {
        self.prepared.get(name).map(|(_, scs)| *scs)
    }

    /// Number of remembered prepared statements.
    pub fn prepared_len(&self) -> usize {
        self.prepared.len()
    }

    /// Remembers `PREPARE name AS body` (name already folded).
    pub fn prepare(&mut self, name: &str, body: &str) {
        if self.prepared.len() >= MAX_PREPARED && !self.prepared.contains_key(name) {
            return;
        }
        self.prepared
            .insert(name.to_string(), (body.into(), self.scs));
    }

    /// Forgets one prepared statement (`DEALLOCATE name`).
    pub fn deallocate(&mut self, name: &str) {
        self.prepared.remove(name);
    }

    /// Forgets every prepared statement (`DEALLOCATE ALL`, `DISCARD ALL`).
    pub fn deallocate_all(&mut self) {
        self.prepared.clear();
    }

    /// Records what a text the gateway has executed successfully changed:
    /// PREPARE, DEALLOCATE [PREPARE] name | ALL, DISCARD ALL, and
    /// `SET [SESSION] standard_conforming_strings` (the server's
    /// ParameterStatus remains the authority; see
    /// [`observe_parameter`](Self::observe_parameter)).
    pub fn record(&mut self, analysis: &Analysis) {
        for (i, st) in analysis.statements.iter().enumerate() {
            // Hot path: most statements change nothing here; lex only
            // those that may.
            if !matches!(
                st.template.kind,
                StatementKind::Prepare
                    | StatementKind::Deallocate
                    | StatementKind::Discard
                    | StatementKind::Set
                    | StatementKind::SetLocal
                    | StatementKind::Reset
            ) {
                continue;
            }
            let text = analysis.statement_text(i);
            let toks: Vec<(Tok, &str)> = lex::Lexer::with_scs(text, self.scs)
                .filter(|t| !matches!(t.kind, Tok::Space | Tok::Comment))
                .map(|t| (t.kind, &text[t.start..t.end]))
                .collect();
            let word = |k: usize| {
                toks.get(k)
                    .filter(|t| t.0 == Tok::Word)
                    .map(|t| t.1.to_ascii_lowercase())
            };
            match st.template.kind {
                StatementKind::Prepare => {
                    let Some(name) = toks.get(1).and_then(|t| fold_name(t.0, t.1)) else {
                        continue;
                    };
                    // The body starts after the first AS at depth 0.
                    let mut depth = 0usize;
                    let mut body_at = None;
                    for t in lex::Lexer::with_scs(text, self.scs) {
                        match t.kind {
                            Tok::Open => depth += 1,
                            Tok::Close => depth = depth.saturating_sub(1),
                            Tok::Word
                                if depth == 0
                                    && text[t.start..t.end].eq_ignore_ascii_case("as") =>
                            {
                                body_at = Some(t.end);
                                break;
                            }
                            _ => {}
                        }
                    }
                    if let Some(at) = body_at {
                        self.prepare(&name, text[at..].trim());
                    }
                }
                StatementKind::Deallocate => {
                    let k = if word(1).as_deref() == Some("prepare") {
                        2
                    } else {
                        1
                    };
                    match toks.get(k) {
                        Some((Tok::Word, w)) if w.eq_ignore_ascii_case("all") => {
                            self.deallocate_all()
                        }
                        Some(t) => {
                            if let Some(n) = fold_name(t.0, t.1) {
                                self.deallocate(&n);
                            }
                        }
                        None => {}
                    }
                }
                StatementKind::Discard if word(1).as_deref() == Some("all") => {
                    self.deallocate_all();
                }
                StatementKind::Set | StatementKind::SetLocal => {
                    // SET [SESSION|LOCAL] standard_conforming_strings {=|TO} v
                    let mut k = 1;
                    if matches!(word(k).as_deref(), Some("session") | Some("local")) {
                        k += 1;
                    }
                    if word(k).as_deref() == Some("standard_conforming_strings") {
                        let v = toks
                            .get(k + 2)
                            .map(|t| t.1.trim_matches('\''))
                            .unwrap_or("");
                        if st.template.kind == StatementKind::Set {
                            self.observe_parameter("standard_conforming_strings", v);
                        }
                    }
                }
                StatementKind::Reset => {
                    if matches!(
                        word(1).as_deref(),
                        Some("all") | Some("standard_conforming_strings")
                    ) {
                        self.scs = true;
                    }
                }
                _ => {}
            }
        }
    }
}

fn fold_name(kind: Tok, text: &str) -> Option<String> {
    match kind {
        Tok::Word => Some(text.to_lowercase()),
        Tok::QuotedIdent if text.starts_with('"') => Some(
            text.strip_prefix('"')?
                .strip_suffix('"')?
                .replace("\"\"", "\""),
        ),
        _ => None,
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Some(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Some(false),
        _ => None,
    }
}
