//! `mysql`: rotates the password of a MariaDB (10.4 or later) or MySQL (5.7 or later) account.
//!
//! # Settings
//!
//! ```json
//! {"host": "127.0.0.1", "port": 3306, "dbname": "app", "host_pattern": "%",
//!  "strategy": "single", "username": "app", "password_length": 32}
//! {"strategy": "alternating", "usernames": ["app_a", "app_b"]}
//! ```
//!
//! `host` (default `127.0.0.1`) and `port` (3306) say where to connect; `dbname` (optional) is
//! the database the test login selects. All three are copied into every credential the rotator
//! creates. `host_pattern` (default `%`) is the host part of the accounts: the rotator changes
//! `'user'@'host_pattern'`. `password_length` is 16 to 128 (default 32); generated passwords
//! are alphanumeric. `admin` (the secret holding the admin credential) is resolved by the
//! engine and ignored here.
//!
//! The admin credential holds `username` and `password` (and optionally `host`, `port`, which
//! override the settings for the admin connection only). The admin needs the `CREATE USER`
//! privilege (or `UPDATE` on the `mysql` schema). The rotator never creates accounts: create
//! them first, e.g. `CREATE USER 'app'@'%' IDENTIFIED BY '...'; GRANT ... TO 'app'@'%';`.
//!
//! # Steps
//!
//! - `create`: the current credential's fields, then `username`, a fresh `password`, `host`,
//!   `port` and `dbname` (when set). Changes nothing in the database.
//! - `set`: `ALTER USER 'user'@'host_pattern' IDENTIFIED BY '...'` as the admin, with the
//!   literals escaped for the session's `sql_mode` (with or without `NO_BACKSLASH_ESCAPES`).
//! - `test`: a fresh TCP login as the pending user with the pending password, then `SELECT 1`.
//! - `discard`: gives the user back the current password (same user), or a fresh password
//!   nobody knows (the other user of an alternating pair).
//! - `revoke`: nothing when the old credential is the current user's; otherwise the old user
//!   gets a fresh password nobody knows.
//!
//! # Zero downtime
//!
//! As for `postgres`: with `single`, open connections survive but new logins with the
//! previous password fail from `set` on; with `alternating`, the two accounts (granted the
//! same privileges) take turns, and the previous one keeps working until `revoke` after the
//! grace period, which must end before the next rotation.
//!
//! Connections are made over TCP without TLS (the client never switches to the server's unix
//! socket, so the login tested is the one applications make): use the rotator on a trusted
//! network. If anonymous accounts (`''@'localhost'`) exist, they can shadow `'app'@'%'` for
//! local logins; drop them or set `host_pattern` to match.

use std::time::Duration;

use ::mysql::{prelude::Queryable, Conn, OptsBuilder};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    accounts::{self, Accounts, PasswordChange, Strategy},
    support, Credential, Rotator, RotatorError, StepContext,
};

const KIND: &str = "mysql";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(15);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `mysql` rotator.
#[derive(Debug, Clone, Copy)]
pub struct MysqlRotator;

/// Settings of the `mysql` rotator (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSettings {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub dbname: Option<String>,
    #[serde(default = "default_host_pattern")]
    pub host_pattern: String,
    #[serde(default)]
    pub strategy: Strategy,
    /// The user of strategy `single`.
    pub username: Option<String>,
    /// The two users of strategy `alternating`.
    pub usernames: Option<Vec<String>>,
    #[serde(default = "support::default_password_length")]
    pub password_length: usize,
    /// The secret holding the admin credential; the engine resolves it.
    pub admin: Option<Value>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    3306
}
fn default_host_pattern() -> String {
    "%".into()
}

impl MysqlSettings {
    /// Parses and checks the settings.
    pub fn parse(v: &Value) -> Result<Self, RotatorError> {
        let s: Self = support::parse_settings(KIND, v)?;
        s.accounts()?;
        support::check_password_length(KIND, s.password_length)?;
        if s.host.is_empty() {
            return Err(RotatorError::invalid(
                "mysql rotator: `host` is empty; set the database server's address",
            ));
        }
        if s.host_pattern.is_empty() || s.host_pattern.contains('\0') {
            return Err(RotatorError::invalid(
                "mysql rotator: `host_pattern` must be the host part of the accounts, e.g. \"%\"",
            ));
        }
        Ok(s)
    }

    fn accounts(&self) -> Result<Accounts, RotatorError> {
        Accounts::new(
            KIND,
            self.strategy,
            self.username.as_deref(),
            self.usernames.as_deref(),
        )
    }
}

