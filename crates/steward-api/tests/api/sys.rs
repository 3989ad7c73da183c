//! System behaviour: sealing, the audit fallback for requests the engine never saw, metrics,
//! probes and the OpenAPI document.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::harness::{Api, MAX_BODY};

#[tokio::test]
async fn sealed_server_answers_503() {
    let api = Api::new().await;
    let root = api.root();
    api.put("secret/data/s", json!({"k": "v"})).await;
    let h = api.expect(200, "GET", "/v1/sys/health", None, None).await;
    assert_eq!(
        (&h["initialized"], &h["sealed"]),
        (&json!(true), &json!(false)),
        "{h}"
    );
    assert_eq!(h["version"], "test");
    assert_eq!(h["storage_type"], "sqlite");

    // Sealing needs a token allowed to.
    let (user, _) = api.token(json!({"ttl": "1h"})).await;
    let r = api.call("POST", "/v1/sys/seal", Some(&user), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "permission_denied"));
    let r = api.call("PUT", "/v1/sys/seal", None, None).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "missing_token"));
    assert!(!api.engine.is_sealed());

    let r = api.call("POST", "/v1/sys/seal", root, None).await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text);
    assert!(api.engine.is_sealed());

    let h = api.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(h.status.as_u16(), 503);
    assert_eq!(
        (&h.json["sealed"], &h.json["initialized"]),
        (&json!(true), &json!(true)),
        "{}",
        h.text
    );
    // Vault's override of the sealed status code.
    let h = api
        .call("GET", "/v1/sys/health?sealedcode=200", None, None)
        .await;
    assert_eq!(h.status.as_u16(), 200);
    let s = api
        .expect(200, "GET", "/v1/sys/seal-status", None, None)
        .await;
    assert_eq!(
        (&s["sealed"], &s["initialized"], &s["type"]),
        (&json!(true), &json!(true), &json!("key")),
        "{s}"
    );
    let r = api.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status.as_u16(), 503);
    assert_eq!(
        api.call("GET", "/livez", None, None).await.status.as_u16(),
        200
    );

    for (method, uri, body) in [
        ("GET", "/v1/secret/data/s", None),
        (
            "PUT",
            "/v1/secret/data/s",
            Some(json!({"data": {"k": "w"}})),
        ),
        ("LIST", "/v1/secret/metadata/", None),
        ("GET", "/v1/secret/metadata/s", None),
        ("GET", "/v1/auth/token/lookup-self", None),
        ("POST", "/v1/auth/token/create", Some(json!({}))),
        ("GET", "/v1/sys/audit/export", None),
        ("GET", "/v1/sys/policies", None),
        ("POST", "/v1/sys/seal", None),
    ] {
        let r = api.call(method, uri, root, body).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (503, "sealed"),
            "{method} {uri}: {}",
            r.text
        );
        assert!(r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unseal"));
    }
    // Requests refused before the engine still answer as usual.
    let r = api.call("GET", "/v1/nope", root, None).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "unknown_route"));
    let r = api
        .raw("PUT", "/v1/secret/data/s", root, &[], b"{".to_vec())
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_json"));
    let text = api.metrics_text().await;
    assert!(text.contains("steward_sealed 1"), "{text}");
    // Sealed is not a store error.
    assert!(
        text.lines().any(|l| l == "steward_store_errors_total 0"),
        "{text}"
    );

    // Unsealing with the key brings everything back.
    api.engine
        .unseal_with_key(api.unseal_key.clone())
        .await
        .unwrap();
    let r = api
        .expect(200, "GET", "/v1/secret/data/s", root, None)
        .await;
    assert_eq!(r["data"]["data"]["k"], "v");
    assert_eq!(
        api.call("GET", "/v1/sys/health", None, None)
            .await
            .status
            .as_u16(),
        200
    );
    // The seal request itself was audited before the keys were dropped.
    let log = api.audit().await;
    let seals: Vec<&Value> = log.iter().filter(|e| e["action"] == "sys.seal").collect();
    let outcomes: Vec<&Value> = seals.iter().map(|e| &e["outcome"]).collect();
    assert_eq!(
        outcomes,
        [
            &json!("permission_denied"),
            &json!("missing_token"),
            &json!("ok")
        ]
    );
}

