//! `opsgenie`: the Opsgenie Alert API (create, close and acknowledge, by alias).
//!
//! ```toml
//! [[alerting.channels]]
//! name = "oncall-genie"
//! type = "opsgenie"
//! api_key_secret = "prod/alerting/opsgenie#api_key"  # required: an API integration's key
//! url = "https://api.opsgenie.com"                    # default (EU: https://api.eu.opsgenie.com)
//! priority = "P2"                                     # optional: always this (P1..P5); default:
//!                                                     # from the `severity` label
//! tags = ["steward", "team-db"]                       # optional: added to every alert
//! timeout = "10s"                                     # default 10s
//! ```
//!
//! Requests carry `Authorization: GenieKey <key>`. The alias is the notification's dedup key,
//! stable for the life of the group, so repeats update one Opsgenie alert:
//!
//! - firing, test: `POST /v2/alerts` with `message` (the title, at most 130 characters),
//!   `alias` (at most 512), `description` (the alerts, at most 15,000), `tags` (at most 20 of at
//!   most 50 characters: `k:v` of the group labels plus `tags`), `details` (common labels, at
//!   most 8,000 characters in all), `priority` (critical P1, error P2, warning P3, low P4,
//!   info P5, anything else P3) and `source = "steward"`;
//! - resolved: `POST /v2/alerts/{alias}/close?identifierType=alias` with `source` and `note`;
//! - acknowledged: `POST /v2/alerts/{alias}/acknowledge?identifierType=alias`;
//! - change: Opsgenie has no change events, so a `P5` alert tagged `change`.
//!
//! Opsgenie answers 202 (it processes requests asynchronously); 408, 429 and 5xx are retried
//! (honouring `Retry-After`); other answers (401/403 for a bad key, 422 for a refused body) go
//! to the dead letters.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{header::AUTHORIZATION, Client, Url};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{
    http::{
        alert_name, alert_summary, group_severity, notification_summary, post_json, show_time,
        truncate_chars, Ctx, Settings, UrlSettings, DEFAULT_TIMEOUT,
    },
    Channel, ChannelConfigError, SecretSource, SendError,
};
use crate::model::{Notification, NotifyKind};

const KIND: &str = "opsgenie";
const DEFAULT_URL: &str = "https://api.opsgenie.com";
const PRIORITIES: &[&str] = &["P1", "P2", "P3", "P4", "P5"];

/// Documented limits of the create-alert request.
pub(crate) const MAX_MESSAGE: usize = 130;
pub(crate) const MAX_ALIAS: usize = 512;
pub(crate) const MAX_DESCRIPTION: usize = 15_000;
pub(crate) const MAX_TAGS: usize = 20;
pub(crate) const MAX_TAG: usize = 50;
pub(crate) const MAX_DETAILS: usize = 8_000;
const MAX_NOTE: usize = 25_000;

struct Opsgenie {
    name: String,
    http: Client,
    api_key_secret: String,
    url: Url,
    priority: Option<String>,
    tags: Vec<String>,
    timeout: Duration,
}

/// Builds an `opsgenie` channel from its settings.
pub fn build(
    name: &str,
    settings: &Value,
    http: &Client,
) -> Result<Arc<dyn Channel>, ChannelConfigError> {
    let mut s = Settings::new(name, KIND, settings)?;
    let api_key_secret = s.req_secret_ref(
        "api_key_secret",
        "api_key_secret, a secret reference (ENV/PATH#FIELD) holding an API integration key",
    )?;
    let url = s
        .opt_url("url")?
        .unwrap_or_else(|| Url::parse(DEFAULT_URL).expect("constant URL parses"));
    let priority = match s.opt_str("priority")? {
        Some(p) if PRIORITIES.contains(&p.as_str()) => Some(p),
        Some(p) => {
            return Err(s.error(
                "priority",
                format!(
                    "{p:?} is not an Opsgenie priority; use one of {}",
                    PRIORITIES.join(", ")
                ),
            ))
        }
        None => None,
    };
    let tags = s.opt_str_list("tags")?.unwrap_or_default();
    if let Some(t) = tags.iter().find(|t| t.chars().count() > MAX_TAG) {
        let t = truncate_chars(t, 20).into_owned();
        return Err(s.error(
            "tags",
            format!("tag {t:?} is longer than Opsgenie's {MAX_TAG} characters"),
        ));
    }
    let timeout = s.duration("timeout", DEFAULT_TIMEOUT)?;
    s.finish()?;
    Ok(Arc::new(Opsgenie {
        name: name.to_string(),
        http: http.clone(),
        api_key_secret,
        url,
        priority,
        tags,
        timeout,
    }))
}

/// A severity label mapped to an Opsgenie priority.
pub(crate) fn map_priority(label: Option<&str>) -> &'static str {
    match label.map(str::to_ascii_lowercase).as_deref() {
        Some("critical" | "crit" | "fatal" | "emergency" | "alert" | "page" | "p1") => "P1",
        Some("error" | "err" | "high" | "major" | "p2") => "P2",
        Some("low" | "p4") => "P4",
        Some("info" | "informational" | "notice" | "none" | "ok" | "p5") => "P5",
        _ => "P3",
    }
}

fn alias(n: &Notification) -> String {
    if !n.dedup_key.is_empty() && n.dedup_key.chars().count() <= MAX_ALIAS {
        n.dedup_key.clone()
    } else {
        hex::encode(Sha256::digest(n.dedup_key.as_bytes()))
    }
}

