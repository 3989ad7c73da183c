//! Tokens (create, look up, renew, revoke) and policies (validation, enforcement, and answers
//! that do not reveal whether a forbidden path exists).

use serde_json::{json, Value};

use crate::harness::Api;

#[tokio::test]
async fn token_lifecycle() {
    let api = Api::new().await;
    let root = api.root();
    let v = api
        .expect(
            200,
            "POST",
            "/v1/auth/token/create",
            root,
            Some(json!({"policies": [], "ttl": "1h", "display_name": "ci"})),
        )
        .await;
    let token = v["auth"]["client_token"].as_str().unwrap().to_string();
    let accessor = v["auth"]["accessor"].as_str().unwrap().to_string();
    assert!(token.starts_with("stw.") && token.len() > 40, "{token}");
    assert!(accessor.starts_with("acc."), "{accessor}");
    assert_ne!(token, accessor);
    assert_eq!(v["auth"]["lease_duration"], 3600);
    assert_eq!(v["auth"]["renewable"], true);
    assert!(v["auth"]["expire_time"].is_string(), "{v}");

    // lookup-self tells about the token, never the token itself.
    let r = api
        .call("GET", "/v1/auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(
        !r.text.contains(&token),
        "lookup-self shows the token: {}",
        r.text
    );
    assert!(
        !r.text.contains(token.trim_start_matches("stw.")),
        "{}",
        r.text
    );
    assert_eq!(r.json["data"]["accessor"], accessor.as_str());
    assert_eq!(r.json["data"]["display_name"], "ci");
    assert_eq!(r.json["data"]["revoked"], false);
    let ttl = r.json["data"]["ttl"].as_i64().unwrap();
    assert!((3590..=3600).contains(&ttl), "{ttl}");
    // Neither do the admin views.
    for (method, uri, body) in [
        ("GET", "/v1/auth/token/accessors", None),
        ("LIST", "/v1/auth/token/accessors", None),
        (
            "POST",
            "/v1/auth/token/lookup-accessor",
            Some(json!({"accessor": accessor})),
        ),
        ("GET", "/v1/sys/audit/export", None),
    ] {
        let r = api.call(method, uri, root, body).await;
        assert_eq!(r.status.as_u16(), 200, "{uri}: {}", r.text);
        assert!(r.text.contains(&accessor), "{uri} lacks the accessor");
        for secret in [token.as_str(), api.root.as_str()] {
            assert!(!r.text.contains(secret), "{uri} shows a token: {}", r.text);
        }
    }

    // Renewal.
    let r = api
        .expect(
            200,
            "POST",
            "/v1/auth/token/renew-self",
            Some(&token),
            Some(json!({"increment": "2h"})),
        )
        .await;
    let lease = r["auth"]["lease_duration"].as_i64().unwrap();
    assert!((7190..=7200).contains(&lease), "{r}");
    let r = api
        .call("POST", "/v1/auth/token/renew-self", root, Some(json!({})))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "not_renewable"),
        "{}",
        r.text
    );

    // Revoke, then every use answers token_revoked.
    let r = api
        .call("POST", "/v1/auth/token/revoke-self", Some(&token), None)
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text);
    for (method, uri) in [
        ("GET", "/v1/auth/token/lookup-self"),
        ("GET", "/v1/secret/data/a"),
        ("POST", "/v1/auth/token/revoke-self"),
        ("POST", "/v1/auth/token/renew-self"),
    ] {
        let r = api.call(method, uri, Some(&token), None).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (403, "token_revoked"),
            "{method} {uri}: {}",
            r.text
        );
    }
    let r = api
        .expect(
            200,
            "POST",
            "/v1/auth/token/lookup-accessor",
            root,
            Some(json!({"accessor": accessor})),
        )
        .await;
    assert_eq!(r["data"]["revoked"], true);

    // Revoking by accessor (admin).
    let (t2, a2) = api.token(json!({"ttl": "1h"})).await;
    api.expect(
        204,
        "POST",
        "/v1/auth/token/revoke-accessor",
        root,
        Some(json!({"accessor": a2})),
    )
    .await;
    let r = api
        .call("GET", "/v1/auth/token/lookup-self", Some(&t2), None)
        .await;
    assert_eq!(r.code(), "token_revoked");
    let r = api
        .call(
            "POST",
            "/v1/auth/token/revoke-accessor",
            root,
            Some(json!({"accessor": "acc.nothing"})),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
}

