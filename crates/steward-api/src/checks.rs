//! Health-check routes: list the checks with their state, show one with its latest runs and
//! roll-ups, run one now, and receive heartbeats from cron jobs and workers.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    response::Response,
    Extension,
};
use serde::Deserialize;
use serde_json::json;
use steward_secrets::RequestCtx;

use crate::{decode, vault_data, ApiError, AppState, RawBody};

/// `GET /v1/checks`.
#[utoipa::path(get, path = "/v1/checks", responses((status = 200, description = "data.checks: every check with its state and last run")))]
pub async fn list(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let checks = st.checks.list(&ctx).await?;
    Ok(vault_data(&ctx, json!({ "checks": checks })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// `minute`, `hour` (default) or `day`.
    #[serde(default = "hour")]
    res: String,
    /// How many buckets back from now (default 48).
    #[serde(default = "forty_eight")]
    buckets: u32,
}

fn hour() -> String {
    "hour".into()
}

fn forty_eight() -> u32 {
    48
}

/// `GET /v1/checks/{name}?res=hour&buckets=48`.
#[utoipa::path(get, path = "/v1/checks/{name}", params(("name" = String, Path), ("res" = Option<String>, Query), ("buckets" = Option<u32>, Query)), responses((status = 200, description = "data.check, data.latest (newest first), data.rollups (oldest first)"), (status = 404, description = "no such check")))]
pub async fn show(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(name): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, ApiError> {
    let (check, latest, rollups) = st.checks.show(&ctx, &name, &q.res, q.buckets).await?;
    let latest: Vec<_> = latest
        .into_iter()
        .map(|r| json!({"at": r.at, "ok": r.ok, "duration_ms": r.duration_us as f64 / 1000.0, "error": r.error}))
        .collect();
    Ok(vault_data(
        &ctx,
        json!({ "check": check, "latest": latest, "rollups": rollups }),
    ))
}

/// `POST /v1/checks/{name}/run`: runs the check now.
#[utoipa::path(post, path = "/v1/checks/{name}/run", params(("name" = String, Path)), responses((status = 200, description = "data.run: the run's outcome")))]
pub async fn run(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let run = st.checks.run_now(&ctx, &name).await?;
    Ok(vault_data(&ctx, json!({ "run": run })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BeatBody {
    /// `false` reports a failed job at once.
    #[serde(default = "yes")]
    ok: bool,
    #[serde(default)]
    message: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/checks/{name}/beat`: a heartbeat (body optional: `{"ok": false, "message": ...}`).
#[utoipa::path(post, path = "/v1/checks/{name}/beat", params(("name" = String, Path)), request_body = Object, responses((status = 204, description = "beat recorded")))]
pub async fn beat(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Path(name): Path<String>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: BeatBody = if body.is_empty() {
        BeatBody {
            ok: true,
            message: None,
        }
    } else {
        decode(&body)?
    };
    st.checks.beat(&ctx, &name, b.ok, b.message).await?;
    Ok(crate::no_content())
}

/// `GET /v1/slos`: every SLO with attainment, error budget left and burn rates.
#[utoipa::path(get, path = "/v1/slos", responses((status = 200, description = "data.slos")))]
pub async fn slos(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let slos = st.checks.slos(&ctx).await?;
    Ok(vault_data(&ctx, json!({ "slos": slos })))
}
