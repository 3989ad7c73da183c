//! Steward's storage layer: the only crate that writes SQL.
//!
//! Engines describe what to do as closures over [`Tx`], a small set of transactional primitives
//! that both backends implement ([`sqlite`], the embedded default, and [`postgres`], the
//! scale-out store). [`Store`] runs reads on a connection pool and funnels every write through a
//! single group-commit writer: many requests' writes and audit entries share one transaction and
//! one fsync, each job inside its own savepoint, and no job is acknowledged before its commit.
//!
//! Architecture invariant: every audit entry is written in the same transaction as the change it
//! describes, and the response waits for that commit (fail closed).
#![forbid(unsafe_code)]

pub mod audit;
mod error;
pub mod model;
pub mod postgres;
pub mod sqlite;
mod store;
mod tx;
mod writer;

pub use error::StoreError;
pub use model::*;
pub use store::{JobError, Store};
pub use tx::Tx;
