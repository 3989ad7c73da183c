//! Where an S3 repository is and how to reach it: [`S3Config`], the credentials
//! ([`S3Credentials`], whose secret is zeroized and never printed) and the parser of
//! repository URLs ([`S3Location`]).
//!
//! Accepted URL forms:
//!
//! * `s3:http://127.0.0.1:9000/bucket/prefix` and `s3:https://host/bucket/prefix`
//!   (restic's form; the endpoint is in the URL);
//! * `s3:host[:port]/bucket/prefix` (restic's form without a scheme: HTTPS);
//! * `s3://bucket/prefix` with the endpoint given separately.
//!
//! Credentials are never part of a URL: a URL with `user:password@` is refused (and
//! the error does not repeat it).

use std::fmt;
use std::time::Duration;

use url::Url;
use zeroize::Zeroizing;

use crate::retry::RetryPolicy;

/// Default region (also what most S3-compatible servers accept).
pub const DEFAULT_REGION: &str = "us-east-1";
/// Default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time for one whole request, body included (a 16 MiB pack at 1 Mbit/s
/// takes about 2 minutes).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// A configuration problem, found before any request is made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The repository URL does not parse.
    #[error("invalid S3 repository URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, or `(hidden)` when it held credentials.
        url: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// The endpoint is unusable.
    #[error("invalid S3 endpoint {endpoint}: {reason}")]
    InvalidEndpoint {
        /// The endpoint, or `(hidden)` when it held credentials.
        endpoint: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// The bucket name breaks S3's rules.
    #[error("invalid S3 bucket name {bucket:?}: {reason}")]
    InvalidBucket {
        /// The name given.
        bucket: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The prefix inside the bucket is unusable.
    #[error("invalid prefix {prefix:?} inside the S3 bucket: {reason}")]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong.
        reason: String,
    },
    /// Something else in the configuration (region, credentials, timeouts, retries).
    #[error("invalid S3 configuration: {0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client for S3: {0}")]
    Client(String),
}

