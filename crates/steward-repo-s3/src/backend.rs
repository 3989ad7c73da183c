//! [`S3Backend`]: the [`Backend`] trait over S3's REST API, in restic's S3 layout.
//!
//! * `write` is one `PUT` (S3 objects appear atomically and complete, so no
//!   temporary name is needed); a pack (16 MiB by default) fits one request, far
//!   below S3's 5 GiB single-`PUT` limit. The body carries a signed `Content-MD5`.
//! * `read_range` is a `GET` with a `Range` header; an answer shorter than asked
//!   is an error, and a server that ignores `Range` is handled.
//! * `list` is `ListObjectsV2` with continuation tokens; keys whose last part is
//!   not a 64-digit lower-case hex name are ignored. Packs directly below `data/`
//!   (restic's old `s3legacy` layout) are listed too, as the local backend does.
//! * `remove` looks the object up first, so a missing file is `NotFound` as with
//!   the local backend (S3's `DELETE` succeeds on missing keys).
//! * `create` creates the bucket when it does not exist (with a log line) and
//!   fails with `AlreadyExists` when the prefix already holds a `config`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use md5::{Digest, Md5};
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use reqwest::Method;
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, S3Action, UrlStyle};
use steward_repo::{Backend, BackendError, FileType, Id};
use url::Url;

use crate::config::{
    display_endpoint, normalize_endpoint, normalize_prefix, use_virtual_host, validate_bucket,
    validate_rest, ConfigError, S3Config, DEFAULT_REGION,
};
use crate::response::{classify_status, classify_transport, parse_retry_after, secs, Context};
use crate::retry::{self, Exhausted, Failure, FailureKind, GiveUp, RetryClock, RetryPolicy};

/// How long a presigned request URL stays valid (the request must start by then).
const SIGN_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// Pages of a listing after which the server is assumed to loop (10^9 keys).
const MAX_LIST_PAGES: usize = 1_000_000;

/// The S3 backend. Cheap to share between threads (`Arc<S3Backend>`); one HTTP
/// connection pool serves them all.
pub struct S3Backend {
    bucket: Bucket,
    creds: rusty_s3::Credentials,
    sensitive: Vec<zeroize::Zeroizing<String>>,
    prefix: String,
    client: Client,
    endpoint: String,
    location: String,
    region: String,
    virtual_host: bool,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry: RetryPolicy,
    clock: Arc<dyn RetryClock>,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.location)
            .field("region", &self.region)
            .field("virtual_host", &self.virtual_host)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("credentials", &"<redacted>")
            .finish()
    }
}

