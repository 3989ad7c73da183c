//! `webhook`: rotates a key that an HTTP endpoint issues (a SaaS API key, a token from an
//! internal service). The endpoint does the work; Steward asks it to, signs every request, and
//! stores what it answers.
//!
//! # Settings
//!
//! ```json
//! {"url": "https://keys.example.com/steward", "timeout": "10s"}
//! ```
//!
//! `url` is where every request goes (HTTPS; plain HTTP only to a loopback address, or with
//! `"allow_http": true` on a network you trust). `timeout` is per request (humantime, default
//! `10s`). Redirects are not followed. `admin` (the secret holding the admin credential) is
//! resolved by the engine and ignored here. The admin credential holds `signing_key`, the
//! secret shared with the endpoint.
//!
//! # Requests
//!
//! Each step POSTs one JSON object:
//!
//! ```json
//! {"action": "create", "env": "prod", "path": "stripe/key", "attempt_id": "...",
//!  "credential": null, "current": {...}}
//! ```
//!
//! `action` is `create`, `test`, `discard` or `revoke`; `credential` is the pending credential
//! (test, discard) or the old one (revoke), null for create; `current` is the current one or
//! null. Headers:
//!
//! - `X-Steward-Timestamp`: Unix seconds;
//! - `X-Steward-Signature`: `v1=` and the hex HMAC-SHA256, keyed with `signing_key`, of
//!   `<timestamp>.<body>`. The endpoint recomputes it over the raw body, compares in constant
//!   time, and refuses old timestamps (e.g. more than 5 minutes off) to stop replays;
//! - `X-Steward-Attempt`: the attempt id, an idempotency key: a repeated `create` with the same
//!   attempt id must answer the same credential (the engine repeats a step after a crash).
//!
//! `create` must answer 2xx with `{"credential": {...}}`: the new key, already active. Other
//! actions succeed on any 2xx. Errors: 4xx (but 408 and 429) is Rejected, 5xx, 408, 429,
//! timeouts and connection errors are Unavailable; messages carry the status and a short,
//! redacted excerpt of the answer, never the request.
//!
//! # Steps and zero downtime
//!
//! - `create`: the endpoint issues a new key, valid at once alongside the current one.
//! - `set`: does nothing (the endpoint activated the key on create); no request is sent.
//! - `test`: the endpoint checks the pending key works.
//! - `discard`: the endpoint deletes the pending key.
//! - `revoke`: the endpoint deletes the old key after the grace period.
//!
//! Old and new keys are both valid from create to revoke, so applications have the whole
//! grace period to switch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::{support, Credential, Rotator, RotatorError, StepContext};

const KIND: &str = "webhook";
/// The longest answer read (a credential is small).
const MAX_ANSWER: usize = 1 << 20;
/// How much of an error answer a message quotes.
const EXCERPT: usize = 200;

/// The `webhook` rotator.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRotator;

