//! Access control: path policies (deny by default, deny wins, no existence leak) and tokens
//! (authentication errors, TTLs, renewal, revocation, delegation).

use chrono::Duration;
use serde_json::json;
use steward_secrets::{
    Kind, MetadataUpdate, ReadOptions, SecretsError, TokenCreate, VersionOp, WriteRequest,
};

use crate::harness::{check_both, expect_err, expect_kind, H};

async fn read_as(
    h: &H,
    tok: &str,
    env: &str,
    path: &str,
) -> Result<serde_json::Value, SecretsError> {
    h.engine
        .read_secret(&h.ctx(tok), env, path, ReadOptions::default())
        .await
        .map(|d| d.value)
}

async fn write_as(h: &H, tok: &str, env: &str, path: &str) -> Result<u64, SecretsError> {
    h.engine
        .write_secret(
            &h.ctx(tok),
            env,
            path,
            WriteRequest {
                value: json!("from-test"),
                cas: None,
                metadata: None,
            },
        )
        .await
        .map(|w| w.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_deny_by_default_grant_by_glob_and_deny_wins() {
    check_both(|h| async move {
        for (env, path) in [
            ("prod", "billing/x"),
            ("prod", "billing/y"),
            ("prod", "billing/deep/z"),
            ("staging", "billing/x"),
            ("prod", "other/x"),
        ] {
            h.write(env, path, json!(format!("{env}-{path}"))).await;
        }

        // A token with no policies can do nothing.
        let (none, _) = h.token(&[]).await;
        let e = expect_kind(read_as(&h, &none, "prod", "billing/x").await, Kind::Forbidden, "permission_denied");
        assert!(!e.message.contains("prod-billing/x"));
        expect_err(write_as(&h, &none, "dev", "anything").await, "permission_denied");
        expect_err(h.engine.list(&h.ctx(&none), "prod", "").await, "permission_denied");

        h.policy(
            "billing-read",
            json!({"rules": [{"env": "prod", "path": "billing/*", "capabilities": ["read", "list"]}]}),
        )
        .await;
        let (reader, _) = h.token(&["billing-read"]).await;
        assert_eq!(read_as(&h, &reader, "prod", "billing/x").await.unwrap(), json!("prod-billing/x"));
        expect_err(read_as(&h, &reader, "staging", "billing/x").await, "permission_denied");
        expect_err(read_as(&h, &reader, "prod", "billing/deep/z").await, "permission_denied");
        expect_err(read_as(&h, &reader, "prod", "other/x").await, "permission_denied");
        expect_kind(write_as(&h, &reader, "prod", "billing/x").await, Kind::Forbidden, "permission_denied");
        expect_err(
            h.engine
                .change_versions(&h.ctx(&reader), "prod", "billing/x", VersionOp::Delete, vec![])
                .await,
            "permission_denied",
        );
        expect_err(h.engine.delete_metadata(&h.ctx(&reader), "prod", "billing/x").await, "permission_denied");
        expect_err(
            h.engine
                .update_metadata(&h.ctx(&reader), "prod", "billing/x", MetadataUpdate::default())
                .await,
            "permission_denied",
        );
        expect_err(h.engine.rollback(&h.ctx(&reader), "prod", "billing/x", 1).await, "permission_denied");
        // System operations need admin.
        expect_err(h.engine.list_tokens(&h.ctx(&reader)).await, "permission_denied");
        expect_err(h.engine.list_policies(&h.ctx(&reader)).await, "permission_denied");
        expect_err(h.engine.audit_verify(&h.ctx(&reader)).await, "permission_denied");
        expect_err(h.engine.key_status(&h.ctx(&reader)).await, "permission_denied");
        // Listing within the grant works.
        assert_eq!(
            h.engine.list(&h.ctx(&reader), "prod", "billing/").await.unwrap().keys,
            vec!["deep/", "x", "y"]
        );
        // Allowed to read, so it may learn that a path does not exist.
        expect_err(read_as(&h, &reader, "prod", "billing/nope").await, "not_found");
        // Nothing was changed by the refused writes.
        assert_eq!(h.read("prod", "billing/x", None).await, json!("prod-billing/x"));

        // An explicit deny wins over any grant, in the same or another policy.
        h.policy(
            "no-x",
            json!({"rules": [
                {"env": "*", "path": "billing/x", "capabilities": ["deny"]},
            ]}),
        )
        .await;
        h.policy(
            "billing-admin",
            json!({"rules": [{"env": "*", "path": "**", "capabilities": ["admin"]}]}),
        )
        .await;
        let (both, _) = h.token(&["billing-read", "billing-admin", "no-x"]).await;
        expect_err(read_as(&h, &both, "prod", "billing/x").await, "permission_denied");
        expect_err(write_as(&h, &both, "prod", "billing/x").await, "permission_denied");
        assert_eq!(read_as(&h, &both, "prod", "billing/y").await.unwrap(), json!("prod-billing/y"));
        assert_eq!(write_as(&h, &both, "staging", "billing/y").await.unwrap(), 1, "admin implies write");

        // A policy change is seen at once by existing tokens.
        h.policy(
            "billing-read",
            json!({"rules": [{"env": "staging", "path": "billing/*", "capabilities": ["read"]}]}),
        )
        .await;
        expect_err(read_as(&h, &reader, "prod", "billing/x").await, "permission_denied");
        assert_eq!(read_as(&h, &reader, "staging", "billing/x").await.unwrap(), json!("staging-billing/x"));
        // Deleting a policy takes its grants away.
        h.engine.delete_policy(&h.root_ctx(), "billing-read").await.unwrap();
        expect_err(read_as(&h, &reader, "staging", "billing/x").await, "permission_denied");
        expect_err(h.engine.delete_policy(&h.root_ctx(), "billing-read").await, "not_found");
        // Invalid policies are refused.
        expect_err(
            h.engine.put_policy(&h.root_ctx(), "bad", r#"{"rules":[{"env":"prod","path":"x","capabilities":["fly"]}]}"#).await,
            "invalid_policy",
        );
        expect_err(h.engine.put_policy(&h.root_ctx(), "root", r#"{"rules":[]}"#).await, "invalid_policy_name");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_reads_do_not_reveal_existence() {
    check_both(|h| async move {
        h.write("prod", "hidden/exists", json!("top-secret")).await;
        h.write("prod", "hidden/deleted", json!("gone")).await;
        h.engine
            .change_versions(&h.root_ctx(), "prod", "hidden/deleted", VersionOp::Delete, vec![])
            .await
            .unwrap();
        h.policy(
            "elsewhere",
            json!({"rules": [{"env": "prod", "path": "visible/**", "capabilities": ["read", "list", "write", "delete"]}]}),
        )
        .await;
        let (tok, _) = h.token(&["elsewhere"]).await;
        let e = &h.engine;

        let same = |a: &SecretsError, b: &SecretsError| {
            assert_eq!((a.kind, a.code, &a.message), (b.kind, b.code, &b.message));
        };
        let exists = expect_err(read_as(&h, &tok, "prod", "hidden/exists").await, "permission_denied");
        let missing = expect_err(read_as(&h, &tok, "prod", "hidden/missing").await, "permission_denied");
        let deleted = expect_err(read_as(&h, &tok, "prod", "hidden/deleted").await, "permission_denied");
        same(&exists, &missing);
        same(&exists, &deleted);
        // A specific version, metadata, deletes and writes: also identical.
        let ro = ReadOptions { version: Some(1), resolve: true };
        same(
            &e.read_secret(&h.ctx(&tok), "prod", "hidden/exists", ro).await.unwrap_err(),
            &e.read_secret(&h.ctx(&tok), "prod", "hidden/missing", ro).await.unwrap_err(),
        );
        same(
            &e.read_metadata(&h.ctx(&tok), "prod", "hidden/exists").await.unwrap_err(),
            &e.read_metadata(&h.ctx(&tok), "prod", "hidden/missing").await.unwrap_err(),
        );
        same(
            &e.delete_metadata(&h.ctx(&tok), "prod", "hidden/exists").await.unwrap_err(),
            &e.delete_metadata(&h.ctx(&tok), "prod", "hidden/missing").await.unwrap_err(),
        );
        same(
            &e.change_versions(&h.ctx(&tok), "prod", "hidden/exists", VersionOp::Destroy, vec![1])
                .await
                .unwrap_err(),
            &e.change_versions(&h.ctx(&tok), "prod", "hidden/missing", VersionOp::Destroy, vec![1])
                .await
                .unwrap_err(),
        );
        same(
            &write_as(&h, &tok, "prod", "hidden/exists").await.unwrap_err(),
            &write_as(&h, &tok, "prod", "hidden/missing").await.unwrap_err(),
        );
        same(
            &e.rollback(&h.ctx(&tok), "prod", "hidden/exists", 1).await.unwrap_err(),
            &e.rollback(&h.ctx(&tok), "prod", "hidden/missing", 1).await.unwrap_err(),
        );
        assert!(!exists.message.contains("hidden"), "the message names no path: {exists:?}");
        // Nothing was changed by the refused operations.
        assert_eq!(h.read("prod", "hidden/exists", None).await, json!("top-secret"));
        expect_err(h.try_read("prod", "hidden/missing", None).await, "not_found");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_errors_expiry_renewal_and_revocation() {
    check_both(|h| async move {
        let e = &h.engine;
        h.write("prod", "app/k", json!("v")).await;
        h.policy(
            "app",
            json!({"rules": [{"env": "prod", "path": "app/*", "capabilities": ["read"]}]}),
        )
        .await;

        // Missing and garbage tokens.
        let r = e
            .read_secret(&h.anon_ctx(), "prod", "app/k", ReadOptions::default())
            .await;
        expect_kind(r, Kind::Unauthenticated, "missing_token");
        expect_kind(
            read_as(&h, "", "prod", "app/k").await,
            Kind::Unauthenticated,
            "missing_token",
        );
        expect_kind(
            read_as(&h, "stw.garbage", "prod", "app/k").await,
            Kind::Unauthenticated,
            "invalid_token",
        );
        let last = if h.root.ends_with('x') { 'y' } else { 'x' };
        let near = format!("{}{last}", &h.root[..h.root.len() - 1]);
        expect_err(read_as(&h, &near, "prod", "app/k").await, "invalid_token");

        // TTL expiry by the clock.
        let t = e
            .create_token(
                &h.root_ctx(),
                TokenCreate {
                    policies: vec!["app".into()],
                    ttl: Some("1h".into()),
                    max_ttl: Some("3h".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(t.info.expires_at, Some(h.clock_now() + Duration::hours(1)));
        assert_eq!(t.info.ttl_secs, Some(3600));
        h.clock.advance(Duration::minutes(50));
        assert_eq!(
            read_as(&h, &t.token, "prod", "app/k").await.unwrap(),
            json!("v")
        );

        // renew_self extends by the ttl from now ...
        let renewed = e.renew_self(&h.ctx(&t.token), None).await.unwrap();
        assert_eq!(renewed.expires_at, Some(h.clock_now() + Duration::hours(1)));
        h.clock.advance(Duration::minutes(50)); // 100 min after creation: past the first expiry
        assert_eq!(
            read_as(&h, &t.token, "prod", "app/k").await.unwrap(),
            json!("v")
        );
        // ... but never past max_ttl (created + 3h).
        let capped = e
            .renew_self(&h.ctx(&t.token), Some("10h".into()))
            .await
            .unwrap();
        assert_eq!(
            capped.expires_at,
            Some(t.info.created_at + Duration::hours(3))
        );
        h.clock.advance(Duration::minutes(79)); // created + 2h59m
        assert_eq!(
            read_as(&h, &t.token, "prod", "app/k").await.unwrap(),
            json!("v")
        );
        h.clock.advance(Duration::minutes(1)); // created + 3h: expired
        expect_kind(
            read_as(&h, &t.token, "prod", "app/k").await,
            Kind::Unauthenticated,
            "token_expired",
        );
        expect_err(e.renew_self(&h.ctx(&t.token), None).await, "token_expired");
        expect_err(e.lookup_self(&h.ctx(&t.token)).await, "token_expired");

        // A plain ttl token expires exactly at its ttl.
        let (short, _) = {
            let t = e
                .create_token(
                    &h.root_ctx(),
                    TokenCreate {
                        policies: vec!["app".into()],
                        ttl: Some("90s".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            (t.token, t.info.accessor)
        };
        h.clock.advance(Duration::seconds(89));
        assert!(read_as(&h, &short, "prod", "app/k").await.is_ok());
        h.clock.advance(Duration::seconds(1));
        expect_err(read_as(&h, &short, "prod", "app/k").await, "token_expired");
        // Non-renewable tokens cannot be renewed.
        let fixed = e
            .create_token(
                &h.root_ctx(),
                TokenCreate {
                    ttl: Some("1h".into()),
                    renewable: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        expect_err(
            e.renew_self(&h.ctx(&fixed.token), None).await,
            "not_renewable",
        );

        // Revoking oneself, and an admin revoking by accessor.
        let (a, _) = h.token(&["app"]).await;
        e.revoke(&h.ctx(&a), None).await.unwrap();
        expect_kind(
            read_as(&h, &a, "prod", "app/k").await,
            Kind::Unauthenticated,
            "token_revoked",
        );
        let (b, b_acc) = h.token(&["app"]).await;
        let (c, c_acc) = h.token(&["app"]).await;
        expect_err(
            e.revoke(&h.ctx(&c), Some(&b_acc)).await,
            "permission_denied",
        );
        assert!(
            read_as(&h, &b, "prod", "app/k").await.is_ok(),
            "a refused revoke revokes nothing"
        );
        e.revoke(&h.root_ctx(), Some(&b_acc)).await.unwrap();
        expect_err(read_as(&h, &b, "prod", "app/k").await, "token_revoked");
        assert!(
            read_as(&h, &c, "prod", "app/k").await.is_ok(),
            "other tokens are unaffected"
        );
        let info = e.lookup_accessor(&h.root_ctx(), &b_acc).await.unwrap();
        assert!(info.revoked);
        assert!(
            !e.lookup_accessor(&h.root_ctx(), &c_acc)
                .await
                .unwrap()
                .revoked
        );
        expect_err(e.revoke(&h.root_ctx(), Some("acc.nope")).await, "not_found");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_delegate_only_their_own_policies_and_lookup_hides_the_token() {
    check_both(|h| async move {
        let e = &h.engine;
        h.write("prod", "app/k", json!("v")).await;
        h.policy(
            "app",
            json!({"rules": [{"env": "prod", "path": "app/*", "capabilities": ["read"]}]}),
        )
        .await;
        h.policy(
            "ops",
            json!({"rules": [{"env": "*", "path": "**", "capabilities": ["read", "write"]}]}),
        )
        .await;
        let (tok, acc) = h.token(&["app"]).await;

        // Own policies, with a ttl: fine; the child works.
        let child = e
            .create_token(
                &h.ctx(&tok),
                TokenCreate {
                    policies: vec!["app".into()],
                    ttl: Some("1h".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(child.info.policies, vec!["app"]);
        assert_eq!(
            read_as(&h, &child.token, "prod", "app/k").await.unwrap(),
            json!("v")
        );
        // Someone else's policy, root, or no ttl: refused.
        let r = e
            .create_token(
                &h.ctx(&tok),
                TokenCreate {
                    policies: vec!["app".into(), "ops".into()],
                    ttl: Some("1h".into()),
                    ..Default::default()
                },
            )
            .await;
        expect_kind(r, Kind::Forbidden, "permission_denied");
        let r = e
            .create_token(
                &h.ctx(&tok),
                TokenCreate {
                    policies: vec!["root".into()],
                    ttl: Some("1h".into()),
                    ..Default::default()
                },
            )
            .await;
        expect_err(r, "permission_denied");
        let r = e
            .create_token(
                &h.ctx(&tok),
                TokenCreate {
                    policies: vec!["app".into()],
                    ..Default::default()
                },
            )
            .await;
        expect_err(r, "ttl_required");
        let r = e
            .create_token(
                &h.ctx(&tok),
                TokenCreate {
                    policies: vec!["app".into()],
                    ttl: Some("soon".into()),
                    ..Default::default()
                },
            )
            .await;
        expect_err(r, "invalid_ttl");
        // Root may grant anything, including no ttl.
        let ops = e
            .create_token(
                &h.root_ctx(),
                TokenCreate {
                    policies: vec!["ops".into()],
                    display_name: "ops-bot".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ops.info.expires_at, None);

        // lookup_self shows the record, never the token.
        let me = e.lookup_self(&h.ctx(&tok)).await.unwrap();
        assert_eq!(me.accessor, acc);
        assert_eq!(me.policies, vec!["app"]);
        let json = serde_json::to_string(&me).unwrap();
        let dbg = format!("{me:?}");
        for shown in [&json, &dbg] {
            assert!(!shown.contains(&tok), "token leaked: {shown}");
            assert!(
                !shown.contains(&tok["stw.".len()..]),
                "token body leaked: {shown}"
            );
        }
        let root_me = e.lookup_self(&h.root_ctx()).await.unwrap();
        assert_eq!(root_me.policies, vec!["root"]);
        assert!(!serde_json::to_string(&root_me).unwrap().contains(&h.root));
        // Listing tokens shows accessors only.
        let all = e.list_tokens(&h.root_ctx()).await.unwrap();
        let listed = serde_json::to_string(&all).unwrap();
        assert!(all.iter().any(|t| t.accessor == acc));
        for secret in [&tok, &child.token, &ops.token, &h.root] {
            assert!(!listed.contains(secret.as_str()));
        }
        // And the token is not stored: only its hash is.
        let recs = h
            .store()
            .read(|tx| tx.token_list())
            .await
            .map_err(|e: steward_store::StoreError| e)
            .unwrap();
        assert!(recs
            .iter()
            .all(|r| !serde_json::to_string(r).unwrap().contains(&tok)));
        let raw = h.backend.raw_bytes();
        assert!(!crate::harness::contains(&raw, tok.as_bytes()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegating_token_has_a_bounded_number_of_live_children() {
    check_both(|h| async move {
        h.policy(
            "p",
            json!({"rules": [{"env": "prod", "path": "**", "capabilities": ["read"]}]}),
        )
        .await;
        let (parent, _) = h.token(&["p"]).await;
        let make = || {
            let e = h.engine.clone();
            let ctx = h.ctx(&parent);
            async move {
                e.create_token(
                    &ctx,
                    steward_secrets::TokenCreate {
                        policies: vec!["p".into()],
                        ttl: Some("1h".into()),
                        ..Default::default()
                    },
                )
                .await
            }
        };
        let max = steward_secrets::MAX_CHILDREN;
        let mut made = vec![];
        for chunk in 0..max.div_ceil(50) {
            let n = 50.min(max - chunk * 50);
            let batch: Vec<_> = (0..n).map(|_| tokio::spawn(make())).collect();
            for t in batch {
                made.push(t.await.unwrap().unwrap().info.accessor);
            }
        }
        let err = make().await.unwrap_err();
        assert_eq!(err.code, "too_many_tokens", "{err:?}");
        // Revoking one frees a place.
        h.engine
            .revoke(&h.root_ctx(), Some(&made[0]))
            .await
            .unwrap();
        make().await.unwrap();
    })
    .await;
}
