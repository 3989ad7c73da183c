//! Alerting routes. The Alertmanager API v2 subset that Prometheus and amtool use
//! (`/api/v2/alerts`, `/api/v2/alerts/groups`, `/api/v2/silences`, `/api/v2/silence/{id}`,
//! `/api/v2/status`, `/api/v2/receivers`), answering in its shapes so existing clients work,
//! and Steward's own `/v1/sys/alerting/*` (acknowledge, dead letters, the notification log,
//! test notifications, maintenance windows) in the usual `{"data": ...}` envelope.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use steward_alerting::{
    pipeline::AlertInfo,
    service::{MaintenanceRequest, PostableSilence},
    PostableAlert,
};
use steward_secrets::RequestCtx;

use crate::{decode, no_content, vault_data, ApiError, AppState, RawBody};

type Pairs = Query<Vec<(String, String)>>;

fn flag(q: &[(String, String)], key: &str, default: bool) -> Result<bool, ApiError> {
    match q.iter().rev().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => match v.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::bad_request(
                "invalid_query",
                format!("{key}={v:?} is not a boolean; use true or false"),
            )),
        },
    }
}

fn filters(q: &[(String, String)]) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == "filter")
        .map(|(_, v)| v.clone())
        .collect()
}

/// An alert in the Alertmanager API v2 "gettableAlert" shape.
fn gettable(a: &AlertInfo) -> Value {
    let suppressed = a.mute.is_muted();
    let mut silenced = a.mute.silenced_by.clone();
    silenced.extend(a.mute.maintenance.iter().cloned());
    json!({
        "labels": a.doc.labels,
        "annotations": a.doc.annotations,
        "startsAt": a.doc.starts_at,
        "endsAt": a.doc.ends_at.unwrap_or_else(|| a.doc.starts_at + chrono::Duration::days(3650)),
        "updatedAt": a.doc.updated_at,
        "generatorURL": a.doc.generator_url,
        "fingerprint": a.fingerprint,
        "receivers": a.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "status": {
            "state": if a.state == steward_alerting::model::AlertState::Pending {
                "unprocessed"
            } else if suppressed { "suppressed" } else { "active" },
            "silencedBy": silenced,
            "inhibitedBy": a.mute.inhibited_by,
        },
    })
}

fn keep(a: &AlertInfo, q: &[(String, String)]) -> Result<bool, ApiError> {
    use steward_alerting::model::AlertState;
    if a.state == AlertState::Resolved {
        return Ok(false);
    }
    let muted = a.mute.is_muted();
    let silenced = !a.mute.silenced_by.is_empty() || !a.mute.maintenance.is_empty();
    let inhibited = !a.mute.inhibited_by.is_empty();
    Ok((flag(q, "active", true)? || muted)
        && (flag(q, "silenced", true)? || !silenced)
        && (flag(q, "inhibited", true)? || !inhibited)
        && (flag(q, "unprocessed", true)? || a.state != AlertState::Pending))
}

