//! Turning what came back from S3 (a status and an XML error body, or a transport
//! error) into a retry decision or a [`BackendError`] that says what to do.
//!
//! Nothing here ever formats a URL: request URLs are presigned and carry a
//! signature, so transport errors are stripped of theirs before use, and server
//! messages are scrubbed of anything that looks like the caller's credentials.

use std::error::Error as StdError;
use std::time::Duration;

use chrono::{DateTime, Utc};
use steward_repo::BackendError;
use zeroize::Zeroizing;

use crate::retry::{Failure, FailureKind, Retryable};

/// The `<Code>` and `<Message>` of an S3 XML error body (empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3ErrorBody {
    /// e.g. `NoSuchKey`, `AccessDenied`, `SlowDown`.
    pub code: String,
    /// The server's explanation.
    pub message: String,
}

/// Extracts `<Code>` and `<Message>` from an S3 error document. Never fails: a body
/// that is not one gives empty fields.
pub fn parse_error_body(body: &[u8]) -> S3ErrorBody {
    let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]);
    S3ErrorBody {
        code: xml_element(&text, "Code").unwrap_or_default(),
        message: xml_element(&text, "Message").unwrap_or_default(),
    }
}

fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let len = text.get(start..)?.find(&close)?;
    let raw = text.get(start..start + len)?;
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
            .trim()
            .to_string(),
    )
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if (0.0..1e9).contains(&secs) {
            return Some(Duration::from_secs_f64(secs));
        }
        return None;
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

/// Replaces every occurrence of the sensitive strings with `<redacted>`, drops
/// control characters and caps the length, so a server message is safe to show.
pub(crate) fn scrub<S: AsRef<str>>(text: &str, sensitive: &[S]) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for secret in sensitive {
        let secret = secret.as_ref();
        if !secret.is_empty() {
            s = s.replace(secret, "<redacted>");
        }
    }
    // Signed URLs that a server might echo.
    for marker in [
        "X-Amz-Signature=",
        "X-Amz-Credential=",
        "X-Amz-Security-Token=",
    ] {
        while let Some(i) = s.find(marker) {
            let end = s[i..]
                .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '<')
                .map(|e| i + e)
                .unwrap_or(s.len());
            s.replace_range(i..end, "<redacted>");
        }
    }
    const MAX: usize = 300;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// What the caller was doing, for messages.
#[derive(Debug, Clone)]
pub(crate) struct Context<'a> {
    /// e.g. `read pack 1a2b3c4d`.
    pub op: &'a str,
    /// e.g. `pack 1a2b3c4d at s3:http://127.0.0.1:9000/bucket/prefix`.
    pub what: &'a str,
    /// The bucket name.
    pub bucket: &'a str,
    /// `http://127.0.0.1:9000`.
    pub endpoint: &'a str,
    /// The configured region.
    pub region: &'a str,
    /// Strings to scrub from server messages.
    pub sensitive: &'a [Zeroizing<String>],
}

/// `"HTTP 503 SlowDown: Please reduce your request rate"`.
fn status_text(status: u16, err: &S3ErrorBody, sensitive: &[Zeroizing<String>]) -> String {
    let mut s = format!("HTTP {status}");
    if !err.code.is_empty() {
        s.push(' ');
        s.push_str(&scrub(&err.code, sensitive));
    }
    if !err.message.is_empty() {
        s.push_str(": ");
        s.push_str(&scrub(&err.message, sensitive));
    }
    s
}

