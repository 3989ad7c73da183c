//! `webhook` against a local endpoint that checks the signature like a real one would.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use steward_rotators::{webhook::WebhookRotator, Credential, ErrorKind, Rotator};

use crate::common::{cred, cx, expect_err};

const KEY: &str = "whsec_test_signing_key_123";

/// Requests the endpoint accepted: (action, body).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// The endpoint's side of the signature check: HMAC-SHA256 over "<timestamp>.<raw body>",
/// compared in constant time, timestamp within 5 minutes.
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (header("x-steward-timestamp"), header("x-steward-signature"))
    else {
        return false;
    };
    let Ok(ts_n) = ts.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(ts_n) > 300 {
        return false;
    }
    let Some(Ok(sig)) = sig.strip_prefix("v1=").map(hex::decode) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

async fn rotate(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> Response {
    if !verify(&headers, &body) {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let attempt = headers.get("x-steward-attempt").unwrap().to_str().unwrap();
    assert_eq!(
        v["attempt_id"],
        json!(attempt),
        "the attempt header is the idempotency key"
    );
    let action = v["action"].as_str().unwrap().to_string();
    seen.lock().unwrap().push((action.clone(), v.clone()));
    match action.as_str() {
        "create" => Json(json!({"credential": {
            "api_key": format!("sk_live_{attempt}_issued"), "key_id": "k2"
        }}))
        .into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn serve(seen: Seen) -> String {
    let app = Router::new()
        .route("/rotate", post(rotate))
        .route(
            "/broken",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "backend exploded") }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/garbage", post(|| async { "this is not JSON" }))
        .route(
            "/leaky",
            post(|body: Bytes| async move {
                // An endpoint that echoes what it got in an error (the current key).
                let v: Value = serde_json::from_slice(&body).unwrap();
                let key = v["current"]["api_key"].as_str().unwrap_or("").to_string();
                (StatusCode::BAD_REQUEST, format!("cannot rotate {key}"))
            }),
        )
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn admin(key: &str) -> Credential {
    cred(json!({"signing_key": key}))
}

#[tokio::test]
async fn create_test_revoke_and_discard_are_signed_requests() {
    let seen = Seen::default();
    let base = serve(seen.clone()).await;
    let settings = json!({"url": format!("{base}/rotate"), "timeout": "5s"});
    let admin = admin(KEY);
    let current = cred(json!({"api_key": "sk_live_old_value", "key_id": "k1"}));
    let step = cx(&settings, Some(&current), Some(&admin));
    let r = WebhookRotator;

    let pending = r.create(&step).await.unwrap();
    assert_eq!(
        pending.str("api_key").unwrap(),
        "sk_live_attempt-0001_issued"
    );
    r.set(&step, &pending).await.unwrap(); // sends nothing
    r.test(&step, &pending).await.unwrap();
    r.discard(&step, &pending).await.unwrap();
    let after = cx(&settings, Some(&pending), Some(&admin));
    r.revoke(&after, &current).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["create", "test", "discard", "revoke"]);
    let (_, create) = &seen[0];
    assert_eq!(create["env"], json!("test"));
    assert_eq!(create["path"], json!("app/db"));
    assert_eq!(create["credential"], Value::Null);
    assert_eq!(create["current"]["api_key"], json!("sk_live_old_value"));
    assert_eq!(
        seen[1].1["credential"]["api_key"],
        json!("sk_live_attempt-0001_issued")
    );
    assert_eq!(
        seen[3].1["credential"]["api_key"],
        json!("sk_live_old_value")
    );
    assert_eq!(
        seen[3].1["current"]["api_key"],
        json!("sk_live_attempt-0001_issued")
    );
}

#[tokio::test]
async fn failures_map_to_kinds_without_leaking() {
    let base = serve(Seen::default()).await;
    let r = WebhookRotator;
    let current = cred(json!({"api_key": "sk_live_old_value"}));

    // Wrong signing key: the endpoint answers 401 -> Rejected.
    let settings = json!({"url": format!("{base}/rotate")});
    let wrong = admin("not-the-key-0000");
    let m = expect_err(
        r.create(&cx(&settings, Some(&current), Some(&wrong))).await,
        ErrorKind::Rejected,
        &["not-the-key-0000", "sk_live_old_value"],
    );
    assert!(m.contains("401") && m.contains("signing_key"), "{m}");

    let admin = admin(KEY);
    // 500 -> Unavailable, with a short excerpt of the answer.
    let settings = json!({"url": format!("{base}/broken")});
    let m = expect_err(
        r.create(&cx(&settings, Some(&current), Some(&admin))).await,
        ErrorKind::Unavailable,
        &[KEY, "sk_live_old_value"],
    );
    assert!(m.contains("500") && m.contains("backend exploded"), "{m}");

    // Timeout -> Unavailable.
    let settings = json!({"url": format!("{base}/slow"), "timeout": "1s"});
    let m = expect_err(
        r.test(&cx(&settings, Some(&current), Some(&admin)), &current)
            .await,
        ErrorKind::Unavailable,
        &[KEY, "sk_live_old_value"],
    );
    assert!(m.contains("1s"), "{m}");

    // 2xx that is not {"credential": {...}} -> Rejected.
    let settings = json!({"url": format!("{base}/garbage")});
    let m = expect_err(
        r.create(&cx(&settings, Some(&current), Some(&admin))).await,
        ErrorKind::Rejected,
        &[KEY],
    );
    assert!(m.contains("not JSON"), "{m}");

    // An endpoint that echoes a credential in its error: blanked out.
    let settings = json!({"url": format!("{base}/leaky")});
    let m = expect_err(
        r.create(&cx(&settings, Some(&current), Some(&admin))).await,
        ErrorKind::Rejected,
        &["sk_live_old_value"],
    );
    assert!(m.contains("400") && m.contains("cannot rotate ***"), "{m}");

    // No admin credential.
    let settings = json!({"url": format!("{base}/rotate")});
    let m = expect_err(
        r.create(&cx(&settings, None, None)).await,
        ErrorKind::Invalid,
        &[],
    );
    assert!(m.contains("signing_key"), "{m}");

    // Nothing listening.
    let port = crate::common::free_port();
    let settings = json!({"url": format!("http://127.0.0.1:{port}/rotate")});
    expect_err(
        r.create(&cx(&settings, Some(&current), Some(&admin))).await,
        ErrorKind::Unavailable,
        &[KEY],
    );
}
