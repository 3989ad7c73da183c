//! `redis` against the local Redis (127.0.0.1:6379, `default` without a password).

use serde_json::json;
use steward_rotators::{redis::RedisRotator, Credential, ErrorKind, Rotator};

use crate::common::{cred, cx, expect_err, free_port, login, password, suffix};

fn admin_conn() -> redis::Connection {
    redis::Client::open("redis://127.0.0.1:6379/")
        .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(5)))
        .expect("Redis on 127.0.0.1:6379")
}

/// Whether `user` can AUTH with `password` and PING.
fn can_login(user: &str, password: &str) -> bool {
    let mut c = admin_conn();
    redis::cmd("AUTH")
        .arg(user)
        .arg(password)
        .query::<()>(&mut c)
        .and_then(|()| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// An ACL user with a random name and one password, deleted on drop.
struct AclUser(String);

impl AclUser {
    fn create(password: &str) -> Self {
        let name = format!("rt_{}", suffix());
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&name)
            .arg("on")
            .arg(format!(">{password}"))
            .arg("~rt:*")
            .arg("+@all")
            .query::<()>(&mut admin_conn())
            .unwrap();
        Self(name)
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        let _ = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&self.0)
            .query::<i64>(&mut admin_conn());
    }
}

/// The local server runs without authentication: the admin credential is empty.
fn admin() -> Credential {
    cred(json!({}))
}

#[tokio::test]
async fn set_adds_a_password_and_revoke_removes_the_old_one() {
    let initial = password();
    let user = AclUser::create(&initial);
    let admin = admin();
    let settings = json!({"username": user.0, "password_length": 40});
    let current = login(&user.0, &initial);
    let step = cx(&settings, Some(&current), Some(&admin));
    let r = RedisRotator;

    let pending = r.create(&step).await.unwrap();
    let new = pending.str("password").unwrap().to_string();
    assert_eq!(new.len(), 40);
    assert_eq!(pending.0["port"], json!(6379));
    assert!(!can_login(&user.0, &new), "create changes nothing");

    r.set(&step, &pending).await.unwrap();
    r.set(&step, &pending).await.unwrap();
    r.test(&step, &pending).await.unwrap();
    assert!(can_login(&user.0, &initial), "the old password still works");
    assert!(can_login(&user.0, &new), "the new password works");

    let after = cx(&settings, Some(&pending), Some(&admin));
    r.revoke(&after, &current).await.unwrap();
    r.revoke(&after, &current).await.unwrap(); // idempotent
    assert!(!can_login(&user.0, &initial), "the revoked password fails");
    assert!(can_login(&user.0, &new));
    // Revoking the current value is a no-op.
    r.revoke(&after, &pending).await.unwrap();
    assert!(can_login(&user.0, &new));

    // A failed rotation: discard removes the pending password only.
    let p2 = r.create(&after).await.unwrap();
    let p2_pw = p2.str("password").unwrap().to_string();
    r.set(&after, &p2).await.unwrap();
    assert!(can_login(&user.0, &p2_pw));
    r.discard(&after, &p2).await.unwrap();
    r.discard(&after, &p2).await.unwrap(); // idempotent
    assert!(!can_login(&user.0, &p2_pw));
    assert!(
        can_login(&user.0, &new),
        "the current password is untouched"
    );
    expect_err(r.test(&after, &p2).await, ErrorKind::Rejected, &[&p2_pw]);

    // `persist: acl_save` on a server without an aclfile: the change is made, the error says
    // it is not saved.
    let saving = json!({"username": user.0, "persist": "acl_save"});
    let step = cx(&saving, Some(&pending), Some(&admin));
    let p3 = r.create(&step).await.unwrap();
    let p3_pw = p3.str("password").unwrap().to_string();
    let m = expect_err(r.set(&step, &p3).await, ErrorKind::Rejected, &[&p3_pw]);
    assert!(m.contains("not saved"), "{m}");
}

#[tokio::test]
async fn errors_name_the_problem_and_never_the_password() {
    let r = RedisRotator;
    let admin = admin();

    // A user that does not exist: Invalid with a hint, nothing created.
    let ghost = format!("rt_{}", suffix());
    let settings = json!({"username": ghost});
    let step = cx(&settings, None, Some(&admin));
    let pending = r.create(&step).await.unwrap();
    let pw = pending.str("password").unwrap().to_string();
    let m = expect_err(r.set(&step, &pending).await, ErrorKind::Invalid, &[&pw]);
    assert!(m.contains(&ghost) && m.contains("ACL SETUSER"), "{m}");
    let exists: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(&ghost)
        .query(&mut admin_conn())
        .unwrap();
    assert_eq!(exists, redis::Value::Nil);
    // Discarding for a user that is gone is done already.
    r.discard(&step, &pending).await.unwrap();

    // A failed login.
    let m = expect_err(r.test(&step, &pending).await, ErrorKind::Rejected, &[&pw]);
    assert!(m.contains(&ghost), "{m}");

    // A wrong admin login (`default` takes any password on this server; an unknown user
    // does not).
    let bad_admin = login(&format!("rt_{}", suffix()), "WrongAdminPassword123");
    let step = cx(&settings, None, Some(&bad_admin));
    expect_err(
        r.set(&step, &pending).await,
        ErrorKind::Rejected,
        &[&pw, "WrongAdminPassword123"],
    );

    // A credential for another user.
    let step = cx(&settings, None, Some(&admin));
    expect_err(
        r.set(&step, &login("default", "Hijacked12345678")).await,
        ErrorKind::Invalid,
        &["Hijacked12345678"],
    );

    // Nothing listening.
    let closed = json!({"username": ghost, "port": free_port()});
    let step = cx(&closed, None, Some(&admin));
    expect_err(r.set(&step, &pending).await, ErrorKind::Unavailable, &[&pw]);
}
