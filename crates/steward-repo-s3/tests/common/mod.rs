//! Helpers shared by the integration tests: a moto S3 server run as a child
//! process, a scripted HTTP server for failure injection, and restic against S3.
//! The generated tree, its comparison, the password and the restic binary come from
//! [`steward_test_utils::fs_tree`], re-exported here.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steward_repo::{InitOptions, KdfParams, RepoOptions};
use steward_repo_s3::{RetryPolicy, S3Backend, S3Config, S3Credentials};
pub use steward_test_utils::fs_tree::*;

pub const ACCESS_KEY_ID: &str = "AKIASTEWARDTEST7KEY";
pub const SECRET_ACCESS_KEY: &str = "sEcReT/DoNotLeak+wJalrXUtnFEMIK7MDENG";

pub fn credentials() -> S3Credentials {
    S3Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
}

/// Retries that finish in milliseconds.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(20),
    }
}

pub fn config(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    let mut c = S3Config::new(endpoint, bucket, prefix, credentials());
    c.retry = fast_retry();
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(60);
    c
}

pub fn backend(endpoint: &str, bucket: &str, prefix: &str) -> S3Backend {
    S3Backend::new(config(endpoint, bucket, prefix)).unwrap()
}

/// Cheap scrypt parameters so tests do not spend their time in the KDF.
pub fn fast_init() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            n: 1 << 12,
            r: 8,
            p: 1,
        },
        options: RepoOptions::default(),
    }
}

/// Asserts that no credential (or signed-URL part) appears in `text`.
pub fn assert_no_credentials(text: &str) {
    for bad in [
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        "DoNotLeak",
        "X-Amz-Signature",
        "X-Amz-Credential",
    ] {
        assert!(!text.contains(bad), "{bad:?} leaked into: {text}");
    }
}

/// A port on which nothing listens (connections are refused).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A moto S3 server on a free local port, killed when dropped.
pub struct MotoServer {
    child: Child,
    pub port: u16,
    _logs: tempfile::TempDir,
    log: PathBuf,
}

impl MotoServer {
    /// Starts moto, or returns `None` (printing SKIPPED) when it is not installed
    /// and STEWARD_SKIP_MOTO=1. Without that variable a missing moto fails the test.
    pub fn start(test: &str) -> Option<MotoServer> {
        let Some(bin) = on_path("moto_server") else {
            if std::env::var("STEWARD_SKIP_MOTO").as_deref() == Ok("1") {
                eprintln!("SKIPPED {test}: moto_server is not on PATH and STEWARD_SKIP_MOTO=1");
                return None;
            }
            panic!(
                "{test}: moto_server is not on PATH: pip install 'moto[server]' (or set STEWARD_SKIP_MOTO=1 to skip the S3 tests)"
            );
        };
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("moto.log");
        let port = closed_port();
        let out = File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{test}: cannot start moto_server ({e}): pip install 'moto[server]'")
            });
        let mut server = MotoServer {
            child,
            port,
            _logs: logs,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{test}: moto_server exited ({status}) before answering; is moto installed for this python? pip install 'moto[server]'\n{}",
                    fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            if http_ok(port) {
                return Some(server);
            }
            if Instant::now() > deadline {
                panic!(
                    "{test}: moto_server did not answer on port {port} within 60 s\n{}",
                    fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("HTTP/1.")
}

/// A local HTTP server that answers requests with scripted responses, in order
/// (the last one repeats), and records each request line.
pub struct Scripted {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    pub fn start(responses: Vec<String>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            // Bounded: a test never needs more than this many requests.
            for (i, conn) in listener.incoming().take(64).enumerate() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(line) = read_request(&mut conn) else {
                    continue;
                };
                seen.lock().unwrap().push(line);
                let resp = &responses[i.min(responses.len() - 1)];
                let _ = conn.write_all(resp.as_bytes());
                let _ = conn.flush();
            }
        });
        Scripted { port, requests }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Reads one request (head and body); returns its request line.
fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(first.trim_end().to_string())
}

/// An HTTP response with the given status line, extra headers and body.
pub fn response(status: &str, headers: &[&str], body: &str) -> String {
    let mut s = format!("HTTP/1.1 {status}\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s
}

/// An S3 XML error document.
pub fn s3_error(code: &str, message: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message><RequestId>1</RequestId></Error>")
}

/// Runs restic against an S3 repository URL; panics with its output on failure.
pub fn restic_s3(repo_url: &str, password_file: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(RESTIC)
        .arg("-r")
        .arg(repo_url)
        .arg("--password-file")
        .arg(password_file)
        .arg("--no-cache")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("RESTIC_REPOSITORY")
        .env_remove("RESTIC_PASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restic {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Log lines written through `tracing` while `f` runs on this thread.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let v = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (v, text)
}