#[tokio::test]
async fn token_creation_is_limited() {
    let api = Api::new().await;
    let good = json!({"rules": [{"env": "*", "path": "**", "capabilities": ["read"]}]});
    api.expect(
        204,
        "PUT",
        "/v1/sys/policies/reader",
        api.root(),
        Some(good),
    )
    .await;
    let (user, _) = api
        .token(json!({"policies": ["reader"], "ttl": "1h"}))
        .await;
    for (body, code) in [
        (
            json!({"policies": ["root"], "ttl": "1h"}),
            "permission_denied",
        ),
        (
            json!({"policies": ["other"], "ttl": "1h"}),
            "permission_denied",
        ),
        (json!({"policies": ["reader"]}), "ttl_required"),
        (
            json!({"policies": ["reader"], "ttl": "1h", "meta": {"a": "b"}}),
            "unsupported",
        ),
    ] {
        let r = api
            .call(
                "POST",
                "/v1/auth/token/create",
                Some(&user),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.code(), code, "{body}: {}", r.text);
    }
    let r = api
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&user),
            Some(json!({"policies": ["reader"], "ttl": "30m"})),
        )
        .await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "a subset of one's own policies is fine: {}",
        r.text
    );
    // Admin-only listings refuse the user.
    for uri in [
        "/v1/auth/token/accessors",
        "/v1/sys/policies",
        "/v1/sys/audit/export",
        "/v1/sys/keys/status",
    ] {
        let r = api.call("GET", uri, Some(&user), None).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (403, "permission_denied"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn extreme_lifetimes() {
    let api = Api::new().await;
    let root = api.root();
    // Far in the future but on the calendar: stored and read back.
    let (far, _) = api.token(json!({"ttl": "80000000d"})).await;
    let r = api
        .expect(200, "GET", "/v1/auth/token/lookup-self", Some(&far), None)
        .await;
    assert!(
        r["data"]["ttl"].as_i64().unwrap() > 6_000_000_000_000,
        "{r}"
    );
    let r = api
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(&far),
            Some(json!({"increment": "90000000d"})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    // Past the end of the calendar: refused, never "no expiry" and never a crash.
    let (user, _) = api.token(json!({"ttl": "1h"})).await;
    for (who, uri, body) in [
        (
            root,
            "/v1/auth/token/create",
            json!({"ttl": "18446744073709551615"}),
        ),
        (
            root,
            "/v1/auth/token/create",
            json!({"ttl": "1h", "max_ttl": "99999999999999d"}),
        ),
        (
            Some(user.as_str()),
            "/v1/auth/token/create",
            json!({"ttl": "99999999999999d"}),
        ),
        (
            Some(user.as_str()),
            "/v1/auth/token/renew-self",
            json!({"increment": "99999999999999"}),
        ),
        (
            Some(user.as_str()),
            "/v1/auth/token/renew-self",
            json!({"increment": "18446744073709551615s"}),
        ),
    ] {
        let r = api.call("POST", uri, who, Some(body.clone())).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "invalid_ttl"),
            "{uri} {body}: {}",
            r.text
        );
    }
    let r = api
        .expect(200, "GET", "/v1/auth/token/lookup-self", Some(&user), None)
        .await;
    assert!(
        r["data"]["ttl"].as_i64().unwrap() <= 3600,
        "the failed renewals changed nothing: {r}"
    );
}

#[tokio::test]
async fn bad_policies_are_explained() {
    let api = Api::new().await;
    let root = api.root();
    let cases: &[(&str, &[u8], &str, &str)] = &[
        ("ro", b"not json", "invalid_policy", "not valid"),
        ("ro", b"{}", "invalid_policy", "missing field `rules`"),
        (
            "ro",
            br#"{"rules":[{"env":"dev","path":"x","capabilities":["fly"]}]}"#,
            "invalid_policy",
            "fly",
        ),
        (
            "ro",
            br#"{"rules":[{"env":"dev","path":"x","capabilities":[]}]}"#,
            "invalid_policy",
            "no capabilities",
        ),
        (
            "ro",
            br#"{"rules":[{"env":"dev","path":"[","capabilities":["read"]}]}"#,
            "invalid_policy",
            "not a valid glob",
        ),
        (
            "ro",
            br#"{"rules":[],"extra":1}"#,
            "invalid_policy",
            "extra",
        ),
        ("ro", b"\xff{}", "invalid_json", "UTF-8"),
        ("Bad", br#"{"rules":[]}"#, "invalid_policy_name", "Bad"),
        (
            "root",
            br#"{"rules":[]}"#,
            "invalid_policy_name",
            "reserved",
        ),
    ];
    for (name, body, code, frag) in cases {
        let r = api
            .raw(
                "PUT",
                &format!("/v1/sys/policies/{name}"),
                root,
                &[],
                body.to_vec(),
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, *code),
            "{}: {}",
            String::from_utf8_lossy(body),
            r.text
        );
        let msg = r.json["error"]["message"].as_str().unwrap();
        assert!(msg.contains(frag), "{msg:?} does not name {frag:?}");
    }
    let r = api.call("GET", "/v1/sys/policies/ro", root, None).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (404, "not_found"),
        "nothing was saved"
    );
}

