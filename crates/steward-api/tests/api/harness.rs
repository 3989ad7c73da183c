//! The test harness: the whole router over a fresh SQLite store in a temp dir, initialized with
//! a key (so it starts unsealed), driven with `tower::ServiceExt::oneshot` (no socket).
//!
//! [`Api::check`] and friends send one request and return the status and the body as JSON.
//! Every answer they see is checked against the API's global rules on the way: each response
//! carries an `X-Request-Id`, and every non-2xx answer (except the two probes that document
//! their own bodies) has exactly the one error shape.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use steward_api::{AppState, Metrics, Settings};
use steward_core::{config::SqliteSync, EnvName, SystemClock};
use steward_crypto::UnsealKey;
use steward_secrets::{Engine, EngineConfig, InitRequest};
use steward_store::Store;
use tower::ServiceExt;

/// HTTP body limit of the test servers.
pub const MAX_BODY: usize = 16 * 1024;
/// Engine value limit of the test servers (below the body limit, so both 413s are reachable).
pub const MAX_VALUE: usize = 8 * 1024;

/// A running (socketless) server.
pub struct Api {
    pub app: Router,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub root: String,
    pub unseal_key: UnsealKey,
    _dir: tempfile::TempDir,
}

/// One answer.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON; `Null` for an empty body, a JSON string for a non-JSON body.
    pub json: Value,
}

impl Resp {
    pub fn request_id(&self) -> &str {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or_default()
    }
}

pub fn engine_config() -> EngineConfig {
    let env = |s: &str| EnvName::parse(s).unwrap();
    EngineConfig {
        environments: vec![env("dev"), env("staging"), env("prod")],
        default_environment: env("dev"),
        max_versions: 5,
        max_value_bytes: MAX_VALUE,
    }
}

/// Whether a non-2xx answer is exempt from the error shape: health's documented body, HEAD
/// answers (axum strips their bodies), and the plain bodies the probes outside `/v1` keep
/// (`/readyz`'s 503, a 405 on `/metrics`). Outside `/v1`, a JSON error (an unknown route) still
/// has the shape.
pub fn exempt_from_shape(method: &str, path: &str, r: &Resp) -> bool {
    let json = r
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    method == "HEAD" || path == "/v1/sys/health" || (!path.starts_with("/v1/") && !json)
}

/// What is wrong with an error answer's shape, if anything: exactly
/// `{"error": {"code", "message", "request_id"}, "errors": [message]}`, JSON, a snake_case code,
/// and the request id of the response header.
pub fn error_shape_problem(r: &Resp) -> Option<String> {
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with("application/json") {
        return Some(format!("content-type {ct:?}"));
    }
    let Some(top) = r.json.as_object() else {
        return Some("not a JSON object".into());
    };
    let mut keys: Vec<&str> = top.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let code = top["error"]["code"].as_str().unwrap_or_default();
    let deleted_version = code == "version_deleted" || code == "version_destroyed";
    if deleted_version && keys == ["data", "error", "errors"] {
        // Vault's extra for a deleted/destroyed version on a KV read: `data.metadata`, nothing
        // else. Other routes (a template or `run` reference to a deleted version) answer with
        // the plain error body.
        if !top["data"]["data"].is_null() || !top["data"]["metadata"]["version"].is_u64() {
            return Some(format!("deleted-version body {keys:?}: {}", r.json));
        }
    } else if keys != ["error", "errors"] {
        return Some(format!("top-level keys {keys:?}"));
    }
    let Some(err) = top["error"].as_object() else {
        return Some("error is not an object".into());
    };
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["code", "message", "request_id"] {
        return Some(format!("error keys {keys:?}"));
    }
    for k in ["code", "message", "request_id"] {
        if err[k].as_str().is_none_or(str::is_empty) {
            return Some(format!("error.{k} is not a non-empty string"));
        }
    }
    let code = err["code"].as_str().unwrap_or_default();
    if !code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Some(format!("code {code:?} is not snake_case"));
    }
    if top["errors"] != json!([err["message"]]) {
        return Some("errors is not [error.message]".into());
    }
    if err["request_id"] != r.request_id() {
        return Some("body and header request ids differ".into());
    }
    None
}

/// Asserts the one error shape (see [`error_shape_problem`]); returns (code, message).
pub fn assert_error_shape(r: &Resp, what: &str) -> (String, String) {
    if let Some(p) = error_shape_problem(r) {
        panic!("{what}: {p}: {} {}", r.status, r.text);
    }
    let s = |k: &str| r.json["error"][k].as_str().unwrap_or_default().to_string();
    (s("code"), s("message"))
}

