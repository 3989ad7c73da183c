//! `http`: one HTTP(S) request. Reports `status`, `header.<name>` (lower-case), `body` (text,
//! at most 1 MiB read; `body_truncated` says whether it was cut), `body.json` (when the body
//! is JSON), `size`, `cert_expires_in` (https) and `response_time`; phases `first_byte` (the
//! response headers) and `total`.
//!
//! Settings: `url` (required), `method` (GET), `headers` (a table of strings), `body`,
//! `bearer_secret` or `basic_auth_user` + `basic_auth_password_secret` (secret references,
//! resolved at every run; the values are marked sensitive and never reported),
//! `follow_redirects` (false), `tls_skip_verify` (false: a certificate that does not verify
//! is an error), `ca_file` (a PEM file of CA certificates to trust instead of the built-in
//! roots).
//!
//! Cost: checks with the same TLS and redirect settings share one `reqwest::Client` (one
//! connection pool, keep-alive on), built when the check is built, so a run allocates little
//! beyond the request and what the answer holds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, PROXY_AUTHORIZATION},
    redirect::Policy,
    tls::TlsInfo,
    Certificate, Client, Method, Url,
};

use crate::{
    support::{error_chain, finish, no_answer, resolve_secret, static_kind, CertInfo, Settings},
    Facts, Outcome, Probe, ProbeConfigError, SecretSource, Value,
};

/// The check types this module provides.
pub const KINDS: &[(&str, &str)] = &[(
    "http",
    "an HTTP(S) request (status, headers, body, response time, certificate expiry)",
)];

const FACTS: &[&str] = &[
    "status",
    "response_time",
    "body",
    "body_truncated",
    "body.json",
    "body.json.*",
    "header.*",
    "size",
    "cert_expires_in",
];

/// Most body bytes read; the rest is not awaited.
pub const BODY_LIMIT: usize = 1 << 20;

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Builds one of [`KINDS`].
pub fn build(kind: &str, settings: &serde_json::Value) -> Result<Arc<dyn Probe>, ProbeConfigError> {
    let kind = static_kind(kind, KINDS)?;
    let mut s = Settings::new("", kind, settings)?;

    let url_text = s.req_str("url", "url, the http:// or https:// address to request")?;
    let url = match Url::parse(url_text.trim()) {
        Ok(u) => u,
        // The parser's message never quotes the input (which may hold a credential).
        Err(e) => return Err(s.error("url", format!("is not a URL ({e})"))),
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(s.error("url", "must be an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(s.error(
            "url",
            "must not hold a user name or password; use basic_auth_user and \
             basic_auth_password_secret (or bearer_secret) instead",
        ));
    }

    let method = match s.opt_str("method")? {
        None => Method::GET,
        Some(m) => {
            let m = m.trim().to_ascii_uppercase();
            if !METHODS.contains(&m.as_str()) {
                return Err(s.error(
                    "method",
                    format!("{m:?} is not a method; use one of {}", METHODS.join(", ")),
                ));
            }
            Method::from_bytes(m.as_bytes())
                .map_err(|_| s.error("method", format!("{m:?} is not a method")))?
        }
    };

    let mut headers = HeaderMap::new();
    for (name, value) in s.opt_str_map("headers")?.unwrap_or_default() {
        let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            s.error(
                "headers",
                format!("{name:?} is not a header name (letters, digits and -)"),
            )
        })?;
        if header == AUTHORIZATION || header == PROXY_AUTHORIZATION {
            return Err(s.error(
                "headers",
                format!(
                    "{name} would put a credential in the config; use bearer_secret or \
                     basic_auth_user + basic_auth_password_secret"
                ),
            ));
        }
        let value = HeaderValue::from_str(&value).map_err(|_| {
            s.error(
                "headers",
                format!("the value of {name} holds characters a header cannot carry"),
            )
        })?;
        headers.append(header, value);
    }

    let body = s.opt_str("body")?.map(Bytes::from);
    let bearer_secret = s.opt_secret_ref("bearer_secret")?;
    let basic_user = s.opt_str("basic_auth_user")?;
    let basic_password = s.opt_secret_ref("basic_auth_password_secret")?;
    if basic_password.is_some() && basic_user.is_none() {
        return Err(s.missing(
            "basic_auth_user",
            "basic_auth_user when basic_auth_password_secret is set",
        ));
    }
    if bearer_secret.is_some() && basic_user.is_some() {
        return Err(s.error(
            "bearer_secret",
            "use either bearer_secret or basic_auth_user, not both",
        ));
    }
    let follow_redirects = s.bool("follow_redirects", false)?;
    let skip_verify = s.bool("tls_skip_verify", false)?;
    let ca_pem = match s.opt_str("ca_file")? {
        None => None,
        Some(path) => Some(read_ca_file(&s, path.trim())?),
    };
    s.finish()?;

    let client = shared_client(ClientKey {
        follow_redirects,
        skip_verify,
        ca_pem,
    })
    .map_err(|m| ProbeConfigError {
        kind: kind.to_string(),
        key: "ca_file".into(),
        message: m,
    })?;

    let https = url.scheme() == "https";
    let authority = match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    Ok(Arc::new(Http {
        client,
        method,
        url,
        headers,
        body,
        bearer_secret,
        basic_auth: basic_user.map(|u| (u, basic_password)),
        https,
        authority,
    }))
}

