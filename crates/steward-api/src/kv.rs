//! The secrets routes, shaped like Vault's KV v2 so Vault clients work unchanged:
//! `/v1/<mount>/data|metadata|delete|undelete|destroy/<path>`, plus Steward's `rollback`.
//! The mount `secret` is the configured default environment; every environment is also a mount
//! under its own name (`/v1/prod/data/billing/db_password`).

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    Extension,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use steward_secrets::{
    MetadataUpdate, ReadOptions, RequestCtx, SecretMetadata, VersionMeta, VersionOp, WriteRequest,
};

use crate::{decode, no_content, vault_data, ApiError, AppState, RawBody};

/// A write body: Vault's `{"data": {...}, "options": {"cas": N}}`, or Steward's
/// `{"value": "a string" | {...}}`; optional `metadata` changes go with it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteBody {
    pub data: Option<Map<String, Value>>,
    pub value: Option<Value>,
    #[serde(default)]
    pub options: WriteOptions,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<MetadataUpdate>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteOptions {
    pub cas: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionsBody {
    pub versions: Vec<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    pub version: u64,
}

type Q = Query<HashMap<String, String>>;

/// Operations under a mount.
const KNOWN_OPS: &[&str] = &[
    "data", "metadata", "delete", "undelete", "destroy", "rollback",
];

fn mount_env(st: &AppState, mount: &str) -> Result<String, ApiError> {
    let cfg = st.engine.config();
    if mount == "secret" {
        return Ok(cfg.default_environment.to_string());
    }
    if cfg.environments.iter().any(|e| e.as_str() == mount) {
        return Ok(mount.to_string());
    }
    if matches!(mount, "sys" | "auth") {
        // A mistyped system or token route (`/v1/sys/polices/x`), not a missing mount.
        let (code, msg) = crate::error::code_for_status(StatusCode::NOT_FOUND);
        return Err(ApiError::new(StatusCode::NOT_FOUND, code, msg));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_mount",
        format!(
            "no mount {mount:?}; mounts are `secret` and the environments: {}",
            cfg.environments
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

fn query_u64(q: &HashMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("{key}={v:?} is not a whole number"),
                )
            })
        })
        .transpose()
}

fn query_bool(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// A version's Vault-shaped metadata.
#[derive(serde::Serialize)]
struct VersionJson<'a, C: serde::Serialize> {
    created_time: chrono::DateTime<chrono::Utc>,
    custom_metadata: &'a C,
    deletion_time: String,
    destroyed: bool,
    version: u64,
}

fn version_json<'a, C: serde::Serialize>(v: &VersionMeta, custom: &'a C) -> VersionJson<'a, C> {
    VersionJson {
        created_time: v.created_time,
        custom_metadata: custom,
        deletion_time: v
            .deletion_time
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_default(),
        destroyed: v.destroyed,
        version: v.version,
    }
}

/// `GET data/<path>`: Vault's `data` + `metadata`, and Steward's `value_type`.
#[derive(serde::Serialize)]
struct ReadJson<'a, C: serde::Serialize> {
    data: Value,
    metadata: VersionJson<'a, C>,
    value_type: &'static str,
}

fn metadata_json(m: &SecretMetadata) -> Value {
    let versions: Map<String, Value> = m
        .versions
        .iter()
        .map(|v| {
            (
                v.version.to_string(),
                json!({
                    "created_time": v.created_time,
                    "deletion_time": v.deletion_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).unwrap_or_default(),
                    "destroyed": v.destroyed,
                }),
            )
        })
        .collect();
    json!({
        "cas_required": m.meta.cas_required,
        "created_time": m.created_time,
        "current_version": m.current_version,
        "custom_metadata": if m.meta.custom.is_empty() { Value::Null } else { json!(m.meta.custom) },
        "delete_version_after": "0s",
        "max_versions": m.max_versions,
        "oldest_version": m.oldest_version,
        "updated_time": m.updated_time,
        "versions": versions,
        "description": m.meta.description,
        "owner": m.meta.owner,
        "tags": m.meta.tags,
        "expires_at": m.meta.expires_at,
        "env": m.env,
        "path": m.path,
    })
}

