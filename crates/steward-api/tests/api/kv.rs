//! The Vault KV v2 shapes: data, metadata, listing, check-and-set, delete/undelete/destroy,
//! rollback, and mounts (`secret` = the default environment, each environment its own mount).

use serde_json::{json, Value};

use crate::harness::Api;

#[tokio::test]
async fn write_then_read_object_and_string_values() {
    let api = Api::new().await;
    let root = api.root();
    let w = api
        .expect(
            200,
            "PUT",
            "/v1/secret/data/a/b",
            root,
            Some(json!({"data": {"user": "u", "pw": "p"}})),
        )
        .await;
    assert_eq!(w["data"]["version"], 1, "{w}");
    assert_eq!(w["data"]["destroyed"], false);
    assert!(w["data"]["created_time"].is_string(), "{w}");
    for key in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(w.get(key).is_some(), "the Vault envelope lacks {key}: {w}");
    }

    let r = api
        .expect(200, "GET", "/v1/secret/data/a/b", root, None)
        .await;
    assert_eq!(r["data"]["data"], json!({"user": "u", "pw": "p"}), "{r}");
    assert_eq!(r["data"]["metadata"]["version"], 1);
    assert_eq!(r["data"]["metadata"]["destroyed"], false);
    assert_eq!(r["data"]["metadata"]["deletion_time"], "");
    assert_eq!(r["data"]["value_type"], "object");

    // POST writes too; Steward's {"value": "..."} form reads back as data.value.
    let w = api
        .expect(
            200,
            "POST",
            "/v1/secret/data/a/b",
            root,
            Some(json!({"value": "s3cret"})),
        )
        .await;
    assert_eq!(w["data"]["version"], 2);
    let r = api
        .expect(200, "GET", "/v1/secret/data/a/b", root, None)
        .await;
    assert_eq!(r["data"]["data"], json!({"value": "s3cret"}), "{r}");
    assert_eq!(r["data"]["data"]["value"], "s3cret");
    assert_eq!(r["data"]["value_type"], "string");
    assert_eq!(r["data"]["metadata"]["version"], 2);

    // {"value": {...}} is an object value.
    api.expect(
        200,
        "PUT",
        "/v1/secret/data/a/c",
        root,
        Some(json!({"value": {"k": "v"}})),
    )
    .await;
    let r = api
        .expect(200, "GET", "/v1/secret/data/a/c", root, None)
        .await;
    assert_eq!(
        (&r["data"]["data"], &r["data"]["value_type"]),
        (&json!({"k": "v"}), &json!("object"))
    );

    // Older versions stay readable with ?version=; version=0 means the latest.
    let r = api
        .expect(200, "GET", "/v1/secret/data/a/b?version=1", root, None)
        .await;
    assert_eq!(r["data"]["data"]["user"], "u");
    assert_eq!(r["data"]["metadata"]["version"], 1);
    let r = api
        .expect(200, "GET", "/v1/secret/data/a/b?version=0", root, None)
        .await;
    assert_eq!(r["data"]["metadata"]["version"], 2);
    let r = api
        .call("GET", "/v1/secret/data/a/b?version=9", root, None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (404, "not_found"),
        "{}",
        r.text
    );
}

