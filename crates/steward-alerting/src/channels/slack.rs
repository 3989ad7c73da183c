//! `slack`: posts to a Slack incoming webhook, as Block Kit blocks with a plain `text`
//! fallback (what notifications and screen readers show).
//!
//! ```toml
//! [[alerting.channels]]
//! name = "ops-slack"
//! type = "slack"
//! url_secret = "prod/alerting/slack#url"   # required: the webhook URL is a credential
//! min_interval = "1s"                      # default 1s: least time between two posts
//! timeout = "10s"                          # default 10s
//! ```
//!
//! The message is a `header` block (the title, plain text, at most 150 characters), a
//! `section` per alert (mrkdwn, at most 3000 characters: status, name, summary, other
//! annotations, labels, start and end), a note of the alerts left out when there are more than
//! fit, and a `context` block (receiver, link to Steward). Slack takes at most 50 blocks, so
//! at most 47 alerts are shown; longer texts are cut with `…`. Changes and tests show their
//! summary instead of alerts.
//!
//! Slack accepts about one message per second per webhook: the channel spaces its posts by
//! `min_interval` (posts wait their turn in order), and after a 429 it holds further posts until
//! the `Retry-After` has passed, answering them Retryable meanwhile rather than waiting long.
//! A 2xx is success; 408, 429 and 5xx are retried; other answers (`invalid_payload`,
//! `no_service`, `channel_is_archived`) go to the dead letters.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::Client;
use serde_json::{json, Value};
use tokio::{sync::Mutex, time::Instant};

use super::{
    http::{
        alert_name, alert_summary, notification_summary, post_json, show_time, truncate_chars, Ctx,
        Settings, DEFAULT_TIMEOUT,
    },
    Channel, ChannelConfigError, SecretSource, SendError,
};
use crate::model::{AlertView, Notification, NotifyKind};

const KIND: &str = "slack";

/// Most blocks in one message.
pub(crate) const MAX_BLOCKS: usize = 50;
/// Most characters of a header block's text.
pub(crate) const MAX_HEADER: usize = 150;
/// Most characters of a section's (or context element's) text.
pub(crate) const MAX_SECTION: usize = 3000;
/// Most characters of the `text` fallback we send (Slack cuts at 40,000).
const MAX_TEXT: usize = 3000;
/// Most characters of an alert's summary, another annotation and a label value in its section.
const MAX_SUMMARY: usize = 1200;
const MAX_VALUE: usize = 400;
const MAX_LABEL: usize = 150;

struct Slack {
    name: String,
    http: Client,
    url_secret: String,
    timeout: Duration,
    min_interval: Duration,
    /// The earliest time of the next post (after `min_interval`, or a 429's `Retry-After`).
    next_at: Mutex<Option<Instant>>,
}

/// Builds a `slack` channel from its settings.
pub fn build(
    name: &str,
    settings: &Value,
    http: &Client,
) -> Result<Arc<dyn Channel>, ChannelConfigError> {
    let mut s = Settings::new(name, KIND, settings)?;
    let url_secret = s.req_secret_ref(
        "url_secret",
        "url_secret, a secret reference (ENV/PATH#FIELD) holding the incoming webhook URL",
    )?;
    let min_interval = s.duration("min_interval", Duration::from_secs(1))?;
    let timeout = s.duration("timeout", DEFAULT_TIMEOUT)?;
    s.finish()?;
    Ok(Arc::new(Slack {
        name: name.to_string(),
        http: http.clone(),
        url_secret,
        timeout,
        min_interval,
        next_at: Mutex::new(None),
    }))
}

/// Escapes the three characters Slack's mrkdwn reserves.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn section(text: &str) -> Value {
    let text = if text.trim().is_empty() { " " } else { text };
    json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate_chars(text, MAX_SECTION)},
    })
}

fn link(url: &str, label: &str) -> Option<String> {
    let ok = (url.starts_with("https://") || url.starts_with("http://")) && !url.contains('|');
    ok.then(|| format!("<{}|{}>", esc(url), esc(label)))
}

