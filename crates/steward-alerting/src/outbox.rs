//! The outbox: every notification is stored (`records` kind `outbox`, id ordered by creation)
//! in the transaction that records the group state that produced it, and only then sent. A
//! sender takes the oldest notification per channel and dedup key (so a resolve never
//! overtakes its firing), sends it, and in one write deletes it and appends the notification
//! log entry. A crash between the send and that write sends it again after restart: delivery
//! is at least once, with the same dedup key and group key. Retryable failures wait an
//! exponential backoff with jitter, at least the provider's `Retry-After`; other failures and
//! the last attempt move it to the dead letters (kind `dead`), from which it can be replayed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_store::RecordRow;

use crate::model::Notification;

pub const OUTBOX: &str = "outbox";
pub const DEAD: &str = "dead";
pub const LOG: &str = "notifylog";

/// A stored notification with its delivery history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub notification: Notification,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    pub first_at: DateTime<Utc>,
    #[serde(default)]
    pub dead_at: Option<DateTime<Utc>>,
}

impl OutboxItem {
    pub fn new(n: Notification, now: DateTime<Utc>) -> Self {
        Self {
            notification: n,
            attempts: 0,
            last_error: None,
            first_at: now,
            dead_at: None,
        }
    }

    pub fn row(&self, kind: &str, due: Option<DateTime<Utc>>) -> RecordRow {
        RecordRow {
            kind: kind.into(),
            id: self.notification.id.clone(),
            doc: serde_json::to_string(self).expect("outbox items serialize"),
            due_at: due,
        }
    }
}

/// One line of the notification log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub time: DateTime<Utc>,
    pub notification_id: String,
    pub channel: String,
    pub receiver: String,
    pub kind: String,
    pub status: String,
    pub group_key: String,
    pub dedup_key: String,
    pub alerts: usize,
    /// `sent`, `retry` or `dead`.
    pub outcome: String,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LogEntry {
    pub fn new(
        item: &OutboxItem,
        now: DateTime<Utc>,
        outcome: &str,
        error: Option<String>,
    ) -> Self {
        let n = &item.notification;
        Self {
            time: now,
            notification_id: n.id.clone(),
            channel: n.channel.clone(),
            receiver: n.receiver.clone(),
            kind: n.kind.as_str().into(),
            status: n.status.clone(),
            group_key: n.group_key.clone(),
            dedup_key: n.dedup_key.clone(),
            alerts: n.alerts.len(),
            outcome: outcome.into(),
            attempt: item.attempts,
            error,
        }
    }

    /// Newest first in id order: the id counts down with time.
    pub fn row(&self) -> RecordRow {
        let micros = self.time.timestamp_micros().max(0) as u64;
        RecordRow {
            kind: LOG.into(),
            id: format!("{:016x}{:08x}", u64::MAX - micros, rand::random::<u32>()),
            doc: serde_json::to_string(self).expect("log entries serialize"),
            due_at: Some(self.time),
        }
    }
}

/// The wait before attempt `attempt + 1`: `base * 2^(attempt-1)` capped at `max`, with equal
/// jitter, and never less than the provider asked for.
pub fn backoff(
    attempt: u32,
    base: std::time::Duration,
    max: std::time::Duration,
    retry_after: Option<std::time::Duration>,
) -> std::time::Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = exp / 2;
    let jitter = half.mul_f64(rand::random::<f64>());
    (half + jitter).max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        for _ in 0..50 {
            let d1 = backoff(1, b, m, None);
            assert!(d1 >= Duration::from_millis(500) && d1 <= b);
            let d5 = backoff(5, b, m, None);
            assert!(d5 >= Duration::from_secs(8) && d5 <= Duration::from_secs(16));
            assert!(backoff(30, b, m, None) <= m);
            assert!(backoff(1, b, m, Some(Duration::from_secs(120))) >= Duration::from_secs(120));
        }
    }
}