/// An HTTP answer, read in full.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Runs `f` directly, or on a helper thread when this thread is inside a tokio
/// runtime context: reqwest's blocking client panics (in debug builds) when it
/// waits on a runtime thread. The caller's thread still blocks until `f` is done.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl S3Backend {
    /// Checks the configuration and sets up the HTTP client; makes no request.
    pub fn new(config: S3Config) -> Result<Self, ConfigError> {
        let endpoint_url = normalize_endpoint(&config.endpoint)?;
        validate_bucket(&config.bucket)?;
        let prefix = normalize_prefix(&config.prefix)?;
        validate_rest(&config)?;
        let region = config.region.trim().to_string();
        let virtual_host = use_virtual_host(config.addressing, &endpoint_url, &config.bucket);
        let style = if virtual_host {
            UrlStyle::VirtualHost
        } else {
            UrlStyle::Path
        };
        let endpoint = display_endpoint(&endpoint_url);
        let bucket = Bucket::new(endpoint_url, style, config.bucket.clone(), region.clone())
            .map_err(|e| ConfigError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                reason: format!("cannot address bucket {} there ({e:?})", config.bucket),
            })?;
        let c = &config.credentials;
        let creds = match c.session_token() {
            Some(t) => {
                rusty_s3::Credentials::new_with_token(c.access_key_id(), c.secret_access_key(), t)
            }
            None => rusty_s3::Credentials::new(c.access_key_id(), c.secret_access_key()),
        };
        let client = off_runtime(|| {
            Client::builder()
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("steward-repo-s3/", env!("CARGO_PKG_VERSION")))
                .build()
        })
        .map_err(|e| ConfigError::Client(e.without_url().to_string()))?;
        let location = if prefix.is_empty() {
            format!("s3:{endpoint}/{}", config.bucket)
        } else {
            format!("s3:{endpoint}/{}/{prefix}", config.bucket)
        };
        Ok(S3Backend {
            bucket,
            sensitive: c.sensitive(),
            creds,
            prefix,
            client,
            endpoint,
            location,
            region,
            virtual_host,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            retry: config.retry,
            clock: Arc::new(retry::SystemClock),
        })
    }

    /// The endpoint, e.g. `http://127.0.0.1:9000`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// The prefix inside the bucket (empty for the bucket's root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key of a file, e.g. `prefix/data/1a/1a2b...`.
    pub fn key_for(&self, t: FileType, id: &Id) -> String {
        let rel = match t {
            FileType::Config => "config".to_string(),
            FileType::Pack => {
                let hex = id.to_hex();
                format!("data/{}/{hex}", &hex[..2])
            }
            _ => format!("{}/{}", t.dir_name(), id.to_hex()),
        };
        self.with_prefix(&rel)
    }

    fn with_prefix(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    fn describe(&self, t: FileType, id: &Id) -> String {
        format!("{} at {}", t.describe(id), self.location)
    }

    fn ctx<'a>(&'a self, op: &'a str, what: &'a str) -> Context<'a> {
        Context {
            op,
            what,
            bucket: self.bucket.name(),
            endpoint: &self.endpoint,
            region: &self.region,
            sensitive: &self.sensitive,
        }
    }

    /// Sends one request and reads the whole answer.
    fn execute(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self.client.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes()?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// One attempt: the answer if its status is in `ok`, else a classified failure.
    fn attempt(
        &self,
        ctx: &Context<'_>,
        method: Method,
        url: Url,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
        ok: &[u16],
    ) -> Result<Answer, Failure> {
        match self.execute(method, url, headers, body) {
            Err(e) => Err(classify_transport(
                e,
                self.connect_timeout,
                self.request_timeout,
                ctx,
            )),
            Ok(a) if ok.contains(&a.status) => Ok(a),
            Ok(a) => {
                let retry_after = a
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                let region = a
                    .headers
                    .get("x-amz-bucket-region")
                    .and_then(|v| v.to_str().ok());
                Err(classify_status(a.status, retry_after, region, &a.body, ctx))
            }
        }
    }

    /// Runs `f` under the retry policy, turning exhaustion into a clear error.
    fn call<T: Send>(
        &self,
        op: &str,
        f: impl FnMut(u32) -> Result<T, Failure> + Send,
    ) -> Result<T, BackendError> {
        let result = off_runtime(|| {
            let mut jitter = rand::random::<f64>;
            retry::run(
                &self.retry,
                self.clock.as_ref(),
                &mut jitter,
                f,
                |attempt, failure, delay| {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "S3 {op}: {}; retrying",
                        failure.detail
                    );
                },
            )
        });
        match result {
            Ok(v) => Ok(v),
            Err(Ok(e)) => Err(e),
            Err(Err(ex)) => Err(self.exhausted(op, ex)),
        }
    }

    fn exhausted(&self, op: &str, ex: Exhausted) -> BackendError {
        let verb = match ex.last.kind {
            FailureKind::Unreachable => "unreachable",
            FailureKind::Timeout => "timed out",
            FailureKind::ConnectionLost => "kept dropping the connection",
            FailureKind::Server => "kept failing",
        };
        let tries = if ex.attempts == 1 {
            "1 attempt".to_string()
        } else {
            format!("{} attempts", ex.attempts)
        };
        let mut what = format!("S3 endpoint {} {verb} after {tries}", self.endpoint);
        match ex.why {
            GiveUp::Attempts => {}
            GiveUp::TimeLimit => what.push_str(&format!(
                " in {} (the retry time limit is {})",
                secs(Duration::from_millis(ex.elapsed.as_millis() as u64)),
                secs(self.retry.max_elapsed)
            )),
            GiveUp::RetryAfterTooLong(d) => what.push_str(&format!(
                " (the server asked to wait {}, beyond the retry time limit of {})",
                secs(d),
                secs(self.retry.max_elapsed)
            )),
        }
        let advice = match ex.last.kind {
            FailureKind::Unreachable => {
                "check that the endpoint URL is right and that the server is running and reachable from this host"
            }
            FailureKind::Timeout => {
                "the server or the network is slow or stuck: check them, or raise the request timeout"
            }
            FailureKind::ConnectionLost => "check the network and the server's logs",
            FailureKind::Server => {
                "the server is overloaded or failing: try again later and check the server's status"
            }
        };
        BackendError::Exhausted {
            what,
            message: format!(
                "{} while trying to {op} ({}); {advice}",
                ex.last.detail, self.location
            ),
        }
    }

    /// All keys (and sizes) under `prefix`, following continuation tokens.
    fn list_keys(&self, key_prefix: &str, op: &str) -> Result<Vec<(String, u64)>, BackendError> {
        let what = self.location.clone();
        let ctx = self.ctx(op, &what);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for page_no in 1..=MAX_LIST_PAGES {
            let page = self.call(op, |_| {
                let mut action = self.bucket.list_objects_v2(Some(&self.creds));
                action.with_prefix(key_prefix);
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                let url = action.sign(SIGN_EXPIRY);
                let a = self.attempt(&ctx, Method::GET, url, &[], None, &[200])?;
                let text = String::from_utf8_lossy(&a.body);
                ListObjectsV2::parse_response(&text).map_err(|e| {
                    Failure::Final(BackendError::Permanent {
                        what: format!("{op} ({what})"),
                        message: format!(
                            "the listing from {} is not a ListObjectsV2 answer ({e}); check that the endpoint is an S3 server (and not, e.g., a web proxy's error page)",
                            self.endpoint
                        ),
                    })
                })
            })?;
            tracing::debug!(
                endpoint = %self.endpoint,
                page = page_no,
                keys = page.contents.len(),
                more = page.next_continuation_token.is_some(),
                "S3 listing of {key_prefix}: page {page_no}"
            );
            out.extend(page.contents.into_iter().map(|c| (c.key, c.size)));
            match page.next_continuation_token {
                Some(next) if !next.is_empty() => {
                    if token.as_deref() == Some(next.as_str()) {
                        return Err(BackendError::Permanent {
                            what: format!("{op} ({what})"),
                            message: format!(
                                "the server at {} returned the same continuation token twice; it does not page listings correctly",
                                self.endpoint
                            ),
                        });
                    }
                    token = Some(next);
                }
                _ => return Ok(out),
            }
        }
        Err(BackendError::Permanent {
            what: format!("{op} ({what})"),
            message: format!(
                "more than {MAX_LIST_PAGES} pages; the server at {} seems to page forever",
                self.endpoint
            ),
        })
    }

    /// True if the bucket exists.
    fn bucket_exists(&self) -> Result<bool, BackendError> {
        let op = "check that the bucket exists";
        let what = format!("bucket {} at {}", self.bucket.name(), self.endpoint);
        let ctx = self.ctx(op, &what);
        let a = self.call(op, |_| {
            let url = self.bucket.head_bucket(Some(&self.creds)).sign(SIGN_EXPIRY);
            self.attempt(&ctx, Method::HEAD, url, &[], None, &[200, 404])
        })?;
        Ok(a.status == 200)
    }

    fn create_bucket(&self) -> Result<(), BackendError> {
        let op = "create the bucket";
        let what = format!("bucket {} at {}", self.bucket.name(), self.endpoint);
        let ctx = self.ctx(op, &what);
        let body = if self.region == DEFAULT_REGION {
            Vec::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            )
            .into_bytes()
        };
        self.call(op, |_| {
            let url = self.bucket.create_bucket(&self.creds).sign(SIGN_EXPIRY);
            let a = self.attempt(&ctx, Method::PUT, url, &[], Some(&body), &[200, 409])?;
            if a.status == 409 {
                let err = crate::response::parse_error_body(&a.body);
                if err.code != "BucketAlreadyOwnedByYou" {
                    return Err(classify_status(409, None, None, &a.body, &ctx));
                }
            }
            Ok(())
        })
    }

    fn get(
        &self,
        t: FileType,
        id: &Id,
        range: Option<(u64, u32)>,
        op: &str,
    ) -> Result<Answer, BackendError> {
        let key = self.key_for(t, id);
        let what = self.describe(t, id);
        let ctx = self.ctx(op, &what);
        let headers: Vec<(&str, String)> = match range {
            Some((offset, len)) => vec![(
                "range",
                format!(
                    "bytes={offset}-{}",
                    offset.saturating_add(u64::from(len) - 1)
                ),
            )],
            None => Vec::new(),
        };
        self.call(op, |_| {
            let url = self
                .bucket
                .get_object(Some(&self.creds), &key)
                .sign(SIGN_EXPIRY);
            self.attempt(&ctx, Method::GET, url, &headers, None, &[200, 206])
        })
    }
}

