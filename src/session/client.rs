//! What belongs to the client, apart from the upstream connections that
//! serve it: its transaction, its prepared statements, the settings to
//! replay on a newly opened upstream. Pure data; no I/O.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::analyze::{Analysis, SqlContext};

/// Transaction status, as the last ReadyForQuery reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxnStatus {
    /// `I`: not in a transaction block.
    #[default]
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TxnStatus {
    /// From ReadyForQuery's status byte (unknown bytes count as in a transaction,
    /// the cautious reading).
    pub fn from_byte(b: u8) -> Self {
        match b {
            b'I' => TxnStatus::Idle,
            b'E' => TxnStatus::Failed,
            _ => TxnStatus::InTransaction,
        }
    }

    /// The ReadyForQuery byte.
    pub fn byte(self) -> u8 {
        match self {
            TxnStatus::Idle => b'I',
            TxnStatus::InTransaction => b'T',
            TxnStatus::Failed => b'E',
        }
    }
}

/// A session-level setting command to replay on a new upstream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET name …` (not `SET LOCAL`): remembered by name, last one wins.
    Set {
        /// Lower-cased parameter name.
        name: String,
        /// The full statement text.
        sql: String,
    },
    /// `RESET name`.
    Reset(String),
    /// `RESET ALL` / `DISCARD ALL`.
    ResetAll,
}

/// Recognises commands that change session state, from the SQL text alone.
/// Multi-statement strings and anything unusual return `None` (not replayed).
pub fn classify_session_command(sql: &str) -> Option<SessionCommand> {
    // Hot path (every simple Query): most statements are not SET/RESET/DISCARD;
    // decide that from the first letter without allocating.
    // By bytes: a word ends at an ASCII byte, never inside a character.
    let t = sql.trim_start();
    let end = t
        .bytes()
        .position(|b| b.is_ascii_whitespace() || b == b';')
        .unwrap_or(t.len());
    let first = &t[..end];
    if !["set", "reset", "discard"]
        .iter()
        .any(|w| first.eq_ignore_ascii_case(w))
    {
        return None;
    }
    let s = sql.trim().trim_end_matches(';').trim();
    if s.contains(';') {
        return None;
    }
    let mut words = s.split_whitespace();
    let first = words.next()?.to_ascii_lowercase();
    let second = words.next().map(|w| w.to_ascii_lowercase());
    match (first.as_str(), second.as_deref()) {
        ("set", Some("local" | "transaction" | "constraints")) => None,
        ("set", Some("session")) => {
            let name = words.next()?.to_ascii_lowercase();
            (name != "characteristics").then(|| SessionCommand::Set {
                name: name.trim_end_matches(['=']).to_string(),
                sql: s.to_string(),
            })
        }
        ("set", Some(name)) => Some(SessionCommand::Set {
            name: name.split(['=']).next().unwrap_or(name).to_string(),
            sql: s.to_string(),
        }),
        ("reset", Some("all")) | ("discard", Some("all")) => Some(SessionCommand::ResetAll),
        ("reset", Some(name)) => Some(SessionCommand::Reset(name.to_string())),
        _ => None,
    }
}

/// A prepared statement as the client created it (Parse): the client's
/// view, whichever upstream connections have it prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL text as sent.
    pub sql: Arc<str>,
    /// Parameter type OIDs (from Parse, completed by ParameterDescription).
    pub types: Vec<u32>,
    /// Which Parse made it: an upstream holding another generation of the
    /// same name must prepare it again.
    pub generation: u64,
    /// Its analysis, kept for the next Bind.
    pub memo: Memo,
}

/// A prepared statement's analysis, kept with it: its text never changes,
/// so each Bind needs only the policy (analysing the text again would lex
/// it to find the cached shape). Valid for one analyzer (a reload makes a
/// new one) and one `standard_conforming_strings`. Not part of the
/// statement's identity: it compares equal whatever it holds.
#[derive(Clone, Default)]
pub struct Memo(Option<(u64, bool, Arc<Analysis>)>);

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Memo(kept)"
        } else {
            "Memo(none)"
        })
    }
}

