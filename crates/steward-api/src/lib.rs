//! Steward's HTTP API: the only crate that speaks HTTP and JSON.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive it without a socket.
//! Every request passes through one middleware ([`frame`]) that assigns the request id, builds
//! the engine's [`RequestCtx`], records metrics and a log line, makes sure the request left an
//! audit entry (fail closed: a request whose entry cannot be written is answered 503), and
//! renders every error into the one error body.
#![forbid(unsafe_code)]

mod alerting;
mod backup;
mod checks;
pub mod error;
mod kv;
pub mod metrics;
mod openapi;
mod rotation;
mod status;
mod sys;
mod token;
pub mod ui;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, delete, get, post},
    Json, Router,
};
use serde::Serialize;
use steward_secrets::{Engine, RequestCtx};
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

pub use error::ApiError;
pub use metrics::Metrics;

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub rotations: Arc<steward_rotation::Rotations>,
    pub alerting: Arc<steward_alerting::Alerting>,
    pub checks: Arc<steward_checks::Monitor>,
    pub backups: Arc<steward_dr::Backups>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    /// The dashboard's signed-in sessions.
    pub ui: Arc<ui::Sessions>,
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub request_timeout: std::time::Duration,
    pub max_body_bytes: usize,
    pub version: &'static str,
}

/// Routes that leave no audit entry: probes, metrics, the API description, and the seal
/// endpoints (which run while sealed, when nothing can be audited).
const UNAUDITED: &[&str] = &[
    "/v1/sys/health",
    "/v1/sys/seal-status",
    "/v1/sys/init",
    "/v1/sys/unseal",
    "/v1/openapi.json",
];

