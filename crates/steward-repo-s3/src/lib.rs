//! S3-compatible object storage as a [`steward_repo::Backend`]: Steward's backup
//! repositories on AWS S3, MinIO, Ceph RGW, Garage, moto and the like, in restic's
//! S3 layout, so `restic -r s3:...` reads what Steward writes and the other way round.
//!
//! ```text
//! <prefix>/config
//! <prefix>/keys/<id>  <prefix>/locks/<id>  <prefix>/snapshots/<id>  <prefix>/index/<id>
//! <prefix>/data/<first two hex digits of id>/<id>
//! ```
//!
//! # Using it
//!
//! ```no_run
//! use std::sync::Arc;
//! use steward_repo_s3::{S3Backend, S3Config, S3Credentials};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The access key comes from Steward's secret store, never from the URL.
//! let creds = S3Credentials::new("AKIA...", String::from("secret from the store"));
//! let config = S3Config::from_url("s3:http://127.0.0.1:9000/backups/db1", None, creds)?;
//! let backend = Arc::new(S3Backend::new(config)?);
//! let repo = steward_repo::Repository::init(backend, "repo password", Default::default())?;
//! # Ok(())
//! # }
//! ```
//!
//! # Why `rusty-s3` and `reqwest`
//!
//! Signing is done by [`rusty_s3`], a small sans-IO crate that builds SigV4
//! presigned URLs and parses ListObjectsV2 answers; the HTTP is the workspace's
//! `reqwest` blocking client (already compiled for other crates, with rustls). The
//! alternative, `aws-sdk-s3`, brings the AWS smithy runtime (hundreds of crates,
//! several minutes of compile time on two cores) and an async API this synchronous
//! trait would have to wrap; hand-written SigV4 would be ours to get right. rusty-s3
//! (built without its `full` feature) adds a handful of small crates to the build
//! (jiff, instant-xml, xmlparser and their helpers); its hmac/sha2/md-5 versions
//! were already in the workspace's lock file.
//!
//! Consequences of presigned URLs: the signature travels in the query string (never
//! the secret key), signed for 15 minutes. Such a URL is a bearer token for that one
//! request for that time, so it is never logged or put in an error: every
//! `reqwest` error is stripped of its URL before it is looked at. The body is not
//! covered by the signature (`UNSIGNED-PAYLOAD`), so uploads carry a signed
//! `Content-MD5` that the server checks.
//!
//! # Errors and retries
//!
//! Each call retries by itself ([`RetryPolicy`]: exponential backoff with jitter,
//! `Retry-After` honoured, bounded by attempts and total time) on connection
//! failures, timeouts, 408, 429, 5xx and S3's `RequestTimeout`. A call that still
//! fails returns [`steward_repo::BackendError::Exhausted`] (so callers do not retry again) naming the endpoint, the
//! attempts and the last failure, e.g. `S3 endpoint http://127.0.0.1:9000 unreachable
//! after 5 attempts: connection refused ...`. 404 (`NoSuchKey`) is
//! [`steward_repo::BackendError::NotFound`]; 403 is a permanent error saying the
//! credentials or the bucket policy are wrong; other 4xx are permanent and not
//! retried. No message, log line or `Debug` output contains the access key id, the
//! secret key, a session token or a signed URL.
//!
//! # Threads
//!
//! The backend blocks; call it from plain threads (as the backup pipeline does) or
//! through `tokio::task::spawn_blocking`. Called on an async runtime thread anyway,
//! it runs each request on a helper thread (reqwest's blocking client would panic
//! there) and blocks the calling runtime thread until it is done.
#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod response;
pub mod retry;

pub use backend::S3Backend;
pub use config::{Addressing, ConfigError, S3Config, S3Credentials, S3Location};
pub use retry::{GiveUp, RetryDecision, RetryPolicy};
