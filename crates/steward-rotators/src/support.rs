//! Helpers shared by the rotators: settings parsing, password generation, redaction of secrets
//! from error text, blocking calls with a deadline, and the JSON request that the `webhook` and
//! `command` rotators send.

use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Deserializer};
use serde_json::{json, Map, Value};

/// Error text helpers (redaction, source chains) are shared with the other crates that talk
/// to outside systems.
pub(crate) use steward_core::text::{error_chain, one_line, redact};

use crate::{random::RandomSettings, Credential, RotatorError, StepContext};

/// Parses `settings` into `T`, naming the rotator in the error (serde's message names the
/// offending field).
pub(crate) fn parse_settings<T: DeserializeOwned>(
    kind: &str,
    settings: &Value,
) -> Result<T, RotatorError> {
    if !settings.is_object() {
        return Err(RotatorError::invalid(format!(
            "{kind} rotator: settings must be a JSON object; see the `{kind}` module docs for its fields"
        )));
    }
    serde_json::from_value(settings.clone())
        .map_err(|e| RotatorError::invalid(format!("{kind} rotator settings: {e}")))
}

/// A duration written as humantime (`10s`, `1m 30s`), as settings hold them.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let v = humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); write e.g. \"10s\" or \"1m\""
        ))
    })?;
    if v.is_zero() {
        return Err(serde::de::Error::custom(
            "a timeout of zero would fail every call; use e.g. \"10s\"",
        ));
    }
    Ok(v)
}

/// Shortest and longest generated password the database rotators accept.
pub(crate) const PASSWORD_LENGTHS: std::ops::RangeInclusive<usize> = 16..=128;

pub(crate) fn default_password_length() -> usize {
    32
}

/// Checks a `password_length` setting.
pub(crate) fn check_password_length(kind: &str, n: usize) -> Result<(), RotatorError> {
    if PASSWORD_LENGTHS.contains(&n) {
        Ok(())
    } else {
        Err(RotatorError::invalid(format!(
            "{kind} rotator: password_length {n} is out of range; use {} to {}",
            PASSWORD_LENGTHS.start(),
            PASSWORD_LENGTHS.end()
        )))
    }
}

/// A fresh alphanumeric password with at least one lower case letter, upper case letter and
/// digit (alphanumeric values need no quoting anywhere and pass common password policies).
pub(crate) fn generate_password(length: usize) -> String {
    RandomSettings {
        field: "password".into(),
        length,
        charset: "alnum".into(),
        require: vec!["lower".into(), "upper".into(), "digit".into()],
    }
    .generate()
}

/// Field names whose values are identifiers, not secrets: kept when redacting a credential.
const PLAIN_FIELDS: &[&str] = &[
    "username", "user", "host", "port", "dbname", "database", "id", "key_id", "name", "url",
];

/// Every string value of `creds` that could be secret (all but [`PLAIN_FIELDS`]), for
/// [`redact`].
pub(crate) fn secret_values<'a>(creds: &[Option<&'a Credential>]) -> Vec<&'a str> {
    let mut out = Vec::new();
    for c in creds.iter().flatten() {
        collect_secrets(&c.0, &mut out);
    }
    out
}

fn collect_secrets<'a>(m: &'a Map<String, Value>, out: &mut Vec<&'a str>) {
    for (k, v) in m {
        if PLAIN_FIELDS.contains(&k.as_str()) {
            continue;
        }
        match v {
            Value::String(s) => out.push(s),
            Value::Object(inner) => collect_secrets(inner, out),
            _ => {}
        }
    }
}

/// At most the last `max` bytes of `bytes` as text (lossy UTF-8, cut on a character boundary),
/// trimmed. Used for stderr tails and response-body excerpts.
pub(crate) fn tail_text(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let s = String::from_utf8_lossy(&bytes[start..]);
    let s = s.trim_start_matches('\u{FFFD}');
    // One line, so quoted output cannot forge log lines or send terminal escapes.
    one_line(s, usize::MAX)
}

/// At most the first `max` bytes of `bytes` as text, like [`tail_text`].
pub(crate) fn head_text(bytes: &[u8], max: usize) -> String {
    let end = bytes.len().min(max);
    let s = String::from_utf8_lossy(&bytes[..end]);
    let s = s.trim_end_matches('\u{FFFD}');
    // One line, so quoted output cannot forge log lines or send terminal escapes.
    one_line(s, usize::MAX)
}

/// Runs blocking client code (the sync database and Redis clients) on the blocking pool and
/// gives up after `limit`. On timeout the thread is left to finish on its own (its sockets
/// carry their own timeouts); the step reports Unavailable and the engine retries it.
pub(crate) async fn blocking<T: Send + 'static>(
    kind: &str,
    limit: Duration,
    f: impl FnOnce() -> Result<T, RotatorError> + Send + 'static,
) -> Result<T, RotatorError> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(RotatorError::unavailable(format!(
            "{kind} rotator: the worker thread failed ({}); retry, and report a bug if it persists",
            if e.is_panic() { "panicked" } else { "cancelled" }
        ))),
        Err(_) => Err(RotatorError::unavailable(format!(
            "{kind} rotator: the server did not answer within {}; check that it is up and reachable",
            humantime::format_duration(limit)
        ))),
    }
}