/// `POST /api/v2/alerts`.
#[utoipa::path(post, path = "/api/v2/alerts", request_body = Object, responses((status = 200, description = "stored (Alertmanager API v2: a list of {labels, annotations, startsAt, endsAt, generatorURL})"), (status = 400, description = "invalid alerts")))]
pub async fn post_alerts(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let alerts: Vec<PostableAlert> = if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON list of alerts: [{\"labels\": {...}, \"annotations\": {...}}]",
        ));
    } else {
        decode(&body)?
    };
    st.alerting.ingest(&ctx, alerts).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /api/v2/alerts`.
#[utoipa::path(get, path = "/api/v2/alerts", params(("filter" = Option<Vec<String>>, Query), ("active" = Option<bool>, Query), ("silenced" = Option<bool>, Query), ("inhibited" = Option<bool>, Query), ("unprocessed" = Option<bool>, Query)), responses((status = 200, description = "gettable alerts (Alertmanager API v2)")))]
pub async fn get_alerts(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Pairs,
) -> Result<Response, ApiError> {
    let all = st.alerting.alerts(&ctx, &filters(&q)).await?;
    let mut out = Vec::new();
    for a in &all {
        if keep(a, &q)? {
            out.push(gettable(a));
        }
    }
    Ok(Json(out).into_response())
}

/// `GET /api/v2/alerts/groups`.
#[utoipa::path(get, path = "/api/v2/alerts/groups", params(("filter" = Option<Vec<String>>, Query)), responses((status = 200, description = "alert groups (Alertmanager API v2)")))]
pub async fn get_groups(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Pairs,
) -> Result<Response, ApiError> {
    let groups = st.alerting.groups(&ctx).await?;
    let m = steward_alerting::matchers::parse_list(&filters(&q))
        .map_err(|e| ApiError::bad_request("invalid_filter", e.to_string()))?;
    let mut out = Vec::new();
    for (g, alerts) in groups {
        let mut list = Vec::new();
        for a in &alerts {
            if keep(a, &q)? && steward_alerting::matchers::all_match(&m, &a.doc.labels) {
                list.push(gettable(a));
            }
        }
        if !list.is_empty() {
            out.push(json!({"labels": g.labels, "receiver": {"name": g.receiver}, "alerts": list}));
        }
    }
    Ok(Json(out).into_response())
}

fn gettable_silence(s: &steward_alerting::mutes::Silence, now: DateTime<Utc>) -> Value {
    json!({
        "id": s.id,
        "status": {"state": s.state(now)},
        "updatedAt": s.updated_at,
        "matchers": s.matchers,
        "startsAt": s.starts_at,
        "endsAt": s.ends_at,
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

/// `GET /api/v2/silences` (`filter=` matchers select silences whose matchers include them).
#[utoipa::path(get, path = "/api/v2/silences", params(("filter" = Option<Vec<String>>, Query)), responses((status = 200, description = "silences (Alertmanager API v2)")))]
pub async fn get_silences(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Pairs,
) -> Result<Response, ApiError> {
    let list = st.alerting.silences(&ctx).await?;
    let wanted = steward_alerting::matchers::parse_list(&filters(&q))
        .map_err(|e| ApiError::bad_request("invalid_filter", e.to_string()))?;
    let now = st.engine.clock().now();
    let out: Vec<Value> = list
        .iter()
        .filter(|s| {
            wanted.iter().all(|w| {
                s.matchers
                    .iter()
                    .any(|m| m.name == w.name && m.value == w.value)
            })
        })
        .map(|s| gettable_silence(s, now))
        .collect();
    Ok(Json(out).into_response())
}

/// `POST /api/v2/silences` → `{"silenceID": ...}`.
#[utoipa::path(post, path = "/api/v2/silences", request_body = Object, responses((status = 200, description = "{silenceID}"), (status = 400, description = "invalid silence")))]
pub async fn post_silence(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let s: PostableSilence = decode(&body)?;
    let id = st.alerting.put_silence(&ctx, s).await?;
    Ok(Json(json!({"silenceID": id})).into_response())
}

/// `GET /api/v2/silence/{id}`.
#[utoipa::path(get, path = "/api/v2/silence/{id}", params(("id" = String, Path)), responses((status = 200, description = "one silence"), (status = 404, description = "unknown id")))]
pub async fn get_silence(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = st.alerting.silence(&ctx, &id).await?;
    Ok(Json(gettable_silence(&s, st.engine.clock().now())).into_response())
}

/// `DELETE /api/v2/silence/{id}`: expires it.
#[utoipa::path(delete, path = "/api/v2/silence/{id}", params(("id" = String, Path)), responses((status = 200, description = "expired")))]
pub async fn delete_silence(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.alerting.expire_silence(&ctx, &id).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /api/v2/status`: what amtool asks for; clustering is not Steward's way to replicate.
#[utoipa::path(get, path = "/api/v2/status", responses((status = 200, description = "Alertmanager API v2 status (clustering disabled)")))]
pub async fn status(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    st.alerting.receivers(&ctx).await?;
    Ok(Json(json!({
        "cluster": {"name": "", "status": "disabled", "peers": []},
        "config": {"original": ""},
        "uptime": st.engine.clock().now(),
        "versionInfo": {
            "version": st.settings.version, "revision": "", "branch": "", "buildUser": "steward",
            "buildDate": "", "goVersion": "none (Steward is written in Rust)"
        }
    }))
    .into_response())
}

/// `GET /api/v2/receivers`.
#[utoipa::path(get, path = "/api/v2/receivers", responses((status = 200, description = "receiver names")))]
pub async fn receivers(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let r: Vec<Value> = st
        .alerting
        .receivers(&ctx)
        .await?
        .into_iter()
        .map(|n| json!({ "name": n }))
        .collect();
    Ok(Json(r).into_response())
}

// ---- Steward's own routes ----------------------------------------------------------------

/// `GET /v1/sys/alerting/alerts?filter=...`.
#[utoipa::path(get, path = "/v1/sys/alerting/alerts", params(("filter" = Option<Vec<String>>, Query)), responses((status = 200, description = "data.alerts")))]
pub async fn list(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Pairs,
) -> Result<Response, ApiError> {
    let all = st.alerting.alerts(&ctx, &filters(&q)).await?;
    Ok(vault_data(&ctx, json!({ "alerts": all })))
}

