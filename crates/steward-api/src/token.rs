//! Token routes under `/v1/auth/token/`, shaped like Vault's token auth method.

use std::sync::Arc;

use axum::{
    extract::State,
    http::Method,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;
use serde_json::json;
use steward_secrets::{RequestCtx, TokenCreate, TokenInfo};

use crate::{decode, no_content, vault_data, ApiError, AppState, RawBody};

fn info_json(i: &TokenInfo, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let ttl = i.expires_at.map_or(0, |t| (t - now).num_seconds().max(0));
    json!({
        "accessor": i.accessor,
        "display_name": i.display_name,
        "policies": i.policies,
        "creation_time": i.created_at.timestamp(),
        "expire_time": i.expires_at,
        "ttl": ttl,
        "renewable": i.renewable,
        "revoked": i.revoked,
    })
}

/// Creates a token; the token is in `auth.client_token`, shown this once.
#[utoipa::path(post, path = "/v1/auth/token/create", request_body = Object, responses((status = 200, description = "auth.client_token, auth.accessor")))]
pub async fn create(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let req: TokenCreate = decode(&body)?;
    let t = st.engine.create_token(&ctx, req).await?;
    // The lifetime actually granted (a parent's expiry or max_ttl may have capped the ttl).
    let lease = t.info.expires_at.map_or(0, |e| {
        ((e - chrono::Utc::now()).num_milliseconds().max(0) + 500) / 1000
    });
    Ok(Json(json!({
        "request_id": ctx.request_id,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "auth": {
            "client_token": t.token,
            "accessor": t.info.accessor,
            "policies": t.info.policies,
            "token_policies": t.info.policies,
            "lease_duration": lease,
            "renewable": t.info.renewable,
            "expire_time": t.info.expires_at,
        },
    }))
    .into_response())
}

/// The calling token's record.
#[utoipa::path(get, path = "/v1/auth/token/lookup-self", responses((status = 200, description = "token info (never the token)"), (status = 403, description = "missing, invalid, expired or revoked token")))]
pub async fn lookup_self(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    let i = st.engine.lookup_self(&ctx).await?;
    Ok(vault_data(&ctx, info_json(&i, chrono::Utc::now())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessorBody {
    pub accessor: String,
}

/// Another token's record by accessor (admin).
#[utoipa::path(post, path = "/v1/auth/token/lookup-accessor", request_body = AccessorBody, responses((status = 200, description = "token info")))]
pub async fn lookup_accessor(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: AccessorBody = decode(&body)?;
    let i = st.engine.lookup_accessor(&ctx, &b.accessor).await?;
    Ok(vault_data(&ctx, info_json(&i, chrono::Utc::now())))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    pub increment: Option<serde_json::Value>,
}

/// Renews the calling token.
#[utoipa::path(post, path = "/v1/auth/token/renew-self", request_body = RenewBody, responses((status = 200, description = "new expiry")))]
pub async fn renew_self(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: RenewBody = decode(&body)?;
    let inc = b.increment.map(|v| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    });
    let i = st.engine.renew_self(&ctx, inc).await?;
    Ok(Json(json!({
        "request_id": ctx.request_id,
        "auth": { "accessor": i.accessor, "policies": i.policies, "lease_duration": i.expires_at.map_or(0, |t| (t - chrono::Utc::now()).num_seconds().max(0)), "renewable": i.renewable, "expire_time": i.expires_at },
    }))
    .into_response())
}

/// Revokes the calling token.
#[utoipa::path(post, path = "/v1/auth/token/revoke-self", responses((status = 204, description = "revoked")))]
pub async fn revoke_self(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Result<Response, ApiError> {
    st.engine.revoke(&ctx, None).await?;
    Ok(no_content())
}

/// Revokes a token by accessor (admin).
#[utoipa::path(post, path = "/v1/auth/token/revoke-accessor", request_body = AccessorBody, responses((status = 204, description = "revoked")))]
pub async fn revoke_accessor(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let b: AccessorBody = decode(&body)?;
    st.engine.revoke(&ctx, Some(&b.accessor)).await?;
    Ok(no_content())
}

/// Lists tokens by accessor (admin; GET or LIST).
#[utoipa::path(get, path = "/v1/auth/token/accessors", responses((status = 200, description = "keys = accessors, tokens = details")))]
pub async fn accessors(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    method: Method,
) -> Result<Response, ApiError> {
    crate::get_or_list(&method)?;
    let list = st.engine.list_tokens(&ctx).await?;
    let now = chrono::Utc::now();
    let keys: Vec<&str> = list.iter().map(|t| t.accessor.as_str()).collect();
    let tokens: Vec<_> = list.iter().map(|t| info_json(t, now)).collect();
    Ok(vault_data(&ctx, json!({ "keys": keys, "tokens": tokens })))
}
