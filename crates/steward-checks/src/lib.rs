//! Steward's health checks: each configured check runs its probe (`steward-probes`) on its
//! own schedule, its condition (`steward-expr`) decides up or down, a run of failures or
//! successes moves its state, and state changes raise and resolve alerts through the
//! alerting pipeline. Every run is stored raw for a short time and rolled up per minute,
//! hour and day (uptime and latency percentiles) for long.
//!
//! - [`config`]: `[monitoring]` compiled and checked (probe settings, conditions, names,
//!   dependencies).
//! - [`state`]: the up/down state machine (fail after N, recover after M).
//! - [`incidents`]: the status page's incidents, opened and closed with the checks' alerts
//!   and stored as `records`.
//! - [`rollup`]: latency histograms and roll-up buckets.
//! - [`slo`]: objectives, error budgets and multiwindow burn-rate alerts.
//! - [`service`]: the [`Monitor`]: the scheduler, result storage, roll-ups, alerts, and the
//!   operations behind the API and the CLI.

#![forbid(unsafe_code)]

pub mod config;
pub mod incidents;
pub mod rollup;
pub mod service;
pub mod slo;
pub mod state;

pub use config::{CheckConfigError, Compiled};
pub use service::{Monitor, StatusPage};
