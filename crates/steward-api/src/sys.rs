//! System routes: health and readiness probes, metrics, seal and unseal, key rotation, audit
//! export/verify/hash, policies, environments, template rendering and bulk export.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    http::{header, Method, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;
use serde_json::json;
use steward_secrets::RequestCtx;

use crate::{decode, no_content, vault_data, ApiError, AppState, RawBody};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/livez", responses((status = 200, description = "alive")))]
pub async fn livez() -> &'static str {
    "ok\n"
}

/// Readiness: unsealed and the store answers a read.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "sealed or store down")))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    if st.engine.is_sealed() {
        return (StatusCode::SERVICE_UNAVAILABLE, "sealed\n").into_response();
    }
    match st.engine.check_store().await {
        Ok(true) => (StatusCode::OK, "ready\n").into_response(),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "not initialized\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response(),
    }
}

/// Sets the health-check gauges from the monitor's current state.
fn check_metrics(st: &AppState) {
    use crate::metrics::{CheckLabels, PhaseLabels};
    let m = &st.metrics;
    let s = st.checks.stats();
    crate::metrics::set_state(&m.checks, "up", s.up);
    crate::metrics::set_state(&m.checks, "down", s.down);
    crate::metrics::set_state(&m.checks, "unknown", s.unknown);
    m.check_runs.set(s.runs as i64);
    m.check_missed.set(s.missed as i64);
    if let (Some(p50), Some(p99)) = (s.lag_p50_ms, s.lag_p99_ms) {
        m.check_lag_p50.set(p50 / 1000.0);
        m.check_lag_p99.set(p99 / 1000.0);
    }
    for (c, health, last) in st.checks.latest() {
        let labels = CheckLabels {
            check: c.name.clone(),
            check_type: c.kind.clone(),
        };
        match health {
            steward_checks::state::Health::Up => m.check_up.get_or_create(&labels).set(1),
            steward_checks::state::Health::Down => m.check_up.get_or_create(&labels).set(0),
            steward_checks::state::Health::Unknown => continue,
        };
        let Some(last) = last else { continue };
        m.check_duration
            .get_or_create(&labels)
            .set(last.duration.as_secs_f64());
        for (phase, d) in &last.phases {
            m.check_phase
                .get_or_create(&PhaseLabels {
                    check: c.name.clone(),
                    phase: phase.to_string(),
                })
                .set(d.as_secs_f64());
        }
        if let Some(secs) = last.cert_expires_in_s() {
            m.check_cert_expiry.get_or_create(&labels).set(secs);
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    // Gauges of state are read when scraped, not maintained on every request.
    st.metrics.sealed.set(i64::from(st.engine.is_sealed()));
    if let Ok(c) = st.rotations.counts().await {
        for (state, n) in [
            ("idle", c.idle),
            ("rotating", c.rotating),
            ("retiring", c.retiring),
        ] {
            crate::metrics::set_state(&st.metrics.rotations, state, n);
        }
        st.metrics.rotations_done.set(c.completed as i64);
        st.metrics.rotations_failed.set(c.failed as i64);
    }
    if let Ok(a) = st.alerting.stats().await {
        let set = crate::metrics::set_state;
        set(&st.metrics.alerts, "firing", a.firing);
        set(&st.metrics.alerts, "pending", a.pending);
        set(&st.metrics.alerts, "suppressed", a.suppressed);
        st.metrics.alert_groups.set(a.groups as i64);
        set(&st.metrics.notifications, "sent", a.sent);
        set(&st.metrics.notifications, "retry", a.retried);
        set(&st.metrics.notifications, "dead", a.dead);
        set(&st.metrics.outbox, "pending", a.queued);
        set(&st.metrics.outbox, "dead", a.dead_letters);
    }
    check_metrics(&st);
    // OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format
    // for everyone else.
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            st.metrics.render_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            st.metrics.render(),
        )
            .into_response()
    }
}

