//! `redis`: rotates the password of a Redis ACL user (Redis 6 or later, or Valkey).
//!
//! # Settings
//!
//! ```json
//! {"host": "127.0.0.1", "port": 6379, "username": "app", "password_length": 32,
//!  "persist": "none"}
//! ```
//!
//! `host` (default `127.0.0.1`), `port` (6379) and `username` (required) say which user
//! rotates; `host` and `port` are copied into every credential the rotator creates.
//! `password_length` is 16 to 128 (default 32); generated passwords are alphanumeric.
//! `persist` says how ACL changes survive a server restart: `none` (default; the users come from
//! a config management tool, or a restart may bring the old passwords back), `acl_save` (runs
//! `ACL SAVE`, for servers with an `aclfile`) or `config_rewrite` (runs `CONFIG REWRITE`, for
//! users defined in `redis.conf`). `admin` (the secret holding the admin credential) is resolved
//! by the engine and ignored here.
//!
//! The admin credential holds `username` (default `default`) and `password` (absent or empty
//! for a server without authentication). The admin needs `+acl` (and `+config` for
//! `config_rewrite`). The rotator never creates users: create the user first, e.g.
//! `ACL SETUSER app on >initial-password ~* +@all` (with the keys and commands it needs).
//!
//! # Steps
//!
//! Redis users can have several passwords at once, which gives zero downtime with one user:
//!
//! - `create`: the current credential's fields, then `username`, a fresh `password`, `host`
//!   and `port`. Changes nothing in Redis.
//! - `set`: `ACL SETUSER app on #<sha256>` *adds* the new password (as its SHA-256, so the
//!   plain value never appears in `MONITOR` or the slow log); the old one keeps working.
//! - `test`: `AUTH app <new password>` on a fresh connection, then `PING`.
//! - `discard`: `ACL SETUSER app !<sha256>` removes the pending password, if present.
//! - `revoke`: removes the old password (`!<sha256>`), unless it is also the current one.
//!
//! # Zero downtime
//!
//! Between `set` and `revoke` the user accepts both passwords, so applications have the whole
//! grace period to pick up the new credential; connections already authenticated are never
//! dropped. ACL changes are not replicated: point the rotator at each server that holds the
//! user (one rotation per server), or manage users through the primary with persisted ACLs.
//! Connections are made without TLS: use the rotator on a trusted network.

use std::time::Duration;

use ::redis::{Client, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, Value as RValue};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{support, Credential, Rotator, RotatorError, StepContext};

const KIND: &str = "redis";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `redis` rotator.
#[derive(Debug, Clone, Copy)]
pub struct RedisRotator;

/// How ACL changes are made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Persist {
    #[default]
    None,
    AclSave,
    ConfigRewrite,
}

/// Settings of the `redis` rotator (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub username: String,
    #[serde(default = "support::default_password_length")]
    pub password_length: usize,
    #[serde(default)]
    pub persist: Persist,
    /// The secret holding the admin credential; the engine resolves it.
    pub admin: Option<Value>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    6379
}

impl RedisSettings {
    /// Parses and checks the settings.
    pub fn parse(v: &Value) -> Result<Self, RotatorError> {
        let s: Self = support::parse_settings(KIND, v)?;
        support::check_password_length(KIND, s.password_length)?;
        if s.host.is_empty() {
            return Err(RotatorError::invalid(
                "redis rotator: `host` is empty; set the Redis server's address",
            ));
        }
        if s.username.is_empty() || s.username.contains(|c: char| c.is_whitespace()) {
            return Err(RotatorError::invalid(
                "redis rotator: `username` must be a non-empty ACL user name without spaces",
            ));
        }
        Ok(s)
    }

    /// Refuses a credential for another user than the configured one.
    fn check_user(&self, c: &Credential) -> Result<(), RotatorError> {
        let u = c.str("username")?;
        if u == self.username {
            Ok(())
        } else {
            Err(RotatorError::invalid(format!(
                "redis rotator: the credential's user {u:?} is not the configured user {:?}; \
                 fix the stored secret, or remove that user's password by hand",
                self.username
            )))
        }
    }
}

/// A login. Debug never shows the password.
#[derive(Clone)]
struct Login {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Login {
    fn admin(s: &RedisSettings, cx: &StepContext<'_>) -> Result<Self, RotatorError> {
        let admin = support::require_admin(
            KIND,
            cx,
            "`username` (default \"default\") and `password` (empty for no authentication)",
        )?;
        let password = support::opt_str(admin, "password")?.filter(|p| !p.is_empty());
        let user = support::opt_str(admin, "username")?.filter(|u| !u.is_empty());
        Ok(Self {
            host: support::opt_str(admin, "host")?.map_or_else(|| s.host.clone(), str::to_string),
            port: support::opt_port(admin, "port")?.unwrap_or(s.port),
            // Without a password there is nothing to authenticate (the server runs without
            // authentication and every connection is `default`).
            user: password.and(user.or(Some("default"))).map(str::to_string),
            password: password.map(str::to_string),
        })
    }

