//! The tenant→region cache and the directory it is loaded from.
//!
//! [`TenantCache`] answers "which region holds this tenant?" for the policy's
//! `rewrite` decision. It is loaded in full from `[tenants] query` at start and
//! every `refresh`, answers hits from a `DashMap` read, looks misses up one
//! tenant at a time (concurrent misses for one tenant share one lookup),
//! remembers unknown tenants for `negative_ttl`, and fails closed: when the
//! directory cannot be read it answers [`TenantAnswer::Unavailable`], never a
//! guessed region (the policy turns that into `GG007`).
//!
//! The I/O comes through the [`Directory`] trait, so this module holds no
//! sockets; the gateway-backed directory lives with the upstream code.
//! Tenant ids are treated as personal data: nothing here logs them.

mod cache;
mod directory;
mod feed;
mod observer;
mod refresh;

pub use crate::config::directory_table;
pub use cache::{CacheStats, CacheStatus, Fresh, TenantAnswer, TenantCache};
pub use directory::{BoxFuture, Change, Directory, DirectoryError, lookup_sql};
pub use observer::{CacheObserver, FeedSource, LookupResult};

#[cfg(test)]
mod tests;
