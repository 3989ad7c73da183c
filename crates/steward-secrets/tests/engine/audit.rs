//! The audit trail: exactly one entry per operation (success or failure), actor accessors but
//! never tokens or values, value HMACs that `audit_hash` reproduces, and a hash chain that
//! catches edited, deleted and cut-off entries.

use std::future::Future;

use chrono::Duration;
use serde_json::{json, Value};
use steward_secrets::{
    MetadataUpdate, ReadOptions, RequestCtx, SecretsError, TokenCreate, VersionOp, WriteRequest,
};

use crate::harness::{check_both, expect_err, H};

/// Runs one operation and checks it added exactly one entry with this action, outcome and actor.
async fn audited<T: std::fmt::Debug>(
    h: &H,
    action: &str,
    outcome: &str,
    actor: &str,
    op: impl Future<Output = Result<T, SecretsError>>,
) -> Result<T, SecretsError> {
    let before = h.audit_count().await;
    let r = op.await;
    let rows = h.audit_rows().await;
    assert_eq!(
        rows.len(),
        before + 1,
        "{action} ({outcome}) must add exactly one audit entry; result {r:?}"
    );
    let entry: Value = serde_json::from_str(&rows.last().unwrap().entry).unwrap();
    let got = match &r {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    assert_eq!(got, outcome, "{action}: unexpected result {r:?}");
    assert_eq!(entry["action"], json!(action), "{entry}");
    assert_eq!(entry["outcome"], json!(outcome), "{entry}");
    assert_eq!(entry["actor"], json!(actor), "{entry}");
    assert_eq!(entry["seq"], json!(rows.len()), "{entry}");
    r
}

fn w(value: Value, cas: Option<u64>) -> WriteRequest {
    WriteRequest {
        value,
        cas,
        metadata: None,
    }
}

fn read_opts() -> ReadOptions {
    ReadOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_writes_exactly_one_entry_without_tokens_or_values() {
    check_both(|h| async move {
        let e = h.engine.clone();
        let canary = format!("audit-canary-{:016x}", rand::random::<u64>());
        let canary2 = format!("audit-canary-obj-{:016x}", rand::random::<u64>());
        let root = e.lookup_self(&h.root_ctx()).await.unwrap().accessor;
        h.policy(
            "app",
            json!({"rules": [{"env": "prod", "path": "app/*", "capabilities": ["read", "write"]}]}),
        )
        .await;
        h.policy(
            "spare",
            json!({"rules": [{"env": "dev", "path": "x", "capabilities": ["read"]}]}),
        )
        .await;
        let (user, ua) = h.token(&["app"]).await;
        let rc = || h.root_ctx();
        let uc = || h.ctx(&user);
        let p = "app/k";

        let write_ctx = rc();
        audited(
            &h,
            "secret.write",
            "ok",
            &root,
            e.write_secret(&write_ctx, "prod", p, w(json!(canary), None)),
        )
        .await
        .unwrap();
        let write_entry = h.last_audit().await;
        audited(
            &h,
            "secret.write",
            "ok",
            &ua,
            e.write_secret(&uc(), "prod", "app/obj", w(json!({"pw": canary2}), None)),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.read",
            "ok",
            &root,
            e.read_secret(&rc(), "prod", p, read_opts()),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.read",
            "ok",
            &ua,
            e.read_secret(&uc(), "prod", "app/obj", read_opts()),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.read",
            "permission_denied",
            &ua,
            e.read_secret(&uc(), "staging", p, read_opts()),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.read",
            "missing_token",
            "anonymous",
            e.read_secret(&h.anon_ctx(), "prod", p, read_opts()),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.read",
            "invalid_token",
            "anonymous",
            e.read_secret(&h.ctx("stw.bogus"), "prod", p, read_opts()),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.read",
            "not_found",
            &root,
            e.read_secret(&rc(), "prod", "app/none", read_opts()),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.read",
            "unknown_environment",
            &root,
            e.read_secret(&rc(), "qa", p, read_opts()),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.write",
            "cas_mismatch",
            &root,
            e.write_secret(&rc(), "prod", p, w(json!(canary), Some(9))),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.write",
            "invalid_value",
            &root,
            e.write_secret(&rc(), "prod", p, w(json!(5), None)),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.write",
            "permission_denied",
            &ua,
            e.write_secret(&uc(), "prod", "other", w(json!(canary), None)),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.write",
            "missing_token",
            "anonymous",
            e.write_secret(&h.anon_ctx(), "prod", p, w(json!(canary), None)),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.write",
            "ok",
            &root,
            e.write_secret(&rc(), "prod", p, w(json!("second"), Some(1))),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.metadata.read",
            "ok",
            &root,
            e.read_metadata(&rc(), "prod", p),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.metadata.write",
            "ok",
            &root,
            e.update_metadata(
                &rc(),
                "prod",
                p,
                MetadataUpdate {
                    owner: Some("team".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.metadata.write",
            "permission_denied",
            &ua,
            e.update_metadata(&uc(), "prod", "zzz", MetadataUpdate::default()),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.list",
            "ok",
            &root,
            e.list(&rc(), "prod", "app/"),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.list",
            "permission_denied",
            &ua,
            e.list(&uc(), "prod", ""),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.delete",
            "ok",
            &root,
            e.change_versions(&rc(), "prod", p, VersionOp::Delete, vec![]),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.read",
            "version_deleted",
            &root,
            e.read_secret(&rc(), "prod", p, read_opts()),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.undelete",
            "ok",
            &root,
            e.change_versions(&rc(), "prod", p, VersionOp::Undelete, vec![2]),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.undelete",
            "missing_versions",
            &root,
            e.change_versions(&rc(), "prod", p, VersionOp::Undelete, vec![]),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.rollback",
            "ok",
            &root,
            e.rollback(&rc(), "prod", p, 1),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.rollback",
            "not_found",
            &root,
            e.rollback(&rc(), "prod", p, 99),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.export",
            "ok",
            &root,
            e.export(&rc(), "prod", "app/"),
        )
        .await
        .unwrap();
        audited(
            &h,
            "template.render",
            "ok",
            &root,
            e.render_template(&rc(), "X=${secret:prod/app/k}"),
        )
        .await
        .unwrap();
        audited(
            &h,
            "template.render",
            "permission_denied",
            &ua,
            e.render_template(&uc(), "X=${secret:dev/x}"),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "secret.destroy",
            "ok",
            &root,
            e.change_versions(&rc(), "prod", p, VersionOp::Destroy, vec![1]),
        )
        .await
        .unwrap();
        audited(
            &h,
            "secret.read",
            "version_destroyed",
            &root,
            e.read_secret(
                &rc(),
                "prod",
                p,
                ReadOptions {
                    version: Some(1),
                    resolve: true,
                },
            ),
        )
        .await
        .unwrap_err();

        let child = audited(
            &h,
            "token.create",
            "ok",
            &ua,
            e.create_token(
                &uc(),
                TokenCreate {
                    policies: vec!["app".into()],
                    ttl: Some("1h".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        audited(
            &h,
            "token.create",
            "permission_denied",
            &ua,
            e.create_token(
                &uc(),
                TokenCreate {
                    policies: vec!["spare".into()],
                    ttl: Some("1h".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "token.create",
            "invalid_ttl",
            &root,
            e.create_token(
                &rc(),
                TokenCreate {
                    ttl: Some("later".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap_err();
        audited(&h, "token.lookup_self", "ok", &ua, e.lookup_self(&uc()))
            .await
            .unwrap();
        audited(
            &h,
            "token.renew_self",
            "ok",
            &child.info.accessor,
            e.renew_self(&h.ctx(&child.token), None),
        )
        .await
        .unwrap();
        audited(
            &h,
            "token.lookup",
            "ok",
            &root,
            e.lookup_accessor(&rc(), &ua),
        )
        .await
        .unwrap();
        audited(
            &h,
            "token.lookup",
            "permission_denied",
            &ua,
            e.lookup_accessor(&uc(), &root),
        )
        .await
        .unwrap_err();
        audited(&h, "token.list", "ok", &root, e.list_tokens(&rc()))
            .await
            .unwrap();
        audited(
            &h,
            "policy.write",
            "ok",
            &root,
            e.put_policy(
                &rc(),
                "extra",
                r#"{"rules":[{"env":"dev","path":"y","capabilities":["read"]}]}"#,
            ),
        )
        .await
        .unwrap();
        audited(
            &h,
            "policy.write",
            "invalid_policy",
            &root,
            e.put_policy(&rc(), "extra", "{"),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "policy.write",
            "permission_denied",
            &ua,
            e.put_policy(&uc(), "mine", r#"{"rules":[]}"#),
        )
        .await
        .unwrap_err();
        audited(&h, "policy.read", "ok", &root, e.get_policy(&rc(), "extra"))
            .await
            .unwrap();
        audited(&h, "policy.list", "ok", &root, e.list_policies(&rc()))
            .await
            .unwrap();
        audited(
            &h,
            "policy.delete",
            "ok",
            &root,
            e.delete_policy(&rc(), "extra"),
        )
        .await
        .unwrap();
        audited(
            &h,
            "policy.delete",
            "not_found",
            &root,
            e.delete_policy(&rc(), "extra"),
        )
        .await
        .unwrap_err();
        let hash_ctx = rc();
        let value_hmac = audited(
            &h,
            "audit.hash",
            "ok",
            &root,
            e.audit_hash(&hash_ctx, &canary),
        )
        .await
        .unwrap();
        audited(
            &h,
            "audit.hash",
            "permission_denied",
            &ua,
            e.audit_hash(&uc(), &canary),
        )
        .await
        .unwrap_err();
        audited(
            &h,
            "audit.export",
            "ok",
            &root,
            e.audit_export(&rc(), 0, 1000),
        )
        .await
        .unwrap();
        audited(&h, "audit.verify", "ok", &root, e.audit_verify(&rc()))
            .await
            .unwrap();
        audited(&h, "sys.keys.status", "ok", &root, e.key_status(&rc()))
            .await
            .unwrap();
        // A request the API refused: Ok for the caller of audit_refused, outcome as given.
        let refused = h.root_ctx();
        let before = h.audit_count().await;
        e.audit_refused(&refused, "http.bad_request", "invalid_json")
            .await
            .unwrap();
        assert_eq!(h.audit_count().await, before + 1);
        let entry = h.last_audit().await;
        assert_eq!(
            (&entry["action"], &entry["outcome"], &entry["actor"]),
            (
                &json!("http.bad_request"),
                &json!("invalid_json"),
                &json!(root)
            )
        );
        assert!(refused.is_audited());
        // An already-audited request is not audited twice.
        let before = h.audit_count().await;
        e.audit_refused(&refused, "http.bad_request", "invalid_json")
            .await
            .unwrap();
        assert_eq!(h.audit_count().await, before);
        audited(
            &h,
            "secret.metadata.delete",
            "ok",
            &root,
            e.delete_metadata(&rc(), "prod", "app/obj"),
        )
        .await
        .unwrap();
        audited(
            &h,
            "token.revoke",
            "permission_denied",
            &ua,
            e.revoke(&uc(), Some(&root)),
        )
        .await
        .unwrap_err();
        audited(&h, "token.revoke", "ok", &ua, e.revoke(&uc(), None))
            .await
            .unwrap();
        audited(
            &h,
            "secret.read",
            "token_revoked",
            "anonymous",
            e.read_secret(&uc(), "prod", p, read_opts()),
        )
        .await
        .unwrap_err();
        h.clock.advance(Duration::hours(2));
        // The child was created by the token revoked above, so it died with it.
        audited(
            &h,
            "secret.read",
            "token_revoked",
            "anonymous",
            e.read_secret(&h.ctx(&child.token), "prod", p, read_opts()),
        )
        .await
        .unwrap_err();
        audited(&h, "sys.keys.rotate", "ok", &root, e.rotate_keys(&rc()))
            .await
            .unwrap();
        assert!(write_ctx.is_audited());

        // The write's entry carries the value's HMAC, which audit_hash reproduces.
        assert_eq!(
            write_entry["hmacs"]["value"],
            json!(value_hmac),
            "{write_entry}"
        );
        let other = e.audit_hash(&rc(), "something else").await.unwrap();
        assert_ne!(other, value_hmac);
        assert!(
            value_hmac.starts_with("hmac-sha256:") && value_hmac.len() == 12 + 64,
            "{value_hmac}"
        );

        // No entry holds a token or a value; actors are accessors (or anonymous).
        let rows = h.audit_rows().await;
        let actors = [
            root.as_str(),
            ua.as_str(),
            child.info.accessor.as_str(),
            "anonymous",
        ];
        for (i, rec) in rows.iter().enumerate() {
            assert_eq!(rec.seq, i as u64 + 1, "seqs are dense");
            for secret in [
                h.root.as_str(),
                user.as_str(),
                child.token.as_str(),
                canary.as_str(),
                canary2.as_str(),
                "second",
            ] {
                assert!(
                    !rec.entry.contains(secret),
                    "entry {} leaks {secret:?}: {}",
                    rec.seq,
                    rec.entry
                );
            }
            let entry: Value = serde_json::from_str(&rec.entry).unwrap();
            let actor = entry["actor"].as_str().unwrap();
            assert!(actors.contains(&actor), "unexpected actor {actor}");
        }
        let export = e.audit_export(&rc(), 0, 10_000).await.unwrap();
        for line in &export.lines {
            assert!(!line.contains(&h.root) && !line.contains(&user) && !line.contains(&canary));
        }
        assert_eq!(export.lines.len(), rows.len());

        // Finally the chain is intact (the background re-wrap adds no entries).
        e.rewrap_all().await.unwrap();
        let report = e.audit_verify(&rc()).await.unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.entries, rows.len() as u64 + 1);
    })
    .await;
}

/// Eight audited operations: seq 1 is a write, seqs 2-8 are reads. Checks the chain verifies (a ninth entry).
async fn eight_entries(h: &H) {
    h.write("prod", "a", json!("value-a")).await;
    for _ in 0..7 {
        h.read("prod", "a", None).await;
    }
    let rows = h.audit_rows().await;
    assert_eq!(rows.len(), 8);
    assert!(rows[2].entry.contains("\"secret.read\""));
    let ok = h.engine.audit_verify(&h.root_ctx()).await.unwrap();
    assert!(ok.ok && ok.first_bad.is_none() && ok.entries == 8, "{ok:?}");
}

fn ctx(h: &H) -> RequestCtx {
    h.root_ctx()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_an_edited_entry() {
    check_both(|h| async move {
        eight_entries(&h).await;
        let n = h.backend.exec_sql(
            "UPDATE audit_log SET entry = replace(entry, 'secret.read', 'secret.xxxx') WHERE seq = 3",
        );
        assert_eq!(n, 1);
        let report = h.engine.audit_verify(&ctx(&h)).await.unwrap();
        assert!(!report.ok, "{report:?}");
        assert_eq!(report.first_bad.as_ref().unwrap().seq, 3, "{report:?}");
        // Editing the hash along with the entry does not help without the key.
        eight_entries_fresh_edit_with_hash(&h).await;
    })
    .await;
}

/// Rewrites seq 3's hash as a plain SHA-256 of the edited entry (what an
/// attacker without the audit key could do) and checks the break is still at 3.
async fn eight_entries_fresh_edit_with_hash(h: &H) {
    let rows = h.audit_rows().await;
    let forged = hex::encode(steward_crypto::sha256(rows[2].entry.as_bytes()));
    let sql = match h.backend.name() {
        "sqlite" => format!("UPDATE audit_log SET hash = X'{forged}' WHERE seq = 3"),
        _ => format!("UPDATE audit_log SET hash = decode('{forged}', 'hex') WHERE seq = 3"),
    };
    assert_eq!(h.backend.exec_sql(&sql), 1);
    let report = h.engine.audit_verify(&ctx(h)).await.unwrap();
    assert_eq!(report.first_bad.unwrap().seq, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_a_deleted_middle_entry() {
    check_both(|h| async move {
        eight_entries(&h).await; // 9 entries now (verify adds one)
        assert_eq!(h.backend.exec_sql("DELETE FROM audit_log WHERE seq = 5"), 1);
        let report = h.engine.audit_verify(&ctx(&h)).await.unwrap();
        assert!(!report.ok);
        let brk = report.first_bad.unwrap();
        assert_eq!(brk.seq, 5, "{brk:?}");
        assert!(brk.reason.contains("missing"), "{brk:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_entries_cut_off_the_end() {
    check_both(|h| async move {
        eight_entries(&h).await;
        h.read("prod", "a", None).await;
        let last = h.audit_rows().await.last().unwrap().seq;
        assert_eq!(last, 10);
        assert_eq!(
            h.backend
                .exec_sql(&format!("DELETE FROM audit_log WHERE seq > {}", last - 2)),
            2
        );
        let report = h.engine.audit_verify(&ctx(&h)).await.unwrap();
        assert!(!report.ok);
        let brk = report.first_bad.unwrap();
        assert_eq!(brk.seq, last - 1, "{brk:?}");
        assert!(brk.reason.contains("end"), "{brk:?}");
        // Only admins may verify; a failed verify is audited like everything else.
        let (tok, _) = h.token(&[]).await;
        expect_err(
            h.engine.audit_verify(&h.ctx(&tok)).await,
            "permission_denied",
        );
    })
    .await;
}

/// The dashboard's audit search: newest first, every filter, paging with `before` across
/// store pages, and admin on sys/audit required (the search itself is audited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_search_filters_and_pages_newest_first() {
    use steward_secrets::AuditFilter;
    check_both(|h| async move {
        let e = &h.engine;
        h.policy(
            "reader",
            json!({"rules": [{"env": "prod", "path": "a", "capabilities": ["read"]}]}),
        )
        .await;
        let (reader, reader_acc) = h.token(&["reader"]).await;
        h.write("prod", "a", json!("value-a")).await;
        h.write("prod", "b/c", json!("value-c")).await;
        // 2,500 reads: more than one store page (2,000) to walk back through.
        for _ in 0..2500 {
            h.read("prod", "a", None).await;
        }
        expect_err(
            e.read_secret(&h.ctx(&reader), "prod", "b/c", read_opts())
                .await,
            "permission_denied",
        );
        let total = h.audit_count().await as u64;

        // No filter: the newest entries first, seq descending.
        let all = e
            .audit_search(&ctx(&h), &AuditFilter::default(), None, 5)
            .await
            .unwrap();
        let seqs: Vec<u64> = all.entries.iter().map(|x| x.seq).collect();
        assert_eq!(seqs, (total - 4..=total).rev().collect::<Vec<_>>());
        assert_eq!(all.next_before, Some(total - 4));

        // Actor + outcome: the one refusal, then the rest of the log read to its start.
        let f = AuditFilter {
            actor: Some(reader_acc.clone()),
            outcome: Some("failed".into()),
            ..Default::default()
        };
        let denied = e.audit_search(&ctx(&h), &f, None, 10).await.unwrap();
        assert_eq!(denied.entries.len(), 1, "{denied:?}");
        assert_eq!(denied.entries[0].outcome, "permission_denied");
        assert_eq!(denied.entries[0].path.as_deref(), Some("b/c"));
        assert_eq!(denied.next_before, None, "the whole log was read");

        // Path prefix + action prefix: the write of b/c, far back (past a store page).
        let f = AuditFilter {
            action: Some("secret.wr".into()),
            env: Some("prod".into()),
            path: Some("b/".into()),
            ..Default::default()
        };
        let w = e.audit_search(&ctx(&h), &f, None, 10).await.unwrap();
        assert_eq!(w.entries.len(), 1);
        assert_eq!(w.entries[0].action, "secret.write");
        assert!(w.scanned > 2000, "walked back across pages: {}", w.scanned);

        // Paging: 3 at a time through the reads, no overlap, no gap.
        let f = AuditFilter {
            action: Some("secret.read".into()),
            path: Some("a".into()),
            outcome: Some("ok".into()),
            ..Default::default()
        };
        let p1 = e.audit_search(&ctx(&h), &f, None, 3).await.unwrap();
        let p2 = e
            .audit_search(&ctx(&h), &f, p1.next_before, 3)
            .await
            .unwrap();
        let s1: Vec<u64> = p1.entries.iter().map(|x| x.seq).collect();
        let s2: Vec<u64> = p2.entries.iter().map(|x| x.seq).collect();
        assert_eq!(s1.len(), 3);
        assert_eq!(s2.len(), 3);
        assert!(s1[2] > s2[0], "{s1:?} then {s2:?}");
        assert_eq!(s1[2] - 1, s2[0], "consecutive reads: no gap between pages");

        // Time window: nothing before the start of the test clock.
        let f = AuditFilter {
            until: Some(h.clock_now() - Duration::days(1)),
            ..Default::default()
        };
        let none = e.audit_search(&ctx(&h), &f, None, 10).await.unwrap();
        assert!(none.entries.is_empty());

        // Only admins on sys/audit may search; the refusal is audited like any other.
        let before = h.audit_count().await;
        expect_err(
            e.audit_search(&h.ctx(&reader), &AuditFilter::default(), None, 10)
                .await,
            "permission_denied",
        );
        assert_eq!(h.audit_count().await, before + 1);
        let last = h.last_audit().await;
        assert_eq!(last["action"], json!("audit.search"));
    })
    .await;
}