#[tokio::test]
async fn policies_are_enforced() {
    let api = Api::new().await;
    let root = api.root();
    api.put("secret/data/app/db", json!({"pw": "p"})).await;
    api.put("secret/data/other/x", json!({"pw": "q"})).await;
    api.put("prod/data/app/db", json!({"pw": "prod"})).await;
    let doc = json!({
        "description": "read the app",
        "rules": [{"env": "dev", "path": "app/**", "capabilities": ["read", "list"]}]
    });
    let r = api
        .call("PUT", "/v1/sys/policies/ro", root, Some(doc.clone()))
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text);
    let p = api
        .expect(200, "GET", "/v1/sys/policies/ro", root, None)
        .await;
    assert_eq!(p["data"]["policy"], doc);
    let l = api.expect(200, "GET", "/v1/sys/policies", root, None).await;
    assert_eq!(l["data"]["keys"], json!(["ro"]));

    let (ro, _) = api.token(json!({"policies": ["ro"], "ttl": "1h"})).await;
    let tok = Some(ro.as_str());
    let r = api
        .expect(200, "GET", "/v1/secret/data/app/db", tok, None)
        .await;
    assert_eq!(r["data"]["data"]["pw"], "p");
    let r = api
        .expect(200, "LIST", "/v1/secret/metadata/app", tok, None)
        .await;
    assert_eq!(r["data"]["keys"], json!(["db"]));

    for (method, uri, body) in [
        (
            "PUT",
            "/v1/secret/data/app/db",
            Some(json!({"data": {"pw": "x"}})),
        ),
        (
            "POST",
            "/v1/secret/data/app/new",
            Some(json!({"value": "x"})),
        ),
        ("DELETE", "/v1/secret/data/app/db", None),
        (
            "POST",
            "/v1/secret/destroy/app/db",
            Some(json!({"versions": [1]})),
        ),
        (
            "POST",
            "/v1/secret/rollback/app/db",
            Some(json!({"version": 1})),
        ),
        ("DELETE", "/v1/secret/metadata/app/db", None),
        (
            "POST",
            "/v1/secret/metadata/app/db",
            Some(json!({"max_versions": 1})),
        ),
        ("PUT", "/v1/sys/policies/ro", Some(doc.clone())),
        ("POST", "/v1/sys/seal", None),
    ] {
        let r = api.call(method, uri, tok, body).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (403, "permission_denied"),
            "{method} {uri}: {}",
            r.text
        );
    }
    // Nothing changed.
    let r = api
        .expect(200, "GET", "/v1/secret/data/app/db", root, None)
        .await;
    assert_eq!(r["data"]["metadata"]["version"], 1);

    // A forbidden read answers the same whether or not the secret (or version) exists.
    let answer = |r: crate::harness::Resp| -> (u16, Value, Value) {
        (
            r.status.as_u16(),
            r.json["error"]["code"].clone(),
            r.json["error"]["message"].clone(),
        )
    };
    for (exists, missing) in [
        ("/v1/secret/data/other/x", "/v1/secret/data/other/nope"),
        ("/v1/prod/data/app/db", "/v1/prod/data/app/nope"),
        (
            "/v1/secret/metadata/other/x",
            "/v1/secret/metadata/other/nope",
        ),
        (
            "/v1/secret/data/other/x?version=1",
            "/v1/secret/data/other/x?version=99",
        ),
    ] {
        let a = answer(api.call("GET", exists, tok, None).await);
        let b = answer(api.call("GET", missing, tok, None).await);
        assert_eq!(a.0, 403, "{exists}: {a:?}");
        assert_eq!(a.1, "permission_denied");
        assert_eq!(a, b, "{exists} vs {missing}");
    }
    let a = answer(
        api.call("LIST", "/v1/secret/metadata/other", tok, None)
            .await,
    );
    let b = answer(
        api.call("LIST", "/v1/secret/metadata/nothing", tok, None)
            .await,
    );
    assert_eq!((a.0, &a), (403, &b));

    // Deleting the policy takes the grant away at once.
    api.expect(204, "DELETE", "/v1/sys/policies/ro", root, None)
        .await;
    let r = api.call("GET", "/v1/secret/data/app/db", tok, None).await;
    assert_eq!(r.code(), "permission_denied");
    let r = api.call("DELETE", "/v1/sys/policies/ro", root, None).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
}