/// The client's transaction, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Txn {
    /// Not in a transaction block.
    #[default]
    Idle,
    /// `BEGIN` answered by geogate and not sent yet: it goes, with the
    /// transaction's first data statement, to that statement's region.
    Deferred {
        /// The BEGIN's text (its options: isolation level, read only…).
        sql: String,
        /// A statement of the transaction failed (or was refused): only
        /// COMMIT/ROLLBACK are accepted, as in PostgreSQL.
        failed: bool,
    },
    /// Open on this region's upstream (its status byte says T or E).
    Open(Arc<str>),
}

/// Everything that belongs to the client rather than to the upstream
/// connection it happens to use: settings to replay, prepared statements,
/// the transaction. Kept apart so that transaction pooling can hand the
/// client another connection without losing any of it.
#[derive(Debug, Default)]
pub struct ClientState {
    /// Named prepared statements by name.
    pub statements: HashMap<Arc<str>, Statement>,
    /// The unnamed prepared statement.
    pub unnamed: Option<Statement>,
    /// SET statements in effect, in order, to replay on a new upstream.
    pub settings: Vec<(String, String)>,
    /// The transaction.
    pub txn: Txn,
    /// What the analyzer must know of this session to lex and decide as
    /// PostgreSQL will: `standard_conforming_strings` (as the gateway last
    /// reported it) and the SQL-level prepared statements (`PREPARE`).
    pub sql: SqlContext,
    generations: u64,
    /// Analyses of unnamed statements since replaced, newest first, at
    /// most [`RECENT_UNNAMED`]: drivers cycle a few texts through the
    /// unnamed statement, each Parse replacing the last (pgbench
    /// `-M extended`, JDBC below its prepare threshold, node-postgres), and
    /// a text parsed again finds its analysis here instead of being lexed
    /// again. The current unnamed statement's text is never in it.
    recent_unnamed: VecDeque<(Arc<str>, Memo)>,
}

/// How many replaced unnamed statements keep their analysis (a few hundred
/// bytes each, shared with the shape cache; only for sessions that use
/// the extended protocol).
const RECENT_UNNAMED: usize = 16;

impl ClientState {
    /// Records a Parse; returns the statement's generation.
    pub fn on_parse(&mut self, name: &str, sql: &str, types: &[u32]) -> u64 {
        self.generations += 1;
        let generation = self.generations;
        // Built only when kept (a re-parse of the unnamed one copies nothing).
        let stmt = |memo| Statement {
            sql: sql.into(),
            types: types.to_vec(),
            generation,
            memo,
        };
        if name.is_empty() {
            // Drivers re-parse the same unnamed statement over and over:
            // the same text and types keep their generation, so upstreams
            // that have it need no new Parse.
            match &self.unnamed {
                Some(u) if *u.sql == *sql && u.types == types => return u.generation,
                _ => {
                    let memo = self.recall_unnamed(sql);
                    let stmt = stmt(memo);
                    self.set_unnamed(Some(stmt));
                }
            }
        } else {
            let stmt = stmt(Memo::default());
            self.statements.insert(name.into(), stmt);
        }
        self.generations
    }

    /// Replaces the unnamed statement; the replaced one's analysis is
    /// kept by its text.
    pub fn set_unnamed(&mut self, stmt: Option<Statement>) {
        if let Some(old) = std::mem::replace(&mut self.unnamed, stmt)
            && old.memo.0.is_some()
        {
            self.recent_unnamed.push_front((old.sql, old.memo));
            self.recent_unnamed.truncate(RECENT_UNNAMED);
        }
    }

    /// The kept analysis of a replaced unnamed statement with this text
    /// (taken out: it goes with the statement parsed again).
    fn recall_unnamed(&mut self, sql: &str) -> Memo {
        match self.recent_unnamed.iter().position(|(t, _)| **t == *sql) {
            Some(i) => self
                .recent_unnamed
                .remove(i)
                .map(|(_, m)| m)
                .unwrap_or_default(),
            None => Memo::default(),
        }
    }

    /// The statement a Bind or Describe names.
    pub fn statement(&self, name: &str) -> Option<&Statement> {
        match name {
            "" => self.unnamed.as_ref(),
            n => self.statements.get(n),
        }
    }

