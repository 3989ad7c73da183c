//! The alert model: label sets and their fingerprints, alerts as stored, and the
//! [`Notification`] a channel renders (one group's alerts for one receiver).

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A label (or annotation) set, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// The fingerprint of a label set: 16 hex digits of a SHA-256 over the sorted pairs, stable
/// across restarts and replicas (what the API and the CLI call an alert's id).
pub fn fingerprint(labels: &Labels) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Raised but its rule's `for` has not elapsed (or fewer than `fail_after` failures).
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert as a channel shows it (the Alertmanager webhook v4 alert shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    /// `firing` or `resolved`.
    pub status: String,
    /// Shared with the stored alert (no copy per notification).
    pub labels: Arc<Labels>,
    pub annotations: Arc<Labels>,
    pub starts_at: DateTime<Utc>,
    /// The resolve time; `0001-01-01T00:00:00Z` while firing (as Alertmanager sends).
    pub ends_at: DateTime<Utc>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    pub fingerprint: String,
}

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// At least one alert of the group fires.
    Firing,
    /// Every alert of the group that was sent firing has resolved.
    Resolved,
    /// Someone acknowledged the group (PagerDuty `acknowledge`; others show a line).
    Acknowledged,
    /// A change worth knowing about, not an incident (a deploy, a rotation): PagerDuty change
    /// events; other channels show it as an informational message.
    Change,
    /// `steward notify test CHANNEL`.
    Test,
}

impl NotifyKind {
    /// The name in payloads and the notification log (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Firing => "firing",
            NotifyKind::Resolved => "resolved",
            NotifyKind::Acknowledged => "acknowledged",
            NotifyKind::Change => "change",
            NotifyKind::Test => "test",
        }
    }
}

/// One notification for one channel: a group's alerts, as of one flush.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification (the outbox id); receivers may use it to drop repeats.
    pub id: String,
    pub kind: NotifyKind,
    pub receiver: String,
    pub channel: String,
    /// The group's key: route id plus the values of its `group_by` labels.
    pub group_key: String,
    /// Stable for the life of the group on this receiver (32 hex digits): PagerDuty's
    /// `dedup_key`, Opsgenie's `alias`. The same on every retry and after a restart.
    pub dedup_key: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub group_labels: Labels,
    pub common_labels: Labels,
    pub common_annotations: Labels,
    pub alerts: Vec<AlertView>,
    /// Alerts left out to keep the payload within a channel's limits.
    pub truncated_alerts: u64,
    /// Where a human sees the group (Steward's URL).
    pub external_url: String,
    pub created_at: DateTime<Utc>,
    /// For `Change`: a one-line summary (a deploy, a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl Notification {
    /// A short title: `[FIRING:2] HighLatency (api critical)`.
    pub fn title(&self) -> String {
        match self.kind {
            NotifyKind::Change | NotifyKind::Test => self
                .summary
                .clone()
                .unwrap_or_else(|| "Steward notification".to_string()),
            _ => {
                let firing = self.alerts.iter().filter(|a| a.status == "firing").count();
                let head = match self.kind {
                    NotifyKind::Acknowledged => "ACKNOWLEDGED".to_string(),
                    _ if self.status == "resolved" => "RESOLVED".to_string(),
                    _ => format!("FIRING:{firing}"),
                };
                let name = self
                    .group_labels
                    .get("alertname")
                    .or_else(|| self.common_labels.get("alertname"))
                    .cloned()
                    .unwrap_or_default();
                let rest: Vec<&str> = self
                    .group_labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != "alertname")
                    .map(|(_, v)| v.as_str())
                    .collect();
                if rest.is_empty() {
                    format!("[{head}] {name}").trim_end().to_string()
                } else {
                    format!("[{head}] {name} ({})", rest.join(" "))
                }
            }
        }
    }

    /// The group's severity label, when its alerts agree on one.
    pub fn severity(&self) -> Option<&str> {
        self.common_labels.get("severity").map(String::as_str)
    }

    /// A notification for tests and `notify test`.
    pub fn sample(channel: &str, now: DateTime<Utc>) -> Self {
        let mut labels = Labels::new();
        labels.insert("alertname".into(), "StewardTest".into());
        labels.insert("severity".into(), "info".into());
        let mut annotations = Labels::new();
        annotations.insert(
            "summary".into(),
            format!("Test notification from Steward to channel {channel}"),
        );
        Notification {
            id: uuid::Uuid::new_v4().to_string(),
            kind: NotifyKind::Test,
            receiver: "test".into(),
            channel: channel.into(),
            group_key: "{}:{alertname=\"StewardTest\"}".into(),
            dedup_key: hex::encode(&Sha256::digest(channel.as_bytes())[..16]),
            status: "firing".into(),
            group_labels: labels.clone(),
            common_labels: labels.clone(),
            common_annotations: annotations.clone(),
            alerts: vec![AlertView {
                status: "firing".into(),
                fingerprint: fingerprint(&labels),
                labels: labels.into(),
                annotations: annotations.into(),
                starts_at: now,
                ends_at: zero_time(),
                generator_url: String::new(),
            }],
            truncated_alerts: 0,
            external_url: String::new(),
            created_at: now,
            summary: Some(format!(
                "Test notification from Steward to channel {channel}"
            )),
        }
    }
}

/// Alertmanager's "no end time": `0001-01-01T00:00:00Z`.
pub fn zero_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
        .expect("constant time parses")
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_order_independent_and_distinguishes_boundaries() {
        let mut a = Labels::new();
        a.insert("a".into(), "bc".into());
        let mut b = Labels::new();
        b.insert("ab".into(), "c".into());
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 16);
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    }

    #[test]
    fn title_counts_firing() {
        let n = Notification::sample("x", Utc::now());
        let mut n2 = n.clone();
        n2.kind = NotifyKind::Firing;
        assert_eq!(n2.title(), "[FIRING:1] StewardTest (info)");
        n2.status = "resolved".into();
        n2.kind = NotifyKind::Resolved;
        assert_eq!(n2.title(), "[RESOLVED] StewardTest (info)");
    }
}