/// Builds the router.
pub fn app(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    let timeout = state.settings.request_timeout;
    Router::new()
        .route("/livez", get(sys::livez))
        .route("/readyz", get(sys::readyz))
        .route("/metrics", get(sys::metrics))
        .route("/status", get(status::page))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/sys/health", get(sys::health).head(sys::health))
        .route("/v1/sys/seal-status", get(sys::seal_status))
        .route("/v1/sys/init", get(sys::init_status))
        .route("/v1/sys/unseal", post(sys::unseal).put(sys::unseal))
        .route("/v1/sys/seal", post(sys::seal).put(sys::seal))
        .route("/v1/sys/environments", get(sys::environments))
        .route(
            "/v1/sys/keys/rotate",
            post(sys::keys_rotate).put(sys::keys_rotate),
        )
        .route("/v1/sys/keys/status", get(sys::keys_status))
        .route("/v1/sys/audit/export", get(sys::audit_export))
        .route(
            "/v1/sys/audit/verify",
            post(sys::audit_verify).put(sys::audit_verify),
        )
        .route(
            "/v1/sys/audit-hash",
            post(sys::audit_hash).put(sys::audit_hash),
        )
        .route("/v1/sys/policies", any(sys::policies_list))
        .route("/v1/sys/policies/{name}", any(sys::policy))
        .route("/v1/sys/rotation/status", get(rotation::list))
        .route(
            "/v1/sys/rotation/{op}/{env}/{*path}",
            any(rotation::dispatch),
        )
        .route("/v1/sys/events", get(rotation::events))
        .route("/v1/sys/events/stream", get(rotation::stream))
        .route("/v1/sys/expiring", get(rotation::expiring))
        .route(
            "/api/v2/alerts",
            get(alerting::get_alerts).post(alerting::post_alerts),
        )
        .route("/api/v2/alerts/groups", get(alerting::get_groups))
        .route(
            "/api/v2/silences",
            get(alerting::get_silences).post(alerting::post_silence),
        )
        .route(
            "/api/v2/silence/{id}",
            get(alerting::get_silence).delete(alerting::delete_silence),
        )
        .route("/api/v2/status", get(alerting::status))
        .route("/api/v2/receivers", get(alerting::receivers))
        .route("/v1/sys/backup/sources", get(backup::sources))
        .route("/v1/sys/backup/runs", get(backup::runs))
        .route("/v1/sys/backup/run", post(backup::run))
        .route("/v1/sys/backup/check", post(backup::check))
        .route("/v1/sys/backup/prune", post(backup::prune))
        .route("/v1/sys/backup/copy", post(backup::copy))
        .route("/v1/sys/backup/restore", post(backup::restore))
        .route("/v1/sys/backup/snapshots", get(backup::snapshots))
        .route("/v1/sys/drill/run", post(backup::drill))
        .route("/v1/sys/dr/report", get(backup::report))
        .route("/v1/checks", get(checks::list))
        .route("/v1/slos", get(checks::slos))
        .route("/v1/checks/{name}", get(checks::show))
        .route("/v1/checks/{name}/run", post(checks::run))
        .route("/v1/checks/{name}/beat", post(checks::beat))
        .route("/v1/sys/alerting/alerts", get(alerting::list))
        .route("/v1/sys/alerting/alerts/{fp}", get(alerting::show))
        .route("/v1/sys/alerting/alerts/{fp}/ack", post(alerting::ack))
        .route("/v1/sys/alerting/groups", get(alerting::groups))
        .route("/v1/sys/alerting/dead-letters", get(alerting::dead_letters))
        .route(
            "/v1/sys/alerting/dead-letters/replay",
            post(alerting::replay),
        )
        .route("/v1/sys/alerting/outbox", get(alerting::outbox))
        .route("/v1/sys/alerting/log", get(alerting::log))
        .route(
            "/v1/sys/alerting/notify-test/{channel}",
            post(alerting::notify_test),
        )
        .route(
            "/v1/sys/alerting/maintenance",
            get(alerting::windows).post(alerting::start_window),
        )
        .route(
            "/v1/sys/alerting/maintenance/{id}",
            delete(alerting::end_window),
        )
        .route("/v1/sys/template/render", post(sys::template_render))
        .route("/v1/sys/export/{env}", get(sys::export))
        .route(
            "/v1/auth/token/create",
            post(token::create).put(token::create),
        )
        .route("/v1/auth/token/lookup-self", get(token::lookup_self))
        .route(
            "/v1/auth/token/lookup-accessor",
            post(token::lookup_accessor),
        )
        .route(
            "/v1/auth/token/renew-self",
            post(token::renew_self).put(token::renew_self),
        )
        .route(
            "/v1/auth/token/revoke-self",
            post(token::revoke_self).put(token::revoke_self),
        )
        .route(
            "/v1/auth/token/revoke-accessor",
            post(token::revoke_accessor).put(token::revoke_accessor),
        )
        .route("/v1/auth/token/accessors", any(token::accessors))
        .route("/v1/{mount}/{op}", any(kv::dispatch_root))
        .route("/v1/{mount}/{op}/", any(kv::dispatch_root))
        .route("/v1/{mount}/{op}/{*path}", any(kv::dispatch))
        .merge(ui::router())
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), frame))
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    let (code, msg) = error::code_for_status(StatusCode::NOT_FOUND);
    ApiError::new(StatusCode::NOT_FOUND, code, msg)
}

/// Accepts a caller's X-Request-Id if it is short and plain; otherwise makes one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The token from `Authorization: Bearer` or `X-Vault-Token`.
fn token(req: &Request) -> Option<String> {
    let h = req.headers();
    h.get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            h.get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string())
        })
}