/// A scripted conversation, as a Vault client has it: (method, uri, body, status, JSON pointer
/// into the answer, expected value there).
#[tokio::test]
async fn vault_kv_conversation() {
    let api = Api::new().await;
    type Step = (
        &'static str,
        &'static str,
        Option<Value>,
        u16,
        &'static str,
        Value,
    );
    let steps: Vec<Step> = vec![
        (
            "PUT",
            "/v1/secret/data/app/db",
            Some(json!({"data": {"user": "u"}})),
            200,
            "/data/version",
            json!(1),
        ),
        (
            "POST",
            "/v1/secret/data/app/db",
            Some(json!({"data": {"user": "v"}, "options": {"cas": 1}})),
            200,
            "/data/version",
            json!(2),
        ),
        (
            "GET",
            "/v1/secret/data/app/db",
            None,
            200,
            "/data/data",
            json!({"user": "v"}),
        ),
        (
            "GET",
            "/v1/secret/data/app/db?version=1",
            None,
            200,
            "/data/data/user",
            json!("u"),
        ),
        (
            "PUT",
            "/v1/secret/data/app/api_key",
            Some(json!({"value": "k"})),
            200,
            "/data/version",
            json!(1),
        ),
        (
            "GET",
            "/v1/secret/data/app/api_key",
            None,
            200,
            "/data/value_type",
            json!("string"),
        ),
        (
            "GET",
            "/v1/secret/data/app/api_key",
            None,
            200,
            "/data/data/value",
            json!("k"),
        ),
        (
            "LIST",
            "/v1/secret/metadata/",
            None,
            200,
            "/data/keys",
            json!(["app/"]),
        ),
        (
            "GET",
            "/v1/secret/metadata/app?list=true",
            None,
            200,
            "/data/keys",
            json!(["api_key", "db"]),
        ),
        (
            "GET",
            "/v1/secret/metadata/app/db",
            None,
            200,
            "/data/current_version",
            json!(2),
        ),
        (
            "GET",
            "/v1/secret/metadata/app/db",
            None,
            200,
            "/data/versions/2/destroyed",
            json!(false),
        ),
        (
            "PUT",
            "/v1/secret/data/app/db",
            Some(json!({"data": {}, "options": {"cas": 1}})),
            409,
            "/error/code",
            json!("cas_mismatch"),
        ),
        (
            "DELETE",
            "/v1/secret/data/app/db",
            None,
            204,
            "",
            Value::Null,
        ),
        (
            "GET",
            "/v1/secret/data/app/db",
            None,
            404,
            "/error/code",
            json!("version_deleted"),
        ),
        (
            "POST",
            "/v1/secret/undelete/app/db",
            Some(json!({"versions": [2]})),
            204,
            "",
            Value::Null,
        ),
        (
            "POST",
            "/v1/secret/destroy/app/db",
            Some(json!({"versions": [1]})),
            204,
            "",
            Value::Null,
        ),
        (
            "GET",
            "/v1/secret/metadata/app/db",
            None,
            200,
            "/data/versions/1/destroyed",
            json!(true),
        ),
        (
            "POST",
            "/v1/secret/rollback/app/db",
            Some(json!({"version": 1})),
            404,
            "/error/code",
            json!("version_destroyed"),
        ),
        (
            "GET",
            "/v1/prod/data/app/db",
            None,
            404,
            "/error/code",
            json!("not_found"),
        ),
        (
            "LIST",
            "/v1/prod/metadata/",
            None,
            404,
            "/error/code",
            json!("not_found"),
        ),
        (
            "GET",
            "/v1/nowhere/data/app/db",
            None,
            404,
            "/error/code",
            json!("unknown_mount"),
        ),
        (
            "DELETE",
            "/v1/secret/metadata/app/db",
            None,
            204,
            "",
            Value::Null,
        ),
        (
            "GET",
            "/v1/secret/metadata/app?list=true",
            None,
            200,
            "/data/keys",
            json!(["api_key"]),
        ),
    ];
    for (i, (method, uri, body, status, pointer, want)) in steps.into_iter().enumerate() {
        let (got, v) = api.check(method, uri, api.root(), body).await;
        assert_eq!(got.as_u16(), status, "step {i}: {method} {uri}: {v}");
        let at = if pointer.is_empty() {
            Some(&v)
        } else {
            v.pointer(pointer)
        };
        assert_eq!(at, Some(&want), "step {i}: {method} {uri}: {v}");
    }
}

/// Lists `uri` with both Vault forms (LIST and GET ?list=true); they must agree.
async fn list(api: &Api, uri: &str) -> (u16, Value) {
    let a = api.call("LIST", uri, api.root(), None).await;
    let b = api
        .call("GET", &format!("{uri}?list=true"), api.root(), None)
        .await;
    assert_eq!(a.status, b.status, "{uri}: LIST and GET ?list=true differ");
    let strip = |mut v: Value| {
        v.as_object_mut().map(|o| o.remove("request_id"));
        v["error"].as_object_mut().map(|o| o.remove("request_id"));
        v
    };
    assert_eq!(strip(a.json.clone()), strip(b.json), "{uri}");
    (a.status.as_u16(), a.json)
}

#[tokio::test]
async fn listing_shows_keys_and_folders() {
    let api = Api::new().await;
    for p in ["a/b", "a/c/d", "a/c/e", "top", "z/y/x/w"] {
        api.put(&format!("secret/data/{p}"), json!({"k": p})).await;
    }
    api.put("prod/data/only/in/prod", json!({"k": 1})).await;

    let keys = |v: &Value| v["data"]["keys"].clone();
    for (uri, want) in [
        ("/v1/secret/metadata/", json!(["a/", "top", "z/"])),
        ("/v1/secret/metadata", json!(["a/", "top", "z/"])),
        ("/v1/secret/metadata/a", json!(["b", "c/"])),
        ("/v1/secret/metadata/a/", json!(["b", "c/"])),
        ("/v1/secret/metadata/a/c", json!(["d", "e"])),
        ("/v1/secret/metadata/z/y", json!(["x/"])),
        ("/v1/prod/metadata/", json!(["only/"])),
        ("/v1/dev/metadata/", json!(["a/", "top", "z/"])),
    ] {
        let (status, v) = list(&api, uri).await;
        assert_eq!(status, 200, "{uri}: {v}");
        assert_eq!(keys(&v), want, "{uri}");
        assert_eq!(v["data"]["truncated"], false);
    }
    // Nothing there: 404, as Vault answers (its clients rely on it).
    for uri in [
        "/v1/secret/metadata/nothing",
        "/v1/staging/metadata/",
        "/v1/secret/metadata/a/b",
    ] {
        let (status, v) = list(&api, uri).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{uri}: {v}"
        );
    }
    // A list of a bad prefix is a bad request, not a listing.
    let (status, v) = list(&api, "/v1/secret/metadata/a/../b").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_path")),
        "{v}"
    );
}

