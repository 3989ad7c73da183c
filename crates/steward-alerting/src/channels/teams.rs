//! `teams`: Microsoft Teams, through a Workflows ("When a Teams webhook request is received")
//! or legacy incoming-webhook URL, as a message with one Adaptive Card.
//!
//! ```toml
//! [[alerting.channels]]
//! name = "ops-teams"
//! type = "teams"
//! url_secret = "prod/alerting/teams#url"   # required: the webhook URL is a credential
//! timeout = "10s"                          # default 10s
//! ```
//!
//! The body is `{"type": "message", "attachments": [{"contentType":
//! "application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard 1.4>}]}`; the card holds
//! a `TextBlock` title, then per alert a `TextBlock` heading, a `FactSet` of its labels (and
//! start and end) and a `TextBlock` per annotation, and an `Action.OpenUrl` to Steward when the
//! notification has a URL. Teams refuses messages over 28 KB: alerts are left out from the end
//! (and a line says how many) so the whole body stays under 27,000 bytes; long values are cut
//! with `…`. A 2xx is success (Workflows answer 202, legacy webhooks 200); 408, 429 and 5xx
//! are retried (honouring `Retry-After`); other answers go to the dead letters.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::Client;
use serde_json::{json, Value};

use super::{
    http::{
        alert_name, notification_summary, post_json, show_time, truncate_chars, Ctx, Settings,
        DEFAULT_TIMEOUT,
    },
    Channel, ChannelConfigError, SecretSource, SendError,
};
use crate::model::{AlertView, Notification, NotifyKind};

const KIND: &str = "teams";

/// Most bytes of the JSON body sent (Teams' limit is 28 KB; the rest is margin).
pub(crate) const MAX_PAYLOAD: usize = 27_000;
const MAX_TITLE: usize = 500;
const MAX_LABEL_VALUE: usize = 500;
const MAX_ANNOTATION: usize = 2_000;

struct Teams {
    name: String,
    http: Client,
    url_secret: String,
    timeout: Duration,
}

/// Builds a `teams` channel from its settings.
pub fn build(
    name: &str,
    settings: &Value,
    http: &Client,
) -> Result<Arc<dyn Channel>, ChannelConfigError> {
    let mut s = Settings::new(name, KIND, settings)?;
    let url_secret = s.req_secret_ref(
        "url_secret",
        "url_secret, a secret reference (ENV/PATH#FIELD) holding the webhook URL",
    )?;
    let timeout = s.duration("timeout", DEFAULT_TIMEOUT)?;
    s.finish()?;
    Ok(Arc::new(Teams {
        name: name.to_string(),
        http: http.clone(),
        url_secret,
        timeout,
    }))
}

fn text_block(text: &str) -> Value {
    json!({"type": "TextBlock", "text": text, "wrap": true})
}

/// The card elements of one alert.
fn alert_elements(a: &AlertView) -> Vec<Value> {
    let firing = a.status == "firing";
    let mut out = vec![json!({
        "type": "TextBlock",
        "text": truncate_chars(&format!("{} · {}", alert_name(a), a.status.to_uppercase()), MAX_TITLE),
        "weight": "Bolder",
        "color": if firing { "Attention" } else { "Good" },
        "wrap": true,
        "separator": true,
    })];
    let mut facts: Vec<Value> = a
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| json!({"title": truncate_chars(k, 100), "value": truncate_chars(v, MAX_LABEL_VALUE)}))
        .collect();
    facts.push(json!({"title": "started", "value": show_time(&a.starts_at)}));
    if !firing {
        facts.push(json!({"title": "ended", "value": show_time(&a.ends_at)}));
    }
    out.push(json!({"type": "FactSet", "facts": facts}));
    for (k, v) in a.annotations.iter() {
        if v.trim().is_empty() {
            continue;
        }
        out.push(text_block(&truncate_chars(
            &format!("**{k}:** {v}"),
            MAX_ANNOTATION,
        )));
    }
    out
}

fn message(n: &Notification, body: Vec<Value>) -> Value {
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    });
    if n.external_url.starts_with("https://") || n.external_url.starts_with("http://") {
        card["actions"] = json!([{
            "type": "Action.OpenUrl",
            "title": "Open in Steward",
            "url": n.external_url,
        }]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// The message, at most [`MAX_PAYLOAD`] bytes of JSON.
pub(crate) fn payload(n: &Notification) -> Value {
    let title = n.title();
    let color = match n.kind {
        NotifyKind::Firing => "Attention",
        NotifyKind::Resolved => "Good",
        NotifyKind::Acknowledged => "Warning",
        _ => "Default",
    };
    let mut head = vec![json!({
        "type": "TextBlock",
        "text": truncate_chars(&title, MAX_TITLE),
        "weight": "Bolder",
        "size": "Large",
        "color": color,
        "wrap": true,
    })];
    let groups: Vec<Vec<Value>> = match n.kind {
        NotifyKind::Change | NotifyKind::Test => {
            let summary = notification_summary(n);
            if summary != title {
                head.push(text_block(&truncate_chars(&summary, MAX_ANNOTATION)));
            }
            Vec::new()
        }
        _ => {
            if n.kind == NotifyKind::Acknowledged {
                head.push(text_block("Acknowledged."));
            }
            n.alerts.iter().map(alert_elements).collect()
        }
    };
    let tail = json!({
        "type": "TextBlock",
        "text": format!("…and {} more alerts not shown.", u64::MAX),
        "isSubtle": true,
        "wrap": true,
    });
    // Take alerts while they fit with room for the note, then check the real size.
    let mut used = size(&message(n, head.clone())) + size(&tail) + 1;
    let mut shown = 0;
    for g in &groups {
        let cost: usize = g.iter().map(|e| size(e) + 1).sum();
        if used + cost > MAX_PAYLOAD {
            break;
        }
        used += cost;
        shown += 1;
    }
    loop {
        let mut body = head.clone();
        for g in &groups[..shown] {
            body.extend(g.iter().cloned());
        }
        let left_out = (groups.len() - shown) as u64 + n.truncated_alerts;
        if left_out > 0 {
            let more = if left_out == 1 { "alert" } else { "alerts" };
            body.push(json!({
                "type": "TextBlock",
                "text": format!("…and {left_out} more {more} not shown."),
                "isSubtle": true,
                "wrap": true,
            }));
        }
        let m = message(n, body);
        if shown == 0 || size(&m) <= MAX_PAYLOAD {
            return m;
        }
        shown -= 1;
    }
}

#[async_trait]
impl Channel for Teams {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn send(&self, n: &Notification, secrets: &dyn SecretSource) -> Result<(), SendError> {
        let mut ctx = Ctx::new(KIND, &self.name);
        let url = ctx
            .resolve_url(secrets, "url_secret", &self.url_secret)
            .await?;
        post_json(&self.http, &ctx, url, &[], &payload(n), self.timeout).await
    }
}
