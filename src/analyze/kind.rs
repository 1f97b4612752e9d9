//! The kind of a statement, read from its leading keywords (no parse), so
//! the session can pin transactions and replay session state even for
//! statements the parser cannot read.

use super::lex::leading_words;

/// What a statement does, as far as the session cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// SELECT, WITH, VALUES, TABLE.
    Query,
    /// INSERT (and CockroachDB UPSERT).
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// BEGIN, START TRANSACTION.
    Begin,
    /// COMMIT, END.
    Commit,
    /// ROLLBACK, ABORT (not `ROLLBACK TO`).
    Rollback,
    /// SAVEPOINT.
    Savepoint,
    /// RELEASE [SAVEPOINT].
    Release,
    /// ROLLBACK TO [SAVEPOINT].
    RollbackToSavepoint,
    /// SET (session scope), SET SESSION.
    Set,
    /// SET LOCAL (transaction scope).
    SetLocal,
    /// SET TRANSACTION / SET SESSION CHARACTERISTICS.
    SetTransaction,
    /// RESET.
    Reset,
    /// SHOW.
    Show,
    /// DISCARD.
    Discard,
    /// PREPARE name AS … (SQL-level).
    Prepare,
    /// EXECUTE name (SQL-level).
    Execute,
    /// DEALLOCATE.
    Deallocate,
    /// LISTEN.
    Listen,
    /// UNLISTEN.
    Unlisten,
    /// NOTIFY.
    Notify,
    /// COPY.
    Copy,
    /// EXPLAIN.
    Explain,
    /// CREATE, ALTER, DROP, TRUNCATE, GRANT, REVOKE, COMMENT, VACUUM, ANALYZE, …
    Ddl,
    /// Anything else.
    Other,
}

impl StatementKind {
    /// Reads the kind from the leading keywords of a statement.
    pub fn of(sql: &str) -> StatementKind {
        let w = leading_words(sql, 3);
        let w0 = w.first().map(String::as_str).unwrap_or("");
        let w1 = w.get(1).map(String::as_str).unwrap_or("");
        use StatementKind::*;
        match w0 {
            "select" | "with" | "values" | "table" => Query,
            "insert" | "upsert" => Insert,
            "update" => Update,
            "delete" => Delete,
            "begin" | "start" => Begin,
            "commit" | "end" if w1 != "prepared" => Commit,
            "rollback" | "abort" if w1 == "to" => RollbackToSavepoint,
            "rollback" | "abort" if w1 != "prepared" => Rollback,
            "savepoint" => Savepoint,
            "release" => Release,
            "set" => match w1 {
                "local" => SetLocal,
                "transaction" => SetTransaction,
                "session" if w.get(2).map(String::as_str) == Some("characteristics") => {
                    SetTransaction
                }
                "cluster" => Ddl,
                _ => Set,
            },
            "reset" => Reset,
            "show" => Show,
            "discard" => Discard,
            "prepare" if w1 != "transaction" => Prepare,
            "execute" => Execute,
            "deallocate" => Deallocate,
            "listen" => Listen,
            "unlisten" => Unlisten,
            "notify" => Notify,
            "copy" => Copy,
            "explain" => Explain,
            "create" | "alter" | "drop" | "truncate" | "grant" | "revoke" | "comment"
            | "vacuum" | "analyze" | "analyse" | "reindex" | "cluster" | "refresh"
            | "configure" => Ddl,
            _ => Other,
        }
    }

    /// Statements that never read or write regional rows: they go to the
    /// local (or the transaction's) gateway without a parse.
    pub fn is_control(self) -> bool {
        use StatementKind::*;
        matches!(
            self,
            Begin
                | Commit
                | Rollback
                | Savepoint
                | Release
                | RollbackToSavepoint
                | Set
                | SetLocal
                | SetTransaction
                | Reset
                | Show
                | Discard
                | Deallocate
                | Listen
                | Unlisten
                | Notify
                | Ddl
        )
    }

    /// A short lower-case label (`query`, `begin`, `set_local`, …).
    pub fn label(self) -> &'static str {
        use StatementKind::*;
        match self {
            Query => "query",
            Insert => "insert",
            Update => "update",
            Delete => "delete",
            Begin => "begin",
            Commit => "commit",
            Rollback => "rollback",
            Savepoint => "savepoint",
            Release => "release",
            RollbackToSavepoint => "rollback_to_savepoint",
            Set => "set",
            SetLocal => "set_local",
            SetTransaction => "set_transaction",
            Reset => "reset",
            Show => "show",
            Discard => "discard",
            Prepare => "prepare",
            Execute => "execute",
            Deallocate => "deallocate",
            Listen => "listen",
            Unlisten => "unlisten",
            Notify => "notify",
            Copy => "copy",
            Explain => "explain",
            Ddl => "ddl",
            Other => "other",
        }
    }
}