#[tokio::test]
async fn check_and_set() {
    let api = Api::new().await;
    let root = api.root();
    let uri = "/v1/secret/data/cas/x";
    let body = |cas: u64, v: &str| Some(json!({"data": {"v": v}, "options": {"cas": cas}}));
    // cas 0 creates only.
    assert_eq!(
        api.expect(200, "PUT", uri, root, body(0, "one")).await["data"]["version"],
        1
    );
    for (cas, status, code) in [
        (0, 409, "cas_mismatch"),
        (2, 409, "cas_mismatch"),
        (u64::MAX, 409, "cas_mismatch"),
    ] {
        let r = api.call("PUT", uri, root, body(cas, "x")).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code),
            "cas {cas}: {}",
            r.text
        );
        assert!(
            r.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("version 1"),
            "{}",
            r.text
        );
    }
    assert_eq!(
        api.expect(200, "PUT", uri, root, body(1, "two")).await["data"]["version"],
        2
    );
    let r = api.expect(200, "GET", uri, root, None).await;
    assert_eq!(r["data"]["data"]["v"], "two");

    // cas_required makes cas mandatory.
    api.expect(
        204,
        "POST",
        "/v1/secret/metadata/cas/x",
        root,
        Some(json!({"cas_required": true})),
    )
    .await;
    let r = api
        .call("PUT", uri, root, Some(json!({"data": {"v": "3"}})))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "cas_required"),
        "{}",
        r.text
    );
    api.expect(200, "PUT", uri, root, body(2, "three")).await;
}

#[tokio::test]
async fn delete_undelete_destroy_and_metadata() {
    let api = Api::new().await;
    let root = api.root();
    for i in 1..=3 {
        api.put("secret/data/d/x", json!({"i": i})).await;
    }
    // DELETE on data soft-deletes the latest.
    let r = api.call("DELETE", "/v1/secret/data/d/x", root, None).await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text);
    assert!(r.text.is_empty());
    let r = api.call("GET", "/v1/secret/data/d/x", root, None).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "version_deleted"));
    // undelete brings it back.
    api.expect(
        204,
        "POST",
        "/v1/secret/undelete/d/x",
        root,
        Some(json!({"versions": [3]})),
    )
    .await;
    assert_eq!(
        api.expect(200, "GET", "/v1/secret/data/d/x", root, None)
            .await["data"]["data"]["i"],
        3
    );
    // delete (PUT) and destroy (POST) named versions.
    api.expect(
        204,
        "PUT",
        "/v1/secret/delete/d/x",
        root,
        Some(json!({"versions": [1]})),
    )
    .await;
    api.expect(
        204,
        "POST",
        "/v1/secret/destroy/d/x",
        root,
        Some(json!({"versions": [2]})),
    )
    .await;
    let r = api
        .call("GET", "/v1/secret/data/d/x?version=2", root, None)
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "version_destroyed"));
    // A destroyed version cannot be undeleted.
    api.expect(
        204,
        "POST",
        "/v1/secret/undelete/d/x",
        root,
        Some(json!({"versions": [2]})),
    )
    .await;
    let r = api
        .call("GET", "/v1/secret/data/d/x?version=2", root, None)
        .await;
    assert_eq!(r.code(), "version_destroyed");

    let m = api
        .expect(200, "GET", "/v1/secret/metadata/d/x", root, None)
        .await;
    let d = &m["data"];
    assert_eq!(d["current_version"], 3, "{m}");
    assert_eq!(d["oldest_version"], 1);
    assert_eq!(d["max_versions"], 5);
    assert_eq!(d["cas_required"], false);
    assert_eq!(d["env"], "dev");
    assert_eq!(d["path"], "d/x");
    let versions = d["versions"].as_object().unwrap();
    let mut keys: Vec<&str> = versions.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["1", "2", "3"], "versions are keyed by number: {m}");
    assert_ne!(versions["1"]["deletion_time"], "", "v1 was deleted");
    assert_eq!(versions["1"]["destroyed"], false);
    assert_eq!(versions["2"]["destroyed"], true);
    assert_eq!(versions["3"]["deletion_time"], "");
    for v in versions.values() {
        assert!(v["created_time"].is_string(), "{v}");
    }

    // Metadata writes show up, unknown metadata fields are refused.
    api.expect(
        204,
        "POST",
        "/v1/secret/metadata/d/x",
        root,
        Some(json!({"max_versions": 2, "description": "db", "custom_metadata": {"team": "a"}})),
    )
    .await;
    let m = api
        .expect(200, "GET", "/v1/secret/metadata/d/x", root, None)
        .await;
    assert_eq!(m["data"]["max_versions"], 2);
    assert_eq!(m["data"]["description"], "db");
    assert_eq!(m["data"]["custom_metadata"], json!({"team": "a"}));
    assert_eq!(
        m["data"]["oldest_version"], 2,
        "pruned to max_versions: {m}"
    );
    let r = api
        .call(
            "POST",
            "/v1/secret/metadata/d/x",
            root,
            Some(json!({"colour": "red"})),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_json"));

    // DELETE on metadata removes everything.
    api.expect(204, "DELETE", "/v1/secret/metadata/d/x", root, None)
        .await;
    for uri in ["/v1/secret/data/d/x", "/v1/secret/metadata/d/x"] {
        let r = api.call("GET", uri, root, None).await;
        assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"), "{uri}");
    }
}

