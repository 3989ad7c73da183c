//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` annotations. The KV routes share one dispatcher (`kv::dispatch`), so each
//! of their operations is described by an annotated item below that names the branch it covers.

use axum::{response::IntoResponse, Json};
use utoipa::OpenApi;

use crate::{alerting, backup, checks, kv, status, sys, token};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Steward API",
        description = "Secrets (Vault KV v2 compatible), rotation, change events, alerting (Alertmanager API v2 compatible under /api/v2), tokens, policies, audit and health. Errors: {\"error\": {\"code\", \"message\", \"request_id\"}, \"errors\": [message]}. Authenticate with `Authorization: Bearer <token>` or `X-Vault-Token`."
    ),
    paths(
        document,
        sys::livez,
        sys::readyz,
        sys::metrics,
        sys::health,
        sys::init_status,
        sys::seal_status,
        sys::unseal,
        sys::seal,
        sys::environments,
        sys::keys_rotate,
        sys::keys_status,
        sys::audit_export,
        sys::audit_verify,
        sys::audit_hash,
        sys::policies_list,
        sys::policy,
        sys::template_render,
        sys::export,
        token::create,
        token::lookup_self,
        token::lookup_accessor,
        token::renew_self,
        token::revoke_self,
        token::revoke_accessor,
        token::accessors,
        kv_read,
        kv_write,
        kv_delete_latest,
        kv_metadata_read,
        kv_metadata_write,
        kv_metadata_delete,
        kv_list,
        kv_versions,
        kv_rollback,
        rotation_config_put,
        rotation_config_get,
        rotation_config_delete,
        rotation_rotate,
        rotation_rollback,
        rotation_list,
        events_poll,
        events_stream,
        expiring_list,
        alerting::post_alerts,
        alerting::get_alerts,
        alerting::get_groups,
        alerting::get_silences,
        alerting::post_silence,
        alerting::get_silence,
        alerting::delete_silence,
        alerting::status,
        alerting::receivers,
        alerting::list,
        alerting::show,
        alerting::ack,
        alerting::groups,
        alerting::dead_letters,
        alerting::outbox,
        alerting::replay,
        alerting::log,
        alerting::notify_test,
        alerting::windows,
        alerting::start_window,
        alerting::end_window,
        backup::sources,
        backup::runs,
        backup::run,
        backup::drill,
        backup::check,
        backup::prune,
        backup::copy,
        backup::restore,
        backup::snapshots,
        backup::report,
        checks::list,
        checks::show,
        checks::run,
        checks::beat,
        checks::slos,
        status::page,
    ),
    components(schemas(
        kv::WriteBody,
        kv::WriteOptions,
        kv::VersionsBody,
        kv::RollbackBody,
        sys::UnsealBody,
        sys::HashBody,
        sys::TemplateBody,
        token::AccessorBody,
        token::RenewBody
    ))
)]
struct ApiDoc;

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "the OpenAPI 3.1 document of this API")))]
pub async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// Read a secret (latest, `?version=N` or `?label=current|previous|pending`); `?resolve=false`
/// leaves references unexpanded. The answer's ETag is the version: `?wait=30s` with
/// `If-None-Match: "N"` (or `known=N`) waits until the version differs, else answers 304.
#[utoipa::path(get, path = "/v1/{mount}/data/{path}",
    params(("mount" = String, Path, description = "`secret` (default environment) or an environment"), ("path" = String, Path), ("version" = Option<u64>, Query), ("label" = Option<String>, Query, description = "current | previous | pending"), ("resolve" = Option<bool>, Query), ("wait" = Option<String>, Query, description = "long poll duration, e.g. 30s; needs If-None-Match or known"), ("known" = Option<u64>, Query)),
    responses((status = 200, description = "data.data, data.metadata, data.value_type; ETag: \"N\""), (status = 304, description = "unchanged after wait"), (status = 403, description = "permission denied"), (status = 404, description = "not found, deleted or destroyed")))]
#[allow(dead_code)]
fn kv_read() {}

/// Write a new version (`{"data": {...}}` or `{"value": ...}`, optional `options.cas`).
#[utoipa::path(put, path = "/v1/{mount}/data/{path}", params(("mount" = String, Path), ("path" = String, Path)), request_body = kv::WriteBody,
    responses((status = 200, description = "data.version"), (status = 409, description = "cas_mismatch"), (status = 413, description = "value_too_large")))]
#[allow(dead_code)]
fn kv_write() {}

/// Soft-delete the latest version.
#[utoipa::path(delete, path = "/v1/{mount}/data/{path}", params(("mount" = String, Path), ("path" = String, Path)), responses((status = 204, description = "deleted")))]
#[allow(dead_code)]
fn kv_delete_latest() {}

/// Metadata and version history.
#[utoipa::path(get, path = "/v1/{mount}/metadata/{path}", params(("mount" = String, Path), ("path" = String, Path)), responses((status = 200, description = "metadata")))]
#[allow(dead_code)]
fn kv_metadata_read() {}

/// Change metadata (max_versions, cas_required, custom_metadata, description, owner, tags, expires_at).
#[utoipa::path(post, path = "/v1/{mount}/metadata/{path}", params(("mount" = String, Path), ("path" = String, Path)), request_body = Object, responses((status = 204, description = "saved")))]
#[allow(dead_code)]
fn kv_metadata_write() {}