    fn who(&self) -> String {
        format!(
            "{}:{} as {:?}",
            self.host,
            self.port,
            self.user.as_deref().unwrap_or("default")
        )
    }

    fn connect(&self) -> Result<::redis::Connection, RotatorError> {
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(self.host.clone(), self.port),
            redis: RedisConnectionInfo {
                db: 0,
                username: self.user.clone(),
                password: self.password.clone(),
                ..Default::default()
            },
        };
        let what = || format!("connecting to {}", self.who());
        let secrets = self.secrets();
        let conn = Client::open(info)
            .and_then(|c| c.get_connection_with_timeout(CONNECT_TIMEOUT))
            .map_err(|e| map_error(&what(), &e, &secrets))?;
        conn.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| map_error(&what(), &e, &secrets))?;
        Ok(conn)
    }

    fn secrets(&self) -> Vec<&str> {
        self.password.as_deref().into_iter().collect()
    }
}

/// Maps a client error; `what` says what was being done.
fn map_error(what: &str, e: &::redis::RedisError, secrets: &[&str]) -> RotatorError {
    use ::redis::ErrorKind as K;
    let m = format!(
        "redis rotator: {what}: {}",
        support::redact(&support::error_chain(e), secrets)
    );
    let auth = e.kind() == K::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || m.contains("WRONGPASS")
        || m.contains("NOPERM");
    if auth {
        RotatorError::rejected(format!(
            "{m}; check the username and password, and that the user is on and may run the \
             command (the admin needs +acl)"
        ))
    } else if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            K::BusyLoadingError | K::TryAgain | K::MasterDown | K::ClusterDown
        )
    {
        RotatorError::unavailable(format!(
            "{m}; check that the server is up and that host and port are right"
        ))
    } else {
        RotatorError::rejected(m)
    }
}

/// The SHA-256 of a password as Redis writes it in ACLs (lower-case hex).
fn password_hash(p: &str) -> String {
    hex::encode(Sha256::digest(p.as_bytes()))
}