    /// The analysis of the prepared statement `name` (with its parameter
    /// types), from its memo when `analyzer` made it under the session's
    /// current `standard_conforming_strings`, else from `analyze`, kept
    /// for the next Bind. `None` for an unknown statement.
    pub fn prepared_analysis(
        &mut self,
        name: &str,
        analyzer: u64,
        analyze: impl FnOnce(&str, &SqlContext) -> Arc<Analysis>,
    ) -> Option<(Arc<Analysis>, &[u32])> {
        let scs = self.sql.standard_conforming_strings();
        let stmt = match name {
            "" => self.unnamed.as_mut(),
            n => self.statements.get_mut(n),
        }?;
        let analysis = match &stmt.memo.0 {
            Some((id, s, a)) if *id == analyzer && *s == scs => a.clone(),
            _ => {
                let a = analyze(&stmt.sql, &self.sql);
                // An EXECUTE's analysis reads the session's PREPAREd
                // statements, which may change: never kept.
                if !a.reads_session_statements() {
                    stmt.memo = Memo(Some((analyzer, scs, a.clone())));
                }
                a
            }
        };
        Some((analysis, &stmt.types))
    }

    /// Records a Close of a statement.
    pub fn on_close_statement(&mut self, name: &str) {
        match name {
            "" => self.set_unnamed(None),
            n => {
                self.statements.remove(n);
            }
        }
    }

    /// Records the parameter types a ParameterDescription reported for a
    /// statement (binary Bind values are decoded by them).
    pub fn learn_types(&mut self, name: &str, generation: u64, types: Vec<u32>) {
        let stmt = match name {
            "" => self.unnamed.as_mut(),
            n => self.statements.get_mut(n),
        };
        if let Some(s) = stmt.filter(|s| s.generation == generation) {
            s.types = types;
        }
    }

    /// Records a statement that may change session settings, whichever
    /// protocol carried it (a simple Query's text, or the text of the
    /// prepared statement a Bind executes). Called when it is forwarded; a
    /// SET that fails upstream is kept (replaying it fails the same way,
    /// harmlessly).
    pub fn on_statement(&mut self, sql: &str) {
        match classify_session_command(sql) {
            Some(SessionCommand::Set { name, sql }) => {
                self.settings.retain(|(n, _)| *n != name);
                self.settings.push((name, sql));
            }
            Some(SessionCommand::Reset(name)) => self.settings.retain(|(n, _)| *n != name),
            Some(SessionCommand::ResetAll) => {
                self.settings.clear();
                if sql.trim().to_ascii_lowercase().starts_with("discard") {
                    self.statements.clear();
                    self.unnamed = None;
                    self.recent_unnamed.clear();
                }
            }
            None => {}
        }
    }

