//! The signed-in web dashboard's routes (`/ui/...`). Pages are rendered by `steward-web`;
//! this module signs people in and out, checks every form's CSRF token and origin, calls the
//! same services as the JSON API with the session's token (so policies apply and the engine
//! audits each call), and turns errors into pages.
//!
//! Every `/ui/` response carries a strict Content-Security-Policy (only our own stylesheet
//! and script), `no-store` caching (a revealed secret never lands in the browser's cache),
//! and refuses to be framed.

pub mod session;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{FromRequestParts, Path, Query, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    middleware::map_response,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Extension, Form, Router,
};
use chrono::{DateTime, NaiveDate, Utc};
use maud::Markup;
use serde::Deserialize;
use steward_checks::service::{dense, window};
use steward_secrets::{AuditFilter, ReadOptions, RequestCtx};
use steward_web::{
    layout::error_page,
    pages::{self, alerts::SilenceForm, audit::AuditQuery},
    Flash, Nav, Section, Shell,
};

use crate::{ApiError, AppState};
pub use session::{Current, Sessions};

/// The dashboard's routes; `app` merges them under its middleware.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/static/app.css", get(css))
        .route("/ui/static/app.js", get(js))
        .route("/ui/sign-in", get(sign_in_form).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/", get(overview))
        .route("/ui/checks", get(checks_list))
        .route("/ui/checks/{name}", get(check_show))
        .route("/ui/checks/{name}/run", post(check_run))
        .route("/ui/alerts", get(alerts))
        .route("/ui/silences", post(silence_create))
        .route("/ui/silences/{id}/expire", post(silence_expire))
        .route("/ui/secrets", get(secrets_browse))
        .route(
            "/ui/secrets/{env}/{*path}",
            get(secret_show).post(secret_reveal),
        )
        .route("/ui/backups", get(backups))
        .route("/ui/audit", get(audit))
        .layer(map_response(security_headers))
}

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset(steward_web::APP_CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(steward_web::APP_JS, "text/javascript; charset=utf-8")
}

fn html(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// The session cookie's value from a request's `Cookie` headers.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == session::COOKIE)
        .map(|(_, v)| v.to_string())
}

fn cookie(headers: &HeaderMap, value: &str, max_age: i64) -> HeaderValue {
    // `Secure` when a proxy in front says the browser came over HTTPS.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let v = format!(
        "{}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        session::COOKIE,
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in request; without a session the request is sent to the sign-in page.
pub(crate) struct Signed(pub Current);

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        match parts.extensions.get::<Current>() {
            Some(c) => Ok(Signed(c.clone())),
            None => Err(to_sign_in(
                parts.uri.path_and_query().map_or("/ui/", |p| p.as_str()),
            )),
        }
    }
}

fn to_sign_in(next: &str) -> Response {
    let next = if safe_next(next) { next } else { "/ui/" };
    Redirect::to(&format!("/ui/sign-in?next={}", pages::audit::encode(next))).into_response()
}

/// Only our own pages are places to go after signing in (no open redirect).
fn safe_next(next: &str) -> bool {
    next.starts_with("/ui/")
        && !next.starts_with("/ui/sign-")
        && !next.contains("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic())
}

fn shell<'a>(title: &'a str, nav: Nav, cur: &'a Current, flash: Option<Flash>) -> Shell<'a> {
    Shell {
        title,
        nav,
        actor: Some(&cur.actor),
        csrf: Some(&cur.csrf),
        flash,
    }
}

/// Codes that mean the session's token no longer works.
fn signed_out(e: &ApiError) -> bool {
    matches!(
        e.code.as_str(),
        "missing_token" | "invalid_token" | "token_expired" | "token_revoked"
    )
}

/// An error as a page (or, when the token stopped working, back to sign-in).
fn fail(cur: &Current, uri: &str, e: ApiError) -> Response {
    if signed_out(&e) {
        return to_sign_in(uri);
    }
    let heading = match e.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_client_error() => "That did not work",
        _ => "Something went wrong",
    };
    html(
        e.status,
        error_page(&shell(heading, Nav::None, cur, None), heading, &e.message),
    )
}

