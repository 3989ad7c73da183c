//! Steward's backup service: what `[backup]` configures, run by the server.
//!
//! * [`config`] compiles `[backup]`: repositories, sources with their type's settings,
//!   schedules, retention, copies, drills, RPO/RTO targets.
//! * [`schedule`] parses `0 3 * * *` and `every 6h`.
//! * [`retention`] decides which snapshots to keep: keep rules combined with a PostgreSQL
//!   point-in-time window.
//! * [`service`] ([`Backups`]) runs backups, drills, checks, prunes, copies and restores,
//!   records every run, and emits events the alerting pipeline turns into alerts.
//! * [`report`] is the DR report: last backup, last passed drill, measured RTO and RPO
//!   against their targets.
//!
//! The repository format and the sources themselves live in `steward-repo` and
//! `steward-backup`; this crate decides when and records what happened.
#![forbid(unsafe_code)]

pub mod config;
pub mod report;
pub mod retention;
pub mod schedule;
pub mod service;

pub use config::{Compiled, ConfigError, OwnStore};
pub use report::DrReport;
pub use service::{Backups, Job, Op, Outcome, RestoreRequest, Run};