/// Delete the secret, every version and its metadata.
#[utoipa::path(delete, path = "/v1/{mount}/metadata/{path}", params(("mount" = String, Path), ("path" = String, Path)), responses((status = 204, description = "deleted")))]
#[allow(dead_code)]
fn kv_metadata_delete() {}

/// List keys under a prefix (`LIST` method or `GET ?list=true`); folders end in `/`.
#[utoipa::path(get, path = "/v1/{mount}/metadata/{prefix}", params(("mount" = String, Path), ("prefix" = String, Path), ("list" = bool, Query)), responses((status = 200, description = "data.keys"), (status = 404, description = "nothing there")))]
#[allow(dead_code)]
fn kv_list() {}

/// Soft-delete (`delete`), restore (`undelete`) or erase (`destroy`) versions: `{"versions": [1, 2]}`.
#[utoipa::path(post, path = "/v1/{mount}/{op}/{path}", params(("mount" = String, Path), ("op" = String, Path, description = "delete | undelete | destroy"), ("path" = String, Path)), request_body = kv::VersionsBody, responses((status = 204, description = "done")))]
#[allow(dead_code)]
fn kv_versions() {}

/// Make a new version with an older version's value: `{"version": N}`.
#[utoipa::path(post, path = "/v1/{mount}/rollback/{path}", params(("mount" = String, Path), ("path" = String, Path)), request_body = kv::RollbackBody, responses((status = 200, description = "data.version")))]
#[allow(dead_code)]
fn kv_rollback() {}

/// Set or replace a secret's rotation: `{"rotator", "settings", "admin", "schedule": {"every" | "cron", "window", "next_at", "manual"}, "grace", "retire": "consumers" | "grace", "max_attempts"}`. Needs `rotate` on the path, `read` on the admin secret, and `admin` for the command rotator.
#[utoipa::path(put, path = "/v1/sys/rotation/config/{env}/{path}", params(("env" = String, Path), ("path" = String, Path)), request_body = Object,
    responses((status = 200, description = "data: rotation status"), (status = 400, description = "invalid_rotation"), (status = 403, description = "permission denied")))]
#[allow(dead_code)]
fn rotation_config_put() {}

/// A secret's rotation status (also at `/v1/sys/rotation/status/{env}/{path}`): state, step, attempt, last outcome, next due, versions, laggard consumers.
#[utoipa::path(get, path = "/v1/sys/rotation/config/{env}/{path}", params(("env" = String, Path), ("path" = String, Path)),
    responses((status = 200, description = "data: rotation status"), (status = 404, description = "no rotation config")))]
#[allow(dead_code)]
fn rotation_config_get() {}

/// Remove a rotation config (the secret stays).
#[utoipa::path(delete, path = "/v1/sys/rotation/config/{env}/{path}", params(("env" = String, Path), ("path" = String, Path)),
    responses((status = 204, description = "removed"), (status = 409, description = "rotation_in_progress")))]
#[allow(dead_code)]
fn rotation_config_delete() {}

/// Start a rotation now (create, set, test, finish run in the background).
#[utoipa::path(post, path = "/v1/sys/rotation/rotate/{env}/{path}", params(("env" = String, Path), ("path" = String, Path)),
    responses((status = 202, description = "data: rotation status"), (status = 404, description = "no rotation config"), (status = 409, description = "rotation_in_progress")))]
#[allow(dead_code)]
fn rotation_rotate() {}

/// Make the previous value current again, in the target system too.
#[utoipa::path(post, path = "/v1/sys/rotation/rollback/{env}/{path}", params(("env" = String, Path), ("path" = String, Path)),
    responses((status = 202, description = "data: rotation status"), (status = 409, description = "rotation_in_progress or no_previous_version")))]
#[allow(dead_code)]
fn rotation_rollback() {}

/// Every rotation the caller may read.
#[utoipa::path(get, path = "/v1/sys/rotation/status", responses((status = 200, description = "data.rotations")))]
#[allow(dead_code)]
fn rotation_list() {}

/// Durable, ordered change events after a cursor: `?after=N|latest&limit=100&wait=30s`. Pass `data.next` as the next `after`.
#[utoipa::path(get, path = "/v1/sys/events", params(("after" = Option<String>, Query), ("limit" = Option<u32>, Query), ("wait" = Option<String>, Query)),
    responses((status = 200, description = "data.events, data.next")))]
#[allow(dead_code)]
fn events_poll() {}

/// The same events as server-sent events (`id` = seq, `event` = kind); `Last-Event-ID` or `?after=` resumes.
#[utoipa::path(get, path = "/v1/sys/events/stream", params(("after" = Option<String>, Query)),
    responses((status = 200, description = "text/event-stream")))]
#[allow(dead_code)]
fn events_stream() {}

/// Secrets that expire within `?within=30d` (or already have), soonest first.
#[utoipa::path(get, path = "/v1/sys/expiring", params(("within" = Option<String>, Query)),
    responses((status = 200, description = "data.secrets")))]
#[allow(dead_code)]
fn expiring_list() {}