/// Reads a PEM bundle and checks that it holds at least one certificate.
fn read_ca_file(s: &Settings, path: &str) -> Result<Vec<u8>, ProbeConfigError> {
    let pem = std::fs::read(path).map_err(|e| {
        s.error(
            "ca_file",
            format!("cannot read {path:?}: {e}; give the path of a PEM file of CA certificates"),
        )
    })?;
    match Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        _ => Err(s.error(
            "ca_file",
            format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        )),
    }
}

/// What makes two clients differ.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    follow_redirects: bool,
    skip_verify: bool,
    ca_pem: Option<Vec<u8>>,
}

/// The client for `key`: shared by every live check with the same key, built on first use.
fn shared_client(key: ClientKey) -> Result<Arc<Client>, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientKey, Weak<Client>>>> = OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(client) = clients.get(&key).and_then(Weak::upgrade) {
        return Ok(client);
    }
    clients.retain(|_, c| c.strong_count() > 0);
    let client = Arc::new(new_client(&key)?);
    clients.insert(key, Arc::downgrade(&client));
    Ok(client)
}

fn new_client(key: &ClientKey) -> Result<Client, String> {
    let mut builder = Client::builder()
        .user_agent(concat!("steward-health-check/", env!("CARGO_PKG_VERSION")))
        .redirect(if key.follow_redirects {
            Policy::limited(10)
        } else {
            Policy::none()
        })
        .tls_info(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .danger_accept_invalid_certs(key.skip_verify);
    if let Some(pem) = &key.ca_pem {
        let certs = Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("cannot read the CA certificates: {}", error_chain(&e)))?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", error_chain(&e)))
}

struct Http {
    client: Arc<Client>,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    bearer_secret: Option<String>,
    /// User and password secret reference.
    basic_auth: Option<(String, Option<String>)>,
    https: bool,
    /// `host:port`, for errors (never the path or query, which may carry tokens).
    authority: String,
}

#[async_trait]
impl Probe for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn default_condition(&self) -> &'static str {
        "status >= 200 && status < 400"
    }

    fn facts(&self) -> &'static [&'static str] {
        FACTS
    }

    async fn run(&self, secrets: &dyn SecretSource, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let mut facts = Facts::new();
        let mut phases = Vec::with_capacity(2);
        let exchange = self.exchange(secrets, start, &mut facts, &mut phases);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(error) => finish(start, facts, phases, error),
            Err(_) => {
                let stage = if facts.get("status").is_some() {
                    "reading the response body"
                } else {
                    "waiting for the response"
                };
                let error = format!(
                    "{} ({stage} from {}); raise the check's timeout or look at the service",
                    no_answer(timeout),
                    self.authority
                );
                finish(start, facts, phases, Some(error))
            }
        }
    }
}

