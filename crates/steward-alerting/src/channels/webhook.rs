//! `webhook`: POSTs the Alertmanager webhook (version 4) JSON payload, so receivers written for
//! Alertmanager work unchanged.
//!
//! ```toml
//! [[alerting.channels]]
//! name = "ops-hook"
//! type = "webhook"
//! url = "https://hooks.internal.example/alertmanager"   # or, when the URL is itself a credential:
//! # url_secret = "prod/alerting/ops-hook#url"          # ENV/PATH#FIELD, resolved at every send
//! bearer_secret = "prod/alerting/ops-hook#token"        # optional: Authorization: Bearer <token>
//! max_alerts = 0                                        # 0 (default): all; else keep the first N
//! timeout = "10s"                                       # default 10s
//! send_acknowledgements = false                         # default false (see below)
//! ```
//!
//! Exactly one of `url` and `url_secret` is required. With `max_alerts = N` the payload carries
//! the first N alerts and `truncatedAlerts` counts the rest (plus any the pipeline dropped).
//!
//! The body is Alertmanager's: `version` (`"4"`), `groupKey`, `truncatedAlerts`, `status`,
//! `receiver`, `groupLabels`, `commonLabels`, `commonAnnotations`, `externalURL` and `alerts[]`
//! (`status`, `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`, `fingerprint`).
//! Acknowledgements are not sent unless `send_acknowledgements = true`: an Alertmanager
//! receiver would read one (status `firing`) as a reminder. Acknowledgements, change notices
//! and tests have the same shape (a test's status is
//! `firing`); one extra member, `steward` (`{id, kind, dedupKey, summary?}`), tells them apart
//! for receivers that care, and is ignored by those that do not. Any 2xx is success; 408, 429
//! and 5xx are retried (honouring `Retry-After`); other answers go to the dead letters.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{header::AUTHORIZATION, Client, Url};
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{
    http::{post_json, Ctx, Settings, UrlSettings, DEFAULT_TIMEOUT},
    Channel, ChannelConfigError, SecretSource, SendError,
};
use crate::model::{AlertView, Labels, Notification, NotifyKind};

const KIND: &str = "webhook";

enum Target {
    Plain(Url),
    Secret(String),
}

struct Webhook {
    name: String,
    http: Client,
    target: Target,
    bearer_secret: Option<String>,
    max_alerts: usize,
    timeout: Duration,
    send_acks: bool,
}

/// Builds a `webhook` channel from its settings.
pub fn build(
    name: &str,
    settings: &Value,
    http: &Client,
) -> Result<Arc<dyn Channel>, ChannelConfigError> {
    let mut s = Settings::new(name, KIND, settings)?;
    let url = s.opt_url("url")?;
    let url_secret = s.opt_secret_ref("url_secret")?;
    let target = match (url, url_secret) {
        (Some(u), None) => Target::Plain(u),
        (None, Some(r)) => Target::Secret(r),
        (Some(_), Some(_)) => {
            return Err(s.error(
                "url_secret",
                "give either url or url_secret, not both",
            ))
        }
        (None, None) => {
            return Err(s.error(
                "url",
                "missing; a webhook channel needs url (a plain URL) or url_secret (a secret reference holding the URL)",
            ))
        }
    };
    let bearer_secret = s.opt_secret_ref("bearer_secret")?;
    let max_alerts = s.u64("max_alerts", 0)?;
    let max_alerts = usize::try_from(max_alerts).unwrap_or(usize::MAX);
    let timeout = s.duration("timeout", DEFAULT_TIMEOUT)?;
    let send_acks = s.bool("send_acknowledgements", false)?;
    s.finish()?;
    Ok(Arc::new(Webhook {
        name: name.to_string(),
        http: http.clone(),
        target,
        bearer_secret,
        max_alerts,
        timeout,
        send_acks,
    }))
}

/// The Alertmanager webhook v4 payload, borrowed from the notification (serialized straight
/// to bytes: no intermediate JSON tree per alert).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Payload<'a> {
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: u64,
    status: &'a str,
    receiver: &'a str,
    group_labels: &'a Labels,
    common_labels: &'a Labels,
    common_annotations: &'a Labels,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    alerts: &'a [AlertView],
    steward: StewardPart<'a>,
}

/// The `steward` member: tells acknowledgements, changes and tests apart.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StewardPart<'a> {
    id: &'a str,
    kind: NotifyKind,
    dedup_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<&'a str>,
}

/// The payload of `n`, keeping at most `max_alerts` alerts (0: all).
pub(crate) fn payload(n: &Notification, max_alerts: usize) -> Payload<'_> {
    let keep = if max_alerts == 0 {
        n.alerts.len()
    } else {
        max_alerts.min(n.alerts.len())
    };
    let dropped = (n.alerts.len() - keep) as u64;
    let status = match n.kind {
        NotifyKind::Test => "firing",
        _ => n.status.as_str(),
    };
    Payload {
        version: "4",
        group_key: &n.group_key,
        truncated_alerts: n.truncated_alerts + dropped,
        status,
        receiver: &n.receiver,
        group_labels: &n.group_labels,
        common_labels: &n.common_labels,
        common_annotations: &n.common_annotations,
        external_url: &n.external_url,
        alerts: &n.alerts[..keep],
        steward: StewardPart {
            id: &n.id,
            kind: n.kind,
            dedup_key: &n.dedup_key,
            summary: n.summary.as_deref(),
        },
    }
}

#[async_trait]
impl Channel for Webhook {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn send(&self, n: &Notification, secrets: &dyn SecretSource) -> Result<(), SendError> {
        // An Alertmanager receiver would read an acknowledgement (status "firing") as a
        // reminder: sent only when the channel asks for them.
        if n.kind == NotifyKind::Acknowledged && !self.send_acks {
            return Ok(());
        }
        let mut ctx = Ctx::new(KIND, &self.name);
        let url = match &self.target {
            Target::Plain(u) => u.clone(),
            Target::Secret(r) => ctx.resolve_url(secrets, "url_secret", r).await?,
        };
        let bearer = match &self.bearer_secret {
            Some(r) => Some(ctx.resolve(secrets, "bearer_secret", r).await?),
            None => None,
        };
        let auth = bearer
            .as_ref()
            .map(|t| Zeroizing::new(format!("Bearer {}", t.as_str())));
        let headers: Vec<_> = auth.iter().map(|a| (AUTHORIZATION, a.as_str())).collect();
        post_json(
            &self.http,
            &ctx,
            url,
            &headers,
            &payload(n, self.max_alerts),
            self.timeout,
        )
        .await
    }
}