/// A string or number field of a credential (ports are often stored either way).
pub(crate) fn opt_port(c: &Credential, field: &str) -> Result<Option<u16>, RotatorError> {
    match c.0.get(field) {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()).map(Some),
        Some(Value::String(s)) => s.parse().ok().map(Some),
        Some(_) => None,
    }
    .filter(|p| *p != Some(0))
    .ok_or_else(|| {
        RotatorError::invalid(format!(
            "the credential's {field:?} is not a port number (1 to 65535); fix the stored secret"
        ))
    })
}

/// An optional string field of a credential; present but not a string is an error.
pub(crate) fn opt_str<'a>(c: &'a Credential, field: &str) -> Result<Option<&'a str>, RotatorError> {
    match c.0.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RotatorError::invalid(format!(
            "the credential's {field:?} must be a string; fix the stored secret"
        ))),
    }
}

/// The admin credential, or an error saying how to configure it.
pub(crate) fn require_admin<'a>(
    kind: &str,
    cx: &StepContext<'a>,
    fields: &str,
) -> Result<&'a Credential, RotatorError> {
    cx.admin.ok_or_else(|| {
        RotatorError::invalid(format!(
            "{kind} rotator needs an admin credential: set `admin` in the rotation to a secret \
             holding {fields}"
        ))
    })
}

/// The request the `webhook` and `command` rotators send: what to do, for which secret, with
/// which credential (the pending or old one; null for create) and the current one.
pub(crate) fn request_body(
    cx: &StepContext<'_>,
    action: &str,
    credential: Option<&Credential>,
) -> Map<String, Value> {
    let cred = |c: Option<&Credential>| c.map_or(Value::Null, |c| Value::Object(c.0.clone()));
    let v = json!({
        "action": action,
        "env": cx.env,
        "path": cx.path,
        "attempt_id": cx.attempt_id,
        "credential": cred(credential),
        "current": cred(cx.current),
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// The credential in a `{"credential": {...}}` answer. The error never quotes the answer (it
/// may hold the credential).
pub(crate) fn issued_credential(
    kind: &str,
    from: &str,
    body: &[u8],
) -> Result<Credential, RotatorError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        RotatorError::rejected(format!(
            "{kind} rotator: {from} is not JSON (error at line {} column {}); it must be \
             {{\"credential\": {{...}}}}",
            e.line(),
            e.column()
        ))
    })?;
    match v {
        Value::Object(mut m) => match m.remove("credential") {
            Some(Value::Object(c)) if !c.is_empty() => Ok(Credential(c)),
            Some(Value::Object(_)) => Err(RotatorError::rejected(format!(
                "{kind} rotator: {from} has an empty \"credential\" object; it must hold the new \
                 credential's fields"
            ))),
            Some(_) => Err(RotatorError::rejected(format!(
                "{kind} rotator: {from} has a \"credential\" that is not an object; it must be \
                 {{\"credential\": {{...}}}}"
            ))),
            None => Err(RotatorError::rejected(format!(
                "{kind} rotator: {from} has no \"credential\" field; it must be \
                 {{\"credential\": {{...}}}}"
            ))),
        },
        _ => Err(RotatorError::rejected(format!(
            "{kind} rotator: {from} is not a JSON object; it must be {{\"credential\": {{...}}}}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_secret_fields_only() {
        let c = Credential::from_value(json!({
            "username": "app_user", "password": "s3cretPassw0rd", "nested": {"token": "tok-123456"}
        }));
        let secrets = secret_values(&[Some(&c), None]);
        let out = redact(
            "user app_user failed with s3cretPassw0rd and tok-123456",
            &secrets,
        );
        assert_eq!(out, "user app_user failed with *** and ***");
    }

    #[test]
    fn excerpts_cut_on_char_boundaries_and_strip_controls() {
        let s = "héllo\u{1b}[31m wörld".as_bytes();
        assert_eq!(head_text(s, 2), "h");
        assert!(!tail_text(s, 7).contains('\u{1b}'));
        assert_eq!(tail_text(b"abc", 10), "abc");
        assert_eq!(tail_text(b"one\n\ntwo\r\n", 100), "one | two");
    }

    #[test]
    fn generated_passwords_are_alphanumeric_and_mixed() {
        for _ in 0..50 {
            let p = generate_password(16);
            assert_eq!(p.len(), 16);
            assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(p.chars().any(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn issued_credential_requires_an_object_and_never_quotes_the_answer() {
        let c = issued_credential("t", "the answer", br#"{"credential": {"key": "k"}}"#).unwrap();
        assert_eq!(c.str("key").unwrap(), "k");
        let e =
            issued_credential("t", "the answer", br#"{"credential": "SECRETVALUE"}"#).unwrap_err();
        assert!(!e.message.contains("SECRETVALUE"), "{e}");
        let e = issued_credential("t", "the answer", b"SECRETVALUE").unwrap_err();
        assert!(!e.message.contains("SECRETVALUE"), "{e}");
    }
}