fn description(n: &Notification) -> String {
    let mut out = String::new();
    if matches!(n.kind, NotifyKind::Change | NotifyKind::Test) {
        out.push_str(&notification_summary(n));
        out.push_str("\n\n");
    }
    for a in &n.alerts {
        out.push_str(&format!("{} [{}]", alert_name(a), a.status.to_uppercase()));
        if let Some(s) = alert_summary(a) {
            out.push_str(&format!(": {s}"));
        }
        out.push('\n');
        for (k, v) in a.annotations.iter() {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("  labels: {}\n", labels.join(", ")));
        out.push_str(&format!("  started: {}", show_time(&a.starts_at)));
        if a.status != "firing" {
            out.push_str(&format!(", ended: {}", show_time(&a.ends_at)));
        }
        out.push_str("\n\n");
        if out.len() > MAX_DESCRIPTION * 4 {
            break; // plenty; it is cut below
        }
    }
    if n.truncated_alerts > 0 {
        out.push_str(&format!("{} more alerts not shown.\n", n.truncated_alerts));
    }
    if !n.external_url.is_empty() {
        out.push_str(&format!("Steward: {}\n", n.external_url));
    }
    let out = out.trim_end();
    truncate_chars(if out.is_empty() { "-" } else { out }, MAX_DESCRIPTION).into_owned()
}

fn tags(n: &Notification, extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec!["steward".into()];
    if n.kind == NotifyKind::Change {
        out.push("change".into());
    }
    out.extend(extra.iter().cloned());
    for (k, v) in &n.group_labels {
        out.push(truncate_chars(&format!("{k}:{v}"), MAX_TAG).into_owned());
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|t| seen.insert(t.clone()));
    out.truncate(MAX_TAGS);
    out
}

/// Details within [`MAX_DETAILS`] characters (keys and values counted), as many as fit.
fn details(n: &Notification) -> Map<String, Value> {
    let firing = n.alerts.iter().filter(|a| a.status == "firing").count();
    let mut pairs: Vec<(String, String)> = vec![
        ("firing".into(), firing.to_string()),
        ("resolved".into(), (n.alerts.len() - firing).to_string()),
        ("receiver".into(), n.receiver.clone()),
    ];
    if !n.external_url.is_empty() {
        pairs.push(("steward_url".into(), n.external_url.clone()));
    }
    pairs.extend(n.common_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut out = Map::new();
    let mut used = 0;
    for (k, v) in pairs {
        let v = truncate_chars(&v, 500).into_owned();
        let cost = k.chars().count() + v.chars().count();
        if used + cost > MAX_DETAILS {
            break;
        }
        used += cost;
        out.insert(k, Value::String(v));
    }
    out
}

impl Opsgenie {
    fn endpoint(&self, alias: Option<(&str, &str)>) -> Url {
        let mut u = self.url.clone();
        {
            let Ok(mut seg) = u.path_segments_mut() else {
                return u; // unreachable: build() accepts http(s) URLs with a host only
            };
            seg.pop_if_empty().extend(["v2", "alerts"]);
            if let Some((alias, action)) = alias {
                seg.extend([alias, action]);
            }
        }
        if alias.is_some() {
            u.set_query(Some("identifierType=alias"));
        }
        u
    }

    fn request(&self, n: &Notification) -> (Url, Value) {
        let alias = alias(n);
        match n.kind {
            NotifyKind::Resolved => (
                self.endpoint(Some((&alias, "close"))),
                json!({
                    "source": "steward",
                    "user": "steward",
                    "note": truncate_chars(&format!("Resolved: {}", n.title()), MAX_NOTE),
                }),
            ),
            NotifyKind::Acknowledged => (
                self.endpoint(Some((&alias, "acknowledge"))),
                json!({
                    "source": "steward",
                    "user": "steward",
                    "note": truncate_chars(&format!("Acknowledged in Steward: {}", n.title()), MAX_NOTE),
                }),
            ),
            NotifyKind::Firing | NotifyKind::Test | NotifyKind::Change => {
                let priority = match (&self.priority, n.kind) {
                    (_, NotifyKind::Change) => "P5".to_string(),
                    (Some(p), _) => p.clone(),
                    (None, _) => map_priority(group_severity(n).as_deref()).to_string(),
                };
                let title = match n.kind {
                    NotifyKind::Change => notification_summary(n),
                    _ => n.title(),
                };
                let title = if title.trim().is_empty() {
                    "Steward notification".to_string()
                } else {
                    title
                };
                (
                    self.endpoint(None),
                    json!({
                        "message": truncate_chars(&title, MAX_MESSAGE),
                        "alias": alias,
                        "description": description(n),
                        "tags": tags(n, &self.tags),
                        "details": details(n),
                        "priority": priority,
                        "source": "steward",
                    }),
                )
            }
        }
    }
}

#[async_trait]
impl Channel for Opsgenie {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn send(&self, n: &Notification, secrets: &dyn SecretSource) -> Result<(), SendError> {
        let mut ctx = Ctx::new(KIND, &self.name);
        let key = ctx
            .resolve(secrets, "api_key_secret", &self.api_key_secret)
            .await?;
        let auth = Zeroizing::new(format!("GenieKey {}", key.as_str()));
        let (url, body) = self.request(n);
        post_json(
            &self.http,
            &ctx,
            url,
            &[(AUTHORIZATION, auth.as_str())],
            &body,
            self.timeout,
        )
        .await
    }
}