/// The per-request middleware; see the module docs.
async fn frame(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let rid = request_id(&req);
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    // Dashboard pages authenticate with the session cookie only; the API with its headers.
    let is_ui = path.starts_with("/ui/");
    let session = if is_ui {
        ui::session_cookie(req.headers()).and_then(|id| st.ui.get(st.engine.clock().now(), &id))
    } else {
        None
    };
    let tok = if is_ui {
        session.as_ref().map(|s| s.token.clone())
    } else {
        token(&req)
    };
    let ctx = Arc::new(RequestCtx::new(rid.clone(), tok, remote));
    req.extensions_mut().insert(ctx.clone());
    if let Some(s) = session {
        req.extensions_mut().insert(s);
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let span = tracing::info_span!("request", request_id = %rid, method = %method, route = %route);
    let mut resp = next.run(req).instrument(span.clone()).await;

    let info = resp.extensions().get::<error::ErrorInfo>().cloned();
    let status = resp.status();
    let audited_route = (path.starts_with("/v1/") && !UNAUDITED.contains(&path.as_str()))
        || (is_ui
            && !path.starts_with("/ui/static/")
            && !(path == "/ui/sign-in" && method == "GET"));
    if audited_route && !ctx.is_audited() {
        let outcome = match (
            &info,
            status.is_success() || (is_ui && status.is_redirection()),
        ) {
            (Some(i), _) => i.code.clone(),
            (None, true) => "ok".to_string(),
            (None, false) => error::code_for_status(status).0.to_string(),
        };
        let action = format!("http.{} {}", method.to_lowercase(), route);
        if let Err(e) = st
            .engine
            .audit_refused(&ctx, &action, &outcome)
            .instrument(span.clone())
            .await
        {
            resp = ApiError::from(e).into_response();
        }
    }

    // Render every error into the one body shape.
    let status = resp.status();
    if let Some(info) = resp.extensions().get::<error::ErrorInfo>().cloned() {
        resp = error_body(status, &info.code, &info.message, &rid, info.detail);
    } else if (status.is_client_error() || status.is_server_error())
        && path.starts_with("/v1/")
        && !resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        let (code, msg) = error::code_for_status(status);
        resp = error_body(status, code, msg, &rid, None);
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }

    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    st.metrics
        .requests
        .get_or_create(&metrics::RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    st.metrics
        .latency
        .get_or_create(&metrics::RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    if info.as_ref().is_some_and(|i| i.code == "store_unavailable") {
        st.metrics.store_errors.inc();
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        )
    });
    resp
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
    errors: [&'a str; 1],
    /// Vault's `{"data": null, "metadata": ...}` for a deleted or destroyed version.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    rid: &str,
    metadata: Option<serde_json::Value>,
) -> Response {
    let body = ErrorBody {
        data: metadata.map(|m| serde_json::json!({ "data": null, "metadata": m })),
        error: ErrorFields {
            code,
            message,
            request_id: rid,
        },
        errors: [message],
    };
    (status, Json(body)).into_response()
}

/// Decodes a JSON body with our error shape on failure; an empty body is `{}`.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the request body is not valid JSON for this route: {}",
                describe_json_error(&e)
            ),
        )
    })
}

/// serde_json's message without the offending value: "invalid type: string \"hunter2\",
/// expected a map" would put a secret into an error message (and from there into client logs).
fn describe_json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        let expected = msg
            .split_once(", expected ")
            .map(|(_, rest)| rest.rsplit_once(" at line").map_or(rest, |(x, _)| x))
            .unwrap_or("another type");
        format!(
            "a value has the wrong type or form (expected {expected}) at line {} column {}",
            e.line(),
            e.column()
        )
    } else {
        msg
    }
}

/// The Vault response envelope around `data`.
pub(crate) fn vault_data(ctx: &RequestCtx, data: impl Serialize) -> Response {
    /// Serialized straight from the handler's data, without building a `Value` tree first.
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        request_id: &'a str,
        lease_id: &'static str,
        renewable: bool,
        lease_duration: u64,
        data: T,
        wrap_info: Option<()>,
        warnings: Option<()>,
        auth: Option<()>,
    }
    Json(Envelope {
        request_id: &ctx.request_id,
        lease_id: "",
        renewable: false,
        lease_duration: 0,
        data,
        wrap_info: None,
        warnings: None,
        auth: None,
    })
    .into_response()
}

/// Listing routes answer GET and Vault's LIST.
pub(crate) fn get_or_list(method: &axum::http::Method) -> Result<(), ApiError> {
    if method == axum::http::Method::GET || method.as_str() == "LIST" {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "use GET or LIST",
    ))
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Unused-body helper type for handlers that take raw bytes.
pub(crate) type RawBody = axum::body::Bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_do_not_echo_values() {
        let err = decode::<serde_json::Map<String, serde_json::Value>>(br#""hunter2-secret""#)
            .unwrap_err();
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        assert!(err.message.contains("expected a map"), "{}", err.message);
        let err = decode::<kv::WriteBody>(br#"{"data": "hunter2-secret"}"#).unwrap_err();
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        let err = decode::<kv::WriteBody>(br#"{"dat": {}}"#).unwrap_err();
        assert!(
            err.message.contains("unknown field `dat`"),
            "{}",
            err.message
        );
    }
}