/// Audit entries `request` adds, measured with two exports (the first export's own entry is
/// in the second export, so it is subtracted).
async fn entries_added(api: &Api, method: &str, uri: &str, body: Vec<u8>) -> Vec<Value> {
    let before = api.audit().await;
    api.raw(
        method,
        uri,
        api.root(),
        &[("x-request-id", "counted")],
        body,
    )
    .await;
    let after = api.audit().await;
    assert_eq!(after[before.len()]["action"], "audit.export");
    after[before.len() + 1..].to_vec()
}

#[tokio::test]
async fn every_v1_request_leaves_exactly_one_audit_entry() {
    let api = Api::new().await;
    api.put("secret/data/x", json!({"k": 1})).await;
    let huge = vec![b' '; MAX_BODY + 10];
    // (method, uri, body, entries, outcome of the entry, action of the entry)
    type Case = (
        &'static str,
        &'static str,
        Vec<u8>,
        usize,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        // Refused by the API before any engine operation: audited by the middleware.
        (
            "PUT",
            "/v1/secret/data/x",
            b"{not json".to_vec(),
            1,
            "invalid_json",
            "http.put /v1/{mount}/{op}/{*path}",
        ),
        (
            "PUT",
            "/v1/secret/data/x",
            br#"{"data":{},"nope":1}"#.to_vec(),
            1,
            "invalid_json",
            "http.put /v1/{mount}/{op}/{*path}",
        ),
        (
            "GET",
            "/v1/nope",
            vec![],
            1,
            "unknown_route",
            "http.get unmatched",
        ),
        (
            "GET",
            "/v1/a/b/c/d",
            vec![],
            1,
            "unknown_mount",
            "http.get /v1/{mount}/{op}/{*path}",
        ),
        (
            "POST",
            "/v1/sys/keys/status",
            vec![],
            1,
            "method_not_allowed",
            "http.post /v1/sys/keys/status",
        ),
        (
            "PUT",
            "/v1/secret/data/x",
            huge,
            1,
            "body_too_large",
            "http.put /v1/{mount}/{op}/{*path}",
        ),
        (
            "GET",
            "/v1/secret/data/x?version=nine",
            vec![],
            1,
            "invalid_query",
            "http.get /v1/{mount}/{op}/{*path}",
        ),
        (
            "POST",
            "/v1/auth/token/create",
            b"[]".to_vec(),
            1,
            "invalid_json",
            "http.post /v1/auth/token/create",
        ),
        // Audited by the engine, once.
        ("GET", "/v1/secret/data/x", vec![], 1, "ok", "secret.read"),
        (
            "GET",
            "/v1/secret/data/missing",
            vec![],
            1,
            "not_found",
            "secret.read",
        ),
        (
            "PUT",
            "/v1/secret/data/x",
            br#"{"data":{"k":2}}"#.to_vec(),
            1,
            "ok",
            "secret.write",
        ),
        (
            "PUT",
            "/v1/secret/data/x",
            br#"{"value":1}"#.to_vec(),
            1,
            "invalid_value",
            "secret.write",
        ),
        (
            "PUT",
            "/v1/sys/policies/p",
            b"{}".to_vec(),
            1,
            "invalid_policy",
            "policy.write",
        ),
        (
            "GET",
            "/v1/auth/token/lookup-self",
            vec![],
            1,
            "ok",
            "token.lookup_self",
        ),
        // Unaudited: probes, seal status, the API description, and anything outside /v1.
        ("GET", "/v1/sys/health", vec![], 0, "", ""),
        ("HEAD", "/v1/sys/health", vec![], 0, "", ""),
        ("GET", "/v1/sys/seal-status", vec![], 0, "", ""),
        ("GET", "/v1/openapi.json", vec![], 0, "", ""),
        ("GET", "/metrics", vec![], 0, "", ""),
        ("GET", "/livez", vec![], 0, "", ""),
        ("GET", "/readyz", vec![], 0, "", ""),
        ("GET", "/nope", vec![], 0, "", ""),
    ];
    for (method, uri, body, n, outcome, action) in cases {
        let added = entries_added(&api, method, uri, body).await;
        assert_eq!(added.len(), n, "{method} {uri}: {added:#?}");
        if n == 1 {
            let e = &added[0];
            assert_eq!(
                (e["outcome"].as_str(), e["action"].as_str()),
                (Some(outcome), Some(action)),
                "{method} {uri}: {e}"
            );
            assert_eq!(e["request_id"], "counted");
            assert_ne!(
                e["actor"], "anonymous",
                "the root token's accessor is the actor: {e}"
            );
        }
    }
    // Without a token the actor is anonymous.
    let before = api.audit().await.len();
    api.raw("PUT", "/v1/secret/data/x", None, &[], b"{".to_vec())
        .await;
    let log = api.audit().await;
    assert_eq!(log.len(), before + 2);
    assert_eq!(log[before + 1]["actor"], "anonymous");
    // The chain is intact.
    let v = api
        .expect(200, "POST", "/v1/sys/audit/verify", api.root(), None)
        .await;
    assert_eq!(v["data"]["ok"], true, "{v}");
}

