//! Backup and DR routes: the sources and their runs, run a backup, drill, check, prune,
//! copy or restore now (each waits for the run and returns it; a failed run is a 200 with
//! `ok: false` and its error, so the caller sees what happened), list a source's snapshots,
//! and the DR report. Access: `read`/`write` on `sys/backup`.

use std::{path::PathBuf, sync::Arc};

use axum::{
    extract::{Query, State},
    response::Response,
    Extension,
};
use serde::Deserialize;
use serde_json::json;
use steward_dr::{Job, Op, Outcome, RestoreRequest};
use steward_secrets::{RequestCtx, SecretsError};

use crate::{decode, vault_data, ApiError, AppState, RawBody};

/// Runs `job`, waiting for it up to just under the request timeout: 200 with `data.run`
/// when it ended, 202 with `data.running` (target, op, since) when it still runs.
async fn run_job(st: &AppState, ctx: &Arc<RequestCtx>, job: Job) -> Result<Response, ApiError> {
    let wait = st
        .settings
        .request_timeout
        .saturating_sub(std::time::Duration::from_secs(2))
        .max(std::time::Duration::from_millis(500));
    match st.backups.api_run(ctx, job, wait).await? {
        Outcome::Done(run) => Ok(vault_data(ctx, json!({ "run": run }))),
        running @ Outcome::Running { .. } => {
            let mut resp = vault_data(ctx, json!({ "running": running }));
            *resp.status_mut() = axum::http::StatusCode::ACCEPTED;
            Ok(resp)
        }
    }
}

/// `GET /v1/sys/backup/sources`.
#[utoipa::path(get, path = "/v1/sys/backup/sources", responses((status = 200, description = "data.sources: every source with its schedule, next runs and last backup")))]
pub async fn sources(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let list = st.backups.api_sources(&ctx).await?;
    Ok(vault_data(&ctx, json!({ "sources": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// A source or repository name.
    #[serde(default)]
    target: Option<String>,
    /// `backup`, `drill`, `check`, `prune`, `copy` or `restore`.
    #[serde(default)]
    op: Option<String>,
    #[serde(default = "hundred")]
    limit: usize,
}

fn hundred() -> usize {
    100
}

/// `GET /v1/sys/backup/runs?target=&op=&limit=`: newest first.
#[utoipa::path(get, path = "/v1/sys/backup/runs", params(("target" = Option<String>, Query), ("op" = Option<String>, Query), ("limit" = Option<usize>, Query)), responses((status = 200, description = "data.runs, newest first")))]
pub async fn runs(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Query<RunsQuery>,
) -> Result<Response, ApiError> {
    let op = match q.op.as_deref() {
        None => None,
        Some(s) => Some(Op::parse(s).ok_or_else(|| {
            SecretsError::invalid(
                "invalid_op",
                format!("op {s:?} is not one of backup, drill, check, prune, copy, restore"),
            )
        })?),
    };
    let list = st
        .backups
        .api_runs(&ctx, q.target.as_deref(), op, q.limit)
        .await?;
    Ok(vault_data(&ctx, json!({ "runs": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    source: String,
    #[serde(default)]
    snapshot: Option<String>,
    /// Drills of `mode = "base"` sources: the recovery target (RFC 3339).
    #[serde(default)]
    to_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST /v1/sys/backup/run` `{"source": NAME}`: backs the source up now.
#[utoipa::path(post, path = "/v1/sys/backup/run", request_body = Object, responses((status = 200, description = "data.run"), (status = 404, description = "no such source"), (status = 409, description = "a backup of the source is running")))]
pub async fn run(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: SourceBody = decode(&body)?;
    run_job(&st, &ctx, Job::Backup { source: b.source }).await
}

/// `POST /v1/sys/drill/run` `{"source": NAME, "snapshot": ID?, "to_time": RFC3339?}`
/// (`to_time`: the recovery target of a `mode = "base"` source's drill).
#[utoipa::path(post, path = "/v1/sys/drill/run", request_body = Object, responses((status = 200, description = "data.run, with the drill's checks and the measured restore time")))]
pub async fn drill(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: SourceBody = decode(&body)?;
    let job = Job::Drill {
        source: b.source,
        snapshot: b.snapshot,
        to_time: b.to_time,
    };
    run_job(&st, &ctx, job).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoBody {
    repository: String,
    /// check: `all` or `N/M` (default: the day's share).
    #[serde(default)]
    read_data: Option<String>,
    /// prune: decide and report only.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/sys/backup/check` `{"repository": NAME, "read_data": "all"|"N/M"?}`.
#[utoipa::path(post, path = "/v1/sys/backup/check", request_body = Object, responses((status = 200, description = "data.run")))]
pub async fn check(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: RepoBody = decode(&body)?;
    let job = Job::Check {
        repository: b.repository,
        read_data: b.read_data,
    };
    run_job(&st, &ctx, job).await
}

/// `POST /v1/sys/backup/prune` `{"repository": NAME, "dry_run": false}`.
#[utoipa::path(post, path = "/v1/sys/backup/prune", request_body = Object, responses((status = 200, description = "data.run")))]
pub async fn prune(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: RepoBody = decode(&body)?;
    let job = Job::Prune {
        repository: b.repository,
        dry_run: b.dry_run,
    };
    run_job(&st, &ctx, job).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyBody {
    source: String,
    to: String,
    #[serde(default)]
    snapshot: Option<String>,
}

/// `POST /v1/sys/backup/copy` `{"source": NAME, "to": REPOSITORY, "snapshot": ID?}`.
#[utoipa::path(post, path = "/v1/sys/backup/copy", request_body = Object, responses((status = 200, description = "data.run")))]
pub async fn copy(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: CopyBody = decode(&body)?;
    let job = Job::Copy {
        source: b.source,
        to: b.to,
        snapshot: b.snapshot,
    };
    run_job(&st, &ctx, job).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    source: String,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    target_dir: Option<PathBuf>,
    #[serde(default)]
    database: Option<String>,
}

/// `POST /v1/sys/backup/restore` `{"source", "snapshot"?, "target_dir" | "database"}`.
#[utoipa::path(post, path = "/v1/sys/backup/restore", request_body = Object, responses((status = 200, description = "data.run")))]
pub async fn restore(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: RestoreBody = decode(&body)?;
    let job = Job::Restore(RestoreRequest {
        source: b.source,
        snapshot: b.snapshot,
        target_dir: b.target_dir,
        database: b.database,
    });
    run_job(&st, &ctx, job).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsQuery {
    source: String,
}

/// `GET /v1/sys/backup/snapshots?source=NAME`: newest first.
#[utoipa::path(get, path = "/v1/sys/backup/snapshots", params(("source" = String, Query)), responses((status = 200, description = "data.snapshots")))]
pub async fn snapshots(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Query(q): Query<SnapshotsQuery>,
) -> Result<Response, ApiError> {
    let list = st.backups.api_snapshots(&ctx, &q.source).await?;
    Ok(vault_data(&ctx, json!({ "snapshots": list })))
}

/// `GET /v1/sys/dr/report`.
#[utoipa::path(get, path = "/v1/sys/dr/report", responses((status = 200, description = "data.report: per source the last backup, last passed drill, RPO and RTO against their targets")))]
pub async fn report(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let r = st.backups.api_report(&ctx).await?;
    Ok(vault_data(&ctx, json!({ "report": r })))
}