/// What `ACL GETUSER` says about a user: `None` if it does not exist, else its password hashes.
fn password_hashes(
    conn: &mut ::redis::Connection,
    user: &str,
) -> Result<Option<Vec<String>>, ::redis::RedisError> {
    let v: RValue = ::redis::cmd("ACL").arg("GETUSER").arg(user).query(conn)?;
    let pairs: Vec<(RValue, RValue)> = match v {
        RValue::Nil => return Ok(None),
        RValue::Map(m) => m,
        RValue::Array(items) => {
            let mut it = items.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    };
    let text = |v: &RValue| match v {
        RValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RValue::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    for (k, v) in &pairs {
        if text(k).as_deref() == Some("passwords") {
            if let RValue::Array(list) | RValue::Set(list) = v {
                return Ok(Some(list.iter().filter_map(text).collect()));
            }
        }
    }
    Ok(Some(Vec::new()))
}

/// What a step changes in the user's password list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Add the password and switch the user on.
    Add,
    /// Remove the password if present.
    Remove,
}

/// Adds or removes `password` on `user`, then persists as configured. Idempotent.
fn change_password(
    admin: &Login,
    persist: Persist,
    user: &str,
    password: &str,
    change: Change,
) -> Result<(), RotatorError> {
    let hash = password_hash(password);
    let mut secrets = admin.secrets();
    secrets.push(password);
    secrets.push(&hash);
    let mut conn = admin.connect()?;
    let hashes = password_hashes(&mut conn, user)
        .map_err(|e| map_error(&format!("reading ACL user {user:?}"), &e, &secrets))?;
    let Some(hashes) = hashes else {
        return match change {
            Change::Add => Err(RotatorError::invalid(format!(
                "redis rotator: ACL user {user:?} does not exist on {}:{}; the rotator does not \
                 create users: create it with `ACL SETUSER {user} on >initial-password ~* +@all` \
                 (narrow the keys and commands to what the application needs)",
                admin.host, admin.port
            ))),
            // Nothing to remove from a user that is gone.
            Change::Remove => Ok(()),
        };
    };
    let present = hashes.iter().any(|h| h.eq_ignore_ascii_case(&hash));
    let mut cmd = ::redis::cmd("ACL");
    cmd.arg("SETUSER").arg(user);
    match change {
        Change::Add => cmd.arg("on").arg(format!("#{hash}")),
        Change::Remove if present => cmd.arg(format!("!{hash}")),
        Change::Remove => return Ok(()),
    };
    let verb = if change == Change::Add {
        "adding a password to"
    } else {
        "removing a password from"
    };
    cmd.query::<()>(&mut conn)
        .map_err(|e| map_error(&format!("{verb} ACL user {user:?}"), &e, &secrets))?;
    let persist_cmd = match persist {
        Persist::None => return Ok(()),
        Persist::AclSave => ::redis::cmd("ACL").arg("SAVE").clone(),
        Persist::ConfigRewrite => ::redis::cmd("CONFIG").arg("REWRITE").clone(),
    };
    persist_cmd.query::<()>(&mut conn).map_err(|e| {
        let mut err = map_error("persisting the ACL change", &e, &secrets);
        err.message.push_str(
            "; the change is live but not saved: fix `persist` (acl_save needs an aclfile, \
             config_rewrite a config file) and retry",
        );
        err
    })
}

async fn apply(
    admin: Login,
    persist: Persist,
    user: String,
    password: String,
    change: Change,
) -> Result<(), RotatorError> {
    support::blocking(KIND, STEP_TIMEOUT, move || {
        change_password(&admin, persist, &user, &password, change)
    })
    .await
}

/// Removes `cred`'s password from the ACL user (discard and revoke), unless it is the current
/// one: removing that would lock the application out.
async fn remove_unless_current(
    cx: &StepContext<'_>,
    cred: &Credential,
) -> Result<(), RotatorError> {
    let s = RedisSettings::parse(cx.settings)?;
    s.check_user(cred)?;
    let password = cred.str("password")?;
    if cx.current.and_then(|c| c.str("password").ok()) == Some(password) {
        return Ok(());
    }
    let admin = Login::admin(&s, cx)?;
    apply(
        admin,
        s.persist,
        s.username,
        password.into(),
        Change::Remove,
    )
    .await
}

#[async_trait]
impl Rotator for RedisRotator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check_settings(&self, settings: &Value) -> Result<(), RotatorError> {
        RedisSettings::parse(settings).map(drop)
    }

    async fn create(&self, cx: &StepContext<'_>) -> Result<Credential, RotatorError> {
        let s = RedisSettings::parse(cx.settings)?;
        Ok(cx
            .current
            .cloned()
            .unwrap_or_default()
            .with("username", s.username.as_str())
            .with("password", support::generate_password(s.password_length))
            .with("host", s.host.as_str())
            .with("port", s.port))
    }

    async fn set(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError> {
        let s = RedisSettings::parse(cx.settings)?;
        s.check_user(pending)?;
        let password = pending.str("password")?.to_string();
        let admin = Login::admin(&s, cx)?;
        apply(admin, s.persist, s.username, password, Change::Add).await
    }

    async fn test(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError> {
        let s = RedisSettings::parse(cx.settings)?;
        let login = Login {
            host: s.host,
            port: s.port,
            user: Some(pending.str("username")?.to_string()),
            password: Some(pending.str("password")?.to_string()),
        };
        support::blocking(KIND, STEP_TIMEOUT, move || {
            let mut conn = login.connect()?;
            ::redis::cmd("PING")
                .query::<String>(&mut conn)
                .map_err(|e| map_error("running PING", &e, &login.secrets()))
                .map(drop)
        })
        .await
    }

    async fn discard(
        &self,
        cx: &StepContext<'_>,
        pending: &Credential,
    ) -> Result<(), RotatorError> {
        remove_unless_current(cx, pending).await
    }

    async fn revoke(&self, cx: &StepContext<'_>, old: &Credential) -> Result<(), RotatorError> {
        remove_unless_current(cx, old).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hashes_match_redis() {
        // `ACL SETUSER u >foobar` then `ACL GETUSER u` shows this hash.
        assert_eq!(
            password_hash("foobar"),
            "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
        );
    }

    #[test]
    fn settings_defaults_and_errors() {
        let s = RedisSettings::parse(&json!({"username": "app"})).unwrap();
        assert_eq!((s.port, s.persist), (6379, Persist::None));
        let e = RedisSettings::parse(&json!({})).unwrap_err();
        assert!(e.message.contains("username"), "{e}");
        let e = RedisSettings::parse(&json!({"username": "app", "persist": "always"})).unwrap_err();
        assert!(e.message.contains("always"), "{e}");
    }
}