/// A login. Debug never shows the password.
#[derive(Clone)]
struct Login {
    host: String,
    port: u16,
    dbname: Option<String>,
    user: String,
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
    fn admin(s: &MysqlSettings, cx: &StepContext<'_>) -> Result<Self, RotatorError> {
        let admin = support::require_admin(KIND, cx, "`username` and `password`")?;
        Ok(Self {
            host: support::opt_str(admin, "host")?.map_or_else(|| s.host.clone(), str::to_string),
            port: support::opt_port(admin, "port")?.unwrap_or(s.port),
            dbname: None,
            user: admin.str("username")?.to_string(),
            // An empty password means none (a server that trusts this client).
            password: support::opt_str(admin, "password")?
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        })
    }

    fn connect(&self) -> Result<Conn, RotatorError> {
        // The client wants IPv6 addresses in brackets.
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let opts = OptsBuilder::new()
            .ip_or_hostname(Some(host))
            .tcp_port(self.port)
            .user(Some(&self.user))
            .pass(self.password.as_deref())
            .db_name(self.dbname.as_deref())
            .prefer_socket(false)
            .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
            .read_timeout(Some(IO_TIMEOUT))
            .write_timeout(Some(IO_TIMEOUT));
        Conn::new(opts).map_err(|e| {
            map_error(
                &format!(
                    "connecting to {}:{} as {:?}",
                    self.host, self.port, self.user
                ),
                &e,
                &self.secrets(),
            )
        })
    }

    fn secrets(&self) -> Vec<&str> {
        self.password.as_deref().into_iter().collect()
    }
}

/// Maps a client error; `what` says what was being done. Passwords in `secrets` are blanked
/// from the text (a syntax error message quotes the statement).
fn map_error(what: &str, e: &::mysql::Error, secrets: &[&str]) -> RotatorError {
    let text = match e {
        ::mysql::Error::MySqlError(db) => db.to_string(),
        ::mysql::Error::DriverError(d) => d.to_string(),
        ::mysql::Error::IoError(io) => io.to_string(),
        other => support::error_chain(other),
    };
    let m = format!("mysql rotator: {what}: {}", support::redact(&text, secrets));
    match e {
        ::mysql::Error::MySqlError(db) => match db.code {
            1044 => RotatorError::rejected(format!(
                "{m}; grant the user access to that database, or fix `dbname`"
            )),
            // Access denied, no password, expired password, account locked.
            1045 | 1698 | 1820 | 1862 | 3118 | 4151 => RotatorError::rejected(format!(
                "{m}; check the username and password and that the account's host part matches \
                 this client"
            )),
            1130 => RotatorError::rejected(format!(
                "{m}; no account matches this client's address: check `host_pattern`"
            )),
            1227 | 1142 => RotatorError::rejected(format!(
                "{m}; the admin user needs the CREATE USER privilege"
            )),
            1049 => RotatorError::invalid(format!("{m}; set `dbname` to an existing database")),
            // Too many connections, server shutting down, lock wait timeout, deadlock.
            1040 | 1053 | 1205 | 1213 => RotatorError::unavailable(format!("{m}; retry later")),
            _ => RotatorError::rejected(m),
        },
        ::mysql::Error::DriverError(
            ::mysql::DriverError::UnknownAuthPlugin(_)
            | ::mysql::DriverError::CleartextPluginDisabled
            | ::mysql::DriverError::OldMysqlPasswordDisabled,
        ) => RotatorError::rejected(format!(
            "{m}; the account uses an authentication plugin this client does not support: use \
             mysql_native_password or caching_sha2_password"
        )),
        ::mysql::Error::IoError(_)
        | ::mysql::Error::DriverError(_)
        | ::mysql::Error::CodecError(_) => RotatorError::unavailable(format!(
            "{m}; check that the server is up and that host and port are right"
        )),
        _ => RotatorError::rejected(m),
    }
}

