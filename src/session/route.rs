//! The per-statement decision point. The session asks its [`Router`] once
//! for every simple Query and once for every Bind (an Execute runs where its
//! portal was bound). Today's [`LocalRouter`] sends everything to the local
//! region; live routing (analysis + policy) implements the same trait.

use std::sync::Arc;

use super::state::{PreparedStatement, TxnStatus};
use crate::wire::ClientError;
use crate::wire::validate::BindFrame;

/// Where one statement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Forward the client's bytes unchanged to this region's gateway.
    Region(Arc<str>),
    /// Forward to this region with a `WARNING` notice sent first (`mode = "warn"`).
    Warn(Arc<str>, ClientError),
    /// Answer with this error; nothing is forwarded.
    Reject(ClientError),
}

/// What the router may know about the session when deciding.
#[derive(Debug, Clone, Copy)]
pub struct StatementContext<'a> {
    /// The authenticated client user.
    pub user: &'a str,
    /// The client's database.
    pub database: &'a str,
    /// Transaction status from the last ReadyForQuery.
    pub txn: TxnStatus,
    /// The region of the upstream connection in use (the one a transaction
    /// in progress is pinned to).
    pub current_region: &'a Arc<str>,
    /// `proxy.local_region`.
    pub local_region: &'a Arc<str>,
}

/// Decides, per statement, which region's gateway serves it.
///
/// Implementations must be cheap and must not block: they run inline in
/// the session loop. They must never panic on any SQL text.
pub trait Router: Send + Sync + 'static {
    /// A simple-protocol Query (possibly several statements in one string).
    fn route_query(&self, cx: &StatementContext<'_>, sql: &str) -> Route;

    /// A Bind: `statement` is the named prepared statement it binds, or, for
    /// the unnamed statement, the SQL of the latest unnamed Parse.
    fn route_bind(
        &self,
        cx: &StatementContext<'_>,
        statement: &PreparedStatement,
        bind: &BindFrame<'_>,
    ) -> Route;
}

/// Sends every statement to the session's current upstream (the local region).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRouter;

impl Router for LocalRouter {
    fn route_query(&self, cx: &StatementContext<'_>, _sql: &str) -> Route {
        Route::Region(cx.current_region.clone())
    }

    fn route_bind(
        &self,
        cx: &StatementContext<'_>,
        _statement: &PreparedStatement,
        _bind: &BindFrame<'_>,
    ) -> Route {
        Route::Region(cx.current_region.clone())
    }
}
