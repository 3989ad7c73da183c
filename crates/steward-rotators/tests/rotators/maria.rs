//! `mysql` against the local MariaDB (127.0.0.1:3306, root without password).

use mysql::{prelude::Queryable, Conn, OptsBuilder};
use serde_json::json;
use steward_rotators::{mysql::MysqlRotator, Credential, ErrorKind, Rotator};

use crate::common::{cred, cx, expect_err, free_port, login, password, suffix};

fn opts(user: &str, password: &str) -> OptsBuilder {
    OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(3306)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(std::time::Duration::from_secs(5)))
}

fn root() -> Conn {
    Conn::new(opts("root", "")).expect("root login to MariaDB on 127.0.0.1:3306")
}

/// Whether `user` can log in over TCP with `password`.
fn can_login(user: &str, password: &str) -> bool {
    Conn::new(opts(user, password))
        .and_then(|mut c| c.query_first::<i64, _>("SELECT 1"))
        .is_ok()
}

/// Test accounts `'rt_<random>_<name>'@'%'`, dropped on drop.
struct Accounts(Vec<String>);

impl Accounts {
    fn create(names: &[&str]) -> (Self, Vec<(String, String)>) {
        let base = format!("rt_{}", suffix());
        let mut c = root();
        let mut made = Vec::new();
        for n in names {
            let (user, pw) = (format!("{base}_{n}"), password());
            c.query_drop(format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}'"))
                .unwrap();
            made.push((user, pw));
        }
        (Self(made.iter().map(|(u, _)| u.clone()).collect()), made)
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        if let Ok(mut c) = Conn::new(opts("root", "")) {
            for u in &self.0 {
                let _ = c.query_drop(format!("DROP USER IF EXISTS '{u}'@'%'"));
            }
        }
    }
}

fn admin() -> Credential {
    cred(json!({"username": "root", "password": ""}))
}

fn pw(c: &Credential) -> String {
    c.str("password").unwrap().to_string()
}

#[tokio::test]
async fn single_strategy_replaces_the_password_and_discard_restores_it() {
    let (_guard, made) = Accounts::create(&["app"]);
    let (user, initial) = made[0].clone();
    // MariaDB really checks passwords for this account over TCP.
    assert!(can_login(&user, &initial));
    assert!(!can_login(&user, "not-the-password"));

    let admin = admin();
    let settings = json!({"host": "127.0.0.1", "port": 3306, "username": user, "dbname": "mysql"});
    let current = login(&user, &initial);
    let step = cx(&settings, Some(&current), Some(&admin));
    let r = MysqlRotator;

    let pending = r.create(&step).await.unwrap();
    let new = pw(&pending);
    assert_eq!(pending.str("username").unwrap(), user);
    assert_eq!(pending.str("dbname").unwrap(), "mysql");
    assert_eq!(pending.0["port"], json!(3306));
    assert!(can_login(&user, &initial), "create changes nothing");

    r.set(&step, &pending).await.unwrap();
    r.set(&step, &pending).await.unwrap();
    assert!(can_login(&user, &new));
    assert!(!can_login(&user, &initial));
    // dbname "mysql" is not granted to the user: the test login is refused, without the password.
    let m = expect_err(r.test(&step, &pending).await, ErrorKind::Rejected, &[&new]);
    assert!(m.contains(&user), "{m}");
    let no_db = json!({"username": user});
    let plain = cx(&no_db, Some(&current), Some(&admin));
    r.test(&plain, &pending).await.unwrap();

    r.discard(&plain, &pending).await.unwrap();
    assert!(can_login(&user, &initial));
    assert!(!can_login(&user, &new));
    expect_err(r.test(&plain, &pending).await, ErrorKind::Rejected, &[&new]);

    r.set(&plain, &pending).await.unwrap();
    let after = cx(&no_db, Some(&pending), Some(&admin));
    r.revoke(&after, &current).await.unwrap();
    assert!(
        can_login(&user, &new),
        "revoking the same user's old value changes nothing"
    );
}

#[tokio::test]
async fn alternating_strategy_keeps_the_old_user_until_revoke() {
    let (_guard, made) = Accounts::create(&["a", "b"]);
    let ((ua, a_pw), (ub, _)) = (made[0].clone(), made[1].clone());
    let admin = admin();
    let settings = json!({"strategy": "alternating", "usernames": [ua, ub], "host_pattern": "%"});
    let r = MysqlRotator;
    let a = login(&ua, &a_pw);

    let step = cx(&settings, Some(&a), Some(&admin));
    let b = r.create(&step).await.unwrap();
    assert_eq!(b.str("username").unwrap(), ub);
    let b_pw = pw(&b);
    r.set(&step, &b).await.unwrap();
    r.test(&step, &b).await.unwrap();
    assert!(can_login(&ua, &a_pw), "the old user still works");
    assert!(can_login(&ub, &b_pw));

    let after = cx(&settings, Some(&b), Some(&admin));
    r.revoke(&after, &a).await.unwrap();
    assert!(!can_login(&ua, &a_pw), "the revoked user fails");
    assert!(can_login(&ub, &b_pw));

    let a2 = r.create(&after).await.unwrap();
    assert_eq!(a2.str("username").unwrap(), ua);
    r.set(&after, &a2).await.unwrap();
    assert!(can_login(&ua, &pw(&a2)));
    r.discard(&after, &a2).await.unwrap();
    assert!(!can_login(&ua, &pw(&a2)));
    assert!(can_login(&ub, &b_pw), "the current user is untouched");
}

#[tokio::test]
async fn errors_name_the_problem_and_never_the_password() {
    let (_guard, made) = Accounts::create(&["app"]);
    let user = made[0].0.clone();
    let admin = admin();
    let r = MysqlRotator;

    // An account that does not exist (wrong host part): Invalid, naming it.
    let settings = json!({"username": user, "host_pattern": "10.9.8.7"});
    let step = cx(&settings, None, Some(&admin));
    let pending = r.create(&step).await.unwrap();
    let new = pw(&pending);
    let m = expect_err(r.set(&step, &pending).await, ErrorKind::Invalid, &[&new]);
    assert!(m.contains(&user) && m.contains("CREATE USER"), "{m}");

    // Quotes and backslashes in the password are escaped, and the login works with it.
    let settings = json!({"username": user});
    let step = cx(&settings, None, Some(&admin));
    let odd = login(&user, r"it's \' a ''test\\");
    r.set(&step, &odd).await.unwrap();
    r.test(&step, &odd).await.unwrap();
    assert!(can_login(&user, r"it's \' a ''test\\"));

    // A wrong admin password: Rejected, without either password.
    let bad_admin = login("root", "WrongAdminPassword123");
    let step = cx(&settings, None, Some(&bad_admin));
    expect_err(
        r.set(&step, &pending).await,
        ErrorKind::Rejected,
        &[&new, "WrongAdminPassword123"],
    );

    // A user the settings do not name.
    let step = cx(&settings, None, Some(&admin));
    expect_err(
        r.set(&step, &login("root", "Hijacked12345678")).await,
        ErrorKind::Invalid,
        &["Hijacked12345678"],
    );

    // Nothing listening: Unavailable.
    let closed = json!({"username": user, "port": free_port()});
    let step = cx(&closed, None, Some(&admin));
    expect_err(
        r.set(&step, &pending).await,
        ErrorKind::Unavailable,
        &[&new],
    );
}
