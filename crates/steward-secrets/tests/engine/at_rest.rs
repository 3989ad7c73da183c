//! Data at rest: no plaintext value or token in the database files, ciphertext bound to its
//! row, and key rotation that re-wraps every envelope and retires the old key.

use serde_json::json;
use steward_secrets::Kind;
use steward_store::StoreError;

use crate::harness::{check_both, contains, expect_kind, H};

fn canary(tag: &str) -> String {
    format!("plaintext-canary-{tag}-{:016x}", rand::random::<u64>())
}

/// Every encoding of `s` a dump might show it in.
fn renderings(s: &str) -> Vec<Vec<u8>> {
    vec![
        s.as_bytes().to_vec(),
        hex::encode(s.as_bytes()).into_bytes(),
        // JSON-encoded, as the engine serializes values before sealing them.
        serde_json::to_vec(&json!(s)).unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_tokens_are_never_stored_in_plaintext() {
    check_both(|h| async move {
        let path = format!("canary-path-{:08x}", rand::random::<u32>());
        let mut canaries = vec![];
        for i in 0..5 {
            let c = canary(&format!("s{i}"));
            h.write("prod", &format!("{path}/s{i}"), json!(c)).await;
            canaries.push(c);
        }
        let field = canary("field");
        h.write(
            "staging",
            &format!("{path}/obj"),
            json!({"password": field, "note": "x"}),
        )
        .await;
        canaries.push(field);
        // Old versions and soft-deleted versions are sealed too.
        let old = canary("old");
        h.write("dev", &format!("{path}/rot"), json!(old)).await;
        h.write("dev", &format!("{path}/rot"), json!("newer")).await;
        canaries.push(old);
        let (user, _) = h.token(&[]).await;
        // Touch everything once more so reads go through the store as well.
        for (i, c) in canaries.iter().take(5).enumerate() {
            assert_eq!(
                h.read("prod", &format!("{path}/s{i}"), None).await,
                json!(c)
            );
        }

        let raw = h.backend.raw_bytes();
        // Positive control: the scan sees plaintext that is stored in the clear (paths).
        assert!(
            contains(&raw, path.as_bytes()),
            "the scan does not see the data at all"
        );
        for c in &canaries {
            for r in renderings(c) {
                assert!(
                    !contains(&raw, &r),
                    "{} stores the value {c} in the clear",
                    h.backend.name()
                );
            }
        }
        for t in [&h.root, &user] {
            assert!(
                !contains(&raw, t.as_bytes()),
                "a token is stored in the clear"
            );
            assert!(
                !contains(&raw, &t.as_bytes()["stw.".len()..]),
                "a token body is stored"
            );
        }
    })
    .await;
}

async fn envelope(h: &H, env: &str, path: &str, v: u64) -> Option<Vec<u8>> {
    let (e, p) = (env.to_string(), path.to_string());
    h.store()
        .read(move |tx| tx.version(&e, &p, v))
        .await
        .map_err(|e: StoreError| e)
        .unwrap()
        .and_then(|r| r.envelope)
}

/// Copies one row's envelope into another row with raw SQL.
fn copy_envelope(h: &H, from: (&str, &str, u64), to: (&str, &str, u64)) {
    let sql = format!(
        "UPDATE secret_versions SET envelope = (SELECT envelope FROM secret_versions WHERE env = '{}' AND path = '{}' AND version = {}) \
         WHERE env = '{}' AND path = '{}' AND version = {}",
        from.0, from.1, from.2, to.0, to.1, to.2
    );
    assert_eq!(h.backend.exec_sql(&sql), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_ciphertext_is_detected_not_decrypted() {
    check_both(|h| async move {
        let a_val = canary("a");
        h.write("prod", "a", json!(a_val)).await;
        h.write("prod", "b", json!("value-b")).await;
        h.write("staging", "a", json!("staging-a")).await;
        h.write("prod", "c", json!("c-v1")).await;
        h.write("prod", "c", json!("c-v2")).await;
        let a_env = envelope(&h, "prod", "a", 1).await.unwrap();

        // Another path.
        copy_envelope(&h, ("prod", "a", 1), ("prod", "b", 1));
        assert_eq!(envelope(&h, "prod", "b", 1).await.unwrap(), a_env, "the swap happened");
        let err = expect_kind(h.try_read("prod", "b", None).await, Kind::Internal, "internal_error");
        assert!(!err.message.contains(&a_val), "{err:?}");
        assert!(err.message.contains("prod/b"), "{err:?}");
        // Another environment, same path.
        copy_envelope(&h, ("prod", "a", 1), ("staging", "a", 1));
        expect_kind(h.try_read("staging", "a", None).await, Kind::Internal, "internal_error");
        // Another version of the same secret.
        copy_envelope(&h, ("prod", "c", 1), ("prod", "c", 2));
        expect_kind(h.try_read("prod", "c", Some(2)).await, Kind::Internal, "internal_error");
        assert_eq!(h.read("prod", "c", Some(1)).await, json!("c-v1"));
        // A flipped byte.
        let mut bad = a_env.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let sql = match h.backend.name() {
            "sqlite" => format!("UPDATE secret_versions SET envelope = X'{}' WHERE env = 'prod' AND path = 'a'", hex::encode(&bad)),
            _ => format!("UPDATE secret_versions SET envelope = decode('{}', 'hex') WHERE env = 'prod' AND path = 'a'", hex::encode(&bad)),
        };
        assert_eq!(h.backend.exec_sql(&sql), 1);
        expect_kind(h.try_read("prod", "a", None).await, Kind::Internal, "internal_error");
        // The source row itself, restored, still decrypts.
        let sql = match h.backend.name() {
            "sqlite" => format!("UPDATE secret_versions SET envelope = X'{}' WHERE env = 'prod' AND path = 'a'", hex::encode(&a_env)),
            _ => format!("UPDATE secret_versions SET envelope = decode('{}', 'hex') WHERE env = 'prod' AND path = 'a'", hex::encode(&a_env)),
        };
        h.backend.exec_sql(&sql);
        assert_eq!(h.read("prod", "a", None).await, json!(a_val));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_rewraps_everything_and_retires_the_old_key() {
    check_both(|h| async move {
        let e = &h.engine;
        let mut expected = vec![];
        for s in 0..4 {
            for v in 1..=3u64 {
                let val = json!(format!("s{s}-v{v}"));
                h.write("prod", &format!("rot/s{s}"), val.clone()).await;
                expected.push((format!("rot/s{s}"), v, val));
            }
        }
        // A destroyed version has no envelope to re-wrap.
        h.write("dev", "gone", json!("x")).await;
        e.change_versions(
            &h.root_ctx(),
            "dev",
            "gone",
            steward_secrets::VersionOp::Destroy,
            vec![1],
        )
        .await
        .unwrap();
        let (old_active, old_ids, pending) = e.key_status(&h.root_ctx()).await.unwrap();
        assert_eq!((old_ids.clone(), pending), (vec![old_active], 0));

        let active = e.rotate_keys(&h.root_ctx()).await.unwrap();
        assert_ne!(active, old_active);
        // Readable at every point of the rotation.
        for (p, v, val) in &expected {
            assert_eq!(&h.read("prod", p, Some(*v)).await, val);
        }
        // Writes during rotation use the new key.
        h.write("prod", "rot/new", json!("after-rotation")).await;
        e.rewrap_all().await.unwrap();

        let left = h
            .store()
            .read(move |tx| tx.envelopes_not_under(active, 1000))
            .await
            .map_err(|e: StoreError| e)
            .unwrap();
        assert!(
            left.is_empty(),
            "{} envelopes still under an old key",
            left.len()
        );
        let infos = h
            .store()
            .read(|tx| -> Result<_, StoreError> {
                let mut all = vec![];
                for s in 0..4 {
                    all.extend(tx.versions("prod", &format!("rot/s{s}"))?);
                }
                Ok(all)
            })
            .await
            .unwrap();
        assert_eq!(infos.len(), 12);
        assert!(infos.iter().all(|i| i.key_id == active));
        let (now_active, ids, pending) = e.key_status(&h.root_ctx()).await.unwrap();
        assert_eq!(
            (now_active, ids, pending),
            (active, vec![active], 0),
            "old key retired"
        );

        // Everything still reads, including after a reseal/unseal that reloads the ring.
        for (p, v, val) in &expected {
            assert_eq!(&h.read("prod", p, Some(*v)).await, val);
        }
        e.seal(&h.root_ctx()).await.unwrap();
        e.unseal_with_key(h.unseal.clone().unwrap()).await.unwrap();
        for (p, v, val) in &expected {
            assert_eq!(&h.read("prod", p, Some(*v)).await, val);
        }
        assert_eq!(
            h.read("prod", "rot/new", None).await,
            json!("after-rotation")
        );
        // The audit chain survives rotation (the HMAC key is kept).
        let report = e.audit_verify(&h.root_ctx()).await.unwrap();
        assert!(report.ok, "{report:?}");

        // A second rotation works the same way.
        let third = e.rotate_keys(&h.root_ctx()).await.unwrap();
        e.rewrap_all().await.unwrap();
        let (a, ids, _) = e.key_status(&h.root_ctx()).await.unwrap();
        assert_eq!((a, ids), (third, vec![third]));
        assert_eq!(h.read("prod", "rot/s0", Some(1)).await, json!("s0-v1"));
    })
    .await;
}

/// A second replica over the same database that unsealed before a rotation elsewhere.
async fn second_replica(h: &H) -> std::sync::Arc<steward_secrets::Engine> {
    let store = h.backend.open().await;
    let b = std::sync::Arc::new(steward_secrets::Engine::new(
        store,
        std::sync::Arc::new(h.clock.clone()),
        crate::harness::config(),
    ));
    b.unseal_with_key(h.unseal.clone().unwrap()).await.unwrap();
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_replica_with_a_stale_keyring_survive_rotation() {
    check_both(|h| async move {
        if h.backend.pg_url().is_none() {
            // Replicas exist only on PostgreSQL: an embedded store has one owner (it is locked).
            return;
        }
        let b = second_replica(&h).await;
        h.write("prod", "before", json!("before-rotation")).await;
        // Replica A rotates and finishes re-wrapping: the old key is retired.
        h.engine.rotate_keys(&h.root_ctx()).await.unwrap();
        h.engine.rewrap_all().await.unwrap();
        // Replica B, which has not seen the rotation, writes.
        b.write_secret(
            &h.root_ctx(),
            "prod",
            "from-b",
            steward_secrets::WriteRequest {
                value: json!("written-by-b"),
                cas: None,
                metadata: None,
            },
        )
        .await
        .unwrap();
        // Replica A restarts (reloading the keyring, as any replica started later would).
        h.engine.seal(&h.root_ctx()).await.unwrap();
        h.engine
            .unseal_with_key(h.unseal.clone().unwrap())
            .await
            .unwrap();
        // Every replica must be able to read it, and a later re-wrap must not get stuck.
        assert_eq!(h.read("prod", "from-b", None).await, json!("written-by-b"));
        h.engine.rewrap_all().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rows_forged_in_the_database_are_not_tokens() {
    check_both(|h| async move {
        h.write("prod", "crown", json!("jewels")).await;
        let forged = "stw.forged-by-someone-with-database-access";
        let hash = hex::encode(steward_crypto::sha256(forged.as_bytes()));
        let record = json!({
            "accessor": "acc.forged", "display_name": "", "policies": ["root"],
            "created_at": "2026-01-01T00:00:00Z", "expires_at": null, "ttl_secs": null,
            "max_expires_at": null, "renewable": false, "revoked_at": null,
            "parent": null, "mac": "",
        })
        .to_string();
        let blob = match h.backend.pg_url() {
            Some(_) => format!("'\\x{hash}'::bytea"),
            None => format!("X'{hash}'"),
        };
        let sql = format!(
            "INSERT INTO tokens (hash, accessor, record) VALUES ({blob}, 'acc.forged', '{record}')"
        );
        assert_eq!(h.backend.exec_sql(&sql), 1);
        let err = h
            .engine
            .read_secret(&h.ctx(forged), "prod", "crown", Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, "invalid_token", "{err:?}");
        // Giving a real token more policies by editing its row does not work either.
        let (user, _) = h.token(&[]).await;
        let sql = "UPDATE tokens SET record = replace(record, '\"policies\":[]', '\"policies\":[\"root\"]') WHERE accessor <> 'acc.forged'";
        assert!(h.backend.exec_sql(sql) >= 1);
        let err = h
            .engine
            .read_secret(&h.ctx(&user), "prod", "crown", Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, "invalid_token", "{err:?}");
        assert_eq!(h.read("prod", "crown", None).await, json!("jewels"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_rows_forged_or_edited_in_the_database_grant_nothing() {
    check_both(|h| async move {
        h.write("prod", "crown", json!("jewels")).await;
        h.write("prod", "public/x", json!("ok")).await;
        h.policy(
            "narrow",
            json!({"rules": [{"env": "prod", "path": "public/*", "capabilities": ["read"]}]}),
        )
        .await;
        let (narrow, _) = h.token(&["narrow"]).await;
        let (forged_user, _) = h.token(&["forged"]).await;
        let read = |t: String, p: &'static str| {
            let e = h.engine.clone();
            let ctx = h.ctx(&t);
            async move { e.read_secret(&ctx, "prod", p, Default::default()).await }
        };
        assert_eq!(read(narrow.clone(), "public/x").await.unwrap().value, json!("ok"));

        // A policy inserted behind Steward's back grants nothing.
        let doc = r#"{"rules":[{"env":"*","path":"**","capabilities":["read"]}]}"#;
        let sql = format!(
            "INSERT INTO policies (name, document, updated_at) VALUES ('forged', '{doc}', 0)"
        );
        assert_eq!(h.backend.exec_sql(&sql), 1);
        let err = read(forged_user, "crown").await.unwrap_err();
        assert_eq!(err.code, "permission_denied", "{err:?}");

        // Widening a real policy in the database voids it instead.
        let sql = "UPDATE policies SET document = replace(document, 'public/*', '**') WHERE name = 'narrow'";
        assert_eq!(h.backend.exec_sql(sql), 1);
        // Compiled policies are cached for a few seconds (of the injected clock).
        h.clock.advance(chrono::Duration::seconds(10));
        let fresh = h.engine.clone();
        let ctx = h.ctx(&narrow);
        let err = fresh
            .read_secret(&ctx, "prod", "crown", Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, "permission_denied", "{err:?}");
        let err = fresh
            .read_secret(&ctx, "prod", "public/x", Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, "permission_denied", "{err:?}");
        let err = fresh.get_policy(&h.root_ctx(), "narrow").await.unwrap_err();
        assert_eq!(err.code, "policy_corrupt", "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_another_replica_is_not_undone_by_renew_or_child_creation() {
    check_both(|h| async move {
        if h.backend.pg_url().is_none() {
            return; // replicas exist only on PostgreSQL
        }
        h.policy(
            "p",
            json!({"rules": [{"env": "prod", "path": "**", "capabilities": ["read"]}]}),
        )
        .await;
        let (t, acc) = h.token(&["p"]).await;
        // Warm this replica's token cache, then revoke through the other replica.
        h.engine.lookup_self(&h.ctx(&t)).await.unwrap();
        let b = second_replica(&h).await;
        b.revoke(&h.root_ctx(), Some(&acc)).await.unwrap();
        // This replica may still trust its cached record for a moment, but neither renewing
        // nor delegating can bring the token back.
        let r = h.engine.renew_self(&h.ctx(&t), None).await;
        assert_eq!(r.unwrap_err().code, "token_revoked");
        let r = h
            .engine
            .create_token(
                &h.ctx(&t),
                steward_secrets::TokenCreate {
                    policies: vec!["p".into()],
                    ttl: Some("1h".into()),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(r.unwrap_err().code, "token_revoked");
        let info = b.lookup_accessor(&h.root_ctx(), &acc).await.unwrap();
        assert!(info.revoked);
    })
    .await;
}