/// Percent-encodes what may not stand in a URI as is (non-ASCII, controls, spaces, quotes...),
/// keeping `/`, `%` (so callers can write their own escapes), and `?`/`&`/`=` only if `query`.
pub fn encode_uri(raw: &[u8], keep_query: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        let keep = b.is_ascii_alphanumeric()
            || b"-._~!$'()*+,;:@/%".contains(&b)
            || (keep_query && b"?&=".contains(&b));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), SqliteSync::Normal, 4)
            .await
            .unwrap();
        let engine = Arc::new(Engine::new(store, Arc::new(SystemClock), engine_config()));
        let unseal_key = UnsealKey::generate();
        let init = engine
            .initialize(InitRequest::Key(unseal_key.clone()), |_| Ok(()))
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let rotations = steward_rotation::Rotations::new(
            engine.clone(),
            steward_rotators::Registry::builtin(),
            Default::default(),
            None,
        );
        let alerting = steward_alerting::Alerting::new(engine.clone(), &Default::default())
            .expect("the default alerting config compiles");
        let monitoring = steward_core::monitoring::MonitoringConfig {
            host_checks: false,
            ..Default::default()
        };
        let checks = steward_checks::Monitor::new(
            engine.clone(),
            Some(alerting.clone()),
            steward_checks::Compiled::compile(&monitoring, ".").expect("no checks compile"),
        );
        let backups = steward_dr::Backups::new(
            engine.clone(),
            Some(alerting.clone()),
            steward_dr::Compiled::compile(
                &Default::default(),
                &steward_dr::OwnStore::Sqlite("/nonexistent".into()),
            )
            .expect("no backups compile"),
        );
        let app = steward_api::app(AppState {
            engine: engine.clone(),
            rotations,
            alerting,
            checks,
            backups,
            metrics: metrics.clone(),
            settings: Arc::new(Settings {
                request_timeout: Duration::from_secs(30),
                max_body_bytes: MAX_BODY,
                version: "test",
            }),
            ui: Default::default(),
        });
        Self {
            app,
            engine,
            metrics,
            root: init.root_token.to_string(),
            unseal_key,
            _dir: dir,
        }
    }

    pub fn root(&self) -> Option<&str> {
        Some(&self.root)
    }

    /// Sends a request and checks the global rules (see the module docs).
    pub async fn send(&self, req: Request<Body>) -> Resp {
        let path = req.uri().path().to_string();
        let method = req.method().to_string();
        let what = format!("{} {}", req.method(), req.uri());
        let r = self.send_unchecked(req).await;
        assert!(!r.request_id().is_empty(), "{what}: no X-Request-Id");
        if !r.status.is_success() && !exempt_from_shape(&method, &path, &r) {
            assert_error_shape(&r, &what);
        }
        r
    }

    /// Sends a request; checks nothing.
    pub async fn send_unchecked(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Resp {
            status: parts.status,
            headers: parts.headers,
            text,
            json,
        }
    }

    /// A request with raw body bytes and extra headers.
    pub async fn raw(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri);
        if let Some(t) = token {
            b = b.header("x-vault-token", t);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::from(body)).unwrap()).await
    }

    /// A request with an optional JSON body; the full answer.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let bytes = body.map_or_else(Vec::new, |v| serde_json::to_vec(&v).unwrap());
        let headers: &[(&str, &str)] = if bytes.is_empty() {
            &[]
        } else {
            &[("content-type", "application/json")]
        };
        self.raw(method, uri, token, headers, bytes).await
    }

    /// A request with an optional JSON body: (status, body as JSON).
    pub async fn check(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = self.call(method, uri, token, body).await;
        (r.status, r.json)
    }

    /// Like [`Api::check`] but insists on `want`, and returns the body.
    pub async fn expect(
        &self,
        want: u16,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let r = self.call(method, uri, token, body).await;
        assert_eq!(r.status.as_u16(), want, "{method} {uri}: {}", r.text);
        r.json
    }

    /// Writes a secret as root; returns the new version.
    pub async fn put(&self, uri_path: &str, data: Value) -> u64 {
        let v = self
            .expect(
                200,
                "PUT",
                &format!("/v1/{uri_path}"),
                self.root(),
                Some(json!({ "data": data })),
            )
            .await;
        v["data"]["version"].as_u64().unwrap()
    }

    /// Creates a token (as root); returns (token, accessor).
    pub async fn token(&self, body: Value) -> (String, String) {
        let v = self
            .expect(
                200,
                "POST",
                "/v1/auth/token/create",
                self.root(),
                Some(body),
            )
            .await;
        (
            v["auth"]["client_token"].as_str().unwrap().to_string(),
            v["auth"]["accessor"].as_str().unwrap().to_string(),
        )
    }

    /// The audit log as parsed entries (one export request, which audits itself too).
    pub async fn audit(&self) -> Vec<Value> {
        let r = self
            .call("GET", "/v1/sys/audit/export?limit=10000", self.root(), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let r = self.call("GET", "/metrics", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        r.text
    }
}
