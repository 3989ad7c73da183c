//! `pagerduty`: PagerDuty Events API v2 (alert events and change events).
//!
//! ```toml
//! [[alerting.channels]]
//! name = "oncall"
//! type = "pagerduty"
//! routing_key_secret = "prod/alerting/pagerduty#routing_key"  # required: the integration key
//! url = "https://events.pagerduty.com/v2/enqueue"              # default (EU: events.eu.pagerduty.com)
//! change_url = "https://events.pagerduty.com/v2/change/enqueue" # default
//! severity = "error"      # optional: always this (critical|error|warning|info); default: from the
//!                         # alerts' `severity` label, unknown values -> error
//! source = "steward"      # default "steward": payload.source
//! timeout = "10s"         # default 10s
//! ```
//!
//! What is sent, by notification kind (`dedup_key` is the notification's, stable for the life of
//! the group, so repeats and retries update one PagerDuty alert):
//!
//! - firing, test: `event_action = "trigger"` with `payload { summary (at most 1024
//!   characters), source, severity, timestamp, component/group/class (from the labels of those
//!   names, when the alerts share them), custom_details { alerts, counts, links } }`;
//! - resolved: `"resolve"`; acknowledged: `"acknowledge"` (both with the `dedup_key` only);
//! - change: a change event to `change_url`: `payload { summary, timestamp, source,
//!   custom_details }`.
//!
//! PagerDuty answers 202; 408, 429 and 5xx are retried (honouring `Retry-After`); 400 (which
//! is also the answer to an invalid routing key) and other answers go to the dead letters.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{Client, Url};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{
    http::{
        alert_name, alert_summary, group_severity, notification_summary, post_json, truncate_chars,
        Ctx, Settings, UrlSettings, DEFAULT_TIMEOUT,
    },
    Channel, ChannelConfigError, SecretSource, SendError,
};
use crate::model::{Notification, NotifyKind};

const KIND: &str = "pagerduty";
const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
const DEFAULT_CHANGE_URL: &str = "https://events.pagerduty.com/v2/change/enqueue";
const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

/// Most characters of `payload.summary`.
pub(crate) const MAX_SUMMARY: usize = 1024;
/// Most characters of `dedup_key`.
pub(crate) const MAX_DEDUP_KEY: usize = 255;
/// Most alerts listed in `custom_details` (PagerDuty caps an event at 512 KB).
const MAX_DETAIL_ALERTS: usize = 100;
/// Most characters of one label or annotation value in `custom_details`.
const MAX_DETAIL_VALUE: usize = 2000;

struct PagerDuty {
    name: String,
    http: Client,
    routing_key_secret: String,
    url: Url,
    change_url: Url,
    severity: Option<String>,
    source: String,
    timeout: Duration,
}

/// Builds a `pagerduty` channel from its settings.
pub fn build(
    name: &str,
    settings: &Value,
    http: &Client,
) -> Result<Arc<dyn Channel>, ChannelConfigError> {
    let mut s = Settings::new(name, KIND, settings)?;
    let routing_key_secret = s.req_secret_ref(
        "routing_key_secret",
        "routing_key_secret, a secret reference (ENV/PATH#FIELD) holding the integration's routing key",
    )?;
    let url = s
        .opt_url("url")?
        .unwrap_or_else(|| Url::parse(DEFAULT_URL).expect("constant URL parses"));
    let change_url = s
        .opt_url("change_url")?
        .unwrap_or_else(|| Url::parse(DEFAULT_CHANGE_URL).expect("constant URL parses"));
    let severity = match s.opt_str("severity")? {
        Some(v) if SEVERITIES.contains(&v.as_str()) => Some(v),
        Some(v) => {
            return Err(s.error(
                "severity",
                format!(
                    "{v:?} is not a PagerDuty severity; use one of {}",
                    SEVERITIES.join(", ")
                ),
            ))
        }
        None => None,
    };
    let source = s.opt_str("source")?.unwrap_or_else(|| "steward".into());
    let timeout = s.duration("timeout", DEFAULT_TIMEOUT)?;
    s.finish()?;
    Ok(Arc::new(PagerDuty {
        name: name.to_string(),
        http: http.clone(),
        routing_key_secret,
        url,
        change_url,
        severity,
        source,
        timeout,
    }))
}

/// A severity label mapped to PagerDuty's four; unknown values are `error`.
pub(crate) fn map_severity(label: Option<&str>) -> &'static str {
    match label.map(str::to_ascii_lowercase).as_deref() {
        Some("critical" | "crit" | "fatal" | "emergency" | "alert" | "page" | "p1") => "critical",
        Some("warning" | "warn" | "medium" | "minor" | "low" | "p3" | "p4") => "warning",
        Some("info" | "informational" | "notice" | "none" | "ok" | "p5") => "info",
        _ => "error",
    }
}