/// The version a watching client already has: `known=N`, or the `If-None-Match` ETag the
/// middleware copied into the query (`if_none_match`).
fn headers_known(q: &HashMap<String, String>) -> Option<u64> {
    q.get("known")
        .or_else(|| q.get("if_none_match"))
        .and_then(|v| {
            v.trim_matches(|c| c == '"' || c == ' ' || c == 'W' || c == '/')
                .parse()
                .ok()
        })
}

/// Carries an `If-None-Match` header into the query as `if_none_match` (for `wait=`).
fn with_etag(Query(mut q): Q, headers: &axum::http::HeaderMap) -> Q {
    if let Some(v) = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        q.insert("if_none_match".into(), v.to_string());
    }
    Query(q)
}

/// Sets `ETag: "N"`: the version is the ETag (`?wait=` with If-None-Match waits for a new one).
fn with_version_etag(mut resp: Response, version: u64) -> Response {
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
    resp
}

/// A value as Vault's `data` (strings wrapped as `{"value": ...}`) and Steward's `value_type`.
fn data_and_kind(value: Value) -> (Value, &'static str) {
    match value {
        Value::String(s) => (json!({ "value": s }), "string"),
        other => (other, "object"),
    }
}

/// `GET data/<path>`: latest, `?version=N` or `?label=current|previous`.
async fn read_data(
    st: &AppState,
    ctx: &RequestCtx,
    env: &str,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let version = match q.get("label") {
        Some(label) => st.rotations.label_version(env, path, label).await?,
        None => query_u64(q, "version")?.filter(|v| *v > 0),
    };
    let resolve = q.get("resolve").is_none_or(|v| v != "false" && v != "0");
    let d = st
        .engine
        .read_secret(ctx, env, path, ReadOptions { version, resolve })
        .await?;
    let (data, kind) = data_and_kind(d.value);
    let custom = (!d.meta.custom.is_empty()).then_some(&d.meta.custom);
    let resp = vault_data(
        ctx,
        ReadJson {
            data,
            metadata: version_json(&d.version, &custom),
            value_type: kind,
        },
    );
    Ok(with_version_etag(resp, d.version.version))
}

/// `/v1/{mount}/{op}` with no path: only listing the root makes sense there.
pub async fn dispatch_root(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    method: Method,
    headers: axum::http::HeaderMap,
    Path((mount, op)): Path<(String, String)>,
    query: Q,
    body: RawBody,
) -> Result<Response, ApiError> {
    let query = with_etag(query, &headers);
    run(st, ctx, method, mount, op, String::new(), query, body).await
}

