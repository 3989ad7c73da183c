//! Versioned key/value behaviour: round trips, check-and-set, soft delete / undelete /
//! destroy, pruning by max_versions, rollback and listing.

use serde_json::json;
use steward_secrets::{Kind, MetadataUpdate, ReadOptions, VersionOp, WriteRequest};

use crate::harness::{check_both, expect_err, expect_kind, DEFAULT_MAX_VERSIONS, H};

fn req(value: serde_json::Value, cas: Option<u64>) -> WriteRequest {
    WriteRequest {
        value,
        cas,
        metadata: None,
    }
}

async fn versions_kept(h: &H, env: &str, path: &str) -> Vec<u64> {
    let (e, p) = (env.to_string(), path.to_string());
    h.store()
        .read(move |tx| tx.versions(&e, &p))
        .await
        .map_err(|e: steward_store::StoreError| e)
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_round_trip_string_and_object_with_versions() {
    check_both(|h| async move {
        // A string value.
        let w1 = h
            .write("prod", "billing/db_password", json!("hunter2"))
            .await;
        assert_eq!(w1.version, 1);
        assert_eq!(
            h.read("prod", "billing/db_password", None).await,
            json!("hunter2")
        );

        // A JSON object value, in another environment under the same path: independent.
        let obj =
            json!({"user": "app", "password": "s3cr3t", "port": 5432, "nested": {"a": [1, 2]}});
        let w = h.write("staging", "billing/db_password", obj.clone()).await;
        assert_eq!(w.version, 1, "versions are per env and path");
        assert_eq!(h.read("staging", "billing/db_password", None).await, obj);

        // Versions increment; latest is the last write; each version stays readable.
        let w2 = h.write("prod", "billing/db_password", obj.clone()).await;
        let w3 = h.write("prod", "billing/db_password", json!("third")).await;
        assert_eq!((w2.version, w3.version), (2, 3));
        let (latest, v) = h
            .try_read("prod", "billing/db_password", None)
            .await
            .unwrap();
        assert_eq!((latest, v), (json!("third"), 3));
        assert_eq!(
            h.read("prod", "billing/db_password", Some(1)).await,
            json!("hunter2")
        );
        assert_eq!(h.read("prod", "billing/db_password", Some(2)).await, obj);
        assert_eq!(
            h.read("prod", "billing/db_password", Some(3)).await,
            json!("third")
        );

        // Metadata agrees.
        let md = h
            .engine
            .read_metadata(&h.root_ctx(), "prod", "billing/db_password")
            .await
            .unwrap();
        assert_eq!(md.current_version, 3);
        assert_eq!(md.oldest_version, 1);
        assert_eq!(
            md.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );

        // A version never written, an unknown secret, values of other JSON types.
        let e = expect_err(
            h.try_read("prod", "billing/db_password", Some(4)).await,
            "not_found",
        );
        assert_eq!(e.kind, Kind::NotFound);
        expect_kind(
            h.try_read("prod", "billing/nope", None).await,
            Kind::NotFound,
            "not_found",
        );
        for bad in [json!(42), json!(["a"]), json!(null), json!(true)] {
            let r = h
                .engine
                .write_secret(&h.root_ctx(), "prod", "billing/x", req(bad, None))
                .await;
            expect_kind(r, Kind::Invalid, "invalid_value");
        }
        // Oversize values are refused (the limit is max_value_bytes of the JSON encoding).
        let big = "x".repeat(h.engine.config().max_value_bytes);
        let r = h
            .engine
            .write_secret(&h.root_ctx(), "prod", "billing/big", req(json!(big), None))
            .await;
        expect_kind(r, Kind::TooLarge, "value_too_large");
        let fits = "x".repeat(h.engine.config().max_value_bytes - 2);
        h.write("prod", "billing/big", json!(fits)).await;
        assert_eq!(h.read("prod", "billing/big", None).await, json!(fits));
        // Unknown environments and bad paths are refused.
        let r = h
            .engine
            .write_secret(&h.root_ctx(), "qa", "a", req(json!("v"), None))
            .await;
        expect_err(r, "unknown_environment");
        let r = h
            .engine
            .write_secret(&h.root_ctx(), "prod", "a/../b", req(json!("v"), None))
            .await;
        expect_err(r, "invalid_path");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_creates_only_if_absent_and_mismatch_changes_nothing() {
    check_both(|h| async move {
        let ctx = h.root_ctx();
        let e = &h.engine;
        // cas = 0 creates only if absent.
        let w = e
            .write_secret(&ctx, "prod", "app/key", req(json!("first"), Some(0)))
            .await
            .unwrap();
        assert_eq!(w.version, 1);
        let again = e
            .write_secret(&ctx, "prod", "app/key", req(json!("second"), Some(0)))
            .await;
        expect_kind(again, Kind::Conflict, "cas_mismatch");

        // A wrong cas (with a metadata change riding along) changes nothing at all.
        let wrong = WriteRequest {
            value: json!("third"),
            cas: Some(7),
            metadata: Some(MetadataUpdate {
                description: Some("changed by a failed write".into()),
                ..Default::default()
            }),
        };
        let err = expect_kind(
            e.write_secret(&ctx, "prod", "app/key", wrong).await,
            Kind::Conflict,
            "cas_mismatch",
        );
        assert!(!err.message.contains("third"), "no value in error messages");
        let (v, ver) = h.try_read("prod", "app/key", None).await.unwrap();
        assert_eq!((v, ver), (json!("first"), 1));
        let md = e.read_metadata(&ctx, "prod", "app/key").await.unwrap();
        assert_eq!(md.current_version, 1);
        assert_eq!(md.versions.len(), 1);
        assert_eq!(
            md.meta.description, "",
            "metadata of a failed write is rolled back"
        );

        // The right cas wins.
        let w = e
            .write_secret(&ctx, "prod", "app/key", req(json!("second"), Some(1)))
            .await
            .unwrap();
        assert_eq!(w.version, 2);
        // A stale cas now fails.
        expect_err(
            e.write_secret(&ctx, "prod", "app/key", req(json!("x"), Some(1)))
                .await,
            "cas_mismatch",
        );

        // cas_required: writes without cas fail, with the right cas succeed.
        e.update_metadata(
            &ctx,
            "prod",
            "app/key",
            MetadataUpdate {
                cas_required: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let r = e
            .write_secret(&ctx, "prod", "app/key", req(json!("no cas"), None))
            .await;
        expect_kind(r, Kind::Invalid, "cas_required");
        assert_eq!(h.read("prod", "app/key", None).await, json!("second"));
        let w = e
            .write_secret(&ctx, "prod", "app/key", req(json!("with cas"), Some(2)))
            .await
            .unwrap();
        assert_eq!(w.version, 3);
        // Other secrets are unaffected.
        h.write("prod", "app/other", json!("free")).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_undelete_destroy_and_delete_metadata() {
    check_both(|h| async move {
        let ctx = h.root_ctx();
        let e = &h.engine;
        let (env, path) = ("prod", "svc/token");
        for v in ["v1", "v2", "v3"] {
            h.write(env, path, json!(v)).await;
        }

        // Soft-delete the latest.
        e.change_versions(&ctx, env, path, VersionOp::Delete, vec![])
            .await
            .unwrap();
        expect_kind(
            h.try_read(env, path, None).await,
            Kind::NotFound,
            "version_deleted",
        );
        expect_err(h.try_read(env, path, Some(3)).await, "version_deleted");
        assert_eq!(h.read(env, path, Some(2)).await, json!("v2"));

        // Soft-delete a given version.
        e.change_versions(&ctx, env, path, VersionOp::Delete, vec![1])
            .await
            .unwrap();
        expect_err(h.try_read(env, path, Some(1)).await, "version_deleted");
        let md = e.read_metadata(&ctx, env, path).await.unwrap();
        let deleted: Vec<bool> = md
            .versions
            .iter()
            .map(|v| v.deletion_time.is_some())
            .collect();
        assert_eq!(deleted, vec![true, false, true]);
        assert_eq!(md.versions[0].deletion_time, Some(h.clock_now()));

        // Undelete restores both.
        e.change_versions(&ctx, env, path, VersionOp::Undelete, vec![1, 3])
            .await
            .unwrap();
        assert_eq!(h.read(env, path, Some(1)).await, json!("v1"));
        assert_eq!(h.read(env, path, None).await, json!("v3"));

        // Undelete / destroy need explicit versions.
        expect_err(
            e.change_versions(&ctx, env, path, VersionOp::Destroy, vec![])
                .await,
            "missing_versions",
        );

        // Destroy: unreadable for good, ciphertext gone from the row.
        e.change_versions(&ctx, env, path, VersionOp::Destroy, vec![2])
            .await
            .unwrap();
        expect_kind(
            h.try_read(env, path, Some(2)).await,
            Kind::NotFound,
            "version_destroyed",
        );
        let rows = h
            .store()
            .read(|tx| -> Result<_, steward_store::StoreError> {
                Ok((
                    tx.version("prod", "svc/token", 1)?,
                    tx.version("prod", "svc/token", 2)?,
                    tx.version("prod", "svc/token", 3)?,
                ))
            })
            .await
            .unwrap();
        let (r1, r2, r3) = (rows.0.unwrap(), rows.1.unwrap(), rows.2.unwrap());
        assert!(r2.info.destroyed);
        assert_eq!(r2.envelope, None, "a destroyed version keeps no envelope");
        assert!(r1.envelope.is_some() && r3.envelope.is_some());
        // Undelete cannot bring a destroyed version back.
        e.change_versions(&ctx, env, path, VersionOp::Undelete, vec![2])
            .await
            .unwrap();
        expect_err(h.try_read(env, path, Some(2)).await, "version_destroyed");
        let md = e.read_metadata(&ctx, env, path).await.unwrap();
        assert!(md.versions[1].destroyed);

        // delete_metadata removes everything.
        h.write(env, "svc/keep", json!("k")).await;
        e.delete_metadata(&ctx, env, path).await.unwrap();
        expect_kind(
            h.try_read(env, path, None).await,
            Kind::NotFound,
            "not_found",
        );
        expect_err(h.try_read(env, path, Some(1)).await, "not_found");
        expect_err(e.read_metadata(&ctx, env, path).await, "not_found");
        let gone = h
            .store()
            .read(|tx| -> Result<_, steward_store::StoreError> {
                Ok((
                    tx.head("prod", "svc/token")?,
                    tx.versions("prod", "svc/token")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(gone.0, None);
        assert!(gone.1.is_empty());
        let list = e.list(&ctx, env, "svc/").await.unwrap();
        assert_eq!(list.keys, vec!["keep".to_string()]);
        // Writing again starts over at version 1.
        assert_eq!(h.write(env, path, json!("again")).await.version, 1);
        // Deleting a secret that does not exist says so.
        expect_err(
            e.change_versions(&ctx, env, "svc/none", VersionOp::Delete, vec![])
                .await,
            "not_found",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_versions_prunes_old_versions_default_and_per_secret() {
    check_both(|h| async move {
        let ctx = h.root_ctx();
        let e = &h.engine;
        let max = DEFAULT_MAX_VERSIONS as u64;

        // Config default.
        for i in 1..=max + 2 {
            h.write("dev", "a", json!(format!("a{i}"))).await;
        }
        let md = e.read_metadata(&ctx, "dev", "a").await.unwrap();
        assert_eq!(md.current_version, max + 2);
        assert_eq!(md.oldest_version, 3);
        assert_eq!(md.max_versions, DEFAULT_MAX_VERSIONS);
        assert_eq!(
            versions_kept(&h, "dev", "a").await,
            (3..=max + 2).collect::<Vec<_>>()
        );
        expect_kind(
            h.try_read("dev", "a", Some(1)).await,
            Kind::NotFound,
            "not_found",
        );
        expect_err(h.try_read("dev", "a", Some(2)).await, "not_found");
        assert_eq!(h.read("dev", "a", Some(3)).await, json!("a3"));
        assert_eq!(
            h.read("dev", "a", None).await,
            json!(format!("a{}", max + 2))
        );

        // Per-secret metadata, set before the first write.
        e.update_metadata(
            &ctx,
            "dev",
            "b",
            MetadataUpdate {
                max_versions: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for i in 1..=4 {
            h.write("dev", "b", json!(format!("b{i}"))).await;
        }
        let md = e.read_metadata(&ctx, "dev", "b").await.unwrap();
        assert_eq!(
            (md.current_version, md.oldest_version, md.max_versions),
            (4, 3, 2)
        );
        assert_eq!(versions_kept(&h, "dev", "b").await, vec![3, 4]);
        expect_err(h.try_read("dev", "b", Some(2)).await, "not_found");

        // Lowering max_versions on an existing secret prunes at once.
        e.update_metadata(
            &ctx,
            "dev",
            "a",
            MetadataUpdate {
                max_versions: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let md = e.read_metadata(&ctx, "dev", "a").await.unwrap();
        assert_eq!(md.oldest_version, max + 2);
        assert_eq!(versions_kept(&h, "dev", "a").await, vec![max + 2]);

        // max_versions = 0 keeps everything.
        e.update_metadata(
            &ctx,
            "dev",
            "c",
            MetadataUpdate {
                max_versions: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for i in 1..=max + 3 {
            h.write("dev", "c", json!(format!("c{i}"))).await;
        }
        assert_eq!(
            versions_kept(&h, "dev", "c").await,
            (1..=max + 3).collect::<Vec<_>>()
        );
        assert_eq!(h.read("dev", "c", Some(1)).await, json!("c1"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_creates_new_version_with_old_content() {
    check_both(|h| async move {
        let ctx = h.root_ctx();
        let e = &h.engine;
        let old = json!({"user": "u1", "password": "p1"});
        h.write("prod", "db", old.clone()).await;
        h.write("prod", "db", json!({"user": "u2", "password": "p2"}))
            .await;
        h.write("prod", "db", json!("three")).await;

        let w = e.rollback(&ctx, "prod", "db", 1).await.unwrap();
        assert_eq!(w.version, 4, "rollback writes a new version");
        let (v, ver) = h.try_read("prod", "db", None).await.unwrap();
        assert_eq!((v, ver), (old.clone(), 4));
        // History is intact.
        assert_eq!(h.read("prod", "db", Some(1)).await, old);
        assert_eq!(h.read("prod", "db", Some(3)).await, json!("three"));
        assert_eq!(
            e.read_metadata(&ctx, "prod", "db")
                .await
                .unwrap()
                .current_version,
            4
        );

        // Rolling back to a deleted or missing version fails and writes nothing.
        e.change_versions(&ctx, "prod", "db", VersionOp::Delete, vec![2])
            .await
            .unwrap();
        expect_err(e.rollback(&ctx, "prod", "db", 2).await, "version_deleted");
        expect_err(e.rollback(&ctx, "prod", "db", 9).await, "not_found");
        expect_err(e.rollback(&ctx, "prod", "nothing", 1).await, "not_found");
        assert_eq!(
            e.read_metadata(&ctx, "prod", "db")
                .await
                .unwrap()
                .current_version,
            4
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_returns_immediate_children_with_folders() {
    check_both(|h| async move {
        let ctx = h.root_ctx();
        for p in [
            "billing/db",
            "billing/api/key",
            "billing/api/secret",
            "billing2/x",
            "shared/smtp",
            "top",
        ] {
            h.write("prod", p, json!("v")).await;
        }
        h.write("staging", "billing/staging_only", json!("v")).await;
        h.write("staging", "elsewhere", json!("v")).await;

        let keys = |prefix: &'static str| {
            let h = &h;
            let ctx = &ctx;
            async move { h.engine.list(ctx, "prod", prefix).await.unwrap().keys }
        };
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys("").await,
            s(&["billing/", "billing2/", "shared/", "top"])
        );
        assert_eq!(keys("billing/").await, s(&["api/", "db"]));
        assert_eq!(
            keys("billing").await,
            s(&["api/", "db"]),
            "a missing '/' is added"
        );
        assert_eq!(keys("billing/api/").await, s(&["key", "secret"]));
        assert!(
            keys("bill").await.is_empty(),
            "prefixes match whole segments"
        );
        assert!(keys("nothing/").await.is_empty());
        let staging = h.engine.list(&ctx, "staging", "").await.unwrap();
        assert_eq!(staging.keys, s(&["billing/", "elsewhere"]));
        assert!(!staging.truncated);
        // Reading with ReadOptions::default resolves (no refs here) and works on a listed key.
        let d = h
            .engine
            .read_secret(&ctx, "prod", "billing/api/key", ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(d.value, json!("v"));
    })
    .await;
}