/// An access key: id, secret and (for temporary credentials) a session token.
///
/// The secret and the token are held in [`Zeroizing`] strings (wiped when dropped)
/// and `Debug` prints none of the three.
#[derive(Clone)]
pub struct S3Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl S3Credentials {
    /// An access key id and its secret (as resolved from Steward's secret store).
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        S3Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: None,
        }
    }

    /// Adds a session token (STS temporary credentials).
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(Zeroizing::new(token.into()));
        self
    }

    /// The access key id.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token, if any.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_ref().map(|t| t.as_str())
    }

    /// The strings that must never appear in output (non-empty ones only).
    pub(crate) fn sensitive(&self) -> Vec<Zeroizing<String>> {
        let mut v = vec![
            Zeroizing::new(self.access_key_id.clone()),
            self.secret_access_key.clone(),
        ];
        if let Some(t) = &self.session_token {
            v.push(t.clone());
        }
        v.retain(|s| !s.is_empty());
        v
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How the bucket appears in request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressing {
    /// Virtual-hosted for AWS endpoints (`*.amazonaws.com`, `*.amazonaws.com.cn`)
    /// when the bucket name has no dots; path-style for everything else (MinIO,
    /// moto, Ceph, IP addresses, `localhost`).
    #[default]
    Auto,
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    VirtualHost,
}

/// Everything needed to reach a repository in a bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http://host:port` or `https://host`, optionally with a path (a server
    /// behind a reverse proxy at a sub-path).
    pub endpoint: String,
    /// Signing region; `us-east-1` suits most non-AWS servers.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Folder inside the bucket (no leading or trailing `/`; empty for the root).
    pub prefix: String,
    /// Path-style or virtual-hosted requests.
    pub addressing: Addressing,
    /// The access key.
    pub credentials: S3Credentials,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request, body included.
    pub request_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl S3Config {
    /// A configuration with default region, addressing, timeouts and retries.
    pub fn new(
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
        credentials: S3Credentials,
    ) -> Self {
        S3Config {
            endpoint: endpoint.into(),
            region: DEFAULT_REGION.to_string(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            addressing: Addressing::Auto,
            credentials,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// A configuration from a repository URL (see the module docs for the forms).
    /// `endpoint` is required with `s3://bucket/prefix` and must be absent (or the
    /// same) with the forms that carry one.
    pub fn from_url(
        url: &str,
        endpoint: Option<&str>,
        credentials: S3Credentials,
    ) -> Result<Self, ConfigError> {
        let loc = S3Location::parse(url)?;
        let endpoint = match (loc.endpoint, endpoint) {
            (Some(in_url), None) => in_url,
            (None, Some(given)) => given.trim().to_string(),
            (Some(in_url), Some(given)) => {
                if normalize_endpoint(given)?.as_str() != normalize_endpoint(&in_url)?.as_str() {
                    return Err(ConfigError::InvalidUrl {
                        url: url.to_string(),
                        reason: format!(
                            "the URL names the endpoint {in_url} but the endpoint setting is {}: give the endpoint in one place only",
                            display_endpoint(&normalize_endpoint(given)?)
                        ),
                    });
                }
                in_url
            }
            (None, None) => {
                return Err(ConfigError::InvalidUrl {
                    url: url.to_string(),
                    reason: "an s3://bucket/prefix URL needs an endpoint: set it (e.g. https://s3.eu-west-1.amazonaws.com or http://minio:9000), or write the URL as s3:https://host/bucket/prefix".into(),
                })
            }
        };
        Ok(S3Config::new(endpoint, loc.bucket, loc.prefix, credentials))
    }
}

/// A parsed repository URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The endpoint, when the URL names one (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The prefix inside the bucket (normalized: no leading or trailing `/`).
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3:http(s)://host[:port]/bucket[/prefix]`, `s3:host[:port]/bucket[/prefix]`
    /// or `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        let shown = if has_userinfo(url) {
            "(hidden because it contains credentials)".to_string()
        } else {
            url.to_string()
        };
        let bad = |reason: &str| ConfigError::InvalidUrl {
            url: shown.clone(),
            reason: reason.to_string(),
        };
        if has_userinfo(url) {
            return Err(bad("it contains '@', which looks like user:password@ credentials; credentials must not be part of the URL: remove them and store the access key in Steward's secret store (an @ in the prefix is not supported)"));
        }
        let (endpoint, path) = if let Some(rest) = url.strip_prefix("s3://") {
            (None, rest)
        } else if let Some(rest) = url.strip_prefix("s3:") {
            let (scheme, rest) = if let Some(r) = rest.strip_prefix("http://") {
                ("http", r)
            } else if let Some(r) = rest.strip_prefix("https://") {
                ("https", r)
            } else if rest.contains("://") {
                return Err(bad("only http:// and https:// endpoints are supported"));
            } else {
                ("https", rest)
            };
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(bad(
                    "no host: write s3:http://host:port/bucket/prefix or s3://bucket/prefix",
                ));
            }
            (Some(format!("{scheme}://{host}")), path)
        } else {
            return Err(bad(
                "an S3 URL starts with s3: (s3:http://host:port/bucket/prefix, s3:host/bucket/prefix) or s3:// (s3://bucket/prefix)",
            ));
        };
        if path.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not allowed"));
        }
        let path = path.trim_start_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(bad(
                "no bucket: write s3:http://host:port/bucket/prefix or s3://bucket/prefix",
            ));
        }
        validate_bucket(bucket)?;
        let prefix = normalize_prefix(prefix)?;
        if let Some(ep) = &endpoint {
            normalize_endpoint(ep)?;
        }
        Ok(S3Location {
            endpoint,
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

/// True when the URL may hold `user:password@`. Any `@` counts: a password may
/// contain `/`, so the authority cannot be told apart reliably, and bucket names
/// never contain `@`.
fn has_userinfo(url: &str) -> bool {
    url.contains('@')
}

/// Checks S3's bucket naming rules (3-63 characters of `a-z 0-9 . -`, starting and
/// ending with a letter or digit).
pub(crate) fn validate_bucket(bucket: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidBucket {
        bucket: bucket.to_string(),
        reason: reason.to_string(),
    };
    if bucket.len() < 3 || bucket.len() > 63 {
        return Err(bad("a bucket name has 3 to 63 characters"));
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(bad(
            "a bucket name has only lowercase letters, digits, dots and hyphens",
        ));
    }
    let first = bucket.as_bytes()[0];
    let last = bucket.as_bytes()[bucket.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(bad(
            "a bucket name starts and ends with a lowercase letter or a digit",
        ));
    }
    if bucket.contains("..") {
        return Err(bad("a bucket name has no two dots in a row"));
    }
    Ok(())
}

/// Strips leading and trailing slashes and refuses empty, `.` and `..` segments and
/// control characters.
pub(crate) fn normalize_prefix(prefix: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidPrefix {
        prefix: prefix.to_string(),
        reason: reason.to_string(),
    };
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(bad("it contains control characters"));
    }
    if p.len() > 512 {
        return Err(bad("it is longer than 512 bytes"));
    }
    for seg in p.split('/') {
        match seg {
            "" => return Err(bad("it contains an empty path segment (//)")),
            "." | ".." => return Err(bad("it contains a . or .. segment")),
            _ => {}
        }
    }
    Ok(p.to_string())
}

/// Parses and checks an endpoint; the result's path ends with `/`.
pub(crate) fn normalize_endpoint(endpoint: &str) -> Result<Url, ConfigError> {
    let endpoint = endpoint.trim();
    let hidden = has_userinfo(endpoint);
    let bad = |reason: String| ConfigError::InvalidEndpoint {
        endpoint: if hidden {
            "(hidden because it contains credentials)".to_string()
        } else {
            endpoint.to_string()
        },
        reason,
    };
    if hidden {
        return Err(bad("credentials must not be part of the endpoint URL: remove user:password@ and store the access key in Steward's secret store".into()));
    }
    if endpoint.is_empty() {
        return Err(bad(
            "it is empty: give a URL such as http://127.0.0.1:9000 or https://s3.eu-west-1.amazonaws.com".into(),
        ));
    }
    let mut url = Url::parse(endpoint).map_err(|e| {
        bad(format!(
            "{e}: give a URL such as http://127.0.0.1:9000 or https://s3.eu-west-1.amazonaws.com"
        ))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad(format!(
            "the scheme is {:?}: only http and https are supported",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials must not be part of the endpoint URL: remove them and store the access key in Steward's secret store".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("query strings and fragments are not allowed".into()));
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// `http://host:port` or `https://host/sub/path`, without a trailing slash.
pub(crate) fn display_endpoint(url: &Url) -> String {
    let s = url.as_str();
    s.strip_suffix('/').unwrap_or(s).to_string()
}

/// Whether `Auto` addressing picks virtual-hosted requests for this endpoint.
pub(crate) fn use_virtual_host(addressing: Addressing, endpoint: &Url, bucket: &str) -> bool {
    match addressing {
        Addressing::Path => false,
        Addressing::VirtualHost => true,
        Addressing::Auto => {
            let host = endpoint.host_str().unwrap_or("");
            let aws = host.ends_with(".amazonaws.com")
                || host == "amazonaws.com"
                || host.ends_with(".amazonaws.com.cn");
            // A dotted bucket name breaks the wildcard TLS certificate.
            aws && !bucket.contains('.') && endpoint.path() == "/"
        }
    }
}

/// Checks the non-URL parts of a configuration.
pub(crate) fn validate_rest(config: &S3Config) -> Result<(), ConfigError> {
    let region = config.region.trim();
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::Invalid(format!(
            "region {:?} is not a region name: use e.g. us-east-1 (the usual choice for MinIO and other non-AWS servers)",
            config.region
        )));
    }
    if config.credentials.access_key_id.trim().is_empty()
        || config.credentials.secret_access_key.is_empty()
    {
        return Err(ConfigError::Invalid(
            "the access key id or the secret access key is empty: set both in Steward's secret store".into(),
        ));
    }
    if config.connect_timeout.is_zero() || config.request_timeout.is_zero() {
        return Err(ConfigError::Invalid(
            "connect and request timeouts must be greater than zero".into(),
        ));
    }
    config.retry.validate()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> S3Credentials {
        S3Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    }

    #[test]
    fn parses_restic_form_with_endpoint() {
        let l = S3Location::parse("s3:http://127.0.0.1:9000/bucket/some/prefix/").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.prefix, "some/prefix");
        let l = S3Location::parse("s3:https://minio.example:9000/bkt").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("https://minio.example:9000"));
        assert_eq!(l.prefix, "");
        let l = S3Location::parse("s3:s3.eu-west-1.amazonaws.com/bkt/p").unwrap();
        assert_eq!(
            l.endpoint.as_deref(),
            Some("https://s3.eu-west-1.amazonaws.com")
        );
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bkt", "p"));
    }

    #[test]
    fn parses_s3_scheme_with_separate_endpoint() {
        let l = S3Location::parse("s3://my-bucket/db1").unwrap();
        assert_eq!(l.endpoint, None);
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", "db1"));
        let c =
            S3Config::from_url("s3://my-bucket/db1", Some("http://minio:9000"), creds()).unwrap();
        assert_eq!(c.endpoint, "http://minio:9000");
        let e = S3Config::from_url("s3://my-bucket/db1", None, creds()).unwrap_err();
        assert!(e.to_string().contains("needs an endpoint"), "{e}");
        let e = S3Config::from_url("s3:http://a:9000/my-bucket", Some("http://b:9000"), creds())
            .unwrap_err();
        assert!(e.to_string().contains("one place only"), "{e}");
        S3Config::from_url(
            "s3:http://a:9000/my-bucket",
            Some("http://a:9000/"),
            creds(),
        )
        .unwrap();
    }

    #[test]
    fn refuses_bad_urls_without_echoing_credentials() {
        for (url, want) in [
            ("http://host/bucket", "starts with s3:"),
            ("s3:ftp://host/bucket", "only http:// and https://"),
            ("s3:http:///bucket", "no host"),
            ("s3:http://host", "no bucket"),
            ("s3://", "no bucket"),
            ("s3://Bad_Bucket/x", "lowercase"),
            ("s3://ab/x", "3 to 63"),
            ("s3://bucket/a//b", "empty path segment"),
            ("s3://bucket/a/../b", ". or .."),
            ("s3://bucket/a?x=1", "query strings"),
        ] {
            let e = S3Location::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
        let e = S3Location::parse("s3:http://AKID:SECRETKEY@host:9000/bucket")
            .unwrap_err()
            .to_string();
        assert!(e.contains("credentials must not be part of the URL"), "{e}");
        assert!(!e.contains("SECRETKEY") && !e.contains("AKID"), "{e}");
        let e = S3Location::parse("s3:http://AKID:SEC/RET@host:9000/bucket")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SEC") && !e.contains("AKID"), "{e}");
        let e = normalize_endpoint("http://AKID:SECRETKEY@host:9000")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRETKEY") && !e.contains("AKID"), "{e}");
    }

    #[test]
    fn endpoint_normalization_and_addressing() {
        let u = normalize_endpoint("http://127.0.0.1:9000").unwrap();
        assert_eq!(display_endpoint(&u), "http://127.0.0.1:9000");
        let u = normalize_endpoint("https://proxy.example/s3").unwrap();
        assert_eq!(u.path(), "/s3/");
        assert!(normalize_endpoint("ftp://x").is_err());
        assert!(normalize_endpoint("").is_err());
        assert!(normalize_endpoint("not a url").is_err());

        let aws = normalize_endpoint("https://s3.eu-west-1.amazonaws.com").unwrap();
        let minio = normalize_endpoint("http://127.0.0.1:9000").unwrap();
        assert!(use_virtual_host(Addressing::Auto, &aws, "bucket"));
        assert!(!use_virtual_host(Addressing::Auto, &aws, "my.bucket"));
        assert!(!use_virtual_host(Addressing::Auto, &minio, "bucket"));
        assert!(use_virtual_host(Addressing::VirtualHost, &minio, "bucket"));
        assert!(!use_virtual_host(Addressing::Path, &aws, "bucket"));
    }

    #[test]
    fn debug_hides_credentials() {
        let c = creds().with_session_token("TOKEN123456");
        let cfg = S3Config::new("http://h:1", "bucket", "", c.clone());
        for s in [format!("{c:?}"), format!("{cfg:?}"), format!("{cfg:#?}")] {
            assert!(!s.contains("AKIDEXAMPLE"), "{s}");
            assert!(!s.contains("EXAMPLEKEY"), "{s}");
            assert!(!s.contains("TOKEN123456"), "{s}");
            assert!(s.contains("<redacted>"), "{s}");
        }
        assert_eq!(c.session_token(), Some("TOKEN123456"));
    }

    #[test]
    fn validates_region_credentials_timeouts() {
        let mut cfg = S3Config::new("http://h:1", "bucket", "", creds());
        validate_rest(&cfg).unwrap();
        cfg.region = "eu west".into();
        assert!(validate_rest(&cfg).is_err());
        cfg.region = "eu-west-1".into();
        cfg.credentials = S3Credentials::new("id", "");
        let e = validate_rest(&cfg).unwrap_err().to_string();
        assert!(e.contains("secret store"), "{e}");
        cfg.credentials = creds();
        cfg.request_timeout = Duration::ZERO;
        assert!(validate_rest(&cfg).is_err());
    }
}