/// A section's data, or the message saying why it is missing.
fn section<T, E: Into<ApiError>>(r: Result<T, E>) -> Result<Section<T>, ApiError> {
    match r.map_err(Into::into) {
        Ok(v) => Ok(Ok(v)),
        Err(e) if signed_out(&e) => Err(e),
        Err(e) => Ok(Err(e.message)),
    }
}

/// Refuses a form post from another site: the CSRF token must match the session's, and an
/// `Origin` header, when the browser sends one, must be this host.
fn check_post(cur: Option<&Current>, headers: &HeaderMap, csrf: &str) -> Result<(), ApiError> {
    let forbidden = |m: &str| ApiError::new(StatusCode::FORBIDDEN, "csrf_failed", m);
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        if authority != host {
            return Err(forbidden(
                "this form was posted from another site; open the dashboard and try again",
            ));
        }
    }
    if let Some(cur) = cur {
        if !cur.csrf_ok(csrf) {
            return Err(forbidden(
                "the form is out of date (its session token does not match); reload the page and try again",
            ));
        }
    }
    Ok(())
}

fn flash_for(done: Option<&str>) -> Option<Flash> {
    let text = match done? {
        "silenced" => "Silence created.",
        "expired" => "Silence expired.",
        "signed-in" => "Signed in.",
        _ => return None,
    };
    Some(Flash {
        ok: true,
        text: text.into(),
    })
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

async fn sign_in_form(Query(q): Query<NextQuery>) -> Response {
    let next = q.next.filter(|n| safe_next(n)).unwrap_or("/ui/".into());
    html(StatusCode::OK, pages::signin::render(None, &next))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
    #[serde(default)]
    next: String,
}

async fn sign_in(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let next = if safe_next(&f.next) {
        f.next.as_str()
    } else {
        "/ui/"
    };
    if let Err(e) = check_post(None, &headers, "") {
        return html(e.status, pages::signin::render(Some(&e.message), next));
    }
    let token = f.token.trim().to_string();
    let attempt = RequestCtx::new(
        ctx.request_id.clone(),
        (!token.is_empty()).then(|| token.clone()),
        ctx.remote_addr.clone(),
    );
    // The engine audits the attempt (as the token's owner, or as a failed sign-in).
    let looked = st.engine.lookup_self(&attempt).await;
    st.engine.mark_audited(&ctx);
    match looked {
        Ok(info) => {
            let now = st.engine.clock().now();
            let id = st.ui.open(now, token, info.display_name);
            let mut resp = Redirect::to(next).into_response();
            resp.headers_mut().insert(
                header::SET_COOKIE,
                cookie(&headers, &id, session::ABSOLUTE.num_seconds()),
            );
            resp
        }
        Err(e) => {
            let e = ApiError::from(e);
            let (status, msg) = if signed_out(&e) || e.status == StatusCode::FORBIDDEN {
                (
                    StatusCode::UNAUTHORIZED,
                    "That token was not accepted: it is unknown, expired or revoked. Check it and try again.".to_string(),
                )
            } else {
                (e.status, e.message)
            };
            html(status, pages::signin::render(Some(&msg), next))
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(st): State<AppState>,
    headers: HeaderMap,
    Signed(cur): Signed,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(e) = check_post(Some(&cur), &headers, &f.csrf) {
        return fail(&cur, "/ui/", e);
    }
    if let Some(id) = session_cookie(&headers) {
        st.ui.close(&id);
    }
    let mut resp = Redirect::to("/ui/sign-in").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&headers, "", 0));
    resp
}

async fn overview(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Signed(cur): Signed,
) -> Result<Response, Response> {
    let now = st.engine.clock().now();
    let gathered = async {
        Ok::<_, ApiError>(pages::overview::Overview {
            now,
            checks: section(st.checks.list(&ctx).await)?,
            alerts: section(st.alerting.alerts(&ctx, &[]).await)?,
            expiring: section(
                st.rotations
                    .expiring(&ctx, Duration::from_secs(14 * 86_400))
                    .await,
            )?,
            log: section(st.alerting.log(&ctx, 10).await)?,
        })
    }
    .await
    .map_err(|e| fail(&cur, "/ui/", e))?;
    Ok(html(
        StatusCode::OK,
        pages::overview::render(&shell("Overview", Nav::Overview, &cur, None), &gathered),
    ))
}

#[derive(Deserialize)]
struct FilterQuery {
    #[serde(default)]
    q: String,
}

async fn checks_list(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Signed(cur): Signed,
    Query(q): Query<FilterQuery>,
) -> Result<Response, Response> {
    let rows = st
        .checks
        .history(&ctx, "hour", 24)
        .await
        .map_err(|e| fail(&cur, "/ui/checks", e.into()))?;
    let now = st.engine.clock().now();
    Ok(html(
        StatusCode::OK,
        pages::checks::list(
            &shell("Checks", Nav::Checks, &cur, None),
            now,
            &rows,
            q.q.trim(),
        ),
    ))
}

#[derive(Deserialize)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn check_page(
    st: &AppState,
    ctx: &RequestCtx,
    cur: &Current,
    name: &str,
    flash: Option<Flash>,
) -> Result<Response, Response> {
    let uri = format!("/ui/checks/{name}");
    let (check, latest, hours) = st
        .checks
        .show(ctx, name, "hour", 48)
        .await
        .map_err(|e| fail(cur, &uri, e.into()))?;
    let (_, _, days) = st
        .checks
        .show(ctx, name, "day", 90)
        .await
        .map_err(|e| fail(cur, &uri, e.into()))?;
    // Show every bucket, empty ones as gaps, so the charts line up with the clock.
    let now = st.engine.clock().now().timestamp();
    let (from, to) = window(now, 3600, 48);
    let hours = dense(&hours, from, to, 3600);
    let (from, to) = window(now, 86_400, 90);
    let days = dense(&days, from, to, 86_400);
    let title = format!("Check {name}");
    Ok(html(
        StatusCode::OK,
        pages::checks::show(
            &shell(&title, Nav::Checks, cur, flash),
            &pages::checks::CheckPage {
                now: st.engine.clock().now(),
                check: &check,
                hours: &hours,
                days: &days,
                latest: &latest,
                csrf: &cur.csrf,
            },
        ),
    ))
}

