//! What the channels share: reading a channel's settings (unknown and missing keys are errors
//! that name the key), resolving secret references at send time, posting JSON with a deadline,
//! classifying the answer into success, [`SendError::Retryable`] (with `Retry-After` in seconds
//! or as an HTTP-date) or [`SendError::Permanent`], and text helpers (truncation on character
//! boundaries, redaction, one-line excerpts, a few words about an alert).
//!
//! Errors built here name the channel, its kind and the HTTP status, and quote at most a short,
//! redacted excerpt of the provider's answer; never a URL (a Slack or Teams webhook URL is a
//! credential) and never a resolved secret.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

use reqwest::{
    header::{HeaderName, HeaderValue, RETRY_AFTER},
    Client, Response, StatusCode, Url,
};
use zeroize::Zeroizing;

pub(crate) use steward_core::text::{error_chain, one_line, redact};

use super::{ChannelConfigError, SecretSource, SendError};
use crate::model::{AlertView, Notification};

/// The default deadline of one HTTP send.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest `Retry-After` honoured; a larger value (or a date further out) is clamped to this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Most bytes of a provider's answer quoted in an error.
const EXCERPT_BYTES: usize = 200;

/// Most bytes of a provider's answer read at all (the rest is not awaited).
const READ_BYTES: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Settings

/// One channel's settings, read key by key with `steward_core`'s shared reader: unknown and
/// missing keys are errors that name the key, and every error is a [`ChannelConfigError`].
pub(crate) type Settings = steward_core::settings::Settings<ChannelConfigError>;

impl From<steward_core::settings::SettingsError> for ChannelConfigError {
    fn from(e: steward_core::settings::SettingsError) -> Self {
        ChannelConfigError {
            channel: e.owner,
            key: e.key,
            message: e.message,
        }
    }
}

impl steward_core::settings::ConfigError for ChannelConfigError {
    const NOUN: &'static str = "channel";
}