/// `/v1/{mount}/{op}/{*path}`.
pub async fn dispatch(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    method: Method,
    headers: axum::http::HeaderMap,
    Path((mount, op, path)): Path<(String, String, String)>,
    query: Q,
    body: RawBody,
) -> Result<Response, ApiError> {
    let query = with_etag(query, &headers);
    run(st, ctx, method, mount, op, path, query, body).await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    st: AppState,
    ctx: Arc<RequestCtx>,
    method: Method,
    mount: String,
    op: String,
    path: String,
    Query(q): Q,
    body: RawBody,
) -> Result<Response, ApiError> {
    let env = mount_env(&st, &mount)?;
    let e = &st.engine;
    let m = method.as_str();
    let is_list = m == "LIST" || (m == "GET" && query_bool(&q, "list"));
    let path = path.trim_end_matches('/').to_string();
    match (op.as_str(), m) {
        ("metadata", _) if is_list => {
            let r = e.list(&ctx, &env, &path).await?;
            if r.keys.is_empty() {
                // Vault answers an empty listing with 404; its clients expect that.
                return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("nothing under {env}/{path}")));
            }
            Ok(vault_data(&ctx, json!({ "keys": r.keys, "truncated": r.truncated })))
        }
        (op, _) if path.is_empty() && KNOWN_OPS.contains(&op) => Err(ApiError::bad_request(
            "invalid_path",
            "a secret path is required after the operation, e.g. /v1/secret/data/billing/db_password",
        )),
        ("data", "GET") if q.get("label").is_some_and(|l| l == "pending") => {
            let value = st.rotations.read_pending(&ctx, &env, &path).await?;
            let (data, kind) = data_and_kind(value);
            Ok(vault_data(&ctx, json!({ "data": data, "label": "pending", "value_type": kind })))
        }
        ("data", "GET") if q.contains_key("wait") => {
            // A long poll: wait until the latest version differs from the one the client
            // has (`If-None-Match: "N"` or `known=N`), then answer like a plain read.
            let known = match headers_known(&q) {
                Some(v) => v,
                None => return Err(ApiError::bad_request("invalid_query", "wait= needs the version you have: send If-None-Match: \"N\" (the ETag of your last read) or known=N")),
            };
            let wait = crate::rotation::wait_of(&st, &q)?;
            let latest = st.rotations.wait_for_change(&ctx, &env, &path, known, wait).await?;
            if latest == Some(known) {
                return Ok(with_version_etag(StatusCode::NOT_MODIFIED.into_response(), known));
            }
            read_data(&st, &ctx, &env, &path, &q).await
        }
        ("data", "GET") => read_data(&st, &ctx, &env, &path, &q).await,
        ("data", "PUT" | "POST") => {
            let b: WriteBody = decode(&body)?;
            let value = match (b.data, b.value) {
                (Some(d), None) => Value::Object(d),
                (None, Some(v)) => v,
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        "send exactly one of \"data\" (a JSON object, as Vault clients do) or \"value\" (a string or object)",
                    ))
                }
            };
            let r = e
                .write_secret(
                    &ctx,
                    &env,
                    &path,
                    WriteRequest { value, cas: b.options.cas, metadata: b.metadata },
                )
                .await?;
            Ok(vault_data(
                &ctx,
                json!({ "created_time": r.created_time, "custom_metadata": null, "deletion_time": "", "destroyed": false, "version": r.version }),
            ))
        }
        ("data", "DELETE") => {
            e.change_versions(&ctx, &env, &path, VersionOp::Delete, vec![]).await?;
            Ok(no_content())
        }
        ("metadata", "GET") => {
            let md = e.read_metadata(&ctx, &env, &path).await?;
            Ok(vault_data(&ctx, metadata_json(&md)))
        }
        ("metadata", "PUT" | "POST") => {
            let u: MetadataUpdate = decode(&body)?;
            e.update_metadata(&ctx, &env, &path, u).await?;
            Ok(no_content())
        }
        ("metadata", "DELETE") => {
            e.delete_metadata(&ctx, &env, &path).await?;
            Ok(no_content())
        }
        (op @ ("delete" | "undelete" | "destroy"), "PUT" | "POST") => {
            let b: VersionsBody = decode(&body)?;
            let which = match op {
                "delete" => VersionOp::Delete,
                "undelete" => VersionOp::Undelete,
                _ => VersionOp::Destroy,
            };
            if b.versions.is_empty() {
                return Err(ApiError::bad_request("missing_versions", "\"versions\" must list at least one version"));
            }
            e.change_versions(&ctx, &env, &path, which, b.versions).await?;
            Ok(no_content())
        }
        ("rollback", "PUT" | "POST") => {
            let b: RollbackBody = decode(&body)?;
            let r = e.rollback(&ctx, &env, &path, b.version).await?;
            Ok(vault_data(&ctx, json!({ "created_time": r.created_time, "version": r.version })))
        }
        ("data" | "metadata" | "delete" | "undelete" | "destroy" | "rollback", _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not supported on /{op}/; see /v1/openapi.json"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!("unknown operation {op:?}; use data, metadata, delete, undelete, destroy or rollback"),
        )),
    }
}