/// Vault-compatible health: 200 unsealed, 503 sealed, 501 not initialized (overridable with
/// `sealedcode=` / `uninitcode=` as in Vault).
#[utoipa::path(get, path = "/v1/sys/health", responses((status = 200, description = "initialized and unsealed"), (status = 503, description = "sealed"), (status = 501, description = "not initialized")))]
pub async fn health(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // One store read per call, so a replica whose database went away stops answering 200.
    let initialized = st.engine.check_store().await;
    let sealed = st.engine.is_sealed();
    let code = |key: &str, default: u16| {
        q.get(key)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::from_u16(default).expect("valid default"))
    };
    let store_ok = initialized.is_ok();
    let (status, init) = match initialized {
        // The store cannot be read: say so, and keep what we knew about initialization.
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            st.engine.initialized_hint(),
        ),
        Ok(false) => (code("uninitcode", 501), false),
        Ok(true) if sealed => (code("sealedcode", 503), true),
        Ok(true) => (code("activecode", 200), true),
    };
    let body = json!({
        "initialized": init,
        "sealed": sealed,
        "standby": false,
        "performance_standby": false,
        "server_time_utc": chrono::Utc::now().timestamp(),
        "version": st.settings.version,
        "cluster_name": "steward",
        "storage_type": st.engine.store().kind(),
        "storage_ok": store_ok,
    });
    (status, Json(body)).into_response()
}

/// Whether the store is initialized (Vault's `sys/init` read).
#[utoipa::path(get, path = "/v1/sys/init", responses((status = 200, description = "{initialized}")))]
pub async fn init_status(State(st): State<AppState>) -> Result<Response, ApiError> {
    let initialized = st.engine.is_initialized().await?;
    Ok(Json(json!({ "initialized": initialized })).into_response())
}