/// A MySQL string literal. With `backslash` (the default `sql_mode`), backslash and quote are
/// escaped with a backslash; under `NO_BACKSLASH_ESCAPES` backslash is an ordinary character
/// and the quote is doubled.
fn quote(s: &str, backslash: bool) -> Result<String, RotatorError> {
    if s.contains('\0') {
        return Err(RotatorError::invalid(
            "mysql rotator: a user name or password contains a NUL character; fix the stored \
             secret or the settings",
        ));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' if backslash => out.push_str("\\\\"),
            '\'' if backslash => out.push_str("\\'"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// `ALTER USER 'user'@'pattern' IDENTIFIED BY '...'`.
fn alter_password(
    admin: &Login,
    host_pattern: &str,
    change: &PasswordChange,
) -> Result<(), RotatorError> {
    if change.password.is_empty() {
        return Err(RotatorError::invalid(
            "mysql rotator: the password is empty; fix the stored secret",
        ));
    }
    let mut secrets = admin.secrets();
    secrets.push(&change.password);
    let mut conn = admin.connect()?;
    let mode: Option<String> = conn
        .query_first("SELECT @@SESSION.sql_mode")
        .map_err(|e| map_error("reading sql_mode", &e, &secrets))?;
    let backslash = !mode.unwrap_or_default().contains("NO_BACKSLASH_ESCAPES");
    let account = format!(
        "{}@{}",
        quote(&change.user, backslash)?,
        quote(host_pattern, backslash)?
    );
    let sql = format!(
        "ALTER USER {account} IDENTIFIED BY {}",
        quote(&change.password, backslash)?
    );
    conn.query_drop(sql).map_err(|e| {
        if let ::mysql::Error::MySqlError(db) = &e {
            // ER_CANNOT_USER: no such account.
            if db.code == 1396 {
                return RotatorError::invalid(format!(
                    "mysql rotator: account {account} does not exist on {}:{}; the rotator does \
                     not create accounts: create it with `CREATE USER {account} IDENTIFIED BY \
                     '<password>';` and grant it what the application needs (or fix \
                     `host_pattern`)",
                    admin.host, admin.port
                ));
            }
        }
        map_error(&format!("changing the password of {account}"), &e, &secrets)
    })
}

async fn apply(
    admin: Login,
    host_pattern: String,
    change: PasswordChange,
) -> Result<(), RotatorError> {
    support::blocking(KIND, STEP_TIMEOUT, move || {
        alter_password(&admin, &host_pattern, &change)
    })
    .await
}

#[async_trait]
impl Rotator for MysqlRotator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check_settings(&self, settings: &Value) -> Result<(), RotatorError> {
        MysqlSettings::parse(settings).map(drop)
    }

    async fn create(&self, cx: &StepContext<'_>) -> Result<Credential, RotatorError> {
        let s = MysqlSettings::parse(cx.settings)?;
        let accounts = s.accounts()?;
        let mut connection = vec![("host", s.host.clone().into()), ("port", s.port.into())];
        if let Some(d) = &s.dbname {
            connection.push(("dbname", d.clone().into()));
        }
        Ok(accounts::pending(
            cx.current,
            accounts.next_user(cx.current),
            s.password_length,
            &connection,
        ))
    }

    async fn set(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError> {
        let s = MysqlSettings::parse(cx.settings)?;
        let user = pending.str("username")?;
        s.accounts()?.check_configured(KIND, user)?;
        let change = PasswordChange {
            user: user.to_string(),
            password: pending.str("password")?.to_string(),
        };
        apply(Login::admin(&s, cx)?, s.host_pattern, change).await
    }

    async fn test(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError> {
        let s = MysqlSettings::parse(cx.settings)?;
        let login = Login {
            host: s.host,
            port: s.port,
            dbname: s.dbname,
            user: pending.str("username")?.to_string(),
            password: Some(pending.str("password")?.to_string()),
        };
        support::blocking(KIND, STEP_TIMEOUT, move || {
            let mut c = login.connect()?;
            let one: Option<i64> = c
                .query_first("SELECT 1")
                .map_err(|e| map_error("running SELECT 1", &e, &login.secrets()))?;
            if one == Some(1) {
                Ok(())
            } else {
                Err(RotatorError::rejected(
                    "mysql rotator: SELECT 1 did not return 1 for the pending login",
                ))
            }
        })
        .await
    }

    async fn discard(
        &self,
        cx: &StepContext<'_>,
        pending: &Credential,
    ) -> Result<(), RotatorError> {
        let s = MysqlSettings::parse(cx.settings)?;
        let change =
            accounts::discard_change(KIND, &s.accounts()?, cx.current, pending, s.password_length)?;
        apply(Login::admin(&s, cx)?, s.host_pattern, change).await
    }

    async fn revoke(&self, cx: &StepContext<'_>, old: &Credential) -> Result<(), RotatorError> {
        let s = MysqlSettings::parse(cx.settings)?;
        match accounts::revoke_change(KIND, &s.accounts()?, cx.current, old, s.password_length)? {
            Some(change) => apply(Login::admin(&s, cx)?, s.host_pattern, change).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn literals_are_escaped_for_both_sql_modes() {
        assert_eq!(quote(r"a'b\c", true).unwrap(), r"'a\'b\\c'");
        assert_eq!(quote(r"a'b\c", false).unwrap(), r"'a''b\c'");
        assert!(quote("a\0b", true).is_err());
    }

    #[test]
    fn settings_defaults_and_errors() {
        let s = MysqlSettings::parse(&json!({"username": "app"})).unwrap();
        assert_eq!(
            (s.port, s.host_pattern.as_str(), s.dbname),
            (3306, "%", None)
        );
        let e = MysqlSettings::parse(&json!({"username": "app", "host_patern": "%"})).unwrap_err();
        assert!(e.message.contains("host_patern"), "{e}");
        let e = MysqlSettings::parse(&json!({"strategy": "alternating", "usernames": ["a"]}))
            .unwrap_err();
        assert!(e.message.contains("exactly two"), "{e}");
    }
}
