//! The network, command and host probes against real peers: an axum server (plain and over
//! TLS with certificates made by rcgen), dnsmasq as a DNS server, real programs, and this
//! machine's /proc and file systems.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use axum::{
    extract::Request,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect},
    routing::{any, get},
    Router,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;
use steward_probes::{Outcome, Probe, SecretSource, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
        ServerConfig,
    },
    server::TlsStream,
    TlsAcceptor,
};
use zeroize::Zeroizing;

/// Generous: what must succeed gets this long, even on a loaded machine.
const LONG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Secrets by reference; anything else is "not found".
struct Secrets(HashMap<&'static str, &'static str>);

#[async_trait]
impl SecretSource for Secrets {
    async fn resolve(&self, reference: &str) -> Result<Zeroizing<String>, String> {
        self.0
            .get(reference)
            .map(|v| Zeroizing::new(v.to_string()))
            .ok_or_else(|| format!("secret {reference} not found"))
    }
}

fn no_secrets() -> Secrets {
    Secrets(HashMap::new())
}

fn probe(kind: &str, settings: serde_json::Value) -> Arc<dyn Probe> {
    match steward_probes::build(kind, &settings) {
        Ok(p) => p,
        Err(e) => panic!("{kind} {settings}: {e}"),
    }
}

async fn run(p: &Arc<dyn Probe>, timeout: Duration) -> Outcome {
    p.run(&no_secrets(), timeout).await
}

fn num(o: &Outcome, name: &str) -> f64 {
    match o.facts.get(name) {
        Some(Value::Number(n)) => *n,
        other => panic!("{name} is {other:?} in {o:?}"),
    }
}

fn text<'a>(o: &'a Outcome, name: &str) -> &'a str {
    match o.facts.get(name) {
        Some(Value::String(s)) => s,
        other => panic!("{name} is {other:?} in {o:?}"),
    }
}

fn flag(o: &Outcome, name: &str) -> bool {
    match o.facts.get(name) {
        Some(Value::Bool(b)) => *b,
        other => panic!("{name} is {other:?} in {o:?}"),
    }
}

fn duration(o: &Outcome, name: &str) -> Duration {
    match o.facts.get(name) {
        Some(Value::Duration(d)) => *d,
        other => panic!("{name} is {other:?} in {o:?}"),
    }
}

fn ok(o: &Outcome) {
    assert!(o.error.is_none(), "unexpected error: {o:?}");
    assert!(
        matches!(o.facts.get("response_time"), Some(Value::Duration(_))),
        "{o:?}"
    );
    assert!(o.phases.iter().any(|(p, _)| *p == "total"), "{o:?}");
}

fn error(o: &Outcome) -> &str {
    assert!(
        matches!(o.facts.get("response_time"), Some(Value::Duration(_))),
        "{o:?}"
    );
    match &o.error {
        Some(e) => {
            eprintln!("error: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
            e
        }
        None => panic!("expected an error: {o:?}"),
    }
}

/// A port with nothing listening (bound, then released).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// HTTP peers

const BIG: usize = 2 * 1024 * 1024;

fn app() -> Router {
    Router::new()
        .route(
            "/json",
            get(|| async {
                (
                    [("x-test", "yes"), ("content-type", "application/json")],
                    r#"{"ok":true,"items":[1,2,3],"name":"svc"}"#,
                )
            }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .route("/redirect", get(|| async { Redirect::to("/json") }))
        .route("/loop", get(|| async { Redirect::to("/loop") }))
        .route("/big", get(|| async { "x".repeat(BIG) }))
        .route(
            "/auth",
            get(|headers: HeaderMap| async move {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                match auth {
                    "Bearer tok-secret-123" | "Basic YWxpY2U6cHctc2VjcmV0LTQ1Ng==" => {
                        (StatusCode::OK, "welcome")
                    }
                    _ => (StatusCode::UNAUTHORIZED, "who are you"),
                }
            }),
        )
        .route(
            "/echo",
            any(|req: Request| async move {
                let method = req.method().to_string();
                let custom = req
                    .headers()
                    .get("x-custom")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                let body: Vec<u8> = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(&body).to_string();
                format!("{method} {custom} {body}").into_response()
            }),
        )
        .route(
            "/text",
            get(|| async { "plain text, not json".into_response() }),
        )
}

async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app()).await;
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// TLS peers

/// A CA and a server certificate it signed.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

fn pki(names: &[&str], not_before: time::OffsetDateTime, not_after: time::OffsetDateTime) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Steward Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "steward-test-server");
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone(), ca.der().clone()],
        key_der: key.serialize_der(),
    }
}

