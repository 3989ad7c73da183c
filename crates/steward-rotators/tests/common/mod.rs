//! Shared test helpers: step contexts, random names, secret-leak assertions, and a throwaway
//! PostgreSQL cluster that asks for passwords (the shared server on 5432 trusts every login).

#![allow(dead_code)]

use rand::{distributions::Alphanumeric, Rng};
use serde_json::{json, Value};
use steward_rotators::{Credential, ErrorKind, RotatorError, StepContext};

/// A step context for secret `test/app` with the given settings and credentials.
pub fn cx<'a>(
    settings: &'a Value,
    current: Option<&'a Credential>,
    admin: Option<&'a Credential>,
) -> StepContext<'a> {
    StepContext {
        env: "test",
        path: "app/db",
        settings,
        current,
        previous: None,
        admin,
        attempt_id: "attempt-0001",
    }
}

pub fn cred(v: Value) -> Credential {
    Credential::from_value(v)
}

/// A user/password credential.
pub fn login(user: &str, password: &str) -> Credential {
    cred(json!({"username": user, "password": password}))
}

/// Lower-case letters and digits, for user names.
pub fn suffix() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(10)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect()
}

/// A password nobody else uses.
pub fn password() -> String {
    format!("Pw{}", suffix())
}

/// Asserts the error has `kind` and mentions none of `secrets`; returns its message.
pub fn expect_err(
    r: Result<impl std::fmt::Debug, RotatorError>,
    kind: ErrorKind,
    secrets: &[&str],
) -> String {
    let e = r.expect_err("the step should fail");
    assert_eq!(e.kind, kind, "wrong kind for: {e}");
    for s in secrets {
        assert!(!e.message.contains(s), "the message leaks a secret: {e}");
    }
    e.message
}

pub use steward_test_utils::{free_port, PgCluster};

/// The cluster superuser's credential, as a rotation's admin secret holds it.
pub fn admin(pg: &PgCluster) -> Credential {
    cred(json!({"username": "postgres", "password": pg.superuser_password}))
}