#[tokio::test]
async fn rollback_makes_a_new_version() {
    let api = Api::new().await;
    let root = api.root();
    api.put("secret/data/r", json!({"v": "one"})).await;
    api.put("secret/data/r", json!({"v": "two"})).await;
    let w = api
        .expect(
            200,
            "POST",
            "/v1/secret/rollback/r",
            root,
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(w["data"]["version"], 3, "{w}");
    let r = api
        .expect(200, "GET", "/v1/secret/data/r", root, None)
        .await;
    assert_eq!(
        (&r["data"]["data"]["v"], &r["data"]["metadata"]["version"]),
        (&json!("one"), &json!(3))
    );
    for (body, status, code) in [
        (json!({"version": 7}), 404, "not_found"),
        (json!({"version": "1"}), 400, "invalid_json"),
        (json!({}), 400, "invalid_json"),
    ] {
        let r = api
            .call("POST", "/v1/secret/rollback/r", root, Some(body.clone()))
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code),
            "{body}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn mounts_are_environments() {
    let api = Api::new().await;
    let root = api.root();
    api.put("secret/data/shared/k", json!({"where": "secret"}))
        .await;
    api.put("prod/data/shared/k", json!({"where": "prod"}))
        .await;
    // `secret` is the default environment, dev.
    let r = api
        .expect(200, "GET", "/v1/dev/data/shared/k", root, None)
        .await;
    assert_eq!(r["data"]["data"]["where"], "secret");
    let r = api
        .expect(200, "GET", "/v1/prod/data/shared/k", root, None)
        .await;
    assert_eq!(r["data"]["data"]["where"], "prod");
    let r = api
        .call("GET", "/v1/staging/data/shared/k", root, None)
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
    // Versions count per environment.
    assert_eq!(api.put("prod/data/shared/k", json!({"n": 2})).await, 2);
    assert_eq!(api.put("secret/data/shared/k", json!({"n": 2})).await, 2);
    let m = api
        .expect(200, "GET", "/v1/prod/metadata/shared/k", root, None)
        .await;
    assert_eq!(m["data"]["env"], "prod");

    for uri in [
        "/v1/qa/data/shared/k",
        "/v1/Prod/data/x",
        "/v1/secrets/metadata/x",
    ] {
        let r = api.call("GET", uri, root, None).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (404, "unknown_mount"),
            "{uri}: {}",
            r.text
        );
        assert!(
            r.text.contains("dev, staging, prod"),
            "names the mounts: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn paths_are_validated() {
    let api = Api::new().await;
    let root = api.root();
    let long = format!("/v1/secret/data/{}", ["seg"; 200].join("/"));
    for uri in [
        "/v1/secret/data/a/%2e%2e/b",
        "/v1/secret/data/a/./b",
        "/v1/secret/data/a//b",
        "/v1/secret/data/sp%20ace",
        "/v1/secret/data/caf%C3%A9",
        "/v1/secret/data/nul%00",
        long.as_str(),
    ] {
        let r = api
            .call("PUT", uri, root, Some(json!({"data": {"k": 1}})))
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "invalid_path"),
            "{uri}: {}",
            r.text
        );
    }
    // Undecodable percent-escapes are refused by the path extractor, in our shape.
    let r = api.call("GET", "/v1/secret/data/%ff%fe", root, None).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text);
    // A trailing slash on a data path names the same secret.
    api.put("secret/data/t/x", json!({"k": 1})).await;
    let r = api
        .expect(200, "GET", "/v1/secret/data/t/x/", root, None)
        .await;
    assert_eq!(r["data"]["data"]["k"], 1);
    // An operation without a path.
    let r = api.call("GET", "/v1/secret/data/", root, None).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "invalid_path"),
        "{}",
        r.text
    );
}