/// URL settings, which need `reqwest`'s parser (so they live here, not in `steward_core`).
pub(crate) trait UrlSettings {
    /// An optional `http`/`https` URL written in the config (not a secret).
    fn opt_url(&mut self, key: &'static str) -> Result<Option<Url>, ChannelConfigError>;
}

impl UrlSettings for Settings {
    fn opt_url(&mut self, key: &'static str) -> Result<Option<Url>, ChannelConfigError> {
        let Some(s) = self.opt_str(key)? else {
            return Ok(None);
        };
        match Url::parse(s.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(Some(u)),
            Ok(_) => Err(self.error(key, "must be an http:// or https:// URL with a host")),
            Err(e) => Err(self.error(key, format!("is not a URL ({e})"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sending

/// Who is sending, for error messages, and what must never appear in them.
pub(crate) struct Ctx<'a> {
    pub(crate) kind: &'static str,
    pub(crate) channel: &'a str,
    /// Resolved secrets (and anything else) to blank out of quoted text.
    pub(crate) redact: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(kind: &'static str, channel: &'a str) -> Self {
        Ctx {
            kind,
            channel,
            redact: Vec::new(),
        }
    }

    /// `slack channel "ops"`.
    pub(crate) fn who(&self) -> String {
        format!("{} channel {:?}", self.kind, self.channel)
    }

    /// Adds a secret to redact; for a URL also its path, its query, and every path segment and
    /// query value of 12 characters or more (where webhook URLs carry their tokens), since an
    /// answer may quote them on their own.
    pub(crate) fn add_secret(&mut self, value: &str) {
        const TOKEN_LEN: usize = 12;
        self.redact.push(value.to_string());
        if let Ok(u) = Url::parse(value) {
            let path = u.path();
            if path.len() > 1 {
                self.redact.push(path.to_string());
            }
            for seg in u.path_segments().into_iter().flatten() {
                if seg.len() >= TOKEN_LEN {
                    self.redact.push(seg.to_string());
                }
            }
            if let Some(q) = u.query() {
                self.redact.push(q.to_string());
                for pair in q.split('&') {
                    let raw = pair.split_once('=').map_or(pair, |(_, v)| v);
                    if raw.len() >= TOKEN_LEN {
                        self.redact.push(raw.to_string());
                    }
                }
            }
            for (_, v) in u.query_pairs() {
                if v.len() >= TOKEN_LEN {
                    self.redact.push(v.into_owned());
                }
            }
        }
    }

    pub(crate) fn redacted(&self, text: &str) -> String {
        let refs: Vec<&str> = self.redact.iter().map(String::as_str).collect();
        redact(text, &refs)
    }

    pub(crate) fn retryable(&self, what: &str) -> SendError {
        SendError::retryable(self.redacted(&format!("{}: {what}", self.who())))
    }

    pub(crate) fn permanent(&self, what: &str) -> SendError {
        SendError::permanent(self.redacted(&format!("{}: {what}", self.who())))
    }

    /// Resolves the secret that setting `key` names, trimmed of surrounding white space, and
    /// remembers it for redaction. A failure is retryable (the secret may be created or the
    /// store come back); its message names the reference, never a value.
    pub(crate) async fn resolve(
        &mut self,
        secrets: &dyn SecretSource,
        key: &str,
        reference: &str,
    ) -> Result<Zeroizing<String>, SendError> {
        let value = secrets.resolve(reference).await.map_err(|e| {
            self.retryable(&format!(
                "cannot resolve {key} {reference:?}: {}",
                one_line(&e, 300)
            ))
        })?;
        let trimmed = Zeroizing::new(value.trim().to_string());
        if trimmed.is_empty() {
            return Err(self.permanent(&format!("the secret {key} {reference:?} is empty")));
        }
        self.add_secret(&trimmed);
        Ok(trimmed)
    }

    /// Resolves a secret that must hold an http(s) URL.
    pub(crate) async fn resolve_url(
        &mut self,
        secrets: &dyn SecretSource,
        key: &str,
        reference: &str,
    ) -> Result<Url, SendError> {
        let value = self.resolve(secrets, key, reference).await?;
        match Url::parse(&value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
            _ => Err(self.permanent(&format!(
                "the secret {key} {reference:?} does not hold an http(s) URL; store the webhook URL in it"
            ))),
        }
    }
}

/// POSTs `body` as JSON to `url` with `headers` (their values are marked sensitive), within
/// `timeout`, and classifies the answer.
pub(crate) async fn post_json(
    http: &Client,
    ctx: &Ctx<'_>,
    url: Url,
    headers: &[(HeaderName, &str)],
    body: &impl serde::Serialize,
    timeout: Duration,
) -> Result<(), SendError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ctx.permanent(&format!("cannot encode the payload: {e}")))?;
    let mut req = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes);
    for (name, value) in headers {
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            ctx.permanent(&format!(
                "the {name} header value holds characters a header cannot carry; check the secret"
            ))
        })?;
        v.set_sensitive(true);
        req = req.header(name.clone(), v);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| transport_error(ctx, e, timeout))?;
    classify(ctx, resp).await
}

/// A request that got no answer: always retryable.
pub(crate) fn transport_error(ctx: &Ctx<'_>, e: reqwest::Error, timeout: Duration) -> SendError {
    let e = e.without_url();
    if e.is_timeout() {
        return ctx.retryable(&format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ));
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    ctx.retryable(&format!("{what}: {}", one_line(&error_chain(&e), 300)))
}

/// Success for 2xx; retryable for 408, 429 and 5xx (with `Retry-After` when sent); permanent
/// otherwise (other 4xx: a revoked webhook, a wrong key, a refused payload; and unfollowed
/// redirects).
pub(crate) async fn classify(ctx: &Ctx<'_>, resp: Response) -> Result<(), SendError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = read_some(resp).await;
    let excerpt = ctx.redacted(&excerpt(&body, EXCERPT_BYTES));
    let what = if excerpt.is_empty() {
        format!("HTTP {}", status_text(status))
    } else {
        format!("HTTP {}: {excerpt}", status_text(status))
    };
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        let reason = ctx.redacted(&format!("{}: {what}", ctx.who()));
        Err(SendError::Retryable {
            reason,
            retry_after,
        })
    } else {
        Err(ctx.permanent(&what))
    }
}

fn status_text(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

/// Reads at most [`READ_BYTES`] of a body; a read error ends it quietly.
async fn read_some(mut resp: Response) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < READ_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            _ => break,
        }
    }
    out.truncate(READ_BYTES);
    out
}

/// `Retry-After` as delay-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime), relative
/// to `now`; a date in the past is zero; anything over [`MAX_RETRY_AFTER`] is clamped.
pub(crate) fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

