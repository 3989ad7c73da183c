//! `${secret:ENV/PATH}` references: resolution on read, `#field`, raw reads, cycles,
//! permissions on referenced secrets, and template rendering.

use serde_json::json;
use steward_secrets::{Kind, ReadOptions};

use crate::harness::{check_both, expect_err, expect_kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_resolve_fields_raw_cycles_and_templates() {
    check_both(|h| async move {
        let ctx = h.root_ctx();
        let e = &h.engine;
        h.write("prod", "shared/smtp", json!("smtp-pass-123")).await;
        h.write("prod", "shared/db", json!({"user": "app", "password": "pw-456", "port": 5432}))
            .await;
        let raw_cfg = json!({
            "smtp_url": "smtp://mailer:${secret:prod/shared/smtp}@mail.example:587",
            "plain": "no refs here",
        });
        h.write("prod", "app/config", raw_cfg.clone()).await;
        let raw_dsn = "postgres://${secret:prod/shared/db#user}:${secret:prod/shared/db#password}@db:${secret:prod/shared/db#port}/app";
        h.write("prod", "app/dsn", json!(raw_dsn)).await;

        // Resolved on read, inside objects and strings.
        assert_eq!(
            h.read("prod", "app/config", None).await,
            json!({"smtp_url": "smtp://mailer:smtp-pass-123@mail.example:587", "plain": "no refs here"})
        );
        // #field picks one field of an object (non-strings are rendered as JSON).
        assert_eq!(
            h.read("prod", "app/dsn", None).await,
            json!("postgres://app:pw-456@db:5432/app")
        );
        // A reference follows the target's latest version.
        h.write("prod", "shared/smtp", json!("rotated-789")).await;
        assert_eq!(
            h.read("prod", "app/config", None).await["smtp_url"],
            json!("smtp://mailer:rotated-789@mail.example:587")
        );
        // resolve = false returns the raw value.
        let raw = e
            .read_secret(&ctx, "prod", "app/config", ReadOptions { version: None, resolve: false })
            .await
            .unwrap();
        assert_eq!(raw.value, raw_cfg);
        let raw = e
            .read_secret(&ctx, "prod", "app/dsn", ReadOptions { version: Some(1), resolve: false })
            .await
            .unwrap();
        assert_eq!(raw.value, json!(raw_dsn));

        // Chains resolve recursively.
        h.write("dev", "chain/a", json!("a+${secret:dev/chain/b}")).await;
        h.write("dev", "chain/b", json!("b+${secret:dev/chain/c}")).await;
        h.write("dev", "chain/c", json!("c")).await;
        assert_eq!(h.read("dev", "chain/a", None).await, json!("a+b+c"));

        // Cycles a -> b -> a, and a self reference.
        h.write("prod", "cyc/a", json!("x${secret:prod/cyc/b}")).await;
        h.write("prod", "cyc/b", json!({"k": "${secret:prod/cyc/a}"})).await;
        let err = expect_kind(h.try_read("prod", "cyc/a", None).await, Kind::Invalid, "reference_cycle");
        assert!(err.message.contains("prod/cyc/a") && err.message.contains("prod/cyc/b"), "{err:?}");
        h.write("prod", "cyc/self", json!("${secret:prod/cyc/self}")).await;
        expect_err(h.try_read("prod", "cyc/self", None).await, "reference_cycle");
        // b references a as an object field without #field... via a cycle too.
        expect_err(h.try_read("prod", "cyc/b", None).await, "reference_cycle");

        // Bad references are errors, not silently passed through.
        h.write("prod", "bad/obj", json!("${secret:prod/shared/db}")).await;
        expect_err(h.try_read("prod", "bad/obj", None).await, "invalid_reference");
        h.write("prod", "bad/field", json!("${secret:prod/shared/db#nope}")).await;
        expect_err(h.try_read("prod", "bad/field", None).await, "invalid_reference");
        h.write("prod", "bad/missing", json!("${secret:prod/shared/missing}")).await;
        expect_err(h.try_read("prod", "bad/missing", None).await, "not_found");
        // A malformed reference is refused when written, so nothing unreadable is stored.
        let bad = e
            .write_secret(
                &h.root_ctx(),
                "prod",
                "bad/unterminated",
                steward_secrets::WriteRequest {
                    value: json!({"k": "${secret:prod/shared/smtp"}),
                    cas: None,
                    metadata: None,
                },
            )
            .await;
        expect_err(bad, "invalid_reference");
        expect_err(h.try_read("prod", "bad/unterminated", None).await, "not_found");

        // Templates.
        let out = e
            .render_template(
                &ctx,
                "SMTP_PASSWORD=${secret:prod/shared/smtp}\nDB_USER=${secret:prod/shared/db#user}\nLITERAL=$HOME\n",
            )
            .await
            .unwrap();
        assert_eq!(out, "SMTP_PASSWORD=rotated-789\nDB_USER=app\nLITERAL=$HOME\n");
        expect_err(e.render_template(&ctx, "X=${secret:prod/shared/nope}").await, "not_found");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_to_unreadable_secrets_are_denied_without_leaking() {
    check_both(|h| async move {
        h.write("prod", "shared/smtp", json!("smtp-pass-123")).await;
        h.write("prod", "app/config", json!("pw=${secret:prod/shared/smtp}"))
            .await;
        h.write(
            "prod",
            "app/ghost",
            json!("pw=${secret:prod/shared/does_not_exist}"),
        )
        .await;
        h.write("prod", "app/plain", json!("plain")).await;
        h.policy(
            "app-read",
            json!({"rules": [{"env": "prod", "path": "app/*", "capabilities": ["read"]}]}),
        )
        .await;
        let (tok, _) = h.token(&["app-read"]).await;
        let e = &h.engine;

        assert_eq!(
            e.read_secret(&h.ctx(&tok), "prod", "app/plain", ReadOptions::default())
                .await
                .unwrap()
                .value,
            json!("plain")
        );
        let denied = expect_kind(
            e.read_secret(&h.ctx(&tok), "prod", "app/config", ReadOptions::default())
                .await,
            Kind::Forbidden,
            "permission_denied",
        );
        assert!(!denied.message.contains("smtp-pass-123"));
        // Same answer whether the referenced secret exists or not.
        let ghost = expect_kind(
            e.read_secret(&h.ctx(&tok), "prod", "app/ghost", ReadOptions::default())
                .await,
            Kind::Forbidden,
            "permission_denied",
        );
        assert_eq!(
            denied.message.replace("prod/shared/smtp", "X"),
            ghost.message.replace("prod/shared/does_not_exist", "X")
        );
        // The raw value (the reference itself) is readable.
        let raw = e
            .read_secret(
                &h.ctx(&tok),
                "prod",
                "app/config",
                ReadOptions {
                    version: None,
                    resolve: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(raw.value, json!("pw=${secret:prod/shared/smtp}"));
        // Templates check permissions too.
        expect_err(
            e.render_template(&h.ctx(&tok), "${secret:prod/shared/smtp}")
                .await,
            "permission_denied",
        );
        assert_eq!(
            e.render_template(&h.ctx(&tok), "${secret:prod/app/plain}")
                .await
                .unwrap(),
            "plain"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_expansion_is_bounded() {
    check_both(|h| async move {
        let ctx = h.root_ctx();
        let e = &h.engine;
        h.write("dev", "big", json!("x".repeat(60_000))).await;
        h.write("dev", "small", json!("s")).await;
        // Many references to one secret: read once, but the answer may not blow up.
        let many_big = "${secret:dev/big}".repeat(5);
        expect_err(
            e.render_template(&ctx, &many_big).await,
            "reference_too_large",
        );
        // Too many substitutions, however small.
        let many_small = "${secret:dev/small}".repeat(1100);
        expect_err(
            e.render_template(&ctx, &many_small).await,
            "reference_too_many",
        );
        // Within the limits it works, and each distinct secret is named once in the audit.
        let ok = e
            .render_template(&ctx, &"${secret:dev/small}".repeat(100))
            .await
            .unwrap();
        assert_eq!(ok, "s".repeat(100));
        let entry = h.last_audit().await;
        assert_eq!(entry["hmacs"]["references"], json!("dev/small"), "{entry}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_max_versions_needs_delete() {
    check_both(|h| async move {
        h.policy(
            "writer",
            json!({"rules": [{"env": "prod", "path": "app/*", "capabilities": ["read", "write"]}]}),
        )
        .await;
        let (w, _) = h.token(&["writer"]).await;
        for i in 0..3 {
            h.write("prod", "app/k", json!(format!("v{i}"))).await;
        }
        let err = h
            .engine
            .update_metadata(
                &h.ctx(&w),
                "prod",
                "app/k",
                serde_json::from_value(json!({"max_versions": 1})).unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, "permission_denied");
        let err = h
            .engine
            .write_secret(
                &h.ctx(&w),
                "prod",
                "app/k",
                steward_secrets::WriteRequest {
                    value: json!("v3"),
                    cas: None,
                    metadata: Some(serde_json::from_value(json!({"max_versions": 1})).unwrap()),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, "permission_denied");
        // History is intact: version 1 still reads.
        assert_eq!(h.read("prod", "app/k", Some(1)).await, json!("v0"));
    })
    .await;
}