    /// The statements that bring a fresh upstream connection to this state.
    pub fn replay_script(&self) -> String {
        self.settings
            .iter()
            .map(|(_, sql)| format!("{sql};"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_sets_are_replayed_but_local_and_transaction_sets_are_not() {
        let mut s = ClientState::default();
        s.on_statement("SET search_path = app");
        s.on_statement("set statement_timeout to '5s';");
        s.on_statement("SET LOCAL work_mem = '1MB'");
        s.on_statement("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
        s.on_statement("SET search_path = other");
        assert_eq!(
            s.replay_script(),
            "set statement_timeout to '5s'; SET search_path = other;"
        );
        s.on_statement("RESET statement_timeout");
        assert_eq!(s.replay_script(), "SET search_path = other;");
        s.on_statement("DISCARD ALL");
        assert_eq!(s.replay_script(), "");
    }

    /// A prepared statement is analysed once per analyzer and
    /// `standard_conforming_strings`; an EXECUTE's analysis is never kept.
    #[test]
    fn prepared_analysis_is_kept_per_analyzer_and_setting() {
        let config =
            crate::config::Config::parse(include_str!("../../tests/fixtures/seed.toml")).unwrap();
        let (a1, a2) = (
            crate::analyze::Analyzer::new(&config),
            crate::analyze::Analyzer::new(&config),
        );
        assert_ne!(a1.id(), a2.id());
        let mut s = ClientState::default();
        s.on_parse("q", "SELECT * FROM users WHERE tenant_id = $1", &[25]);
        s.on_parse("x", "EXECUTE p(1)", &[]);
        let calls = std::cell::Cell::new(0);
        let bind = |s: &mut ClientState, name: &str, z: &crate::analyze::Analyzer| {
            s.prepared_analysis(name, z.id(), |sql, ctx| {
                calls.set(calls.get() + 1);
                z.analyze_in(sql, ctx)
            })
            .map(|(a, types)| (a, types.to_vec()))
        };
        let (first, types) = bind(&mut s, "q", &a1).unwrap();
        assert_eq!(types, [25]);
        let (again, _) = bind(&mut s, "q", &a1).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(calls.get(), 1, "the second Bind reuses the analysis");
        bind(&mut s, "q", &a2).unwrap();
        assert_eq!(calls.get(), 2, "another analyzer (a reload) analyses again");
        s.sql.set_standard_conforming_strings(false);
        bind(&mut s, "q", &a2).unwrap();
        assert_eq!(calls.get(), 3, "another string setting analyses again");
        bind(&mut s, "x", &a2).unwrap();
        bind(&mut s, "x", &a2).unwrap();
        assert_eq!(calls.get(), 5, "EXECUTE is analysed at every Bind");
        assert!(bind(&mut s, "missing", &a2).is_none());
        s.on_parse("q", "SELECT 1", &[]);
        let (replaced, _) = bind(&mut s, "q", &a2).unwrap();
        assert_eq!(replaced.sql(), "SELECT 1", "a new Parse drops the memo");
    }

    /// Texts cycled through the unnamed statement keep their analyses
    /// (up to RECENT_UNNAMED of them), each re-Parse being a new
    /// generation for the upstreams.
    #[test]
    fn unnamed_texts_cycled_by_a_driver_keep_their_analyses() {
        let config =
            crate::config::Config::parse(include_str!("../../tests/fixtures/seed.toml")).unwrap();
        let z = crate::analyze::Analyzer::new(&config);
        let mut s = ClientState::default();
        let calls = std::cell::Cell::new(0);
        let parse_bind = |s: &mut ClientState, sql: &str| {
            let g = s.on_parse("", sql, &[25]);
            let (a, types) = s
                .prepared_analysis("", z.id(), |sql, ctx| {
                    calls.set(calls.get() + 1);
                    z.analyze_in(sql, ctx)
                })
                .unwrap();
            assert_eq!(a.sql(), sql, "the analysis is of the text bound");
            assert_eq!(types, [25]);
            g
        };
        let texts: Vec<String> = (0..=RECENT_UNNAMED)
            .map(|i| format!("SELECT {i} FROM users WHERE tenant_id = $1"))
            .collect();
        let g0 = parse_bind(&mut s, &texts[0]);
        parse_bind(&mut s, &texts[1]);
        let g0_again = parse_bind(&mut s, &texts[0]);
        assert_ne!(
            g0, g0_again,
            "a re-Parse after another text is a new generation"
        );
        parse_bind(&mut s, &texts[1]);
        assert_eq!(calls.get(), 2, "each text analysed once");
        for t in &texts {
            parse_bind(&mut s, t);
        }
        assert_eq!(calls.get(), RECENT_UNNAMED + 1, "new texts are analysed");
        parse_bind(&mut s, &texts[0]);
        assert_eq!(calls.get(), RECENT_UNNAMED + 1, "the oldest of 16 is kept");
        // texts[1] is now the oldest kept; one more new text pushes it out.
        parse_bind(&mut s, "SELECT 'new' FROM users WHERE tenant_id = $1");
        parse_bind(&mut s, &texts[1]);
        assert_eq!(calls.get(), RECENT_UNNAMED + 3, "the 17th is forgotten");
        s.on_statement("DISCARD ALL");
        parse_bind(&mut s, &texts[0]);
        assert_eq!(calls.get(), RECENT_UNNAMED + 4, "DISCARD ALL forgets them");
    }

    #[test]
    fn multi_statement_strings_are_not_classified() {
        assert_eq!(classify_session_command("SET a = 1; SELECT 1"), None);
        assert_eq!(classify_session_command("select 1"), None);
        assert_eq!(classify_session_command(""), None);
    }

    #[test]
    fn named_statements_are_tracked_until_closed() {
        let mut s = ClientState::default();
        let g1 = s.on_parse("s1", "select $1", &[23]);
        let u1 = s.on_parse("", "select 2", &[]);
        assert_eq!(
            s.on_parse("", "select 2", &[]),
            u1,
            "same unnamed text keeps its generation"
        );
        assert_ne!(
            s.on_parse("s1", "select $1", &[23]),
            g1,
            "a named re-Parse is a new generation"
        );
        assert_eq!(&*s.statement("s1").unwrap().sql, "select $1");
        s.on_close_statement("s1");
        assert!(s.statement("s1").is_none());
    }
}
