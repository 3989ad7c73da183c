//! The one error shape, whoever produced the error (our handlers, the engine, axum's router,
//! its extractors or the body limit), and the request id that ties an answer to the logs.

use serde_json::json;

use crate::harness::{assert_error_shape, Api, MAX_BODY, MAX_VALUE};

/// (method, uri, token?, body, status, code, fragment of the message).
type Case = (
    &'static str,
    &'static str,
    bool,
    Vec<u8>,
    u16,
    &'static str,
    &'static str,
);

fn cases() -> Vec<Case> {
    let big = |n: usize| {
        let mut b = br#"{"value":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', n));
        b.extend(br#""}"#);
        b
    };
    vec![
        // Produced by the router.
        (
            "GET",
            "/v1/nope",
            true,
            vec![],
            404,
            "unknown_route",
            "no such API route",
        ),
        (
            "GET",
            "/nope",
            false,
            vec![],
            404,
            "unknown_route",
            "no such API route",
        ),
        (
            "GET",
            "/v1/auth/token/nope",
            true,
            vec![],
            404,
            "unknown_route",
            "no such API route",
        ),
        (
            "POST",
            "/v1/sys/health",
            true,
            vec![],
            405,
            "method_not_allowed",
            "HTTP method",
        ),
        (
            "DELETE",
            "/v1/auth/token/lookup-self",
            true,
            vec![],
            405,
            "method_not_allowed",
            "HTTP method",
        ),
        // Produced by our dispatchers.
        (
            "GET",
            "/v1/secret/bogus/a",
            true,
            vec![],
            404,
            "unknown_route",
            "unknown operation",
        ),
        (
            "PATCH",
            "/v1/secret/data/a",
            true,
            vec![],
            405,
            "method_not_allowed",
            "PATCH",
        ),
        (
            "PATCH",
            "/v1/sys/policies",
            true,
            vec![],
            405,
            "method_not_allowed",
            "GET or LIST",
        ),
        (
            "GET",
            "/v1/nomount/data/a",
            true,
            vec![],
            404,
            "unknown_mount",
            "\"nomount\"",
        ),
        (
            "GET",
            "/v1/secret/data/a?version=x",
            true,
            vec![],
            400,
            "invalid_query",
            "whole number",
        ),
        (
            "GET",
            "/v1/secret/data/../etc",
            true,
            vec![],
            400,
            "invalid_path",
            "..",
        ),
        // Produced by the body limit, before any handler code runs.
        (
            "PUT",
            "/v1/secret/data/big",
            true,
            big(MAX_BODY + 1),
            413,
            "body_too_large",
            "larger than",
        ),
        (
            "PUT",
            "/v1/sys/policies/big",
            true,
            big(MAX_BODY * 4),
            413,
            "body_too_large",
            "larger than",
        ),
        // The engine's own limit on values.
        (
            "PUT",
            "/v1/secret/data/big",
            true,
            big(MAX_VALUE + 1),
            413,
            "value_too_large",
            "limit",
        ),
        // Body decoding.
        (
            "PUT",
            "/v1/secret/data/a",
            true,
            b"{".to_vec(),
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (
            "PUT",
            "/v1/secret/data/a",
            true,
            b"[1,2]".to_vec(),
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (
            "PUT",
            "/v1/secret/data/a",
            true,
            br#"{"data":{},"surprise":1}"#.to_vec(),
            400,
            "invalid_json",
            "unknown field `surprise`",
        ),
        (
            "PUT",
            "/v1/secret/data/a",
            true,
            br#"{"data":{},"options":{"cas":1,"x":2}}"#.to_vec(),
            400,
            "invalid_json",
            "unknown field `x`",
        ),
        (
            "PUT",
            "/v1/secret/data/a",
            true,
            br#"{"data":{},"value":"x"}"#.to_vec(),
            400,
            "invalid_body",
            "exactly one",
        ),
        (
            "PUT",
            "/v1/secret/data/a",
            true,
            br#"{"value":42}"#.to_vec(),
            400,
            "invalid_value",
            "string or a JSON object",
        ),
        (
            "POST",
            "/v1/auth/token/create",
            true,
            br#"{"policy":["x"]}"#.to_vec(),
            400,
            "invalid_json",
            "unknown field `policy`",
        ),
        (
            "POST",
            "/v1/auth/token/create",
            true,
            br#"{"ttl":"soon"}"#.to_vec(),
            400,
            "invalid_ttl",
            "soon",
        ),
        (
            "POST",
            "/v1/sys/unseal",
            false,
            b"\xff\xfe".to_vec(),
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (
            "POST",
            "/v1/sys/policies/x",
            true,
            b"\xff\xfe".to_vec(),
            400,
            "invalid_json",
            "UTF-8",
        ),
        (
            "POST",
            "/v1/secret/delete/a",
            true,
            br#"{"versions":[]}"#.to_vec(),
            400,
            "missing_versions",
            "at least one",
        ),
        // Authentication: 403 as Vault answers, the code tells which.
        (
            "GET",
            "/v1/secret/data/a",
            false,
            vec![],
            403,
            "missing_token",
            "no token",
        ),
        (
            "GET",
            "/v1/auth/token/lookup-self",
            false,
            vec![],
            403,
            "missing_token",
            "no token",
        ),
        (
            "GET",
            "/v1/sys/policies",
            false,
            vec![],
            403,
            "missing_token",
            "no token",
        ),
        // Not found.
        (
            "GET",
            "/v1/secret/data/never/written",
            true,
            vec![],
            404,
            "not_found",
            "no secret at dev/never/written",
        ),
        (
            "GET",
            "/v1/secret/metadata/never",
            true,
            vec![],
            404,
            "not_found",
            "no secret",
        ),
        (
            "LIST",
            "/v1/secret/metadata/never",
            true,
            vec![],
            404,
            "not_found",
            "nothing under",
        ),
    ]
}

#[tokio::test]
async fn every_error_has_the_one_shape() {
    let api = Api::new().await;
    for (method, uri, auth, body, status, code, frag) in cases() {
        let token = auth.then_some(api.root.as_str());
        let r = api.raw(method, uri, token, &[], body).await;
        assert_eq!(r.status.as_u16(), status, "{method} {uri}: {}", r.text);
        // `raw` has checked the shape already; check the content too.
        let (got_code, msg) = assert_error_shape(&r, uri);
        assert_eq!(got_code, code, "{method} {uri}: {}", r.text);
        assert!(msg.contains(frag), "{method} {uri}: {msg:?} lacks {frag:?}");
        assert!(
            !msg.contains(&api.root),
            "{method} {uri}: the message shows the token"
        );
    }
}

#[tokio::test]
async fn bogus_and_malformed_tokens_are_invalid() {
    let api = Api::new().await;
    for (header, value) in [
        ("x-vault-token", "stw.bogus"),
        ("x-vault-token", "not even a token"),
        ("authorization", "Bearer stw.bogus"),
        ("authorization", "Bearer    stw.bogus   "),
    ] {
        let r = api
            .raw("GET", "/v1/secret/data/a", None, &[(header, value)], vec![])
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (403, "invalid_token"),
            "{header}: {value}: {}",
            r.text
        );
    }
    // An empty token, or an Authorization header that is not Bearer, is no token.
    for (header, value) in [
        ("x-vault-token", ""),
        ("authorization", "Basic dXNlcjpwdw=="),
    ] {
        let r = api
            .raw("GET", "/v1/secret/data/a", None, &[(header, value)], vec![])
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (403, "missing_token"),
            "{header}: {value}"
        );
    }
    // Both header forms carry a good token.
    api.put("secret/data/a", json!({"k": "v"})).await;
    let bearer = format!("Bearer {}", api.root);
    for (header, value) in [
        ("x-vault-token", api.root.as_str()),
        ("authorization", bearer.as_str()),
    ] {
        let r = api
            .raw("GET", "/v1/secret/data/a", None, &[(header, value)], vec![])
            .await;
        assert_eq!(r.status.as_u16(), 200, "{header}: {}", r.text);
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_replaced() {
    let api = Api::new().await;
    let longest = "a".repeat(128);
    for id in ["abc-123", "req_1.2:3", longest.as_str(), "0"] {
        for (uri, want_status) in [
            ("/v1/secret/data/missing", 404),
            ("/v1/nope", 404),
            ("/v1/sys/policies", 200),
        ] {
            let r = api
                .raw("GET", uri, api.root(), &[("x-request-id", id)], vec![])
                .await;
            assert_eq!(r.status.as_u16(), want_status, "{uri}");
            assert_eq!(r.request_id(), id, "{uri}: header");
            let body_id = if want_status == 200 {
                &r.json["request_id"]
            } else {
                &r.json["error"]["request_id"]
            };
            assert_eq!(body_id, id, "{uri}: body");
        }
    }
    let too_long = "a".repeat(129);
    for id in [
        too_long.as_str(),
        "has space",
        "semi;colon",
        "slash/y",
        "quote\"",
        "",
        "percent%20",
    ] {
        let r = api
            .raw(
                "GET",
                "/v1/secret/data/missing",
                api.root(),
                &[("x-request-id", id)],
                vec![],
            )
            .await;
        let got = r.request_id().to_string();
        assert_ne!(got, id);
        assert!(
            uuid::Uuid::parse_str(&got).is_ok(),
            "{id:?} replaced by {got:?}, not a uuid"
        );
        assert_eq!(r.json["error"]["request_id"], got.as_str());
    }
    // A header value that is not even visible ASCII.
    let r = api
        .send(
            axum::http::Request::builder()
                .uri("/v1/nope")
                .header(
                    "x-request-id",
                    axum::http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
                )
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert!(uuid::Uuid::parse_str(r.request_id()).is_ok());
    // Without a header, each request gets a fresh uuid.
    let a = api.call("GET", "/v1/nope", None, None).await;
    let b = api.call("GET", "/v1/nope", None, None).await;
    assert_ne!(a.request_id(), b.request_id());
    assert!(uuid::Uuid::parse_str(a.request_id()).is_ok());
}

#[tokio::test]
async fn request_id_reaches_the_audit_log() {
    let api = Api::new().await;
    api.raw(
        "PUT",
        "/v1/secret/data/a",
        api.root(),
        &[("x-request-id", "trace-me-1")],
        b"{oops".to_vec(),
    )
    .await;
    api.raw(
        "GET",
        "/v1/secret/data/nothing",
        api.root(),
        &[("x-request-id", "trace-me-2")],
        vec![],
    )
    .await;
    let log = api.audit().await;
    let find = |id: &str| {
        log.iter()
            .filter(|e| e["request_id"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let one = find("trace-me-1");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["outcome"], "invalid_json");
    assert_eq!(one[0]["action"], "http.put /v1/{mount}/{op}/{*path}");
    let two = find("trace-me-2");
    assert_eq!(two.len(), 1, "{two:?}");
    assert_eq!(two[0]["outcome"], "not_found");
    assert_eq!(two[0]["action"], "secret.read");
}
