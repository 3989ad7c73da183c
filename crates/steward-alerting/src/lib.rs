//! Steward's alerting pipeline: alerts from Steward's own events and from outside (the
//! Alertmanager API v2), routed by a tree of label matchers into groups, muted by silences,
//! inhibition and maintenance windows, escalated until acknowledged, and delivered through an
//! outbox that survives crashes, with retries, dead letters and a notification log.
//!
//! - [`model`]: alerts, fingerprints, notifications.
//! - [`matchers`], [`route`], [`mutes`], [`config`]: what the config compiles to.
//! - [`pipeline`]: the in-memory state machine (no IO; time comes in as an argument).
//! - [`service`]: the `Alerting` service: persistence, the evaluation loop, the API's
//!   operations with their authorization and audit.
//! - [`outbox`]: durable delivery; [`channels`]: one module per destination.
//! - [`rules`]: Steward's events turned into alerts.
//! - [`import`]: an Alertmanager `alertmanager.yml` converted into `[alerting]`.

#![forbid(unsafe_code)]

pub mod channels;
pub mod config;
pub mod import;
pub mod matchers;
pub mod model;
pub mod mutes;
pub mod outbox;
pub mod pipeline;
pub mod route;
pub mod rules;
pub mod service;

pub use service::{Alerting, PostableAlert};

/// A configuration mistake: the `[alerting]` key that is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