/// Seal state and unseal progress.
#[utoipa::path(get, path = "/v1/sys/seal-status", responses((status = 200, description = "seal status")))]
pub async fn seal_status(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(st.engine.seal_status().await?).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsealBody {
    /// One Shamir share.
    pub key: Option<String>,
    /// Forget the shares given so far.
    #[serde(default)]
    pub reset: bool,
}

/// Gives one Shamir share.
#[utoipa::path(put, path = "/v1/sys/unseal", request_body = UnsealBody, responses((status = 200, description = "seal status after this share"), (status = 400, description = "bad share")))]
pub async fn unseal(State(st): State<AppState>, body: RawBody) -> Result<Response, ApiError> {
    let b: UnsealBody = decode(&body)?;
    if b.reset {
        st.engine.reset_unseal_progress();
        return Ok(Json(st.engine.seal_status().await?).into_response());
    }
    let key = b
        .key
        .ok_or_else(|| ApiError::bad_request("missing_key", "send {\"key\": \"<share>\"}"))?;
    Ok(Json(st.engine.submit_share(key.trim()).await?).into_response())
}

/// Seals the server (admin on sys/keys).
#[utoipa::path(put, path = "/v1/sys/seal", responses((status = 204, description = "sealed")))]
pub async fn seal(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    st.engine.seal(&ctx).await?;
    Ok(no_content())
}

/// Configured environments.
#[utoipa::path(get, path = "/v1/sys/environments", responses((status = 200, description = "environment names and the default mount")))]
pub async fn environments(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    // Any valid token may see the environment names.
    st.engine.lookup_self(&ctx).await?;
    let cfg = st.engine.config();
    Ok(vault_data(
        &ctx,
        json!({
            "environments": cfg.environments,
            "default_environment": cfg.default_environment,
        }),
    ))
}

/// Rotates the keyring: a new active encryption key, every data key re-wrapped in the background (the root key that unseals the store is unchanged).
#[utoipa::path(post, path = "/v1/sys/keys/rotate", responses((status = 200, description = "new active key id")))]
pub async fn keys_rotate(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let id = st.engine.rotate_keys(&ctx).await?;
    Ok(vault_data(
        &ctx,
        json!({ "active_key_id": id, "rewrap": "started" }),
    ))
}

/// Key status: active id, ids in the ring, envelopes still to re-wrap.
#[utoipa::path(get, path = "/v1/sys/keys/status", responses((status = 200, description = "key status")))]
pub async fn keys_status(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let (active, ids, pending) = st.engine.key_status(&ctx).await?;
    Ok(vault_data(
        &ctx,
        json!({ "active_key_id": active, "key_ids": ids, "pending_rewrap": pending }),
    ))
}

/// Exports audit entries as JSON lines (`after` = last seq seen, `limit` per page).
#[utoipa::path(get, path = "/v1/sys/audit/export", params(("after" = Option<u64>, Query), ("limit" = Option<u32>, Query)), responses((status = 200, description = "application/x-ndjson; header X-Steward-Next-After when more remain")))]
pub async fn audit_export(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let num = |k: &str, d: u64| -> Result<u64, ApiError> {
        q.get(k).map_or(Ok(d), |v| {
            v.parse().map_err(|_| {
                ApiError::bad_request("invalid_query", format!("{k}={v:?} is not a whole number"))
            })
        })
    };
    let after = num("after", 0)?;
    let limit = num("limit", 1000)?.min(10_000) as u32;
    let page = st.engine.audit_export(&ctx, after, limit).await?;
    let mut body = page.lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    let mut resp = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if let Some(next) = page.next {
        resp.headers_mut().insert(
            "x-steward-next-after",
            next.to_string().parse().expect("digits are a valid header"),
        );
    }
    Ok(resp)
}

/// Verifies the audit hash chain.
#[utoipa::path(post, path = "/v1/sys/audit/verify", responses((status = 200, description = "ok, entries, first_bad")))]
pub async fn audit_verify(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let r = st.engine.audit_verify(&ctx).await?;
    Ok(vault_data(&ctx, r))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HashBody {
    pub input: String,
}

/// HMAC of a known value under the audit key, to search the log for it.
#[utoipa::path(post, path = "/v1/sys/audit-hash", request_body = HashBody, responses((status = 200, description = "{data: {hash}}")))]
pub async fn audit_hash(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: HashBody = decode(&body)?;
    let hash = st.engine.audit_hash(&ctx, &b.input).await?;
    Ok(vault_data(&ctx, json!({ "hash": hash })))
}

/// Lists policies (GET or LIST).
#[utoipa::path(get, path = "/v1/sys/policies", responses((status = 200, description = "policy names and documents")))]
pub async fn policies_list(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    method: Method,
) -> Result<Response, ApiError> {
    crate::get_or_list(&method)?;
    let list = st.engine.list_policies(&ctx).await?;
    let keys: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    Ok(vault_data(&ctx, json!({ "keys": keys, "policies": list })))
}

/// Reads (GET), writes (PUT/POST, body = the policy document) or deletes (DELETE) a policy.
#[utoipa::path(put, path = "/v1/sys/policies/{name}", params(("name" = String, Path)), request_body = Object, responses((status = 204, description = "saved"), (status = 400, description = "invalid policy")))]
pub async fn policy(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    method: Method,
    Path(name): Path<String>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let e = &st.engine;
    match method.as_str() {
        "GET" => Ok(vault_data(&ctx, e.get_policy(&ctx, &name).await?)),
        "PUT" | "POST" => {
            let doc = std::str::from_utf8(&body).map_err(|_| {
                ApiError::bad_request("invalid_json", "the policy must be UTF-8 JSON")
            })?;
            e.put_policy(&ctx, &name, doc).await?;
            Ok(no_content())
        }
        "DELETE" => {
            e.delete_policy(&ctx, &name).await?;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET, PUT, POST or DELETE",
        )),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    pub template: String,
}

/// Renders `${secret:ENV/PATH}` references in a template.
#[utoipa::path(post, path = "/v1/sys/template/render", request_body = TemplateBody, responses((status = 200, description = "{data: {rendered}}")))]
pub async fn template_render(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: TemplateBody = decode(&body)?;
    let rendered = st.engine.render_template(&ctx, &b.template).await?;
    Ok(vault_data(&ctx, json!({ "rendered": rendered })))
}

/// Every readable secret under `prefix` in `env`, latest values, references resolved.
#[utoipa::path(get, path = "/v1/sys/export/{env}", params(("env" = String, Path), ("prefix" = Option<String>, Query)), responses((status = 200, description = "{data: {secrets, skipped}}")))]
pub async fn export(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
    let (secrets, skipped) = st.engine.export(&ctx, &env, prefix).await?;
    Ok(vault_data(
        &ctx,
        json!({ "secrets": secrets, "skipped": skipped }),
    ))
}
