//! `postgres`: rotates the password of a PostgreSQL role (PostgreSQL 10 or later).
//!
//! # Settings
//!
//! ```json
//! {"host": "127.0.0.1", "port": 5432, "dbname": "postgres",
//!  "strategy": "single", "username": "app", "password_length": 32}
//! {"strategy": "alternating", "usernames": ["app_a", "app_b"]}
//! ```
//!
//! `host` (default `127.0.0.1`), `port` (5432) and `dbname` (`postgres`) say where to connect
//! and are copied into every credential the rotator creates. `password_length` is 16 to 128
//! (default 32); generated passwords are alphanumeric. `admin` (the secret holding the admin
//! credential) is resolved by the engine and ignored here.
//!
//! The admin credential holds `username` and `password` (and optionally `host`, `port`,
//! `dbname`, which override the settings for the admin connection only). The admin needs
//! `CREATEROLE` (on PostgreSQL 16 or later also `ADMIN OPTION` on the rotated roles), or is a
//! superuser. The rotator never creates roles: create them first, e.g.
//! `CREATE ROLE app LOGIN; GRANT ... TO app;`.
//!
//! # Steps
//!
//! - `create`: the current credential's fields, then `username`, a fresh `password`, `host`,
//!   `port` and `dbname`. Changes nothing in the database.
//! - `set`: `ALTER ROLE "user" WITH LOGIN PASSWORD '...'` as the admin. The password is sent as
//!   a SCRAM-SHA-256 verifier computed here, so the plain password never reaches the server's
//!   logs or `pg_stat_activity`; the literal is escaped all the same.
//! - `test`: a fresh login as the pending user with the pending password, then `SELECT 1`.
//! - `discard`: gives the user back the current password (same user), or a fresh password
//!   nobody knows (the other user of an alternating pair).
//! - `revoke`: nothing when the old credential is the current user's (its password is already
//!   gone); otherwise the old user gets a fresh password nobody knows.
//!
//! # Zero downtime
//!
//! With `single`, sessions already open survive the change, but new logins with the previous
//! password fail from `set` on: applications must reload the secret promptly. With
//! `alternating`, the two users (which need the same privileges, e.g. both members of one group
//! role that owns the objects) take turns: the previous credential keeps working until `revoke`
//! runs after the grace period, so applications have the whole grace period to pick up the new
//! one. The grace period must end before the next rotation, which reuses the previous user.
//!
//! Connections are made without TLS: use the rotator on a trusted network or over a local
//! socket-equivalent address, and note that `pg_hba.conf` must ask for passwords (`trust`
//! accepts any password, so a test would pass even with a wrong one).

use std::time::Duration;

use ::postgres::{error::SqlState, Client, Config, NoTls};
use async_trait::async_trait;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    accounts::{self, Accounts, PasswordChange, Strategy},
    support, Credential, Rotator, RotatorError, StepContext,
};

const KIND: &str = "postgres";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for a whole step (connect, check, change).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `postgres` rotator.
#[derive(Debug, Clone, Copy)]
pub struct PostgresRotator;

/// Settings of the `postgres` rotator (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_dbname")]
    pub dbname: String,
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
    5432
}
fn default_dbname() -> String {
    "postgres".into()
}