async fn check_show(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Signed(cur): Signed,
    Path(name): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, Response> {
    check_page(&st, &ctx, &cur, &name, flash_for(q.done.as_deref())).await
}

async fn check_run(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    headers: HeaderMap,
    Signed(cur): Signed,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Response> {
    let uri = format!("/ui/checks/{name}");
    check_post(Some(&cur), &headers, &f.csrf).map_err(|e| fail(&cur, &uri, e))?;
    let run = st
        .checks
        .run_now(&ctx, &name)
        .await
        .map_err(|e| fail(&cur, &uri, e.into()))?;
    let flash = Flash {
        ok: run.ok,
        text: match &run.error {
            None if run.ok => format!("The check ran and passed in {:.0} ms.", run.duration_ms),
            None => "The check ran and failed its condition.".into(),
            Some(e) => format!("The check ran and failed: {e}"),
        },
    };
    // Rendered in place (not redirected) so the outcome shows with the page.
    check_page(&st, &ctx, &cur, &name, Some(flash)).await
}

#[derive(Deserialize)]
struct AlertsQuery {
    #[serde(default)]
    silence: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

async fn alerts_page(
    st: &AppState,
    ctx: &RequestCtx,
    cur: &Current,
    form: Option<SilenceForm>,
    prefill: Option<&str>,
    flash: Option<Flash>,
    status: StatusCode,
) -> Result<Response, Response> {
    let fail_here = |e: ApiError| fail(cur, "/ui/alerts", e);
    let alerts = section(st.alerting.alerts(ctx, &[]).await).map_err(fail_here)?;
    let silences = section(st.alerting.silences(ctx).await).map_err(fail_here)?;
    let form = form.unwrap_or_else(|| SilenceForm {
        matchers: prefill
            .and_then(|fp| {
                alerts
                    .as_ref()
                    .ok()?
                    .iter()
                    .find(|a| a.fingerprint == fp)
                    .map(pages::alerts::matchers_for)
            })
            .unwrap_or_default(),
        ..Default::default()
    });
    Ok(html(
        status,
        pages::alerts::render(
            &shell("Alerts", Nav::Alerts, cur, flash),
            &pages::alerts::AlertsPage {
                now: st.engine.clock().now(),
                alerts: &alerts,
                silences: &silences,
                form,
                csrf: &cur.csrf,
            },
        ),
    ))
}

async fn alerts(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Signed(cur): Signed,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, Response> {
    alerts_page(
        &st,
        &ctx,
        &cur,
        None,
        q.silence.as_deref(),
        flash_for(q.done.as_deref()),
        StatusCode::OK,
    )
    .await
}

#[derive(Deserialize)]
struct SilenceFormBody {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    matchers: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    comment: String,
}

/// The silence the form describes, or what is wrong with it.
fn silence_from(
    f: &SilenceFormBody,
    author: &str,
) -> Result<steward_alerting::service::PostableSilence, String> {
    let lines: Vec<&str> = f
        .matchers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return Err("Give at least one matcher, e.g. alertname=\"CheckDown\".".into());
    }
    let parsed = steward_alerting::matchers::parse_list(&lines).map_err(|e| e.to_string())?;
    if f.comment.trim().is_empty() {
        return Err("Say why in the comment; whoever looks at this silence later needs it.".into());
    }
    let duration = f.duration.trim();
    Ok(steward_alerting::service::PostableSilence {
        id: None,
        matchers: parsed
            .iter()
            .map(steward_alerting::mutes::ApiMatcher::from_matcher)
            .collect(),
        starts_at: None,
        ends_at: None,
        duration: Some(if duration.is_empty() { "2h" } else { duration }.to_string()),
        created_by: author.to_string(),
        comment: f.comment.trim().to_string(),
    })
}

async fn silence_create(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    headers: HeaderMap,
    Signed(cur): Signed,
    Form(f): Form<SilenceFormBody>,
) -> Result<Response, Response> {
    check_post(Some(&cur), &headers, &f.csrf).map_err(|e| fail(&cur, "/ui/alerts", e))?;
    let result = match silence_from(&f, &cur.actor) {
        Ok(s) => st
            .alerting
            .put_silence(&ctx, s)
            .await
            .map_err(ApiError::from),
        Err(m) => Err(ApiError::bad_request("invalid_silence", m)),
    };
    match result {
        Ok(_) => Ok(Redirect::to("/ui/alerts?done=silenced").into_response()),
        Err(e) if signed_out(&e) => Err(to_sign_in("/ui/alerts")),
        Err(e) => {
            let form = SilenceForm {
                matchers: f.matchers.clone(),
                duration: f.duration.clone(),
                comment: f.comment.clone(),
            };
            let flash = Flash {
                ok: false,
                text: format!("The silence was not created: {}", e.message),
            };
            let status = if e.status.is_client_error() {
                e.status
            } else {
                StatusCode::BAD_REQUEST
            };
            alerts_page(&st, &ctx, &cur, Some(form), None, Some(flash), status).await
        }
    }
}

async fn silence_expire(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    headers: HeaderMap,
    Signed(cur): Signed,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Response> {
    check_post(Some(&cur), &headers, &f.csrf).map_err(|e| fail(&cur, "/ui/alerts", e))?;
    st.alerting
        .expire_silence(&ctx, &id)
        .await
        .map_err(|e| fail(&cur, "/ui/alerts", e.into()))?;
    Ok(Redirect::to("/ui/alerts?done=expired").into_response())
}

#[derive(Deserialize)]
struct BrowseQuery {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    prefix: String,
}

async fn secrets_browse(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Signed(cur): Signed,
    Query(q): Query<BrowseQuery>,
) -> Result<Response, Response> {
    let envs: Vec<String> = st
        .engine
        .config()
        .environments
        .iter()
        .map(ToString::to_string)
        .collect();
    let env = q
        .env
        .filter(|e| envs.contains(e))
        .or_else(|| envs.first().cloned())
        .unwrap_or_default();
    let prefix = q.prefix.trim_start_matches('/').to_string();
    let keys = section(
        st.engine
            .list(&ctx, &env, &prefix)
            .await
            .map(|l| (l.keys, l.truncated)),
    )
    .map_err(|e| fail(&cur, "/ui/secrets", e))?;
    Ok(html(
        StatusCode::OK,
        pages::secrets::browse(
            &shell("Secrets", Nav::Secrets, &cur, None),
            &pages::secrets::BrowsePage {
                envs: &envs,
                env: &env,
                prefix: &prefix,
                keys: &keys,
            },
        ),
    ))
}

async fn secret_page(
    st: &AppState,
    ctx: &RequestCtx,
    cur: &Current,
    (env, path): (&str, &str),
    revealed: Option<pages::secrets::Revealed>,
) -> Result<Response, Response> {
    let uri = format!("/ui/secrets/{env}/{path}");
    let meta = st
        .engine
        .read_metadata(ctx, env, path)
        .await
        .map_err(|e| fail(cur, &uri, e.into()))?;
    // A secret without rotation (or a token that may not see it) shows no rotation section.
    let rotation = st.rotations.status(ctx, env, path).await.ok();
    let title = format!("Secret {env}/{path}");
    Ok(html(
        StatusCode::OK,
        pages::secrets::show(
            &shell(&title, Nav::Secrets, cur, None),
            &pages::secrets::SecretPage {
                now: st.engine.clock().now(),
                env,
                path,
                meta: &meta,
                rotation: rotation.as_ref(),
                revealed: revealed.as_ref(),
                csrf: &cur.csrf,
            },
        ),
    ))
}

async fn secret_show(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Signed(cur): Signed,
    Path((env, path)): Path<(String, String)>,
) -> Result<Response, Response> {
    secret_page(&st, &ctx, &cur, (&env, &path), None).await
}

#[derive(Deserialize)]
struct RevealForm {
    #[serde(default)]
    csrf: String,
    version: u64,
}

/// Reveals one version's value: a POST, so it is never a link, and the engine audits it as a
/// read (the read capability is required, as for the API).
async fn secret_reveal(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    headers: HeaderMap,
    Signed(cur): Signed,
    Path((env, path)): Path<(String, String)>,
    Form(f): Form<RevealForm>,
) -> Result<Response, Response> {
    let uri = format!("/ui/secrets/{env}/{path}");
    check_post(Some(&cur), &headers, &f.csrf).map_err(|e| fail(&cur, &uri, e))?;
    let data = st
        .engine
        .read_secret(
            &ctx,
            &env,
            &path,
            ReadOptions {
                version: Some(f.version),
                resolve: false,
            },
        )
        .await
        .map_err(|e| fail(&cur, &uri, e.into()))?;
    let text = serde_json::to_string_pretty(&data.value).unwrap_or_default();
    let revealed = pages::secrets::Revealed {
        version: data.version.version,
        text,
    };
    secret_page(&st, &ctx, &cur, (&env, &path), Some(revealed)).await
}

/// The DR report: the service authorizes the read (`sys/backup`) and audits it.
async fn backups(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Signed(cur): Signed,
) -> Result<Response, Response> {
    let report = st
        .backups
        .api_report(&ctx)
        .await
        .map_err(|e| fail(&cur, "/ui/backups", e.into()))?;
    Ok(html(
        StatusCode::OK,
        pages::backups::render(&shell("Backups", Nav::Backups, &cur, None), &report),
    ))
}

#[derive(Deserialize, Default)]
struct AuditParams {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: Option<u64>,
}

/// `2026-12-01` (midnight UTC) or an RFC 3339 time.
fn parse_time(what: &str, s: &str) -> Result<Option<DateTime<Utc>>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| {
            format!("{what} {s:?} is not a date; write 2026-12-01 or 2026-12-01T10:00:00Z")
        })
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

async fn audit(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Signed(cur): Signed,
    Query(p): Query<AuditParams>,
) -> Result<Response, Response> {
    let q = AuditQuery {
        actor: p.actor.clone(),
        action: p.action.clone(),
        env: p.env.clone(),
        path: p.path.clone(),
        outcome: p.outcome.clone(),
        since: p.since.clone(),
        until: p.until.clone(),
    };
    let filter = parse_time("since", &p.since).and_then(|since| {
        Ok(AuditFilter {
            actor: some(&p.actor),
            action: some(&p.action),
            env: some(&p.env),
            path: some(&p.path),
            outcome: some(&p.outcome),
            since,
            until: parse_time("until", &p.until)?,
        })
    });
    let (status, result) = match filter {
        Err(m) => (StatusCode::BAD_REQUEST, Err(m)),
        Ok(filter) => match st.engine.audit_search(&ctx, &filter, p.before, 100).await {
            Ok(page) => (StatusCode::OK, Ok(page)),
            Err(e) => {
                let e = ApiError::from(e);
                if signed_out(&e) {
                    return Err(to_sign_in("/ui/audit"));
                }
                (e.status, Err(e.message))
            }
        },
    };
    Ok(html(
        status,
        pages::audit::render(&shell("Audit log", Nav::Audit, &cur, None), &q, &result),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_pages_are_redirect_targets() {
        for ok in ["/ui/", "/ui/checks/api", "/ui/audit?actor=root"] {
            assert!(safe_next(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/ui/\\evil",
            "/v1/secret",
            "/ui/sign-out",
            "/ui/a b",
        ] {
            assert!(!safe_next(bad), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; steward_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("steward_sessionx=1"),
        );
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn silences_from_the_form_need_matchers_and_a_comment() {
        let f = |m: &str, c: &str| SilenceFormBody {
            csrf: String::new(),
            matchers: m.into(),
            duration: String::new(),
            comment: c.into(),
        };
        let s = silence_from(
            &f("alertname=\"CheckDown\"\ncheck=~\"api-.*\"\n", "deploy"),
            "ops",
        )
        .unwrap();
        assert_eq!(s.matchers.len(), 2);
        assert!(s.matchers[1].is_regex);
        assert_eq!(s.duration.as_deref(), Some("2h"));
        assert_eq!(s.created_by, "ops");
        assert!(silence_from(&f("  \n", "x"), "ops")
            .unwrap_err()
            .contains("at least one matcher"));
        assert!(silence_from(&f("a=\"b\"", " "), "ops")
            .unwrap_err()
            .contains("comment"));
        assert!(silence_from(&f("not a matcher", "x"), "ops").is_err());
    }

    #[test]
    fn times_are_dates_or_rfc3339() {
        assert_eq!(
            parse_time("since", "2026-12-01")
                .unwrap()
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert!(parse_time("since", "2026-12-01T10:00:00Z")
            .unwrap()
            .is_some());
        assert!(parse_time("since", "").unwrap().is_none());
        assert!(parse_time("since", "yesterday")
            .unwrap_err()
            .contains("since \"yesterday\""));
    }
}