#[tokio::test]
async fn metrics_count_by_matched_route() {
    let api = Api::new().await;
    api.put("secret/data/m/x", json!({"k": 1})).await;
    api.call("GET", "/v1/secret/data/m/x", api.root(), None)
        .await;
    api.call("GET", "/v1/secret/data/m/missing", api.root(), None)
        .await;
    api.call("GET", "/v1/nope", api.root(), None).await;
    api.call("GET", "/v1/sys/health", None, None).await;
    let text = api.metrics_text().await;
    for line in [
        r#"steward_http_requests_total{method="PUT",route="/v1/{mount}/{op}/{*path}",status="200"} 1"#,
        r#"steward_http_requests_total{method="GET",route="/v1/{mount}/{op}/{*path}",status="200"} 1"#,
        r#"steward_http_requests_total{method="GET",route="/v1/{mount}/{op}/{*path}",status="404"} 1"#,
        r#"steward_http_requests_total{method="GET",route="/v1/sys/health",status="200"} 1"#,
        // Unknown routes share one label, so a scanner cannot blow up the series count.
        r#"steward_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"steward_http_request_duration_seconds_count{route="/v1/{mount}/{op}/{*path}"} 3"#,
        r#"steward_sealed 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.contains(
            r#"steward_http_request_duration_seconds_bucket{le="0.005",route="/v1/sys/health"}"#
        ) || text.contains(
            r#"steward_http_request_duration_seconds_bucket{route="/v1/sys/health",le="0.005"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE steward_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(!text.contains("m/missing"), "paths are never labels");
    // The /metrics request itself is counted once it is answered.
    let after = api.metrics.render();
    assert!(
        after.contains(
            r#"steward_http_requests_total{method="GET",route="/metrics",status="200"} 1"#
        ),
        "{after}"
    );
}

/// The routes registered in `app()`, read from its source so that a new route shows up here.
fn registered_routes() -> BTreeMap<String, BTreeSet<String>> {
    let src = include_str!("../../src/lib.rs");
    let mut routes = BTreeMap::new();
    for chunk in src.split(".route(").skip(1) {
        let chunk = chunk.trim_start();
        let path = chunk
            .strip_prefix('"')
            .and_then(|c| c.split('"').next())
            .expect("route path literal");
        // The method router: up to the closing parenthesis of `.route(`.
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("balanced .route(...)");
        let methods: BTreeSet<String> = ["get", "post", "put", "delete", "head", "patch", "any"]
            .into_iter()
            .filter(|m| {
                chunk[..end].contains(&format!(" {m}("))
                    || chunk[..end].contains(&format!(".{m}("))
                    || chunk[..end].contains(&format!("({m}("))
                    || chunk[..end].contains(&format!(",{m}("))
            })
            .map(str::to_string)
            .collect();
        assert!(!methods.is_empty(), "no methods found for {path}");
        routes.insert(path.to_string(), methods);
    }
    routes
}

/// Every route of `app()` and the documented paths that describe it. A new route must be added
/// here, and it must be documented.
const ROUTE_DOCS: &[(&str, &[&str])] = &[
    ("/livez", &["/livez"]),
    ("/readyz", &["/readyz"]),
    ("/metrics", &["/metrics"]),
    ("/status", &["/status"]),
    ("/v1/openapi.json", &["/v1/openapi.json"]),
    ("/v1/sys/health", &["/v1/sys/health"]),
    ("/v1/sys/seal-status", &["/v1/sys/seal-status"]),
    ("/v1/sys/init", &["/v1/sys/init"]),
    ("/v1/sys/unseal", &["/v1/sys/unseal"]),
    ("/v1/sys/seal", &["/v1/sys/seal"]),
    ("/v1/sys/environments", &["/v1/sys/environments"]),
    ("/v1/sys/keys/rotate", &["/v1/sys/keys/rotate"]),
    ("/v1/sys/keys/status", &["/v1/sys/keys/status"]),
    ("/v1/sys/audit/export", &["/v1/sys/audit/export"]),
    ("/v1/sys/audit/verify", &["/v1/sys/audit/verify"]),
    ("/v1/sys/audit-hash", &["/v1/sys/audit-hash"]),
    ("/v1/sys/policies", &["/v1/sys/policies"]),
    ("/v1/sys/policies/{name}", &["/v1/sys/policies/{name}"]),
    ("/v1/sys/template/render", &["/v1/sys/template/render"]),
    ("/v1/sys/rotation/status", &["/v1/sys/rotation/status"]),
    (
        "/v1/sys/rotation/{op}/{env}/{*path}",
        &[
            "/v1/sys/rotation/config/{env}/{path}",
            "/v1/sys/rotation/rotate/{env}/{path}",
            "/v1/sys/rotation/rollback/{env}/{path}",
        ],
    ),
    ("/v1/sys/events", &["/v1/sys/events"]),
    ("/v1/sys/events/stream", &["/v1/sys/events/stream"]),
    ("/v1/sys/expiring", &["/v1/sys/expiring"]),
    ("/v1/sys/export/{env}", &["/v1/sys/export/{env}"]),
    ("/v1/auth/token/create", &["/v1/auth/token/create"]),
    (
        "/v1/auth/token/lookup-self",
        &["/v1/auth/token/lookup-self"],
    ),
    (
        "/v1/auth/token/lookup-accessor",
        &["/v1/auth/token/lookup-accessor"],
    ),
    ("/v1/auth/token/renew-self", &["/v1/auth/token/renew-self"]),
    (
        "/v1/auth/token/revoke-self",
        &["/v1/auth/token/revoke-self"],
    ),
    (
        "/v1/auth/token/revoke-accessor",
        &["/v1/auth/token/revoke-accessor"],
    ),
    ("/v1/auth/token/accessors", &["/v1/auth/token/accessors"]),
    ("/api/v2/alerts", &["/api/v2/alerts"]),
    ("/api/v2/alerts/groups", &["/api/v2/alerts/groups"]),
    ("/api/v2/silences", &["/api/v2/silences"]),
    ("/api/v2/silence/{id}", &["/api/v2/silence/{id}"]),
    ("/api/v2/status", &["/api/v2/status"]),
    ("/api/v2/receivers", &["/api/v2/receivers"]),
    ("/v1/sys/alerting/alerts", &["/v1/sys/alerting/alerts"]),
    (
        "/v1/sys/alerting/alerts/{fp}",
        &["/v1/sys/alerting/alerts/{fp}"],
    ),
    (
        "/v1/sys/alerting/alerts/{fp}/ack",
        &["/v1/sys/alerting/alerts/{fp}/ack"],
    ),
    ("/v1/sys/alerting/groups", &["/v1/sys/alerting/groups"]),
    (
        "/v1/sys/alerting/dead-letters",
        &["/v1/sys/alerting/dead-letters"],
    ),
    (
        "/v1/sys/alerting/dead-letters/replay",
        &["/v1/sys/alerting/dead-letters/replay"],
    ),
    ("/v1/sys/alerting/outbox", &["/v1/sys/alerting/outbox"]),
    ("/v1/sys/backup/sources", &["/v1/sys/backup/sources"]),
    ("/v1/sys/backup/runs", &["/v1/sys/backup/runs"]),
    ("/v1/sys/backup/run", &["/v1/sys/backup/run"]),
    ("/v1/sys/backup/check", &["/v1/sys/backup/check"]),
    ("/v1/sys/backup/prune", &["/v1/sys/backup/prune"]),
    ("/v1/sys/backup/copy", &["/v1/sys/backup/copy"]),
    ("/v1/sys/backup/restore", &["/v1/sys/backup/restore"]),
    ("/v1/sys/backup/snapshots", &["/v1/sys/backup/snapshots"]),
    ("/v1/sys/drill/run", &["/v1/sys/drill/run"]),
    ("/v1/sys/dr/report", &["/v1/sys/dr/report"]),
    ("/v1/checks", &["/v1/checks"]),
    ("/v1/checks/{name}", &["/v1/checks/{name}"]),
    ("/v1/checks/{name}/run", &["/v1/checks/{name}/run"]),
    ("/v1/checks/{name}/beat", &["/v1/checks/{name}/beat"]),
    ("/v1/slos", &["/v1/slos"]),
    ("/v1/sys/alerting/log", &["/v1/sys/alerting/log"]),
    (
        "/v1/sys/alerting/notify-test/{channel}",
        &["/v1/sys/alerting/notify-test/{channel}"],
    ),
    (
        "/v1/sys/alerting/maintenance",
        &["/v1/sys/alerting/maintenance"],
    ),
    (
        "/v1/sys/alerting/maintenance/{id}",
        &["/v1/sys/alerting/maintenance/{id}"],
    ),
    // The KV dispatchers: `/v1/{mount}/{op}[/]` only lists the root.
    ("/v1/{mount}/{op}", &["/v1/{mount}/metadata/{prefix}"]),
    ("/v1/{mount}/{op}/", &["/v1/{mount}/metadata/{prefix}"]),
    (
        "/v1/{mount}/{op}/{*path}",
        &[
            "/v1/{mount}/data/{path}",
            "/v1/{mount}/metadata/{path}",
            "/v1/{mount}/metadata/{prefix}",
            "/v1/{mount}/{op}/{path}",
            "/v1/{mount}/rollback/{path}",
        ],
    ),
];

#[tokio::test]
async fn openapi_documents_every_route() {
    let api = Api::new().await;
    let r = api.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(r.status.as_u16(), 200);
    let doc = r.json;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/v1/{mount}/data/{path}",
        "/v1/auth/token/create",
        "/v1/sys/health",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    assert!(paths["/v1/{mount}/data/{path}"].get("get").is_some());
    assert!(paths["/v1/{mount}/data/{path}"].get("put").is_some());

    let registered = registered_routes();
    let listed: BTreeSet<&str> = ROUTE_DOCS.iter().map(|(r, _)| *r).collect();
    let registered_names: BTreeSet<&str> = registered.keys().map(String::as_str).collect();
    assert_eq!(
        registered_names, listed,
        "app() and ROUTE_DOCS disagree: add new routes to ROUTE_DOCS (and document them)"
    );
    for (route, docs) in ROUTE_DOCS {
        let methods = &registered[*route];
        for d in *docs {
            let item = paths.get(*d).unwrap_or_else(|| {
                panic!("route {route} is not documented (no {d} in /v1/openapi.json)")
            });
            let documented: BTreeSet<&str> = item
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert!(
                methods.contains("any") || methods.iter().any(|m| documented.contains(m.as_str())),
                "{route}: routed methods {methods:?}, documented {documented:?}"
            );
        }
    }
    // Nothing documented that is not routed.
    let documented_all: BTreeSet<&str> = ROUTE_DOCS
        .iter()
        .flat_map(|(_, d)| d.iter().copied())
        .collect();
    for p in paths.keys() {
        assert!(
            documented_all.contains(p.as_str()),
            "{p} is documented but not routed"
        );
    }
    // Every documented operation says what it answers.
    for (p, item) in paths {
        for (m, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{m} {p} has no responses"
            );
        }
    }
}

#[tokio::test]
async fn probes_and_environments() {
    let api = Api::new().await;
    assert_eq!(api.call("GET", "/livez", None, None).await.text, "ok\n");
    let r = api.call("GET", "/readyz", None, None).await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (200, "ready\n"));
    let e = api
        .expect(200, "GET", "/v1/sys/environments", api.root(), None)
        .await;
    assert_eq!(
        e["data"],
        json!({"environments": ["dev", "staging", "prod"], "default_environment": "dev"})
    );
    let r = api.call("GET", "/v1/sys/environments", None, None).await;
    assert_eq!(r.code(), "missing_token");
    // Probes keep plain bodies, even for a wrong method; they still carry the request id.
    for uri in ["/livez", "/readyz", "/metrics"] {
        let r = api
            .raw("PATCH", uri, None, &[("x-request-id", "probe-1")], vec![])
            .await;
        assert_eq!(r.status.as_u16(), 405, "{uri}");
        assert_eq!(r.request_id(), "probe-1");
        assert!(!r.text.starts_with('{'), "{uri}: {}", r.text);
    }
}