/// Classifies a non-success HTTP answer.
pub(crate) fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    bucket_region: Option<&str>,
    body: &[u8],
    ctx: &Context<'_>,
) -> Failure {
    let err = parse_error_body(body);
    let text = status_text(status, &err, ctx.sensitive);
    let permanent = |message: String| {
        Failure::Final(BackendError::Permanent {
            what: format!("{} ({})", ctx.op, ctx.what),
            message,
        })
    };
    let region_hint = match bucket_region {
        Some(r) if !r.is_empty() && r != ctx.region => format!(
            "; the bucket is in region {}, but the configured region is {}: set the region to {}",
            scrub(r, ctx.sensitive),
            ctx.region,
            scrub(r, ctx.sensitive)
        ),
        _ => String::new(),
    };
    match (status, err.code.as_str()) {
        (404, "NoSuchBucket") => permanent(format!(
            "{text}: bucket {} does not exist at {}; check the bucket name and endpoint (initialising the repository creates the bucket)",
            ctx.bucket, ctx.endpoint
        )),
        (404, _) => Failure::Final(BackendError::NotFound {
            what: ctx.what.to_string(),
        }),
        (403, "RequestTimeTooSkewed") => permanent(format!(
            "{text}: this machine's clock is too far from the server's; synchronise it (NTP) and try again"
        )),
        (401 | 403, _) => permanent(format!(
            "access denied ({text}): the access key id or secret access key is wrong, or the bucket policy does not allow this request on bucket {}; check the S3 credentials in Steward's secret store and the bucket's policy{region_hint}",
            ctx.bucket
        )),
        (301 | 307 | 308, _) | (400, "AuthorizationHeaderMalformed" | "AuthorizationQueryParametersError" | "IllegalLocationConstraintException") => {
            permanent(format!(
                "{text}: the endpoint {} or the region {} does not match the bucket{region_hint}{}",
                ctx.endpoint,
                ctx.region,
                if region_hint.is_empty() {
                    "; use the endpoint and region where the bucket lives"
                } else {
                    ""
                }
            ))
        }
        (400, "RequestTimeout" | "ExpiredToken" | "InternalError") | (408 | 429, _) => {
            Failure::Retry(Retryable {
                kind: FailureKind::Server,
                detail: text,
                retry_after,
            })
        }
        (416, _) => permanent(format!(
            "{text}: the file is shorter than the range asked for; it was truncated"
        )),
        (s, _) if s >= 500 => Failure::Retry(Retryable {
            kind: FailureKind::Server,
            detail: text,
            retry_after,
        }),
        (409, "BucketAlreadyExists") => permanent(format!(
            "{text}: the bucket name {} is taken by another account; choose another bucket name",
            ctx.bucket
        )),
        (_, _) => permanent(format!(
            "{text}: the server refused the request (not retried)"
        )),
    }
}

/// Classifies a transport error (no HTTP answer). The error's URL is dropped first.
pub(crate) fn classify_transport(
    e: reqwest::Error,
    connect_timeout: Duration,
    request_timeout: Duration,
    ctx: &Context<'_>,
) -> Failure {
    let e = e.without_url();
    let cause = root_cause(&e, ctx.sensitive);
    let lower = cause.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls handshake") || lower.contains("alert") {
        return Failure::Final(BackendError::Permanent {
            what: format!("{} ({})", ctx.op, ctx.what),
            message: format!(
                "TLS with {} failed: {cause}; check the endpoint's certificate (and that the endpoint should be https, not http)",
                ctx.endpoint
            ),
        });
    }
    if e.is_builder() {
        return Failure::Final(BackendError::Permanent {
            what: format!("{} ({})", ctx.op, ctx.what),
            message: format!("cannot build the request: {cause}"),
        });
    }
    let (kind, detail) = if e.is_connect() {
        if e.is_timeout() || lower.contains("timed out") {
            (
                FailureKind::Unreachable,
                format!(
                    "no connection within the connect timeout of {}",
                    secs(connect_timeout)
                ),
            )
        } else {
            (FailureKind::Unreachable, cause)
        }
    } else if e.is_timeout() {
        (
            FailureKind::Timeout,
            format!(
                "no complete answer within the request timeout of {}",
                secs(request_timeout)
            ),
        )
    } else {
        (
            FailureKind::ConnectionLost,
            format!("connection lost: {cause}"),
        )
    };
    Failure::Retry(Retryable {
        kind,
        detail,
        retry_after: None,
    })
}

pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

