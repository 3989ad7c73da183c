//! `postgres` against a throwaway cluster that checks passwords (scram-sha-256).

use serde_json::json;
use steward_rotators::{postgres::PostgresRotator, ErrorKind, Rotator};

use crate::common::{admin, cx, expect_err, free_port, login, password, PgCluster};

#[tokio::test]
async fn single_strategy_replaces_the_password_and_discard_restores_it() {
    let pg = PgCluster::start();
    let initial = password();
    pg.exec(&format!("CREATE ROLE app LOGIN PASSWORD '{initial}'"))
        .await;
    let admin = admin(&pg);
    let settings = json!({"port": pg.port, "username": "app", "password_length": 24});
    let current = login("app", &initial);
    let r = PostgresRotator;

    let pending = r
        .create(&cx(&settings, Some(&current), Some(&admin)))
        .await
        .unwrap();
    let new = pending.str("password").unwrap().to_string();
    assert_eq!(pending.str("username").unwrap(), "app");
    assert_eq!(new.len(), 24);
    assert_ne!(new, initial);
    assert_eq!(pending.0["port"], json!(pg.port));
    assert_eq!(pending.str("host").unwrap(), "127.0.0.1");
    assert_eq!(pending.str("dbname").unwrap(), "postgres");
    // create changes nothing.
    assert!(pg.can_login("app", &initial).await);

    let step = cx(&settings, Some(&current), Some(&admin));
    r.set(&step, &pending).await.unwrap();
    r.set(&step, &pending).await.unwrap(); // idempotent
    assert!(pg.can_login("app", &new).await, "the new password logs in");
    assert!(
        !pg.can_login("app", &initial).await,
        "the old password fails"
    );
    r.test(&step, &pending).await.unwrap();

    // A failed rotation: discard gives the current password back.
    r.discard(&step, &pending).await.unwrap();
    assert!(pg.can_login("app", &initial).await);
    assert!(!pg.can_login("app", &new).await);
    let m = expect_err(r.test(&step, &pending).await, ErrorKind::Rejected, &[&new]);
    assert!(m.contains("\"app\""), "{m}");

    // After a successful rotation, revoking the old value of the same user changes nothing.
    r.set(&step, &pending).await.unwrap();
    let after = cx(&settings, Some(&pending), Some(&admin));
    r.revoke(&after, &current).await.unwrap();
    assert!(pg.can_login("app", &new).await);
}

#[tokio::test]
async fn alternating_strategy_keeps_the_old_user_until_revoke() {
    let pg = PgCluster::start();
    let a_pw = password();
    // app_b starts without LOGIN and without a password: set must grant LOGIN.
    pg.exec(&format!(
        "CREATE ROLE app_a LOGIN PASSWORD '{a_pw}'; CREATE ROLE app_b NOLOGIN;"
    ))
    .await;
    let admin = admin(&pg);
    let settings = json!({
        "host": "127.0.0.1", "port": pg.port, "dbname": "postgres",
        "strategy": "alternating", "usernames": ["app_a", "app_b"]
    });
    let r = PostgresRotator;
    let a = login("app_a", &a_pw).with("extra", "kept");

    // Rotate A -> B.
    let step = cx(&settings, Some(&a), Some(&admin));
    let b = r.create(&step).await.unwrap();
    assert_eq!(b.str("username").unwrap(), "app_b");
    assert_eq!(b.str("extra").unwrap(), "kept");
    let b_pw = b.str("password").unwrap().to_string();
    r.set(&step, &b).await.unwrap();
    r.test(&step, &b).await.unwrap();
    assert!(
        pg.can_login("app_a", &a_pw).await,
        "the old user still works"
    );
    assert!(pg.can_login("app_b", &b_pw).await, "the new user works");

    // After the grace period: revoke A.
    let after = cx(&settings, Some(&b), Some(&admin));
    r.revoke(&after, &a).await.unwrap();
    assert!(
        !pg.can_login("app_a", &a_pw).await,
        "the revoked user fails"
    );
    assert!(pg.can_login("app_b", &b_pw).await);

    // Next rotation B -> A, then a failure: discard leaves A unusable and B untouched.
    let a2 = r.create(&after).await.unwrap();
    assert_eq!(a2.str("username").unwrap(), "app_a");
    let a2_pw = a2.str("password").unwrap().to_string();
    r.set(&after, &a2).await.unwrap();
    assert!(pg.can_login("app_a", &a2_pw).await);
    r.discard(&after, &a2).await.unwrap();
    assert!(
        !pg.can_login("app_a", &a2_pw).await,
        "the discarded password fails"
    );
    assert!(
        pg.can_login("app_b", &b_pw).await,
        "the current user is untouched"
    );
}