impl S3Backend {
    /// `NotFound` unless the object exists.
    fn head(&self, t: FileType, id: &Id, op: &str) -> Result<(), BackendError> {
        let key = self.key_for(t, id);
        let what = self.describe(t, id);
        let ctx = self.ctx(op, &what);
        let a = self.call(op, |_| {
            let url = self
                .bucket
                .head_object(Some(&self.creds), &key)
                .sign(SIGN_EXPIRY);
            self.attempt(&ctx, Method::HEAD, url, &[], None, &[200, 404])
        })?;
        if a.status == 404 {
            return Err(BackendError::NotFound { what });
        }
        Ok(())
    }
}

/// Only lower-case 64-digit hex names are repository files.
fn parse_name(name: &str) -> Option<Id> {
    if name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Id::from_hex(name).ok()
    } else {
        None
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<(), BackendError> {
        if !self.bucket_exists()? {
            self.create_bucket()?;
            tracing::info!(
                bucket = %self.bucket.name(),
                endpoint = %self.endpoint,
                "created S3 bucket {} at {}: it did not exist",
                self.bucket.name(),
                self.endpoint
            );
        }
        if !self.list(FileType::Config)?.is_empty() {
            return Err(BackendError::AlreadyExists {
                location: self.location.clone(),
            });
        }
        Ok(())
    }

    fn list(&self, t: FileType) -> Result<Vec<(Id, u64)>, BackendError> {
        let op = format!("list {}", t.dir_name());
        if t == FileType::Config {
            let key = self.with_prefix("config");
            return Ok(self
                .list_keys(&key, &op)?
                .into_iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, size)| (Id::default(), size))
                .collect());
        }
        let dir = self.with_prefix(&format!("{}/", t.dir_name()));
        let keys = self.list_keys(&dir, &op)?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, size) in keys {
            let Some(rel) = key.strip_prefix(&dir) else {
                continue;
            };
            let name = match (t, rel.split_once('/')) {
                (_, None) => rel,
                // data/<2 hex>/<id>
                (FileType::Pack, Some((sub, name))) if sub.len() == 2 && !name.contains('/') => {
                    name
                }
                _ => continue,
            };
            if let Some(id) = parse_name(name) {
                out.push((id, size));
            }
        }
        Ok(out)
    }

    fn read(&self, t: FileType, id: &Id) -> Result<Vec<u8>, BackendError> {
        let op = format!("read {}", t.describe(id));
        Ok(self.get(t, id, None, &op)?.body)
    }

    fn read_range(
        &self,
        t: FileType,
        id: &Id,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        let op = format!(
            "read {} bytes at offset {offset} of {}",
            len,
            t.describe(id)
        );
        if len == 0 {
            // S3 has no empty range; only check that the file exists.
            self.head(t, id, &op)?;
            return Ok(Vec::new());
        }
        let a = self.get(t, id, Some((offset, len)), &op)?;
        let body = if a.status == 206 {
            a.body
        } else {
            // The server ignored the Range header and sent the whole file.
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            a.body.get(start..).map(<[u8]>::to_vec).unwrap_or_default()
        };
        let mut body = body;
        if body.len() < len as usize {
            return Err(BackendError::Permanent {
                what: format!("{op} ({})", self.describe(t, id)),
                message: format!(
                    "the file is shorter than expected (got {} of {len} bytes at offset {offset}); it was truncated",
                    body.len()
                ),
            });
        }
        body.truncate(len as usize);
        Ok(body)
    }

    fn write(&self, t: FileType, id: &Id, data: &[u8]) -> Result<(), BackendError> {
        let op = format!("write {}", t.describe(id));
        let key = self.key_for(t, id);
        let what = self.describe(t, id);
        let ctx = self.ctx(&op, &what);
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(data));
        let headers = [
            ("content-md5", md5.clone()),
            ("content-type", "application/octet-stream".to_string()),
        ];
        self.call(&op, |_| {
            let mut action = self.bucket.put_object(Some(&self.creds), &key);
            action.headers_mut().insert("content-md5", md5.as_str());
            let url = action.sign(SIGN_EXPIRY);
            self.attempt(&ctx, Method::PUT, url, &headers, Some(data), &[200])
                .map(|_| ())
        })
    }

    fn remove(&self, t: FileType, id: &Id) -> Result<(), BackendError> {
        let op = format!("remove {}", t.describe(id));
        let key = self.key_for(t, id);
        let what = self.describe(t, id);
        let ctx = self.ctx(&op, &what);
        // S3 deletes missing keys without complaint; look first so a missing
        // file is NotFound, as with the local backend.
        self.head(t, id, &op)?;
        self.call(&op, |_| {
            let url = self
                .bucket
                .delete_object(Some(&self.creds), &key)
                .sign(SIGN_EXPIRY);
            self.attempt(&ctx, Method::DELETE, url, &[], None, &[200, 204])
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::S3Credentials;

    fn backend(prefix: &str) -> S3Backend {
        let mut c = S3Config::new(
            "http://127.0.0.1:9",
            "bucket",
            prefix,
            S3Credentials::new("AKIDEXAMPLE", "SECRETEXAMPLEKEY"),
        );
        c.retry.max_attempts = 2;
        c.retry.initial_backoff = Duration::from_millis(1);
        S3Backend::new(c).unwrap()
    }

    #[test]
    fn restic_s3_layout() {
        let b = backend("/some/prefix/");
        let id = Id::hash(b"x");
        let hex = id.to_hex();
        assert_eq!(b.key_for(FileType::Config, &id), "some/prefix/config");
        assert_eq!(
            b.key_for(FileType::Pack, &id),
            format!("some/prefix/data/{}/{hex}", &hex[..2])
        );
        assert_eq!(
            b.key_for(FileType::Key, &id),
            format!("some/prefix/keys/{hex}")
        );
        assert_eq!(
            b.key_for(FileType::Lock, &id),
            format!("some/prefix/locks/{hex}")
        );
        assert_eq!(
            b.key_for(FileType::Snapshot, &id),
            format!("some/prefix/snapshots/{hex}")
        );
        assert_eq!(
            b.key_for(FileType::Index, &id),
            format!("some/prefix/index/{hex}")
        );
        assert_eq!(b.location(), "s3:http://127.0.0.1:9/bucket/some/prefix");
        let root = backend("");
        assert_eq!(root.key_for(FileType::Config, &id), "config");
        assert_eq!(root.location(), "s3:http://127.0.0.1:9/bucket");
    }

    #[test]
    fn names_must_be_lower_hex() {
        let id = Id::hash(b"x");
        assert_eq!(parse_name(&id.to_hex()), Some(id));
        assert_eq!(parse_name(&id.to_hex().to_uppercase()), None);
        assert_eq!(parse_name("config"), None);
        assert_eq!(parse_name(&format!("{}.tmp", id.to_hex())), None);
    }

    #[test]
    fn debug_shows_no_credentials() {
        let b = backend("p");
        let s = format!("{b:?}");
        assert!(
            !s.contains("AKIDEXAMPLE") && !s.contains("SECRETEXAMPLEKEY"),
            "{s}"
        );
        assert!(s.contains("s3:http://127.0.0.1:9/bucket/p"), "{s}");
    }

    #[test]
    fn works_inside_an_async_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Built and used on a runtime thread: no panic, a normal error.
        let b = rt.block_on(async { backend("p") });
        let e = rt
            .block_on(async { b.list(FileType::Snapshot) })
            .unwrap_err();
        assert!(e.is_temporary(), "{e}");
        let e = rt
            .block_on(async {
                tokio::task::spawn_blocking(move || b.list(FileType::Snapshot)).await
            })
            .unwrap()
            .unwrap_err();
        assert!(e.is_temporary(), "{e}");
    }
}
