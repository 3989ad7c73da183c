//! Rotation, events and expiry routes:
//! `/v1/sys/rotation/config|rotate|rollback|status/ENV/PATH`, `/v1/sys/rotation/status`,
//! `/v1/sys/events` (a long poll with a cursor), `/v1/sys/events/stream` (server-sent events)
//! and `/v1/sys/expiring`.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Extension,
};
use futures_util::StreamExt;
use serde_json::json;
use steward_rotation::RotationConfig;
use steward_secrets::RequestCtx;

use crate::{decode, no_content, vault_data, ApiError, AppState, RawBody};

type Q = Query<HashMap<String, String>>;

/// Parses `wait=` (a duration such as `30s`), capped below the request timeout.
pub(crate) fn wait_of(st: &AppState, q: &HashMap<String, String>) -> Result<Duration, ApiError> {
    let Some(w) = q.get("wait") else {
        return Ok(Duration::ZERO);
    };
    let d = humantime::parse_duration(w).map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("wait={w:?} is not a duration ({e}); use e.g. wait=30s"),
        )
    })?;
    let cap = st
        .settings
        .request_timeout
        .saturating_sub(Duration::from_secs(1));
    Ok(d.min(cap))
}

fn query_num(q: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, ApiError> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("{key}={v:?} is not a whole number"),
            )
        }),
    }
}

/// `/v1/sys/rotation/{op}/{env}/{*path}`.
pub async fn dispatch(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    method: Method,
    Path((op, env, path)): Path<(String, String, String)>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let r = &st.rotations;
    let path = path.trim_end_matches('/');
    match (op.as_str(), method.as_str()) {
        ("config", "PUT" | "POST") => {
            let cfg: RotationConfig = decode(&body)?;
            let s = r.configure(&ctx, &env, path, cfg).await?;
            Ok(vault_data(&ctx, s))
        }
        ("config" | "status", "GET") => Ok(vault_data(&ctx, r.status(&ctx, &env, path).await?)),
        ("config", "DELETE") => {
            r.remove(&ctx, &env, path).await?;
            Ok(no_content())
        }
        ("rotate", "POST" | "PUT") => {
            let s = r.rotate_now(&ctx, &env, path).await?;
            Ok((StatusCode::ACCEPTED, vault_data(&ctx, s)).into_response())
        }
        ("rollback", "POST" | "PUT") => {
            let s = r.rollback(&ctx, &env, path).await?;
            Ok((StatusCode::ACCEPTED, vault_data(&ctx, s)).into_response())
        }
        ("config" | "status" | "rotate" | "rollback", m) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not supported on /v1/sys/rotation/{op}/; see /v1/openapi.json"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!("unknown rotation operation {op:?}; use config, status, rotate or rollback"),
        )),
    }
}

/// `GET /v1/sys/rotation/status`: every rotation the caller may read.
pub async fn list(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let all = st.rotations.list(&ctx).await?;
    Ok(vault_data(&ctx, json!({ "rotations": all })))
}

/// `GET /v1/sys/events?after=N&limit=M&wait=30s`: events after the cursor `after`; waits up
/// to `wait` when there are none yet. Pass the answer's `next` as the following `after`.
pub async fn events(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    // `after=latest` starts from the newest event (a watcher that needs no history).
    let after = if q.get("after").is_some_and(|a| a == "latest") {
        u64::MAX
    } else {
        query_num(&q, "after", 0)?
    };
    let limit = query_num(&q, "limit", 100)?.min(1000) as u32;
    let wait = wait_of(&st, &q)?;
    let page = st.rotations.events(&ctx, after, limit, wait).await?;
    Ok(vault_data(&ctx, page))
}

/// `GET /v1/sys/events/stream?after=N`: the same events as server-sent events (`id` is the
/// cursor, so `Last-Event-ID` resumes), for as long as the request timeout allows.
pub async fn stream(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let after = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        Some(id) => id,
        None if q.get("after").is_some_and(|a| a == "latest") => u64::MAX,
        None => query_num(&q, "after", 0)?,
    };
    let wait = st
        .settings
        .request_timeout
        .saturating_sub(Duration::from_secs(1));
    // The first page answers the audit and authorization question before the stream opens.
    let first = st
        .rotations
        .events(&ctx, after, 100, Duration::ZERO)
        .await?;
    let deadline = tokio::time::Instant::now() + wait;
    let rot = st.rotations.clone();
    // Each later wait is its own audited read under the same request context (and token).
    let start = (Some(first.events), first.next);
    let pages = futures_util::stream::unfold(start, move |(ready, cursor)| {
        let (rot, ctx) = (rot.clone(), ctx.clone());
        async move {
            // Events in hand go out first; only then does the stream wait for more.
            if let Some(events) = ready {
                return Some((events, (None, cursor)));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let page = rot
                .events(&ctx, cursor, 100, left.min(Duration::from_secs(25)))
                .await
                .ok()?;
            Some((page.events, (None, page.next)))
        }
    });
    let events = pages.flat_map(|evs| {
        futures_util::stream::iter(evs.into_iter().map(|ev| {
            let data = serde_json::to_string(&ev).unwrap_or_default();
            Ok::<_, Infallible>(
                Event::default()
                    .id(ev.seq.to_string())
                    .event(ev.kind.clone())
                    .data(data),
            )
        }))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /v1/sys/expiring?within=30d`: secrets that expire within the window (or have).
pub async fn expiring(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let within = match q.get("within") {
        None => Duration::from_secs(30 * 86_400),
        Some(w) => humantime::parse_duration(w).map_err(|e| {
            ApiError::bad_request(
                "invalid_query",
                format!("within={w:?} is not a duration ({e}); use e.g. within=30d"),
            )
        })?,
    };
    let list = st.rotations.expiring(&ctx, within).await?;
    Ok(vault_data(&ctx, json!({ "secrets": list })))
}