/// Settings of the `webhook` rotator (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    #[serde(default = "default_timeout", deserialize_with = "support::duration")]
    pub timeout: Duration,
    /// Allows `http://` to a non-loopback host.
    #[serde(default)]
    pub allow_http: bool,
    /// The secret holding the admin credential; the engine resolves it.
    pub admin: Option<Value>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl WebhookSettings {
    /// Parses and checks the settings.
    pub fn parse(v: &Value) -> Result<Self, RotatorError> {
        let s: Self = support::parse_settings(KIND, v)?;
        s.url()?;
        Ok(s)
    }

    fn url(&self) -> Result<Url, RotatorError> {
        let url = Url::parse(&self.url).map_err(|e| {
            RotatorError::invalid(format!(
                "webhook rotator: `url` is not a URL ({e}); write e.g. \"https://keys.example.com/rotate\""
            ))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RotatorError::invalid(
                "webhook rotator: `url` must not hold credentials; requests are authenticated \
                 by the signature (admin `signing_key`)",
            ));
        }
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.allow_http || is_loopback(&url) => Ok(url),
            "http" => Err(RotatorError::invalid(format!(
                "webhook rotator: `url` {} uses plain HTTP, which would carry credentials in \
                 the clear; use https, or set \"allow_http\": true on a network you trust",
                display_url(&url)
            ))),
            other => Err(RotatorError::invalid(format!(
                "webhook rotator: `url` has scheme {other:?}; use https"
            ))),
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// The URL without query and fragment (they may carry tokens), for messages.
fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The `X-Steward-Signature` value: `v1=` and the hex HMAC-SHA256 of `<timestamp>.<body>`.
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends one signed request and returns the answer's body on 2xx.
async fn call(
    cx: &StepContext<'_>,
    action: &str,
    credential: Option<&Credential>,
) -> Result<Vec<u8>, RotatorError> {
    let s = WebhookSettings::parse(cx.settings)?;
    let url = s.url()?;
    let admin = support::require_admin(
        KIND,
        cx,
        "`signing_key`, the secret shared with the endpoint",
    )?;
    let key = admin.str("signing_key")?;
    if key.is_empty() {
        return Err(RotatorError::invalid(
            "webhook rotator: the admin credential's signing_key is empty; store the key \
             shared with the endpoint",
        ));
    }
    let mut secrets = support::secret_values(&[cx.current, credential, Some(admin)]);
    let body = serde_json::to_vec(&support::request_body(cx, action, credential)).map_err(|e| {
        RotatorError::invalid(format!("webhook rotator: encoding the request: {e}"))
    })?;
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sig = signature(key.as_bytes(), ts, &body);
    secrets.push(&sig);

    let shown = display_url(&url);
    let client = reqwest::Client::builder()
        .timeout(s.timeout)
        .connect_timeout(s.timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("steward-rotator")
        .build()
        .map_err(|e| {
            RotatorError::unavailable(format!("webhook rotator: building the HTTP client: {e}"))
        })?;
    let send_err = |e: reqwest::Error| {
        let e = e.without_url();
        let why = if e.is_timeout() {
            format!("no answer within {}", humantime::format_duration(s.timeout))
        } else {
            support::redact(&support::error_chain(&e), &secrets)
        };
        RotatorError::unavailable(format!(
            "webhook rotator: {action} request to {shown} failed: {why}; check that the endpoint \
             is up and reachable (raise `timeout` if it is slow)"
        ))
    };
    let mut resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-steward-timestamp", ts.to_string())
        .header("x-steward-signature", &sig)
        .header("x-steward-attempt", cx.attempt_id)
        .body(body)
        .send()
        .await
        .map_err(send_err)?;
    let status = resp.status();
    let mut answer = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(send_err)? {
        if answer.len() + chunk.len() > MAX_ANSWER {
            return Err(RotatorError::rejected(format!(
                "webhook rotator: the answer from {shown} to {action} is larger than {MAX_ANSWER} \
                 bytes; a credential should be small"
            )));
        }
        answer.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(answer);
    }
    let excerpt = support::redact(&support::head_text(&answer, EXCERPT), &secrets);
    let m = format!(
        "webhook rotator: {shown} answered {action} with {status}{}",
        if excerpt.is_empty() {
            String::new()
        } else {
            format!(": {excerpt}")
        }
    );
    Err(
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            RotatorError::unavailable(format!("{m}; the endpoint failed, retry later"))
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            RotatorError::rejected(format!(
                "{m}; the endpoint refused the request: check that the admin signing_key \
                 matches the endpoint's and that this machine's clock is right"
            ))
        } else if status.is_redirection() {
            RotatorError::rejected(format!(
                "{m}; redirects are not followed: set `url` to the final address"
            ))
        } else {
            RotatorError::rejected(m)
        },
    )
}

#[async_trait]
impl Rotator for WebhookRotator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check_settings(&self, settings: &Value) -> Result<(), RotatorError> {
        WebhookSettings::parse(settings).map(drop)
    }

    async fn create(&self, cx: &StepContext<'_>) -> Result<Credential, RotatorError> {
        let answer = call(cx, "create", None).await?;
        support::issued_credential(KIND, "the endpoint's answer to create", &answer)
    }

    /// Nothing to do: the endpoint activated the key when it issued it.
    async fn set(&self, _: &StepContext<'_>, _: &Credential) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn test(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError> {
        call(cx, "test", Some(pending)).await.map(drop)
    }

    async fn discard(
        &self,
        cx: &StepContext<'_>,
        pending: &Credential,
    ) -> Result<(), RotatorError> {
        call(cx, "discard", Some(pending)).await.map(drop)
    }

    async fn revoke(&self, cx: &StepContext<'_>, old: &Credential) -> Result<(), RotatorError> {
        call(cx, "revoke", Some(old)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_need_https_except_on_loopback() {
        let ok = |u: &str| WebhookSettings::parse(&json!({"url": u}));
        ok("https://keys.example.com/x").unwrap();
        ok("http://127.0.0.1:8080/x").unwrap();
        ok("http://localhost/x").unwrap();
        ok("http://[::1]:9/x").unwrap();
        let e = ok("http://keys.example.com/x?token=abc").unwrap_err();
        assert!(
            e.message.contains("allow_http") && !e.message.contains("abc"),
            "{e}"
        );
        WebhookSettings::parse(&json!({"url": "http://10.0.0.1/x", "allow_http": true})).unwrap();
        let e = ok("https://user:pw@example.com/").unwrap_err();
        assert!(e.message.contains("credentials"), "{e}");
        let e =
            WebhookSettings::parse(&json!({"url": "https://a/", "timeout": "soon"})).unwrap_err();
        assert!(e.message.contains("soon"), "{e}");
        let s = WebhookSettings::parse(&json!({"url": "https://a/", "timeout": "2s"})).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(2));
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        let sig = signature(b"Jefe", 0, b"");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert_ne!(signature(b"k", 1, b"body"), signature(b"k", 2, b"body"));
    }
}