fn valid_pki(days: i64) -> Pki {
    let now = time::OffsetDateTime::now_utc();
    pki(
        &["localhost", "127.0.0.1"],
        now - time::Duration::days(1),
        now + time::Duration::days(days),
    )
}

/// TLS over a TCP listener, for `axum::serve`. Failed handshakes are skipped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS server with `pki`'s certificate; returns its address and a file with the CA.
async fn https_server(pki: &Pki, dir: &Path) -> (SocketAddr, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pki.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone())),
        )
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app()).await;
    });
    let ca_file = dir.join(format!("ca-{}.pem", addr.port()));
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    (addr, ca_file.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------------------------
// Every kind

#[test]
fn kinds_are_listed_and_describe_their_facts() {
    let kinds: Vec<&str> = steward_probes::kinds().map(|k| k.0).collect();
    let samples = [
        ("http", json!({"url": "http://127.0.0.1:1/"})),
        ("tcp", json!({"address": "127.0.0.1:1"})),
        ("tls", json!({"host": "127.0.0.1"})),
        ("dns", json!({"name": "example.com", "server": "127.0.0.1"})),
        ("command", json!({"argv": ["true"]})),
        ("disk", json!({})),
        ("memory", json!({})),
        ("load", json!({})),
    ];
    for (kind, settings) in samples {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        let p = probe(kind, settings);
        assert_eq!(p.kind(), kind);
        assert!(p.facts().contains(&"response_time"), "{kind}");
        assert!(!p.default_condition().is_empty());
        // Unknown keys are refused, naming the known ones.
        let e = steward_probes::build(kind, &json!({"no_such_key": 1}))
            .err()
            .unwrap_or_else(|| panic!("{kind} took an unknown key"));
        assert!(
            e.key == "no_such_key" || e.message.contains("missing") || e.message.contains("give"),
            "{kind}: {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// http

#[tokio::test]
async fn http_json_headers_and_body() {
    let addr = http_server().await;
    let p = probe("http", json!({"url": format!("http://{addr}/json")}));
    assert_eq!(p.default_condition(), "status >= 200 && status < 400");
    let o = run(&p, LONG).await;
    ok(&o);
    assert_eq!(num(&o, "status"), 200.0);
    assert_eq!(text(&o, "header.x-test"), "yes");
    assert_eq!(text(&o, "header.content-type"), "application/json");
    assert!(text(&o, "body").starts_with(r#"{"ok":true"#));
    assert!(!flag(&o, "body_truncated"));
    assert_eq!(num(&o, "size"), text(&o, "body").len() as f64);
    match o.facts.get("body.json") {
        Some(Value::Json(j)) => assert_eq!(j["items"][2], 3),
        other => panic!("body.json is {other:?}"),
    }
    assert!(o.facts.get("cert_expires_in").is_none(), "plain http");
    let phases: Vec<&str> = o.phases.iter().map(|p| p.0).collect();
    assert_eq!(phases, ["first_byte", "total"]);

    // Plain text has no body.json; the same probe runs again on its kept-alive connection.
    let p = probe("http", json!({"url": format!("http://{addr}/text")}));
    let o = run(&p, LONG).await;
    ok(&o);
    assert!(o.facts.get("body.json").is_none());
    let o = run(&p, LONG).await;
    ok(&o);
}

#[tokio::test]
async fn http_server_error_is_a_fact_not_an_error() {
    let addr = http_server().await;
    let p = probe("http", json!({"url": format!("http://{addr}/fail")}));
    let o = run(&p, LONG).await;
    ok(&o);
    assert_eq!(num(&o, "status"), 500.0);
    assert_eq!(text(&o, "body"), "boom");
}

#[tokio::test]
async fn http_timeout_ends_the_run() {
    let addr = http_server().await;
    let p = probe("http", json!({"url": format!("http://{addr}/slow")}));
    let started = Instant::now();
    let o = run(&p, Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{o:?}");
    let e = error(&o);
    assert!(e.starts_with("no answer within 300ms"), "{e}");
    assert!(e.contains(&addr.to_string()), "{e}");
    assert!(duration(&o, "response_time") >= Duration::from_millis(300));
}

#[tokio::test]
async fn http_redirects_per_setting() {
    let addr = http_server().await;
    let url = format!("http://{addr}/redirect");
    let o = run(&probe("http", json!({"url": url})), LONG).await;
    ok(&o);
    assert_eq!(num(&o, "status"), 303.0);
    assert_eq!(text(&o, "header.location"), "/json");

    let o = run(
        &probe("http", json!({"url": url, "follow_redirects": true})),
        LONG,
    )
    .await;
    ok(&o);
    assert_eq!(num(&o, "status"), 200.0);
    assert_eq!(text(&o, "header.x-test"), "yes");

    let o = run(
        &probe(
            "http",
            json!({"url": format!("http://{addr}/loop"), "follow_redirects": true}),
        ),
        LONG,
    )
    .await;
    assert!(error(&o).contains("too many redirects"), "{o:?}");
}

#[tokio::test]
async fn http_large_bodies_are_cut() {
    let addr = http_server().await;
    let p = probe("http", json!({"url": format!("http://{addr}/big")}));
    let o = run(&p, LONG).await;
    ok(&o);
    assert!(flag(&o, "body_truncated"));
    assert_eq!(text(&o, "body").len(), steward_probes::http::BODY_LIMIT);
    assert_eq!(num(&o, "size"), BIG as f64);
}

#[tokio::test]
async fn http_method_headers_and_body_are_sent() {
    let addr = http_server().await;
    let p = probe(
        "http",
        json!({
            "url": format!("http://{addr}/echo"),
            "method": "post",
            "headers": {"X-Custom": "abc"},
            "body": "hello there"
        }),
    );
    let o = run(&p, LONG).await;
    ok(&o);
    assert_eq!(text(&o, "body"), "POST abc hello there");
}

#[tokio::test]
async fn http_credentials_come_from_secrets_and_stay_out_of_errors() {
    let addr = http_server().await;
    let url = format!("http://{addr}/auth");
    let secrets = Secrets(HashMap::from([
        ("prod/api/token#value", "tok-secret-123"),
        ("prod/api/basic#password", "pw-secret-456"),
        ("prod/api/bad#value", "line\nbreak-secret-789"),
    ]));

    let bearer = probe(
        "http",
        json!({"url": url, "bearer_secret": "prod/api/token#value"}),
    );
    let o = bearer.run(&secrets, LONG).await;
    ok(&o);
    assert_eq!(num(&o, "status"), 200.0);

    let basic = probe(
        "http",
        json!({"url": url, "basic_auth_user": "alice", "basic_auth_password_secret": "prod/api/basic#password"}),
    );
    let o = basic.run(&secrets, LONG).await;
    ok(&o);
    assert_eq!(num(&o, "status"), 200.0);

    // Without the credential the server says 401: a fact, not an error.
    let o = run(&probe("http", json!({"url": url})), LONG).await;
    ok(&o);
    assert_eq!(num(&o, "status"), 401.0);

    // A missing secret names the reference.
    let missing = probe(
        "http",
        json!({"url": url, "bearer_secret": "prod/api/gone#value"}),
    );
    let e = error(&missing.run(&secrets, LONG).await).to_string();
    assert!(e.contains("prod/api/gone#value"), "{e}");

    // A secret that cannot be a header names the reference, never the value.
    let bad = probe(
        "http",
        json!({"url": url, "bearer_secret": "prod/api/bad#value"}),
    );
    let o = bad.run(&secrets, LONG).await;
    let e = error(&o);
    assert!(e.contains("prod/api/bad#value"), "{e}");
    assert!(!e.contains("secret-789"), "{e}");
    for (_, v) in o.facts.iter() {
        assert!(!format!("{v:?}").contains("secret"), "{v:?}");
    }
}

#[tokio::test]
async fn http_refused_connection_is_an_error() {
    let port = closed_port().await;
    let o = run(
        &probe("http", json!({"url": format!("http://127.0.0.1:{port}/")})),
        LONG,
    )
    .await;
    let e = error(&o);
    assert!(
        e.starts_with(&format!("cannot connect to 127.0.0.1:{port}")),
        "{e}"
    );
    assert!(e.contains("refused"), "{e}");
    assert!(o.facts.get("status").is_none());
}

#[tokio::test]
async fn https_with_ca_file_skip_verify_and_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let pki = valid_pki(10);
    let (addr, ca_file) = https_server(&pki, dir.path()).await;
    let url = format!("https://localhost:{}/json", addr.port());

    // Trusted through ca_file: the certificate's expiry is reported, also when the second run
    // reuses the kept-alive connection.
    let trusted = probe("http", json!({"url": url, "ca_file": ca_file}));
    let day = Duration::from_secs(86_400);
    for _ in 0..2 {
        let o = run(&trusted, LONG).await;
        ok(&o);
        assert_eq!(num(&o, "status"), 200.0);
        let left = duration(&o, "cert_expires_in");
        assert!(left > 9 * day && left <= 10 * day, "{left:?}");
    }

    // Not trusted by the built-in roots: an error with a hint.
    let o = run(&probe("http", json!({"url": url})), LONG).await;
    let e = error(&o);
    assert!(e.contains("certificate"), "{e}");
    assert!(
        e.contains("ca_file") && e.contains("tls_skip_verify"),
        "{e}"
    );

    // tls_skip_verify: the chain does not matter, the facts are there.
    let o = run(
        &probe("http", json!({"url": url, "tls_skip_verify": true})),
        LONG,
    )
    .await;
    ok(&o);
    assert_eq!(num(&o, "status"), 200.0);
    assert!(duration(&o, "cert_expires_in") > 9 * day);
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// 10,000 `http` checks (the scale the scheduler is built for) against one local server:
/// building them shares one client, and a round of runs reuses kept-alive connections. Prints
/// the figures; run it with
/// `cargo test -p steward-probes --release --test net -- --ignored --nocapture many_http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run by hand"]
async fn many_http_checks_are_cheap() {
    const N: usize = 10_000;
    let addr = http_server().await;
    let rss_before = rss_kib();
    let t = Instant::now();
    let probes: Vec<Arc<dyn Probe>> = (0..N)
        .map(|i| {
            probe(
                "http",
                json!({"url": format!("http://{addr}/json?check={i}")}),
            )
        })
        .collect();
    let built = t.elapsed();
    let rss_built = rss_kib();
    for round in 0..2 {
        let t = Instant::now();
        let limit = Arc::new(tokio::sync::Semaphore::new(256));
        let mut tasks = tokio::task::JoinSet::new();
        for p in &probes {
            let (p, limit) = (p.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                p.run(&no_secrets(), LONG).await
            });
        }
        let mut failed = 0;
        while let Some(o) = tasks.join_next().await {
            if o.map_or(true, |o| o.error.is_some()) {
                failed += 1;
            }
        }
        assert_eq!(failed, 0);
        eprintln!(
            "round {round}: {N} runs in {:?} ({:.0}/s), rss {} KiB",
            t.elapsed(),
            N as f64 / t.elapsed().as_secs_f64(),
            rss_kib()
        );
    }
    eprintln!(
        "built {N} http checks in {built:?}; rss {rss_before} -> {rss_built} KiB ({} bytes per check)",
        (rss_built.saturating_sub(rss_before)) * 1024 / N as u64
    );
}

// ---------------------------------------------------------------------------------------------
// tcp

#[tokio::test]
async fn tcp_open_and_closed_ports() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = probe("tcp", json!({"host": "127.0.0.1", "port": addr.port()}));
    assert_eq!(p.default_condition(), "connected");
    let o = run(&p, LONG).await;
    ok(&o);
    assert!(flag(&o, "connected"));
    let phases: Vec<&str> = o.phases.iter().map(|p| p.0).collect();
    assert_eq!(phases, ["dns", "connect", "total"]);

    let o = run(
        &probe(
            "tcp",
            json!({"address": format!("localhost:{}", addr.port())}),
        ),
        LONG,
    )
    .await;
    ok(&o);
    assert!(flag(&o, "connected"));

    let port = closed_port().await;
    let o = run(
        &probe("tcp", json!({"address": format!("127.0.0.1:{port}")})),
        LONG,
    )
    .await;
    assert!(!flag(&o, "connected"));
    let e = error(&o);
    assert!(e.contains("connection refused"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");

    let o = run(
        &probe("tcp", json!({"host": "no-such-host.invalid", "port": 80})),
        LONG,
    )
    .await;
    assert!(!flag(&o, "connected"));
    assert!(error(&o).contains("cannot resolve"), "{o:?}");
}

// ---------------------------------------------------------------------------------------------
// tls

#[tokio::test]
async fn tls_certificate_facts() {
    let dir = tempfile::tempdir().unwrap();
    let pki = valid_pki(10);
    let (addr, ca_file) = https_server(&pki, dir.path()).await;
    let day = Duration::from_secs(86_400);

    // Trusted CA, right name.
    let p = probe(
        "tls",
        json!({"host": "127.0.0.1", "port": addr.port(), "server_name": "localhost", "ca_file": ca_file}),
    );
    assert_eq!(
        p.default_condition(),
        "chain_valid && hostname_valid && cert_expires_in > 14d"
    );
    let o = run(&p, LONG).await;
    ok(&o);
    assert!(flag(&o, "chain_valid"), "{o:?}");
    assert_eq!(text(&o, "chain_error"), "");
    assert!(flag(&o, "hostname_valid"));
    assert!(!flag(&o, "cert_expired"));
    let left = duration(&o, "cert_expires_in");
    assert!(left > 9 * day && left <= 10 * day, "{left:?}");
    assert!(text(&o, "subject").contains("steward-test-server"), "{o:?}");
    assert!(text(&o, "issuer").contains("Steward Test CA"), "{o:?}");
    assert_eq!(text(&o, "tls_version"), "TLSv1.3");
    let phases: Vec<&str> = o.phases.iter().map(|p| p.0).collect();
    assert_eq!(phases, ["dns", "connect", "tls", "total"]);

    // An IP address in the certificate counts as the name too.
    let o = run(
        &probe(
            "tls",
            json!({"address": addr.to_string(), "ca_file": ca_file}),
        ),
        LONG,
    )
    .await;
    ok(&o);
    assert!(
        flag(&o, "chain_valid") && flag(&o, "hostname_valid"),
        "{o:?}"
    );

    // Wrong name: the chain is fine, the name is not.
    let o = run(
        &probe(
            "tls",
            json!({"host": "127.0.0.1", "port": addr.port(), "server_name": "other.example", "ca_file": ca_file}),
        ),
        LONG,
    )
    .await;
    ok(&o);
    assert!(flag(&o, "chain_valid"));
    assert!(!flag(&o, "hostname_valid"));

    // Unknown CA (the built-in roots): still every certificate fact.
    let o = run(
        &probe(
            "tls",
            json!({"host": "127.0.0.1", "port": addr.port(), "server_name": "localhost"}),
        ),
        LONG,
    )
    .await;
    ok(&o);
    assert!(!flag(&o, "chain_valid"));
    assert!(text(&o, "chain_error").contains("not trusted"), "{o:?}");
    assert!(flag(&o, "hostname_valid"));
    assert!(duration(&o, "cert_expires_in") > 9 * day);
    assert!(text(&o, "subject").contains("steward-test-server"));
}

#[tokio::test]
async fn tls_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let pki = pki(
        &["localhost"],
        now - time::Duration::days(30),
        now - time::Duration::days(2),
    );
    let (addr, ca_file) = https_server(&pki, dir.path()).await;
    let o = run(
        &probe(
            "tls",
            json!({"host": "localhost", "port": addr.port(), "ca_file": ca_file}),
        ),
        LONG,
    )
    .await;
    ok(&o);
    assert!(flag(&o, "cert_expired"));
    assert_eq!(duration(&o, "cert_expires_in"), Duration::ZERO);
    assert!(!flag(&o, "chain_valid"));
    assert!(text(&o, "chain_error").contains("expired"), "{o:?}");
}

#[tokio::test]
async fn tls_errors() {
    // Not TLS at all: the plain HTTP server.
    let addr = http_server().await;
    let o = run(
        &probe("tls", json!({"host": "127.0.0.1", "port": addr.port()})),
        LONG,
    )
    .await;
    let e = error(&o);
    assert!(e.starts_with("TLS handshake with"), "{e}");

    // Refused.
    let port = closed_port().await;
    let o = run(
        &probe("tls", json!({"host": "127.0.0.1", "port": port})),
        LONG,
    )
    .await;
    assert!(error(&o).contains("refused"), "{o:?}");

    // A server that accepts and never speaks: the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let o = run(
        &probe("tls", json!({"host": "127.0.0.1", "port": port})),
        Duration::from_millis(400),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = error(&o);
    assert!(
        e.starts_with("no answer within 400ms (TLS handshake with"),
        "{e}"
    );
    drop(silent);

    // Bad settings.
    let e = steward_probes::build("tls", &json!({"host": "x", "ca_file": "/nonexistent.pem"}))
        .err()
        .unwrap();
    assert_eq!(e.key, "ca_file");
    let e = steward_probes::build("tls", &json!({"host": "x", "server_name": "not a name"}))
        .err()
        .unwrap();
    assert_eq!(e.key, "server_name");
}

// ---------------------------------------------------------------------------------------------
// dns (dnsmasq)

/// A dnsmasq serving test names on 127.0.0.1; killed when dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dnsmasq() -> Dnsmasq {
    const BIN: &str = "/usr/sbin/dnsmasq";
    if !Path::new(BIN).exists() {
        let installed = std::process::Command::new("apt-get")
            .args(["install", "-y", "-qq", "dnsmasq-base"])
            .stdout(Stdio::null())
            .status();
        assert!(
            Path::new(BIN).exists(),
            "{BIN} is missing and `apt-get install -y dnsmasq-base` did not bring it ({installed:?})"
        );
    }
    let mut last = String::new();
    for _ in 0..5 {
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let mut child = std::process::Command::new(BIN)
            .args([
                "--no-daemon".to_string(),
                format!("--port={port}"),
                "--listen-address=127.0.0.1".into(),
                "--bind-interfaces".into(),
                "--no-resolv".into(),
                "--no-hosts".into(),
                "--pid-file=".into(),
                "--address=/svc.test/10.1.2.3".into(),
                "--txt-record=txt.svc.test,hello".into(),
                "--mx-host=mx.svc.test,mail.svc.test,10".into(),
                "--host-record=target.other.test,10.9.9.9".into(),
                "--cname=alias.other.test,target.other.test".into(),
                "--local=/nx.test/".into(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // dnsmasq logs "started" once its sockets are bound, or why it could not bind.
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut started = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("started") {
                started = true;
                break;
            }
            last = line;
        }
        if started {
            // Keep draining its log so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Dnsmasq { child, port };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("dnsmasq did not start: {last}");
}

fn values(o: &Outcome) -> Vec<String> {
    match o.facts.get("values") {
        Some(Value::List(l)) => l
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("values is {other:?}"),
    }
}

#[tokio::test]
async fn dns_answers_from_dnsmasq() {
    let d = dnsmasq();
    let server = format!("127.0.0.1:{}", d.port);
    let ask = |name: &str, record: &str| {
        probe(
            "dns",
            json!({"name": name, "record": record, "server": server}),
        )
    };

    let p = probe("dns", json!({"name": "svc.test", "server": server}));
    assert_eq!(p.default_condition(), "count > 0");
    let o = run(&p, LONG).await;
    ok(&o);
    assert_eq!(values(&o), ["10.1.2.3"]);
    assert_eq!(num(&o, "count"), 1.0);

    let o = run(&ask("api.svc.test.", "a"), LONG).await;
    ok(&o);
    assert_eq!(values(&o), ["10.1.2.3"]);

    let o = run(&ask("txt.svc.test", "TXT"), LONG).await;
    ok(&o);
    assert_eq!(values(&o), ["hello"]);

    let o = run(&ask("mx.svc.test", "MX"), LONG).await;
    ok(&o);
    assert_eq!(values(&o), ["10 mail.svc.test"]);

    let o = run(&ask("alias.other.test", "CNAME"), LONG).await;
    ok(&o);
    assert_eq!(values(&o), ["target.other.test"]);

    // An A query through the CNAME reports the address only.
    let o = run(&ask("alias.other.test", "A"), LONG).await;
    ok(&o);
    assert_eq!(values(&o), ["10.9.9.9"]);

    // NXDOMAIN: no answer, not an error.
    let o = run(&ask("nothing.nx.test", "A"), LONG).await;
    ok(&o);
    assert_eq!(num(&o, "count"), 0.0);
    assert!(values(&o).is_empty());

    // A name dnsmasq cannot answer (no upstream servers): REFUSED is an error.
    let o = run(&ask("example.org", "A"), LONG).await;
    let e = error(&o);
    assert!(e.contains("REFUSED"), "{e}");
    assert!(e.contains(&server), "{e}");
}

#[tokio::test]
async fn dns_silent_server_times_out() {
    // A UDP socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = silent.local_addr().unwrap().to_string();
    let p = probe("dns", json!({"name": "svc.test", "server": server}));
    let started = Instant::now();
    let o = run(&p, Duration::from_millis(500)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = error(&o);
    assert!(e.starts_with("no answer within 500ms"), "{e}");
    assert!(e.contains(&server), "{e}");
}

// ---------------------------------------------------------------------------------------------
// command

#[tokio::test]
async fn command_exit_codes_and_output() {
    let p = probe(
        "command",
        json!({"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
    );
    assert_eq!(p.default_condition(), "exit_code == 0");
    let o = run(&p, LONG).await;
    ok(&o);
    assert_eq!(num(&o, "exit_code"), 3.0);
    assert_eq!(text(&o, "stdout"), "out\n");
    assert_eq!(text(&o, "stderr"), "err\n");

    let o = run(&probe("command", json!({"argv": ["true"]})), LONG).await;
    ok(&o);
    assert_eq!(num(&o, "exit_code"), 0.0);

    // Killed by a signal: 128 + the signal, as shells say.
    let o = run(
        &probe("command", json!({"argv": ["sh", "-c", "kill -TERM $$"]})),
        LONG,
    )
    .await;
    ok(&o);
    assert_eq!(num(&o, "exit_code"), 143.0);

    // Output is cut at 64 KiB (and the rest drained, so the program finishes).
    let o = run(
        &probe(
            "command",
            json!({"argv": ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a"]}),
        ),
        LONG,
    )
    .await;
    ok(&o);
    assert_eq!(num(&o, "exit_code"), 0.0);
    assert_eq!(
        text(&o, "stdout").len(),
        steward_probes::command::OUTPUT_LIMIT
    );
}

#[tokio::test]
async fn command_environment_and_workdir() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &probe(
            "command",
            json!({"argv": ["env"], "env": {"FOO": "bar baz"}}),
        ),
        LONG,
    )
    .await;
    ok(&o);
    let names: Vec<&str> = text(&o, "stdout")
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(
        names.contains(&"FOO") && names.contains(&"PATH"),
        "{names:?}"
    );
    for n in &names {
        assert!(["PATH", "HOME", "LANG", "FOO"].contains(n), "leaked {n}");
    }
    assert!(text(&o, "stdout").contains("FOO=bar baz\n"));

    let o = run(
        &probe(
            "command",
            json!({"argv": ["pwd"], "workdir": dir.path().to_string_lossy()}),
        ),
        LONG,
    )
    .await;
    ok(&o);
    let pwd = text(&o, "stdout").trim_end().to_string();
    assert_eq!(
        std::fs::canonicalize(&pwd).unwrap(),
        std::fs::canonicalize(dir.path()).unwrap()
    );

    let o = run(
        &probe("command", json!({"argv": ["/nonexistent/program", "x"]})),
        LONG,
    )
    .await;
    let e = error(&o);
    assert!(
        e.starts_with("cannot start \"/nonexistent/program\""),
        "{e}"
    );
    assert!(o.facts.get("exit_code").is_none());
}

/// The state letter of a process (`Z` for a zombie), or `None` once it is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[tokio::test]
async fn command_timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("bg.pid");
    let script = format!(
        "sleep 30 & echo $! > {}; echo started; sleep 30",
        pid_file.display()
    );
    let p = probe("command", json!({"argv": ["sh", "-c", script]}));
    let started = Instant::now();
    let o = run(&p, Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{o:?}");
    let e = error(&o);
    assert!(e.contains("did not finish within 2s"), "{e}");
    assert!(e.contains("killed"), "{e}");
    assert!(o.facts.get("exit_code").is_none());
    assert_eq!(text(&o, "stdout"), "started\n");

    // The background sleep went with its group.
    let bg: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + LONG;
    while !matches!(process_state(bg), None | Some('Z')) {
        assert!(Instant::now() < deadline, "pid {bg} still runs");
        tokio::task::yield_now().await;
    }

    // A plain `sleep 30` ends in time too.
    let started = Instant::now();
    let o = run(
        &probe("command", json!({"argv": ["sleep", "30"]})),
        Duration::from_millis(300),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        error(&o).contains("\"sleep\" did not finish within 300ms"),
        "{o:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// host

#[tokio::test]
async fn disk_memory_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &probe("disk", json!({"path": dir.path().to_string_lossy()})),
        LONG,
    )
    .await;
    ok(&o);
    let used = num(&o, "disk_used_percent");
    assert!((0.0..=100.0).contains(&used), "{used}");
    let total = num(&o, "disk_total_bytes");
    let free = num(&o, "disk_free_bytes");
    assert!(total > 0.0 && free >= 0.0 && free <= total, "{o:?}");
    assert!((0.0..=100.0).contains(&num(&o, "inodes_used_percent")));

    let o = run(&probe("disk", json!({"path": "/nonexistent/dir"})), LONG).await;
    assert!(error(&o).contains("/nonexistent/dir"), "{o:?}");

    let o = run(&probe("memory", json!({})), LONG).await;
    ok(&o);
    let used = num(&o, "memory_used_percent");
    assert!(used > 0.0 && used < 100.0, "{used}");
    let avail = num(&o, "memory_available_bytes");
    assert!(avail > 0.0 && avail < num(&o, "memory_total_bytes"));
    assert!((0.0..=100.0).contains(&num(&o, "swap_used_percent")));
    if Path::new("/proc/pressure/memory").exists() {
        assert!((0.0..=100.0).contains(&num(&o, "memory_pressure_some_avg10")));
    }

    let o = run(&probe("load", json!({})), LONG).await;
    ok(&o);
    let cpus = num(&o, "cpus");
    assert!(cpus >= 1.0);
    for f in ["load1", "load5", "load15"] {
        assert!(num(&o, f) >= 0.0);
    }
    assert!((num(&o, "load_per_cpu") - num(&o, "load1") / cpus).abs() < 1e-9);
}
