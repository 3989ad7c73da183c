//! Steward's health-check probes: one [`Probe`] trait, one module per check type. A probe
//! runs once, within a timeout, and reports [`Facts`] (what the check's condition reads:
//! `status`, `response_time`, `cert_expires_in`, `rows`, ...), the time per phase, and an
//! error when it could not get an answer at all. Deciding up or down is the condition's
//! job (`steward-expr`), scheduling is `steward-checks`'s.
//!
//! Credentials (database passwords, bearer tokens) are `ENV/PATH#FIELD` references to
//! Steward secrets, resolved at every run through [`SecretSource`]; they never appear in
//! facts, errors or logs.

#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
pub use steward_expr::{Facts, Value};

/// The outcome of one run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What the condition reads. Always has `response_time` (a duration).
    pub facts: Facts,
    /// Time per phase, in order (e.g. `dns`, `connect`, `tls`, `first_byte`, `total`).
    pub phases: Vec<(&'static str, Duration)>,
    /// Set when the probe got no answer to judge (refused, timed out, bad certificate...):
    /// the run is down whatever the condition says. Never holds a credential.
    pub error: Option<String>,
}

pub use steward_core::settings::SecretSource;

/// One configured check target.
#[async_trait]
pub trait Probe: Send + Sync {
    /// The check type (`http`, `tcp`, ...).
    fn kind(&self) -> &'static str;
    /// The condition used when the check gives none (e.g. `status >= 200 && status < 400`).
    fn default_condition(&self) -> &'static str;
    /// Names of the facts this probe can report (conditions are checked against them when
    /// the config loads). A name ending in `.*` stands for any path below it (`body.json.*`).
    fn facts(&self) -> &'static [&'static str];
    /// Runs once; must return within `timeout` (plus a little for clean-up).
    async fn run(&self, secrets: &dyn SecretSource, timeout: Duration) -> Outcome;
}

/// A check's settings that do not fit the probe (unknown key, wrong type, missing field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("check type {kind}: {key}: {message}")]
pub struct ProbeConfigError {
    pub kind: String,
    /// The settings key at fault (as written in the config).
    pub key: String,
    pub message: String,
}

pub mod command;
pub mod database;
pub mod dns;
pub mod host;
pub mod http;
pub mod queue;
pub mod redis;
mod support;
pub mod tcp;
pub mod tls;

/// Builds a probe for one module's kinds.
type Builder = fn(&str, &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError>;

/// Each module's kinds (name, one-line description) and its builder.
const MODULES: &[(&[(&str, &str)], Builder)] = &[
    (http::KINDS, http::build),
    (tcp::KINDS, tcp::build),
    (tls::KINDS, tls::build),
    (dns::KINDS, dns::build),
    (database::KINDS, database::build),
    (redis::KINDS, redis::build),
    (queue::KINDS, queue::build),
    (command::KINDS, command::build),
    (host::KINDS, host::build),
];

/// Every check type this crate knows, with a one-line description (for `--help` and docs).
pub fn kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    MODULES.iter().flat_map(|(k, _)| k.iter().copied())
}

/// Builds a probe of type `kind` from its settings (the check's TOML table as JSON, without
/// the keys the scheduler owns: name, type, interval, timeout, condition, ...).
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    for (kinds, build) in MODULES {
        if kinds.iter().any(|(k, _)| *k == kind) {
            return build(kind, settings);
        }
    }
    Err(ProbeConfigError {
        kind: kind.to_string(),
        key: "type".into(),
        message: format!(
            "unknown check type {kind:?}; known types: {}",
            kinds().map(|k| k.0).collect::<Vec<_>>().join(", ")
        ),
    })
}