#[tokio::test]
async fn errors_name_the_problem_and_never_the_password() {
    let pg = PgCluster::start();
    let admin = admin(&pg);
    let r = PostgresRotator;

    // A role that does not exist: Invalid, naming it and how to create it.
    let settings = json!({"port": pg.port, "username": "ghost_role"});
    let step = cx(&settings, None, Some(&admin));
    let pending = r.create(&step).await.unwrap();
    let pw = pending.str("password").unwrap().to_string();
    let m = expect_err(
        r.set(&step, &pending).await,
        ErrorKind::Invalid,
        &[&pw, &pg.superuser_password],
    );
    assert!(m.contains("ghost_role") && m.contains("CREATE ROLE"), "{m}");

    // A login that fails.
    let m = expect_err(r.test(&step, &pending).await, ErrorKind::Rejected, &[&pw]);
    assert!(m.contains("ghost_role"), "{m}");

    // A wrong admin password: Rejected, without either password.
    let bad_admin = login("postgres", "WrongAdminPassword123");
    let step = cx(&settings, None, Some(&bad_admin));
    let m = expect_err(
        r.set(&step, &pending).await,
        ErrorKind::Rejected,
        &[&pw, "WrongAdminPassword123"],
    );
    assert!(m.contains("password"), "{m}");

    // A stored credential for a user the settings do not name: refused before any change.
    let step = cx(&settings, None, Some(&admin));
    let m = expect_err(
        r.set(&step, &login("postgres", "Hijacked12345678")).await,
        ErrorKind::Invalid,
        &["Hijacked12345678"],
    );
    assert!(m.contains("not one the settings name"), "{m}");

    // No admin credential.
    let step = cx(&settings, None, None);
    let m = expect_err(r.set(&step, &pending).await, ErrorKind::Invalid, &[&pw]);
    assert!(m.contains("admin"), "{m}");

    // Nothing listening: Unavailable.
    let closed = json!({"port": free_port(), "username": "ghost_role"});
    let step = cx(&closed, None, Some(&admin));
    let m = expect_err(r.set(&step, &pending).await, ErrorKind::Unavailable, &[&pw]);
    assert!(m.contains("connecting"), "{m}");
}

#[tokio::test]
async fn quotes_in_names_and_passwords_are_escaped() {
    let pg = PgCluster::start();
    pg.exec(r#"CREATE ROLE "o'brien ""x""" LOGIN"#).await;
    let admin = admin(&pg);
    let settings = json!({"port": pg.port, "username": "o'brien \"x\""});
    let r = PostgresRotator;
    let step = cx(&settings, None, Some(&admin));
    let odd = login("o'brien \"x\"", r"it's a \'; DROP ROLE postgres; --");
    r.set(&step, &odd).await.unwrap();
    r.test(&step, &odd).await.unwrap();
    assert!(pg.can_login("postgres", &pg.superuser_password).await);
    let m = expect_err(
        r.set(&step, &login("o'brien \"x\"", "nul\0inside")).await,
        ErrorKind::Invalid,
        &["nul\0inside"],
    );
    assert!(m.contains("NUL"), "{m}");
}