// ---------------------------------------------------------------------------------------------
// Text

/// At most the first `max` bytes of `bytes` as one line of text (lossy UTF-8, cut on a
/// character boundary; line breaks become ` | `, other control characters spaces).
pub(crate) fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    one_line(&text, max)
}

/// `s` cut to at most `max` characters, the last of them `…` when anything was cut.
pub(crate) fn truncate_chars(s: &str, max: usize) -> Cow<'_, str> {
    if max == 0 {
        return Cow::Borrowed("");
    }
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some(_) => {
            let end = s.char_indices().nth(max - 1).map_or(s.len(), |(i, _)| i);
            Cow::Owned(format!("{}…", &s[..end]))
        }
    }
}

/// An alert's name: its `alertname` label, or its fingerprint.
pub(crate) fn alert_name(a: &AlertView) -> &str {
    a.labels
        .get("alertname")
        .map(String::as_str)
        .unwrap_or(&a.fingerprint)
}

/// An alert's one-line summary: its `summary`, `description` or `message` annotation.
pub(crate) fn alert_summary(a: &AlertView) -> Option<&str> {
    ["summary", "description", "message"]
        .iter()
        .find_map(|k| a.annotations.get(*k))
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// A line for a notification without alerts (a change, a test): its summary or title.
pub(crate) fn notification_summary(n: &Notification) -> String {
    n.summary.clone().unwrap_or_else(|| n.title())
}

/// The severity that describes the group: the common `severity` label, else the most severe
/// label among its firing alerts (then among all alerts), lower-cased.
pub(crate) fn group_severity(n: &Notification) -> Option<String> {
    if let Some(s) = n.severity() {
        return Some(s.to_ascii_lowercase());
    }
    let pick = |firing_only: bool| {
        n.alerts
            .iter()
            .filter(|a| !firing_only || a.status == "firing")
            .filter_map(|a| a.labels.get("severity"))
            .map(|s| s.to_ascii_lowercase())
            .min_by_key(|s| severity_rank(s))
    };
    pick(true).or_else(|| pick(false))
}

/// 0 = most severe; unknown names rank between error and warning.
pub(crate) fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" | "crit" | "fatal" | "emergency" | "alert" | "page" | "p1" => 0,
        "error" | "err" | "high" | "major" | "p2" => 1,
        "warning" | "warn" | "medium" | "minor" | "p3" => 3,
        "low" | "p4" => 4,
        "info" | "informational" | "notice" | "none" | "ok" | "p5" => 5,
        _ => 2,
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, or `-` for Alertmanager's zero time.
pub(crate) fn show_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    if *t <= crate::model::zero_time() {
        "-".to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("hello", 5), "hello");
        assert_eq!(truncate_chars("hello!", 5), "hell…");
        assert_eq!(truncate_chars("ééééé", 3), "éé…");
        assert_eq!(truncate_chars("abc", 0), "");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn redaction_and_excerpts() {
        assert_eq!(
            redact("key abcdef in abcdefgh", &["abcdefgh", "abcdef", "ab"]),
            "key *** in ***"
        );
        assert_eq!(
            excerpt(b"line one\r\nline\ttwo\n\n", 100),
            "line one | line two"
        );
        assert!(excerpt(&[b'x'; 500], 50).len() <= 50);
    }

    #[test]
    fn settings_reject_unknown_and_bad_refs() {
        let v = serde_json::json!({"url_secret": "prod/alerting/slack#url", "extra": 1});
        let mut s = Settings::new("ops", "slack", &v).unwrap();
        assert_eq!(
            s.req_secret_ref("url_secret", "a url").unwrap(),
            "prod/alerting/slack#url"
        );
        let e = s.finish().unwrap_err();
        assert_eq!(e.key, "extra");
        assert!(e.message.contains("url_secret"), "{e}");

        let v = serde_json::json!({"url_secret": "https://hooks.slack.com/services/T0/B0/sekrit"});
        let mut s = Settings::new("ops", "slack", &v).unwrap();
        let e = s.req_secret_ref("url_secret", "a url").unwrap_err();
        assert!(!e.to_string().contains("sekrit"), "{e}");

        let mut s = Settings::new("ops", "slack", &serde_json::json!({})).unwrap();
        assert_eq!(
            s.req_secret_ref("url_secret", "a url").unwrap_err().key,
            "url_secret"
        );
    }
}