/// The notification's dedup key, hashed down when (unexpectedly) longer than PagerDuty takes.
fn dedup_key(n: &Notification) -> String {
    if n.dedup_key.chars().count() <= MAX_DEDUP_KEY && !n.dedup_key.is_empty() {
        n.dedup_key.clone()
    } else {
        hex::encode(Sha256::digest(n.dedup_key.as_bytes()))
    }
}

fn cut_values(m: &crate::model::Labels) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), json!(truncate_chars(v, MAX_DETAIL_VALUE))))
        .collect()
}

fn custom_details(n: &Notification) -> Value {
    let firing = n.alerts.iter().filter(|a| a.status == "firing").count();
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .take(MAX_DETAIL_ALERTS)
        .map(|a| {
            json!({
                "alertname": alert_name(a),
                "status": a.status,
                "summary": alert_summary(a).map(|s| truncate_chars(s, MAX_DETAIL_VALUE)),
                "labels": cut_values(&a.labels),
                "annotations": cut_values(&a.annotations),
                "starts_at": a.starts_at,
                "ends_at": (a.status != "firing").then_some(a.ends_at),
                "generator_url": (!a.generator_url.is_empty()).then_some(&a.generator_url),
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    let left_out = n.alerts.len().saturating_sub(MAX_DETAIL_ALERTS) as u64 + n.truncated_alerts;
    let mut d = json!({
        "firing": firing,
        "resolved": n.alerts.len() - firing,
        "group_labels": n.group_labels,
        "common_labels": n.common_labels,
        "common_annotations": cut_values(&n.common_annotations),
        "alerts": alerts,
        "receiver": n.receiver,
        "group_key": n.group_key,
        "notification_id": n.id,
    });
    if left_out > 0 {
        d["alerts_not_listed"] = json!(left_out);
    }
    if !n.external_url.is_empty() {
        d["external_url"] = json!(n.external_url);
    }
    d
}

fn summary(n: &Notification) -> String {
    let title = n.title();
    let text = match n.kind {
        NotifyKind::Change | NotifyKind::Test => notification_summary(n),
        _ => match n.alerts.first().and_then(alert_summary) {
            Some(s) if n.alerts.len() == 1 => format!("{title}: {s}"),
            _ => title,
        },
    };
    let text = if text.trim().is_empty() {
        "Steward notification".to_string()
    } else {
        text
    };
    truncate_chars(&text, MAX_SUMMARY).into_owned()
}

fn links(n: &Notification) -> Vec<Value> {
    if n.external_url.starts_with("http://") || n.external_url.starts_with("https://") {
        vec![json!({"href": n.external_url, "text": "Open in Steward"})]
    } else {
        vec![]
    }
}

impl PagerDuty {
    /// The request for `n`: where it goes and its body.
    fn event(&self, n: &Notification, routing_key: &str) -> (Url, Value) {
        let timestamp = n
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        match n.kind {
            NotifyKind::Change => (
                self.change_url.clone(),
                json!({
                    "routing_key": routing_key,
                    "payload": {
                        "summary": summary(n),
                        "timestamp": timestamp,
                        "source": self.source,
                        "custom_details": custom_details(n),
                    },
                    "links": links(n),
                }),
            ),
            NotifyKind::Resolved | NotifyKind::Acknowledged => (
                self.url.clone(),
                json!({
                    "routing_key": routing_key,
                    "event_action": if n.kind == NotifyKind::Resolved { "resolve" } else { "acknowledge" },
                    "dedup_key": dedup_key(n),
                }),
            ),
            NotifyKind::Firing | NotifyKind::Test => {
                let severity = match &self.severity {
                    Some(s) => s.clone(),
                    None => map_severity(group_severity(n).as_deref()).to_string(),
                };
                let mut payload = json!({
                    "summary": summary(n),
                    "source": self.source,
                    "severity": severity,
                    "timestamp": timestamp,
                    "custom_details": custom_details(n),
                });
                for field in ["component", "group", "class"] {
                    if let Some(v) = n.common_labels.get(field).filter(|v| !v.is_empty()) {
                        payload[field] = json!(truncate_chars(v, MAX_SUMMARY));
                    }
                }
                let mut body = json!({
                    "routing_key": routing_key,
                    "event_action": "trigger",
                    "dedup_key": dedup_key(n),
                    "payload": payload,
                    "client": "Steward",
                    "links": links(n),
                });
                if !links(n).is_empty() {
                    body["client_url"] = json!(n.external_url);
                }
                (self.url.clone(), body)
            }
        }
    }
}

#[async_trait]
impl Channel for PagerDuty {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn send(&self, n: &Notification, secrets: &dyn SecretSource) -> Result<(), SendError> {
        let mut ctx = Ctx::new(KIND, &self.name);
        let key = ctx
            .resolve(secrets, "routing_key_secret", &self.routing_key_secret)
            .await?;
        let (url, body) = self.event(n, &key);
        post_json(&self.http, &ctx, url, &[], &body, self.timeout).await
    }
}
