//! Client side of the PostgreSQL wire protocol: framing on top of
//! `pgwire::messages`, startup (SSL/GSS/cancel), client authentication.

pub mod auth;
pub mod error;
pub mod frame;
pub mod scram;
pub mod startup;
pub mod stream;

pub use error::ClientError;
pub use frame::{BackendScanner, FrameError, FrameHeader, ScanEvents, peek_frame};
