//! Failures: an unreachable endpoint, throttling with `Retry-After`, refused
//! credentials, and that no credential ever shows in errors, logs or `Debug`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use steward_repo::{backup, Backend, BackendError, BackupOptions, Error, FileType, Id, Repository};
use steward_repo_s3::{S3Backend, S3Config};

#[test]
fn unreachable_endpoint_is_a_clear_transient_error() {
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let b = backend(&endpoint, "bucket", "prefix");
    let started = Instant::now();
    let (e, logs) = capture_logs(|| b.read(FileType::Snapshot, &Id::hash(b"x")).unwrap_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(e.is_temporary(), "{e}");
    let msg = e.to_string();
    eprintln!("unreachable: {msg}");
    assert!(
        msg.contains(&format!(
            "S3 endpoint {endpoint} unreachable after 5 attempts: connection refused"
        )),
        "{msg}"
    );
    assert!(
        msg.contains("check that the endpoint URL is right"),
        "{msg}"
    );
    assert_no_credentials(&msg);
    assert_no_credentials(&format!("{e:?}"));
    // Four retries were logged, without credentials.
    assert_eq!(logs.matches("retrying").count(), 4, "{logs}");
    assert_no_credentials(&logs);

    // Repository::init fails the same way, quickly.
    let started = Instant::now();
    let err = Repository::init(Arc::new(b), PASSWORD, fast_init()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &err {
        Error::Backend(e) => assert!(e.is_temporary(), "{e}"),
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .contains("unreachable after 5 attempts: connection refused"),
        "{err}"
    );
    assert_no_credentials(&err.to_string());
}

/// Sends pack writes to a dead endpoint once `fail` is set; everything else to moto.
#[derive(Debug)]
struct PacksToDeadEndpoint {
    good: S3Backend,
    dead: S3Backend,
    fail: AtomicBool,
}

impl Backend for PacksToDeadEndpoint {
    fn location(&self) -> String {
        self.good.location()
    }
    fn create(&self) -> Result<(), BackendError> {
        self.good.create()
    }
    fn list(&self, t: FileType) -> Result<Vec<(Id, u64)>, BackendError> {
        self.good.list(t)
    }
    fn read(&self, t: FileType, id: &Id) -> Result<Vec<u8>, BackendError> {
        self.good.read(t, id)
    }
    fn read_range(
        &self,
        t: FileType,
        id: &Id,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        self.good.read_range(t, id, offset, len)
    }
    fn write(&self, t: FileType, id: &Id, data: &[u8]) -> Result<(), BackendError> {
        if t == FileType::Pack && self.fail.load(Ordering::SeqCst) {
            self.dead.write(t, id, data)
        } else {
            self.good.write(t, id, data)
        }
    }
    fn remove(&self, t: FileType, id: &Id) -> Result<(), BackendError> {
        self.good.remove(t, id)
    }
}

#[test]
fn backup_to_unreachable_endpoint_records_no_snapshot() {
    let Some(moto) = MotoServer::start("backup_to_unreachable_endpoint_records_no_snapshot") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let b = Arc::new(PacksToDeadEndpoint {
        good: backend(&moto.endpoint(), "flaky", "repo"),
        dead: backend(&dead, "flaky", "repo"),
        fail: AtomicBool::new(true),
    });
    let repo = Repository::init(b.clone(), PASSWORD, fast_init()).unwrap();
    let err = backup(&repo, &[&src], &BackupOptions::default()).unwrap_err();
    let msg = err.to_string();
    eprintln!("backup: {msg}");
    assert!(
        msg.contains(&format!(
            "S3 endpoint {dead} unreachable after 5 attempts: connection refused"
        )),
        "{msg}"
    );
    assert_no_credentials(&msg);
    // No snapshot, no index: the repository is as before (at most stray locks).
    let check = backend(&moto.endpoint(), "flaky", "repo");
    assert!(check.list(FileType::Snapshot).unwrap().is_empty());
    assert!(check.list(FileType::Index).unwrap().is_empty());
    assert!(repo.list_snapshots().unwrap().is_empty());

    // Once the endpoint is back, a backup succeeds.
    b.fail.store(false, Ordering::SeqCst);
    backup(&repo, &[&src], &BackupOptions::default()).unwrap();
    assert_eq!(check.list(FileType::Snapshot).unwrap().len(), 1);
}

/// With a 30 s backoff, finishing fast proves the `Retry-After: 0` was honoured.
fn slow_backoff(endpoint: &str) -> S3Backend {
    let mut c: S3Config = config(endpoint, "bucket", "p");
    c.retry.initial_backoff = Duration::from_secs(30);
    c.retry.max_backoff = Duration::from_secs(30);
    c.retry.max_elapsed = Duration::from_secs(120);
    S3Backend::new(c).unwrap()
}

#[test]
fn throttling_with_retry_after_is_retried_and_honoured() {
    for (status, code) in [
        ("503 Service Unavailable", "SlowDown"),
        ("429 Too Many Requests", "TooManyRequests"),
        ("500 Internal Server Error", "InternalError"),
    ] {
        let server = Scripted::start(vec![
            response(
                status,
                &["Retry-After: 0", "Content-Type: application/xml"],
                &s3_error(code, "Please reduce your request rate."),
            ),
            response("200 OK", &[], "hello"),
        ]);
        let b = slow_backoff(&server.endpoint());
        let started = Instant::now();
        let (data, logs) = capture_logs(|| b.read(FileType::Snapshot, &Id::hash(b"s")));
        assert_eq!(data.unwrap(), b"hello", "{status}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{status}: Retry-After: 0 not honoured ({:?})",
            started.elapsed()
        );
        assert_eq!(server.count(), 2, "{status}");
        let reqs = server.requests.lock().unwrap().clone();
        assert!(reqs[0].starts_with("GET /bucket/p/snapshots/"), "{reqs:?}");
        assert!(logs.contains(code) && logs.contains("retrying"), "{logs}");
        assert_no_credentials(&logs);
    }
}

#[test]
fn retry_after_beyond_the_time_limit_gives_up_at_once() {
    let server = Scripted::start(vec![response(
        "503 Service Unavailable",
        &["Retry-After: 3600"],
        &s3_error("SlowDown", "Please reduce your request rate."),
    )]);
    let b = slow_backoff(&server.endpoint());
    let started = Instant::now();
    let e = b.read(FileType::Index, &Id::hash(b"i")).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(e.is_temporary(), "{e}");
    assert_eq!(server.count(), 1);
    let msg = e.to_string();
    eprintln!("retry-after too long: {msg}");
    assert!(msg.contains("kept failing after 1 attempt"), "{msg}");
    assert!(msg.contains("asked to wait 3600 s"), "{msg}");
    assert!(msg.contains("HTTP 503 SlowDown"), "{msg}");
}

#[test]
fn persistent_server_errors_are_bounded() {
    let server = Scripted::start(vec![response(
        "502 Bad Gateway",
        &[],
        "<html>bad gateway</html>",
    )]);
    let b = backend(&server.endpoint(), "bucket", "p");
    let e = b
        .write(FileType::Lock, &Id::hash(b"l"), b"lock")
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(server.count(), 5);
    assert!(
        e.to_string().contains(&format!(
            "S3 endpoint {} kept failing after 5 attempts: HTTP 502",
            server.endpoint()
        )),
        "{e}"
    );
}

#[test]
fn forbidden_is_permanent_and_names_credentials() {
    let server = Scripted::start(vec![response(
        "403 Forbidden",
        &["Content-Type: application/xml"],
        &s3_error(
            "InvalidAccessKeyId",
            &format!(
                "The AWS Access Key Id {ACCESS_KEY_ID} you provided does not exist in our records."
            ),
        ),
    )]);
    let b = backend(&server.endpoint(), "bucket", "p");
    let e = b.list(FileType::Snapshot).unwrap_err();
    assert_eq!(server.count(), 1, "a 403 must not be retried");
    assert!(!e.is_transient() && !e.is_not_found(), "{e}");
    let msg = e.to_string();
    eprintln!("forbidden: {msg}");
    assert!(
        msg.contains("access key id or secret access key is wrong, or the bucket policy"),
        "{msg}"
    );
    assert!(msg.contains("InvalidAccessKeyId"), "{msg}");
    assert_no_credentials(&msg);
    assert_no_credentials(&format!("{e:?}"));
}

#[test]
fn other_client_errors_are_not_retried() {
    let server = Scripted::start(vec![response(
        "400 Bad Request",
        &[],
        &s3_error("InvalidArgument", "Invalid argument."),
    )]);
    let b = backend(&server.endpoint(), "bucket", "p");
    let e = b.read(FileType::Key, &Id::hash(b"k")).unwrap_err();
    assert_eq!(server.count(), 1);
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("HTTP 400 InvalidArgument"), "{e}");

    let server = Scripted::start(vec![response(
        "404 Not Found",
        &[],
        &s3_error("NoSuchKey", "The specified key does not exist."),
    )]);
    let b = backend(&server.endpoint(), "bucket", "p");
    assert!(b
        .read(FileType::Key, &Id::hash(b"k"))
        .unwrap_err()
        .is_not_found());
    assert_eq!(server.count(), 1);
}

#[test]
fn a_slow_server_times_out_and_is_retried() {
    // Accepts connections but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().take(3) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    let mut c = config(&format!("http://127.0.0.1:{port}"), "bucket", "p");
    c.request_timeout = Duration::from_millis(300);
    c.retry.max_attempts = 3;
    let b = S3Backend::new(c).unwrap();
    let started = Instant::now();
    let e = b.read(FileType::Index, &Id::hash(b"i")).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(e.is_temporary(), "{e}");
    let msg = e.to_string();
    eprintln!("timeout: {msg}");
    assert!(msg.contains("timed out after 3 attempts"), "{msg}");
    assert!(msg.contains("request timeout of 0.300 s"), "{msg}");
    drop(hold);
}

#[test]
fn debug_and_errors_never_show_credentials() {
    let c = config("http://127.0.0.1:9", "bucket", "p");
    assert_no_credentials(&format!("{c:?}"));
    assert_no_credentials(&format!("{c:#?}"));
    assert_no_credentials(&format!("{:?}", c.credentials));
    let b = S3Backend::new(c.clone()).unwrap();
    assert_no_credentials(&format!("{b:?}"));
    assert_no_credentials(&format!("{b:#?}"));

    // Errors from every kind of failure.
    let mut errors = Vec::new();
    let dead = backend(
        &format!("http://127.0.0.1:{}", closed_port()),
        "bucket",
        "p",
    );
    errors.push(dead.list(FileType::Pack).unwrap_err());
    errors.push(
        dead.write(FileType::Pack, &Id::hash(b"p"), b"data")
            .unwrap_err(),
    );
    errors.push(dead.create().unwrap_err());
    let echo = Scripted::start(vec![response(
        "500 Internal Server Error",
        &[],
        &s3_error(
            "InternalError",
            &format!(
                "oops {SECRET_ACCESS_KEY} /bucket/p?X-Amz-Credential={ACCESS_KEY_ID}%2F2024&X-Amz-Signature=0123abcd"
            ),
        ),
    )]);
    errors.push(
        backend(&echo.endpoint(), "bucket", "p")
            .read(FileType::Snapshot, &Id::hash(b"s"))
            .unwrap_err(),
    );
    for e in &errors {
        assert_no_credentials(&e.to_string());
        assert_no_credentials(&format!("{e:?}"));
    }

    // URLs with credentials in them are refused without repeating them.
    let e = S3Config::from_url(
        &format!("s3:http://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@127.0.0.1:9000/bucket"),
        None,
        credentials(),
    )
    .unwrap_err();
    assert_no_credentials(&e.to_string());
    assert_no_credentials(&format!("{e:?}"));
    let mut c = config("http://127.0.0.1:9", "bucket", "p");
    c.endpoint = format!("http://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@127.0.0.1:9000");
    let e = S3Backend::new(c).unwrap_err();
    assert_no_credentials(&e.to_string());
    assert_no_credentials(&format!("{e:?}"));
}