/// The most useful cause in an error chain: an IO error's kind in words when there
/// is one, else the innermost message.
fn root_cause(e: &(dyn StdError + 'static), sensitive: &[Zeroizing<String>]) -> String {
    let mut innermost: &(dyn StdError + 'static) = e;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let words = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Some("connection refused"),
                std::io::ErrorKind::ConnectionReset => Some("connection reset by the server"),
                std::io::ErrorKind::ConnectionAborted => Some("connection aborted"),
                std::io::ErrorKind::TimedOut => Some("timed out"),
                std::io::ErrorKind::BrokenPipe => Some("connection closed by the server"),
                std::io::ErrorKind::UnexpectedEof => Some("connection closed by the server"),
                _ => None,
            };
            if let Some(w) = words {
                return w.to_string();
            }
        }
        innermost = err;
        cur = err.source();
    }
    let msg = innermost.to_string();
    let msg = if msg.is_empty() { e.to_string() } else { msg };
    scrub(&msg, sensitive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(sensitive: &[Zeroizing<String>]) -> Context<'_> {
        Context {
            op: "read snapshot 1a2b3c4d",
            what: "snapshot 1a2b3c4d at s3:http://h:9000/b/p",
            bucket: "b",
            endpoint: "http://h:9000",
            region: "us-east-1",
            sensitive,
        }
    }

    #[test]
    fn parses_error_bodies() {
        let b = br#"<?xml version="1.0"?><Error><Code>NoSuchKey</Code><Message>The specified key &amp; such does not exist.</Message></Error>"#;
        let e = parse_error_body(b);
        assert_eq!(e.code, "NoSuchKey");
        assert_eq!(e.message, "The specified key & such does not exist.");
        assert_eq!(parse_error_body(b""), S3ErrorBody::default());
        assert_eq!(
            parse_error_body(b"<Code>unterminated"),
            S3ErrorBody::default()
        );
        assert_eq!(
            parse_error_body(&[0xff, 0xfe, b'<']),
            S3ErrorBody::default()
        );
    }

    #[test]
    fn parses_retry_after() {
        let now = DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("1e300", now), None);
    }

    #[test]
    fn scrubs_secrets_and_signatures() {
        let sensitive = vec!["AKIDX".to_string(), "SECRETY".to_string()];
        let s = scrub(
            "key AKIDX secret SECRETY url /b?X-Amz-Credential=AKIDX%2F2024&X-Amz-Signature=abcdef0123 end\n",
            &sensitive,
        );
        assert!(
            !s.contains("AKIDX") && !s.contains("SECRETY") && !s.contains("abcdef"),
            "{s}"
        );
        assert!(s.ends_with("end "), "{s}");
        let long = "é".repeat(400);
        assert!(scrub::<&str>(&long, &[]).len() <= 303);
    }

    #[test]
    fn classifies_statuses() {
        let sens = vec![
            Zeroizing::new("AKIDX".to_string()),
            Zeroizing::new("SECRETY".to_string()),
        ];
        let c = ctx(&sens);
        let body = |code: &str, msg: &str| {
            format!("<Error><Code>{code}</Code><Message>{msg}</Message></Error>").into_bytes()
        };
        match classify_status(404, None, None, &body("NoSuchKey", "gone"), &c) {
            Failure::Final(e) => assert!(e.is_not_found(), "{e}"),
            f => panic!("{f:?}"),
        }
        match classify_status(404, None, None, &body("NoSuchBucket", "no"), &c) {
            Failure::Final(e) => {
                assert!(!e.is_not_found());
                assert!(e.to_string().contains("bucket b does not exist"), "{e}");
            }
            f => panic!("{f:?}"),
        }
        match classify_status(
            403,
            None,
            None,
            &body("SignatureDoesNotMatch", "key AKIDX is bad"),
            &c,
        ) {
            Failure::Final(e) => {
                let s = e.to_string();
                assert!(!e.is_transient());
                assert!(
                    s.contains("access key id or secret access key is wrong"),
                    "{s}"
                );
                assert!(s.contains("bucket policy"), "{s}");
                assert!(!s.contains("AKIDX"), "{s}");
            }
            f => panic!("{f:?}"),
        }
        match classify_status(301, None, Some("eu-west-1"), b"", &c) {
            Failure::Final(e) => assert!(e.to_string().contains("set the region to eu-west-1")),
            f => panic!("{f:?}"),
        }
        for (status, code) in [
            (503, "SlowDown"),
            (500, ""),
            (429, ""),
            (400, "RequestTimeout"),
        ] {
            match classify_status(
                status,
                Some(Duration::from_secs(2)),
                None,
                &body(code, "x"),
                &c,
            ) {
                Failure::Retry(r) => {
                    assert_eq!(r.retry_after, Some(Duration::from_secs(2)));
                    assert!(r.detail.starts_with(&format!("HTTP {status}")));
                }
                f => panic!("{status}: {f:?}"),
            }
        }
        match classify_status(400, None, None, &body("InvalidArgument", "bad"), &c) {
            Failure::Final(e) => assert!(e.to_string().contains("not retried")),
            f => panic!("{f:?}"),
        }
    }
}
