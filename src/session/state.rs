//! What a session remembers about its client: transaction status, named
//! prepared statements, and the settings to replay on a newly opened
//! upstream connection. Pure data; no I/O.

use std::collections::HashMap;
use std::sync::Arc;

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

/// A named prepared statement as the client created it (Parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedStatement {
    /// The client's name for it (stable whatever upstream runs it).
    pub name: Arc<str>,
    /// The SQL text as sent.
    pub sql: Arc<str>,
    /// Parameter type OIDs given in Parse (0 = unspecified).
    pub param_types: Vec<u32>,
    /// Regions whose upstream connection has it prepared.
    pub prepared_on: Vec<Arc<str>>,
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
    let first_byte = sql.trim_start().bytes().next()?.to_ascii_lowercase();
    if !matches!(first_byte, b's' | b'r' | b'd') {
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

/// The session's memory.
#[derive(Debug, Default)]
pub struct SessionState {
    /// From the last ReadyForQuery.
    pub txn: TxnStatus,
    /// Named prepared statements by client name.
    pub prepared: HashMap<Arc<str>, PreparedStatement>,
    /// SET statements in effect, in order, to replay on a new upstream.
    pub settings: Vec<(String, String)>,
}

impl SessionState {
    /// Records a Parse of a named statement (the unnamed one is not kept).
    pub fn on_parse(&mut self, name: &str, sql: &str, param_types: &[u32], region: &Arc<str>) {
        if name.is_empty() {
            return;
        }
        let name: Arc<str> = name.into();
        self.prepared.insert(
            name.clone(),
            PreparedStatement {
                name,
                sql: sql.into(),
                param_types: param_types.to_vec(),
                prepared_on: vec![region.clone()],
            },
        );
    }

    /// Records a Close of a named statement.
    pub fn on_close_statement(&mut self, name: &str) {
        self.prepared.remove(name);
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
                    self.prepared.clear();
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
        let mut s = SessionState::default();
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

    #[test]
    fn multi_statement_strings_are_not_classified() {
        assert_eq!(classify_session_command("SET a = 1; SELECT 1"), None);
        assert_eq!(classify_session_command("select 1"), None);
        assert_eq!(classify_session_command(""), None);
    }

    #[test]
    fn named_statements_are_tracked_until_closed() {
        let mut s = SessionState::default();
        let eu: Arc<str> = "eu".into();
        s.on_parse("s1", "select $1", &[23], &eu);
        s.on_parse("", "select 2", &[], &eu);
        assert_eq!(s.prepared.len(), 1);
        assert_eq!(&*s.prepared["s1"].sql, "select $1");
        s.on_close_statement("s1");
        assert!(s.prepared.is_empty());
    }
}