impl PostgresSettings {
    /// Parses and checks the settings.
    pub fn parse(v: &Value) -> Result<Self, RotatorError> {
        let s: Self = support::parse_settings(KIND, v)?;
        s.accounts()?;
        support::check_password_length(KIND, s.password_length)?;
        if s.host.is_empty() {
            return Err(RotatorError::invalid(
                "postgres rotator: `host` is empty; set the database server's address",
            ));
        }
        if s.dbname.is_empty() {
            return Err(RotatorError::invalid(
                "postgres rotator: `dbname` is empty; name a database the users may connect to",
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

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port: self.port,
            dbname: self.dbname.clone(),
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    port: u16,
    dbname: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.port, self.dbname)
    }
}

/// A login: endpoint, user, password. Debug never shows the password.
#[derive(Clone)]
struct Login {
    at: Endpoint,
    user: String,
    password: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("at", &self.at)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Login {
    fn admin(s: &PostgresSettings, cx: &StepContext<'_>) -> Result<Self, RotatorError> {
        let admin = support::require_admin(KIND, cx, "`username` and `password`")?;
        let mut at = s.endpoint();
        if let Some(h) = support::opt_str(admin, "host")? {
            at.host = h.to_string();
        }
        if let Some(p) = support::opt_port(admin, "port")? {
            at.port = p;
        }
        if let Some(d) = support::opt_str(admin, "dbname")? {
            at.dbname = d.to_string();
        }
        Ok(Self {
            at,
            user: admin.str("username")?.to_string(),
            // An empty password means none (a server that trusts this client).
            password: support::opt_str(admin, "password")?
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        })
    }

    fn connect(&self) -> Result<Client, RotatorError> {
        let mut c = Config::new();
        c.host(&self.at.host)
            .port(self.at.port)
            .dbname(&self.at.dbname)
            .user(&self.user)
            .application_name("steward-rotator")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        if let Some(p) = &self.password {
            c.password(p);
        }
        c.connect(NoTls).map_err(|e| {
            map_error(
                &format!("connecting to {} as {:?}", self.at, self.user),
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
/// from the server's text in case it ever quotes one.
fn map_error(what: &str, e: &::postgres::Error, secrets: &[&str]) -> RotatorError {
    let Some(db) = e.as_db_error() else {
        let text = support::redact(&support::error_chain(e), secrets);
        let m = format!("postgres rotator: {what}: {text}");
        // Kind::Authentication is the client's side of a failed login (e.g. no password for
        // a server that asks for one); everything else here is the network or the server.
        return if text.starts_with("authentication error") {
            RotatorError::rejected(format!("{m}; check the credential's username and password"))
        } else {
            RotatorError::unavailable(format!(
                "{m}; check that the server is up and that host and port are right"
            ))
        };
    };
    let mut text = format!("{} ({})", db.message(), db.code().code());
    if let Some(h) = db.hint() {
        text.push_str("; hint: ");
        text.push_str(h);
    }
    let text = support::redact(&text, secrets);
    let m = format!("postgres rotator: {what}: {text}");
    let code = db.code();
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        RotatorError::rejected(format!(
            "{m}; check the username and password, and that pg_hba.conf lets the user connect"
        ))
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        RotatorError::rejected(format!(
            "{m}; the admin user needs CREATEROLE (and on PostgreSQL 16+ ADMIN OPTION on the \
             role), or must be a superuser to change a superuser's password"
        ))
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        RotatorError::invalid(format!("{m}; set `dbname` to an existing database"))
    } else if [
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::QUERY_CANCELED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
    ]
    .contains(code)
    {
        RotatorError::unavailable(format!("{m}; retry later"))
    } else {
        RotatorError::rejected(m)
    }
}

/// Refuses a password PostgreSQL cannot store.
fn check_password(p: &str) -> Result<(), RotatorError> {
    if p.contains('\0') {
        return Err(RotatorError::invalid(
            "postgres rotator: the password contains a NUL character, which PostgreSQL cannot \
             store; fix the stored secret",
        ));
    }
    if p.is_empty() {
        return Err(RotatorError::invalid(
            "postgres rotator: the password is empty; fix the stored secret",
        ));
    }
    Ok(())
}

/// `ALTER ROLE ... PASSWORD` with the password as a SCRAM-SHA-256 verifier, after checking that
/// the role exists. `login` also grants LOGIN (for the pending user).
fn alter_password(admin: &Login, change: &PasswordChange, login: bool) -> Result<(), RotatorError> {
    check_password(&change.password)?;
    let mut secrets = admin.secrets();
    secrets.push(&change.password);
    let mut client = admin.connect()?;
    let found = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&change.user],
        )
        .map_err(|e| map_error("looking up the role", &e, &secrets))?;
    if found.is_none() {
        return Err(RotatorError::invalid(format!(
            "postgres rotator: role {:?} does not exist on {}; the rotator does not create \
             roles: create it with `CREATE ROLE {} LOGIN;` and grant it what the application \
             needs",
            change.user,
            admin.at,
            escape_identifier(&change.user)
        )));
    }
    let verifier = postgres_protocol::password::scram_sha_256(change.password.as_bytes());
    let sql = format!(
        "ALTER ROLE {} WITH {}PASSWORD {}",
        escape_identifier(&change.user),
        if login { "LOGIN " } else { "" },
        escape_literal(&verifier)
    );
    client.batch_execute(&sql).map_err(|e| {
        map_error(
            &format!("changing the password of role {:?}", change.user),
            &e,
            &secrets,
        )
    })
}

/// Runs [`alter_password`] on the blocking pool.
async fn apply(admin: Login, change: PasswordChange, login: bool) -> Result<(), RotatorError> {
    support::blocking(KIND, STEP_TIMEOUT, move || {
        alter_password(&admin, &change, login)
    })
    .await
}

#[async_trait]
impl Rotator for PostgresRotator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check_settings(&self, settings: &Value) -> Result<(), RotatorError> {
        PostgresSettings::parse(settings).map(drop)
    }

    async fn create(&self, cx: &StepContext<'_>) -> Result<Credential, RotatorError> {
        let s = PostgresSettings::parse(cx.settings)?;
        let accounts = s.accounts()?;
        Ok(accounts::pending(
            cx.current,
            accounts.next_user(cx.current),
            s.password_length,
            &[
                ("host", s.host.clone().into()),
                ("port", s.port.into()),
                ("dbname", s.dbname.clone().into()),
            ],
        ))
    }

    async fn set(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError> {
        let s = PostgresSettings::parse(cx.settings)?;
        let user = pending.str("username")?;
        s.accounts()?.check_configured(KIND, user)?;
        let change = PasswordChange {
            user: user.to_string(),
            password: pending.str("password")?.to_string(),
        };
        apply(Login::admin(&s, cx)?, change, true).await
    }

    async fn test(&self, cx: &StepContext<'_>, pending: &Credential) -> Result<(), RotatorError> {
        let s = PostgresSettings::parse(cx.settings)?;
        let login = Login {
            at: s.endpoint(),
            user: pending.str("username")?.to_string(),
            password: Some(pending.str("password")?.to_string()),
        };
        support::blocking(KIND, STEP_TIMEOUT, move || {
            let mut c = login.connect()?;
            c.simple_query("SELECT 1")
                .map_err(|e| map_error("running SELECT 1", &e, &login.secrets()))?;
            Ok(())
        })
        .await
    }

    async fn discard(
        &self,
        cx: &StepContext<'_>,
        pending: &Credential,
    ) -> Result<(), RotatorError> {
        let s = PostgresSettings::parse(cx.settings)?;
        let change =
            accounts::discard_change(KIND, &s.accounts()?, cx.current, pending, s.password_length)?;
        apply(Login::admin(&s, cx)?, change, false).await
    }

    async fn revoke(&self, cx: &StepContext<'_>, old: &Credential) -> Result<(), RotatorError> {
        let s = PostgresSettings::parse(cx.settings)?;
        match accounts::revoke_change(KIND, &s.accounts()?, cx.current, old, s.password_length)? {
            Some(change) => apply(Login::admin(&s, cx)?, change, false).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_defaults_and_errors() {
        let s = PostgresSettings::parse(&json!({"username": "app"})).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.dbname.as_str()),
            ("127.0.0.1", 5432, "postgres")
        );
        assert_eq!(s.password_length, 32);
        let e = PostgresSettings::parse(&json!({"username": "app", "prot": 1})).unwrap_err();
        assert!(e.message.contains("prot"), "{e}");
        let e =
            PostgresSettings::parse(&json!({"strategy": "rolling", "username": "a"})).unwrap_err();
        assert!(e.message.contains("rolling"), "{e}");
        let e =
            PostgresSettings::parse(&json!({"username": "a", "password_length": 4})).unwrap_err();
        assert!(e.message.contains("16 to 128"), "{e}");
        let e = PostgresSettings::parse(&json!("app")).unwrap_err();
        assert!(e.message.contains("JSON object"), "{e}");
        // `admin` names the admin secret; the engine resolves it.
        PostgresSettings::parse(&json!({"username": "a", "admin": "prod/db-admin"})).unwrap();
    }

    #[tokio::test]
    async fn create_copies_current_fields_and_sets_connection() {
        let settings = json!({"strategy": "alternating", "usernames": ["a", "b"], "port": 6543});
        let current = Credential::from_value(
            json!({"username": "a", "password": "old", "sslmode": "require"}),
        );
        let cx = StepContext {
            env: "prod",
            path: "db",
            settings: &settings,
            current: Some(&current),
            previous: None,
            admin: None,
            attempt_id: "x",
        };
        let c = PostgresRotator.create(&cx).await.unwrap();
        assert_eq!(c.str("username").unwrap(), "b");
        assert_eq!(c.str("sslmode").unwrap(), "require");
        assert_eq!(c.0["port"], json!(6543));
        assert_eq!(c.str("dbname").unwrap(), "postgres");
        assert_eq!(c.str("password").unwrap().len(), 32);
    }

    #[test]
    fn nul_passwords_are_refused() {
        assert!(check_password("a\0b").is_err());
        assert!(check_password("").is_err());
        assert!(check_password("it's fine").is_ok());
    }
}