/// `GET /v1/sys/alerting/alerts/{fp}`.
#[utoipa::path(get, path = "/v1/sys/alerting/alerts/{fp}", params(("fp" = String, Path)), responses((status = 200, description = "one alert"), (status = 404, description = "unknown fingerprint")))]
pub async fn show(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(fp): Path<String>,
) -> Result<Response, ApiError> {
    Ok(vault_data(&ctx, st.alerting.alert(&ctx, &fp).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    comment: String,
}

/// `POST /v1/sys/alerting/alerts/{fp}/ack`.
#[utoipa::path(post, path = "/v1/sys/alerting/alerts/{fp}/ack", params(("fp" = String, Path)), request_body = Object, responses((status = 200, description = "data.acknowledged_groups")))]
pub async fn ack(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(fp): Path<String>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: AckBody = decode(&body)?;
    let groups = st.alerting.ack(&ctx, &fp, &b.comment).await?;
    Ok(vault_data(&ctx, json!({ "acknowledged_groups": groups })))
}

/// `GET /v1/sys/alerting/groups`.
#[utoipa::path(get, path = "/v1/sys/alerting/groups", responses((status = 200, description = "data.groups")))]
pub async fn groups(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let g = st.alerting.groups(&ctx).await?;
    let out: Vec<Value> = g
        .into_iter()
        .map(|(g, alerts)| {
            let fps: Vec<&String> = alerts.iter().map(|a| &a.fingerprint).collect();
            json!({"group": g, "dedup_key": g.dedup_key(), "alerts": fps})
        })
        .collect();
    Ok(vault_data(&ctx, json!({ "groups": out })))
}

/// `GET /v1/sys/alerting/dead-letters`.
#[utoipa::path(get, path = "/v1/sys/alerting/dead-letters", responses((status = 200, description = "data.dead_letters")))]
pub async fn dead_letters(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let d = st.alerting.dead_letters(&ctx).await?;
    Ok(vault_data(&ctx, json!({ "dead_letters": d })))
}

/// `GET /v1/sys/alerting/outbox`.
#[utoipa::path(get, path = "/v1/sys/alerting/outbox", responses((status = 200, description = "data.pending")))]
pub async fn outbox(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let d = st.alerting.pending(&ctx).await?;
    Ok(vault_data(&ctx, json!({ "pending": d })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    ids: Option<Vec<String>>,
}

/// `POST /v1/sys/alerting/dead-letters/replay`.
#[utoipa::path(post, path = "/v1/sys/alerting/dead-letters/replay", request_body = Object, responses((status = 200, description = "data.replayed")))]
pub async fn replay(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: ReplayBody = decode(&body)?;
    let n = st.alerting.replay(&ctx, b.ids).await?;
    Ok(vault_data(&ctx, json!({ "replayed": n })))
}

/// `GET /v1/sys/alerting/log?limit=N`.
#[utoipa::path(get, path = "/v1/sys/alerting/log", params(("limit" = Option<u32>, Query)), responses((status = 200, description = "data.entries, newest first")))]
pub async fn log(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("limit={v:?} is not a whole number"),
            )
        })?,
    };
    let entries = st.alerting.log(&ctx, limit).await?;
    Ok(vault_data(&ctx, json!({ "entries": entries })))
}

/// `POST /v1/sys/alerting/notify-test/{channel}`.
#[utoipa::path(post, path = "/v1/sys/alerting/notify-test/{channel}", params(("channel" = String, Path)), responses((status = 200, description = "sent"), (status = 503, description = "the channel refused")))]
pub async fn notify_test(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    Ok(vault_data(
        &ctx,
        st.alerting.notify_test(&ctx, &channel).await?,
    ))
}

/// `GET /v1/sys/alerting/maintenance`.
#[utoipa::path(get, path = "/v1/sys/alerting/maintenance", responses((status = 200, description = "data.windows")))]
pub async fn windows(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let w = st.alerting.windows(&ctx).await?;
    Ok(vault_data(&ctx, json!({ "windows": w })))
}

/// `POST /v1/sys/alerting/maintenance`.
#[utoipa::path(post, path = "/v1/sys/alerting/maintenance", request_body = Object, responses((status = 200, description = "the window (data.id)")))]
pub async fn start_window(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let req: MaintenanceRequest = decode(&body)?;
    let w = st.alerting.start_window(&ctx, req).await?;
    Ok(vault_data(&ctx, w))
}

/// `DELETE /v1/sys/alerting/maintenance/{id}`.
#[utoipa::path(delete, path = "/v1/sys/alerting/maintenance/{id}", params(("id" = String, Path)), responses((status = 204, description = "closed")))]
pub async fn end_window(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.alerting.end_window(&ctx, &id).await?;
    Ok(no_content())
}
