//! Channels: one [`Channel`] trait, one module per kind. A channel turns a [`Notification`]
//! into its provider's payload and sends it once; retries, backoff and dead letters belong to
//! the outbox (`crate::outbox`), which reads [`SendError`] to decide.
//!
//! Credentials (webhook URLs, routing keys, SMTP passwords) are never in the config: settings
//! name Steward secrets as `ENV/PATH#FIELD` references, resolved through [`SecretSource`] at
//! send time, so a rotated credential is used at once. Errors never quote a credential (a
//! Slack webhook URL is itself one): they name the channel and the HTTP status.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::Value;

use crate::model::Notification;

pub mod email;
mod http;
pub mod opsgenie;
pub mod pagerduty;
pub mod slack;
pub mod teams;
pub mod webhook;

/// Why one send failed, and whether the outbox should try again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (connection failure, timeout, 429, 5xx). `retry_after` comes from the
    /// provider's `Retry-After` header when it sent one; the outbox waits at least that long.
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (other 4xx: revoked webhook, wrong routing key, payload refused).
    /// The notification goes to the dead letters at once.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl SendError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        SendError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn permanent(reason: impl Into<String>) -> Self {
        SendError::Permanent {
            reason: reason.into(),
        }
    }
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable { .. })
    }
}

/// A configuration problem in one channel's settings. `key` is the setting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel {channel:?}: {key}: {message}")]
pub struct ChannelConfigError {
    pub channel: String,
    pub key: String,
    pub message: String,
}

pub use steward_core::settings::SecretSource;

/// One configured destination.
#[async_trait]
pub trait Channel: Send + Sync {
    /// The kind (`webhook`, `slack`, `pagerduty`, `email`, `opsgenie`, `teams`).
    fn kind(&self) -> &'static str;
    /// Sends one notification once.
    async fn send(&self, n: &Notification, secrets: &dyn SecretSource) -> Result<(), SendError>;
}

/// Every kind this build knows.
pub const KINDS: &[&str] = &[
    "webhook",
    "slack",
    "pagerduty",
    "email",
    "opsgenie",
    "teams",
];

/// Builds a channel from its `type` and the rest of its settings (a JSON object).
pub fn build(
    name: &str,
    kind: &str,
    settings: &Value,
    http: &reqwest::Client,
) -> Result<Arc<dyn Channel>, ChannelConfigError> {
    match kind {
        "webhook" => webhook::build(name, settings, http),
        "slack" => slack::build(name, settings, http),
        "pagerduty" => pagerduty::build(name, settings, http),
        "email" => email::build(name, settings),
        "opsgenie" => opsgenie::build(name, settings, http),
        "teams" => teams::build(name, settings, http),
        other => Err(ChannelConfigError {
            channel: name.to_string(),
            key: "type".into(),
            message: format!(
                "unknown channel type {other:?}; use one of {}",
                KINDS.join(", ")
            ),
        }),
    }
}