impl Http {
    /// Sends the request and reads the answer into `facts`; the error when there was no
    /// (complete) answer.
    async fn exchange(
        &self,
        secrets: &dyn SecretSource,
        start: Instant,
        facts: &mut Facts,
        phases: &mut Vec<(&'static str, Duration)>,
    ) -> Option<String> {
        let mut req = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            req = req.body(body.clone());
        }
        if let Some(reference) = &self.bearer_secret {
            let token = match resolve_secret(secrets, "bearer_secret", reference).await {
                Ok(t) => t,
                Err(e) => return Some(e),
            };
            let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", token.trim())) else {
                return Some(format!(
                    "the secret bearer_secret {reference:?} holds characters a header cannot carry; check the secret"
                ));
            };
            value.set_sensitive(true);
            req = req.header(AUTHORIZATION, value);
        }
        if let Some((user, password_ref)) = &self.basic_auth {
            let password = match password_ref {
                None => None,
                Some(r) => match resolve_secret(secrets, "basic_auth_password_secret", r).await {
                    Ok(p) => Some(p),
                    Err(e) => return Some(e),
                },
            };
            req = req.basic_auth(user, password.as_ref().map(|p| p.as_str()));
        }

        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Some(request_error(e, &self.authority)),
        };
        phases.push(("first_byte", start.elapsed()));

        facts.insert("status", Value::Number(f64::from(resp.status().as_u16())));
        let headers = resp.headers();
        for name in headers.keys() {
            let mut text = String::new();
            for (i, v) in headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    text.push_str(", ");
                }
                text.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
            facts.insert(format!("header.{}", name.as_str()), Value::String(text));
        }
        if self.https {
            let cert = resp
                .extensions()
                .get::<TlsInfo>()
                .and_then(TlsInfo::peer_certificate)
                .and_then(CertInfo::parse);
            if let Some(cert) = cert {
                facts.insert("cert_expires_in", Value::Duration(cert.expires_in().0));
            }
        }

        let content_length = resp.content_length();
        let capacity = content_length.map_or(16 * 1024, |n| {
            usize::try_from(n).unwrap_or(BODY_LIMIT).min(BODY_LIMIT)
        });
        let mut body = Vec::with_capacity(capacity);
        let mut truncated = false;
        let mut error = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = BODY_LIMIT - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!(
                        "the response body from {} broke off after {} bytes: {}",
                        self.authority,
                        body.len(),
                        error_chain(&e.without_url())
                    ));
                    break;
                }
            }
        }
        let size = match (truncated, content_length) {
            (true, Some(n)) => n,
            _ => body.len() as u64,
        };
        facts.insert("size", Value::Number(size as f64));
        facts.insert("body_truncated", Value::Bool(truncated));
        if !truncated && error.is_none() && !body.is_empty() {
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                facts.insert("body.json", Value::Json(json));
            }
        }
        facts.insert(
            "body",
            Value::String(crate::support::text_of(&body, truncated)),
        );
        error
    }
}

/// A request that got no answer, as one line with a hint.
fn request_error(e: reqwest::Error, authority: &str) -> String {
    let e = e.without_url();
    if e.is_redirect() {
        return format!(
            "too many redirects from {authority} (more than 10); check the URL or set follow_redirects = false"
        );
    }
    // reqwest's and hyper's wrappers say nothing the message does not.
    let chain = error_chain(&e)
        .split(": ")
        .filter(|part| {
            !matches!(
                *part,
                "error sending request" | "client error (Connect)" | "client error (SendRequest)"
            )
        })
        .collect::<Vec<_>>()
        .join(": ");
    if e.is_connect() {
        let lower = chain.to_ascii_lowercase();
        let hint = if lower.contains("certificate") || lower.contains("unknownissuer") {
            "the server's certificate does not verify; give its CA in ca_file, or set \
             tls_skip_verify = true to accept it anyway"
        } else if lower.contains("refused") {
            "is the service running and listening there?"
        } else if lower.contains("dns") || lower.contains("lookup") {
            "check the host name"
        } else {
            "check the host, the port and any firewall between"
        };
        return format!("cannot connect to {authority}: {chain}; {hint}");
    }
    format!("the request to {authority} failed: {chain}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn err(v: serde_json::Value) -> ProbeConfigError {
        match build("http", &v) {
            Ok(_) => panic!("{v} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(build("http", &json!({"url": "http://127.0.0.1:1/x"})).is_ok());
        assert_eq!(err(json!({})).key, "url");
        assert_eq!(err(json!({"url": "ftp://x/"})).key, "url");
        let e = err(json!({"url": "https://bob:hunter2pass@example.com/"}));
        assert!(!e.to_string().contains("hunter2pass"), "{e}");
        assert_eq!(
            err(json!({"url": "http://x/", "method": "BREW"})).key,
            "method"
        );
        let e = err(json!({"url": "http://x/", "headers": {"Authorization": "Bearer abc"}}));
        assert!(e.message.contains("bearer_secret"), "{e}");
        assert_eq!(
            err(json!({"url": "http://x/", "bearer_secret": "abcdef"})).key,
            "bearer_secret"
        );
        assert_eq!(
            err(json!({"url": "http://x/", "basic_auth_password_secret": "prod/a#b"})).key,
            "basic_auth_user"
        );
        assert_eq!(
            err(json!({"url": "http://x/", "ca_file": "/nonexistent/ca.pem"})).key,
            "ca_file"
        );
        let e = err(json!({"url": "http://x/", "timeout_ms": 5}));
        assert!(e.message.contains("follow_redirects"), "{e}");
    }

    #[test]
    fn clients_are_shared() {
        let key = ClientKey {
            follow_redirects: true,
            skip_verify: false,
            ca_pem: None,
        };
        let a = shared_client(key.clone()).unwrap();
        let b = shared_client(key).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
