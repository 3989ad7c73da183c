//! Sealing: Shamir initialization and share submission, key unsealing, and what a sealed
//! engine refuses.

use serde_json::json;
use steward_crypto::UnsealKey;
use steward_secrets::{InitRequest, Kind, ReadOptions, SealMode};

use crate::harness::{check_both, check_both_with, expect_err, expect_kind, Start};

/// Changes one character in the middle of a share (a typo).
fn mistype(share: &str) -> String {
    let mut chars: Vec<char> = share.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shamir_needs_threshold_shares_from_the_same_split() {
    check_both_with(Start::Uninitialized, |h| async move {
        let e = &h.engine;
        assert!(e.is_sealed());
        assert!(!e.is_initialized().await.unwrap());
        let st = e.seal_status().await.unwrap();
        assert!(!st.initialized && st.sealed);
        // Shares before init are refused.
        expect_err(
            e.submit_share("steward-share-v1-x").await,
            "not_initialized",
        );

        let init = e
            .initialize(
                InitRequest::Shamir {
                    shares: 5,
                    threshold: 3,
                },
                |_| Ok(()),
            )
            .await
            .unwrap();
        assert_eq!(init.mode, SealMode::Shamir);
        assert_eq!(init.shares.len(), 5);
        let root = init.root_token.to_string();
        assert!(e.is_sealed(), "a Shamir store starts sealed");
        assert_eq!(e.seal_mode().await.unwrap(), Some(SealMode::Shamir));
        // Initializing twice is refused.
        let again = e
            .initialize(
                InitRequest::Shamir {
                    shares: 5,
                    threshold: 3,
                },
                |_| Ok(()),
            )
            .await;
        expect_kind(again, Kind::Conflict, "already_initialized");

        // While sealed, operations fail with `sealed` (and nothing can be audited).
        let ctx = h.ctx(&root);
        let r = e
            .read_secret(&ctx, "prod", "x", ReadOptions::default())
            .await;
        expect_kind(r, Kind::Unavailable, "sealed");
        expect_err(e.lookup_self(&h.ctx(&root)).await, "sealed");
        assert_eq!(h.audit_count().await, 0);

        let st = e.seal_status().await.unwrap();
        assert!(st.initialized && st.sealed);
        assert_eq!((st.t, st.n, st.progress), (3, 5, 0));

        // Two shares: still sealed, progress 2; a repeated share does not count twice.
        e.submit_share(&init.shares[0]).await.unwrap();
        let st = e.submit_share(&init.shares[3]).await.unwrap();
        assert!(st.sealed);
        assert_eq!(st.progress, 2);
        let st = e.submit_share(&init.shares[3]).await.unwrap();
        assert_eq!(st.progress, 2, "a duplicate share is not progress");
        expect_err(
            e.read_secret(&h.ctx(&root), "prod", "x", ReadOptions::default())
                .await,
            "sealed",
        );

        // A mistyped share is reported at once and does not count.
        let bad = mistype(&init.shares[1]);
        assert_ne!(bad, init.shares[1].as_str());
        expect_kind(e.submit_share(&bad).await, Kind::Invalid, "invalid_share");
        expect_err(e.submit_share("not a share").await, "invalid_share");
        let st = e.seal_status().await.unwrap();
        assert!(st.sealed);
        assert_eq!(st.progress, 2);

        // The third share of the same split unseals.
        let st = e.submit_share(&init.shares[4]).await.unwrap();
        assert!(!st.sealed, "{st:?}");
        assert!(!e.is_sealed());
        e.write_secret(
            &h.ctx(&root),
            "prod",
            "x",
            steward_secrets::WriteRequest {
                value: json!("after-unseal"),
                cas: None,
                metadata: None,
            },
        )
        .await
        .unwrap();

        // Seal again; shares from a different split do not unseal (and progress resets).
        e.seal(&h.ctx(&root)).await.unwrap();
        assert!(e.is_sealed());
        let other = steward_crypto::split_key(UnsealKey::generate().secret(), 5, 3).unwrap();
        e.submit_share(&init.shares[0]).await.unwrap();
        e.submit_share(&init.shares[1]).await.unwrap();
        // `other[2]` has a share number not yet given, so it is combined and the key is wrong.
        let r = e.submit_share(&other[2]).await;
        let err = r.unwrap_err();
        assert!(
            err.code == "wrong_shares" || err.code == "invalid_share",
            "{err:?}"
        );
        assert!(e.is_sealed());
        assert_eq!(
            e.seal_status().await.unwrap().progress,
            0,
            "progress was reset"
        );
        // Any three shares of the right split work, in any order.
        for i in [4, 2, 1] {
            e.submit_share(&init.shares[i]).await.unwrap();
        }
        assert!(!e.is_sealed());
        let d = e
            .read_secret(&h.ctx(&root), "prod", "x", ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(d.value, json!("after-unseal"));
        // A wrong whole key never unseals a Shamir store either.
        e.seal(&h.ctx(&root)).await.unwrap();
        expect_err(
            e.unseal_with_key(UnsealKey::generate()).await,
            "wrong_root_key",
        );
        assert!(e.is_sealed());
        // The chain of everything audited while unsealed is intact.
        for i in [0, 1, 2] {
            e.submit_share(&init.shares[i]).await.unwrap();
        }
        assert!(e.audit_verify(&h.ctx(&root)).await.unwrap().ok);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_unseal_rejects_a_wrong_key_and_sealed_engine_refuses_work() {
    check_both(|h| async move {
        let e = &h.engine;
        h.write("prod", "k", json!("kept")).await;
        expect_err(e.submit_share(&"x".repeat(10)).await, "not_shamir");
        // Only admins may seal.
        let (user, _) = h.token(&[]).await;
        expect_err(e.seal(&h.ctx(&user)).await, "permission_denied");
        assert!(!e.is_sealed());

        e.seal(&h.root_ctx()).await.unwrap();
        assert!(e.is_sealed());
        let before = h.audit_count().await;
        expect_kind(
            h.try_read("prod", "k", None).await,
            Kind::Unavailable,
            "sealed",
        );
        expect_err(
            e.write_secret(
                &h.root_ctx(),
                "prod",
                "k",
                steward_secrets::WriteRequest {
                    value: json!("no"),
                    cas: None,
                    metadata: None,
                },
            )
            .await,
            "sealed",
        );
        expect_err(
            e.create_token(&h.root_ctx(), Default::default()).await,
            "sealed",
        );
        expect_err(e.audit_verify(&h.root_ctx()).await, "sealed");
        assert_eq!(
            h.audit_count().await,
            before,
            "nothing is written while sealed"
        );

        // A wrong key: refused, still sealed.
        let err = expect_kind(
            e.unseal_with_key(UnsealKey::generate()).await,
            Kind::Invalid,
            "wrong_root_key",
        );
        assert!(!err.message.is_empty());
        assert!(e.is_sealed());
        expect_err(h.try_read("prod", "k", None).await, "sealed");

        // The right key unseals; data and the audit chain are intact.
        e.unseal_with_key(h.unseal.clone().unwrap()).await.unwrap();
        assert!(!e.is_sealed());
        assert_eq!(h.read("prod", "k", None).await, json!("kept"));
        assert!(e.audit_verify(&h.root_ctx()).await.unwrap().ok);
        let st = e.seal_status().await.unwrap();
        assert_eq!(
            (st.initialized, st.sealed, st.mode),
            (true, false, Some(SealMode::Key))
        );
        assert_eq!(st.storage_type, h.backend.name());
    })
    .await;
}