fn alert_text(a: &AlertView) -> String {
    let icon = if a.status == "firing" {
        ":red_circle:"
    } else {
        ":white_check_mark:"
    };
    let mut out = format!(
        "{icon} *{}* · {}",
        esc(alert_name(a)),
        esc(&a.status.to_uppercase())
    );
    // Long values are cut on their own, so that labels and times still fit in the section.
    let summary = alert_summary(a);
    if let Some(s) = summary {
        out.push('\n');
        out.push_str(&esc(&truncate_chars(s, MAX_SUMMARY)));
    }
    for (k, v) in a.annotations.iter() {
        if Some(v.as_str()) == summary || v.trim().is_empty() {
            continue;
        }
        match link(v, v) {
            Some(l) if k.ends_with("url") && v.len() <= MAX_VALUE => {
                out.push_str(&format!("\n*{}:* {l}", esc(k)))
            }
            _ => out.push_str(&format!(
                "\n*{}:* {}",
                esc(k),
                esc(&truncate_chars(v, MAX_VALUE))
            )),
        }
    }
    let labels: Vec<String> = a
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| {
            let v = truncate_chars(v, MAX_LABEL).replace('`', "'");
            format!("`{}={}`", esc(k), esc(&v))
        })
        .collect();
    if !labels.is_empty() {
        out.push_str(&format!("\n*Labels:* {}", labels.join(" ")));
    }
    out.push_str(&format!("\n*Started:* {}", show_time(&a.starts_at)));
    if a.status != "firing" {
        out.push_str(&format!("  *Ended:* {}", show_time(&a.ends_at)));
    }
    if let Some(l) = link(&a.generator_url, "Source") {
        out.push_str(&format!("  {l}"));
    }
    out
}

/// The webhook payload: `text` plus at most [`MAX_BLOCKS`] blocks.
pub(crate) fn payload(n: &Notification) -> Value {
    let title = n.title();
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate_chars(&title, MAX_HEADER), "emoji": true},
    })];
    let mut fallback = title.clone();
    match n.kind {
        NotifyKind::Change | NotifyKind::Test => {
            let summary = notification_summary(n);
            blocks.push(section(&esc(&summary)));
            if summary != title {
                fallback = format!("{title}: {summary}");
            }
        }
        _ => {
            if n.kind == NotifyKind::Acknowledged {
                blocks.push(section("*Acknowledged.*"));
            }
            // Room left after the header, any section above and the context block.
            let room = MAX_BLOCKS - blocks.len() - 1;
            let shown = if n.alerts.len() <= room {
                n.alerts.len()
            } else {
                room - 1 // one block for the note
            };
            for a in &n.alerts[..shown] {
                blocks.push(section(&alert_text(a)));
            }
            let left_out = (n.alerts.len() - shown) as u64 + n.truncated_alerts;
            if left_out > 0 {
                let more = if left_out == 1 { "alert" } else { "alerts" };
                blocks.push(section(&format!("…and {left_out} more {more} not shown.")));
            }
            if let Some(s) = n.alerts.first().and_then(alert_summary) {
                fallback = format!("{title}: {s}");
            }
        }
    }
    let mut ctx = format!("Steward · receiver *{}*", esc(&n.receiver));
    if let Some(l) = link(&n.external_url, "Open in Steward") {
        ctx.push_str(&format!(" · {l}"));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": truncate_chars(&ctx, MAX_SECTION)}],
    }));
    json!({
        "text": truncate_chars(&fallback, MAX_TEXT),
        "blocks": blocks,
    })
}

#[async_trait]
impl Channel for Slack {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn send(&self, n: &Notification, secrets: &dyn SecretSource) -> Result<(), SendError> {
        let mut ctx = Ctx::new(KIND, &self.name);
        let url = ctx
            .resolve_url(secrets, "url_secret", &self.url_secret)
            .await?;
        let body = payload(n);

        // Posts go one at a time, in turn, spaced by min_interval.
        let mut next_at = self.next_at.lock().await;
        if let Some(at) = *next_at {
            let wait = at.saturating_duration_since(Instant::now());
            if wait > self.min_interval {
                // Held back by a 429: do not queue for the whole Retry-After.
                return Err(SendError::Retryable {
                    reason: format!(
                        "{}: rate limited by Slack; holding posts for {}",
                        ctx.who(),
                        humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                    ),
                    retry_after: Some(wait),
                });
            }
            tokio::time::sleep_until(at).await;
        }
        let result = post_json(&self.http, &ctx, url, &[], &body, self.timeout).await;
        let hold = match &result {
            Err(SendError::Retryable {
                retry_after: Some(d),
                ..
            }) => (*d).max(self.min_interval),
            _ => self.min_interval,
        };
        *next_at = Some(Instant::now() + hold);
        result
    }
}
